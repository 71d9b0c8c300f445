#!/usr/bin/env node
// Published entry point (`npm init @iommu/driver <dir>`): runs the compiled generator.
import { main } from '../dist/cli.js'

process.exitCode = main(process.argv.slice(2))

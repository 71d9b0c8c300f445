#!/usr/bin/env node
// Published entry point: runs the compiled CLI.
import { main } from '../dist/cli.js'

process.exitCode = await main(process.argv.slice(2))

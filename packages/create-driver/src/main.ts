/** Entry point when running from sources in the workspace (`pnpm create-driver <dir>`). */
import { main } from './cli.ts'

process.exitCode = main(process.argv.slice(2))

/** Entry point when running from sources in the workspace (`pnpm sim`). */
import { main } from './cli.ts'

process.exitCode = await main(process.argv.slice(2))

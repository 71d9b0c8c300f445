/** `pnpm docs:excerpts`: rewrite the README excerpts from their sources. */
import { join } from 'node:path'
import { syncExcerpts } from './excerpts.ts'
import { README_WITH_EXCERPTS } from './readmes.ts'

const root = join(import.meta.dirname, '../..')
for (const e of syncExcerpts(root, README_WITH_EXCERPTS)) {
  process.stdout.write(`${e.readme}:${e.line}: updated from ${e.file}#${e.region}\n`)
}

// The READMEs' code samples are excerpts of files that compile and run (the template's
// driver, its tests): this keeps them equal. `pnpm docs:excerpts` rewrites them.
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { excerptsOf, looseCodeBlocks } from '../../../tooling/docs/excerpts.ts'
import { README_ONLY_EXCERPTS, README_WITH_EXCERPTS } from '../../../tooling/docs/readmes.ts'

const ROOT = join(import.meta.dirname, '../../..')

describe('README code excerpts', () => {
  for (const readme of README_WITH_EXCERPTS) {
    it(`${readme}: every excerpt equals its source region (pnpm docs:excerpts)`, () => {
      const ex = excerptsOf(ROOT, readme)
      expect(ex.length).toBeGreaterThan(0)
      for (const e of ex) {
        expect(e.actual, `${readme}:${e.line} vs ${e.file}#${e.region}`).toBe(e.expected)
      }
    })
  }
  for (const readme of README_ONLY_EXCERPTS) {
    it(`${readme}: every ts block is an excerpt of a compiled file`, () => {
      expect(looseCodeBlocks(ROOT, readme)).toEqual([])
    })
  }
})

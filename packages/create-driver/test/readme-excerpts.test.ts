// The READMEs' code samples are excerpts of files that compile and run (the template's
// driver, its tests): this keeps them equal. `pnpm docs:excerpts` rewrites them.
import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { describe, expect, it } from 'vitest'
import {
  entryExports,
  excerptsOf,
  looseCodeBlocks,
  mentionedNames,
} from '../../../tooling/docs/excerpts.ts'
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

describe('names the READMEs mention', () => {
  // Every public entry point of the packages a plugin author uses.
  const entries = [
    'packages/core/src/index.ts',
    'packages/core/src/testing/index.ts',
    'packages/io-pgtable/src/index.ts',
    'packages/io-pgtable/src/testing/index.ts',
    'packages/iommufd/src/index.ts',
    'packages/iommufd/src/uapi/index.ts',
    'packages/iommufd/src/testing/index.ts',
    'packages/sim/src/index.ts',
    'packages/create-driver/src/index.ts',
  ]
  const exported = new Set<string>()
  const collect = (file: string): void => {
    const text = readFileSync(file, 'utf8')
    for (const n of entryExports(text)) exported.add(n)
    for (const m of text.matchAll(/export \* from '([^']+)'/g)) {
      collect(join(dirname(file), m[1] as string))
    }
  }
  for (const e of entries) collect(join(ROOT, e))
  // What the packages' modules export internally (a name a README could mean), and the
  // member names of their classes and interfaces (`readAndClearDirty` of DirtyOps).
  const declared = new Set<string>()
  const members = new Set<string>()
  for (const dir of ['core', 'io-pgtable', 'iommufd', 'sim', 'create-driver']) {
    const src = join(ROOT, 'packages', dir, 'src')
    for (const f of readdirSync(src, { recursive: true, encoding: 'utf8' })) {
      if (!f.endsWith('.ts') || f.includes('.test')) continue
      const text = readFileSync(join(src, f), 'utf8')
      for (const n of entryExports(text)) declared.add(n)
      for (const m of text.matchAll(
        /^\s+(?:readonly\s+|static\s+|get\s+|declare\s+)*(\w+)\??\s*[(:<]/gm,
      )) {
        members.add(m[1] as string)
      }
    }
  }

  for (const readme of [
    'README.md',
    'packages/core/README.md',
    'packages/sim/README.md',
    'packages/create-driver/README.md',
  ]) {
    it(`${readme}: every package symbol it names is exported from a public entry point`, () => {
      const names = [...mentionedNames(readFileSync(join(ROOT, readme), 'utf8'))]
      const hidden = names.filter((n) => declared.has(n) && !exported.has(n) && !members.has(n))
      expect(hidden).toEqual([])
      expect(names.filter((n) => exported.has(n)).length).toBeGreaterThan(0)
    })
  }
})

import { PhysicalMemory } from '@iommu/core'
import { describe, expectTypeOf, it } from 'vitest'
import { type AnyPageTableWalker, amdv1, armLpae, PageTableWalker, vtdss } from './index.ts'

describe('AnyPageTableWalker', () => {
  it('holds a walker of any format without naming its types', () => {
    const mem = new PhysicalMemory({ size: 2 ** 30 })
    const walkers: AnyPageTableWalker[] = [
      new PageTableWalker(mem, amdv1, { hwMaxVaBits: 48 }),
      new PageTableWalker(mem, vtdss, { topLevel: 3 }),
      new PageTableWalker(mem, armLpae, { stage: 1, granule: 4096, ias: 48, oas: 48 }),
    ]
    expectTypeOf(walkers[0]?.walk).toEqualTypeOf<PageTableWalker['walk'] | undefined>()
    // The bare class with its default type arguments does not take a concrete format.
    // @ts-expect-error AmdV1Params is wider than FormatParams
    const bare: PageTableWalker = new PageTableWalker(mem, amdv1, { hwMaxVaBits: 48 })
    expectTypeOf(bare).toBeObject()
  })
})

/**
 * The missing-invalidation detector's shortcut: a TLB hit on a stage-1-only or
 * stage-2-only entry last found up to date by a walk whose entries are unchanged in memory
 * is not walked again. Runs with and without the shortcut must report the same stale
 * uses, in the same order, with the same DMA outcomes.
 */
import { HwptAllocFlags } from '@iommu/core'
import { dmaChurn } from '@iommu/core/testing'
import { Rng } from '@iommu/iommufd/testing'
import { describe, expect, it } from 'vitest'
import { type SmmuV3Hw, smmuv3, smmuv3TestHooks } from '../src/index.ts'

/** The seeded churn (`dmaChurn`) on one SMMU, its TLB invalidations dropped now and then. */
function run(
  records: boolean,
  seed: number,
  flags: number | undefined,
): { log: string[]; stale: unknown[]; hits: number } {
  const driver = smmuv3({ hw: { detectorRecords: records } })
  const hooks = smmuv3TestHooks(driver)
  const rng = new Rng(seed)
  const { machine, log } = dmaChurn({
    driver,
    skipFlush: (skip) => {
      hooks.skipIotlbSync = skip
    },
    random: (n) => rng.int(n),
    ...(flags === undefined ? {} : { flags }),
  })
  const hw = machine.units[0] as SmmuV3Hw
  return { log, stale: hw.staleUses, hits: hw.stats.translations - hw.stats.walks }
}

describe('the detector with walk records', () => {
  for (const [flags, stage] of [
    [undefined, 'stage 1'],
    [HwptAllocFlags.NEST_PARENT, 'stage 2 (nest parent)'],
  ] as const) {
    for (const seed of [1, 2]) {
      it(`${stage}: reports exactly what re-walking every TLB hit reports (seed ${seed})`, () => {
        const fast = run(true, seed, flags)
        const slow = run(false, seed, flags)
        expect(fast.stale.length).toBeGreaterThan(0)
        expect(fast.hits).toBeGreaterThan(300)
        expect(fast).toEqual(slow)
      })
    }
  }
})

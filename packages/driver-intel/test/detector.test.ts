/**
 * The missing-invalidation detector's shortcut: an IOTLB hit on a first- or second-stage
 * entry last found up to date by a walk whose entries are unchanged in memory is not
 * walked again. Runs with and without the shortcut must report the same stale uses, in
 * the same order, with the same DMA outcomes.
 */
import { HwptAllocFlags } from '@iommu/core'
import { dmaChurn } from '@iommu/core/testing'
import { Rng } from '@iommu/iommufd/testing'
import { describe, expect, it } from 'vitest'
import { intel, intelTestHooks, type VtdIommuHw } from '../src/index.ts'

/** The seeded churn (`dmaChurn`) on one VT-d unit, its IOTLB flushes dropped now and then. */
function run(
  records: boolean,
  seed: number,
  dirty: boolean,
): { log: string[]; stale: unknown[]; hits: number } {
  const driver = intel({ hw: { detectorRecords: records } })
  const hooks = intelTestHooks(driver)
  const rng = new Rng(seed)
  const { machine, log } = dmaChurn({
    driver,
    skipFlush: (skip) => {
      hooks.skipIotlbFlush = skip
    },
    random: (n) => rng.int(n),
    // Dirty tracking needs the second stage; without flags the driver picks the first.
    flags: dirty ? HwptAllocFlags.DIRTY_TRACKING : 0,
  })
  const hw = machine.units[0] as VtdIommuHw
  return { log, stale: hw.staleUses, hits: hw.stats.translations - hw.stats.walks }
}

describe('the detector with walk records', () => {
  for (const [dirty, stage] of [
    [true, 'second stage (dirty tracking)'],
    [false, 'first stage'],
  ] as const) {
    for (const seed of [1, 2]) {
      it(`${stage}: reports exactly what re-walking every IOTLB hit reports (seed ${seed})`, () => {
        const fast = run(true, seed, dirty)
        const slow = run(false, seed, dirty)
        expect(fast.stale.length).toBeGreaterThan(0)
        expect(fast.hits).toBeGreaterThan(300)
        expect(fast).toEqual(slow)
      })
    }
  }
})

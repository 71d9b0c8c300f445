/**
 * The missing-invalidation detector's shortcut: an IOTLB hit whose fill walk's entries
 * are unchanged in memory is not walked again. Runs with and without the shortcut must
 * report the same stale uses, in the same order, with the same DMA outcomes.
 */
import { dmaChurn } from '@iommu/core/testing'
import { Rng } from '@iommu/iommufd/testing'
import { describe, expect, it } from 'vitest'
import { type AmdIommuHw, amd, amdTestHooks } from '../src/index.ts'

/** The seeded churn (`dmaChurn`) on one AMD unit, its IOTLB flushes dropped now and then. */
function run(records: boolean, seed: number): { log: string[]; stale: unknown[]; hits: number } {
  const driver = amd({ hw: { detectorRecords: records } })
  const hooks = amdTestHooks(driver)
  const rng = new Rng(seed)
  const { machine, log } = dmaChurn({
    driver,
    skipFlush: (skip) => {
      hooks.skipIotlbSync = skip
    },
    random: (n) => rng.int(n),
  })
  const hw = machine.units[0] as AmdIommuHw
  return { log, stale: hw.staleUses, hits: hw.stats.translations - hw.stats.walks }
}

describe('the detector with fill-walk records', () => {
  for (const seed of [1, 2, 3]) {
    it(`reports exactly what re-walking every IOTLB hit reports (seed ${seed})`, () => {
      const fast = run(true, seed)
      const slow = run(false, seed)
      expect(fast.stale.length).toBeGreaterThan(0)
      expect(fast.hits).toBeGreaterThan(300)
      expect(fast).toEqual(slow)
    })
  }
})

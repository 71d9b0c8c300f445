/**
 * Every vendor by name: VT-d and AMD converge and verify; SMMUv3 follows 7.2 (no TLBI after a
 * clearing dirty read: writes through TLB entries cached writable-dirty are not logged) and
 * verifies with `ideal`; IOPTE splitting on each page-table driver; the report's vendor,
 * dirty path and hardware counters.
 */
import { describe, expect, it } from 'vitest'
import {
  defaultOptions,
  formatTotals,
  type MigrateOptions,
  migrate,
  SMMUV3_DIRTY_CLEAR_CAUSE,
  VENDORS,
  verified,
} from '../src/index.ts'

const MIB = 2 ** 20

/** A 128 MiB guest at 1 Gbit/s: a few hundred milliseconds per run. */
function small(o: Partial<MigrateOptions> = {}): MigrateOptions {
  const base = defaultOptions({ memoryBytes: 128 * MIB, dimmBytes: 64 * MIB })
  return {
    ...base,
    bandwidth: 1e9 / 8,
    workload: {
      ...base.workload,
      ringBytes: 4 * MIB,
      ringOffset: 8 * MIB,
      hotBytes: 16 * MIB,
      hotOffset: 32 * MIB,
      ringRate: 20_000,
      randomRate: 20_000,
    },
    ...o,
  }
}

/**
 * A hot set that lives in the IOTLB (256 pages, 1024-entry TLBs), rewritten every round,
 * and a downtime budget small enough that pre-copy runs its three rounds: every write after
 * a clearing read goes through a cached translation.
 */
function tlbResident(o: Partial<MigrateOptions> = {}): MigrateOptions {
  const base = small()
  return small({
    maxRounds: 3,
    maxDowntime: 0.0001,
    workload: { ...base.workload, ringBytes: 0, ringRate: 0, hotBytes: MIB, locality: 1 },
    ...o,
  })
}

describe('every vendor by name', () => {
  it('VT-d converges and verifies by default, over second-stage dirty tracking', () => {
    const r = migrate(small({ iommu: 'intel' }))
    expect(r.converged).toBe(true)
    expect(verified(r)).toBe(true)
    expect(r.vendor).toEqual({ name: 'Intel VT-d', dirtyPath: VENDORS.intel.dirtyPath })
    expect(r.staleTranslations).toEqual([])
    expect(r.dirtyHazards).toEqual([])
    // Every DMA page went through the unit; the IOTLB missed at least once per page walked.
    expect(r.hw?.translations).toBe(r.totalDmaWrites)
    expect(r.hw?.walks).toBe(r.hw?.iotlbMisses)
    expect(r.hw?.queueCommands).toBeGreaterThan(0)
    expect(formatTotals(r)).toContain('dirty tracking:   VT-d second-stage D bit (bit 9)')
  })

  it('VT-d keeps verifying where the IOTLB holds the whole hot set', () => {
    const r = migrate(tlbResident({ iommu: 'intel' }))
    expect(r.rounds.filter((x) => !x.stopAndCopy)).toHaveLength(3)
    expect(verified(r)).toBe(true)
  })

  it('SMMUv3 follows 7.2: no TLBI after a clearing dirty read loses writes; --ideal fixes it', () => {
    const r = migrate(tlbResident({ iommu: 'smmuv3' }))
    expect(r.vendor.name).toBe('ARM SMMUv3')
    expect(r.vendor.dirtyPath).toContain('HTTU with DBM')
    expect(verified(r)).toBe(false)
    expect(r.staleTranslations).toHaveLength(1)
    const s = r.staleTranslations[0]
    expect(s?.missing).toBe('TLBI_NH_VA')
    expect(s?.cache).toBe('tlb')
    expect(s?.cause).toBe(SMMUV3_DIRTY_CLEAR_CAUSE)
    expect(s?.writes).toBe(s?.uses)
    // The destination misses pages whose last write was never logged.
    expect(r.mismatchedPages).toBeGreaterThan(0)
    expect(r.mismatchedPages).toBeLessThanOrEqual(s?.pages ?? 0)
    expect(formatTotals(r)).toContain('cause: Linux 7.2: arm_smmu_iotlb_sync()')

    const fixed = migrate(tlbResident({ iommu: 'smmuv3', ideal: true }))
    expect(fixed.config.ideal).toBe(true)
    expect(fixed.config.dirtyRecords).toBe('ideal')
    expect(fixed.staleTranslations).toEqual([])
    expect(verified(fixed)).toBe(true)
    // The same device: round 0 (all of memory) sees the same writes; the fix changes what
    // the IOMMU logs, hence how much the later rounds send.
    expect(fixed.rounds[0]?.dmaWrites).toBe(r.rounds[0]?.dmaWrites)
    expect(fixed.rounds[2]?.dirtyPages).toBeGreaterThan(r.rounds[2]?.dirtyPages ?? 0)
  })

  it('AMD and the mock verify the TLB-resident workload', () => {
    for (const iommu of ['amd', 'mock'] as const) {
      const r = migrate(tlbResident({ iommu }))
      expect([iommu, verified(r)]).toEqual([iommu, true])
    }
    expect(migrate(tlbResident({ iommu: 'mock' })).hw).toBeNull()
  })

  it('splits 2 MiB IOPTEs to 4 KiB and merges them back on VT-d and SMMUv3', () => {
    for (const iommu of ['intel', 'smmuv3'] as const) {
      const r = migrate(small({ iommu, iopte: 'split', ideal: true }))
      expect([iommu, verified(r), r.converged]).toEqual([iommu, true, true])
    }
  })

  it('refuses AMD contiguous leaves elsewhere with EINVAL', () => {
    expect(() => migrate(small({ iommu: 'intel', iopte: '16k' }))).toThrow(
      expect.objectContaining({ code: 'EINVAL', message: expect.stringMatching(/16k.*amd/) }),
    )
  })
})

/**
 * `migrate --viommu`: a guest with its own IOMMU driver on a nest parent. VT-d tracks dirty
 * pages on the nest parent; 7.2 SMMUv3 refuses NEST_PARENT | DIRTY_TRACKING, so the VMM sends
 * all DMA-mapped memory; the guest's invalidations must be forwarded and dirty tracking on
 * the parent must be on, or the run fails.
 */
import { describe, expect, it } from 'vitest'
import { defaultOptions, type MigrateOptions, migrate, verified } from '../src/index.ts'

const MIB = 2 ** 20

function guest(o: Partial<MigrateOptions> = {}): MigrateOptions {
  const base = defaultOptions({ memoryBytes: 128 * MIB, dimmBytes: 64 * MIB })
  return {
    ...base,
    bandwidth: 1e9 / 8,
    viommu: true,
    workload: {
      ...base.workload,
      ringBytes: 2 * MIB,
      ringOffset: 8 * MIB,
      hotBytes: 16 * MIB,
      hotOffset: 32 * MIB,
      ringRate: 20_000,
      randomRate: 20_000,
    },
    ...o,
  }
}

describe('migrate --viommu', () => {
  it('VT-d: dirty tracking on the nest parent, guest tables migrate, the destination translates', () => {
    const r = migrate(guest({ iommu: 'intel' }))
    expect(verified(r)).toBe(true)
    expect(r.converged).toBe(true)
    const v = r.viommu
    expect(v?.parentTracksDirty).toBe(true)
    expect(v?.parentDirtyErrno).toBeNull()
    expect(r.vendor.dirtyPath).toContain('nest parent')
    // Root, context, PASID directory and PASID table, plus the x86-64 tables.
    expect(v?.guestTablePages).toBeGreaterThan(4)
    // The ring moved in every pre-copy round; each move was one invalidation, and the
    // device's late write to the old window faulted at the guest stage (host fault log).
    const pre = r.rounds.filter((x) => !x.stopAndCopy).length
    expect(v?.ringMoves).toBe(pre)
    expect(v?.guestInvalidations).toBe(pre)
    expect(v?.faults).toBe(pre)
    expect(v?.faultsReported).toBe(pre)
    expect(v?.destination.probes).toBeGreaterThan(512)
    expect(v?.destination.mismatches).toBe(0)
    expect(r.staleTranslations).toEqual([])
  })

  it('SMMUv3: no dirty tracking on a 7.2 nest parent, every DMA-mapped page sent, verifies', () => {
    const r = migrate(guest({ iommu: 'smmuv3' }))
    const v = r.viommu
    expect(v?.parentTracksDirty).toBe(false)
    expect(v?.parentDirtyErrno).toBe('EOPNOTSUPP')
    expect(r.vendor.dirtyPath).toBe(
      'unavailable on nest parent (7.2 SMMUv3), all DMA-mapped pages sent every round',
    )
    // Round 0, then stop-and-copy of all of guest RAM: the downtime of a full copy.
    expect(r.converged).toBe(false)
    expect(r.rounds.map((x) => x.dirtyPages)).toEqual([32768, 32768])
    expect(r.downtimeSeconds).toBeCloseTo((128 * MIB) / (1e9 / 8), 9)
    expect(verified(r)).toBe(true)
    // Guest-stage faults reach the VMM's vEVENTQ.
    expect(v?.faults).toBe(1)
    expect(v?.faultsReported).toBe(1)
    expect(v?.destination.mismatches).toBe(0)
  })

  for (const iommu of ['intel', 'smmuv3'] as const) {
    it(`${iommu}: a VMM that drops the guest's invalidation leaves a stale translation`, () => {
      const r = migrate(guest({ iommu, breakage: 'drop-guest-invalidation' }))
      expect(r.viommu?.invalidationsDropped).toBe(true)
      // The late write goes through the stale IOTLB entry instead of faulting.
      expect(r.viommu?.faults).toBe(0)
      expect(r.staleTranslations.length).toBeGreaterThan(0)
      expect(r.staleTranslations[0]?.missing).toBe(
        iommu === 'smmuv3' ? 'TLBI_NH_VA' : 'PASID-based IOTLB invalidation',
      )
      expect(r.staleTranslations[0]?.cause).toBeNull()
      expect(verified(r)).toBe(false)
    })
  }

  it('two devices, split IOPTEs on the nest parent: a nested HWPT and a ring each', () => {
    const base = guest()
    const r = migrate({
      ...base,
      iommu: 'intel',
      iopte: 'split',
      devices: [
        { name: 'nic0', workload: base.workload },
        {
          name: 'nic1',
          workload: { ...base.workload, ringOffset: 16 * MIB, hotOffset: 64 * MIB, ringRate: 5000 },
        },
      ],
    })
    expect(verified(r)).toBe(true)
    expect(r.config.devices).toEqual(['nic0', 'nic1'])
    expect(r.deviceWrites.every((n) => n > 0)).toBe(true)
    const pre = r.rounds.filter((x) => !x.stopAndCopy).length
    // Each device's ring moves every round; its late fetch faults.
    expect(r.viommu?.ringMoves).toBe(2 * pre)
    expect(r.viommu?.faults).toBe(2 * pre)
    expect(r.viommu?.destination.mismatches).toBe(0)
  })

  it('VT-d: dirty tracking never enabled on the nest parent fails verification', () => {
    const r = migrate(guest({ iommu: 'intel', breakage: 'tracking-never-enabled' }))
    expect(r.mismatchedPages).toBeGreaterThan(0)
    expect(verified(r)).toBe(false)
  })

  it('refuses a vIOMMU on AMD and the mock, and a dropped invalidation without one', () => {
    for (const iommu of ['amd', 'mock'] as const) {
      expect(() => migrate(guest({ iommu }))).toThrow(expect.objectContaining({ code: 'EINVAL' }))
    }
    expect(() =>
      migrate(guest({ iommu: 'intel', viommu: false, breakage: 'drop-guest-invalidation' })),
    ).toThrow(expect.objectContaining({ code: 'EINVAL' }))
  })
})

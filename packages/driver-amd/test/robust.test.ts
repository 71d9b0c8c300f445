/**
 * The uAPI over the AMD model under hostile input: a MAP whose length dwarfs its buffer
 * (the pin path fails EFAULT, whichever operation fills the v1 table), and the seeded
 * random-ioctl fuzzer of `@iommu/iommufd/testing`.
 */
import { createMachine, isIommuError } from '@iommu/core'
import {
  IOMMU_HWPT_ALLOC,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  openIommufd,
} from '@iommu/iommufd'
import { runUapiFuzz } from '@iommu/iommufd/testing'
import { describe, expect, it } from 'vitest'
import { type AmdIommuHw, amd } from '../src/index.ts'

const HUGE = 1n << 52n
const RW = IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE

function errnoOf(fn: () => unknown): string {
  try {
    fn()
    return 'OK'
  } catch (e) {
    if (isIommuError(e)) return e.code
    throw e
  }
}

describe('a 2^52-byte MAP over a 64 KiB buffer on AMD', () => {
  it('fails EFAULT in the pin path, on MAP, HWPT_ALLOC and attach alike, pinning nothing', () => {
    const m = createMachine({ iommus: [amd()] })
    const vmm = m.createProcess()
    const fd = openIommufd(m, vmm)
    const buf = vmm.mmap(64 << 10)
    const ioasAlloc = () => {
      const a = { size: 12, flags: 0, out_ioas_id: 0 }
      fd.ioctl(IOMMU_IOAS_ALLOC, a)
      return a.out_ioas_id
    }
    const map = (ioas: number) =>
      fd.ioctl(IOMMU_IOAS_MAP, {
        size: 40,
        flags: RW | IOMMU_IOAS_MAP_FIXED_IOVA,
        ioas_id: ioas,
        user_va: BigInt(buf),
        length: HUGE,
        iova: HUGE,
      })
    const idev = fd.bindDevice(m.addPciDevice())
    // With the device attached, the MAP itself fills the domain and fails.
    const ioas = ioasAlloc()
    idev.attach(ioas)
    expect(errnoOf(() => map(ioas))).toBe('EFAULT')
    // Without a domain the MAP succeeds; filling a new one fails.
    const lazy = ioasAlloc()
    map(lazy)
    const hwpt = { size: 48, flags: 0, dev_id: idev.id, pt_id: lazy, out_hwpt_id: 0 }
    expect(errnoOf(() => fd.ioctl(IOMMU_HWPT_ALLOC, hwpt))).toBe('EFAULT')
    expect(errnoOf(() => idev.replace(lazy))).toBe('EFAULT')
    idev.detach()
    expect(errnoOf(() => idev.attach(lazy))).toBe('EFAULT')
    expect([m.memory.frameStats().pins, vmm.mm.pinnedVm, vmm.user.lockedVm]).toEqual([0, 0, 0])
  })
})

describe('random ioctls on the AMD model', () => {
  it('fail only with errno, leak nothing and lose no dirty page (seed 1)', () => {
    const r = runUapiFuzz(
      {
        name: 'amd',
        machine: () => createMachine({ iommus: [amd()] }),
        staleUses: (m) => (m.units[0] as AmdIommuHw).staleUses,
      },
      { seed: 1, ops: 4000, opsPerWorld: 250 },
    )
    expect(r.problems).toEqual([])
    // The driver never left a stale translation for the hardware to use.
    expect(r.dirty.staleUses).toBe(0)
    expect(r.dirty.falseNegativesWellFormed).toBe(0)
    // The run reached what it checks: successes, many errnos, DMA, dirty pages.
    expect(r.succeeded).toBeGreaterThan(500)
    expect(Object.keys(r.errnos).length).toBeGreaterThan(12)
    expect(r.dmaWrites).toBeGreaterThan(100)
    expect(r.dirty.wellFormedReads).toBeGreaterThan(10)
    expect(r.dirty.expected).toBeGreaterThan(10)
  })
})

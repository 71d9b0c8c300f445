/**
 * Dirty tracking is a property of the IOMMU (`amd_iommu_capable` → `amd_iommu_hd_support`:
 * EFR.HDSup, and not HATDis), and HATDis takes the v1 page table away
 * (`amd_iommu_domain_alloc_paging_v1`), as in the 7.2 driver.
 */
import { createMachine, DomainType, HwptAllocFlags, IommuCap, isIommuError } from '@iommu/core'
import {
  IOMMU_GET_HW_INFO,
  IOMMU_HW_CAP_DIRTY_TRACKING,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_IOAS_ALLOC,
  openIommufd,
} from '@iommu/iommufd'
import { describe, expect, it } from 'vitest'
import { amd, DEFAULT_EFR, Efr, Efr2 } from '../src/index.ts'

function errnoOf(fn: () => unknown): string {
  try {
    fn()
    return 'OK'
  } catch (e) {
    if (isIommuError(e)) return e.code
    throw e
  }
}

describe('IOMMU_CAP_DIRTY_TRACKING follows the IOMMU, not the device', () => {
  it('a device behind a unit with HDSup can track, one behind a unit without cannot', () => {
    const driver = amd()
    const m = createMachine({
      iommus: [driver, { driver, config: { efr: DEFAULT_EFR & ~Efr.HDSUP } }],
    })
    // The PCI device's own `dirtyTracking` (a selftest-mock notion) plays no part.
    const a = m.addPciDevice({ iommu: 0, dirtyTracking: false })
    const b = m.addPciDevice({ iommu: 1 })
    expect(m.iommu.deviceIommuCapable(a, IommuCap.DIRTY_TRACKING)).toBe(true)
    expect(m.iommu.deviceIommuCapable(b, IommuCap.DIRTY_TRACKING)).toBe(false)
    const fd = openIommufd(m, m.createProcess())
    const ia = fd.bindDevice(a)
    const ib = fd.bindDevice(b)
    const caps = (id: number) => {
      const info = { size: 40, dev_id: id, out_capabilities: 0n }
      fd.ioctl(IOMMU_GET_HW_INFO, info)
      return info.out_capabilities & BigInt(IOMMU_HW_CAP_DIRTY_TRACKING)
    }
    expect([caps(ia.id), caps(ib.id)]).toEqual([BigInt(IOMMU_HW_CAP_DIRTY_TRACKING), 0n])
    const ioas = { size: 12, out_ioas_id: 0 }
    fd.ioctl(IOMMU_IOAS_ALLOC, ioas)
    const alloc = (dev: number) => {
      const cmd = {
        size: 48,
        flags: IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
        dev_id: dev,
        pt_id: ioas.out_ioas_id,
        out_hwpt_id: 0,
      }
      fd.ioctl(IOMMU_HWPT_ALLOC, cmd)
      return cmd.out_hwpt_id
    }
    const hwpt = alloc(ia.id)
    expect(ia.attach(hwpt)).toBe(hwpt)
    // iommufd_hwpt_paging_alloc: no IOMMU_CAP_DIRTY_TRACKING → EOPNOTSUPP; attaching a
    // dirty-tracking domain to a device whose IOMMU lacks HD → EINVAL.
    expect(errnoOf(() => alloc(ib.id))).toBe('EOPNOTSUPP')
    expect(errnoOf(() => ib.attach(hwpt))).toBe('EINVAL')
  })
})

describe('HATDis', () => {
  const flagsErrno = (efr: bigint, ivhdHatdis: boolean) => {
    // iommu.passthrough=1: the identity default domain needs no page table.
    const m = createMachine({
      // GCR3TRPMode, so that NEST_PARENT is refused only for HATDis.
      iommus: [{ driver: amd(), config: { efr, efr2: Efr2.GCR3TRPMODE, ivhdHatdis } }],
      defaultDomainType: DomainType.IDENTITY,
    })
    const dev = m.addPciDevice()
    const alloc = (flags: number) =>
      errnoOf(() => m.iommu.iommuDomainAllocPagingUser(dev, flags, null))
    return {
      dirtyCap: m.iommu.deviceIommuCapable(dev, IommuCap.DIRTY_TRACKING),
      dirty: alloc(HwptAllocFlags.DIRTY_TRACKING),
      parent: alloc(HwptAllocFlags.NEST_PARENT),
      both: alloc(HwptAllocFlags.DIRTY_TRACKING | HwptAllocFlags.NEST_PARENT),
    }
  }

  it('from the IVHD or from EFR.HATS = 11b: no HD capability and no v1 domain', () => {
    const gone = { dirtyCap: false, dirty: 'EOPNOTSUPP', parent: 'EOPNOTSUPP', both: 'EOPNOTSUPP' }
    const efr2 = DEFAULT_EFR | Efr.GIOSUP | Efr.GT
    expect(flagsErrno(efr2, true)).toEqual(gone)
    expect(flagsErrno(efr2 | (3n << Efr.HATS_SHIFT), false)).toEqual(gone)
    // Without HATDis the same unit has both.
    const ok = flagsErrno(efr2, false)
    expect([ok.dirtyCap, ok.dirty, ok.both]).toEqual([true, 'OK', 'OK'])
  })

  it('without v2 page table support (no GTSup) no device gets DMA translation: ENODEV', () => {
    // PD_MODE_NONE: amd_iommu_probe_device fails.
    const m = createMachine({
      iommus: [{ driver: amd(), config: { efr: DEFAULT_EFR & ~Efr.GT, ivhdHatdis: true } }],
    })
    expect(errnoOf(() => m.addPciDevice())).toBe('ENODEV')
  })
})

/**
 * The toy IOMMU driver: what `drivers/iommu/<vendor>/` would be for the toy hardware in
 * `./hw/toy-iommu.ts`. It programs the hardware only through memory (the device table,
 * the page tables) and registers, and gets its paging domains from `@iommu/io-pgtable`.
 *
 * @module
 */

import {
  type DirtyOps,
  type DomainOps,
  DomainType,
  type Driver,
  defineDriver,
  FramePurpose,
  HwptAllocFlags,
  IommuCap,
  IommuDomain,
  IommuError,
  type Machine,
  type PciDevice,
  type UnitContext,
  type UserData,
} from '@iommu/core'
import {
  PageTable,
  pageTableDirtyOps,
  pageTableDomainOps,
  type VtdSsConfig,
  type VtdSsParams,
  vtdss,
} from '@iommu/io-pgtable'
import {
  CONTROL_EN,
  DT_ENTRIES,
  Dte,
  DteMode,
  TOY_PT_CONFIG,
  ToyIommuHw,
  ToyReg,
} from './hw/toy-iommu.ts'

// #region state
/** Per-unit driver state (the kernel's `struct <vendor>_iommu`). */
interface ToyIommu {
  readonly hw: ToyIommuHw
  readonly machine: Machine
  /** Physical address of the device table. */
  readonly dtPa: number
}

/** Per-device driver state, kept in `dev.iommu.priv` (`dev_iommu_priv_get`). */
interface ToyDev {
  readonly iommu: ToyIommu
  readonly rid: number
  /** The paging domain the device is attached to, if any. */
  domain: ToyDomain | null
}

/** A toy paging domain: an io-pgtable page table plus the devices using it. */
export class ToyDomain extends IommuDomain {
  /** The VT-d second-stage page table (`@iommu/io-pgtable`). */
  pt: PageTable<VtdSsConfig, VtdSsParams> | null = null
  /** Devices attached to the domain. */
  readonly devices: Set<ToyDev> = new Set()
  /** DTE.DE is set for every attached device. */
  dirtyTracking = false
}

function devOf(dev: PciDevice): ToyDev {
  const priv = dev.iommu?.priv
  if (priv === null || priv === undefined) throw new IommuError('ENODEV', `${dev.name}: not toy`)
  return priv as ToyDev
}
// #endregion state

/** Options of {@link toy}. */
export interface ToyOptions {
  /** The driver's name (default `'toy'`); two drivers in one machine need two names. */
  readonly name?: string
}

/** The capabilities the toy declares: dirty tracking only. */
interface ToyCaps {
  readonly dirtyTracking: true
  readonly nesting: false
  readonly pasid: false
  readonly enforceCacheCoherency: false
  readonly deferredFlush: false
  readonly iopf: false
}

/**
 * The toy IOMMU driver. Each call makes a new driver; register it with a machine
 * (`createMachine({ iommus: [toy()] })`) and every entry brings up one toy unit.
 */
export function toy(options: ToyOptions = {}): Driver<ToyCaps> {
  const units = new WeakMap<ToyIommuHw, ToyIommu>()

  // #region hardware-access
  /** Empty the unit's IOTLB (the toy's only invalidation: the whole cache, at once). */
  const invalidate = (iommu: ToyIommu) => iommu.hw.writeReg(ToyReg.INVALIDATE, 1)

  /**
   * Write a device-table entry, then invalidate. Root first, then the word with V and
   * MODE: an entry that becomes valid never points at a stale root.
   */
  const writeDte = (td: ToyDev, mode: number, d: ToyDomain | null) => {
    const mem = td.iommu.machine.memory
    const pa = td.iommu.dtPa + td.rid * Dte.SIZE
    const pt = d?.pt ?? null
    mem.write32(pa + 4, pt === null ? 0 : pt.root.pfn)
    let w0 = Dte.V | (mode << Dte.MODE_SHIFT)
    if (pt !== null) w0 |= pt.root.level << Dte.TOP_SHIFT
    if (d?.dirtyTracking) w0 |= Dte.DE
    mem.write32(pa, w0)
    // The IOTLB may hold translations of the previous domain for this RID.
    invalidate(td.iommu)
  }

  /** Leave the current paging domain, if any. */
  const leave = (td: ToyDev) => {
    td.domain?.devices.delete(td)
    td.domain = null
  }
  // #endregion hardware-access

  // #region static-domains
  /** The blocked domain: DMA of an attached device is aborted (DTE MODE = abort). */
  const blockedDomain = new IommuDomain({
    type: DomainType.BLOCKED,
    ops: {
      attachDev(_domain, dev) {
        const td = devOf(dev)
        leave(td)
        writeDte(td, DteMode.ABORT, null)
      },
    },
  })

  /** The identity domain: DMA passes through untranslated, IOVA == PA. */
  const identityDomain = new IommuDomain({
    type: DomainType.IDENTITY,
    ops: {
      attachDev(_domain, dev) {
        const td = devOf(dev)
        leave(td)
        writeDte(td, DteMode.PASSTHROUGH, null)
      },
    },
  })
  // #endregion static-domains

  // #region paging
  const tableOf = (d: ToyDomain): PageTable<VtdSsConfig, VtdSsParams> => {
    if (d.pt === null) throw new IommuError('EINVAL', 'toy domain without a page table')
    return d.pt
  }

  /** Invalidate every unit a device of the domain sits behind. */
  const flushDomain = (d: ToyDomain) => {
    const seen = new Set<ToyIommu>()
    for (const td of d.devices) seen.add(td.iommu)
    for (const iommu of seen) invalidate(iommu)
  }

  const domainOps = {
    // map, unmap and iova-to-phys come from the page table (IOMMU_PT_DOMAIN_OPS).
    ...pageTableDomainOps<ToyDomain>(vtdss, tableOf),
    attachDev(domain: ToyDomain, dev: PciDevice) {
      const td = devOf(dev)
      // A dirty-tracking domain needs a device path that can track (EINVAL otherwise).
      if (domain.dirtyOps !== null && !dev.dirtyTracking) {
        throw new IommuError('EINVAL', `${dev.name}: no dirty tracking on this path`)
      }
      leave(td)
      td.domain = domain
      domain.devices.add(td)
      writeDte(td, DteMode.TRANSLATE, domain)
    },
    // Unmap and dirty-clear gather what they changed; the core then calls this.
    iotlbSync: (domain: ToyDomain) => flushDomain(domain),
    free(domain: ToyDomain) {
      if (domain.devices.size) throw new Error('toy domain freed while attached')
      domain.pt?.free()
    },
  } satisfies DomainOps<ToyDomain>
  // #endregion paging

  // #region dirty
  const dirtyOps = {
    // Read-and-clear walks the page table's dirty bits (IOMMU_PT_DIRTY_OPS).
    ...pageTableDirtyOps<ToyDomain>(tableOf),
    /** The hardware knob: DTE.DE in every attached device's entry. */
    setDirtyTracking(domain: ToyDomain, enable: boolean) {
      domain.dirtyTracking = enable
      for (const td of domain.devices) writeDte(td, DteMode.TRANSLATE, domain)
    },
  } satisfies DirtyOps<ToyDomain>
  // #endregion dirty

  // #region alloc
  /** `domain_alloc_paging_flags`: a VT-d second-stage table, with dirty ops on request. */
  const allocPaging = (dev: PciDevice, flags: number, data: UserData | null): ToyDomain => {
    if (data !== null || (flags & ~HwptAllocFlags.DIRTY_TRACKING) !== 0) {
      throw new IommuError('EOPNOTSUPP', `toy: flags 0x${flags.toString(16)} or user data`)
    }
    const wantDirty = (flags & HwptAllocFlags.DIRTY_TRACKING) !== 0
    if (wantDirty && !dev.dirtyTracking) throw new IommuError('EOPNOTSUPP', 'toy: no dirty')
    const d = new ToyDomain({ ops: domainOps, dirtyOps: wantDirty ? dirtyOps : null })
    // Your own format plugs in here: `new PageTable(memory, myFormat, myConfig, hooks)`
    // (define it with `definePageTableFormat` and run `describeFormatConformance` on it).
    d.pt = new PageTable(devOf(dev).iommu.machine.memory, vtdss, TOY_PT_CONFIG, {
      // Tables a map replaced by a block are freed only after this invalidation.
      iotlbSync: () => flushDomain(d),
    })
    d.pgsizeBitmap = d.pt.pgsizeBitmap
    Object.assign(d.geometry, d.pt.geometry)
    return d
  }
  // #endregion alloc

  // #region descriptor
  return defineDriver({
    name: options.name ?? 'toy',
    apiVersion: 1,
    // Each `true` obliges the matching ops: dirtyTracking ⇒ dirtyOps (checked by the type).
    capabilities: {
      dirtyTracking: true,
      nesting: false,
      pasid: false,
      enforceCacheCoherency: false,
      deferredFlush: false,
      iopf: false,
    },
    createUnit(ctx: UnitContext) {
      const hw = new ToyIommuHw(ctx.machine, `toy-iommu${ctx.index}`)
      // Device table: 65536 zeroed entries (V = 0: every DMA aborted until attach).
      const frames = (DT_ENTRIES * Dte.SIZE) / 4096
      const dtPfn = ctx.machine.memory.allocFrames(frames, FramePurpose.IOMMU_HW, frames)
      hw.writeReg(ToyReg.DT_BASE, dtPfn)
      hw.writeReg(ToyReg.CONTROL, CONTROL_EN)
      units.set(hw, { hw, machine: ctx.machine, dtPa: dtPfn * 4096 })
      // Return the hardware only: the machine binds it to this driver (unit.driver).
      return hw
    },
    ops: {
      capable(dev, cap) {
        switch (cap) {
          // iommufd binds a device only when its IOMMU keeps DMA cache coherent.
          case IommuCap.CACHE_COHERENCY:
            return true
          case IommuCap.DIRTY_TRACKING:
            return dev.dirtyTracking
          default:
            return false
        }
      },
      probeDevice(dev) {
        const iommu = dev.unit instanceof ToyIommuHw ? units.get(dev.unit) : undefined
        if (iommu === undefined || dev.iommu === null) throw new IommuError('ENODEV', dev.name)
        const td: ToyDev = { iommu, rid: dev.rid, domain: null }
        dev.iommu.priv = td
        return iommu.hw
      },
      releaseDevice(dev) {
        leave(devOf(dev))
      },
      deviceGroup(dev) {
        // Devices that cannot be isolated from each other share a group (pci_device_group).
        return devOf(dev).iommu.machine.iommu.pciDeviceGroup(dev)
      },
      domainAllocPagingFlags: allocPaging,
      blockedDomain,
      identityDomain,
      // Attached before releaseDevice, so a removed device cannot DMA.
      releaseDomain: blockedDomain,
    },
    domainOps,
    dirtyOps,
  })
  // #endregion descriptor
}

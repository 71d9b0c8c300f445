/**
 * The IOMMU core: what `drivers/iommu/iommu.c` does for a machine. Probing devices onto
 * driver instances, groups and default domains, DMA ownership, group-wide attach /
 * replace / detach, PASID attach / replace / remove, paging-domain allocation, and
 * `iommu_map` / `iommu_unmap` with the IOTLB gather.
 *
 * Functions keep the kernel's names in camelCase and its errno: each rule's errno is
 * cited next to the check. Kernel WARN_ON paths (caller bugs) throw a plain `Error`.
 *
 * @module
 */

import {
  IommuCap as Cap,
  DomainFeature,
  DomainType,
  HwptAllocFlags,
  IOMMU_NO_PASID,
  type IommuCap,
  PAGE_SIZE,
  ResvType,
} from '../constants.ts'
import {
  IommuDomain as Domain,
  type IommuDomain,
  type IommuResvRegion,
  MAP_SMALL,
  SYNC_MAP_NOOP,
  type UserData,
} from '../domain.ts'
import { type Driver, type IommuOps, unitOfDriver } from '../driver.ts'
import { IommuError, toIommuError } from '../errno.ts'
import { IotlbGather } from '../gather.ts'
import type { DevIommu, PciDevice } from '../machine/pci.ts'
import { type AttachHandle, type GroupDevice, IommuGroup, type PasidEntry } from './group.ts'
import { type IopfFault, reportDeviceFault } from './iopf.ts'

/** The core may not fail this domain change (detach/restore paths). */
const MUST_SUCCEED = 1

const U64_MAX = 0xffff_ffff_ffff_ffffn

/** Options of the IOMMU core (kernel command line `iommu.passthrough` / `iommu.strict`). */
export interface IommuCoreOptions {
  /**
   * The global default domain type (`iommu_def_domain_type`): `DomainType.DMA` (strict,
   * the default), `DomainType.DMA_FQ` (lazy) or `DomainType.IDENTITY` (passthrough).
   */
  readonly defaultDomainType?: number
}

function driverOf(dev: PciDevice): Driver {
  const unit = dev.iommu?.unit ?? dev.unit
  if (unit === null || unit === undefined) throw new IommuError('ENODEV', `${dev.name}: no IOMMU`)
  return unit.driver
}

function opsOf(dev: PciDevice): IommuOps {
  return driverOf(dev).ops
}

// Bit scans of a u64 through its two 32-bit halves (no bigint loop: iommu_pgsize runs once
// per piece of every map). Both are 0-based; the callers never pass 0.
function ffs64(v: bigint): number {
  const lo = Number(v & 0xffff_ffffn)
  if (lo !== 0) return 31 - Math.clz32(lo & -lo)
  const hi = Number((v >> 32n) & 0xffff_ffffn)
  return 63 - Math.clz32(hi & -hi)
}

function fls64(v: bigint): number {
  const hi = Number((v >> 32n) & 0xffff_ffffn)
  if (hi !== 0) return 63 - Math.clz32(hi)
  return 31 - Math.clz32(Number(v & 0xffff_ffffn))
}

/** True for the static domains (and domains) a driver's ops accept. */
function domainOpsCompatible(driver: Driver, domain: IommuDomain): boolean {
  if (domain.owner === driver) return true
  return domain === driver.ops.blockedDomain || domain === driver.ops.identityDomain
}

/**
 * The IOMMU core of one machine.
 */
export class IommuCore {
  /** Every group with at least one probed device. */
  readonly groups: Set<IommuGroup> = new Set()
  #defaultType: number
  readonly #globalPasids = new Set<number>()

  constructor(options: IommuCoreOptions = {}) {
    this.#defaultType = options.defaultDomainType ?? DomainType.DMA
  }

  /** The global default domain type (`iommu_def_domain_type`). */
  get defaultDomainType(): number {
    return this.#defaultType
  }

  // ------------------------------------------------------------------ probe

  /**
   * Take a device under its unit's driver (`iommu_probe_device`): `probeDevice`, group,
   * PASID width, reserved direct mappings and the default domain.
   *
   * @throws ENODEV - the device sits behind no IOMMU; the driver's probe errors
   */
  probeDevice(dev: PciDevice): void {
    if (dev.iommu?.group) return
    if (dev.unit === null) throw new IommuError('ENODEV', `${dev.name} is behind no IOMMU`)
    const driver = dev.unit.driver
    const ops = driver.ops
    // dev->iommu exists before probe_device so that the driver can set its private data.
    const iommu: DevIommu = {
      unit: dev.unit,
      group: null,
      maxPasids: 0,
      attachDeferred: false,
      requireDirect: false,
      priv: null,
    }
    dev.iommu = iommu
    let group: IommuGroup
    try {
      const hw = ops.probeDevice(dev)
      try {
        iommu.unit = unitOfDriver(hw, driver)
        group = ops.deviceGroup(dev)
      } catch (e) {
        ops.releaseDevice?.(dev)
        throw e
      }
    } catch (e) {
      dev.iommu = null
      throw e
    }
    iommu.group = group
    iommu.maxPasids = Math.min(dev.pciMaxPasids, iommu.unit.maxPasids)
    iommu.attachDeferred = ops.isAttachDeferred?.(dev) ?? false
    const gdev: GroupDevice = { dev, blocked: false, resetDepth: 0 }
    group.devices.push(gdev)
    this.groups.add(group)
    try {
      if (group.defaultDomain) this.#createDirectMappings(group.defaultDomain, dev)
      else this.#noteRequireDirect(dev)
      if (group.domain) {
        this.#deviceSetDomain(group, dev, group.domain, null, 0)
      } else if (!group.defaultDomain) {
        this.#setupDefaultDomain(group, 0)
      }
    } catch (e) {
      group.devices.splice(group.devices.indexOf(gdev), 1)
      this.#deinitDevice(dev, group)
      throw e
    }
    ops.probeFinalize?.(dev)
  }

  /**
   * Remove a device from the IOMMU (`iommu_release_device`): attach the release domain,
   * `releaseDevice`, and free the group's domains when the group becomes empty.
   */
  releaseDevice(dev: PciDevice): void {
    const group = dev.iommu?.group
    if (!group) return
    const i = group.devices.findIndex((g) => g.dev === dev)
    if (i < 0) return
    group.devices.splice(i, 1)
    this.#deinitDevice(dev, group)
  }

  #deinitDevice(dev: PciDevice, group: IommuGroup): void {
    const ops = opsOf(dev)
    const iommu = dev.iommu
    if (iommu && !iommu.attachDeferred && ops.releaseDomain) {
      let release = ops.releaseDomain
      // A device that needs its direct mappings must not be parked on BLOCKED.
      if (iommu.requireDirect && ops.identityDomain && release === ops.blockedDomain) {
        release = ops.identityDomain
      }
      release.ops.attachDev(release, dev, group.domain)
    }
    ops.releaseDevice?.(dev)
    if (group.devices.length === 0) {
      if (group.defaultDomain) this.iommuDomainFree(group.defaultDomain)
      if (group.blockingDomain && group.blockingDomain.owner !== null) {
        this.iommuDomainFree(group.blockingDomain)
      }
      group.defaultDomain = null
      group.blockingDomain = null
      group.domain = null
      this.groups.delete(group)
    }
    dev.iommu = null
  }

  /** A new group with no devices (`iommu_group_alloc`), for drivers' `deviceGroup`. */
  iommuGroupAlloc(): IommuGroup {
    return new IommuGroup()
  }

  /**
   * The group for a PCI device (`pci_device_group`): devices that cannot be isolated from
   * each other (same `isolationGroup` label behind the same unit) share one group; every
   * other device gets its own.
   */
  pciDeviceGroup(dev: PciDevice): IommuGroup {
    if (dev.isolationGroup !== null) {
      for (const g of this.groups) {
        for (const gd of g.devices) {
          const o = gd.dev
          if (o !== dev && o.isolationGroup === dev.isolationGroup && o.unit === dev.unit) return g
        }
      }
    }
    return new IommuGroup()
  }

  /** A group of its own for every device (`generic_device_group`). */
  genericDeviceGroup(_dev: PciDevice): IommuGroup {
    return new IommuGroup()
  }

  // ------------------------------------------------------------------ capabilities, info

  /** `device_iommu_capable`: false without an IOMMU or a `capable` op. */
  deviceIommuCapable(dev: PciDevice, cap: IommuCap): boolean {
    if (!dev.iommu) return false
    return opsOf(dev).capable?.(dev, cap) ?? false
  }

  /**
   * The device's reserved regions (`iommu_get_resv_regions`): what the driver reports
   * plus what firmware declares for the device (which the kernel's drivers read from
   * ACPI/DT tables).
   */
  iommuGetResvRegions(dev: PciDevice): IommuResvRegion[] {
    const drv = dev.iommu ? (opsOf(dev).getResvRegions?.(dev) ?? []) : []
    return [...drv, ...dev.resvRegions]
  }

  /**
   * The group's reserved regions (`iommu_get_group_resv_regions`): the union over its
   * devices, sorted by start (ties by type); regions of the same type that overlap or
   * touch are merged, regions of different types never are.
   */
  iommuGetGroupResvRegions(group: IommuGroup): IommuResvRegion[] {
    const all: IommuResvRegion[] = []
    for (const gd of group.devices) {
      if (!gd.dev.iommu) break
      all.push(...this.iommuGetResvRegions(gd.dev))
    }
    all.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : a.type - b.type))
    const out: { start: bigint; length: bigint; prot: number; type: number }[] = []
    const lastOfType = new Map<number, { start: bigint; length: bigint }>()
    for (const r of all) {
      const top = lastOfType.get(r.type)
      const end = r.start + r.length - 1n
      if (top !== undefined && r.start <= top.start + top.length) {
        const topEnd = top.start + top.length - 1n
        top.length = (end > topEnd ? end : topEnd) - top.start + 1n
        continue
      }
      const copy = { start: r.start, length: r.length, prot: r.prot, type: r.type }
      out.push(copy)
      lastOfType.set(r.type, copy)
    }
    return out
  }

  // ------------------------------------------------------------------ domains

  #domainInit(domain: IommuDomain, type: number, driver: Driver): IommuDomain {
    if (!(domain instanceof Domain)) {
      throw new Error(`${driver.name}: allocator did not return an IommuDomain`)
    }
    domain.type = type
    domain.owner = driver
    if (domain.opsUnset) domain.ops = driver.domainOps
    if (domain.pgsizeBitmap === 0n) domain.pgsizeBitmap = driver.ops.pgsizeBitmap ?? 0n
    return domain
  }

  #pagingDomainAlloc(dev: PciDevice, type: number, flags: number): IommuDomain {
    if (!dev.iommu) throw new IommuError('ENODEV', `${dev.name} has no IOMMU`)
    const driver = driverOf(dev)
    const ops = driver.ops
    let domain: IommuDomain
    if (ops.domainAllocPaging && flags === 0) domain = ops.domainAllocPaging(dev)
    else if (ops.domainAllocPagingFlags) domain = ops.domainAllocPagingFlags(dev, flags, null)
    else throw new IommuError('EOPNOTSUPP', `${driver.name} cannot allocate paging domains`)
    return this.#domainInit(domain, type, driver)
  }

  /**
   * Allocate a paging (UNMANAGED) domain for a kernel user
   * (`iommu_paging_domain_alloc_flags`).
   *
   * @param flags - `HwptAllocFlags`
   * @throws ENODEV - no IOMMU; EOPNOTSUPP - no paging allocator or unsupported flags;
   *   the driver's ENOMEM/EINVAL
   */
  iommuPagingDomainAllocFlags(dev: PciDevice, flags = 0): IommuDomain {
    return this.#pagingDomainAlloc(dev, DomainType.UNMANAGED, flags)
  }

  /**
   * Allocate a paging domain with user data on behalf of iommufd (`IOMMU_HWPT_ALLOC`):
   * always through `domainAllocPagingFlags`, stamped UNMANAGED and owned by the driver.
   *
   * @throws EOPNOTSUPP - the driver has no flags allocator (and flags or data were given)
   */
  iommuDomainAllocPagingUser(dev: PciDevice, flags: number, data: UserData | null): IommuDomain {
    if (!dev.iommu) throw new IommuError('ENODEV', `${dev.name} has no IOMMU`)
    const driver = driverOf(dev)
    const ops = driver.ops
    if ((flags !== 0 || data !== null) && !ops.domainAllocPagingFlags) {
      throw new IommuError('EOPNOTSUPP', `${driver.name}: no domain_alloc_paging_flags`)
    }
    if (ops.domainAllocPagingFlags) {
      return this.#domainInit(
        ops.domainAllocPagingFlags(dev, flags, data),
        DomainType.UNMANAGED,
        driver,
      )
    }
    return this.#pagingDomainAlloc(dev, DomainType.UNMANAGED, 0)
  }

  /**
   * Allocate a NESTED domain on `parent` through the driver's `domainAllocNested`
   * (iommufd's nested HWPT without a vIOMMU).
   *
   * @throws EOPNOTSUPP - the driver has none; EINVAL - `parent` belongs to another driver
   */
  iommuDomainAllocNested(
    dev: PciDevice,
    parent: IommuDomain,
    flags: number,
    data: UserData,
  ): IommuDomain {
    const driver = driverOf(dev)
    const alloc = driver.nesting?.domainAllocNested
    if (!alloc) throw new IommuError('EOPNOTSUPP', `${driver.name}: no domain_alloc_nested`)
    if (parent.owner !== driver) throw new IommuError('EINVAL', 'parent of another driver')
    const domain = alloc(dev, parent, flags, data)
    domain.owner = driver
    if (domain.opsUnset) domain.ops = driver.domainOps
    if (domain.type !== DomainType.NESTED) {
      throw new Error(`${driver.name}: nested allocator returned type ${domain.type}`)
    }
    return domain
  }

  /** Free a domain (`iommu_domain_free`): the driver's `free`, if any. */
  iommuDomainFree(domain: IommuDomain): void {
    domain.ops.free?.(domain)
  }

  // ------------------------------------------------------------------ default domains

  #defDomainTypeOf(dev: PciDevice, cur: number): number {
    const ops = opsOf(dev)
    let type: number
    // A driver with a static default domain always chooses it.
    if (ops.defaultDomain) type = ops.defaultDomain.type
    else if (ops.defDomainType) type = ops.defDomainType(dev)
    else return cur
    if (!type || cur === type) return cur
    if (!cur) return type
    // Conflicting requests in one group: IDENTITY takes precedence (the kernel logs).
    return type === DomainType.IDENTITY ? type : cur
  }

  /** `iommu_get_default_domain_type`: -1 when the group cannot be given `target`. */
  #getDefaultDomainType(group: IommuGroup, target: number): number {
    let driverType = 0
    let untrusted = false
    for (const gd of group.devices) {
      driverType = this.#defDomainTypeOf(gd.dev, driverType)
      if (gd.dev.untrusted) untrusted = true
    }
    if (untrusted) {
      // An untrusted device must be translated; a driver forcing anything else fails probe.
      if (driverType && driverType !== DomainType.DMA) return -1
      driverType = DomainType.DMA
    }
    if (target) {
      if (driverType && target !== driverType) return -1
      return target
    }
    return driverType
  }

  #allocDefaultOfType(group: IommuGroup, type: number): IommuDomain {
    const dev = group.firstDev
    if (group.defaultDomain && group.defaultDomain.type === type) return group.defaultDomain
    if (type & DomainFeature.PAGING) {
      // The DMA API domain is asked to be PASID capable when the device has PASIDs.
      const maxPasids = dev.iommu?.maxPasids ?? 0
      try {
        return this.#pagingDomainAlloc(dev, type, maxPasids ? HwptAllocFlags.PASID : 0)
      } catch (e) {
        if (maxPasids && e instanceof IommuError && e.code === 'EOPNOTSUPP') {
          return this.#pagingDomainAlloc(dev, type, 0)
        }
        throw e
      }
    }
    if (type === DomainType.IDENTITY) {
      const driver = driverOf(dev)
      if (driver.ops.identityDomain) return driver.ops.identityDomain
      if (driver.ops.domainAllocIdentity) {
        return this.#domainInit(driver.ops.domainAllocIdentity(dev), DomainType.IDENTITY, driver)
      }
      throw new IommuError('EOPNOTSUPP', `${driver.name}: no identity domain`)
    }
    throw new IommuError('EINVAL', `cannot allocate a default domain of type ${type}`)
  }

  #groupAllocDefaultDomain(group: IommuGroup, reqType: number): IommuDomain {
    const legacy = opsOf(group.firstDev).defaultDomain
    if (legacy) {
      if (reqType !== legacy.type)
        throw new IommuError('EINVAL', 'driver forces its default domain')
      return legacy
    }
    if (reqType) return this.#allocDefaultOfType(group, reqType)
    let type = this.#defaultType
    // A flush queue is only useful when unmap does not flush (IOMMU_CAP_DEFERRED_FLUSH).
    if (
      type === DomainType.DMA_FQ &&
      !this.deviceIommuCapable(group.firstDev, Cap.DEFERRED_FLUSH)
    ) {
      type = DomainType.DMA
    }
    try {
      return this.#allocDefaultOfType(group, type)
    } catch (e) {
      if (type === DomainType.DMA) throw new IommuError('EINVAL', 'no default domain', { cause: e })
      return this.#allocDefaultOfType(group, DomainType.DMA)
    }
  }

  /** Set `require_direct` if the device has IOMMU_RESV_DIRECT regions. */
  #noteRequireDirect(dev: PciDevice): void {
    if (!dev.iommu) return
    for (const r of this.iommuGetResvRegions(dev)) {
      if (r.type === ResvType.DIRECT) dev.iommu.requireDirect = true
    }
  }

  /**
   * Identity-map the device's DIRECT regions into a DMA domain
   * (`iommu_create_device_direct_mappings`), skipping pages already mapped.
   */
  #createDirectMappings(domain: IommuDomain, dev: PciDevice): void {
    this.#noteRequireDirect(dev)
    if (!domain.isDma) return
    if (domain.pgsizeBitmap === 0n) throw new IommuError('EINVAL', 'DMA domain without page sizes')
    const pg = 1n << BigInt(ffs64(domain.pgsizeBitmap))
    for (const r of this.iommuGetResvRegions(dev)) {
      if (r.type !== ResvType.DIRECT && r.type !== ResvType.DIRECT_RELAXABLE) continue
      const start = (r.start + pg - 1n) & ~(pg - 1n)
      const end = (r.start + r.length + pg - 1n) & ~(pg - 1n)
      let run = 0n
      for (let addr = start; addr <= end; addr += pg) {
        // iova_to_phys(0) is ambiguous: probe address 1 instead.
        if (addr !== end && this.iommuIovaToPhys(domain, addr === 0n ? 1n : addr) === 0n) {
          run += pg
          continue
        }
        if (run) {
          this.iommuMap(domain, addr - run, addr - run, run, r.prot)
          run = 0n
        }
      }
    }
  }

  /** `iommu_setup_default_domain`. */
  #setupDefaultDomain(group: IommuGroup, target: number): void {
    const old = group.defaultDomain
    const req = this.#getDefaultDomainType(group, target)
    if (req < 0) throw new IommuError('EINVAL', 'conflicting default domain requirements')
    const dom = this.#groupAllocDefaultDomain(group, req)
    if (group.defaultDomain === dom) return
    let directFailed = false
    for (const gd of group.devices) {
      try {
        this.#createDirectMappings(dom, gd.dev)
      } catch {
        directFailed = true
      }
    }
    group.defaultDomain = dom
    if (!group.domain) {
      // Drivers may not fail the first attach.
      this.#groupSetDomainInternal(group, dom, MUST_SUCCEED)
    } else {
      try {
        this.#groupSetDomain(group, dom)
      } catch (e) {
        if (old) {
          this.iommuDomainFree(dom)
          group.defaultDomain = old
        }
        throw e
      }
    }
    if (directFailed) {
      for (const gd of group.devices) this.#createDirectMappings(dom, gd.dev)
    }
    if (old) this.iommuDomainFree(old)
  }

  // ------------------------------------------------------------------ attach machinery

  #attachDevice(domain: IommuDomain, dev: PciDevice, old: IommuDomain | null): void {
    try {
      domain.ops.attachDev(domain, dev, old)
    } catch (e) {
      throw toIommuError(e, 'ENODEV')
    }
    if (dev.iommu) dev.iommu.attachDeferred = false
  }

  /** `__iommu_device_set_domain`. */
  #deviceSetDomain(
    group: IommuGroup,
    dev: PciDevice,
    next: IommuDomain,
    old: IommuDomain | null,
    flags: number,
  ): void {
    const iommu = dev.iommu
    if (!iommu) throw new IommuError('ENODEV', `${dev.name} has no IOMMU`)
    // A device with firmware 1:1 regions cannot be blocked: this also keeps it from
    // being claimed by VFIO/iommufd (§1.5 rule 5, EINVAL).
    if (
      iommu.requireDirect &&
      (next.type === DomainType.BLOCKED || next === group.blockingDomain)
    ) {
      throw new IommuError('EINVAL', `${dev.name} requires its direct mappings`)
    }
    if (iommu.attachDeferred) {
      if (next === group.defaultDomain) return
      iommu.attachDeferred = false
    }
    try {
      this.#attachDevice(next, dev, old)
    } catch (e) {
      if (flags & MUST_SUCCEED && group.blockingDomain && group.blockingDomain !== next) {
        try {
          this.#attachDevice(group.blockingDomain, dev, old)
        } catch {
          // Nothing more to try; the kernel only hopes to avoid a use-after-free here.
        }
      }
      throw e
    }
  }

  /**
   * `__iommu_group_set_domain_internal`: attach `next` to every device of the group. On
   * failure (without MUST_SUCCEED) the devices already switched are rolled back to the
   * current domain and the error is thrown; `group.domain` is unchanged.
   */
  #groupSetDomainInternal(group: IommuGroup, next: IommuDomain, flags: number): void {
    if (group.domain === next) return
    // §1.5 rule 8: domain changes wait for PCI reset recovery to finish (EBUSY).
    if (group.recoveryCnt && !(flags & MUST_SUCCEED)) {
      throw new IommuError('EBUSY', `group ${group.id} is in reset recovery`)
    }
    let result: IommuError | null = null
    for (let i = 0; i < group.devices.length; i++) {
      const gd = group.devices[i] as GroupDevice
      if (gd.blocked) continue
      try {
        this.#deviceSetDomain(group, gd.dev, next, group.domain, flags)
      } catch (e) {
        const err = toIommuError(e)
        result = err
        if (flags & MUST_SUCCEED) continue
        // Roll back the devices already switched, in list order.
        for (let j = 0; j < i; j++) {
          const back = group.devices[j] as GroupDevice
          if (back.blocked || !group.domain) continue
          this.#deviceSetDomain(group, back.dev, group.domain, next, MUST_SUCCEED)
        }
        throw err
      }
    }
    group.domain = next
    if (result) throw result
  }

  #groupSetDomain(group: IommuGroup, next: IommuDomain): void {
    this.#groupSetDomainInternal(group, next, 0)
  }

  /** `__iommu_group_set_domain_nofail`. */
  #groupSetDomainNofail(group: IommuGroup, next: IommuDomain): void {
    try {
      this.#groupSetDomainInternal(group, next, MUST_SUCCEED)
    } catch {
      // MUST_SUCCEED records the domain even if a driver misbehaved (kernel WARNs).
    }
  }

  /** `__iommu_group_set_core_domain`: blocking domain if owned, else default domain. */
  #groupSetCoreDomain(group: IommuGroup): void {
    const next = group.owner !== null ? group.blockingDomain : group.defaultDomain
    if (next) this.#groupSetDomainNofail(group, next)
  }

  /** `__iommu_attach_group`. */
  #attachGroup(domain: IommuDomain, group: IommuGroup): void {
    // §1.5 rule 2: someone else's domain is attached; detach or replace first (EBUSY).
    if (
      group.domain &&
      group.domain !== group.defaultDomain &&
      group.domain !== group.blockingDomain
    ) {
      throw new IommuError('EBUSY', `group ${group.id} is attached to another domain`)
    }
    const dev = group.firstDev
    // §1.5 rule 2: the domain must belong to this device's driver (EINVAL).
    if (!dev.iommu || !domainOpsCompatible(driverOf(dev), domain)) {
      throw new IommuError('EINVAL', 'domain belongs to another IOMMU driver')
    }
    this.#groupSetDomain(group, domain)
  }

  #groupOf(dev: PciDevice): IommuGroup {
    const g = dev.iommu?.group
    if (!g) throw new IommuError('ENODEV', `${dev.name} has no IOMMU group`)
    return g
  }

  // ------------------------------------------------------------------ attach API

  /**
   * Attach a domain to a whole group (`iommu_attach_group`).
   *
   * @throws EBUSY - another non-core domain is attached; EINVAL - the domain belongs to
   *   another driver or is incompatible; the driver's attach errors
   */
  iommuAttachGroup(domain: IommuDomain, group: IommuGroup): void {
    this.#attachGroup(domain, group)
  }

  /** Return the group to its core domain (`iommu_detach_group`); never fails. */
  iommuDetachGroup(_domain: IommuDomain, group: IommuGroup): void {
    this.#groupSetCoreDomain(group)
  }

  /**
   * Attach a domain to a device that is alone in its group (`iommu_attach_device`).
   *
   * @throws ENODEV - no group; EINVAL - the group has more than one device; as
   *   {@link iommuAttachGroup}
   */
  iommuAttachDevice(domain: IommuDomain, dev: PciDevice): void {
    const group = dev.iommu?.group
    if (!group) throw new IommuError('ENODEV', `${dev.name} has no IOMMU group`)
    if (group.devices.length !== 1) {
      throw new IommuError('EINVAL', `group ${group.id} has ${group.devices.length} devices`)
    }
    this.#attachGroup(domain, group)
  }

  /** Detach from a single-device group (`iommu_detach_device`). */
  iommuDetachDevice(domain: IommuDomain, dev: PciDevice): void {
    const group = dev.iommu?.group
    if (!group) return
    if (domain !== group.domain || group.devices.length !== 1) {
      throw new Error('iommu_detach_device: not the attached domain of a singleton group')
    }
    this.#groupSetCoreDomain(group)
  }

  /** The group's current RID domain (`iommu_get_domain_for_dev`). */
  iommuGetDomainForDev(dev: PciDevice): IommuDomain | null {
    return dev.iommu?.group?.domain ?? null
  }

  /**
   * Attach with a handle, the first attach of an iommufd user (`iommu_attach_group_handle`).
   *
   * @throws EINVAL - no handle; EBUSY - a handle is already stored for PASID 0 or another
   *   domain is attached; as {@link iommuAttachGroup}
   */
  iommuAttachGroupHandle(domain: IommuDomain, group: IommuGroup, handle: AttachHandle): void {
    if (!handle) throw new IommuError('EINVAL', 'no handle')
    if (group.pasidArray.has(IOMMU_NO_PASID)) {
      throw new IommuError('EBUSY', 'a handle is stored for PASID 0')
    }
    group.pasidArray.set(IOMMU_NO_PASID, null)
    try {
      this.#attachGroup(domain, group)
    } catch (e) {
      group.pasidArray.delete(IOMMU_NO_PASID)
      throw e
    }
    handle.domain = domain
    group.pasidArray.set(IOMMU_NO_PASID, { domain, handle })
  }

  /** Detach a handle attach (`iommu_detach_group_handle`); never fails. */
  iommuDetachGroupHandle(_domain: IommuDomain, group: IommuGroup): void {
    this.#groupSetCoreDomain(group)
    group.pasidArray.delete(IOMMU_NO_PASID)
  }

  /**
   * Switch the group directly to `next` without passing through blocking
   * (`iommu_replace_group_handle`). No owner compatibility check: drivers reject foreign
   * domains with EINVAL. On failure the group keeps its domain and handle.
   *
   * @throws EINVAL - no domain or handle; EBUSY - reset recovery; the driver's errors
   */
  iommuReplaceGroupHandle(group: IommuGroup, next: IommuDomain, handle: AttachHandle): void {
    if (!next || !handle) throw new IommuError('EINVAL', 'no domain or handle')
    const prev = group.pasidArray.get(IOMMU_NO_PASID)
    if (prev === undefined) group.pasidArray.set(IOMMU_NO_PASID, null)
    try {
      this.#groupSetDomain(group, next)
    } catch (e) {
      if (prev === undefined) group.pasidArray.delete(IOMMU_NO_PASID)
      throw e
    }
    handle.domain = next
    group.pasidArray.set(IOMMU_NO_PASID, { domain: next, handle })
  }

  /** The handle attached to `pasid` (`iommu_attach_handle_get`). @throws ENOENT, EBUSY */
  iommuAttachHandleGet(group: IommuGroup, pasid: number, type = 0): AttachHandle {
    const e = group.pasidArray.get(pasid)
    if (!e || e.handle === null) throw new IommuError('ENOENT', `no handle at PASID ${pasid}`)
    if (type && e.domain.type !== type) throw new IommuError('EBUSY', 'domain type mismatch')
    return e.handle
  }

  // ------------------------------------------------------------------ I/O page faults

  /**
   * Report a device's page request (`iommu_report_device_fault`), typically from the
   * driver's PRI/PRQ queue handler. The request goes to the domain attached to its PASID
   * (or, with `ops.userPasidTable`, to the NESTED domain on the RID when the PASID has no
   * domain of its own), or to the RID's domain without a PASID. A request without LAST_PAGE
   * is kept until the last request of its group arrives. The device must be on an
   * `IopfQueue` of its driver.
   *
   * @throws EINVAL - no fault handler for the request (the driver's `pageResponse` has
   *   already been called with INVALID, as the kernel does)
   */
  iommuReportDeviceFault(dev: PciDevice, evt: IopfFault): void {
    const routing = {
      attachHandleGet: (d: PciDevice, pasid: number, type: number): AttachHandle | null => {
        const group = d.iommu?.group
        if (!group) return null
        try {
          return this.iommuAttachHandleGet(group, pasid, type)
        } catch {
          return null
        }
      },
    }
    reportDeviceFault(routing, dev, evt, DomainType.NESTED)
  }

  // ------------------------------------------------------------------ DMA ownership

  /**
   * A kernel driver binds and will use the DMA API (`iommu_device_use_default_domain`).
   *
   * @throws EPROBE_DEFER - no default domain yet; EBUSY - the group is owned by a user,
   *   attached elsewhere, or has PASID attachments
   */
  iommuDeviceUseDefaultDomain(dev: PciDevice): void {
    const group = dev.iommu?.group
    if (!group) return
    if (!group.defaultDomain) throw new IommuError('EPROBE_DEFER', 'no default domain yet')
    if (group.ownerCnt) {
      if (group.domain !== group.defaultDomain || group.owner !== null || group.hasPasidEntries) {
        throw new IommuError('EBUSY', `group ${group.id} is owned`)
      }
    }
    group.ownerCnt++
  }

  /** The kernel driver unbinds (`iommu_device_unuse_default_domain`). */
  iommuDeviceUnuseDefaultDomain(dev: PciDevice): void {
    const group = dev.iommu?.group
    if (!group) return
    if (group.ownerCnt && !group.hasPasidEntries) group.ownerCnt--
  }

  #blockingDomainOf(group: IommuGroup): IommuDomain {
    if (group.blockingDomain) return group.blockingDomain
    const ops = opsOf(group.firstDev)
    // Drivers without a blocked domain get an empty paging domain instead.
    group.blockingDomain = ops.blockedDomain ?? this.iommuPagingDomainAllocFlags(group.firstDev, 0)
    return group.blockingDomain
  }

  #takeDmaOwnership(group: IommuGroup, owner: unknown): void {
    // §1.5 rule 5: attached to a non-default domain, or PASIDs in use (EBUSY).
    if ((group.domain && group.domain !== group.defaultDomain) || group.hasPasidEntries) {
      throw new IommuError('EBUSY', `group ${group.id} is in use`)
    }
    const blocking = this.#blockingDomainOf(group)
    this.#groupSetDomain(group, blocking)
    group.owner = owner
    group.ownerCnt++
  }

  /**
   * Claim DMA ownership of a group for a user (`iommu_group_claim_dma_owner`).
   *
   * @throws EINVAL - no owner cookie; EPERM - the group has any owner or DMA-API user;
   *   EBUSY - see {@link iommuDeviceClaimDmaOwner}
   */
  iommuGroupClaimDmaOwner(group: IommuGroup, owner: unknown): void {
    if (owner === null || owner === undefined) throw new Error('claim without an owner cookie')
    // §1.5 rule 5: only one owner per group (EPERM).
    if (group.ownerCnt) throw new IommuError('EPERM', `group ${group.id} is owned`)
    this.#takeDmaOwnership(group, owner)
  }

  /**
   * Claim DMA ownership of a device for a user (`iommu_device_claim_dma_owner`): several
   * devices of a group may claim with the same owner cookie. The first claim moves the
   * group to its blocking domain.
   *
   * @throws ENODEV - no group; EPERM - owned by another cookie or used by a kernel driver;
   *   EBUSY - attached to a non-default domain or PASIDs attached; EINVAL - the device
   *   requires direct mappings
   */
  iommuDeviceClaimDmaOwner(dev: PciDevice, owner: unknown): void {
    if (owner === null || owner === undefined) throw new Error('claim without an owner cookie')
    const group = this.#groupOf(dev)
    if (group.ownerCnt) {
      // §1.5 rule 5: another owner, or a kernel driver using the DMA API (EPERM).
      if (group.owner !== owner) throw new IommuError('EPERM', `group ${group.id} is owned`)
      group.ownerCnt++
      return
    }
    this.#takeDmaOwnership(group, owner)
  }

  #releaseDmaOwnership(group: IommuGroup): void {
    if (!group.ownerCnt || group.owner === null || group.hasPasidEntries) {
      throw new Error(`group ${group.id}: releasing DMA ownership that is not held cleanly`)
    }
    group.ownerCnt = 0
    group.owner = null
    if (group.defaultDomain) this.#groupSetDomainNofail(group, group.defaultDomain)
  }

  /** Release a group claim (`iommu_group_release_dma_owner`). */
  iommuGroupReleaseDmaOwner(group: IommuGroup): void {
    this.#releaseDmaOwnership(group)
  }

  /** Release a device claim (`iommu_device_release_dma_owner`). */
  iommuDeviceReleaseDmaOwner(dev: PciDevice): void {
    const group = this.#groupOf(dev)
    if (group.ownerCnt > 1) group.ownerCnt--
    else this.#releaseDmaOwnership(group)
  }

  /** Whether the group has a DMA owner or DMA-API users (`iommu_group_dma_owner_claimed`). */
  iommuGroupDmaOwnerClaimed(group: IommuGroup): boolean {
    return group.ownerCnt > 0
  }

  // ------------------------------------------------------------------ PASID

  #removeDevPasid(dev: PciDevice, pasid: number, domain: IommuDomain): void {
    const blocked = opsOf(dev).blockedDomain
    blocked?.ops.setDevPasid?.(blocked, dev, pasid, domain)
  }

  /** `__iommu_set_group_pasid`: set on every PASID-capable device, undo on failure. */
  #setGroupPasid(
    domain: IommuDomain,
    group: IommuGroup,
    pasid: number,
    old: IommuDomain | null,
  ): void {
    const set = domain.ops.setDevPasid
    if (!set) throw new IommuError('EOPNOTSUPP', 'domain has no set_dev_pasid')
    for (let i = 0; i < group.devices.length; i++) {
      const dev = (group.devices[i] as GroupDevice).dev
      if (!dev.iommu || dev.iommu.maxPasids === 0) continue
      try {
        set.call(domain.ops, domain, dev, pasid, old)
      } catch (e) {
        for (let j = 0; j < i; j++) {
          const back = (group.devices[j] as GroupDevice).dev
          if (!back.iommu || back.iommu.maxPasids === 0) continue
          let restored = false
          if (old?.ops.setDevPasid) {
            try {
              old.ops.setDevPasid(old, back, pasid, domain)
              restored = true
            } catch {
              // A driver failing to restore a previously good domain: remove it instead.
            }
          }
          if (!restored) this.#removeDevPasid(back, pasid, domain)
        }
        throw toIommuError(e)
      }
    }
  }

  /**
   * Attach a domain to one PASID of the device's group (`iommu_attach_device_pasid`).
   * The entry becomes visible only after every device succeeded.
   *
   * @throws ENODEV - no group; EOPNOTSUPP - the domain has no `setDevPasid`, or the driver
   *   has no blocked domain that can remove PASIDs; EINVAL - PASID 0 or a foreign domain,
   *   or `pasid` ≥ some PASID-capable device's `maxPasids`; EBUSY - reset recovery, or the
   *   PASID is already attached (use replace); the driver's errors
   */
  iommuAttachDevicePasid(
    domain: IommuDomain,
    dev: PciDevice,
    pasid: number,
    handle: AttachHandle | null = null,
  ): void {
    const group = dev.iommu?.group
    if (!group) throw new IommuError('ENODEV', `${dev.name} has no IOMMU group`)
    const driver = driverOf(dev)
    const blocked = driver.ops.blockedDomain
    // §1.6 rule 1: PASID attach needs set_dev_pasid on the domain and on the blocked domain.
    if (!domain.ops.setDevPasid || !blocked?.ops.setDevPasid) {
      throw new IommuError('EOPNOTSUPP', 'PASID attach is not supported')
    }
    // §1.6 rule 2: never PASID 0, never a foreign domain (EINVAL).
    if (!domainOpsCompatible(driver, domain) || pasid === IOMMU_NO_PASID) {
      throw new IommuError('EINVAL', pasid === IOMMU_NO_PASID ? 'PASID 0' : 'foreign domain')
    }
    // §1.6 rule 3: EBUSY during reset recovery.
    if (group.recoveryCnt) throw new IommuError('EBUSY', `group ${group.id} is in reset recovery`)
    // §1.6 rule 4: the PASID must fit every PASID-capable device (EINVAL).
    for (const gd of group.devices) {
      const m = gd.dev.iommu?.maxPasids ?? 0
      if (m > 0 && pasid >= m) {
        throw new IommuError('EINVAL', `PASID ${pasid} >= ${gd.dev.name}'s ${m} PASIDs`)
      }
    }
    // §1.6 rule 5: attach never overwrites an entry (EBUSY).
    if (group.pasidArray.has(pasid)) throw new IommuError('EBUSY', `PASID ${pasid} is attached`)
    group.pasidArray.set(pasid, null)
    try {
      this.#setGroupPasid(domain, group, pasid, null)
    } catch (e) {
      group.pasidArray.delete(pasid)
      throw e
    }
    if (handle) handle.domain = domain
    group.pasidArray.set(pasid, { domain, handle })
  }

  /**
   * Replace the domain of an attached PASID (`iommu_replace_device_pasid`). The same
   * domain is only a handle swap; on failure the PASID keeps its old domain and handle.
   *
   * @throws ENODEV; EOPNOTSUPP - the domain has no `setDevPasid`; EINVAL - foreign domain,
   *   PASID 0, no handle, nothing attached to the PASID, or the very same handle reused;
   *   EBUSY - reset recovery; the driver's errors
   */
  iommuReplaceDevicePasid(
    domain: IommuDomain,
    dev: PciDevice,
    pasid: number,
    handle: AttachHandle,
  ): void {
    const group = dev.iommu?.group
    if (!group) throw new IommuError('ENODEV', `${dev.name} has no IOMMU group`)
    if (!domain.ops.setDevPasid) throw new IommuError('EOPNOTSUPP', 'no set_dev_pasid')
    if (!domainOpsCompatible(driverOf(dev), domain) || pasid === IOMMU_NO_PASID || !handle) {
      throw new IommuError('EINVAL', 'foreign domain, PASID 0 or no handle')
    }
    if (group.recoveryCnt) throw new IommuError('EBUSY', `group ${group.id} is in reset recovery`)
    const curr: PasidEntry | null | undefined = group.pasidArray.get(pasid)
    // §1.6: replace needs something attached (EINVAL, state unchanged).
    if (curr === undefined || curr === null) {
      throw new IommuError('EINVAL', `nothing attached to PASID ${pasid}`)
    }
    if (curr.handle === handle) throw new IommuError('EINVAL', 'attach handle reused')
    if (curr.domain !== domain) this.#setGroupPasid(domain, group, pasid, curr.domain)
    handle.domain = domain
    group.pasidArray.set(pasid, { domain, handle })
  }

  /**
   * Detach a PASID (`iommu_detach_device_pasid`) through the blocked domain; never fails.
   */
  iommuDetachDevicePasid(domain: IommuDomain, dev: PciDevice, pasid: number): void {
    const group = this.#groupOf(dev)
    for (const gd of group.devices) {
      if (!gd.blocked && (gd.dev.iommu?.maxPasids ?? 0) > 0)
        this.#removeDevPasid(gd.dev, pasid, domain)
    }
    group.pasidArray.delete(pasid)
  }

  /**
   * Allocate a PASID from the global space (`iommu_alloc_global_pasid`).
   *
   * @returns a PASID in [1, maxPasids - 1], or `IOMMU_PASID_INVALID`
   */
  iommuAllocGlobalPasid(dev: PciDevice): number {
    const max = dev.iommu?.maxPasids ?? 0
    for (let p = 1; p < max; p++) {
      if (!this.#globalPasids.has(p)) {
        this.#globalPasids.add(p)
        return p
      }
    }
    return 0xffff_ffff
  }

  /** Free a global PASID (`iommu_free_global_pasid`). */
  iommuFreeGlobalPasid(pasid: number): void {
    this.#globalPasids.delete(pasid)
  }

  // ------------------------------------------------------------------ PCI reset recovery

  /**
   * Park an ATS device on the blocking domain for a reset (`pci_dev_reset_iommu_prepare`):
   * the group keeps its domain; PASIDs are removed from the device but stay recorded;
   * domain changes on the group fail with EBUSY until {@link pciDevResetIommuDone}.
   */
  pciDevResetIommuPrepare(dev: PciDevice): void {
    if (!dev.ats || !dev.iommu) return
    const group = this.#groupOf(dev)
    const gd = group.devices.find((g) => g.dev === dev)
    if (!gd) throw new IommuError('ENODEV', 'device not in its group')
    if (gd.resetDepth++) return
    try {
      const blocking = this.#blockingDomainOf(group)
      if (group.domain !== blocking) this.#attachDevice(blocking, dev, group.domain)
    } catch (e) {
      gd.resetDepth--
      throw e
    }
    gd.blocked = true
    for (const [pasid, e] of group.pasidArray) {
      if (pasid === IOMMU_NO_PASID || e === null) continue
      if (dev.iommu.maxPasids > 0) this.#removeDevPasid(dev, pasid, e.domain)
    }
    group.recoveryCnt++
  }

  /** Restore a device after reset (`pci_dev_reset_iommu_done`). */
  pciDevResetIommuDone(dev: PciDevice): void {
    if (!dev.ats || !dev.iommu) return
    const group = this.#groupOf(dev)
    const gd = group.devices.find((g) => g.dev === dev)
    if (!gd || gd.resetDepth === 0) return
    if (--gd.resetDepth) return
    const blocking = group.blockingDomain
    if (group.domain && group.domain !== blocking) this.#attachDevice(group.domain, dev, blocking)
    for (const [pasid, e] of group.pasidArray) {
      if (pasid === IOMMU_NO_PASID || e === null || dev.iommu.maxPasids === 0) continue
      e.domain.ops.setDevPasid?.(e.domain, dev, pasid, blocking)
    }
    gd.blocked = false
    group.recoveryCnt--
  }

  // ------------------------------------------------------------------ map / unmap

  /**
   * The page size and count for the next piece of a map (`iommu_pgsize`): the largest
   * size the domain supports that fits `size` and the alignment of `iova | paddr`, and
   * enough pages of it to reach the next larger page size's boundary.
   */
  iommuPgsize(
    domain: IommuDomain,
    iova: bigint,
    paddr: bigint,
    size: bigint,
  ): { pgsize: bigint; count: number } {
    const merge = iova | paddr
    let pgsizes = domain.pgsizeBitmap & ((1n << BigInt(fls64(size) + 1)) - 1n)
    if (merge) pgsizes &= (1n << BigInt(ffs64(merge) + 1)) - 1n
    if (!pgsizes) throw new Error('iommu_pgsize: no page size fits (caller checked alignment)')
    const idx = fls64(pgsizes)
    const pgsize = 1n << BigInt(idx)
    let sz = size
    const bigger = domain.pgsizeBitmap & ~((1n << BigInt(idx + 1)) - 1n)
    if (bigger) {
      const next = 1n << BigInt(ffs64(bigger))
      // No use trying the bigger page unless IOVA and PA are offset alike within it.
      if (((iova ^ paddr) & (next - 1n)) === 0n) {
        const offset = next - (merge & (next - 1n))
        if (offset + next <= U64_MAX && offset + next <= size) sz = offset
      }
    }
    return { pgsize, count: Number(sz >> BigInt(idx)) }
  }

  /**
   * Map [iova, iova + size) to [paddr, ...) (`iommu_map`): split into the largest page
   * sizes the domain allows, map, then sync. On failure everything mapped by this call
   * is unmapped again.
   *
   * @throws EINVAL - not a paging domain, no page sizes, or `iova`, `paddr` or `size` not
   *   aligned to the smallest page size; ENODEV - no map op; the driver's EEXIST /
   *   EADDRINUSE / ENOMEM
   */
  iommuMap(domain: IommuDomain, iova: bigint, paddr: bigint, size: bigint, prot: number): void {
    this.iommuMapNosync(domain, iova, paddr, size, prot)
    try {
      domain.ops.iotlbSyncMap?.(domain, iova, size)
    } catch (e) {
      this.iommuUnmap(domain, iova, size)
      throw e
    }
  }

  /**
   * One {@link iommuMap} of PAGE_SIZE for each page of [iova, iova + size), in order; when
   * one fails the pages mapped before it are unmapped again (one `iommu_unmap`) and its
   * error is thrown: iommufd's `batch_iommu_map_small`, which maps with large pages
   * disabled so that no IOPTE exceeds PAGE_SIZE. A domain whose ops offer the
   * {@link MAP_SMALL} fast path (and need no `iotlbSyncMap` after each page: none, or one
   * that {@link SYNC_MAP_NOOP} says does nothing) maps the pages in one call with the same
   * result.
   *
   * @throws the failing map's errno
   */
  iommuMapSmall(
    domain: IommuDomain,
    iova: bigint,
    paddr: bigint,
    size: bigint,
    prot: number,
  ): void {
    const ops = domain.ops
    const page = BigInt(PAGE_SIZE)
    const mapSmall = ops[MAP_SMALL]
    if (
      mapSmall !== undefined &&
      (ops.iotlbSyncMap === undefined || ops[SYNC_MAP_NOOP]?.(domain) === true) &&
      domain.isPaging &&
      domain.pgsizeBitmap !== 0n &&
      size > 0n &&
      ((iova | paddr | size) & (page - 1n)) === 0n
    ) {
      try {
        mapSmall.call(ops, domain, iova, paddr, size, prot)
      } catch (e) {
        const done = e instanceof IommuError ? (e.progress ?? 0n) : 0n
        if (done) this.iommuUnmap(domain, iova, done)
        // The failing one-page map reports its own error, with nothing mapped by it.
        if (e instanceof IommuError) throw new IommuError(e.code, 'map', { progress: 0n, cause: e })
        throw e
      }
      return
    }
    let done = 0n
    try {
      for (; done < size; done += page) this.iommuMap(domain, iova + done, paddr + done, page, prot)
    } catch (e) {
      if (done) this.iommuUnmap(domain, iova, done)
      throw e
    }
  }

  /** `iommu_map_nosync`: as {@link iommuMap} without `iotlbSyncMap`. */
  iommuMapNosync(
    domain: IommuDomain,
    iova: bigint,
    paddr: bigint,
    size: bigint,
    prot: number,
  ): void {
    if (!domain.isPaging || domain.pgsizeBitmap === 0n) {
      throw new IommuError('EINVAL', 'map on a domain without paging')
    }
    let mapped = 0n
    try {
      const ops = domain.ops
      if (ops.mapRange) {
        ops.mapRange(domain, iova, paddr, size, prot)
        return
      }
      if (!ops.mapPages) throw new IommuError('ENODEV', 'domain has no map_pages')
      const min = 1n << BigInt(ffs64(domain.pgsizeBitmap))
      // §1.9: iova, paddr and size must all be aligned to the smallest page (EINVAL).
      if (((iova | paddr | size) & (min - 1n)) !== 0n) {
        throw new IommuError('EINVAL', `unaligned map: iova ${iova} pa ${paddr} size ${size}`)
      }
      let left = size
      let va = iova
      let pa = paddr
      while (left) {
        const { pgsize, count } = this.iommuPgsize(domain, va, pa, left)
        const done = ops.mapPages(domain, va, pa, pgsize, count, prot)
        mapped += done
        left -= done
        va += done
        pa += done
      }
    } catch (e) {
      // Pages mapped by the failing call count too: they are unmapped with the rest.
      if (e instanceof IommuError && e.progress !== undefined) mapped += e.progress
      if (mapped) this.iommuUnmap(domain, iova, mapped)
      throw e
    }
  }

  /** `__iommu_unmap`. */
  #unmap(domain: IommuDomain, iova: bigint, size: bigint, gather: IotlbGather): bigint {
    if (!domain.isPaging || domain.pgsizeBitmap === 0n) return 0n
    const ops = domain.ops
    if (ops.unmapRange) return ops.unmapRange(domain, iova, size, gather)
    if (!ops.unmapPages) return 0n
    const min = 1n << BigInt(ffs64(domain.pgsizeBitmap))
    // §1.9: an unaligned unmap unmaps nothing (returns 0).
    if (((iova | size) & (min - 1n)) !== 0n) return 0n
    let unmapped = 0n
    let va = iova
    while (unmapped < size) {
      const { pgsize, count } = this.iommuPgsize(domain, va, va, size - unmapped)
      const n = ops.unmapPages(domain, va, pgsize, count, gather)
      if (!n) break
      // A driver that does not use the gather still gets its iotlb_sync call.
      if (gather.empty) gather.addRange(va, size)
      va += n
      unmapped += n
    }
    return unmapped
  }

  /**
   * Unmap [iova, iova + size) and sync (`iommu_unmap`). Stops at the first hole; cannot
   * split what one `iommu_map` mapped.
   *
   * @returns bytes unmapped (0 when unaligned or nothing is mapped at `iova`)
   */
  iommuUnmap(domain: IommuDomain, iova: bigint, size: bigint): bigint {
    const gather = new IotlbGather()
    const n = this.#unmap(domain, iova, size, gather)
    this.iommuIotlbSync(domain, gather)
    return n
  }

  /** Unmap without syncing (`iommu_unmap_fast`); the caller syncs `gather`. */
  iommuUnmapFast(domain: IommuDomain, iova: bigint, size: bigint, gather: IotlbGather): bigint {
    return this.#unmap(domain, iova, size, gather)
  }

  /**
   * Flush what `gather` collected (`iommu_iotlb_sync`): the driver's `iotlbSync` runs only
   * for a non-empty gather, then the gather's page-table pages are freed and the gather is
   * re-initialized.
   */
  iommuIotlbSync(domain: IommuDomain, gather: IotlbGather): void {
    if (domain.ops.iotlbSync && !gather.empty) domain.ops.iotlbSync(domain, gather)
    // Table pages removed by the unmap are freed only after the invalidation.
    gather.releaseFreelist()
    gather.init()
  }

  /**
   * Gather one page for a page-based flush (`iommu_iotlb_gather_add_page`): a different
   * page size or a disjoint range syncs what was gathered first.
   */
  iommuIotlbGatherAddPage(
    domain: IommuDomain,
    gather: IotlbGather,
    iova: bigint,
    size: bigint,
  ): void {
    if ((gather.pgsize && BigInt(gather.pgsize) !== size) || gather.isDisjoint(iova, size)) {
      this.iommuIotlbSync(domain, gather)
    }
    gather.pgsize = Number(size)
    gather.addRange(iova, size)
  }

  /** Synchronously flush the whole IOTLB of the domain (`iommu_flush_iotlb_all`). */
  iommuFlushIotlbAll(domain: IommuDomain): void {
    domain.ops.flushIotlbAll?.(domain)
  }

  /**
   * Translate through the domain (`iommu_iova_to_phys`): identity returns `iova`,
   * blocked returns 0.
   */
  iommuIovaToPhys(domain: IommuDomain, iova: bigint): bigint {
    if (domain.type === DomainType.IDENTITY) return iova
    if (domain.type === DomainType.BLOCKED) return 0n
    return domain.ops.iovaToPhys?.(domain, iova) ?? 0n
  }
}

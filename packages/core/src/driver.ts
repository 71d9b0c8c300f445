/**
 * The driver plugin contract: `struct iommu_ops`, the capability declaration, the
 * hardware-unit contract and `defineDriver`.
 *
 * A driver is a frozen descriptor made by a factory (`amd(options)`), registered
 * explicitly with a machine. Its declared capabilities are tied to the ops that implement
 * them in the type (dirty tracking declared ⇒ `dirtyOps` required), and the registry
 * re-checks the tie at run time for untyped JavaScript plugins.
 *
 * @module
 */

import type { IommuCap } from './constants.ts'
import type { DirtyOps, DomainOps, IommuDomain, IommuResvRegion, UserData } from './domain.ts'
import { IommuError } from './errno.ts'
import type { IommuGroup } from './iommu/group.ts'
import type { IopfFault, PageResponse } from './iommu/iopf.ts'
import type { DmaTransaction } from './machine/dma.ts'
import type { Machine } from './machine/machine.ts'
import type { PciDevice } from './machine/pci.ts'
import type { IommufdViommu } from './viommu.ts'

/** The contract version a driver is written against; the registry rejects others. */
export const DRIVER_API_VERSION = 1

/**
 * What `hwInfo` returns: the hardware-information structure the uAPI copies to user space
 * (`IOMMU_GET_HW_INFO`), laid out as the uAPI struct.
 */
export interface HwInfo {
  /** One of `HwInfoType`. */
  readonly type: number
  /** The struct's bytes (little-endian). */
  readonly data: Uint8Array
}

/**
 * `iommu_ops.domain_alloc_nested`: a user-managed stage-1 domain on a nest parent, without
 * a vIOMMU (VT-d's way; iommufd's IOMMU_HWPT_ALLOC with `pt_id` = a NEST_PARENT HWPT).
 */
export interface DomainAllocNestedOp {
  /**
   * domainAllocNested() - allocate an `IOMMU_DOMAIN_NESTED` domain whose stage 1 the user
   * owns, translated through `parent` (`domain_alloc_nested`). iommufd has checked that
   * `parent` is a NEST_PARENT paging domain of this driver; `flags` has at most
   * `HwptAllocFlags.PASID` (FAULT_ID_VALID is stripped), and `data.len` is non-zero.
   * Return a domain of type `DomainType.NESTED` whose ops include `attachDev` (and
   * `cacheInvalidateUser` when user space invalidates through the nested HWPT).
   *
   * @throws EOPNOTSUPP - unknown flags or data type; EINVAL - malformed data, or a parent
   *   the driver cannot nest on; EFAULT; ENOMEM
   */
  domainAllocNested(dev: PciDevice, parent: IommuDomain, flags: number, data: UserData): IommuDomain
}

/** `iommu_ops.get_viommu_size` / `viommu_init`: vIOMMU support (SMMUv3's way). */
export interface ViommuAllocOps {
  /**
   * getViommuSize() - whether `dev`'s IOMMU supports a vIOMMU of `viommuType`
   * (`get_viommu_size`): non-zero when it does (the kernel returns its structure size),
   * 0 makes IOMMU_VIOMMU_ALLOC fail with EOPNOTSUPP.
   */
  getViommuSize(dev: PciDevice, viommuType: number): number
  /**
   * viommuInit() - set up the driver's part of a new vIOMMU on the nest parent `parent`
   * (`viommu_init`); `viommu.type`, `unit` and `parent` are set. Must set `viommu.ops`
   * (iommufd fails the allocation with EOPNOTSUPP otherwise). `data` is the user's
   * `data_uptr`/`data_len` (null when `data_len` is 0); write outputs back with
   * `copyStructToUser`.
   *
   * @throws EINVAL, EFAULT (data), ENOMEM, EOPNOTSUPP - the allocation fails with it
   */
  viommuInit(viommu: IommufdViommu, parent: IommuDomain, data: UserData | null): void
}

/**
 * The nested-translation ops of a driver that declares `nesting`: `domainAllocNested`
 * (nesting on a parent HWPT), the vIOMMU pair `getViommuSize` + `viommuInit`, or both.
 */
export type NestingOps =
  | (DomainAllocNestedOp & Partial<ViommuAllocOps>)
  | (Partial<DomainAllocNestedOp> & ViommuAllocOps)

/**
 * The per-driver operations (`struct iommu_ops`). Every op may throw {@link IommuError};
 * the errno values are listed per op.
 */
export interface IommuOps {
  /**
   * capable() - whether the device's IOMMU has capability `cap`. Absent ⇒ every cap false.
   */
  capable?(dev: PciDevice, cap: IommuCap): boolean

  /**
   * hwInfo() - the hardware information reported by `IOMMU_GET_HW_INFO`.
   *
   * @param type - the requested `HwInfoType`; `DEFAULT` means the driver's own
   * @throws EOPNOTSUPP - the requested type is not supported; ENOMEM
   */
  hwInfo?(dev: PciDevice, type: number): HwInfo

  /**
   * domainAllocPagingFlags() - allocate a paging domain for `dev`
   * (`domain_alloc_paging_flags`). Must return a domain or throw; never null.
   *
   * @param flags - `HwptAllocFlags` (NEST_PARENT, DIRTY_TRACKING, PASID)
   * @param data - driver-specific user data, or null
   * @throws EOPNOTSUPP - unknown or unsupported flags, or user data the driver does not
   *   understand; EINVAL; ENOMEM; ENODEV
   */
  domainAllocPagingFlags?(dev: PciDevice, flags: number, data: UserData | null): IommuDomain

  /**
   * domainAllocPaging() - same as `domainAllocPagingFlags(dev, 0, null)`. A driver should
   * implement only one of the two.
   *
   * @throws ENOMEM, ENODEV
   */
  domainAllocPaging?(dev: PciDevice): IommuDomain

  /**
   * domainAllocIdentity() - allocate an identity domain when a static one cannot serve.
   *
   * @throws ENOMEM, EOPNOTSUPP
   */
  domainAllocIdentity?(dev: PciDevice): IommuDomain

  /**
   * probeDevice() - take the device under the driver and return the IOMMU unit serving it
   * (`probe_device` returning the `iommu_device`): one of the hardware instances this
   * driver's `createUnit` built, usually `dev.unit` (where the device sits). Set up the
   * driver's per-device state here, in `dev.iommu.priv` (`dev_iommu_priv_set`).
   *
   * @throws ENODEV - not handled by this driver; ENOMEM
   */
  probeDevice(dev: PciDevice): IommuHardware

  /** releaseDevice() - the device leaves the driver; stop using any domain on it. */
  releaseDevice?(dev: PciDevice): void

  /** probeFinalize() - called after the device's default domain is attached. */
  probeFinalize?(dev: PciDevice): void

  /**
   * deviceGroup() - find or create the device's IOMMU group (`device_group`). The usual
   * answers are the IOMMU core's `machine.iommu.pciDeviceGroup(dev)` (`pci_device_group`:
   * devices that cannot be isolated share a group) and `machine.iommu.genericDeviceGroup(dev)`
   * (`generic_device_group`: one group per device); keep the `machine` from `createUnit`'s
   * {@link UnitContext} to reach them.
   *
   * @throws ENOMEM, EINVAL
   */
  deviceGroup(dev: PciDevice): IommuGroup

  /** getResvRegions() - reserved regions of the device (MSI windows, RMRR/IVMD). */
  getResvRegions?(dev: PciDevice): IommuResvRegion[]

  /** isAttachDeferred() - defer the default-domain attach until the DMA API is used. */
  isAttachDeferred?(dev: PciDevice): boolean

  /**
   * pageResponse() - send the response to a page request group to the device
   * (`page_response`): `evt` is the group's last request as the driver reported it, so
   * `evt.fault.prm.privateData` carries what the driver needs. Called once per group:
   * when user space answers, when the fault queue auto-answers INVALID (detach, replace,
   * close), or with INVALID right away when no handler takes the request.
   */
  pageResponse?(dev: PciDevice, evt: IopfFault, response: PageResponse): void

  /**
   * defDomainType() - the default domain the device needs: `DomainType.IDENTITY`,
   * `DomainType.DMA`, or 0 for no preference.
   */
  defDomainType?(dev: PciDevice): number

  /**
   * Page sizes the driver's paging domains use (bit n = 2^n bytes); allocated domains
   * that set none inherit it (the kernel's former `ops->pgsize_bitmap`).
   */
  readonly pgsizeBitmap?: bigint
  /** An always available, always attachable identity domain. */
  readonly identityDomain?: IommuDomain
  /** An always available, always attachable blocking domain (needed for PASID). */
  readonly blockedDomain?: IommuDomain
  /** Attached before `releaseDevice` (the blocked domain is the usual choice). */
  readonly releaseDomain?: IommuDomain
  /**
   * Legacy: when set, always the default domain (an IDENTITY/BLOCKED/PLATFORM domain).
   * The selftest mock uses its blocked domain this way. Do not use in new drivers.
   */
  readonly defaultDomain?: IommuDomain
  /**
   * The driver supports a user-managed PASID table: faults on PASIDs without their own
   * domain go to the NESTED domain attached to the RID.
   */
  readonly userPasidTable?: boolean
}

/**
 * The capabilities a driver declares. Each `true` obliges the driver to provide the ops
 * that implement it; `capable()` then says per device whether the hardware has it.
 */
export interface DriverCapabilities {
  /** Hardware dirty tracking ⇒ `dirtyOps`. */
  readonly dirtyTracking: boolean
  /**
   * Nested translation ⇒ `nesting` ops: `domainAllocNested`, or the vIOMMU pair
   * `getViommuSize` + `viommuInit`, or both.
   */
  readonly nesting: boolean
  /** PASID attach ⇒ `domainOps.setDevPasid` and `ops.blockedDomain`. */
  readonly pasid: boolean
  /** `enforce_cache_coherency` ⇒ `domainOps.enforceCacheCoherency`. */
  readonly enforceCacheCoherency: boolean
  /** Deferred (flush-queue) invalidation ⇒ `domainOps.flushIotlbAll`. */
  readonly deferredFlush: boolean
  /** I/O page faults (PRI) ⇒ `ops.pageResponse`. */
  readonly iopf: boolean
}

/** What a driver's `createUnit` receives: the machine and where the unit sits in it. */
export interface UnitContext {
  /** The machine the unit is built into. */
  readonly machine: Machine
  /** Index of the unit among the machine's IOMMU units. */
  readonly index: number
  /** Per-unit hardware configuration given to `createMachine`/`addIommu`. */
  readonly config: unknown
}

/**
 * One IOMMU hardware instance as its driver's `createUnit` builds it: the hardware model
 * behind a `struct iommu_device`. It implements `translate`, the only way DMA reaches
 * memory. It does not name its driver: the machine binds it to the driver that created it
 * (see {@link IommuUnit}).
 */
export interface IommuHardware {
  /** Instance name, e.g. `'amd-iommu0'`. */
  readonly name: string
  /** Number of PASIDs the instance supports (`iommu_device.max_pasids`). */
  readonly maxPasids: number
  /**
   * translate() - translate one DMA access in hardware: read the structures the driver
   * wrote into memory and registers, use and fill the caches, update accessed/dirty bits,
   * log faults. Must not consult the driver's software state.
   *
   * On success fills `txn.pa` (physical byte address of `txn.iova`) and `txn.len` (bytes
   * translated contiguously from there, at least 1, at most to the end of the IO page)
   * and returns true. On a fault sets `txn.fault` (and `txn.faultLevel` if known), logs
   * the event as the hardware would, and returns false; memory is left untouched.
   */
  translate(txn: DmaTransaction): boolean
}

/**
 * An IOMMU unit of a machine: the hardware instance bound to its driver. This is what
 * `machine.units`, `dev.unit` and `dev.iommu.unit` hold.
 *
 * The binding rule: `createUnit` returns an {@link IommuHardware} (a fresh, extensible
 * object; it need not know the frozen descriptor), and the machine adds the read-only
 * `driver` property to that very object, so `unit.driver` is exactly the descriptor
 * `defineDriver` returned and `createMachine`/`addIommu` was given. The object keeps its
 * identity (`instanceof` and `===` on the hardware class still work). A driver needs no
 * forward reference to its own descriptor. A hardware class may say
 * `declare readonly driver: Driver` and `implements IommuUnit` so that its instances are
 * units in the type; `declare` emits no field, and the class never assigns it.
 */
export interface IommuUnit extends IommuHardware {
  /** The driver that created the unit (set by the machine, never by the driver). */
  readonly driver: Driver
}

/**
 * Bind a hardware instance to the driver whose `createUnit` built it (the machine does
 * this; drivers never call it).
 *
 * @throws EINVAL - not a hardware instance, frozen, or already bound to another driver
 */
export function bindUnit(hw: IommuHardware, driver: Driver): IommuUnit {
  if (typeof hw !== 'object' || hw === null || typeof hw.translate !== 'function') {
    throw new IommuError('EINVAL', `${driver.name}: createUnit must return an IommuHardware`)
  }
  const prev = (hw as { driver?: unknown }).driver
  if (prev !== undefined && prev !== driver) {
    throw new IommuError('EINVAL', `${driver.name}: createUnit returned a unit of another driver`)
  }
  if (prev === undefined && !Object.isExtensible(hw)) {
    throw new IommuError('EINVAL', `${driver.name}: createUnit returned a frozen object`)
  }
  Object.defineProperty(hw, 'driver', {
    value: driver,
    enumerable: false,
    writable: false,
    configurable: false,
  })
  return hw as IommuUnit
}

/**
 * The unit a driver's `probeDevice` answered, checked to be one the machine bound to that
 * driver.
 *
 * @throws EINVAL - the driver returned a unit it did not create
 */
export function unitOfDriver(hw: IommuHardware, driver: Driver): IommuUnit {
  if (typeof hw !== 'object' || hw === null || (hw as { driver?: unknown }).driver !== driver) {
    throw new IommuError('EINVAL', `${driver.name}: probeDevice returned a unit it did not create`)
  }
  return hw as IommuUnit
}

// A capability typed `true` requires its ops, `false` forbids them, and the general
// `boolean` (a driver seen through the base type) leaves them optional.
type DirtyPart<C extends DriverCapabilities> = C['dirtyTracking'] extends true
  ? { readonly dirtyOps: DirtyOps }
  : C['dirtyTracking'] extends false
    ? { readonly dirtyOps?: never }
    : { readonly dirtyOps?: DirtyOps }

type NestingPart<C extends DriverCapabilities> = C['nesting'] extends true
  ? { readonly nesting: NestingOps }
  : C['nesting'] extends false
    ? { readonly nesting?: never }
    : { readonly nesting?: NestingOps }

type Need<C extends DriverCapabilities, K extends keyof DriverCapabilities, T> = C[K] extends true
  ? T
  : unknown

/** Domain ops required by the declared capabilities. */
export type DomainOpsFor<C extends DriverCapabilities> = DomainOps &
  Need<C, 'pasid', Required<Pick<DomainOps, 'setDevPasid'>>> &
  Need<C, 'enforceCacheCoherency', Required<Pick<DomainOps, 'enforceCacheCoherency'>>> &
  Need<C, 'deferredFlush', Required<Pick<DomainOps, 'flushIotlbAll'>>>

/** Driver ops required by the declared capabilities. */
export type IommuOpsFor<C extends DriverCapabilities> = IommuOps &
  Need<C, 'pasid', { readonly blockedDomain: IommuDomain }> &
  Need<C, 'iopf', Required<Pick<IommuOps, 'pageResponse'>>>

/** The descriptor a driver author writes; {@link defineDriver} checks and freezes it. */
export type DriverSpec<C extends DriverCapabilities = DriverCapabilities> = {
  /** Unique driver name (`'amd'`, `'intel'`, `'smmuv3'`, `'mock'`). */
  readonly name: string
  /** Must be {@link DRIVER_API_VERSION}. */
  readonly apiVersion: typeof DRIVER_API_VERSION
  /** The declared capabilities; each `true` requires its ops. */
  readonly capabilities: C
  /**
   * createUnit() - bring up one hardware instance in the machine (tables in memory,
   * registers, queues) and return it. Called once per unit the machine is built with.
   * Return a fresh object without a `driver` property: the machine binds it to this
   * driver (see {@link IommuUnit}).
   */
  createUnit(ctx: UnitContext): IommuHardware
  /** The driver's `iommu_ops`. */
  readonly ops: IommuOpsFor<C>
  /** The default domain ops (`default_domain_ops`) installed on domains that set none. */
  readonly domainOps: DomainOpsFor<C>
} & DirtyPart<C> &
  NestingPart<C>

/** A registered-ready driver: the frozen spec, tagged. */
export type Driver<C extends DriverCapabilities = DriverCapabilities> = DriverSpec<C> & {
  readonly kind: 'iommu-driver'
}

/**
 * Define a driver. The capability/ops tie is checked by the type system (a declared
 * capability without its ops does not compile) and again at run time.
 *
 * @throws EINVAL - the spec is malformed (run-time check for untyped JavaScript plugins)
 */
export function defineDriver<const C extends DriverCapabilities>(spec: DriverSpec<C>): Driver<C> {
  validateDriver(spec)
  return Object.freeze({ ...spec, kind: 'iommu-driver' as const }) as Driver<C>
}

function isFn(v: unknown): boolean {
  return typeof v === 'function'
}

/**
 * Check a driver descriptor the way the registry does, for plugins that bypassed the
 * types: kind/apiVersion, required ops, and that every declared capability has its ops.
 *
 * @throws EINVAL naming the first problem found
 */
export function validateDriver(spec: unknown): void {
  const bad = (why: string): never => {
    throw new IommuError('EINVAL', `invalid IOMMU driver: ${why}`)
  }
  if (typeof spec !== 'object' || spec === null) bad('not an object')
  const d = spec as Record<string, unknown>
  if (typeof d.name !== 'string' || d.name.length === 0) bad('missing name')
  const name = d.name as string
  if (d.apiVersion !== DRIVER_API_VERSION) bad(`${name}: apiVersion must be ${DRIVER_API_VERSION}`)
  if (!isFn(d.createUnit)) bad(`${name}: missing createUnit`)
  const ops = d.ops as Record<string, unknown> | undefined
  const domainOps = d.domainOps as Record<string, unknown> | undefined
  const caps = d.capabilities as Record<string, unknown> | undefined
  if (typeof ops !== 'object' || ops === null) bad(`${name}: missing ops`)
  if (typeof domainOps !== 'object' || domainOps === null) bad(`${name}: missing domainOps`)
  if (typeof caps !== 'object' || caps === null) bad(`${name}: missing capabilities`)
  const o = ops as Record<string, unknown>
  const dops = domainOps as Record<string, unknown>
  const c = caps as Record<string, unknown>
  if (!isFn(o.probeDevice)) bad(`${name}: ops.probeDevice is required`)
  if (!isFn(o.deviceGroup)) bad(`${name}: ops.deviceGroup is required`)
  if (!isFn(dops.attachDev)) bad(`${name}: domainOps.attachDev is required`)
  const ties: [keyof DriverCapabilities, boolean, string][] = [
    ['dirtyTracking', isDirtyOps(d.dirtyOps), 'dirtyOps'],
    ['nesting', isNestingOps(d.nesting), 'nesting ops'],
    ['pasid', isFn(dops.setDevPasid) && typeof o.blockedDomain === 'object', 'setDevPasid'],
    ['enforceCacheCoherency', isFn(dops.enforceCacheCoherency), 'enforceCacheCoherency'],
    ['deferredFlush', isFn(dops.flushIotlbAll), 'flushIotlbAll'],
    ['iopf', isFn(o.pageResponse), 'pageResponse'],
  ]
  for (const [cap, present, what] of ties) {
    if (typeof c[cap] !== 'boolean') bad(`${name}: capabilities.${cap} must be a boolean`)
    if (c[cap] === true && !present) bad(`${name}: declares ${cap} without ${what}`)
  }
  if (c.dirtyTracking !== true && d.dirtyOps !== undefined) {
    bad(`${name}: dirtyOps without declaring dirtyTracking`)
  }
  if (c.nesting !== true && d.nesting !== undefined) {
    bad(`${name}: nesting ops without declaring nesting`)
  }
  if (typeof d.nesting === 'object' && d.nesting !== null) {
    const n = d.nesting as Record<string, unknown>
    // get_viommu_size and viommu_init only work as a pair (viommu.c checks both).
    if (isFn(n.getViommuSize) !== isFn(n.viommuInit)) {
      bad(`${name}: getViommuSize and viommuInit come together`)
    }
  }
}

function isNestingOps(v: unknown): boolean {
  if (typeof v !== 'object' || v === null) return false
  const n = v as Record<string, unknown>
  return isFn(n.domainAllocNested) || (isFn(n.getViommuSize) && isFn(n.viommuInit))
}

function isDirtyOps(v: unknown): boolean {
  if (typeof v !== 'object' || v === null) return false
  const o = v as Record<string, unknown>
  return isFn(o.setDirtyTracking) && isFn(o.readAndClearDirty)
}

/**
 * The explicit driver registry (nothing registers itself on import). Names are unique:
 * registering a second driver of the same name is EEXIST, re-registering the same
 * descriptor is a no-op.
 */
export class DriverRegistry {
  readonly #byName = new Map<string, Driver>()

  /**
   * Register a driver after re-checking it.
   *
   * @throws EINVAL - not a valid driver; EEXIST - another driver has that name
   */
  register(driver: Driver): void {
    validateDriver(driver)
    if ((driver as { kind?: unknown }).kind !== 'iommu-driver') {
      throw new IommuError(
        'EINVAL',
        `invalid IOMMU driver: ${driver.name} not made by defineDriver`,
      )
    }
    const existing = this.#byName.get(driver.name)
    if (existing === driver) return
    if (existing !== undefined) {
      throw new IommuError('EEXIST', `an IOMMU driver named '${driver.name}' is registered`)
    }
    this.#byName.set(driver.name, driver)
  }

  /** The driver registered under `name`, if any. */
  get(name: string): Driver | undefined {
    return this.#byName.get(name)
  }

  /** All registered drivers, in registration order. */
  list(): Driver[] {
    return [...this.#byName.values()]
  }
}

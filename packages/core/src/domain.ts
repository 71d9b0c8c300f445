/**
 * The domain contracts: `struct iommu_domain`, `struct iommu_domain_ops`,
 * `struct iommu_dirty_ops`, and the user-data carriers drivers receive.
 *
 * Addresses and sizes on these contracts are `bigint`: they are the kernel's
 * `unsigned long` / `phys_addr_t` / `size_t` (u64) and are passed once per range, never
 * per page. Hot paths below them (page-table walks, the dirty recorder, DMA translation)
 * work on page-frame numbers as `number`.
 *
 * Errors are thrown as {@link IommuError}; each op lists the errno values it may throw,
 * as the kernel documents them.
 *
 * @module
 */

import { DomainFeature, DomainType } from './constants.ts'
import type { Driver } from './driver.ts'
import { IommuError } from './errno.ts'
import type { IommuDirtyBitmap, IotlbGather } from './gather.ts'
import type { IopfGroup } from './iommu/iopf.ts'
import type { PciDevice } from './machine/pci.ts'

/** The IOVA window a domain can translate (`struct iommu_domain_geometry`). */
export interface Geometry {
  /** First IOVA the domain can map. */
  apertureStart: bigint
  /** Last IOVA the domain can map (inclusive). */
  apertureEnd: bigint
  /** DMA outside the aperture is impossible (not only unmapped). */
  forceAperture: boolean
}

/** A reserved IOVA region reported by a driver or firmware (`struct iommu_resv_region`). */
export interface IommuResvRegion {
  /** First address of the region. */
  readonly start: bigint
  /** Length in bytes (> 0). */
  readonly length: bigint
  /** `Prot` flags the region would be mapped with (DIRECT, SW_MSI). */
  readonly prot: number
  /** One of `ResvType`. */
  readonly type: number
}

/**
 * Driver-specific data that accompanies an allocation from user space
 * (`struct iommu_user_data`). The bytes are read from the calling process on demand.
 */
export interface UserData {
  /** The `IOMMU_HWPT_DATA_*` / `IOMMU_VIOMMU_TYPE_*` type tag. */
  readonly type: number
  /** Length of the user's structure in bytes. */
  readonly len: number
  /** Copy the user's `len` bytes. Throws EFAULT for a bad user pointer. */
  read(): Uint8Array
  /**
   * Write `bytes` to the start of the user's structure (`copy_to_user` of output fields
   * such as a vIOMMU's mmap offset). Absent when the data cannot be written back: the
   * helpers then answer EFAULT. Throws EFAULT for a bad user pointer.
   */
  write?(bytes: Uint8Array): void
}

/**
 * An array of driver-specific entries from user space (`struct iommu_user_data_array`),
 * e.g. cache invalidation requests. `entryNum` is in/out: a driver writes back how many
 * entries it handled.
 */
export interface UserDataArray {
  /** The `IOMMU_HWPT_INVALIDATE_DATA_*` / `IOMMU_VIOMMU_INVALIDATE_DATA_*` type tag. */
  readonly type: number
  /** Size of one entry as the user laid it out. */
  readonly entryLen: number
  /** Number of entries; the driver rewrites it to the number it handled. */
  entryNum: number
  /** Copy entry `index` (`entryLen` bytes). Throws EFAULT for a bad user pointer. */
  readEntry(index: number): Uint8Array
}

/**
 * Copy driver-specific user data into a kernel structure of `size` bytes, as
 * `iommu_copy_struct_from_user` does.
 *
 * @param data - the user data, or null (EINVAL)
 * @param type - the type tag the driver expects (mismatch → EINVAL)
 * @param size - `sizeof` the driver's structure
 * @param minLen - `offsetofend` of the last member of the structure's first version
 * @returns a `size`-byte view, zero-extended where the user gave less
 * @throws EINVAL when the type differs, or `len` is below `minLen` or above `size`;
 *   EFAULT when the user memory cannot be read
 */
export function copyStructFromUser(
  data: UserData | null,
  type: number,
  size: number,
  minLen: number,
): DataView {
  if (data === null) throw new IommuError('EINVAL', 'no user data')
  if (data.type !== type) throw new IommuError('EINVAL', `user data type ${data.type} != ${type}`)
  if (data.len < minLen || size < data.len) {
    throw new IommuError('EINVAL', `user data length ${data.len} outside [${minLen}, ${size}]`)
  }
  const out = new Uint8Array(size)
  out.set(data.read().subarray(0, data.len))
  return new DataView(out.buffer)
}

/**
 * `copy_struct_from_user`: copy a user structure of `usize` bytes into a kernel structure
 * of `ksize` bytes — zero-extended when shorter, and when longer the bytes the kernel does
 * not know must be zero (E2BIG).
 */
function copyStruct(raw: Uint8Array, usize: number, ksize: number): Uint8Array {
  const out = new Uint8Array(ksize)
  if (usize > ksize) {
    for (let i = ksize; i < usize; i++) {
      if (raw[i] !== 0) throw new IommuError('E2BIG', 'non-zero bytes past the kernel struct')
    }
  }
  out.set(raw.subarray(0, Math.min(usize, ksize)))
  return out
}

/**
 * Copy the whole user array into `entryNum` kernel structures of `size` bytes each, as
 * `iommu_copy_struct_from_full_user_array` does (the vIOMMU invalidation path): when
 * `entryLen` equals `size` the array is copied as is; otherwise each entry follows
 * `copy_struct_from_user` (shorter entries are zero-extended, longer ones need zero tails,
 * else E2BIG). There is no EINVAL for an `entryLen` that differs from `size`.
 *
 * @returns one view of `entryNum * size` bytes; entry i starts at `i * size`
 * @throws EINVAL - type mismatch or an empty array; E2BIG; EFAULT
 */
export function copyStructFromFullUserArray(
  array: UserDataArray,
  type: number,
  size: number,
): DataView {
  if (array.type !== type) throw new IommuError('EINVAL', `user array type ${array.type}`)
  if (!array.entryNum) throw new IommuError('EINVAL', 'empty user array')
  const out = new Uint8Array(size * array.entryNum)
  for (let i = 0; i < array.entryNum; i++) {
    out.set(copyStruct(array.readEntry(i), array.entryLen, size), i * size)
  }
  return new DataView(out.buffer)
}

/**
 * Report driver data back to user space, as `iommu_copy_struct_to_user` does: the type and
 * length are checked like {@link copyStructFromUser}, then `min(len, size)` bytes of `src`
 * are written (`copy_struct_to_user`).
 *
 * @param src - the kernel structure (`size` = `src.length` bytes)
 * @throws EINVAL - type mismatch, or `len` outside [minLen, size]; EFAULT
 */
export function copyStructToUser(
  data: UserData | null,
  type: number,
  src: Uint8Array,
  minLen: number,
): void {
  if (data === null) throw new IommuError('EINVAL', 'no user data')
  if (data.type !== type) throw new IommuError('EINVAL', `user data type ${data.type} != ${type}`)
  if (data.len < minLen || src.length < data.len) {
    throw new IommuError(
      'EINVAL',
      `user data length ${data.len} outside [${minLen}, ${src.length}]`,
    )
  }
  if (!data.write) throw new IommuError('EFAULT', 'user data is read-only')
  data.write(src.subarray(0, data.len))
}

/**
 * Copy entry `index` of a user array into a kernel structure of `size` bytes, as
 * `iommu_copy_struct_from_user_array` does: the entry is checked like one user data blob
 * (`iommu_copy_struct_from_user`), so a shorter entry is zero-extended and a longer one
 * is refused.
 *
 * @throws EINVAL on a type mismatch, an empty array or an index past it, or an entry
 *   length outside [minLen, size]; EFAULT when the user memory cannot be read
 */
export function copyStructFromUserArray(
  array: UserDataArray,
  type: number,
  index: number,
  size: number,
  minLen: number,
): DataView {
  if (index >= array.entryNum || array.entryNum === 0) {
    throw new IommuError('EINVAL', `entry ${index} of ${array.entryNum}`)
  }
  return copyStructFromUser(
    { type: array.type, len: array.entryLen, read: () => array.readEntry(index) },
    type,
    size,
    minLen,
  )
}

/**
 * The key of the model-only `DomainOps` fast path for runs of one-page maps (see
 * `DomainOps[MAP_SMALL]`).
 */
export const MAP_SMALL: unique symbol = Symbol('iommu.mapSmall')

/**
 * The key of the model-only `DomainOps` query that lets a domain with an `iotlbSyncMap`
 * take the {@link MAP_SMALL} fast path (see `DomainOps[SYNC_MAP_NOOP]`).
 */
export const SYNC_MAP_NOOP: unique symbol = Symbol('iommu.syncMapNoop')

/**
 * The per-domain operations (`struct iommu_domain_ops`). `D` is the driver's domain type;
 * methods take the domain first, as the kernel's ops do.
 *
 * Only `attachDev` is required; paging domains also need `mapPages`/`unmapPages` (or the
 * generic page-table pair `mapRange`/`unmapRange`) and `iovaToPhys`.
 */
export interface DomainOps<D extends IommuDomain = IommuDomain> {
  /**
   * attachDev() - switch the device's RID translation to `domain`.
   *
   * @param old - the domain being replaced: null on the first attach, the group's blocking
   *   domain when re-attaching after a PCI reset
   * @throws EINVAL - the device and domain are incompatible (a soft failure: the caller may
   *   be probing for a compatible domain, so the driver should not log)
   * @throws ENOMEM - out of memory
   * @throws ENOSPC - a non-memory resource ran out (e.g. domain IDs)
   * @throws EBUSY - the device is attached to a domain and its state forbids the change
   * @throws ENODEV - device-specific errors; any other errno is treated as ENODEV
   *
   * A driver must always succeed in re-attaching a domain that was attached before: the
   * core relies on it to roll back a group-wide attach.
   */
  attachDev(domain: D, dev: PciDevice, old: IommuDomain | null): void

  /**
   * setDevPasid() - set or replace the domain of one PASID of the device. On failure the
   * PASID must keep its old configuration.
   *
   * @param old - the domain currently attached to the PASID, or null
   * @throws EINVAL, ENOMEM, ENOSPC, EBUSY, ENODEV - as for {@link attachDev}
   */
  setDevPasid?(domain: D, dev: PciDevice, pasid: number, old: IommuDomain | null): void

  /**
   * mapPages() - map `pgcount` physically contiguous pages of one size `pgsize`.
   *
   * `iova` and `paddr` are aligned to `pgsize`, and `pgsize` is one of the domain's
   * `pgsizeBitmap` sizes (the core guarantees both). The driver may map fewer pages than
   * asked and return the bytes it mapped; the core calls again for the rest.
   *
   * @returns bytes mapped (> 0)
   * @throws EEXIST or EADDRINUSE - something is already mapped in the range (which one is
   *   the page-table format's choice); ENOMEM; EINVAL - bad arguments or prot. A thrown
   *   error carries `progress`: the bytes mapped before the failure, which the core unmaps.
   */
  mapPages?(
    domain: D,
    iova: bigint,
    paddr: bigint,
    pgsize: bigint,
    pgcount: number,
    prot: number,
  ): bigint

  /**
   * unmapPages() - unmap up to `pgcount` pages of size `pgsize` from `iova`, recording in
   * `gather` what must be invalidated (and which table pages to free after it).
   *
   * @returns bytes unmapped; 0 when nothing is mapped at `iova` (the core stops there).
   *   Never throws.
   */
  unmapPages?(domain: D, iova: bigint, pgsize: bigint, pgcount: number, gather: IotlbGather): bigint

  /**
   * mapRange() - map [iova, iova + size) to [paddr, ...) choosing the IOPTE sizes itself
   * (the generic page table's `map_range`). When present the core uses it instead of
   * splitting the range with `iommu_pgsize` into {@link mapPages} calls.
   *
   * @returns bytes mapped; the same errno values as {@link mapPages}, with `progress`;
   *   ENXIO when no page size fits the alignment of the IOVA or PA (generic_pt)
   */
  mapRange?(domain: D, iova: bigint, paddr: bigint, size: bigint, prot: number): bigint

  /**
   * Optional, model only (not a kernel op, hence the symbol key): map [iova, iova + size)
   * exactly as `size / PAGE_SIZE` calls of {@link mapRange} (or {@link mapPages}) of one
   * PAGE_SIZE page each would, in order, stopping at the first failure — the same IOPTEs,
   * table allocations and error. A fast path for iommufd's per-page maps with large pages
   * disabled (`batch_iommu_map_small`); offer it only when the domain keeps no per-call
   * state (the selftest mock's map boundaries, for one, rule it out). `iova`, `paddr` and
   * `size` are whole pages. `pageTableDomainOps` of `@iommu/io-pgtable` provides it.
   *
   * @returns bytes mapped (= `size`)
   * @throws the failing call's errno, with `progress`: the bytes mapped before it
   */
  [MAP_SMALL]?(domain: D, iova: bigint, paddr: bigint, size: bigint, prot: number): bigint

  /**
   * Model only: true when `iotlbSyncMap` would do nothing for this domain now (VT-d
   * without caching mode or RWBF: `intel_iommu_iotlb_sync_map` flushes nothing), so that
   * iommufd's per-page maps may take the {@link MAP_SMALL} fast path although the ops have
   * an `iotlbSyncMap`: the per-page syncs it skips would have changed nothing.
   */
  [SYNC_MAP_NOOP]?(domain: D): boolean

  /**
   * unmapRange() - unmap [iova, iova + size) (the generic page table's `unmap_range`).
   *
   * @returns bytes unmapped; never throws
   */
  unmapRange?(domain: D, iova: bigint, size: bigint, gather: IotlbGather): bigint

  /** flushIotlbAll() - synchronously invalidate every IOTLB entry of this domain. */
  flushIotlbAll?(domain: D): void

  /**
   * iotlbSyncMap() - make mappings created by the last map visible to the hardware
   * (caching-mode / write-buffer hardware).
   *
   * @throws ENOMEM or a hardware error; the core then unmaps the range
   */
  iotlbSyncMap?(domain: D, iova: bigint, size: bigint): void

  /**
   * iotlbSync() - invalidate what `gather` accumulated and free its page-table pages.
   * The core calls it only when the gather is non-empty.
   */
  iotlbSync?(domain: D, gather: IotlbGather): void

  /**
   * cacheInvalidateUser() - flush hardware caches for a user-managed (NESTED) page table.
   * The driver must rewrite `array.entryNum` to the number of requests it handled, also
   * when it throws.
   *
   * @throws EINVAL - a malformed request; EOPNOTSUPP - an unsupported type; EFAULT
   */
  cacheInvalidateUser?(domain: D, array: UserDataArray): void

  /**
   * iovaToPhys() - translate through the domain's page table.
   *
   * @returns the physical address, or 0n when nothing is mapped at `iova`
   */
  iovaToPhys?(domain: D, iova: bigint): bigint

  /**
   * enforceCacheCoherency() - make no-snoop DMA impossible from now on. Must succeed on a
   * fresh domain if the device reported `IommuCap.ENFORCE_CACHE_COHERENCY`.
   *
   * @returns true when coherency is now enforced
   */
  enforceCacheCoherency?(domain: D): boolean

  /**
   * free() - release the domain. The core has detached it from every device first.
   */
  free?(domain: D): void
}

/**
 * Hardware dirty tracking of a paging domain (`struct iommu_dirty_ops`). A domain has
 * dirty ops only when it was allocated with `HwptAllocFlags.DIRTY_TRACKING`.
 */
export interface DirtyOps<D extends IommuDomain = IommuDomain> {
  /**
   * setDirtyTracking() - turn hardware dirty logging on or off for every device attached
   * to the domain.
   *
   * @throws EINVAL - the domain cannot track; ENOMEM; EOPNOTSUPP
   */
  setDirtyTracking(domain: D, enabled: boolean): void

  /**
   * readAndClearDirty() - record every dirty IOPTE in [iova, iova + size) into `dirty`,
   * whole (a dirty 2 MiB IOPTE records 2 MiB), and clear its dirty state unless `flags`
   * has `IOMMU_DIRTY_NO_CLEAR`. Cleared IOPTEs are added to `dirty.gather` so the caller
   * can invalidate the IOTLB afterwards.
   *
   * @throws EINVAL - dirty tracking is not enabled and a bitmap was supplied (the mock's
   *   behaviour; iommufd ignores this error); EOPNOTSUPP - the format has no dirty bits
   */
  readAndClearDirty(
    domain: D,
    iova: bigint,
    size: bigint,
    flags: number,
    dirty: IommuDirtyBitmap,
  ): void
}

/** Fields a driver passes when it creates a domain. */
export interface DomainInit<D extends IommuDomain = IommuDomain> {
  /** Only for static domains (blocked, identity); the core stamps allocated domains. */
  readonly type?: DomainType
  /** Domain ops; when absent the core installs the driver's `domainOps`. */
  readonly ops?: DomainOps<D>
  /** Dirty ops; only for domains allocated with DIRTY_TRACKING. */
  readonly dirtyOps?: DirtyOps<D> | null
  /** Page sizes (bit n set = 2^n bytes); when absent the driver's `pgsizeBitmap`. */
  readonly pgsizeBitmap?: bigint
  /** IOVA window; default all of 64-bit space, not forced. */
  readonly geometry?: Partial<Geometry>
}

const EMPTY_OPS: DomainOps = {
  attachDev() {
    throw new IommuError('ENODEV', 'domain has no attach_dev')
  },
}

/**
 * An IOMMU domain (`struct iommu_domain`). Drivers extend this class with their own state
 * (page table, attached devices, domain ID) and pass their ops tables.
 *
 * `type` and `owner` of allocated domains are stamped by the core after the driver's
 * allocator returns (`iommu_domain_init`); static blocked/identity domains set `type`
 * themselves and have no owner.
 */
export class IommuDomain {
  /** One of {@link DomainType}; a bit set of {@link DomainFeature}. */
  type: number
  /** The domain's ops; the core installs the driver's default ops when none were given. */
  ops: DomainOps
  /** Dirty tracking ops, or null when the domain cannot track dirty IOPTEs. */
  dirtyOps: DirtyOps | null
  /** The driver that allocated the domain; null for static domains. */
  owner: Driver | null = null
  /** Supported page sizes: bit n set = 2^n bytes. */
  pgsizeBitmap: bigint
  /** The IOVA window. */
  readonly geometry: Geometry
  /** Set when the driver gave no ops, so the core may install its defaults. */
  readonly opsUnset: boolean
  /** Owner-private cookie (iommufd keeps its HWPT here). */
  cookie: unknown = null
  /**
   * I/O page-fault handler for faults on this domain (`iopf_handler`; iommufd installs its
   * fault queue's). It takes the group and must answer it later with
   * `iopfGroupResponse`; throwing makes the core answer it FAILURE.
   */
  iopfHandler: ((group: IopfGroup) => void) | null = null

  constructor(init: DomainInit<never> = {}) {
    this.type = init.type ?? DomainType.UNMANAGED
    this.opsUnset = init.ops === undefined
    this.ops = (init.ops as DomainOps | undefined) ?? EMPTY_OPS
    this.dirtyOps = (init.dirtyOps as DirtyOps | null | undefined) ?? null
    this.pgsizeBitmap = init.pgsizeBitmap ?? 0n
    this.geometry = {
      apertureStart: init.geometry?.apertureStart ?? 0n,
      apertureEnd: init.geometry?.apertureEnd ?? 0xffff_ffff_ffff_ffffn,
      forceAperture: init.geometry?.forceAperture ?? false,
    }
  }

  /** True for domains that support map/unmap (`__IOMMU_DOMAIN_PAGING`). */
  get isPaging(): boolean {
    return (this.type & DomainFeature.PAGING) !== 0
  }

  /** True for kernel DMA-API domains (`iommu_is_dma_domain`). */
  get isDma(): boolean {
    return (this.type & DomainFeature.DMA_API) !== 0
  }
}

/**
 * HW page tables (`hw_pagetable.c`): HWPT_PAGING objects wrapping a kernel-managed paging
 * domain that mirrors an IOAS, HWPT_NESTED objects wrapping a user-managed stage 1, and
 * the IOMMU_HWPT_ALLOC, IOMMU_HWPT_SET_DIRTY_TRACKING, IOMMU_HWPT_GET_DIRTY_BITMAP and
 * IOMMU_HWPT_INVALIDATE ioctls (reference iommufd-uapi.md §2.13–2.17, §4).
 *
 * @module
 */

import {
  DomainType,
  IommuCap,
  IommuDirtyBitmap,
  type IommuDomain,
  IommuError,
  IotlbGather,
  type UserData,
  type UserDataArray,
} from '@iommu/core'
import type { IommufdCtx } from './ctx.ts'
import { getDevice, hwPagetableAttach, hwPagetableDetach, type IommufdDevice } from './device.ts'
import { getFault, type IommufdFault } from './eventq.ts'
import { ULONG_MAX } from './io-pagetable.ts'
import type { Ioas } from './ioas.ts'
import { IovaBitmap } from './iova-bitmap.ts'
import { IommufdObject, ObjType } from './object.ts'
import {
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_ALLOC_PASID,
  IOMMU_HWPT_DATA_NONE,
  IOMMU_HWPT_DIRTY_TRACKING_ENABLE,
  IOMMU_HWPT_FAULT_ID_VALID,
  IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR,
} from './uapi/constants.ts'
import type {
  iommu_hwpt_alloc,
  iommu_hwpt_get_dirty_bitmap,
  iommu_hwpt_invalidate,
  iommu_hwpt_set_dirty_tracking,
} from './uapi/structs.ts'
import type { Ucmd } from './ucmd.ts'
import type { IommufdViommuObj } from './viommu.ts'

const PAGING_FLAGS =
  IOMMU_HWPT_ALLOC_NEST_PARENT |
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING |
  IOMMU_HWPT_FAULT_ID_VALID |
  IOMMU_HWPT_ALLOC_PASID
/** `IOMMU_HWPT_INVALIDATE_ENTRY_NUM_MAX`. */
const INVALIDATE_ENTRY_NUM_MAX = 1 << 19
const PAGE_SIZE = 4096

/** `struct iommufd_hw_pagetable`: what paging and nested HWPTs share. */
export abstract class Hwpt extends IommufdObject {
  abstract override readonly type: typeof ObjType.HWPT_PAGING | typeof ObjType.HWPT_NESTED
  domain: IommuDomain | null = null
  /** Allocated with IOMMU_HWPT_ALLOC_PASID: may be attached to a PASID. */
  pasidCompat = false
  /** The fault queue its domain reports IOPFs to (FAULT_ID_VALID), holding a reference. */
  fault: IommufdFault | null = null
  protected readonly ctx: IommufdCtx

  constructor(ctx: IommufdCtx) {
    super()
    this.ctx = ctx
  }

  /** `__iommufd_hwpt_destroy`. */
  protected freeDomain(): void {
    if (this.domain !== null) this.ctx.machine.iommu.iommuDomainFree(this.domain)
    this.domain = null
    if (this.fault !== null) this.fault.users--
    this.fault = null
  }
}

/** `struct iommufd_hwpt_paging`. */
export class HwptPaging extends Hwpt {
  readonly type = ObjType.HWPT_PAGING
  readonly ioas: Ioas
  /** Created by attaching a device to the IOAS; destroyed with its last attachment. */
  autoDomain = false
  nestParent = false
  enforceCacheCoherency = false
  /** Linked into the IOAS (`hwpt_item`): the domain is in the io_pagetable. */
  linked = false

  constructor(ctx: IommufdCtx, ioas: Ioas) {
    super(ctx)
    this.ioas = ioas
  }

  /** `iommufd_hwpt_paging_destroy`. */
  destroy(): void {
    if (this.linked) {
      const list = this.ioas.hwptList
      list.splice(list.indexOf(this), 1)
      this.linked = false
      this.ioas.iopt.removeDomain(this.domain as IommuDomain)
    }
    this.freeDomain()
    this.ioas.users--
  }
}

/** `struct iommufd_hwpt_nested`. */
export class HwptNested extends Hwpt {
  readonly type = ObjType.HWPT_NESTED
  readonly parent: HwptPaging
  /** The vIOMMU it was allocated on (it holds the vIOMMU, not the parent), or null. */
  readonly viommu: IommufdViommuObj | null

  constructor(ctx: IommufdCtx, parent: HwptPaging, viommu: IommufdViommuObj | null = null) {
    super(ctx)
    this.parent = parent
    this.viommu = viommu
  }

  /** `iommufd_hwpt_nested_destroy`. */
  destroy(): void {
    this.freeDomain()
    if (this.viommu !== null) this.viommu.users--
    else this.parent.users--
  }
}

/** `find_hwpt_paging`: the paging HWPT a HWPT translates through. */
export function findHwptPaging(hwpt: Hwpt): HwptPaging {
  return hwpt instanceof HwptNested ? hwpt.parent : (hwpt as HwptPaging)
}

/**
 * Drop an attachment's reference (`iommufd_hw_pagetable_put`): an auto HWPT goes with
 * its last user.
 */
export function hwPagetablePut(ctx: IommufdCtx, hwpt: Hwpt): void {
  if (hwpt instanceof HwptPaging && hwpt.autoDomain) ctx.objects.putAndTryDestroy(hwpt)
  else hwpt.users--
}

/**
 * `iommufd_hwpt_paging_alloc`: a new (reserved) HWPT_PAGING for `idev`, filled with the
 * IOAS's mappings. With `immediateAttach` the device is attached before the fill.
 *
 * @throws EOPNOTSUPP - unknown flags, DIRTY_TRACKING without the capability, FAULT_ID_VALID
 *   with NEST_PARENT, or flags/data the driver cannot take; EINVAL - the driver reports
 *   IOMMU_CAP_ENFORCE_CACHE_COHERENCY but cannot enforce it on the new domain; driver,
 *   pinning and reserved range errors
 */
export function hwptPagingAlloc(
  ctx: IommufdCtx,
  ioas: Ioas,
  idev: IommufdDevice,
  pasid: number,
  flags: number,
  immediateAttach: boolean,
  data: UserData | null,
): HwptPaging {
  const core = ctx.machine.iommu
  const dev = idev.dev
  const ops = idev.driver.ops
  if ((flags || data) && !ops.domainAllocPagingFlags) {
    throw new IommuError('EOPNOTSUPP', 'driver has no domain_alloc_paging_flags')
  }
  if (flags & ~PAGING_FLAGS) throw new IommuError('EOPNOTSUPP', `flags 0x${flags.toString(16)}`)
  if (
    flags & IOMMU_HWPT_ALLOC_DIRTY_TRACKING &&
    !core.deviceIommuCapable(dev, IommuCap.DIRTY_TRACKING)
  ) {
    throw new IommuError('EOPNOTSUPP', `${dev.name} cannot track dirty IOPTEs`)
  }
  if (flags & IOMMU_HWPT_FAULT_ID_VALID && flags & IOMMU_HWPT_ALLOC_NEST_PARENT) {
    throw new IommuError('EOPNOTSUPP', 'FAULT_ID_VALID with NEST_PARENT')
  }
  const hwpt = ctx.objects.alloc(new HwptPaging(ctx, ioas))
  hwpt.pasidCompat = (flags & IOMMU_HWPT_ALLOC_PASID) !== 0
  ioas.users++
  hwpt.nestParent = (flags & IOMMU_HWPT_ALLOC_NEST_PARENT) !== 0
  try {
    const domain = ops.domainAllocPagingFlags
      ? core.iommuDomainAllocPagingUser(dev, flags & ~IOMMU_HWPT_FAULT_ID_VALID, data)
      : core.iommuPagingDomainAllocFlags(dev, 0)
    hwpt.domain = domain
    domain.cookie = hwpt
    // The coherency mode is fixed before any mapping (iommufd_hwpt_paging_enforce_cc).
    if (idev.enforceCacheCoherency) {
      hwpt.enforceCacheCoherency = domain.ops.enforceCacheCoherency?.(domain) ?? false
      if (!hwpt.enforceCacheCoherency) {
        // A driver bug the kernel WARNs about; the allocation fails with EINVAL.
        throw new IommuError('EINVAL', 'enforce_cache_coherency failed on a new domain')
      }
    }
    if (immediateAttach) hwPagetableAttach(hwpt, idev, pasid)
    try {
      ioas.iopt.addDomain(domain)
    } catch (e) {
      if (immediateAttach) hwPagetableDetach(idev, pasid)
      throw e
    }
    hwpt.linked = true
    ioas.hwptList.push(hwpt)
  } catch (e) {
    ctx.objects.abortAndDestroy(hwpt)
    throw e
  }
  return hwpt
}

/**
 * `iommufd_hwpt_nested_alloc`: a user-managed stage 1 on a NEST_PARENT HWPT.
 *
 * @throws EOPNOTSUPP - flags other than FAULT_ID_VALID|PASID, no data, or no nested
 *   allocator; EINVAL - the parent is automatic, not a nest parent, or another driver's
 */
function hwptNestedAlloc(
  ctx: IommufdCtx,
  parent: HwptPaging,
  idev: IommufdDevice,
  flags: number,
  data: UserData,
): HwptNested {
  const driver = idev.driver
  if (
    flags & ~(IOMMU_HWPT_FAULT_ID_VALID | IOMMU_HWPT_ALLOC_PASID) ||
    !data.len ||
    !driver.nesting?.domainAllocNested
  ) {
    throw new IommuError('EOPNOTSUPP', 'nested allocation')
  }
  if (parent.autoDomain || !parent.nestParent || parent.domain?.owner !== driver) {
    throw new IommuError('EINVAL', 'parent is not a nest parent of this driver')
  }
  const hwpt = ctx.objects.alloc(new HwptNested(ctx, parent))
  hwpt.pasidCompat = (flags & IOMMU_HWPT_ALLOC_PASID) !== 0
  parent.users++
  try {
    const domain = ctx.machine.iommu.iommuDomainAllocNested(
      idev.dev,
      parent.domain,
      flags & ~IOMMU_HWPT_FAULT_ID_VALID,
      data,
    )
    hwpt.domain = domain
    domain.cookie = hwpt
    if (domain.type !== DomainType.NESTED) throw new IommuError('EOPNOTSUPP', 'not a nested domain')
  } catch (e) {
    ctx.objects.abortAndDestroy(hwpt)
    throw e
  }
  return hwpt
}

/**
 * `iommufd_viommu_alloc_hwpt_nested`: a nested HWPT allocated by the vIOMMU's driver.
 *
 * @throws EOPNOTSUPP - flags other than FAULT_ID_VALID|PASID, no data, or no
 *   `allocDomainNested`; the driver's errors
 */
function viommuAllocHwptNested(
  viommu: IommufdViommuObj,
  flags: number,
  data: UserData,
): HwptNested {
  const ctx = viommu.ctx
  if (flags & ~(IOMMU_HWPT_FAULT_ID_VALID | IOMMU_HWPT_ALLOC_PASID)) {
    throw new IommuError('EOPNOTSUPP', `flags 0x${flags.toString(16)}`)
  }
  if (!data.len) throw new IommuError('EOPNOTSUPP', 'no data')
  const alloc = viommu.ops?.allocDomainNested
  if (!alloc) throw new IommuError('EOPNOTSUPP', 'vIOMMU has no alloc_domain_nested')
  const hwpt = ctx.objects.alloc(new HwptNested(ctx, viommu.hwpt, viommu))
  hwpt.pasidCompat = (flags & IOMMU_HWPT_ALLOC_PASID) !== 0
  viommu.users++
  try {
    const domain = alloc.call(viommu.ops, viommu.view, flags & ~IOMMU_HWPT_FAULT_ID_VALID, data)
    hwpt.domain = domain
    domain.cookie = hwpt
    // The domain belongs to the driver of the vIOMMU's IOMMU (`iommu_dev->ops`).
    domain.owner = viommu.unit.driver
    if (domain.opsUnset) domain.ops = viommu.unit.driver.domainOps
    if (domain.type !== DomainType.NESTED) throw new IommuError('EOPNOTSUPP', 'not nested')
  } catch (e) {
    ctx.objects.abortAndDestroy(hwpt)
    throw e
  }
  return hwpt
}

/** IOMMU_HWPT_ALLOC (reference §2.13). */
export function iommufdHwptAlloc(ucmd: Ucmd<iommu_hwpt_alloc>): void {
  const { cmd, ctx, caller } = ucmd
  if (cmd.__reserved) throw new IommuError('EOPNOTSUPP', '__reserved')
  if ((cmd.data_type === IOMMU_HWPT_DATA_NONE) !== (cmd.data_len === 0)) {
    throw new IommuError('EINVAL', 'data_type and data_len disagree')
  }
  const data: UserData = {
    type: cmd.data_type,
    len: cmd.data_len,
    read: () => caller.proc.read(cmd.data_uptr, cmd.data_len),
  }
  const idev = getDevice(ctx, cmd.dev_id)
  let pt: IommufdObject
  try {
    pt = ctx.objects.get(cmd.pt_id, ObjType.ANY)
  } catch {
    // A pt_id that does not resolve is EINVAL, not ENOENT.
    throw new IommuError('EINVAL', `pt_id ${cmd.pt_id}`)
  }
  let hwpt: Hwpt
  if (pt.type === ObjType.IOAS) {
    hwpt = hwptPagingAlloc(ctx, pt as Ioas, idev, 0, cmd.flags, false, data.len ? data : null)
  } else if (pt.type === ObjType.HWPT_PAGING) {
    hwpt = hwptNestedAlloc(ctx, pt as HwptPaging, idev, cmd.flags, data)
  } else if (pt.type === ObjType.VIOMMU) {
    const viommu = pt as IommufdViommuObj
    if (viommu.unit !== (idev.dev.iommu?.unit ?? idev.dev.unit)) {
      throw new IommuError('EINVAL', 'device behind another IOMMU than the vIOMMU')
    }
    hwpt = viommuAllocHwptNested(viommu, cmd.flags, data)
  } else {
    throw new IommuError('EINVAL', `pt_id ${cmd.pt_id} cannot be a HWPT parent`)
  }
  try {
    if (cmd.flags & IOMMU_HWPT_FAULT_ID_VALID) {
      const fault = getFault(ctx, cmd.fault_id)
      hwpt.fault = fault
      ;(hwpt.domain as IommuDomain).iopfHandler = (group) => fault.handle(group)
      fault.users++
    }
    cmd.out_hwpt_id = hwpt.id
    ucmd.respond()
  } catch (e) {
    ctx.objects.abortAndDestroy(hwpt)
    throw e
  }
  ctx.objects.finalize(hwpt)
}

/** `iommufd_get_hwpt_paging`. @throws ENOENT */
export function getHwptPaging(ctx: IommufdCtx, id: number): HwptPaging {
  return ctx.get<HwptPaging>(id, ObjType.HWPT_PAGING)
}

/** IOMMU_HWPT_SET_DIRTY_TRACKING (reference §2.15, §4.2). */
export function iommufdHwptSetDirtyTracking(ucmd: Ucmd<iommu_hwpt_set_dirty_tracking>): void {
  const { cmd, ctx } = ucmd
  // __reserved is not checked by the kernel.
  if (cmd.flags & ~IOMMU_HWPT_DIRTY_TRACKING_ENABLE) throw new IommuError('EOPNOTSUPP', 'flags')
  const hwpt = getHwptPaging(ctx, cmd.hwpt_id)
  hwpt.ioas.iopt.setDirtyTracking(
    hwpt.domain as IommuDomain,
    (cmd.flags & IOMMU_HWPT_DIRTY_TRACKING_ENABLE) !== 0,
  )
}

/**
 * `iommufd_check_iova_range`: the bitmap range must not overflow and must be aligned to
 * both the IOAS alignment and `page_size`.
 *
 * @returns `length - 1` with the kernel's u64 wrap (length 0 at IOVA 0 is the whole space)
 */
function checkIovaRange(cmd: iommu_hwpt_get_dirty_bitmap, align: number): bigint {
  const lenm1 = (cmd.length - 1n) & ULONG_MAX
  const last = cmd.iova + lenm1
  if (last > ULONG_MAX) throw new IommuError('EOVERFLOW', 'iova + length - 1')
  const end = (last + 1n) & ULONG_MAX
  const a = BigInt(align - 1)
  if ((cmd.iova & a) !== 0n || (end & a) !== 0n) {
    throw new IommuError('EINVAL', 'range not aligned to the IOAS alignment')
  }
  if (cmd.page_size === 0n) throw new IommuError('EINVAL', 'page_size 0')
  const p = cmd.page_size - 1n
  if ((cmd.iova & p) !== 0n || (end & p) !== 0n) {
    throw new IommuError('EINVAL', 'range not aligned to page_size')
  }
  return lenm1
}

/**
 * IOMMU_HWPT_GET_DIRTY_BITMAP (reference §2.16, §4.3): one pass over the mapped IOPTEs of
 * the range, bits set straight into the caller's pinned bitmap pages. Records follow the
 * machine's `dirtyRecords` mode; the read's hazards go to `machine.dirtyHazards`.
 *
 * @throws EFAULT - ideal records only: the bitmap cannot be pinned; EDEADLK - the kernel
 *   would loop forever (see `IovaBitmap`)
 */
export function iommufdHwptGetDirtyBitmap(ucmd: Ucmd<iommu_hwpt_get_dirty_bitmap>): void {
  const { cmd, ctx, caller } = ucmd
  if (cmd.flags & ~IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR || cmd.__reserved) {
    throw new IommuError('EOPNOTSUPP', 'flags or __reserved')
  }
  const hwpt = getHwptPaging(ctx, cmd.hwpt_id)
  const iopt = hwpt.ioas.iopt
  const domain = hwpt.domain as IommuDomain
  const lenm1 = checkIovaRange(cmd, iopt.iovaAlignment)
  if (domain.dirtyOps === null) throw new IommuError('EOPNOTSUPP', 'HWPT cannot track dirty IOPTEs')
  if (ctx.machine.faults.shouldFail('iommufd:iova_bitmap')) {
    throw new IommuError('ENOMEM', 'iova_bitmap')
  }
  const machine = ctx.machine
  const mode = machine.dirtyRecords
  const hazards = machine.dirtyHazards.begin(mode, {
    source: 'IOMMU_HWPT_GET_DIRTY_BITMAP',
    hwptId: hwpt.id,
    domain,
    iova: cmd.iova,
    length: lenm1 + 1n,
    pageSize: cmd.page_size,
    data: cmd.data,
    clear: (cmd.flags & IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR) === 0,
  })
  const bitmap = new IovaBitmap(
    caller.proc,
    machine.memory,
    cmd.iova,
    lenm1,
    cmd.page_size,
    cmd.data,
    mode,
    hazards,
  )
  try {
    // Ideal records: a bitmap that cannot be pinned fails before anything is cleaned.
    if (mode === 'ideal') bitmap.checkPinnable()
    const dirty = new IommuDirtyBitmap(bitmap, new IotlbGather(), { mode, hazards })
    iopt.readAndClearDirty(domain, cmd.iova, cmd.iova + lenm1, cmd.flags, dirty)
  } finally {
    bitmap.free()
    hazards?.end()
  }
}

/**
 * IOMMU_HWPT_INVALIDATE on a nested HWPT (reference §2.17): `entry_num` is always
 * written back with the number of entries handled.
 */
export function iommufdHwptInvalidate(ucmd: Ucmd<iommu_hwpt_invalidate>): void {
  const { cmd, ctx, caller } = ucmd
  let done = 0
  try {
    if (cmd.__reserved) throw new IommuError('EOPNOTSUPP', '__reserved')
    if (
      cmd.entry_num &&
      (!cmd.data_uptr ||
        !cmd.entry_len ||
        cmd.entry_len > PAGE_SIZE ||
        cmd.entry_num > INVALIDATE_ENTRY_NUM_MAX)
    ) {
      throw new IommuError('EINVAL', 'entry array')
    }
    const pt = ctx.objects.get(cmd.hwpt_id, ObjType.ANY)
    const array: UserDataArray = {
      type: cmd.data_type,
      entryLen: cmd.entry_len,
      entryNum: cmd.entry_num,
      readEntry: (i) => caller.proc.read(cmd.data_uptr + BigInt(i * cmd.entry_len), cmd.entry_len),
    }
    let run: () => void
    if (pt.type === ObjType.HWPT_NESTED) {
      const domain = (pt as HwptNested).domain as IommuDomain
      const invalidate = domain.ops.cacheInvalidateUser
      if (!invalidate) throw new IommuError('EOPNOTSUPP', 'no cache_invalidate_user')
      run = () => invalidate.call(domain.ops, domain, array)
    } else if (pt.type === ObjType.VIOMMU) {
      const viommu = pt as IommufdViommuObj
      const invalidate = viommu.ops?.cacheInvalidate
      if (!invalidate) throw new IommuError('EOPNOTSUPP', 'vIOMMU has no cache_invalidate')
      run = () => invalidate.call(viommu.ops, viommu.view, array)
    } else {
      throw new IommuError('EINVAL', `object ${cmd.hwpt_id} is neither nested nor a vIOMMU`)
    }
    // The driver's count is reported whether it succeeded or not.
    try {
      run()
    } finally {
      done = array.entryNum
    }
  } finally {
    cmd.entry_num = done
    ucmd.respond()
  }
}

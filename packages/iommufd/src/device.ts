/**
 * Devices (`device.c`): binding a device the way VFIO cdev does, attaching it (or one of
 * its PASIDs) to an IOAS, a HWPT_PAGING or a nested HWPT, replacing and detaching, and
 * IOMMU_GET_HW_INFO (reference iommufd-uapi.md §1.4, §2.14).
 *
 * @module
 */

import {
  type AttachHandle,
  type Driver,
  IOMMU_NO_PASID,
  IommuCap,
  IommuError,
  type IommuGroup,
  isIommuError,
  type PciDevice,
} from '@iommu/core'
import type { IommufdCtx } from './ctx.ts'
import { type IommufdAttachHandle, iommufdAutoResponseFaults } from './eventq.ts'
import {
  findHwptPaging,
  type Hwpt,
  type HwptPaging,
  hwPagetablePut,
  hwptPagingAlloc,
} from './hw-pagetable.ts'
import type { Ioas } from './ioas.ts'
import { IommufdObject, ObjType } from './object.ts'
import {
  IOMMU_HW_CAP_DIRTY_TRACKING,
  IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED,
  IOMMU_HW_INFO_FLAG_INPUT_TYPE,
  IOMMU_HW_INFO_TYPE_DEFAULT,
  IOMMU_HW_INFO_TYPE_NONE,
} from './uapi/constants.ts'
import type { iommu_hw_info } from './uapi/structs.ts'
import type { Ucmd } from './ucmd.ts'
import type { IommufdVdeviceObj } from './viommu.ts'

/** The devices attached to one PASID of a group, and the HWPT they share. */
interface Attach {
  hwpt: Hwpt | null
  readonly devices: Map<number, IommufdDevice>
}

/** `struct iommufd_group`: iommufd's state for one IOMMU group of a context. */
export class IommufdGroup {
  readonly group: IommuGroup
  /** PASID → attachment; PASID 0 is the RID (`pasid_attach`). */
  readonly pasidAttach = new Map<number, Attach>()
  refs = 1

  constructor(group: IommuGroup) {
    this.group = group
  }
}

/** `struct iommufd_device`: a device bound to a context. */
export class IommufdDevice extends IommufdObject {
  readonly type = ObjType.DEVICE
  readonly dev: PciDevice
  readonly igroup: IommufdGroup
  readonly enforceCacheCoherency: boolean
  /** The device's vDEVICE (at most one, on any vIOMMU), holding a reference on it. */
  vdev: IommufdVdeviceObj | null = null
  /** Unbind has begun: no new vDEVICE may take a reference (`destroying`). */
  destroying = false
  /** Mock devices of the test command do not hold the context open. */
  readonly #holdsCtx: boolean
  readonly #ctx: IommufdCtx

  constructor(ctx: IommufdCtx, dev: PciDevice, igroup: IommufdGroup, holdsCtx: boolean) {
    super()
    this.#ctx = ctx
    this.dev = dev
    this.igroup = igroup
    this.#holdsCtx = holdsCtx
    this.enforceCacheCoherency = ctx.machine.iommu.deviceIommuCapable(
      dev,
      IommuCap.ENFORCE_CACHE_COHERENCY,
    )
  }

  get ctx(): IommufdCtx {
    return this.#ctx
  }

  /** The driver of the device's IOMMU (`dev_iommu_ops`). */
  get driver(): Driver {
    const unit = this.dev.iommu?.unit ?? this.dev.unit
    if (unit === null) throw new IommuError('ENODEV', `${this.dev.name} has no IOMMU`)
    return unit.driver
  }

  /** `iommufd_device_destroy`. */
  destroy(): void {
    this.#ctx.machine.iommu.iommuDeviceReleaseDmaOwner(this.dev)
    putGroup(this.#ctx, this.igroup)
    if (this.#holdsCtx) this.#ctx.refPut()
  }

  /** Attach the RID (`pasid` 0) or a PASID; see {@link iommufdDeviceAttach}. */
  attach(ptId: number, pasid: number = IOMMU_NO_PASID): number {
    return iommufdDeviceAttach(this, pasid, ptId)
  }

  /** Replace an attachment; see {@link iommufdDeviceReplace}. */
  replace(ptId: number, pasid: number = IOMMU_NO_PASID): number {
    return iommufdDeviceReplace(this, pasid, ptId)
  }

  /** Detach; see {@link iommufdDeviceDetach}. */
  detach(pasid: number = IOMMU_NO_PASID): void {
    iommufdDeviceDetach(this, pasid)
  }

  /** Detach everything and unbind, as VFIO does when its device fd closes. */
  unbind(): void {
    for (const [pasid, a] of [...this.igroup.pasidAttach]) {
      if (a.devices.has(this.id)) iommufdDeviceDetach(this, pasid)
    }
    iommufdDeviceUnbind(this)
  }
}

/** `iommufd_get_device`. @throws ENOENT */
export function getDevice(ctx: IommufdCtx, id: number): IommufdDevice {
  return ctx.get<IommufdDevice>(id, ObjType.DEVICE)
}

/** `iommufd_get_group`: the context's state for the device's group. */
function getGroup(ctx: IommufdCtx, dev: PciDevice): IommufdGroup {
  const group = dev.group
  if (group === null) throw new IommuError('ENODEV', `${dev.name} has no IOMMU group`)
  const cur = ctx.groups.get(group) as IommufdGroup | undefined
  if (cur !== undefined) {
    cur.refs++
    return cur
  }
  if (ctx.machine.faults.shouldFail('iommufd:group')) throw new IommuError('ENOMEM', 'group')
  const igroup = new IommufdGroup(group)
  ctx.groups.set(group, igroup)
  return igroup
}

function putGroup(ctx: IommufdCtx, igroup: IommufdGroup): void {
  if (--igroup.refs > 0) return
  if (igroup.pasidAttach.size) throw new Error('iommufd_group_release: attachments left')
  ctx.groups.delete(igroup.group)
}

/**
 * Bind a device to the context (`iommufd_device_bind`, what VFIO_DEVICE_BIND_IOMMUFD
 * does): claim DMA ownership of it, moving its group to the blocking domain.
 *
 * @param mock - a selftest mock device: does not keep the context open
 * @throws EINVAL - the IOMMU is not cache coherent; ENODEV - no IOMMU group; EPERM/EBUSY -
 *   the group is owned or used by someone else; ENOMEM
 */
export function iommufdDeviceBind(ctx: IommufdCtx, dev: PciDevice, mock = false): IommufdDevice {
  const core = ctx.machine.iommu
  // IOMMU_CACHE is always set, so the IOMMU must make it coherent.
  if (!core.deviceIommuCapable(dev, IommuCap.CACHE_COHERENCY)) {
    throw new IommuError('EINVAL', `${dev.name}: IOMMU is not cache coherent`)
  }
  const igroup = getGroup(ctx, dev)
  try {
    core.iommuDeviceClaimDmaOwner(dev, ctx)
  } catch (e) {
    putGroup(ctx, igroup)
    throw e
  }
  let idev: IommufdDevice
  try {
    idev = ctx.objects.alloc(new IommufdDevice(ctx, dev, igroup, !mock))
  } catch (e) {
    core.iommuDeviceReleaseDmaOwner(dev)
    putGroup(ctx, igroup)
    throw e
  }
  if (!mock) ctx.refGet()
  // The binding driver is a user until it unbinds.
  idev.users++
  ctx.objects.finalize(idev)
  return idev
}

/**
 * `iommufd_device_remove_vdev` (the device's `pre_destroy`): a vDEVICE still on the device
 * is destroyed and its ID left as a tombstone (IOMMU_DESTROY of it is ENOENT).
 */
function deviceRemoveVdev(idev: IommufdDevice): void {
  idev.destroying = true
  const vdev = idev.vdev
  if (vdev === null) return
  if (!idev.ctx.objects.tryIncUsers(vdev)) return
  idev.ctx.objects.tombstoneUser(vdev)
}

/** `iommufd_device_unbind`: the device must be detached. */
export function iommufdDeviceUnbind(idev: IommufdDevice): void {
  deviceRemoveVdev(idev)
  idev.ctx.objects.destroyUser(idev)
}

function newHandle(idev: IommufdDevice): IommufdAttachHandle & AttachHandle {
  if (idev.ctx.machine.faults.shouldFail('iommufd:handle')) {
    throw new IommuError('ENOMEM', 'attach handle')
  }
  return { domain: null, idev }
}

/**
 * `iommufd_hwpt_pasid_compat`: a PASID needs a PASID-capable HWPT, and while any PASID is
 * attached the RID must stay on one too.
 */
function hwptPasidCompat(hwpt: Hwpt, idev: IommufdDevice, pasid: number): void {
  const att = idev.igroup.pasidAttach
  if (pasid === IOMMU_NO_PASID) {
    if (!hwpt.pasidCompat && [...att.keys()].some((p) => p !== IOMMU_NO_PASID)) {
      throw new IommuError('EINVAL', 'PASIDs are attached: the RID needs a PASID-capable HWPT')
    }
    return
  }
  if (!hwpt.pasidCompat) throw new IommuError('EINVAL', 'HWPT was not allocated with PASID')
  const rid = att.get(IOMMU_NO_PASID)?.hwpt
  if (rid && !rid.pasidCompat) {
    throw new IommuError('EINVAL', 'the RID is attached to a HWPT that is not PASID-capable')
  }
}

/** `iommufd_hwpt_attach_device`: the first attach of a group/PASID. */
function hwptAttachDevice(hwpt: Hwpt, idev: IommufdDevice, pasid: number): void {
  hwptPasidCompat(hwpt, idev, pasid)
  const handle = newHandle(idev)
  const core = idev.ctx.machine.iommu
  const domain = hwpt.domain as NonNullable<Hwpt['domain']>
  if (pasid === IOMMU_NO_PASID) core.iommuAttachGroupHandle(domain, idev.igroup.group, handle)
  else core.iommuAttachDevicePasid(domain, idev.dev, pasid, handle)
}

/** `iommufd_device_get_attach_handle`. */
function getAttachHandle(idev: IommufdDevice, pasid: number): IommufdAttachHandle | null {
  try {
    const h = idev.ctx.machine.iommu.iommuAttachHandleGet(idev.igroup.group, pasid)
    return h as IommufdAttachHandle
  } catch {
    return null
  }
}

/**
 * `iommufd_hwpt_detach_device`: the last device of a group/PASID leaves; IOPFs that came
 * through the attachment and are still unanswered are answered INVALID.
 */
function hwptDetachDevice(hwpt: Hwpt, idev: IommufdDevice, pasid: number): void {
  const core = idev.ctx.machine.iommu
  const domain = hwpt.domain as NonNullable<Hwpt['domain']>
  const handle = getAttachHandle(idev, pasid)
  if (pasid === IOMMU_NO_PASID) core.iommuDetachGroupHandle(domain, idev.igroup.group)
  else core.iommuDetachDevicePasid(domain, idev.dev, pasid)
  iommufdAutoResponseFaults(hwpt, handle)
}

/** `iommufd_hwpt_replace_device`: on success the old attachment's IOPFs are answered. */
function hwptReplaceDevice(idev: IommufdDevice, pasid: number, hwpt: Hwpt, old: Hwpt): void {
  hwptPasidCompat(hwpt, idev, pasid)
  const oldHandle = getAttachHandle(idev, pasid)
  const handle = newHandle(idev)
  const core = idev.ctx.machine.iommu
  const domain = hwpt.domain as NonNullable<Hwpt['domain']>
  if (pasid === IOMMU_NO_PASID) core.iommuReplaceGroupHandle(idev.igroup.group, domain, handle)
  else core.iommuReplaceDevicePasid(domain, idev.dev, pasid, handle)
  iommufdAutoResponseFaults(old, oldHandle)
}

/**
 * `iommufd_hw_pagetable_attach`: add the device to the group's attachment of `pasid`,
 * reserving its regions in the IOAS (RID only) and attaching the group on first use.
 *
 * @throws EBUSY - already attached there; EINVAL - the group is attached to another HWPT,
 *   or PASID rules; EADDRINUSE - a reserved region conflicts; driver errors
 */
export function hwPagetableAttach(hwpt: Hwpt, idev: IommufdDevice, pasid: number): void {
  const hwptPaging = findHwptPaging(hwpt)
  const attachResv = pasid === IOMMU_NO_PASID
  const igroup = idev.igroup
  let attach = igroup.pasidAttach.get(pasid)
  const first = attach === undefined
  if (attach === undefined) {
    if (idev.ctx.machine.faults.shouldFail('iommufd:attach')) {
      throw new IommuError('ENOMEM', 'attach')
    }
    attach = { hwpt: null, devices: new Map() }
  }
  if (attach.devices.has(idev.id)) throw new IommuError('EBUSY', 'already attached')
  if (attach.hwpt !== null && attach.hwpt !== hwpt) {
    throw new IommuError('EINVAL', 'the group is attached to another HWPT')
  }
  const iopt = hwptPaging.ioas.iopt
  if (attachResv) iopt.enforceDevResvRegions(idev.dev, true)
  if (first) {
    try {
      hwptAttachDevice(hwpt, idev, pasid)
    } catch (e) {
      if (attachResv) iopt.removeReservedIova(idev.dev)
      throw e
    }
    attach.hwpt = hwpt
    igroup.pasidAttach.set(pasid, attach)
  }
  hwpt.users++
  attach.devices.set(idev.id, idev)
}

/**
 * `iommufd_hw_pagetable_detach`: the device leaves the attachment; the last one detaches
 * the group. Returns the HWPT (its reference already dropped), or null if nothing was
 * attached.
 */
export function hwPagetableDetach(idev: IommufdDevice, pasid: number): Hwpt | null {
  const igroup = idev.igroup
  const attach = igroup.pasidAttach.get(pasid)
  if (attach === undefined || attach.hwpt === null || !attach.devices.has(idev.id)) return null
  const hwpt = attach.hwpt
  attach.devices.delete(idev.id)
  if (attach.devices.size === 0) {
    hwptDetachDevice(hwpt, idev, pasid)
    igroup.pasidAttach.delete(pasid)
  }
  if (pasid === IOMMU_NO_PASID) findHwptPaging(hwpt).ioas.iopt.removeReservedIova(idev.dev)
  hwPagetablePut(idev.ctx, hwpt)
  return hwpt
}

/** Drop the reservations of every device of the group's RID attachment in an IOAS. */
function groupRemoveReservedIova(igroup: IommufdGroup, hwptPaging: HwptPaging): void {
  const attach = igroup.pasidAttach.get(IOMMU_NO_PASID)
  for (const d of attach?.devices.values() ?? []) hwptPaging.ioas.iopt.removeReservedIova(d.dev)
}

/** `iommufd_group_do_replace_reserved_iova`: reserve every group device in a new IOAS. */
function groupDoReplaceReservedIova(igroup: IommufdGroup, hwptPaging: HwptPaging): void {
  const attach = igroup.pasidAttach.get(IOMMU_NO_PASID) as Attach
  const old = attach.hwpt === null ? null : findHwptPaging(attach.hwpt)
  if (old !== null && hwptPaging.ioas === old.ioas) return
  try {
    for (const d of attach.devices.values())
      hwptPaging.ioas.iopt.enforceDevResvRegions(d.dev, false)
  } catch (e) {
    groupRemoveReservedIova(igroup, hwptPaging)
    throw e
  }
}

type AttachFn = (idev: IommufdDevice, pasid: number, hwpt: Hwpt) => Hwpt | null

/** `iommufd_device_do_attach`. */
function doAttach(idev: IommufdDevice, pasid: number, hwpt: Hwpt): Hwpt | null {
  hwPagetableAttach(hwpt, idev, pasid)
  return null
}

/**
 * `iommufd_device_do_replace`: swap the attachment's HWPT atomically; returns the old
 * HWPT for the caller to put.
 */
function doReplace(idev: IommufdDevice, pasid: number, hwpt: Hwpt): Hwpt | null {
  const hwptPaging = findHwptPaging(hwpt)
  const attachResv = pasid === IOMMU_NO_PASID
  const igroup = idev.igroup
  const attach = igroup.pasidAttach.get(pasid)
  if (attach === undefined || attach.hwpt === null) throw new IommuError('EINVAL', 'not attached')
  const old = attach.hwpt
  if (!attach.devices.has(idev.id)) throw new IommuError('EINVAL', 'device not attached')
  if (hwpt === old) return null
  if (attachResv) groupDoReplaceReservedIova(igroup, hwptPaging)
  try {
    hwptReplaceDevice(idev, pasid, hwpt, old)
  } catch (e) {
    // As the kernel, this also drops reservations the old HWPT's IOAS had if it is the same.
    if (attachResv) groupRemoveReservedIova(igroup, hwptPaging)
    throw e
  }
  const oldPaging = findHwptPaging(old)
  if (pasid === IOMMU_NO_PASID && hwptPaging.ioas !== oldPaging.ioas) {
    groupRemoveReservedIova(igroup, oldPaging)
  }
  attach.hwpt = hwpt
  // The device array's references move to the new HWPT; one stays for the caller to put.
  const n = attach.devices.size
  hwpt.users += n
  if (n > 1) old.users -= n - 1
  return old
}

/**
 * `iommufd_device_auto_get_domain`: reuse a compatible automatic HWPT of the IOAS (EINVAL
 * means incompatible: try the next), or allocate a new one.
 */
function autoGetDomain(
  idev: IommufdDevice,
  pasid: number,
  ioas: Ioas,
  fn: AttachFn,
): { ptId: number; destroy: Hwpt | null } {
  const ctx = idev.ctx
  const immediate = fn === doAttach
  for (const hwpt of [...ioas.hwptList]) {
    if (!hwpt.autoDomain) continue
    try {
      return { ptId: hwpt.id, destroy: fn(idev, pasid, hwpt) }
    } catch (e) {
      if (isIommuError(e, 'EINVAL')) continue
      throw e
    }
  }
  const hwpt = hwptPagingAlloc(ctx, ioas, idev, pasid, 0, immediate, null)
  let destroy: Hwpt | null = null
  if (!immediate) {
    try {
      destroy = fn(idev, pasid, hwpt)
    } catch (e) {
      ctx.objects.abortAndDestroy(hwpt)
      throw e
    }
  }
  hwpt.autoDomain = true
  ctx.objects.finalize(hwpt)
  return { ptId: hwpt.id, destroy }
}

/** `iommufd_device_change_pt`. */
function changePt(idev: IommufdDevice, pasid: number, ptId: number, fn: AttachFn): number {
  const ctx = idev.ctx
  const pt = ctx.objects.get(ptId, ObjType.ANY)
  let out = ptId
  let destroy: Hwpt | null
  if (pt.type === ObjType.HWPT_PAGING || pt.type === ObjType.HWPT_NESTED) {
    destroy = fn(idev, pasid, pt as Hwpt)
  } else if (pt.type === ObjType.IOAS) {
    const r = autoGetDomain(idev, pasid, pt as Ioas, fn)
    out = r.ptId
    destroy = r.destroy
  } else {
    throw new IommuError('EINVAL', `object ${ptId} cannot be attached`)
  }
  if (destroy !== null) hwPagetablePut(ctx, destroy)
  return out
}

/**
 * Attach the device's RID or a PASID to an IOAS (an automatic HWPT), a HWPT_PAGING or a
 * nested HWPT (`iommufd_device_attach`, VFIO_DEVICE_ATTACH_IOMMUFD_PT).
 *
 * @returns the HWPT ID now attached (`pt_id` out)
 * @throws ENOENT - no such object; EINVAL - not attachable, incompatible, PASID rules;
 *   EBUSY - already attached; EADDRINUSE; driver and pinning errors
 */
export function iommufdDeviceAttach(idev: IommufdDevice, pasid: number, ptId: number): number {
  const out = changePt(idev, pasid, ptId, doAttach)
  // The attachment is a user of the device.
  idev.users++
  return out
}

/**
 * Replace an attachment without passing through blocking (`iommufd_device_replace`).
 * On failure the old attachment stays.
 *
 * @throws EINVAL - not attached; as {@link iommufdDeviceAttach}
 */
export function iommufdDeviceReplace(idev: IommufdDevice, pasid: number, ptId: number): number {
  return changePt(idev, pasid, ptId, doReplace)
}

/** Detach the RID or a PASID (`iommufd_device_detach`); an unattached PASID is a no-op. */
export function iommufdDeviceDetach(idev: IommufdDevice, pasid: number): void {
  if (hwPagetableDetach(idev, pasid) === null) return
  idev.users--
}

const ZEROS = new Uint8Array(64 * 1024)

/** IOMMU_GET_HW_INFO (reference §2.14). */
export function iommufdGetHwInfo(ucmd: Ucmd<iommu_hw_info>): void {
  const { cmd, ctx, caller } = ucmd
  if (cmd.flags & ~IOMMU_HW_INFO_FLAG_INPUT_TYPE) throw new IommuError('EOPNOTSUPP', 'flags')
  if (cmd.__reserved.some((b) => b !== 0)) throw new IommuError('EOPNOTSUPP', '__reserved')
  // Drivers must not see a random input type.
  if (!(cmd.flags & IOMMU_HW_INFO_FLAG_INPUT_TYPE)) cmd.in_data_type = IOMMU_HW_INFO_TYPE_DEFAULT
  const idev = getDevice(ctx, cmd.dev_id)
  const core = ctx.machine.iommu
  const hwInfo = idev.driver.ops.hwInfo
  let data: Uint8Array = new Uint8Array(0)
  if (hwInfo) {
    const info = hwInfo.call(idev.driver.ops, idev.dev, cmd.in_data_type)
    if (info.type === IOMMU_HW_INFO_TYPE_NONE) throw new IommuError('EOPNOTSUPP', 'type NONE')
    data = info.data
    cmd.out_data_type = info.type
  } else {
    cmd.out_data_type = IOMMU_HW_INFO_TYPE_NONE
  }
  cmd.in_data_type = cmd.out_data_type
  const copy = Math.min(cmd.data_len, data.length)
  caller.proc.write(cmd.data_uptr, data.subarray(0, copy))
  // Zero the rest of a larger user buffer (clear_user), never sizing a buffer by data_len.
  for (let done = copy; done < cmd.data_len; ) {
    const n = Math.min(cmd.data_len - done, ZEROS.length)
    caller.proc.write(cmd.data_uptr + BigInt(done), ZEROS.subarray(0, n))
    done += n
  }
  cmd.data_len = data.length
  let caps = 0n
  if (core.deviceIommuCapable(idev.dev, IommuCap.DIRTY_TRACKING))
    caps |= BigInt(IOMMU_HW_CAP_DIRTY_TRACKING)
  if (!core.deviceIommuCapable(idev.dev, IommuCap.PCI_ATS_SUPPORTED)) {
    caps |= BigInt(IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED)
  }
  cmd.out_capabilities = caps
  const max = idev.dev.iommu?.maxPasids ?? 0
  // The PCI PASID control's EXEC/PRIV bits are not modelled by the core's PCI devices.
  cmd.out_max_pasid_log2 = max ? Math.floor(Math.log2(max)) : 0
  ucmd.respond()
}

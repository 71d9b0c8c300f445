/**
 * vIOMMU objects (`viommu.c`, `driver.c`): IOMMU_VIOMMU_ALLOC, IOMMU_VDEVICE_ALLOC and
 * IOMMU_HW_QUEUE_ALLOC, the objects they create and the services drivers call back with
 * (virtual-ID lookups, vEVENT reports, mmap offsets, HW-queue dependencies) — reference
 * iommufd-uapi.md §2.19–2.23, §5.2–5.5, nesting-viommu.md §5.
 *
 * The objects implement the contracts of `@iommu/core` (`IommufdViommu`, `IommufdVdevice`,
 * `IommufdHwQueue`): drivers see those, never this module.
 *
 * @module
 */

import {
  FRAME_SIZE,
  type HwQueueCoreHooks,
  type IommuDomain,
  IommuError,
  type IommufdHwQueue,
  type IommufdVdevice,
  type IommufdViommu,
  type IommuUnit,
  type UserData,
  type ViommuCoreHooks,
  type ViommuOps,
} from '@iommu/core'
import { type IommufdAccess, iommufdAccessCreateInternal } from './access.ts'
import type { IommufdCtx } from './ctx.ts'
import { getDevice, type IommufdDevice } from './device.ts'
import { findVeventq, type IommufdVeventq } from './eventq.ts'
import { getHwptPaging, type HwptPaging } from './hw-pagetable.ts'
import { ULONG_MAX } from './io-pagetable.ts'
import { IommufdObject, ObjType } from './object.ts'
import { IOMMU_HW_QUEUE_TYPE_DEFAULT, IOMMU_VIOMMU_TYPE_DEFAULT } from './uapi/constants.ts'
import type {
  iommu_hw_queue_alloc,
  iommu_vdevice_alloc,
  iommu_viommu_alloc,
} from './uapi/structs.ts'
import type { Ucmd } from './ucmd.ts'

const PAGE = BigInt(FRAME_SIZE)

/** The IOMMU unit a device sits behind (`__iommu_get_iommu_dev`). */
function unitOf(idev: IommufdDevice): IommuUnit | null {
  return idev.dev.iommu?.unit ?? idev.dev.unit
}

/**
 * `struct iommufd_viommu`. The driver sees {@link IommufdViommuObj.view}, a plain
 * `IommufdViommu` whose `type` is the vIOMMU type and whose `ops`/`priv` it sets.
 */
export class IommufdViommuObj extends IommufdObject {
  readonly type = ObjType.VIOMMU
  readonly ctx: IommufdCtx
  readonly unit: IommuUnit
  /** The nest-parent HWPT the vIOMMU holds. */
  readonly hwpt: HwptPaging
  /** virt_id → vDEVICE; null is a reservation during IOMMU_VDEVICE_ALLOC. */
  readonly vdevs: Map<bigint, IommufdVdeviceObj | null> = new Map()
  readonly veventqs: IommufdVeventq[] = []
  /** What the driver gets (`struct iommufd_viommu` as `@iommu/core` declares it). */
  readonly view: IommufdViommu

  constructor(ctx: IommufdCtx, viommuType: number, unit: IommuUnit, hwpt: HwptPaging) {
    super()
    this.ctx = ctx
    this.unit = unit
    this.hwpt = hwpt
    const self = this
    const hooks: ViommuCoreHooks = {
      findDev: (id) => this.vdevs.get(id)?.idev.dev ?? null,
      getVdevId: (dev) => {
        for (const v of this.vdevs.values()) if (v !== null && v.idev.dev === dev) return v.virtId
        throw new IommuError('ENOENT', `${dev.name} has no vDEVICE on vIOMMU ${this.id}`)
      },
      reportEvent: (type, data) => {
        const q = findVeventq(this, type)
        if (q === undefined) throw new IommuError('EOPNOTSUPP', `no vEVENTQ of type ${type}`)
        q.report(data, this.ctx)
      },
      allocMmap: (pfn, length) => this.ctx.allocMmap(this, pfn, length),
      destroyMmap: (offset) => this.ctx.destroyMmap(this, offset),
    }
    this.view = {
      get id() {
        return self.id
      },
      type: viommuType,
      unit,
      get parent() {
        return self.hwpt.domain as IommuDomain
      },
      ops: null,
      priv: null,
      hooks,
    }
  }

  /** The driver's ops (set by `viommuInit`). */
  get ops(): ViommuOps | null {
    return this.view.ops
  }

  /** `iommufd_viommu_destroy`. */
  destroy(): void {
    this.view.ops?.destroy?.(this.view)
    this.hwpt.users--
    this.vdevs.clear()
  }
}

/** `iommufd_get_viommu`. @throws ENOENT */
export function getViommu(ctx: IommufdCtx, id: number): IommufdViommuObj {
  return ctx.get<IommufdViommuObj>(id, ObjType.VIOMMU)
}

/** IOMMU_VIOMMU_ALLOC (reference §2.19). */
export function iommufdViommuAlloc(ucmd: Ucmd<iommu_viommu_alloc>): void {
  const { cmd, ctx, caller } = ucmd
  if (cmd.flags || cmd.type === IOMMU_VIOMMU_TYPE_DEFAULT) {
    throw new IommuError('EOPNOTSUPP', 'flags or type DEFAULT')
  }
  const idev = getDevice(ctx, cmd.dev_id)
  const nesting = idev.driver.nesting
  if (!nesting?.getViommuSize || !nesting.viommuInit) {
    throw new IommuError('EOPNOTSUPP', `${idev.driver.name} has no vIOMMU`)
  }
  if (!nesting.getViommuSize(idev.dev, cmd.type)) {
    throw new IommuError('EOPNOTSUPP', `vIOMMU type 0x${cmd.type.toString(16)}`)
  }
  const hwpt = getHwptPaging(ctx, cmd.hwpt_id)
  if (!hwpt.nestParent) throw new IommuError('EINVAL', `HWPT ${hwpt.id} is not a nest parent`)
  const unit = unitOf(idev) as IommuUnit
  const viommu = ctx.objects.alloc(new IommufdViommuObj(ctx, cmd.type, unit, hwpt))
  hwpt.users++
  try {
    const data: UserData = {
      type: cmd.type,
      len: cmd.data_len,
      read: () => caller.proc.read(cmd.data_uptr, cmd.data_len),
      write: (b) => caller.proc.write(cmd.data_uptr, b),
    }
    nesting.viommuInit(viommu.view, hwpt.domain as IommuDomain, cmd.data_len ? data : null)
    // A driver that sets no ops is broken (the kernel WARNs).
    if (viommu.view.ops === null) throw new IommuError('EOPNOTSUPP', 'viommu_init set no ops')
    cmd.out_viommu_id = viommu.id
    ucmd.respond()
  } catch (e) {
    ctx.objects.abortAndDestroy(viommu)
    throw e
  }
  ctx.objects.finalize(viommu)
}

/** `struct iommufd_vdevice`; the driver sees {@link IommufdVdeviceObj.view}. */
export class IommufdVdeviceObj extends IommufdObject {
  readonly type = ObjType.VDEVICE
  readonly viommu: IommufdViommuObj
  readonly idev: IommufdDevice
  readonly virtId: bigint
  readonly view: IommufdVdevice

  constructor(viommu: IommufdViommuObj, idev: IommufdDevice, virtId: bigint) {
    super()
    this.viommu = viommu
    this.idev = idev
    this.virtId = virtId
    const self = this
    this.view = {
      get id() {
        return self.id
      },
      viommu: viommu.view,
      dev: idev.dev,
      virtId,
      priv: null,
      destroy: null,
    }
  }

  /** `iommufd_vdevice_abort`: undo the driver part, the slot and the vIOMMU reference. */
  override abort(): void {
    this.view.destroy?.(this.view)
    if (this.viommu.vdevs.get(this.virtId) === this) this.viommu.vdevs.delete(this.virtId)
    this.viommu.users--
    this.idev.vdev = null
  }

  /** `iommufd_vdevice_destroy`: abort, then drop the device reference. */
  destroy(): void {
    this.abort()
    this.idev.users--
  }
}

/** IOMMU_VDEVICE_ALLOC (reference §2.20). */
export function iommufdVdeviceAlloc(ucmd: Ucmd<iommu_vdevice_alloc>): void {
  const { cmd, ctx } = ucmd
  // virt_id indexes an xarray of unsigned long: never too big on 64-bit.
  if (cmd.virt_id > ULONG_MAX) throw new IommuError('EINVAL', 'virt_id')
  const viommu = getViommu(ctx, cmd.viommu_id)
  const idev = getDevice(ctx, cmd.dev_id)
  if (viommu.unit !== unitOf(idev)) {
    throw new IommuError('EINVAL', 'device behind another IOMMU than the vIOMMU')
  }
  if (idev.destroying) throw new IommuError('ENOENT', 'device is being unbound')
  if (idev.vdev !== null) throw new IommuError('EEXIST', `${idev.dev.name} has a vDEVICE`)
  const ops = viommu.ops
  if (ops?.vdeviceSize && !ops.vdeviceInit) {
    throw new IommuError('EOPNOTSUPP', 'vdevice_size without vdevice_init')
  }
  const vdev = ctx.objects.alloc(new IommufdVdeviceObj(viommu, idev, cmd.virt_id))
  viommu.users++
  // The vDEVICE keeps its lookup reference on the device until it is destroyed.
  idev.users++
  idev.vdev = vdev
  try {
    if (viommu.vdevs.has(cmd.virt_id)) {
      throw new IommuError('EEXIST', `virt_id 0x${cmd.virt_id.toString(16)} in use`)
    }
    if (ctx.machine.faults.shouldFail('iommufd:vdev_slot')) {
      throw new IommuError('ENOMEM', 'vdevs slot')
    }
    viommu.vdevs.set(cmd.virt_id, null)
    try {
      ops?.vdeviceInit?.(vdev.view)
    } catch (e) {
      viommu.vdevs.delete(cmd.virt_id)
      throw e
    }
    viommu.vdevs.set(cmd.virt_id, vdev)
    cmd.out_vdevice_id = vdev.id
    ucmd.respond()
  } catch (e) {
    ctx.objects.abortAndDestroy(vdev)
    idev.users--
    throw e
  }
  ctx.objects.finalize(vdev)
}

/** `struct iommufd_hw_queue`; the driver sees {@link IommufdHwQueueObj.view}. */
export class IommufdHwQueueObj extends IommufdObject {
  readonly type = ObjType.HW_QUEUE
  viommu: IommufdViommuObj | null = null
  access: IommufdAccess | null = null
  /** Set once the queue is initialized enough for the driver to see it. */
  view: IommufdHwQueue | null = null

  /** `iommufd_hw_queue_destroy`. */
  destroy(): void {
    const v = this.view
    if (v !== null) v.destroy?.(v)
    if (this.access !== null && v !== null) {
      hwQueueDestroyAccess(this.access, v.baseAddr, v.length)
    }
    if (this.viommu !== null) this.viommu.users--
  }
}

const queueObjs = new WeakMap<IommufdHwQueue, IommufdHwQueueObj>()

/** `_iommufd_object_depend` / `_undepend` between two HW queues. */
const QUEUE_HOOKS: HwQueueCoreHooks = {
  depend(dependent, depended) {
    // No self dependency (it would dead-lock destruction).
    if (dependent === depended) throw new IommuError('EINVAL', 'self dependency')
    const o = queueObjs.get(depended)
    if (o === undefined) throw new IommuError('EINVAL', 'not a HW queue')
    o.users++
  },
  undepend(dependent, depended) {
    const o = queueObjs.get(depended)
    if (dependent === depended || o === undefined) return
    o.users--
  },
}

/** `iommufd_hw_queue_destroy_access`. */
function hwQueueDestroyAccess(access: IommufdAccess, base: bigint, length: bigint): void {
  const aligned = base & ~(PAGE - 1n)
  const offset = base - aligned
  const len = ((length + offset + PAGE - 1n) / PAGE) * PAGE
  access.unpinPages(aligned, len, true)
  access.detach()
  access.release()
}

/**
 * `iommufd_hw_queue_alloc_phys`: pin the queue's pages in the parent IOAS through an
 * internal access that locks their areas, and check they are physically contiguous.
 *
 * @returns the access and the physical address of `nesting_parent_iova`
 * @throws ERANGE; ENOMEM; ENOENT - not fully mapped; EFAULT - not contiguous; pin errors
 */
function hwQueueAllocPhys(
  cmd: iommu_hw_queue_alloc,
  viommu: IommufdViommuObj,
): { access: IommufdAccess; basePa: bigint } {
  const aligned = cmd.nesting_parent_iova & ~(PAGE - 1n)
  const offset = cmd.nesting_parent_iova - aligned
  let length = offset + cmd.length
  if (length > ULONG_MAX || length + PAGE - 1n > ULONG_MAX) {
    throw new IommuError('ERANGE', 'queue length overflows')
  }
  length += PAGE - 1n
  const npages = Number(length / PAGE)
  length = BigInt(npages) * PAGE
  if (viommu.ctx.machine.faults.shouldFail('iommufd:hw_queue_pages')) {
    throw new IommuError('ENOMEM', 'page array')
  }
  // kvzalloc of npages page pointers: kvmalloc refuses more than INT_MAX bytes (NULL,
  // ENOMEM), so a length far past anything mappable never sizes an array.
  if (npages * 8 > 0x7fff_ffff) throw new IommuError('ENOMEM', `page array of ${npages} pages`)
  let pfns: Int32Array
  try {
    pfns = new Int32Array(npages)
  } catch {
    throw new IommuError('ENOMEM', `page array of ${npages} pages`)
  }
  const access = iommufdAccessCreateInternal(viommu.ctx)
  try {
    access.attachInternal(viommu.hwpt.ioas)
    try {
      access.pinPages(aligned, length, pfns, 0, true)
      try {
        for (let i = 1; i < npages; i++) {
          if (pfns[i] !== (pfns[i - 1] as number) + 1) {
            throw new IommuError('EFAULT', 'queue pages are not physically contiguous')
          }
        }
      } catch (e) {
        access.unpinPages(aligned, length, true)
        throw e
      }
    } catch (e) {
      access.detach()
      throw e
    }
  } catch (e) {
    access.release()
    throw e
  }
  return { access, basePa: BigInt(pfns[0] as number) * PAGE + offset }
}

/** IOMMU_HW_QUEUE_ALLOC (reference §2.23). */
export function iommufdHwQueueAlloc(ucmd: Ucmd<iommu_hw_queue_alloc>): void {
  const { cmd, ctx } = ucmd
  if (cmd.flags || cmd.type === IOMMU_HW_QUEUE_TYPE_DEFAULT) {
    throw new IommuError('EOPNOTSUPP', 'flags or type DEFAULT')
  }
  if (!cmd.length) throw new IommuError('EINVAL', 'length 0')
  if (cmd.nesting_parent_iova + cmd.length - 1n > ULONG_MAX) {
    throw new IommuError('EOVERFLOW', 'nesting_parent_iova + length')
  }
  const viommu = getViommu(ctx, cmd.viommu_id)
  const ops = viommu.ops
  if (!ops?.getHwQueueSize || !ops.hwQueueInitPhys) {
    throw new IommuError('EOPNOTSUPP', 'vIOMMU has no HW queues')
  }
  if (!ops.getHwQueueSize(viommu.view, cmd.type)) {
    throw new IommuError('EOPNOTSUPP', `HW queue type 0x${cmd.type.toString(16)}`)
  }
  const q = ctx.objects.alloc(new IommufdHwQueueObj())
  try {
    const { access, basePa } = hwQueueAllocPhys(cmd, viommu)
    q.viommu = viommu
    viommu.users++
    q.access = access
    q.view = {
      get id() {
        return q.id
      },
      viommu: viommu.view,
      type: cmd.type,
      baseAddr: cmd.nesting_parent_iova,
      length: cmd.length,
      priv: null,
      destroy: null,
      hooks: QUEUE_HOOKS,
    }
    queueObjs.set(q.view, q)
    ops.hwQueueInitPhys(q.view, cmd.index, basePa)
    cmd.out_hw_queue_id = q.id
    ucmd.respond()
  } catch (e) {
    ctx.objects.abortAndDestroy(q)
    throw e
  }
  ctx.objects.finalize(q)
}

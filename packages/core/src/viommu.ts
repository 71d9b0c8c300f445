/**
 * The vIOMMU contract between iommufd and an IOMMU driver: the objects iommufd creates and
 * hands to the driver (`struct iommufd_viommu`, `struct iommufd_vdevice`,
 * `struct iommufd_hw_queue`), the driver's `struct iommufd_viommu_ops`, and the services
 * a driver calls back into iommufd with (`drivers/iommu/iommufd/driver.c`:
 * `iommufd_viommu_find_dev`, `iommufd_viommu_get_vdev_id`, `iommufd_viommu_report_event`,
 * `iommufd_viommu_alloc_mmap`, `iommufd_hw_queue_depend` ...).
 *
 * The core does not import iommufd. iommufd builds each object with a {@link ViommuCoreHooks}
 * table (the part of `driver.c` that needs iommufd's internals); the free functions here
 * dispatch through it, so a driver written against this module ports the kernel driver
 * call for call.
 *
 * How a driver plugs a vIOMMU in (the SMMUv3 shape; reference nesting-viommu.md §5):
 *
 * ```ts
 * nesting: {
 *   getViommuSize: (dev, type) => (type === IOMMU_VIOMMU_TYPE_ARM_SMMUV3 ? 1 : 0),
 *   viommuInit(viommu, parent, data) {
 *     viommu.priv = new MyVsmmu(viommu, parent)   // VIOMMU_STRUCT_SIZE's driver part
 *     viommu.ops = vsmmuOps                        // required: the core checks it
 *   },
 * }
 * const vsmmuOps: ViommuOps = {
 *   allocDomainNested(viommu, flags, data) { ... return new MyNestedDomain(...) },
 *   cacheInvalidate(viommu, array) { ... array.entryNum = handled ... },
 *   vdeviceSize: 1, vdeviceInit(vdev) { ... vdev.destroy = undo },
 * }
 * // from the event-queue IRQ thread of the hardware model:
 * iommufdViommuReportEvent(viommu, IOMMU_VEVENTQ_TYPE_ARM_SMMUV3, record)
 * ```
 *
 * @module
 */

import type { IommuDomain, UserData, UserDataArray } from './domain.ts'
import type { IommuUnit } from './driver.ts'
import { IommuError } from './errno.ts'
import type { PciDevice } from './machine/pci.ts'

/**
 * The services iommufd installs on every vIOMMU it creates: the parts of the kernel's
 * `drivers/iommu/iommufd/driver.c` that need iommufd's object table. Drivers never call
 * these directly; they call the `iommufd*` functions of this module.
 */
export interface ViommuCoreHooks {
  /** `iommufd_viommu_find_dev`: the device of the vDEVICE with `vdevId`, or null. */
  findDev(vdevId: bigint): PciDevice | null
  /** `iommufd_viommu_get_vdev_id`. @throws ENOENT */
  getVdevId(dev: PciDevice): bigint
  /** `iommufd_viommu_report_event`. @throws EOPNOTSUPP, ENOMEM, EINVAL */
  reportEvent(type: number, data: Uint8Array): void
  /** `iommufd_viommu_alloc_mmap` (`_iommufd_alloc_mmap`). @throws EINVAL, ENOMEM, ENOSPC */
  allocMmap(pfn: number, length: number): bigint
  /** `iommufd_viommu_destroy_mmap` (`_iommufd_destroy_mmap`). */
  destroyMmap(offset: bigint): void
}

/** What iommufd installs on a HW queue (`_iommufd_object_depend` / `_undepend`). */
export interface HwQueueCoreHooks {
  /** Make `dependent` hold a reference on `depended` (destroying it is EBUSY). @throws EINVAL */
  depend(dependent: IommufdHwQueue, depended: IommufdHwQueue): void
  /** Drop what {@link depend} took. */
  undepend(dependent: IommufdHwQueue, depended: IommufdHwQueue): void
}

/**
 * `struct iommufd_viommu`: one slice of a physical IOMMU for one VM, created by
 * IOMMU_VIOMMU_ALLOC. iommufd fills every field before `viommuInit`; the driver sets
 * `ops` (mandatory: iommufd fails the allocation with EOPNOTSUPP otherwise) and keeps its
 * own state in `priv` (what the kernel's drivers embed with `VIOMMU_STRUCT_SIZE`).
 */
export interface IommufdViommu {
  /** The iommufd object ID user space sees (`viommu->obj.id`). */
  readonly id: number
  /** `IOMMU_VIOMMU_TYPE_*`. */
  readonly type: number
  /** The physical IOMMU instance (`viommu->iommu_dev`). */
  readonly unit: IommuUnit
  /** The stage-2 nest-parent domain (`viommu->hwpt->common.domain`). */
  readonly parent: IommuDomain
  /** The driver's vIOMMU ops, set by `viommuInit`. */
  ops: ViommuOps | null
  /** Driver-private state. */
  priv: unknown
  /** @internal installed by iommufd; use the `iommufdViommu*` functions. */
  readonly hooks: ViommuCoreHooks
}

/**
 * `struct iommufd_vdevice`: the binding of a physical device to a vIOMMU under a virtual
 * ID (vSID on SMMUv3, vRID on VT-d, vDeviceID on AMD) — IOMMU_VDEVICE_ALLOC.
 */
export interface IommufdVdevice {
  /** The iommufd object ID. */
  readonly id: number
  /** The vIOMMU the vDEVICE belongs to. */
  readonly viommu: IommufdViommu
  /** The physical device (`iommufd_vdevice_to_device`). */
  readonly dev: PciDevice
  /** The per-vIOMMU virtual ID (`vdev->virt_id`). */
  readonly virtId: bigint
  /** Driver-private state (what `vdevice_size` sizes in the kernel). */
  priv: unknown
  /**
   * Set by `vdeviceInit` when it has something to undo (`vdev->destroy`); called when the
   * vDEVICE is destroyed, also when the device's unbind tombstones it.
   */
  destroy: ((vdev: IommufdVdevice) => void) | null
}

/**
 * `struct iommufd_hw_queue`: a guest queue the hardware reads directly
 * (IOMMU_HW_QUEUE_ALLOC). iommufd has pinned `[baseAddr, baseAddr + length)` of the parent
 * IOAS (physically contiguous) before `hwQueueInitPhys`.
 */
export interface IommufdHwQueue {
  /** The iommufd object ID. */
  readonly id: number
  readonly viommu: IommufdViommu
  /** `IOMMU_HW_QUEUE_TYPE_*`. */
  readonly type: number
  /** Queue base in the guest physical (= parent IOVA) space. */
  readonly baseAddr: bigint
  /** Queue length in bytes. */
  readonly length: bigint
  /** Driver-private state. */
  priv: unknown
  /** Set by `hwQueueInitPhys` when it has something to undo (`hw_queue->destroy`). */
  destroy: ((hwQueue: IommufdHwQueue) => void) | null
  /** @internal installed by iommufd; use {@link iommufdHwQueueDepend}. */
  readonly hooks: HwQueueCoreHooks
}

/**
 * vIOMMU operations (`struct iommufd_viommu_ops`). Every op may throw {@link IommuError};
 * the errno values are listed per op.
 */
export interface ViommuOps {
  /**
   * destroy() - release the driver's part of the vIOMMU. iommufd calls it when the vIOMMU
   * object is destroyed (nothing references it any more).
   */
  destroy?(viommu: IommufdViommu): void

  /**
   * allocDomainNested() - allocate an `IOMMU_DOMAIN_NESTED` domain translated through
   * this vIOMMU's parent (`alloc_domain_nested`). It must be fully initialized, of type
   * `DomainType.NESTED`. `flags` never contains FAULT_ID_VALID (iommufd strips it).
   *
   * @param data - the user data (`data_len` > 0 is guaranteed); decode it with
   *   {@link copyStructFromUser} or a `defineUserStruct` decoder
   * @throws EOPNOTSUPP - unknown flags or data type; EINVAL - malformed data; EIO -
   *   illegal hardware fields (SMMUv3 vSTE); EFAULT; ENOMEM
   */
  allocDomainNested?(viommu: IommufdViommu, flags: number, data: UserData): IommuDomain

  /**
   * cacheInvalidate() - flush hardware caches of the vIOMMU (TLBs and device caches) for
   * the requests in `array` (`cache_invalidate`). Requests may name devices by their
   * virtual ID ({@link iommufdViommuFindDev}). The driver must set `array.entryNum` to
   * the number of requests handled, also when it throws.
   *
   * A zero-length array (`entryNum === 0`) is how user space probes the data type:
   * succeed for a known type, EINVAL otherwise.
   *
   * @throws EINVAL - wrong type, bad IDs; EOPNOTSUPP - unsupported flags; EIO; EFAULT
   */
  cacheInvalidate?(viommu: IommufdViommu, array: UserDataArray): void

  /**
   * vdeviceSize - non-zero when the driver keeps per-vDEVICE state; `vdeviceInit` is then
   * required (iommufd answers EOPNOTSUPP otherwise, the kernel's WARN).
   */
  readonly vdeviceSize?: number

  /**
   * vdeviceInit() - set up the driver's part of a new vDEVICE (`vdevice_init`); `vdev.dev`,
   * `vdev.viommu` and `vdev.virtId` are set. Set `vdev.destroy` to undo it.
   *
   * @throws EINVAL, EEXIST, ENOMEM - the allocation fails with it
   */
  vdeviceInit?(vdev: IommufdVdevice): void

  /**
   * getHwQueueSize() - non-zero when HW queues of `type` are supported
   * (`get_hw_queue_size`); 0 makes IOMMU_HW_QUEUE_ALLOC fail with EOPNOTSUPP.
   */
  getHwQueueSize?(viommu: IommufdViommu, type: number): number

  /**
   * hwQueueInitPhys() - set up a HW queue whose memory the hardware reads by physical
   * address (`hw_queue_init_phys`). `basePa` is the physical address of `hwQueue.baseAddr`
   * (pinned and contiguous). Declare ordering with {@link iommufdHwQueueDepend}; set
   * `hwQueue.destroy` to undo.
   *
   * @throws EINVAL, EEXIST, EIO, EFAULT - the allocation fails with it
   */
  hwQueueInitPhys?(hwQueue: IommufdHwQueue, index: number, basePa: bigint): void
}

/**
 * `iommufd_viommu_find_dev`: the device bound to the vIOMMU under `vdevId`, or null.
 * This is how a driver turns a virtual ID in a guest command (vSID) into the physical
 * device.
 */
export function iommufdViommuFindDev(
  viommu: IommufdViommu,
  vdevId: bigint | number,
): PciDevice | null {
  return viommu.hooks.findDev(BigInt(vdevId))
}

/**
 * `iommufd_viommu_get_vdev_id`: the virtual ID of `dev` on this vIOMMU (what a driver
 * writes into an event it forwards, e.g. the vSID of an SMMUv3 event).
 *
 * @throws ENOENT - the device has no vDEVICE on this vIOMMU
 */
export function iommufdViommuGetVdevId(viommu: IommufdViommu, dev: PciDevice): bigint {
  return viommu.hooks.getVdevId(dev)
}

/**
 * `iommufd_viommu_report_event`: queue one event record of `type` (the driver's uAPI
 * struct, e.g. `struct iommu_vevent_arm_smmuv3`) on the vIOMMU's vEVENTQ of that type.
 * A full queue drops the event and queues the lost-events marker instead (iommufd-uapi.md
 * §5.7); that is not an error.
 *
 * @throws EINVAL - empty record; EOPNOTSUPP - no vEVENTQ of that type; ENOMEM - the
 *   record could not be allocated (the lost-events marker is queued)
 */
export function iommufdViommuReportEvent(
  viommu: IommufdViommu,
  type: number,
  data: Uint8Array,
): void {
  if (data.length === 0) throw new IommuError('EINVAL', 'empty vEVENT')
  viommu.hooks.reportEvent(type, data)
}

/**
 * `iommufd_viommu_alloc_mmap`: offer `length` bytes of MMIO (or memory) at page frame
 * `pfn` to user space through `mmap()` on the iommufd file. Returns the mmap offset to
 * hand to user space; while user space has it mapped the vIOMMU cannot be destroyed.
 *
 * @throws EINVAL - length 0 or not page aligned; ENOMEM; ENOSPC - no offset left
 */
export function iommufdViommuAllocMmap(viommu: IommufdViommu, pfn: number, length: number): bigint {
  return viommu.hooks.allocMmap(pfn, length)
}

/** `iommufd_viommu_destroy_mmap`: withdraw an offset from {@link iommufdViommuAllocMmap}. */
export function iommufdViommuDestroyMmap(viommu: IommufdViommu, offset: bigint): void {
  viommu.hooks.destroyMmap(offset)
}

/** `iommufd_vdevice_to_device`. */
export function iommufdVdeviceToDevice(vdev: IommufdVdevice): PciDevice {
  return vdev.dev
}

/**
 * `iommufd_hw_queue_depend`: `dependent` keeps `depended` alive (IOMMU_DESTROY of
 * `depended` is EBUSY until {@link iommufdHwQueueUndepend}). Both must be queues of the
 * same vIOMMU.
 *
 * @throws EINVAL - a queue depending on itself, or queues of two vIOMMUs
 */
export function iommufdHwQueueDepend(dependent: IommufdHwQueue, depended: IommufdHwQueue): void {
  if (dependent.viommu !== depended.viommu) {
    throw new IommuError('EINVAL', 'HW queues of different vIOMMUs')
  }
  dependent.hooks.depend(dependent, depended)
}

/** `iommufd_hw_queue_undepend`: undo {@link iommufdHwQueueDepend}. */
export function iommufdHwQueueUndepend(dependent: IommufdHwQueue, depended: IommufdHwQueue): void {
  dependent.hooks.undepend(dependent, depended)
}

/**
 * The ioctls this model does not implement yet — fault queues, vIOMMU, vDEVICE, vEVENTQ and
 * HW queues, and the VFIO compat IOAS. They are dispatched like every other ioctl (size
 * rules, ENOTTY never) and run the kernel's checks up to the point where the modelled
 * drivers offer nothing, answering what the kernel answers there.
 *
 * @module
 */

import { IommuError } from '@iommu/core'
import { getDevice } from './device.ts'
import { ULONG_MAX } from './io-pagetable.ts'
import { getIoas } from './ioas.ts'
import { ObjType } from './object.ts'
import {
  IOMMU_HW_QUEUE_TYPE_DEFAULT,
  IOMMU_VEVENTQ_TYPE_DEFAULT,
  IOMMU_VFIO_IOAS_CLEAR,
  IOMMU_VFIO_IOAS_GET,
  IOMMU_VFIO_IOAS_SET,
  IOMMU_VIOMMU_TYPE_DEFAULT,
} from './uapi/constants.ts'
import type {
  iommu_fault_alloc,
  iommu_hw_queue_alloc,
  iommu_vdevice_alloc,
  iommu_veventq_alloc,
  iommu_vfio_ioas,
  iommu_viommu_alloc,
} from './uapi/structs.ts'
import type { Ucmd } from './ucmd.ts'

/** `VEVENTQ_MAX_DEPTH`. */
const VEVENTQ_MAX_DEPTH = 1 << 19

/** IOMMU_FAULT_QUEUE_ALLOC: fault queues are not modelled. */
export function iommufdFaultAlloc(ucmd: Ucmd<iommu_fault_alloc>): void {
  if (ucmd.cmd.flags) throw new IommuError('EOPNOTSUPP', 'flags')
  throw new IommuError('EOPNOTSUPP', 'fault queues are not modelled')
}

/** IOMMU_VIOMMU_ALLOC: no modelled driver offers a vIOMMU yet. */
export function iommufdViommuAlloc(ucmd: Ucmd<iommu_viommu_alloc>): void {
  const { cmd, ctx } = ucmd
  if (cmd.flags || cmd.type === IOMMU_VIOMMU_TYPE_DEFAULT)
    throw new IommuError('EOPNOTSUPP', 'type')
  getDevice(ctx, cmd.dev_id)
  throw new IommuError('EOPNOTSUPP', 'vIOMMUs are not modelled')
}

/** IOMMU_VDEVICE_ALLOC: no vIOMMU can exist, so the lookup fails. */
export function iommufdVdeviceAlloc(ucmd: Ucmd<iommu_vdevice_alloc>): void {
  const { cmd, ctx } = ucmd
  if (cmd.virt_id > ULONG_MAX) throw new IommuError('EINVAL', 'virt_id')
  ctx.objects.get(cmd.viommu_id, ObjType.VIOMMU)
  throw new IommuError('EOPNOTSUPP', 'vDEVICEs are not modelled')
}

/** IOMMU_VEVENTQ_ALLOC. */
export function iommufdVeventqAlloc(ucmd: Ucmd<iommu_veventq_alloc>): void {
  const { cmd, ctx } = ucmd
  if (cmd.flags || cmd.__reserved || cmd.type === IOMMU_VEVENTQ_TYPE_DEFAULT) {
    throw new IommuError('EOPNOTSUPP', 'flags, __reserved or type')
  }
  if (!cmd.veventq_depth || cmd.veventq_depth > VEVENTQ_MAX_DEPTH) {
    throw new IommuError('EINVAL', 'veventq_depth')
  }
  ctx.objects.get(cmd.viommu_id, ObjType.VIOMMU)
  throw new IommuError('EOPNOTSUPP', 'vEVENTQs are not modelled')
}

/** IOMMU_HW_QUEUE_ALLOC. */
export function iommufdHwQueueAlloc(ucmd: Ucmd<iommu_hw_queue_alloc>): void {
  const { cmd, ctx } = ucmd
  if (cmd.flags || cmd.type === IOMMU_HW_QUEUE_TYPE_DEFAULT)
    throw new IommuError('EOPNOTSUPP', 'type')
  if (!cmd.length) throw new IommuError('EINVAL', 'length 0')
  if (cmd.nesting_parent_iova + cmd.length - 1n > ULONG_MAX) {
    throw new IommuError('EOVERFLOW', 'nesting_parent_iova + length')
  }
  ctx.objects.get(cmd.viommu_id, ObjType.VIOMMU)
  throw new IommuError('EOPNOTSUPP', 'HW queues are not modelled')
}

/** IOMMU_VFIO_IOAS: get, set or clear the IOAS the VFIO compat ioctls would use. */
export function iommufdVfioIoas(ucmd: Ucmd<iommu_vfio_ioas>): void {
  const { cmd, ctx } = ucmd
  if (cmd.__reserved) throw new IommuError('EOPNOTSUPP', '__reserved')
  switch (cmd.op) {
    case IOMMU_VFIO_IOAS_GET: {
      if (ctx.vfioIoas === null) throw new IommuError('ENODEV', 'no compat IOAS')
      cmd.ioas_id = ctx.vfioIoas.id
      ucmd.respond()
      return
    }
    case IOMMU_VFIO_IOAS_SET:
      ctx.vfioIoas = getIoas(ctx, cmd.ioas_id)
      return
    case IOMMU_VFIO_IOAS_CLEAR:
      ctx.vfioIoas = null
      return
    default:
      throw new IommuError('EOPNOTSUPP', `op ${cmd.op}`)
  }
}

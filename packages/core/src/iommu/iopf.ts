/**
 * I/O page faults (`drivers/iommu/io-pgfault.c`): a driver reports a device's page request
 * (PCIe PRI) with {@link IommuCore.iommuReportDeviceFault}; the core groups partial
 * requests by group ID, finds the domain attached to the faulting RID/PASID and hands the
 * group to that domain's `iopfHandler` (iommufd's fault queue). Whoever handles the group
 * answers it once with {@link iopfGroupResponse}, which reaches the driver's
 * `ops.pageResponse`.
 *
 * A driver that reports page requests for a device first adds the device to an
 * {@link IopfQueue} (`iopf_queue_add_device`, usually when a fault-capable domain is
 * attached) and removes it when no such domain is left (`iopf_queue_remove_device`, which
 * answers INVALID whatever is still pending in the core).
 *
 * @module
 */

import type { IommuDomain } from '../domain.ts'
import { IommuError } from '../errno.ts'
import type { PciDevice } from '../machine/pci.ts'
import type { AttachHandle } from './group.ts'

/** `enum iommu_fault_type`: a recoverable page request. */
export const IOMMU_FAULT_PAGE_REQ = 1

/** `struct iommu_fault_page_request` flags. */
export const IOMMU_FAULT_PAGE_REQUEST_PASID_VALID = 1 << 0
export const IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE = 1 << 1
export const IOMMU_FAULT_PAGE_RESPONSE_NEEDS_PASID = 1 << 2

/** `IOMMU_FAULT_PERM_*`: the access the device asked for. */
export const IOMMU_FAULT_PERM_READ = 1 << 0
export const IOMMU_FAULT_PERM_WRITE = 1 << 1
export const IOMMU_FAULT_PERM_EXEC = 1 << 2
export const IOMMU_FAULT_PERM_PRIV = 1 << 3

/** `enum iommu_page_response_code`. */
export const IommuPageResponseCode = {
  /** The fault was handled; the device may retry. */
  SUCCESS: 0,
  /** Not handled; the device must not retry (PCIe "Invalid Request"). */
  INVALID: 1,
  /** A fatal condition (PCIe "Response Failure"): the device disables PRI. */
  FAILURE: 2,
} as const

/** `struct iommu_fault_page_request`. */
export interface IommuFaultPageRequest {
  /** `IOMMU_FAULT_PAGE_REQUEST_*`. */
  flags: number
  pasid: number
  /** Page Request Group Index. */
  grpid: number
  /** `IOMMU_FAULT_PERM_*`. */
  perm: number
  addr: bigint
  /** Driver data carried to `pageResponse` (e.g. VT-d's PRQ descriptor words). */
  privateData: [bigint, bigint]
}

/** `struct iommu_fault`. */
export interface IommuFault {
  /** `IOMMU_FAULT_PAGE_REQ`. */
  type: number
  prm: IommuFaultPageRequest
}

/** `struct iopf_fault`: what a driver reports and what `pageResponse` gets back. */
export interface IopfFault {
  fault: IommuFault
}

/** `struct iommu_page_response`: what the driver sends the device. */
export interface PageResponse {
  readonly pasid: number
  readonly grpid: number
  /** One of {@link IommuPageResponseCode}. */
  readonly code: number
}

/**
 * Build a page request as a driver reports it.
 *
 * @example
 * ```ts
 * core.iommuReportDeviceFault(dev, iopfFault({ addr, grpid: 2, perm: IOMMU_FAULT_PERM_READ,
 *   flags: IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE }))
 * ```
 */
export function iopfFault(prm: Partial<IommuFaultPageRequest>): IopfFault {
  return {
    fault: {
      type: IOMMU_FAULT_PAGE_REQ,
      prm: {
        flags: prm.flags ?? 0,
        pasid: prm.pasid ?? 0,
        grpid: prm.grpid ?? 0,
        perm: prm.perm ?? 0,
        addr: prm.addr ?? 0n,
        privateData: prm.privateData ?? [0n, 0n],
      },
    },
  }
}

/** `struct iommu_fault_param`: a device's IOPF state while it is on an {@link IopfQueue}. */
export class IommuFaultParam {
  readonly dev: PciDevice
  readonly queue: IopfQueue
  /** Requests of groups whose last request has not arrived (`partial`). */
  readonly partial: IopfFault[] = []
  /** Groups reported and not yet answered or taken by a handler (`faults`). */
  readonly faults: Set<IopfGroup> = new Set()

  constructor(dev: PciDevice, queue: IopfQueue) {
    this.dev = dev
    this.queue = queue
  }
}

/**
 * `struct iopf_group`: the requests of one Page Request Group, the last one last. Handlers
 * keep it until they answer it with {@link iopfGroupResponse}.
 */
export class IopfGroup {
  /** The request with LAST_PAGE set; its PASID/grpid address the response. */
  readonly lastFault: IopfFault
  /** Every request of the group in report order, `lastFault` last. */
  readonly faults: IopfFault[]
  readonly faultParam: IommuFaultParam
  /** The attachment the faulting RID/PASID resolved to. */
  attachHandle: AttachHandle | null = null
  /** Free for the handler (iommufd's response cookie). */
  cookie = 0
  /** Answered (a second answer is a handler bug). */
  responded = false

  constructor(lastFault: IopfFault, faults: IopfFault[], faultParam: IommuFaultParam) {
    this.lastFault = lastFault
    this.faults = faults
    this.faultParam = faultParam
  }

  /** `fault_count`. */
  get faultCount(): number {
    return this.faults.length
  }
}

/**
 * A driver's IOPF queue (`struct iopf_queue`): the devices whose page requests the driver
 * reports. The kernel runs handlers on a workqueue; the model calls them synchronously.
 */
export class IopfQueue {
  readonly name: string
  readonly devices: Set<IommuFaultParam> = new Set()

  constructor(name: string) {
    this.name = name
  }

  /**
   * `iopf_queue_add_device`: start accepting page requests of `dev`.
   *
   * @throws ENODEV - the driver has no `pageResponse`; EBUSY - the device is on a queue
   */
  addDevice(dev: PciDevice): void {
    const iommu = dev.iommu
    const unit = iommu?.unit ?? dev.unit
    if (iommu === null || unit === null || !unit.driver.ops.pageResponse) {
      throw new IommuError('ENODEV', `${dev.name}: no page_response`)
    }
    if (iommu.faultParam) throw new IommuError('EBUSY', `${dev.name} is on an IOPF queue`)
    const p = new IommuFaultParam(dev, this)
    this.devices.add(p)
    iommu.faultParam = p
  }

  /**
   * `iopf_queue_remove_device`: drop partial requests and answer INVALID every group still
   * pending in the core (groups a handler took are the handler's to answer).
   */
  removeDevice(dev: PciDevice): void {
    const p = dev.iommu?.faultParam
    if (!p || p.queue !== this) throw new Error(`iopf_queue_remove_device: ${dev.name} not queued`)
    p.partial.length = 0
    for (const group of [...p.faults]) {
      respond(group, IommuPageResponseCode.INVALID)
      p.faults.delete(group)
    }
    this.devices.delete(p)
    if (dev.iommu) dev.iommu.faultParam = null
  }

  /** `iopf_queue_discard_partial`: drop every partial request (after a queue overflow). */
  discardPartial(): void {
    for (const p of this.devices) p.partial.length = 0
  }
}

function respond(group: IopfGroup, code: number): void {
  const p = group.faultParam
  const ops = (p.dev.iommu?.unit ?? p.dev.unit)?.driver.ops
  const prm = group.lastFault.fault.prm
  ops?.pageResponse?.(p.dev, group.lastFault, { pasid: prm.pasid, grpid: prm.grpid, code })
}

/**
 * `iopf_group_response`: answer a group; the driver's `pageResponse` sends it to the
 * device.
 *
 * @param code - one of {@link IommuPageResponseCode}
 */
export function iopfGroupResponse(group: IopfGroup, code: number): void {
  if (group.responded) throw new Error('iopf_group_response: group answered twice')
  group.responded = true
  respond(group, code)
  group.faultParam.faults.delete(group)
}

/**
 * `iopf_group_dequeue`: a handler takes the group off the core's pending list; it must
 * answer it later.
 */
export function iopfGroupDequeue(group: IopfGroup): void {
  group.faultParam.faults.delete(group)
}

/** `iopf_free_group`: nothing to free in the model; kept so drivers port one to one. */
export function iopfFreeGroup(_group: IopfGroup): void {}

/** What the core needs to route a fault: the attach-handle lookup of its groups. */
export interface IopfRouting {
  attachHandleGet(dev: PciDevice, pasid: number, type: number): AttachHandle | null
}

/** `find_fault_handler`. */
function findFaultHandler(
  routing: IopfRouting,
  dev: PciDevice,
  evt: IopfFault,
  nestedType: number,
): AttachHandle | null {
  const prm = evt.fault.prm
  let handle: AttachHandle | null
  if (prm.flags & IOMMU_FAULT_PAGE_REQUEST_PASID_VALID) {
    handle = routing.attachHandleGet(dev, prm.pasid, 0)
    if (handle === null) {
      const ops = (dev.iommu?.unit ?? dev.unit)?.driver.ops
      if (!ops?.userPasidTable) return null
      // A user-owned PASID table: the fault belongs to the NESTED domain on the RID.
      handle = routing.attachHandleGet(dev, 0, nestedType)
      if (handle === null) return null
    }
  } else {
    handle = routing.attachHandleGet(dev, 0, 0)
    if (handle === null) return null
  }
  const domain = handle.domain as IommuDomain | null
  if (!domain?.iopfHandler) return null
  return handle
}

/** `iommu_report_device_fault`, over the core's routing (see `IommuCore`). */
export function reportDeviceFault(
  routing: IopfRouting,
  dev: PciDevice,
  evt: IopfFault,
  nestedType: number,
): void {
  const handle = findFaultHandler(routing, dev, evt, nestedType)
  const p = dev.iommu?.faultParam ?? null
  if (handle === null || p === null) {
    // No handler (or a fault-capable domain without IOPF setup, a kernel WARN).
    const ops = (dev.iommu?.unit ?? dev.unit)?.driver.ops
    const prm = evt.fault.prm
    if (evt.fault.type === IOMMU_FAULT_PAGE_REQ) {
      ops?.pageResponse?.(dev, evt, {
        pasid: prm.pasid,
        grpid: prm.grpid,
        code: IommuPageResponseCode.INVALID,
      })
    }
    throw new IommuError('EINVAL', `${dev.name}: no IOPF handler for the request`)
  }
  const prm = evt.fault.prm
  if (!(prm.flags & IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE)) {
    // Not the last request of its group: kept until the last one arrives, not answered.
    p.partial.unshift(evt)
    return
  }
  // The group: partial requests of the same grpid (list_move to the head keeps them in
  // reverse order of the partial list, which is newest first), then the last one.
  const faults: IopfFault[] = []
  for (let i = 0; i < p.partial.length; ) {
    const f = p.partial[i] as IopfFault
    if (f.fault.prm.grpid === prm.grpid) {
      faults.unshift(f)
      p.partial.splice(i, 1)
    } else i++
  }
  faults.push(evt)
  const group = new IopfGroup(evt, faults, p)
  group.attachHandle = handle
  p.faults.add(group)
  const handler = (handle.domain as IommuDomain).iopfHandler as (g: IopfGroup) => void
  try {
    handler(group)
  } catch {
    // The handler refused the group: answer it as failed (the kernel logs and aborts).
    if (!group.responded) iopfGroupResponse(group, IommuPageResponseCode.FAILURE)
  }
}

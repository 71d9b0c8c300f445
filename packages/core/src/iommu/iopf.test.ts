import { describe, expect, it } from 'vitest'
import { DomainType } from '../constants.ts'
import type { IommuDomain } from '../domain.ts'
import { isIommuError } from '../errno.ts'
import { createMachine } from '../machine/machine.ts'
import { type MockIommuUnit, mockIommu } from '../testing/mock-iommu.ts'
import type { AttachHandle } from './group.ts'
import {
  IommuPageResponseCode,
  type IopfGroup,
  IopfQueue,
  iopfFault,
  iopfGroupDequeue,
  iopfGroupResponse,
  IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE as LAST,
  IOMMU_FAULT_PAGE_REQUEST_PASID_VALID as PASID_VALID,
} from './iopf.ts'

function world() {
  const m = createMachine({ iommus: [mockIommu()] })
  const dev = m.addPciDevice({ pasidBits: 20 })
  const unit = m.units[0] as MockIommuUnit
  const core = m.iommu
  const owner = {}
  core.iommuDeviceClaimDmaOwner(dev, owner)
  const group = dev.group
  if (group === null) throw new Error('no group')
  const groups: IopfGroup[] = []
  const queue = new IopfQueue('test')
  const attach = (domain: IommuDomain, pasid = 0): AttachHandle => {
    const handle: AttachHandle = { domain: null }
    if (pasid) core.iommuAttachDevicePasid(domain, dev, pasid, handle)
    else core.iommuAttachGroupHandle(domain, group, handle)
    return handle
  }
  const handler = (g: IopfGroup): void => {
    iopfGroupDequeue(g)
    groups.push(g)
  }
  return { m, dev, unit, core, queue, attach, handler, groups }
}

function errnoOf(fn: () => void): string {
  try {
    fn()
    return 'OK'
  } catch (e) {
    if (isIommuError(e)) return e.code
    throw e
  }
}

describe('iommu_report_device_fault (io-pgfault.c)', () => {
  it('routes a group to the RID domain handler; the response reaches ops.pageResponse', () => {
    const w = world()
    const d = w.core.iommuPagingDomainAllocFlags(w.dev, 0)
    d.iopfHandler = w.handler
    w.attach(d)
    // The mock put the device on its IOPF queue when the fault-capable domain came.
    expect(errnoOf(() => w.queue.addDevice(w.dev))).toBe('EBUSY')
    // Two partial requests of group 5, one of group 6, then the last of group 5.
    w.core.iommuReportDeviceFault(w.dev, iopfFault({ grpid: 5, addr: 0x1000n }))
    w.core.iommuReportDeviceFault(w.dev, iopfFault({ grpid: 6, addr: 0x9000n }))
    w.core.iommuReportDeviceFault(w.dev, iopfFault({ grpid: 5, addr: 0x2000n }))
    expect(w.groups).toHaveLength(0)
    w.core.iommuReportDeviceFault(w.dev, iopfFault({ grpid: 5, addr: 0x3000n, flags: LAST }))
    expect(w.groups).toHaveLength(1)
    const g = w.groups[0] as IopfGroup
    expect(g.faults.map((f) => f.fault.prm.addr)).toEqual([0x1000n, 0x2000n, 0x3000n])
    expect(g.faultCount).toBe(3)
    expect(w.unit.pageResponses).toHaveLength(0)
    iopfGroupResponse(g, IommuPageResponseCode.SUCCESS)
    expect(w.unit.pageResponses.map((r) => r.response)).toEqual([
      { pasid: 0, grpid: 5, code: IommuPageResponseCode.SUCCESS },
    ])
    expect(w.unit.pageResponses[0]?.evt).toBe(g.lastFault)
  })

  it('no handler: INVALID response at once and EINVAL', () => {
    const w = world()
    const d = w.core.iommuPagingDomainAllocFlags(w.dev, 0)
    w.attach(d)
    w.queue.addDevice(w.dev)
    expect(errnoOf(() => w.queue.addDevice(w.dev))).toBe('EBUSY')
    const evt = iopfFault({ grpid: 1, flags: LAST })
    expect(errnoOf(() => w.core.iommuReportDeviceFault(w.dev, evt))).toBe('EINVAL')
    expect(w.unit.pageResponses.map((r) => r.response.code)).toEqual([
      IommuPageResponseCode.INVALID,
    ])
  })

  it('a PASID without a domain goes to the NESTED domain on the RID (user_pasid_table)', () => {
    const w = world()
    const parent = w.core.iommuPagingDomainAllocFlags(w.dev, 1)
    const nested = w.core.iommuDomainAllocNested(w.dev, parent, 0, {
      type: 0xdead,
      len: 4,
      read: () => new Uint8Array(4),
    })
    expect(nested.type).toBe(DomainType.NESTED)
    nested.iopfHandler = w.handler
    w.attach(nested)
    w.core.iommuReportDeviceFault(w.dev, iopfFault({ pasid: 7, flags: LAST | PASID_VALID }))
    expect(w.groups[0]?.attachHandle?.domain).toBe(nested)
  })

  it('removing the device answers INVALID what is still pending in the core', () => {
    const w = world()
    const d = w.core.iommuPagingDomainAllocFlags(w.dev, 0)
    const kept: IopfGroup[] = []
    d.iopfHandler = (g) => kept.push(g) // takes it without dequeuing
    w.attach(d)
    w.core.iommuReportDeviceFault(w.dev, iopfFault({ grpid: 3, flags: LAST }))
    expect(kept).toHaveLength(1)
    // Detach: the mock takes the device off its IOPF queue (iopf_queue_remove_device).
    const group = w.dev.group
    if (group === null) throw new Error('no group')
    w.core.iommuDetachGroupHandle(d, group)
    expect(w.unit.pageResponses.map((r) => r.response)).toEqual([
      { pasid: 0, grpid: 3, code: IommuPageResponseCode.INVALID },
    ])
    expect(w.dev.iommu?.faultParam).toBeNull()
  })

  it('a handler that throws gets the group answered FAILURE', () => {
    const w = world()
    const d = w.core.iommuPagingDomainAllocFlags(w.dev, 0)
    d.iopfHandler = () => {
      throw new Error('refused')
    }
    w.attach(d)
    w.core.iommuReportDeviceFault(w.dev, iopfFault({ grpid: 4, flags: LAST }))
    expect(w.unit.pageResponses.map((r) => r.response.code)).toEqual([
      IommuPageResponseCode.FAILURE,
    ])
  })
})

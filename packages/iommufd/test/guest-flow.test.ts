/**
 * A whole vIOMMU guest flow on the mock, the way a VMM drives it (reference
 * nesting-viommu.md §5.1–5.2, iommufd-uapi.md §5): nest parent, vIOMMU, vDEVICE, a nested
 * HWPT from guest data, DMA through both stages, invalidation through the vIOMMU, and a
 * guest fault delivered both as a vEVENT and as an IOPF whose page response reaches the
 * driver.
 *
 * The mock's stage 1 is model-only (the kernel's mock translates nothing in stage 1): a
 * one-level table of u64 entries in guest memory, handed to the domain by a JS call.
 */
import { createMachine, DmaFault, IommuPageResponseCode } from '@iommu/core'
import {
  IOMMU_HWPT_DATA_SELFTEST,
  IOMMU_VEVENTQ_TYPE_SELFTEST,
  IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST,
  IOMMU_VIOMMU_TYPE_SELFTEST,
  MOCK_APERTURE_START,
  MOCK_S1_VALID,
  MOCK_S1_WRITE,
  type MockIommuUnit,
  MockNestedDomain,
  mockIommu,
} from '@iommu/core/testing'
import { describe, expect, it } from 'vitest'
import {
  fdClose,
  fdPoll,
  fdRead,
  fdWrite,
  type HwptNested,
  IOMMU_FAULT_QUEUE_ALLOC,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_FAULT_ID_VALID,
  IOMMU_HWPT_INVALIDATE,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_PGFAULT_FLAGS_LAST_PAGE,
  IOMMU_PGFAULT_PERM_READ,
  IOMMU_VDEVICE_ALLOC,
  IOMMU_VEVENTQ_ALLOC,
  IOMMU_VIOMMU_ALLOC,
  IOMMUFD_PAGE_RESP_SUCCESS,
  ObjType,
  openIommufd,
  POLLIN,
} from '../src/index.ts'
import { IOMMU_TEST_IOTLB_DEFAULT } from '../src/uapi/index.ts'

const PAGE = 4096
const GUEST_PAGES = 16
/** Guest-physical base of guest RAM (= the parent IOVA it is mapped at). */
const GPA_BASE = MOCK_APERTURE_START

describe('guest flow on the mock vIOMMU', () => {
  it('DMA through both stages, vIOMMU invalidation, a fault as vEVENT and IOPF, page response', () => {
    const m = createMachine({ iommus: [mockIommu()] })
    const unit = m.units[0] as MockIommuUnit
    const vmm = m.createProcess()
    const fd = openIommufd(m, vmm)
    const dev = m.addPciDevice({ pri: true })

    // Guest RAM in the VMM, mapped at GPA_BASE in the IOAS (stage 2: GPA → HPA).
    const ram = vmm.mmap(GUEST_PAGES * PAGE)
    const ioas = { size: 12, flags: 0, out_ioas_id: 0 }
    fd.ioctl(IOMMU_IOAS_ALLOC, ioas)
    fd.ioctl(IOMMU_IOAS_MAP, {
      size: 40,
      flags: IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
      ioas_id: ioas.out_ioas_id,
      user_va: BigInt(ram),
      length: BigInt(GUEST_PAGES * PAGE),
      iova: GPA_BASE,
    })
    const idev = fd.bindDevice(dev)
    idev.attach(ioas.out_ioas_id)

    // The nest parent, the vIOMMU on it and the device's vDEVICE (vSID 0x42).
    const parent = {
      size: 48,
      flags: IOMMU_HWPT_ALLOC_NEST_PARENT,
      dev_id: idev.id,
      pt_id: ioas.out_ioas_id,
      out_hwpt_id: 0,
    }
    fd.ioctl(IOMMU_HWPT_ALLOC, parent)
    const viommu = {
      size: 40,
      type: IOMMU_VIOMMU_TYPE_SELFTEST,
      dev_id: idev.id,
      hwpt_id: parent.out_hwpt_id,
      out_viommu_id: 0,
    }
    fd.ioctl(IOMMU_VIOMMU_ALLOC, viommu)
    const vdev = {
      size: 24,
      viommu_id: viommu.out_viommu_id,
      dev_id: idev.id,
      virt_id: 0x42n,
      out_vdevice_id: 0,
    }
    fd.ioctl(IOMMU_VDEVICE_ALLOC, vdev)

    // A fault queue, a vEVENTQ, and the nested HWPT from the guest's data.
    const fault = { size: 16, out_fault_id: 0, out_fault_fd: 0 }
    fd.ioctl(IOMMU_FAULT_QUEUE_ALLOC, fault)
    const veventq = {
      size: 32,
      viommu_id: viommu.out_viommu_id,
      type: IOMMU_VEVENTQ_TYPE_SELFTEST,
      veventq_depth: 8,
      out_veventq_id: 0,
      out_veventq_fd: 0,
    }
    fd.ioctl(IOMMU_VEVENTQ_ALLOC, veventq)
    const guestData = vmm.mmap(PAGE)
    const gd = new Uint8Array(8)
    new DataView(gd.buffer).setUint32(0, IOMMU_TEST_IOTLB_DEFAULT, true)
    vmm.write(guestData, gd)
    const nested = {
      size: 48,
      flags: IOMMU_HWPT_FAULT_ID_VALID,
      dev_id: idev.id,
      pt_id: viommu.out_viommu_id,
      data_type: IOMMU_HWPT_DATA_SELFTEST,
      data_len: 8,
      data_uptr: BigInt(guestData),
      fault_id: fault.out_fault_id,
      out_hwpt_id: 0,
    }
    fd.ioctl(IOMMU_HWPT_ALLOC, nested)

    // The guest's stage 1 in guest RAM page 0: IOVA page 1 → guest page 4 (RW), IOVA page
    // 2 → guest page 5 (read-only); IOVA page 5 not mapped yet.
    const s1Gpa = GPA_BASE
    const writeS1 = (iovaPage: number, guestPage: number, flags: bigint) => {
      const e = new Uint8Array(8)
      const gpa = GPA_BASE + BigInt(guestPage * PAGE)
      new DataView(e.buffer).setBigUint64(0, gpa | flags, true)
      vmm.write(ram + iovaPage * 8, e)
    }
    writeS1(1, 4, MOCK_S1_VALID | MOCK_S1_WRITE)
    writeS1(2, 5, MOCK_S1_VALID)
    const hwpt = fd.ctx.get<HwptNested>(nested.out_hwpt_id, ObjType.HWPT_NESTED)
    const domain = hwpt.domain as MockNestedDomain
    expect(domain).toBeInstanceOf(MockNestedDomain)
    domain.setStage1Table(s1Gpa, 64)
    idev.replace(nested.out_hwpt_id)

    // DMA through both stages: IOVA 0x1010 → GPA page 4 + 0x10 → the VMM's RAM.
    dev.dma.write(0x1010, new Uint8Array([0xde, 0xad, 0xbe, 0xef]))
    expect([...vmm.read(ram + 4 * PAGE + 0x10, 4)]).toEqual([0xde, 0xad, 0xbe, 0xef])
    vmm.write(ram + 5 * PAGE, new Uint8Array([7, 8, 9]))
    expect([...dev.dma.read(0x2000, 3)]).toEqual([7, 8, 9])
    // A write through the read-only stage-1 entry faults; nothing is written.
    expect(() => dev.dma.write(0x2000, new Uint8Array([1]))).toThrow(DmaFault)
    expect(vmm.read(ram + 5 * PAGE, 1)[0]).toBe(7)
    unit.faultLog.length = 0

    // A guest fault: IOVA page 5 is not in the guest's table.
    let fault5: DmaFault | null = null
    try {
      dev.dma.read(0x5008, 4)
    } catch (e) {
      fault5 = e as DmaFault
    }
    expect(fault5?.reason).toBe('translation')
    expect(fdPoll(vmm, veventq.out_veventq_fd) & POLLIN).toBe(0)
    unit.irq()

    // The vEVENT: header (flags 0, sequence 0) and the vDEVICE's virtual ID.
    const buf = vmm.mmap(PAGE)
    expect(fdPoll(vmm, veventq.out_veventq_fd) & POLLIN).toBe(POLLIN)
    expect(fdRead(vmm, veventq.out_veventq_fd, buf, 64)).toBe(12)
    const ev = new DataView(vmm.read(buf, 12).buffer)
    expect([ev.getUint32(0, true), ev.getUint32(4, true), ev.getUint32(8, true)]).toEqual([
      0, 0, 0x42,
    ])

    // The IOPF: one 40-byte record for the page, READ, with a cookie.
    expect(fdRead(vmm, fault.out_fault_fd, buf, 80)).toBe(40)
    const pf = new DataView(vmm.read(buf, 40).buffer)
    expect(pf.getUint32(0, true)).toBe(IOMMU_PGFAULT_FLAGS_LAST_PAGE)
    expect(pf.getUint32(4, true)).toBe(idev.id)
    expect(pf.getUint32(16, true)).toBe(IOMMU_PGFAULT_PERM_READ)
    expect(pf.getBigUint64(24, true)).toBe(0x5000n)
    const cookie = pf.getUint32(36, true)
    expect(cookie).toBe(1)

    // The guest maps the page and invalidates through the vIOMMU by its vSID.
    writeS1(5, 6, MOCK_S1_VALID)
    vmm.write(ram + 6 * PAGE + 8, new Uint8Array([0x11, 0x22, 0x33, 0x44]))
    const inv = new Uint8Array(12)
    new DataView(inv.buffer).setUint32(4, 0x42, true)
    const invVa = vmm.mmap(PAGE)
    vmm.write(invVa, inv)
    const invCmd = {
      size: 32,
      hwpt_id: viommu.out_viommu_id,
      data_uptr: BigInt(invVa),
      data_type: IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST,
      entry_len: 12,
      entry_num: 1,
    }
    fd.ioctl(IOMMU_HWPT_INVALIDATE, invCmd)
    expect(invCmd.entry_num).toBe(1)
    expect(unit.devState(dev.rid).cache[0]).toBe(0)

    // The page response completes the request at the driver.
    const resp = new Uint8Array(8)
    const rv = new DataView(resp.buffer)
    rv.setUint32(0, cookie, true)
    rv.setUint32(4, IOMMUFD_PAGE_RESP_SUCCESS, true)
    vmm.write(buf, resp)
    expect(fdWrite(vmm, fault.out_fault_fd, buf, 8)).toBe(8)
    const last = unit.pageResponses.at(-1)
    expect(last?.dev).toBe(dev)
    expect(last?.response.code).toBe(IommuPageResponseCode.SUCCESS)
    expect(last?.evt.fault.prm.addr).toBe(0x5000n)
    // The device retries and gets the guest's data.
    expect([...dev.dma.read(0x5008, 4)]).toEqual([0x11, 0x22, 0x33, 0x44])

    // Teardown: nothing leaks.
    idev.detach()
    idev.unbind()
    fdClose(vmm, fault.out_fault_fd)
    fdClose(vmm, veventq.out_veventq_fd)
    fd.close()
    expect(fd.ctx.released).toBe(true)
    expect(m.memory.frameStats().pins).toBe(0)
    expect(dev.iommu?.faultParam ?? null).toBeNull()
  })
})

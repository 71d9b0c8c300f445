/**
 * VT-d nesting through iommufd: a guest's first-stage tables (at guest-physical addresses,
 * inside the VM's memory) on a nest-parent second stage (the IOAS), IOMMU_HWPT_DATA_VTD_S1
 * allocation and its validation, nested attach per RID and per PASID, IOMMU_HWPT_INVALIDATE
 * with `iommu_hwpt_vtd_s1_invalidate` entries, parent unmap flushes and dirty tracking on
 * the parent reaching the nested PASID entries.
 */
import {
  createMachine,
  DmaFault,
  IOMMU_FAULT_PAGE_RESPONSE_NEEDS_PASID,
  type Machine,
  type PciDevice,
  type PciDeviceOptions,
  type Process,
} from '@iommu/core'
import {
  fdPoll,
  fdRead,
  fdWrite,
  type HwptNested,
  IOMMU_FAULT_QUEUE_ALLOC,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_ALLOC_PASID,
  IOMMU_HWPT_DIRTY_TRACKING_ENABLE,
  IOMMU_HWPT_FAULT_ID_VALID,
  IOMMU_HWPT_GET_DIRTY_BITMAP,
  IOMMU_HWPT_INVALIDATE,
  IOMMU_HWPT_SET_DIRTY_TRACKING,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_IOAS_UNMAP,
  IOMMU_OPTION,
  IOMMU_OPTION_HUGE_PAGES,
  IOMMU_OPTION_OP_SET,
  IOMMU_PGFAULT_FLAGS_LAST_PAGE,
  IOMMU_PGFAULT_FLAGS_PASID_VALID,
  IOMMU_PGFAULT_PERM_READ,
  IOMMU_PGFAULT_PERM_WRITE,
  IOMMU_VIOMMU_ALLOC,
  IOMMUFD_PAGE_RESP_INVALID,
  IOMMUFD_PAGE_RESP_SUCCESS,
  type Iommufd,
  type IommufdDevice,
  ObjType,
  openIommufd,
  POLLIN,
} from '@iommu/iommufd'
import { IOMMU_VIOMMU_TYPE_ARM_SMMUV3, IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV } from '@iommu/iommufd/uapi'
import { describe, expect, it } from 'vitest'
import {
  Fr,
  IOMMU_VTD_INV_FLAGS_LEAF,
  intel,
  intelFaultLog,
  Pe,
  Pgtt,
  RespCode,
  type VtdDomain,
  type VtdIommuHw,
} from '../src/index.ts'

const PAGE = 4096
/** Guest RAM: 8 MiB at guest-physical 0, mapped 1:1 into the IOAS (the second stage). */
const GUEST_PAGES = 2048
/** The guest's first-stage tables live at these guest-physical pages. */
const GPA_PML4 = 0x10_0000
/** Guest IOVA the device uses, and the guest data pages it maps to. */
const GIOVA = 0x7f_0000_0000n
const GPA_DATA = 0x40_0000

interface Vm {
  m: Machine
  unit: VtdIommuHw
  vmm: Process
  fd: Iommufd
  dev: PciDevice
  idev: IommufdDevice
  ioas: number
  guest: number
}

/** A VM whose guest RAM is mapped with 4 KiB IOPTEs unless `huge`. */
function vm(huge = true, devOpts: PciDeviceOptions = {}): Vm {
  const m = createMachine({ iommus: [intel()] })
  const unit = m.units[0] as VtdIommuHw
  const vmm = m.createProcess()
  const fd = openIommufd(m, vmm)
  const alloc = { size: 12, flags: 0, out_ioas_id: 0 }
  fd.ioctl(IOMMU_IOAS_ALLOC, alloc)
  if (!huge) {
    fd.ioctl(IOMMU_OPTION, {
      size: 24,
      option_id: IOMMU_OPTION_HUGE_PAGES,
      op: IOMMU_OPTION_OP_SET,
      __reserved: 0,
      object_id: alloc.out_ioas_id,
      val64: 0n,
    })
  }
  const guest = vmm.mmap(GUEST_PAGES * PAGE)
  fd.ioctl(IOMMU_IOAS_MAP, {
    size: 40,
    flags: IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
    ioas_id: alloc.out_ioas_id,
    __reserved: 0,
    user_va: BigInt(guest),
    length: BigInt(GUEST_PAGES * PAGE),
    iova: 0n,
  })
  const dev = m.addPciDevice({ pasidBits: 20, ...devOpts })
  const idev = fd.bindDevice(dev)
  const v = { m, unit, vmm, fd, dev, idev, ioas: alloc.out_ioas_id, guest }
  guestTables(v, GIOVA, GPA_DATA, 4)
  return v
}

/** The guest writes a 4-level x86-64 table at GPA_PML4.. mapping `pages` pages of giova. */
function guestTables(v: Vm, giova: bigint, gpa: number, pages: number): void {
  const w64 = (g: number, val: bigint) => {
    const b = new Uint8Array(8)
    new DataView(b.buffer).setBigUint64(0, val, true)
    v.vmm.write(v.guest + g, b)
  }
  for (let level = 3; level >= 1; level--) {
    const idx = Number((giova >> BigInt(12 + 9 * level)) & 511n)
    const table = GPA_PML4 + (3 - level) * PAGE
    w64(table + idx * 8, BigInt(table + PAGE) | 0x7n)
  }
  const pt = GPA_PML4 + 3 * PAGE
  for (let i = 0; i < pages; i++) {
    const idx = Number(((giova >> 12n) + BigInt(i)) & 511n)
    w64(pt + idx * 8, BigInt(gpa + i * PAGE) | 0x7n)
  }
}

function hwptAlloc(
  v: Vm,
  ptId: number,
  flags: number,
  data?: Uint8Array,
  dataType = 1,
  faultId = 0,
) {
  let uptr = 0n
  if (data !== undefined) {
    const buf = v.vmm.mmap(PAGE)
    v.vmm.write(buf, data)
    uptr = BigInt(buf)
  }
  const cmd = {
    size: 56,
    flags,
    dev_id: v.idev.id,
    pt_id: ptId,
    __reserved: 0,
    data_type: data === undefined ? 0 : dataType,
    data_len: data?.length ?? 0,
    data_uptr: uptr,
    fault_id: faultId,
    out_hwpt_id: 0,
  }
  v.fd.ioctl(IOMMU_HWPT_ALLOC, cmd)
  return cmd.out_hwpt_id
}

function s1Data(o: { flags?: bigint; pgtbl?: bigint; aw?: number; len?: number } = {}): Uint8Array {
  const b = new Uint8Array(o.len ?? 24)
  const dv = new DataView(new ArrayBuffer(24))
  dv.setBigUint64(0, o.flags ?? 0n, true)
  dv.setBigUint64(8, o.pgtbl ?? BigInt(GPA_PML4), true)
  dv.setUint32(16, o.aw ?? 48, true)
  b.set(new Uint8Array(dv.buffer).subarray(0, b.length))
  return b
}

function errno(fn: () => unknown): string | null {
  try {
    fn()
    return null
  } catch (e) {
    return (e as { code?: string }).code ?? 'not an IommuError'
  }
}

/** IOMMU_HWPT_INVALIDATE with VT-d entries; returns [errno or null, entry_num written back]. */
function invalidate(
  v: Vm,
  hwpt: number,
  entries: { addr: bigint; npages: bigint; flags?: number; reserved?: number }[],
  dataType = 0,
): [string | null, number] {
  const buf = v.vmm.mmap(PAGE)
  entries.forEach((e, i) => {
    const dv = new DataView(new ArrayBuffer(24))
    dv.setBigUint64(0, e.addr, true)
    dv.setBigUint64(8, e.npages, true)
    dv.setUint32(16, e.flags ?? 0, true)
    dv.setUint32(20, e.reserved ?? 0, true)
    v.vmm.write(buf + i * 24, new Uint8Array(dv.buffer))
  })
  const cmd = {
    size: 32,
    hwpt_id: hwpt,
    data_uptr: BigInt(buf),
    data_type: dataType,
    entry_len: 24,
    entry_num: entries.length,
    __reserved: 0,
  }
  const err = errno(() => v.fd.ioctl(IOMMU_HWPT_INVALIDATE, cmd))
  return [err, cmd.entry_num]
}

function entryOf(v: Vm, pasid: number): number {
  const mem = v.m.memory
  const root = mem.read64(
    v.unit.translationMode.rootTable + v.dev.bus * 16 + (v.dev.devfn >= 0x80 ? 8 : 0),
  )
  const ctx = Number(root & ~0xfffn) + (v.dev.devfn & 0x7f) * 32
  const dir = Number(mem.read64(ctx) & ~0xfffn)
  return Number(mem.read64(dir + (pasid >> 6) * 8) & ~0xfffn) + (pasid & 63) * 64
}

describe('VT-d nested HWPTs through iommufd', () => {
  it('validates IOMMU_HWPT_DATA_VTD_S1 as nested.c does', () => {
    const v = vm()
    const parent = hwptAlloc(v, v.ioas, IOMMU_HWPT_ALLOC_NEST_PARENT)
    const plain = hwptAlloc(v, v.ioas, 0)
    expect(errno(() => hwptAlloc(v, plain, 0, s1Data()))).toBe('EINVAL')
    expect(errno(() => hwptAlloc(v, parent, 0, s1Data({ len: 16 })))).toBe('EINVAL')
    expect(errno(() => hwptAlloc(v, parent, 0, s1Data(), 2))).toBe('EOPNOTSUPP')
    expect(errno(() => hwptAlloc(v, parent, IOMMU_HWPT_ALLOC_DIRTY_TRACKING, s1Data()))).toBe(
      'EOPNOTSUPP',
    )
    // Not checked at allocation: the address width (attach checks it) and the flags.
    const bad = hwptAlloc(v, parent, 0, s1Data({ aw: 39, flags: 0x80n }))
    expect(errno(() => v.idev.attach(bad))).toBe('EINVAL')
    expect(hwptAlloc(v, parent, IOMMU_HWPT_ALLOC_PASID, s1Data())).toBeGreaterThan(0)
  })

  it('translates device DMA through the guest first stage and the IOAS second stage', () => {
    const v = vm()
    const parent = hwptAlloc(v, v.ioas, IOMMU_HWPT_ALLOC_NEST_PARENT)
    const nested = hwptAlloc(v, parent, 0, s1Data())
    v.idev.attach(nested)
    const d = v.dev.group?.domain as VtdDomain
    expect(d.stage).toBe('nested')
    const e = entryOf(v, 0)
    const v0 = v.m.memory.read64(e)
    expect(Number((v0 & Pe.PGTT_MASK) >> Pe.PGTT_SHIFT)).toBe(Pgtt.NESTED)
    expect(v0 >> 12n).toBe(BigInt(d.s2Domain?.sspt?.root.pfn ?? -1))
    expect(Number(v.m.memory.read64(e + 8) & Pe.DID_MASK)).toBe(d.didOn(v.unit))
    expect(v.m.memory.read64(e + 16)).toBe(BigInt(GPA_PML4))
    v.vmm.write(v.guest + GPA_DATA + PAGE + 5, new Uint8Array([0x99]))
    expect(v.dev.dma.read(GIOVA + BigInt(PAGE + 5), 1)[0]).toBe(0x99)
    v.dev.dma.write(GIOVA + 0x10n, new Uint8Array([0x11, 0x22]))
    expect(v.vmm.read(v.guest + GPA_DATA + 0x10, 2)).toEqual(new Uint8Array([0x11, 0x22]))
    expect(v.unit.staleUses).toEqual([])
  })

  it('binds nested HWPTs per PASID, each (RID, PASID) with its own entry', () => {
    const v = vm()
    const parent = hwptAlloc(v, v.ioas, IOMMU_HWPT_ALLOC_NEST_PARENT)
    const a = hwptAlloc(v, parent, IOMMU_HWPT_ALLOC_PASID, s1Data())
    // A second guest table: PML4 at another guest page pointing at the same lower levels
    // but mapping the IOVA to the next data page.
    const alt = GPA_PML4 + 8 * PAGE
    const pml4Idx = Number((GIOVA >> 39n) & 511n)
    const b8 = new Uint8Array(8)
    new DataView(b8.buffer).setBigUint64(0, BigInt(GPA_PML4 + PAGE) | 7n, true)
    v.vmm.write(v.guest + alt + pml4Idx * 8, b8)
    const b = hwptAlloc(v, parent, IOMMU_HWPT_ALLOC_PASID, s1Data({ pgtbl: BigInt(alt) }))
    v.idev.attach(a, 3)
    v.idev.attach(b, 7)
    expect(v.m.memory.read64(entryOf(v, 3) + 16)).toBe(BigInt(GPA_PML4))
    expect(v.m.memory.read64(entryOf(v, 7) + 16)).toBe(BigInt(alt))
    v.vmm.write(v.guest + GPA_DATA, new Uint8Array([0xa1]))
    expect(v.dev.dma.read(GIOVA, 1, { pasid: 3 })[0]).toBe(0xa1)
    expect(v.dev.dma.read(GIOVA, 1, { pasid: 7 })[0]).toBe(0xa1)
    // The RID has no translation of its own.
    expect(() => v.dev.dma.read(GIOVA, 1)).toThrow(DmaFault)
    v.idev.detach(3)
    expect(() => v.dev.dma.read(GIOVA, 1, { pasid: 3 })).toThrow(DmaFault)
    expect(v.dev.dma.read(GIOVA, 1, { pasid: 7 })[0]).toBe(0xa1)
    expect(v.unit.staleUses).toEqual([])
  })

  it('needs HWPT_INVALIDATE after a guest table change and writes entry_num back', () => {
    const v = vm()
    const parent = hwptAlloc(v, v.ioas, IOMMU_HWPT_ALLOC_NEST_PARENT)
    const nested = hwptAlloc(v, parent, 0, s1Data())
    v.idev.attach(nested)
    v.vmm.write(v.guest + GPA_DATA, new Uint8Array([1]))
    v.vmm.write(v.guest + GPA_DATA + 3 * PAGE, new Uint8Array([3]))
    expect(v.dev.dma.read(GIOVA, 1)[0]).toBe(1)
    // The guest remaps its first page to its fourth data page without invalidating.
    guestTables(v, GIOVA, GPA_DATA + 3 * PAGE, 1)
    expect(v.dev.dma.read(GIOVA, 1)[0]).toBe(1)
    expect(v.unit.staleUses[0]).toMatchObject({
      cache: 'iotlb',
      missing: 'PASID-based IOTLB invalidation',
    })
    // Errors stop at the failing entry; entry_num says how many were handled.
    expect(
      invalidate(v, nested, [
        { addr: GIOVA, npages: 1n },
        { addr: 1n, npages: 1n },
      ]),
    ).toEqual(['EINVAL', 1])
    expect(invalidate(v, nested, [{ addr: GIOVA, npages: 1n, flags: 2 }])).toEqual([
      'EOPNOTSUPP',
      0,
    ])
    expect(invalidate(v, nested, [{ addr: 0n, npages: 1n, reserved: 1 }])).toEqual([
      'EOPNOTSUPP',
      0,
    ])
    expect(
      invalidate(v, nested, [{ addr: BigInt(PAGE), npages: -1n & 0xffff_ffff_ffff_ffffn }]),
    ).toEqual(['EINVAL', 0])
    expect(invalidate(v, nested, [{ addr: GIOVA, npages: 1n }], 1)).toEqual(['EINVAL', 0])
    expect(invalidate(v, nested, [])).toEqual([null, 0])
    expect(
      invalidate(v, nested, [
        { addr: GIOVA, npages: 1n, flags: IOMMU_VTD_INV_FLAGS_LEAF },
        { addr: 0n, npages: 0xffff_ffff_ffff_ffffn },
      ]),
    ).toEqual([null, 2])
    expect(v.dev.dma.read(GIOVA, 1)[0]).toBe(3)
  })

  it('flushes nested translations when the parent (IOAS) unmaps', () => {
    const v = vm()
    const parent = hwptAlloc(v, v.ioas, IOMMU_HWPT_ALLOC_NEST_PARENT)
    const nested = hwptAlloc(v, parent, 0, s1Data())
    v.idev.attach(nested)
    v.dev.dma.read(GIOVA, 1)
    v.fd.ioctl(IOMMU_IOAS_UNMAP, {
      size: 24,
      ioas_id: v.ioas,
      iova: 0n,
      length: BigInt(GUEST_PAGES * PAGE),
    })
    expect(() => v.dev.dma.read(GIOVA, 1)).toThrow(DmaFault)
    expect(v.unit.staleUses).toEqual([])
  })

  it('pushes dirty tracking on the parent into every nested PASID entry', () => {
    const v = vm(false)
    const parent = hwptAlloc(
      v,
      v.ioas,
      IOMMU_HWPT_ALLOC_NEST_PARENT | IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
    )
    const nested = hwptAlloc(v, parent, IOMMU_HWPT_ALLOC_PASID, s1Data())
    v.idev.attach(nested)
    v.idev.attach(nested, 2)
    const entries = [entryOf(v, 0), entryOf(v, 2)]
    const ssade = () => entries.map((e) => (v.m.memory.read64(e) & Pe.SSADE) !== 0n)
    expect(ssade()).toEqual([false, false])
    v.fd.ioctl(IOMMU_HWPT_SET_DIRTY_TRACKING, {
      size: 16,
      flags: IOMMU_HWPT_DIRTY_TRACKING_ENABLE,
      hwpt_id: parent,
      __reserved: 0,
    })
    expect(ssade()).toEqual([true, true])
    // A device write through both stages dirties the guest-physical page in the parent.
    v.dev.dma.write(GIOVA + BigInt(2 * PAGE), new Uint8Array([7]), { pasid: 2 })
    const bytes = GUEST_PAGES / 8
    const buf = v.vmm.mmap(PAGE)
    v.fd.ioctl(IOMMU_HWPT_GET_DIRTY_BITMAP, {
      size: 48,
      hwpt_id: parent,
      flags: 0,
      __reserved: 0,
      iova: 0n,
      length: BigInt(GUEST_PAGES * PAGE),
      page_size: BigInt(PAGE),
      data: BigInt(buf),
    })
    const bits = v.vmm.read(buf, bytes)
    const dirty: number[] = []
    for (let i = 0; i < GUEST_PAGES; i++)
      if ((bits[i >> 3] as number) & (1 << (i & 7))) dirty.push(i)
    // The data page, and the guest's table pages whose A bits the walk set.
    expect(dirty).toContain((GPA_DATA >> 12) + 2)
    expect(dirty.filter((p) => p < GPA_PML4 >> 12 || p >= (GPA_PML4 >> 12) + 4)).toEqual([
      (GPA_DATA >> 12) + 2,
    ])
    v.fd.ioctl(IOMMU_HWPT_SET_DIRTY_TRACKING, {
      size: 16,
      flags: 0,
      hwpt_id: parent,
      __reserved: 0,
    })
    expect(ssade()).toEqual([false, false])
    expect(v.unit.staleUses).toEqual([])
  })
})

/** The nested domain behind a HWPT ID. */
function nestedDomain(v: Vm, hwpt: number): VtdDomain {
  return v.fd.ctx.get<HwptNested>(hwpt, ObjType.HWPT_NESTED).domain as VtdDomain
}

/** Run `fn` and return the invalidation descriptors the unit executed, waits left out. */
function descriptors(v: Vm, fn: () => void): { q0: bigint; q1: bigint }[] {
  v.unit.descriptorTrace.length = 0
  v.unit.traceDescriptors = true
  try {
    fn()
  } finally {
    v.unit.traceDescriptors = false
  }
  return v.unit.descriptorTrace.filter((d) => (d.q0 & 0xfn) !== 0x5n)
}

/** `qi_desc_piotlb` / `qi_desc_piotlb_all`: PASID-based IOTLB invalidation (type 6). */
function piotlb(did: number, pasid: number, addr: bigint | null, am = 0, ih = false) {
  const q0 = (BigInt(pasid) << 32n) | (BigInt(did) << 16n) | 0x6n
  if (addr === null) return { q0: q0 | (2n << 4n), q1: 0n }
  return { q0: q0 | (3n << 4n), q1: addr | (ih ? 1n << 6n : 0n) | BigInt(am) }
}

describe('VT-d has no vIOMMU', () => {
  it('answers IOMMU_VIOMMU_ALLOC with EOPNOTSUPP whatever the type (no get_viommu_size)', () => {
    const v = vm()
    const parent = hwptAlloc(v, v.ioas, IOMMU_HWPT_ALLOC_NEST_PARENT)
    for (const type of [IOMMU_VIOMMU_TYPE_ARM_SMMUV3, IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV, 0x77]) {
      const cmd = { size: 40, flags: 0, type, dev_id: v.idev.id, hwpt_id: parent, out_viommu_id: 0 }
      expect(errno(() => v.fd.ioctl(IOMMU_VIOMMU_ALLOC, cmd))).toBe('EOPNOTSUPP')
    }
  })
})

describe('VT-d nested invalidation granularities', () => {
  it('sends one PASID-based IOTLB descriptor per cache tag, sized as calculate_psi_aligned_address()', () => {
    const v = vm()
    const parent = hwptAlloc(v, v.ioas, IOMMU_HWPT_ALLOC_NEST_PARENT)
    const nested = hwptAlloc(v, parent, IOMMU_HWPT_ALLOC_PASID, s1Data())
    v.idev.attach(nested)
    v.idev.attach(nested, 5)
    const did = nestedDomain(v, nested).didOn(v.unit)
    // A PASID's nested attach may not take a HWPT allocated without IOMMU_HWPT_ALLOC_PASID.
    const ridOnly = hwptAlloc(v, parent, 0, s1Data())
    expect(errno(() => v.idev.attach(ridOnly, 6))).toBe('EINVAL')
    const tags = (addr: bigint | null, am = 0, ih = false) => [
      piotlb(did, 0, addr, am, ih),
      piotlb(did, 5, addr, am, ih),
    ]
    const cases: [{ addr: bigint; npages: bigint; flags?: number }, ReturnType<typeof tags>][] = [
      // One page, leaf only: IH = 1, AM = 0.
      [{ addr: GIOVA, npages: 1n, flags: IOMMU_VTD_INV_FLAGS_LEAF }, tags(GIOVA, 0, true)],
      // Four aligned pages: AM = 2.
      [{ addr: GIOVA, npages: 4n }, tags(GIOVA, 2)],
      // Pages 1..2 straddle a 4-page boundary: the aligned range that holds them is AM = 2.
      [{ addr: GIOVA + BigInt(PAGE), npages: 2n }, tags(GIOVA, 2)],
      // Pages 3..4: the smallest aligned range holding both is 8 pages from GIOVA.
      [{ addr: GIOVA + BigInt(3 * PAGE), npages: 2n }, tags(GIOVA, 3)],
      // Everything: all within PASID.
      [{ addr: 0n, npages: 0xffff_ffff_ffff_ffffn }, tags(null)],
    ]
    for (const [entry, want] of cases) {
      expect(
        descriptors(v, () => expect(invalidate(v, nested, [entry])).toEqual([null, 1])),
      ).toEqual(want)
    }
    // entry_num back on a partial failure; the entries before it were flushed.
    const got = descriptors(v, () =>
      expect(
        invalidate(v, nested, [
          { addr: GIOVA, npages: 1n },
          { addr: GIOVA, npages: 1n },
          { addr: GIOVA + 8n, npages: 1n },
          { addr: GIOVA, npages: 1n },
        ]),
      ).toEqual(['EINVAL', 2]),
    )
    expect(got).toEqual([...tags(GIOVA), ...tags(GIOVA)])
  })
})

describe('IOPF of a nested HWPT through the fault queue', () => {
  /** A PRS device with a fault-capable nested HWPT on its RID and on PASID 5. */
  function iopfVm() {
    const v = vm(true, { ats: true, pri: true })
    const parent = hwptAlloc(v, v.ioas, IOMMU_HWPT_ALLOC_NEST_PARENT)
    const fault = { size: 16, flags: 0, out_fault_id: 0, out_fault_fd: 0 }
    v.fd.ioctl(IOMMU_FAULT_QUEUE_ALLOC, fault)
    const nested = hwptAlloc(
      v,
      parent,
      IOMMU_HWPT_FAULT_ID_VALID | IOMMU_HWPT_ALLOC_PASID,
      s1Data(),
      1,
      fault.out_fault_id,
    )
    v.idev.attach(nested)
    v.idev.attach(nested, 5)
    return { ...v, nested, faultFd: fault.out_fault_fd }
  }

  /** read(2) of the fault fd: `struct iommu_hwpt_pgfault` records. */
  function readFaults(v: Vm, fd: number, max = 4) {
    const buf = v.vmm.mmap(PAGE)
    const n = fdRead(v.vmm, fd, buf, max * 40)
    const dv = new DataView(v.vmm.read(buf, n).buffer)
    const out = []
    for (let o = 0; o < n; o += 40) {
      out.push({
        flags: dv.getUint32(o, true),
        dev_id: dv.getUint32(o + 4, true),
        pasid: dv.getUint32(o + 8, true),
        grpid: dv.getUint32(o + 12, true),
        perm: dv.getUint32(o + 16, true),
        addr: dv.getBigUint64(o + 24, true),
        length: dv.getUint32(o + 32, true),
        cookie: dv.getUint32(o + 36, true),
      })
    }
    return out
  }

  /** write(2) of `struct iommu_hwpt_page_response { cookie, code }`. */
  function respond(v: Vm, fd: number, cookie: number, code: number): number {
    const buf = v.vmm.mmap(PAGE)
    const b = new Uint8Array(8)
    new DataView(b.buffer).setUint32(0, cookie, true)
    new DataView(b.buffer).setUint32(4, code, true)
    v.vmm.write(buf, b)
    return fdWrite(v.vmm, fd, buf, 8)
  }

  it('a page request goes PRQ → core → fault fd; the response goes out as a page group response descriptor', () => {
    const v = iopfVm()
    const missing = GIOVA + BigInt(8 * PAGE)
    // The guest has not mapped the page: the DMA faults in the first stage.
    expect(() => v.dev.dma.read(missing, 4, { pasid: 5 })).toThrow(DmaFault)
    expect(intelFaultLog(v.dev).at(-1)).toMatchObject({ reason: Fr.FS_NOT_PRESENT, pasid: 5 })
    // The device asks for two pages in one group (PRG index 9), the last one with LPIG.
    const rid = v.dev.rid
    const req = { rid, pasid: 5, read: true, write: true, prgIndex: 9 }
    expect(v.unit.pageRequest({ ...req, addr: missing, lpig: false })).toBe(true)
    expect(fdPoll(v.vmm, v.faultFd) & POLLIN).toBe(0)
    expect(v.unit.pageRequest({ ...req, addr: missing + BigInt(PAGE), lpig: true })).toBe(true)
    expect(fdPoll(v.vmm, v.faultFd) & POLLIN).toBe(POLLIN)
    const faults = readFaults(v, v.faultFd)
    // iommufd_compose_fault_message() copies the core's flags as they are (so VT-d's
    // RESPONSE_NEEDS_PASID, bit 2, reaches user space) and reports length 0.
    const common = {
      dev_id: v.idev.id,
      pasid: 5,
      grpid: 9,
      perm: IOMMU_PGFAULT_PERM_READ | IOMMU_PGFAULT_PERM_WRITE,
      length: 0,
    }
    const flags = IOMMU_PGFAULT_FLAGS_PASID_VALID | IOMMU_FAULT_PAGE_RESPONSE_NEEDS_PASID
    expect(faults).toEqual([
      { ...common, flags, addr: missing, cookie: faults[0]?.cookie },
      {
        ...common,
        flags: flags | IOMMU_PGFAULT_FLAGS_LAST_PAGE,
        addr: missing + BigInt(PAGE),
        cookie: faults[0]?.cookie,
      },
    ])
    expect(v.unit.groupPending(rid, 5, 9)).toBe(true)
    // The guest maps both pages and invalidates, then answers the group.
    guestTables(v, missing, GPA_DATA + 8 * PAGE, 2)
    v.vmm.write(v.guest + GPA_DATA + 8 * PAGE, new Uint8Array([0x5e, 0x11]))
    expect(invalidate(v, v.nested, [{ addr: missing, npages: 2n }])).toEqual([null, 1])
    const sent = descriptors(v, () =>
      expect(respond(v, v.faultFd, faults[0]?.cookie ?? -1, IOMMUFD_PAGE_RESP_SUCCESS)).toBe(8),
    )
    // QI_PGRP: PASID present, response code, the requester ID, the PASID; the PRG index.
    expect(sent).toEqual([
      {
        q0:
          0x9n |
          (1n << 4n) |
          (BigInt(RespCode.SUCCESS) << 12n) |
          (BigInt(rid) << 16n) |
          (5n << 32n),
        q1: 9n << 3n,
      },
    ])
    expect(v.unit.pageResponses.at(-1)).toEqual({
      rid,
      pasid: 5,
      prgIndex: 9,
      code: RespCode.SUCCESS,
      auto: false,
    })
    expect(v.unit.groupPending(rid, 5, 9)).toBe(false)
    // The device retries: through the guest's new first-stage entry and the second stage.
    expect([...v.dev.dma.read(missing, 2, { pasid: 5 })]).toEqual([0x5e, 0x11])
    expect(v.unit.staleUses).toEqual([])
  })

  it('requests without a PASID go to the RID attachment; INVALID answers and detach auto-answers reach the device', () => {
    const v = iopfVm()
    const rid = v.dev.rid
    const r = { rid, addr: GIOVA + BigInt(16 * PAGE), read: true, write: false, lpig: true }
    expect(v.unit.pageRequest({ ...r, prgIndex: 3 })).toBe(true)
    const [f] = readFaults(v, v.faultFd)
    expect(f).toMatchObject({
      flags: IOMMU_PGFAULT_FLAGS_LAST_PAGE,
      pasid: 0,
      grpid: 3,
      perm: IOMMU_PGFAULT_PERM_READ,
    })
    respond(v, v.faultFd, f?.cookie ?? -1, IOMMUFD_PAGE_RESP_INVALID)
    expect(v.unit.pageResponses.at(-1)).toEqual({
      rid,
      pasid: null,
      prgIndex: 3,
      code: RespCode.INVALID,
      auto: false,
    })
    // A PASID-5 group nobody answers: detaching PASID 5 answers it INVALID.
    expect(v.unit.pageRequest({ ...r, pasid: 5, prgIndex: 4 })).toBe(true)
    expect(readFaults(v, v.faultFd)).toHaveLength(1)
    v.idev.detach(5)
    expect(v.unit.pageResponses.at(-1)).toMatchObject({
      pasid: 5,
      prgIndex: 4,
      code: RespCode.INVALID,
    })
    expect(v.unit.groupPending(rid, 5, 4)).toBe(false)
    // The RID attachment still takes requests; detaching the last fault-capable domain
    // takes the device off the IOPF queue.
    expect(v.dev.iommu?.faultParam).toBeTruthy()
    v.idev.detach()
    expect(v.dev.iommu?.faultParam ?? null).toBeNull()
  })
})

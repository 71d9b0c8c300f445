/**
 * SMMUv3 end to end through iommufd: dirty tracking on the hardware model (4 KiB and 2 MiB
 * IOPTEs, NO_CLEAR, and the write 7.2 loses after a clearing read), dropped invalidations
 * caught by the missing-invalidation detector, hardware information, ATS, and the event
 * records of faulting DMA.
 */
import { createMachine, DmaFault, type Machine, type PciDevice, type Process } from '@iommu/core'
import {
  IOMMU_GET_HW_INFO,
  IOMMU_HW_CAP_DIRTY_TRACKING,
  IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_DIRTY_TRACKING_ENABLE,
  IOMMU_HWPT_GET_DIRTY_BITMAP,
  IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR,
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
  type Iommufd,
  openIommufd,
} from '@iommu/iommufd'
import { runUapiFuzz } from '@iommu/iommufd/testing'
import { IOMMU_HW_INFO_TYPE_ARM_SMMUV3 } from '@iommu/iommufd/uapi'
import { describe, expect, it } from 'vitest'
import {
  DEFAULT_IDR0,
  DomainStage,
  EvtClass,
  EvtId,
  Idr0,
  Mmio,
  Op,
  type SmmuDomain,
  type SmmuV3Hw,
  type SmmuV3Options,
  smmuv3,
  smmuv3EventLog,
  smmuv3TestHooks,
} from '../src/index.ts'
import { traceCommands } from './helpers.ts'

const PAGE = 4096
const IOVA = 0x1_0000_0000n

interface Vm {
  m: Machine
  driver: ReturnType<typeof smmuv3>
  unit: SmmuV3Hw
  vmm: Process
  fd: Iommufd
  dev: PciDevice
  ioas: number
  guest: number
}

function vm(opts: {
  hugePages: boolean
  pages: number
  prot?: number
  prefault?: number[]
  driver?: SmmuV3Options
  ats?: boolean
}): Vm {
  const driver = smmuv3(opts.driver ?? {})
  const m = createMachine({ iommus: [driver] })
  const unit = m.units[0] as SmmuV3Hw
  const vmm = m.createProcess()
  const fd = openIommufd(m, vmm)
  const alloc = { size: 12, flags: 0, out_ioas_id: 0 }
  fd.ioctl(IOMMU_IOAS_ALLOC, alloc)
  const ioas = alloc.out_ioas_id
  if (!opts.hugePages) {
    fd.ioctl(IOMMU_OPTION, {
      size: 24,
      option_id: IOMMU_OPTION_HUGE_PAGES,
      op: IOMMU_OPTION_OP_SET,
      __reserved: 0,
      object_id: ioas,
      val64: 0n,
    })
  }
  const guest = vmm.mmap(opts.pages * PAGE)
  for (const p of opts.prefault ?? []) vmm.write(guest + p * PAGE, new Uint8Array([0xee]))
  fd.ioctl(IOMMU_IOAS_MAP, {
    size: 40,
    flags:
      IOMMU_IOAS_MAP_FIXED_IOVA | (opts.prot ?? IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE),
    ioas_id: ioas,
    __reserved: 0,
    user_va: BigInt(guest),
    length: BigInt(opts.pages * PAGE),
    iova: IOVA,
  })
  const dev = m.addPciDevice({ ats: opts.ats ?? false })
  return { m, driver, unit, vmm, fd, dev, ioas, guest }
}

function domainOf(v: Vm): SmmuDomain {
  const d = v.dev.group?.domain
  if (d === null || d === undefined) throw new Error('no domain attached')
  return d as SmmuDomain
}

function hwptAlloc(v: Vm, devId: number, flags: number): number {
  const hwpt = {
    size: 48,
    flags,
    dev_id: devId,
    pt_id: v.ioas,
    __reserved: 0,
    data_type: 0,
    data_len: 0,
    data_uptr: 0n,
    out_hwpt_id: 0,
  }
  v.fd.ioctl(IOMMU_HWPT_ALLOC, hwpt)
  return hwpt.out_hwpt_id
}

function dirtyHwpt(v: Vm): number {
  const idev = v.fd.bindDevice(v.dev)
  const hwpt = hwptAlloc(v, idev.id, IOMMU_HWPT_ALLOC_DIRTY_TRACKING)
  idev.attach(hwpt)
  v.fd.ioctl(IOMMU_HWPT_SET_DIRTY_TRACKING, {
    size: 16,
    flags: IOMMU_HWPT_DIRTY_TRACKING_ENABLE,
    hwpt_id: hwpt,
    __reserved: 0,
  })
  return hwpt
}

/** GET_DIRTY_BITMAP into a fresh zeroed buffer; returns the set bit numbers. */
function dirtyBits(v: Vm, hwpt: number, pages: number, flags = 0): number[] {
  const bytes = Math.ceil(pages / 64) * 8
  const buf = v.vmm.mmap(Math.max(bytes, PAGE))
  v.fd.ioctl(IOMMU_HWPT_GET_DIRTY_BITMAP, {
    size: 48,
    hwpt_id: hwpt,
    flags,
    __reserved: 0,
    iova: IOVA,
    length: BigInt(pages * PAGE),
    page_size: BigInt(PAGE),
    data: BigInt(buf),
  })
  const b = v.vmm.read(buf, bytes)
  const out: number[] = []
  for (let i = 0; i < pages; i++) if ((b[i >> 3] as number) & (1 << (i & 7))) out.push(i)
  v.vmm.munmap(buf, Math.max(bytes, PAGE))
  return out
}

function range(first: number, count: number): number[] {
  return Array.from({ length: count }, (_, i) => first + i)
}

function unmapAll(v: Vm, pages: number): void {
  v.fd.ioctl(IOMMU_IOAS_UNMAP, {
    size: 24,
    ioas_id: v.ioas,
    iova: IOVA,
    length: BigInt(pages * PAGE),
  })
}

describe('SMMUv3 dirty tracking through iommufd', () => {
  it('reports exactly the pages the device wrote with 4 KiB IOPTEs, then none', () => {
    const v = vm({ hugePages: false, pages: 1024 })
    const hwpt = dirtyHwpt(v)
    const written = [0, 5, 511, 512, 1023]
    for (const p of written)
      v.dev.dma.write(IOVA + BigInt(p * PAGE + 8), new Uint8Array([p & 0xff]))
    v.dev.dma.read(IOVA + BigInt(700 * PAGE), 64)
    expect(dirtyBits(v, hwpt, 1024)).toEqual(written)
    expect(dirtyBits(v, hwpt, 1024)).toEqual([])
    expect(v.unit.staleUses).toEqual([])
  })

  it('programs HA and HD in the CD and DBM in the leaves, and clears DBM leaves at enable', () => {
    const v = vm({ hugePages: false, pages: 4 })
    dirtyHwpt(v)
    const d = domainOf(v)
    const cd = v.m.memory.read64(cdOf(v))
    // CD.HA (bit 43) and CD.HD (bit 42).
    expect((cd >> 42n) & 3n).toBe(3n)
    const leaf = d.pt?.pgtableWalk(IOVA).at(-1)?.pte ?? 0n
    // DBM set and AP[2] set: writable-clean after iommufd's clearing pass.
    expect([(leaf >> 51n) & 1n, (leaf >> 7n) & 1n]).toEqual([1n, 1n])
    v.dev.dma.write(IOVA, new Uint8Array([1]))
    const after = d.pt?.pgtableWalk(IOVA).at(-1)?.pte ?? 0n
    expect((after >> 7n) & 1n).toBe(0n)
  })

  it('reports the whole 2 MiB when the written page sits in a 2 MiB IOPTE', () => {
    const v = vm({ hugePages: true, pages: 1024, prefault: [512, 0] })
    const hwpt = dirtyHwpt(v)
    const leaf = domainOf(v)
      .pt?.pgtableWalk(IOVA + BigInt(600 * PAGE))
      .at(-1)
    expect(leaf?.level).toBe(1)
    v.dev.dma.write(IOVA + BigInt(600 * PAGE), new Uint8Array([1]))
    expect(dirtyBits(v, hwpt, 1024)).toEqual(range(512, 512))
    expect(dirtyBits(v, hwpt, 1024)).toEqual([])
    expect(v.unit.staleUses).toEqual([])
  })

  it('NO_CLEAR reports without clearing; the next clearing read still sees it', () => {
    const v = vm({ hugePages: false, pages: 64 })
    const hwpt = dirtyHwpt(v)
    v.dev.dma.write(IOVA + BigInt(9 * PAGE), new Uint8Array([1]))
    expect(dirtyBits(v, hwpt, 64, IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR)).toEqual([9])
    expect(dirtyBits(v, hwpt, 64, IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR)).toEqual([9])
    expect(dirtyBits(v, hwpt, 64)).toEqual([9])
    expect(dirtyBits(v, hwpt, 64)).toEqual([])
  })

  it('7.2 loses a write after a clearing read: no TLB flush, the detector says so', () => {
    const v = vm({ hugePages: false, pages: 16 })
    const hwpt = dirtyHwpt(v)
    const tlbis = () => v.unit.commandCounts[Op.TLBI_NH_VA] as number
    v.dev.dma.write(IOVA + BigInt(3 * PAGE), new Uint8Array([1]))
    const before = tlbis()
    expect(dirtyBits(v, hwpt, 16)).toEqual([3])
    // arm_smmu_iotlb_sync() returns at once: the dirty bitmap's gather has no page size.
    expect(tlbis()).toBe(before)
    // The TLB still holds the leaf as writable-dirty: the write goes through unlogged. The
    // byte is in guest memory, but a VMM migrating by this bitmap never sends it again.
    v.dev.dma.write(IOVA + BigInt(3 * PAGE), new Uint8Array([2]))
    expect(v.vmm.read(v.guest + 3 * PAGE, 1)[0]).toBe(2)
    expect(dirtyBits(v, hwpt, 16)).toEqual([])
    expect(v.unit.staleUses).toHaveLength(1)
    expect(v.unit.staleUses[0]).toMatchObject({
      cache: 'tlb',
      missing: 'TLBI_NH_VA',
      sid: v.dev.streamId,
      iova: IOVA + BigInt(3 * PAGE),
      write: true,
    })
  })

  it('with flushAfterDirtyClear the second write is reported and nothing is stale', () => {
    const v = vm({ hugePages: false, pages: 16, driver: { flushAfterDirtyClear: true } })
    const hwpt = dirtyHwpt(v)
    v.dev.dma.write(IOVA + BigInt(3 * PAGE), new Uint8Array([1]))
    expect(dirtyBits(v, hwpt, 16)).toEqual([3])
    v.dev.dma.write(IOVA + BigInt(3 * PAGE), new Uint8Array([2]))
    expect(dirtyBits(v, hwpt, 16)).toEqual([3])
    expect(v.unit.staleUses).toEqual([])
  })

  it('with flushAfterDirtyClear, a clear gathering 2^32 + 1 pages invalidates two: SCALE 32 does not fit', () => {
    const v = vm({ hugePages: false, pages: 2, driver: { flushAfterDirtyClear: true } })
    // A second area 16 TiB up: enabling again clears both areas into one gather.
    const far = IOVA + (1n << 44n)
    v.fd.ioctl(IOMMU_IOAS_MAP, {
      size: 40,
      flags: IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
      ioas_id: v.ioas,
      user_va: BigInt(v.guest + PAGE),
      length: BigInt(PAGE),
      iova: far,
    })
    const hwpt = dirtyHwpt(v)
    // Both leaves dirty, so the gather runs from one to the other.
    v.dev.dma.write(IOVA, new Uint8Array([1]))
    v.dev.dma.write(far, new Uint8Array([1]))
    const enable = {
      size: 16,
      flags: IOMMU_HWPT_DIRTY_TRACKING_ENABLE,
      hwpt_id: hwpt,
      __reserved: 0,
    }
    const tlbis = traceCommands(v.unit, () => v.fd.ioctl(IOMMU_HWPT_SET_DIRTY_TRACKING, enable))
      .filter((c) => c.op === 'TLBI_NH_VA')
      .map((c) => [Number((c.dw0 >> 20n) & 31n), Number((c.dw0 >> 12n) & 31n), c.dw1 & ~0xfffn])
    // arm_smmu_cmdq_batch_add_range over [IOVA, far + 4 KiB): 2^32 + 1 pages, 5 bits a
    // command from the lowest set one: (NUM 1, SCALE 0), then (NUM 1, SCALE 32), whose
    // FIELD_PREP into the 5-bit SCALE leaves 0: one page at IOVA + 4 KiB, not 16 TiB.
    expect(tlbis).toEqual([
      [0, 0, IOVA],
      [0, 0, IOVA + BigInt(PAGE)],
    ])
    // The far leaf stays cached writable-dirty: the next write there is not logged.
    v.dev.dma.write(far, new Uint8Array([2]))
    expect(v.unit.staleUses).toMatchObject([{ cache: 'tlb', iova: far, write: true }])
  })
})

/** Physical address of the device's CD 0, through the STE's S1ContextPtr. */
function cdOf(v: Vm): number {
  const ste = stePa(v)
  const q0 = v.m.memory.read64(ste)
  return Number(q0 & 0x000f_ffff_ffff_ffc0n)
}

/** Physical address of the device's STE, through STRTAB_BASE and its level-1 descriptor. */
function stePa(v: Vm): number {
  const base = Number(v.unit.readReg64(Mmio.STRTAB_BASE) & 0x000f_ffff_ffff_ffc0n)
  const sid = v.dev.streamId
  const l1 = v.m.memory.read64(base + (sid >>> 8) * 8)
  return Number(l1 & 0x000f_ffff_ffff_ffc0n) + (sid & 0xff) * 64
}

describe('the uAPI fuzzer on SMMUv3 (7.2: no TLB flush after a clearing dirty read)', () => {
  const fuzz = (hook: boolean) =>
    runUapiFuzz(
      {
        name: 'smmuv3',
        machine: () => createMachine({ iommus: [smmuv3()] }),
        ...(hook ? { staleUses: (m: Machine) => (m.units[0] as SmmuV3Hw).staleUses } : {}),
      },
      { seed: 1, ops: 5000, opsPerWorld: 250 },
    )

  it('counts the writes the TLB absorbed unlogged, explained by the hardware detector', () => {
    const r = fuzz(true)
    expect(r.problems).toEqual([])
    expect([r.dirty.unlogged, r.dirty.staleUses, r.dirty.falseNegatives]).toEqual([7, 5, 0])
  })

  it('reports them as findings when no detector explains them', () => {
    const r = fuzz(false)
    expect(r.dirty.unlogged).toBe(0)
    expect(r.problems.map((p) => p.kind)).toEqual(Array(7).fill('dirty-false-negative'))
    expect(r.problems[0]?.detail).toMatch(/IOPTE is not dirty, and the hardware reported no stale/)
  })
})

describe('the missing-invalidation detector', () => {
  it('catches an unmap whose TLBI was dropped, and the device sees the stale page', () => {
    const v = vm({ hugePages: false, pages: 16 })
    v.fd.bindDevice(v.dev).attach(v.ioas)
    v.vmm.write(v.guest, new Uint8Array([0x5a]))
    expect(v.dev.dma.read(IOVA, 1)[0]).toBe(0x5a)
    smmuv3TestHooks(v.driver).skipIotlbSync = true
    unmapAll(v, 16)
    expect(domainOf(v).pt?.iovaToPhys(IOVA)).toBe(0n)
    expect(v.dev.dma.read(IOVA, 1)[0]).toBe(0x5a)
    expect(v.unit.staleUses).toHaveLength(1)
    expect(v.unit.staleUses[0]).toMatchObject({
      cache: 'tlb',
      missing: 'TLBI_NH_VA',
      sid: v.dev.streamId,
      asid: domainOf(v).asid,
      iova: IOVA,
      write: false,
    })
  })

  it('stays silent when the driver flushes, and the device faults', () => {
    const v = vm({ hugePages: false, pages: 16 })
    v.fd.bindDevice(v.dev).attach(v.ioas)
    v.dev.dma.read(IOVA, 1)
    const before = v.unit.commandCounts[Op.TLBI_NH_VA] as number
    unmapAll(v, 16)
    // Sixteen 4 KiB leaves: one range TLBI (RIL) for the gathered 64 KiB.
    expect((v.unit.commandCounts[Op.TLBI_NH_VA] as number) - before).toBe(1)
    expect(() => v.dev.dma.read(IOVA, 1)).toThrow(DmaFault)
    expect(v.unit.staleUses).toEqual([])
  })

  it('catches an STE change whose CFGI_STE was dropped', () => {
    const v = vm({ hugePages: false, pages: 16 })
    const idev = v.fd.bindDevice(v.dev)
    // A stage-2 (nest parent) domain: the STE alone holds the translation.
    const hwpt = hwptAlloc(v, idev.id, IOMMU_HWPT_ALLOC_NEST_PARENT)
    idev.attach(hwpt)
    expect(domainOf(v).stage).toBe(DomainStage.S2)
    v.dev.dma.read(IOVA, 1)
    smmuv3TestHooks(v.driver).skipCfgiSte = true
    idev.detach()
    // The STE in memory aborts; the cached copy still translates.
    expect(v.dev.dma.read(IOVA, 1)).toHaveLength(1)
    expect(v.unit.staleUses[0]).toMatchObject({
      cache: 'ste',
      missing: 'CFGI_STE',
      sid: v.dev.streamId,
    })
  })

  it('catches a CD change whose CFGI_CD was dropped', () => {
    const v = vm({ hugePages: false, pages: 16 })
    const idev = v.fd.bindDevice(v.dev)
    const h1 = hwptAlloc(v, idev.id, 0)
    const h2 = hwptAlloc(v, idev.id, 0)
    idev.attach(h1)
    v.dev.dma.read(IOVA, 1)
    smmuv3TestHooks(v.driver).skipCfgiCd = true
    // Replace S1 with S1: only CD 0 changes (new ASID and TTB0), the STE stays.
    idev.replace(h2)
    v.dev.dma.read(IOVA, 1)
    expect(v.unit.staleUses[0]).toMatchObject({ cache: 'cd', missing: 'CFGI_CD', ssid: -1 })
  })
})

describe('hardware information and ATS through iommufd', () => {
  it('GET_HW_INFO returns the raw IDR0..5, IIDR and AIDR with the dirty capability', () => {
    const v = vm({ hugePages: false, pages: 4 })
    const idev = v.fd.bindDevice(v.dev)
    const buf = v.vmm.mmap(PAGE)
    const cmd = {
      size: 40,
      flags: 0,
      dev_id: idev.id,
      data_len: 64,
      data_uptr: BigInt(buf),
      in_data_type: 0,
      out_data_type: 0,
      out_max_pasid_log2: 0,
      __reserved: [0, 0, 0],
      out_capabilities: 0n,
    }
    v.fd.ioctl(IOMMU_GET_HW_INFO, cmd)
    expect(cmd.out_data_type).toBe(IOMMU_HW_INFO_TYPE_ARM_SMMUV3)
    expect(cmd.data_len).toBe(40)
    const data = new DataView(v.vmm.read(buf, 40).buffer)
    expect(data.getUint32(8, true)).toBe(DEFAULT_IDR0 >>> 0)
    for (let i = 0; i <= 5; i++) expect(data.getUint32(8 + 4 * i, true)).toBe(v.unit.readReg(4 * i))
    expect(data.getUint32(36, true)).toBe(v.unit.readReg(Mmio.AIDR))
    expect(cmd.out_capabilities & BigInt(IOMMU_HW_CAP_DIRTY_TRACKING)).not.toBe(0n)
    expect(cmd.out_capabilities & BigInt(IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED)).not.toBe(0n)
  })

  it('enables ATS on attach after flushing the ATC, and invalidates the ATC after the TLB on unmap', () => {
    const v = vm({ hugePages: false, pages: 16, ats: true })
    v.fd.bindDevice(v.dev).attach(v.ioas)
    const sid = v.dev.streamId
    expect(v.unit.atsEnabled(sid)).toBe(true)
    expect((v.m.memory.read64(stePa(v) + 8) >> 28n) & 3n).toBe(1n)
    v.vmm.write(v.guest, new Uint8Array([0x77]))
    expect(v.dev.dma.read(IOVA, 1)[0]).toBe(0x77)
    // The second read is served by the endpoint's ATC.
    const hits = v.unit.stats.atcHits
    expect(v.dev.dma.read(IOVA, 1)[0]).toBe(0x77)
    expect(v.unit.stats.atcHits).toBe(hits + 1)
    const atcInv = v.unit.commandCounts[Op.ATC_INV] as number
    unmapAll(v, 16)
    expect((v.unit.commandCounts[Op.ATC_INV] as number) - atcInv).toBe(1)
    expect(() => v.dev.dma.read(IOVA, 1)).toThrow(DmaFault)
    expect(v.unit.staleUses).toEqual([])
  })
})

describe('faulting DMA on SMMUv3', () => {
  it('records F_TRANSLATION for an unmapped IOVA, aborts the DMA and leaves memory unchanged', () => {
    const v = vm({ hugePages: false, pages: 4 })
    v.fd.bindDevice(v.dev).attach(v.ioas)
    const before = v.vmm.read(v.guest, 4 * PAGE)
    const start = IOVA + BigInt(3 * PAGE + 0x800)
    expect(() => v.dev.dma.write(start, new Uint8Array(PAGE).fill(7))).toThrow(
      expect.objectContaining({
        reason: 'translation',
        write: true,
        iova: IOVA + BigInt(4 * PAGE),
      }),
    )
    expect(v.vmm.read(v.guest, 4 * PAGE)).toEqual(before)
    // The event thread consumed the record at once (an interrupt).
    expect(v.unit.pendingEvents()).toEqual([])
    const rec = smmuv3EventLog(v.dev).at(-1)
    expect(rec?.handled).toBe(false)
    expect(rec?.event).toMatchObject({
      id: EvtId.F_TRANSLATION,
      sid: v.dev.streamId,
      ssv: false,
      read: false,
      s2: false,
      class: EvtClass.IN,
      addr: IOVA + BigInt(4 * PAGE),
    })
    // Raw layout: dw0 = ID | SID << 32; dw1 RnW (bit 35) clear for a write.
    const raw = rec?.event.raw ?? [0n, 0n, 0n, 0n]
    expect(raw[0]).toBe(BigInt(EvtId.F_TRANSLATION) | (BigInt(v.dev.streamId) << 32n))
    expect(raw[2]).toBe(IOVA + BigInt(4 * PAGE))
  })

  it('records F_PERMISSION with RnW clear for a write to a read-only IOVA', () => {
    const v = vm({ hugePages: false, pages: 4, prot: IOMMU_IOAS_MAP_READABLE })
    v.fd.bindDevice(v.dev).attach(v.ioas)
    v.vmm.write(v.guest, new Uint8Array([1, 2, 3, 4]))
    expect(() => v.dev.dma.write(IOVA, new Uint8Array([9, 9]))).toThrow(
      expect.objectContaining({ reason: 'permission' }),
    )
    expect(v.vmm.read(v.guest, 4)).toEqual(new Uint8Array([1, 2, 3, 4]))
    expect(smmuv3EventLog(v.dev).at(-1)?.event).toMatchObject({
      id: EvtId.F_PERMISSION,
      read: false,
    })
    expect(v.dev.dma.read(IOVA, 4)).toEqual(new Uint8Array([1, 2, 3, 4]))
  })

  it('aborts a bound device (abort STE) without an event', () => {
    const v = vm({ hugePages: false, pages: 4 })
    v.fd.bindDevice(v.dev)
    const n = smmuv3EventLog(v.dev).length
    expect(() => v.dev.dma.read(IOVA, 4)).toThrow(expect.objectContaining({ reason: 'blocked' }))
    expect(smmuv3EventLog(v.dev)).toHaveLength(n)
  })

  it('refuses dirty tracking without HTTU dirty (IDR0.HTTU = access only)', () => {
    const idr0 = (DEFAULT_IDR0 & ~(3 << Idr0.HTTU_SHIFT)) | (Idr0.HTTU_ACCESS << Idr0.HTTU_SHIFT)
    const m = createMachine({ iommus: [{ driver: smmuv3(), config: { idr0 } }] })
    const fd = openIommufd(m, m.createProcess())
    const alloc = { size: 12, flags: 0, out_ioas_id: 0 }
    fd.ioctl(IOMMU_IOAS_ALLOC, alloc)
    const idev = fd.bindDevice(m.addPciDevice())
    expect(() =>
      fd.ioctl(IOMMU_HWPT_ALLOC, {
        size: 48,
        flags: IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
        dev_id: idev.id,
        pt_id: alloc.out_ioas_id,
        out_hwpt_id: 0,
      }),
    ).toThrow(expect.objectContaining({ code: 'EOPNOTSUPP' }))
  })
})

/**
 * AMD-Vi end to end through iommufd: dirty tracking on the hardware model (4 KiB and
 * 2 MiB IOPTEs), a dropped invalidation caught by the missing-invalidation detector, and
 * the event-log records of faulting DMA.
 */
import { createMachine, DmaFault, type Machine, type PciDevice, type Process } from '@iommu/core'
import {
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
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
import { describe, expect, it } from 'vitest'
import {
  type AmdDomain,
  type AmdIommuHw,
  amd,
  amdEventLog,
  amdTestHooks,
  decodeEvent,
  Event,
  EventFlag,
  NO_PASID,
} from '../src/index.ts'

const PAGE = 4096
const IOVA = 0x1_0000_0000n

interface Vm {
  m: Machine
  driver: ReturnType<typeof amd>
  unit: AmdIommuHw
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
  pgsizeBitmap?: bigint
}): Vm {
  const driver = amd(opts.pgsizeBitmap === undefined ? {} : { pgsizeBitmap: opts.pgsizeBitmap })
  const m = createMachine({ iommus: [driver] })
  const unit = m.units[0] as AmdIommuHw
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
  const dev = m.addPciDevice()
  return { m, driver, unit, vmm, fd, dev, ioas, guest }
}

function domainOf(v: Vm): AmdDomain {
  const d = v.dev.group?.domain
  if (d === null || d === undefined) throw new Error('no domain attached')
  return d as AmdDomain
}

function dirtyHwpt(v: Vm): number {
  const idev = v.fd.bindDevice(v.dev)
  const hwpt = {
    size: 48,
    flags: IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
    dev_id: idev.id,
    pt_id: v.ioas,
    __reserved: 0,
    data_type: 0,
    data_len: 0,
    data_uptr: 0n,
    out_hwpt_id: 0,
  }
  v.fd.ioctl(IOMMU_HWPT_ALLOC, hwpt)
  idev.attach(hwpt.out_hwpt_id)
  v.fd.ioctl(IOMMU_HWPT_SET_DIRTY_TRACKING, {
    size: 16,
    flags: IOMMU_HWPT_DIRTY_TRACKING_ENABLE,
    hwpt_id: hwpt.out_hwpt_id,
    __reserved: 0,
  })
  return hwpt.out_hwpt_id
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

describe('AMD-Vi dirty tracking through iommufd', () => {
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

  it('reports the whole 2 MiB when the written page sits in a 2 MiB IOPTE', () => {
    // Touch the second 2 MiB first so the two THP blocks are not physically contiguous:
    // each becomes its own 2 MiB IOPTE (NextLevel 0 at level 1).
    const v = vm({ hugePages: true, pages: 1024, prefault: [512, 0] })
    const hwpt = dirtyHwpt(v)
    const d = domainOf(v)
    const leaf = d.pt?.pgtableWalk(IOVA + BigInt(600 * PAGE)).at(-1)
    expect(leaf?.level).toBe(1)
    expect(((leaf?.pte ?? 0n) >> 9n) & 7n).toBe(0n)
    v.dev.dma.write(IOVA + BigInt(600 * PAGE), new Uint8Array([1]))
    expect(dirtyBits(v, hwpt, 1024)).toEqual(range(512, 512))
    expect(dirtyBits(v, hwpt, 1024)).toEqual([])
    expect(v.unit.staleUses).toEqual([])
  })

  it('a NextLevel=7 IOPTE (4 MiB = 2 x 2 MiB items) is recorded one item short, as 7.2 does', () => {
    const v = vm({ hugePages: true, pages: 1024 })
    const hwpt = dirtyHwpt(v)
    const d = domainOf(v)
    const leaf = d.pt?.pgtableWalk(IOVA).at(-1)
    expect(((leaf?.pte ?? 0n) >> 9n) & 7n).toBe(7n)
    v.dev.dma.write(IOVA + BigInt(3 * PAGE), new Uint8Array([1]))
    // record_dirty: (min(index | 1, end_index) - index) items = the first 2 MiB only; both
    // replicas are cleaned, so the second 2 MiB's dirt is lost (and named by the detector).
    expect(dirtyBits(v, hwpt, 1024)).toEqual(range(0, 512))
    const [h] = v.m.dirtyHazards.entries
    expect(h?.kind).toBe('record-short')
    expect(h?.lost.toArray()).toEqual([{ iova: IOVA + 0x20_0000n, length: 0x20_0000n }])
    // Ideal records: the whole 4 MiB.
    v.m.dirtyRecords = 'ideal'
    v.dev.dma.write(IOVA + BigInt(3 * PAGE), new Uint8Array([1]))
    expect(dirtyBits(v, hwpt, 1024)).toEqual(range(0, 1024))
    expect(v.m.dirtyHazards.entries.length).toBe(1)
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

  it('programs DTE.HAD only while tracking is on', () => {
    const v = vm({ hugePages: false, pages: 16 })
    const hwpt = dirtyHwpt(v)
    const dte0 = () => v.m.memory.read64(devTableEntry(v))
    expect(dte0() & (3n << 7n)).toBe(3n << 7n)
    v.fd.ioctl(IOMMU_HWPT_SET_DIRTY_TRACKING, { size: 16, flags: 0, hwpt_id: hwpt, __reserved: 0 })
    expect(dte0() & (3n << 7n)).toBe(0n)
    // Without HAD the hardware does not set D: nothing is reported.
    v.dev.dma.write(IOVA, new Uint8Array([1]))
    expect(dirtyBits(v, hwpt, 16)).toEqual([])
  })
})

describe('AMD v1 16 KiB contiguous IOPTEs through GET_DIRTY_BITMAP (7.2 record_dirty)', () => {
  const KIB16 = 0x1000n | 0x4000n

  it('a write to the last 4 KiB of a 16 KiB IOPTE is never reported; the detector names the page', () => {
    const v = vm({ hugePages: true, pages: 512, pgsizeBitmap: KIB16 })
    const hwpt = dirtyHwpt(v)
    const leaf = domainOf(v).pt?.pgtableWalk(IOVA).at(-1)
    expect(((leaf?.pte ?? 0n) >> 9n) & 7n).toBe(7n)
    for (const p of [3, 5, 42]) v.dev.dma.write(IOVA + BigInt(p * PAGE), new Uint8Array([1]))
    // Each dirty 16K leaf is recorded as its first 12K.
    expect(dirtyBits(v, hwpt, 512)).toEqual([0, 1, 2, 4, 5, 6, 40, 41, 42])
    expect(dirtyBits(v, hwpt, 512)).toEqual([])
    const [h] = v.m.dirtyHazards.entries
    expect([h?.kind, h?.count, h?.hwptId]).toEqual(['record-short', 3, hwpt])
    expect(h?.lost.toArray()).toEqual(
      [3, 7, 43].map((p) => ({ iova: IOVA + BigInt(p * PAGE), length: BigInt(PAGE) })),
    )
    expect(v.m.dirtyHazards.unreported(IOVA + BigInt(3 * PAGE))).toBe('lost')
    expect(v.unit.staleUses).toEqual([])
  })

  it('ideal records: whole 16 KiB leaves, nothing lost', () => {
    const v = vm({ hugePages: true, pages: 512, pgsizeBitmap: KIB16 })
    v.m.dirtyRecords = 'ideal'
    const hwpt = dirtyHwpt(v)
    for (const p of [3, 42]) v.dev.dma.write(IOVA + BigInt(p * PAGE), new Uint8Array([1]))
    expect(dirtyBits(v, hwpt, 512)).toEqual([0, 1, 2, 3, 40, 41, 42, 43])
    expect(v.m.dirtyHazards.entries).toEqual([])
  })

  it('a read starting at the last 4 KiB of a dirty 16 KiB leaf: the window filled, then EDEADLK', () => {
    const v = vm({ hugePages: true, pages: 512, pgsizeBitmap: KIB16 })
    const hwpt = dirtyHwpt(v)
    v.dev.dma.write(IOVA + BigInt(5 * PAGE), new Uint8Array([1]))
    const buf = v.vmm.mmap(PAGE)
    // record_dirty: index 7 | 3 = 7, a zero-length record at the bitmap's first IOVA.
    let err: unknown
    try {
      v.fd.ioctl(IOMMU_HWPT_GET_DIRTY_BITMAP, {
        size: 48,
        hwpt_id: hwpt,
        flags: 0,
        __reserved: 0,
        iova: IOVA + BigInt(7 * PAGE),
        length: BigInt(PAGE),
        page_size: BigInt(PAGE),
        data: BigInt(buf),
      })
    } catch (e) {
      err = e
    }
    expect((err as { code?: string }).code).toBe('EDEADLK')
    // iova_bitmap_set set every bit of the pinned page before it started looping.
    expect(v.vmm.read(buf, PAGE).every((b) => b === 0xff)).toBe(true)
    expect(v.m.dirtyHazards.entries.map((h) => h.kind)).toEqual([
      'record-short',
      'iopte-outside-query',
      'past-bitmap',
      'bitmap-fill',
      'bitmap-livelock',
    ])
    // The kernel never got to clean the leaf: it is still dirty.
    expect(dirtyBits(v, hwpt, 512, IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR)).toEqual([4, 5, 6])
    // Nothing stays pinned but the IOAS's own pages.
    expect(v.m.memory.frameStats().pins).toBe(512)
  })
})

/** Physical address of the device's DTE, read back from the DEV_TABLE register. */
function devTableEntry(v: Vm): number {
  const base = Number(v.unit.readMmio(0) & 0x000f_ffff_ffff_f000n)
  return base + v.dev.rid * 32
}

describe('the missing-invalidation detector', () => {
  it('catches an unmap whose IOTLB flush was dropped, and the device sees the stale page', () => {
    const v = vm({ hugePages: false, pages: 16 })
    const idev = v.fd.bindDevice(v.dev)
    idev.attach(v.ioas)
    v.vmm.write(v.guest, new Uint8Array([0x5a]))
    expect(v.dev.dma.read(IOVA, 1)[0]).toBe(0x5a)
    amdTestHooks(v.driver).skipIotlbSync = true
    v.fd.ioctl(IOMMU_IOAS_UNMAP, {
      size: 24,
      ioas_id: v.ioas,
      iova: IOVA,
      length: BigInt(16 * PAGE),
    })
    // The page table no longer maps the IOVA, but the IOTLB still does.
    expect(domainOf(v).pt?.iovaToPhys(IOVA)).toBe(0n)
    expect(v.dev.dma.read(IOVA, 1)[0]).toBe(0x5a)
    expect(v.unit.staleUses).toHaveLength(1)
    expect(v.unit.staleUses[0]).toMatchObject({
      cache: 'iotlb',
      missing: 'INVALIDATE_IOMMU_PAGES',
      devid: v.dev.rid,
      iova: IOVA,
      write: false,
    })
  })

  it('stays silent when the driver flushes, and the device faults', () => {
    const v = vm({ hugePages: false, pages: 16 })
    v.fd.bindDevice(v.dev).attach(v.ioas)
    v.dev.dma.read(IOVA, 1)
    v.fd.ioctl(IOMMU_IOAS_UNMAP, {
      size: 24,
      ioas_id: v.ioas,
      iova: IOVA,
      length: BigInt(16 * PAGE),
    })
    expect(() => v.dev.dma.read(IOVA, 1)).toThrow(DmaFault)
    expect(v.unit.staleUses).toEqual([])
  })

  it('stays silent on a write through a cached read-only leaf: a permission fault, not staleness', () => {
    // A read fills the IOTLB with the read-only leaf; the write hits that entry and faults.
    // The entry matches memory: the detector walks with no access to compare.
    const v = vm({ hugePages: false, pages: 4, prot: IOMMU_IOAS_MAP_READABLE })
    v.fd.bindDevice(v.dev).attach(v.ioas)
    v.dev.dma.read(IOVA + 0x2000n, 1)
    expect(() => v.dev.dma.write(IOVA + 0x2010n, new Uint8Array([1]))).toThrow(DmaFault)
    expect(v.unit.staleUses).toEqual([])
  })

  it('catches a DTE change whose INVALIDATE_DEVTAB_ENTRY was dropped', () => {
    const v = vm({ hugePages: false, pages: 16 })
    const idev = v.fd.bindDevice(v.dev)
    // A manual HWPT outlives the detach, so the stale DTE still points at a live table.
    const hwpt = { size: 48, flags: 0, dev_id: idev.id, pt_id: v.ioas, out_hwpt_id: 0 }
    v.fd.ioctl(IOMMU_HWPT_ALLOC, hwpt)
    idev.attach(hwpt.out_hwpt_id)
    v.dev.dma.read(IOVA, 1)
    amdTestHooks(v.driver).skipDteFlush = true
    idev.detach()
    // The DTE in memory now blocks DMA; the cached copy still translates.
    expect(v.dev.dma.read(IOVA, 1)).toHaveLength(1)
    expect(v.unit.staleUses[0]).toMatchObject({ cache: 'dte', missing: 'INVALIDATE_DEVTAB_ENTRY' })
  })
})

describe('cache views for tools', () => {
  it('list the cached DTE and IOTLB entries with their tags, and what an invalidation drops', () => {
    const v = vm({ hugePages: false, pages: 16 })
    const idev = v.fd.bindDevice(v.dev)
    const hwpt = { size: 48, flags: 0, dev_id: idev.id, pt_id: v.ioas, out_hwpt_id: 0 }
    v.fd.ioctl(IOMMU_HWPT_ALLOC, hwpt)
    idev.attach(hwpt.out_hwpt_id)
    v.dev.dma.read(IOVA + 3n * BigInt(PAGE), 1)
    const domain = domainOf(v)
    const [dte] = v.unit.cachedDtes().filter((c) => c.devid === v.dev.rid)
    expect(dte?.domid).toBe(domain.id)
    // The cached words are the DTE as it sits in the device table.
    const base = Number(v.unit.readMmio(0) & 0x000f_ffff_ffff_f000n) + v.dev.rid * 32
    expect(Array.from(dte?.raw ?? [])).toEqual(
      [0, 4, 8, 12, 16, 20, 24, 28].map((o) => v.unit.memory.read32(base + o)),
    )
    const tlb = v.unit.iotlb
    const entries = tlb.validEntries()
    expect(entries.map((i) => [tlb.domid(i), tlb.pasid(i), tlb.vpn(i), tlb.sizeLg2(i)])).toEqual([
      [domain.id, NO_PASID, Number(IOVA / BigInt(PAGE)) + 3, 12],
    ])
    // Detaching invalidates the DTE and flushes the domain: both views empty out.
    idev.detach()
    expect(v.unit.cachedDtes().filter((c) => c.devid === v.dev.rid)).toEqual([])
    expect(tlb.validEntries()).toEqual([])
  })
})

describe('faulting DMA on AMD-Vi', () => {
  it('logs IO_PAGE_FAULT for an unmapped IOVA, aborts the DMA and leaves memory unchanged', () => {
    const v = vm({ hugePages: false, pages: 4 })
    v.fd.bindDevice(v.dev).attach(v.ioas)
    const before = v.vmm.read(v.guest, 4 * PAGE)
    // From the last mapped page into the unmapped one: nothing may be written.
    const start = IOVA + BigInt(3 * PAGE + 0x800)
    expect(() => v.dev.dma.write(start, new Uint8Array(PAGE).fill(7))).toThrow(
      expect.objectContaining({
        reason: 'translation',
        write: true,
        iova: IOVA + BigInt(4 * PAGE),
      }),
    )
    expect(v.vmm.read(v.guest, 4 * PAGE)).toEqual(before)
    const ev = v.unit.pendingEvents()
    expect(ev).toHaveLength(1)
    const domid = domainOf(v).id
    expect(ev[0]).toEqual({
      code: Event.IO_PAGE_FAULT,
      devid: v.dev.rid,
      pasidOrDomid: domid,
      flags: EventFlag.RW,
      address: IOVA + BigInt(4 * PAGE),
    })
    // The driver's log reader consumes it on its next command completion.
    v.fd.ioctl(IOMMU_IOAS_UNMAP, {
      size: 24,
      ioas_id: v.ioas,
      iova: IOVA,
      length: BigInt(4 * PAGE),
    })
    expect(v.unit.pendingEvents()).toEqual([])
    const rec = amdEventLog(v.dev).at(-1)?.words as readonly [number, number, number, number]
    expect(decodeEvent(...rec)).toEqual(ev[0])
    // Raw record layout: word1 = DomainID | flags << 16 | code << 28.
    expect(rec[1] >>> 0).toBe((domid | (EventFlag.RW << 16) | (Event.IO_PAGE_FAULT << 28)) >>> 0)
  })

  it('logs a permission fault (PR, PE, RW) for a write to a read-only IOVA', () => {
    const v = vm({ hugePages: false, pages: 4, prot: IOMMU_IOAS_MAP_READABLE })
    v.fd.bindDevice(v.dev).attach(v.ioas)
    v.vmm.write(v.guest, new Uint8Array([1, 2, 3, 4]))
    expect(() => v.dev.dma.write(IOVA, new Uint8Array([9, 9]))).toThrow(
      expect.objectContaining({ reason: 'permission' }),
    )
    expect(v.vmm.read(v.guest, 4)).toEqual(new Uint8Array([1, 2, 3, 4]))
    expect(v.unit.pendingEvents()[0]?.flags).toBe(EventFlag.PR | EventFlag.RW | EventFlag.PE)
    expect(v.dev.dma.read(IOVA, 4)).toEqual(new Uint8Array([1, 2, 3, 4]))
  })

  it('blocks a device whose DTE has no translation (blocked domain) and logs it', () => {
    const v = vm({ hugePages: false, pages: 4 })
    v.fd.bindDevice(v.dev)
    expect(() => v.dev.dma.read(IOVA, 4)).toThrow(expect.objectContaining({ reason: 'blocked' }))
    expect(v.unit.pendingEvents()[0]?.code).toBe(Event.IO_PAGE_FAULT)
  })
})

/**
 * VT-d end to end through iommufd: second-stage dirty tracking on the hardware model
 * (4 KiB and 2 MiB IOPTEs, NO_CLEAR, SSADE programmed only while tracking), a dropped
 * invalidation caught by the missing-invalidation detector, and the fault records of
 * faulting DMA.
 */
import { createMachine, DmaFault, type Machine, type PciDevice, type Process } from '@iommu/core'
import {
  IOMMU_GET_HW_INFO,
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
import { runUapiFuzz } from '@iommu/iommufd/testing'
import { describe, expect, it } from 'vitest'
import {
  Cap,
  DEFAULT_CAP,
  Fr,
  intel,
  intelFaultLog,
  intelTestHooks,
  Pe,
  Pgtt,
  type VtdDomain,
  type VtdIommuHw,
} from '../src/index.ts'

const PAGE = 4096
const IOVA = 0x1_0000_0000n

interface Vm {
  m: Machine
  driver: ReturnType<typeof intel>
  unit: VtdIommuHw
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
  ats?: boolean
  /** CAP register of the unit (default: the model's). */
  cap?: bigint
}): Vm {
  const driver = intel()
  const m = createMachine({
    iommus: [opts.cap === undefined ? driver : { driver, config: { cap: opts.cap } }],
  })
  const unit = m.units[0] as VtdIommuHw
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
  ioasMap(fd, ioas, guest, opts.pages, IOVA, opts.prot)
  const dev = m.addPciDevice({ ats: opts.ats ?? false })
  return { m, driver, unit, vmm, fd, dev, ioas, guest }
}

/** IOMMU_IOAS_MAP of `pages` pages of the VMM's memory at `user` to a fixed IOVA. */
function ioasMap(
  fd: Iommufd,
  ioas: number,
  user: number,
  pages: number,
  iova: bigint,
  prot = IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
): void {
  fd.ioctl(IOMMU_IOAS_MAP, {
    size: 40,
    flags: IOMMU_IOAS_MAP_FIXED_IOVA | prot,
    ioas_id: ioas,
    __reserved: 0,
    user_va: BigInt(user),
    length: BigInt(pages * PAGE),
    iova,
  })
}

function domainOf(v: Vm): VtdDomain {
  const d = v.dev.group?.domain
  if (d === null || d === undefined) throw new Error('no domain attached')
  return d as VtdDomain
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

/** The device's PASID-0 entry, found the way the hardware finds it. */
function pasid0Entry(v: Vm): number {
  const mem = v.m.memory
  const { rootTable } = v.unit.translationMode
  const root = mem.read64(rootTable + v.dev.bus * 16 + (v.dev.devfn >= 0x80 ? 8 : 0))
  const ctx = Number(root & ~0xfffn) + (v.dev.devfn & 0x7f) * 32
  const dir = Number(mem.read64(ctx) & ~0xfffn)
  return Number(mem.read64(dir) & ~0xfffn)
}

describe('VT-d dirty tracking through iommufd', () => {
  it('allocates a second-stage domain for DIRTY_TRACKING and a first-stage one by default', () => {
    const v = vm({ hugePages: false, pages: 16 })
    dirtyHwpt(v)
    const d = domainOf(v)
    expect(d.stage).toBe('ss')
    const v0 = v.m.memory.read64(pasid0Entry(v))
    expect((v0 & Pe.PGTT_MASK) >> Pe.PGTT_SHIFT).toBe(BigInt(Pgtt.SS))
    // F8-style check: SSPTPTR | SSADE | PGTT 2 | AW 2 (4-level) | P.
    expect(v0).toBe((BigInt(d.sspt?.root.pfn ?? 0) << 12n) | 0x289n)
    // iommufd enforced cache coherency (ECAP.SC) before mapping: SNP in every leaf.
    expect((d.sspt?.pgtableWalk(IOVA).at(-1)?.pte ?? 0n) & 0xfffn).toBe(0x803n)
    const w = vm({ hugePages: false, pages: 16 })
    w.fd.bindDevice(w.dev).attach(w.ioas)
    expect(domainOf(w).stage).toBe('fs')
    // First stage: PGSNP in the PASID entry instead.
    expect(w.m.memory.read64(pasid0Entry(w) + 8) & Pe.PGSNP).toBe(Pe.PGSNP)
  })

  it('reports exactly the pages the device wrote with 4 KiB IOPTEs, then none', () => {
    const v = vm({ hugePages: false, pages: 1024 })
    const hwpt = dirtyHwpt(v)
    const written = [0, 5, 511, 512, 1023]
    for (const p of written)
      v.dev.dma.write(IOVA + BigInt(p * PAGE + 8), new Uint8Array([p & 0xff]))
    v.dev.dma.read(IOVA + BigInt(700 * PAGE), 64)
    expect(dirtyBits(v, hwpt, 1024)).toEqual(written)
    expect(dirtyBits(v, hwpt, 1024)).toEqual([])
    // A second round after the clear: the IOTLB was flushed, so D is set again.
    v.dev.dma.write(IOVA + BigInt(5 * PAGE), new Uint8Array([1]))
    expect(dirtyBits(v, hwpt, 1024)).toEqual([5])
    expect(v.unit.staleUses).toEqual([])
  })

  it('reports the whole 2 MiB when the written page sits in a 2 MiB IOPTE', () => {
    const v = vm({ hugePages: true, pages: 1024, prefault: [512, 0] })
    const hwpt = dirtyHwpt(v)
    const d = domainOf(v)
    const leaf = d.sspt?.pgtableWalk(IOVA + BigInt(600 * PAGE)).at(-1)
    expect(leaf?.level).toBe(1)
    expect((leaf?.pte ?? 0n) & 0x80n).toBe(0x80n)
    v.dev.dma.write(IOVA + BigInt(600 * PAGE), new Uint8Array([1]))
    // The hardware set A and D in the 2 MiB leaf.
    expect((d.sspt?.pgtableWalk(IOVA + BigInt(600 * PAGE)).at(-1)?.pte ?? 0n) & 0x300n).toBe(0x300n)
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

  it('programs SSADE only while tracking is on; without it the hardware sets no D', () => {
    const v = vm({ hugePages: false, pages: 16 })
    const hwpt = dirtyHwpt(v)
    const pe = pasid0Entry(v)
    expect(v.m.memory.read64(pe) & Pe.SSADE).toBe(Pe.SSADE)
    v.fd.ioctl(IOMMU_HWPT_SET_DIRTY_TRACKING, { size: 16, flags: 0, hwpt_id: hwpt, __reserved: 0 })
    expect(v.m.memory.read64(pe) & Pe.SSADE).toBe(0n)
    v.dev.dma.write(IOVA, new Uint8Array([1]))
    expect(dirtyBits(v, hwpt, 16)).toEqual([])
    expect(v.unit.staleUses).toEqual([])
  })

  it('tracks writes of an ATS device through its device TLB', () => {
    const v = vm({ hugePages: false, pages: 64, ats: true })
    const hwpt = dirtyHwpt(v)
    v.dev.dma.read(IOVA + BigInt(3 * PAGE), 8)
    expect(v.unit.devtlb.size).toBe(1)
    // A write through the read-filled (clean) device-TLB entry goes back to the IOMMU.
    v.dev.dma.write(IOVA + BigInt(3 * PAGE), new Uint8Array([1]))
    expect(dirtyBits(v, hwpt, 64)).toEqual([3])
    v.dev.dma.write(IOVA + BigInt(3 * PAGE), new Uint8Array([2]))
    expect(dirtyBits(v, hwpt, 64)).toEqual([3])
    expect(v.unit.staleUses).toEqual([])
  })

  it('reports the hardware information (cap, ecap, erratum flag)', () => {
    const v = vm({ hugePages: false, pages: 1 })
    const idev = v.fd.bindDevice(v.dev)
    const buf = v.vmm.mmap(PAGE)
    const arg = {
      size: 40,
      dev_id: idev.id,
      data_len: 64,
      data_uptr: BigInt(buf),
      out_data_type: 0,
    }
    v.fd.ioctl(IOMMU_GET_HW_INFO, arg)
    expect(arg.out_data_type).toBe(1)
    expect(arg.data_len).toBe(24)
    const data = new DataView(v.vmm.read(buf, 24).buffer)
    expect(data.getUint32(0, true)).toBe(1)
    expect(data.getBigUint64(8, true)).toBe(v.unit.cap)
    expect(data.getBigUint64(16, true)).toBe(v.unit.ecap)
  })
})

describe('the missing-invalidation detector on VT-d', () => {
  it('catches an unmap whose IOTLB flush was dropped, and the device sees the stale page', () => {
    const v = vm({ hugePages: false, pages: 16 })
    v.fd.bindDevice(v.dev).attach(v.ioas)
    v.vmm.write(v.guest, new Uint8Array([0x5a]))
    expect(v.dev.dma.read(IOVA, 1)[0]).toBe(0x5a)
    intelTestHooks(v.driver).skipIotlbFlush = true
    v.fd.ioctl(IOMMU_IOAS_UNMAP, {
      size: 24,
      ioas_id: v.ioas,
      iova: IOVA,
      length: BigInt(16 * PAGE),
    })
    expect(domainOf(v).fspt?.iovaToPhys(IOVA)).toBe(0n)
    expect(v.dev.dma.read(IOVA, 1)[0]).toBe(0x5a)
    expect(v.unit.staleUses).toHaveLength(1)
    expect(v.unit.staleUses[0]).toMatchObject({
      cache: 'iotlb',
      missing: 'PASID-based IOTLB invalidation',
      sid: v.dev.rid,
      pasid: -1,
      iova: IOVA,
      write: false,
    })
  })

  it('catches a dropped second-stage IOTLB flush as a missing IOTLB invalidation', () => {
    const v = vm({ hugePages: false, pages: 16 })
    dirtyHwpt(v)
    v.dev.dma.read(IOVA + BigInt(PAGE), 1)
    intelTestHooks(v.driver).skipIotlbFlush = true
    v.fd.ioctl(IOMMU_IOAS_UNMAP, {
      size: 24,
      ioas_id: v.ioas,
      iova: IOVA,
      length: BigInt(16 * PAGE),
    })
    v.dev.dma.read(IOVA + BigInt(PAGE), 1)
    expect(v.unit.staleUses[0]).toMatchObject({ cache: 'iotlb', missing: 'IOTLB invalidation' })
  })

  it('catches a dropped device-TLB flush: the IOTLB is clean, the ATS device is not', () => {
    const v = vm({ hugePages: false, pages: 16, ats: true })
    v.fd.bindDevice(v.dev).attach(v.ioas)
    v.vmm.write(v.guest, new Uint8Array([0x77]))
    expect(v.dev.dma.read(IOVA, 1)[0]).toBe(0x77)
    intelTestHooks(v.driver).skipDevtlbFlush = true
    v.fd.ioctl(IOMMU_IOAS_UNMAP, {
      size: 24,
      ioas_id: v.ioas,
      iova: IOVA,
      length: BigInt(16 * PAGE),
    })
    expect(v.dev.dma.read(IOVA, 1)[0]).toBe(0x77)
    expect(v.unit.staleUses).toHaveLength(1)
    expect(v.unit.staleUses[0]).toMatchObject({
      cache: 'devtlb',
      missing: 'device-TLB invalidation',
    })
  })

  it('catches a PASID entry change whose PASID-cache invalidation was dropped', () => {
    const v = vm({ hugePages: false, pages: 16 })
    const idev = v.fd.bindDevice(v.dev)
    const hwpt = { size: 48, flags: 0, dev_id: idev.id, pt_id: v.ioas, out_hwpt_id: 0 }
    v.fd.ioctl(IOMMU_HWPT_ALLOC, hwpt)
    idev.attach(hwpt.out_hwpt_id)
    v.dev.dma.read(IOVA, 1)
    intelTestHooks(v.driver).skipPasidCacheFlush = true
    idev.detach()
    // The PASID entry in memory is cleared; the cached copy still translates.
    expect(v.dev.dma.read(IOVA, 1)).toHaveLength(1)
    expect(v.unit.staleUses[0]).toMatchObject({
      cache: 'pasid',
      missing: 'PASID-cache invalidation',
    })
  })

  it('flushes the paging-structure caches (IH = 0) when an unmap frees table pages', () => {
    const v = vm({ hugePages: false, pages: 1024 })
    dirtyHwpt(v)
    v.dev.dma.read(IOVA + BigInt(700 * PAGE), 1)
    expect(v.unit.psc.size).toBe(1)
    v.fd.ioctl(IOMMU_IOAS_UNMAP, {
      size: 24,
      ioas_id: v.ioas,
      iova: IOVA,
      length: BigInt(1024 * PAGE),
    })
    expect(v.unit.psc.size).toBe(0)
    // Map other memory at the same IOVA: new tables, and the device sees the new bytes.
    const again = v.vmm.mmap(1024 * PAGE)
    v.vmm.write(again + 700 * PAGE, new Uint8Array([0x42]))
    ioasMap(v.fd, v.ioas, again, 1024, IOVA)
    expect(v.dev.dma.read(IOVA + BigInt(700 * PAGE), 1)[0]).toBe(0x42)
    expect(v.unit.staleUses).toEqual([])
  })

  it('stays silent when the driver flushes, and the device faults', () => {
    const v = vm({ hugePages: false, pages: 16, ats: true })
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
})

describe('faulting DMA on VT-d', () => {
  it('records a first-stage not-present fault and aborts the DMA before any byte moves', () => {
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
    expect(intelFaultLog(v.dev).at(-1)).toEqual({
      reason: Fr.FS_NOT_PRESENT,
      sid: v.dev.rid,
      pasid: null,
      addr: IOVA + BigInt(4 * PAGE),
      read: false,
    })
    // The handler consumed the record.
    expect(v.unit.pendingFaults()).toEqual([])
  })

  it('records a write-permission fault for a read-only IOVA', () => {
    const v = vm({ hugePages: false, pages: 4, prot: IOMMU_IOAS_MAP_READABLE })
    v.fd.bindDevice(v.dev).attach(v.ioas)
    v.vmm.write(v.guest, new Uint8Array([1, 2, 3, 4]))
    expect(() => v.dev.dma.write(IOVA, new Uint8Array([9, 9]))).toThrow(
      expect.objectContaining({ reason: 'permission' }),
    )
    expect(intelFaultLog(v.dev).at(-1)?.reason).toBe(Fr.NO_WRITE)
    expect(v.dev.dma.read(IOVA, 4)).toEqual(new Uint8Array([1, 2, 3, 4]))
  })

  it('blocks a bound device (PASID entry not present) and records 0x59', () => {
    const v = vm({ hugePages: false, pages: 4 })
    v.fd.bindDevice(v.dev)
    expect(() => v.dev.dma.read(IOVA, 4)).toThrow(expect.objectContaining({ reason: 'blocked' }))
    expect(intelFaultLog(v.dev).at(-1)).toMatchObject({ reason: Fr.PASID_NOT_PRESENT, read: true })
  })
})

describe('cache views for tools', () => {
  it('list the cached context and PASID entries and the IOTLB with their tags', () => {
    const v = vm({ hugePages: false, pages: 16 })
    dirtyHwpt(v)
    v.dev.dma.read(IOVA + 5n * BigInt(PAGE), 1)
    const sid = v.dev.rid
    const [ctx] = v.unit.cachedContexts().filter((c) => c.sid === sid)
    // The root-entry qword, then the context entry as it sits in memory.
    const mem = v.m.memory
    const { rootTable } = v.unit.translationMode
    const rootQ = mem.read64(rootTable + v.dev.bus * 16 + (v.dev.devfn >= 0x80 ? 8 : 0))
    const ctxPa = Number(rootQ & ~0xfffn) + (v.dev.devfn & 0x7f) * 32
    expect(Array.from(ctx?.raw.subarray(2) ?? [])).toEqual(
      [0, 4, 8, 12, 16, 20, 24, 28].map((o) => mem.read32(ctxPa + o)),
    )
    const domain = domainOf(v)
    const [tag] = domain.iommus.values()
    const pes = v.unit.cachedPasidEntries().filter((p) => p.sid === sid)
    expect(pes.map((p) => [p.pasid, p.did])).toEqual([[0, tag?.did]])
    const pe = pasid0Entry(v)
    expect(Array.from(pes[0]?.raw.subarray(2, 6) ?? [])).toEqual(
      [0, 4, 8, 12].map((o) => mem.read32(pe + o)),
    )
    const tlb = v.unit.iotlb
    expect(tlb.validEntries().map((i) => [tlb.tag(i), tlb.pasid(i), tlb.vpn(i)])).toEqual([
      [tag?.did, 0, Number(IOVA / BigInt(PAGE)) + 5],
    ])
  })
})

describe('random ioctls on the VT-d model', () => {
  it('fail only with errno, leak nothing, lose no dirty page, leave nothing stale (seed 1)', () => {
    const r = runUapiFuzz(
      {
        name: 'intel',
        machine: () => createMachine({ iommus: [intel()] }),
        staleUses: (m) => (m.units[0] as VtdIommuHw).staleUses,
      },
      { seed: 1, ops: 4000, opsPerWorld: 250 },
    )
    expect(r.problems).toEqual([])
    expect(r.dirty.staleUses).toBe(0)
    // The run reached what it checks: DMA writes and dirty pages read back.
    expect(r.dmaWrites).toBeGreaterThan(100)
    expect(r.dirty.expected).toBeGreaterThan(5)
  })
})

describe('VT-d maps with large pages disabled (batch_iommu_map_small)', () => {
  /** Attach, then IOAS_MAP 64 more pages: the descriptors the map queued, and the walk. */
  function mapAfterAttach(cap?: bigint) {
    const v = vm({ hugePages: false, pages: 16, ...(cap === undefined ? {} : { cap }) })
    v.fd.bindDevice(v.dev).attach(v.ioas)
    const more = v.vmm.mmap(64 * PAGE)
    for (let p = 0; p < 64; p++) v.vmm.write(more + p * PAGE, new Uint8Array([p + 1]))
    const before = v.unit.stats.descriptors
    ioasMap(v.fd, v.ioas, more, 64, IOVA + 0x20_0000n)
    const descriptors = v.unit.stats.descriptors - before
    const read = [0, 31, 63].map((p) => v.dev.dma.read(IOVA + 0x20_0000n + BigInt(p * PAGE), 1)[0])
    const leaves = domainOf(v).fspt?.pgtableWalk(IOVA + 0x20_0000n).length
    return { descriptors, read, leaves }
  }

  it('queues no invalidation without caching mode or RWBF, and one flush a page with RWBF', () => {
    const plain = mapAfterAttach()
    expect(plain.descriptors).toBe(0)
    expect(plain.read).toEqual([1, 32, 64])
    // intel_iommu_iotlb_sync_map after each one-page iommu_map: a flush and its wait.
    const rwbf = mapAfterAttach(DEFAULT_CAP | Cap.RWBF)
    expect(rwbf.descriptors).toBe(64 * 2)
    expect(rwbf.read).toEqual(plain.read)
    expect(rwbf.leaves).toBe(plain.leaves)
  })
})

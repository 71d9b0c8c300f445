/**
 * The VT-d hardware model programmed by hand (no Linux driver): register semantics, the
 * scalable-mode structures, the caches and the descriptors that drop them, nested
 * translation per PASID, fault recording, and page requests.
 */
import { FramePurpose, IotlbGather, Prot } from '@iommu/core'
import { PageTable, vtdss } from '@iommu/io-pgtable'
import { describe, expect, it } from 'vitest'
import {
  Fr,
  Fsts,
  Gcmd,
  Iqei,
  Pe,
  Pgtt,
  Prs,
  QI_DESC_SIZE,
  Qi,
  Reg,
  RespCode,
  TlbKind,
} from '../src/index.ts'
import { HwRig } from './hw-rig.ts'

const SID = 0x0308
const IOVA = 0x4000_0000n

/** A 4-level second-stage table with `pages` 4 KiB pages at IOVA mapped to fresh frames. */
function ssTable(rig: HwRig, iova: bigint, pages: number) {
  const pt = new PageTable(rig.m.memory, vtdss, { topLevel: 3 })
  const first = rig.m.memory.allocFrames(pages, FramePurpose.USER)
  pt.map(Number(iova >> 12n), first, pages, Prot.READ | Prot.WRITE)
  return { pt, first }
}

/** PASID entry words of a second-stage-only translation. */
function ssEntry(rootPfn: number, did: number, ssade = false): bigint[] {
  return [
    (BigInt(rootPfn) << 12n) |
      (2n << Pe.AW_SHIFT) |
      (BigInt(Pgtt.SS) << Pe.PGTT_SHIFT) |
      (ssade ? Pe.SSADE : 0n) |
      Pe.P,
    BigInt(did),
  ]
}

const iotlbPsi = (did: number, iova: bigint, am: number): [bigint, bigint] => [
  (BigInt(did) << 16n) | (3n << 4n) | BigInt(Qi.IOTLB),
  iova | BigInt(am),
]
const piotlbAll = (did: number, pasid: number): [bigint, bigint] => [
  (BigInt(pasid) << 32n) | (BigInt(did) << 16n) | (2n << 4n) | BigInt(Qi.EIOTLB),
  0n,
]
const pasidCache = (did: number, gran: number, pasid: number): [bigint, bigint] => [
  (BigInt(pasid) << 32n) | (BigInt(did) << 16n) | (BigInt(gran) << 4n) | BigInt(Qi.PC),
  0n,
]

describe('VT-d registers', () => {
  it('reports VER, CAP and ECAP and latches the root table with SRTP', () => {
    const rig = new HwRig()
    expect(rig.hw.readMmio(Reg.VER)).toBe(0x10n)
    expect(rig.hw.readMmio(Reg.CAP)).toBe(rig.hw.cap)
    expect(rig.hw.readMmio(Reg.ECAP)).toBe(rig.hw.ecap)
    const gsts = Number(rig.hw.readMmio(Reg.GSTS))
    expect(gsts & (Gcmd.TE | Gcmd.QIE | Gcmd.SRTP)).toBe(Gcmd.TE | Gcmd.QIE | Gcmd.SRTP)
    expect(rig.hw.translationMode).toEqual({ rootTable: rig.root, ttm: 1, enabled: true })
  })

  it('executes one GCMD command per write and ignores a write that issues two', () => {
    const rig = new HwRig()
    // Clearing TE and setting SRTP in one write: two commands.
    rig.hw.writeMmio(Reg.GCMD, BigInt(((rig.gcmd & ~Gcmd.TE) | Gcmd.SRTP) >>> 0))
    expect(rig.hw.diagnostics).toHaveLength(1)
    expect(Number(rig.hw.readMmio(Reg.GSTS)) & Gcmd.TE).toBe(Gcmd.TE)
    // One at a time works.
    rig.hw.writeMmio(Reg.GCMD, BigInt((rig.gcmd & ~Gcmd.TE) >>> 0))
    expect(Number(rig.hw.readMmio(Reg.GSTS)) & Gcmd.TE).toBe(0)
    expect(rig.hw.translationMode.enabled).toBe(false)
  })
})

describe('second-stage translation and the caches', () => {
  it('translates through the root, context and PASID entries and caches each', () => {
    const rig = new HwRig()
    const { pt, first } = ssTable(rig, IOVA, 4)
    const dir = rig.context(SID)
    rig.setPasid(dir, 0, ssEntry(pt.root.pfn, 7))
    expect(rig.dma(SID, IOVA + 0x1234n, false)).toBe((first + 1) * 4096 + 0x234)
    expect(rig.hw.iotlb.size).toBe(1)
    const e = rig.hw.iotlb.lookup(7, 0, Number(IOVA >> 12n) + 1)
    expect(rig.hw.iotlb.kind(e)).toBe(TlbKind.SS)
    const walks = rig.hw.stats.walks
    expect(rig.dma(SID, IOVA + 0x1000n, true)).toBe((first + 1) * 4096)
    expect(rig.hw.stats.walks).toBe(walks)
    expect(rig.hw.stats.contextFetches).toBe(1)
    expect(rig.hw.stats.pasidFetches).toBe(1)
  })

  it('keeps a stale IOTLB entry until an IOTLB (not a PASID-based) invalidation drops it', () => {
    const rig = new HwRig()
    const { pt, first } = ssTable(rig, IOVA, 4)
    const dir = rig.context(SID)
    rig.setPasid(dir, 0, ssEntry(pt.root.pfn, 7))
    rig.dma(SID, IOVA, false)
    pt.unmap(Number(IOVA >> 12n), 1, new IotlbGather())
    // Stale: the DMA still reaches the old page, and the detector says so.
    expect(rig.dma(SID, IOVA, false)).toBe(first * 4096)
    expect(rig.hw.staleUses).toEqual([
      expect.objectContaining({ cache: 'iotlb', missing: 'IOTLB invalidation', did: 7, sid: SID }),
    ])
    // A PASID-based IOTLB invalidation does not drop second-stage translations.
    expect(rig.submit([piotlbAll(7, 0)])).toBe(true)
    expect(rig.dma(SID, IOVA, false)).toBe(first * 4096)
    // A page-selective IOTLB invalidation of another domain does not either.
    expect(rig.submit([iotlbPsi(8, IOVA, 0)])).toBe(true)
    expect(rig.dma(SID, IOVA, false)).toBe(first * 4096)
    expect(rig.submit([iotlbPsi(7, IOVA, 0)])).toBe(true)
    expect(rig.dma(SID, IOVA, false)).toBeNull()
    expect(rig.txn.fault).toBe('translation')
    expect(rig.hw.pendingFaults()).toEqual([
      { reason: Fr.SS_NOT_PRESENT, sid: SID, pasid: null, addr: IOVA, read: true },
    ])
    // The neighbouring page stays cached (AM 0 = one page).
    expect(rig.hw.iotlb.size).toBe(0)
  })

  it('drops a range with the address mask of a page-selective invalidation', () => {
    const rig = new HwRig()
    const { pt } = ssTable(rig, IOVA, 8)
    const dir = rig.context(SID)
    rig.setPasid(dir, 0, ssEntry(pt.root.pfn, 7))
    for (let p = 0n; p < 8n; p++) rig.dma(SID, IOVA + p * 4096n, false)
    expect(rig.hw.iotlb.size).toBe(8)
    // AM = 2: four pages, aligned.
    rig.submit([iotlbPsi(7, IOVA + 0x4000n, 2)])
    expect(rig.hw.iotlb.size).toBe(4)
    expect(rig.hw.iotlb.lookup(7, 0, Number(IOVA >> 12n) + 3)).toBeGreaterThanOrEqual(0)
    expect(rig.hw.iotlb.lookup(7, 0, Number(IOVA >> 12n) + 4)).toBe(-1)
  })

  it('sets A and D in second-stage leaves only when SSADE is on', () => {
    const rig = new HwRig()
    const { pt } = ssTable(rig, IOVA, 2)
    const dir = rig.context(SID)
    rig.setPasid(dir, 0, ssEntry(pt.root.pfn, 7, false))
    rig.dma(SID, IOVA, true)
    expect((pt.pgtableWalk(IOVA).at(-1)?.pte ?? 0n) & 0x300n).toBe(0n)
    rig.setPasid(dir, 1, ssEntry(pt.root.pfn, 9, true))
    rig.setPasid(dir, 0, ssEntry(pt.root.pfn, 9, true))
    rig.submit([pasidCache(7, 1, 0)])
    rig.dma(SID, IOVA + 0x1000n, true)
    // 0x80003 style: R | W, then A (bit 8) and D (bit 9) from the hardware.
    expect((pt.pgtableWalk(IOVA + 0x1000n).at(-1)?.pte ?? 0n) & 0x3ffn).toBe(0x303n)
    expect(rig.hw.staleUses).toEqual([])
  })

  it('drops PASID-cache entries by (DID, PASID), by DID, or all', () => {
    const rig = new HwRig()
    const { pt } = ssTable(rig, IOVA, 1)
    const dir = rig.context(SID)
    rig.setPasid(dir, 0, ssEntry(pt.root.pfn, 7))
    rig.dma(SID, IOVA, false)
    // Block the RID in memory only.
    rig.setPasid(dir, 0, [0n])
    rig.submit([pasidCache(7, 1, 5)])
    expect(rig.dma(SID, IOVA, false)).not.toBeNull()
    expect(rig.hw.staleUses.at(-1)).toMatchObject({
      cache: 'pasid',
      missing: 'PASID-cache invalidation',
    })
    rig.submit([pasidCache(8, 0, 0)])
    expect(rig.dma(SID, IOVA, false)).not.toBeNull()
    rig.submit([pasidCache(7, 0, 0)])
    expect(rig.dma(SID, IOVA, false)).toBeNull()
    expect(rig.txn.fault).toBe('blocked')
    expect(rig.hw.pendingFaults().at(-1)?.reason).toBe(Fr.PASID_NOT_PRESENT)
  })

  it('keeps a cached context entry until a device-selective context-cache invalidation', () => {
    const rig = new HwRig()
    const { pt, first } = ssTable(rig, IOVA, 1)
    const dir = rig.context(SID)
    rig.setPasid(dir, 0, ssEntry(pt.root.pfn, 7))
    rig.dma(SID, IOVA, false)
    // Point the context at a new PASID directory whose entry blocks.
    const dir2 = rig.context(SID)
    rig.setPasid(dir2, 0, [Pe.FPD])
    expect(rig.dma(SID, IOVA, false)).toBe(first * 4096)
    expect(rig.hw.staleUses[0]).toMatchObject({ cache: 'context', did: -1 })
    // Function mask 3 covers functions 0-7 of the device: SID 0x0308 is function 0.
    rig.submit([[(3n << 48n) | (BigInt(SID + 5) << 32n) | (3n << 4n) | BigInt(Qi.CC), 0n]])
    rig.submit([pasidCache(7, 3, 0)])
    expect(rig.dma(SID, IOVA, false)).toBeNull()
    // FPD: aborted without a fault record.
    expect(rig.hw.pendingFaults()).toEqual([])
  })
})

describe('the paging-structure cache', () => {
  it('keeps a last-level table through a leaf-only (IH = 1) invalidation, not through IH = 0', () => {
    const rig = new HwRig()
    const mem = rig.m.memory
    const { pt, first } = ssTable(rig, IOVA, 512)
    const dir = rig.context(SID)
    rig.setPasid(dir, 0, ssEntry(pt.root.pfn, 7))
    expect(rig.dma(SID, IOVA, false)).toBe(first * 4096)
    expect(rig.hw.psc.size).toBe(1)
    // Unmap the whole 2 MiB: the level-0 table leaves the tree (kept on the freelist),
    // then map the page again to another frame through a new level-0 table.
    const gather = new IotlbGather()
    pt.unmap(Number(IOVA >> 12n), 512, gather)
    expect(gather.freelist).toHaveLength(1)
    const other = mem.allocFrame(FramePurpose.USER)
    pt.map(Number(IOVA >> 12n), other, 1, Prot.READ | Prot.WRITE)
    // Leaf-only invalidation: the IOTLB entry goes, the cached table stays and is stale.
    rig.submit([iotlbPsi(7, IOVA | 0x40n, 0)])
    expect(rig.hw.psc.size).toBe(1)
    expect(rig.dma(SID, IOVA, false)).toBeNull()
    expect(rig.hw.pendingFaults().at(-1)?.reason).toBe(Fr.SS_NOT_PRESENT)
    expect(rig.hw.staleUses[0]).toMatchObject({
      cache: 'paging-structure',
      missing: 'IOTLB invalidation',
      did: 7,
    })
    // IH = 0 drops it: the walk reads the tables again.
    rig.submit([iotlbPsi(7, IOVA, 0)])
    expect(rig.dma(SID, IOVA, false)).toBe(other * 4096)
    gather.releaseFreelist()
  })
})

describe('the invalidation queue', () => {
  it('stops at a malformed descriptor with IQE, and resumes when IQE is cleared', () => {
    const rig = new HwRig()
    const start = rig.tail
    // An IOTLB descriptor with the reserved granularity 0, between two good ones.
    const ok = rig.submit([pasidCache(0, 3, 0), [BigInt(Qi.IOTLB), 0n], pasidCache(0, 3, 0)])
    expect(ok).toBe(false)
    expect(Number(rig.hw.readMmio(Reg.FSTS)) & Fsts.IQE).toBe(Fsts.IQE)
    expect(rig.hw.readMmio(Reg.IQER)).toBe(BigInt(Iqei.INVALID))
    expect(Number(rig.hw.readMmio(Reg.IQH))).toBe(start + QI_DESC_SIZE)
    const executed = rig.hw.stats.descriptors
    // Nothing is fetched while IQE is set, even if the tail moves.
    rig.hw.writeMmio(Reg.IQT, BigInt(rig.tail))
    expect(rig.hw.stats.descriptors).toBe(executed)
    // Software repairs the descriptor and clears IQE: the queue runs to the tail.
    const bad = rig.queue + start + QI_DESC_SIZE
    rig.m.memory.write64(bad, pasidCache(0, 3, 0)[0])
    rig.hw.writeMmio(Reg.FSTS, BigInt(Fsts.IQE))
    expect(Number(rig.hw.readMmio(Reg.IQH))).toBe(rig.tail)
    expect(rig.m.memory.read32(rig.status)).toBe(2)
  })

  it('refuses a page-selective invalidation whose mask exceeds MAMV, and unknown types', () => {
    const rig = new HwRig()
    expect(rig.submit([iotlbPsi(1, 0n, 19)])).toBe(false)
    rig.hw.writeMmio(Reg.FSTS, BigInt(Fsts.IQE))
    expect(rig.submit([[0xfn, 0n]])).toBe(false)
  })

  it('drops device-TLB entries by the S-bit range encoding', () => {
    const rig = new HwRig()
    const { pt } = ssTable(rig, IOVA, 4)
    const dir = rig.context(SID, { dte: true })
    rig.setPasid(dir, 0, ssEntry(pt.root.pfn, 7))
    for (let p = 0n; p < 4n; p++) rig.dma(SID, IOVA + p * 4096n, false)
    expect(rig.hw.devtlb.size).toBe(4)
    // S = 1 with address bit 12 clear: 8 KiB at IOVA.
    rig.submit([[(BigInt(SID) << 32n) | BigInt(Qi.DIOTLB), IOVA | 1n]])
    expect(rig.hw.devtlb.size).toBe(2)
    // S = 0: one page.
    rig.submit([[(BigInt(SID) << 32n) | BigInt(Qi.DIOTLB), IOVA + 0x3000n]])
    expect(rig.hw.devtlb.size).toBe(1)
    // Another device's invalidation does not touch it.
    rig.submit([[(BigInt(SID + 1) << 32n) | BigInt(Qi.DIOTLB), IOVA + 0x2001n]])
    expect(rig.hw.devtlb.size).toBe(1)
  })
})

describe('nested translation per PASID', () => {
  /**
   * A guest's 4-level first-stage table at guest-physical addresses 0x1000_0000.. behind a
   * second-stage table that maps them (and the guest's data page) to host frames.
   */
  function nestedRig() {
    const rig = new HwRig()
    const mem = rig.m.memory
    const ss = new PageTable(mem, vtdss, { topLevel: 3 })
    const GPA_TABLES = 0x1000_0000
    const GPA_DATA = 0x2000_0000
    const hostTables = mem.allocFrames(4, FramePurpose.USER)
    const hostData = mem.allocFrames(2, FramePurpose.USER)
    ss.map(GPA_TABLES / 4096, hostTables, 4, Prot.READ | Prot.WRITE)
    ss.map(GPA_DATA / 4096, hostData, 2, Prot.READ | Prot.WRITE)
    const iova = 0x7f_1234_5000n
    // Level 3 → 0 tables at GPA_TABLES + k pages; entries hold guest-physical addresses.
    for (let level = 3; level >= 0; level--) {
      const idx = Number((iova >> BigInt(12 + 9 * level)) & 511n)
      const host = (hostTables + (3 - level)) * 4096
      const next = level === 0 ? GPA_DATA : GPA_TABLES + (4 - level) * 4096
      mem.write64(host + idx * 8, BigInt(next) | 0x7n) // P | RW | U
    }
    const dir = rig.context(SID, { paside: true })
    const v0 =
      (BigInt(ss.root.pfn) << 12n) |
      (2n << Pe.AW_SHIFT) |
      (BigInt(Pgtt.NESTED) << Pe.PGTT_SHIFT) |
      Pe.SSADE |
      Pe.P
    rig.setPasid(dir, 5, [v0, 9n, BigInt(GPA_TABLES)])
    return { rig, ss, hostTables, hostData, iova, dir, v0, GPA_TABLES, GPA_DATA }
  }

  it('walks the first stage through the second and translates DMA with a PASID', () => {
    const { rig, ss, hostTables, hostData, iova, GPA_DATA } = nestedRig()
    const mem = rig.m.memory
    mem.writeBytes(hostData * 4096 + 0x10, new Uint8Array([0xab]))
    const pa = rig.dma(SID, iova + 0x10n, false, 5)
    expect(pa).toBe(hostData * 4096 + 0x10)
    // Without the PASID the request uses RID_PASID 0, which has no entry: blocked.
    expect(rig.dma(SID, iova, false)).toBeNull()
    expect(rig.txn.fault).toBe('blocked')
    // The first-stage entries got A (0x20) in the host frames the second stage named.
    for (let k = 0; k < 4; k++) {
      const level = 3 - k
      const idx = Number((iova >> BigInt(12 + 9 * level)) & 511n)
      expect(mem.read64((hostTables + k) * 4096 + idx * 8) & 0x60n).toBe(0x20n)
    }
    // A write sets D in the first-stage leaf and, with SSADE, in the second-stage leaf.
    expect(rig.dma(SID, iova + 0x10n, true, 5)).toBe(hostData * 4096 + 0x10)
    const leaf = Number((iova >> 12n) & 511n)
    expect(mem.read64((hostTables + 3) * 4096 + leaf * 8) & 0x40n).toBe(0x40n)
    expect((ss.pgtableWalk(BigInt(GPA_DATA)).at(-1)?.pte ?? 0n) & 0x200n).toBe(0x200n)
    // One IOTLB entry, tagged nested, DID 9, PASID 5.
    const e = rig.hw.iotlb.lookup(9, 5, Number(iova >> 12n))
    expect(rig.hw.iotlb.kind(e)).toBe(TlbKind.NESTED)
    expect(rig.hw.staleUses).toEqual([])
  })

  it('faults when the second stage does not map a first-stage table (0x75 / 0x76)', () => {
    const { rig, ss, iova, dir, v0, GPA_TABLES } = nestedRig()
    // PASID 6: first-stage root at an unmapped guest-physical address.
    rig.setPasid(dir, 6, [v0, 10n, 0x3000_0000n])
    expect(rig.dma(SID, iova, false, 6)).toBeNull()
    expect(rig.hw.pendingFaults().at(-1)).toMatchObject({
      reason: Fr.NESTED_FS_ROOT_READ,
      pasid: 6,
      sid: SID,
    })
    // Unmap the guest page holding the level-1 table.
    ss.unmap(GPA_TABLES / 4096 + 2, 1, new IotlbGather())
    expect(rig.dma(SID, iova, false, 5)).toBeNull()
    expect(rig.hw.pendingFaults().at(-1)?.reason).toBe(Fr.NESTED_FS_READ)
  })

  it('drops every nested entry of the domain on a page-selective IOTLB invalidation', () => {
    const { rig, iova, GPA_DATA } = nestedRig()
    rig.dma(SID, iova, false, 5)
    expect(rig.hw.iotlb.size).toBe(1)
    // A second-stage (guest-physical) range far from anything: the nested entry goes anyway.
    rig.submit([iotlbPsi(10, BigInt(GPA_DATA), 0)])
    expect(rig.hw.iotlb.size).toBe(1)
    rig.submit([iotlbPsi(9, 0x7000_0000n, 0)])
    expect(rig.hw.iotlb.size).toBe(0)
  })

  it('needs a PASID-based IOTLB invalidation after a guest first-stage change', () => {
    const { rig, hostTables, hostData, iova, GPA_DATA } = nestedRig()
    const mem = rig.m.memory
    rig.dma(SID, iova, false, 5)
    // The guest points the leaf at its second data page.
    const leaf = (hostTables + 3) * 4096 + Number((iova >> 12n) & 511n) * 8
    mem.write64(leaf, BigInt(GPA_DATA + 4096) | 0x7n)
    expect(rig.dma(SID, iova, false, 5)).toBe(hostData * 4096)
    expect(rig.hw.staleUses[0]).toMatchObject({
      cache: 'iotlb',
      missing: 'PASID-based IOTLB invalidation',
      pasid: 5,
      did: 9,
    })
    rig.submit([piotlbAll(9, 5)])
    expect(rig.dma(SID, iova, false, 5)).toBe((hostData + 1) * 4096)
  })
})

describe('fault recording', () => {
  it('fills the records round-robin and sets PFO when the next one is still full', () => {
    const rig = new HwRig()
    rig.context(SID)
    for (let i = 0; i < 9; i++) rig.dma(SID, IOVA + BigInt(i) * 4096n, i % 2 === 0)
    const f = rig.hw.pendingFaults()
    expect(f).toHaveLength(8)
    // The context's PASID directory is empty: fault 0x51.
    expect(f[0]).toEqual({
      reason: Fr.PASID_DIR_NOT_PRESENT,
      sid: SID,
      pasid: null,
      addr: IOVA,
      read: false,
    })
    expect(f[1]?.read).toBe(true)
    const fsts = Number(rig.hw.readMmio(Reg.FSTS))
    expect(fsts & (Fsts.PFO | Fsts.PPF)).toBe(Fsts.PFO | Fsts.PPF)
    expect(rig.hw.stats.faultsDropped).toBe(1)
  })
})

describe('page requests', () => {
  function prqRig(pre = true) {
    const rig = new HwRig()
    const q = rig.m.memory.allocFrames(16, FramePurpose.IOMMU_HW, 16) * 4096
    rig.hw.writeMmio(Reg.PQH, 0n)
    rig.hw.writeMmio(Reg.PQT, 0n)
    rig.hw.writeMmio(Reg.PQA, BigInt(q) | 4n)
    rig.context(SID, { pre, paside: true, dte: true })
    return { rig, q }
  }

  it('queues a page request and completes its group with a page group response', () => {
    const { rig, q } = prqRig()
    const req = {
      rid: SID,
      pasid: 5,
      addr: 0x7f_0000_3000n,
      read: true,
      write: true,
      lpig: true,
      prgIndex: 3,
    }
    expect(rig.hw.pageRequest(req)).toBe(true)
    expect(Number(rig.hw.readMmio(Reg.PRS)) & Prs.PPR).toBe(Prs.PPR)
    expect(rig.hw.readMmio(Reg.PQT)).toBe(32n)
    // The raw descriptor: type 1, PASID present, RID, PASID; RD | WR | LPIG | PRG | address.
    expect(rig.m.memory.read64(q)).toBe(0x1n | 0x100n | (BigInt(SID) << 16n) | (5n << 32n))
    expect(rig.m.memory.read64(q + 8)).toBe(0x7f_0000_3000n | (3n << 3n) | 0x7n)
    expect(rig.hw.pendingPageRequests()).toEqual([
      { ...req, pasidPresent: true, exe: false, priv: false },
    ])
    expect(rig.hw.groupPending(SID, 5, 3)).toBe(true)
    // Software consumes the request and answers the group.
    rig.hw.writeMmio(Reg.PQH, 32n)
    rig.submit([
      [
        (5n << 32n) | (BigInt(SID) << 16n) | (1n << 4n) | (BigInt(RespCode.SUCCESS) << 12n) | 9n,
        3n << 3n,
      ],
    ])
    expect(rig.hw.groupPending(SID, 5, 3)).toBe(false)
    expect(rig.hw.pageResponses).toEqual([
      { rid: SID, pasid: 5, prgIndex: 3, code: RespCode.SUCCESS, auto: false },
    ])
  })

  it('answers Invalid Request and records 0x47 when the context has PRE clear', () => {
    const { rig } = prqRig(false)
    const ok = rig.hw.pageRequest({
      rid: SID,
      addr: 0x1000n,
      read: true,
      write: false,
      lpig: true,
      prgIndex: 1,
    })
    expect(ok).toBe(false)
    expect(rig.hw.pageResponses).toEqual([
      { rid: SID, pasid: null, prgIndex: 1, code: RespCode.INVALID, auto: true },
    ])
    expect(rig.hw.pendingFaults()[0]?.reason).toBe(Fr.PRE_CLEAR)
  })

  it('sets PRO and answers Success itself when the queue is full', () => {
    const { rig } = prqRig()
    const depth = (16 * 4096) / 32
    let queued = 0
    for (let i = 0; i < depth; i++) {
      const r = { rid: SID, addr: 0x1000n, read: true, write: false, lpig: true, prgIndex: i & 511 }
      if (rig.hw.pageRequest(r)) queued++
    }
    expect(queued).toBe(depth - 1)
    expect(Number(rig.hw.readMmio(Reg.PRS)) & Prs.PRO).toBe(Prs.PRO)
    expect(rig.hw.pageResponses).toEqual([
      { rid: SID, pasid: null, prgIndex: (depth - 1) & 511, code: RespCode.SUCCESS, auto: true },
    ])
  })
})

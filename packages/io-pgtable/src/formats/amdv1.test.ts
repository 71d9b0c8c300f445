import { FramePurpose, IommuDirtyBitmap, type IommuError, IotlbGather, Prot } from '@iommu/core'
import { describe, expect, it } from 'vitest'
import { Access, EntryType, HwAd, WalkFault } from '../format.ts'
import { PageTable } from '../page-table.ts'
import { countLeaves, errnoOf, tableHarness } from '../testing/helpers.ts'
import { PageTableWalker } from '../walk.ts'
import { amdv1 } from './amdv1.ts'

const RW = Prot.READ | Prot.WRITE

function table() {
  return tableHarness(amdv1, { startingLevel: 2 })
}

function walk(pt: ReturnType<typeof table>['table'], iova: bigint) {
  return pt.pgtableWalk(iova)
}

/** Raw entries [first, first + n) of the level-`level` table the walk for `iova` reaches. */
function entries(
  pt: ReturnType<typeof table>['table'],
  iova: bigint,
  level: number,
  first: number,
  n: number,
): bigint[] {
  const e = walk(pt, iova).find((x) => x.level === level)
  if (e === undefined) throw new Error(`no level ${level}`)
  const base = e.pa & ~0xfffn
  return Array.from({ length: n }, (_, k) => pt.memory.read64(Number(base) + (first + k) * 8))
}

const code = errnoOf

function recorder(mode: 'kernel' | 'ideal' = 'kernel') {
  const records: [number, number][] = []
  const dirty = new IommuDirtyBitmap(
    {
      set: (pfn, count, shift) =>
        records.push([pfn * 2 ** (shift - 12), count * 2 ** (shift - 12)]),
    },
    new IotlbGather(),
    { mode },
  )
  return { records, dirty }
}

describe('§4.5 AMD v1 (FORCE_COHERENCE, as the AMD driver)', () => {
  it('D1 4K R|W at 0x1000 -> 0x80000: L0[1] = 0x7000000000080001 (PR|FC|IR|IW, NL 0)', () => {
    const h = table()
    h.table.mapRange(0x1000n, 0x8_0000n, 0x1000n, RW)
    expect(entries(h.table, 0x1000n, 0, 1, 1)).toEqual([0x7000_0000_0008_0001n])
    expect(h.finish()).toBe(0)
  })

  it('D2 4K R only: 0x3000000000080001 (no IW)', () => {
    const h = table()
    h.table.mapRange(0x1000n, 0x8_0000n, 0x1000n, Prot.READ)
    expect(entries(h.table, 0x1000n, 0, 1, 1)).toEqual([0x3000_0000_0008_0001n])
    expect(h.finish()).toBe(0)
  })

  it('D3 PDE in the level-1 table to a level-0 table at 0x123000: 0x6000000000123201 (NL 1, IR|IW, no FC)', () => {
    const p = amdv1.init({ startingLevel: 2 })
    const w = new Uint32Array(1024)
    amdv1.installTable(w, 0, 1, 0x123, p)
    expect((BigInt(w[1] as number) << 32n) | BigInt(w[0] as number)).toBe(0x6000_0000_0012_3201n)
    expect(amdv1.loadEntry(w, 0, 1, p)).toBe(EntryType.TABLE)
    expect(amdv1.tablePfn(w, 0, 1, p)).toBe(0x123)
  })

  it('D3 the walk writes NL = the level of the table holding the PDE', () => {
    const h = table()
    h.table.mapRange(0x1000n, 0x8_0000n, 0x1000n, RW)
    const pdes = walk(h.table, 0x1000n).slice(0, -1)
    expect(pdes.map((e) => Number((e.pte >> 9n) & 7n))).toEqual([2, 1])
    for (const e of pdes)
      expect(e.pte & 0x7000_0000_0000_0fffn).toBe(
        0x6000_0000_0000_0001n | (((e.pte >> 9n) & 7n) << 9n),
      )
    expect(h.finish()).toBe(0)
  })

  it('D4 2M R|W at 0x200000 -> 0x40000000: L1[1] = 0x7000000040000001', () => {
    const h = table()
    h.table.mapRange(0x20_0000n, 0x4000_0000n, 0x20_0000n, RW)
    expect(entries(h.table, 0x20_0000n, 1, 1, 1)).toEqual([0x7000_0000_4000_0001n])
    expect(h.finish()).toBe(0)
  })

  const contiguous: [string, bigint, bigint, bigint, number, number, bigint][] = [
    [
      'D5 8K: L0[2..3] = 0x7000000000010e01 (NL 7)',
      0x2000n,
      0x1_0000n,
      0x2000n,
      0,
      2,
      0x7000_0000_0001_0e01n,
    ],
    [
      'D6 16K: L0[4..7] = 0x7000000000021e01',
      0x4000n,
      0x2_0000n,
      0x4000n,
      0,
      4,
      0x7000_0000_0002_1e01n,
    ],
    [
      'D7 1M: L0[256..511] = 0x700000000017fe01',
      0x10_0000n,
      0x10_0000n,
      0x10_0000n,
      0,
      256,
      0x7000_0000_0017_fe01n,
    ],
    [
      'D8 4M: 2 replicas at L1 = 0x70000000009ffe01',
      0x40_0000n,
      0x80_0000n,
      0x40_0000n,
      1,
      2,
      0x7000_0000_009f_fe01n,
    ],
    [
      'D9 1T: 2 replicas in a level-3 table (idx 2, 3) = 0x7000017ffffffe01',
      1n << 40n,
      1n << 40n,
      1n << 40n,
      3,
      2,
      0x7000_017f_ffff_fe01n,
    ],
  ]
  for (const [name, iova, pa, size, level, n, pte] of contiguous) {
    it(name, () => {
      const h = table()
      h.table.mapRange(iova, pa, size, RW)
      const e = walk(h.table, iova).at(-1) as { level: number; pa: bigint }
      expect(e.level).toBe(level)
      const first = Number((e.pa & 0xfffn) >> 3n) & ~(n - 1)
      expect(first * 2 ** (12 + 9 * level)).toBe(Number(iova % (1n << BigInt(21 + 9 * level))))
      expect(entries(h.table, iova, level, first, n)).toEqual(Array(n).fill(pte))
      expect(countLeaves(h.table).get(size.toString(2).length - 1)).toBe(1)
      expect(h.table.iovaToPhys(iova + size - 1n)).toBe(pa + size - 1n)
      expect(h.finish()).toBe(0)
    })
  }

  it('D10 512G is not a page size (erratum): the bitmap lacks it and a 512G range maps as 2 x 256G', () => {
    const h = table()
    expect(h.table.pgsizeBitmap & (1n << 39n)).toBe(0n)
    expect(h.table.pgsizeBitmap).toBe(0x000f_ff7f_ffff_f000n)
    h.table.mapRange(1n << 39n, 1n << 39n, 1n << 39n, RW)
    expect([...countLeaves(h.table)]).toEqual([[38, 2]])
    expect(h.finish()).toBe(0)
  })

  it('D11 decode 0x7000000000021e01: NL 7, 16K (1 << (1 + ffz(0x21fff))), OA 0x20000', () => {
    const p = amdv1.init({})
    const w = new Uint32Array(1024)
    w[8] = 0x0002_1e01
    w[9] = 0x7000_0000
    expect(amdv1.loadEntry(w, 4, 0, p)).toBe(EntryType.OA)
    expect(amdv1.entryNumContigLg2(w, 4, 0, p)).toBe(2)
    expect(amdv1.entryOaPfn(w, 4, 0, p)).toBe(0x20)
  })

  it('D12 iova_to_phys(0x3000) with D5 = 0x11000', () => {
    const h = table()
    h.table.mapRange(0x2000n, 0x1_0000n, 0x2000n, RW)
    expect(h.table.iovaToPhys(0x3000n)).toBe(0x1_1000n)
    expect(h.table.iovaToPhys(0x3abcn)).toBe(0x1_1abcn)
    expect(h.finish()).toBe(0)
  })

  it('D13 a HW write sets D (0x7000000000080041); read_and_clear records (0x1000, 4K) and restores 0x7000000000080001', () => {
    const h = table()
    const pt = h.table
    pt.mapRange(0x1000n, 0x8_0000n, 0x1000n, RW)
    const walker = pt.walker()
    expect(walker.walk(pt.root.pfn, pt.root.level, 1, Access.READ, HwAd.DIRTY).dirty).toBe(false)
    const r = walker.walk(pt.root.pfn, pt.root.level, 1, Access.WRITE, HwAd.DIRTY)
    expect(r.fault).toBe(WalkFault.NONE)
    // The walk reports the dirty state it leaves, for the IOTLB entry.
    expect(r.dirty).toBe(true)
    expect(entries(pt, 0x1000n, 0, 1, 1)).toEqual([0x7000_0000_0008_0041n])
    const rec = recorder()
    pt.readAndClearDirty(0n, 0x20_0000n, 0, rec.dirty)
    expect(rec.records).toEqual([[1, 1]])
    expect(entries(pt, 0x1000n, 0, 1, 1)).toEqual([0x7000_0000_0008_0001n])
    expect(h.finish()).toBe(0)
  })

  it('D14 D on replica L0[7] only of the 16K page: the whole 16K is dirty and all 4 replicas are cleared', () => {
    const h = table()
    const pt = h.table
    pt.mapRange(0x4000n, 0x2_0000n, 0x4000n, RW)
    pt.walker().walk(pt.root.pfn, pt.root.level, 7, Access.WRITE, HwAd.DIRTY)
    expect(entries(pt, 0x4000n, 0, 4, 4)).toEqual([
      0x7000_0000_0002_1e01n,
      0x7000_0000_0002_1e01n,
      0x7000_0000_0002_1e01n,
      0x7000_0000_0002_1e41n,
    ])
    // record_dirty (7.2): the leaf's last index as an exclusive end, 12K of the 16K; every
    // replica is cleaned (pgtable-formats.md §2.4).
    const rec = recorder()
    pt.readAndClearDirty(0x4000n, 0x4000n, 0, rec.dirty)
    expect(rec.records).toEqual([[4, 3]])
    expect(entries(pt, 0x4000n, 0, 4, 4)).toEqual(Array(4).fill(0x7000_0000_0002_1e01n))
    // Ideal records: the whole 16K.
    pt.walker().walk(pt.root.pfn, pt.root.level, 7, Access.WRITE, HwAd.DIRTY)
    const ideal = recorder('ideal')
    pt.readAndClearDirty(0x4000n, 0x4000n, 0, ideal.dirty)
    expect(ideal.records).toEqual([[4, 4]])
    // A walk that starts inside the page is recorded from the range start, up to
    // min(last index, end index): [6, 7) here.
    pt.walker().walk(pt.root.pfn, pt.root.level, 4, Access.WRITE, HwAd.DIRTY)
    const mid = recorder()
    pt.readAndClearDirty(0x6000n, 0x1000n, 0, mid.dirty)
    expect(mid.records).toEqual([[6, 1]])
    // ... and one that starts at the last item records nothing: index 7 | 3 = 7.
    pt.walker().walk(pt.root.pfn, pt.root.level, 4, Access.WRITE, HwAd.DIRTY)
    const last = recorder()
    pt.readAndClearDirty(0x7000n, 0x1000n, 0, last.dirty)
    expect(last.records).toEqual([[7, 0]])
    expect(entries(pt, 0x4000n, 0, 4, 4)).toEqual(Array(4).fill(0x7000_0000_0002_1e01n))
    expect(h.finish()).toBe(0)
  })

  it('D15 DTE data[0] for root 0x1000000, mode 3: 0x6000000001000603; with HAD: 0x6000000001000783', () => {
    const h = tableHarness(amdv1, { startingLevel: 2 })
    h.finish()
    // The allocator hands out frames in order: put the root at PFN 0x1000.
    h.memory.allocFrames(0x1000 - 0x100, FramePurpose.KERNEL)
    const pt = new PageTable(h.memory, amdv1, { startingLevel: 2 }, { changeTop: () => {} })
    const info = pt.hwInfo() as { hostPtRoot: bigint; mode: number }
    expect(info).toEqual({ hostPtRoot: 0x100_0000n, mode: 3 })
    const V = 1n
    const TV = 2n
    const IRW = 0x6000_0000_0000_0000n
    const dte = info.hostPtRoot | (BigInt(info.mode) << 9n) | V | TV | IRW
    expect(dte).toBe(0x6000_0000_0100_0603n)
    expect(dte | (3n << 7n)).toBe(0x6000_0000_0100_0783n)
    pt.free()
  })

  it('D16 mapping iova 2^39 grows 3 -> 4 levels: new top entry 0 = old root | 0x601 | IR|IW; changeTop(mode 4)', () => {
    const h = table()
    const old = h.table.root
    h.table.mapRange(1n << 39n, 0x1000n, 0x1000n, RW)
    const root = h.table.root
    expect(root.level).toBe(3)
    expect(h.tops).toEqual([[root.pfn, 3]])
    expect((h.table.hwInfo() as { mode: number }).mode).toBe(4)
    expect(h.memory.read64(root.pfn * 4096)).toBe(
      (BigInt(old.pfn) << 12n) | 0x601n | 0x6000_0000_0000_0000n,
    )
    expect(h.table.iovaToPhys((1n << 39n) + 5n)).toBe(0x1005n)
    expect(h.finish()).toBe(0)
  })

  it('generic_pt: mapping over D1 is EADDRINUSE (the old driver overwrote silently)', () => {
    const h = table()
    h.table.mapRange(0x1000n, 0x8_0000n, 0x1000n, RW)
    expect(code(() => h.table.mapRange(0x1000n, 0x9_0000n, 0x1000n, RW))).toBe('EADDRINUSE')
    expect(entries(h.table, 0x1000n, 0, 1, 1)).toEqual([0x7000_0000_0008_0001n])
    expect(h.finish()).toBe(0)
  })

  it('generic_pt: unmap(0x201000, 4K) inside D4 is 0 (an IOPTE that starts before the range: EINVAL); unmap(0x200000, 4K) returns 2M', () => {
    const h = table()
    h.table.mapRange(0x20_0000n, 0x4000_0000n, 0x20_0000n, RW)
    expect(h.table.unmapRange(0x20_1000n, 0x1000n, h.gather)).toBe(0n)
    expect(entries(h.table, 0x20_0000n, 1, 1, 1)).toEqual([0x7000_0000_4000_0001n])
    expect(h.table.unmapRange(0x20_0000n, 0x1000n, h.gather)).toBe(0x20_0000n)
    expect([h.gather.start, h.gather.end]).toEqual([0x20_0000n, 0x3f_ffffn])
    expect(h.finish()).toBe(0)
  })

  it('generic_pt: unmap stops at a hole and returns the bytes before it; frees fully covered tables through the gather', () => {
    const h = table()
    h.table.mapRange(0n, 0x1000_0000n, 0x4_0000n, RW)
    h.table.mapRange(0x8_0000n, 0x1008_0000n, 0x1000n, RW)
    expect(h.table.unmapRange(0n, 0x10_0000n, h.gather)).toBe(0x4_0000n)
    expect(h.table.iovaToPhys(0x8_0000n)).toBe(0x1008_0000n)
    // [0x80000, 0x81000) does not cover the level-0 table [0, 2M): it stays.
    expect(h.table.unmapRange(0x8_0000n, 0x1000n, h.gather)).toBe(0x1000n)
    expect(h.gather.freelist.length).toBe(0)
    // 512 4K pages (the PA is not 2M aligned), then one unmap covering their table.
    h.table.mapRange(0n, 0x1000_1000n, 0x20_0000n, RW)
    expect(countLeaves(h.table).get(12)).toBe(512)
    expect(h.table.unmapRange(0n, 0x20_0000n, h.gather)).toBe(0x20_0000n)
    expect(h.gather.freelist.length).toBe(1)
    expect(h.gather.tableLevels).toBe(1 << 1)
    expect(h.gather.leafLevels).toBe(1 << 0)
    expect(h.finish()).toBe(0)
  })

  it('generic_pt map errno: no R/W EINVAL, PA beyond the OA ERANGE, unaligned ENXIO, past the VA ERANGE', () => {
    const h = tableHarness(amdv1, { startingLevel: 2, hwMaxVaBits: 48 })
    expect(code(() => h.table.mapRange(0x1000n, 0x1000n, 0x1000n, Prot.CACHE))).toBe('EINVAL')
    expect(code(() => h.table.mapRange(0x1000n, 1n << 52n, 0x1000n, RW))).toBe('ERANGE')
    expect(code(() => h.table.mapRange(0x1800n, 0x1000n, 0x1000n, RW))).toBe('ENXIO')
    expect(code(() => h.table.mapRange(0x1000n, 0x1000n, 0x800n, RW))).toBe('ENXIO')
    expect(code(() => h.table.mapRange(0n, 0n, 0n, RW))).toBe('EINVAL')
    expect(code(() => h.table.mapRange(1n << 48n, 0x1000n, 0x1000n, RW))).toBe('ERANGE')
    expect(code(() => h.table.mapRange(0xffff_ffff_ffff_f000n, 0n, 0x2000n, RW))).toBe('EOVERFLOW')
    expect(h.finish()).toBe(0)
  })

  it('a map over an empty table frees it (flushed first); over a table that still maps something: EADDRINUSE with progress', () => {
    const h = table()
    h.table.mapRange(0x20_0000n, 0x1000n, 0x1000n, RW)
    expect(h.table.unmapRange(0x20_0000n, 0x1000n, h.gather)).toBe(0x1000n)
    const frames = h.pgtableFrames()
    h.table.mapRange(0x20_0000n, 0x4000_0000n, 0x20_0000n, RW)
    expect(h.syncs).toBe(1)
    expect(h.pgtableFrames()).toBe(frames - 1)
    h.table.mapRange(0x60_1000n, 0x1000n, 0x1000n, RW)
    let err: IommuError | undefined
    try {
      // 2 x 2M (the PA is 2M aligned only): the first goes in, the second meets the page.
      h.table.mapRange(0x40_0000n, 0x4020_0000n, 0x40_0000n, RW)
    } catch (e) {
      err = e as IommuError
    }
    expect(err?.code).toBe('EADDRINUSE')
    expect(err?.progress).toBe(0x20_0000n)
    expect(h.table.iovaToPhys(0x40_0000n)).toBe(0x4020_0000n)
    expect(h.table.unmapRange(0x40_0000n, 0x20_0000n, h.gather)).toBe(0x20_0000n)
    expect(h.finish()).toBe(0)
  })

  it('init: startingLevel 0 or 6 is EINVAL; hwMaxVaBits 0 or 65 EINVAL; hwMaxOaBits 53 EINVAL; no changeTop EINVAL', () => {
    expect(code(() => amdv1.init({ startingLevel: 0 }))).toBe('EINVAL')
    expect(code(() => amdv1.init({ startingLevel: 6 }))).toBe('EINVAL')
    expect(code(() => amdv1.init({ hwMaxVaBits: 0 }))).toBe('EINVAL')
    expect(code(() => amdv1.init({ hwMaxVaBits: 65 }))).toBe('EINVAL')
    expect(code(() => amdv1.init({ hwMaxOaBits: 53 }))).toBe('EINVAL')
    const h = table()
    expect(code(() => new PageTable(h.memory, amdv1, {}))).toBe('EINVAL')
    expect(h.finish()).toBe(0)
  })

  it('hardware walk: IR/IW ANDed from PDEs, A set on every entry, skipped levels need zero index bits', () => {
    const h = table()
    const pt = h.table
    pt.mapRange(0x1000n, 0x8_0000n, 0x1000n, Prot.READ)
    const walker = new PageTableWalker(h.memory, amdv1, { startingLevel: 2 })
    expect(walker.walk(pt.root.pfn, 2, 1, Access.WRITE, 0).fault).toBe(WalkFault.PERMISSION)
    const r = walker.walk(pt.root.pfn, 2, 1, Access.READ, HwAd.ACCESSED | HwAd.DIRTY)
    expect([r.fault, r.pagePfn, r.sizeLg2, r.perm]).toEqual([WalkFault.NONE, 0x80, 12, Access.READ])
    for (const e of pt.pgtableWalk(0x1000n)) expect(e.pte & 0x20n).toBe(0x20n)
    expect(walker.walk(pt.root.pfn, 2, 2, Access.READ, 0).fault).toBe(WalkFault.NOT_PRESENT)
    // Mode 3 cannot translate IOVA bit 39.
    expect(walker.walk(pt.root.pfn, 2, 2 ** 27, Access.READ, 0).fault).toBe(WalkFault.RANGE)
    // A level-2 PDE that names a level-0 table (NL 1) skips level 1: its index bits must be 0.
    const l2 = pt.pgtableWalk(0x1000n)[0] as { pa: bigint; pte: bigint }
    const l0 = pt.pgtableWalk(0x1000n)[1] as { pte: bigint }
    h.memory.write64(Number(l2.pa), (l0.pte & 0x000f_ffff_ffff_f000n) | 0x6000_0000_0000_0201n)
    expect(walker.walk(pt.root.pfn, 2, 1, Access.READ, 0).pagePfn).toBe(0x80)
    expect(walker.walk(pt.root.pfn, 2, 0x200 + 1, Access.READ, 0).fault).toBe(WalkFault.NOT_PRESENT)
    h.memory.write64(Number(l2.pa), (l0.pte & 0x000f_ffff_ffff_f000n) | 0x6000_0000_0000_0601n)
    expect(walker.walk(pt.root.pfn, 2, 1, Access.READ, 0).fault).toBe(WalkFault.RESERVED)
    h.memory.write64(Number(l2.pa), l2.pte)
    expect(h.finish()).toBe(0)
  })
})

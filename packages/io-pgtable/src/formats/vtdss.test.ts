import {
  FramePurpose,
  IOMMU_DIRTY_NO_CLEAR,
  IommuDirtyBitmap,
  IotlbGather,
  PhysicalMemory,
  Prot,
} from '@iommu/core'
import { describe, expect, it } from 'vitest'
import { Access, HwAd, WalkFault } from '../format.ts'
import { PageTable } from '../page-table.ts'
import { errnoOf, tableHarness } from '../testing/helpers.ts'
import { type VtdSsConfig, vtdss } from './vtdss.ts'

const R = Prot.READ
const W = Prot.WRITE
const SS: VtdSsConfig = { topLevel: 3 }

function leaf(cfg: VtdSsConfig, iova: bigint, pa: bigint, size: bigint, prot: number) {
  const h = tableHarness(vtdss, cfg)
  h.table.mapRange(iova, pa, size, prot)
  const e = h.table.pgtableWalk(iova).at(-1) as { level: number; pte: bigint }
  expect(h.finish()).toBe(0)
  return e
}

const code = errnoOf

describe('§4.7 Intel VT-d second stage', () => {
  it('F1 4K R|W -> 0x80000: 0x0000000000080003', () => {
    expect(leaf(SS, 0x1000n, 0x8_0000n, 0x1000n, R | W).pte).toBe(0x0000_0000_0008_0003n)
  })

  it('F2 FORCE_COHERENCE (set_pte_snp): 0x0000000000080803 (+SNP bit 11)', () => {
    expect(leaf({ ...SS, forceCoherence: true }, 0x1000n, 0x8_0000n, 0x1000n, R | W).pte).toBe(
      0x0000_0000_0008_0803n,
    )
  })

  it('F3 R only: 0x0000000000080001', () => {
    expect(leaf(SS, 0x1000n, 0x8_0000n, 0x1000n, R).pte).toBe(0x0000_0000_0008_0001n)
  })

  it('F4 W only, newest generic: 0x0000000000080002 (old driver forced R: 0x...80003)', () => {
    expect(leaf(SS, 0x1000n, 0x8_0000n, 0x1000n, W).pte).toBe(0x0000_0000_0008_0002n)
  })

  it('F5 2M R|W -> 0x40000000: 0x0000000040000083 (+PS bit 7)', () => {
    expect(leaf(SS, 0x20_0000n, 0x4000_0000n, 0x20_0000n, R | W)).toMatchObject({
      level: 1,
      pte: 0x0000_0000_4000_0083n,
    })
  })

  it('F6 table entry -> 0x123000: 0x0000000000123003 (R|W)', () => {
    const p = vtdss.init(SS)
    const w = new Uint32Array(1024)
    vtdss.installTable(w, 0, 1, 0x123, p)
    expect((BigInt(w[1] as number) << 32n) | BigInt(w[0] as number)).toBe(0x0000_0000_0012_3003n)
  })

  it('F7 a HW write with SSADE sets A and D (0x80303); read_and_clear clears D only (0x80103) and records (iova, 4K)', () => {
    const h = tableHarness(vtdss, SS)
    const pt = h.table
    pt.mapRange(0x1000n, 0x8_0000n, 0x1000n, R | W)
    const r = pt.walker().walk(pt.root.pfn, 3, 1, Access.WRITE, HwAd.ACCESSED | HwAd.DIRTY)
    expect(r.fault).toBe(WalkFault.NONE)
    const e = () => (pt.pgtableWalk(0x1000n).at(-1) as { pte: bigint }).pte
    expect(e()).toBe(0x0000_0000_0008_0303n)
    const records: [number, number, number][] = []
    const sink = {
      set: (pfn: number, count: number, shift: number) => records.push([pfn, count, shift]),
    }
    pt.readAndClearDirty(0x1000n, 0x1000n, IOMMU_DIRTY_NO_CLEAR, new IommuDirtyBitmap(sink, null))
    expect(e()).toBe(0x0000_0000_0008_0303n)
    const g = new IotlbGather()
    pt.readAndClearDirty(0x1000n, 0x1000n, 0, new IommuDirtyBitmap(sink, g))
    expect(e()).toBe(0x0000_0000_0008_0103n)
    expect(records).toEqual([
      [1, 1, 12],
      [1, 1, 12],
    ])
    expect([g.start, g.end]).toEqual([0x1000n, 0x1fffn])
    // Without SSADE the hardware leaves A and D alone.
    pt.walker().walk(pt.root.pfn, 3, 1, Access.WRITE, 0)
    expect(e()).toBe(0x0000_0000_0008_0103n)
    expect(h.finish()).toBe(0)
  })

  it('F8 hw_info gives the SLPTPTR and AW of the PASID entry: SL-only, AW 2, SSADE, root 0x123000 -> 0x123289', () => {
    const memory = new PhysicalMemory()
    // The allocator starts at PFN 0x100: put the root at 0x123.
    memory.allocFrames(0x23, FramePurpose.KERNEL)
    const pt = new PageTable(memory, vtdss, SS)
    const info = pt.hwInfo() as { ssptptr: bigint; aw: number }
    expect(info).toEqual({ ssptptr: 0x12_3000n, aw: 2 })
    const P = 1n
    const PGTT_SL = 2n << 6n
    const SSADE = 1n << 9n
    expect(info.ssptptr | SSADE | PGTT_SL | (BigInt(info.aw) << 2n) | P).toBe(
      0x0000_0000_0012_3289n,
    )
    pt.free()
    expect(memory.frameStats().byPurpose.pgtable).toBe(0)
  })

  it('F9 FORCE_WRITEABLE (nest parent, ERRATA_772415_SPR17): a read-only map is EINVAL', () => {
    const h = tableHarness(vtdss, { ...SS, forceWriteable: true })
    expect(code(() => h.table.mapRange(0x1000n, 0x8_0000n, 0x1000n, R))).toBe('EINVAL')
    expect(h.table.mapRange(0x1000n, 0x8_0000n, 0x1000n, W)).toBe(0x1000n)
    expect(h.finish()).toBe(0)
  })

  it('levels: top 2/3/4 = 39/48/57-bit, AW 1/2/3; top 1 is EOPNOTSUPP', () => {
    for (const [top, bits] of [
      [2, 39],
      [3, 48],
      [4, 57],
    ] as const) {
      const h = tableHarness(vtdss, { topLevel: top })
      expect(h.table.geometry.apertureEnd).toBe((1n << BigInt(bits)) - 1n)
      expect((h.table.hwInfo() as { aw: number }).aw).toBe(top - 1)
      expect(h.finish()).toBe(0)
    }
    expect(code(() => vtdss.init({ topLevel: 1 }))).toBe('EOPNOTSUPP')
  })

  it('the hardware needs R or W to see an entry: an SNP-only leaf faults; superpages without the capability are masked', () => {
    const h = tableHarness(vtdss, SS, { pgsizeBitmap: 1n << 12n })
    expect(h.table.pgsizeBitmap).toBe(1n << 12n)
    h.table.mapRange(0x20_0000n, 0x4000_0000n, 0x20_0000n, R | W)
    const e = h.table.pgtableWalk(0x20_0000n).at(-1) as { level: number; pa: bigint }
    expect(e.level).toBe(0)
    h.memory.write64(Number(e.pa), 0x4000_0800n)
    expect(h.table.walker().walk(h.table.root.pfn, 3, 0x200, Access.READ, 0).fault).toBe(
      WalkFault.NOT_PRESENT,
    )
    h.memory.write64(Number(e.pa), 0x4000_0003n)
    expect(h.finish()).toBe(0)
  })
})

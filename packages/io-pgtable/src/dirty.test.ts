/**
 * The records of the two kernel dirty walks as Linux 7.2 makes them, the ideal records,
 * and what the dirty-tracking hazard detector says about the difference
 * (`iommu_pt.h` `record_dirty`, `io-pgtable-arm.c` `visit_dirty` / `io_pgtable_visit`).
 */
import {
  DirtyHazardLog,
  type DirtyRecords,
  IOMMU_DIRTY_NO_CLEAR,
  IommuDirtyBitmap,
  IotlbGather,
  Prot,
} from '@iommu/core'
import { describe, expect, it } from 'vitest'
import { Access, HwAd } from './format.ts'
import { amdv1 } from './formats/amdv1.ts'
import { armLpae, IoPgtableQuirk } from './formats/arm-lpae.ts'
import { vtdss } from './formats/vtdss.ts'
import type { PageTable } from './page-table.ts'
import { tableHarness } from './testing/helpers.ts'

const RW = Prot.READ | Prot.WRITE
const MIB = 1n << 20n
const PG = 4096n

/** Read [iova, iova + size) in `mode`: the records (4 KiB pages) and the hazards. */
// biome-ignore lint/suspicious/noExplicitAny: any format's table
function read(pt: PageTable<any, any>, iova: bigint, size: bigint, mode: DirtyRecords, flags = 0) {
  const records: [number, number][] = []
  const log = new DirtyHazardLog()
  const hazards = log.begin(mode, {
    source: 'read_and_clear_dirty',
    hwptId: null,
    domain: null,
    iova,
    length: size,
    pageSize: 0n,
    data: 0n,
    clear: (flags & IOMMU_DIRTY_NO_CLEAR) === 0,
  })
  const gather = new IotlbGather()
  const dirty = new IommuDirtyBitmap(
    {
      set: (pfn, count, shift) =>
        records.push([pfn * 2 ** (shift - 12), count * 2 ** (shift - 12)]),
    },
    gather,
    { mode, hazards },
  )
  pt.readAndClearDirty(iova, size, flags, dirty)
  hazards?.end()
  const pages = (l: { toArray(): { iova: bigint; length: bigint }[] }) =>
    l.toArray().map((s) => [Number(s.iova / PG), Number(s.length / PG)])
  return {
    records,
    gather,
    hazards: log.entries.map((h) => ({
      kind: h.kind,
      count: h.count,
      lost: pages(h.lost),
      missed: pages(h.missed),
    })),
  }
}

/** Hardware writes to the pages `pfns` (sets the dirty state of their leaves). */
// biome-ignore lint/suspicious/noExplicitAny: any format's table
function write(pt: PageTable<any, any>, pfns: number[]): void {
  const w = pt.walker()
  for (const p of pfns) w.walk(pt.root.pfn, pt.root.level, p, Access.WRITE, HwAd.DIRTY)
}

const range = (first: number, n: number) => Array.from({ length: n }, (_, i) => first + i)

describe('io-pgtable-arm: the walk address moves by the block size (visit_dirty)', () => {
  /** [0, 2M) and [2M, 4M) blocks, [4M, 6M) 4 KiB pages; everything dirty. */
  function armRig() {
    const h = tableHarness(armLpae, { stage: 1, ias: 48, oas: 48, quirks: IoPgtableQuirk.ARM_HD })
    const pt = h.table
    pt.mapRange(0n, 0x4000_0000n, 2n * MIB, RW)
    pt.mapRange(2n * MIB, 0x4020_0000n, 2n * MIB, RW)
    pt.mapRange(4n * MIB, 0x4040_1000n, 2n * MIB, RW) // PA skewed by 4K: 4 KiB leaves
    // Fresh DBM leaves are writable-dirty: clean them as iommufd does on enable.
    pt.readAndClearDirty(0n, 6n * MIB, 0, new IommuDirtyBitmap(null, null))
    write(pt, [0, 512, ...range(1024, 512)])
    return { h, pt }
  }

  it('kernel: shifted records, a lost head, a table entered past its first 256 entries', () => {
    const { h, pt } = armRig()
    const r = read(pt, 1n * MIB, 5n * MIB, 'kernel')
    expect(r.records).toEqual([
      [256, 512], // (addr = 1M, 2M): past the first block's end
      [768, 512], // (addr = 3M, 2M): the second block shifted by 1M
      ...range(1280, 256).map((p) => [p, 1]), // the table from addr = 5M, index 256
    ])
    expect(r.hazards).toEqual([
      { kind: 'record-past-iopte', count: 2, lost: [[512, 256]], missed: [] },
      { kind: 'iopte-outside-query', count: 1, lost: [[0, 256]], missed: [] },
      { kind: 'walk-skipped', count: 256, lost: [], missed: [[1024, 256]] },
    ])
    // The skipped leaves are still dirty; the visited ones and both blocks are clean.
    const again = read(pt, 0n, 6n * MIB, 'kernel', IOMMU_DIRTY_NO_CLEAR)
    expect(again.records).toEqual(range(1024, 256).map((p) => [p, 1]))
    expect(h.finish()).toBe(0)
  })

  it('ideal: each leaf ∩ the query, nothing skipped', () => {
    const { h, pt } = armRig()
    const r = read(pt, 1n * MIB, 5n * MIB, 'ideal')
    expect(r.records).toEqual([[256, 256], [512, 512], ...range(1024, 512).map((p) => [p, 1])])
    expect(r.hazards).toEqual([
      { kind: 'iopte-outside-query', count: 1, lost: [[0, 256]], missed: [] },
    ])
    expect(read(pt, 0n, 6n * MIB, 'ideal').records).toEqual([])
    expect(h.finish()).toBe(0)
  })

  it('a hole fails with EINVAL, unless the shifted address steps over it', () => {
    const h = tableHarness(armLpae, { stage: 1, ias: 48, oas: 48, quirks: IoPgtableQuirk.ARM_HD })
    const pt = h.table
    pt.mapRange(0n, 0x4000_0000n, 2n * MIB, RW)
    pt.readAndClearDirty(0n, 2n * MIB, 0, new IommuDirtyBitmap(null, null))
    write(pt, [0])
    expect(() => read(pt, 1n * MIB, 3n * MIB, 'kernel')).toThrow(/^EINVAL/)
    // [1M, 3M): after the block the address is 3M, the end: the hole at [2M, 3M) is never
    // looked at. The ideal walk, aligned at 2M, finds it.
    write(pt, [0])
    expect(read(pt, 1n * MIB, 2n * MIB, 'kernel').records).toEqual([[256, 512]])
    write(pt, [0])
    expect(() => read(pt, 1n * MIB, 2n * MIB, 'ideal')).toThrow(/^EINVAL/)
    h.finish()
  })
})

describe('generic_pt record_dirty', () => {
  it('VT-d: a query starting inside a dirty 2 MiB leaf is recorded from its start, 2 MiB long', () => {
    const h = tableHarness(vtdss, { topLevel: 3, hwMaxVaBits: 48 })
    const pt = h.table
    pt.mapRange(0n, 0x4000_0000n, 4n * MIB, RW)
    write(pt, [100, 600])
    const r = read(pt, 1n * MIB, 3n * MIB, 'kernel')
    expect(r.records).toEqual([
      [256, 512],
      [512, 512],
    ])
    // The flush covers what was recorded.
    expect([r.gather.start, r.gather.end]).toEqual([1n * MIB, 4n * MIB - 1n])
    expect(r.hazards).toEqual([
      { kind: 'record-past-iopte', count: 1, lost: [], missed: [] },
      { kind: 'iopte-outside-query', count: 1, lost: [[0, 256]], missed: [] },
    ])
    write(pt, [100, 600])
    const i = read(pt, 1n * MIB, 3n * MIB, 'ideal')
    expect(i.records).toEqual([
      [256, 256],
      [512, 512],
    ])
    expect([i.gather.start, i.gather.end]).toEqual([0n, 4n * MIB - 1n])
    expect(h.finish()).toBe(0)
  })

  /** AMD v1 with contiguous leaves: `size` bytes at IOVA 0 (PA aligned). */
  function amd(size: bigint) {
    const h = tableHarness(amdv1, { startingLevel: 2 })
    h.table.mapRange(0n, 0x4000_0000n, size, RW)
    return { h, pt: h.table }
  }

  it('AMD v1 16K (4 replicas): fully covered, one item short; the last item is lost', () => {
    const { h, pt } = amd(16n * 1024n)
    write(pt, [3])
    const r = read(pt, 0n, 4n * PG, 'kernel')
    expect(r.records).toEqual([[0, 3]])
    expect(r.hazards).toEqual([{ kind: 'record-short', count: 1, lost: [[3, 1]], missed: [] }])
    // All four replicas were cleaned: the page the device wrote is never reported.
    expect(read(pt, 0n, 4n * PG, 'kernel').records).toEqual([])
    write(pt, [3])
    expect(read(pt, 0n, 4n * PG, 'ideal').records).toEqual([[0, 4]])
    expect(h.finish()).toBe(0)
  })

  it('AMD v1 16K: NO_CLEAR reports the same short record and the last item as missed', () => {
    const { h, pt } = amd(16n * 1024n)
    write(pt, [0])
    const r = read(pt, 0n, 4n * PG, 'kernel', IOMMU_DIRTY_NO_CLEAR)
    expect(r.records).toEqual([[0, 3]])
    expect(r.hazards).toEqual([{ kind: 'record-short', count: 1, lost: [], missed: [[3, 1]] }])
    h.finish()
  })

  it('AMD v1 16K, a query from the second item: records items 1..2, item 3 lost, item 0 outside', () => {
    const { h, pt } = amd(16n * 1024n)
    write(pt, [1])
    const r = read(pt, PG, 3n * PG, 'kernel')
    expect(r.records).toEqual([[1, 2]])
    expect(r.hazards).toEqual([
      { kind: 'record-short', count: 1, lost: [[3, 1]], missed: [] },
      { kind: 'iopte-outside-query', count: 1, lost: [[0, 1]], missed: [] },
    ])
    h.finish()
  })

  it('AMD v1 16K, a query ending inside the leaf: the record stops at the query end', () => {
    const { h, pt } = amd(16n * 1024n)
    write(pt, [1])
    const r = read(pt, 0n, 2n * PG, 'kernel')
    expect(r.records).toEqual([[0, 2]])
    expect(r.hazards).toEqual([
      { kind: 'iopte-outside-query', count: 1, lost: [[2, 2]], missed: [] },
    ])
    h.finish()
  })

  it('AMD v1 16K, a query starting at the last item: a zero-length record (index 3 | 3 = 3)', () => {
    const { h, pt } = amd(16n * 1024n)
    write(pt, [0])
    const r = read(pt, 3n * PG, PG, 'kernel')
    expect(r.records).toEqual([[3, 0]])
    expect(r.hazards).toEqual([
      { kind: 'record-short', count: 1, lost: [[3, 1]], missed: [] },
      { kind: 'iopte-outside-query', count: 1, lost: [[0, 3]], missed: [] },
    ])
    h.finish()
  })

  it('AMD v1 4M = 2 x 2M at level 1, a query starting 4K into it: 2M from the start', () => {
    const { h, pt } = amd(4n * MIB)
    expect(pt.pgtableWalk(0n).at(-1)?.level).toBe(1)
    write(pt, [7])
    const r = read(pt, PG, 4n * MIB - PG, 'kernel')
    // (min(0 | 1, end) - 0) items from the query start.
    expect(r.records).toEqual([[1, 512]])
    expect(r.hazards).toEqual([
      { kind: 'record-short', count: 1, lost: [[513, 511]], missed: [] },
      { kind: 'iopte-outside-query', count: 1, lost: [[0, 1]], missed: [] },
    ])
    h.finish()
  })
})

/**
 * The dirty scan's frame-at-a-time harvest (`harvestDirtyLeaves` + one
 * `IommuDirtyBitmap.recordList` per frame) against the scan one leaf at a time: on random
 * tables of every format with dirty tracking, random queries, both record modes, clear
 * and NO_CLEAR, with and without a batch-capable sink, the two give the same records in
 * the same order, the same errors, gather, record count and hazard log, and leave the
 * same table behind.
 */
import {
  type DirtyBitmapSink,
  DirtyHazardLog,
  type DirtyRecords,
  IOMMU_DIRTY_NO_CLEAR,
  IommuDirtyBitmap,
  IommuError,
  IotlbGather,
  Prot,
} from '@iommu/core'
import { afterEach, describe, expect, it } from 'vitest'
import { setOneLeafAtATime } from './dirty.ts'
import { Access, EntryType, HwAd } from './format.ts'
import { amdv1 } from './formats/amdv1.ts'
import { armLpae, IoPgtableQuirk } from './formats/arm-lpae.ts'
import { vtdss } from './formats/vtdss.ts'
import { x86_64 } from './formats/x86-64.ts'
import type { AnyPageTable } from './page-table.ts'
import { seededInts, tableHarness } from './testing/helpers.ts'

const RW = Prot.READ | Prot.WRITE

interface Rig {
  readonly name: string
  // biome-ignore lint/suspicious/noExplicitAny: any format's table
  readonly make: () => ReturnType<typeof tableHarness<any, any>>
  /** 4 KiB pages per smallest IOPTE. */
  readonly granule: number
}

const RIGS: readonly Rig[] = [
  { name: 'amdv1 (contiguous leaves)', make: () => tableHarness(amdv1, {}), granule: 1 },
  { name: 'vtdss', make: () => tableHarness(vtdss, { topLevel: 3 }), granule: 1 },
  ...([12, 14, 16] as const).map((g) => ({
    name: `arm-lpae S1 ${1 << (g - 10)}K`,
    make: () =>
      tableHarness(armLpae, {
        stage: 1,
        ias: 48,
        oas: 48,
        granule: (1 << g) as 4096 | 16384 | 65536,
        quirks: IoPgtableQuirk.ARM_HD,
      }),
    granule: 1 << (g - 12),
  })),
]

/** Map random runs (random lengths and alignments, so every page size occurs) with gaps. */
function build(rig: Rig, seed: number, span: number) {
  const h = rig.make()
  const pt = h.table
  const r = seededInts(seed)
  const g = rig.granule
  let cur = r(64) * g
  while (cur < span) {
    // Runs of up to 4 MiB, aligned to 2^k granules for the larger sizes.
    const align = g << r(10)
    cur = Math.ceil(cur / align) * align
    const len = (1 + r(1024)) * g
    if (cur + len > span) break
    pt.map(cur, 0x10_0000 + cur, len, RW)
    cur += len + (r(3) === 0 ? 0 : (1 + r(256)) * g)
  }
  // The hardware writes some pages (ARM DBM leaves also start dirty).
  const w = pt.walker()
  const writes = 1 + r(span / 8)
  for (let i = 0; i < writes; i++) {
    const p = r(span)
    if (pt.translate(p) >= 0) w.walk(pt.root.pfn, pt.root.level, p, Access.WRITE, HwAd.DIRTY)
  }
  return h
}

/** Every word of every frame of the table, in walk order. */
function tableWords(pt: AnyPageTable): number[] {
  const fmt = pt.format
  const p = pt.params
  const out: number[] = []
  const visit = (pfn: number, level: number) => {
    const items = 1 << fmt.numItemsLg2(level, p)
    for (let f = 0; f < Math.ceil(items / 512); f++) {
      const w = pt.memory.frameWords(pfn + f)
      for (let k = 0; k < Math.min(1024, 2 * items); k++) out.push(w[k] as number)
      for (let j = 0; j < Math.min(512, items); j++) {
        if (fmt.loadEntry(w, j, level, p) === EntryType.TABLE) {
          visit(fmt.tablePfn(w, j, level, p), level - 1)
        }
      }
    }
  }
  visit(pt.root.pfn, pt.root.level)
  return out
}

/** A sink that logs every record in order, in 4 KiB pages; with `batch`, some go by setList. */
function sink(batch: boolean): DirtyBitmapSink & { log: number[] } {
  const log: number[] = []
  const s: DirtyBitmapSink & { log: number[] } = {
    log,
    set(pfn, count, shift) {
      log.push(pfn * 2 ** (shift - 12), count * 2 ** (shift - 12))
    },
  }
  if (batch) {
    // Writes the records whose page is not 3 mod 7, stops at the others.
    s.setList = (pfn, count, shift, list, from) => {
      const n = list[0] as number
      let k = from
      for (; k <= n; k++) {
        const at = pfn + (list[k] as number) * count
        if (at % 7 === 3) return k
        log.push(at * 2 ** (shift - 12), count * 2 ** (shift - 12))
      }
      return k
    }
  }
  return s
}

/** One read: what it recorded, threw, gathered, and the hazards. */
function read(
  pt: AnyPageTable,
  ipfn: number,
  pages: number,
  flags: number,
  mode: DirtyRecords,
  batchSink: boolean,
) {
  const log = new DirtyHazardLog()
  const hazards = log.begin(mode, {
    source: 'read_and_clear_dirty',
    hwptId: null,
    domain: null,
    iova: BigInt(ipfn) << 12n,
    length: BigInt(pages) << 12n,
    pageSize: 0n,
    data: 0n,
    clear: (flags & IOMMU_DIRTY_NO_CLEAR) === 0,
  })
  const s = sink(batchSink)
  const gather = new IotlbGather()
  const dirty = new IommuDirtyBitmap(s, gather, { mode, hazards })
  let error: string | null = null
  try {
    pt.readAndClearDirtyPages(ipfn, pages, flags, dirty)
  } catch (e) {
    if (!(e instanceof IommuError)) throw e
    error = e.code
  }
  hazards?.end()
  return {
    error,
    records: dirty.records,
    log: s.log,
    gather: [gather.startUnit, gather.endUnit],
    hazards: log.entries.map((h) => h.toJSON()),
  }
}

afterEach(() => setOneLeafAtATime(false))

describe('the dirty harvest records exactly what one leaf at a time records', () => {
  for (const rig of RIGS) {
    it(`${rig.name}: random tables and queries`, () => {
      // 64 MiB of IOVA: level-0 tables whole and in part, every leaf size up to 2 MiB
      // (32 MiB blocks with 16K granules), holes.
      const span = 16384
      for (let seed = 1; seed <= 4; seed++) {
        const batched = build(rig, seed, span)
        const perLeaf = build(rig, seed, span)
        expect(tableWords(batched.table)).toEqual(tableWords(perLeaf.table))
        const r = seededInts(seed * 1000 + 7)
        let found = 0
        for (let q = 0; q < 20; q++) {
          const whole = r(4) === 0
          const ipfn = whole ? 0 : r(span)
          const pages = whole ? span : 1 + r(span - ipfn)
          const flags = r(3) === 0 ? IOMMU_DIRTY_NO_CLEAR : 0
          const mode: DirtyRecords = r(2) === 0 ? 'kernel' : 'ideal'
          const batchSink = r(2) === 0
          setOneLeafAtATime(false)
          const a = read(batched.table, ipfn, pages, flags, mode, batchSink)
          setOneLeafAtATime(true)
          const b = read(perLeaf.table, ipfn, pages, flags, mode, batchSink)
          expect(a).toEqual(b)
          expect(tableWords(batched.table)).toEqual(tableWords(perLeaf.table))
          found += a.records
          // New dirt between reads.
          const w1 = batched.table.walker()
          const w2 = perLeaf.table.walker()
          for (let i = 0; i < 64; i++) {
            const p = r(span)
            if (batched.table.translate(p) < 0) continue
            w1.walk(batched.table.root.pfn, batched.table.root.level, p, Access.WRITE, HwAd.DIRTY)
            w2.walk(perLeaf.table.root.pfn, perLeaf.table.root.level, p, Access.WRITE, HwAd.DIRTY)
          }
        }
        // The queries did find dirt (the comparison is not of empty reads).
        expect(found).toBeGreaterThan(0)
      }
    })
  }

  it('arm-lpae S2 and x86-64 (no dirty tracking) fail the same way', () => {
    const s2 = tableHarness(armLpae, { stage: 2, ias: 40, oas: 40 })
    const x86 = tableHarness(x86_64, { topLevel: 3 })
    for (const [h, code] of [
      [s2, 'EINVAL'],
      [x86, 'EOPNOTSUPP'],
    ] as const) {
      h.table.map(0, 0x100, 512, RW)
      for (const one of [false, true]) {
        setOneLeafAtATime(one)
        expect(read(h.table, 0, 512, 0, 'kernel', true).error).toBe(code)
      }
    }
  })
})

describe('a record that fails leaves the harvested leaves after it dirty', () => {
  it('the sink throws at the third record of a frame: two recorded and cleaned, the rest still dirty', () => {
    const h = tableHarness(vtdss, { topLevel: 3 })
    const pt = h.table
    pt.map(0, 0x100, 512, RW)
    const w = pt.walker()
    for (const p of [10, 20, 30, 40, 50]) w.walk(pt.root.pfn, pt.root.level, p, Access.WRITE, 2)
    const seen: number[] = []
    const failing: DirtyBitmapSink = {
      set(pfn) {
        if (pfn === 30) throw new IommuError('EDEADLK', 'test')
        seen.push(pfn)
      },
    }
    const gather = new IotlbGather()
    const dirty = new IommuDirtyBitmap(failing, gather)
    expect(() => pt.readAndClearDirtyPages(0, 512, 0, dirty)).toThrow(IommuError)
    expect(seen).toEqual([10, 20])
    // The failing record is counted, as record() counts it before its set.
    expect(dirty.records).toBe(3)
    // Pages 10 and 20 in 2 KiB units.
    expect([gather.startUnit, gather.endUnit]).toEqual([20, 41])
    // 30, 40 and 50 are still dirty: a NO_CLEAR read finds them.
    const again: number[] = []
    pt.readAndClearDirtyPages(
      0,
      512,
      IOMMU_DIRTY_NO_CLEAR,
      new IommuDirtyBitmap({ set: (pfn) => again.push(pfn) }, null),
    )
    expect(again).toEqual([30, 40, 50])
  })
})

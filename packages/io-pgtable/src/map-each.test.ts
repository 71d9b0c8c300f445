import {
  type DomainOps,
  IommuCore,
  IommuDomain,
  IommuError,
  MAP_SMALL,
  PhysicalMemory,
  Prot,
  SYNC_MAP_NOOP,
} from '@iommu/core'
import { describe, expect, it } from 'vitest'
import { pageTableDomainOps } from './domain-ops.ts'
import type { AnyPageTableFormat } from './format.ts'
import { amdv1 } from './formats/amdv1.ts'
import { armLpae } from './formats/arm-lpae.ts'
import { vtdss } from './formats/vtdss.ts'
import { x86_64 } from './formats/x86-64.ts'
import { type AnyPageTable, PageTable } from './page-table.ts'
import { seededInts } from './testing/helpers.ts'

const RW = Prot.READ | Prot.WRITE
const TB = 2 ** 28 // pages in 1 TiB

interface Side {
  readonly memory: PhysicalMemory
  readonly table: AnyPageTable
  readonly tops: number[]
}

function side(format: AnyPageTableFormat, cfg: unknown): Side {
  const memory = new PhysicalMemory({ size: 2 ** 43 })
  const tops: number[] = []
  const table = new PageTable(memory, format, cfg, {
    changeTop: (pfn, level) => {
      tops.push(pfn, level)
    },
  })
  return { memory, table, tops }
}

/** Every frame's reference count and contents, up to the next PFN the allocator hands out. */
function snapshot(s: Side): { next: number; frames: string[] } {
  const next = s.memory.allocFrame(0)
  s.memory.put(next)
  const frames: string[] = []
  for (let pfn = 0x100; pfn < next; pfn++) {
    const bytes = s.memory.peekFrame(pfn)
    let sum = 0
    if (bytes !== null)
      for (let i = 0; i < bytes.length; i += 4)
        sum =
          (sum * 31 +
            (bytes[i] ?? 0) +
            (bytes[i + 1] ?? 0) * 256 +
            (bytes[i + 2] ?? 0) * 65536 +
            (bytes[i + 3] ?? 0) * 16777216) %
          2 ** 48
    frames.push(`${s.memory.refCount(pfn)}:${bytes === null ? '-' : sum}`)
  }
  return { next, frames }
}

/** What a run of calls did: pages mapped, and the error (code, progress in pages). */
function outcome(fn: () => number): { done: number; code: string | null; progress: number } {
  try {
    return { done: fn(), code: null, progress: -1 }
  } catch (e) {
    if (!(e instanceof IommuError)) throw e
    return { done: -1, code: e.code, progress: Number((e.progress ?? 0n) >> 12n) }
  }
}

/** One-page maps in order, stopping at the first failure, as batch_iommu_map_small does. */
function perPage(t: AnyPageTable, ipfn: number, ppfn: number, pages: number): number {
  let i = 0
  try {
    for (; i < pages; i++) t.map(ipfn + i, ppfn + i, 1, RW)
  } catch (e) {
    if (!(e instanceof IommuError)) throw e
    throw new IommuError(e.code, 'per page', { progress: BigInt(i) << 12n })
  }
  return pages
}

// span: IOVA pages to play in; oa: output pages (the output size).
const CASES: {
  name: string
  format: AnyPageTableFormat
  cfg: unknown
  span: number
  oa?: number
}[] = [
  { name: 'AMD v1, top grows from level 1', format: amdv1, cfg: { startingLevel: 1 }, span: TB },
  {
    name: 'AMD v1, 32-bit VA',
    format: amdv1,
    cfg: { startingLevel: 2, hwMaxVaBits: 32 },
    span: 2 ** 20 + 4096,
  },
  {
    name: 'AMD v1 with contiguous sizes',
    format: amdv1,
    cfg: { startingLevel: 2, pgsizeBitmap: 0x1000n | 0x4000n | 0x10000n },
    span: 2 ** 22,
  },
  {
    name: 'x86-64 sign-extended 48-bit',
    format: x86_64,
    cfg: { topLevel: 3, hwMaxVaBits: 48, signExtend: true },
    span: 2 ** 36,
  },
  {
    name: 'VT-d second stage, 39-bit',
    format: vtdss,
    cfg: { topLevel: 2, hwMaxVaBits: 39 },
    span: 2 ** 27 + 4096,
  },
  {
    name: 'ARM S1 4K ias 32 oas 32',
    format: armLpae,
    cfg: { stage: 1, ias: 32, oas: 32 },
    span: 2 ** 20 + 4096,
    oa: 2 ** 20,
  },
  {
    name: 'ARM S2 4K ias 40 oas 36',
    format: armLpae,
    cfg: { stage: 2, ias: 40, oas: 36 },
    span: 2 ** 24,
    oa: 2 ** 24,
  },
]

describe('mapEach: runs of one-page maps, a table at a time', () => {
  for (const c of CASES) {
    it(`${c.name}: the same leaves, tables, root growth and error as one map per page`, () => {
      const codes = new Set<string | null>()
      for (let seed = 1; seed <= 12; seed++) {
        const r = seededInts(seed * 7919)
        const a = side(c.format, c.cfg)
        const b = side(c.format, c.cfg)
        // Something in the way: single pages and a large leaf, mapped alike on both sides.
        const base = r(Math.max(1, c.span - 4096))
        for (let k = 0; k < 3; k++) {
          const at = base + r(4096)
          const pa = 0x10_0000 + r(1 << 20)
          const n = 1 + r(3)
          expect(outcome(() => a.table.map(at, pa, n, RW))).toEqual(
            outcome(() => b.table.map(at, pa, n, RW)),
          )
        }
        if (seed % 3 === 0) {
          // A large leaf (where the format has 2 MiB pages).
          const at = base + 512 * (1 + r(4))
          const big = at - (at % 512)
          expect(outcome(() => a.table.map(big, 0x40_0000, 512, RW))).toEqual(
            outcome(() => b.table.map(big, 0x40_0000, 512, RW)),
          )
        }
        // The run: from inside the busy area or just below it, sometimes past the end of
        // the input or output space.
        const start = Math.max(0, base - r(600))
        const pages = 1 + r(seed % 4 === 0 ? 70_000 : 5000)
        const oa = c.oa ?? 2 ** 36
        const ppfn = seed % 5 === 0 ? oa - r(300) - 1 : r(oa / 4)
        const x = outcome(() => a.table.mapEach(start, ppfn, pages, RW))
        const y = outcome(() => perPage(b.table, start, ppfn, pages))
        expect(x).toEqual(y)
        expect(a.tops).toEqual(b.tops)
        expect(snapshot(a)).toEqual(snapshot(b))
        codes.add(x.code)
      }
      // The seeds reach both whole runs and failures part way.
      expect(codes.has(null)).toBe(true)
      expect(codes.size).toBeGreaterThan(1)
    })
  }

  it('runs past the top of the input space fail at the first page outside, growing first', () => {
    const a = side(amdv1, { startingLevel: 1 })
    const b = side(amdv1, { startingLevel: 1 })
    const start = 2 ** 40 - 700 // pages: below 2^52 bytes
    const x = outcome(() => a.table.mapEach(start, 0x1000, 2000, RW))
    const y = outcome(() => perPage(b.table, start, 0x1000, 2000))
    expect(x).toEqual(y)
    expect(a.tops).toEqual(b.tops)
    expect(a.tops.length).toBeGreaterThan(0)
    expect(snapshot(a)).toEqual(snapshot(b))
  })
})

describe('IommuCore.iommuMapSmall (batch_iommu_map_small)', () => {
  class D extends IommuDomain {
    table: AnyPageTable = null as unknown as AnyPageTable
    readonly synced: string[] = []
  }
  function domain(memory: PhysicalMemory, fast: boolean): D {
    const ops = {
      ...pageTableDomainOps<D>(amdv1, (d) => d.table),
      attachDev: () => {},
      iotlbSync: (d: D, g: { start: bigint; end: bigint; freelist: unknown[] }) => {
        d.synced.push(`${g.start}-${g.end}-${g.freelist.length}`)
      },
    } as DomainOps<D>
    if (!fast) delete ops[MAP_SMALL]
    const d = new D({ ops: ops as DomainOps<never> })
    d.table = new PageTable(
      memory,
      amdv1,
      { startingLevel: 2 },
      {
        changeTop: () => {},
        iotlbSync: (g) => d.ops.iotlbSync?.(d, g),
      },
    )
    d.pgsizeBitmap = d.table.pgsizeBitmap
    return d
  }

  it('maps 4 KiB IOPTEs only, and on a conflict unmaps what it mapped, like the per-page loop', () => {
    const core = new IommuCore()
    const ma = new PhysicalMemory({ size: 2 ** 40 })
    const mb = new PhysicalMemory({ size: 2 ** 40 })
    const fast = domain(ma, true)
    const slow = domain(mb, false)
    // A 2 MiB-aligned run of 4 MiB maps as 1024 leaves of 4 KiB, not two of 2 MiB.
    core.iommuMapSmall(fast, 0x4000_0000n, 0x8000_0000n, 0x40_0000n, RW)
    core.iommuMapSmall(slow, 0x4000_0000n, 0x8000_0000n, 0x40_0000n, RW)
    expect(fast.table.pgtableWalk(0x4020_0000n).length).toBe(
      slow.table.pgtableWalk(0x4020_0000n).length,
    )
    expect(fast.table.iovaToPhys(0x403f_f123n)).toBe(0x803f_f123n)
    // Something in the middle of the next run: both fail with the same errno, both undo.
    core.iommuMap(fast, 0x4060_3000n, 0x1000n, 0x1000n, RW)
    core.iommuMap(slow, 0x4060_3000n, 0x1000n, 0x1000n, RW)
    const errs = [fast, slow].map((d) => {
      try {
        core.iommuMapSmall(d, 0x4040_0000n, 0x9000_0000n, 0x40_0000n, RW)
        return null
      } catch (e) {
        return (e as IommuError).code
      }
    })
    expect(errs[0]).toBe('EADDRINUSE')
    expect(errs[1]).toBe(errs[0])
    expect(fast.synced).toEqual(slow.synced)
    expect(fast.table.iovaToPhys(0x4040_0000n)).toBe(0n)
    expect(slow.table.iovaToPhys(0x4040_0000n)).toBe(0n)
    expect(fast.table.iovaToPhys(0x4060_3000n)).toBe(0x1000n)
  })

  it('takes the fast path with an iotlbSyncMap only while SYNC_MAP_NOOP says it does nothing', () => {
    const core = new IommuCore()
    const run = (needSync: boolean, noopQuery: boolean) => {
      const d = domain(new PhysicalMemory({ size: 2 ** 40 }), true)
      let small = 0
      const ops = d.ops as DomainOps<D>
      const mapSmall = ops[MAP_SMALL] as NonNullable<DomainOps<D>[typeof MAP_SMALL]>
      ops[MAP_SMALL] = (...a) => {
        small++
        return mapSmall(...a)
      }
      ops.iotlbSyncMap = (dd: D, iova: bigint, size: bigint) => {
        if (needSync) dd.synced.push(`map ${iova}+${size}`)
      }
      if (noopQuery) ops[SYNC_MAP_NOOP] = () => !needSync
      core.iommuMapSmall(d, 0x4000_0000n, 0x8000_0000n, 0x10_0000n, RW)
      expect(d.table.iovaToPhys(0x400f_f123n)).toBe(0x800f_f123n)
      expect(d.table.pgtableWalk(0x4000_0000n).length).toBe(3)
      return { small, synced: d.synced.length }
    }
    // A sync that does nothing, said so: one call.
    expect(run(false, true)).toEqual({ small: 1, synced: 0 })
    // A sync that flushes, or one the domain says nothing about: a map and a sync per page.
    expect(run(true, true)).toEqual({ small: 0, synced: 256 })
    expect(run(false, false)).toEqual({ small: 0, synced: 0 })
  })
})

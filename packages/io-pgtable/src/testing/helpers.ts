/**
 * Test helpers for page tables: a harness with leak accounting, a leaf census, and the
 * reference map the property test compares against.
 *
 * @module
 */

import { IommuError, IotlbGather, PhysicalMemory } from '@iommu/core'
import { EntryType, type FormatParams, type PageTableFormat } from '../format.ts'
import { type AnyPageTable, PageTable } from '../page-table.ts'
import type { PageTableOptions } from '../table.ts'

/** A page table on fresh memory, with what its hooks saw. */
export interface TableHarness<Cfg, P extends FormatParams = FormatParams> {
  readonly memory: PhysicalMemory
  readonly table: PageTable<Cfg, P>
  /** A gather for unmaps; {@link TableHarness.finish} releases it. */
  readonly gather: IotlbGather
  /** Every `changeTop` call: [root pfn, level]. */
  readonly tops: [number, number][]
  /** Number of `iotlbSync` hook calls. */
  syncs: number
  /** Page-table frames allocated right now. */
  pgtableFrames(): number
  /** Release the gather's frames, free the table, and return the frames still allocated. */
  finish(): number
}

/** Create a {@link TableHarness} (throws what `new PageTable` throws). */
export function tableHarness<Cfg, P extends FormatParams>(
  format: PageTableFormat<Cfg, P>,
  cfg: Cfg,
  options: PageTableOptions = {},
): TableHarness<Cfg, P> {
  const memory = new PhysicalMemory()
  const tops: [number, number][] = []
  const gather = new IotlbGather()
  const h: TableHarness<Cfg, P> = {
    memory,
    table: undefined as unknown as PageTable<Cfg, P>,
    gather,
    tops,
    syncs: 0,
    pgtableFrames: () => memory.frameStats().byPurpose.pgtable,
    finish() {
      gather.releaseFreelist()
      h.table.free()
      return memory.frameStats().byPurpose.pgtable
    },
  }
  const table = new PageTable<Cfg, P>(memory, format, cfg, {
    changeTop: (pfn, level) => {
      tops.push([pfn, level])
    },
    iotlbSync: () => {
      h.syncs++
    },
    ...options,
  })
  ;(h as { table: PageTable<Cfg, P> }).table = table
  return h
}

/** The errno code `fn` throws (an `IommuError`), or undefined when it returns. */
export function errnoOf(fn: () => unknown): string | undefined {
  try {
    fn()
  } catch (e) {
    if (e instanceof IommuError) return e.code
    throw e
  }
  return undefined
}

/**
 * Count the leaves of a table by size (the kunit `count_valids`): a map from log2 bytes to
 * the number of IOPTEs (a contiguous leaf counts once).
 */
export function countLeaves(table: AnyPageTable): Map<number, number> {
  const t = table
  const fmt = t.format
  const p = t.params
  const out = new Map<number, number>()
  const visit = (pfn: number, level: number, items: number) => {
    for (let idx = 0; idx < 1 << items; ) {
      const w = t.memory.frameWords(pfn + (idx >>> 9))
      const j = idx & 511
      const type = fmt.loadEntry(w, j, level, p)
      if (type === EntryType.TABLE) {
        visit(fmt.tablePfn(w, j, level, p), level - 1, fmt.numItemsLg2(level - 1, p))
        idx++
      } else if (type === EntryType.OA) {
        const c = fmt.entryNumContigLg2(w, j, level, p)
        const lg2 = p.granuleLg2 + p.bitsPerLevel * level + c
        out.set(lg2, (out.get(lg2) ?? 0) + 1)
        idx = (idx & ~((1 << c) - 1)) + (1 << c)
      } else {
        idx++
      }
    }
  }
  const root = t.root
  visit(root.pfn, root.level, fmt.numItemsLg2(root.level, p))
  return out
}

/** Total IOPTEs of a table. */
export function leafTotal(table: AnyPageTable): number {
  let n = 0
  for (const v of countLeaves(table).values()) n += v
  return n
}

/** One mapping of the reference: pages [start, start + pages) → [pa, ...). */
export interface RefMapping {
  readonly start: number
  readonly pages: number
  readonly pa: number
  readonly prot: number
}

/** The reference the property test checks a table against: a list of disjoint mappings. */
export class ReferenceMap {
  readonly mappings: RefMapping[] = []

  /** The mapping containing page `ipfn`, if any. */
  find(ipfn: number): RefMapping | undefined {
    return this.mappings.find((m) => ipfn >= m.start && ipfn < m.start + m.pages)
  }

  /** True when [start, start + pages) overlaps a mapping. */
  overlaps(start: number, pages: number): boolean {
    return this.mappings.some((m) => start < m.start + m.pages && m.start < start + pages)
  }

  /** Add a mapping. */
  add(m: RefMapping): void {
    this.mappings.push(m)
  }

  /** Remove the mapping starting at `start`. */
  remove(start: number): void {
    const i = this.mappings.findIndex((m) => m.start === start)
    if (i >= 0) this.mappings.splice(i, 1)
  }

  /** The expected output page of `ipfn`: -1 when unmapped. */
  translate(ipfn: number): number {
    const m = this.find(ipfn)
    return m === undefined ? -1 : m.pa + (ipfn - m.start)
  }
}

/** A small seeded PRNG (mulberry32) for tests: an integer in [0, n) per call. */
export function seededInts(seed: number): (n: number) => number {
  let a = seed >>> 0
  return (n) => {
    a = (a + 0x6d2b_79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4_294_967_296) * n)
  }
}

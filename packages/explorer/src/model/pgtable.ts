/**
 * Reading an IO page table for display, one table at a time, through its
 * `@iommu/io-pgtable` format: which entries are present, what they point to, leaf sizes,
 * contiguous (replicated) leaves, and the hardware-visible A/D state. It only peeks at
 * memory: viewing a table never materializes a frame or sets a bit.
 *
 * @module
 */

import type { PhysicalMemory } from '@iommu/core'
import {
  type AnyPageTable,
  type AnyPageTableFormat,
  EntryType,
  type FormatParams,
  PageTable,
} from '@iommu/io-pgtable'
import type { Decoded } from '../decode/bitfield.ts'
import { ACCESSED_BIT, decodePte, type PteKind } from '../decode/pte.ts'

/** What the tree needs of a page table. */
export interface TableSource {
  readonly format: AnyPageTableFormat
  readonly params: FormatParams
  readonly memory: PhysicalMemory
  /** Root table page number and level. */
  readonly rootPfn: number
  readonly rootLevel: number
  /** ARM stage (1 or 2); 1 for other formats. */
  readonly stage: 1 | 2
}

/** The table source of a `PageTable`. */
export function tableSource(pt: AnyPageTable): TableSource {
  const root = pt.root
  const stage = (pt.params as { stage?: number }).stage === 2 ? 2 : 1
  return {
    format: pt.format,
    params: pt.params,
    memory: pt.memory,
    rootPfn: root.pfn,
    rootLevel: root.level,
    stage,
  }
}

/** The page table behind a domain, if the domain has one in memory (`domain.pt`). */
export function pageTableOf(domain: unknown): AnyPageTable | null {
  const pt = (domain as { pt?: unknown } | null)?.pt
  return pt instanceof PageTable ? pt : null
}

/** One present entry (or one run of replicas of a contiguous leaf). */
export interface PtRow {
  /** Index of the first entry in its table. */
  readonly index: number
  /** Replicated entries this row stands for (1 unless a contiguous leaf). */
  readonly replicas: number
  readonly level: number
  /** Physical address of the (first) entry. */
  readonly pa: number
  /** The raw entry (the first replica). */
  readonly raw: bigint
  /** Every replica's raw value (hardware may set D in any of them). */
  readonly replicaRaw: readonly bigint[]
  /** First IOVA the entry translates. */
  readonly iova: bigint
  readonly kind: PteKind | 'reserved'
  /** Child table page number (tables). */
  readonly childPfn: number
  /** Output page number (leaves). */
  readonly oaPfn: number
  /** log2 of the bytes the entry (all replicas) maps or spans. */
  readonly sizeLg2: number
  /** Accessed as the hardware left it (A / AF), or null when the format has no such bit. */
  readonly accessed: boolean | null
  /** Dirty as the format's dirty tracking reads it (any replica), leaves only. */
  readonly dirty: boolean | null
}

/** log2 of the bytes one item at `level` covers. */
export function itemLg2(p: FormatParams, level: number): number {
  return p.granuleLg2 + p.bitsPerLevel * level
}

function frameView(memory: PhysicalMemory, pfn: number): Uint32Array {
  const bytes = memory.peekFrame(pfn)
  if (bytes === null) return new Uint32Array(1024)
  return new Uint32Array(bytes.buffer, bytes.byteOffset, 1024)
}

function raw64(w: Uint32Array, j: number): bigint {
  return (BigInt(w[2 * j + 1] as number) << 32n) | BigInt(w[2 * j] as number)
}

/**
 * The present entries of the table at `pfn` (level `level`, translating from `iovaBase`),
 * contiguous leaves folded into one row each.
 */
export function readTable(src: TableSource, pfn: number, level: number, iovaBase: bigint): PtRow[] {
  const { format: f, params: p, memory } = src
  const items = 2 ** f.numItemsLg2(level, p)
  const item = itemLg2(p, level)
  const rows: PtRow[] = []
  for (let i = 0; i < items; ) {
    const framePfn = pfn + Math.floor(i / 512)
    const w = frameView(memory, framePfn)
    const j = i % 512
    if (((w[2 * j] as number) | (w[2 * j + 1] as number)) === 0) {
      i++
      continue
    }
    const type = f.hwEntryType(w, j, level, p)
    const raw = raw64(w, j)
    const pa = framePfn * 4096 + j * 8
    const iova = iovaBase + (BigInt(i) << BigInt(item))
    let kind: PtRow['kind']
    let replicas = 1
    let childPfn = -1
    let oaPfn = -1
    if (type === EntryType.TABLE) {
      kind = 'table'
      childPfn = f.tablePfn(w, j, level, p)
    } else if (type === EntryType.OA) {
      kind = 'leaf'
      replicas = 2 ** f.entryNumContigLg2(w, j, level, p)
      oaPfn = f.entryOaPfn(w, j, level, p)
    } else if (type === EntryType.EMPTY) {
      i++
      continue
    } else {
      kind = 'reserved'
    }
    // A contiguous leaf starts at an aligned index; a stray replica shows alone.
    if (i % replicas !== 0) replicas = 1
    const replicaRaw: bigint[] = []
    for (let k = 0; k < replicas; k++) replicaRaw.push(raw64(w, j + k))
    const aBit = ACCESSED_BIT[f.name]
    const dirty =
      kind === 'leaf' && f.isWriteDirty !== undefined ? f.isWriteDirty(w, j, level, p) : null
    rows.push({
      index: i,
      replicas,
      level,
      pa,
      raw,
      replicaRaw,
      iova,
      kind,
      childPfn,
      oaPfn,
      sizeLg2: item + Math.log2(replicas),
      accessed: aBit === undefined ? null : ((w[2 * j] as number) & (1 << aBit)) !== 0,
      dirty,
    })
    i += replicas
  }
  return rows
}

/** Bit-by-bit decode of a row's (first) entry. */
export function decodeRow(src: TableSource, row: PtRow): Decoded {
  const span = row.replicas > 1 ? `${row.index}..${row.index + row.replicas - 1}` : `${row.index}`
  return decodePte(
    src.format.name,
    row.kind === 'table' ? 'table' : 'leaf',
    row.raw,
    row.pa,
    `${row.kind === 'table' ? 'Table entry' : 'Leaf'} ${span} at level ${row.level}`,
    src.stage,
  )
}

/** Totals over a whole table tree, for the summary line. */
export interface TreeStats {
  tables: number
  leaves: number
  /** Leaf count per size (log2 bytes). */
  readonly bySize: Map<number, number>
  dirtyLeaves: number
  accessedLeaves: number
}

/** Walk the whole tree from the root and count tables and leaves. */
export function treeStats(src: TableSource): TreeStats {
  const s: TreeStats = {
    tables: 0,
    leaves: 0,
    bySize: new Map(),
    dirtyLeaves: 0,
    accessedLeaves: 0,
  }
  const visit = (pfn: number, level: number, base: bigint) => {
    s.tables++
    for (const r of readTable(src, pfn, level, base)) {
      if (r.kind === 'table') visit(r.childPfn, level - 1, r.iova)
      else if (r.kind === 'leaf') {
        s.leaves++
        s.bySize.set(r.sizeLg2, (s.bySize.get(r.sizeLg2) ?? 0) + 1)
        if (r.dirty) s.dirtyLeaves++
        if (r.accessed) s.accessedLeaves++
      }
    }
  }
  visit(src.rootPfn, src.rootLevel, 0n)
  return s
}

/**
 * The rows a walk for `iova` passes, root first (each row's table is the previous row's
 * child): what the hardware reads to translate it.
 */
export function walkRows(src: TableSource, iova: bigint): PtRow[] {
  const out: PtRow[] = []
  let pfn = src.rootPfn
  let base = 0n
  for (let level = src.rootLevel; level >= 0; level--) {
    const rows = readTable(src, pfn, level, base)
    const lg2 = BigInt(itemLg2(src.params, level))
    const hit = rows.find((r) => iova >= r.iova && iova < r.iova + (BigInt(r.replicas) << lg2))
    if (hit === undefined) break
    out.push(hit)
    if (hit.kind !== 'table') break
    pfn = hit.childPfn
    base = hit.iova
  }
  return out
}

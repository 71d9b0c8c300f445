/**
 * Read-and-clear-dirty (internal): the two kernel walks, with the records they make.
 *
 * Each write-dirty IOPTE found is handed to `IommuDirtyBitmap.recordLeaf` with two
 * records: the one the kernel makes and the ideal one (the IOPTE ∩ the query); the
 * recorder writes one of them (the machine's `dirtyRecords` mode) and tells the hazard
 * detector when they differ. Unless `IOMMU_DIRTY_NO_CLEAR`, the IOPTE is made
 * write-clean whole (every replica of a contiguous leaf).
 *
 * `'generic-pt'` (`iommu_pt.h` `__read_and_clear_dirty` / `record_dirty`, as read in 7.2):
 * the walk's address (`range->va`) is the query start for the first entry it visits and
 * the entry's base after that (`pt_index_to_va`); a record is `(va, item size)`, so the
 * first IOPTE of a walk that starts inside it is recorded from the query start and past
 * its end. A contiguous leaf (AMD v1 NextLevel 7) is recorded up to
 * `min(index | (2^n - 1), end_index)` as an exclusive end: a leaf covered to its last item
 * is recorded one item short, and a walk that starts at the last item records zero bytes;
 * the iterator then skips the whole leaf (`pt_next_entry`). Holes are skipped.
 *
 * `'io-pgtable-arm'` (`arm_lpae_read_and_clear_dirty`, `__arm_lpae_iopte_walk`,
 * `io_pgtable_visit`, `visit_dirty`): one address `addr` runs through the walk, starting at
 * the query start; each leaf is recorded as `(addr, block size)` and then
 * `addr += block size`, so after a first leaf entered in its middle every following leaf
 * of that level is recorded shifted by the same offset, and a table entered at a shifted
 * address is walked from the entry holding it (its first entries are never visited). A
 * hole fails with EINVAL (what was recorded before stays recorded).
 *
 * Addresses are 4 KiB page numbers: a query that does not start on a 4 KiB boundary (the
 * raw API only; iommufd's are aligned to the IO page size) starts at its page.
 *
 * At level 0 the scan runs on the format's `skipCleanLeaves` accelerator: one call per
 * frame plus one per entry that needs attention.
 *
 * @module
 */

import { IOMMU_DIRTY_NO_CLEAR, type IommuDirtyBitmap, IommuError } from '@iommu/core'
import { lowBits, PAGE_SHIFT, pow2, shr } from './bits.ts'
import { EntryType } from './format.ts'
import type { TableCore } from './table.ts'

interface DirtyCtx {
  readonly t: TableCore
  /** First and last page of the query. */
  readonly start: number
  readonly last: number
  readonly clear: boolean
  readonly dirty: IommuDirtyBitmap
  /** io-pgtable-arm: the walk's address (`walk_data->addr`), in pages. */
  addr: number
  /** io-pgtable-arm: follow the kernel's address arithmetic (else stay aligned). */
  readonly shifted: boolean
  /** The leaves of one frame harvested and not recorded yet: `list[1..list[0]]`. */
  readonly list: Uint16Array
  /** Record one leaf at a time (the reference scan, for tests). */
  readonly perLeaf: boolean
  /** The format's `harvestDirtyLeaves`. */
  readonly harvest: NonNullable<TableCore['fmt']['harvestDirtyLeaves']>
  /** Entries of a level-0 table, and pages of one of its items. */
  readonly leafItems: number
  readonly leafPages: number
}

let oneLeafAtATime = false

/**
 * Internal, for tests: scan level 0 one leaf at a time (`skipCleanLeaves`, then a record
 * per dirty leaf), the reference the frame-at-a-time harvest must equal.
 */
export function setOneLeafAtATime(on: boolean): void {
  oneLeafAtATime = on
}

/** Record the write-dirty leaf `[l0, l1)` recorded by the kernel as `[k0, k0 + kLen)`. */
function recordLeaf(c: DirtyCtx, l0: number, l1: number, k0: number, kLen: number): void {
  const i0 = Math.max(l0, c.start)
  const i1 = l1 <= c.last ? l1 : c.last + 1
  c.dirty.recordLeaf(l0, l1 - l0, k0, kLen, i0, i1 - i0, PAGE_SHIFT)
}

/**
 * generic_pt: look at the entry at table index `idx` of one frame (any item of a
 * contiguous leaf); record and clean its leaf if it is write-dirty. `from` is the first
 * index the walk visits in this table and `va` the walk's address there; `end` the
 * table's end index (`pts->end_index`). Returns the next index (past a contiguous leaf).
 */
function visitEntry(
  c: DirtyCtx,
  w: Uint32Array,
  idx: number,
  level: number,
  base: number,
  itemPages: number,
  from: number,
  va: number,
  end: number,
): number {
  const t = c.t
  const fmt = t.fmt
  const p = t.p
  const j = idx & 511
  if (fmt.loadEntry(w, j, level, p) !== EntryType.OA) return idx + 1
  const n = 1 << fmt.entryNumContigLg2(w, j, level, p)
  const head = idx & ~(n - 1)
  if ((fmt.isWriteDirty as NonNullable<typeof fmt.isWriteDirty>)(w, j, level, p)) {
    // The kernel visits the head, or the walk's first index when it starts inside the leaf.
    const v = Math.max(head, from)
    const k0 = v === from ? va : base + v * itemPages
    // record_dirty: the item size; a contiguous leaf up to its last index, exclusive.
    const kLen = n === 1 ? itemPages : (Math.min(v | (n - 1), end) - v) * itemPages
    const l0 = base + head * itemPages
    recordLeaf(c, l0, l0 + n * itemPages, k0, kLen)
    if (c.clear) (fmt.makeWriteClean as NonNullable<typeof fmt.makeWriteClean>)(w, j, level, p)
  }
  return head + n
}

/** generic_pt: walk the table at `tablePfn` from page `va` (the walk's address). */
function dirtyTable(c: DirtyCtx, level: number, tablePfn: number, va: number): void {
  const t = c.t
  const fmt = t.fmt
  const p = t.p
  const itemPages = pow2(t.itemShift[level] as number)
  const base = t.tableBase(va, level)
  const from = t.index(va, level)
  const end = t.endIndex(base, c.last, level)
  if (level === 0) {
    leafScan(c, tablePfn, from, end, base, itemPages, va)
    return
  }
  let idx = from
  let w = t.frame(tablePfn, idx)
  while (idx < end) {
    const j = idx & 511
    if (j === 0 && idx !== from) w = t.frame(tablePfn, idx)
    if (fmt.loadEntry(w, j, level, p) === EntryType.TABLE) {
      // pt_descend with range->va: the query start on the first entry, else the entry base.
      const l0 = base + idx * itemPages
      const child = fmt.tablePfn(w, j, level, p)
      if (level === 1 && (idx !== from || va === l0) && l0 + itemPages - 1 <= c.last) {
        leafTable(c, child, l0)
      } else dirtyTable(c, level - 1, child, idx === from ? va : l0)
      idx++
    } else {
      idx = visitEntry(c, w, idx, level, base, itemPages, from, va, end)
    }
  }
}

/**
 * A whole level-0 table inside the query, walked from its first entry (both walks, all
 * modes): every leaf is recorded as itself.
 */
function leafTable(c: DirtyCtx, tablePfn: number, base: number): void {
  const items = c.leafItems
  if (items === 512 && !c.perLeaf) {
    // One frame of 4 KiB leaves (the common case): the harvest straight away.
    const w = c.t.frame(tablePfn, 0)
    const list = c.list
    const k = c.harvest(w, 0, 512, c.clear, list, c.t.p)
    if (list[0] !== 0) flush(c, w, base, 1)
    if (k < 512) scanLeaves(c, tablePfn, k, 512, base, 1, 0, base, 512)
    return
  }
  scanLeaves(c, tablePfn, 0, items, base, c.leafPages, 0, base, items)
}

/**
 * Level 0: leaves and holes in `[from, end)`, scanned a frame at a time with the
 * accelerator. generic_pt skips holes; io-pgtable-arm (`c.shifted` false or an aligned
 * address) fails on them.
 *
 * The leaves that lie whole in the query and are recorded as themselves (every one but
 * possibly the first and the last) are harvested a frame at a time: the format's
 * `harvestDirtyLeaves` lists them and cleans them in one pass, and
 * `IommuDirtyBitmap.recordList` records them, in order, before anything after them is
 * looked at: the same records, hazards and gather as one record per leaf.
 */
function leafScan(
  c: DirtyCtx,
  tablePfn: number,
  from: number,
  end: number,
  base: number,
  itemPages: number,
  va: number,
): void {
  const t = c.t
  const fmt = t.fmt
  const p = t.p
  const arm = fmt.algorithm === 'io-pgtable-arm'
  let idx = from
  let fastEnd = end
  const items = 1 << (t.itemsLg2[0] as number)
  const contig = (t.contigMask[0] as number) > 1
  if (contig && (from !== 0 || end !== items)) {
    // Contiguous leaves: where the range starts or ends inside a table, the first and the
    // last may have their dirty replica outside it, so look at them whole.
    idx = visitEntry(c, t.frame(tablePfn, idx), idx, 0, base, itemPages, from, va, end)
    if (idx < end) {
      const w = t.frame(tablePfn, end - 1)
      const j = (end - 1) & 511
      if (fmt.loadEntry(w, j, 0, p) === EntryType.OA) {
        const n = 1 << fmt.entryNumContigLg2(w, j, 0, p)
        const head = (end - 1) & ~(n - 1)
        if (head + n > end) fastEnd = Math.max(idx, head)
      }
    }
  }
  if (itemPages !== 1) {
    // Items larger than a page: the walk may enter the first inside it and the query may
    // end inside the last; their records are not the leaf: look at them alone.
    if (idx === from && idx < fastEnd && base + idx * itemPages !== va) {
      const w = t.frame(tablePfn, idx)
      if (arm && fmt.loadEntry(w, idx & 511, 0, p) !== EntryType.OA) holeAt(base + idx * itemPages)
      idx = visitEntry(c, w, idx, 0, base, itemPages, from, va, end)
    }
    if (fastEnd > idx && base + fastEnd * itemPages - 1 > c.last) fastEnd--
  }
  scanLeaves(c, tablePfn, idx, fastEnd, base, itemPages, from, va, end)
  idx = Math.max(idx, fastEnd)
  while (idx < end) {
    const w = t.frame(tablePfn, idx)
    if (arm && fmt.loadEntry(w, idx & 511, 0, p) !== EntryType.OA) holeAt(base + idx * itemPages)
    idx = visitEntry(c, w, idx, 0, base, itemPages, from, va, end)
  }
}

/**
 * Level 0, entries `[first, fastEnd)` (`from`, `va` and `end` as in `visitEntry`), a frame at
 * a time: the harvest, and what it stops at looked at alone after the leaves before it are
 * recorded. With `c.perLeaf` (the reference for tests) `skipCleanLeaves` finds each dirty
 * leaf and it is recorded alone.
 */
function scanLeaves(
  c: DirtyCtx,
  tablePfn: number,
  first: number,
  fastEnd: number,
  base: number,
  itemPages: number,
  from: number,
  va: number,
  end: number,
): void {
  const t = c.t
  const fmt = t.fmt
  const p = t.p
  const arm = fmt.algorithm === 'io-pgtable-arm'
  const harvest = fmt.harvestDirtyLeaves as NonNullable<typeof fmt.harvestDirtyLeaves>
  const skip = fmt.skipCleanLeaves as NonNullable<typeof fmt.skipCleanLeaves>
  const clean = fmt.makeWriteClean as NonNullable<typeof fmt.makeWriteClean>
  const contig = (t.contigMask[0] as number) > 1
  const perLeaf = c.perLeaf
  const list = c.list
  const clear = c.clear
  let idx = first
  while (idx < fastEnd) {
    // One frame of the table: its words are looked up once, whatever it holds.
    const w = t.frame(tablePfn, idx)
    const frameBase = idx & ~511
    const stop = Math.min(fastEnd - frameBase, 512)
    let j = idx & 511
    while (j < stop) {
      let k: number
      if (perLeaf) k = skip(w, j, stop, 0, p)
      else {
        k = harvest(w, j, stop, clear, list, p)
        // Record what was harvested before anything after it.
        if (list[0] !== 0) flush(c, w, base + frameBase * itemPages, itemPages)
      }
      if (k >= stop) break
      // A hole, or (harvest) a write-dirty contiguous leaf, or (skip) any write-dirty leaf.
      const at = frameBase + k
      if (fmt.loadEntry(w, k, 0, p) !== EntryType.OA) {
        if (arm) holeAt(base + at * itemPages)
        j = k + 1
      } else if (
        perLeaf &&
        itemPages === 1 &&
        !(contig && fmt.entryNumContigLg2(w, k, 0, p) !== 0)
      ) {
        c.dirty.record(base + at, 1, PAGE_SHIFT)
        if (clear) clean(w, k, 0, p)
        j = k + 1
      } else j = visitEntry(c, w, at, 0, base, itemPages, from, va, end) - frameBase
    }
    idx = frameBase + stop
  }
}

/**
 * Record the leaves harvested into `c.list` from the frame `w` whose first entry maps page
 * `pfn`. If a record fails (the bitmap's livelock), the leaves not recorded are made
 * write-dirty again, as a scan one leaf at a time would have left them.
 */
function flush(c: DirtyCtx, w: Uint32Array, pfn: number, itemPages: number): void {
  const list = c.list
  const n = list[0] as number
  try {
    c.dirty.recordList(pfn, itemPages, PAGE_SHIFT, list)
  } catch (e) {
    if (c.clear) {
      const fmt = c.t.fmt
      const dirty = fmt.makeWriteDirty as NonNullable<typeof fmt.makeWriteDirty>
      for (let k = (list[0] as number) + 1; k <= n; k++) dirty(w, list[k] as number, 0, c.t.p)
    }
    list[0] = 0
    throw e
  }
}

function holeAt(pfn: number): never {
  throw new IommuError('EINVAL', `no IOPTE at IOVA 0x${(BigInt(pfn) << 12n).toString(16)}`)
}

/**
 * io-pgtable-arm: `__arm_lpae_iopte_walk` over the table at `tablePfn` from `c.addr`, while
 * `c.addr` is in the query. Leaves are recorded at `c.addr`, which then moves by the block
 * size; with `c.shifted` false (ideal records) it moves to the leaf's end instead.
 */
function armTable(c: DirtyCtx, level: number, tablePfn: number): void {
  const t = c.t
  const fmt = t.fmt
  const p = t.p
  const shift = t.itemShift[level] as number
  const itemPages = pow2(shift)
  const base = t.tableBase(c.addr, level)
  const n = 1 << (t.itemsLg2[level] as number)
  let idx = t.index(c.addr, level)
  let w = t.frame(tablePfn, idx)
  while (idx < n && c.addr <= c.last) {
    const l0 = base + idx * itemPages
    if (level === 0 && c.addr === l0) {
      // An aligned address stays aligned through level-0 leaves: the generic scan.
      const end = t.endIndex(base, c.last, 0)
      leafScan(c, tablePfn, idx, end, base, itemPages, c.addr)
      c.addr = base + end * itemPages
      return
    }
    const j = idx & 511
    if (j === 0) w = t.frame(tablePfn, idx)
    const type = fmt.loadEntry(w, j, level, p)
    if (type === EntryType.OA) {
      if ((fmt.isWriteDirty as NonNullable<typeof fmt.isWriteDirty>)(w, j, level, p)) {
        // visit_dirty: iommu_dirty_bitmap_record(walk_data->addr, size).
        recordLeaf(c, l0, l0 + itemPages, c.addr, itemPages)
        if (c.clear) (fmt.makeWriteClean as NonNullable<typeof fmt.makeWriteClean>)(w, j, level, p)
      }
      c.addr = c.shifted ? c.addr + itemPages : l0 + itemPages
    } else if (type === EntryType.TABLE) {
      const child = fmt.tablePfn(w, j, level, p)
      if (level === 1 && c.addr === l0 && l0 + itemPages - 1 <= c.last) {
        // A whole level-0 table from its first entry: the address stays aligned.
        leafTable(c, child, l0)
        c.addr = l0 + itemPages
        idx++
        continue
      }
      if (c.shifted && c.dirty.hazards !== null) {
        // Entered at a shifted address: the child entries before it are never visited.
        const childShift = t.itemShift[level - 1] as number
        const from = Math.max(l0, c.start)
        const to = c.addr - lowBits(c.addr, childShift)
        if (to > from) skipped(c, level - 1, child, from, to - 1)
      }
      armTable(c, level - 1, child)
    } else {
      holeAt(l0)
    }
    idx++
  }
}

/** Report the write-dirty leaves of pages `[from, last]` under a table the walk skipped. */
function skipped(c: DirtyCtx, level: number, tablePfn: number, from: number, last: number): void {
  const t = c.t
  const fmt = t.fmt
  const p = t.p
  const h = c.dirty.hazards
  if (h === null) return
  const itemPages = pow2(t.itemShift[level] as number)
  const base = t.tableBase(from, level)
  const end = t.endIndex(base, last, level)
  for (let idx = t.index(from, level); idx < end; idx++) {
    const w = t.frame(tablePfn, idx)
    const j = idx & 511
    const type = fmt.loadEntry(w, j, level, p)
    const l0 = base + idx * itemPages
    if (type === EntryType.TABLE) {
      skipped(
        c,
        level - 1,
        fmt.tablePfn(w, j, level, p),
        Math.max(l0, from),
        Math.min(l0 + itemPages - 1, last),
      )
    } else if (
      type === EntryType.OA &&
      (fmt.isWriteDirty as NonNullable<typeof fmt.isWriteDirty>)(w, j, level, p)
    ) {
      h.setLeaf(l0, itemPages, PAGE_SHIFT)
      h.notVisited('walk-skipped', h.leafStart, h.leafEnd)
    }
  }
}

/**
 * read_and_clear_dirty over pages [ipfn, ipfn + pages).
 *
 * @throws EOPNOTSUPP - generic_pt format without dirty tracking; EINVAL - io-pgtable-arm
 *   format or stage without it, an empty range, an IOVA above ias, a hole (ARM); EOVERFLOW -
 *   the range wraps; ERANGE - outside the input space (generic_pt)
 */
export function readAndClearDirty(
  t: TableCore,
  ipfn: number,
  pages: number,
  flags: number,
  dirty: IommuDirtyBitmap,
): void {
  const arm = t.fmt.algorithm === 'io-pgtable-arm'
  if (arm) {
    // arm_lpae_read_and_clear_dirty: size, then range against ias, then the stage.
    if (pages <= 0) throw new IommuError('EINVAL', 'empty range')
    if (shr(ipfn + pages - 1, t.p.vaBits - PAGE_SHIFT) !== 0) {
      throw new IommuError('EINVAL', 'range above the input size')
    }
    if (!t.dirty)
      throw new IommuError('EINVAL', `${t.fmt.name}: no dirty tracking in this configuration`)
  } else {
    if (!t.dirty) throw new IommuError('EOPNOTSUPP', `${t.fmt.name} has no dirty tracking`)
    if (pages <= 0) throw new IommuError('EINVAL', 'empty range')
    if (ipfn + pages > pow2(52)) throw new IommuError('EOVERFLOW', 'range wraps')
    if (!t.inRange(ipfn, ipfn + pages - 1))
      throw new IommuError('ERANGE', 'outside the input space')
  }
  const c: DirtyCtx = {
    t,
    start: ipfn,
    last: ipfn + pages - 1,
    clear: (flags & IOMMU_DIRTY_NO_CLEAR) === 0,
    dirty,
    addr: ipfn,
    shifted: dirty.mode === 'kernel',
    list: new Uint16Array(513),
    perLeaf: oneLeafAtATime,
    harvest: t.fmt.harvestDirtyLeaves as NonNullable<typeof t.fmt.harvestDirtyLeaves>,
    leafItems: 1 << (t.itemsLg2[0] as number),
    leafPages: pow2(t.itemShift[0] as number),
  }
  if (arm) armTable(c, t.topLevel, t.topPfn)
  else dirtyTable(c, t.topLevel, t.topPfn, ipfn)
}

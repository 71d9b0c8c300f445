/**
 * Unmap, written once for every format (internal), with the two kernel semantics:
 *
 * - {@link unmapGeneric}: generic_pt's `unmap_range`. Whole IOPTEs are removed, even past
 *   the end of the range; one that starts before the range stops the walk (EINVAL inside,
 *   0 bytes to the caller); an EMPTY entry stops it; a table wholly inside the range is
 *   freed through the gather. Returns the bytes removed up to the stop.
 * - {@link unmapArm}: the core's `iommu_unmap` loop over io-pgtable-arm's `unmap_pages`.
 *   Each call removes entries of one size in one table page; a block larger than the size
 *   asked for is not split (0); a table at the size asked for is freed at once after a
 *   walk flush, whatever it maps; tables are never freed otherwise.
 *
 * Neither throws: a failure is a short count, as in the kernel.
 *
 * @module
 */

import { IotlbGather } from '@iommu/core'
import { lowBits, PAGE_SHIFT, pow2 } from './bits.ts'
import { EntryType } from './format.ts'
import { corePgsize } from './map.ts'
import type { TableCore } from './table.ts'

interface UnmapCtx {
  readonly t: TableCore
  /** Last IOVA page of the range (inclusive). */
  readonly last: number
  /** Pages of IOPTEs removed. */
  pages: number
  /** Tables to free, as (pfn, level) pairs. */
  readonly tables: number[]
  leafLevels: number
  tableLevels: number
}

/** __unmap_range over one table; false when the walk must stop. */
function unmapTable(c: UnmapCtx, level: number, tablePfn: number, start: number): boolean {
  const t = c.t
  const fmt = t.fmt
  const p = t.p
  const shift = t.itemShift[level] as number
  const itemPages = pow2(shift)
  const base = t.tableBase(start, level)
  let idx = t.index(start, level)
  const end = t.endIndex(base, c.last, level)
  let items = 0
  let ok = true
  let first = true
  let w = t.frame(tablePfn, idx)
  let frameBase = idx & ~511
  // Leaves are cleared in runs: [runFrom, runTo) of the current frame.
  let runFrom = 0
  let runTo = 0
  const contigLeaves = level === 0 && (t.contigMask[0] as number) > 1
  while (idx < end) {
    if ((idx & ~511) !== frameBase) {
      if (runTo > runFrom) fmt.clearEntries(w, runFrom, runTo - runFrom, p)
      runFrom = runTo = 0
      w = t.frame(tablePfn, idx)
      frameBase = idx & ~511
    }
    const j = idx & 511
    if (level === 0 && !first) {
      // Level 0 holds only leaves and holes: take the run up to the next hole at once.
      const limit = Math.min(end, frameBase + 512) - frameBase
      const k = fmt.findEmpty(w, j, limit, p)
      if (k > j) {
        if (runTo !== j) {
          if (runTo > runFrom) fmt.clearEntries(w, runFrom, runTo - runFrom, p)
          runFrom = j
        }
        runTo = k
        items += k - j
        idx = frameBase + k
        if (contigLeaves && idx === end) {
          // The last leaf may run past the range: it goes whole.
          const n = 1 << fmt.entryNumContigLg2(w, k - 1, 0, p)
          const over = ((k - 1) & ~(n - 1)) + n - k
          runTo += over
          items += over
          idx += over
        }
        continue
      }
    }
    const type =
      ((w[2 * j] as number) | (w[2 * j + 1] as number)) === 0
        ? EntryType.EMPTY
        : fmt.loadEntry(w, j, level, p)
    if (type === EntryType.OA) {
      const contig = fmt.entryNumContigLg2(w, j, level, p)
      const n = 1 << contig
      const head = idx & ~(n - 1)
      // An IOPTE that starts before the range: the range splits it (EINVAL).
      if (first && (head !== idx || lowBits(start, shift) !== 0)) {
        ok = false
        break
      }
      const hj = head & 511
      if (runTo !== hj) {
        if (runTo > runFrom) fmt.clearEntries(w, runFrom, runTo - runFrom, p)
        runFrom = hj
      }
      runTo = hj + n
      items += n
      idx = head + n
    } else if (type === EntryType.TABLE) {
      const entryBase = base + idx * itemPages
      const from = first ? start : entryBase
      const fully = from === entryBase && c.last >= entryBase + itemPages - 1
      const child = fmt.tablePfn(w, j, level, p)
      if (!unmapTable(c, level - 1, child, from)) {
        ok = false
        break
      }
      // Wholly covered: the lower table is empty now; unlink it and free it after the flush.
      if (fully) {
        fmt.clearEntries(w, j, 1, p)
        c.tables.push(child, level - 1)
        c.tableLevels |= 1 << level
      }
      idx++
    } else {
      ok = false
      break
    }
    first = false
  }
  if (runTo > runFrom) fmt.clearEntries(w, runFrom, runTo - runFrom, p)
  if (items !== 0) {
    c.pages += items * itemPages
    c.leafLevels |= 1 << level
  }
  return ok
}

/**
 * generic_pt `unmap_range` of pages [ipfn, ipfn + pages): the IOVA range goes into
 * `gather` (unless it is queued for a flush-all) and the freed tables onto its freelist.
 *
 * @returns pages unmapped (0 for an empty or out-of-range request)
 */
export function unmapGeneric(
  t: TableCore,
  ipfn: number,
  pages: number,
  gather: IotlbGather,
): number {
  if (pages <= 0 || ipfn + pages > pow2(52)) return 0
  const last = ipfn + pages - 1
  if (!t.inRange(ipfn, last)) return 0
  const c: UnmapCtx = { t, last, pages: 0, tables: [], leafLevels: 0, tableLevels: 0 }
  unmapTable(c, t.topLevel, t.topPfn, ipfn)
  // gather_range_pending
  if (!gather.queued && c.pages !== 0) {
    if (t.flushRangeNoGaps && gather.isDisjoint(BigInt(ipfn) << 12n, BigInt(c.pages) << 12n)) {
      t.syncAndRelease(gather)
    }
    gather.addPages(ipfn, c.pages, PAGE_SHIFT)
  }
  for (let i = 0; i < c.tables.length; i += 2) {
    t.deferFree(gather, c.tables[i] as number, c.tables[i + 1] as number)
  }
  gather.leafLevels |= c.leafLevels
  gather.tableLevels |= c.tableLevels
  return c.pages
}

/**
 * io-pgtable-arm `unmap_pages`: remove up to `count` entries of `2^sizeLg2` bytes from
 * `ipfn`, within one table page.
 *
 * @returns pages unmapped; 0 for a size not in the bitmap, an IOVA above ias, an EMPTY
 *   entry on the way or at the start, or a larger block (no split)
 */
export function unmapPagesArm(
  t: TableCore,
  ipfn: number,
  sizeLg2: number,
  count: number,
  gather: IotlbGather | null,
): number {
  const target = sizeLg2 >= 0 && sizeLg2 < 64 ? (t.sizeLevel[sizeLg2] as number) : -1
  if (target < 0 || t.itemLg2(target) !== sizeLg2 || count <= 0) return 0
  if (!t.inRange(ipfn, ipfn)) return 0
  const fmt = t.fmt
  const p = t.p
  let table = t.topPfn
  if (target < t.topLevel) {
    // EMPTY on the way, or a block larger than asked for ("partial large IOPTE"): 0.
    if (t.walkTo(ipfn, target + 1) !== EntryType.TABLE) return 0
    table = fmt.tablePfn(t.hitWords, t.hitIndex, target + 1, p)
  }
  const idx = t.index(ipfn, target)
  const perPage = 1 << p.bitsPerLevel
  const num = Math.min(count, perPage - (idx & (perPage - 1)))
  const itemPages = pow2(t.itemShift[target] as number)
  let flush: IotlbGather | null = null
  let i = 0
  let w = t.frame(table, idx)
  for (; i < num; i++) {
    const j = (idx + i) & 511
    if (j === 0 && i !== 0) w = t.frame(table, idx + i)
    if (target === 0) {
      // Level 3: pages and holes only; skip to the next hole.
      const k = fmt.findEmpty(w, j, Math.min(512, j + num - i), p)
      i += k - j
      if (k === 512 && i < num) {
        i--
        continue
      }
      break
    }
    const type = fmt.loadEntry(w, j, target, p)
    if (type === EntryType.EMPTY) break
    if (type === EntryType.TABLE) {
      flush ??= new IotlbGather()
      t.freeSubtreeNow(w, j, target, ipfn + i * itemPages, flush)
    }
  }
  if (flush !== null) t.syncAndRelease(flush)
  for (let k = 0; k < i; ) {
    const j = (idx + k) & 511
    const run = Math.min(i - k, 512 - j)
    fmt.clearEntries(t.frame(table, idx + k), j, run, p)
    k += run
  }
  if (i !== 0 && gather !== null) {
    if (!gather.queued) gather.addPages(ipfn, i * itemPages, PAGE_SHIFT)
    gather.leafLevels |= 1 << target
  }
  return i * itemPages
}

/**
 * `iommu_unmap` over io-pgtable-arm: alignment to the smallest page (else 0), then
 * {@link unmapPagesArm} with `iommu_pgsize` sizes until done or a call returns 0.
 *
 * @returns pages unmapped
 */
export function unmapArm(t: TableCore, ipfn: number, pages: number, gather: IotlbGather): number {
  const minPages = t.minSizeLg2 - PAGE_SHIFT
  if (lowBits(ipfn, minPages) !== 0 || lowBits(pages, minPages) !== 0) return 0
  let done = 0
  while (done < pages) {
    const { sizeLg2, count } = corePgsize(t, ipfn + done, ipfn + done, pages - done)
    const n = unmapPagesArm(t, ipfn + done, sizeLg2, count, gather)
    if (n === 0) break
    done += n
  }
  return done
}

/**
 * Map, written once for every format (internal). Two entry points follow the kernel's two
 * implementations (see `Algorithm` in format.ts):
 *
 * - {@link mapGeneric}: generic_pt's `map_range` (iommu_pt.h). The leaf size is chosen per
 *   position (`pt_compute_best_pgsize` + `pt_pgsz_count`); each run of one size is one walk
 *   that visits every table once and writes a frame's leaves with one `installLeaves` call.
 *   Any present leaf in the way is EADDRINUSE; a table in the way of a larger leaf is
 *   freed if it maps nothing.
 * - {@link mapArm}: the IOMMU core's `iommu_map` loop (`iommu_pgsize`) over
 *   io-pgtable-arm's `map_pages`, each call limited to one table page; a leaf in the way is
 *   EEXIST and a table in the way of a block is freed, mapped or not.
 *
 * Progress: both throw `IommuError` with `progress` = bytes mapped before the failure
 * (`*mapped`), so the caller can unmap them, as `iommu_map` does.
 *
 * @module
 */

import { IommuError, IotlbGather, Prot } from '@iommu/core'
import { lowBits, PAGE_SHIFT, pow2, shr } from './bits.ts'
import { type Attrs, EntryType } from './format.ts'
import type { TableCore } from './table.ts'

/** State of one map call (one object per call, none per page). */
interface MapCtx {
  readonly t: TableCore
  readonly attrs: Attrs
  /** Next IOVA page to map. */
  ipfn: number
  /** Next output page. */
  oa: number
  /** Leaves of the current size still to write in this run. */
  left: number
  /** Current leaf size, lg2 bytes. */
  sizeLg2: number
  /** Its level. */
  leafLevel: number
  /** Tables replaced by leaves, freed after a flush (generic_pt: flushed at the end). */
  gather: IotlbGather | null
}

const NO_RW = 'prot has neither IOMMU_READ nor IOMMU_WRITE'

function conflict(code: 'EADDRINUSE' | 'EEXIST', ipfn: number): never {
  throw new IommuError(code, `IOVA 0x${(BigInt(ipfn) << 12n).toString(16)} is already mapped`)
}

/** Attach `*mapped` to an error escaping a map. */
function withProgress(e: unknown, pages: number): never {
  if (e instanceof IommuError) {
    throw new IommuError(e.code, `${pages} pages were mapped first`, {
      progress: BigInt(pages) << 12n,
      cause: e,
    })
  }
  throw e
}

function advance(c: MapCtx, leaves: number): void {
  const pages = leaves * pow2(c.sizeLg2 - PAGE_SHIFT)
  c.ipfn += pages
  c.oa += pages
  c.left -= leaves
}

function gatherOf(c: MapCtx): IotlbGather {
  if (c.gather === null) c.gather = new IotlbGather()
  return c.gather
}

/** True when entries [j, j + n) of a frame are all zero (all EMPTY). */
function allZero(w: Uint32Array, j: number, n: number): boolean {
  const end = (j + n) << 1
  let k = j << 1
  let acc = 0
  // Unrolled: this check runs before every run of leaves a map writes.
  for (; k + 8 <= end; k += 8) {
    acc |=
      (w[k] as number) |
      (w[k + 1] as number) |
      (w[k + 2] as number) |
      (w[k + 3] as number) |
      (w[k + 4] as number) |
      (w[k + 5] as number) |
      (w[k + 6] as number) |
      (w[k + 7] as number)
  }
  for (; k < end; k++) acc |= w[k] as number
  return acc === 0
}

// ---------------------------------------------------------------- generic_pt

/**
 * Descend from a table at `level` towards the leaf level, creating tables, over every
 * entry the current run touches (`__map_range`).
 */
function descendGeneric(c: MapCtx, level: number, tablePfn: number): void {
  const t = c.t
  if (level === c.leafLevel) {
    leavesGeneric(c, level, tablePfn)
    return
  }
  const fmt = t.fmt
  const p = t.p
  const n = 1 << (t.itemsLg2[level] as number)
  for (let idx = t.index(c.ipfn, level); c.left > 0 && idx < n; idx++) {
    const w = t.frame(tablePfn, idx)
    const j = idx & 511
    let type: number = EntryType.EMPTY
    if (((w[2 * j] as number) | (w[2 * j + 1] as number)) !== 0)
      type = fmt.loadEntry(w, j, level, p)
    let child: number
    if (type === EntryType.TABLE) {
      child = fmt.tablePfn(w, j, level, p)
    } else if (type === EntryType.EMPTY) {
      child = t.allocTable(level - 1)
      fmt.installTable(w, j, level, child, p)
    } else {
      // A leaf where the walk needs a table.
      conflict('EADDRINUSE', c.ipfn)
    }
    descendGeneric(c, level - 1, child)
  }
}

/** Write the run's leaves into one table (`__map_range_leaf`). */
function leavesGeneric(c: MapCtx, level: number, tablePfn: number): void {
  const t = c.t
  const fmt = t.fmt
  const p = t.p
  const stepLg2 = c.sizeLg2 - t.itemLg2(level)
  const n = 1 << (t.itemsLg2[level] as number)
  let idx = t.index(c.ipfn, level)
  while (c.left > 0 && idx < n) {
    const w = t.frame(tablePfn, idx)
    const j = idx & 511
    const frameEnd = Math.min(n - idx, 512 - j)
    const k = Math.min(c.left, frameEnd >>> stepLg2)
    if (allZero(w, j, k << stepLg2)) {
      fmt.installLeaves(w, j, k, level, c.oa, c.sizeLg2, c.attrs, p)
      advance(c, k)
    } else {
      // Slow path, one leaf at a time so that progress stops at the first conflict.
      for (let s = 0; s < k; s++) {
        const first = j + (s << stepLg2)
        clearContig(c, w, first, 1 << stepLg2, level)
        fmt.installLeaves(w, first, 1, level, c.oa, c.sizeLg2, c.attrs, p)
        advance(c, 1)
      }
    }
    idx += k << stepLg2
  }
}

/**
 * clear_contig: make `count` items from frame index `j` ready for a leaf. Tables that map
 * nothing are unlinked and queued for freeing; anything mapped is EADDRINUSE.
 */
function clearContig(c: MapCtx, w: Uint32Array, j: number, count: number, level: number): void {
  const t = c.t
  const fmt = t.fmt
  const p = t.p
  for (let i = j; i < j + count; i++) {
    if (((w[2 * i] as number) | (w[2 * i + 1] as number)) === 0) continue
    const type = fmt.loadEntry(w, i, level, p)
    if (type === EntryType.EMPTY) continue
    const itemPages = pow2(t.itemShift[level] as number)
    const ipfn = c.ipfn + (i - j) * itemPages
    if (type === EntryType.OA) conflict('EADDRINUSE', ipfn)
    const child = fmt.tablePfn(w, i, level, p)
    const tables: number[] = [child, level - 1]
    // __collect_tables with check_mapped: the subtree must map nothing.
    t.forEachSubtable(
      child,
      level - 1,
      (pfn, l) => tables.push(pfn, l),
      () => conflict('EADDRINUSE', ipfn),
    )
    fmt.clearEntries(w, i, 1, p)
    const g = gatherOf(c)
    for (let k = 0; k < tables.length; k += 2) {
      t.deferFree(g, tables[k] as number, tables[k + 1] as number)
    }
    g.tableLevels |= 1 << level
    g.addPages(ipfn, itemPages, PAGE_SHIFT)
  }
}

/**
 * generic_pt `map_range`: map `pages` pages from IOVA page `ipfn` to output page `ppfn`.
 * `subPage` carries what the byte-addressed caller found below page granularity (an empty
 * range, a wrap, a sub-page IOVA, PA or length), thrown where `map_range` would find it.
 *
 * @throws EINVAL (no READ/WRITE, empty range, format prot refusal), ERANGE (PA beyond the
 *   output size, IOVA outside the input space), EOVERFLOW, ENXIO (unaligned),
 *   EADDRINUSE, ENOMEM; with `progress` when something was mapped
 * @returns pages mapped (= `pages`)
 */
export function mapGeneric(
  t: TableCore,
  ipfn: number,
  ppfn: number,
  pages: number,
  prot: number,
  subPage: 'EINVAL' | 'EOVERFLOW' | 'ENXIO' | null = null,
  onlySizeLg2 = -1,
): number {
  if ((prot & (Prot.READ | Prot.WRITE)) === 0) throw new IommuError('EINVAL', NO_RW)
  // Only the first output address is checked, as map_range does.
  if (shr(ppfn, t.p.oaBits - PAGE_SHIFT) !== 0) {
    throw new IommuError('ERANGE', `PA beyond the ${t.p.oaBits}-bit output size`)
  }
  const attrs = t.attrs(prot)
  // make_range, then the page size: in page numbers, except what the byte API saw below a page.
  if (subPage !== null) throw new IommuError(subPage, 'range not representable in pages')
  if (pages <= 0) throw new IommuError('EINVAL', 'empty range')
  if (ipfn + pages > pow2(52)) throw new IommuError('EOVERFLOW', 'IOVA range wraps')
  // onlySizeLg2: one allowed leaf size for the whole range (a run of one-page maps).
  let sizeLg2 = onlySizeLg2 >= 0 ? onlySizeLg2 : t.bestSize(ipfn, ppfn, pages)
  if (sizeLg2 < 0) throw new IommuError('ENXIO', 'no page size fits the alignment')
  const last = ipfn + pages - 1
  let leafLevel = t.sizeLevel[sizeLg2] as number
  if (!t.inRange(ipfn, last) || leafLevel > t.topLevel) {
    if (!t.p.dynamicTop) throw new IommuError('ERANGE', 'IOVA outside the input space')
    t.growTop(ipfn, last, leafLevel)
  }
  const c: MapCtx = {
    t,
    attrs,
    ipfn,
    oa: ppfn,
    left: onlySizeLg2 >= 0 ? pages : t.sizeCount(ipfn, ppfn, pages, sizeLg2),
    sizeLg2,
    leafLevel,
    gather: null,
  }
  try {
    for (;;) {
      descendGeneric(c, t.topLevel, t.topPfn)
      const remaining = pages - (c.oa - ppfn)
      if (remaining <= 0) break
      // The size changes here: the next run starts a new walk from the root.
      sizeLg2 = t.bestSize(c.ipfn, c.oa, remaining)
      leafLevel = t.sizeLevel[sizeLg2] as number
      c.sizeLg2 = sizeLg2
      c.leafLevel = leafLevel
      c.left = t.sizeCount(c.ipfn, c.oa, remaining, sizeLg2)
    }
  } catch (e) {
    return withProgress(e, c.oa - ppfn)
  } finally {
    // Table levels were replaced by leaves: flush walk caches, then free them.
    if (c.gather !== null) t.syncAndRelease(c.gather)
  }
  return pages
}

// ---------------------------------------------------------------- io-pgtable-arm

/**
 * io-pgtable-arm `map_pages`: map up to `count` leaves of `2^sizeLg2` bytes, stopping at
 * the end of the table page. Leaves are checked first and written together: a failing call
 * maps nothing.
 *
 * @returns leaves mapped (≥ 1)
 * @throws EINVAL (size not in the bitmap, no READ/WRITE), ERANGE (IOVA above ias, PA above
 *   oas), EEXIST, ENOMEM
 */
export function mapPagesArm(
  t: TableCore,
  ipfn: number,
  ppfn: number,
  sizeLg2: number,
  count: number,
  prot: number,
): number {
  const target = sizeLg2 >= 0 && sizeLg2 < 64 ? (t.sizeLevel[sizeLg2] as number) : -1
  if (target < 0 || t.itemLg2(target) !== sizeLg2) {
    throw new IommuError('EINVAL', `page size 2^${sizeLg2} not supported`)
  }
  if (!t.inRange(ipfn, ipfn)) throw new IommuError('ERANGE', 'IOVA above the input size')
  if (shr(ppfn, t.p.oaBits - PAGE_SHIFT) !== 0) throw new IommuError('ERANGE', 'PA above oas')
  if ((prot & (Prot.READ | Prot.WRITE)) === 0) throw new IommuError('EINVAL', NO_RW)
  const attrs = t.attrs(prot)
  const fmt = t.fmt
  const p = t.p
  let table = t.topPfn
  for (let level = t.topLevel; level > target; level--) {
    const idx = t.index(ipfn, level)
    const w = t.frame(table, idx)
    const j = idx & 511
    const type = fmt.loadEntry(w, j, level, p)
    if (type === EntryType.EMPTY) {
      const child = t.allocTable(level - 1)
      fmt.installTable(w, j, level, child, p)
      table = child
    } else if (type === EntryType.TABLE) {
      table = fmt.tablePfn(w, j, level, p)
    } else {
      conflict('EEXIST', ipfn)
    }
  }
  // arm_lpae_max_entries: never past the end of the table page (2^bitsPerLevel entries).
  const idx = t.index(ipfn, target)
  const perPage = 1 << p.bitsPerLevel
  const num = Math.min(count, perPage - (idx & (perPage - 1)))
  const itemPages = pow2(t.itemShift[target] as number)
  let flush: IotlbGather | null = null
  try {
    for (let i = idx; i < idx + num; ) {
      const w = t.frame(table, i)
      const j = i & 511
      const run = Math.min(idx + num - i, 512 - j)
      // Pass 1, for the whole run: empty slots pass; a leaf is EEXIST; a table where the
      // block goes is unmapped and freed, whatever it still maps.
      if (!allZero(w, j, run)) {
        for (let k = j; k < j + run; k++) {
          if (((w[2 * k] as number) | (w[2 * k + 1] as number)) === 0) continue
          const type = fmt.loadEntry(w, k, target, p)
          const at = ipfn + (i + k - j - idx) * itemPages
          if (type === EntryType.OA) conflict('EEXIST', at)
          if (type === EntryType.TABLE) {
            flush ??= new IotlbGather()
            t.freeSubtreeNow(w, k, target, at, flush)
          }
        }
      }
      i += run
    }
  } finally {
    if (flush !== null) t.syncAndRelease(flush)
  }
  for (let i = idx; i < idx + num; ) {
    const j = i & 511
    const run = Math.min(idx + num - i, 512 - j)
    fmt.installLeaves(
      t.frame(table, i),
      j,
      run,
      target,
      ppfn + (i - idx) * itemPages,
      sizeLg2,
      attrs,
      p,
    )
    i += run
  }
  return num
}

/**
 * The IOMMU core's `iommu_pgsize` for a format without `map_range`: the largest size that
 * fits the alignment and the length, and how many of them to ask for in one call.
 */
export function corePgsize(
  t: TableCore,
  ipfn: number,
  ppfn: number,
  pages: number,
): { sizeLg2: number; count: number } {
  const sizeLg2 = t.bestSize(ipfn, ppfn, pages)
  const k = sizeLg2 - PAGE_SHIFT
  let len = pages
  for (let s = sizeLg2 + 1; s < 64; s++) {
    if (t.bestLe[s] !== s) continue
    // Only worth stopping early when IOVA and PA are offset alike within the bigger page
    // and the bigger page fits after the offset.
    const nk = s - PAGE_SHIFT
    if (lowBits(ipfn, nk) === lowBits(ppfn, nk)) {
      const offset = pow2(nk) - lowBits(ipfn, nk)
      if (offset + pow2(nk) <= pages) len = offset
    }
    break
  }
  return { sizeLg2, count: shr(len, k) }
}

/**
 * `iommu_map` over io-pgtable-arm: check alignment to the smallest page (EINVAL), then call
 * {@link mapPagesArm} until done.
 *
 * @returns pages mapped
 * @throws as {@link mapPagesArm}, with `progress`
 */
export function mapArm(
  t: TableCore,
  ipfn: number,
  ppfn: number,
  pages: number,
  prot: number,
): number {
  const minPages = t.minSizeLg2 - PAGE_SHIFT
  if (
    lowBits(ipfn, minPages) !== 0 ||
    lowBits(ppfn, minPages) !== 0 ||
    lowBits(pages, minPages) !== 0
  ) {
    throw new IommuError('EINVAL', 'IOVA, PA or size not aligned to the smallest page')
  }
  if (pages <= 0) return 0
  let done = 0
  try {
    while (done < pages) {
      const { sizeLg2, count } = corePgsize(t, ipfn + done, ppfn + done, pages - done)
      const n = mapPagesArm(t, ipfn + done, ppfn + done, sizeLg2, count, prot)
      done += n * pow2(sizeLg2 - PAGE_SHIFT)
    }
  } catch (e) {
    return withProgress(e, done)
  }
  return pages
}

// ---------------------------------------------------------------- one page at a time

/** The one-page map of the format's `iommu_map` (what each of {@link mapEach}'s calls is). */
function mapOne(t: TableCore, ipfn: number, ppfn: number, prot: number): void {
  if (t.fmt.algorithm === 'generic-pt') mapGeneric(t, ipfn, ppfn, 1, prot)
  else mapArm(t, ipfn, ppfn, 1, prot)
}

/**
 * How many pages from `ipfn` the one-page maps treat alike (no check of theirs changes
 * its answer inside the run, no root growth): IOVA under the current root, PA below the
 * output size, no wrap past 2^64. 0 when the first page already differs.
 */
function uniformRun(t: TableCore, ipfn: number, ppfn: number, pages: number): number {
  let n = Math.min(pages, pow2(52) - ipfn)
  const oaLimit = pow2(t.p.oaBits - PAGE_SHIFT)
  n = Math.min(n, oaLimit - ppfn)
  if (n <= 0 || !t.inRange(ipfn, ipfn)) return 0
  if (!t.inRange(ipfn, ipfn + n - 1)) {
    // The input range is an interval: the last page in it by bisection.
    let lo = 1
    let hi = n - 1
    while (lo < hi) {
      const mid = lo + Math.ceil((hi - lo) / 2)
      if (t.inRange(ipfn, ipfn + mid - 1)) lo = mid
      else hi = mid - 1
    }
    n = lo
  }
  return n
}

/**
 * `pages` one-page maps of 4 KiB from IOVA page `ipfn` to output page `ppfn`, in order,
 * stopping at the first failure: what iommufd's `batch_iommu_map_small` asks of
 * `iommu_map` with large pages disabled. The table ends exactly as after those calls (the
 * same 4 KiB leaves, tables allocated in the same order, the root grown at the same page,
 * the same error at the same page), but runs of pages that the per-page checks treat
 * alike are written like one map: a table at a time.
 *
 * @returns pages mapped (= `pages`)
 * @throws the failing call's error, with `progress` = the pages mapped before it
 */
export function mapEach(
  t: TableCore,
  ipfn: number,
  ppfn: number,
  pages: number,
  prot: number,
): number {
  let done = 0
  try {
    if (t.bestLe[PAGE_SHIFT] !== PAGE_SHIFT) {
      // No 4 KiB leaves: every call fails (or maps something larger) on its own.
      for (; done < pages; done++) mapOne(t, ipfn + done, ppfn + done, prot)
      return pages
    }
    while (done < pages) {
      const i = ipfn + done
      const o = ppfn + done
      const n = uniformRun(t, i, o, pages - done)
      if (n <= 1) {
        // A page whose checks differ (root growth, a limit): exactly the one-page map.
        mapOne(t, i, o, prot)
        done++
        continue
      }
      const before = done
      try {
        if (t.fmt.algorithm === 'generic-pt') {
          mapGeneric(t, i, o, n, prot, null, PAGE_SHIFT)
          done += n
        } else {
          while (done < before + n) {
            done += mapPagesArm(t, ipfn + done, ppfn + done, PAGE_SHIFT, before + n - done, prot)
          }
        }
      } catch (e) {
        if (!(e instanceof IommuError)) throw e
        if (t.fmt.algorithm === 'generic-pt') done = before + Number((e.progress ?? 0n) >> 12n)
        // A conflict stops a batch where the batch checked, the one-page maps would stop
        // at the page in the way: map one page at a time until that page fails.
        if (e.code !== 'EEXIST' && e.code !== 'EADDRINUSE') throw e
        for (; done < before + n; done++) mapOne(t, ipfn + done, ppfn + done, prot)
      }
    }
  } catch (e) {
    return withProgress(e, done)
  }
  return pages
}

/**
 * Read-and-clear-dirty, written once (internal).
 *
 * One walk over the range. Every write-dirty IOPTE is recorded whole into the
 * `IommuDirtyBitmap` (a contiguous AMD leaf as its full size, whichever replica the
 * hardware marked) and, unless `IOMMU_DIRTY_NO_CLEAR`, made write-clean. The record starts
 * at the IOPTE's first page, or at the range start when the IOPTE begins before it (an
 * `iova_bitmap` drops a record that starts before its base). Holes are skipped under
 * `'generic-pt'` and fail with EINVAL under `'io-pgtable-arm'` (what was recorded before
 * the hole stays recorded), as in the kernel.
 *
 * At level 0 the scan runs on the format's `skipCleanLeaves` accelerator: one call per
 * frame plus one per entry that needs attention.
 *
 * @module
 */

import { IOMMU_DIRTY_NO_CLEAR, type IommuDirtyBitmap, IommuError } from '@iommu/core'
import { PAGE_SHIFT, pow2, shr } from './bits.ts'
import { EntryType } from './format.ts'
import type { TableCore } from './table.ts'

interface DirtyCtx {
  readonly t: TableCore
  readonly start: number
  readonly last: number
  readonly clear: boolean
  readonly holesFail: boolean
  readonly dirty: IommuDirtyBitmap
}

/**
 * Look at the entry at table index `idx` of one frame; record and clean its leaf if it is
 * write-dirty. Returns the next index to look at (past a contiguous leaf).
 */
function visitEntry(
  c: DirtyCtx,
  w: Uint32Array,
  idx: number,
  level: number,
  base: number,
  itemPages: number,
): number {
  const t = c.t
  const fmt = t.fmt
  const p = t.p
  const j = idx & 511
  const type = fmt.loadEntry(w, j, level, p)
  if (type !== EntryType.OA) {
    if (c.holesFail) {
      throw new IommuError(
        'EINVAL',
        `no IOPTE at IOVA 0x${(BigInt(base + idx * itemPages) << 12n).toString(16)}`,
      )
    }
    return idx + 1
  }
  const n = 1 << fmt.entryNumContigLg2(w, j, level, p)
  const head = idx & ~(n - 1)
  if ((fmt.isWriteDirty as NonNullable<typeof fmt.isWriteDirty>)(w, j, level, p)) {
    const first = base + head * itemPages
    const from = Math.max(first, c.start)
    c.dirty.record(from, first + n * itemPages - from, PAGE_SHIFT)
    if (c.clear) (fmt.makeWriteClean as NonNullable<typeof fmt.makeWriteClean>)(w, j, level, p)
  }
  return head + n
}

function dirtyTable(c: DirtyCtx, level: number, tablePfn: number, start: number): void {
  const t = c.t
  const fmt = t.fmt
  const p = t.p
  const shift = t.itemShift[level] as number
  const itemPages = pow2(shift)
  const base = t.tableBase(start, level)
  let idx = t.index(start, level)
  const end = t.endIndex(base, c.last, level)
  if (level === 0) {
    leafScan(c, tablePfn, idx, end, base, itemPages)
    return
  }
  let first = true
  while (idx < end) {
    const w = t.frame(tablePfn, idx)
    const j = idx & 511
    if (fmt.loadEntry(w, j, level, p) === EntryType.TABLE) {
      const entryBase = base + idx * itemPages
      dirtyTable(c, level - 1, fmt.tablePfn(w, j, level, p), first ? start : entryBase)
      idx++
    } else {
      idx = visitEntry(c, w, idx, level, base, itemPages)
    }
    first = false
  }
}

/** Level 0: only leaves and holes. Scan each frame with the accelerator. */
function leafScan(
  c: DirtyCtx,
  tablePfn: number,
  from: number,
  end: number,
  base: number,
  itemPages: number,
): void {
  const t = c.t
  const fmt = t.fmt
  const p = t.p
  const skip = fmt.skipCleanLeaves as NonNullable<typeof fmt.skipCleanLeaves>
  let idx = from
  let fastEnd = end
  const items = 1 << (t.itemsLg2[0] as number)
  const contig = (t.contigMask[0] as number) > 1
  if (contig && (from !== 0 || end !== items)) {
    // Contiguous leaves: where the range starts or ends inside a table, the first and the
    // last may have their dirty replica outside it, so look at them whole.
    idx = visitEntry(c, t.frame(tablePfn, idx), idx, 0, base, itemPages)
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
  while (idx < fastEnd) {
    const w = t.frame(tablePfn, idx)
    const frameBase = idx & ~511
    const stop = Math.min(fastEnd - frameBase, 512)
    const k = skip(w, idx & 511, stop, 0, p)
    if (k >= stop) {
      idx = frameBase + stop
      continue
    }
    // skipCleanLeaves stops at a hole or a write-dirty leaf.
    if (contig || fmt.loadEntry(w, k, 0, p) !== EntryType.OA) {
      idx = visitEntry(c, w, frameBase + k, 0, base, itemPages)
      continue
    }
    const first = base + (frameBase + k) * itemPages
    const at = Math.max(first, c.start)
    c.dirty.record(at, first + itemPages - at, PAGE_SHIFT)
    if (c.clear) (fmt.makeWriteClean as NonNullable<typeof fmt.makeWriteClean>)(w, k, 0, p)
    idx = frameBase + k + 1
  }
  while (idx < end) idx = visitEntry(c, t.frame(tablePfn, idx), idx, 0, base, itemPages)
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
    holesFail: arm,
    dirty,
  }
  dirtyTable(c, t.topLevel, t.topPfn, ipfn)
}

/**
 * IOPTE size changes for live migration (internal): split a leaf into smaller ones so that
 * dirty tracking gets finer, and merge a table of uniform leaves back into one block when
 * tracking ends. Mainline has no such operation (generic_pt keeps `pt_attr_from_entry` for
 * it); the semantics are this model's:
 *
 * - Both keep every translation, the attributes, and the dirty state: a dirty leaf splits
 *   into dirty leaves; a merged block is dirty when any of its parts was.
 * - Both change what the hardware may have cached, so each adds the old IOPTE's range to the
 *   gather (`leafLevels`/`tableLevels` say which levels changed) and returns its length;
 *   merge queues the freed table on the gather's freelist, to free after the flush.
 *
 * @module
 */

import { IommuError, type IotlbGather } from '@iommu/core'
import { lowBits, PAGE_SHIFT, pow2 } from './bits.ts'
import { type Attrs, EntryType } from './format.ts'
import type { TableCore } from './table.ts'

interface Found {
  readonly type: EntryType
  readonly w: Uint32Array
  readonly j: number
  readonly level: number
  /** IOVA page of entry 0 of the table holding it. */
  readonly base: number
}

/** Walk to the entry at `ipfn`, stopping at a leaf, a hole, or `stopLevel`. */
function find(t: TableCore, ipfn: number, stopLevel: number): Found | null {
  if (!t.inRange(ipfn, ipfn)) return null
  const type = t.walkTo(ipfn, stopLevel)
  const level = t.hitLevel
  return { type, w: t.hitWords, j: t.hitIndex, level, base: t.tableBase(ipfn, level) }
}

function applyDirty(
  t: TableCore,
  w: Uint32Array,
  j: number,
  count: number,
  level: number,
  step: number,
): void {
  const mark = t.fmt.makeWriteDirty as NonNullable<typeof t.fmt.makeWriteDirty>
  for (let k = 0; k < count; k++) mark(w, j + k * step, level, t.p)
}

/**
 * Split the leaf at IOVA page `ipfn`: a contiguous leaf into its single items at the same
 * level; a single-item leaf into a new table of next-level leaves.
 *
 * @returns pages of the old IOPTE (added to `gather`); 0 when it is already one smallest
 *   item
 * @throws ENOENT - nothing mapped at `ipfn`; EINVAL - the smaller size is not allowed here;
 *   ENOMEM - no frame for the new table (the table is unchanged)
 */
export function split(t: TableCore, ipfn: number, gather: IotlbGather): number {
  const e = find(t, ipfn, -1)
  if (e === null || e.type !== EntryType.OA) {
    throw new IommuError('ENOENT', `nothing mapped at 0x${(BigInt(ipfn) << 12n).toString(16)}`)
  }
  const fmt = t.fmt
  const p = t.p
  const { w, level } = e
  const contig = fmt.entryNumContigLg2(w, e.j, level, p)
  const n = 1 << contig
  const j = e.j & ~(n - 1)
  const shift = t.itemShift[level] as number
  const first = e.base + (t.index(ipfn, level) & ~(n - 1)) * pow2(shift)
  const pages = n * pow2(shift)
  const dirty =
    t.dirty && (fmt.isWriteDirty as NonNullable<typeof fmt.isWriteDirty>)(w, j, level, p)
  const attrs: Attrs = fmt.attrFromEntry(w, j, level, p)
  const oa = fmt.entryOaPfn(w, j, level, p)
  if (contig > 0) {
    if (((t.contigMask[level] as number) & 1) === 0) {
      throw new IommuError('EINVAL', 'single items are not an allowed size at this level')
    }
    fmt.installLeaves(w, j, n, level, oa, shift + PAGE_SHIFT, attrs, p)
    if (dirty) applyDirty(t, w, j, n, level, 1)
  } else {
    if (level === 0) return 0
    const child = level - 1
    if (((t.contigMask[child] as number) & 1) === 0) {
      throw new IommuError('EINVAL', 'the next level cannot hold leaves of its item size')
    }
    const table = t.allocTable(child)
    const items = 1 << (t.itemsLg2[child] as number)
    const childShift = t.itemShift[child] as number
    for (let i = 0; i < items; i += 512) {
      const cw = t.frame(table, i)
      const run = Math.min(512, items - i)
      fmt.installLeaves(
        cw,
        0,
        run,
        child,
        oa + i * pow2(childShift),
        childShift + PAGE_SHIFT,
        attrs,
        p,
      )
      if (dirty) applyDirty(t, cw, 0, run, child, 1)
    }
    fmt.installTable(w, j, level, table, p)
  }
  gather.addPages(first, pages, PAGE_SHIFT)
  gather.leafLevels |= 1 << level
  return pages
}

/**
 * Merge the table under the level-`level` entry at `ipfn` into one leaf of that entry's
 * item size, when every lower item is a leaf, the output addresses run contiguously from
 * an address aligned to the block, and all attributes match.
 *
 * @returns pages of the new block (added to `gather`, with the old table queued on its
 *   freelist); 0 when the entry is already a leaf or the table cannot be merged
 * @throws ENOENT - nothing mapped there; EINVAL - the block size is not allowed at `level`
 */
export function merge(t: TableCore, ipfn: number, level: number, gather: IotlbGather): number {
  if (level <= 0 || level > t.topLevel || ((t.contigMask[level] as number) & 1) === 0) {
    throw new IommuError('EINVAL', `no single-item leaves at level ${level}`)
  }
  const e = find(t, ipfn, level)
  if (e === null || e.type === EntryType.EMPTY) {
    throw new IommuError('ENOENT', `nothing mapped at 0x${(BigInt(ipfn) << 12n).toString(16)}`)
  }
  if (e.type === EntryType.OA) return 0
  if (e.level !== level) return 0
  const fmt = t.fmt
  const p = t.p
  const { w, j } = e
  const table = fmt.tablePfn(w, j, level, p)
  const child = level - 1
  const childPages = pow2(t.itemShift[child] as number)
  const items = 1 << (t.itemsLg2[child] as number)
  const blockShift = t.itemShift[level] as number
  let oa0 = -1
  let attrs: Attrs | null = null
  let dirty = false
  for (let i = 0; i < items; ) {
    const cw = t.frame(table, i)
    const cj = i & 511
    if (fmt.loadEntry(cw, cj, child, p) !== EntryType.OA) return 0
    const n = 1 << fmt.entryNumContigLg2(cw, cj, child, p)
    const oa = fmt.entryOaPfn(cw, cj, child, p)
    const a = fmt.attrFromEntry(cw, cj, child, p)
    if (attrs === null) {
      if (lowBits(oa, blockShift) !== 0) return 0
      oa0 = oa
      attrs = a
    } else if (oa !== oa0 + i * childPages || a.lo !== attrs.lo || a.hi !== attrs.hi) {
      return 0
    }
    if (t.dirty && (fmt.isWriteDirty as NonNullable<typeof fmt.isWriteDirty>)(cw, cj, child, p))
      dirty = true
    i += n
  }
  fmt.installLeaves(w, j, 1, level, oa0, blockShift + PAGE_SHIFT, attrs as Attrs, p)
  if (dirty) applyDirty(t, w, j, 1, level, 1)
  const pages = pow2(blockShift)
  const first = e.base + t.index(ipfn, level) * pages
  t.deferFree(gather, table, child)
  gather.addPages(first, pages, PAGE_SHIFT)
  gather.leafLevels |= 1 << level
  gather.tableLevels |= 1 << level
  return pages
}

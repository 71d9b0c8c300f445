/**
 * The state every generic algorithm works on (internal): one page table's format, derived
 * per-level constants, its root in physical memory, and the helpers that turn page numbers
 * into table indexes.
 *
 * @module
 */

import { FramePurpose, IommuError, type IotlbGather, type PhysicalMemory } from '@iommu/core'
import { ctz, fls, lowBits, PAGE_SHIFT, pow2, shr } from './bits.ts'
import { type AnyPageTableFormat, type Attrs, EntryType, type FormatParams } from './format.ts'

/** Hooks a driver gives its page table (the kernel's `pt_iommu_driver_ops` and flushes). */
export interface PageTableHooks {
  /**
   * changeTop() - the root grew (dynamic-top formats): program the hardware with the new
   * root table and level before the table uses it (`change_top`; the AMD driver rewrites
   * the DTEs of every attached device with the new root and mode = `topLevel + 1`).
   * Required for dynamic-top formats. No IOTLB flush is needed: the new top only adds
   * non-present IOVA.
   */
  changeTop?(topPfn: number, topLevel: number): void
  /**
   * iotlbSync() - invalidate what `gather` holds (IOTLB and walk caches) before its table
   * frames are freed: table levels replaced by a block during map, and ARM's
   * `tlb_flush_walk` when a table is freed immediately. The page table releases the frames
   * right after this returns. Without it they are released at once, which is only right
   * for hardware without walk caches.
   */
  iotlbSync?(gather: IotlbGather): void
}

/** Per-page-table options beyond the format's configuration. */
export interface PageTableOptions extends PageTableHooks {
  /**
   * Page sizes the driver allows, ANDed into the format's (a driver narrowing
   * `domain->pgsize_bitmap` after init: VT-d without superpage capabilities).
   */
  readonly pgsizeBitmap?: bigint
  /**
   * `PT_FEAT_FLUSH_RANGE_NO_GAPS`: before an unmap adds a range disjoint from what the
   * caller's gather holds, sync it through {@link PageTableHooks.iotlbSync} (AMD with
   * non-present caching).
   */
  readonly flushRangeNoGaps?: boolean
}

/** The sizes of a possibleSizes() bitmap at a level whose item is 2^itemLg2 bytes. */
function sizesAt(contig: number, itemLg2: number): bigint {
  let sizes = 0n
  for (let c = 0; c < 10 && itemLg2 + c < 64; c++) {
    if ((contig & (1 << c)) !== 0) sizes |= 1n << BigInt(itemLg2 + c)
  }
  return sizes
}

/** Largest level index any format uses (AMD v1: 5). */
const MAX_LEVELS = 8

/**
 * One page table: memory, format, constants and root. The algorithms are free functions
 * over it (map.ts, unmap.ts, dirty.ts, resize.ts, walk.ts).
 */
export class TableCore {
  readonly mem: PhysicalMemory
  readonly fmt: AnyPageTableFormat
  readonly p: FormatParams
  readonly hooks: PageTableHooks
  readonly flushRangeNoGaps: boolean
  /** Root table's first page number. */
  topPfn: number
  /** Root table's level. */
  topLevel: number
  /** Per level: log2 of the item size in 4 KiB pages. */
  readonly itemShift = new Int8Array(MAX_LEVELS)
  /** Per level: log2 of the entries of a table. */
  readonly itemsLg2 = new Int8Array(MAX_LEVELS)
  /** Per level: index mask (2^itemsLg2 - 1). */
  readonly indexMask = new Int32Array(MAX_LEVELS)
  /** Per level: frames of one table. */
  readonly tableFrames = new Int32Array(MAX_LEVELS)
  /** Per level: allowed leaf sizes (possibleSizes ∩ pgsizeBitmap), relative to the item. */
  readonly contigMask = new Int32Array(MAX_LEVELS)
  /** Level holding leaves of `2^s` bytes, by s (-1 = size not allowed). */
  readonly sizeLevel = new Int8Array(64).fill(-1)
  /** Largest size of the bitmap that is ≤ 2^s, by s (-1 = none). */
  readonly bestLe = new Int8Array(64).fill(-1)
  /** Page sizes of this table (bit n = 2^n bytes). */
  readonly pgsizeBitmap: bigint
  /** Smallest allowed leaf size, lg2 bytes. */
  readonly minSizeLg2: number
  /** The dirty functions exist and this configuration tracks dirty IOPTEs. */
  readonly dirty: boolean
  /** Last valid IOVA page under the current root when it spans from page 0 (else -1). */
  #lastPage = -1
  /** setProt results by prot value (setProt is a pure function of prot and params). */
  readonly #attrs: (Attrs | undefined)[] = []

  constructor(
    mem: PhysicalMemory,
    fmt: AnyPageTableFormat,
    p: FormatParams,
    options: PageTableOptions,
  ) {
    this.mem = mem
    this.fmt = fmt
    this.p = p
    this.hooks = options
    this.flushRangeNoGaps = options.flushRangeNoGaps ?? false
    this.dirty = fmt.hasDirty && fmt.dirtySupported(p)
    if (p.granuleLg2 < PAGE_SHIFT) {
      throw new IommuError('EINVAL', `${fmt.name}: granule below 4 KiB is not modelled`)
    }
    if (p.maxTopLevel >= MAX_LEVELS) throw new IommuError('EINVAL', 'too many levels')
    let bitmap = 0n
    for (let level = 0; level <= p.maxTopLevel; level++) {
      const itemLg2 = p.granuleLg2 + p.bitsPerLevel * level
      const items = fmt.numItemsLg2(level, p)
      this.itemShift[level] = itemLg2 - PAGE_SHIFT
      this.itemsLg2[level] = items
      this.indexMask[level] = items >= 31 ? 0x7fff_ffff : (1 << items) - 1
      this.tableFrames[level] = items + 3 <= PAGE_SHIFT ? 1 : 1 << (items + 3 - PAGE_SHIFT)
      // A dynamic top stops growing once an item would span the whole input space.
      if (p.dynamicTop && level > p.topLevel && itemLg2 >= p.vaBits) continue
      bitmap |= sizesAt(fmt.possibleSizes(level, p), itemLg2)
    }
    if (p.pgsizeBitmap !== undefined) {
      // io-pgtable: the configuration's bitmap is the domain's, as is.
      bitmap = p.pgsizeBitmap
    } else {
      // generic_pt get_info: hide sizes of half the input space and more, and beyond the OA.
      const vaLimit = p.vaBits >= 64 ? 63 : p.vaBits - 1
      bitmap &= (1n << BigInt(Math.min(vaLimit, p.oaBits))) - 1n
    }
    if (options.pgsizeBitmap !== undefined) bitmap &= options.pgsizeBitmap
    if (bitmap === 0n) throw new IommuError('EINVAL', `${fmt.name}: no page size left`)
    this.pgsizeBitmap = bitmap
    for (let level = 0; level <= p.maxTopLevel; level++) {
      const itemLg2 = p.granuleLg2 + p.bitsPerLevel * level
      const allowed = sizesAt(fmt.possibleSizes(level, p), itemLg2) & bitmap
      let mask = 0
      for (let c = 0; c < 10; c++) {
        if ((allowed & (1n << BigInt(itemLg2 + c))) !== 0n) {
          mask |= 1 << c
          this.sizeLevel[itemLg2 + c] = level
        }
      }
      this.contigMask[level] = mask
    }
    let best = -1
    let min = -1
    for (let s = 0; s < 64; s++) {
      if ((bitmap & (1n << BigInt(s))) !== 0n) {
        best = s
        if (min < 0) min = s
      }
      this.bestLe[s] = best
    }
    this.minSizeLg2 = min
    this.topLevel = p.topLevel
    this.topPfn = this.allocTable(p.topLevel)
    this.#updateRange()
  }

  #updateRange(): void {
    const vaBits = this.topVaBits()
    this.#lastPage =
      this.p.signExtend || this.p.upperVa
        ? -1
        : vaBits >= 64
          ? pow2(52) - 1
          : pow2(vaBits - PAGE_SHIFT) - 1
  }

  /** The descriptor bits for `prot` (cached `setProt`). @throws what setProt throws */
  attrs(prot: number): Attrs {
    const cached = prot >= 0 && prot < 64 ? this.#attrs[prot] : undefined
    if (cached !== undefined) return cached
    const a = this.fmt.setProt(prot, this.p)
    if (prot >= 0 && prot < 64) this.#attrs[prot] = a
    return a
  }

  // ------------------------------------------------------------------ geometry

  /** log2 bytes of one item at `level`. */
  itemLg2(level: number): number {
    return (this.itemShift[level] as number) + PAGE_SHIFT
  }

  /** Index of page `ipfn` in a table at `level`. */
  index(ipfn: number, level: number): number {
    return shr(ipfn, this.itemShift[level] as number) & (this.indexMask[level] as number)
  }

  /** IOVA page of entry 0 of the level-`level` table that translates page `ipfn`. */
  tableBase(ipfn: number, level: number): number {
    return (
      ipfn - lowBits(ipfn, (this.itemShift[level] as number) + (this.itemsLg2[level] as number))
    )
  }

  /**
   * One past the last index a walk over [.., lastPfn] visits in the level-`level` table
   * whose entry 0 is IOVA page `base` (`pt_range_to_end_index`).
   */
  endIndex(base: number, lastPfn: number, level: number): number {
    const spanLg2 = (this.itemShift[level] as number) + (this.itemsLg2[level] as number)
    return lastPfn >= base + pow2(spanLg2) - 1
      ? 1 << (this.itemsLg2[level] as number)
      : this.index(lastPfn, level) + 1
  }

  /** Input bits the root covers at `topLevel` (`_pt_top_range`'s max_vasz_lg2). */
  topVaBits(topLevel: number = this.topLevel): number {
    const span = this.itemLg2(topLevel) + (this.itemsLg2[topLevel] as number)
    return this.p.dynamicTop && topLevel !== this.p.maxTopLevel
      ? Math.min(this.p.vaBits, span)
      : this.p.vaBits
  }

  /**
   * pt_check_range: true when [ipfn, lastPfn] lies in the input space of a root at
   * `topLevel` (one half of it with sign extension).
   */
  inRange(ipfn: number, lastPfn: number, topLevel: number = this.topLevel): boolean {
    if (topLevel === this.topLevel && this.#lastPage >= 0) return lastPfn <= this.#lastPage
    const vaBits = this.topVaBits(topLevel)
    if (vaBits >= 64) return true
    const shift = vaBits - PAGE_SHIFT
    const top = pow2(64 - vaBits) - 1
    let prefix = this.p.upperVa ? top : 0
    // As pt_check_range: the prefix comes from bits vaBits - 1 and up of the start, and only
    // the bits above vaBits are compared (bit vaBits - 1 itself is not; the hardware walker
    // checks the canonical form strictly).
    if (this.p.signExtend) prefix = shr(ipfn, shift - 1) !== 0 ? top : 0
    return shr(ipfn, shift) === prefix && shr(lastPfn, shift) === prefix
  }

  /** Lowest and highest IOVA page of the aperture (the lower half with sign extension). */
  aperturePages(): [number, number] {
    const vaBits = this.p.dynamicTop ? this.p.vaBits : this.topVaBits()
    const bits = (this.p.signExtend ? vaBits - 1 : vaBits) - PAGE_SHIFT
    if (this.p.upperVa) return [pow2(52) - pow2(bits), pow2(52) - 1]
    return [0, pow2(bits) - 1]
  }

  /**
   * pt_compute_best_pgsize: the largest allowed size lg2 where both page numbers are
   * aligned and which fits `pages`; -1 when none.
   */
  bestSize(ipfn: number, ppfn: number, pages: number): number {
    const align = Math.min(ctz(ipfn), ctz(ppfn), fls(pages))
    return align < 0 ? -1 : (this.bestLe[Math.min(align + PAGE_SHIFT, 63)] as number)
  }

  /**
   * pt_pgsz_count: how many leaves of `2^sizeLg2` fit from ipfn before a larger allowed
   * size could start (only when IOVA and OA are congruent for it), within `pages`.
   */
  sizeCount(ipfn: number, ppfn: number, pages: number, sizeLg2: number): number {
    let len = pages
    for (let s = sizeLg2 + 1; s < 64; s++) {
      if (this.bestLe[s] !== s) continue
      const k = s - PAGE_SHIFT
      if (lowBits(ipfn, k) === lowBits(ppfn, k)) len = Math.min(len, pow2(k) - lowBits(ipfn, k))
      break
    }
    return shr(len, sizeLg2 - PAGE_SHIFT)
  }

  /** Frame words of the entry the last {@link walkTo} stopped at. */
  hitWords: Uint32Array = new Uint32Array(0)
  /** Its index in the frame. */
  hitIndex = 0
  /** Its level. */
  hitLevel = 0

  /**
   * Walk from the root towards IOVA page `ipfn`, down through TABLE entries, stopping at a
   * leaf, a hole, or a table entry at `stopLevel`; the entry is left in `hit*`.
   *
   * @returns the type of the entry stopped at
   */
  walkTo(ipfn: number, stopLevel: number): EntryType {
    const fmt = this.fmt
    const p = this.p
    let table = this.topPfn
    let level = this.topLevel
    for (;;) {
      const idx = this.index(ipfn, level)
      const w = this.frame(table, idx)
      const j = idx & 511
      const type =
        ((w[2 * j] as number) | (w[2 * j + 1] as number)) === 0
          ? EntryType.EMPTY
          : fmt.loadEntry(w, j, level, p)
      if (type !== EntryType.TABLE || level === stopLevel) {
        this.hitWords = w
        this.hitIndex = j
        this.hitLevel = level
        return type
      }
      table = fmt.tablePfn(w, j, level, p)
      level--
    }
  }

  // ------------------------------------------------------------------ memory

  /** The words of the frame holding entry `idx` of the table at `tablePfn`. */
  frame(tablePfn: number, idx: number): Uint32Array {
    return this.mem.frameWords(tablePfn + (idx >>> 9))
  }

  /** Allocate a zeroed table for `level`, aligned to its size. @throws ENOMEM */
  allocTable(level: number): number {
    const frames = this.tableFrames[level] as number
    return this.mem.allocFrames(frames, FramePurpose.PGTABLE, frames)
  }

  /** Free a table's frames now. */
  freeTableNow(tablePfn: number, level: number): void {
    this.mem.freeFrames(tablePfn, this.tableFrames[level] as number)
  }

  /** Queue a table's frames on `gather`'s freelist, to free after the invalidation. */
  deferFree(gather: IotlbGather, tablePfn: number, level: number): void {
    const n = this.tableFrames[level] as number
    for (let i = 0; i < n; i++) gather.deferFree(this.mem, tablePfn + i)
  }

  /**
   * Visit every table below the table at `tablePfn` (level `level`) in post-order: each
   * child table's page number and level; `leaf`, when given, is called for every leaf
   * found (and may throw to stop). Used by free, ARM's immediate subtree free and
   * generic_pt's collect step.
   */
  forEachSubtable(
    tablePfn: number,
    level: number,
    visit: (pfn: number, level: number) => void,
    leaf?: () => void,
  ): void {
    if (level === 0 && leaf === undefined) return
    const fmt = this.fmt
    const p = this.p
    const n = 1 << (this.itemsLg2[level] as number)
    let w = this.frame(tablePfn, 0)
    for (let idx = 0; idx < n; idx++) {
      const j = idx & 511
      if (j === 0 && idx !== 0) w = this.frame(tablePfn, idx)
      if (((w[2 * j] as number) | (w[2 * j + 1] as number)) === 0) continue
      const type = fmt.loadEntry(w, j, level, p)
      if (type === EntryType.OA) leaf?.()
      if (type !== EntryType.TABLE) continue
      const child = fmt.tablePfn(w, j, level, p)
      this.forEachSubtable(child, level - 1, visit, leaf)
      visit(child, level - 1)
    }
  }

  /**
   * Unlink the table that entry `j` of frame `w` (level `level`, IOVA page `entryIpfn`)
   * points to, and queue its whole subtree on `flush` with the entry's range: ARM's
   * unmap-a-table path (`__arm_lpae_unmap` + `tlb_flush_walk` + `__arm_lpae_free_pgtable`);
   * the caller syncs `flush` right away.
   */
  freeSubtreeNow(
    w: Uint32Array,
    j: number,
    level: number,
    entryIpfn: number,
    flush: IotlbGather,
  ): void {
    const child = this.fmt.tablePfn(w, j, level, this.p)
    this.fmt.clearEntries(w, j, 1, this.p)
    flush.addPages(entryIpfn, pow2(this.itemShift[level] as number), PAGE_SHIFT)
    flush.tableLevels |= 1 << level
    this.forEachSubtable(child, level - 1, (pfn, l) => this.deferFree(flush, pfn, l))
    this.deferFree(flush, child, level - 1)
  }

  /** Flush `gather` through the driver's hook, then free its frames (`iommu_iotlb_sync`). */
  syncAndRelease(gather: IotlbGather): void {
    if (gather.freelist.length === 0 && gather.empty) return
    if (this.hooks.iotlbSync) this.hooks.iotlbSync(gather)
    gather.releaseFreelist()
    gather.init()
  }

  /** Free every table, root included (`pt_iommu_deinit` / `free_io_pgtable_ops`). */
  freeAll(): void {
    this.forEachSubtable(this.topPfn, this.topLevel, (pfn, level) => this.freeTableNow(pfn, level))
    this.freeTableNow(this.topPfn, this.topLevel)
    this.topPfn = -1
  }

  /**
   * increase_top: add root levels until [ipfn, lastPfn] fits and the root is at least at
   * `leafLevel`; tell the driver through `changeTop`. No flush: the new levels only add
   * non-present IOVA.
   *
   * @throws ERANGE - the input space cannot grow that far; ENOMEM
   */
  growTop(ipfn: number, lastPfn: number, leafLevel: number): void {
    const fmt = this.fmt
    const p = this.p
    let level = this.topLevel
    let top = this.topPfn
    const added: number[] = []
    try {
      while (!this.inRange(ipfn, lastPfn, level) || leafLevel > level) {
        level++
        if (level > p.maxTopLevel || this.itemLg2(level) >= p.vaBits) {
          throw new IommuError(
            'ERANGE',
            `IOVA 0x${(BigInt(lastPfn) << 12n).toString(16)} beyond the input space`,
          )
        }
        const table = this.allocTable(level)
        added.push(table, level)
        // The new root links the old one at index 0.
        fmt.installTable(this.mem.frameWords(table), 0, level, top, p)
        top = table
      }
      this.hooks.changeTop?.(top, level)
    } catch (e) {
      for (let i = 0; i < added.length; i += 2) {
        this.freeTableNow(added[i] as number, added[i + 1] as number)
      }
      throw e
    }
    this.topPfn = top
    this.topLevel = level
    this.#updateRange()
  }
}

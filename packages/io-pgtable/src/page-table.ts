/**
 * `PageTable`: one IO page table (one per paging domain), its root in `PhysicalMemory`,
 * and the generic algorithms bound to its format.
 *
 * Two APIs over the same algorithms:
 *
 * - numeric, for hot use (drivers' fast paths, benchmarks): IOVA and output addresses as
 *   page numbers in 4 KiB units, counts in pages, no bigint, no allocation per page;
 * - kernel-shaped, with `bigint` u64 addresses and byte sizes, once per range: `mapRange`,
 *   `unmapRange`, `mapPages`, `unmapPages`, `iovaToPhys`, `readAndClearDirty`, `split`,
 *   `merge`.
 *
 * Which kernel semantics apply (generic_pt or io-pgtable-arm) is the format's `algorithm`.
 *
 * @module
 */

import {
  type Geometry,
  type IommuDirtyBitmap,
  IommuError,
  type IotlbGather,
  type PhysicalMemory,
} from '@iommu/core'
import {
  bigAddOverflows,
  bigOffset,
  bigPfn,
  fromPfn,
  lowBits,
  PAGE_SHIFT,
  toPfn,
  u64,
} from './bits.ts'
import { readAndClearDirty } from './dirty.ts'
import { EntryType, type FormatParams, type PageTableFormat } from './format.ts'
import { mapArm, mapEach, mapGeneric, mapPagesArm } from './map.ts'
import { merge, split } from './resize.ts'
import { type PageTableOptions, TableCore } from './table.ts'
import { unmapArm, unmapGeneric, unmapPagesArm } from './unmap.ts'
import { type PageTableWalker, translate, walkerFor } from './walk.ts'

const PAGE_MASK = 0xfffn
const U64_LIMIT = 1n << 64n

/** A page table of any format (for helpers that work on all of them). */
// biome-ignore lint/suspicious/noExplicitAny: the configuration and parameter types vary per format
export type AnyPageTable = PageTable<any, any>

/** The root a driver programs into its hardware (`hw_info`, TTBR, DTE root). */
export interface PageTableRoot {
  /** First page number of the root table (its PA >> 12). */
  readonly pfn: number
  /** Its level (AMD DTE mode = level + 1; VT-d AW = level - 1; ARM start level = 3 - level). */
  readonly level: number
}

/**
 * One IO page table. Create it with the machine's memory, a format and the format's
 * configuration; `free()` it when the domain goes away (after the hardware stopped using
 * it).
 *
 * @typeParam Cfg - the format's configuration type
 * @typeParam P - the format's parameters
 */
export class PageTable<Cfg = unknown, P extends FormatParams = FormatParams> {
  /** The format. */
  readonly format: PageTableFormat<Cfg, P>
  /** What the format derived from the configuration. */
  readonly params: P
  /** The memory the tables live in. */
  readonly memory: PhysicalMemory
  readonly #t: TableCore

  /**
   * Validate the configuration and allocate the root table.
   *
   * @throws EINVAL / EOPNOTSUPP - a bad configuration (for ARM this is where
   *   `alloc_io_pgtable_ops` would return NULL); EINVAL - a dynamic-top format without a
   *   `changeTop` hook; ENOMEM - no frame for the root
   */
  constructor(
    memory: PhysicalMemory,
    format: PageTableFormat<Cfg, P>,
    cfg: Cfg,
    options: PageTableOptions = {},
  ) {
    const params = format.init(cfg)
    if (params.dynamicTop && options.changeTop === undefined) {
      throw new IommuError('EINVAL', `${format.name}: a dynamic top needs a changeTop hook`)
    }
    this.format = format
    this.params = params
    this.memory = memory
    this.#t = new TableCore(memory, format, params, options)
  }

  /** Page sizes: bit n set = 2^n bytes (`domain->pgsize_bitmap`). */
  get pgsizeBitmap(): bigint {
    return this.#t.pgsizeBitmap
  }

  /** The IOVA window (`domain->geometry`), with `forceAperture`. */
  get geometry(): Geometry {
    const [first, last] = this.#t.aperturePages()
    return {
      apertureStart: fromPfn(first),
      apertureEnd: fromPfn(last) | PAGE_MASK,
      forceAperture: true,
    }
  }

  /** The root table and its level, as the hardware must be told. */
  get root(): PageTableRoot {
    return { pfn: this.#t.topPfn, level: this.#t.topLevel }
  }

  /** True when read-and-clear-dirty works for this configuration. */
  get dirtyTracking(): boolean {
    return this.#t.dirty
  }

  /**
   * The format's hardware information for the current root (`pt_iommu_<fmt>_hw_info`):
   * AMD v1 `{ hostPtRoot, mode }`, x86-64 `{ gcr3Pt, levels }`, VT-d `{ ssptptr, aw }`,
   * ARM `{ ttbr, tcr, mair }` / `{ vttbr, vtcr }`.
   */
  hwInfo(): Readonly<Record<string, unknown>> {
    return this.format.hwInfo(this.#t.topPfn, this.#t.topLevel, this.params)
  }

  /** A hardware walker over the same memory and configuration. */
  walker(): PageTableWalker<Cfg, P> {
    return walkerFor(this.#t) as unknown as PageTableWalker<Cfg, P>
  }

  /**
   * The entries a walk for `iova` reads, from the root down to the leaf or the first
   * EMPTY entry (`pgtable_walk`, for debugging and tests): each entry's level, raw value
   * and physical address.
   */
  pgtableWalk(iova: bigint): { level: number; pte: bigint; pa: bigint }[] {
    const t = this.#t
    const ipfn = toPfn(iova)
    const out: { level: number; pte: bigint; pa: bigint }[] = []
    let table = t.topPfn
    for (let level = t.topLevel; level >= 0; level--) {
      const idx = t.index(ipfn, level)
      const pa = (BigInt(table + (idx >>> 9)) << 12n) + BigInt((idx & 511) * 8)
      const w = t.frame(table, idx)
      const j = idx & 511
      out.push({ level, pte: u64(w[2 * j] as number, w[2 * j + 1] as number), pa })
      if (this.format.loadEntry(w, j, level, this.params) !== EntryType.TABLE) break
      table = this.format.tablePfn(w, j, level, this.params)
    }
    return out
  }

  /** Release every table frame, root included (`pt_iommu_deinit`). The table is unusable after. */
  free(): void {
    if (this.#t.topPfn >= 0) this.#t.freeAll()
  }

  // ------------------------------------------------------------------ numeric API

  /**
   * Map `pages` 4 KiB pages from IOVA page `ipfn` to output page `ppfn` with `IOMMU_*`
   * prot: the whole of `iommu_map` minus the core's rollback. generic_pt: `map_range`;
   * io-pgtable-arm: the core's alignment check and `iommu_pgsize` loop over `map_pages`.
   * On failure nothing is undone: the error's `progress` says how much to unmap.
   *
   * @returns pages mapped
   * @throws EEXIST / EADDRINUSE, EINVAL, ERANGE, ENXIO, EOVERFLOW, ENOMEM (see the README
   *   table), with `progress`
   */
  map(ipfn: number, ppfn: number, pages: number, prot: number): number {
    const t = this.#t
    return t.fmt.algorithm === 'generic-pt'
      ? mapGeneric(t, ipfn, ppfn, pages, prot)
      : mapArm(t, ipfn, ppfn, pages, prot)
  }

  /**
   * `pages` maps of one 4 KiB page each, from IOVA page `ipfn` to output page `ppfn`, in
   * order, stopping at the first failure (iommufd's `batch_iommu_map_small` with large
   * pages disabled): every IOPTE is 4 KiB and the table ends exactly as after those calls,
   * but runs of pages are written a table at a time. Nothing is undone on failure.
   *
   * @returns pages mapped
   * @throws the failing call's error (see {@link map}), with `progress`
   */
  mapEach(ipfn: number, ppfn: number, pages: number, prot: number): number {
    return mapEach(this.#t, ipfn, ppfn, pages, prot)
  }

  /**
   * Unmap pages [ipfn, ipfn + pages) with the format's kernel semantics, gathering the
   * IOVA to invalidate and the table frames to free after it.
   *
   * @returns pages unmapped (may exceed `pages` when a larger IOPTE started at the end)
   */
  unmap(ipfn: number, pages: number, gather: IotlbGather): number {
    const t = this.#t
    return t.fmt.algorithm === 'generic-pt'
      ? unmapGeneric(t, ipfn, pages, gather)
      : unmapArm(t, ipfn, pages, gather)
  }

  /** Output page of IOVA page `ipfn`, or -1 when nothing is mapped. */
  translate(ipfn: number): number {
    return translate(this.#t, ipfn)
  }

  /** `readAndClearDirty` over pages [ipfn, ipfn + pages). */
  readAndClearDirtyPages(
    ipfn: number,
    pages: number,
    flags: number,
    dirty: IommuDirtyBitmap,
  ): void {
    readAndClearDirty(this.#t, ipfn, pages, flags, dirty)
  }

  /** `split` at IOVA page `ipfn`; returns the pages to flush. */
  splitAt(ipfn: number, gather: IotlbGather): number {
    return split(this.#t, ipfn, gather)
  }

  /** `merge` of the `2^sizeLg2`-byte block at IOVA page `ipfn`; returns the pages to flush. */
  mergeAt(ipfn: number, sizeLg2: number, gather: IotlbGather): number {
    const level = sizeLg2 >= 0 && sizeLg2 < 64 ? (this.#t.sizeLevel[sizeLg2] as number) : -1
    if (level < 0 || this.#t.itemLg2(level) !== sizeLg2) {
      throw new IommuError('EINVAL', `2^${sizeLg2} is not a block size of this table`)
    }
    return merge(this.#t, ipfn, level, gather)
  }

  // ------------------------------------------------------------------ kernel-shaped API

  /**
   * mapRange() - map [iova, iova + size) to [paddr, ...) (generic_pt `map_range`; for
   * io-pgtable-arm the core's `iommu_map` loop). Nothing is rolled back on failure.
   *
   * @returns bytes mapped
   * @throws as {@link map}; generic_pt: ENXIO for an IOVA or PA not 4 KiB aligned or a size
   *   below 4 KiB (a sub-page tail is ignored, as map_range does); io-pgtable-arm: EINVAL
   *   for anything not aligned to the smallest page
   */
  mapRange(iova: bigint, paddr: bigint, size: bigint, prot: number): bigint {
    const t = this.#t
    const iv = Number(iova)
    const pv = Number(paddr)
    const sv = Number(size)
    const ipfn = bigPfn(iova, iv)
    const ppfn = bigPfn(paddr, pv)
    const pages = bigPfn(size, sv)
    const offsets = bigOffset(iova, iv) | bigOffset(paddr, pv)
    if (t.fmt.algorithm === 'generic-pt') {
      const subPage =
        sv === 0
          ? 'EINVAL'
          : bigAddOverflows(iova, iv, size, sv)
            ? 'EOVERFLOW'
            : offsets !== 0 || pages === 0
              ? 'ENXIO'
              : null
      const done = mapGeneric(t, ipfn, ppfn, pages, prot, subPage)
      // The common case returns the caller's own bigint (no allocation).
      return done === pages && bigOffset(size, sv) === 0 ? size : fromPfn(done)
    }
    if ((offsets | bigOffset(size, sv)) !== 0) {
      throw new IommuError('EINVAL', 'IOVA, PA or size not aligned to the smallest page')
    }
    mapArm(t, ipfn, ppfn, pages, prot)
    return size
  }

  /**
   * mapSmall() - `size / 4096` calls of {@link mapRange} of one 4 KiB page each, in order,
   * with the same result (see {@link mapEach}); nothing is rolled back on failure.
   *
   * @returns bytes mapped
   * @throws EINVAL - `iova`, `paddr` or `size` is not whole pages, or the range wraps;
   *   else the failing call's error, with `progress`
   */
  mapSmall(iova: bigint, paddr: bigint, size: bigint, prot: number): bigint {
    const iv = Number(iova)
    const pv = Number(paddr)
    const sv = Number(size)
    if (
      (bigOffset(iova, iv) | bigOffset(paddr, pv) | bigOffset(size, sv)) !== 0 ||
      sv === 0 ||
      bigAddOverflows(iova, iv, size, sv)
    ) {
      throw new IommuError('EINVAL', 'mapSmall takes whole 4 KiB pages')
    }
    this.mapEach(bigPfn(iova, iv), bigPfn(paddr, pv), bigPfn(size, sv), prot)
    return size
  }

  /**
   * unmapRange() - unmap [iova, iova + size) (generic_pt `unmap_range`; for io-pgtable-arm
   * the core's `iommu_unmap` loop).
   *
   * @returns bytes unmapped; 0 when nothing was (never throws)
   */
  unmapRange(iova: bigint, size: bigint, gather: IotlbGather): bigint {
    const iv = Number(iova)
    const sv = Number(size)
    if (sv === 0 || bigAddOverflows(iova, iv, size, sv)) return 0n
    const t = this.#t
    const ipfn = bigPfn(iova, iv)
    const tail = bigOffset(size, sv)
    if (t.fmt.algorithm === 'generic-pt') {
      // An IOVA inside a page is inside an IOPTE that starts before it: nothing unmapped.
      if (bigOffset(iova, iv) !== 0) return 0n
      const pages = bigPfn(size, sv) + (tail === 0 ? 0 : 1)
      const done = unmapGeneric(t, ipfn, pages, gather)
      return done === pages && tail === 0 ? size : fromPfn(done)
    }
    if ((bigOffset(iova, iv) | tail) !== 0) return 0n
    const pages = bigPfn(size, sv)
    const done = unmapArm(t, ipfn, pages, gather)
    return done === pages ? size : fromPfn(done)
  }

  /**
   * mapPages() - the `map_pages` op: `pgcount` pages of `pgsize` bytes. io-pgtable-arm maps
   * at most up to the end of the table page and returns what it mapped; generic_pt maps
   * the whole `pgsize * pgcount` range.
   *
   * @returns bytes mapped (> 0)
   * @throws as {@link mapRange} (io-pgtable-arm: EINVAL for a `pgsize` not in the bitmap)
   */
  mapPages(iova: bigint, paddr: bigint, pgsize: bigint, pgcount: number, prot: number): bigint {
    const t = this.#t
    if (t.fmt.algorithm === 'generic-pt') {
      const bytes = Number(pgsize) * pgcount
      return this.mapRange(
        iova,
        paddr,
        bytes < 2 ** 53 ? BigInt(bytes) : pgsize * BigInt(pgcount),
        prot,
      )
    }
    if (pgsize < 4096n || (pgsize & (pgsize - 1n)) !== 0n) {
      throw new IommuError('EINVAL', `page size ${pgsize} not supported`)
    }
    const sizeLg2 = pgsize.toString(2).length - 1
    if (((iova | paddr) & (pgsize - 1n)) !== 0n)
      throw new IommuError('EINVAL', 'unaligned map_pages')
    const n = mapPagesArm(t, toPfn(iova), toPfn(paddr), sizeLg2, pgcount, prot)
    return BigInt(n) * pgsize
  }

  /**
   * unmapPages() - the `unmap_pages` op: up to `pgcount` pages of `pgsize` bytes.
   *
   * @returns bytes unmapped; 0 when nothing is mapped at `iova` or the request would split
   *   a larger IOPTE (io-pgtable-arm)
   */
  unmapPages(iova: bigint, pgsize: bigint, pgcount: number, gather: IotlbGather): bigint {
    const t = this.#t
    if (t.fmt.algorithm === 'generic-pt') {
      const bytes = Number(pgsize) * pgcount
      return this.unmapRange(
        iova,
        bytes < 2 ** 53 ? BigInt(bytes) : pgsize * BigInt(pgcount),
        gather,
      )
    }
    if (pgsize < 4096n || (pgsize & (pgsize - 1n)) !== 0n || (iova & (pgsize - 1n)) !== 0n)
      return 0n
    if (iova >= U64_LIMIT) return 0n
    const sizeLg2 = pgsize.toString(2).length - 1
    return fromPfn(unmapPagesArm(t, toPfn(iova), sizeLg2, pgcount, gather))
  }

  /**
   * iovaToPhys() - the physical address `iova` translates to, with its offset inside the
   * page; 0n when nothing is mapped.
   */
  iovaToPhys(iova: bigint): bigint {
    if (iova < 0n || iova >= U64_LIMIT) return 0n
    const iv = Number(iova)
    const pfn = translate(this.#t, bigPfn(iova, iv))
    return pfn < 0 ? 0n : BigInt(pfn * 4096 + bigOffset(iova, iv))
  }

  /**
   * readAndClearDirty() - record every write-dirty IOPTE in [iova, iova + size) into
   * `dirty` (whole IOPTEs) and clean it unless `flags` has `IOMMU_DIRTY_NO_CLEAR`.
   *
   * @throws EOPNOTSUPP (generic_pt format without dirty bits), EINVAL, ERANGE, EOVERFLOW
   */
  readAndClearDirty(iova: bigint, size: bigint, flags: number, dirty: IommuDirtyBitmap): void {
    if (size === 0n) {
      readAndClearDirty(this.#t, 0, 0, flags, dirty)
      return
    }
    if (bigAddOverflows(iova, Number(iova), size, Number(size))) {
      throw new IommuError('EOVERFLOW', 'range wraps')
    }
    const first = toPfn(iova)
    readAndClearDirty(this.#t, first, toPfn(iova + size - 1n) - first + 1, flags, dirty)
  }

  /**
   * split() - split the IOPTE that maps `iova` one level down (a contiguous leaf into its
   * items), keeping attributes and dirty state.
   *
   * @returns bytes the caller must invalidate (also added to `gather`); 0n when the IOPTE
   *   is already the smallest
   * @throws ENOENT, EINVAL, ENOMEM
   */
  split(iova: bigint, gather: IotlbGather): bigint {
    return fromPfn(split(this.#t, toPfn(iova), gather))
  }

  /**
   * merge() - replace the table under the `size`-byte block containing `iova` by one leaf,
   * when its leaves are uniform and contiguous; dirty if any part was.
   *
   * @returns bytes to invalidate (added to `gather`, the table frames queued on its
   *   freelist); 0n when there was nothing to merge
   * @throws ENOENT, EINVAL - `size` is not a block size of this table
   */
  merge(iova: bigint, size: bigint, gather: IotlbGather): bigint {
    if (size <= 0n || (size & (size - 1n)) !== 0n)
      throw new IommuError('EINVAL', `bad block size ${size}`)
    const pfn = toPfn(iova)
    const sizeLg2 = size.toString(2).length - 1
    return fromPfn(
      this.mergeAt(pfn - lowBits(pfn, Math.max(0, sizeLg2 - PAGE_SHIFT)), sizeLg2, gather),
    )
  }
}

/**
 * The page-table format contract: what a format supplies so that the generic algorithms
 * (map, unmap, iova-to-phys, read-and-clear-dirty, split, merge, the hardware walk) can run
 * over its tables. It follows the shape of the kernel's generic_pt (`pt_common.h` for the
 * contract, `pt_fmt_defaults.h` for the defaults): a format is a set of small encoding
 * functions over one entry at a time; the algorithms are written once.
 *
 * ## Levels, tables and entries
 *
 * - Levels are numbered as generic_pt does: level 0 holds the smallest items (the granule),
 *   level `topLevel` is the root. ARM's lookup level `n` is level `3 - n` here; AMD's
 *   spec level (and DTE mode) `m` is level `m - 1`.
 * - Item size at level `L`: `2^itemLg2(L)` bytes, with `itemLg2(L) = granuleLg2 +
 *   bitsPerLevel * L`. A table at level `L` has `2^numItemsLg2(L)` 64-bit entries.
 * - Tables live in `@iommu/core`'s `PhysicalMemory`: a table is a run of 4 KiB frames,
 *   aligned to its size, so hardware models and guests can read it. A format never sees a
 *   whole table: every function gets the 1024-word view of **one 4 KiB frame** (`words`),
 *   the entry's index **within that frame** (`index`, 0..511) and the table's `level`.
 *   Entry `i` of a frame is `words[2i]` (bits 31:0, "lo") and `words[2i + 1]` (bits 63:32,
 *   "hi"): little-endian, like the memory.
 * - Addresses are page numbers in 4 KiB units (`PAGE_SHIFT` = 12) as `number`: an output
 *   page number is below 2^40 (52-bit PA), an IOVA page number below 2^52. Use the helpers
 *   in this package or multiply by powers of two; never `>>>` a page number.
 *
 * ## Invariants every format must keep
 *
 * - An all-zero entry decodes as {@link EntryType.EMPTY} at every level (the generic code
 *   tests zero inline before asking the format).
 * - A contiguous ("replicated") leaf of `2^c` items is aligned to `2^c` items and lies
 *   within one 4 KiB frame (c ≤ 9).
 * - No function allocates per call on the paths marked *hot*.
 *
 * Errors are thrown as `IommuError` from `@iommu/core`; each member lists its errno.
 *
 * @module
 */

import { IommuError } from '@iommu/core'

/** What an entry is (`enum pt_entry_type`). */
export const EntryType = {
  /** Not present: nothing is mapped through this entry. */
  EMPTY: 0,
  /** Points to the next-level table. */
  TABLE: 1,
  /** A leaf: maps an output address (block, page, or one item of a contiguous leaf). */
  OA: 2,
} as const
/** One of the {@link EntryType} values. */
export type EntryType = (typeof EntryType)[keyof typeof EntryType]

/** Access bits of the hardware view, and permissions it grants. */
export const Access = {
  /** A DMA read. */
  READ: 1,
  /** A DMA write. */
  WRITE: 2,
} as const

/** Which hardware accessed/dirty updates are enabled (AMD DTE.HAD, VT-d SSADE, ARM CD.HA/HD). */
export const HwAd = {
  /** The hardware sets accessed flags on the entries it walks. */
  ACCESSED: 1,
  /** The hardware records writes in the leaf (dirty bit, or ARM DBM clearing AP[2]). */
  DIRTY: 2,
} as const

/** Why a hardware walk faulted (`WalkResult.fault`). */
export const WalkFault = {
  /** The walk reached a leaf and the access is allowed. */
  NONE: 0,
  /** A non-present entry (translation fault / I/O page fault). */
  NOT_PRESENT: 1,
  /** The leaf (or a table on the way) does not grant the access. */
  PERMISSION: 2,
  /** A malformed entry: reserved encoding, a leaf where the level cannot hold one. */
  RESERVED: 3,
  /** The IOVA lies outside what the root can translate (above the input size). */
  RANGE: 4,
  /** ARM: a leaf with AF = 0 and hardware access-flag update disabled. */
  ACCESS_FLAG: 5,
  /**
   * A table could not be fetched: the walk's table translator (a nested walk's stage 2)
   * refused a table address. The caller's translator knows why.
   */
  TABLE_FETCH: 6,
} as const
/** One of the {@link WalkFault} values. */
export type WalkFault = (typeof WalkFault)[keyof typeof WalkFault]

/**
 * Descriptor bits of a leaf, as the format's {@link PageTableFormatSpec.setProt} computes
 * them from `IOMMU_*` prot (the kernel's `pt_write_attrs.descriptor_bits`): the bits that
 * do not depend on the output address, the level or the leaf size.
 */
export interface Attrs {
  /** Bits 31:0. */
  readonly lo: number
  /** Bits 63:32. */
  readonly hi: number
}

/**
 * Which kernel implementation the map/unmap/dirty semantics follow. The kernel has two, and
 * they differ in errno and in what a partial or overlapping request does (see the table in
 * the package README):
 *
 * - `'generic-pt'`: `drivers/iommu/generic_pt/iommu_pt.h` (AMD and Intel since v6.19): one
 *   `map_range` picks the leaf size per position; a conflict is `EADDRINUSE`; unmap removes
 *   whole IOPTEs, fails on one that starts before the range, stops at a hole, frees fully
 *   covered tables; read-and-clear-dirty skips holes.
 * - `'io-pgtable-arm'`: `drivers/iommu/io-pgtable-arm.c` (newest): the core splits a
 *   request into `map_pages`/`unmap_pages` calls of one page size, each limited to one
 *   table page; a conflict is `EEXIST`; a block map replaces any table; a partial unmap of
 *   a block returns 0 (no split); a table is freed only when unmapped at its block size;
 *   read-and-clear-dirty fails on a hole.
 */
export type Algorithm = 'generic-pt' | 'io-pgtable-arm'

/**
 * What a format derives from its configuration in {@link PageTableFormatSpec.init}: the
 * per-table constants the generic code needs (the kernel's `struct pt_common` plus the
 * format constants). Formats extend it with their own fields (quirks, granule, ...).
 */
export interface FormatParams {
  /** log2 of the level-0 item size in bytes (`PT_GRANULE_LG2SZ`); ≥ 12. */
  readonly granuleLg2: number
  /** Index bits of a non-top table (`PT_TABLEMEM_LG2SZ - 3`): 9, 11 or 13. */
  readonly bitsPerLevel: number
  /** Level of the root table right after allocation. */
  readonly topLevel: number
  /**
   * Highest level the root can reach: `topLevel` unless {@link dynamicTop}, then the
   * format's `PT_MAX_TOP_LEVEL` (the walk stops growing earlier when {@link vaBits} is
   * reached).
   */
  readonly maxTopLevel: number
  /**
   * Input address bits (`max_vasz_lg2`); with {@link signExtend} it includes the sign bit.
   * 64 means the whole 64-bit space.
   */
  readonly vaBits: number
  /** Output address bits (`max_oasz_lg2`); ≤ 52. */
  readonly oaBits: number
  /** Upper half and lower half of the input space, split at bit `vaBits - 1` (`PT_FEAT_SIGN_EXTEND`). */
  readonly signExtend: boolean
  /** The root grows on demand when a map needs more input bits (`PT_FEAT_DYNAMIC_TOP`). */
  readonly dynamicTop: boolean
  /** IOVAs carry all-ones above `vaBits` instead of zeros (ARM TTBR1 tables). */
  readonly upperVa: boolean
  /**
   * The domain's page sizes as an io-pgtable configuration states them (ARM's
   * `cfg->pgsize_bitmap` after the granule restriction): when set it is taken as is, instead
   * of the union of `possibleSizes` that generic_pt reports. Bit n set = 2^n bytes.
   */
  readonly pgsizeBitmap?: bigint
}

/** Per-entry function shapes (all hot). */
type EntryFn<P, R> = (words: Uint32Array, index: number, level: number, p: P) => R

/**
 * What a format author writes; {@link definePageTableFormat} checks it and fills the
 * optional parts with the defaults (as `pt_fmt_defaults.h` does).
 *
 * @typeParam Cfg - the configuration a driver passes (granule, levels, quirks, features)
 * @typeParam P - what {@link init} derives from it
 */
export interface PageTableFormatSpec<Cfg, P extends FormatParams> {
  /** Short name, e.g. `'amdv1'`, `'arm-lpae'`. */
  readonly name: string
  /** Whose map/unmap/dirty semantics apply. */
  readonly algorithm: Algorithm

  /**
   * init() - validate a configuration and derive the table constants
   * (`pt_iommu_<fmt>_init` up to the table allocation).
   *
   * Must not allocate table memory. Called once per page table and once per hardware
   * walker.
   *
   * @throws EINVAL - a field is out of range (as `pt_iommu_init` / `alloc_io_pgtable_ops`
   *   returning NULL); EOPNOTSUPP - the format cannot provide the requested combination
   */
  init(cfg: Cfg): P

  /**
   * numItemsLg2() - log2 of the number of entries of a table at `level`
   * (`pt_num_items_lg2`). Default: `p.bitsPerLevel`. A root may be smaller (ARM's PGD,
   * AMD's level-5 root) or larger (ARM S2 concatenated PGDs).
   */
  numItemsLg2?(level: number, p: P): number

  /**
   * possibleSizes() - leaf sizes at `level`, as a bitmap relative to the item size: bit
   * `c` set means a leaf of `2^(itemLg2(level) + c)` bytes (a contiguous leaf of `2^c`
   * items when c > 0) can be installed here (`pt_possible_sizes`). 0 means the level
   * cannot hold leaves (`!pt_can_have_leaf`). Bits above 9 are ignored.
   */
  possibleSizes(level: number, p: P): number

  /**
   * loadEntry() - classify an entry (`pt_load_entry_raw`). *Hot.*
   *
   * Invariant: an all-zero entry is EMPTY; at level 0 a present entry is OA.
   */
  loadEntry: EntryFn<P, EntryType>

  /** tablePfn() - page number of the next-level table of a TABLE entry (`pt_table_pa`). *Hot.* */
  tablePfn: EntryFn<P, number>

  /**
   * entryOaPfn() - output page number of the start of the leaf the OA entry belongs to,
   * aligned to the whole (contiguous) leaf size (`pt_entry_oa`). *Hot.*
   */
  entryOaPfn: EntryFn<P, number>

  /**
   * entryNumContigLg2() - log2 of the items this OA entry's leaf spans
   * (`pt_entry_num_contig_lg2`). Default 0. AMD's NextLevel=7 leaves return the replica
   * count. May be called on any item of the leaf. *Hot.*
   */
  entryNumContigLg2?: EntryFn<P, number>

  /**
   * installLeaves() - write `count` consecutive leaves of `2^sizeLg2` bytes, the first one
   * mapping output page `oaPfn`, the next ones following contiguously
   * (`pt_install_leaf_entry`, for a run). *Hot.*
   *
   * Each leaf spans `2^(sizeLg2 - itemLg2(level))` items, all written (replicated where the
   * format needs it). Preconditions (the generic code guarantees them): `sizeLg2` is a
   * possible size at `level`; `index` and `oaPfn` are aligned to the leaf; the run stays
   * inside the frame; the slots may hold anything (the caller cleared what must be
   * cleared).
   */
  installLeaves(
    words: Uint32Array,
    index: number,
    count: number,
    level: number,
    oaPfn: number,
    sizeLg2: number,
    attrs: Attrs,
    p: P,
  ): void

  /**
   * installTable() - point entry `index` at the level-`level - 1` table starting at page
   * `tablePfn` (`pt_install_table`). Overwrites the slot. Only called for level > 0.
   */
  installTable(words: Uint32Array, index: number, level: number, tablePfn: number, p: P): void

  /**
   * findEmpty() - an accelerator for unmap at level 0: the first index in `[from, to)` of
   * a frame whose entry is EMPTY, or `to`. Must agree with {@link loadEntry}. Default:
   * loops {@link loadEntry}. *Hot.*
   */
  findEmpty?(words: Uint32Array, from: number, to: number, p: P): number

  /**
   * clearEntries() - make `count` entries from `index` EMPTY (`pt_clear_entries`). Default:
   * zero both words. The run stays inside the frame.
   */
  clearEntries?(words: Uint32Array, index: number, count: number, p: P): void

  /**
   * setProt() - leaf descriptor bits for `IOMMU_*` prot (`pt_iommu_set_prot`,
   * `arm_lpae_prot_to_pte`). The generic code has already rejected prot without READ or
   * WRITE.
   *
   * @throws EINVAL - the format refuses the combination (VT-d FORCE_WRITEABLE with a
   *   read-only map)
   */
  setProt(prot: number, p: P): Attrs

  /**
   * attrFromEntry() - the descriptor bits of an existing leaf, in their write-clean form
   * (`pt_attr_from_entry`): installing a leaf with them gives the same entry, except that a
   * write-dirty leaf comes out clean. Split and merge use it and re-apply the dirty state
   * with {@link makeWriteDirty}.
   */
  attrFromEntry: EntryFn<P, Attrs>

  /**
   * dirtySupported() - whether this configuration tracks dirty IOPTEs
   * (`pt_dirty_supported`). Default: true when the dirty functions are present. Only valid
   * with them.
   */
  dirtySupported?(p: P): boolean

  /**
   * isWriteDirty() - whether an OA entry's leaf was written since it was last cleaned
   * (`pt_entry_is_write_dirty`). For a contiguous leaf: any of its items. False for EMPTY
   * and TABLE entries. *Hot.* Comes as a pair with {@link makeWriteClean}: omit both and
   * the format has no dirty tracking (read-and-clear-dirty fails with EOPNOTSUPP, or EINVAL
   * under `'io-pgtable-arm'`).
   */
  isWriteDirty?: EntryFn<P, boolean>

  /**
   * makeWriteClean() - return a write-dirty leaf to write-clean, every item of a
   * contiguous leaf (`pt_entry_make_write_clean`). Only called on write-dirty leaves.
   */
  makeWriteClean?: EntryFn<P, void>

  /**
   * makeWriteDirty() - mark a writable leaf write-dirty, as the hardware would
   * (`pt_entry_make_write_dirty`; split, merge and tests). Only called on leaves whose
   * attributes allow writes. Requires the dirty pair.
   */
  makeWriteDirty?: EntryFn<P, void>

  /**
   * skipCleanLeaves() - an accelerator for the dirty scan: the first index in
   * `[from, to)` of a frame whose entry is not a write-clean OA entry (so dirty, EMPTY or a
   * table), or `to`. Default: loops {@link loadEntry} and {@link isWriteDirty}. *Hot.*
   * Requires the dirty pair.
   */
  skipCleanLeaves?(words: Uint32Array, from: number, to: number, level: number, p: P): number

  /**
   * harvestDirtyLeaves() - the dirty scan's accelerator at level 0: in `[from, to)` of a
   * frame, for each write-dirty one-item leaf (no contiguous replicas), in order, append
   * its index to `out` (`out[0]` counts them: `out[++out[0]] = i`) and, when `clear`, make
   * it write-clean as {@link makeWriteClean} does; pass over write-clean leaves. Stop at
   * the first entry that is neither (not an OA entry, or a write-dirty contiguous leaf)
   * and return its index, or `to`. Leaves are cleaned before they are recorded: should
   * the record fail, the scan puts a leaf back with {@link makeWriteDirty}, which must
   * restore it bit for bit. Default: {@link skipCleanLeaves} with {@link loadEntry},
   * {@link entryNumContigLg2}, {@link isWriteDirty} and {@link makeWriteClean}. *Hot.*
   * Requires the dirty pair.
   */
  harvestDirtyLeaves?(
    words: Uint32Array,
    from: number,
    to: number,
    clear: boolean,
    out: Uint16Array,
    p: P,
  ): number

  /**
   * hwInfo() - what a driver programs into the hardware to point it at this table
   * (`pt_iommu_<fmt>_hw_info`, or the io-pgtable register outputs). Default: the root's
   * address and level.
   */
  hwInfo?(topPfn: number, topLevel: number, p: P): Readonly<Record<string, unknown>>

  /**
   * hwEntryType() - how the *hardware* decodes an entry: like {@link loadEntry}, but a
   * malformed entry is {@link HW_RESERVED}. Default: {@link loadEntry}. *Hot* (every IOTLB
   * miss).
   */
  hwEntryType?: EntryFn<P, EntryType | typeof HW_RESERVED>

  /**
   * hwNextLevel() - the level of the table a TABLE entry points to, as the hardware reads
   * it. Default `level - 1`; AMD encodes it in NextLevel and may skip levels.
   */
  hwNextLevel?: EntryFn<P, number>

  /**
   * hwTablePerms() - {@link Access} bits a TABLE entry lets through (AMD IR/IW, x86 R/W,
   * VT-d R/W are ANDed along the walk). Default: READ | WRITE.
   */
  hwTablePerms?: EntryFn<P, number>

  /**
   * hwLeafPerms() - {@link Access} bits an OA entry grants when the hardware A/D updates
   * in `ad` ({@link HwAd}) are enabled; ARM returns WRITE for a writable-clean DBM leaf
   * only when DIRTY is enabled. 0 with AF = 0 on ARM when ACCESSED is off: see
   * {@link hwAccessFlagFault}.
   */
  hwLeafPerms(words: Uint32Array, index: number, level: number, p: P, ad: number): number

  /**
   * hwAccessFlagFault() - whether the leaf faults for a missing access flag (ARM AF = 0
   * without hardware AF update). Default: never.
   */
  hwAccessFlagFault?(words: Uint32Array, index: number, level: number, p: P, ad: number): boolean

  /**
   * hwUpdateAccessedDirty() - the hardware's own A/D update after a permitted access,
   * written into the entry in memory. Called for every entry of the walk (`leaf` false for
   * tables) when `ad` is non-zero. AMD sets A (bit 5) and, on a write to a leaf, D (bit 6);
   * VT-d sets A (bit 8) and D (bit 9); ARM with DBM clears AP[2] on a write; x86 sets A/D.
   */
  hwUpdateAccessedDirty?(
    words: Uint32Array,
    index: number,
    level: number,
    p: P,
    leaf: boolean,
    write: boolean,
    ad: number,
  ): void
}

/** {@link PageTableFormatSpec.hwEntryType} result for a malformed entry. */
export const HW_RESERVED = 3

/**
 * A checked, frozen format with its defaults filled in: what the generic algorithms use.
 * The dirty members are present together or not at all ({@link hasDirty}).
 */
export interface PageTableFormat<Cfg = unknown, P extends FormatParams = FormatParams>
  extends Required<
    Omit<
      PageTableFormatSpec<Cfg, P>,
      | 'isWriteDirty'
      | 'makeWriteClean'
      | 'makeWriteDirty'
      | 'skipCleanLeaves'
      | 'harvestDirtyLeaves'
      | 'dirtySupported'
      | 'hwUpdateAccessedDirty'
    >
  > {
  /** True when the format has the dirty functions (whatever the configuration says). */
  readonly hasDirty: boolean
  /** See {@link PageTableFormatSpec.dirtySupported}. */
  readonly dirtySupported: (p: P) => boolean
  /** See {@link PageTableFormatSpec.isWriteDirty}. */
  readonly isWriteDirty: EntryFn<P, boolean> | undefined
  /** See {@link PageTableFormatSpec.makeWriteClean}. */
  readonly makeWriteClean: EntryFn<P, void> | undefined
  /** See {@link PageTableFormatSpec.makeWriteDirty}. */
  readonly makeWriteDirty: EntryFn<P, void> | undefined
  /** See {@link PageTableFormatSpec.skipCleanLeaves}. */
  readonly skipCleanLeaves:
    | ((words: Uint32Array, from: number, to: number, level: number, p: P) => number)
    | undefined
  /** See {@link PageTableFormatSpec.harvestDirtyLeaves}. */
  readonly harvestDirtyLeaves:
    | ((
        words: Uint32Array,
        from: number,
        to: number,
        clear: boolean,
        out: Uint16Array,
        p: P,
      ) => number)
    | undefined
  /** See {@link PageTableFormatSpec.hwUpdateAccessedDirty}. */
  readonly hwUpdateAccessedDirty: PageTableFormatSpec<Cfg, P>['hwUpdateAccessedDirty']
}

/** Any format, whatever its configuration types (for containers and helpers). */
// biome-ignore lint/suspicious/noExplicitAny: the parameter types vary per format
export type AnyPageTableFormat = PageTableFormat<any, any>

/** The configuration type of a format. */
export type FormatConfig<F> = F extends PageTableFormat<infer C, FormatParams> ? C : never

const ALGORITHMS: readonly Algorithm[] = ['generic-pt', 'io-pgtable-arm']

function zeroFill(words: Uint32Array, index: number, count: number): void {
  // TypedArray#fill costs more than a few stores for short runs.
  if (count > 16) {
    words.fill(0, index << 1, (index + count) << 1)
    return
  }
  for (let k = index << 1, end = (index + count) << 1; k < end; k++) words[k] = 0
}

/**
 * definePageTableFormat() - check a format and fill in its defaults.
 *
 * Rejects, with a TypeError (a programming error, not an errno): a missing required
 * function, an unknown algorithm, and half a group of optional functions: the dirty pair
 * (`isWriteDirty` + `makeWriteClean`) comes together, and `makeWriteDirty`,
 * `skipCleanLeaves` and `dirtySupported` need it. Untyped JavaScript formats get the same
 * checks at run time.
 *
 * @returns a frozen {@link PageTableFormat}
 */
export function definePageTableFormat<Cfg, P extends FormatParams>(
  spec: PageTableFormatSpec<Cfg, P>,
): PageTableFormat<Cfg, P> {
  const name = typeof spec.name === 'string' && spec.name !== '' ? spec.name : '(unnamed)'
  const bad = (why: string): never => {
    throw new TypeError(`page-table format ${name}: ${why}`)
  }
  if (!ALGORITHMS.includes(spec.algorithm)) bad(`unknown algorithm ${String(spec.algorithm)}`)
  for (const fn of [
    'init',
    'possibleSizes',
    'loadEntry',
    'tablePfn',
    'entryOaPfn',
    'installLeaves',
    'installTable',
    'setProt',
    'attrFromEntry',
    'hwLeafPerms',
  ] as const) {
    if (typeof spec[fn] !== 'function') bad(`${fn}() is required`)
  }
  const hasDirty = spec.isWriteDirty !== undefined
  if (hasDirty !== (spec.makeWriteClean !== undefined)) {
    bad('isWriteDirty() and makeWriteClean() come as a pair')
  }
  for (const fn of [
    'makeWriteDirty',
    'skipCleanLeaves',
    'harvestDirtyLeaves',
    'dirtySupported',
  ] as const) {
    if (spec[fn] !== undefined && !hasDirty) bad(`${fn}() needs isWriteDirty()/makeWriteClean()`)
  }
  if (hasDirty && spec.makeWriteDirty === undefined) {
    bad('a format with dirty tracking must provide makeWriteDirty() (split and merge use it)')
  }
  const loadEntry = spec.loadEntry
  const isWriteDirty = spec.isWriteDirty
  const defaultFindEmpty = (words: Uint32Array, from: number, to: number, p: P): number => {
    let i = from
    while (i < to && loadEntry(words, i, 0, p) !== EntryType.EMPTY) i++
    return i
  }
  const defaultSkip =
    isWriteDirty === undefined
      ? undefined
      : (words: Uint32Array, from: number, to: number, level: number, p: P): number => {
          let i = from
          while (i < to && loadEntry(words, i, level, p) === EntryType.OA) {
            if (isWriteDirty(words, i, level, p)) break
            i++
          }
          return i
        }
  const skipCleanLeaves = spec.skipCleanLeaves ?? defaultSkip
  const entryNumContigLg2 = spec.entryNumContigLg2 ?? (() => 0)
  const makeWriteClean = spec.makeWriteClean
  const defaultHarvest =
    isWriteDirty === undefined || skipCleanLeaves === undefined || makeWriteClean === undefined
      ? undefined
      : (
          words: Uint32Array,
          from: number,
          to: number,
          clear: boolean,
          out: Uint16Array,
          p: P,
        ): number => {
          let i = from
          while (i < to) {
            i = skipCleanLeaves(words, i, to, 0, p)
            if (i >= to) break
            if (loadEntry(words, i, 0, p) !== EntryType.OA) return i
            if (isWriteDirty(words, i, 0, p)) {
              if (entryNumContigLg2(words, i, 0, p) !== 0) return i
              const n = (out[0] as number) + 1
              out[0] = n
              out[n] = i
              if (clear) makeWriteClean(words, i, 0, p)
            }
            i++
          }
          return to
        }
  const format: PageTableFormat<Cfg, P> = {
    name,
    algorithm: spec.algorithm,
    init: spec.init,
    numItemsLg2: spec.numItemsLg2 ?? ((_level: number, p: P) => p.bitsPerLevel),
    possibleSizes: spec.possibleSizes,
    loadEntry,
    tablePfn: spec.tablePfn,
    entryOaPfn: spec.entryOaPfn,
    entryNumContigLg2,
    installLeaves: spec.installLeaves,
    installTable: spec.installTable,
    findEmpty: spec.findEmpty ?? defaultFindEmpty,
    clearEntries: spec.clearEntries ?? zeroFill,
    setProt: spec.setProt,
    attrFromEntry: spec.attrFromEntry,
    hasDirty,
    dirtySupported: spec.dirtySupported ?? (() => hasDirty),
    isWriteDirty,
    makeWriteClean: spec.makeWriteClean,
    makeWriteDirty: spec.makeWriteDirty,
    skipCleanLeaves,
    harvestDirtyLeaves: spec.harvestDirtyLeaves ?? defaultHarvest,
    hwInfo:
      spec.hwInfo ??
      ((topPfn: number, topLevel: number) => ({ root: BigInt(topPfn) << 12n, topLevel })),
    hwEntryType: spec.hwEntryType ?? loadEntry,
    hwNextLevel: spec.hwNextLevel ?? ((_w: Uint32Array, _i: number, level: number) => level - 1),
    hwTablePerms: spec.hwTablePerms ?? (() => Access.READ | Access.WRITE),
    hwLeafPerms: spec.hwLeafPerms,
    hwAccessFlagFault: spec.hwAccessFlagFault ?? (() => false),
    hwUpdateAccessedDirty: spec.hwUpdateAccessedDirty,
  }
  return Object.freeze(format)
}

/** Shorthand used by the formats' `init`: throw an `IommuError` for a bad configuration. */
export function badConfig(code: 'EINVAL' | 'EOPNOTSUPP', detail: string): never {
  throw new IommuError(code, detail)
}

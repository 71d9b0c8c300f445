/**
 * Lookups: the software `iova_to_phys` (internal) and the hardware view a driver's
 * hardware model calls on every IOTLB miss ({@link PageTableWalker}).
 *
 * @module
 */

import type { PhysicalMemory } from '@iommu/core'
import { lowBits, PAGE_SHIFT, pow2, shr } from './bits.ts'
import {
  Access,
  type AnyPageTableFormat,
  EntryType,
  type FormatParams,
  HW_RESERVED,
  type PageTableFormat,
  WalkFault,
} from './format.ts'
import type { TableCore } from './table.ts'

/**
 * iova_to_phys: the output page of IOVA page `ipfn`, or -1 when nothing is mapped
 * (generic_pt: also outside the input space; io-pgtable-arm masks the index bits as
 * `ARM_LPAE_LVL_IDX` does, so an IOVA above ias aliases).
 */
export function translate(t: TableCore, ipfn: number): number {
  if (t.fmt.algorithm === 'generic-pt' && !t.inRange(ipfn, ipfn)) return -1
  if (t.walkTo(ipfn, -1) !== EntryType.OA) return -1
  const w = t.hitWords
  const j = t.hitIndex
  const level = t.hitLevel
  const span = (t.itemShift[level] as number) + t.fmt.entryNumContigLg2(w, j, level, t.p)
  return t.fmt.entryOaPfn(w, j, level, t.p) + lowBits(ipfn, span)
}

/**
 * The outcome of one hardware walk ({@link PageTableWalker.walk}); the walker reuses one
 * object, so copy what you keep.
 */
export interface WalkResult {
  /** {@link WalkFault.NONE} on success, else why the walk faulted. */
  fault: WalkFault
  /** Level of the leaf, or of the entry that faulted. */
  level: number
  /** Size of the leaf (the IOTLB entry to cache), lg2 bytes. */
  sizeLg2: number
  /** Output page of the IOVA page walked (4 KiB units); -1 on a fault. */
  pagePfn: number
  /** {@link Access} bits the walk grants (leaf ANDed with the tables above it). */
  perm: number
  /**
   * The leaf is write-dirty in memory after the walk (and its A/D update): what a
   * hardware model caches with the translation. False for formats without dirty bits.
   */
  dirty: boolean
}

const MAX_LEVELS = 8

/**
 * Where a walk finds its tables when their addresses are not physical: a nested walk's
 * stage-1 table pointers are IPAs that the stage 2 translates (SMMUv3 Config = S1+S2).
 * Given the page number a table pointer names, return the physical page number to read,
 * or -1 when that page cannot be reached (the walk then faults with
 * {@link WalkFault.TABLE_FETCH}; the translator records why).
 */
export type TableTranslator = (tablePfn: number) => number

/**
 * A walker of any format, for a hardware model that holds one without spelling the
 * format's configuration and parameter types (`#walker: AnyPageTableWalker`).
 */
// biome-ignore lint/suspicious/noExplicitAny: the configuration and parameter types vary per format
export type AnyPageTableWalker = PageTableWalker<any, any>

/**
 * The hardware view of a page-table format: walks tables in `PhysicalMemory` from a root
 * page and level, as the IOMMU does, and performs the hardware's accessed/dirty update in
 * the entries. It reads nothing but memory (no `PageTable` object), so it also walks tables
 * a guest or another driver built. Allocation-free per walk.
 */
export class PageTableWalker<Cfg = unknown, P extends FormatParams = FormatParams> {
  /** The format decoded. */
  readonly format: PageTableFormat<Cfg, P>
  /** Its parameters (from the configuration). */
  readonly params: P
  /** The reused result of the last walk. */
  readonly result: WalkResult = {
    fault: WalkFault.NONE,
    level: 0,
    sizeLg2: 0,
    pagePfn: -1,
    perm: 0,
    dirty: false,
  }
  readonly #mem: PhysicalMemory
  readonly #itemShift = new Int8Array(MAX_LEVELS)
  readonly #mask = new Int32Array(MAX_LEVELS)
  readonly #span = new Int8Array(MAX_LEVELS)
  // The entries the last walk read, top first (the leaf last): level, frame, index, view.
  readonly #pathLevel = new Int32Array(MAX_LEVELS)
  readonly #readPfn = new Int32Array(MAX_LEVELS)
  readonly #readIndex = new Int32Array(MAX_LEVELS)
  readonly #readWords: Uint32Array[] = []
  #reads = 0
  /** The last walk reached a leaf through physical table pointers (it can be recorded). */
  #recordable = false

  /**
   * @param memory - the machine's RAM
   * @param format - the format of the tables
   * @param cfgOrParams - the format configuration (validated with `format.init`), or the
   *   `params` of an existing `PageTable`
   * @throws EINVAL / EOPNOTSUPP - a bad configuration
   */
  constructor(memory: PhysicalMemory, format: PageTableFormat<Cfg, P>, cfgOrParams: Cfg | P) {
    this.#mem = memory
    this.format = format
    const p = isParams(cfgOrParams) ? (cfgOrParams as P) : format.init(cfgOrParams as Cfg)
    this.params = p
    for (let level = 0; level < MAX_LEVELS && level <= p.maxTopLevel; level++) {
      const items = format.numItemsLg2(level, p)
      const shift = p.granuleLg2 + p.bitsPerLevel * level - PAGE_SHIFT
      this.#itemShift[level] = shift
      this.#mask[level] = (1 << items) - 1
      this.#span[level] = Math.min(64, shift + PAGE_SHIFT + items)
    }
  }

  #fault(fault: WalkFault, level: number): WalkResult {
    const r = this.result
    r.fault = fault
    r.level = level
    r.sizeLg2 = 0
    r.pagePfn = -1
    r.perm = 0
    r.dirty = false
    return r
  }

  /**
   * walk() - translate IOVA page `ipfn` for `access` ({@link Access}) through the tables
   * at `rootPfn` whose root is at `topLevel` (AMD: DTE mode - 1; ARM: 3 - start level).
   *
   * On success, and when `ad` ({@link HwAd}) enables them, the entries of the walk get the
   * hardware's accessed/dirty update in memory — unless `update` is false: then the walk
   * decides permissions as the hardware would with `ad` enabled but writes nothing (a
   * look, e.g. a model's check of a cached translation against memory).
   *
   * @param tables - translates table page numbers to physical ones (nested walks); null
   *   when table pointers are physical
   * @returns the reused {@link result}
   */
  walk(
    rootPfn: number,
    topLevel: number,
    ipfn: number,
    access: number,
    ad = 0,
    update = true,
    tables: TableTranslator | null = null,
  ): WalkResult {
    const fmt = this.format
    const p = this.params
    const mem = this.#mem
    this.#recordable = false
    // The root's input range: bits above it must be the prefix (zeros, ones, or a sign copy).
    const span = this.#span[topLevel] as number
    if (span < 64) {
      // Canonical with sign extension: bits 63 down to span - 1 all equal.
      const shift = p.signExtend ? span - 1 - PAGE_SHIFT : span - PAGE_SHIFT
      const high = shr(ipfn, shift)
      const ones = pow2(52 - shift) - 1
      const ok = p.signExtend ? high === 0 || high === ones : high === (p.upperVa ? ones : 0)
      if (!ok) return this.#fault(WalkFault.RANGE, topLevel)
    }
    let perm = Access.READ | Access.WRITE
    let table = rootPfn
    let level = topLevel
    let depth = 0
    const itemShift = this.#itemShift
    const mask = this.#mask
    const readPfn = this.#readPfn
    const readIndex = this.#readIndex
    const readWords = this.#readWords
    // An IOVA page below 2^31 (IOVAs below 8 TiB) shifts as an int32.
    const small = ipfn <= 0x7fff_ffff
    for (;;) {
      const sh = itemShift[level] as number
      const idx = (small && sh < 32 ? ipfn >>> sh : shr(ipfn, sh)) & (mask[level] as number)
      let framePfn = table + (idx >>> 9)
      if (tables !== null) {
        framePfn = tables(framePfn)
        if (framePfn < 0) return this.#fault(WalkFault.TABLE_FETCH, level)
      }
      const w = mem.frameWords(framePfn)
      const j = idx & 511
      readPfn[depth] = framePfn
      readIndex[depth] = j
      readWords[depth] = w
      const type = fmt.hwEntryType(w, j, level, p)
      if (type === EntryType.EMPTY) return this.#fault(WalkFault.NOT_PRESENT, level)
      if (type === HW_RESERVED) return this.#fault(WalkFault.RESERVED, level)
      if (type === EntryType.TABLE) {
        const next = fmt.hwNextLevel(w, j, level, p)
        if (next < 0 || next >= level) return this.#fault(WalkFault.RESERVED, level)
        // Skipped levels (AMD): their index bits must be zero.
        if (next < level - 1) {
          for (let l = next + 1; l < level; l++) {
            if ((shr(ipfn, itemShift[l] as number) & (mask[l] as number)) !== 0) {
              return this.#fault(WalkFault.NOT_PRESENT, l)
            }
          }
        }
        perm &= fmt.hwTablePerms(w, j, level, p)
        this.#pathLevel[depth] = level
        depth++
        table = fmt.tablePfn(w, j, level, p)
        level = next
        continue
      }
      if (fmt.hwAccessFlagFault(w, j, level, p, ad))
        return this.#fault(WalkFault.ACCESS_FLAG, level)
      perm &= fmt.hwLeafPerms(w, j, level, p, ad)
      if ((access & ~perm) !== 0) return this.#fault(WalkFault.PERMISSION, level)
      const contig = fmt.entryNumContigLg2(w, j, level, p)
      const sizeShift = (this.#itemShift[level] as number) + contig
      const hwUpdate = fmt.hwUpdateAccessedDirty
      if (ad !== 0 && update && hwUpdate !== undefined) {
        const write = (access & Access.WRITE) !== 0
        const pathLevel = this.#pathLevel
        for (let d = 0; d < depth; d++) {
          hwUpdate(
            readWords[d] as Uint32Array,
            readIndex[d] as number,
            pathLevel[d] as number,
            p,
            false,
            write,
            ad,
          )
        }
        hwUpdate(w, j, level, p, true, write, ad)
      }
      const r = this.result
      r.fault = WalkFault.NONE
      r.level = level
      r.sizeLg2 = sizeShift + PAGE_SHIFT
      r.pagePfn = fmt.entryOaPfn(w, j, level, p) + lowBits(ipfn, sizeShift)
      r.perm = perm
      r.dirty = fmt.isWriteDirty?.(w, j, level, p) === true
      this.#reads = depth + 1
      this.#recordable = tables === null
      return r
    }
  }

  /**
   * The frame the last walk read its entry from at `depth` (0: the top level), for a
   * model's paging-structure cache. Valid for the depths a successful walk went through.
   */
  readFrame(depth: number): number {
    return this.#readPfn[depth] as number
  }

  /**
   * Record where the last walk read its entries and what they held afterwards (frame,
   * index and both words of each entry, top first), at `out[at]` in
   * {@link PATH_RECORD_INTS} ints. For a hardware model's detector: while
   * {@link pathUnchanged} holds, a walk of the same IOVA page from the same root reads the
   * same entries and gives the same result, so a cached translation can be compared with
   * memory without walking again.
   *
   * @returns false (nothing recorded) when the last walk faulted or was nested (its table
   *   pointers went through a {@link TableTranslator}, which can change on its own)
   */
  recordPath(out: Int32Array, at: number): boolean {
    if (!this.#recordable) {
      out[at] = 0
      return false
    }
    const n = this.#reads
    out[at] = n
    for (let d = 0; d < n; d++) {
      const j = this.#readIndex[d] as number
      // The views the walk read through (valid: nothing ran in between).
      const w = this.#readWords[d] as Uint32Array
      const o = at + 1 + 4 * d
      out[o] = this.#readPfn[d] as number
      out[o + 1] = j
      out[o + 2] = w[2 * j] as number
      out[o + 3] = w[2 * j + 1] as number
    }
    return true
  }

  /**
   * True when every entry recorded by {@link recordPath} at `rec[at]` still holds the
   * same words in memory (a frame that no longer holds data reads as zeros). Reads only;
   * gives no frame storage.
   */
  pathUnchanged(rec: Int32Array, at: number): boolean {
    const n = rec[at] as number
    if (n === 0) return false
    const mem = this.#mem
    for (let d = 0; d < n; d++) {
      const o = at + 1 + 4 * d
      const j = rec[o + 1] as number
      const w = mem.peekWords(rec[o] as number)
      const lo = w === null ? 0 : (w[2 * j] as number) | 0
      const hi = w === null ? 0 : (w[2 * j + 1] as number) | 0
      if (lo !== rec[o + 2] || hi !== rec[o + 3]) return false
    }
    return true
  }
}

/** Ints one {@link PageTableWalker.recordPath} record takes. */
export const PATH_RECORD_INTS = 1 + 4 * MAX_LEVELS

function isParams(x: unknown): boolean {
  return typeof x === 'object' && x !== null && 'granuleLg2' in x && 'bitsPerLevel' in x
}

/** For `PageTable.walker()`: a walker over the same memory and parameters. */
export function walkerFor(t: TableCore): PageTableWalker {
  return new PageTableWalker(t.mem, t.fmt as AnyPageTableFormat, t.p)
}

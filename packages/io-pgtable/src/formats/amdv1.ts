/**
 * AMD IOMMU v1 ("host") page table: AMD IOMMU specification §2.2.3, "I/O Page Tables for
 * Host Translations"; bit-exact with the kernel's generic_pt amdv1 format (and the old
 * io_pgtable.c, which wrote the same bits).
 *
 * Entry bits: PR 0, A 5, D 6, NextLevel 11:9, OA 51:12, FC 60, IR 61, IW 62.
 * - A table entry (PDE) has NL = the level of the table holding it (the child's 1-based
 *   spec level), IR and IW, no FC.
 * - A leaf has NL = 0 (the level's own size) or NL = 7: a page of 2^k bytes encoded in the
 *   OA field (bits 12..k-2 set, bit k-1 clear) and replicated into all 2^(k - item) items
 *   it spans (spec Table 14).
 * - Sizes: every power of two from 4 KiB to 2^51 except 512 GiB (a hardware erratum);
 *   level 5 (mode 6) holds no leaves.
 * - The root grows on demand (DTE mode 1..6 = root level 0..5): `changeTop` is required.
 *
 * @module
 */

import { IommuError, Prot } from '@iommu/core'
import { cto32, PAGE_SHIFT } from '../bits.ts'
import {
  Access,
  type Attrs,
  definePageTableFormat,
  EntryType,
  type FormatParams,
  HW_RESERVED,
  type PageTableFormat,
} from '../format.ts'
import {
  checkHwBits,
  checkOaBits,
  fillLeaves,
  oaField,
  scanLow,
  setAccessedDirty,
} from './common.ts'

/** Configuration of an AMD v1 table (`struct pt_iommu_amdv1_cfg`). */
export interface AmdV1Config {
  /**
   * Root level right after allocation (`starting_level`), 1..5; the AMD driver uses 2
   * (3 levels, 39-bit IOVA). Default 2.
   */
  readonly startingLevel?: number
  /** IOVA bits the hardware translates (from EFR.HATS: 48, 57 or 64). Default 64. */
  readonly hwMaxVaBits?: number
  /** Output address bits. Default 52. */
  readonly hwMaxOaBits?: number
  /**
   * `PT_FEAT_AMDV1_FORCE_COHERENCE`: set FC in every leaf (the AMD driver always does).
   * Default true.
   */
  readonly forceCoherence?: boolean
}

/** What {@link amdv1} derives from an {@link AmdV1Config}. */
export interface AmdV1Params extends FormatParams {
  readonly forceCoherence: boolean
}

/** AMD v1 entry bits (the kernel's `AMDV1PT_FMT_*`), as [lo, hi] word masks. */
export const AMDV1_PTE = {
  /** Present, bit 0 (lo). */
  PR: 0x1,
  /** Accessed, bit 5 (lo). */
  A: 0x20,
  /** Dirty, bit 6 (lo). */
  D: 0x40,
  /** NextLevel shift (bits 11:9, lo). */
  NL_SHIFT: 9,
  /** NextLevel value of a leaf whose size is encoded in the OA. */
  NL_SIZE: 7,
  /** Force coherent, bit 60 (hi bit 28). */
  FC_HI: 0x1000_0000,
  /** Read permission, bit 61 (hi bit 29). */
  IR_HI: 0x2000_0000,
  /** Write permission, bit 62 (hi bit 30). */
  IW_HI: 0x4000_0000,
} as const

const PR = AMDV1_PTE.PR
const A = AMDV1_PTE.A
const D = AMDV1_PTE.D
const NL7 = AMDV1_PTE.NL_SIZE << AMDV1_PTE.NL_SHIFT
const NLM = 7 << AMDV1_PTE.NL_SHIFT
const IRW = AMDV1_PTE.IR_HI | AMDV1_PTE.IW_HI
const MAX_TOP_LEVEL = 5

function nl(w: Uint32Array, i: number): number {
  return ((w[2 * i] as number) >>> 9) & 7
}

/** log2 of the page an NL=7 entry encodes: the run of ones from OA bit 12, plus 1, plus 12. */
function encodedSizeLg2(w: Uint32Array, i: number): number {
  let ones = cto32((w[2 * i] as number) >>> 12)
  if (ones === 20) ones += cto32((w[2 * i + 1] as number) & 0xf_ffff)
  return PAGE_SHIFT + ones + 1
}

function contigLg2(w: Uint32Array, i: number, level: number): number {
  if (nl(w, i) !== AMDV1_PTE.NL_SIZE) return 0
  return encodedSizeLg2(w, i) - (PAGE_SHIFT + 9 * level)
}

/** Word index of the first replica of the leaf holding entry `i`, and one past the last. */
function replicaWords(w: Uint32Array, i: number, level: number): [number, number] {
  const n = 1 << contigLg2(w, i, level)
  const head = i & ~(n - 1)
  return [head << 1, (head + n) << 1]
}

/**
 * harvestDirtyLeaves() entry by entry over words `[from, end)`: the index of the first entry
 * the caller must look at (a hole, a dirty replica of a contiguous leaf), or −1.
 */
function harvestEach(
  w: Uint32Array,
  from: number,
  end: number,
  clear: boolean,
  out: Uint16Array,
): number {
  for (let j = from; j < end; j += 2) {
    const lo = w[j] as number
    if ((lo & (PR | D)) === PR) continue
    if ((lo & PR) === 0 || (lo & NLM) === NL7) return j >>> 1
    const i = j >>> 1
    const n = (out[0] as number) + 1
    out[0] = n
    out[n] = i
    if (clear) w[j] = lo & ~D
  }
  return -1
}

/**
 * The AMD IOMMU v1 format.
 *
 * @example
 * ```ts
 * const pt = new PageTable(memory, amdv1, { startingLevel: 2 }, {
 *   changeTop: (pfn, level) => writeDtes(pfn, level + 1),
 * })
 * ```
 */
export const amdv1: PageTableFormat<AmdV1Config, AmdV1Params> = definePageTableFormat<
  AmdV1Config,
  AmdV1Params
>({
  name: 'amdv1',
  algorithm: 'generic-pt',

  init(cfg) {
    const va = cfg.hwMaxVaBits ?? 64
    const oa = cfg.hwMaxOaBits ?? 52
    checkHwBits('amdv1', va, oa, 64)
    const start = cfg.startingLevel ?? 2
    // amdv1pt_iommu_fmt_init: level 0 cannot be the root, level 5 is the highest.
    if (!Number.isInteger(start) || start < 1 || start > MAX_TOP_LEVEL) {
      throw new IommuError('EINVAL', `amdv1: startingLevel ${start} outside 1..5`)
    }
    checkOaBits('amdv1', oa, 52)
    return {
      granuleLg2: 12,
      bitsPerLevel: 9,
      topLevel: start,
      maxTopLevel: MAX_TOP_LEVEL,
      vaBits: va,
      oaBits: oa,
      signExtend: false,
      dynamicTop: true,
      upperVa: false,
      forceCoherence: cfg.forceCoherence ?? true,
    }
  },

  // The level-5 root only covers IOVA bits 63:57.
  numItemsLg2: (level) => (level === MAX_TOP_LEVEL ? 7 : 9),

  possibleSizes(level) {
    if (level >= MAX_TOP_LEVEL) return 0
    const item = PAGE_SHIFT + 9 * level
    // Every power of two up to 2^51 (Table 14), minus 512 GiB (erratum).
    let sizes = (1 << (Math.min(51, item + 8) - item + 1)) - 1
    if (39 >= item && 39 <= item + 8) sizes &= ~(1 << (39 - item))
    return sizes
  },

  loadEntry(w, i, level) {
    if (((w[2 * i] as number) & PR) === 0) return EntryType.EMPTY
    const next = nl(w, i)
    if (level === 0 || next === 0 || next === AMDV1_PTE.NL_SIZE) return EntryType.OA
    return EntryType.TABLE
  },

  tablePfn: oaField,

  entryOaPfn(w, i) {
    const oa = oaField(w, i)
    if (nl(w, i) !== AMDV1_PTE.NL_SIZE) return oa
    // Clear the size code: the ones and the zero that ends them.
    const code = 2 ** (encodedSizeLg2(w, i) - PAGE_SHIFT)
    return oa - (oa % code)
  },

  entryNumContigLg2: (w, i, level) => contigLg2(w, i, level),

  installLeaves(w, i, count, level, oaPfn, sizeLg2, attrs) {
    const contig = sizeLg2 - (PAGE_SHIFT + 9 * level)
    const step = 2 ** (sizeLg2 - PAGE_SHIFT)
    if (contig === 0) {
      fillLeaves(w, i, count, 1, oaPfn, step, attrs.lo | PR, attrs.hi)
      return
    }
    // NextLevel 7: OA bits 12..k-2 set, bit k-1 (clear in an aligned OA) ends the code.
    fillLeaves(w, i, count, 1 << contig, oaPfn + step / 2 - 1, step, attrs.lo | PR | NL7, attrs.hi)
  },

  findEmpty: (w, from, to) => scanLow(w, from, to, PR, PR),

  installTable(w, i, level, tablePfn) {
    // IR/IW are ANDed along the walk: tables grant both, leaves decide.
    fillLeaves(w, i, 1, 1, tablePfn, 1, PR | (level << AMDV1_PTE.NL_SHIFT), IRW)
  },

  setProt(prot, p): Attrs {
    let hi = p.forceCoherence ? AMDV1_PTE.FC_HI : 0
    if (prot & Prot.READ) hi |= AMDV1_PTE.IR_HI
    if (prot & Prot.WRITE) hi |= AMDV1_PTE.IW_HI
    return { lo: 0, hi }
  },

  attrFromEntry: (w, i) => ({
    lo: 0,
    hi: (w[2 * i + 1] as number) & (AMDV1_PTE.FC_HI | AMDV1_PTE.IR_HI | AMDV1_PTE.IW_HI),
  }),

  // The hardware may set D in any replica (spec §2.2.3.2): look at all of them.
  isWriteDirty(w, i, level) {
    if (nl(w, i) !== AMDV1_PTE.NL_SIZE) return ((w[2 * i] as number) & D) !== 0
    const [from, to] = replicaWords(w, i, level)
    for (let k = from; k < to; k += 2) if (((w[k] as number) & D) !== 0) return true
    return false
  },

  makeWriteClean(w, i, level) {
    if (nl(w, i) !== AMDV1_PTE.NL_SIZE) {
      w[2 * i] = (w[2 * i] as number) & ~D
      return
    }
    const [from, to] = replicaWords(w, i, level)
    for (let k = from; k < to; k += 2) w[k] = (w[k] as number) & ~D
  },

  makeWriteDirty(w, i) {
    w[2 * i] = (w[2 * i] as number) | D
  },

  // Level 0: a present entry is a leaf; stop at a hole or a D bit.
  skipCleanLeaves: (w, from, to) => scanLow(w, from, to, PR | D, PR),

  harvestDirtyLeaves(w, from, to, clear, out) {
    // Blocks of eight entries, each block tested at once: clean leaves pass, and in a
    // block of present leaves the D bits are taken from one gathered byte.
    let j = from << 1
    const end = to << 1
    for (; j + 16 <= end; j += 16) {
      // The eight entries ORed (any D) and ANDed (all PR): two operations an entry.
      const w0 = w[j] as number
      const w1 = w[j + 2] as number
      const w2 = w[j + 4] as number
      const w3 = w[j + 6] as number
      const w4 = w[j + 8] as number
      const w5 = w[j + 10] as number
      const w6 = w[j + 12] as number
      const w7 = w[j + 14] as number
      const all = w0 & w1 & w2 & w3 & w4 & w5 & w6 & w7
      const any = w0 | w1 | w2 | w3 | w4 | w5 | w6 | w7
      if ((any & D) === 0 && (all & PR) !== 0) continue
      if ((all & PR) === 0) {
        // A hole in the block: entry by entry.
        const k = harvestEach(w, j, j + 16, clear, out)
        if (k >= 0) return k
        continue
      }
      let d =
        ((w0 >>> 6) & 1) |
        ((w1 >>> 5) & 2) |
        ((w2 >>> 4) & 4) |
        ((w3 >>> 3) & 8) |
        ((w4 >>> 2) & 16) |
        ((w5 >>> 1) & 32) |
        (w6 & 64) |
        ((w7 << 1) & 128)
      do {
        const jj = j + 2 * (31 - Math.clz32(d & -d))
        const lo = w[jj] as number
        // A dirty replica of a contiguous leaf: the caller looks at it.
        if ((lo & NLM) === NL7) return jj >>> 1
        const i = jj >>> 1
        const n = (out[0] as number) + 1
        out[0] = n
        out[n] = i
        if (clear) w[jj] = lo & ~D
        d &= d - 1
      } while (d !== 0)
    }
    const k = harvestEach(w, j, end, clear, out)
    return k >= 0 ? k : to
  },

  hwInfo: (topPfn, topLevel) => ({ hostPtRoot: BigInt(topPfn) << 12n, mode: topLevel + 1 }),

  hwEntryType(w, i, level) {
    if (((w[2 * i] as number) & PR) === 0) return EntryType.EMPTY
    const next = nl(w, i)
    if (next === 0 || next === AMDV1_PTE.NL_SIZE) {
      if (level >= MAX_TOP_LEVEL) return HW_RESERVED
      if (next === AMDV1_PTE.NL_SIZE) {
        const c = contigLg2(w, i, level)
        if (c < 1 || c > 9) return HW_RESERVED
      }
      return EntryType.OA
    }
    // A PDE names its child's 1-based level; it may skip levels, never go up.
    return level === 0 || next > level ? HW_RESERVED : EntryType.TABLE
  },

  hwNextLevel: (w, i) => nl(w, i) - 1,

  hwTablePerms: (w, i) => ((w[2 * i + 1] as number) >>> 29) & (Access.READ | Access.WRITE),

  hwLeafPerms: (w, i) => ((w[2 * i + 1] as number) >>> 29) & (Access.READ | Access.WRITE),

  hwUpdateAccessedDirty: (w, i, _level, _p, leaf, write, ad) =>
    setAccessedDirty(w, i, leaf, write, ad, A, D),
})

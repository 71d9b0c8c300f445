/**
 * x86-64 4- and 5-level paging, as IOMMU page tables: AMD v2 (guest / GCR3 tables, AMD
 * spec §2.2.6) and Intel first stage (VT-d spec §9.7); bit-exact with generic_pt's x86_64
 * format (Intel SDM vol. 3 §4.4 for the layout).
 *
 * Entry bits: P 0, R/W 1, U/S 2, A 5, D 6, PS 7 (levels 1 and 2), OA 51:12, XD 63.
 * - Table entry: P | R/W | U | A (0x27).
 * - Leaf: P | U | A, plus R/W | D when writable (newest kernel: a read-only leaf has no D,
 *   0x25), plus PS above level 0. XD is never set. Sizes 4 KiB, 2 MiB, 1 GiB.
 * - No dirty tracking in Linux for these tables (no dirty functions: EOPNOTSUPP).
 * - Intel first stage uses sign extension (canonical upper half); AMD v2 does not and
 *   limits the IOVA to 47 or 56 bits.
 *
 * @module
 */

import { Prot } from '@iommu/core'
import {
  Access,
  definePageTableFormat,
  EntryType,
  type FormatParams,
  HW_RESERVED,
  type PageTableFormat,
} from '../format.ts'
import {
  type FixedTopConfig,
  fillLeaves,
  initFixedTop,
  oaField,
  scanLow,
  setAccessedDirty,
} from './common.ts'

/** Configuration of an x86-64 table (`struct pt_iommu_x86_64_cfg`). */
export interface X86_64Config extends FixedTopConfig {
  /** Root level: 3 (4-level, 48-bit) or 4 (5-level, 57-bit); others are EOPNOTSUPP. */
  readonly topLevel: number
  /**
   * `PT_FEAT_SIGN_EXTEND`: the IOVA space is the canonical lower and upper halves (Intel
   * first stage); without it only 0..2^hwMaxVaBits - 1 (AMD v2 with 47 or 56). Default
   * false.
   */
  readonly signExtend?: boolean
}

/** x86-64 entry bits (`X86_64_FMT_*`), in the low word unless noted. */
export const X86_64_PTE = {
  P: 0x1,
  RW: 0x2,
  U: 0x4,
  A: 0x20,
  D: 0x40,
  PS: 0x80,
  /** Execute disable, bit 63 (hi bit 31). */
  XD_HI: 0x8000_0000,
} as const

const { P, RW, U, A, D, PS } = X86_64_PTE

/** The x86-64 format (AMD v2, Intel first stage). */
export const x86_64: PageTableFormat<X86_64Config, FormatParams> = definePageTableFormat<
  X86_64Config,
  FormatParams
>({
  name: 'x86_64',
  algorithm: 'generic-pt',

  init: (cfg) => initFixedTop('x86_64', cfg, 3, cfg.signExtend ?? false),

  possibleSizes: (level) => (level <= 2 ? 1 : 0),

  loadEntry(w, i, level) {
    const lo = w[2 * i] as number
    if ((lo & P) === 0) return EntryType.EMPTY
    return level === 0 || (level <= 2 && (lo & PS) !== 0) ? EntryType.OA : EntryType.TABLE
  },

  tablePfn: oaField,
  entryOaPfn: oaField,

  installLeaves(w, i, count, level, oaPfn, _sizeLg2, attrs) {
    fillLeaves(w, i, count, 1, oaPfn, 512 ** level, attrs.lo | P | (level === 0 ? 0 : PS), attrs.hi)
  },

  findEmpty: (w, from, to) => scanLow(w, from, to, P, P),

  installTable(w, i, _level, tablePfn) {
    fillLeaves(w, i, 1, 1, tablePfn, 1, P | RW | U | A, 0)
  },

  setProt: (prot) => ({ lo: U | A | (prot & Prot.WRITE ? RW | D : 0), hi: 0 }),

  attrFromEntry: (w, i) => ({
    lo: (w[2 * i] as number) & (RW | U | A | D),
    hi: (w[2 * i + 1] as number) & X86_64_PTE.XD_HI,
  }),

  hwInfo: (topPfn, topLevel) => ({ gcr3Pt: BigInt(topPfn) << 12n, levels: topLevel + 1 }),

  hwEntryType(w, i, level) {
    const lo = w[2 * i] as number
    if ((lo & P) === 0) return EntryType.EMPTY
    if (level === 0) return EntryType.OA
    if ((lo & PS) === 0) return EntryType.TABLE
    // PS is reserved in PML4/PML5 entries.
    return level <= 2 ? EntryType.OA : HW_RESERVED
  },

  hwTablePerms: (w, i) => Access.READ | ((w[2 * i] as number) & RW ? Access.WRITE : 0),
  hwLeafPerms: (w, i) => Access.READ | ((w[2 * i] as number) & RW ? Access.WRITE : 0),

  hwUpdateAccessedDirty: (w, i, _level, _p, leaf, write, ad) =>
    setAccessedDirty(w, i, leaf, write, ad, A, D),
})

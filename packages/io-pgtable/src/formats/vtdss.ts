/**
 * Intel VT-d second-stage page table (VT-d spec §9.8, "Second-Stage Paging Entries");
 * bit-exact with generic_pt's vtdss format.
 *
 * Entry bits: R 0, W 1, PS 7 (levels 1 and 2), A 8, D 9, SNP 11, OA 51:12.
 * - No present bit: software treats any non-zero entry as present; the hardware needs R or
 *   W.
 * - Table entry: R | W (0x3). Leaf: R and W from prot (the newest kernel no longer forces
 *   R), SNP with FORCE_COHERENCE, PS above level 0. A and D are set by the hardware only,
 *   when the PASID entry's SSADE is on.
 * - 3, 4 or 5 levels (root level 2..4, AW = level - 1); sizes 4 KiB, 2 MiB, 1 GiB (a
 *   driver masks superpages the hardware lacks with the `pgsizeBitmap` option).
 *
 * @module
 */

import { IommuError, Prot } from '@iommu/core'
import {
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
  setAccessedDirty,
} from './common.ts'

/** Configuration of a VT-d second-stage table (`struct pt_iommu_vtdss_cfg`). */
export interface VtdSsConfig extends FixedTopConfig {
  /** Root level 2, 3 or 4 (39, 48, 57-bit); others are EOPNOTSUPP. */
  readonly topLevel: number
  /** `PT_FEAT_VTDSS_FORCE_COHERENCE`: SNP in every leaf. Default false. */
  readonly forceCoherence?: boolean
  /**
   * `PT_FEAT_VTDSS_FORCE_WRITEABLE`: refuse read-only maps (EINVAL); nest parents on
   * hardware with erratum ERRATA_772415_SPR17. Default false.
   */
  readonly forceWriteable?: boolean
}

/** What {@link vtdss} derives from a {@link VtdSsConfig}. */
export interface VtdSsParams extends FormatParams {
  /**
   * SNP in every leaf mapped from now on. Not readonly: the VT-d driver turns it on when
   * `enforce_cache_coherency` succeeds (it sets `PT_FEAT_VTDSS_FORCE_COHERENCE` on a live
   * table); leaves mapped before keep their bits, as in the kernel.
   */
  forceCoherence: boolean
  readonly forceWriteable: boolean
}

/** VT-d second-stage entry bits (`VTDSS_FMT_*`), all in the low word. */
export const VTDSS_PTE = { R: 0x1, W: 0x2, PS: 0x80, A: 0x100, D: 0x200, SNP: 0x800 } as const

const { R, W, PS, A, D, SNP } = VTDSS_PTE

/**
 * Non-zero unless the low word is a write-clean leaf with R or W (the dirty scan's skip):
 * `lo & (D | R | W)` is 1, 2 or 3 exactly then, so one less has no bit above the lowest two
 * (0 gives -1, a D bit 0x1ff or more).
 */
function needsLook(lo: number): number {
  return ((lo & (D | R | W)) - 1) & ~(R | W)
}

/** {@link needsLook} of the eight entries from word `j`, ORed: 0 when all are clean leaves. */
function blockNeedsLook(w: Uint32Array, j: number): number {
  return (
    needsLook(w[j] as number) |
    needsLook(w[j + 2] as number) |
    needsLook(w[j + 4] as number) |
    needsLook(w[j + 6] as number) |
    needsLook(w[j + 8] as number) |
    needsLook(w[j + 10] as number) |
    needsLook(w[j + 12] as number) |
    needsLook(w[j + 14] as number)
  )
}

/**
 * Level 0: the first index in `[from, to)` that is a hole or has a D bit (any non-zero
 * entry is a leaf). Whole blocks of eight first.
 */
function skipClean(w: Uint32Array, from: number, to: number): number {
  // Clean with R or W set: 0 when (lo & (R|W)) - 1 has no sign bit.
  let j = from << 1
  const end = to << 1
  for (; j + 16 <= end; j += 16) {
    if (blockNeedsLook(w, j) !== 0) break
  }
  for (; j < end; j += 2) {
    const lo = w[j] as number
    if ((lo & D) !== 0 || (lo | (w[j + 1] as number)) === 0) break
  }
  return j >>> 1
}

/**
 * harvestDirtyLeaves() entry by entry over words `[from, end)`: the index of the first hole,
 * or −1.
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
    if ((lo & D) === 0) {
      if ((lo | (w[j + 1] as number)) === 0) return j >>> 1
      continue
    }
    const n = (out[0] as number) + 1
    out[0] = n
    out[n] = j >>> 1
    if (clear) w[j] = lo & ~D
  }
  return -1
}

/** The VT-d second-stage format. */
export const vtdss: PageTableFormat<VtdSsConfig, VtdSsParams> = definePageTableFormat<
  VtdSsConfig,
  VtdSsParams
>({
  name: 'vtdss',
  algorithm: 'generic-pt',

  init: (cfg) => ({
    ...initFixedTop('vtdss', cfg, 2, false),
    forceCoherence: cfg.forceCoherence ?? false,
    forceWriteable: cfg.forceWriteable ?? false,
  }),

  possibleSizes: (level) => (level <= 2 ? 1 : 0),

  loadEntry(w, i, level) {
    const lo = w[2 * i] as number
    if ((lo | (w[2 * i + 1] as number)) === 0) return EntryType.EMPTY
    return level === 0 || (level <= 2 && (lo & PS) !== 0) ? EntryType.OA : EntryType.TABLE
  },

  tablePfn: oaField,
  entryOaPfn: oaField,

  installLeaves(w, i, count, level, oaPfn, _sizeLg2, attrs) {
    fillLeaves(w, i, count, 1, oaPfn, 512 ** level, attrs.lo | (level === 0 ? 0 : PS), attrs.hi)
  },

  findEmpty(w, from, to) {
    let j = from << 1
    const end = to << 1
    while (j < end && ((w[j] as number) | (w[j + 1] as number)) !== 0) j += 2
    return j >>> 1
  },

  installTable(w, i, _level, tablePfn) {
    fillLeaves(w, i, 1, 1, tablePfn, 1, R | W, 0)
  },

  setProt(prot, p) {
    // No present bit: a leaf without R or W would read as a table or a hole.
    if ((prot & (Prot.READ | Prot.WRITE)) === 0) throw new IommuError('EINVAL', 'vtdss: no R or W')
    if (p.forceWriteable && (prot & Prot.WRITE) === 0) {
      throw new IommuError(
        'EINVAL',
        'read-only mapping is not allowed in a nest parent (ERRATA_772415_SPR17)',
      )
    }
    let lo = 0
    if (prot & Prot.READ) lo |= R
    if (prot & Prot.WRITE) lo |= W
    if (p.forceCoherence) lo |= SNP
    return { lo, hi: 0 }
  },

  attrFromEntry: (w, i) => ({ lo: (w[2 * i] as number) & (R | W | SNP), hi: 0 }),

  isWriteDirty: (w, i) => ((w[2 * i] as number) & D) !== 0,

  makeWriteClean(w, i) {
    w[2 * i] = (w[2 * i] as number) & ~D
  },

  makeWriteDirty(w, i) {
    w[2 * i] = (w[2 * i] as number) | D
  },

  skipCleanLeaves: skipClean,

  harvestDirtyLeaves(w, from, to, clear, out) {
    // Blocks of eight entries, each block tested at once: clean leaves pass, and in a
    // block of leaves the D bits are taken from one gathered byte.
    let j = from << 1
    const end = to << 1
    for (; j + 16 <= end; j += 16) {
      // The eight entries ORed (any D) and ANDed (R or W common to all): two operations
      // an entry. Leaves that share neither R nor W (or a hole) go entry by entry.
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
      if ((any & D) === 0 && (all & (R | W)) !== 0) continue
      if ((all & (R | W)) === 0) {
        const k = harvestEach(w, j, j + 16, clear, out)
        if (k >= 0) return k
        continue
      }
      let d =
        ((w0 >>> 9) & 1) |
        ((w1 >>> 8) & 2) |
        ((w2 >>> 7) & 4) |
        ((w3 >>> 6) & 8) |
        ((w4 >>> 5) & 16) |
        ((w5 >>> 4) & 32) |
        ((w6 >>> 3) & 64) |
        ((w7 >>> 2) & 128)
      do {
        const jj = j + 2 * (31 - Math.clz32(d & -d))
        const n = (out[0] as number) + 1
        out[0] = n
        out[n] = jj >>> 1
        if (clear) w[jj] = (w[jj] as number) & ~D
        d &= d - 1
      } while (d !== 0)
    }
    const k = harvestEach(w, j, end, clear, out)
    return k >= 0 ? k : to
  },

  hwInfo: (topPfn, topLevel) => ({ ssptptr: BigInt(topPfn) << 12n, aw: topLevel - 1 }),

  hwEntryType(w, i, level) {
    const lo = w[2 * i] as number
    // The hardware sees an entry as present when R or W is set.
    if ((lo & (R | W)) === 0) return EntryType.EMPTY
    if (level === 0) return EntryType.OA
    if ((lo & PS) === 0) return EntryType.TABLE
    return level <= 2 ? EntryType.OA : HW_RESERVED
  },

  // R and W sit where Access.READ and Access.WRITE do.
  hwTablePerms: (w, i) => (w[2 * i] as number) & (R | W),
  hwLeafPerms: (w, i) => (w[2 * i] as number) & (R | W),

  hwUpdateAccessedDirty: (w, i, _level, _p, leaf, write, ad) =>
    setAccessedDirty(w, i, leaf, write, ad, A, D),
})

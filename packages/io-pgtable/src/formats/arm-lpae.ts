/**
 * ARM LPAE (VMSAv8-64 long descriptors), stage 1 and stage 2, 4K/16K/64K granules: the
 * kernel's io-pgtable-arm (`ARM_64_LPAE_S1`, `ARM_64_LPAE_S2`), newest semantics
 * (`algorithm: 'io-pgtable-arm'`).
 *
 * Levels here are `3 - n` for the architecture's lookup level n.
 *
 * Descriptor bits: type 1:0 (table/page 3, block 1), AttrIndx/MemAttr 5:2, NS 5, AP[1] /
 * S2AP[0] 6, AP[2] (RDONLY) / S2AP[1] 7, SH 9:8, AF 10, nG 11, address 47:12 (PA[51:48] in
 * 15:12 with the 64K granule and a 52-bit PA), DBM 51, XN 54:53, SW_SYNC 55 (tables of a
 * non-coherent walker), NSTABLE 63.
 *
 * Geometry follows `arm_lpae_alloc_pgtable`: the granule from the page-size bitmap, ias
 * and oas clamped to 48 bits (52 with 64K), the levels and PGD size from ias, and for stage
 * 2 the concatenated PGD only where the architecture makes it mandatory.
 *
 * @module
 */

import { IommuError, Prot } from '@iommu/core'
import { PAGE_SHIFT } from '../bits.ts'
import {
  Access,
  type Attrs,
  definePageTableFormat,
  EntryType,
  type FormatParams,
  HwAd,
  type PageTableFormat,
} from '../format.ts'
import { fillLeaves, scanLow } from './common.ts'

/** `IO_PGTABLE_QUIRK_*` bits, with the kernel's values. */
export const IoPgtableQuirk = {
  /** Set NS in leaves and NSTABLE in tables (stage 1). */
  ARM_NS: 1 << 0,
  /** Upper (TTBR1) address space: IOVAs are sign-extended ones (stage 1). */
  ARM_TTBR1: 1 << 5,
  /** Non-coherent walker with outer WBWA table walks (stage 1). */
  ARM_OUTER_WBWA: 1 << 6,
  /** Hardware dirty management: writable stage-1 leaves get DBM. */
  ARM_HD: 1 << 7,
  /** Stage-2 MemAttr in the FWB encoding. */
  ARM_S2FWB: 1 << 8,
  /** No WARN on map over a leaf or unmap of a hole (no effect on results). */
  NO_WARN: 1 << 9,
} as const

/** Configuration of an ARM LPAE table (`struct io_pgtable_cfg` for `ARM_64_LPAE_S1/S2`). */
export interface ArmLpaeConfig {
  /** Translation stage. */
  readonly stage: 1 | 2
  /**
   * Page sizes the SMMU offers (`cfg->pgsize_bitmap`); the granule is chosen from it as
   * the kernel does (the CPU page size, 4K, when present). Default: the {@link granule}'s
   * sizes.
   */
  readonly pgsizeBitmap?: bigint
  /**
   * Shorthand for a bitmap of all of one granule's sizes (4K|2M|1G, 16K|32M or
   * 64K|512M|4T): 4096, 16384 or 65536. Default 4096.
   */
  readonly granule?: 4096 | 16384 | 65536
  /** Input address size in bits (clamped to 48, 52 with 64K). */
  readonly ias: number
  /** Output address size in bits: 32, 36, 40, 42, 44, 48 or 52 (clamped like ias). */
  readonly oas: number
  /** {@link IoPgtableQuirk} bits. Stage 1: NS, TTBR1, OUTER_WBWA, HD, NO_WARN; stage 2: S2FWB, NO_WARN. */
  readonly quirks?: number
  /** The SMMU walks tables coherently (`cfg->coherent_walk`). Default true. */
  readonly coherentWalk?: boolean
}

/** What {@link armLpae} derives from an {@link ArmLpaeConfig}. */
export interface ArmLpaeParams extends FormatParams {
  readonly stage: 1 | 2
  /** Index bits of the start-level table (after concatenation). */
  readonly pgdBits: number
  /** Architectural start level (0..3). */
  readonly startLevel: number
  /** ias after clamping. */
  readonly ias: number
  /** oas after clamping. */
  readonly oas: number
  readonly quirks: number
  readonly coherentWalk: boolean
  /** The stage-2 PGD is concatenated (`arm_lpae_concat_mandatory`). */
  readonly concatenated: boolean
  readonly pgsizeBitmap: bigint
  /** Bit L set when level L may hold leaves (its block or page size is in the bitmap). */
  readonly leafLevels: number
}

/** ARM LPAE descriptor bits, as low-word / high-word masks. */
export const ARM_LPAE_PTE = {
  VALID: 0x1,
  TYPE_MASK: 0x3,
  TYPE_BLOCK: 0x1,
  TYPE_TABLE: 0x3,
  TYPE_PAGE: 0x3,
  NS: 0x20,
  AP_UNPRIV: 0x40,
  AP_RDONLY: 0x80,
  HAP_READ: 0x40,
  HAP_WRITE: 0x80,
  SH_OS: 0x200,
  SH_IS: 0x300,
  AF: 0x400,
  NG: 0x800,
  /** DBM, bit 51. */
  DBM_HI: 0x8_0000,
  /** XN (PXN | UXN), bits 54:53. */
  XN_HI: 0x60_0000,
  /** SW_SYNC, bit 55. */
  SW_SYNC_HI: 0x80_0000,
  /** NSTABLE, bit 63. */
  NSTABLE_HI: 0x8000_0000,
  MEMATTR_DEV: 0x1 << 2,
  MEMATTR_NC: 0x5 << 2,
  MEMATTR_FWB_WB: 0x6 << 2,
  MEMATTR_OIWB: 0xf << 2,
  ATTRINDX_CACHE: 1 << 2,
  ATTRINDX_DEV: 2 << 2,
} as const

const E = ARM_LPAE_PTE
const SZ_4K = 1n << 12n
const SZ_16K = 1n << 14n
const SZ_64K = 1n << 16n
/** oas/ias encodings of TCR.IPS / VTCR.PS. */
const PS_BITS = [32, 36, 40, 42, 44, 48, 52]
/** MAIR: NC at index 0, WBRWA at 1, DEVICE at 2, INC_OWBRWA at 3. */
export const ARM_LPAE_MAIR = 0x0000_0000_f404_ff44n

const S1_QUIRKS =
  IoPgtableQuirk.ARM_NS |
  IoPgtableQuirk.ARM_TTBR1 |
  IoPgtableQuirk.ARM_OUTER_WBWA |
  IoPgtableQuirk.ARM_HD |
  IoPgtableQuirk.NO_WARN
const S2_QUIRKS = IoPgtableQuirk.ARM_S2FWB | IoPgtableQuirk.NO_WARN

function fail(detail: string): never {
  // alloc_io_pgtable_ops() returns NULL here; the model reports EINVAL.
  throw new IommuError('EINVAL', `arm-lpae: ${detail}`)
}

function lowestBit(x: bigint): bigint {
  return x & -x
}

/**
 * The page sizes `arm_lpae_restrict_pgsizes` keeps for a granule: 4K|2M|1G, 16K|32M, and
 * 64K|512M plus the 4T level-1 block only when the output size exceeds 48 bits.
 */
function granuleSizes(granule: bigint, oas: number): bigint {
  if (granule === SZ_16K) return SZ_16K | (1n << 25n)
  if (granule === SZ_64K) return SZ_64K | (1n << 29n) | (oas > 48 ? 1n << 42n : 0n)
  if (granule === SZ_4K) return SZ_4K | (1n << 21n) | (1n << 30n)
  return 0n
}

/** arm_lpae_concat_mandatory (Arm ARM R_DXBSH and R_SRKBC a-d). */
function concatMandatory(granule: bigint, start: number, ias: number, oas: number): boolean {
  if (granule === SZ_16K && start === 0) return oas === 48 || ias === 48
  if (granule === SZ_4K && start === 0) return oas === 40 || oas === 42
  return granule === SZ_16K && start === 1 && oas === 40
}

/** The address field for output page `pfn`: PA bits 47:12, and PA[51:48] folded into 15:12. */
function addrLo(pfn: number): number {
  return ((pfn << 12) | ((Math.floor(pfn / 2 ** 36) & 0xf) << 12)) >>> 0
}

function addrHi(pfn: number): number {
  return Math.floor(pfn / 0x10_0000) & 0xffff
}

function addrPfn(w: Uint32Array, i: number, _level: number, p: ArmLpaeParams): number {
  const lo = w[2 * i] as number
  const hi = ((w[2 * i + 1] as number) & 0xffff) * 0x10_0000
  // Below 64K the field is the address; with 64K, bits 15:12 carry PA[51:48].
  if (p.granuleLg2 < 16) return (lo >>> 12) + hi
  return ((lo >>> 16) << 4) + hi + ((lo >>> 12) & 0xf) * 2 ** 36
}

function isLeaf(lo: number, level: number): boolean {
  return (lo & E.TYPE_MASK) === (level === 0 ? E.TYPE_PAGE : E.TYPE_BLOCK)
}

function writeDirty(lo: number, hi: number): boolean {
  return (lo & E.AP_RDONLY) === 0 && (hi & E.DBM_HI) !== 0
}

/**
 * Level 0: the first index in `[from, to)` that is not a page, or is a write-dirty one
 * (AP[2] clear, DBM set), or `to`.
 */
function skipClean(w: Uint32Array, from: number, to: number): number {
  // A page with AP[2] set is clean whatever DBM says: whole blocks of them first.
  let j = scanLow(w, from, to, E.AP_RDONLY | E.TYPE_MASK, E.AP_RDONLY | E.TYPE_PAGE) << 1
  const end = to << 1
  for (; j < end; j += 2) {
    const lo = w[j] as number
    // A page with AP[2] set is clean whatever DBM says: one load for the common case.
    if ((lo & (E.AP_RDONLY | E.TYPE_MASK)) === (E.AP_RDONLY | E.TYPE_PAGE)) continue
    if ((lo & E.TYPE_MASK) !== E.TYPE_PAGE || ((w[j + 1] as number) & E.DBM_HI) !== 0) break
  }
  return j >>> 1
}

/**
 * harvestDirtyLeaves() entry by entry over words `[from, end)`: the index of the first entry
 * that is not a page, or −1.
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
    if ((lo & (E.AP_RDONLY | E.TYPE_MASK)) === (E.AP_RDONLY | E.TYPE_PAGE)) continue
    if ((lo & E.TYPE_MASK) !== E.TYPE_PAGE) return j >>> 1
    if (((w[j + 1] as number) & E.DBM_HI) === 0) continue
    const n = (out[0] as number) + 1
    out[0] = n
    out[n] = j >>> 1
    if (clear) w[j] = lo | E.AP_RDONLY
  }
  return -1
}

/** The ARM LPAE format, stages 1 and 2. */
export const armLpae: PageTableFormat<ArmLpaeConfig, ArmLpaeParams> = definePageTableFormat<
  ArmLpaeConfig,
  ArmLpaeParams
>({
  name: 'arm-lpae',
  algorithm: 'io-pgtable-arm',

  init(cfg) {
    const quirks = cfg.quirks ?? 0
    const stage = cfg.stage
    if (stage !== 1 && stage !== 2) fail(`stage ${String(stage)}`)
    if ((quirks & ~(stage === 1 ? S1_QUIRKS : S2_QUIRKS)) !== 0) {
      fail(`quirks 0x${quirks.toString(16)} not allowed at stage ${stage}`)
    }
    // The shorthand offers every size of the granule; the restriction below then treats
    // it exactly as the same explicit bitmap.
    let bitmap = cfg.pgsizeBitmap ?? granuleSizes(BigInt(cfg.granule ?? 4096), 52)
    // arm_lpae_restrict_pgsizes: the CPU page size if offered, else the largest smaller
    // size, else the smallest larger one.
    let granule = 0n
    if ((bitmap & SZ_4K) !== 0n) granule = SZ_4K
    else if ((bitmap & (SZ_4K - 1n)) !== 0n) {
      granule = 1n << BigInt((bitmap & (SZ_4K - 1n)).toString(2).length - 1)
    } else if ((bitmap & ~(SZ_4K - 1n)) !== 0n) granule = lowestBit(bitmap & ~(SZ_4K - 1n))
    // The 52-bit limit and the 4T block depend on the oas asked for, before clamping.
    const maxBits = granule === SZ_64K ? 52 : 48
    bitmap &= granuleSizes(granule, cfg.oas)
    const ias = Math.min(cfg.ias, maxBits)
    const oas = Math.min(cfg.oas, maxBits)
    if ((bitmap & (SZ_4K | SZ_16K | SZ_64K)) === 0n) fail('no 4K, 16K or 64K granule')
    if (ias > 52 || oas > 52) fail('address size above 52 bits')
    const pgShift = lowestBit(bitmap).toString(2).length - 1
    const bpl = pgShift - 3
    const vaBits = ias - pgShift
    if (!(vaBits > 0)) fail(`ias ${ias} too small`)
    const levels = Math.ceil(vaBits / bpl)
    let start = 4 - levels
    let pgdBits = vaBits - bpl * (levels - 1)
    const coherentWalk = cfg.coherentWalk ?? true
    let concatenated = false
    if (stage === 1) {
      if (coherentWalk && (quirks & IoPgtableQuirk.ARM_OUTER_WBWA) !== 0) {
        fail('OUTER_WBWA with a coherent walk')
      }
    } else if (concatMandatory(granule, start, ias, oas)) {
      if (2 ** pgdBits > 16) fail('more than 16 concatenated tables')
      pgdBits += bpl
      start++
      concatenated = true
    }
    if (!PS_BITS.includes(oas)) fail(`oas ${oas}`)
    let leafLevels = 0
    for (let level = 0; level <= 3 - start; level++) {
      if ((bitmap & (1n << BigInt(pgShift + bpl * level))) !== 0n) leafLevels |= 1 << level
    }
    return {
      granuleLg2: pgShift,
      bitsPerLevel: bpl,
      topLevel: 3 - start,
      maxTopLevel: 3 - start,
      vaBits: ias,
      oaBits: oas,
      signExtend: false,
      dynamicTop: false,
      upperVa: (quirks & IoPgtableQuirk.ARM_TTBR1) !== 0,
      pgsizeBitmap: bitmap,
      stage,
      pgdBits,
      startLevel: start,
      ias,
      oas,
      quirks,
      coherentWalk,
      concatenated,
      leafLevels,
    }
  },

  numItemsLg2: (level, p) => (level === p.topLevel ? p.pgdBits : p.bitsPerLevel),

  possibleSizes: (level, p) => (p.leafLevels >>> level) & 1,

  loadEntry(w, i, level) {
    const lo = w[2 * i] as number
    if ((lo & E.VALID) === 0) return EntryType.EMPTY
    if (isLeaf(lo, level)) return EntryType.OA
    return level !== 0 && (lo & E.TYPE_MASK) === E.TYPE_TABLE ? EntryType.TABLE : EntryType.EMPTY
  },

  tablePfn: addrPfn,
  entryOaPfn: addrPfn,

  installLeaves(w, i, count, level, oaPfn, sizeLg2, attrs) {
    const type = level === 0 ? E.TYPE_PAGE : E.TYPE_BLOCK
    const step = 2 ** (sizeLg2 - PAGE_SHIFT)
    const lo = attrs.lo | type
    // Below 2^48 the address field is the PA itself (nothing to fold into bits 15:12).
    if (oaPfn + count * step <= 2 ** 36) {
      fillLeaves(w, i, count, 1, oaPfn, step, lo, attrs.hi)
      return
    }
    let pfn = oaPfn
    for (let j = i << 1, end = (i + count) << 1; j < end; j += 2) {
      w[j] = addrLo(pfn) | lo
      w[j + 1] = addrHi(pfn) | attrs.hi
      pfn += step
    }
  },

  // Level 3: only page descriptors (type 3) are present.
  findEmpty: (w, from, to) => scanLow(w, from, to, E.TYPE_MASK, E.TYPE_PAGE),

  installTable(w, i, _level, tablePfn, p) {
    let hi = addrHi(tablePfn)
    if (p.quirks & IoPgtableQuirk.ARM_NS) hi |= E.NSTABLE_HI
    // A non-coherent walker's table entries are rewritten with SW_SYNC once cleaned.
    if (!p.coherentWalk) hi |= E.SW_SYNC_HI
    w[2 * i] = addrLo(tablePfn) | E.TYPE_TABLE
    w[2 * i + 1] = hi >>> 0
  },

  setProt(prot, p): Attrs {
    // arm_lpae_prot_to_pte, newest.
    let lo: number
    let hi = 0
    if (p.stage === 1) {
      lo = E.NG
      if ((prot & Prot.WRITE) === 0 && (prot & Prot.READ) !== 0) lo |= E.AP_RDONLY
      else if (p.quirks & IoPgtableQuirk.ARM_HD) hi |= E.DBM_HI
      if ((prot & Prot.PRIV) === 0) lo |= E.AP_UNPRIV
      if (prot & Prot.MMIO) lo |= E.ATTRINDX_DEV
      else if (prot & Prot.CACHE) lo |= E.ATTRINDX_CACHE
    } else {
      lo = 0
      if (prot & Prot.READ) lo |= E.HAP_READ
      if (prot & Prot.WRITE) lo |= E.HAP_WRITE
      if (prot & Prot.MMIO) lo |= E.MEMATTR_DEV
      else if (prot & Prot.CACHE) {
        lo |= p.quirks & IoPgtableQuirk.ARM_S2FWB ? E.MEMATTR_FWB_WB : E.MEMATTR_OIWB
      } else lo |= E.MEMATTR_NC
    }
    lo |= prot & Prot.CACHE ? E.SH_IS : E.SH_OS
    if (prot & Prot.NOEXEC) hi |= E.XN_HI
    if (p.quirks & IoPgtableQuirk.ARM_NS) lo |= E.NS
    lo |= E.AF
    return { lo, hi }
  },

  attrFromEntry(w, i) {
    let lo = (w[2 * i] as number) & 0xffc
    const hi = (w[2 * i + 1] as number) & 0xff78_0000
    // Write-clean form: a DBM leaf comes back with AP[2] set.
    if (hi & E.DBM_HI) lo |= E.AP_RDONLY
    return { lo, hi: hi >>> 0 }
  },

  // Dirty tracking is a stage-1 feature (arm_lpae_read_and_clear_dirty: EINVAL otherwise).
  dirtySupported: (p) => p.stage === 1,

  isWriteDirty: (w, i) => writeDirty(w[2 * i] as number, w[2 * i + 1] as number),

  makeWriteClean(w, i) {
    w[2 * i] = (w[2 * i] as number) | E.AP_RDONLY
  },

  makeWriteDirty(w, i) {
    if (((w[2 * i + 1] as number) & E.DBM_HI) !== 0) w[2 * i] = (w[2 * i] as number) & ~E.AP_RDONLY
  },

  skipCleanLeaves: skipClean,

  harvestDirtyLeaves(w, from, to, clear, out) {
    // Blocks of eight entries, each block tested at once: clean pages (AP[2] set) pass,
    // and in a block of pages only, the writable DBM ones are taken from one byte.
    let j = from << 1
    const end = to << 1
    const m = E.AP_RDONLY | E.TYPE_MASK
    const v = E.AP_RDONLY | E.TYPE_PAGE
    for (; j + 16 <= end; j += 16) {
      // The eight entries ANDed: their common bits. Type and AP[2] in all: clean pages.
      const all =
        (w[j] as number) &
        (w[j + 2] as number) &
        (w[j + 4] as number) &
        (w[j + 6] as number) &
        (w[j + 8] as number) &
        (w[j + 10] as number) &
        (w[j + 12] as number) &
        (w[j + 14] as number)
      if ((all & m) === v) continue
      if ((all & E.TYPE_MASK) !== E.TYPE_PAGE) {
        // Not a page in the block (a hole at level 0): entry by entry.
        const k = harvestEach(w, j, j + 16, clear, out)
        if (k >= 0) return k
        continue
      }
      // Pages with AP[2] (bit 7) clear: write-dirty when DBM is set too.
      let d =
        ((~(w[j] as number) >>> 7) & 1) |
        ((~(w[j + 2] as number) >>> 6) & 2) |
        ((~(w[j + 4] as number) >>> 5) & 4) |
        ((~(w[j + 6] as number) >>> 4) & 8) |
        ((~(w[j + 8] as number) >>> 3) & 16) |
        ((~(w[j + 10] as number) >>> 2) & 32) |
        ((~(w[j + 12] as number) >>> 1) & 64) |
        (~(w[j + 14] as number) & 128)
      do {
        const jj = j + 2 * (31 - Math.clz32(d & -d))
        d &= d - 1
        if (((w[jj + 1] as number) & E.DBM_HI) === 0) continue
        const n = (out[0] as number) + 1
        out[0] = n
        out[n] = jj >>> 1
        if (clear) w[jj] = (w[jj] as number) | E.AP_RDONLY
      } while (d !== 0)
    }
    const k = harvestEach(w, j, end, clear, out)
    return k >= 0 ? k : to
  },

  hwInfo(topPfn, _topLevel, p) {
    const root = BigInt(topPfn) << 12n
    const coherent = p.coherentWalk
    const sh = coherent ? 3 : 2
    const irgn = coherent ? 1 : 0
    const outer = coherent || (p.quirks & IoPgtableQuirk.ARM_OUTER_WBWA) !== 0 ? 1 : 0
    const ps = PS_BITS.indexOf(p.oas)
    const tsz = 64 - p.ias
    const g = p.granuleLg2
    if (p.stage === 1) {
      const tg =
        p.quirks & IoPgtableQuirk.ARM_TTBR1
          ? g === 12
            ? 2
            : g === 14
              ? 1
              : 3
          : g === 12
            ? 0
            : g === 14
              ? 2
              : 1
      return { ttbr: root, tcr: { tsz, tg, ips: ps, sh, irgn, orgn: outer }, mair: ARM_LPAE_MAIR }
    }
    // VTCR.SL0: the start level inverted, one more for the 4K granule.
    const sl = ~(p.startLevel + (g === 12 ? 1 : 0)) & 3
    const tg = g === 12 ? 0 : g === 14 ? 2 : 1
    return { vttbr: root, vtcr: { tsz, tg, ps, sl, sh, irgn, orgn: coherent ? 1 : 0 } }
  },

  hwEntryType(w, i, level, p) {
    const lo = w[2 * i] as number
    if ((lo & E.VALID) === 0) return EntryType.EMPTY
    if (level !== 0 && (lo & E.TYPE_MASK) === E.TYPE_TABLE) return EntryType.TABLE
    // A page descriptor at level 3, a block where the granule allows one; else a fault.
    if (!isLeaf(lo, level)) return EntryType.EMPTY
    return ((p.leafLevels >>> level) & 1) !== 0 ? EntryType.OA : EntryType.EMPTY
  },

  hwLeafPerms(w, i, _level, p, ad) {
    const lo = w[2 * i] as number
    if (p.stage === 2) return (lo >>> 6) & (Access.READ | Access.WRITE)
    if ((lo & E.AP_RDONLY) === 0) return Access.READ | Access.WRITE
    // Writable-clean: DBM lets a write through when the SMMU manages dirty state (CD.HD).
    const dbm = ((w[2 * i + 1] as number) & E.DBM_HI) !== 0
    return dbm && ad & HwAd.DIRTY ? Access.READ | Access.WRITE : Access.READ
  },

  hwAccessFlagFault: (w, i, _level, _p, ad) =>
    ((w[2 * i] as number) & E.AF) === 0 && (ad & HwAd.ACCESSED) === 0,

  hwUpdateAccessedDirty(w, i, _level, p, leaf, write, ad) {
    if (!leaf) return
    const old = w[2 * i] as number
    let lo = old
    if (ad & HwAd.ACCESSED) lo |= E.AF
    // HTTU: a write to a writable-clean DBM leaf clears AP[2] (writable-dirty).
    if (write && p.stage === 1 && ad & HwAd.DIRTY && ((w[2 * i + 1] as number) & E.DBM_HI) !== 0) {
      lo &= ~E.AP_RDONLY
    }
    if (lo >>> 0 !== old) w[2 * i] = lo
  },
})

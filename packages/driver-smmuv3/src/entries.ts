/**
 * The driver's STE and CD builders, the bits the hardware uses of each, and the entry
 * writer that moves a live 64-byte entry from one configuration to another without the
 * SMMU ever seeing a mix of the two (`arm_smmu_write_entry`, the "hitless update").
 *
 * Entries are eight little-endian qwords as `bigint` (`data[0..7]` in the kernel): they are
 * built on attach paths only.
 *
 * @module
 */

import {
  Cd,
  Eats,
  fieldGet,
  fieldPrep,
  S1Cache,
  S1Dss,
  SHCFG_INCOMING,
  Sh,
  Ste,
  SteCfg,
  Strw,
  Vtcr,
} from './hw/regs.ts'

/** `ARM_SMMU_FEAT_*`: what the driver found in the ID registers (and firmware). */
export const Feat = {
  TWO_LVL_STRTAB: 1 << 0,
  TWO_LVL_CDTAB: 1 << 1,
  TT_LE: 1 << 2,
  TT_BE: 1 << 3,
  PRI: 1 << 4,
  ATS: 1 << 5,
  SEV: 1 << 6,
  MSI: 1 << 7,
  COHERENCY: 1 << 8,
  TRANS_S1: 1 << 9,
  TRANS_S2: 1 << 10,
  STALLS: 1 << 11,
  HYP: 1 << 12,
  STALL_FORCE: 1 << 13,
  VAX: 1 << 14,
  RANGE_INV: 1 << 15,
  BTM: 1 << 16,
  SVA: 1 << 17,
  E2H: 1 << 18,
  NESTING: 1 << 19,
  ATTR_TYPES_OVR: 1 << 20,
  HA: 1 << 21,
  HD: 1 << 22,
  S2FWB: 1 << 23,
  BBML2: 1 << 24,
  HAFT: 1 << 25,
} as const

/** An STE or CD: eight qwords. */
export type Entry = bigint[]

const U64 = (1n << 64n) - 1n

function not(x: bigint): bigint {
  return ~x & U64
}

/** A zeroed entry. */
export function emptyEntry(): Entry {
  return [0n, 0n, 0n, 0n, 0n, 0n, 0n, 0n]
}

// ---------------------------------------------------------------------- used bits

/**
 * arm_smmu_get_ste_used() - the STE bits the SMMU reads in the configuration `ent`
 * describes. Only V when V = 0; Config always; the stage-1 fields when Config[0]; the
 * stage-2 fields when Config[1]; SHCFG for bypass and for S1DSS = bypass.
 */
export function getSteUsed(ent: readonly bigint[]): Entry {
  const used = emptyEntry()
  const q0 = ent[0] as bigint
  used[0] = Ste.Q0_V
  if (!(q0 & Ste.Q0_V)) return used
  used[0] |= Ste.Q0_CFG
  const cfg = fieldGet(Ste.Q0_CFG, q0)
  if (cfg & 1) {
    used[0] |= Ste.Q0_S1FMT | Ste.Q0_S1CTXPTR | Ste.Q0_S1CDMAX
    used[1] =
      (used[1] as bigint) |
      Ste.Q1_S1DSS |
      Ste.Q1_S1CIR |
      Ste.Q1_S1COR |
      Ste.Q1_S1CSH |
      Ste.Q1_S1STALLD |
      Ste.Q1_STRW |
      Ste.Q1_EATS |
      Ste.Q1_MEV
    used[2] = (used[2] as bigint) | Ste.Q2_S2VMID
    // Spec 13.5: SHCFG matters when stage 1 is bypassed by S1DSS.
    if (fieldGet(Ste.Q1_S1DSS, ent[1] as bigint) === S1Dss.BYPASS) {
      used[1] = (used[1] as bigint) | Ste.Q1_SHCFG
    }
  }
  if (cfg & 2) {
    used[1] = (used[1] as bigint) | Ste.Q1_S2FWB | Ste.Q1_EATS | Ste.Q1_SHCFG | Ste.Q1_MEV
    used[2] =
      (used[2] as bigint) |
      Ste.Q2_S2VMID |
      Ste.Q2_VTCR |
      Ste.Q2_S2AA64 |
      Ste.Q2_S2ENDI |
      Ste.Q2_S2PTW |
      Ste.Q2_S2S |
      Ste.Q2_S2R
    used[3] = (used[3] as bigint) | Ste.Q3_S2TTB
  }
  if (cfg === SteCfg.BYPASS) used[1] = (used[1] as bigint) | Ste.Q1_SHCFG
  return used
}

/**
 * arm_smmu_get_ste_update_safe() - bits that may change in any order while used: MEV
 * always (it only merges fault records), and EATS between ABT and TRANS unless either
 * entry uses S1CHK or S2S (EATS = TRANS with S2S = 1 is an illegal STE).
 */
export function getSteUpdateSafe(cur: readonly bigint[], target: readonly bigint[]): Entry {
  const safe = emptyEntry()
  const s1chk = fieldPrep(Ste.Q1_EATS, Eats.S1CHK)
  const trans = fieldPrep(Ste.Q1_EATS, Eats.TRANS)
  if (
    !(((cur[1] as bigint) | (target[1] as bigint)) & s1chk) &&
    !(((cur[2] as bigint) | (target[2] as bigint)) & Ste.Q2_S2S)
  ) {
    safe[1] = (safe[1] as bigint) | trans
  }
  safe[1] = (safe[1] as bigint) | Ste.Q1_MEV
  return safe
}

/**
 * arm_smmu_get_cd_used() - the CD bits in use: V only when V = 0, else everything, except
 * that EPD0 makes the TTB0 walk fields (T0SZ, TG0, IRGN0, ORGN0, SH0, TTB0) ignored.
 */
export function getCdUsed(ent: readonly bigint[]): Entry {
  const used = emptyEntry()
  used[0] = Cd.Q0_V
  if (!((ent[0] as bigint) & Cd.Q0_V)) return used
  for (let i = 0; i < 8; i++) used[i] = U64
  if ((ent[0] as bigint) & Cd.Q0_EPD0) {
    used[0] =
      (used[0] as bigint) & not(Cd.Q0_T0SZ | Cd.Q0_TG0 | Cd.Q0_IRGN0 | Cd.Q0_ORGN0 | Cd.Q0_SH0)
    used[1] = (used[1] as bigint) & not(Cd.Q1_TTB0)
  }
  return used
}

// ---------------------------------------------------------------------- the writer

/** Where a live entry is: in memory (an STE or CD) or, for the KUnit port, an array. */
export interface EntryStore {
  get(i: number): bigint
  set(i: number, v: bigint): void
}

/** What the writer needs to know about the kind of entry (`arm_smmu_entry_writer_ops`). */
export interface EntryWriterOps {
  getUsed(entry: readonly bigint[]): Entry
  getUpdateSafe?(cur: readonly bigint[], target: readonly bigint[]): Entry
  /** Make the SMMU drop its cached copy and wait (CFGI_STE/CFGI_CD + CMD_SYNC). */
  sync(): void
}

/** An entry store over an array (tests). */
export function arrayStore(entry: bigint[]): EntryStore {
  return {
    get: (i) => entry[i] as bigint,
    set: (i, v) => {
      entry[i] = v
    },
  }
}

/**
 * arm_smmu_entry_qword_diff() - which qwords must change bits the current configuration
 * uses, once every bit it ignores (or may change safely) already holds its target value.
 *
 * @returns the diff bit mask and that intermediate entry (`unused_update`)
 */
function qwordDiff(
  ops: EntryWriterOps,
  entry: readonly bigint[],
  target: readonly bigint[],
): { diff: number; unusedUpdate: Entry } {
  const curUsed = ops.getUsed(entry)
  const targetUsed = ops.getUsed(target)
  const safe = ops.getUpdateSafe ? ops.getUpdateSafe(entry, target) : emptyEntry()
  const unusedUpdate = emptyEntry()
  let diff = 0
  for (let i = 0; i < 8; i++) {
    // A safe bit is only safe when both configurations use it.
    const s = (safe[i] as bigint) & (targetUsed[i] as bigint) & (curUsed[i] as bigint)
    const cu = (curUsed[i] as bigint) & not(s)
    unusedUpdate[i] = ((entry[i] as bigint) & cu) | ((target[i] as bigint) & not(cu))
    if (((unusedUpdate[i] as bigint) & (targetUsed[i] as bigint)) !== target[i]) diff |= 1 << i
  }
  return { diff, unusedUpdate }
}

/** Write qwords [start, start + len) of `target` that differ, then sync if any did. */
function entrySet(
  ops: EntryWriterOps,
  entry: EntryStore,
  target: readonly bigint[],
  start: number,
  len: number,
): void {
  let changed = false
  for (let i = start; i < start + len; i++) {
    if (entry.get(i) !== target[i]) {
      entry.set(i, target[i] as bigint)
      changed = true
    }
  }
  if (changed) ops.sync()
}

/**
 * writeEntry() - `arm_smmu_write_entry`: update a live STE or CD to `target`.
 *
 * - One qword's used bits change (hitless): write every bit the current configuration
 *   ignores, sync; write that critical qword, sync; write the full target (clearing bits
 *   now unused), sync — each sync only if something changed.
 * - Two or more (breaking): clear qword 0 (V = 0), sync; write qwords 1..7, sync; write
 *   qword 0, sync.
 * - None: write the target, sync if anything changed.
 */
export function writeEntry(
  ops: EntryWriterOps,
  entry: EntryStore,
  target: readonly bigint[],
): void {
  const cur: Entry = []
  for (let i = 0; i < 8; i++) cur.push(entry.get(i))
  const { diff, unusedUpdate } = qwordDiff(ops, cur, target)
  if (diff !== 0 && (diff & (diff - 1)) === 0) {
    const critical = 31 - Math.clz32(diff)
    // The critical qword is written in the next step: skipping it here saves a sync.
    unusedUpdate[critical] = cur[critical] as bigint
    entrySet(ops, entry, unusedUpdate, 0, 8)
    entrySet(ops, entry, target, critical, 1)
    entrySet(ops, entry, target, 0, 8)
  } else if (diff !== 0) {
    unusedUpdate[0] = 0n
    entrySet(ops, entry, unusedUpdate, 0, 1)
    entrySet(ops, entry, target, 1, 7)
    entrySet(ops, entry, target, 0, 1)
  } else {
    entrySet(ops, entry, target, 0, 8)
  }
}

// ---------------------------------------------------------------------- builders

/** What the STE builders need of a master (`struct arm_smmu_master`). */
export interface MasterCfg {
  /** `stall_enabled`. */
  readonly stallEnabled: boolean
}

/** The CD table an STE points at (`struct arm_smmu_ctx_desc_cfg`). */
export interface CdTableRef {
  /** `cdtab_dma`: a PA (an IPA for a guest's table). */
  readonly dma: bigint
  readonly s1fmt: number
  /** log2 of the CDs (truncated to the 5-bit S1CDMax field). */
  readonly s1cdmax: number
}

/** The stage-2 page table's register outputs (`arm_lpae_s2_cfg`). */
export interface S2TableCfg {
  readonly vttbr: bigint
  readonly vtcr: {
    readonly tsz: number
    readonly sl: number
    readonly irgn: number
    readonly orgn: number
    readonly sh: number
    readonly tg: number
    readonly ps: number
  }
  /** The table uses the S2FWB attribute encoding. */
  readonly s2fwb: boolean
}

/** The stage-1 page table's register outputs (`arm_lpae_s1_cfg`). */
export interface S1TableCfg {
  readonly ttbr: bigint
  readonly tcr: {
    readonly tsz: number
    readonly tg: number
    readonly irgn: number
    readonly orgn: number
    readonly sh: number
    readonly ips: number
  }
  readonly mair: bigint
  /** The table has the ARM_HD quirk: the CD enables HA and HD. */
  readonly hd: boolean
}

/** arm_smmu_make_abort_ste(): V, Config = abort. */
export function makeAbortSte(): Entry {
  const e = emptyEntry()
  e[0] = Ste.Q0_V | fieldPrep(Ste.Q0_CFG, SteCfg.ABORT)
  return e
}

/** arm_smmu_make_bypass_ste(): V, Config = bypass; SHCFG = incoming with ATTR_TYPES_OVR. */
export function makeBypassSte(features: number): Entry {
  const e = emptyEntry()
  e[0] = Ste.Q0_V | fieldPrep(Ste.Q0_CFG, SteCfg.BYPASS)
  if (features & Feat.ATTR_TYPES_OVR) e[1] = fieldPrep(Ste.Q1_SHCFG, SHCFG_INCOMING)
  return e
}

/**
 * arm_smmu_make_cdtable_ste(): Config = stage-1 translate with the master's CD table,
 * S1DSS as asked, write-back read-allocate inner-shareable CD fetches, S1STALLD for a
 * non-stalling master on stall-capable hardware, EATS = TRANS with ATS, SHCFG for
 * S1DSS = bypass, and NS-EL1 with VMID 0 (EL2 with E2H).
 */
export function makeCdtableSte(
  features: number,
  master: MasterCfg,
  cdTable: CdTableRef,
  atsEnabled: boolean,
  s1dss: number,
): Entry {
  const e = emptyEntry()
  e[0] =
    Ste.Q0_V |
    fieldPrep(Ste.Q0_CFG, SteCfg.S1_TRANS) |
    fieldPrep(Ste.Q0_S1FMT, cdTable.s1fmt) |
    (cdTable.dma & Ste.Q0_S1CTXPTR) |
    fieldPrep(Ste.Q0_S1CDMAX, cdTable.s1cdmax)
  e[1] =
    fieldPrep(Ste.Q1_S1DSS, s1dss) |
    fieldPrep(Ste.Q1_S1CIR, S1Cache.WBRA) |
    fieldPrep(Ste.Q1_S1COR, S1Cache.WBRA) |
    fieldPrep(Ste.Q1_S1CSH, Sh.ISH) |
    (features & Feat.STALLS && !master.stallEnabled ? Ste.Q1_S1STALLD : 0n) |
    fieldPrep(Ste.Q1_EATS, atsEnabled ? Eats.TRANS : Eats.ABT)
  if (features & Feat.ATTR_TYPES_OVR && s1dss === S1Dss.BYPASS) {
    e[1] = (e[1] as bigint) | fieldPrep(Ste.Q1_SHCFG, SHCFG_INCOMING)
  }
  if (features & Feat.E2H) {
    e[1] = (e[1] as bigint) | fieldPrep(Ste.Q1_STRW, Strw.EL2)
  } else {
    e[1] = (e[1] as bigint) | fieldPrep(Ste.Q1_STRW, Strw.NSEL1)
    // VMID 0 is reserved for stage-1-only STEs.
    e[2] = fieldPrep(Ste.Q2_S2VMID, 0)
  }
  return e
}

/**
 * arm_smmu_make_s2_domain_ste(): Config = stage-2 translate, EATS with ATS, S2FWB with an
 * FWB table, SHCFG with ATTR_TYPES_OVR, the VMID, VTCR from the table, AArch64, protected
 * table walks, S2S for a stalling master, S2R, and S2TTB.
 */
export function makeS2DomainSte(
  features: number,
  master: MasterCfg,
  s2: S2TableCfg,
  vmid: number,
  atsEnabled: boolean,
): Entry {
  const e = emptyEntry()
  e[0] = Ste.Q0_V | fieldPrep(Ste.Q0_CFG, SteCfg.S2_TRANS)
  e[1] = fieldPrep(Ste.Q1_EATS, atsEnabled ? Eats.TRANS : Eats.ABT)
  if (s2.s2fwb) e[1] = (e[1] as bigint) | Ste.Q1_S2FWB
  if (features & Feat.ATTR_TYPES_OVR) {
    e[1] = (e[1] as bigint) | fieldPrep(Ste.Q1_SHCFG, SHCFG_INCOMING)
  }
  const v = s2.vtcr
  const vtcr =
    fieldPrep(Vtcr.S2T0SZ, v.tsz) |
    fieldPrep(Vtcr.S2SL0, v.sl) |
    fieldPrep(Vtcr.S2IR0, v.irgn) |
    fieldPrep(Vtcr.S2OR0, v.orgn) |
    fieldPrep(Vtcr.S2SH0, v.sh) |
    fieldPrep(Vtcr.S2TG, v.tg) |
    fieldPrep(Vtcr.S2PS, v.ps)
  e[2] =
    fieldPrep(Ste.Q2_S2VMID, vmid) |
    fieldPrep(Ste.Q2_VTCR, vtcr) |
    Ste.Q2_S2AA64 |
    Ste.Q2_S2PTW |
    (master.stallEnabled ? Ste.Q2_S2S : 0n) |
    Ste.Q2_S2R
  e[3] = s2.vttbr & Ste.Q3_S2TTB
  return e
}

/**
 * arm_smmu_make_s1_cd(): the TCR fields of the stage-1 table, EPD1, V, IPS, AA64, S for a
 * stalling master, R, A, ASET, the ASID, HA and HD for a dirty-tracking (ARM_HD) table,
 * TTB0 and MAIR.
 */
export function makeS1Cd(master: MasterCfg, s1: S1TableCfg, asid: number): Entry {
  const e = emptyEntry()
  const t = s1.tcr
  e[0] =
    fieldPrep(Cd.Q0_T0SZ, t.tsz) |
    fieldPrep(Cd.Q0_TG0, t.tg) |
    fieldPrep(Cd.Q0_IRGN0, t.irgn) |
    fieldPrep(Cd.Q0_ORGN0, t.orgn) |
    fieldPrep(Cd.Q0_SH0, t.sh) |
    Cd.Q0_EPD1 |
    Cd.Q0_V |
    fieldPrep(Cd.Q0_IPS, t.ips) |
    Cd.Q0_AA64 |
    (master.stallEnabled ? Cd.Q0_S : 0n) |
    Cd.Q0_R |
    Cd.Q0_A |
    Cd.Q0_ASET |
    fieldPrep(Cd.Q0_ASID, asid)
  if (s1.hd) e[0] = (e[0] as bigint) | Cd.Q0_HA | Cd.Q0_HD
  e[1] = s1.ttbr & Cd.Q1_TTB0
  e[3] = s1.mair
  return e
}

/** The CPU's view an SVA CD copies (`ID_AA64MMFR0_EL1.PARange`, VA bits, page size, MAIR). */
export interface CpuMmCfg {
  readonly parange: number
  readonly vaBits: number
  /** TG0 encoding of the CPU page size. */
  readonly tg: number
  readonly mair: bigint
}

/**
 * arm_smmu_make_sva_cd(): a CD sharing a process's page table (`mm`), or with `mm` null
 * the "release" CD that faults everything (EPD0, and S/R cleared unless stalls are forced)
 * — the switch between the two is hitless since EPD0 makes the walk fields ignored. HA, HD
 * and HAFT follow the SMMU's HTTU features.
 */
export function makeSvaCd(
  features: number,
  master: MasterCfg,
  mm: { readonly pgd: bigint } | null,
  asid: number,
  cpu: CpuMmCfg,
): Entry {
  const e = emptyEntry()
  e[0] =
    Cd.Q0_EPD1 |
    Cd.Q0_V |
    fieldPrep(Cd.Q0_IPS, cpu.parange) |
    Cd.Q0_AA64 |
    (master.stallEnabled ? Cd.Q0_S : 0n) |
    Cd.Q0_R |
    Cd.Q0_A |
    Cd.Q0_ASET |
    fieldPrep(Cd.Q0_ASID, asid)
  if (mm !== null) {
    e[0] =
      (e[0] as bigint) |
      fieldPrep(Cd.Q0_T0SZ, 64 - cpu.vaBits) |
      fieldPrep(Cd.Q0_TG0, cpu.tg) |
      fieldPrep(Cd.Q0_IRGN0, S1Cache.WBRA) |
      fieldPrep(Cd.Q0_ORGN0, S1Cache.WBRA) |
      fieldPrep(Cd.Q0_SH0, Sh.ISH)
    e[1] = mm.pgd & Cd.Q1_TTB0
  } else {
    e[0] = (e[0] as bigint) | Cd.Q0_EPD0
    if (!(features & Feat.STALL_FORCE)) e[0] = (e[0] as bigint) & not(Cd.Q0_S | Cd.Q0_R)
  }
  if (features & Feat.HA) e[0] = (e[0] as bigint) | Cd.Q0_HA
  if (features & Feat.HD) e[0] = (e[0] as bigint) | Cd.Q0_HD
  if (features & Feat.HAFT) e[1] = (e[1] as bigint) | Cd.Q1_HAFT
  e[3] = cpu.mair
  return e
}

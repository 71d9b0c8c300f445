/**
 * ARM SMMUv3 layouts (IHI 0070): MMIO register offsets and fields, the 64-byte Stream Table
 * Entry and Context Descriptor, the 16-byte commands, the 32-byte event records and the
 * 16-byte PRI queue entries. The names and values match the Linux driver's
 * `arm-smmu-v3.h`; fields Linux does not define are taken from the specification. Both
 * rooms use them: the hardware model decodes, the driver encodes.
 *
 * Two representations: 64-bit quantities the driver builds (STE/CD qwords, 64-bit
 * registers) are `bigint` masks here, used on configuration paths only; the hardware model
 * decodes structures as little-endian 32-bit words (`w[2i]` = bits 31:0 of qword i,
 * `w[2i + 1]` = bits 63:32) with the `*_W` helpers, so that nothing on a DMA path touches a
 * bigint.
 *
 * @module
 */

/** `GENMASK_ULL(h, l)`. */
export function genmask(h: number, l: number): bigint {
  return ((1n << BigInt(h - l + 1)) - 1n) << BigInt(l)
}

function lowestSetBit(mask: bigint): bigint {
  let s = 0n
  while (((mask >> s) & 1n) === 0n) s++
  return s
}

/** `FIELD_PREP(mask, value)`. */
export function fieldPrep(mask: bigint, value: number | bigint): bigint {
  return (BigInt(value) << lowestSetBit(mask)) & mask
}

/** `FIELD_GET(mask, reg)`. */
export function fieldGet(mask: bigint, reg: bigint): number {
  return Number((reg & mask) >> lowestSetBit(mask))
}

// ---------------------------------------------------------------------- registers

/**
 * MMIO register offsets. Page 1 registers (the EVTQ and PRIQ producer/consumer indexes) sit
 * at 64 KiB plus their page-0 offset, as on hardware without `PAGE0_REGS_ONLY`.
 */
export const Mmio = {
  IDR0: 0x0,
  IDR1: 0x4,
  IDR2: 0x8,
  IDR3: 0xc,
  IDR4: 0x10,
  IDR5: 0x14,
  IIDR: 0x18,
  AIDR: 0x1c,
  CR0: 0x20,
  CR0ACK: 0x24,
  CR1: 0x28,
  CR2: 0x2c,
  STATUSR: 0x40,
  GBPA: 0x44,
  IRQ_CTRL: 0x50,
  IRQ_CTRLACK: 0x54,
  GERROR: 0x60,
  GERRORN: 0x64,
  GERROR_IRQ_CFG0: 0x68,
  STRTAB_BASE: 0x80,
  STRTAB_BASE_CFG: 0x88,
  CMDQ_BASE: 0x90,
  CMDQ_PROD: 0x98,
  CMDQ_CONS: 0x9c,
  EVTQ_BASE: 0xa0,
  EVTQ_PROD: 0x1_00a8,
  EVTQ_CONS: 0x1_00ac,
  EVTQ_IRQ_CFG0: 0xb0,
  PRIQ_BASE: 0xc0,
  PRIQ_PROD: 0x1_00c8,
  PRIQ_CONS: 0x1_00cc,
  PRIQ_IRQ_CFG0: 0xd0,
} as const

/** The 64-bit registers (everything else is 32-bit). */
export const MMIO_64 = new Set<number>([
  Mmio.GERROR_IRQ_CFG0,
  Mmio.STRTAB_BASE,
  Mmio.CMDQ_BASE,
  Mmio.EVTQ_BASE,
  Mmio.EVTQ_IRQ_CFG0,
  Mmio.PRIQ_BASE,
  Mmio.PRIQ_IRQ_CFG0,
])

/** SMMU_IDR0 fields: bit masks, and `*_SHIFT` for the multi-bit fields. */
export const Idr0 = {
  S2P: 1 << 0,
  S1P: 1 << 1,
  TTF_SHIFT: 2,
  TTF_AARCH64: 2,
  COHACC: 1 << 4,
  BTM: 1 << 5,
  HTTU_SHIFT: 6,
  HTTU_ACCESS: 1,
  HTTU_ACCESS_DIRTY: 2,
  HTTU_ACCESS_DIRTY_HAFT: 3,
  HYP: 1 << 9,
  ATS: 1 << 10,
  ASID16: 1 << 12,
  MSI: 1 << 13,
  SEV: 1 << 14,
  PRI: 1 << 16,
  VMID16: 1 << 18,
  CD2L: 1 << 19,
  TTENDIAN_SHIFT: 21,
  TTENDIAN_MIXED: 0,
  TTENDIAN_LE: 2,
  TTENDIAN_BE: 3,
  STALL_MODEL_SHIFT: 24,
  /** Stall and terminate supported. */
  STALL_MODEL_STALL: 0,
  /** Terminate only: no stalls. */
  STALL_MODEL_TERMINATE: 1,
  /** Stall forced on every stream. */
  STALL_MODEL_FORCE: 2,
  ST_LVL_SHIFT: 27,
  ST_LVL_2LVL: 1,
} as const

/** SMMU_IDR1 fields. */
export const Idr1 = {
  SIDSIZE_SHIFT: 0,
  SSIDSIZE_SHIFT: 6,
  PRIQS_SHIFT: 11,
  EVTQS_SHIFT: 16,
  CMDQS_SHIFT: 21,
  ATTR_TYPES_OVR: 1 << 27,
  REL: 1 << 28,
  QUEUES_PRESET: 1 << 29,
  TABLES_PRESET: 1 << 30,
} as const

/** SMMU_IDR3 fields. */
export const Idr3 = {
  HAD: 1 << 2,
  FWB: 1 << 8,
  RIL: 1 << 10,
  BBML_SHIFT: 11,
} as const

/** SMMU_IDR5 fields. */
export const Idr5 = {
  OAS_MASK: 7,
  GRAN4K: 1 << 4,
  GRAN16K: 1 << 5,
  GRAN64K: 1 << 6,
  VAX_SHIFT: 10,
  VAX_52_BIT: 1,
  STALL_MAX_SHIFT: 16,
} as const

/** Output/intermediate address size encodings (IDR5.OAS, CD.IPS, STE.S2PS) in bits. */
export const PA_SIZE_BITS: readonly number[] = [32, 36, 40, 42, 44, 48, 52]

/** IIDR fields and the Arm products whose errata the driver knows. */
export const Iidr = {
  IMPLEMENTER_MASK: 0xfff,
  REVISION_SHIFT: 12,
  VARIANT_SHIFT: 16,
  PRODUCTID_SHIFT: 20,
  IMPLEMENTER_ARM: 0x43b,
  PRODUCTID_ARM_MMU_600: 0x483,
  PRODUCTID_ARM_MMU_700: 0x487,
} as const

/** SMMU_CR0 (and CR0ACK) bits. */
export const Cr0 = {
  SMMUEN: 1 << 0,
  PRIQEN: 1 << 1,
  EVTQEN: 1 << 2,
  CMDQEN: 1 << 3,
  ATSCHK: 1 << 4,
} as const

/** SMMU_CR2 bits. */
export const Cr2 = {
  E2H: 1 << 0,
  RECINVSID: 1 << 1,
  PTM: 1 << 2,
} as const

/** SMMU_GBPA bits. */
export const Gbpa = {
  ABORT: 1 << 20,
  UPDATE: 1 << 31,
} as const

/** SMMU_IRQ_CTRL bits. */
export const IrqCtrl = {
  GERROR_IRQEN: 1 << 0,
  PRIQ_IRQEN: 1 << 1,
  EVTQ_IRQEN: 1 << 2,
} as const

/** SMMU_GERROR / GERRORN bits. */
export const Gerror = {
  CMDQ_ERR: 1 << 0,
  EVTQ_ABT_ERR: 1 << 2,
  PRIQ_ABT_ERR: 1 << 3,
  MSI_CMDQ_ABT_ERR: 1 << 4,
  SFM_ERR: 1 << 8,
  ERR_MASK: 0x1fd,
} as const

/** SMMU_STRTAB_BASE and SMMU_STRTAB_BASE_CFG fields. */
export const Strtab = {
  BASE_RA: 1n << 62n,
  BASE_ADDR_MASK: genmask(51, 6),
  CFG_FMT_SHIFT: 16,
  CFG_FMT_LINEAR: 0,
  CFG_FMT_2LVL: 1,
  CFG_SPLIT_SHIFT: 6,
  CFG_LOG2SIZE_MASK: 0x3f,
  /** Linux: 256 STEs per level-2 table (one PCI bus). */
  SPLIT: 8,
  /** L1 descriptor: SPAN [4:0], L2Ptr [51:6]. */
  L1_DESC_SPAN_MASK: 0x1fn,
  L1_DESC_L2PTR_MASK: genmask(51, 6),
  MAX_L1_ENTRIES: 1 << 17,
} as const

/** Queue base registers: RWA, base address [51:5], LOG2SIZE [4:0]; index registers. */
export const Queue = {
  BASE_RWA: 1n << 62n,
  BASE_ADDR_MASK: genmask(51, 5),
  BASE_LOG2SIZE_MASK: 0x1fn,
  /** PROD.OVFLG / CONS.OVACKFLG (event and PRI queues). */
  OVERFLOW_FLAG: 1 << 31,
  /** CMDQ_CONS.ERR [30:24]. */
  CONS_ERR_SHIFT: 24,
  CONS_ERR_MASK: 0x7f << 24,
} as const

/** CMDQ_CONS.ERR values. */
export const CmdqErr = {
  NONE: 0,
  ILL: 1,
  ABT: 2,
  ATC_INV_SYNC: 3,
} as const

// ---------------------------------------------------------------------- STE

/** STE fields, as masks of the qword named by the prefix (`Q0_`, `Q1_`, ...). */
export const Ste = {
  DWORDS: 8,
  SIZE: 64,
  Q0_V: 1n << 0n,
  Q0_CFG: genmask(3, 1),
  Q0_S1FMT: genmask(5, 4),
  Q0_S1CTXPTR: genmask(51, 6),
  Q0_S1CDMAX: genmask(63, 59),
  Q1_S1DSS: genmask(1, 0),
  Q1_S1CIR: genmask(3, 2),
  Q1_S1COR: genmask(5, 4),
  Q1_S1CSH: genmask(7, 6),
  Q1_MEV: 1n << 19n,
  Q1_S2FWB: 1n << 25n,
  Q1_S1STALLD: 1n << 27n,
  Q1_EATS: genmask(29, 28),
  Q1_STRW: genmask(31, 30),
  Q1_SHCFG: genmask(45, 44),
  Q2_S2VMID: genmask(15, 0),
  Q2_VTCR: genmask(50, 32),
  Q2_S2AA64: 1n << 51n,
  Q2_S2ENDI: 1n << 52n,
  Q2_S2AFFD: 1n << 53n,
  Q2_S2PTW: 1n << 54n,
  Q2_S2HD: 1n << 55n,
  Q2_S2HA: 1n << 56n,
  Q2_S2S: 1n << 57n,
  Q2_S2R: 1n << 58n,
  Q3_S2TTB: genmask(51, 4),
} as const

/** Fields inside STE.VTCR (bits relative to q2 bit 32). */
export const Vtcr = {
  S2T0SZ: genmask(5, 0),
  S2SL0: genmask(7, 6),
  S2IR0: genmask(9, 8),
  S2OR0: genmask(11, 10),
  S2SH0: genmask(13, 12),
  S2TG: genmask(15, 14),
  S2PS: genmask(18, 16),
} as const

/** STE.Config values. */
export const SteCfg = {
  ABORT: 0,
  BYPASS: 4,
  S1_TRANS: 5,
  S2_TRANS: 6,
  NESTED: 7,
} as const

/** STE.S1Fmt values. */
export const S1Fmt = {
  LINEAR: 0,
  /** Two levels, 4 KiB level-2 tables (64 CDs each). */
  L2_4K: 1,
  /** Two levels, 64 KiB level-2 tables (1024 CDs each); what Linux uses. */
  L2_64K: 2,
} as const

/** STE.S1DSS values. */
export const S1Dss = {
  TERMINATE: 0,
  BYPASS: 1,
  SSID0: 2,
} as const

/** STE.EATS values. */
export const Eats = {
  ABT: 0,
  TRANS: 1,
  S1CHK: 2,
} as const

/** STE.STRW values. */
export const Strw = {
  NSEL1: 0,
  EL2: 2,
} as const

/** STE S1CIR/S1COR cacheability values. */
export const S1Cache = {
  NC: 0,
  WBRA: 1,
  WT: 2,
  WB: 3,
} as const

/** Shareability values (CR1, S1CSH, SH0). */
export const Sh = {
  NSH: 0,
  OSH: 2,
  ISH: 3,
} as const

/** STE.SHCFG: use the incoming shareability. */
export const SHCFG_INCOMING = 1

/** The STE q0/q1 bits user space may set in a nested vSTE. */
export const STE_0_NESTING_ALLOWED: bigint =
  Ste.Q0_V | Ste.Q0_CFG | Ste.Q0_S1FMT | Ste.Q0_S1CTXPTR | Ste.Q0_S1CDMAX
export const STE_1_NESTING_ALLOWED: bigint =
  Ste.Q1_S1DSS | Ste.Q1_S1CIR | Ste.Q1_S1COR | Ste.Q1_S1CSH | Ste.Q1_S1STALLD | Ste.Q1_EATS

// ---------------------------------------------------------------------- CD

/** Context Descriptor fields (qword prefix as for {@link Ste}). */
export const Cd = {
  DWORDS: 8,
  SIZE: 64,
  Q0_T0SZ: genmask(5, 0),
  Q0_TG0: genmask(7, 6),
  Q0_IRGN0: genmask(9, 8),
  Q0_ORGN0: genmask(11, 10),
  Q0_SH0: genmask(13, 12),
  Q0_EPD0: 1n << 14n,
  Q0_ENDI: 1n << 15n,
  Q0_EPD1: 1n << 30n,
  Q0_V: 1n << 31n,
  Q0_IPS: genmask(34, 32),
  Q0_AFFD: 1n << 35n,
  Q0_TBI0: 1n << 38n,
  Q0_AA64: 1n << 41n,
  Q0_HD: 1n << 42n,
  Q0_HA: 1n << 43n,
  Q0_S: 1n << 44n,
  Q0_R: 1n << 45n,
  Q0_A: 1n << 46n,
  Q0_ASET: 1n << 47n,
  Q0_ASID: genmask(63, 48),
  Q1_HAFT: 1n << 3n,
  Q1_TTB0: genmask(51, 4),
  /** Level-1 CD descriptor: V and L2Ptr [51:12]. */
  L1_DESC_V: 1n << 0n,
  L1_DESC_L2PTR: genmask(51, 12),
  /** CDs per 64 KiB level-2 table (`CTXDESC_L2_ENTRIES`). */
  L2_ENTRIES: 1024,
  /** log2 of the CDs of a linear table the driver allocates at most (64 KiB). */
  LINEAR_CDMAX: 10,
} as const

/** TG0 / S2TG encodings of a granule. */
export const Tg = {
  G4K: 0,
  G64K: 1,
  G16K: 2,
} as const

/** lg2 of the granule of a TG0 / S2TG encoding, or 0 for the reserved value. */
export function tgToGranuleLg2(tg: number): number {
  return tg === Tg.G4K ? 12 : tg === Tg.G64K ? 16 : tg === Tg.G16K ? 14 : 0
}

// ---------------------------------------------------------------------- commands

/** Command opcodes (`enum arm_smmu_cmdq_opcode`; PREFETCH_ADDR and TLBI_EL2_VAA from the spec). */
export const Op = {
  PREFETCH_CFG: 0x01,
  PREFETCH_ADDR: 0x02,
  CFGI_STE: 0x03,
  /** CFGI_STE_RANGE; with RANGE = 31 it is CFGI_ALL. */
  CFGI_ALL: 0x04,
  CFGI_CD: 0x05,
  CFGI_CD_ALL: 0x06,
  TLBI_NH_ALL: 0x10,
  TLBI_NH_ASID: 0x11,
  TLBI_NH_VA: 0x12,
  TLBI_NH_VAA: 0x13,
  TLBI_EL2_ALL: 0x20,
  TLBI_EL2_ASID: 0x21,
  TLBI_EL2_VA: 0x22,
  TLBI_EL2_VAA: 0x23,
  TLBI_S12_VMALL: 0x28,
  TLBI_S2_IPA: 0x2a,
  TLBI_NSNH_ALL: 0x30,
  ATC_INV: 0x40,
  PRI_RESP: 0x41,
  RESUME: 0x44,
  STALL_TERM: 0x45,
  CMD_SYNC: 0x46,
} as const

/** Printable opcode names (tests, diagnostics). */
export const OP_NAMES: Readonly<Record<number, string>> = Object.fromEntries(
  Object.entries(Op).map(([k, v]) => [v, k]),
)

/** Command fields (`CMDQ_*`), as masks of dw0 / dw1. */
export const Cmd = {
  SIZE: 16,
  DWORDS: 2,
  D0_OP: genmask(7, 0),
  D0_SSV: 1n << 11n,
  PREFETCH_D0_SID: genmask(63, 32),
  CFGI_D0_SSID: genmask(31, 12),
  CFGI_D0_SID: genmask(63, 32),
  CFGI_D1_LEAF: 1n << 0n,
  CFGI_D1_RANGE: genmask(4, 0),
  TLBI_D0_NUM: genmask(16, 12),
  TLBI_D0_SCALE: genmask(24, 20),
  TLBI_D0_VMID: genmask(47, 32),
  TLBI_D0_ASID: genmask(63, 48),
  TLBI_D1_LEAF: 1n << 0n,
  TLBI_D1_TTL: genmask(9, 8),
  TLBI_D1_TG: genmask(11, 10),
  TLBI_D1_VA: genmask(63, 12),
  TLBI_D1_IPA: genmask(51, 12),
  TLBI_RANGE_NUM_MAX: 31,
  ATC_D0_SSID: genmask(31, 12),
  ATC_D0_SID: genmask(63, 32),
  ATC_D0_GLOBAL: 1n << 9n,
  ATC_D1_SIZE: genmask(5, 0),
  ATC_D1_ADDR: genmask(63, 12),
  PRI_D0_SSID: genmask(31, 12),
  PRI_D0_SID: genmask(63, 32),
  PRI_D1_GRPID: genmask(8, 0),
  PRI_D1_RESP: genmask(13, 12),
  RESUME_D0_RESP: genmask(13, 12),
  RESUME_D0_SID: genmask(63, 32),
  RESUME_D1_STAG: genmask(15, 0),
  SYNC_D0_CS: genmask(13, 12),
  SYNC_D0_MSH: genmask(23, 22),
  SYNC_D0_MSIATTR: genmask(27, 24),
  SYNC_D0_MSIDATA: genmask(63, 32),
  SYNC_D1_MSIADDR: genmask(51, 2),
} as const

/** CMD_SYNC completion signals (CS). */
export const SyncCs = {
  NONE: 0,
  /** Signal by a 32-bit MSI write of MSIDATA to MSIADDR. */
  IRQ: 1,
  /** Signal by a WFE wake-up event. */
  SEV: 2,
} as const

/** PRI_RESP responses. */
/** RESUME actions (`CMDQ_RESUME_0_RESP_*`). */
export const Resume = {
  /** Terminate the transaction (as if the fault had not stalled). */
  TERM: 0,
  /** Retry the translation. */
  RETRY: 1,
  /** Abort the transaction. */
  ABORT: 2,
} as const

export const PriResp = {
  DENY: 0,
  FAIL: 1,
  SUCC: 2,
} as const

/** ATC_INV SIZE meaning "every page" (`ATC_INV_SIZE_ALL`). */
export const ATC_INV_SIZE_ALL = 52

// ---------------------------------------------------------------------- events

/** Event IDs (`EVT_ID_*`; the spec's F_UUT, F_BAD_ATS_TREQ, F_TRANSL_FORBIDDEN, F_WALK_EABT too). */
export const EvtId = {
  F_UUT: 0x01,
  C_BAD_STREAMID: 0x02,
  F_STE_FETCH: 0x03,
  C_BAD_STE: 0x04,
  F_BAD_ATS_TREQ: 0x05,
  F_STREAM_DISABLED: 0x06,
  F_TRANSL_FORBIDDEN: 0x07,
  C_BAD_SUBSTREAMID: 0x08,
  F_CD_FETCH: 0x09,
  C_BAD_CD: 0x0a,
  F_WALK_EABT: 0x0b,
  F_TRANSLATION: 0x10,
  F_ADDR_SIZE: 0x11,
  F_ACCESS: 0x12,
  F_PERMISSION: 0x13,
  F_TLB_CONFLICT: 0x20,
  F_CFG_CONFLICT: 0x21,
  E_PAGE_REQUEST: 0x24,
  F_VMS_FETCH: 0x25,
} as const

/** Printable event names. */
export const EVT_NAMES: Readonly<Record<number, string>> = Object.fromEntries(
  Object.entries(EvtId).map(([k, v]) => [v, k]),
)

/** Event record fields (`EVTQ_*`), as masks of dw0..dw3. */
export const Evt = {
  SIZE: 32,
  DWORDS: 4,
  D0_ID: genmask(7, 0),
  D0_SSV: 1n << 11n,
  D0_SSID: genmask(31, 12),
  D0_SID: genmask(63, 32),
  D1_STAG: genmask(15, 0),
  D1_STALL: 1n << 31n,
  D1_PNU: 1n << 33n,
  D1_IND: 1n << 34n,
  D1_RNW: 1n << 35n,
  D1_S2: 1n << 39n,
  D1_CLASS: genmask(41, 40),
  D1_TT_READ: 1n << 44n,
  D3_IPA: genmask(51, 12),
  D3_FETCH_ADDR: genmask(51, 3),
} as const

/** Event CLASS: what the faulting access was doing. */
export const EvtClass = {
  /** Fetching a CD (through stage 2). */
  CD: 0,
  /** Fetching a stage-1 translation table (through stage 2). */
  TT: 1,
  /** Translating the input address. */
  IN: 2,
} as const

// ---------------------------------------------------------------------- PRI queue

/** PRI queue entry fields (`PRIQ_*`). */
export const Priq = {
  SIZE: 16,
  D0_SID: genmask(31, 0),
  D0_SSID: genmask(51, 32),
  D0_PERM_PRIV: 1n << 58n,
  D0_PERM_EXEC: 1n << 59n,
  D0_PERM_READ: 1n << 60n,
  D0_PERM_WRITE: 1n << 61n,
  D0_PRG_LAST: 1n << 62n,
  D0_SSID_V: 1n << 63n,
  D1_PRG_IDX: genmask(8, 0),
  D1_ADDR: genmask(63, 12),
} as const

// ---------------------------------------------------------------------- decoding

/** A decoded event record (tests, tools and the driver's event thread). */
export interface SmmuEvent {
  readonly id: number
  readonly sid: number
  readonly ssv: boolean
  readonly ssid: number
  readonly stag: number
  readonly stall: boolean
  readonly privileged: boolean
  readonly instruction: boolean
  readonly read: boolean
  readonly s2: boolean
  readonly class: number
  readonly ttRead: boolean
  /** InputAddr (dw2). */
  readonly addr: bigint
  /** IPA (dw3 [51:12]) of a stage-2 fault. */
  readonly ipa: bigint
  /** FetchAddr (dw3 [51:3]) of a fetch fault. */
  readonly fetchAddr: bigint
  /** The raw record. */
  readonly raw: readonly [bigint, bigint, bigint, bigint]
}

/** Decode a 32-byte event record from its four qwords (`arm_smmu_decode_event`). */
export function decodeEvent(raw: readonly [bigint, bigint, bigint, bigint]): SmmuEvent {
  const [d0, d1, d2, d3] = raw
  const ssv = (d0 & Evt.D0_SSV) !== 0n
  return {
    id: fieldGet(Evt.D0_ID, d0),
    sid: fieldGet(Evt.D0_SID, d0),
    ssv,
    ssid: ssv ? fieldGet(Evt.D0_SSID, d0) : 0,
    stag: fieldGet(Evt.D1_STAG, d1),
    stall: (d1 & Evt.D1_STALL) !== 0n,
    privileged: (d1 & Evt.D1_PNU) !== 0n,
    instruction: (d1 & Evt.D1_IND) !== 0n,
    read: (d1 & Evt.D1_RNW) !== 0n,
    s2: (d1 & Evt.D1_S2) !== 0n,
    class: fieldGet(Evt.D1_CLASS, d1),
    ttRead: (d1 & Evt.D1_TT_READ) !== 0n,
    addr: d2,
    ipa: d3 & Evt.D3_IPA,
    fetchAddr: d3 & Evt.D3_FETCH_ADDR,
    raw,
  }
}

/** A decoded PRI queue entry. */
export interface PriRequest {
  readonly sid: number
  readonly ssidValid: boolean
  readonly ssid: number
  readonly read: boolean
  readonly write: boolean
  readonly exec: boolean
  readonly priv: boolean
  readonly last: boolean
  readonly grpid: number
  readonly addr: bigint
}

/** Decode a PRI queue entry from its two qwords. */
export function decodePriRequest(d0: bigint, d1: bigint): PriRequest {
  const ssidValid = (d0 & Priq.D0_SSID_V) !== 0n
  return {
    sid: fieldGet(Priq.D0_SID, d0),
    ssidValid,
    ssid: ssidValid ? fieldGet(Priq.D0_SSID, d0) : 0,
    read: (d0 & Priq.D0_PERM_READ) !== 0n,
    write: (d0 & Priq.D0_PERM_WRITE) !== 0n,
    exec: (d0 & Priq.D0_PERM_EXEC) !== 0n,
    priv: (d0 & Priq.D0_PERM_PRIV) !== 0n,
    last: (d0 & Priq.D0_PRG_LAST) !== 0n,
    grpid: fieldGet(Priq.D1_PRG_IDX, d1),
    addr: d1 & Priq.D1_ADDR,
  }
}

/** Read `n` little-endian qwords at `pa` (a structure in memory) as bigints. */
export function readQwords(mem: { read32(pa: number): number }, pa: number, n: number): bigint[] {
  const out: bigint[] = []
  for (let i = 0; i < n; i++) {
    out.push((BigInt(mem.read32(pa + 8 * i + 4)) << 32n) | BigInt(mem.read32(pa + 8 * i)))
  }
  return out
}

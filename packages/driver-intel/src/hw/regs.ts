/**
 * Intel VT-d layouts (VT-d architecture specification rev 4.x/5.x): the remapping unit's
 * MMIO registers and their bits (§11.4), the scalable-mode root, context and PASID
 * structures (§9.1, §9.4, §9.5, §9.6), the 256-bit queued-invalidation descriptors
 * (§6.5.2), the fault-recording registers and fault reasons (§7.1, Appendix A), and the
 * page-request descriptor (§7.5). Values match the Linux driver's `iommu.h` / `pasid.h`.
 * Both rooms use them: the hardware model decodes, the driver encodes.
 *
 * 64-bit quantities are `bigint` here: registers, table entries and descriptors are touched
 * per configuration change, not per DMA; the translate hot path works on decoded numbers.
 *
 * @module
 */

/** MMIO register offsets (§11.4, `DMAR_*_REG`). */
export const Reg = {
  VER: 0x00,
  CAP: 0x08,
  ECAP: 0x10,
  GCMD: 0x18,
  GSTS: 0x1c,
  RTADDR: 0x20,
  CCMD: 0x28,
  FSTS: 0x34,
  FECTL: 0x38,
  IQH: 0x80,
  IQT: 0x88,
  IQA: 0x90,
  ICS: 0x9c,
  IQER: 0xb0,
  PQH: 0xc0,
  PQT: 0xc8,
  PQA: 0xd0,
  PRS: 0xdc,
  PECTL: 0xe0,
} as const

/** Capability register fields (§11.4.2, `cap_*`). */
export const Cap = {
  /** ND [2:0]: 2^(4 + 2·ND) domain IDs. */
  ND_SHIFT: 0n,
  RWBF: 1n << 4n,
  /** CM: caching mode (not-present and erroneous entries may be cached). */
  CM: 1n << 7n,
  /** SAGAW [12:8]: bit 1 = 3-level (39-bit), bit 2 = 4-level (48), bit 3 = 5-level (57). */
  SAGAW_SHIFT: 8n,
  /** MGAW [21:16]: maximum guest address width - 1. */
  MGAW_SHIFT: 16n,
  ZLR: 1n << 22n,
  /** FRO [33:24]: fault-recording register offset in 16-byte units. */
  FRO_SHIFT: 24n,
  /** SLLPS [37:34]: second-stage large pages: bit 0 = 2 MiB, bit 1 = 1 GiB. */
  SLLPS_SHIFT: 34n,
  /** PSI: page-selective IOTLB invalidation. */
  PSI: 1n << 39n,
  /** NFR [47:40]: number of fault-recording registers - 1. */
  NFR_SHIFT: 40n,
  /** MAMV [53:48]: largest address mask of a page-selective invalidation. */
  MAMV_SHIFT: 48n,
  DWD: 1n << 54n,
  DRD: 1n << 55n,
  /** FS1GP: first-stage 1 GiB pages. */
  FL1GP: 1n << 56n,
  PI: 1n << 59n,
  /** FS5LP: first-stage 5-level paging. */
  FL5LP: 1n << 60n,
  ESIRTPS: 1n << 62n,
  /** ESRTPS: SRTP also invalidates every translation cache. */
  ESRTPS: 1n << 63n,
} as const

/** Extended capability register fields (§11.4.3, `ecap_*`). */
export const Ecap = {
  /** C: page-walk coherency. */
  C: 1n << 0n,
  /** QI: queued invalidation. */
  QI: 1n << 1n,
  /** DT: device-TLB (ATS) support. */
  DT: 1n << 2n,
  IR: 1n << 3n,
  EIM: 1n << 4n,
  /** PT: pass-through translation. */
  PT: 1n << 6n,
  /** SC: snoop control (SNP / PGSNP honoured). */
  SC: 1n << 7n,
  /** IRO [17:8]: IOTLB register offset in 16-byte units. */
  IRO_SHIFT: 8n,
  MTS: 1n << 25n,
  /** NEST: nested translation. */
  NEST: 1n << 26n,
  /** PRS: page requests. */
  PRS: 1n << 29n,
  ERS: 1n << 30n,
  /** SRS: supervisor requests. */
  SRS: 1n << 31n,
  NWFS: 1n << 33n,
  /** EAFS: extended accessed flag. */
  EAFS: 1n << 34n,
  /** PSS [39:35]: PASID width - 1. */
  PSS_SHIFT: 35n,
  /** PASID support. */
  PASID: 1n << 40n,
  DIT: 1n << 41n,
  /** PDS: page-request drain. */
  PDS: 1n << 42n,
  /** SMTS: scalable-mode translation. */
  SMTS: 1n << 43n,
  VCS: 1n << 44n,
  /** SSADS (formerly SLADS): second-stage accessed/dirty. */
  SSADS: 1n << 45n,
  /** SSTS (SLTS): second-stage translation. */
  SSTS: 1n << 46n,
  /** FSTS (FLTS): first-stage translation. */
  FSTS: 1n << 47n,
  /** SMPWC: scalable-mode page-walk coherency. */
  SMPWC: 1n << 48n,
  RPS: 1n << 49n,
} as const

/** Global command register bits (§11.4.4, `DMA_GCMD_*`); GSTS mirrors them (`DMA_GSTS_*`). */
export const Gcmd = {
  /** Translation enable (persistent). */
  TE: 1 << 31,
  /** Set root table pointer (one-shot; GSTS.RTPS reports completion). */
  SRTP: 1 << 30,
  SFL: 1 << 29,
  EAFL: 1 << 28,
  /** Write-buffer flush (one-shot; GSTS.WBFS is set while it runs). */
  WBF: 1 << 27,
  /** Queued-invalidation enable (persistent). */
  QIE: 1 << 26,
  IRE: 1 << 25,
  SIRTP: 1 << 24,
  CFI: 1 << 23,
} as const

/** GCMD bits that keep their value (enables); the others are one-shot commands. */
export const GCMD_PERSISTENT: number = Gcmd.TE | Gcmd.QIE | Gcmd.IRE | Gcmd.CFI | Gcmd.EAFL

/** RTADDR fields (§11.4.5): TTM [11:10] = 00 legacy, 01 scalable, 11 abort-DMA. */
export const Rtaddr = {
  TTM_SHIFT: 10n,
  /** `DMA_RTADDR_SMT`: TTM = 01b. */
  SMT: 1n << 10n,
  ADDR_MASK: 0xffff_ffff_ffff_f000n,
} as const

/** RTADDR.TTM values. */
export const Ttm = { LEGACY: 0, SCALABLE: 1, ABORT_DMA: 3 } as const

/** Fault status register bits (§11.4.7.1, `DMA_FSTS_*`); all status bits are W1C. */
export const Fsts = {
  /** Primary fault overflow. */
  PFO: 1 << 0,
  /** Primary pending fault (read-only: some fault record has F set). */
  PPF: 1 << 1,
  /** Invalidation queue error: the descriptor at IQH is invalid; the queue stopped. */
  IQE: 1 << 4,
  ICE: 1 << 5,
  ITE: 1 << 6,
  /** Deprecated page-request overflow alias. */
  PRO: 1 << 7,
  /** FRI [15:8]: index of the first pending fault record. */
  FRI_SHIFT: 8,
} as const

/** Fault event control (§11.4.7.2): IM masks the interrupt, IP is set while one is pending. */
export const Fectl = { IM: 1 << 31, IP: 1 << 30 } as const

/** IQA fields (§11.4.9.3): base [63:12], DW bit 11 (256-bit descriptors), QS [2:0]. */
export const Iqa = {
  DW: 1n << 11n,
  QS_MASK: 7n,
  ADDR_MASK: 0xffff_ffff_ffff_f000n,
} as const

/** Invalidation completion status (§11.4.9.4): IWC, set by a wait descriptor with IF. */
export const Ics = { IWC: 1 } as const

/**
 * Invalidation queue error information (IQER.IQEI [3:0]) as this model reports it: a tail
 * not aligned to the descriptor width, and a descriptor with an unknown type, a reserved
 * granularity or a non-zero reserved field.
 */
export const Iqei = { NONE: 0, TAIL: 1, INVALID: 3 } as const

/** Page request status (§11.4.11.4, W1C): PPR pending request, PRO overflow. */
export const Prs = { PPR: 1, PRO: 2 } as const

/** Queued-invalidation descriptor types (§6.5.2, `QI_*_TYPE`). */
export const Qi = {
  CC: 0x1,
  IOTLB: 0x2,
  DIOTLB: 0x3,
  IEC: 0x4,
  IWD: 0x5,
  EIOTLB: 0x6,
  PC: 0x7,
  DEIOTLB: 0x8,
  PGRP_RESP: 0x9,
  PSTRM_RESP: 0xa,
} as const

/** Context-cache invalidation granularity (qw0 [5:4]). */
export const CcGran = { GLOBAL: 1, DOMAIN: 2, DEVICE: 3 } as const
/** IOTLB invalidation granularity (qw0 [5:4]). */
export const IotlbGran = { GLOBAL: 1, DOMAIN: 2, PAGE: 3 } as const
/** PASID-based IOTLB invalidation granularity (qw0 [5:4]). */
export const PiotlbGran = { ALL_IN_PASID: 2, PAGE_IN_PASID: 3 } as const
/** PASID-cache invalidation granularity (qw0 [5:4]). */
export const PcGran = { DOMAIN: 0, PASID: 1, GLOBAL: 3 } as const

/** Invalidation-wait descriptor flags (qw0). */
export const Iwd = {
  /** IF: set ICS.IWC. */
  IF: 1n << 4n,
  /** SW: write the status data (qw0 [63:32]) to the status address (qw1 [63:2]). */
  SW: 1n << 5n,
  /** FN: fence. */
  FN: 1n << 6n,
  /** PD: drain page requests. */
  PD: 1n << 7n,
} as const

/** The status value `qi_submit_sync` polls for (`QI_DONE`). */
export const QI_DONE = 2

/** Page-group response codes (qw0 [15:12]). */
export const RespCode = { SUCCESS: 0x0, INVALID: 0x1, FAILURE: 0xf } as const

/** Descriptor size with IQA.DW = 1 (scalable mode): 256 bits. */
export const QI_DESC_SIZE = 32

/** Root entry (§9.1, scalable mode): lo = LCTP (devfn 0..127), hi = UCTP; bit 0 present. */
export const ROOT_ENTRY_SIZE = 16
/** Scalable-mode context entry (§9.4): 256 bits, 128 per 4 KiB context table. */
export const SM_CONTEXT_SIZE = 32

/** Scalable-mode context entry fields, lo qword unless noted. */
export const Ctx = {
  P: 1n << 0n,
  FPD: 1n << 1n,
  /** DTE: device-TLB (ATS translation requests) enable. */
  DTE: 1n << 2n,
  /** PASIDE: requests with PASID are allowed. */
  PASIDE: 1n << 3n,
  /** PRE: page requests enable. */
  PRE: 1n << 4n,
  /** PDTS [11:9]: PASID directory of 2^(PDTS + 7) entries. */
  PDTS_SHIFT: 9n,
  /** PASIDDIRPTR [63:12]. */
  DIR_MASK: 0xffff_ffff_ffff_f000n,
  /** hi [19:0]: RID_PASID, the PASID requests without PASID use. */
  RID_PASID_MASK: 0xf_ffffn,
} as const

/** PASID directory entry: bit 0 present, [63:12] the PASID table (64 entries). */
export const PASID_DIR_ENTRY_SIZE = 8
/** Scalable-mode PASID table entry: 512 bits. */
export const PASID_ENTRY_SIZE = 64

/** PASID table entry fields (§9.6, reference §3.1); `val[n]` words. */
export const Pe = {
  /** val0 */
  P: 1n << 0n,
  FPD: 1n << 1n,
  AW_SHIFT: 2n,
  AW_MASK: 7n << 2n,
  PGTT_SHIFT: 6n,
  PGTT_MASK: 7n << 6n,
  SSADE: 1n << 9n,
  SSPTPTR_MASK: 0xffff_ffff_ffff_f000n,
  /** val1 */
  DID_MASK: 0xffffn,
  PWSNP: 1n << 23n,
  PGSNP: 1n << 24n,
  /** val2 */
  SRE: 1n << 0n,
  ERE: 1n << 1n,
  FSPM_SHIFT: 2n,
  FSPM_MASK: 3n << 2n,
  WPE: 1n << 4n,
  EAFE: 1n << 7n,
  FSPTPTR_MASK: 0xffff_ffff_ffff_f000n,
} as const

/** PASID entry PGTT values (`PASID_ENTRY_PGTT_*`). */
export const Pgtt = { FS: 1, SS: 2, NESTED: 3, PT: 4 } as const

/** The domain ID Linux uses for first-stage and pass-through entries (`FLPT_DEFAULT_DID`). */
export const FLPT_DEFAULT_DID = 1

/**
 * Scalable-mode fault reasons (Appendix A; the Linux driver's
 * `dma_remap_sm_fault_reasons`), as the fault-recording register reports them.
 */
export const Fr = {
  ROOT_NOT_PRESENT: 0x39,
  ROOT_RESERVED: 0x3a,
  CONTEXT_NOT_PRESENT: 0x41,
  CONTEXT_RESERVED: 0x42,
  CONTEXT_INVALID: 0x43,
  /** A translation request (ATS) with context DTE clear. */
  DTE_CLEAR: 0x44,
  /** A request with PASID and context PASIDE clear. */
  PASIDE_CLEAR: 0x45,
  /** The PASID is beyond the context entry's PASID directory. */
  PASID_TOO_LARGE: 0x46,
  /** A page request with context PRE clear. */
  PRE_CLEAR: 0x47,
  PASID_DIR_NOT_PRESENT: 0x51,
  PASID_DIR_RESERVED: 0x52,
  PASID_NOT_PRESENT: 0x59,
  PASID_RESERVED: 0x5a,
  PASID_INVALID: 0x5b,
  FS_NOT_PRESENT: 0x71,
  FS_RESERVED: 0x72,
  /** Nested: the first-stage root's address did not translate for read. */
  NESTED_FS_ROOT_READ: 0x75,
  /** Nested: a first-stage table's address did not translate for read. */
  NESTED_FS_READ: 0x76,
  /** Nested: a first-stage table's address did not translate for the A/D write. */
  NESTED_FS_WRITE: 0x77,
  /** A second-stage entry with R = W = 0 on the way. */
  SS_NOT_PRESENT: 0x79,
  SS_RESERVED: 0x7a,
  SS_INVALID_ROOT: 0x7b,
  FS_NON_CANONICAL: 0x80,
  /** Input address beyond what the table (AW / MGAW) translates. */
  ADDRESS_BEYOND_MAX: 0x83,
  NO_WRITE: 0x85,
  NO_READ: 0x86,
} as const

/** Fault-recording register (§11.4.14): 128 bits, 16 bytes per record. */
export const FRCD_SIZE = 16

/** Fault-recording register bits of its upper dword (offset +12) and dword +8. */
export const Frcd = {
  /** dword 3 bit 31: F, the record holds a fault (W1C). */
  F: 1 << 31,
  /** dword 3 bit 30: T1, 1 = read request, 0 = write. */
  T_READ: 1 << 30,
  /** dword 3 [27:8]: PV, the PASID value. */
  PV_SHIFT: 8,
  /** dword 2 bit 31: PP, the PASID is present. */
  PP: 1 << 31,
} as const

/** Page request descriptor (§7.5.1): 256 bits. */
export const PRQ_DESC_SIZE = 32
/** Page request descriptor type (qw0 [7:0]). */
export const PRQ_TYPE_PAGE_REQ = 0x1

/** Page request descriptor fields. */
export const Prq = {
  /** qw0 bit 8 */
  PASID_PRESENT: 1n << 8n,
  /** qw0 [31:16] */
  RID_SHIFT: 16n,
  /** qw0 [51:32] */
  PASID_SHIFT: 32n,
  /** qw0 bit 52 */
  EXE: 1n << 52n,
  /** qw0 bit 53 */
  PM: 1n << 53n,
  /** qw1 bit 0 */
  RD: 1n << 0n,
  /** qw1 bit 1 */
  WR: 1n << 1n,
  /** qw1 bit 2: last page request in the group. */
  LPIG: 1n << 2n,
  /** qw1 [11:3] */
  PRG_SHIFT: 3n,
  /** qw1 [63:12] */
  ADDR_MASK: 0xffff_ffff_ffff_f000n,
} as const

/** Field extraction helpers. */
export const capSagaw = (cap: bigint): number => Number((cap >> Cap.SAGAW_SHIFT) & 0x1fn)
export const capMgaw = (cap: bigint): number => Number((cap >> Cap.MGAW_SHIFT) & 0x3fn) + 1
export const capSllps = (cap: bigint): number => Number((cap >> Cap.SLLPS_SHIFT) & 0xfn)
export const capNdoms = (cap: bigint): number => 2 ** (4 + 2 * Number(cap & 7n))
export const capFro = (cap: bigint): number => Number((cap >> Cap.FRO_SHIFT) & 0x3ffn) * 16
export const capNfr = (cap: bigint): number => Number((cap >> Cap.NFR_SHIFT) & 0xffn) + 1
export const capMamv = (cap: bigint): number => Number((cap >> Cap.MAMV_SHIFT) & 0x3fn)
export const ecapPss = (ecap: bigint): number => Number((ecap >> Ecap.PSS_SHIFT) & 0x1fn) + 1

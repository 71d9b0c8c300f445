/**
 * AMD I/O Virtualization Technology (IOMMU) layouts: MMIO register offsets and bits, the
 * 256-bit Device Table Entry, the 128-bit command and event formats. These are the
 * specification's (AMD IOMMU spec rev 3.x §3.4 MMIO registers, §2.2.2 DTE, §2.4 commands,
 * §2.5 event log); the values match the Linux driver's `amd_iommu_types.h`. Both rooms use
 * them: the hardware model decodes, the driver encodes.
 *
 * 64-bit quantities are `bigint` here: registers, DTEs and commands are touched per
 * configuration change, not per DMA. The translate hot path decodes a DTE once into
 * numbers (see `hw/iommu.ts`).
 *
 * @module
 */

/** MMIO register offsets (§3.4). */
export const Mmio = {
  DEV_TABLE: 0x0000,
  CMD_BUF: 0x0008,
  EVT_BUF: 0x0010,
  CONTROL: 0x0018,
  EXCL_BASE: 0x0020,
  EXCL_LIMIT: 0x0028,
  EXT_FEATURES: 0x0030,
  PPR_LOG: 0x0038,
  EXT_FEATURES2: 0x01a0,
  CMD_HEAD: 0x2000,
  CMD_TAIL: 0x2008,
  EVT_HEAD: 0x2010,
  EVT_TAIL: 0x2018,
  STATUS: 0x2020,
  PPR_HEAD: 0x2030,
  PPR_TAIL: 0x2038,
} as const

/** Control register bit numbers (`CONTROL_*`). */
export const Control = {
  IOMMU_EN: 0,
  HT_TUN_EN: 1,
  EVT_LOG_EN: 2,
  EVT_INT_EN: 3,
  COMWAIT_EN: 4,
  INV_TIMEOUT: 5,
  COHERENT_EN: 10,
  CMDBUF_EN: 12,
  PPRLOG_EN: 13,
  PPR_EN: 15,
  GT_EN: 16,
} as const

/** Status register bits (`MMIO_STATUS_*`). */
export const Status = {
  EVT_OVERFLOW: 1n << 0n,
  EVT_INT: 1n << 1n,
  COM_WAIT_INT: 1n << 2n,
  EVT_RUN: 1n << 3n,
  CMDBUF_RUN: 1n << 4n,
} as const

/** Extended Feature Register bits (`FEATURE_*`). */
export const Efr = {
  PREFETCH: 1n << 0n,
  PPR: 1n << 1n,
  NX: 1n << 3n,
  GT: 1n << 4n,
  IA: 1n << 6n,
  GA: 1n << 7n,
  HE: 1n << 8n,
  PC: 1n << 9n,
  /** HATS [11:10]: host table levels: 00 = 4, 01 = 5, 10 = 6. */
  HATS_SHIFT: 10n,
  GATS_SHIFT: 12n,
  GLX_SHIFT: 14n,
  /** PASmax [36:32]: PASID width - 1. */
  PASMAX_SHIFT: 32n,
  GIOSUP: 1n << 48n,
  /** Host access-bit update supported. */
  HASUP: 1n << 49n,
  EPHSUP: 1n << 50n,
  /** Host dirty-bit update supported. */
  HDSUP: 1n << 52n,
} as const

/** Extended Feature 2 Register bits. */
export const Efr2 = {
  GCR3TRPMODE: 1n << 3n,
} as const

/** Device Table Entry: 32 bytes, four little-endian u64 words `d0..d3` (§2.2.2.1). */
export const Dte = {
  SIZE: 32,
  /** d0 bit 0: entry valid. */
  V: 1n << 0n,
  /** d0 bit 1: translation information valid. */
  TV: 1n << 1n,
  /** d0 [8:7]: host Access/Dirty update (`DTE_FLAG_HAD` = both). */
  HAD_SHIFT: 7n,
  HAD: 3n << 7n,
  /** d0 [11:9]: host page-table levels (0 = none/passthrough, 1..6; 7 reserved). */
  MODE_SHIFT: 9n,
  MODE_MASK: 7n << 9n,
  /** d0 [51:12]: host page-table root (PA >> 12). */
  HOST_TRP_MASK: 0x000f_ffff_ffff_f000n,
  PPR: 1n << 52n,
  GIOV: 1n << 54n,
  GV: 1n << 55n,
  GLX_SHIFT: 56n,
  IR: 1n << 61n,
  IW: 1n << 62n,
  /** d1 [15:0]: domain ID (IOTLB tag). */
  DOMID_MASK: 0xffffn,
  /** d1 bit 32: device IOTLB (ATS) enable. */
  IOTLB: 1n << 32n,
} as const

/** Host page-table modes (`PAGE_MODE_*`). */
export const PageMode = {
  NONE: 0,
  LEVEL_1: 1,
  LEVEL_3: 3,
  LEVEL_4: 4,
  LEVEL_5: 5,
  LEVEL_6: 6,
  /** Reserved in a DTE; the NextLevel encoding of a sized leaf in a PTE. */
  LEVEL_7: 7,
} as const

/** Command opcodes, word1 [31:28] (§2.4). */
export const Cmd = {
  COMPLETION_WAIT: 0x01,
  INVALIDATE_DEVTAB_ENTRY: 0x02,
  INVALIDATE_IOMMU_PAGES: 0x03,
  INVALIDATE_IOTLB_PAGES: 0x04,
  INVALIDATE_INTERRUPT_TABLE: 0x05,
  PREFETCH_IOMMU_PAGES: 0x06,
  COMPLETE_PPR_REQUEST: 0x07,
  INVALIDATE_IOMMU_ALL: 0x08,
} as const

/** Command flag bits. */
export const CmdFlag = {
  /** COMPLETION_WAIT word0: store data to the address. */
  COMPL_WAIT_STORE: 0x01,
  /** COMPLETION_WAIT word0: raise the completion-wait interrupt. */
  COMPL_WAIT_INT: 0x02,
  /** INVALIDATE_*_PAGES word2: S, the address encodes a range size. */
  PAGES_SIZE: 0x01,
  /** INVALIDATE_IOMMU_PAGES word2: PDE, also invalidate page-directory caches. */
  PAGES_PDE: 0x02,
  /** INVALIDATE_*_PAGES word2: GN, the PASID field is valid (guest). */
  PAGES_GN: 0x04,
} as const

/** The address that, with S = 1, invalidates every page (`CMD_INV_IOMMU_ALL_PAGES_ADDRESS`). */
export const CMD_INV_ALL_PAGES_ADDRESS = 0x7fff_ffff_ffff_f000n

/** Command buffer entries are 16 bytes; the driver uses 512 of them (8 KiB). */
export const CMD_SIZE = 16
/** Event log entries are 16 bytes. */
export const EVT_SIZE = 16
/** ComLen / EventLen field position in the base registers: [59:56] = log2(entries). */
export const LEN_SHIFT = 56n

/** Event codes, word1 [31:28] (§2.5). */
export const Event = {
  ILLEGAL_DEV_TABLE_ENTRY: 0x1,
  IO_PAGE_FAULT: 0x2,
  DEV_TAB_HARDWARE_ERROR: 0x3,
  PAGE_TAB_HARDWARE_ERROR: 0x4,
  ILLEGAL_COMMAND_ERROR: 0x5,
  COMMAND_HARDWARE_ERROR: 0x6,
  IOTLB_INV_TIMEOUT: 0x7,
  INVALID_DEVICE_REQUEST: 0x8,
  INVALID_PPR_REQUEST: 0x9,
} as const

/**
 * Event flags, word1 [27:16] as a 12-bit field (§2.5.2, IO_PAGE_FAULT): the flags the
 * Linux driver reads are I (0x008) and RW (0x020).
 */
export const EventFlag = {
  /** GN: the PASID field is valid. */
  GN: 0x001,
  /** NX: an instruction fetch. */
  NX: 0x002,
  /** US: a user-mode access. */
  US: 0x004,
  /** I: an interrupt request, not a memory transaction. */
  I: 0x008,
  /** PR: the page was present (a permission, not a translation, fault). */
  PR: 0x010,
  /** RW: a write. */
  RW: 0x020,
  /** PE: a permission violation. */
  PE: 0x040,
  /** RZ: a reserved bit was set in a table entry. */
  RZ: 0x080,
  /** TR: a translation request (ATS), not a DMA. */
  TR: 0x100,
} as const

/**
 * Decode the range of an INVALIDATE_*_PAGES address (Table 14, "Example Page Size
 * Encodings"): with S = 0 one 4 KiB page; with S = 1 the lowest clear address bit at or
 * above 12, `z`, makes the range 2^(z+1) bytes, aligned.
 *
 * @returns [first page number, page count] in 4 KiB units (count may exceed 2^52 for "all")
 */
export function decodeInvRange(address: bigint, sizeBit: boolean): [number, number] {
  const base = address & ~0xfffn & 0xffff_ffff_ffff_ffffn
  if (!sizeBit) return [Number(base >> 12n), 1]
  let z = 12n
  while (z < 64n && ((base >> z) & 1n) === 1n) z++
  const lg2 = z + 1n
  if (lg2 >= 64n) return [0, 2 ** 52]
  const first = (base >> lg2) << lg2
  return [Number(first >> 12n), 2 ** Number(lg2 - 12n)]
}

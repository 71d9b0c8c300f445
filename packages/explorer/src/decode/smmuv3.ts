/**
 * ARM SMMUv3 structures as bit-field tables (IHI 0070): the Stream Table Entry (§5.2) and
 * the Context Descriptor (§5.4), the commands (§4) and event records (§7.3), and the
 * registers the driver programs (§6.3). Names are the specification's; the Linux macros
 * (`arm-smmu-v3.h`) where it has one.
 *
 * @module
 */

import {
  address,
  type Decoded,
  decodeStruct,
  type FieldSpec,
  flag,
  hex,
  type Layout,
  oneOf,
} from './bitfield.ts'

const CACHE = { 0: 'non-cacheable', 1: 'WB, RA, WA', 2: 'WT, RA', 3: 'WB, RA' }
const SHARE = { 0: 'non-shareable', 2: 'outer shareable', 3: 'inner shareable' }
const PS = {
  0: '32-bit',
  1: '36-bit',
  2: '40-bit',
  3: '42-bit',
  4: '44-bit',
  5: '48-bit',
  6: '52-bit',
}

/** Stream Table Entry (§5.2): 512 bits. */
export const SMMU_STE: Layout = {
  name: 'SMMUv3 STE',
  ref: 'IHI 0070 §5.2',
  bits: 512,
  fields: [
    {
      name: 'V',
      hi: 0,
      lo: 0,
      kernel: 'STRTAB_STE_0_V',
      meaning: flag('valid', 'not valid (C_BAD_STE)'),
    },
    {
      name: 'Config',
      hi: 3,
      lo: 1,
      kernel: 'STRTAB_STE_0_CFG',
      meaning: oneOf({
        0: 'abort',
        4: 'bypass',
        5: 'stage 1 translate, stage 2 bypass',
        6: 'stage 1 bypass, stage 2 translate',
        7: 'nested (stage 1 + stage 2)',
      }),
    },
    {
      name: 'S1Fmt',
      hi: 5,
      lo: 4,
      kernel: 'STRTAB_STE_0_S1FMT',
      meaning: oneOf({
        0: 'linear CD table',
        1: '2-level, 4 KiB leaves',
        2: '2-level, 64 KiB leaves',
      }),
    },
    {
      name: 'S1ContextPtr',
      hi: 51,
      lo: 6,
      kernel: 'STRTAB_STE_0_S1CTXPTR_MASK',
      meaning: address(6),
    },
    { name: 'Reserved', hi: 58, lo: 52, reserved: true },
    {
      name: 'S1CDMax',
      hi: 63,
      lo: 59,
      kernel: 'STRTAB_STE_0_S1CDMAX',
      meaning: (v) => `${2 ** Number(v)} CDs`,
    },
    {
      name: 'S1DSS',
      hi: 65,
      lo: 64,
      kernel: 'STRTAB_STE_1_S1DSS',
      meaning: oneOf({ 0: 'terminate non-PASID', 1: 'bypass non-PASID', 2: 'non-PASID uses CD 0' }),
    },
    { name: 'S1CIR', hi: 67, lo: 66, kernel: 'STRTAB_STE_1_S1CIR', meaning: oneOf(CACHE) },
    { name: 'S1COR', hi: 69, lo: 68, kernel: 'STRTAB_STE_1_S1COR', meaning: oneOf(CACHE) },
    { name: 'S1CSH', hi: 71, lo: 70, kernel: 'STRTAB_STE_1_S1CSH', meaning: oneOf(SHARE) },
    { name: 'S2HWU', hi: 75, lo: 72 },
    { name: 'DRE', hi: 76, lo: 76, meaning: flag('destructive read enable') },
    { name: 'CONT', hi: 80, lo: 77 },
    { name: 'DCP', hi: 81, lo: 81, meaning: flag('directed cache prefetch') },
    { name: 'PPAR', hi: 82, lo: 82, meaning: flag('PRI page response PASID required') },
    { name: 'MEV', hi: 83, lo: 83, kernel: 'STRTAB_STE_1_MEV', meaning: flag('merge events') },
    { name: 'Reserved', hi: 88, lo: 84, reserved: true },
    {
      name: 'S2FWB',
      hi: 89,
      lo: 89,
      kernel: 'STRTAB_STE_1_S2FWB',
      meaning: flag('stage 2 forced write-back'),
    },
    { name: 'S1MPAM', hi: 90, lo: 90, meaning: flag('stage 1 MPAM') },
    {
      name: 'S1STALLD',
      hi: 91,
      lo: 91,
      kernel: 'STRTAB_STE_1_S1STALLD',
      meaning: flag('stall disabled'),
    },
    {
      name: 'EATS',
      hi: 93,
      lo: 92,
      kernel: 'STRTAB_STE_1_EATS',
      meaning: oneOf({
        0: 'ATS translation requests abort',
        1: 'ATS enabled',
        2: 'ATS, stage 1 checked',
      }),
    },
    {
      name: 'STRW',
      hi: 95,
      lo: 94,
      kernel: 'STRTAB_STE_1_STRW',
      meaning: oneOf({ 0: 'NS-EL1', 2: 'EL2' }),
    },
    { name: 'MemAttr', hi: 99, lo: 96 },
    { name: 'MTCFG', hi: 100, lo: 100, meaning: flag('replace memory type') },
    { name: 'ALLOCCFG', hi: 104, lo: 101 },
    { name: 'Reserved', hi: 107, lo: 105, reserved: true },
    {
      name: 'SHCFG',
      hi: 109,
      lo: 108,
      kernel: 'STRTAB_STE_1_SHCFG',
      meaning: oneOf({
        0: 'non-shareable',
        1: 'use incoming',
        2: 'outer shareable',
        3: 'inner shareable',
      }),
    },
    { name: 'NSCFG', hi: 111, lo: 110 },
    { name: 'PRIVCFG', hi: 113, lo: 112 },
    { name: 'INSTCFG', hi: 115, lo: 114 },
    { name: 'Reserved', hi: 127, lo: 116, reserved: true },
    {
      name: 'S2VMID',
      hi: 143,
      lo: 128,
      kernel: 'STRTAB_STE_2_S2VMID',
      meaning: (v) => `${v} (TLB tag)`,
    },
    { name: 'Reserved', hi: 159, lo: 144, reserved: true },
    {
      name: 'S2T0SZ',
      hi: 165,
      lo: 160,
      kernel: 'STRTAB_STE_2_VTCR_S2T0SZ',
      meaning: (v) => `${64n - v}-bit IPA`,
    },
    { name: 'S2SL0', hi: 167, lo: 166, kernel: 'STRTAB_STE_2_VTCR_S2SL0' },
    { name: 'S2IR0', hi: 169, lo: 168, kernel: 'STRTAB_STE_2_VTCR_S2IR0', meaning: oneOf(CACHE) },
    { name: 'S2OR0', hi: 171, lo: 170, kernel: 'STRTAB_STE_2_VTCR_S2OR0', meaning: oneOf(CACHE) },
    { name: 'S2SH0', hi: 173, lo: 172, kernel: 'STRTAB_STE_2_VTCR_S2SH0', meaning: oneOf(SHARE) },
    {
      name: 'S2TG',
      hi: 175,
      lo: 174,
      kernel: 'STRTAB_STE_2_VTCR_S2TG',
      meaning: oneOf({ 0: '4 KiB', 1: '64 KiB', 2: '16 KiB' }),
    },
    { name: 'S2PS', hi: 178, lo: 176, kernel: 'STRTAB_STE_2_VTCR_S2PS', meaning: oneOf(PS) },
    {
      name: 'S2AA64',
      hi: 179,
      lo: 179,
      kernel: 'STRTAB_STE_2_S2AA64',
      meaning: flag('AArch64 tables'),
    },
    {
      name: 'S2ENDI',
      hi: 180,
      lo: 180,
      kernel: 'STRTAB_STE_2_S2ENDI',
      meaning: flag('big-endian walks'),
    },
    { name: 'S2AFFD', hi: 181, lo: 181, meaning: flag('access flag faults disabled') },
    {
      name: 'S2PTW',
      hi: 182,
      lo: 182,
      kernel: 'STRTAB_STE_2_S2PTW',
      meaning: flag('protected table walk'),
    },
    { name: 'S2HD', hi: 183, lo: 183, meaning: flag('stage 2 hardware dirty update') },
    { name: 'S2HA', hi: 184, lo: 184, meaning: flag('stage 2 hardware access flag') },
    {
      name: 'S2S',
      hi: 185,
      lo: 185,
      kernel: 'STRTAB_STE_2_S2S',
      meaning: flag('stage 2 faults stall'),
    },
    {
      name: 'S2R',
      hi: 186,
      lo: 186,
      kernel: 'STRTAB_STE_2_S2R',
      meaning: flag('stage 2 faults recorded'),
    },
    { name: 'Reserved', hi: 195, lo: 187, reserved: true },
    { name: 'S2TTB', hi: 243, lo: 196, kernel: 'STRTAB_STE_3_S2TTB_MASK', meaning: address(4) },
    { name: 'Reserved', hi: 511, lo: 244, reserved: true },
  ],
}

/** Context Descriptor (§5.4): 512 bits. */
export const SMMU_CD: Layout = {
  name: 'SMMUv3 CD',
  ref: 'IHI 0070 §5.4',
  bits: 512,
  fields: [
    {
      name: 'T0SZ',
      hi: 5,
      lo: 0,
      kernel: 'CTXDESC_CD_0_TCR_T0SZ',
      meaning: (v) => `${64n - v}-bit input`,
    },
    {
      name: 'TG0',
      hi: 7,
      lo: 6,
      kernel: 'CTXDESC_CD_0_TCR_TG0',
      meaning: oneOf({ 0: '4 KiB', 1: '64 KiB', 2: '16 KiB' }),
    },
    { name: 'IR0', hi: 9, lo: 8, kernel: 'CTXDESC_CD_0_TCR_IRGN0', meaning: oneOf(CACHE) },
    { name: 'OR0', hi: 11, lo: 10, kernel: 'CTXDESC_CD_0_TCR_ORGN0', meaning: oneOf(CACHE) },
    { name: 'SH0', hi: 13, lo: 12, kernel: 'CTXDESC_CD_0_TCR_SH0', meaning: oneOf(SHARE) },
    {
      name: 'EPD0',
      hi: 14,
      lo: 14,
      kernel: 'CTXDESC_CD_0_TCR_EPD0',
      meaning: flag('TTB0 walks disabled'),
    },
    {
      name: 'ENDI',
      hi: 15,
      lo: 15,
      kernel: 'CTXDESC_CD_0_ENDI',
      meaning: flag('big-endian walks'),
    },
    { name: 'T1SZ', hi: 21, lo: 16 },
    { name: 'TG1', hi: 23, lo: 22 },
    { name: 'IR1', hi: 25, lo: 24 },
    { name: 'OR1', hi: 27, lo: 26 },
    { name: 'SH1', hi: 29, lo: 28 },
    {
      name: 'EPD1',
      hi: 30,
      lo: 30,
      kernel: 'CTXDESC_CD_0_TCR_EPD1',
      meaning: flag('TTB1 walks disabled'),
    },
    { name: 'V', hi: 31, lo: 31, kernel: 'CTXDESC_CD_0_V', meaning: flag('valid', 'not valid') },
    { name: 'IPS', hi: 34, lo: 32, kernel: 'CTXDESC_CD_0_TCR_IPS', meaning: oneOf(PS) },
    { name: 'AFFD', hi: 35, lo: 35, meaning: flag('access flag faults disabled') },
    { name: 'WXN', hi: 36, lo: 36, meaning: flag('write implies execute-never') },
    { name: 'UWXN', hi: 37, lo: 37, meaning: flag('unprivileged write implies PXN') },
    {
      name: 'TBI',
      hi: 39,
      lo: 38,
      kernel: 'CTXDESC_CD_0_TCR_TBI0',
      meaning: (v) => (v ? 'top byte ignored' : ''),
    },
    { name: 'PAN', hi: 40, lo: 40, meaning: flag('privileged access never') },
    { name: 'AA64', hi: 41, lo: 41, kernel: 'CTXDESC_CD_0_AA64', meaning: flag('AArch64 tables') },
    {
      name: 'HD',
      hi: 42,
      lo: 42,
      kernel: 'CTXDESC_CD_0_TCR_HD',
      meaning: flag('hardware dirty update (DBM)'),
    },
    {
      name: 'HA',
      hi: 43,
      lo: 43,
      kernel: 'CTXDESC_CD_0_TCR_HA',
      meaning: flag('hardware access flag update'),
    },
    { name: 'S', hi: 44, lo: 44, kernel: 'CTXDESC_CD_0_S', meaning: flag('faults stall') },
    { name: 'R', hi: 45, lo: 45, kernel: 'CTXDESC_CD_0_R', meaning: flag('faults recorded') },
    { name: 'A', hi: 46, lo: 46, kernel: 'CTXDESC_CD_0_A', meaning: flag('abort on fault') },
    { name: 'ASET', hi: 47, lo: 47, kernel: 'CTXDESC_CD_0_ASET', meaning: flag('shared ASID set') },
    { name: 'ASID', hi: 63, lo: 48, kernel: 'CTXDESC_CD_0_ASID', meaning: (v) => `${v} (TLB tag)` },
    { name: 'NSCFG0', hi: 64, lo: 64 },
    { name: 'HAD0', hi: 65, lo: 65, meaning: flag('hierarchical attributes disabled') },
    { name: 'E0PD0', hi: 66, lo: 66 },
    {
      name: 'HAFT',
      hi: 67,
      lo: 67,
      kernel: 'CTXDESC_CD_1_HAFT',
      meaning: flag('table access flags'),
    },
    { name: 'TTB0', hi: 115, lo: 68, kernel: 'CTXDESC_CD_1_TTB0_MASK', meaning: address(4) },
    { name: 'Reserved', hi: 122, lo: 116, reserved: true },
    { name: 'HWU0', hi: 126, lo: 123 },
    { name: 'Reserved', hi: 127, lo: 127, reserved: true },
    { name: 'NSCFG1', hi: 128, lo: 128 },
    { name: 'HAD1', hi: 129, lo: 129 },
    { name: 'Reserved', hi: 131, lo: 130, reserved: true },
    { name: 'TTB1', hi: 179, lo: 132, meaning: address(4) },
    { name: 'Reserved', hi: 191, lo: 180, reserved: true },
    { name: 'MAIR', hi: 255, lo: 192, kernel: 'CTXDESC_CD_3_MAIR', meaning: (v) => hex(v, 16) },
    { name: 'AMAIR', hi: 319, lo: 256 },
    { name: 'Other', hi: 511, lo: 320, reserved: true },
  ],
}

// ------------------------------------------------------------------ commands

const OPS: Record<number, string> = {
  1: 'CMD_PREFETCH_CONFIG',
  2: 'CMD_PREFETCH_ADDR',
  3: 'CMD_CFGI_STE',
  4: 'CMD_CFGI_ALL',
  5: 'CMD_CFGI_CD',
  6: 'CMD_CFGI_CD_ALL',
  16: 'CMD_TLBI_NH_ALL',
  17: 'CMD_TLBI_NH_ASID',
  18: 'CMD_TLBI_NH_VA',
  19: 'CMD_TLBI_NH_VAA',
  32: 'CMD_TLBI_EL2_ALL',
  33: 'CMD_TLBI_EL2_ASID',
  34: 'CMD_TLBI_EL2_VA',
  35: 'CMD_TLBI_EL2_VAA',
  40: 'CMD_TLBI_S12_VMALL',
  42: 'CMD_TLBI_S2_IPA',
  48: 'CMD_TLBI_NSNH_ALL',
  64: 'CMD_ATC_INV',
  65: 'CMD_PRI_RESP',
  68: 'CMD_RESUME',
  69: 'CMD_STALL_TERM',
  70: 'CMD_SYNC',
}

const OPCODE: FieldSpec = {
  name: 'Opcode',
  hi: 7,
  lo: 0,
  kernel: 'CMDQ_0_OP',
  meaning: oneOf(OPS, 'unknown'),
}
const SSV: FieldSpec = {
  name: 'SSV',
  hi: 11,
  lo: 11,
  kernel: 'CMDQ_0_SSV',
  meaning: flag('SubstreamID valid'),
}
const SID: FieldSpec = { name: 'StreamID', hi: 63, lo: 32, meaning: (v) => hex(v, 4) }
const SSID: FieldSpec = { name: 'SubstreamID', hi: 31, lo: 12 }
const VMID: FieldSpec = { name: 'VMID', hi: 47, lo: 32, kernel: 'CMDQ_TLBI_0_VMID' }
const ASID: FieldSpec = { name: 'ASID', hi: 63, lo: 48, kernel: 'CMDQ_TLBI_0_ASID' }
const NUM: FieldSpec = { name: 'NUM', hi: 16, lo: 12, kernel: 'CMDQ_TLBI_0_NUM' }
const SCALE: FieldSpec = { name: 'SCALE', hi: 24, lo: 20, kernel: 'CMDQ_TLBI_0_SCALE' }
const LEAF: FieldSpec = {
  name: 'Leaf',
  hi: 64,
  lo: 64,
  kernel: 'CMDQ_TLBI_1_LEAF',
  meaning: flag('leaf entries only'),
}
const TTL: FieldSpec = { name: 'TTL', hi: 73, lo: 72, kernel: 'CMDQ_TLBI_1_TTL' }
const TG: FieldSpec = {
  name: 'TG',
  hi: 75,
  lo: 74,
  kernel: 'CMDQ_TLBI_1_TG',
  meaning: oneOf({ 0: 'no range', 1: '4 KiB', 2: '16 KiB', 3: '64 KiB' }),
}

const CMD_FIELDS: Record<number, FieldSpec[]> = {
  1: [OPCODE, SSV, SSID, SID],
  3: [
    OPCODE,
    SSV,
    SID,
    { name: 'Leaf', hi: 64, lo: 64, kernel: 'CMDQ_CFGI_1_LEAF', meaning: flag('STE only') },
  ],
  4: [
    OPCODE,
    {
      name: 'Range',
      hi: 68,
      lo: 64,
      kernel: 'CMDQ_CFGI_1_RANGE',
      meaning: (v) => (v === 31n ? 'all StreamIDs' : `2^${Number(v) + 1} StreamIDs`),
    },
  ],
  5: [
    OPCODE,
    SSV,
    SSID,
    SID,
    { name: 'Leaf', hi: 64, lo: 64, kernel: 'CMDQ_CFGI_1_LEAF', meaning: flag('CD only') },
  ],
  16: [OPCODE, VMID],
  17: [OPCODE, VMID, ASID],
  18: [
    OPCODE,
    NUM,
    SCALE,
    VMID,
    ASID,
    LEAF,
    TTL,
    TG,
    { name: 'Address', hi: 127, lo: 76, kernel: 'CMDQ_TLBI_1_VA_MASK', meaning: address(12) },
  ],
  19: [
    OPCODE,
    NUM,
    SCALE,
    VMID,
    LEAF,
    TTL,
    TG,
    { name: 'Address', hi: 127, lo: 76, meaning: address(12) },
  ],
  40: [OPCODE, VMID],
  42: [
    OPCODE,
    NUM,
    SCALE,
    VMID,
    LEAF,
    TTL,
    TG,
    { name: 'Address', hi: 115, lo: 76, kernel: 'CMDQ_TLBI_1_IPA_MASK', meaning: address(12) },
  ],
  48: [OPCODE],
  64: [
    OPCODE,
    { name: 'G', hi: 9, lo: 9, kernel: 'CMDQ_ATC_0_GLOBAL', meaning: flag('all SubstreamIDs') },
    SSV,
    SSID,
    SID,
    {
      name: 'Size',
      hi: 69,
      lo: 64,
      kernel: 'CMDQ_ATC_1_SIZE',
      meaning: (v) => (v >= 52n ? 'everything' : `2^${v} pages`),
    },
    { name: 'Address', hi: 127, lo: 76, kernel: 'CMDQ_ATC_1_ADDR_MASK', meaning: address(12) },
  ],
  65: [
    OPCODE,
    SSV,
    SSID,
    SID,
    { name: 'PRGI', hi: 72, lo: 64, kernel: 'CMDQ_PRI_1_GRPID' },
    {
      name: 'Resp',
      hi: 77,
      lo: 76,
      kernel: 'CMDQ_PRI_1_RESP',
      meaning: oneOf({ 0: 'deny', 1: 'fail', 2: 'success' }),
    },
  ],
  70: [
    OPCODE,
    {
      name: 'CS',
      hi: 13,
      lo: 12,
      kernel: 'CMDQ_SYNC_0_CS',
      meaning: oneOf({ 0: 'no signal', 1: 'IRQ (MSI)', 2: 'SEV' }),
    },
    { name: 'MSH', hi: 23, lo: 22, kernel: 'CMDQ_SYNC_0_MSH' },
    { name: 'MSIAttr', hi: 27, lo: 24, kernel: 'CMDQ_SYNC_0_MSIATTR' },
    { name: 'MSIData', hi: 63, lo: 32, kernel: 'CMDQ_SYNC_0_MSIDATA' },
    {
      name: 'MSIAddress',
      hi: 115,
      lo: 66,
      kernel: 'CMDQ_SYNC_1_MSIADDR_MASK',
      meaning: address(2),
    },
  ],
}

/**
 * A CMD_SYNC whose completion MSI Linux points at the command itself (MSIData 0): once
 * the SMMU completes it, dw0[31:0] reads 0, which is what `arm_smmu_cmdq_poll_until_msi`
 * waits for. Recognised by MSIAddress naming the entry's own address.
 */
export function isCompletedSync(words: readonly bigint[], pa: number): boolean {
  const op = Number((words[0] ?? 0n) & 0xffn)
  const msiAddr = Number((words[1] ?? 0n) & 0x000f_ffff_ffff_fffcn)
  return op === 0 && msiAddr === pa && pa !== 0
}

/** The name of a command's opcode. */
export function smmuCommandName(words: readonly bigint[], pa = 0): string {
  const op = Number((words[0] ?? 0n) & 0xffn)
  if (isCompletedSync(words, pa)) return 'CMD_SYNC (completed)'
  return OPS[op] ?? `opcode ${hex(op, 2)}`
}

/** Decode a 128-bit command by its opcode; fields outside the table show as operands. */
export function decodeSmmuCommand(title: string, words: readonly bigint[], pa: number): Decoded {
  if (isCompletedSync(words, pa)) {
    return decodeStruct(
      title,
      {
        name: 'CMD_SYNC, completed: its MSI wrote MSIData (0) over dw0[31:0]',
        ref: 'IHI 0070 §4.7.3',
        bits: 128,
        fields: CMD_FIELDS[0x46] as FieldSpec[],
      },
      words,
      pa,
    )
  }
  const op = Number((words[0] ?? 0n) & 0xffn)
  const layout: Layout = {
    name: OPS[op] ?? `command ${hex(op, 2)}`,
    ref: 'IHI 0070 §4',
    bits: 128,
    fields: CMD_FIELDS[op] ?? [OPCODE, { name: 'Operands', hi: 127, lo: 8 }],
  }
  return decodeStruct(title, layout, words, pa)
}

// ------------------------------------------------------------------ events

const EVENTS: Record<number, string> = {
  1: 'F_UUT',
  2: 'C_BAD_STREAMID',
  3: 'F_STE_FETCH',
  4: 'C_BAD_STE',
  5: 'F_BAD_ATS_TREQ',
  6: 'F_STREAM_DISABLED',
  7: 'F_TRANSL_FORBIDDEN',
  8: 'C_BAD_SUBSTREAMID',
  9: 'F_CD_FETCH',
  10: 'C_BAD_CD',
  11: 'F_WALK_EABT',
  16: 'F_TRANSLATION',
  17: 'F_ADDR_SIZE',
  18: 'F_ACCESS',
  19: 'F_PERMISSION',
  32: 'F_TLB_CONFLICT',
  33: 'F_CFG_CONFLICT',
  36: 'E_PAGE_REQUEST',
  37: 'F_VMS_FETCH',
}

/** Event record (§7.3): 256 bits, the fields of the translation-fault records. */
export const SMMU_EVENT: Layout = {
  name: 'SMMUv3 event record',
  ref: 'IHI 0070 §7.3',
  bits: 256,
  fields: [
    { name: 'EventID', hi: 7, lo: 0, kernel: 'EVTQ_0_ID', meaning: oneOf(EVENTS, 'unknown') },
    { name: 'Reserved', hi: 10, lo: 8, reserved: true },
    { name: 'SSV', hi: 11, lo: 11, kernel: 'EVTQ_0_SSV', meaning: flag('SubstreamID valid') },
    { name: 'SubstreamID', hi: 31, lo: 12, kernel: 'EVTQ_0_SSID' },
    { name: 'StreamID', hi: 63, lo: 32, kernel: 'EVTQ_0_SID', meaning: (v) => hex(v, 4) },
    { name: 'STAG', hi: 79, lo: 64, kernel: 'EVTQ_1_STAG' },
    { name: 'Reserved', hi: 94, lo: 80, reserved: true },
    { name: 'Stall', hi: 95, lo: 95, kernel: 'EVTQ_1_STALL', meaning: flag('stalled') },
    { name: 'Reserved', hi: 96, lo: 96, reserved: true },
    {
      name: 'PnU',
      hi: 97,
      lo: 97,
      kernel: 'EVTQ_1_PnU',
      meaning: flag('privileged', 'unprivileged'),
    },
    { name: 'InD', hi: 98, lo: 98, kernel: 'EVTQ_1_InD', meaning: flag('instruction', 'data') },
    { name: 'RnW', hi: 99, lo: 99, kernel: 'EVTQ_1_RnW', meaning: flag('read', 'write') },
    { name: 'Reserved', hi: 102, lo: 100, reserved: true },
    { name: 'S2', hi: 103, lo: 103, kernel: 'EVTQ_1_S2', meaning: flag('stage 2 fault') },
    {
      name: 'CLASS',
      hi: 105,
      lo: 104,
      kernel: 'EVTQ_1_CLASS',
      meaning: oneOf({ 0: 'CD fetch', 1: 'table walk', 2: 'input address' }),
    },
    { name: 'Reserved', hi: 107, lo: 106, reserved: true },
    { name: 'TT_RnW', hi: 108, lo: 108, kernel: 'EVTQ_1_TT_READ', meaning: flag('walk read') },
    { name: 'Reserved', hi: 127, lo: 109, reserved: true },
    { name: 'InputAddr', hi: 191, lo: 128, kernel: 'EVTQ_2_ADDR', meaning: (v) => hex(v) },
    { name: 'Reserved', hi: 194, lo: 192, reserved: true },
    { name: 'FetchAddr / IPA', hi: 243, lo: 195, kernel: 'EVTQ_3_IPA', meaning: address(3) },
    { name: 'Reserved', hi: 255, lo: 244, reserved: true },
  ],
}

/** The name of an event record's ID. */
export function smmuEventName(words: readonly bigint[]): string {
  const id = Number((words[0] ?? 0n) & 0xffn)
  return EVENTS[id] ?? `event ${hex(id, 2)}`
}

// ------------------------------------------------------------------ registers

/** SMMU_CR0 (§6.3.9). */
export const SMMU_CR0: Layout = {
  name: 'SMMU_CR0',
  ref: 'IHI 0070 §6.3.9 (offset 0x20)',
  bits: 64,
  fields: [
    { name: 'SMMUEN', hi: 0, lo: 0, kernel: 'CR0_SMMUEN', meaning: flag('translation enabled') },
    { name: 'PRIQEN', hi: 1, lo: 1, kernel: 'CR0_PRIQEN', meaning: flag('PRI queue on') },
    { name: 'EVTQEN', hi: 2, lo: 2, kernel: 'CR0_EVTQEN', meaning: flag('event queue on') },
    { name: 'CMDQEN', hi: 3, lo: 3, kernel: 'CR0_CMDQEN', meaning: flag('command queue on') },
    { name: 'ATSCHK', hi: 4, lo: 4, kernel: 'CR0_ATSCHK', meaning: flag('ATS checked') },
    { name: 'Other', hi: 63, lo: 5, reserved: true },
  ],
}

/** SMMU_STRTAB_BASE_CFG (§6.3.24). */
export const SMMU_STRTAB_BASE_CFG: Layout = {
  name: 'SMMU_STRTAB_BASE_CFG',
  ref: 'IHI 0070 §6.3.24 (offset 0x88)',
  bits: 64,
  fields: [
    {
      name: 'LOG2SIZE',
      hi: 5,
      lo: 0,
      kernel: 'STRTAB_BASE_CFG_LOG2SIZE',
      meaning: (v) => `${2 ** Number(v)} StreamIDs`,
    },
    {
      name: 'SPLIT',
      hi: 10,
      lo: 6,
      kernel: 'STRTAB_BASE_CFG_SPLIT',
      meaning: (v) => `${2 ** Number(v)} STEs per level-2 table`,
    },
    { name: 'Reserved', hi: 15, lo: 11, reserved: true },
    {
      name: 'FMT',
      hi: 17,
      lo: 16,
      kernel: 'STRTAB_BASE_CFG_FMT',
      meaning: oneOf({ 0: 'linear', 1: '2-level' }),
    },
    { name: 'Reserved', hi: 63, lo: 18, reserved: true },
  ],
}

/** SMMU_STRTAB_BASE (§6.3.23). */
export const SMMU_STRTAB_BASE: Layout = {
  name: 'SMMU_STRTAB_BASE',
  ref: 'IHI 0070 §6.3.23 (offset 0x80)',
  bits: 64,
  fields: [
    { name: 'Reserved', hi: 5, lo: 0, reserved: true },
    { name: 'ADDR', hi: 51, lo: 6, kernel: 'STRTAB_BASE_ADDR_MASK', meaning: address(6) },
    { name: 'Reserved', hi: 61, lo: 52, reserved: true },
    { name: 'RA', hi: 62, lo: 62, kernel: 'STRTAB_BASE_RA', meaning: flag('read-allocate') },
    { name: 'Reserved', hi: 63, lo: 63, reserved: true },
  ],
}

/** SMMU_CMDQ_BASE / EVTQ_BASE / PRIQ_BASE (§6.3.25). */
export function smmuQueueBase(name: string, offset: number): Layout {
  return {
    name,
    ref: `IHI 0070 §6.3.25 (offset ${hex(offset, 2)})`,
    bits: 64,
    fields: [
      {
        name: 'LOG2SIZE',
        hi: 4,
        lo: 0,
        kernel: 'Q_BASE_LOG2SIZE',
        meaning: (v) => `${2 ** Number(v)} entries`,
      },
      { name: 'ADDR', hi: 51, lo: 5, kernel: 'Q_BASE_ADDR_MASK', meaning: address(5) },
      { name: 'Reserved', hi: 61, lo: 52, reserved: true },
      { name: 'RA', hi: 62, lo: 62, kernel: 'Q_BASE_RWA', meaning: flag('read/write-allocate') },
      { name: 'Reserved', hi: 63, lo: 63, reserved: true },
    ],
  }
}

/**
 * Bit-field tables of the IO page-table entries of every `@iommu/io-pgtable` format, as
 * the specifications name them: AMD v1 (AMD IOMMU spec §2.2.3), VT-d second stage (VT-d
 * spec §9.8), x86-64 / first stage (VT-d spec §9.7, AMD v2) and ARM LPAE stage 1 and 2
 * (Arm ARM D8.3, "VMSAv8-64 translation table descriptor formats").
 *
 * @module
 */

import { type Decoded, decodeStruct, flag, hex, type Layout, oneOf, sizeName } from './bitfield.ts'

/** What an entry is, as the walk classified it. */
export type PteKind = 'table' | 'leaf'

// ------------------------------------------------------------------ AMD v1

/** log2 of the page an AMD v1 NextLevel=7 leaf encodes (spec Table 14). */
export function amdv1EncodedSizeLg2(entry: bigint): number {
  let ones = 0
  while (ones < 40 && ((entry >> BigInt(12 + ones)) & 1n) === 1n) ones++
  return 12 + ones + 1
}

const amdNextLevel = (v: bigint, w: readonly bigint[]): string => {
  if (v === 0n) return 'leaf of the level’s own size'
  if (v === 7n) return `leaf, size in the address: ${sizeName(amdv1EncodedSizeLg2(w[0] ?? 0n))}`
  return `next table is level ${v}`
}

/** AMD v1 PDE (§2.2.3, "I/O Page Directory Entry"). */
export const AMDV1_PDE: Layout = {
  name: 'AMD v1 PDE',
  ref: 'AMD IOMMU spec §2.2.3.1',
  bits: 64,
  fields: [
    { name: 'PR', hi: 0, lo: 0, kernel: 'AMDV1PT_FMT_PR', meaning: flag('present', 'not present') },
    { name: 'Ign', hi: 4, lo: 1, reserved: true },
    { name: 'A', hi: 5, lo: 5, meaning: flag('accessed') },
    { name: 'Ign', hi: 8, lo: 6, reserved: true },
    {
      name: 'NextLevel',
      hi: 11,
      lo: 9,
      kernel: 'AMDV1PT_FMT_NEXT_LEVEL',
      meaning: amdNextLevel,
    },
    {
      name: 'NextTableAddress',
      hi: 51,
      lo: 12,
      kernel: 'AMDV1PT_FMT_OA',
      meaning: (v) => `PA ${hex(v << 12n)}`,
    },
    { name: 'Reserved', hi: 60, lo: 52, reserved: true },
    { name: 'IR', hi: 61, lo: 61, kernel: 'AMDV1PT_FMT_IR', meaning: flag('read allowed') },
    { name: 'IW', hi: 62, lo: 62, kernel: 'AMDV1PT_FMT_IW', meaning: flag('write allowed') },
    { name: 'Ign', hi: 63, lo: 63, reserved: true },
  ],
}

/** AMD v1 PTE (§2.2.3, "I/O Page Table Entry"). */
export const AMDV1_PTE_LAYOUT: Layout = {
  name: 'AMD v1 PTE',
  ref: 'AMD IOMMU spec §2.2.3.2',
  bits: 64,
  fields: [
    { name: 'PR', hi: 0, lo: 0, kernel: 'AMDV1PT_FMT_PR', meaning: flag('present', 'not present') },
    { name: 'Ign', hi: 4, lo: 1, reserved: true },
    { name: 'A', hi: 5, lo: 5, meaning: flag('accessed') },
    { name: 'D', hi: 6, lo: 6, kernel: 'AMDV1PT_FMT_D', meaning: flag('dirty') },
    { name: 'Ign', hi: 8, lo: 7, reserved: true },
    {
      name: 'NextLevel',
      hi: 11,
      lo: 9,
      kernel: 'AMDV1PT_FMT_NEXT_LEVEL',
      meaning: amdNextLevel,
    },
    {
      name: 'PageAddress',
      hi: 51,
      lo: 12,
      kernel: 'AMDV1PT_FMT_OA',
      meaning: (v, w) => {
        const e = w[0] ?? 0n
        if (((e >> 9n) & 7n) !== 7n) return `PA ${hex(v << 12n)}`
        const lg2 = amdv1EncodedSizeLg2(e)
        const pa = (v << 12n) & ~((1n << BigInt(lg2)) - 1n)
        return `PA ${hex(pa)} (low bits encode ${sizeName(lg2)})`
      },
    },
    { name: 'Reserved', hi: 58, lo: 52, reserved: true },
    { name: 'U', hi: 59, lo: 59, meaning: flag('untranslated access only') },
    { name: 'FC', hi: 60, lo: 60, kernel: 'AMDV1PT_FMT_FC', meaning: flag('force coherent') },
    { name: 'IR', hi: 61, lo: 61, kernel: 'AMDV1PT_FMT_IR', meaning: flag('read allowed') },
    { name: 'IW', hi: 62, lo: 62, kernel: 'AMDV1PT_FMT_IW', meaning: flag('write allowed') },
    { name: 'Ign', hi: 63, lo: 63, reserved: true },
  ],
}

// ------------------------------------------------------------------ VT-d second stage

const VTD_COMMON = [
  { name: 'R', hi: 0, lo: 0, kernel: 'DMA_PTE_READ', meaning: flag('read allowed') },
  { name: 'W', hi: 1, lo: 1, kernel: 'DMA_PTE_WRITE', meaning: flag('write allowed') },
  { name: 'X', hi: 2, lo: 2, reserved: true },
] as const

/** VT-d second-stage entry pointing to a table (SS-PML5E … SS-PDE with PS = 0). */
export const VTDSS_TABLE: Layout = {
  name: 'VT-d SS table entry',
  ref: 'VT-d spec §9.8',
  bits: 64,
  fields: [
    ...VTD_COMMON,
    { name: 'Ign', hi: 6, lo: 3, reserved: true },
    { name: 'PS', hi: 7, lo: 7, kernel: 'DMA_PTE_LARGE_PAGE', meaning: flag('leaf', 'table') },
    { name: 'A', hi: 8, lo: 8, meaning: flag('accessed') },
    { name: 'Ign', hi: 11, lo: 9, reserved: true },
    { name: 'ADDR', hi: 51, lo: 12, meaning: (v) => `table at PA ${hex(v << 12n)}` },
    { name: 'Ign', hi: 63, lo: 52, reserved: true },
  ],
}

/** VT-d second-stage leaf (SS-PTE, or SS-PDE / SS-PDPE with PS = 1). */
export const VTDSS_LEAF: Layout = {
  name: 'VT-d SS leaf',
  ref: 'VT-d spec §9.8',
  bits: 64,
  fields: [
    ...VTD_COMMON,
    { name: 'EMT', hi: 5, lo: 3, meaning: oneOf({ 0: 'UC', 1: 'WC', 4: 'WT', 5: 'WP', 6: 'WB' }) },
    { name: 'IPAT', hi: 6, lo: 6, meaning: flag('ignore PAT') },
    { name: 'PS', hi: 7, lo: 7, kernel: 'DMA_PTE_LARGE_PAGE', meaning: flag('large page') },
    { name: 'A', hi: 8, lo: 8, meaning: flag('accessed') },
    { name: 'D', hi: 9, lo: 9, kernel: 'DMA_SL_PTE_DIRTY', meaning: flag('dirty') },
    { name: 'Ign', hi: 10, lo: 10, reserved: true },
    { name: 'SNP', hi: 11, lo: 11, kernel: 'DMA_PTE_SNP', meaning: flag('snoop') },
    { name: 'ADDR', hi: 51, lo: 12, meaning: (v) => `PA ${hex(v << 12n)}` },
    { name: 'Ign', hi: 63, lo: 52, reserved: true },
  ],
}

// ------------------------------------------------------------------ x86-64

/** x86-64 paging entry (VT-d first stage, AMD v2 guest tables). */
function x86Layout(kind: PteKind): Layout {
  return {
    name: kind === 'table' ? 'x86-64 table entry' : 'x86-64 leaf',
    ref: 'Intel SDM Vol. 3 §4.5; VT-d spec §9.7',
    bits: 64,
    fields: [
      { name: 'P', hi: 0, lo: 0, meaning: flag('present', 'not present') },
      { name: 'R/W', hi: 1, lo: 1, meaning: flag('writable', 'read-only') },
      { name: 'U/S', hi: 2, lo: 2, meaning: flag('user', 'supervisor') },
      { name: 'PWT', hi: 3, lo: 3, meaning: flag('write-through') },
      { name: 'PCD', hi: 4, lo: 4, meaning: flag('cache disabled') },
      { name: 'A', hi: 5, lo: 5, meaning: flag('accessed') },
      kind === 'leaf'
        ? { name: 'D', hi: 6, lo: 6, meaning: flag('dirty') }
        : { name: 'Ign', hi: 6, lo: 6, reserved: true },
      { name: 'PS', hi: 7, lo: 7, meaning: flag('large page') },
      kind === 'leaf'
        ? { name: 'G', hi: 8, lo: 8, meaning: flag('global') }
        : { name: 'Ign', hi: 8, lo: 8, reserved: true },
      { name: 'Ign', hi: 11, lo: 9, reserved: true },
      { name: 'ADDR', hi: 51, lo: 12, meaning: (v) => `PA ${hex(v << 12n)}` },
      { name: 'Ign', hi: 62, lo: 52, reserved: true },
      { name: 'XD', hi: 63, lo: 63, meaning: flag('execute disable') },
    ],
  }
}

// ------------------------------------------------------------------ ARM LPAE

const ARM_TABLE: Layout = {
  name: 'ARM table descriptor',
  ref: 'Arm ARM D8.3.1',
  bits: 64,
  fields: [
    { name: 'Valid', hi: 0, lo: 0, meaning: flag('valid', 'invalid') },
    { name: 'Type', hi: 1, lo: 1, meaning: flag('table') },
    { name: 'Ign', hi: 11, lo: 2, reserved: true },
    { name: 'NextLevelTableAddr', hi: 47, lo: 12, meaning: (v) => `PA ${hex(v << 12n)}` },
    { name: 'Res0', hi: 50, lo: 48, reserved: true },
    { name: 'Ign', hi: 58, lo: 51, reserved: true },
    { name: 'PXNTable', hi: 59, lo: 59, meaning: flag('privileged execute never below') },
    { name: 'XNTable', hi: 60, lo: 60, meaning: flag('execute never below') },
    { name: 'APTable', hi: 62, lo: 61 },
    { name: 'NSTable', hi: 63, lo: 63, meaning: flag('non-secure below') },
  ],
}

function armLeaf(stage: 1 | 2): Layout {
  const attrs =
    stage === 1
      ? [
          { name: 'AttrIndx', hi: 4, lo: 2, meaning: (v: bigint) => `MAIR index ${v}` },
          { name: 'NS', hi: 5, lo: 5, meaning: flag('non-secure') },
          {
            name: 'AP',
            hi: 7,
            lo: 6,
            meaning: oneOf({ 0: 'RW, EL1', 1: 'RW, any EL', 2: 'RO, EL1', 3: 'RO, any EL' }),
          },
        ]
      : [
          { name: 'MemAttr', hi: 5, lo: 2 },
          {
            name: 'S2AP',
            hi: 7,
            lo: 6,
            meaning: oneOf({ 0: 'none', 1: 'read', 2: 'write', 3: 'read/write' }),
          },
        ]
  return {
    name: `ARM stage ${stage} block/page descriptor`,
    ref: 'Arm ARM D8.3.2',
    bits: 64,
    fields: [
      { name: 'Valid', hi: 0, lo: 0, meaning: flag('valid', 'invalid') },
      { name: 'Type', hi: 1, lo: 1, meaning: flag('page (level 3)', 'block') },
      ...attrs,
      {
        name: 'SH',
        hi: 9,
        lo: 8,
        meaning: oneOf({ 0: 'non-shareable', 2: 'outer shareable', 3: 'inner shareable' }),
      },
      { name: 'AF', hi: 10, lo: 10, kernel: 'ARM_LPAE_PTE_AF', meaning: flag('accessed') },
      ...(stage === 1
        ? [{ name: 'nG', hi: 11, lo: 11, meaning: flag('not global') }]
        : [{ name: 'Res0', hi: 11, lo: 11, reserved: true }]),
      { name: 'OutputAddress', hi: 47, lo: 12, meaning: (v: bigint) => `PA ${hex(v << 12n)}` },
      { name: 'Res0', hi: 50, lo: 48, reserved: true },
      {
        name: 'DBM',
        hi: 51,
        lo: 51,
        kernel: 'ARM_LPAE_PTE_DBM',
        meaning: flag('dirty-bit modifier: hardware clears the read-only bit on write'),
      },
      { name: 'Contiguous', hi: 52, lo: 52, meaning: flag('contiguous hint') },
      { name: stage === 1 ? 'PXN' : 'XN[0]', hi: 53, lo: 53, meaning: flag('execute never') },
      { name: stage === 1 ? 'UXN' : 'XN[1]', hi: 54, lo: 54, meaning: flag('execute never') },
      { name: 'SW_SYNC', hi: 55, lo: 55, meaning: flag('software: table walk synced') },
      { name: 'Ign', hi: 63, lo: 56, reserved: true },
    ],
  }
}

const ARM_S1_LEAF = armLeaf(1)
const ARM_S2_LEAF = armLeaf(2)

/** The bit (in the low word) the hardware sets when it uses an entry, per format. */
export const ACCESSED_BIT: Readonly<Record<string, number>> = {
  amdv1: 5,
  vtdss: 8,
  x86_64: 5,
  'arm-lpae': 10,
}

/**
 * The layout of an entry of the `@iommu/io-pgtable` format called `format`.
 *
 * @param stage - for ARM LPAE: 1 or 2
 * @returns null for an unknown format
 */
export function pteLayout(format: string, kind: PteKind, stage: 1 | 2 = 1): Layout | null {
  switch (format) {
    case 'amdv1':
      return kind === 'table' ? AMDV1_PDE : AMDV1_PTE_LAYOUT
    case 'vtdss':
      return kind === 'table' ? VTDSS_TABLE : VTDSS_LEAF
    case 'x86_64':
      return x86Layout(kind)
    case 'arm-lpae':
      return kind === 'table' ? ARM_TABLE : stage === 2 ? ARM_S2_LEAF : ARM_S1_LEAF
    default:
      return null
  }
}

/** Decode one entry; unknown formats get a single raw field. */
export function decodePte(
  format: string,
  kind: PteKind,
  entry: bigint,
  address: number | null,
  title: string,
  stage: 1 | 2 = 1,
): Decoded {
  const layout = pteLayout(format, kind, stage) ?? {
    name: `${format} entry`,
    ref: 'no decoder for this format',
    bits: 64,
    fields: [{ name: 'raw', hi: 63, lo: 0 }],
  }
  return decodeStruct(title, layout, [entry], address)
}

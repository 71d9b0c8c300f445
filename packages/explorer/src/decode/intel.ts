/**
 * Intel VT-d (scalable mode) structures as bit-field tables: the root entry (§9.1), the
 * scalable-mode context entry (§9.4), the PASID directory and table entries (§9.5, §9.6),
 * the 256-bit queued-invalidation descriptors (§6.5.2) and the registers the driver
 * programs (§11.4). Names are the specification's; the kernel's macros (`iommu.h`,
 * `pasid.h`) where it has one.
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
  sizeName,
} from './bitfield.ts'

/** Root entry (§9.1, scalable mode): the lower and upper context-table pointers. */
export const VTD_ROOT_ENTRY: Layout = {
  name: 'VT-d scalable-mode root entry',
  ref: 'VT-d spec §9.2',
  bits: 128,
  fields: [
    { name: 'LP', hi: 0, lo: 0, meaning: flag('lower context table present') },
    { name: 'Reserved', hi: 11, lo: 1, reserved: true },
    { name: 'LCTP', hi: 63, lo: 12, meaning: (v) => `devfn 0..127 at PA ${hex(v << 12n)}` },
    { name: 'UP', hi: 64, lo: 64, meaning: flag('upper context table present') },
    { name: 'Reserved', hi: 75, lo: 65, reserved: true },
    { name: 'UCTP', hi: 127, lo: 76, meaning: (v) => `devfn 128..255 at PA ${hex(v << 12n)}` },
  ],
}

/** Scalable-mode context entry (§9.4). */
export const VTD_CONTEXT_ENTRY: Layout = {
  name: 'VT-d scalable-mode context entry',
  ref: 'VT-d spec §9.4',
  bits: 256,
  fields: [
    {
      name: 'P',
      hi: 0,
      lo: 0,
      kernel: 'context_set_present',
      meaning: flag('present', 'not present'),
    },
    { name: 'FPD', hi: 1, lo: 1, meaning: flag('fault processing disabled') },
    { name: 'DTE', hi: 2, lo: 2, kernel: 'CONTEXT_DTE', meaning: flag('device TLB (ATS) enabled') },
    {
      name: 'PASIDE',
      hi: 3,
      lo: 3,
      kernel: 'CONTEXT_PASIDE',
      meaning: flag('requests with PASID allowed'),
    },
    { name: 'PRE', hi: 4, lo: 4, kernel: 'CONTEXT_PRS', meaning: flag('page requests enabled') },
    { name: 'Reserved', hi: 8, lo: 5, reserved: true },
    {
      name: 'PDTS',
      hi: 11,
      lo: 9,
      meaning: (v) => `PASID directory of ${2 ** (Number(v) + 7)} entries`,
    },
    { name: 'PASIDDIRPTR', hi: 63, lo: 12, meaning: address(12) },
    { name: 'RID_PASID', hi: 83, lo: 64, meaning: (v) => `requests without PASID use PASID ${v}` },
    { name: 'RID_PRIV', hi: 84, lo: 84, meaning: flag('privileged') },
    { name: 'Reserved', hi: 255, lo: 85, reserved: true },
  ],
}

/** PASID directory entry (§9.5). */
export const VTD_PASID_DIR_ENTRY: Layout = {
  name: 'VT-d scalable-mode PASID directory entry',
  ref: 'VT-d spec §9.5',
  bits: 64,
  fields: [
    { name: 'P', hi: 0, lo: 0, meaning: flag('present', 'not present') },
    { name: 'FPD', hi: 1, lo: 1, meaning: flag('fault processing disabled') },
    { name: 'Reserved', hi: 11, lo: 2, reserved: true },
    {
      name: 'SMPTBLPTR',
      hi: 63,
      lo: 12,
      meaning: (v) => `PASID table (64 entries) at PA ${hex(v << 12n)}`,
    },
  ],
}

const PGTT: Record<number, string> = {
  1: 'first-stage translation',
  2: 'second-stage translation',
  3: 'nested translation',
  4: 'pass-through',
}

/** Scalable-mode PASID table entry (§9.6): 512 bits, the first three qwords used. */
export const VTD_PASID_ENTRY: Layout = {
  name: 'VT-d scalable-mode PASID table entry',
  ref: 'VT-d spec §9.6',
  bits: 512,
  fields: [
    {
      name: 'P',
      hi: 0,
      lo: 0,
      kernel: 'pasid_set_present',
      meaning: flag('present', 'not present'),
    },
    {
      name: 'FPD',
      hi: 1,
      lo: 1,
      kernel: 'pasid_set_fault_enable',
      meaning: flag('fault processing disabled'),
    },
    {
      name: 'AW',
      hi: 4,
      lo: 2,
      kernel: 'pasid_set_address_width',
      meaning: oneOf({ 1: '39-bit (3-level)', 2: '48-bit (4-level)', 3: '57-bit (5-level)' }),
    },
    { name: 'PGTT', hi: 8, lo: 6, kernel: 'pasid_set_translation_type', meaning: oneOf(PGTT) },
    {
      name: 'SSADE',
      hi: 9,
      lo: 9,
      kernel: 'pasid_set_ssade',
      meaning: flag('second-stage A/D on (dirty tracking)'),
    },
    { name: 'Reserved', hi: 11, lo: 10, reserved: true },
    { name: 'SSPTPTR', hi: 63, lo: 12, kernel: 'pasid_set_slptr', meaning: address(12) },
    {
      name: 'DID',
      hi: 79,
      lo: 64,
      kernel: 'pasid_set_domain_id',
      meaning: (v) => `${v} (IOTLB tag)`,
    },
    { name: 'Reserved', hi: 86, lo: 80, reserved: true },
    {
      name: 'PWSNP',
      hi: 87,
      lo: 87,
      kernel: 'pasid_set_page_snoop',
      meaning: flag('page-walk snoop'),
    },
    {
      name: 'PGSNP',
      hi: 88,
      lo: 88,
      kernel: 'pasid_set_pgsnp',
      meaning: flag('page snoop (force coherence)'),
    },
    { name: 'CD', hi: 89, lo: 89, meaning: flag('cache disable') },
    { name: 'EMTE', hi: 90, lo: 90, meaning: flag('extended memory type enable') },
    { name: 'Reserved', hi: 95, lo: 91, reserved: true },
    { name: 'PAT', hi: 127, lo: 96 },
    {
      name: 'SRE',
      hi: 128,
      lo: 128,
      kernel: 'pasid_set_sre',
      meaning: flag('supervisor requests'),
    },
    { name: 'ERE', hi: 129, lo: 129, meaning: flag('execute requests') },
    {
      name: 'FSPM',
      hi: 131,
      lo: 130,
      kernel: 'pasid_set_flpm',
      meaning: oneOf({ 0: '4-level first stage', 1: '5-level first stage' }),
    },
    { name: 'WPE', hi: 132, lo: 132, meaning: flag('write protect') },
    { name: 'NXE', hi: 133, lo: 133, meaning: flag('no-execute') },
    { name: 'SMEP', hi: 134, lo: 134, meaning: flag('supervisor-mode execute prevention') },
    { name: 'EAFE', hi: 135, lo: 135, meaning: flag('extended accessed flag') },
    { name: 'Reserved', hi: 139, lo: 136, reserved: true },
    { name: 'FSPTPTR', hi: 191, lo: 140, kernel: 'pasid_set_flptr', meaning: address(12) },
    { name: 'Reserved', hi: 511, lo: 192, reserved: true },
  ],
}

export function decodeVtd(
  title: string,
  layout: Layout,
  words: readonly bigint[],
  pa: number | null,
): Decoded {
  return decodeStruct(title, layout, words, pa)
}

// ------------------------------------------------------------------ invalidation descriptors

const TYPE: FieldSpec = {
  name: 'Type',
  hi: 3,
  lo: 0,
  meaning: oneOf({
    1: 'context-cache invalidate',
    2: 'IOTLB invalidate',
    3: 'device-TLB invalidate',
    4: 'interrupt-entry-cache invalidate',
    5: 'invalidation wait',
    6: 'PASID-based IOTLB invalidate',
    7: 'PASID-cache invalidate',
    8: 'PASID-based device-TLB invalidate',
    9: 'page group response',
  }),
}
const TYPE_HI: FieldSpec = { name: 'Type[6:4]', hi: 11, lo: 9, reserved: true }
const UPPER: FieldSpec = { name: 'Reserved (256-bit)', hi: 255, lo: 128, reserved: true }

const amRange = (v: bigint, w: readonly bigint[]) => {
  const am = Number((w[1] ?? 0n) & 0x3fn)
  return `${sizeName(12 + am)} at ${hex(v << 12n)}`
}

const DESCRIPTORS: Record<number, { name: string; fields: FieldSpec[] }> = {
  1: {
    name: 'Context-cache invalidate descriptor',
    fields: [
      TYPE,
      {
        name: 'G',
        hi: 5,
        lo: 4,
        meaning: oneOf({ 1: 'global', 2: 'domain-selective', 3: 'device-selective' }),
      },
      { name: 'Reserved', hi: 8, lo: 6, reserved: true },
      TYPE_HI,
      { name: 'Reserved', hi: 15, lo: 12, reserved: true },
      { name: 'DID', hi: 31, lo: 16, kernel: 'QI_CC_DID' },
      { name: 'SID', hi: 47, lo: 32, kernel: 'QI_CC_SID', meaning: (v) => hex(v, 4) },
      { name: 'FM', hi: 49, lo: 48, kernel: 'QI_CC_FM' },
      { name: 'Reserved', hi: 127, lo: 50, reserved: true },
      UPPER,
    ],
  },
  2: {
    name: 'IOTLB invalidate descriptor',
    fields: [
      TYPE,
      {
        name: 'G',
        hi: 5,
        lo: 4,
        meaning: oneOf({ 1: 'global', 2: 'domain-selective', 3: 'page-selective' }),
      },
      { name: 'DW', hi: 6, lo: 6, kernel: 'QI_IOTLB_DW', meaning: flag('drain writes') },
      { name: 'DR', hi: 7, lo: 7, kernel: 'QI_IOTLB_DR', meaning: flag('drain reads') },
      { name: 'Reserved', hi: 8, lo: 8, reserved: true },
      TYPE_HI,
      { name: 'Reserved', hi: 15, lo: 12, reserved: true },
      { name: 'DID', hi: 31, lo: 16, kernel: 'QI_IOTLB_DID' },
      { name: 'Reserved', hi: 63, lo: 32, reserved: true },
      { name: 'AM', hi: 69, lo: 64, kernel: 'QI_IOTLB_AM', meaning: (v) => `2^${v} pages` },
      {
        name: 'IH',
        hi: 70,
        lo: 70,
        kernel: 'QI_IOTLB_IH',
        meaning: flag('leaf only (keep paging-structure caches)'),
      },
      { name: 'Reserved', hi: 75, lo: 71, reserved: true },
      { name: 'ADDR', hi: 127, lo: 76, kernel: 'QI_IOTLB_ADDR', meaning: amRange },
      UPPER,
    ],
  },
  5: {
    name: 'Invalidation wait descriptor',
    fields: [
      TYPE,
      { name: 'IF', hi: 4, lo: 4, meaning: flag('interrupt (ICS.IWC)') },
      {
        name: 'SW',
        hi: 5,
        lo: 5,
        kernel: 'QI_IWD_STATUS_WRITE',
        meaning: flag('write status data'),
      },
      { name: 'FN', hi: 6, lo: 6, kernel: 'QI_IWD_FENCE', meaning: flag('fence') },
      {
        name: 'PD',
        hi: 7,
        lo: 7,
        kernel: 'QI_IWD_PRQ_DRAIN',
        meaning: flag('drain page requests'),
      },
      { name: 'Reserved', hi: 8, lo: 8, reserved: true },
      TYPE_HI,
      { name: 'Reserved', hi: 31, lo: 12, reserved: true },
      { name: 'StatusData', hi: 63, lo: 32, kernel: 'QI_IWD_STATUS_DATA' },
      { name: 'Reserved', hi: 65, lo: 64, reserved: true },
      { name: 'StatusAddress', hi: 127, lo: 66, meaning: address(2) },
      UPPER,
    ],
  },
  6: {
    name: 'PASID-based IOTLB invalidate descriptor',
    fields: [
      TYPE,
      {
        name: 'G',
        hi: 5,
        lo: 4,
        kernel: 'QI_EIOTLB_GRAN',
        meaning: oneOf({ 2: 'all in PASID', 3: 'page-selective in PASID' }),
      },
      { name: 'Reserved', hi: 8, lo: 6, reserved: true },
      TYPE_HI,
      { name: 'Reserved', hi: 15, lo: 12, reserved: true },
      { name: 'DID', hi: 31, lo: 16, kernel: 'QI_EIOTLB_DID' },
      { name: 'PASID', hi: 51, lo: 32, kernel: 'QI_EIOTLB_PASID' },
      { name: 'Reserved', hi: 63, lo: 52, reserved: true },
      { name: 'AM', hi: 69, lo: 64, kernel: 'QI_EIOTLB_AM', meaning: (v) => `2^${v} pages` },
      { name: 'IH', hi: 70, lo: 70, kernel: 'QI_EIOTLB_IH', meaning: flag('leaf only') },
      { name: 'Reserved', hi: 75, lo: 71, reserved: true },
      { name: 'ADDR', hi: 127, lo: 76, kernel: 'QI_EIOTLB_ADDR', meaning: amRange },
      UPPER,
    ],
  },
  7: {
    name: 'PASID-cache invalidate descriptor',
    fields: [
      TYPE,
      {
        name: 'G',
        hi: 5,
        lo: 4,
        kernel: 'QI_PC_GRAN',
        meaning: oneOf({ 0: 'domain-selective', 1: 'PASID-selective', 3: 'global' }),
      },
      { name: 'Reserved', hi: 8, lo: 6, reserved: true },
      TYPE_HI,
      { name: 'Reserved', hi: 15, lo: 12, reserved: true },
      { name: 'DID', hi: 31, lo: 16, kernel: 'QI_PC_DID' },
      { name: 'PASID', hi: 51, lo: 32, kernel: 'QI_PC_PASID' },
      { name: 'Reserved', hi: 127, lo: 52, reserved: true },
      UPPER,
    ],
  },
}

/** The name of a descriptor's type. */
export function vtdDescriptorName(words: readonly bigint[]): string {
  const t = Number((words[0] ?? 0n) & 0xfn)
  return DESCRIPTORS[t]?.name.replace(' descriptor', '') ?? `type ${t}`
}

/** Decode a 256-bit invalidation descriptor by its type. */
export function decodeVtdDescriptor(title: string, words: readonly bigint[], pa: number): Decoded {
  const t = Number((words[0] ?? 0n) & 0xfn)
  const d = DESCRIPTORS[t]
  const layout: Layout = {
    name: d?.name ?? `descriptor type ${t}`,
    ref: 'VT-d spec §6.5.2',
    bits: 256,
    fields: d?.fields ?? [TYPE, { name: 'Operands', hi: 127, lo: 4 }, UPPER],
  }
  return decodeStruct(title, layout, words, pa)
}

// ------------------------------------------------------------------ registers

/** Global status register (§11.4.5): the GCMD bits mirrored. */
export const VTD_GSTS: Layout = {
  name: 'Global Status Register',
  ref: 'VT-d spec §11.4.5 (MMIO 0x1c)',
  bits: 64,
  fields: [
    { name: 'Reserved', hi: 22, lo: 0, reserved: true },
    { name: 'CFIS', hi: 23, lo: 23, meaning: flag('compatibility format interrupts') },
    { name: 'IRTPS', hi: 24, lo: 24, meaning: flag('interrupt remap table pointer set') },
    { name: 'IRES', hi: 25, lo: 25, meaning: flag('interrupt remapping on') },
    {
      name: 'QIES',
      hi: 26,
      lo: 26,
      kernel: 'DMA_GSTS_QIES',
      meaning: flag('queued invalidation on'),
    },
    { name: 'WBFS', hi: 27, lo: 27, meaning: flag('write-buffer flush running') },
    { name: 'AFLS', hi: 28, lo: 28, meaning: flag('advanced fault logging') },
    { name: 'FLS', hi: 29, lo: 29, meaning: flag('fault log') },
    {
      name: 'RTPS',
      hi: 30,
      lo: 30,
      kernel: 'DMA_GSTS_RTPS',
      meaning: flag('root table pointer set'),
    },
    { name: 'TES', hi: 31, lo: 31, kernel: 'DMA_GSTS_TES', meaning: flag('translation enabled') },
    { name: 'Reserved', hi: 63, lo: 32, reserved: true },
  ],
}

/** Root table address register (§11.4.6). */
export const VTD_RTADDR: Layout = {
  name: 'Root Table Address Register',
  ref: 'VT-d spec §11.4.6 (MMIO 0x20)',
  bits: 64,
  fields: [
    { name: 'Reserved', hi: 9, lo: 0, reserved: true },
    {
      name: 'TTM',
      hi: 11,
      lo: 10,
      kernel: 'DMA_RTADDR_SMT',
      meaning: oneOf({ 0: 'legacy mode', 1: 'scalable mode', 3: 'abort DMA' }),
    },
    { name: 'RTA', hi: 63, lo: 12, meaning: address(12) },
  ],
}

/** Invalidation queue address register (§11.4.9.3). */
export const VTD_IQA: Layout = {
  name: 'Invalidation Queue Address Register',
  ref: 'VT-d spec §11.4.9.3 (MMIO 0x90)',
  bits: 64,
  fields: [
    { name: 'QS', hi: 2, lo: 0, meaning: (v) => `${4 * 2 ** Number(v)} KiB` },
    { name: 'Reserved', hi: 10, lo: 3, reserved: true },
    { name: 'DW', hi: 11, lo: 11, meaning: flag('256-bit descriptors', '128-bit descriptors') },
    { name: 'IQA', hi: 63, lo: 12, meaning: address(12) },
  ],
}

/** Extended capability register (§11.4.3): the fields the driver tests. */
export const VTD_ECAP: Layout = {
  name: 'Extended Capability Register',
  ref: 'VT-d spec §11.4.3 (MMIO 0x10)',
  bits: 64,
  fields: [
    { name: 'C', hi: 0, lo: 0, meaning: flag('page-walk coherent') },
    { name: 'QI', hi: 1, lo: 1, meaning: flag('queued invalidation') },
    { name: 'DT', hi: 2, lo: 2, meaning: flag('device TLBs (ATS)') },
    { name: 'IR', hi: 3, lo: 3, meaning: flag('interrupt remapping') },
    { name: 'EIM', hi: 4, lo: 4, meaning: flag('x2APIC') },
    { name: 'Reserved', hi: 5, lo: 5, reserved: true },
    { name: 'PT', hi: 6, lo: 6, meaning: flag('pass-through') },
    { name: 'SC', hi: 7, lo: 7, meaning: flag('snoop control') },
    { name: 'IRO', hi: 17, lo: 8, meaning: (v) => `IOTLB registers at ${hex(v * 16n)}` },
    { name: 'Other', hi: 25, lo: 18, reserved: true },
    { name: 'NEST', hi: 26, lo: 26, meaning: flag('nested translation') },
    { name: 'Other', hi: 28, lo: 27, reserved: true },
    { name: 'PRS', hi: 29, lo: 29, meaning: flag('page requests') },
    { name: 'ERS', hi: 30, lo: 30, meaning: flag('execute requests') },
    { name: 'SRS', hi: 31, lo: 31, meaning: flag('supervisor requests') },
    { name: 'Other', hi: 33, lo: 32, reserved: true },
    { name: 'EAFS', hi: 34, lo: 34, meaning: flag('extended accessed flag') },
    { name: 'PSS', hi: 39, lo: 35, meaning: (v) => `${Number(v) + 1}-bit PASIDs` },
    { name: 'PASID', hi: 40, lo: 40, meaning: flag('PASID support') },
    { name: 'DIT', hi: 41, lo: 41, meaning: flag('device-TLB invalidation throttling') },
    { name: 'PDS', hi: 42, lo: 42, meaning: flag('page-request drain') },
    { name: 'SMTS', hi: 43, lo: 43, meaning: flag('scalable mode') },
    { name: 'VCS', hi: 44, lo: 44, meaning: flag('virtual command') },
    { name: 'SSADS', hi: 45, lo: 45, meaning: flag('second-stage A/D (dirty tracking)') },
    { name: 'SSTS', hi: 46, lo: 46, meaning: flag('second-stage translation') },
    { name: 'FSTS', hi: 47, lo: 47, meaning: flag('first-stage translation') },
    { name: 'SMPWC', hi: 48, lo: 48, meaning: flag('scalable-mode page-walk coherent') },
    { name: 'RPS', hi: 49, lo: 49, meaning: flag('RID_PASID') },
    { name: 'Other', hi: 63, lo: 50, reserved: true },
  ],
}

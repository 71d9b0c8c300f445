/**
 * AMD-Vi structures as bit-field tables: the 256-bit Device Table Entry (AMD IOMMU spec
 * §2.2.2.1), the 128-bit commands (§2.4) and event-log records (§2.5), and the MMIO
 * registers the driver programs (§3.4). Names are the specification's; the kernel's macro
 * names (`amd_iommu_types.h`) are given where it has one.
 *
 * @module
 */

import {
  address,
  type Decoded,
  decodeStruct,
  flag,
  hex,
  type Layout,
  oneOf,
  sizeName,
} from './bitfield.ts'

const MODES: Record<number, string> = {
  0: 'no host translation (IR/IW apply)',
  1: '1-level table',
  2: '2-level table',
  3: '3-level table (39-bit IOVA)',
  4: '4-level table (48-bit IOVA)',
  5: '5-level table (57-bit IOVA)',
  6: '6-level table (64-bit IOVA)',
  7: 'reserved (ILLEGAL_DEV_TABLE_ENTRY)',
}

/** The Device Table Entry (§2.2.2.1, Figure "Device Table Entry Fields"). */
export const AMD_DTE: Layout = {
  name: 'AMD DTE',
  ref: 'AMD IOMMU spec §2.2.2.1',
  bits: 256,
  fields: [
    { name: 'V', hi: 0, lo: 0, kernel: 'DTE_FLAG_V', meaning: flag('valid', 'not valid') },
    {
      name: 'TV',
      hi: 1,
      lo: 1,
      kernel: 'DTE_FLAG_TV',
      meaning: flag('translation info valid', 'DMA blocked'),
    },
    { name: 'Reserved', hi: 6, lo: 2, reserved: true },
    {
      name: 'HAD',
      hi: 8,
      lo: 7,
      kernel: 'DTE_FLAG_HAD',
      meaning: oneOf({
        0: 'no host A/D updates',
        1: 'host Access bit updates',
        2: 'reserved',
        3: 'host Access and Dirty updates (dirty tracking on)',
      }),
    },
    { name: 'Mode', hi: 11, lo: 9, kernel: 'DTE_MODE_MASK', meaning: oneOf(MODES) },
    {
      name: 'HostPageTableRootPtr',
      hi: 51,
      lo: 12,
      kernel: 'DTE_HOST_TRP',
      meaning: address(12),
    },
    { name: 'PPR', hi: 52, lo: 52, kernel: 'DTE_FLAG_PPR', meaning: flag('page requests on') },
    { name: 'GPRP', hi: 53, lo: 53, meaning: flag('guest PPR response with PASID') },
    { name: 'GIoV', hi: 54, lo: 54, kernel: 'DTE_FLAG_GIOV', meaning: flag('guest I/O valid') },
    {
      name: 'GV',
      hi: 55,
      lo: 55,
      kernel: 'DTE_FLAG_GV',
      meaning: flag('guest translation (GCR3) valid'),
    },
    { name: 'GLX', hi: 57, lo: 56, kernel: 'DTE_GLX' },
    { name: 'GCR3TRP[14:12]', hi: 60, lo: 58, kernel: 'DTE_GCR3_14_12' },
    { name: 'IR', hi: 61, lo: 61, kernel: 'DTE_FLAG_IR', meaning: flag('DMA reads allowed') },
    { name: 'IW', hi: 62, lo: 62, kernel: 'DTE_FLAG_IW', meaning: flag('DMA writes allowed') },
    { name: 'Reserved', hi: 63, lo: 63, reserved: true },
    {
      name: 'DomainID',
      hi: 79,
      lo: 64,
      kernel: 'DTE_DOMID_MASK',
      meaning: (v) => `${v} (IOTLB tag)`,
    },
    { name: 'GCR3TRP[30:15]', hi: 95, lo: 80, kernel: 'DTE_GCR3_30_15' },
    { name: 'I', hi: 96, lo: 96, kernel: 'DTE_FLAG_IOTLB', meaning: flag('device IOTLB (ATS)') },
    { name: 'SE', hi: 97, lo: 97, meaning: flag('suppress all I/O page faults') },
    { name: 'SA', hi: 98, lo: 98, meaning: flag('suppress repeated I/O page faults') },
    { name: 'IoCtl', hi: 100, lo: 99 },
    { name: 'Cache', hi: 101, lo: 101, meaning: flag('no IOTLB caching') },
    { name: 'SD', hi: 102, lo: 102, meaning: flag('snoop disable') },
    { name: 'EX', hi: 103, lo: 103, meaning: flag('exclusion range applies') },
    { name: 'SysMgt', hi: 105, lo: 104, kernel: 'DTE_DATA1_SYSMGT_MASK' },
    { name: 'Reserved', hi: 106, lo: 106, reserved: true },
    { name: 'GCR3TRP[51:31]', hi: 127, lo: 107, kernel: 'DTE_GCR3_51_31' },
    { name: 'IV', hi: 128, lo: 128, meaning: flag('interrupt map valid') },
    { name: 'IntTabLen', hi: 132, lo: 129, meaning: (v) => `${2 ** Number(v)} entries` },
    { name: 'IG', hi: 133, lo: 133, meaning: flag('ignore unmapped interrupts') },
    { name: 'IntTableRootPtr', hi: 179, lo: 134, meaning: address(6) },
    { name: 'Reserved', hi: 181, lo: 180, reserved: true },
    {
      name: 'GuestPagingMode',
      hi: 183,
      lo: 182,
      kernel: 'DTE_GPT_LEVEL_MASK',
      meaning: oneOf({ 0: '4-level guest tables', 1: '5-level guest tables' }),
    },
    { name: 'InitPass', hi: 184, lo: 184, meaning: flag('INIT passed through') },
    { name: 'EIntPass', hi: 185, lo: 185, meaning: flag('ExtInt passed through') },
    { name: 'NMIPass', hi: 186, lo: 186, meaning: flag('NMI passed through') },
    { name: 'Reserved', hi: 187, lo: 187, reserved: true },
    { name: 'IntCtl', hi: 189, lo: 188, meaning: oneOf({ 0: 'abort', 1: 'forward', 2: 'remap' }) },
    { name: 'Lint0Pass', hi: 190, lo: 190, meaning: flag('LINT0 passed through') },
    { name: 'Lint1Pass', hi: 191, lo: 191, meaning: flag('LINT1 passed through') },
    { name: 'Reserved', hi: 255, lo: 192, reserved: true },
  ],
}

/** Decode a DTE given as its four 64-bit words. */
export function decodeDte(title: string, words: readonly bigint[], pa: number | null): Decoded {
  return decodeStruct(title, AMD_DTE, words, pa)
}

// ------------------------------------------------------------------ commands

const OPCODE = {
  name: 'Opcode',
  hi: 63,
  lo: 60,
  meaning: oneOf({
    1: 'COMPLETION_WAIT',
    2: 'INVALIDATE_DEVTAB_ENTRY',
    3: 'INVALIDATE_IOMMU_PAGES',
    4: 'INVALIDATE_IOTLB_PAGES',
    5: 'INVALIDATE_INTERRUPT_TABLE',
    6: 'PREFETCH_IOMMU_PAGES',
    7: 'COMPLETE_PPR_REQUEST',
    8: 'INVALIDATE_IOMMU_ALL',
  }),
} as const

/** The range an INVALIDATE_*_PAGES address encodes (Table 14). */
function invRange(v: bigint, words: readonly bigint[]): string {
  const s = ((words[1] ?? 0n) & 1n) === 1n
  const base = v << 12n
  if (!s) return `4 KiB page at ${hex(base)}`
  let z = 12n
  while (z < 64n && ((base >> z) & 1n) === 1n) z++
  if (z + 1n >= 64n) return 'every page'
  const lg2 = Number(z + 1n)
  const first = (base >> BigInt(lg2)) << BigInt(lg2)
  return `${sizeName(lg2)} at ${hex(first)}`
}

const COMMANDS: Record<number, Layout> = {
  1: {
    name: 'COMPLETION_WAIT',
    ref: 'AMD IOMMU spec §2.4.1',
    bits: 128,
    fields: [
      { name: 's', hi: 0, lo: 0, kernel: 'CMD_COMPL_WAIT_STORE_MASK', meaning: flag('store') },
      { name: 'i', hi: 1, lo: 1, kernel: 'CMD_COMPL_WAIT_INT_MASK', meaning: flag('interrupt') },
      { name: 'f', hi: 2, lo: 2, meaning: flag('flush queue') },
      { name: 'StoreAddress', hi: 51, lo: 3, meaning: address(3) },
      { name: 'Reserved', hi: 59, lo: 52, reserved: true },
      OPCODE,
      { name: 'StoreData', hi: 127, lo: 64 },
    ],
  },
  2: {
    name: 'INVALIDATE_DEVTAB_ENTRY',
    ref: 'AMD IOMMU spec §2.4.2',
    bits: 128,
    fields: [
      { name: 'DeviceID', hi: 15, lo: 0 },
      { name: 'Reserved', hi: 59, lo: 16, reserved: true },
      OPCODE,
      { name: 'Reserved', hi: 127, lo: 64, reserved: true },
    ],
  },
  3: {
    name: 'INVALIDATE_IOMMU_PAGES',
    ref: 'AMD IOMMU spec §2.4.3',
    bits: 128,
    fields: [
      { name: 'PASID', hi: 19, lo: 0 },
      { name: 'Reserved', hi: 31, lo: 20, reserved: true },
      { name: 'DomainID', hi: 47, lo: 32 },
      { name: 'Reserved', hi: 59, lo: 48, reserved: true },
      OPCODE,
      {
        name: 'S',
        hi: 64,
        lo: 64,
        kernel: 'CMD_INV_IOMMU_PAGES_SIZE_MASK',
        meaning: flag('range encoded in Address', 'one page'),
      },
      {
        name: 'PDE',
        hi: 65,
        lo: 65,
        kernel: 'CMD_INV_IOMMU_PAGES_PDE_MASK',
        meaning: flag('also page-directory caches'),
      },
      {
        name: 'GN',
        hi: 66,
        lo: 66,
        kernel: 'CMD_INV_IOMMU_PAGES_GN_MASK',
        meaning: flag('guest (PASID valid)'),
      },
      { name: 'Reserved', hi: 75, lo: 67, reserved: true },
      { name: 'Address', hi: 127, lo: 76, meaning: (v, w) => invRange(v, w) },
    ],
  },
  4: {
    name: 'INVALIDATE_IOTLB_PAGES',
    ref: 'AMD IOMMU spec §2.4.4',
    bits: 128,
    fields: [
      { name: 'DeviceID', hi: 15, lo: 0 },
      { name: 'PASID[15:8]', hi: 23, lo: 16 },
      { name: 'Maxpend', hi: 31, lo: 24 },
      { name: 'QueueID / PASID[7:0]', hi: 47, lo: 32 },
      { name: 'PASID[19:16]', hi: 51, lo: 48 },
      { name: 'Reserved', hi: 59, lo: 52, reserved: true },
      OPCODE,
      { name: 'S', hi: 64, lo: 64, meaning: flag('range encoded in Address', 'one page') },
      { name: 'Reserved', hi: 65, lo: 65, reserved: true },
      { name: 'GN', hi: 66, lo: 66, meaning: flag('guest (PASID valid)') },
      { name: 'Reserved', hi: 75, lo: 67, reserved: true },
      { name: 'Address', hi: 127, lo: 76, meaning: (v, w) => invRange(v, w) },
    ],
  },
  8: {
    name: 'INVALIDATE_IOMMU_ALL',
    ref: 'AMD IOMMU spec §2.4.8',
    bits: 128,
    fields: [
      { name: 'Reserved', hi: 59, lo: 0, reserved: true },
      OPCODE,
      { name: 'Reserved', hi: 127, lo: 64, reserved: true },
    ],
  },
}

/** Word index pairs → 64-bit words: a 128-bit record read as four u32 (little-endian). */
export function wordsOf32(w0: number, w1: number, w2: number, w3: number): bigint[] {
  return [
    (BigInt(w1 >>> 0) << 32n) | BigInt(w0 >>> 0),
    (BigInt(w3 >>> 0) << 32n) | BigInt(w2 >>> 0),
  ]
}

/** The name of a command's opcode. */
export function amdCommandName(words: readonly bigint[]): string {
  const op = Number(((words[0] ?? 0n) >> 60n) & 0xfn)
  return COMMANDS[op]?.name ?? `opcode ${op}`
}

/** Decode a 128-bit command (two 64-bit words) by its opcode. */
export function decodeAmdCommand(title: string, words: readonly bigint[], pa: number): Decoded {
  const op = Number(((words[0] ?? 0n) >> 60n) & 0xfn)
  const layout: Layout = COMMANDS[op] ?? {
    name: `command ${op}`,
    ref: 'AMD IOMMU spec §2.4',
    bits: 128,
    fields: [{ name: 'Operands', hi: 59, lo: 0 }, OPCODE, { name: 'Operands', hi: 127, lo: 64 }],
  }
  return decodeStruct(title, layout, words, pa)
}

// ------------------------------------------------------------------ events

const EVENT_CODES: Record<number, string> = {
  1: 'ILLEGAL_DEV_TABLE_ENTRY',
  2: 'IO_PAGE_FAULT',
  3: 'DEV_TAB_HARDWARE_ERROR',
  4: 'PAGE_TAB_HARDWARE_ERROR',
  5: 'ILLEGAL_COMMAND_ERROR',
  6: 'COMMAND_HARDWARE_ERROR',
  7: 'IOTLB_INV_TIMEOUT',
  8: 'INVALID_DEVICE_REQUEST',
  9: 'INVALID_PPR_REQUEST',
}

const FLAG_NAMES: [number, string][] = [
  [0x001, 'GN'],
  [0x002, 'NX'],
  [0x004, 'US'],
  [0x008, 'I'],
  [0x010, 'PR'],
  [0x020, 'RW'],
  [0x040, 'PE'],
  [0x080, 'RZ'],
  [0x100, 'TR'],
]

/** The flag names set in an event's 12-bit Flags field. */
export function eventFlagNames(v: bigint): string {
  const n = Number(v)
  const on = FLAG_NAMES.filter(([m]) => (n & m) !== 0).map(([, s]) => s)
  return on.length ? on.join(' | ') : 'none'
}

/** Event-log record (§2.5): the IO_PAGE_FAULT layout, shared by the codes the model logs. */
export const AMD_EVENT: Layout = {
  name: 'AMD event record',
  ref: 'AMD IOMMU spec §2.5',
  bits: 128,
  fields: [
    { name: 'DeviceID', hi: 15, lo: 0, kernel: 'EVENT_DEVID_MASK' },
    { name: 'PASID[19:16]', hi: 19, lo: 16, kernel: 'EVENT_DOMID_MASK_HI' },
    { name: 'Reserved', hi: 31, lo: 20, reserved: true },
    {
      name: 'DomainID / PASID[15:0]',
      hi: 47,
      lo: 32,
      kernel: 'EVENT_DOMID_MASK_LO',
      meaning: (v, w) => (((w[0] ?? 0n) >> 48n) & 1n ? `PASID ${v}` : `DomainID ${v}`),
    },
    { name: 'Flags', hi: 59, lo: 48, kernel: 'EVENT_FLAGS_MASK', meaning: eventFlagNames },
    {
      name: 'EventCode',
      hi: 63,
      lo: 60,
      kernel: 'EVENT_TYPE_MASK',
      meaning: oneOf(EVENT_CODES, 'unknown'),
    },
    { name: 'Address', hi: 127, lo: 64, meaning: (v) => hex(v) },
  ],
}

/** The name of an event record's code. */
export function amdEventName(words: readonly bigint[]): string {
  const code = Number(((words[0] ?? 0n) >> 60n) & 0xfn)
  return EVENT_CODES[code] ?? `event ${code}`
}

// ------------------------------------------------------------------ registers

/** MMIO Control Register (§3.4.3, offset 0x18). */
export const AMD_CONTROL: Layout = {
  name: 'IOMMU Control Register',
  ref: 'AMD IOMMU spec §3.4.3 (MMIO 0x0018)',
  bits: 64,
  fields: [
    { name: 'IommuEn', hi: 0, lo: 0, kernel: 'CONTROL_IOMMU_EN', meaning: flag('enabled') },
    { name: 'HtTunEn', hi: 1, lo: 1, meaning: flag('on') },
    { name: 'EventLogEn', hi: 2, lo: 2, kernel: 'CONTROL_EVT_LOG_EN', meaning: flag('on') },
    { name: 'EventIntEn', hi: 3, lo: 3, kernel: 'CONTROL_EVT_INT_EN', meaning: flag('on') },
    { name: 'ComWaitIntEn', hi: 4, lo: 4, meaning: flag('on') },
    { name: 'InvTimeOut', hi: 7, lo: 5 },
    { name: 'PassPW', hi: 8, lo: 8, meaning: flag('on') },
    { name: 'ResPassPW', hi: 9, lo: 9, meaning: flag('on') },
    { name: 'Coherent', hi: 10, lo: 10, kernel: 'CONTROL_COHERENT_EN', meaning: flag('on') },
    { name: 'Isoc', hi: 11, lo: 11, meaning: flag('on') },
    { name: 'CmdBufEn', hi: 12, lo: 12, kernel: 'CONTROL_CMDBUF_EN', meaning: flag('on') },
    { name: 'PPRLogEn', hi: 13, lo: 13, meaning: flag('on') },
    { name: 'PprIntEn', hi: 14, lo: 14, meaning: flag('on') },
    { name: 'PPREn', hi: 15, lo: 15, meaning: flag('on') },
    { name: 'GTEn', hi: 16, lo: 16, kernel: 'CONTROL_GT_EN', meaning: flag('on') },
    { name: 'Other', hi: 63, lo: 17, reserved: true },
  ],
}

/** MMIO Status Register (§3.4.8, offset 0x2020). */
export const AMD_STATUS: Layout = {
  name: 'IOMMU Status Register',
  ref: 'AMD IOMMU spec §3.4.8 (MMIO 0x2020)',
  bits: 64,
  fields: [
    { name: 'EventOverflow', hi: 0, lo: 0, meaning: flag('event log overflowed') },
    { name: 'EventLogInt', hi: 1, lo: 1, meaning: flag('pending') },
    { name: 'ComWaitInt', hi: 2, lo: 2, meaning: flag('pending') },
    { name: 'EventLogRun', hi: 3, lo: 3, meaning: flag('running', 'stopped') },
    { name: 'CmdBufRun', hi: 4, lo: 4, meaning: flag('running', 'halted or off') },
    { name: 'Other', hi: 63, lo: 5, reserved: true },
  ],
}

/** Extended Feature Register (§3.4.5, offset 0x30): the fields the driver reads. */
export const AMD_EFR: Layout = {
  name: 'Extended Feature Register',
  ref: 'AMD IOMMU spec §3.4.5 (MMIO 0x0030)',
  bits: 64,
  fields: [
    { name: 'PreFSup', hi: 0, lo: 0, meaning: flag('prefetch supported') },
    { name: 'PPRSup', hi: 1, lo: 1, kernel: 'FEATURE_PPR', meaning: flag('page requests') },
    { name: 'XTSup', hi: 2, lo: 2, meaning: flag('x2APIC') },
    { name: 'NXSup', hi: 3, lo: 3, kernel: 'FEATURE_NX', meaning: flag('no-execute') },
    { name: 'GTSup', hi: 4, lo: 4, kernel: 'FEATURE_GT', meaning: flag('guest translation') },
    { name: 'Reserved', hi: 5, lo: 5, reserved: true },
    { name: 'IASup', hi: 6, lo: 6, meaning: flag('INVALIDATE_IOMMU_ALL') },
    { name: 'GASup', hi: 7, lo: 7, meaning: flag('guest virtual APIC') },
    { name: 'HESup', hi: 8, lo: 8, meaning: flag('hardware error registers') },
    { name: 'PCSup', hi: 9, lo: 9, meaning: flag('performance counters') },
    {
      name: 'HATS',
      hi: 11,
      lo: 10,
      meaning: oneOf({ 0: '4 levels', 1: '5 levels', 2: '6 levels', 3: 'reserved' }),
    },
    { name: 'GATS', hi: 13, lo: 12, meaning: oneOf({ 0: '4 levels', 1: '5 levels' }) },
    { name: 'GLXSup', hi: 15, lo: 14 },
    { name: 'Other', hi: 31, lo: 16, reserved: true },
    { name: 'PASmax', hi: 36, lo: 32, meaning: (v) => `${Number(v) + 1}-bit PASIDs` },
    { name: 'Other', hi: 47, lo: 37, reserved: true },
    { name: 'GIoSup', hi: 48, lo: 48, kernel: 'FEATURE_GIOSUP', meaning: flag('guest I/O') },
    { name: 'HASup', hi: 49, lo: 49, meaning: flag('host Access bit updates') },
    { name: 'EPHSup', hi: 50, lo: 50, meaning: flag('enhanced PPR handling') },
    { name: 'Other', hi: 51, lo: 51, reserved: true },
    { name: 'HDSup', hi: 52, lo: 52, kernel: 'FEATURE_HDSUP', meaning: flag('host Dirty updates') },
    { name: 'Other', hi: 63, lo: 53, reserved: true },
  ],
}

/** Device Table Base Address Register (§3.4.1, offset 0x00). */
export const AMD_DEV_TABLE_BASE: Layout = {
  name: 'Device Table Base Address Register',
  ref: 'AMD IOMMU spec §3.4.1 (MMIO 0x0000)',
  bits: 64,
  fields: [
    { name: 'Size', hi: 8, lo: 0, meaning: (v) => `${(Number(v) + 1) * 128} DTEs` },
    { name: 'Reserved', hi: 11, lo: 9, reserved: true },
    { name: 'DevTabBase', hi: 51, lo: 12, meaning: address(12) },
    { name: 'Reserved', hi: 63, lo: 52, reserved: true },
  ],
}

/** Command Buffer / Event Log Base Address Registers (§3.4.2, §3.4.4). */
export function ringBaseLayout(name: string, ref: string): Layout {
  return {
    name,
    ref,
    bits: 64,
    fields: [
      { name: 'Reserved', hi: 11, lo: 0, reserved: true },
      { name: 'Base', hi: 51, lo: 12, meaning: address(12) },
      { name: 'Reserved', hi: 55, lo: 52, reserved: true },
      { name: 'Len', hi: 59, lo: 56, meaning: (v) => `${2 ** Number(v)} entries` },
      { name: 'Reserved', hi: 63, lo: 60, reserved: true },
    ],
  }
}

/**
 * Bit-field tables: a hardware structure (a PTE, a DTE, a command, an event record) as a
 * list of named fields with their bit ranges, decoded from the raw 64-bit words the model
 * wrote into memory. Bit numbers are absolute within the structure (bit 64 is bit 0 of
 * the second 64-bit word), as the specifications number them.
 *
 * The explorer runs on the configuration path, never on a hot path, so the words are
 * `bigint` here.
 *
 * @module
 */

/** One field of a layout. */
export interface FieldSpec {
  /** The specification's name of the field (`HostPageTableRootPtr`, `DomainID`). */
  readonly name: string
  /** Highest bit, inclusive. */
  readonly hi: number
  /** Lowest bit. */
  readonly lo: number
  /** The kernel's name for the field or flag, when it has one (`DTE_HOST_TRP`). */
  readonly kernel?: string
  /** Reserved or ignored bits: shown only when non-zero. */
  readonly reserved?: boolean
  /** What the value means; the default prints it in hex. */
  readonly meaning?: (value: bigint, words: readonly bigint[]) => string
}

/** A structure's layout. */
export interface Layout {
  /** Name of the structure (`AMD DTE`, `AMD v1 PDE`). */
  readonly name: string
  /** Where the specification defines it (`AMD IOMMU spec §2.2.2.1`). */
  readonly ref: string
  /** Size in bits (a multiple of 64). */
  readonly bits: number
  readonly fields: readonly FieldSpec[]
}

/** A decoded field. */
export interface DecodedField {
  readonly name: string
  readonly hi: number
  readonly lo: number
  readonly value: bigint
  readonly meaning: string
  readonly kernel: string | undefined
  readonly reserved: boolean
}

/** A structure decoded from memory. */
export interface Decoded {
  /** What it is and where (`DTE of 0000:01:00.0`). */
  readonly title: string
  readonly layout: Layout
  /** Physical address of the first word, when it lives in memory. */
  readonly address: number | null
  /** The raw 64-bit words. */
  readonly words: readonly bigint[]
  readonly fields: readonly DecodedField[]
}

/** Bits [hi:lo] of a structure given as 64-bit words (fields may cross a word). */
export function bits(words: readonly bigint[], hi: number, lo: number): bigint {
  let out = 0n
  for (let b = hi; b >= lo; ) {
    const w = Math.floor(b / 64)
    const wordLo = Math.max(lo, w * 64)
    const n = b - wordLo + 1
    const v = ((words[w] ?? 0n) >> BigInt(wordLo - w * 64)) & ((1n << BigInt(n)) - 1n)
    out = (out << BigInt(n)) | v
    b = wordLo - 1
  }
  return out
}

/** `0x…` with `_` every 16 bits for values wider than 16 bits. */
export function hex(v: bigint | number, minDigits = 1): string {
  const s = (typeof v === 'bigint' ? v : BigInt(v)).toString(16).padStart(minDigits, '0')
  if (s.length <= 4) return `0x${s}`
  const groups: string[] = []
  for (let i = s.length; i > 0; i -= 4) groups.unshift(s.slice(Math.max(0, i - 4), i))
  return `0x${groups.join('_')}`
}

/** A raw 64-bit word as 16 hex digits. */
export function hex64(v: bigint): string {
  return hex(v, 16)
}

/** `[hi:lo]` or `[bit]`. */
export function bitRange(hi: number, lo: number): string {
  return hi === lo ? `[${hi}]` : `[${hi}:${lo}]`
}

/**
 * Decode `words` with `layout`. Reserved fields that are zero are left out; every other
 * field is listed, in the layout's order.
 */
export function decode(layout: Layout, words: readonly bigint[]): DecodedField[] {
  const out: DecodedField[] = []
  for (const f of layout.fields) {
    const value = bits(words, f.hi, f.lo)
    if (f.reserved && value === 0n) continue
    out.push({
      name: f.name,
      hi: f.hi,
      lo: f.lo,
      value,
      meaning: f.meaning ? f.meaning(value, words) : f.hi === f.lo ? '' : hex(value),
      kernel: f.kernel,
      reserved: f.reserved ?? false,
    })
  }
  return out
}

/** Decode into a {@link Decoded}. */
export function decodeStruct(
  title: string,
  layout: Layout,
  words: readonly bigint[],
  address: number | null = null,
): Decoded {
  return { title, layout, address, words, fields: decode(layout, words) }
}

/** The value of the field called `name` (throws when the layout has none). */
export function fieldValue(d: Decoded | readonly DecodedField[], name: string): bigint {
  const fields = 'fields' in d ? d.fields : d
  const f = fields.find((x) => x.name === name)
  if (f === undefined) throw new Error(`no field ${name}`)
  return f.value
}

/** Check a layout: fields inside the structure and not overlapping. For tests. */
export function layoutProblems(layout: Layout): string[] {
  const out: string[] = []
  const owner = new Array<string | undefined>(layout.bits)
  for (const f of layout.fields) {
    if (f.lo < 0 || f.hi < f.lo || f.hi >= layout.bits) {
      out.push(`${f.name} ${bitRange(f.hi, f.lo)} outside ${layout.bits} bits`)
      continue
    }
    for (let b = f.lo; b <= f.hi; b++) {
      const o = owner[b]
      if (o !== undefined) out.push(`${f.name} overlaps ${o} at bit ${b}`)
      owner[b] = f.name
    }
  }
  return out
}

// ------------------------------------------------------------------ meaning helpers

/** `set` / `clear` style flag meaning. */
export function flag(on: string, off = ''): (v: bigint) => string {
  return (v) => (v !== 0n ? on : off)
}

/** An enumeration: value → text, with a fallback. */
export function oneOf(
  names: Readonly<Record<number, string>>,
  other = 'reserved',
): (v: bigint) => string {
  return (v) => names[Number(v)] ?? other
}

/** A page-frame field: shows the physical address it names (`value << shift`). */
export function address(shift: number): (v: bigint) => string {
  return (v) => `PA ${hex(v << BigInt(shift))}`
}

/** Short size for a power-of-two byte count: `4K`, `2M`, `1G`. */
export function sizeShort(lg2: number): string {
  const units = ['', 'K', 'M', 'G', 'T', 'P', 'E']
  const u = Math.min(Math.floor(lg2 / 10), units.length - 1)
  return `${2 ** (lg2 - 10 * u)}${units[u]}`
}

/** Human size for a power-of-two byte count. */
export function sizeName(lg2: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB']
  const u = Math.min(Math.floor(lg2 / 10), units.length - 1)
  return `${2 ** (lg2 - 10 * u)} ${units[u]}`
}

/**
 * Integer helpers for page-frame arithmetic (internal).
 *
 * Page numbers are `number`s counted in 4 KiB pages: an IOVA page number is below 2^52 and
 * a physical page number below 2^40, so both are exact doubles. Bit operators truncate them
 * to 32 bits, so they are used on page numbers only where just the low bits are wanted
 * (`pfn << 12` for bits 31:12 of an entry); these helpers split them with multiplications
 * by exact powers of two instead. Entry words are 32-bit halves of a
 * 64-bit PTE: `lo` holds bits 31:0, `hi` bits 63:32.
 *
 * @module
 */

/** log2 of the unit every page number in this package counts: 4 KiB. */
export const PAGE_SHIFT = 12

/** 2^k for k = 0..64, exact. */
const POW2: readonly number[] = Array.from({ length: 65 }, (_, k) => 2 ** k)
/** 2^-k for k = 0..64, exact (multiplying by it divides exactly). */
const INV_POW2: readonly number[] = Array.from({ length: 65 }, (_, k) => 2 ** -k)

/** 2^k as a number (exact for k ≤ 1023). */
export function pow2(k: number): number {
  return POW2[k] as number
}

/** floor(x / 2^k) for a non-negative integer x < 2^53. */
export function shr(x: number, k: number): number {
  return x <= 0x7fff_ffff && k < 32 ? x >>> k : Math.floor(x * (INV_POW2[k] as number))
}

/** x mod 2^k for a non-negative integer x < 2^53 and k ≤ 53. */
export function lowBits(x: number, k: number): number {
  if (k >= 32) return x % (POW2[k] as number)
  return k === 0 ? 0 : x <= 0x7fff_ffff ? x & ((1 << k) - 1) : x % (POW2[k] as number)
}

/** Index of the lowest set bit of a 32-bit value, 32 for 0. */
function ctz32(v: number): number {
  return v === 0 ? 32 : 31 - Math.clz32(v & -v)
}

/** Number of trailing zero bits of a non-negative integer x < 2^53; 64 for 0. */
export function ctz(x: number): number {
  if (x === 0) return 64
  const lo = x >>> 0 // x mod 2^32, exact below 2^53
  return lo !== 0 ? ctz32(lo) : 32 + ctz32(Math.floor(x / 0x1_0000_0000))
}

/** floor(log2(x)) for an integer 1 ≤ x < 2^53; -1 for 0. */
export function fls(x: number): number {
  if (x <= 0) return -1
  if (x < 0x1_0000_0000) return 31 - Math.clz32(x)
  return 63 - Math.clz32(Math.floor(x / 0x1_0000_0000))
}

/** Number of trailing one bits of a 32-bit value. */
export function cto32(v: number): number {
  return ctz32(~v)
}

/** A 64-bit value from its halves, for messages and the bigint API (not for hot paths). */
export function u64(lo: number, hi: number): bigint {
  return (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0)
}

/** The page number of a bigint address (address >> 12). */
export function toPfn(addr: bigint): number {
  return bigPfn(addr, Number(addr))
}

/** The address of page `pfn` as a bigint. */
export function fromPfn(pfn: number): bigint {
  return pfn < 2 ** 41 ? BigInt(pfn * 4096) : BigInt(pfn) << 12n
}

/**
 * `x >> 12` for a bigint `x` whose `Number(x)` the caller already has in `n`: the
 * kernel-shaped API converts each argument once and stays in doubles below 2^53.
 */
export function bigPfn(x: bigint, n: number): number {
  return n < 2 ** 53 ? Math.floor(n / 4096) : Number(x >> 12n)
}

/** `x & 0xfff`, with `n = Number(x)` as for {@link bigPfn}. */
export function bigOffset(x: bigint, n: number): number {
  return n < 2 ** 53 ? n % 4096 : Number(x & 0xfffn)
}

/** True when `a + b` does not fit in 64 bits, with `an`/`bn` their `Number()`s. */
export function bigAddOverflows(a: bigint, an: number, b: bigint, bn: number): boolean {
  return an < 2 ** 53 && bn < 2 ** 53 ? false : a + b > 0xffff_ffff_ffff_ffffn + 1n
}

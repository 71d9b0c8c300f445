/**
 * A small seeded PRNG (splitmix32) for the fuzzer: the same seed gives the same run on
 * every machine and Node version, which `Math.random` does not.
 *
 * @module
 */

/** A deterministic random source. */
export class Rng {
  #s: number

  constructor(seed: number) {
    this.#s = seed >>> 0
  }

  /** A uniform u32. */
  u32(): number {
    this.#s = (this.#s + 0x9e37_79b9) >>> 0
    let z = this.#s
    z = Math.imul(z ^ (z >>> 16), 0x85eb_ca6b)
    z = Math.imul(z ^ (z >>> 13), 0xc2b2_ae35)
    return (z ^ (z >>> 16)) >>> 0
  }

  /** An integer in `[0, n)` (`n` ≤ 2^32). */
  int(n: number): number {
    return Math.floor((this.u32() / 2 ** 32) * n)
  }

  /** True with probability `p`. */
  chance(p: number): boolean {
    return this.u32() / 2 ** 32 < p
  }

  /** One element of a non-empty array. */
  pick<T>(a: readonly T[]): T {
    return a[this.int(a.length)] as T
  }

  /** A uniform u64. */
  u64(): bigint {
    return (BigInt(this.u32()) << 32n) | BigInt(this.u32())
  }

  /** Pick by weight: `[[weight, value], ...]`. */
  weighted<T>(table: readonly (readonly [number, T])[]): T {
    let total = 0
    for (const [w] of table) total += w
    let r = this.int(total)
    for (const [w, v] of table) {
      if (r < w) return v
      r -= w
    }
    return (table[table.length - 1] as readonly [number, T])[1]
  }
}

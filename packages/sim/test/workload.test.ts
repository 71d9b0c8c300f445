/**
 * The workload's PRNG: scenarios are reproducible from a seed only while the stream stays
 * the same, whatever the implementation does to be fast.
 */
import { describe, expect, it } from 'vitest'
import { Rng } from '../src/workload.ts'

/** xoshiro128** one output at a time, seeded by splitmix32 as `Rng` is. */
function reference(seed: number): () => number {
  let s = seed >>> 0
  const next = (): number => {
    s = (s + 0x9e3779b9) >>> 0
    let z = s
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b)
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35)
    return (z ^ (z >>> 16)) >>> 0
  }
  const rotl = (x: number, k: number) => ((x << k) | (x >>> (32 - k))) >>> 0
  let a = next()
  let b = next()
  let c = next()
  let d = next() || 1
  return () => {
    const r = Math.imul(rotl(Math.imul(b, 5), 7), 9) >>> 0
    const t = b << 9
    c ^= a
    d ^= b
    b ^= c
    a ^= d
    c ^= t
    d = rotl(d, 11)
    return r
  }
}

describe('Rng', () => {
  it('gives the xoshiro128** stream across its batches, through u32, float and below', () => {
    for (const seed of [0, 1, 7, 0xdeadbeef]) {
      const rng = new Rng(seed)
      const ref = reference(seed)
      for (let i = 0; i < 1000; i++) {
        const k = i % 4
        if (k === 0) expect(rng.u32()).toBe(ref())
        else if (k === 1) expect(rng.float()).toBe(ref() / 4294967296)
        else if (k === 2) expect(rng.below(1000)).toBe(Math.floor((ref() / 4294967296) * 1000))
        else {
          const hi = ref()
          const lo = ref()
          const n = 2 ** 40
          expect(rng.below(n)).toBe(
            Math.min(Math.floor(((hi * 4294967296 + lo) / 2 ** 64) * n), n - 1),
          )
        }
      }
    }
  })
})

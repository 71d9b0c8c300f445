/**
 * The property test of the conformance kit: random sequences of map, unmap, split and merge
 * (fast-check) against a {@link ReferenceMap}, in the spirit of kunit's `test_random_map`.
 *
 * After every operation each mapping translates as the reference says, probes outside
 * them translate to nothing, and at the end everything unmaps and every table frame comes
 * back. Overlapping maps must fail with the format's errno under generic_pt (and what was
 * mapped before the failure is unmapped, as `iommu_map` does); io-pgtable-arm replaces
 * tables under a block whatever they map, so the generator does not overlap there.
 *
 * @module
 */

import { IommuError, IotlbGather, Prot } from '@iommu/core'
import type * as FastCheck from 'fast-check'
import type * as Vitest from 'vitest'
import type { AnyPageTableFormat } from '../format.ts'
import type { PageTable } from '../page-table.ts'
import type { PageTableOptions } from '../table.ts'
import { leafTotal, ReferenceMap, tableHarness } from './helpers.ts'

// Both are optional peers, loaded only when the property test runs.
let fc: typeof FastCheck | null = null
let vitest: typeof Vitest | null = null
try {
  fc = await import('fast-check')
} catch {
  fc = null
}
try {
  vitest = await import('vitest')
} catch {
  vitest = null
}

/** Effort of the property test. */
export interface PropertyOptions {
  /** Random sequences tried (default 40). */
  readonly runs?: number
  /** Longest sequence (default 16). */
  readonly commands?: number
  /**
   * fast-check seed. Default: {@link PROPERTY_SEED}, or the `IOMMU_PROPERTY_SEED`
   * environment variable when set (a number, or `random` for a fresh seed each run; a
   * failure prints the seed to replay).
   */
  readonly seed?: number
}

/** The property test's default seed: CI runs the same sequences every time. */
export const PROPERTY_SEED = 0x10_4d_a1

/** The seed to use: the option, else `IOMMU_PROPERTY_SEED`, else {@link PROPERTY_SEED}. */
export function propertySeed(option: number | undefined): number | undefined {
  if (option !== undefined) return option
  // Read without Node typings: this module also loads in browsers.
  const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process
    ?.env?.IOMMU_PROPERTY_SEED
  if (env === undefined || env === '') return PROPERTY_SEED
  if (env === 'random') return undefined
  const n = Number(env)
  if (!Number.isSafeInteger(n)) throw new RangeError(`IOMMU_PROPERTY_SEED: not an integer: ${env}`)
  return n
}

/** One generated operation; numbers are chosen by fast-check and interpreted below. */
type Op =
  | {
      readonly kind: 'map'
      readonly size: number
      readonly slot: number
      readonly count: number
      readonly pa: number
      readonly skewed: boolean
      readonly prot: number
    }
  | { readonly kind: 'unmap'; readonly which: number }
  | { readonly kind: 'split'; readonly which: number; readonly at: number }
  | { readonly kind: 'merge'; readonly which: number; readonly size: number }

const PROTS = [Prot.READ | Prot.WRITE, Prot.READ, Prot.WRITE, Prot.READ | Prot.WRITE | Prot.CACHE]

/**
 * propertyCase() - run the property test once for a configuration (inside a vitest test).
 */
export function propertyCase(
  format: AnyPageTableFormat,
  cfg: unknown,
  tableOptions: PageTableOptions,
  options: PropertyOptions,
): void {
  if (fc === null || vitest === null)
    throw new Error('the property test needs fast-check and vitest')
  const f = fc
  const { expect } = vitest
  const op: FastCheck.Arbitrary<Op> = f.oneof(
    {
      weight: 4,
      arbitrary: f.record({
        kind: f.constant('map' as const),
        size: f.nat(),
        slot: f.nat(),
        count: f.integer({ min: 1, max: 3 }),
        pa: f.nat(),
        skewed: f.boolean(),
        prot: f.constantFrom(...PROTS),
      }),
    },
    { weight: 2, arbitrary: f.record({ kind: f.constant('unmap' as const), which: f.nat() }) },
    {
      weight: 2,
      arbitrary: f.record({ kind: f.constant('split' as const), which: f.nat(), at: f.nat() }),
    },
    {
      weight: 2,
      arbitrary: f.record({ kind: f.constant('merge' as const), which: f.nat(), size: f.nat() }),
    },
  )
  const params: FastCheck.Parameters<[Op[]]> = { numRuns: options.runs ?? 40 }
  const seed = propertySeed(options.seed)
  if (seed !== undefined) params.seed = seed
  f.assert(
    f.property(f.array(op, { minLength: 1, maxLength: options.commands ?? 16 }), (ops) => {
      const h = tableHarness(format, cfg, tableOptions)
      const pt = h.table as PageTable
      try {
        runOps(pt, ops, expect)
        expect(h.finish()).toBe(0)
      } catch (e) {
        h.table.free()
        throw e
      }
    }),
    params,
  )
}

function refuses(pt: PageTable, prot: number): boolean {
  try {
    pt.format.setProt(prot, pt.params)
    return false
  } catch {
    return true
  }
}

function runOps(pt: PageTable, ops: readonly Op[], expect: typeof Vitest.expect): void {
  const ref = new ReferenceMap()
  const arm = pt.format.algorithm === 'io-pgtable-arm'
  const conflict = arm ? 'EEXIST' : 'EADDRINUSE'
  // Sizes up to 1 GiB, in pages; a window of four of the largest.
  const sizes: number[] = []
  for (let s = 12; s <= 30; s++) if ((pt.pgsizeBitmap >> BigInt(s)) & 1n) sizes.push(2 ** (s - 12))
  const g = pt.geometry
  const largest = sizes[sizes.length - 1] as number
  const base = Number(g.apertureStart >> 12n)
  const window = Math.min(4 * largest, Number((g.apertureEnd - g.apertureStart + 1n) >> 12n))
  const oaPages = 2 ** (pt.params.oaBits - 12)
  const smallest = sizes[0] as number
  const gather = new IotlbGather()
  // Blocks split so far (IOVA page, pages), for merge to try back.
  const splits: [number, number][] = []
  const check = () => {
    for (const m of ref.mappings) {
      for (const k of [0, m.pages >>> 1, m.pages - 1]) {
        expect(pt.translate(m.start + k), `page ${m.start + k}`).toBe(m.pa + k)
      }
    }
    for (let k = 0; k < 8; k++) {
      const probe = base + Math.floor(((k + 0.5) * window) / 8)
      expect(pt.translate(probe)).toBe(ref.translate(probe))
    }
  }
  for (const o of ops) {
    const pick = <T>(xs: readonly T[], n: number): T | undefined => xs[n % Math.max(xs.length, 1)]
    if (o.kind === 'map') {
      const size = pick(sizes, o.size) as number
      // A PA skewed by the smallest page forces small leaves; only for short lengths.
      const skewed = o.skewed && size <= (sizes[1] ?? size)
      const slots = Math.max(1, Math.floor(window / size) - o.count)
      const start = base + (o.slot % slots) * size
      const pages = o.count * size
      let pa = (o.pa % Math.max(1, Math.floor(oaPages / size) - 4)) * size
      if (skewed) pa += smallest
      const overlap = ref.overlaps(start, pages)
      if (overlap && arm) continue
      if (refuses(pt, o.prot)) {
        // The format refuses the prot (VT-d FORCE_WRITEABLE): EINVAL, nothing mapped.
        expect(() => pt.map(start, pa, pages, o.prot)).toThrow(/^EINVAL/)
        continue
      }
      try {
        expect(pt.map(start, pa, pages, o.prot)).toBe(pages)
        expect(overlap, 'a map over a mapping succeeded').toBe(false)
        ref.add({ start, pages, pa, prot: o.prot })
      } catch (e) {
        if (!(e instanceof IommuError)) throw e
        expect(overlap, `unexpected ${e.code}`).toBe(true)
        expect(e.code).toBe(conflict)
        // iommu_map unmaps what the failing call mapped.
        const done = Number((e.progress ?? 0n) >> 12n)
        if (done > 0) expect(pt.unmap(start, done, gather)).toBe(done)
      }
    } else if (o.kind === 'unmap') {
      const m = pick(ref.mappings, o.which)
      if (m === undefined) continue
      expect(pt.unmap(m.start, m.pages, gather)).toBe(m.pages)
      ref.remove(m.start)
    } else if (o.kind === 'split') {
      const m = pick(ref.mappings, o.which)
      if (m === undefined) continue
      const g2 = new IotlbGather()
      const n = pt.splitAt(m.start + (o.at % m.pages), g2)
      expect(n).toBeGreaterThanOrEqual(0)
      if (n > 0) {
        expect(g2.empty).toBe(false)
        splits.push([Number(g2.start >> 12n), n])
      }
    } else {
      // Mostly a block split earlier (taken off the list), sometimes any aligned block.
      const split =
        splits.length > 0 && o.size % 4 !== 3
          ? splits.splice(o.which % splits.length, 1)[0]
          : undefined
      const m = split === undefined ? pick(ref.mappings, o.which) : ref.find(split[0])
      if (m === undefined) continue
      // Only blocks inside one mapping: merging across mappings would join IOPTEs of
      // different iommu_map calls.
      const size = split === undefined ? (pick(sizes, o.size) as number) : split[1]
      const lg2 = Math.log2(size) + 12
      const blockStart = split === undefined ? Math.ceil(m.start / size) * size : split[0]
      if (size === smallest || blockStart < m.start || blockStart + size > m.start + m.pages)
        continue
      const g2 = new IotlbGather()
      try {
        const n = pt.mergeAt(blockStart, lg2, g2)
        expect([0, size]).toContain(n)
      } catch (e) {
        // A contiguous size (AMD) is not a table's block size.
        if (!(e instanceof IommuError) || e.code !== 'EINVAL') throw e
      }
      g2.releaseFreelist()
    }
    check()
  }
  for (const m of [...ref.mappings]) {
    expect(pt.unmap(m.start, m.pages, gather)).toBe(m.pages)
    ref.remove(m.start)
  }
  gather.releaseFreelist()
  expect(leafTotal(pt)).toBe(0)
}

/**
 * The benchmark harness every package's `bench/` uses (not published).
 *
 * A benchmark module exports `run(): Promise<Figure[]> | Figure[]` and calls
 * `main(import.meta.url, title, run)` so that it prints its own table when executed
 * directly (`pnpm bench` in the package) while the workspace summary (`packages/sim`)
 * can import `run` and put every package's figures in one table.
 *
 * Benchmarks print figures and ratios; they never assert timings.
 */

import { performance } from 'node:perf_hooks'
import { pathToFileURL } from 'node:url'

/** One measured figure, with the anchor it is compared to when there is one. */
export interface Figure {
  /** What was measured, e.g. `'amdv1 mapPages 256×4K'`. */
  readonly name: string
  /** The measurement. */
  readonly value: number
  /** Its unit: `'ns/call'`, `'M PTE/s'`, `'GB/s'`, `'B/page'`, `'s'`, `'MiB'`. */
  readonly unit: string
  /** The anchor value in the same unit, e.g. the kernel's or a target. */
  readonly anchor?: number
  /** Where the anchor comes from, e.g. `'generic_pt i7-12700'`, `'target'`. */
  readonly anchorNote?: string
  /** `'lower'` when smaller is better (times, bytes), `'higher'` for rates. */
  readonly better?: 'lower' | 'higher'
}

/**
 * Time `fn` (which performs `opsPerCall` operations) and return nanoseconds per
 * operation: the median of `samples` samples after `warmup` calls, each sample running
 * `fn` enough times to last about `minSampleMs`.
 */
export function nsPerOp(
  fn: () => void,
  opts: { opsPerCall?: number; samples?: number; warmup?: number; minSampleMs?: number } = {},
): number {
  const ops = opts.opsPerCall ?? 1
  const samples = opts.samples ?? 7
  const minMs = opts.minSampleMs ?? 20
  for (let i = 0; i < (opts.warmup ?? 3); i++) fn()
  let reps = 1
  for (;;) {
    const t0 = performance.now()
    for (let i = 0; i < reps; i++) fn()
    if (performance.now() - t0 >= minMs || reps >= 1 << 24) break
    reps *= 2
  }
  const results: number[] = []
  for (let s = 0; s < samples; s++) {
    const t0 = performance.now()
    for (let i = 0; i < reps; i++) fn()
    results.push(((performance.now() - t0) * 1e6) / (reps * ops))
  }
  results.sort((a, b) => a - b)
  return results[Math.floor(results.length / 2)] as number
}

/** Wall time of one call of `fn` in milliseconds. */
export function msOnce(fn: () => void): number {
  const t0 = performance.now()
  fn()
  return performance.now() - t0
}

function fmt(v: number): string {
  if (!Number.isFinite(v)) return String(v)
  const a = Math.abs(v)
  if (a >= 100) return v.toFixed(0)
  if (a >= 10) return v.toFixed(1)
  if (a >= 1) return v.toFixed(2)
  return v.toPrecision(3)
}

/** Ratio of `f.value` to its anchor, oriented so that > 1 means better than the anchor. */
export function ratio(f: Figure): number | undefined {
  if (f.anchor === undefined || f.anchor === 0 || f.value === 0) return undefined
  return f.better === 'higher' ? f.value / f.anchor : f.anchor / f.value
}

/** Render figures as an aligned text table. */
export function formatFigures(title: string, figures: readonly Figure[]): string {
  const rows = figures.map((f) => {
    const r = ratio(f)
    return [
      f.name,
      `${fmt(f.value)} ${f.unit}`,
      f.anchor === undefined ? '' : `${fmt(f.anchor)} ${f.unit}`,
      f.anchorNote ?? '',
      r === undefined ? '' : `${fmt(r)}×`,
    ]
  })
  const head = ['benchmark', 'ours', 'anchor', 'anchor source', 'vs anchor']
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] as string).length)))
  const line = (r: string[]) =>
    r
      .map((c, i) => c.padEnd(w[i] as number))
      .join('  ')
      .trimEnd()
  return [`\n${title}`, line(head), line(w.map((n) => '-'.repeat(n))), ...rows.map(line)].join('\n')
}

/** When the calling module is the entry point, run it and print its table. */
export async function main(
  moduleUrl: string,
  title: string,
  run: () => Promise<Figure[]> | Figure[],
): Promise<void> {
  const entry = process.argv[1]
  if (entry === undefined || pathToFileURL(entry).href !== moduleUrl) return
  const figures = await run()
  console.log(formatFigures(title, figures))
  console.log('\n("vs anchor" > 1× means better than the anchor; benchmarks never fail the build)')
}

/**
 * `pnpm bench`: every package's benchmarks in one summary table, with the anchors from
 * `peers-and-performance.md` beside our figures, plus the whole-stack figures: pin + map of
 * 64 GiB through IOAS_MAP / HWPT_ALLOC beside the bare page-table map of the same pages,
 * GET_DIRTY_BITMAP over that IOAS (4 KiB IOPTEs, 1% dirty) on the AMD model beside the bare
 * page-table dirty scan, and a 64 GiB migration's wall time, CPU time, peak memory and
 * bookkeeping per guest page (in a child process, so that its memory is its own).
 *
 * Options (`pnpm bench -- OPTIONS`):
 * - `--baseline REF`: check REF (e.g. `main`) out into a temporary git worktree, install
 *   it from the pnpm store, and run the same 64 GiB migration there and here, alternately
 *   (`--runs N` times each, default 1): both sets of figures and their ratio;
 * - `--no-c`: skip the C baseline of the dirty scan (also `IOMMU_BENCH_NO_C=1`);
 * - `--only sim`: only the whole-stack figures.
 *
 * Wall-clock figures move with the machine's load: the load average is printed with them,
 * and CPU time beside wall time. `pnpm bench:scale` (scale.ts) has the cost-versus-size
 * table up to 1 TiB.
 */

import { type Figure, main } from '../../../tooling/bench/harness.ts'
import { run as coreBench } from '../../core/bench/machine.bench.ts'
import { run as amdBench } from '../../driver-amd/bench/amd.bench.ts'
import { run as intelBench } from '../../driver-intel/bench/intel.bench.ts'
import { run as smmuv3Bench } from '../../driver-smmuv3/bench/smmuv3.bench.ts'
import { run as pgtableBench } from '../../io-pgtable/bench/io-pgtable.bench.ts'
import { run as iommufdBench } from '../../iommufd/bench/iommufd.bench.ts'
import { baselineTree, type ChildMigration, loadAverage, migrateChild } from './child.ts'
import { GIB, measureStack, PAGE } from './stack.ts'

function prefix(pkg: string, figures: Figure[]): Figure[] {
  return figures.map((f) => ({ ...f, name: `${pkg} · ${f.name}` }))
}

/**
 * 64 GiB through the uAPI on the AMD model: pin + map against the bare page-table map of
 * the same pages, and GET_DIRTY_BITMAP (1% dirty) against the bare page-table scan.
 */
export function dirtyBitmap64G(): Figure[] {
  const s = measureStack(64)
  const uapiMs = s.mapMs + s.fillMs
  const load = loadAverage()
  return [
    {
      name: `IOAS_MAP + HWPT_ALLOC 64 GiB, 4 KiB IOPTEs (pin + map 16 Mi pages; load ${load})`,
      value: uapiMs / 1000,
      unit: 's',
      better: 'lower',
    },
    {
      name: 'pin + map rate through IOAS_MAP + HWPT_ALLOC',
      value: s.pages / uapiMs / 1000,
      unit: 'M pages/s',
      better: 'higher',
    },
    {
      name: 'bare AMD v1 page-table map of the same pages, same run',
      value: s.pages / s.bareMapMs / 1000,
      unit: 'M pages/s',
      better: 'higher',
    },
    {
      name: 'uAPI pin + map rate / bare page-table map rate (wall)',
      value: s.bareMapMs / uapiMs,
      unit: '×',
      anchor: 0.25,
      anchorNote: 'target ≥ 25 %',
      better: 'higher',
    },
    {
      name: 'uAPI pin + map rate / bare page-table map rate (CPU time)',
      value: s.bareMapCpuMs / s.uapiCpuMs,
      unit: '×',
      anchor: 0.25,
      anchorNote: 'target ≥ 25 %',
      better: 'higher',
    },
    {
      name: 'GET_DIRTY_BITMAP 64 GiB 4K 1% dirty, read-and-clear',
      value: s.uapiClearMs,
      unit: 'ms',
      better: 'lower',
    },
    {
      name: 'bare AMD v1 dirty scan 64 GiB, read-and-clear',
      value: s.bareClearMs,
      unit: 'ms',
      better: 'lower',
    },
    {
      name: 'GET_DIRTY_BITMAP / bare scan (read-and-clear)',
      value: s.uapiClearMs / s.bareClearMs,
      unit: '×',
      anchor: 1.5,
      anchorNote: 'target ≤ 1.5×',
      better: 'lower',
    },
    {
      name: 'GET_DIRTY_BITMAP 64 GiB 4K 1% dirty, NO_CLEAR',
      value: s.uapiNoClearMs,
      unit: 'ms',
      better: 'lower',
    },
    {
      name: 'GET_DIRTY_BITMAP / bare scan (NO_CLEAR)',
      value: s.uapiNoClearMs / s.bareNoClearMs,
      unit: '×',
      anchor: 1.5,
      anchorNote: 'target ≤ 1.5×',
      better: 'lower',
    },
    {
      name: 'GET_DIRTY_BITMAP IOPTE rate, read-and-clear',
      value: s.pages / (s.uapiClearMs * 1e3),
      unit: 'M PTE/s',
      anchor: 1024 / 3,
      anchorNote: 'JS read-and-clear microbench (peers §5: 1 Mi PTEs in 3.0 ms)',
      better: 'higher',
    },
  ]
}

/** Figures of one child migration of `gib` GiB (`label` names the tree). */
export function migrationFigures(gib: number, r: ChildMigration, label = ''): Figure[] {
  const pages = (gib * GIB) / PAGE
  const rep = r.report
  const ok = rep.mismatchedPages === 0 && (rep.lostPages ?? 0) === 0
  const out: Figure[] = [
    {
      name: `${gib} GiB migration wall time${label} (${ok ? 'verified' : 'NOT verified'}, ${rep.rounds.length - 1} rounds; load ${r.load} at start)`,
      value: r.wallSeconds,
      unit: 's',
      anchor: 60,
      anchorNote: 'target < 1 minute',
      better: 'lower',
    },
    {
      name: `${gib} GiB migration CPU time${label}`,
      value: r.cpuSeconds,
      unit: 's',
      better: 'lower',
    },
    {
      name: `${gib} GiB migration peak RSS${label}`,
      value: r.maxRssBytes / GIB,
      unit: 'GiB',
      anchor: 2,
      anchorNote: 'target < 2 GiB',
      better: 'lower',
    },
  ]
  const mem = rep.memory as { bookkeepingBytes: number; dataBytes: number } | undefined
  if (mem !== undefined) {
    out.push(
      {
        name: `${gib} GiB migration bookkeeping per guest page${label} (all but guest data)`,
        value: mem.bookkeepingBytes / pages,
        unit: 'B/page',
        anchor: 32,
        anchorNote: 'target ≤ 32 B per 4 KiB page',
        better: 'lower',
      },
      {
        name: `${gib} GiB migration guest data stored${label}`,
        value: mem.dataBytes / GIB,
        unit: 'GiB',
        better: 'lower',
      },
    )
  }
  return out
}

/** A 64 GiB migration in a child process. */
export function migration64G(): Figure[] {
  return migrationFigures(64, migrateChild(['--memory', '64G']))
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)] as number
}

/**
 * The 64 GiB migration of `ref` (a temporary worktree) and of this tree, alternately,
 * `runs` times each: the median runs and the ratios of the medians.
 */
export function baseline64G(ref: string, runs: number): Figure[] {
  const tree = baselineTree(ref)
  const tag = `${ref} ${tree.sha.slice(0, 10)}`
  try {
    const base: ChildMigration[] = []
    const ours: ChildMigration[] = []
    for (let i = 0; i < runs; i++) {
      process.stderr.write(`bench: 64 GiB migration in ${tag}, run ${i + 1} of ${runs}...\n`)
      base.push(migrateChild(['--memory', '64G'], tree.root))
      process.stderr.write(`bench: 64 GiB migration in this tree, run ${i + 1} of ${runs}...\n`)
      ours.push(migrateChild(['--memory', '64G']))
    }
    const mid = (xs: ChildMigration[]) =>
      [...xs].sort((a, b) => a.wallSeconds - b.wallSeconds)[
        Math.floor(xs.length / 2)
      ] as ChildMigration
    const wall = (xs: ChildMigration[]) => median(xs.map((x) => x.wallSeconds))
    const cpu = (xs: ChildMigration[]) => median(xs.map((x) => x.cpuSeconds))
    return [
      ...migrationFigures(64, mid(base), ` [${tag}]`),
      ...migrationFigures(64, mid(ours), ' [this tree]'),
      {
        name: `64 GiB migration wall: this tree / ${ref} (medians of ${runs}, alternated)`,
        value: wall(ours) / wall(base),
        unit: '×',
        anchor: 0.5,
        anchorNote: 'target ≤ 0.5×',
        better: 'lower',
      },
      {
        name: `64 GiB migration CPU time: this tree / ${ref}`,
        value: cpu(ours) / cpu(base),
        unit: '×',
        better: 'lower',
      },
    ]
  } finally {
    tree.remove()
  }
}

/** `--name value` from the command line. */
function option(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? process.argv[i + 1] : undefined
}

export async function run(): Promise<Figure[]> {
  const figures: Figure[] = []
  const step = async (pkg: string, f: () => Figure[] | Promise<Figure[]>) => {
    process.stderr.write(`bench: ${pkg}...\n`)
    figures.push(...prefix(pkg, await f()))
  }
  const c = !process.argv.includes('--no-c')
  if (option('only') === undefined) {
    await step('core', coreBench)
    await step('io-pgtable', () => pgtableBench({ c }))
    await step('driver-amd', amdBench)
    await step('driver-intel', intelBench)
    await step('driver-smmuv3', smmuv3Bench)
    await step('iommufd', iommufdBench)
  }
  await step('sim', dirtyBitmap64G)
  const ref = option('baseline')
  if (ref !== undefined) {
    const runs = Math.max(1, Math.floor(Number(option('runs') ?? 1)) || 1)
    await step('sim', () => baseline64G(ref, runs))
  } else {
    await step('sim', migration64G)
  }
  return figures
}

await main(import.meta.url, 'IOMMU model: benchmark summary', run)

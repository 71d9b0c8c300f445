/**
 * Benchmark helpers that run things in child processes: a migration through the CLI of
 * this tree or of another checkout (its wall time, CPU time and peak RSS measured from
 * outside), and a temporary git worktree of a baseline ref.
 *
 * @module
 */

import { execFileSync, spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
/** The root of this checkout. */
export const REPO_ROOT = join(here, '../../..')

/** What one child migration took, and its report. */
export interface ChildMigration {
  /** The 1-minute load average when it started. */
  readonly load: number
  readonly wallSeconds: number
  readonly cpuSeconds: number
  readonly maxRssBytes: number
  // biome-ignore lint/suspicious/noExplicitAny: the report of whichever tree ran it
  readonly report: any
}

/**
 * Run `iommu-sim migrate ARGS --json FILE` in the checkout at `root` (this one by default),
 * in a process of its own, and measure it.
 *
 * @throws Error - the migration failed to run or its verification failed
 */
export function migrateChild(args: readonly string[], root = REPO_ROOT): ChildMigration {
  const dir = mkdtempSync(join(tmpdir(), 'iommu-sim-bench-'))
  const json = join(dir, 'report.json')
  const usage = join(dir, 'usage.json')
  try {
    const load = loadAverage()
    const t0 = performance.now()
    const r = spawnSync(
      process.execPath,
      [
        '--import',
        join(here, 'usage.mjs'),
        '--conditions=@iommu/source',
        '--import',
        'tsx',
        join(root, 'packages/sim/src/main.ts'),
        'migrate',
        ...args,
        '--json',
        json,
        '--no-progress',
      ],
      {
        cwd: root,
        env: { ...process.env, IOMMU_BENCH_USAGE: usage },
        stdio: ['ignore', 'ignore', 'inherit'],
      },
    )
    const wallSeconds = (performance.now() - t0) / 1000
    if (r.status !== 0) throw new Error(`migrate ${args.join(' ')} in ${root}: exit ${r.status}`)
    const u = JSON.parse(readFileSync(usage, 'utf8'))
    return {
      load,
      wallSeconds,
      cpuSeconds: (u.user + u.system) / 1e6,
      maxRssBytes: u.maxRSS * 1024,
      report: JSON.parse(readFileSync(json, 'utf8')),
    }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

/**
 * Check `ref` out into a temporary git worktree and install its dependencies from the
 * pnpm store (`pnpm install --frozen-lockfile --prefer-offline`).
 *
 * @returns its root and a function that removes it again
 */
export function baselineTree(ref: string): { root: string; sha: string; remove(): void } {
  const root = mkdtempSync(join(tmpdir(), 'iommu-baseline-'))
  const git = (args: string[], cwd = REPO_ROOT) =>
    execFileSync('git', args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim()
  const sha = git(['rev-parse', '--verify', `${ref}^{commit}`])
  git(['worktree', 'add', '--detach', root, sha])
  const remove = () => {
    try {
      git(['worktree', 'remove', '--force', root])
    } catch {
      rmSync(root, { recursive: true, force: true })
      git(['worktree', 'prune'])
    }
  }
  try {
    execFileSync('pnpm', ['install', '--frozen-lockfile', '--prefer-offline'], {
      cwd: root,
      stdio: ['ignore', 'ignore', 'inherit'],
    })
  } catch (e) {
    remove()
    throw e
  }
  return { root, sha, remove }
}

/** The machine's load average now (1 minute), for the record beside timings. */
export function loadAverage(): number {
  try {
    return Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0])
  } catch {
    return Number.NaN
  }
}

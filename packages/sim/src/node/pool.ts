/**
 * A `worker_threads` pool that runs migrations in parallel, one per worker at a time, for
 * `iommu-sim sweep`. Node only.
 *
 * @module
 */

import { availableParallelism } from 'node:os'
import { extname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'
import type { MigrateOptions } from '../migrate.ts'
import type { MigrationReport } from '../report.ts'

/** A run for the pool: options without callbacks (they cross a thread). */
export type PoolOptions = Omit<MigrateOptions, 'onProgress'>

/** What the pool tells its caller while it runs. */
export type PoolEvent =
  | {
      readonly type: 'progress'
      readonly index: number
      readonly round: number
      readonly fraction: number
    }
  | { readonly type: 'done'; readonly index: number; readonly report: MigrationReport }

/** Messages from a worker: the events, or a run that failed. */
export type WorkerMessage =
  | PoolEvent
  | { readonly type: 'error'; readonly index: number; readonly message: string }

/**
 * A worker running `script`. From sources (`.ts`, the workspace's `pnpm sim`), Node 20 does
 * not run the main thread's `--import tsx` in workers: the worker registers tsx's loader
 * itself before importing the script.
 */
function newWorker(script: URL): Worker {
  if (!script.pathname.endsWith('.ts')) return new Worker(script)
  const api = import.meta.resolve('tsx/esm/api')
  return new Worker(
    `import(${JSON.stringify(api)}).then((m) => { m.register(); return import(${JSON.stringify(script.href)}) })`,
    { eval: true },
  )
}

/** The pool size for this machine: `os.availableParallelism()`. */
export function defaultWorkers(): number {
  return availableParallelism()
}

/**
 * Run every job on `workers` threads (each job in one worker, a worker one job at a time)
 * and return the reports in job order. Jobs are handed out in `order` (default: as given);
 * longest first keeps the workers busy to the end.
 *
 * @throws Error - a run failed (its message, with the job's index)
 */
export async function runPool(
  jobs: readonly PoolOptions[],
  workers: number,
  onEvent: (e: PoolEvent) => void = () => {},
  order: readonly number[] = jobs.map((_, i) => i),
): Promise<MigrationReport[]> {
  const here = fileURLToPath(import.meta.url)
  // Sources in the workspace (.ts, run through tsx) or the published build (.js).
  const script = new URL(`./sweep-worker${extname(here)}`, import.meta.url)
  const reports: (MigrationReport | undefined)[] = new Array(jobs.length)
  let next = 0
  const n = Math.max(1, Math.min(workers, jobs.length))
  const threads: Worker[] = []
  try {
    await new Promise<void>((resolve, reject) => {
      let running = 0
      let failed = false
      const feed = (w: Worker) => {
        if (failed) return
        if (next >= jobs.length) {
          if (running === 0) resolve()
          return
        }
        const index = order[next++] as number
        running++
        w.postMessage({ index, options: jobs[index] })
      }
      for (let i = 0; i < n; i++) {
        const w = newWorker(script)
        threads.push(w)
        w.on('message', (m: WorkerMessage) => {
          if (m.type === 'progress') {
            onEvent(m)
            return
          }
          running--
          if (m.type === 'error') {
            failed = true
            reject(new Error(`run ${m.index + 1}: ${m.message}`))
            return
          }
          reports[m.index] = m.report
          onEvent(m)
          feed(w)
          if (next >= jobs.length && running === 0) resolve()
        })
        w.on('error', (e) => {
          failed = true
          reject(e)
        })
        feed(w)
      }
    })
  } finally {
    await Promise.all(threads.map((t) => t.terminate()))
  }
  return reports as MigrationReport[]
}

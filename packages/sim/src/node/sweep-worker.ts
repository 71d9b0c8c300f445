/**
 * A pool thread of `iommu-sim sweep`: runs the migrations it is sent, one at a time, and
 * posts their progress and reports back. Node only.
 *
 * @module
 */

import { parentPort } from 'node:worker_threads'
import { IommuError } from '@iommu/core'
import { migrate } from '../migrate.ts'
import type { PoolOptions, WorkerMessage } from './pool.ts'

const port = parentPort
if (port === null) throw new Error('sweep-worker runs in a worker thread')

port.on('message', (job: { index: number; options: PoolOptions }) => {
  const post = (m: WorkerMessage) => port.postMessage(m)
  let last = 0
  try {
    const report = migrate({
      ...job.options,
      onProgress: (p) => {
        // A few progress messages per round are enough for the bar.
        const now = performance.now()
        if (now - last < 100 && p.fraction < 1) return
        last = now
        post({ type: 'progress', index: job.index, round: p.round, fraction: p.fraction })
      },
    })
    post({ type: 'done', index: job.index, report })
  } catch (e) {
    const message =
      e instanceof IommuError ? `${e.code}: ${e.message}` : String((e as Error).message ?? e)
    post({ type: 'error', index: job.index, message })
  }
})

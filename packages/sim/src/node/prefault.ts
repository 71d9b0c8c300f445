/**
 * A `StorageSource` whose buffers a worker thread has faulted in ahead: the host's page
 * fault of each fresh 4 KiB page (2–3 µs in a VM) then happens on another core instead
 * of inside the first DMA write of a guest page. Node only.
 *
 * The worker allocates each buffer, writes one zero per 4 KiB page (a write, so the host
 * backs the page; a read would only map the shared zero page), and transfers it: the
 * buffer moves to the main thread without a copy, and only one thread ever touches it at
 * a time. The main thread picks buffers up synchronously (`receiveMessageOnPort`) when
 * memory grows; when none is ready it allocates its own, as without a source. The
 * buffers are zero-filled either way, so runs give the same results with or without it.
 *
 * @module
 */

import { MessageChannel, type MessagePort, receiveMessageOnPort, Worker } from 'node:worker_threads'
import type { StorageSource } from '@iommu/core'

/** A {@link StorageSource} backed by a worker; `close()` ends the worker. */
export interface PrefaultedStorage extends StorageSource {
  /** Buffers handed out ready, and asked for when none was ready. */
  readonly stats: { readonly ready: number; readonly missed: number }
  /** Stop the worker (the buffers already handed out stay valid). */
  close(): void
}

// The worker: CommonJS given as text, so it runs the same from sources and from dist.
const WORKER = `
const { workerData } = require('node:worker_threads')
const { port, bytes } = workerData
port.on('message', (n) => {
  for (let k = 0; k < n; k++) {
    const b = new ArrayBuffer(bytes)
    const a = new Uint8Array(b)
    for (let i = 0; i < bytes; i += 4096) a[i] = 0
    port.postMessage(b, [b])
  }
})
`

/**
 * Buffers of `bytes` bytes, `ahead` of them kept ready. The worker starts on the first
 * `take` (a run that never needs bulk storage never starts it), and never keeps the
 * process alive.
 */
export function prefaultedStorage(ahead = 2): PrefaultedStorage {
  let port: MessagePort | null = null
  let worker: Worker | null = null
  let size = 0
  let closed = false
  const stats = { ready: 0, missed: 0 }
  const start = (bytes: number): MessagePort => {
    const ch = new MessageChannel()
    worker = new Worker(WORKER, {
      eval: true,
      workerData: { port: ch.port2, bytes },
      transferList: [ch.port2],
    })
    // A worker that fails (the host out of memory) only stops serving: memory allocates.
    worker.on('error', () => {
      closed = true
    })
    worker.unref()
    ch.port1.unref()
    size = bytes
    ch.port1.postMessage(ahead)
    return ch.port1
  }
  return {
    stats,
    otherThread: true,
    take(bytes: number): ArrayBuffer | null {
      if (closed) return null
      if (port === null) {
        port = start(bytes)
        stats.missed++
        return null
      }
      if (bytes !== size) return null
      const got = receiveMessageOnPort(port)
      if (got === undefined || !(got.message instanceof ArrayBuffer)) {
        stats.missed++
        return null
      }
      // One taken, one more asked for: `ahead` stay in flight.
      port.postMessage(1)
      stats.ready++
      return got.message
    },
    close(): void {
      closed = true
      void worker?.terminate()
      worker = null
    },
  }
}

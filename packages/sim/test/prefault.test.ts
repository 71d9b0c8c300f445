/**
 * RAM storage faulted in ahead by a worker thread (`node/prefault.ts`): the buffers it
 * hands out, and runs that give the same results with a storage source as without.
 */
import type { StorageSource } from '@iommu/core'
import { describe, expect, it } from 'vitest'
import { defaultOptions, type MigrationReport, migrate, verified } from '../src/index.ts'
import { prefaultedStorage } from '../src/node/prefault.ts'

const MIB = 2 ** 20

/** A report without what the host decides (times, memory, speed): the simulation's results. */
function results(r: MigrationReport): unknown {
  return JSON.parse(JSON.stringify(r), (k, v) =>
    /wall|Ms$|Seconds$|rss|speedup|^memory$/i.test(k) && k !== 'simSeconds' ? undefined : v,
  )
}

describe('prefaulted storage', () => {
  it('hands out zero-filled buffers of the size asked for once its worker has one ready', async () => {
    const s = prefaultedStorage(1)
    try {
      // The first request starts the worker and is not served.
      expect(s.take(16 * MIB)).toBeNull()
      let b: ArrayBuffer | null = null
      while (b === null) {
        await new Promise((r) => setTimeout(r, 5))
        b = s.take(16 * MIB)
      }
      expect(b).toBeInstanceOf(ArrayBuffer)
      expect(b.byteLength).toBe(16 * MIB)
      expect(new Uint32Array(b).every((x) => x === 0)).toBe(true)
      expect(s.stats.ready).toBe(1)
      // Another size is never served; a closed source serves nothing.
      expect(s.take(MIB)).toBeNull()
      s.close()
      expect(s.take(16 * MIB)).toBeNull()
      expect(s.otherThread).toBe(true)
    } finally {
      s.close()
    }
  })

  it('a migration gives the same results with storage from a source, which it uses', () => {
    const o = defaultOptions({ memoryBytes: 512 * MIB, dimmBytes: 128 * MIB })
    let given = 0
    const source: StorageSource = {
      take(bytes) {
        given += bytes
        return new ArrayBuffer(bytes)
      },
    }
    const plain = migrate(o)
    const sourced = migrate({ ...o, storage: source })
    expect(given).toBeGreaterThan(0)
    expect(results(sourced)).toEqual(results(plain))
    expect(verified(plain)).toBe(true)
  })
})

/**
 * `IovaBitmap.setList` (the batch of one table frame's records, through
 * `IommuDirtyBitmap.recordList`) against the same records made one by one with `record` /
 * `recordLeaf`: on random bitmaps (page sizes, unaligned `data`, bitmap pages that cannot
 * be pinned, both record modes) and random frames of records (inside, across and outside
 * the bitmap), the bitmap bytes, the hazard log, the drops, the record count, the gather
 * and where a livelock stops are the same.
 */
import { IommuError } from '@iommu/core'
import { describe, expect, it } from 'vitest'
import { Rng } from '../src/testing/index.ts'
import { type BitmapRigOptions, PAGE, bitmapRig as rig } from './bitmap-rig.ts'

/** A random bitmap (its records go to a gather too). */
type Setup = Omit<BitmapRigOptions, 'gather'>

/** A frame of records: its first page, the 4 KiB pages per record and the entry list. */
interface Frame {
  readonly pfn: number
  readonly count: number
  readonly entries: number[]
}

function run(o: Setup, frames: readonly Frame[], batched: boolean) {
  const r = rig({ ...o, gather: true })
  const list = new Uint16Array(513)
  let error: string | null = null
  /** Records made before a failure (null: none failed). */
  let madeBeforeFailure: number | null = null
  try {
    for (const f of frames) {
      if (batched) {
        list[0] = f.entries.length
        f.entries.forEach((e, k) => {
          list[k + 1] = e
        })
        try {
          r.dirty.recordList(f.pfn, f.count, 12, list)
        } catch (e) {
          madeBeforeFailure = list[0] as number
          throw e
        }
      } else {
        let made = 0
        try {
          for (const e of f.entries) {
            const at = f.pfn + e * f.count
            if (f.count === 1) r.dirty.record(at, 1, 12)
            else r.dirty.recordLeaf(at, f.count, at, f.count, at, f.count, 12)
            made++
          }
        } catch (e) {
          madeBeforeFailure = made
          throw e
        }
      }
    }
  } catch (e) {
    if (!(e instanceof IommuError)) throw e
    error = e.code
  }
  r.end()
  return {
    error,
    madeBeforeFailure,
    bytes: Buffer.from(r.proc.read(r.va, o.mapped * PAGE)).toString('base64'),
    hazards: r.log.entries.map((h) => h.toJSON()),
    dropped: r.bitmap.dropped,
    records: r.dirty.records,
    gather: [r.gather.startUnit, r.gather.endUnit],
    pins: r.m.memory.frameStats().pins,
  }
}

describe('IovaBitmap.setList makes the records set makes, one by one', () => {
  it('random bitmaps and frames of records', () => {
    const rng = new Rng(0x15)
    const r = (n: number) => rng.int(n)
    let hazards = 0
    for (let round = 0; round < 300; round++) {
      const pageSize = [4096, 4096, 8192, 16384, 0x20_0000][r(5)] as number
      const nbits = 1 + r(200_000)
      const bytes = Math.ceil(nbits / 8)
      const offset = r(3) === 0 ? r(PAGE) : 8 * r(512)
      const pages = Math.ceil((offset + bytes) / PAGE)
      // Mostly all mapped; sometimes the tail cannot be pinned.
      const mapped = r(4) === 0 ? 1 + r(pages) : pages + 1
      const base = BigInt(r(1 << 12)) * BigInt(pageSize) + 0x1_0000_0000n
      const setup: Setup = {
        base,
        pageSize,
        nbits,
        offset,
        mapped,
        mode: r(3) === 0 ? 'ideal' : 'kernel',
      }
      const span = Math.ceil((nbits * pageSize) / PAGE)
      const basePfn = Number(base / 4096n)
      const frames: Frame[] = []
      for (let f = 0; f < 3 + r(12); f++) {
        const count = [1, 1, 1, 4, 16][r(5)] as number
        // Across the bitmap's start and its end; else mostly inside, sometimes outside.
        const pfn =
          f === 0
            ? basePfn - 256 * count - r(8)
            : f === 1
              ? basePfn + span - 256 * count - r(8)
              : basePfn - 512 * count + r(span + 1024 * count)
        const entries: number[] = []
        for (let e = r(8); e < 512; e += 1 + r(r(2) === 0 ? 2 : 64)) entries.push(e)
        frames.push({ pfn, count, entries })
      }
      const a = run(setup, frames, true)
      const b = run(setup, frames, false)
      expect(a).toEqual(b)
      expect(a.pins).toBe(0)
      if (a.hazards.length > 0) hazards++
    }
    // The rounds did reach the unusual paths.
    expect(hazards).toBeGreaterThan(20)
  })

  it('a livelock at the second record of a frame: the first made, the same bits and hazards', () => {
    // 8 KiB per bit, two bitmap pages of which only the first can be pinned; 16 KiB records
    // from an odd 4 KiB page: entry 1 covers half of bit 32767, bit 32768 and half of
    // 32769, runs off the pinned page and ends unaligned (iova_bitmap_set never returns).
    const base = 0x1_0000_0000n
    const basePfn = Number(base / 4096n)
    const setup: Setup = {
      base,
      pageSize: 8192,
      nbits: 65536,
      offset: 0,
      mapped: 1,
      mode: 'kernel',
    }
    const frames: Frame[] = [
      { pfn: basePfn, count: 1, entries: [0, 5, 511] },
      { pfn: basePfn + 65531, count: 4, entries: [0, 1, 2] },
    ]
    const a = run(setup, frames, true)
    const b = run(setup, frames, false)
    expect(a).toEqual(b)
    expect(a.error).toBe('EDEADLK')
    expect(a.madeBeforeFailure).toBe(1)
    expect(a.records).toBe(3 + 2)
    expect(a.hazards.map((h) => h.kind)).toEqual(['bitmap-livelock'])
  })
})

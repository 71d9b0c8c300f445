import { describe, expect, it } from 'vitest'
import { IommuError } from '../errno.ts'
import { FaultInjector } from './fault-inject.ts'
import {
  FRAME_SIZE,
  FramePurpose,
  isZero,
  PhysicalMemory,
  PIN_BIAS,
  type StorageSource,
} from './memory.ts'
import { Process } from './process.ts'

describe('PhysicalMemory', () => {
  it('gives frames an identity before bytes: unwritten frames read zero and cost no storage', () => {
    const mem = new PhysicalMemory({ size: 2 ** 32 })
    const pfn = mem.allocFrames(1024, FramePurpose.USER)
    expect(pfn).toBeGreaterThan(0)
    expect(mem.frameStats()).toMatchObject({ allocated: 1024, materialized: 0, storageBytes: 0 })
    expect(mem.read32(pfn * FRAME_SIZE + 8)).toBe(0)
    const buf = new Uint8Array(64).fill(0xff)
    mem.readBytes(pfn * FRAME_SIZE, buf)
    expect(buf.every((b) => b === 0)).toBe(true)
    // Writing zeros keeps a frame without storage; a non-zero write materializes it.
    mem.writeBytes(pfn * FRAME_SIZE, new Uint8Array(4096))
    expect(mem.isMaterialized(pfn)).toBe(false)
    mem.write32(pfn * FRAME_SIZE + 4, 0xdeadbeef)
    expect(mem.isMaterialized(pfn)).toBe(true)
    expect(mem.frameStats().materialized).toBe(1)
    expect(mem.read32(pfn * FRAME_SIZE + 4)).toBe(0xdeadbeef)
  })

  it('accesses 32-bit, 64-bit little-endian words and bulk ranges across frames', () => {
    const mem = new PhysicalMemory({ size: 2 ** 32 })
    const pfn = mem.allocFrames(3, FramePurpose.KERNEL)
    const pa = pfn * FRAME_SIZE
    mem.write64(pa + 0xff8, 0x0123_4567_89ab_cdefn)
    expect(mem.read32(pa + 0xff8)).toBe(0x89ab_cdef)
    expect(mem.read32(pa + 0xffc)).toBe(0x0123_4567)
    expect(mem.read64(pa + 0xff8)).toBe(0x0123_4567_89ab_cdefn)
    const src = new Uint8Array(6000).map((_, i) => (i * 7) & 0xff)
    mem.writeBytes(pa + 3000, src)
    const back = new Uint8Array(6000)
    mem.readBytes(pa + 3000, back)
    expect(back).toEqual(src)
    const words = mem.frameWords(pfn + 1)
    expect(words.length).toBe(1024)
    expect(words[0]).toBe(mem.read32((pfn + 1) * FRAME_SIZE))
    expect(() => mem.read32(pa + 2)).toThrow(RangeError)
  })

  it('counts references and pins; a frame is freed when the last one goes', () => {
    const mem = new PhysicalMemory({ size: 2 ** 32 })
    const pfn = mem.allocFrame(FramePurpose.USER)
    mem.write32(pfn * FRAME_SIZE, 1)
    mem.pin(pfn)
    mem.pin(pfn)
    expect(mem.pinCount(pfn)).toBe(2)
    expect(mem.refCount(pfn)).toBe(1 + 2 * PIN_BIAS)
    mem.put(pfn)
    expect(mem.isAllocated(pfn)).toBe(true)
    mem.unpin(pfn)
    mem.unpin(pfn)
    expect(mem.isAllocated(pfn)).toBe(false)
    expect(mem.frameStats()).toMatchObject({ allocated: 0, materialized: 0, pins: 0 })
    // A reused frame reads zero again.
    const again = mem.allocFrame(FramePurpose.USER)
    expect(again).toBe(pfn)
    expect(mem.read32(again * FRAME_SIZE)).toBe(0)
  })

  it('EFAULT for frames outside RAM or not allocated', () => {
    const mem = new PhysicalMemory({ size: 2 ** 24 })
    expect(() => mem.read32(2 ** 24)).toThrow(expect.objectContaining({ code: 'EFAULT' }))
    expect(() => mem.put(0x500)).toThrow(expect.objectContaining({ code: 'EFAULT' }))
  })

  it('ENOMEM when RAM is exhausted or fault injection fires, with nothing allocated', () => {
    const faults = new FaultInjector()
    const mem = new PhysicalMemory({ size: 2 ** 24, faults })
    expect(() => mem.allocFrames(2 ** 12, FramePurpose.USER)).toThrow(IommuError)
    faults.arm(2)
    mem.allocFrame(FramePurpose.PGTABLE)
    expect(() => mem.allocFrame(FramePurpose.PGTABLE)).toThrow(
      expect.objectContaining({ code: 'ENOMEM' }),
    )
    expect(faults.firedAt).toBe('frame')
    expect(mem.frameStats().byPurpose.pgtable).toBe(1)
    expect(mem.allocFrame(FramePurpose.PGTABLE)).toBeGreaterThan(0)
  })

  it('allocates aligned contiguous runs and reuses freed extents', () => {
    const mem = new PhysicalMemory({ size: 2 ** 32 })
    const a = mem.allocFrames(512, FramePurpose.USER, 512)
    expect(a % 512).toBe(0)
    mem.freeFrames(a, 512)
    expect(mem.allocFrames(512, FramePurpose.USER, 512)).toBe(a)
  })

  it('copies frames, releasing storage when the source is zero, and compares them', () => {
    const mem = new PhysicalMemory({ size: 2 ** 32 })
    const [a, b, c] = [0, 1, 2].map(() => mem.allocFrame(FramePurpose.USER)) as [
      number,
      number,
      number,
    ]
    mem.fill(a * FRAME_SIZE, FRAME_SIZE, 0x5a)
    mem.copyFrame(b, a)
    expect(mem.framesEqual(a, b)).toBe(true)
    expect(mem.framesEqual(a, c)).toBe(false)
    mem.copyFrame(b, c)
    expect(mem.isMaterialized(b)).toBe(false)
    expect(mem.framesEqual(b, c)).toBe(true)
  })

  it('shares storage after copyFrame and copies on the first write to either frame', () => {
    const mem = new PhysicalMemory({ size: 2 ** 32 })
    const a = mem.allocFrame(FramePurpose.USER)
    const b = mem.allocFrame(FramePurpose.USER)
    mem.fill(a * FRAME_SIZE, FRAME_SIZE, 7)
    mem.copyFrame(b, a)
    expect(mem.frameStats()).toMatchObject({ materialized: 2, dataSlots: 1 })
    mem.write32(b * FRAME_SIZE, 0x01020304)
    expect(mem.frameStats()).toMatchObject({ materialized: 2, dataSlots: 2 })
    expect(mem.read32(a * FRAME_SIZE)).toBe(0x07070707)
    expect(mem.read32(b * FRAME_SIZE)).toBe(0x01020304)
    expect(mem.read32(b * FRAME_SIZE + 4)).toBe(0x07070707)
    // Writing the source of a copy leaves the copy untouched, too.
    mem.copyFrame(b, a)
    mem.frameWords(a)[5] = 9
    expect(mem.read32(b * FRAME_SIZE + 20)).toBe(0x07070707)
    expect(mem.framesEqual(a, b)).toBe(false)
    mem.put(a)
    mem.put(b)
    expect(mem.frameStats()).toMatchObject({ materialized: 0, dataSlots: 0 })
  })

  it('keeps a 64 GiB pinned guest with 1 GiB written within about 1.2 GiB', () => {
    const before = process.memoryUsage().arrayBuffers
    const mem = new PhysicalMemory({ size: 2 ** 37 })
    const guest = new Process(mem)
    const frames = 16 * 1024 * 1024
    const va = guest.mmap(frames * FRAME_SIZE)
    const pfns = new Int32Array(frames)
    guest.pinUserPages(va, frames, true, pfns)
    const page = new Uint8Array(FRAME_SIZE).fill(1)
    // 1 GiB written: every 64th page.
    for (let i = 0; i < frames; i += 64) guest.write(va + i * FRAME_SIZE, page)
    const stats = mem.frameStats()
    expect(stats.pins).toBe(frames)
    expect(stats.allocated).toBe(frames)
    expect(stats.materialized).toBe(frames / 64)
    const used = process.memoryUsage().arrayBuffers - before
    // 1 GiB of data plus typed-array metadata (frame table, page table, pin list).
    expect(used).toBeLessThan(1.25 * 2 ** 30)
    expect(used).toBeGreaterThan(2 ** 30)
  })

  it('copyFrames equals copyFrame one frame at a time (groups with and without data)', () => {
    // Frames 0..2047 as source and 2048..4095 as destination; a seeded LCG picks which
    // frames hold data (whole groups empty or full, and mixed), the ranges and offsets.
    let seed = 12345
    const next = (n: number) => {
      seed = (Math.imul(seed, 1_103_515_245) + 12_345) >>> 0
      return (seed >>> 8) % n
    }
    // Frame 4096 never holds data: copying it onto a frame releases that frame's storage.
    const pair = [0, 1].map(() => {
      const mem = new PhysicalMemory({ size: 2 ** 26 })
      mem.allocFrames(4097, FramePurpose.USER)
      return mem
    }) as [PhysicalMemory, PhysicalMemory]
    const [a, b] = pair
    for (let round = 0; round < 40; round++) {
      for (const mem of pair) for (let pfn = 0; pfn < 4096; pfn++) mem.copyFrame(pfn, 4096)
      const density = [0, 0.3, 1][round % 3] as number
      const writes: [number, number][] = []
      for (let pfn = 0; pfn < 4096; pfn++) {
        const group = pfn >>> 6
        const p = group % 4 === 0 ? 0 : group % 4 === 1 ? 1 : density
        if (next(1000) < p * 1000) writes.push([pfn, 1 + next(250)]) // never 0xff
      }
      // Mostly the same offset in a group on both sides, so that whole groups are copied.
      const src = next(1024)
      const dst = 2048 + (next(4) === 0 ? next(1024) : (src & 63) + 64 * next(15))
      const count = 1 + next(1024)
      for (const [i, mem] of pair.entries()) {
        for (const [pfn, v] of writes) mem.fill(pfn * FRAME_SIZE, FRAME_SIZE, v)
        // Cached views of the sources: writing through them after the copy must copy.
        for (let k = 0; k < count; k++) mem.peekWords(src + k)
        if (i === 0) mem.copyFrames(dst, src, count)
        else for (let k = 0; k < count; k++) mem.copyFrame(dst + k, src + k)
      }
      expect(a.frameStats()).toEqual(b.frameStats())
      const x = new Uint8Array(FRAME_SIZE)
      const y = new Uint8Array(FRAME_SIZE)
      let differ = 0
      for (let pfn = 0; pfn < 4096; pfn++) {
        a.readBytes(pfn * FRAME_SIZE, x)
        b.readBytes(pfn * FRAME_SIZE, y)
        if (Buffer.compare(x, y) !== 0) differ++
      }
      expect(differ).toBe(0)
      // Writing the sources (through a word view, or a 4 KiB write) leaves the copies as
      // they were, in both.
      const page = new Uint8Array(FRAME_SIZE).fill(0xff)
      for (const mem of pair) {
        for (let k = 0; k < count; k++) {
          if (k % 2 === 0) mem.frameWords(src + k)[3] = 0xdead
          else mem.writeBytes((src + k) * FRAME_SIZE, page)
        }
      }
      for (let k = 0; k < count; k++) {
        a.readBytes((dst + k) * FRAME_SIZE, x)
        b.readBytes((dst + k) * FRAME_SIZE, y)
        if (Buffer.compare(x, y) !== 0 || a.framesEqual(dst + k, src + k)) differ++
      }
      expect(differ).toBe(0)
      expect(a.frameStats()).toEqual(b.frameStats())
    }
    // Groups left without data are given back the same way (no slot group leaks).
    for (const mem of pair) for (let pfn = 0; pfn < 4096; pfn++) mem.copyFrame(pfn, 4096)
    expect(a.frameStats()).toMatchObject({ materialized: 0, dataSlots: 0 })
    expect(a.metadataBytes()).toEqual(b.metadataBytes())
  })
})

describe('StorageSource', () => {
  const MIB = 1 << 20
  /** Writes a distinct word to `frames` fresh frames and reads every one back. */
  function fill(mem: PhysicalMemory, frames: number): number {
    const pfn = mem.allocFrames(frames, FramePurpose.USER)
    for (let i = 0; i < frames; i++) mem.write32((pfn + i) * FRAME_SIZE + 8, i + 1)
    for (let i = 0; i < frames; i++) {
      if (mem.read32((pfn + i) * FRAME_SIZE + 8) !== i + 1) return i
      if (mem.read32((pfn + i) * FRAME_SIZE) !== 0) return i
    }
    return frames
  }

  it('takes bulk buffers from the source once memory holds 16 MiB, with the same contents', () => {
    const asked: number[] = []
    const given: ArrayBuffer[] = []
    const source: StorageSource = {
      take(bytes) {
        asked.push(bytes)
        const b = new ArrayBuffer(bytes)
        given.push(b)
        return b
      },
    }
    const mem = new PhysicalMemory({ size: 2 ** 32, storage: source })
    // 16 single 1 MiB slabs first (4096 frames), then 16 MiB buffers.
    expect(fill(mem, 4096)).toBe(4096)
    expect(asked).toEqual([])
    expect(fill(mem, 4097)).toBe(4097)
    expect(asked).toEqual([16 * MIB, 16 * MIB])
    expect(mem.frameStats()).toMatchObject({ storageBytes: 48 * MIB, sourcedBytes: 32 * MIB })
    // The source's buffer is where the data went.
    expect(new Uint32Array(given[0] as ArrayBuffer)[2]).toBe(1)
  })

  it('allocates its own storage when the source has none or gives a wrong buffer', () => {
    const answers: (ArrayBuffer | null)[] = [
      null,
      new ArrayBuffer(MIB),
      new SharedArrayBuffer(16 * MIB) as unknown as ArrayBuffer,
      structuredClone(new ArrayBuffer(0)),
    ]
    const detached = new ArrayBuffer(16 * MIB)
    structuredClone(detached, { transfer: [detached] })
    answers.push(detached)
    const mem = new PhysicalMemory({
      size: 2 ** 34,
      storage: { take: () => answers.shift() ?? null },
    })
    expect(fill(mem, 4096 + 5 * 4096)).toBe(4096 + 5 * 4096)
    expect(answers).toEqual([])
    expect(mem.frameStats()).toMatchObject({ storageBytes: 96 * MIB, sourcedBytes: 0 })
  })

  it('drops a source that throws, and the write that needed storage goes on', () => {
    let asked = 0
    const mem = new PhysicalMemory({
      size: 2 ** 34,
      storage: {
        take() {
          asked++
          throw new Error('no worker')
        },
      },
    })
    expect(fill(mem, 4096 + 3 * 4096)).toBe(4096 + 3 * 4096)
    expect(asked).toBe(1)
    expect(mem.frameStats()).toMatchObject({ storageBytes: 64 * MIB, sourcedBytes: 0 })
  })
})

describe('isZero', () => {
  it('finds a single non-zero byte anywhere, at any offset and length', () => {
    const backing = new Uint8Array(4096 + 64)
    for (const offset of [0, 1, 4, 8, 32]) {
      for (const length of [0, 1, 3, 4, 31, 32, 33, 64, 4096]) {
        const view = backing.subarray(offset, offset + length)
        expect(isZero(view)).toBe(true)
        for (let i = 0; i < length; i++) {
          view[i] = 0x80
          expect(isZero(view)).toBe(false)
          view[i] = 0
        }
        // A byte just outside the view does not count.
        backing[offset + length] = 1
        expect(isZero(view)).toBe(true)
        backing[offset + length] = 0
      }
    }
  })
})

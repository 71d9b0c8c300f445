import { describe, expect, it } from 'vitest'
import { FRAME_SIZE, FramePurpose, PhysicalMemory, PIN_BIAS } from './memory.ts'
import { PfnArray } from './pfn-array.ts'
import { Process } from './process.ts'

/** A seeded xorshift PRNG: an integer in [0, n). */
function rng(seed: number): (n: number) => number {
  let x = seed >>> 0 || 1
  return (n) => {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    return (x >>> 0) % n
  }
}

describe('PfnArray', () => {
  it('behaves as an Int32Array under random element and run writes, copies and queries', () => {
    for (let seed = 1; seed <= 12; seed++) {
      const r = rng(seed)
      const n = 1 + r(5000)
      const a = new PfnArray(n)
      const ref = new Int32Array(n)
      for (let op = 0; op < 300; op++) {
        const i = r(n)
        const count = Math.min(n - i, 1 + r(r(2) ? 40 : 1500))
        switch (r(6)) {
          case 0: {
            const v = r(3) === 0 ? 0 : 1 + r(1 << 30)
            a.set(i, v)
            ref[i] = v
            break
          }
          case 1: {
            const v = r(4) === 0 ? 0 : 1 + r(1 << 30)
            a.setRun(i, count, v)
            for (let k = 0; k < count; k++) ref[i + k] = v === 0 ? 0 : v + k
            break
          }
          case 2: {
            const out = new Int32Array(count + 3)
            a.copyTo(i, count, out, 3)
            expect(out.subarray(3)).toEqual(ref.subarray(i, i + count))
            break
          }
          case 3: {
            // Copy into another PfnArray at a different alignment, then compare.
            const b = new PfnArray(count + 700)
            b.setRun(0, count + 700, 77)
            a.copyTo(i, count, b, 700)
            const got = b.toInt32Array()
            expect(got.subarray(700)).toEqual(ref.subarray(i, i + count))
            expect(got[699]).toBe(77 + 699)
            break
          }
          case 4: {
            let e = i + 1
            while (e < i + count && ref[e] === (ref[e - 1] as number) + 1) e++
            expect(a.runEnd(i, i + count)).toBe(e)
            expect(a.isZero(i, count)).toBe(ref.subarray(i, i + count).every((v) => v === 0))
            break
          }
          default: {
            const s = a.slice(i, i + count)
            expect(s.toInt32Array()).toEqual(ref.slice(i, i + count))
          }
        }
        expect(a.get(i)).toBe(ref[i])
      }
      expect(a.toInt32Array()).toEqual(ref)
    }
  })

  it('keeps a run of consecutive frames in a few bytes per 2 MiB', () => {
    const a = new PfnArray(1 << 20)
    a.setRun(0, 1 << 20, 0x1000)
    expect(a.byteLength).toBeLessThan(((1 << 20) / 512) * 8 + 64)
    expect(a.get(123_456)).toBe(0x1000 + 123_456)
    expect(a.runEnd(0, 1 << 20)).toBe(1 << 20)
    // One page elsewhere makes its block explicit; a run over the block settles it again.
    a.set(1000, 5)
    expect(a.byteLength).toBeGreaterThan(2048)
    a.setRun(512, 1024, 0x1000 + 512)
    expect(a.get(1000)).toBe(0x1000 + 1000)
    expect(a.byteLength).toBeLessThan(((1 << 20) / 512) * 8 + 64)
  })
})

/** The state a sequence of operations leaves: every frame's references, and the allocator. */
function state(mem: PhysicalMemory, upTo: number): string {
  const refs: number[] = []
  for (let p = 0; p < upTo; p++) refs.push(mem.refCount(p))
  // The allocator's free extents show in where the next allocations land.
  const next = [1, 3, 512, 1].map((n, k) =>
    mem.allocFrames(n, FramePurpose.KERNEL, k === 2 ? 512 : 1),
  )
  return JSON.stringify({ refs, stats: mem.frameStats(), next })
}

describe('PhysicalMemory range operations', () => {
  it('pinRange, unpinRange and putRange leave memory exactly as the per-frame calls', () => {
    for (let seed = 1; seed <= 25; seed++) {
      const r = rng(seed * 31)
      const a = new PhysicalMemory({ size: 2 ** 34 })
      const b = new PhysicalMemory({ size: 2 ** 34 })
      // Whole blocks, partial blocks and single frames, some written.
      const runs: [number, number][] = []
      for (let k = 0; k < 8; k++) {
        const count = [512, 1024, 1, 37, 600][r(5)] as number
        const align = count >= 512 ? 512 : 1
        const pa = a.allocFrames(count, FramePurpose.USER, align)
        const pb = b.allocFrames(count, FramePurpose.USER, align)
        expect(pb).toBe(pa)
        runs.push([pa, count])
        if (r(2)) {
          const at = (pa + r(count)) * FRAME_SIZE
          a.write32(at, 0xabcd)
          b.write32(at, 0xabcd)
        }
      }
      for (let op = 0; op < 40; op++) {
        const [p0, n0] = runs[r(runs.length)] as [number, number]
        const first = p0 + (r(3) === 0 ? r(n0) : 0)
        const count = Math.min(p0 + n0 - first, r(2) ? n0 : 1 + r(n0))
        const kind = r(3)
        // Skip what would fail: the per-frame calls would stop part way.
        let ok = true
        for (let p = first; p < first + count; p++) {
          const ref = a.refCount(p)
          if (ref <= 0 || (kind === 1 && ref < PIN_BIAS) || (kind === 2 && ref % PIN_BIAS === 0)) {
            ok = false
          }
        }
        if (!ok) continue
        if (kind === 0) {
          a.pinRange(first, count)
          for (let p = first; p < first + count; p++) b.pin(p)
        } else if (kind === 1) {
          a.unpinRange(first, count)
          for (let p = first; p < first + count; p++) b.unpin(p)
        } else {
          a.putRange(first, count)
          for (let p = first; p < first + count; p++) b.put(p)
        }
      }
      const top = Math.max(...runs.map(([p, n]) => p + n)) + 1
      expect(state(a, top)).toBe(state(b, top))
    }
  })

  it('checks every frame before changing any: EFAULT leaves the run as it was', () => {
    const mem = new PhysicalMemory({ size: 2 ** 32 })
    const p = mem.allocFrames(1024, FramePurpose.USER, 512)
    mem.put(p + 700)
    expect(() => mem.pinRange(p, 1024)).toThrow(expect.objectContaining({ code: 'EFAULT' }))
    expect(mem.frameStats().pins).toBe(0)
    expect(mem.refCount(p)).toBe(1)
    expect(() => mem.unpinRange(p, 10)).toThrow(RangeError)
    expect(mem.refCount(p + 9)).toBe(1)
  })

  it('a THP-backed guest pinned whole costs a few bytes of frame metadata per 2 MiB', () => {
    const mem = new PhysicalMemory({ size: 2 ** 36 })
    const guest = new Process(mem)
    const pages = 4 * 1024 * 1024 // 16 GiB
    const va = guest.mmap(pages * FRAME_SIZE)
    const pins = new PfnArray(pages)
    guest.pinUserPages(va, pages, true, pins)
    expect(mem.frameStats()).toMatchObject({ allocated: pages, pins: pages })
    const meta = mem.metadataBytes()
    expect(meta.expanded).toBe(0)
    expect(meta.chunks).toBeLessThan(pages / 8)
    expect(pins.byteLength).toBeLessThan(pages / 32)
    guest.unpinPages(pins, pages)
    guest.exit()
    expect(mem.frameStats()).toMatchObject({ allocated: 0, pins: 0 })
  })

  it('a block of mixed purposes freed whole collapses, so its per-frame arrays are reused', () => {
    const mem = new PhysicalMemory({ size: 2 ** 34 })
    // One pool page holds 32 expanded blocks: the block below the first 2 MiB boundary,
    // 30 blocks of half kernel, half user frames, and the block of a guard frame.
    const blocks = 30
    mem.allocFrames(256, FramePurpose.KERNEL) // up to the first 2 MiB boundary
    const first = mem.allocFrames(256, FramePurpose.KERNEL, 512)
    mem.allocFrames(256, FramePurpose.USER)
    for (let i = 1; i < blocks; i++) {
      expect(mem.allocFrames(256, FramePurpose.KERNEL, 512)).toBe(first + i * 512)
      mem.allocFrames(256, FramePurpose.USER)
    }
    mem.allocFrame(FramePurpose.KERNEL) // keeps the freed blocks off the bump pointer
    const page = mem.metadataBytes().expanded
    expect(page).toBe(32 * 512 * 5)
    for (let i = 0; i < blocks; i++) mem.putRange(first + i * 512, 512)
    expect(mem.frameStats().allocated).toBe(257)
    // Fresh whole blocks from elsewhere, each made to differ in one frame: they take the
    // per-frame arrays the freed blocks gave back instead of a new pool page.
    const big = mem.allocFrames((blocks + 1) * 512, FramePurpose.USER, 512)
    expect(big).toBeGreaterThan(first + blocks * 512)
    for (let i = 0; i < blocks; i++) mem.get(big + i * 512)
    expect(mem.metadataBytes().expanded).toBe(page)
  })

  it('copyFrames and compareFrames act as copyFrame and framesEqual of each pair', () => {
    const a = new PhysicalMemory({ size: 2 ** 32 })
    const b = new PhysicalMemory({ size: 2 ** 32 })
    const setup = (mem: PhysicalMemory) => {
      const src = mem.allocFrames(1024, FramePurpose.USER, 512)
      const dst = mem.allocFrames(1024, FramePurpose.USER, 512)
      for (const p of [3, 64, 65, 700]) mem.write32((src + p) * FRAME_SIZE, p + 1)
      for (const p of [5, 64, 900]) mem.write32((dst + p) * FRAME_SIZE + 8, 0xdead)
      return { src, dst }
    }
    const x = setup(a)
    const y = setup(b)
    const diff = (mem: PhysicalMemory, s: number, d: number) => {
      const out: number[] = []
      const n = mem.compareFrames(s, d, 1024, (i) => out.push(i))
      expect(n).toBe(out.length)
      return out
    }
    expect(diff(a, x.src, x.dst)).toEqual([3, 5, 64, 65, 700, 900])
    a.copyFrames(x.dst + 1, x.src + 1, 1000)
    for (let i = 1; i < 1001; i++) b.copyFrame(y.dst + i, y.src + i)
    expect(diff(a, x.src, x.dst)).toEqual(diff(b, y.src, y.dst))
    expect(diff(a, x.src, x.dst)).toEqual([])
    expect(a.frameStats()).toEqual(b.frameStats())
  })
})

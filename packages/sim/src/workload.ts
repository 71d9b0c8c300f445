/**
 * The passthrough device's DMA workload, generated deterministically from a seed: a ring
 * buffer the device fills sequentially (a NIC's receive ring) plus random writes over the
 * guest's memory with tunable locality (a fraction goes to a hot set). Every write is
 * described by (offset, length, stamp) so that the bytes are reproducible.
 *
 * @module
 */

/** A small, fast, seedable PRNG (xoshiro128**). */
export class Rng {
  #a: number
  #b: number
  #c: number
  #d: number

  constructor(seed: number) {
    // splitmix32 to spread the seed over the state.
    let s = seed >>> 0
    const next = (): number => {
      s = (s + 0x9e3779b9) >>> 0
      let z = s
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b)
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35)
      return (z ^ (z >>> 16)) >>> 0
    }
    this.#a = next()
    this.#b = next()
    this.#c = next()
    this.#d = next() || 1
  }

  /** Outputs generated ahead (the same sequence, a batch at a time) and the next one. */
  readonly #ahead = new Uint32Array(256)
  #next = 256

  /** A uniform 32-bit unsigned integer. */
  u32(): number {
    if (this.#next === 256) this.#refill()
    return this.#ahead[this.#next++] as number
  }

  /** The next 256 outputs, with the state in locals (a call per output costs more). */
  #refill(): void {
    let a = this.#a
    let b = this.#b
    let c = this.#c
    let d = this.#d
    const out = this.#ahead
    for (let i = 0; i < 256; i++) {
      out[i] = Math.imul(rotl(Math.imul(b, 5), 7), 9)
      const t = b << 9
      c ^= a
      d ^= b
      b ^= c
      a ^= d
      c ^= t
      d = rotl(d, 11)
    }
    this.#a = a
    this.#b = b
    this.#c = c
    this.#d = d
    this.#next = 0
  }

  /** A uniform float in [0, 1). */
  float(): number {
    return this.u32() / 4294967296
  }

  /** A uniform integer in [0, n) for n ≤ 2^53. */
  below(n: number): number {
    if (n <= 4294967296) return Math.floor(this.float() * n)
    const x = Math.floor(((this.u32() * 4294967296 + this.u32()) / 2 ** 64) * n)
    return Math.min(x, n - 1)
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0
}

/** Configuration of {@link Workload}. */
export interface WorkloadConfig {
  /** Bytes of guest memory the device may write (offsets are in [0, memoryBytes)). */
  readonly memoryBytes: number
  /** PRNG seed. */
  readonly seed: number
  /** Ring buffer size in bytes (0 = no ring); placed at offset `ringOffset`. */
  readonly ringBytes: number
  /** Where the ring starts (page aligned). */
  readonly ringOffset: number
  /** Bytes per ring write (a packet). */
  readonly ringWriteBytes: number
  /** Ring writes per simulated second. */
  readonly ringRate: number
  /** Random writes per simulated second. */
  readonly randomRate: number
  /** Bytes per random write (≤ 4096, within one page). */
  readonly randomWriteBytes: number
  /** Fraction of random writes that go to the hot set, in [0, 1]. */
  readonly locality: number
  /** Hot set size in bytes (page aligned), placed at `hotOffset`. */
  readonly hotBytes: number
  /** Where the hot set starts. */
  readonly hotOffset: number
}

/** One DMA write of the workload. */
export interface DmaWrite {
  /** Byte offset in guest memory. */
  offset: number
  /** Length in bytes. */
  length: number
  /** A value that makes the written bytes unique to this write. */
  stamp: number
}

/** Offsets of guest memory the workload must not touch (hot-unplugged ranges). */
export interface ExcludedRanges {
  /** True when [offset, offset + length) overlaps an excluded range. */
  excludes(offset: number, length: number): boolean
}

/**
 * Generates the device's writes over simulated time. Ring and random writes are
 * interleaved by their own rates; fractional writes carry over between calls, so the
 * sequence does not depend on how time is sliced.
 */
export class Workload {
  readonly config: WorkloadConfig
  readonly #rng: Rng
  #ringPos = 0
  #ringDebt = 0
  #randomDebt = 0
  #stamp = 0
  /** Writes generated so far. */
  writes = 0

  constructor(config: WorkloadConfig) {
    if (config.randomWriteBytes > 4096 || config.randomWriteBytes <= 0) {
      throw new RangeError('random writes must be 1..4096 bytes')
    }
    if (config.ringBytes % 4096 !== 0 || config.ringOffset % 4096 !== 0) {
      throw new RangeError('the ring must be page aligned')
    }
    if (config.ringOffset + config.ringBytes > config.memoryBytes) {
      throw new RangeError('the ring lies outside guest memory')
    }
    if (config.hotOffset + config.hotBytes > config.memoryBytes) {
      throw new RangeError('the hot set lies outside guest memory')
    }
    this.config = config
    this.#rng = new Rng(config.seed)
  }

  /**
   * Produce the writes of the next `seconds` of simulated time, in order, through `emit`
   * (which may reuse nothing from the passed object after returning).
   */
  run(seconds: number, emit: (w: DmaWrite) => void, excluded?: ExcludedRanges): void {
    const c = this.config
    this.#ringDebt += c.ringBytes > 0 ? c.ringRate * seconds : 0
    this.#randomDebt += c.randomRate * seconds
    let ring = Math.floor(this.#ringDebt)
    let random = Math.floor(this.#randomDebt)
    this.#ringDebt -= ring
    this.#randomDebt -= random
    const w: DmaWrite = { offset: 0, length: 0, stamp: 0 }
    const pages = Math.floor(c.memoryBytes / 4096)
    const hotPages = Math.floor(c.hotBytes / 4096)
    // Interleave the two streams in proportion.
    while (ring > 0 || random > 0) {
      const pickRing = random === 0 || (ring > 0 && this.#rng.below(ring + random) < ring)
      if (pickRing) {
        ring--
        const len = Math.min(c.ringWriteBytes, c.ringBytes - this.#ringPos)
        w.offset = c.ringOffset + this.#ringPos
        w.length = len
        this.#ringPos = (this.#ringPos + len) % c.ringBytes
      } else {
        random--
        const hot = hotPages > 0 && this.#rng.float() < c.locality
        const page = hot
          ? Math.floor(c.hotOffset / 4096) + this.#rng.below(hotPages)
          : this.#rng.below(pages)
        const within = this.#rng.below(4096 - c.randomWriteBytes + 1)
        w.offset = page * 4096 + within
        w.length = c.randomWriteBytes
      }
      w.stamp = ++this.#stamp
      if (excluded?.excludes(w.offset, w.length)) continue
      this.writes++
      emit(w)
    }
  }
}

/**
 * The bytes of write `stamp`: a 16-byte header unique to the write (stamp, offset and two
 * mixes of them) over a pseudo-random payload shared by all writes. A lost or stale write
 * always differs from the one that should be there in its header, so verification catches
 * it; only the header is rewritten per write.
 *
 * @param buf - a reusable buffer of at least 4096 bytes (its payload is filled once)
 */
export function stampBytes(buf: Uint8Array, length: number, stamp: number, offset = 0): Uint8Array {
  if (buf[buf.length - 1] === 0 && buf[buf.length - 2] === 0) {
    let x = 0x2545f491
    for (let i = 16; i < buf.length; i++) {
      x ^= x << 13
      x ^= x >>> 17
      x ^= x << 5
      buf[i] = (x & 0xff) | 1
    }
  }
  // The header's four words, through views kept for the last buffer (none per write).
  if (buf !== viewsOf) {
    viewsOf = buf
    header = new Uint32Array(buf.buffer, buf.byteOffset, 4)
    prefixes.clear()
    lastLen = -1
  }
  header[0] = stamp >>> 0
  header[1] = offset >>> 0
  header[2] = Math.imul(stamp ^ 0x9e3779b9, 0x85ebca6b) >>> 0
  header[3] = Math.imul(offset ^ stamp, 0xc2b2ae35) >>> 0
  if (length === buf.length) return buf
  // A workload writes a few lengths: their views are kept, not made per write; the last
  // one is at hand without a lookup.
  if (length === lastLen) return lastView
  let view = prefixes.get(length)
  if (view === undefined) {
    view = buf.subarray(0, length)
    if (prefixes.size < 16) prefixes.set(length, view)
  }
  lastLen = length
  lastView = view
  return view
}

let viewsOf: Uint8Array | null = null
let header: Uint32Array = new Uint32Array(4)
const prefixes = new Map<number, Uint8Array>()
let lastLen = -1
let lastView: Uint8Array = new Uint8Array(0)

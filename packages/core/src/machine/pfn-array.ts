/**
 * A compact array of page-frame numbers: a process's page table for one mapping, the
 * pinned-page list of an iommufd pages object, a VMM's view of guest RAM.
 *
 * Entries are kept in blocks of 512 (a 2 MiB run of pages). A block is one of: all zero
 * (nothing there), linear (entry `i` is `base + i`: a THP-sized run, or any run of frames
 * handed out back to back), or explicit (its own `Int32Array`). Guest memory populated in
 * 2 MiB runs therefore costs 8 bytes per 2 MiB instead of 4 bytes per page, and a range
 * operation handles a whole linear block at once. A block written entry by entry becomes
 * explicit; a range write that covers a whole block makes it zero or linear again when it
 * can.
 *
 * Semantically it is an `Int32Array` of `length` PFNs (0 = none); {@link get} and
 * {@link set} are the element access.
 *
 * @module
 */

const SHIFT = 9
const SIZE = 1 << SHIFT
const MASK = SIZE - 1
/** `#kind` of a block whose entries are all 0. */
const ZERO = 0
/** `#kind` of a block whose entry `i` is `#base[b] + i`. */
const LINEAR = 1
/** `#kind` of a block with its own array in `#explicit`. */
const EXPLICIT = 2

/** A compact array of page-frame numbers (see the module comment). */
export class PfnArray {
  /** Number of entries. */
  readonly length: number
  readonly #kind: Uint8Array
  readonly #base: Int32Array
  readonly #explicit: (Int32Array | undefined)[]

  /**
   * @param length - number of entries, all 0
   * @throws RangeError - not a valid length, or the host cannot hold the block tables
   */
  constructor(length: number) {
    if (!Number.isSafeInteger(length) || length < 0) throw new RangeError(`bad length ${length}`)
    const blocks = Math.ceil(length / SIZE)
    this.length = length
    this.#kind = new Uint8Array(blocks)
    this.#base = new Int32Array(blocks)
    this.#explicit = []
  }

  /** Entry `i` (0 when `i` is out of range, like a missing page). */
  get(i: number): number {
    const b = i >>> SHIFT
    const k = this.#kind[b]
    if (k === LINEAR) return (this.#base[b] as number) + (i & MASK)
    if (k === EXPLICIT) return (this.#explicit[b] as Int32Array)[i & MASK] as number
    return 0
  }

  /** Set entry `i` (`0 <= i < length`). */
  set(i: number, pfn: number): void {
    const b = i >>> SHIFT
    const k = this.#kind[b]
    if (k === EXPLICIT) {
      ;(this.#explicit[b] as Int32Array)[i & MASK] = pfn
      return
    }
    if (k === LINEAR ? pfn === (this.#base[b] as number) + (i & MASK) : pfn === 0) return
    this.#makeExplicit(b)[i & MASK] = pfn
  }

  #blockLength(b: number): number {
    return Math.min(SIZE, this.length - b * SIZE)
  }

  #makeExplicit(b: number): Int32Array {
    const k = this.#kind[b]
    if (k === EXPLICIT) return this.#explicit[b] as Int32Array
    const n = this.#blockLength(b)
    const a = new Int32Array(n)
    if (k === LINEAR) {
      const base = this.#base[b] as number
      for (let j = 0; j < n; j++) a[j] = base + j
    }
    this.#explicit[b] = a
    this.#kind[b] = EXPLICIT
    return a
  }

  /** Make block `b` (wholly covered by a range write) zero or linear again if it can be. */
  #settle(b: number): void {
    const a = this.#explicit[b]
    if (a === undefined) return
    const first = a[0] as number
    if (first === 0) {
      for (let j = 1; j < a.length; j++) if (a[j] !== 0) return
      this.#kind[b] = ZERO
    } else {
      for (let j = 1; j < a.length; j++) if (a[j] !== first + j) return
      this.#kind[b] = LINEAR
      this.#base[b] = first
    }
    this.#explicit[b] = undefined
  }

  /** Set entries `[i, i + count)` to `pfn, pfn + 1, ...` (or all to 0 when `pfn` is 0). */
  setRun(from: number, count: number, firstPfn: number): void {
    const end = from + count
    let i = from
    let pfn = firstPfn
    while (i < end) {
      const b = i >>> SHIFT
      const at = i & MASK
      const n = Math.min(end - i, this.#blockLength(b) - at)
      const first = pfn === 0 ? 0 : pfn - at
      if (n === this.#blockLength(b)) {
        if (this.#kind[b] === EXPLICIT) this.#explicit[b] = undefined
        this.#kind[b] = pfn === 0 ? ZERO : LINEAR
        this.#base[b] = first
      } else if (
        !(this.#kind[b] === ZERO && pfn === 0) &&
        !(this.#kind[b] === LINEAR && pfn !== 0 && this.#base[b] === first)
      ) {
        const a = this.#makeExplicit(b)
        if (pfn === 0) a.fill(0, at, at + n)
        else for (let j = 0; j < n; j++) a[at + j] = pfn + j
      }
      i += n
      if (pfn !== 0) pfn += n
    }
  }

  /** Copy `count` entries from `from` into `out[outOffset ...]`. */
  copyTo(from: number, count: number, out: Int32Array | PfnArray, outOffset = 0): void {
    const end = from + count
    let i = from
    let o = outOffset
    while (i < end) {
      const b = i >>> SHIFT
      const at = i & MASK
      const n = Math.min(end - i, this.#blockLength(b) - at)
      const k = this.#kind[b]
      if (out instanceof PfnArray) {
        if (k === EXPLICIT) {
          const a = this.#explicit[b] as Int32Array
          for (let j = 0; j < n; j++) out.set(o + j, a[at + j] as number)
        } else {
          out.setRun(o, n, k === ZERO ? 0 : (this.#base[b] as number) + at)
        }
      } else if (k === EXPLICIT) {
        out.set((this.#explicit[b] as Int32Array).subarray(at, at + n), o)
      } else if (k === ZERO) {
        out.fill(0, o, o + n)
      } else {
        const base = (this.#base[b] as number) + at
        for (let j = 0; j < n; j++) out[o + j] = base + j
      }
      i += n
      o += n
    }
    if (out instanceof PfnArray) out.#settleWithin(outOffset, count)
  }

  /** Settle the blocks wholly inside `[i, i + count)` after entry-by-entry writes. */
  #settleWithin(i: number, count: number): void {
    const end = i + count
    for (let b = Math.ceil(i / SIZE); b * SIZE < this.length; b++) {
      if (b * SIZE + this.#blockLength(b) > end) break
      if (this.#kind[b] === EXPLICIT) this.#settle(b)
    }
  }

  /**
   * The end of the physically contiguous run from entry `i`: the smallest `j` in
   * `(i, limit]` such that entry `j` is not entry `j - 1` plus one (or `limit`).
   */
  runEnd(i: number, limit: number): number {
    let prev = this.get(i)
    let j = i + 1
    while (j < limit) {
      const b = j >>> SHIFT
      const k = this.#kind[b]
      if (k === LINEAR && (j & MASK) === 0) {
        // A whole linear block continues the run if it starts right after it.
        if (this.#base[b] !== prev + 1) return j
        const n = Math.min(limit - j, this.#blockLength(b))
        prev = (this.#base[b] as number) + n - 1
        j += n
        continue
      }
      const v = this.get(j)
      if (v !== prev + 1) return j
      prev = v
      j++
    }
    return limit
  }

  /** True when entries `[i, i + count)` are all 0. */
  isZero(from: number, count: number): boolean {
    const end = from + count
    let i = from
    while (i < end) {
      const b = i >>> SHIFT
      const at = i & MASK
      const n = Math.min(end - i, this.#blockLength(b) - at)
      const k = this.#kind[b]
      if (k === LINEAR) return false
      if (k === EXPLICIT) {
        const a = this.#explicit[b] as Int32Array
        for (let j = at; j < at + n; j++) if (a[j] !== 0) return false
      }
      i += n
    }
    return true
  }

  /** A new array holding entries `[start, end)`. */
  slice(start: number, end: number): PfnArray {
    const out = new PfnArray(end - start)
    this.copyTo(start, end - start, out, 0)
    return out
  }

  /** A copy as a plain `Int32Array` (for tests and small arrays). */
  toInt32Array(): Int32Array<ArrayBuffer> {
    const out = new Int32Array(this.length)
    this.copyTo(0, this.length, out, 0)
    return out
  }

  /** Bytes this array holds (block tables and explicit blocks). */
  get byteLength(): number {
    let n = this.#kind.byteLength + this.#base.byteLength + this.#explicit.length * 8
    for (const a of this.#explicit) if (a !== undefined) n += a.byteLength
    return n
  }
}

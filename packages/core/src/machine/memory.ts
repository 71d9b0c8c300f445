/**
 * Simulated physical memory: 4 KiB frames, sparse and lazily backed.
 *
 * A frame has an identity (its PFN) before it has bytes. Allocating, pinning or mapping a
 * frame costs only a few bytes of metadata; its 4 KiB of data storage is taken from a
 * slab the first time something non-zero is written to it ("materialized"), and reads of
 * a frame that was never written return zeros. Frame contents that return to zero by a
 * page copy give their storage back, and a page copy shares the source's storage until
 * either frame is written (copy-on-write), so copying memory costs no memory.
 *
 * Layout (no per-frame objects):
 * - frames are grouped in chunks of 2^18 (1 GiB); a chunk is three typed arrays created
 *   on first use: `slot` (data slot or -1), `ref` (reference count, pins weigh
 *   {@link PIN_BIAS}), `purpose` (accounting class);
 * - data lives in slabs of 256 frames (1 MiB `ArrayBuffer`s) indexed by slot.
 *
 * Memory is little-endian, as on the modelled x86-64 and arm64 machines. PFNs are below
 * 2^31 (RAM up to 8 TiB), so a PFN fits an Int32Array and byte addresses are exact.
 *
 * @module
 */

import { IommuError } from '../errno.ts'
import type { FaultInjector } from './fault-inject.ts'

/** Frame size in bytes. */
export const FRAME_SIZE = 4096
/** log2 of {@link FRAME_SIZE}. */
export const FRAME_SHIFT = 12
/** Weight of one pin in a frame's reference count (the kernel's GUP_PIN_COUNTING_BIAS). */
export const PIN_BIAS = 1024

const CHUNK_SHIFT = 18
const CHUNK_FRAMES = 1 << CHUNK_SHIFT
const CHUNK_MASK = CHUNK_FRAMES - 1
const SLAB_SHIFT = 8
const SLAB_FRAMES = 1 << SLAB_SHIFT
const SLAB_MASK = SLAB_FRAMES - 1
const WORDS_PER_FRAME = FRAME_SIZE >>> 2
const NO_DATA = -1
/** PFNs below this are never handed out, so that PA 0 is never a valid allocation. */
const FIRST_PFN = 0x100

if (new Uint8Array(new Uint32Array([1]).buffer)[0] !== 1) {
  throw new Error('the IOMMU model needs a little-endian host')
}

/** What a frame is used for, for accounting (`frameStats().byPurpose`). */
export const FramePurpose = {
  /** Kernel allocations (hardware structures of drivers, iommufd internals). */
  KERNEL: 0,
  /** User memory: anonymous pages and memfd pages of processes. */
  USER: 1,
  /** IO page tables (the kernel's NR_IOMMU_PAGES / secondary page tables). */
  PGTABLE: 2,
  /** Structures an IOMMU's hardware reads: device/stream tables, queues, logs. */
  IOMMU_HW: 3,
} as const
/** One of the {@link FramePurpose} values. */
export type FramePurpose = (typeof FramePurpose)[keyof typeof FramePurpose]
const PURPOSE_NAMES = ['kernel', 'user', 'pgtable', 'iommuHw'] as const

interface Chunk {
  readonly slot: Int32Array
  readonly ref: Int32Array
  readonly purpose: Uint8Array
}

/** Options of {@link PhysicalMemory}. */
export interface PhysicalMemoryOptions {
  /** RAM size in bytes; a multiple of 4 KiB, at most 8 TiB. Default 1 TiB. */
  readonly size?: number
  /** Fault injection for allocations (fail-nth tests). */
  readonly faults?: FaultInjector
}

/** Frame accounting (`frameStats()`). */
export interface FrameStats {
  /** Frames allocated (identity given out). */
  readonly allocated: number
  /** Frames that hold data (some share one copy after `copyFrame`). */
  readonly materialized: number
  /** Distinct 4 KiB copies of data in use. */
  readonly dataSlots: number
  /** Bytes of data storage reserved in slabs (including free slots). */
  readonly storageBytes: number
  /** Sum of all pins over all frames. */
  readonly pins: number
  /** Allocated frames per purpose. */
  readonly byPurpose: { readonly [K in (typeof PURPOSE_NAMES)[number]]: number }
}

/**
 * The machine's RAM and its frame allocator.
 *
 * Addresses (`pa`) are byte addresses as `number` (exact: RAM is below 2^43). Accessing
 * memory outside RAM throws EFAULT.
 */
export class PhysicalMemory {
  /** Number of 4 KiB frames of RAM. */
  readonly totalFrames: number
  /** RAM size in bytes. */
  readonly size: number
  readonly #faults: FaultInjector | null
  readonly #chunks: (Chunk | undefined)[] = []
  readonly #slabs: Uint8Array[] = []
  readonly #slabs32: Uint32Array[] = []
  readonly #views32: (Uint32Array | undefined)[] = []
  #freeSlots = new Int32Array(1024)
  #freeSlotCount = 0
  #slotCount = 0
  /** Frames sharing each data slot (copy-on-write after `copyFrame`). */
  #slotRefs = new Int32Array(1024)
  #slotsInUse = 0
  #materialized = 0
  // Allocator: a bump pointer plus a stack of free extents.
  #next = FIRST_PFN
  #extStart: number[] = []
  #extCount: number[] = []
  #allocated = 0
  #pins = 0
  readonly #byPurpose = [0, 0, 0, 0]

  constructor(options: PhysicalMemoryOptions = {}) {
    const size = options.size ?? 2 ** 40
    if (!Number.isInteger(size) || size % FRAME_SIZE !== 0 || size <= FIRST_PFN * FRAME_SIZE) {
      throw new RangeError(`RAM size must be a multiple of 4 KiB above 1 MiB: ${size}`)
    }
    if (size > 2 ** 43) throw new RangeError(`RAM size above 8 TiB: ${size}`)
    this.size = size
    this.totalFrames = size / FRAME_SIZE
    this.#faults = options.faults ?? null
  }

  // ---------------------------------------------------------------- allocation

  /**
   * Allocate `count` physically contiguous frames whose first PFN is a multiple of
   * `align`. The frames read as zeros and hold no data storage until written; each
   * starts with a reference count of 1.
   *
   * @returns the first PFN
   * @throws ENOMEM - no such run is free (or fault injection fired)
   */
  allocFrames(count: number, purpose: FramePurpose, align = 1): number {
    if (!(count > 0) || !Number.isInteger(count)) throw new RangeError(`bad frame count ${count}`)
    if (this.#faults?.shouldFail('frame')) throw new IommuError('ENOMEM', 'injected frame failure')
    const pfn = this.#takeRun(count, align)
    if (pfn < 0) throw new IommuError('ENOMEM', `no ${count} contiguous free frames`)
    this.#initFrames(pfn, count, purpose)
    return pfn
  }

  /** Allocate one frame. @throws ENOMEM */
  allocFrame(purpose: FramePurpose): number {
    return this.allocFrames(1, purpose, 1)
  }

  #takeRun(count: number, align: number): number {
    const starts = this.#extStart
    const counts = this.#extCount
    // Reuse freed extents first, newest first (cheap for the common single-frame case).
    for (let i = starts.length - 1; i >= 0; i--) {
      const s = starts[i] as number
      const n = counts[i] as number
      const a = align === 1 ? s : Math.ceil(s / align) * align
      if (a + count > s + n) continue
      const tail = s + n - (a + count)
      if (a === s && tail === 0) {
        starts.splice(i, 1)
        counts.splice(i, 1)
      } else if (a === s) {
        starts[i] = a + count
        counts[i] = tail
      } else {
        counts[i] = a - s
        if (tail > 0) {
          starts.push(a + count)
          counts.push(tail)
        }
      }
      return a
    }
    const a = align === 1 ? this.#next : Math.ceil(this.#next / align) * align
    if (a + count > this.totalFrames) return -1
    if (a > this.#next) this.#pushExtent(this.#next, a - this.#next)
    this.#next = a + count
    return a
  }

  #pushExtent(pfn: number, count: number): void {
    const last = this.#extStart.length - 1
    if (last >= 0 && (this.#extStart[last] as number) + (this.#extCount[last] as number) === pfn) {
      this.#extCount[last] = (this.#extCount[last] as number) + count
      return
    }
    if (pfn + count === this.#next) {
      this.#next = pfn
      return
    }
    this.#extStart.push(pfn)
    this.#extCount.push(count)
  }

  #chunkFor(pfn: number): Chunk {
    const ci = pfn >>> CHUNK_SHIFT
    let c = this.#chunks[ci]
    if (c === undefined) {
      c = {
        slot: new Int32Array(CHUNK_FRAMES).fill(NO_DATA),
        ref: new Int32Array(CHUNK_FRAMES),
        purpose: new Uint8Array(CHUNK_FRAMES),
      }
      this.#chunks[ci] = c
    }
    return c
  }

  #initFrames(pfn: number, count: number, purpose: FramePurpose): void {
    let p = pfn
    const end = pfn + count
    while (p < end) {
      const c = this.#chunkFor(p)
      const i = p & CHUNK_MASK
      const n = Math.min(end - p, CHUNK_FRAMES - i)
      c.ref.fill(1, i, i + n)
      c.purpose.fill(purpose, i, i + n)
      p += n
    }
    this.#allocated += count
    this.#byPurpose[purpose] = (this.#byPurpose[purpose] as number) + count
  }

  /**
   * Take one more reference on an allocated frame (`get_page`).
   *
   * @throws EFAULT - the frame is not allocated
   */
  get(pfn: number): void {
    const c = this.#allocatedChunk(pfn)
    const i = pfn & CHUNK_MASK
    if ((c.ref[i] as number) % PIN_BIAS === PIN_BIAS - 1) {
      throw new RangeError(`frame ${pfn}: more than ${PIN_BIAS - 1} plain references`)
    }
    c.ref[i] = (c.ref[i] as number) + 1
  }

  /**
   * Drop a reference (`put_page`); the frame is freed, and its data storage released,
   * when the count reaches zero.
   */
  put(pfn: number): void {
    const c = this.#allocatedChunk(pfn)
    const i = pfn & CHUNK_MASK
    const r = (c.ref[i] as number) - 1
    c.ref[i] = r
    if (r === 0) this.#freeFrame(c, i, pfn)
  }

  /** Drop one reference on each of `count` frames starting at `pfn` (free a run). */
  freeFrames(pfn: number, count: number): void {
    for (let p = pfn; p < pfn + count; p++) this.put(p)
  }

  #freeFrame(c: Chunk, i: number, pfn: number): void {
    const slot = c.slot[i] as number
    if (slot >= 0) {
      this.#releaseSlot(slot)
      c.slot[i] = NO_DATA
    }
    const purpose = c.purpose[i] as number
    this.#byPurpose[purpose] = (this.#byPurpose[purpose] as number) - 1
    this.#allocated--
    this.#pushExtent(pfn, 1)
  }

  #allocatedChunk(pfn: number): Chunk {
    const c = this.#chunks[pfn >>> CHUNK_SHIFT]
    if (c === undefined || pfn >= this.totalFrames || (c.ref[pfn & CHUNK_MASK] as number) <= 0) {
      throw new IommuError('EFAULT', `frame 0x${pfn.toString(16)} is not allocated`)
    }
    return c
  }

  /** True when the frame is allocated. */
  isAllocated(pfn: number): boolean {
    const c = this.#chunks[pfn >>> CHUNK_SHIFT]
    return c !== undefined && pfn < this.totalFrames && (c.ref[pfn & CHUNK_MASK] as number) > 0
  }

  /** Reference count of a frame, pins included at {@link PIN_BIAS} each. */
  refCount(pfn: number): number {
    const c = this.#chunks[pfn >>> CHUNK_SHIFT]
    return c === undefined ? 0 : (c.ref[pfn & CHUNK_MASK] as number)
  }

  /** Pin an allocated frame for DMA (a long-term GUP pin): one pin = {@link PIN_BIAS}. */
  pin(pfn: number): void {
    const c = this.#allocatedChunk(pfn)
    const i = pfn & CHUNK_MASK
    c.ref[i] = (c.ref[i] as number) + PIN_BIAS
    this.#pins++
  }

  /** Drop a pin; frees the frame if that was its last reference. */
  unpin(pfn: number): void {
    const c = this.#allocatedChunk(pfn)
    const i = pfn & CHUNK_MASK
    const r = (c.ref[i] as number) - PIN_BIAS
    if (r < 0) throw new RangeError(`frame ${pfn} is not pinned`)
    c.ref[i] = r
    this.#pins--
    if (r === 0) this.#freeFrame(c, i, pfn)
  }

  /** Number of pins held on a frame. */
  pinCount(pfn: number): number {
    return Math.floor(this.refCount(pfn) / PIN_BIAS)
  }

  // ---------------------------------------------------------------- data storage

  /** A frame stops using `slot`; the slot is freed when no frame shares it any more. */
  #releaseSlot(slot: number): void {
    this.#materialized--
    const left = (this.#slotRefs[slot] as number) - 1
    this.#slotRefs[slot] = left
    if (left > 0) return
    this.#slotsInUse--
    if (this.#freeSlotCount === this.#freeSlots.length) {
      const bigger = new Int32Array(this.#freeSlots.length * 2)
      bigger.set(this.#freeSlots)
      this.#freeSlots = bigger
    }
    this.#freeSlots[this.#freeSlotCount++] = slot
  }

  /** A zeroed slot with one user (not counted as a materialized frame yet). */
  #newSlot(): number {
    this.#slotsInUse++
    if (this.#freeSlotCount > 0) {
      const slot = this.#freeSlots[--this.#freeSlotCount] as number
      const off = (slot & SLAB_MASK) * WORDS_PER_FRAME
      ;(this.#slabs32[slot >>> SLAB_SHIFT] as Uint32Array).fill(0, off, off + WORDS_PER_FRAME)
      this.#slotRefs[slot] = 1
      return slot
    }
    const slot = this.#slotCount++
    if ((slot & SLAB_MASK) === 0) {
      const buf = new ArrayBuffer(SLAB_FRAMES * FRAME_SIZE)
      this.#slabs.push(new Uint8Array(buf))
      this.#slabs32.push(new Uint32Array(buf))
    }
    if (slot === this.#slotRefs.length) {
      const bigger = new Int32Array(slot * 2)
      bigger.set(this.#slotRefs)
      this.#slotRefs = bigger
    }
    this.#slotRefs[slot] = 1
    return slot
  }

  #checkPfn(pfn: number): void {
    if (!(pfn >= 0 && pfn < this.totalFrames)) {
      throw new IommuError('EFAULT', `physical frame 0x${pfn.toString(16)} is outside RAM`)
    }
  }

  /** The data slot of a frame, or -1 when it reads as zeros. */
  #slotOf(pfn: number): number {
    const c = this.#chunks[pfn >>> CHUNK_SHIFT]
    return c === undefined ? NO_DATA : (c.slot[pfn & CHUNK_MASK] as number)
  }

  /** The frame's own data slot, ready to be written: created, or unshared (copy-on-write). */
  #materialize(pfn: number): number {
    this.#checkPfn(pfn)
    const c = this.#chunkFor(pfn)
    const i = pfn & CHUNK_MASK
    let slot = c.slot[i] as number
    if (slot < 0) {
      slot = this.#newSlot()
      this.#materialized++
      c.slot[i] = slot
    } else if ((this.#slotRefs[slot] as number) > 1) {
      const own = this.#newSlot()
      const so = (slot & SLAB_MASK) * FRAME_SIZE
      ;(this.#slabs[own >>> SLAB_SHIFT] as Uint8Array).set(
        (this.#slabs[slot >>> SLAB_SHIFT] as Uint8Array).subarray(so, so + FRAME_SIZE),
        (own & SLAB_MASK) * FRAME_SIZE,
      )
      this.#slotRefs[slot] = (this.#slotRefs[slot] as number) - 1
      c.slot[i] = own
      slot = own
    }
    return slot
  }

  /** True when the frame holds data storage (something non-zero was written). */
  isMaterialized(pfn: number): boolean {
    return this.#slotOf(pfn) >= 0
  }

  /**
   * The frame's 1024 little-endian 32-bit words, backed by storage: for page tables and
   * hardware structures, which are read and written a word at a time. Materializes the
   * frame. The view is cached per frame and stays valid until the frame's storage is
   * released (frame freed).
   */
  frameWords(pfn: number): Uint32Array {
    const slot = this.#materialize(pfn)
    let v = this.#views32[slot]
    if (v === undefined) {
      const off = (slot & SLAB_MASK) * WORDS_PER_FRAME
      v = (this.#slabs32[slot >>> SLAB_SHIFT] as Uint32Array).subarray(off, off + WORDS_PER_FRAME)
      this.#views32[slot] = v
    }
    return v
  }

  /**
   * The frame's bytes if it holds data, else null (it reads as zeros). A read-only peek:
   * does not materialize.
   */
  peekFrame(pfn: number): Uint8Array | null {
    const slot = this.#slotOf(pfn)
    if (slot < 0) return null
    const off = (slot & SLAB_MASK) * FRAME_SIZE
    return (this.#slabs[slot >>> SLAB_SHIFT] as Uint8Array).subarray(off, off + FRAME_SIZE)
  }

  /** Read a little-endian u32 at a 4-byte aligned address. */
  read32(pa: number): number {
    const pfn = Math.floor(pa / FRAME_SIZE)
    const off = pa - pfn * FRAME_SIZE
    if ((off & 3) !== 0) throw new RangeError(`unaligned 32-bit read at 0x${pa.toString(16)}`)
    this.#checkPfn(pfn)
    const slot = this.#slotOf(pfn)
    if (slot < 0) return 0
    return (this.#slabs32[slot >>> SLAB_SHIFT] as Uint32Array)[
      (slot & SLAB_MASK) * WORDS_PER_FRAME + (off >>> 2)
    ] as number
  }

  /** Write a little-endian u32 at a 4-byte aligned address. */
  write32(pa: number, value: number): void {
    const pfn = Math.floor(pa / FRAME_SIZE)
    const off = pa - pfn * FRAME_SIZE
    if ((off & 3) !== 0) throw new RangeError(`unaligned 32-bit write at 0x${pa.toString(16)}`)
    if (value === 0 && this.#slotOf(pfn) < 0) {
      this.#checkPfn(pfn)
      return
    }
    const slot = this.#materialize(pfn)
    ;(this.#slabs32[slot >>> SLAB_SHIFT] as Uint32Array)[
      (slot & SLAB_MASK) * WORDS_PER_FRAME + (off >>> 2)
    ] = value >>> 0
  }

  /** Read a little-endian u64 at an 8-byte aligned address. */
  read64(pa: number): bigint {
    if (pa % 8 !== 0) throw new RangeError(`unaligned 64-bit read at 0x${pa.toString(16)}`)
    return (BigInt(this.read32(pa + 4)) << 32n) | BigInt(this.read32(pa))
  }

  /** Write a little-endian u64 at an 8-byte aligned address. */
  write64(pa: number, value: bigint): void {
    if (pa % 8 !== 0) throw new RangeError(`unaligned 64-bit write at 0x${pa.toString(16)}`)
    this.write32(pa, Number(value & 0xffff_ffffn))
    this.write32(pa + 4, Number((value >> 32n) & 0xffff_ffffn))
  }

  /** Copy `dst.length` bytes from physical address `pa` into `dst`. */
  readBytes(pa: number, dst: Uint8Array): void {
    let done = 0
    let pfn = Math.floor(pa / FRAME_SIZE)
    let off = pa - pfn * FRAME_SIZE
    while (done < dst.length) {
      this.#checkPfn(pfn)
      const n = Math.min(FRAME_SIZE - off, dst.length - done)
      const slot = this.#slotOf(pfn)
      if (slot < 0) {
        dst.fill(0, done, done + n)
      } else {
        const base = (slot & SLAB_MASK) * FRAME_SIZE + off
        dst.set((this.#slabs[slot >>> SLAB_SHIFT] as Uint8Array).subarray(base, base + n), done)
      }
      done += n
      pfn++
      off = 0
    }
  }

  /**
   * Copy `src` to physical address `pa`. Zeros written to a frame that holds no data
   * leave it without storage.
   */
  writeBytes(pa: number, src: Uint8Array): void {
    let done = 0
    let pfn = Math.floor(pa / FRAME_SIZE)
    let off = pa - pfn * FRAME_SIZE
    while (done < src.length) {
      this.#checkPfn(pfn)
      const n = Math.min(FRAME_SIZE - off, src.length - done)
      const part = src.subarray(done, done + n)
      if (this.#slotOf(pfn) >= 0 || !isZero(part)) {
        const slot = this.#materialize(pfn)
        ;(this.#slabs[slot >>> SLAB_SHIFT] as Uint8Array).set(
          part,
          (slot & SLAB_MASK) * FRAME_SIZE + off,
        )
      }
      done += n
      pfn++
      off = 0
    }
  }

  /** Fill `length` bytes at `pa` with `value` (0..255). */
  fill(pa: number, length: number, value: number): void {
    let done = 0
    let pfn = Math.floor(pa / FRAME_SIZE)
    let off = pa - pfn * FRAME_SIZE
    while (done < length) {
      this.#checkPfn(pfn)
      const n = Math.min(FRAME_SIZE - off, length - done)
      if (value !== 0 || this.#slotOf(pfn) >= 0) {
        const slot = this.#materialize(pfn)
        const base = (slot & SLAB_MASK) * FRAME_SIZE + off
        ;(this.#slabs[slot >>> SLAB_SHIFT] as Uint8Array).fill(value, base, base + n)
      }
      done += n
      pfn++
      off = 0
    }
  }

  /**
   * Copy frame `src` onto frame `dst`. The two frames then share one data slot until
   * either is written (copy-on-write), so a copy costs no storage; a source that reads as
   * zeros releases the destination's storage instead.
   */
  copyFrame(dst: number, src: number): void {
    this.#checkPfn(dst)
    this.#checkPfn(src)
    const s = this.#slotOf(src)
    const c = this.#chunkFor(dst)
    const i = dst & CHUNK_MASK
    const d = c.slot[i] as number
    if (d === s) return
    if (d >= 0) this.#releaseSlot(d)
    c.slot[i] = s
    if (s >= 0) {
      this.#slotRefs[s] = (this.#slotRefs[s] as number) + 1
      this.#materialized++
    }
  }

  /** True when two frames hold the same bytes. */
  framesEqual(a: number, b: number): boolean {
    if (this.#slotOf(a) === this.#slotOf(b)) return true
    const x = this.peekFrame(a)
    const y = this.peekFrame(b)
    if (x === null && y === null) return true
    if (x === null) return isZero(y as Uint8Array)
    if (y === null) return isZero(x)
    const xw = new Uint32Array(x.buffer, x.byteOffset, WORDS_PER_FRAME)
    const yw = new Uint32Array(y.buffer, y.byteOffset, WORDS_PER_FRAME)
    for (let i = 0; i < WORDS_PER_FRAME; i++) if (xw[i] !== yw[i]) return false
    return true
  }

  /** Frame accounting. */
  frameStats(): FrameStats {
    const b = this.#byPurpose
    return {
      allocated: this.#allocated,
      materialized: this.#materialized,
      dataSlots: this.#slotsInUse,
      storageBytes: this.#slabs.length * SLAB_FRAMES * FRAME_SIZE,
      pins: this.#pins,
      byPurpose: {
        kernel: b[0] as number,
        user: b[1] as number,
        pgtable: b[2] as number,
        iommuHw: b[3] as number,
      },
    }
  }
}

/** True when every byte of `bytes` is zero. */
export function isZero(bytes: Uint8Array): boolean {
  if ((bytes.byteOffset & 3) === 0 && (bytes.length & 3) === 0) {
    const w = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.length >>> 2)
    for (let i = 0; i < w.length; i++) if (w[i] !== 0) return false
    return true
  }
  for (let i = 0; i < bytes.length; i++) if (bytes[i] !== 0) return false
  return true
}

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
 * Layout (no per-frame objects; a few bytes per 2 MiB for memory used in big runs):
 * - frames are grouped in chunks of 2^18 (1 GiB), each cut in 512 blocks of 512 frames
 *   (2 MiB). A block whose frames all have the same reference count and purpose — a free
 *   block, a THP-sized run of guest memory, the same run pinned — is kept as one value;
 *   a block whose frames differ is expanded into per-frame arrays (`ref`, pins weigh
 *   {@link PIN_BIAS}, and `purpose`, the accounting class) in a pool, and collapsed back
 *   when an operation over the whole block leaves its frames alike again;
 * - the data slot of each frame (or -1) is kept per group of 64 frames, in a pool, for
 *   the groups where some frame holds data;
 * - data lives in slabs of 256 frames (1 MiB `ArrayBuffer`s) indexed by slot.
 *
 * Range operations ({@link PhysicalMemory.pinRange}, {@link PhysicalMemory.unpinRange},
 * {@link PhysicalMemory.putRange}) leave memory exactly as the same per-frame calls in
 * ascending order would (reference counts, free extents, accounting), a whole block at a
 * time.
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
/** Frames per block (a 2 MiB run): the unit of uniform metadata. */
const BLOCK_SHIFT = 9
const BLOCK_FRAMES = 1 << BLOCK_SHIFT
const BLOCK_MASK = BLOCK_FRAMES - 1
const BLOCKS_PER_CHUNK = 1 << (CHUNK_SHIFT - BLOCK_SHIFT)
/** Frames per slot group: the unit of data-slot metadata. */
const GROUP_SHIFT = 6
const GROUP_FRAMES = 1 << GROUP_SHIFT
const GROUP_MASK = GROUP_FRAMES - 1
const GROUPS_PER_CHUNK = 1 << (CHUNK_SHIFT - GROUP_SHIFT)
/** Expanded blocks per pool page, and slot groups per pool page. */
const EXP_PAGE_SHIFT = 5
const EXP_PAGE_MASK = (1 << EXP_PAGE_SHIFT) - 1
const GRP_PAGE_SHIFT = 8
const GRP_PAGE_MASK = (1 << GRP_PAGE_SHIFT) - 1
const SLAB_SHIFT = 8
const SLAB_FRAMES = 1 << SLAB_SHIFT
const SLAB_MASK = SLAB_FRAMES - 1
const WORDS_PER_FRAME = FRAME_SIZE >>> 2
/** Slabs carved from one host buffer once a machine holds more than a few MiB of data. */
const SLABS_PER_BUFFER = 16
const NO_DATA = -1
/**
 * In a frame's slot entry: the slot may be shared (set by a page copy, cleared by the
 * first write that finds the frame alone on it), so that a write to a frame known to own
 * its slot skips the share count.
 */
const MAYBE_SHARED = 1 << 30
const SLOT_MASK = MAYBE_SHARED - 1
/** `Chunk.exp` of a block kept as one value. */
const UNIFORM = -1
/** Entries of the frameWords cache (a power of two). */
const VIEW_CACHE = 16384
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

/** One GiB of frames: per-block uniform values, expansions and slot groups. */
interface Chunk {
  /** Reference count of every frame of a uniform block. */
  readonly ref: Int32Array
  /** Purpose of every frame of a uniform block. */
  readonly purpose: Uint8Array
  /** Per block: {@link UNIFORM}, or the index of its expansion in the pool. */
  readonly exp: Int32Array
  /** Per group of 64 frames: its slot group in the pool, or -1 (no frame holds data). */
  readonly group: Int32Array
}

/** Options of {@link PhysicalMemory}. */
export interface PhysicalMemoryOptions {
  /** RAM size in bytes; a multiple of 4 KiB, at most 8 TiB. Default 1 TiB. */
  readonly size?: number
  /** Fault injection for allocations (fail-nth tests). */
  readonly faults?: FaultInjector
  /** Where the bulk buffers of data storage come from (default: allocated when needed). */
  readonly storage?: StorageSource
}

/**
 * A supplier of the bulk buffers that frame data lives in. Memory asks for one each
 * time it needs more storage once it holds 16 MiB of data; a source can hand out buffers
 * whose pages the host has already faulted in (e.g. by a worker thread), so the first
 * write of a frame does not wait for the host's page fault. A source changes no result:
 * the buffers read as zeros either way.
 */
export interface StorageSource {
  /**
   * A zero-filled `ArrayBuffer` of exactly `bytes` bytes that nothing else uses, or null
   * when none is ready (memory then allocates its own). Anything else is ignored; a source
   * that throws is not asked again.
   */
  take(bytes: number): ArrayBuffer | null
  /**
   * The buffers are allocated by another thread, whose allocator counts them (this
   * thread's `process.memoryUsage().arrayBuffers` does not).
   */
  readonly otherThread?: boolean
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
  /** Of {@link storageBytes}, the bytes that came from the {@link StorageSource}. */
  readonly sourcedBytes: number
  /** Sum of all pins over all frames. */
  readonly pins: number
  /** Allocated frames per purpose. */
  readonly byPurpose: { readonly [K in (typeof PURPOSE_NAMES)[number]]: number }
}

/** Bytes of frame metadata (`PhysicalMemory.metadataBytes()`). */
export interface FrameMetadataBytes {
  /** Per-chunk arrays: uniform block values, expansion and slot-group directories. */
  readonly chunks: number
  /** Pool pages of expanded blocks (per-frame reference counts and purposes). */
  readonly expanded: number
  /** Pool pages of slot groups and the per-slot share counts. */
  readonly slots: number
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
  #storage: StorageSource | null
  /** Bulk storage buffers that came from the {@link StorageSource}. */
  #sourced = 0
  readonly #chunks: (Chunk | undefined)[] = []
  // Pool of expanded blocks: pages of 32 blocks (per-frame ref and purpose).
  readonly #expRef: Int32Array[] = []
  readonly #expPurpose: Uint8Array[] = []
  #expFree: number[] = []
  #expCount = 0
  // Pool of slot groups: pages of 256 groups of 64 slots; frames with data per group.
  readonly #grpSlots: Int32Array[] = []
  #grpUsed = new Int32Array(256)
  #grpFree: number[] = []
  #grpCount = 0
  readonly #slabs: Uint8Array[] = []
  readonly #slabs32: Uint32Array[] = []
  readonly #views32: (Uint32Array | undefined)[] = []
  /**
   * A direct-mapped cache of {@link frameWords} answers by PFN (page tables and hardware
   * structures are read a word at a time, walk after walk): PFN, or -1, and the view. An
   * entry is dropped whenever its frame's slot changes or becomes shared.
   */
  readonly #cachePfn = new Int32Array(VIEW_CACHE).fill(-1)
  readonly #cacheView: (Uint32Array | undefined)[] = new Array(VIEW_CACHE)
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
    this.#storage = options.storage ?? null
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

  /**
   * Return `count` frames freed one at a time in ascending order: what `count` calls of
   * `#pushExtent(p, 1)` leave (only the first can give back to the bump pointer).
   */
  #pushFreedRun(pfn: number, count: number): void {
    const last = this.#extStart.length - 1
    if (last >= 0 && (this.#extStart[last] as number) + (this.#extCount[last] as number) === pfn) {
      this.#extCount[last] = (this.#extCount[last] as number) + count
    } else if (count === 1 && pfn + 1 === this.#next) {
      this.#next = pfn
    } else {
      this.#extStart.push(pfn)
      this.#extCount.push(count)
    }
  }

  #chunkFor(pfn: number): Chunk {
    const ci = pfn >>> CHUNK_SHIFT
    let c = this.#chunks[ci]
    if (c === undefined) {
      c = {
        ref: new Int32Array(BLOCKS_PER_CHUNK),
        purpose: new Uint8Array(BLOCKS_PER_CHUNK),
        exp: new Int32Array(BLOCKS_PER_CHUNK).fill(UNIFORM),
        group: new Int32Array(GROUPS_PER_CHUNK).fill(-1),
      }
      this.#chunks[ci] = c
    }
    return c
  }

  // ------------------------------------------------------- per-frame metadata

  /** Give block `b` of `c` per-frame arrays holding its uniform values; returns the index. */
  #expand(c: Chunk, b: number): number {
    let e = c.exp[b] as number
    if (e !== UNIFORM) return e
    if (this.#expFree.length > 0) {
      e = this.#expFree.pop() as number
    } else {
      e = this.#expCount++
      if ((e & EXP_PAGE_MASK) === 0) {
        this.#expRef.push(new Int32Array(BLOCK_FRAMES << EXP_PAGE_SHIFT))
        this.#expPurpose.push(new Uint8Array(BLOCK_FRAMES << EXP_PAGE_SHIFT))
      }
    }
    const off = (e & EXP_PAGE_MASK) << BLOCK_SHIFT
    ;(this.#expRef[e >>> EXP_PAGE_SHIFT] as Int32Array).fill(
      c.ref[b] as number,
      off,
      off + BLOCK_FRAMES,
    )
    ;(this.#expPurpose[e >>> EXP_PAGE_SHIFT] as Uint8Array).fill(
      c.purpose[b] as number,
      off,
      off + BLOCK_FRAMES,
    )
    c.exp[b] = e
    return e
  }

  /** Collapse an expanded block whose frames are alike again into one value. */
  #tryCollapse(c: Chunk, b: number): void {
    const e = c.exp[b] as number
    if (e === UNIFORM) return
    const refs = this.#expRef[e >>> EXP_PAGE_SHIFT] as Int32Array
    const purposes = this.#expPurpose[e >>> EXP_PAGE_SHIFT] as Uint8Array
    const off = (e & EXP_PAGE_MASK) << BLOCK_SHIFT
    const r = refs[off] as number
    const p = purposes[off] as number
    for (let i = off + 1; i < off + BLOCK_FRAMES; i++) {
      if (refs[i] !== r || purposes[i] !== p) return
    }
    c.ref[b] = r
    c.purpose[b] = p
    c.exp[b] = UNIFORM
    this.#expFree.push(e)
  }

  /** Reference count of frame `pfn` of chunk `c`. */
  #refIn(c: Chunk, pfn: number): number {
    const b = (pfn & CHUNK_MASK) >>> BLOCK_SHIFT
    const e = c.exp[b] as number
    if (e === UNIFORM) return c.ref[b] as number
    return (this.#expRef[e >>> EXP_PAGE_SHIFT] as Int32Array)[
      ((e & EXP_PAGE_MASK) << BLOCK_SHIFT) | (pfn & BLOCK_MASK)
    ] as number
  }

  /** Purpose of frame `pfn` of chunk `c`. */
  #purposeIn(c: Chunk, pfn: number): number {
    const b = (pfn & CHUNK_MASK) >>> BLOCK_SHIFT
    const e = c.exp[b] as number
    if (e === UNIFORM) return c.purpose[b] as number
    return (this.#expPurpose[e >>> EXP_PAGE_SHIFT] as Uint8Array)[
      ((e & EXP_PAGE_MASK) << BLOCK_SHIFT) | (pfn & BLOCK_MASK)
    ] as number
  }

  /** Set one frame's reference count (expanding its block if the frames then differ). */
  #setRef(c: Chunk, pfn: number, r: number): void {
    const b = (pfn & CHUNK_MASK) >>> BLOCK_SHIFT
    let e = c.exp[b] as number
    if (e === UNIFORM) {
      if (c.ref[b] === r) return
      e = this.#expand(c, b)
    }
    ;(this.#expRef[e >>> EXP_PAGE_SHIFT] as Int32Array)[
      ((e & EXP_PAGE_MASK) << BLOCK_SHIFT) | (pfn & BLOCK_MASK)
    ] = r
  }

  #initFrames(pfn: number, count: number, purpose: FramePurpose): void {
    let p = pfn
    const end = pfn + count
    while (p < end) {
      const c = this.#chunkFor(p)
      const b = (p & CHUNK_MASK) >>> BLOCK_SHIFT
      const i = p & BLOCK_MASK
      const n = Math.min(end - p, BLOCK_FRAMES - i)
      if (n === BLOCK_FRAMES) {
        // The whole block: one value (its frames were all free).
        const e = c.exp[b] as number
        if (e !== UNIFORM) {
          c.exp[b] = UNIFORM
          this.#expFree.push(e)
        }
        c.ref[b] = 1
        c.purpose[b] = purpose
      } else {
        const e = this.#expand(c, b)
        const off = ((e & EXP_PAGE_MASK) << BLOCK_SHIFT) | i
        ;(this.#expRef[e >>> EXP_PAGE_SHIFT] as Int32Array).fill(1, off, off + n)
        ;(this.#expPurpose[e >>> EXP_PAGE_SHIFT] as Uint8Array).fill(purpose, off, off + n)
      }
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
    const r = this.#refIn(c, pfn)
    if (r % PIN_BIAS === PIN_BIAS - 1) {
      throw new RangeError(`frame ${pfn}: more than ${PIN_BIAS - 1} plain references`)
    }
    this.#setRef(c, pfn, r + 1)
  }

  /**
   * Drop a reference (`put_page`); the frame is freed, and its data storage released,
   * when the count reaches zero.
   */
  put(pfn: number): void {
    const c = this.#allocatedChunk(pfn)
    const r = this.#refIn(c, pfn) - 1
    this.#setRef(c, pfn, r)
    if (r === 0) this.#freeFrame(c, pfn)
  }

  /** Drop one reference on each of `count` frames starting at `pfn` (free a run). */
  freeFrames(pfn: number, count: number): void {
    this.putRange(pfn, count)
  }

  /**
   * Drop one reference on each of `count` frames from `pfn`, as `count` calls of
   * {@link put} in ascending order would. All frames are checked first: nothing changes
   * when one is not allocated.
   *
   * @throws EFAULT - a frame of the run is not allocated
   */
  putRange(pfn: number, count: number): void {
    this.#addRange(pfn, count, -1)
  }

  #freeFrame(c: Chunk, pfn: number): void {
    this.#releaseFrameData(c, pfn)
    const purpose = this.#purposeIn(c, pfn)
    // A free frame's purpose is 0, so that a block freed frame by frame can collapse.
    const e = c.exp[(pfn & CHUNK_MASK) >>> BLOCK_SHIFT] as number
    if (e !== UNIFORM) {
      ;(this.#expPurpose[e >>> EXP_PAGE_SHIFT] as Uint8Array)[
        ((e & EXP_PAGE_MASK) << BLOCK_SHIFT) | (pfn & BLOCK_MASK)
      ] = 0
    }
    this.#byPurpose[purpose] = (this.#byPurpose[purpose] as number) - 1
    this.#allocated--
    this.#pushExtent(pfn, 1)
  }

  /** Release the data slot of a frame being freed. */
  #releaseFrameData(c: Chunk, pfn: number): void {
    const gi = (pfn & CHUNK_MASK) >>> GROUP_SHIFT
    const g = c.group[gi] as number
    if (g < 0) return
    const slots = this.#grpSlots[g >>> GRP_PAGE_SHIFT] as Int32Array
    const at = ((g & GRP_PAGE_MASK) << GROUP_SHIFT) | (pfn & GROUP_MASK)
    const slot = slots[at] as number
    if (slot < 0) return
    this.#uncache(pfn)
    this.#releaseSlot(slot & SLOT_MASK)
    slots[at] = NO_DATA
    this.#groupLost(c, gi, g)
  }

  #allocatedChunk(pfn: number): Chunk {
    const c = pfn < this.totalFrames ? this.#chunks[pfn >>> CHUNK_SHIFT] : undefined
    if (c === undefined || !(pfn >= 0) || this.#refIn(c, pfn) <= 0) {
      throw new IommuError('EFAULT', `frame 0x${pfn.toString(16)} is not allocated`)
    }
    return c
  }

  /** True when the frame is allocated. */
  isAllocated(pfn: number): boolean {
    const c = pfn >= 0 && pfn < this.totalFrames ? this.#chunks[pfn >>> CHUNK_SHIFT] : undefined
    return c !== undefined && this.#refIn(c, pfn) > 0
  }

  /** Reference count of a frame, pins included at {@link PIN_BIAS} each. */
  refCount(pfn: number): number {
    const c = pfn >= 0 && pfn < this.totalFrames ? this.#chunks[pfn >>> CHUNK_SHIFT] : undefined
    return c === undefined ? 0 : this.#refIn(c, pfn)
  }

  /** Pin an allocated frame for DMA (a long-term GUP pin): one pin = {@link PIN_BIAS}. */
  pin(pfn: number): void {
    const c = this.#allocatedChunk(pfn)
    this.#setRef(c, pfn, this.#refIn(c, pfn) + PIN_BIAS)
    this.#pins++
  }

  /** Drop a pin; frees the frame if that was its last reference. */
  unpin(pfn: number): void {
    const c = this.#allocatedChunk(pfn)
    const r = this.#refIn(c, pfn) - PIN_BIAS
    if (r < 0) throw new RangeError(`frame ${pfn} is not pinned`)
    this.#setRef(c, pfn, r)
    this.#pins--
    if (r === 0) this.#freeFrame(c, pfn)
  }

  /**
   * Pin `count` frames from `pfn`, as `count` calls of {@link pin}. All frames are checked
   * first: nothing is pinned when one is not allocated.
   *
   * @throws EFAULT - a frame of the run is not allocated
   */
  pinRange(pfn: number, count: number): void {
    this.#addRange(pfn, count, PIN_BIAS)
  }

  /**
   * Unpin `count` frames from `pfn`, as `count` calls of {@link unpin} in ascending order
   * (freeing the frames whose last reference that was). All frames are checked first.
   *
   * @throws EFAULT - a frame is not allocated; RangeError - a frame is not pinned
   */
  unpinRange(pfn: number, count: number): void {
    this.#addRange(pfn, count, -PIN_BIAS)
  }

  /**
   * Add `delta` to the reference count of `count` frames from `pfn` (a pin, an unpin or a
   * put of each), freeing those that reach zero, in ascending order; whole uniform blocks
   * at a time. Every frame is checked before anything changes.
   */
  #addRange(pfn: number, count: number, delta: number): void {
    if (!Number.isSafeInteger(pfn) || !Number.isSafeInteger(count) || count < 0) {
      throw new RangeError(`bad frame run ${pfn} +${count}`)
    }
    const end = pfn + count
    // Check: every frame allocated (and pinned, for an unpin).
    for (let p = pfn; p < end; ) {
      const c = this.#allocatedChunk(p)
      const b = (p & CHUNK_MASK) >>> BLOCK_SHIFT
      const n = Math.min(end - p, BLOCK_FRAMES - (p & BLOCK_MASK))
      if (c.exp[b] === UNIFORM) {
        if (delta < 0 && (c.ref[b] as number) + delta < 0) {
          throw new RangeError(`frame ${p} is not pinned`)
        }
      } else {
        for (let q = p; q < p + n; q++) {
          const r = this.#refIn(c, q)
          if (r <= 0) throw new IommuError('EFAULT', `frame 0x${q.toString(16)} is not allocated`)
          if (r + delta < 0) throw new RangeError(`frame ${q} is not pinned`)
        }
      }
      p += n
    }
    if (delta === PIN_BIAS) this.#pins += count
    else if (delta === -PIN_BIAS) this.#pins -= count
    for (let p = pfn; p < end; ) {
      const c = this.#chunks[p >>> CHUNK_SHIFT] as Chunk
      const b = (p & CHUNK_MASK) >>> BLOCK_SHIFT
      const n = Math.min(end - p, BLOCK_FRAMES - (p & BLOCK_MASK))
      if (c.exp[b] === UNIFORM && n === BLOCK_FRAMES) {
        const r = (c.ref[b] as number) + delta
        c.ref[b] = r
        if (r === 0) this.#freeBlock(c, b, p)
      } else {
        for (let q = p; q < p + n; q++) {
          const r = this.#refIn(c, q) + delta
          this.#setRef(c, q, r)
          if (r === 0) this.#freeFrame(c, q)
        }
        if (n === BLOCK_FRAMES) this.#tryCollapse(c, b)
      }
      p += n
    }
  }

  /** Free the 512 frames of uniform block `b` (first PFN `pfn`), which reached zero. */
  #freeBlock(c: Chunk, b: number, pfn: number): void {
    const g0 = b << (BLOCK_SHIFT - GROUP_SHIFT)
    for (let gi = g0; gi < g0 + (BLOCK_FRAMES >>> GROUP_SHIFT); gi++) {
      if ((c.group[gi] as number) < 0) continue
      const first = (pfn & ~CHUNK_MASK) + (gi << GROUP_SHIFT)
      for (let q = first; q < first + GROUP_FRAMES; q++) this.#releaseFrameData(c, q)
    }
    const purpose = c.purpose[b] as number
    c.purpose[b] = 0
    this.#byPurpose[purpose] = (this.#byPurpose[purpose] as number) - BLOCK_FRAMES
    this.#allocated -= BLOCK_FRAMES
    this.#pushFreedRun(pfn, BLOCK_FRAMES)
  }

  /** Number of pins held on a frame. */
  pinCount(pfn: number): number {
    return Math.floor(this.refCount(pfn) / PIN_BIAS)
  }

  /** Bytes of frame metadata held now (for memory accounting in benchmarks). */
  metadataBytes(): FrameMetadataBytes {
    let chunks = 0
    for (const c of this.#chunks) {
      if (c !== undefined) {
        chunks += c.ref.byteLength + c.purpose.byteLength + c.exp.byteLength + c.group.byteLength
      }
    }
    let expanded = 0
    for (let i = 0; i < this.#expRef.length; i++) {
      expanded +=
        (this.#expRef[i] as Int32Array).byteLength + (this.#expPurpose[i] as Uint8Array).byteLength
    }
    let slots = this.#grpUsed.byteLength + this.#slotRefs.byteLength + this.#freeSlots.byteLength
    for (const s of this.#grpSlots) slots += s.byteLength
    return { chunks, expanded, slots }
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

  /**
   * A slot with one user (not counted as a materialized frame yet): zeroed, unless the
   * caller overwrites all of it (`zero` false).
   */
  #newSlot(zero: boolean): number {
    this.#slotsInUse++
    if (this.#freeSlotCount > 0) {
      const slot = this.#freeSlots[--this.#freeSlotCount] as number
      if (zero) {
        const off = (slot & SLAB_MASK) * WORDS_PER_FRAME
        ;(this.#slabs32[slot >>> SLAB_SHIFT] as Uint32Array).fill(0, off, off + WORDS_PER_FRAME)
      }
      this.#slotRefs[slot] = 1
      return slot
    }
    const slot = this.#slotCount++
    if (slot >>> SLAB_SHIFT >= this.#slabs.length) this.#growSlabs()
    if (slot === this.#slotRefs.length) {
      const bigger = new Int32Array(slot * 2)
      bigger.set(this.#slotRefs)
      this.#slotRefs = bigger
    }
    this.#slotRefs[slot] = 1
    return slot
  }

  /**
   * Reserve storage for more slots: one slab while the machine holds little data, then 16
   * slabs from one 16 MiB buffer at a time (fewer, larger allocations from the host).
   */
  #growSlabs(): void {
    const n = this.#slabs.length < SLABS_PER_BUFFER ? 1 : SLABS_PER_BUFFER
    const bytes = n * SLAB_FRAMES * FRAME_SIZE
    let buf: ArrayBuffer | null = null
    if (n === SLABS_PER_BUFFER && this.#storage !== null) {
      try {
        buf = this.#storage.take(bytes)
      } catch {
        // A source that throws (e.g. cannot start its worker) is dropped: memory grows on
        // its own, and the write that needed the storage goes on.
        this.#storage = null
      }
    }
    // Only a buffer of the right size, not shared (typed arrays over a SharedArrayBuffer
    // copy slower) and not detached is used.
    if (buf instanceof ArrayBuffer && buf.byteLength === bytes) this.#sourced++
    else buf = new ArrayBuffer(bytes)
    for (let i = 0; i < n; i++) {
      const off = i * SLAB_FRAMES * FRAME_SIZE
      this.#slabs.push(new Uint8Array(buf, off, SLAB_FRAMES * FRAME_SIZE))
      this.#slabs32.push(new Uint32Array(buf, off, SLAB_FRAMES * WORDS_PER_FRAME))
    }
  }

  #checkPfn(pfn: number): void {
    if (!(pfn >= 0 && pfn < this.totalFrames)) {
      throw new IommuError('EFAULT', `physical frame 0x${pfn.toString(16)} is outside RAM`)
    }
  }

  /** The data slot of a frame, or -1 when it reads as zeros. */
  #slotOf(pfn: number): number {
    const e = this.#slotEntry(pfn)
    return e < 0 ? e : e & SLOT_MASK
  }

  /** The frame's slot entry: -1, or the slot with the {@link MAYBE_SHARED} hint. */
  #slotEntry(pfn: number): number {
    const c = this.#chunks[pfn >>> CHUNK_SHIFT]
    if (c === undefined) return NO_DATA
    const g = c.group[(pfn & CHUNK_MASK) >>> GROUP_SHIFT] as number
    if (g < 0) return NO_DATA
    return (this.#grpSlots[g >>> GRP_PAGE_SHIFT] as Int32Array)[
      ((g & GRP_PAGE_MASK) << GROUP_SHIFT) | (pfn & GROUP_MASK)
    ] as number
  }

  /** Drop `pfn` from the frameWords cache. */
  #uncache(pfn: number): void {
    const k = pfn & (VIEW_CACHE - 1)
    if (this.#cachePfn[k] === pfn) this.#cachePfn[k] = -1
  }

  /** The slot group of group `gi` of `c`, created (all -1) when absent. */
  #groupFor(c: Chunk, gi: number): number {
    let g = c.group[gi] as number
    if (g >= 0) return g
    if (this.#grpFree.length > 0) {
      g = this.#grpFree.pop() as number
    } else {
      g = this.#grpCount++
      if ((g & GRP_PAGE_MASK) === 0) {
        this.#grpSlots.push(new Int32Array(GROUP_FRAMES << GRP_PAGE_SHIFT))
      }
      if (g === this.#grpUsed.length) {
        const bigger = new Int32Array(g * 2)
        bigger.set(this.#grpUsed)
        this.#grpUsed = bigger
      }
    }
    const off = (g & GRP_PAGE_MASK) << GROUP_SHIFT
    ;(this.#grpSlots[g >>> GRP_PAGE_SHIFT] as Int32Array).fill(NO_DATA, off, off + GROUP_FRAMES)
    this.#grpUsed[g] = 0
    c.group[gi] = g
    return g
  }

  /** A frame of group `g` (index `gi` in `c`) stopped holding data. */
  #groupLost(c: Chunk, gi: number, g: number): void {
    const left = (this.#grpUsed[g] as number) - 1
    this.#grpUsed[g] = left
    if (left === 0) {
      c.group[gi] = -1
      this.#grpFree.push(g)
    }
  }

  /**
   * Point frame `pfn` (of chunk `c`) at slot entry `slot` (or {@link NO_DATA}) without
   * touching slot reference counts; returns the entry it had (with its hint bit).
   */
  #setSlot(c: Chunk, pfn: number, slot: number): number {
    this.#uncache(pfn)
    const gi = (pfn & CHUNK_MASK) >>> GROUP_SHIFT
    let g = c.group[gi] as number
    if (g < 0) {
      if (slot === NO_DATA) return NO_DATA
      g = this.#groupFor(c, gi)
    }
    const slots = this.#grpSlots[g >>> GRP_PAGE_SHIFT] as Int32Array
    const at = ((g & GRP_PAGE_MASK) << GROUP_SHIFT) | (pfn & GROUP_MASK)
    const old = slots[at] as number
    slots[at] = slot
    if (old < 0 && slot >= 0) this.#grpUsed[g] = (this.#grpUsed[g] as number) + 1
    else if (old >= 0 && slot < 0) this.#groupLost(c, gi, g)
    return old
  }

  /**
   * The frame's own data slot, ready to be written: created, or unshared (copy-on-write).
   * With `whole` the caller overwrites the whole frame, so the old bytes are not kept.
   */
  #materialize(pfn: number, whole = false): number {
    this.#checkPfn(pfn)
    const c = this.#chunkFor(pfn)
    let slot = this.#slotOf(pfn)
    if (slot < 0) {
      slot = this.#newSlot(!whole)
      this.#materialized++
      this.#setSlot(c, pfn, slot)
    } else if ((this.#slotRefs[slot] as number) > 1) {
      const own = this.#newSlot(false)
      if (!whole) {
        const so = (slot & SLAB_MASK) * FRAME_SIZE
        ;(this.#slabs[own >>> SLAB_SHIFT] as Uint8Array).set(
          (this.#slabs[slot >>> SLAB_SHIFT] as Uint8Array).subarray(so, so + FRAME_SIZE),
          (own & SLAB_MASK) * FRAME_SIZE,
        )
      }
      this.#slotRefs[slot] = (this.#slotRefs[slot] as number) - 1
      this.#setSlot(c, pfn, own)
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
    const k = pfn & (VIEW_CACHE - 1)
    if (this.#cachePfn[k] === pfn) return this.#cacheView[k] as Uint32Array
    const slot = this.#materialize(pfn)
    let v = this.#views32[slot]
    if (v === undefined) {
      const off = (slot & SLAB_MASK) * WORDS_PER_FRAME
      v = (this.#slabs32[slot >>> SLAB_SHIFT] as Uint32Array).subarray(off, off + WORDS_PER_FRAME)
      this.#views32[slot] = v
    }
    this.#cachePfn[k] = pfn
    this.#cacheView[k] = v
    return v
  }

  /**
   * The frame's 32-bit words if it holds data, else null (it reads as zeros): a read-only
   * peek for checks that must not give a frame storage (a model's detector comparing its
   * caches with memory). Do not write through the view: it may be shared storage.
   */
  peekWords(pfn: number): Uint32Array | null {
    const k = pfn & (VIEW_CACHE - 1)
    // A cached view is the frame's own storage (the cache drops shared or changed slots).
    if (this.#cachePfn[k] === pfn) return this.#cacheView[k] as Uint32Array
    const slot = this.#slotOf(pfn)
    if (slot < 0) return null
    if (this.#slotRefs[slot] === 1) return this.frameWords(pfn)
    const off = (slot & SLAB_MASK) * WORDS_PER_FRAME
    return (this.#slabs32[slot >>> SLAB_SHIFT] as Uint32Array).subarray(off, off + WORDS_PER_FRAME)
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
    const k = pfn & (VIEW_CACHE - 1)
    if (this.#cachePfn[k] === pfn) return (this.#cacheView[k] as Uint32Array)[off >>> 2] as number
    this.#checkPfn(pfn)
    const slot = this.#slotOf(pfn)
    if (slot < 0) return 0
    // Structures read a word at a time (device tables, queues) are read again and again.
    if (this.#slotRefs[slot] === 1) return this.frameWords(pfn)[off >>> 2] as number
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
        const slab = this.#slabs[slot >>> SLAB_SHIFT] as Uint8Array
        if (n === dst.length) dst.set(slab.subarray(base, base + n))
        else dst.set(slab.subarray(base, base + n), done)
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
    const first = Math.floor(pa / FRAME_SIZE)
    const at = pa - first * FRAME_SIZE
    if (at + src.length <= FRAME_SIZE) {
      const e = this.#slotEntry(first)
      if (e >= 0 && e < MAYBE_SHARED) {
        ;(this.#slabs[e >>> SLAB_SHIFT] as Uint8Array).set(src, (e & SLAB_MASK) * FRAME_SIZE + at)
        return
      }
    }
    let done = 0
    let pfn = Math.floor(pa / FRAME_SIZE)
    let off = pa - pfn * FRAME_SIZE
    while (done < src.length) {
      this.#checkPfn(pfn)
      const n = Math.min(FRAME_SIZE - off, src.length - done)
      const part = n === src.length ? src : src.subarray(done, done + n)
      let slot = this.#slotEntry(pfn)
      if (slot >= MAYBE_SHARED) {
        slot &= SLOT_MASK
        if ((this.#slotRefs[slot] as number) > 1) {
          // Copy-on-write; a whole-frame write keeps none of the old bytes.
          slot = this.#materialize(pfn, n === FRAME_SIZE)
        } else {
          this.#setSlot(this.#chunks[pfn >>> CHUNK_SHIFT] as Chunk, pfn, slot)
        }
      } else if (slot < 0 && !isZero(part)) {
        // First touch.
        slot = this.#materialize(pfn, n === FRAME_SIZE)
      }
      if (slot >= 0) {
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
        const slot = this.#materialize(pfn, n === FRAME_SIZE)
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
    const d = this.#setSlot(c, dst, s < 0 ? NO_DATA : s | MAYBE_SHARED)
    if (d === NO_DATA ? s === NO_DATA : (d & SLOT_MASK) === s) return
    if (d >= 0) this.#releaseSlot(d & SLOT_MASK)
    if (s >= 0) {
      this.#slotRefs[s] = (this.#slotRefs[s] as number) + 1
      this.#materialized++
      // The source's storage is shared now: its next write must copy.
      this.#setSlot(this.#chunks[src >>> CHUNK_SHIFT] as Chunk, src, s | MAYBE_SHARED)
    }
  }

  /**
   * `count` calls of {@link copyFrame} (`dst + i` from `src + i`, ascending), a group of
   * 64 frames at a time where the destination's holds no data.
   */
  copyFrames(dst: number, src: number, count: number): void {
    if (count <= 0) return
    this.#checkPfn(dst)
    this.#checkPfn(src)
    this.#checkPfn(dst + count - 1)
    this.#checkPfn(src + count - 1)
    let i = 0
    while (i < count) {
      const d = dst + i
      const s = src + i
      if (((d | s) & GROUP_MASK) === 0 && count - i >= GROUP_FRAMES && !this.#groupHasData(d)) {
        // A whole group onto a group without data: nothing to do when the source has none
        // either; else (a migration's first copy) the same entries, counts and hints as 64
        // copyFrame calls, without the per-frame lookups.
        if (this.#groupHasData(s)) this.#shareGroup(d, s)
        i += GROUP_FRAMES
        continue
      }
      this.copyFrame(d, s)
      i++
    }
  }

  /**
   * {@link copyFrame} of the 64 frames of the group at `src` onto the group at `dst`
   * (both group-aligned), where no frame of `dst`'s group holds data.
   */
  #shareGroup(dst: number, src: number): void {
    const cs = this.#chunks[src >>> CHUNK_SHIFT] as Chunk
    const gs = cs.group[(src & CHUNK_MASK) >>> GROUP_SHIFT] as number
    const ss = this.#grpSlots[gs >>> GRP_PAGE_SHIFT] as Int32Array
    const sAt = (gs & GRP_PAGE_MASK) << GROUP_SHIFT
    const cd = this.#chunkFor(dst)
    const gd = this.#groupFor(cd, (dst & CHUNK_MASK) >>> GROUP_SHIFT)
    const ds = this.#grpSlots[gd >>> GRP_PAGE_SHIFT] as Int32Array
    const dAt = (gd & GRP_PAGE_MASK) << GROUP_SHIFT
    const refs = this.#slotRefs
    let used = 0
    for (let k = 0; k < GROUP_FRAMES; k++) {
      const e = ss[sAt + k] as number
      if (e < 0) continue
      const slot = e & SLOT_MASK
      ds[dAt + k] = slot | MAYBE_SHARED
      ss[sAt + k] = slot | MAYBE_SHARED
      refs[slot] = (refs[slot] as number) + 1
      // The source's storage is shared now: its cached view must not be written through.
      this.#uncache(src + k)
      this.#uncache(dst + k)
      used++
    }
    this.#materialized += used
    this.#grpUsed[gd] = used
  }

  /** True when a frame of the 64-frame group of `pfn` holds data. */
  #groupHasData(pfn: number): boolean {
    const c = this.#chunks[pfn >>> CHUNK_SHIFT]
    return c !== undefined && (c.group[(pfn & CHUNK_MASK) >>> GROUP_SHIFT] as number) >= 0
  }

  /**
   * Compare `count` frames `a + i` and `b + i` ({@link framesEqual}), a group of 64 at a
   * time where neither side holds data; calls `differs(i)` for each pair that differs.
   *
   * @returns how many differ
   */
  compareFrames(a: number, b: number, count: number, differs?: (i: number) => void): number {
    let n = 0
    let i = 0
    while (i < count) {
      const x = a + i
      const y = b + i
      if (
        ((x | y) & GROUP_MASK) === 0 &&
        count - i >= GROUP_FRAMES &&
        !this.#groupHasData(x) &&
        !this.#groupHasData(y)
      ) {
        i += GROUP_FRAMES
        continue
      }
      if (!this.framesEqual(x, y)) {
        n++
        differs?.(i)
      }
      i++
    }
    return n
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
      sourcedBytes: this.#sourced * SLABS_PER_BUFFER * SLAB_FRAMES * FRAME_SIZE,
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
  if ((bytes.byteOffset & 3) === 0 && (bytes.length & 31) === 0) {
    // Eight words ORed per test: half the time of a word-at-a-time loop on a zero page
    // (a first write of zeros, which leaves the frame without storage, scans it all).
    const w = new Int32Array(bytes.buffer, bytes.byteOffset, bytes.length >>> 2)
    const n = w.length
    for (let i = 0; i < n; i += 8) {
      const any =
        (w[i] as number) |
        (w[i + 1] as number) |
        (w[i + 2] as number) |
        (w[i + 3] as number) |
        (w[i + 4] as number) |
        (w[i + 5] as number) |
        (w[i + 6] as number) |
        (w[i + 7] as number)
      if (any !== 0) return false
    }
    return true
  }
  if ((bytes.byteOffset & 3) === 0 && (bytes.length & 3) === 0) {
    const w = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.length >>> 2)
    for (let i = 0; i < w.length; i++) if (w[i] !== 0) return false
    return true
  }
  for (let i = 0; i < bytes.length; i++) if (bytes[i] !== 0) return false
  return true
}

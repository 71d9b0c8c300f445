/**
 * `struct iova_bitmap`: writes dirty IOVA ranges into the caller's bitmap, one bit per
 * `page_size` (rounded down to a power of two: `pgshift = ffs(page_size) - 1`), as
 * little-endian u64 words at the user address `data`, which need not be aligned
 * (reference iommufd-uapi.md §4.3–4.4, pgtable-formats.md §6).
 *
 * As in the kernel the bitmap is never copied: the user pages under it are pinned a
 * window at a time (at most 512 pages, from the byte the next record lands in) and bits
 * are set directly in the pinned frames' words. A window that cannot be pinned drops the
 * record, silently, like the kernel. Records that reach outside the requested range are
 * clipped to it, so a dirty huge IOPTE that straddles the range start still reports the
 * part inside.
 *
 * @module
 */

import { type DirtyBitmapSink, FRAME_SIZE, type PhysicalMemory, type Process } from '@iommu/core'

/** `PAGE_SIZE / sizeof(struct page *)`: the most bitmap pages pinned at once. */
const WINDOW_PAGES = 512
const BITS_PER_PAGE = FRAME_SIZE * 8

/** Set bits `q0..q1` (inclusive) of a page's 1024 words. */
function setRange(words: Uint32Array, q0: number, q1: number): void {
  const w0 = q0 >>> 5
  const w1 = q1 >>> 5
  const lo = (0xffff_ffff << (q0 & 31)) >>> 0
  const hi = 0xffff_ffff >>> (31 - (q1 & 31))
  if (w0 === w1) {
    words[w0] = (words[w0] as number) | (lo & hi)
    return
  }
  words[w0] = (words[w0] as number) | lo
  if (w1 > w0 + 1) words.fill(0xffff_ffff, w0 + 1, w1)
  words[w1] = (words[w1] as number) | hi
}

/** The dirty bitmap of one GET_DIRTY_BITMAP call. Call {@link free} when done. */
export class IovaBitmap implements DirtyBitmapSink {
  readonly #proc: Process
  readonly #memory: PhysicalMemory
  readonly #pgshift: number
  /** IOVA of bit 0 in bitmap units (`iova >> pgshift`). */
  readonly #baseBit: number
  /** Bits in the bitmap. */
  readonly #nbits: number
  /** Bytes in the bitmap (`mapped_total_index`). */
  readonly #totalBytes: number
  readonly #data: number
  // The pinned window: bytes [#winByte, #winByte + #winBytes) of the bitmap.
  #winByte = -1
  #winBytes = 0
  #winPgoff = 0
  #winPages = 0
  readonly #pfns = new Int32Array(WINDOW_PAGES)
  readonly #words: Uint32Array[] = []
  /** Records dropped because their bitmap pages could not be pinned. */
  dropped = 0

  /**
   * @param iova - first IOVA of the bitmap (aligned to `page_size`)
   * @param lengthMinus1 - length − 1 as the kernel computes it (u64 wrap)
   * @param pageSize - `page_size` (non-zero)
   * @param data - the user address of the bitmap
   */
  constructor(
    proc: Process,
    memory: PhysicalMemory,
    iova: bigint,
    lengthMinus1: bigint,
    pageSize: bigint,
    data: bigint,
  ) {
    this.#proc = proc
    this.#memory = memory
    let shift = 0
    while (((pageSize >> BigInt(shift)) & 1n) === 0n) shift++
    this.#pgshift = shift
    const s = BigInt(shift)
    this.#baseBit = Number(iova >> s)
    this.#nbits = Number(lengthMinus1 >> s) + 1
    this.#totalBytes = Number((lengthMinus1 >> s) / 8n) + 1
    this.#data = Number(data)
  }

  /** `iova_bitmap_set` for `count` pages of `2^shift` bytes from page number `pfn`. */
  set(pfn: number, count: number, shift: number): void {
    const d = shift - this.#pgshift
    let b0: number
    let b1: number
    if (d >= 0) {
      const f = d === 0 ? 1 : 2 ** d
      b0 = pfn * f - this.#baseBit
      b1 = (pfn + count) * f - 1 - this.#baseBit
    } else {
      const q = 2 ** -d
      b0 = Math.floor(pfn / q) - this.#baseBit
      b1 = Math.floor((pfn + count - 1) / q) - this.#baseBit
    }
    if (b0 < 0) b0 = 0
    if (b1 >= this.#nbits) b1 = this.#nbits - 1
    while (b0 <= b1) {
      const byte = Math.floor(b0 / 8)
      if (byte < this.#winByte || byte >= this.#winByte + this.#winBytes) {
        if (!this.#advanceTo(byte)) {
          this.dropped++
          return
        }
      }
      const winBit = this.#winByte * 8
      const endBit = winBit + this.#winBytes * 8 - 1
      const last = Math.min(b1, endBit)
      // Bit position in the pinned pages, counting from the first page's start.
      let p = this.#winPgoff * 8 + (b0 - winBit)
      const pEnd = p + (last - b0)
      while (p <= pEnd) {
        const page = Math.floor(p / BITS_PER_PAGE)
        const q0 = p - page * BITS_PER_PAGE
        const q1 = Math.min(pEnd - page * BITS_PER_PAGE, BITS_PER_PAGE - 1)
        const words = this.#words[page] as Uint32Array
        if (q0 === q1) words[q0 >>> 5] = (words[q0 >>> 5] as number) | (1 << (q0 & 31))
        else setRange(words, q0, q1)
        p += q1 - q0 + 1
      }
      b0 = last + 1
    }
  }

  /** Pin the window starting at bitmap byte `byte` (`iova_bitmap_advance_to`). */
  #advanceTo(byte: number): boolean {
    this.#put()
    if (byte >= this.#totalBytes) return false
    const addr = this.#data + byte
    const pgoff = addr % FRAME_SIZE
    const remaining = this.#totalBytes - byte
    const npages = Math.min(Math.ceil(remaining / FRAME_SIZE) + (pgoff ? 1 : 0), WINDOW_PAGES)
    const pinned = this.#pin(addr - pgoff, npages)
    if (pinned === 0) return false
    this.#winPages = pinned
    this.#winByte = byte
    this.#winPgoff = pgoff
    this.#winBytes = Math.min(remaining, pinned * FRAME_SIZE - pgoff)
    for (let i = 0; i < pinned; i++)
      this.#words[i] = this.#memory.frameWords(this.#pfns[i] as number)
    return true
  }

  /** `pin_user_pages_fast(FOLL_WRITE)`: as many leading pages as can be pinned. */
  #pin(va: number, npages: number): number {
    try {
      this.#proc.pinUserPages(va, npages, true, this.#pfns, 0)
      return npages
    } catch {
      // Fall back to a page at a time to find how far the writable mapping goes.
      let n = 0
      for (; n < npages; n++) {
        try {
          this.#proc.pinUserPages(va + n * FRAME_SIZE, 1, true, this.#pfns, n)
        } catch {
          break
        }
      }
      return n
    }
  }

  /** Unpin the window (`iova_bitmap_put`). */
  #put(): void {
    if (this.#winPages) this.#proc.unpinPages(this.#pfns, this.#winPages, 0)
    this.#winPages = 0
    this.#winBytes = 0
    this.#winByte = -1
  }

  /** Release the pinned window (`iova_bitmap_free`). */
  free(): void {
    this.#put()
  }
}

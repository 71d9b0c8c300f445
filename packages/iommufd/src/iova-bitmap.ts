/**
 * `struct iova_bitmap` (`drivers/iommu/iommufd/iova_bitmap.c`, 7.2): writes dirty IOVA
 * ranges into the caller's bitmap, one bit per `page_size` (`pgshift = __ffs(page_size)`),
 * bit n of the bitmap at byte `data + n / 8`, bit `n % 8` (little-endian u64 words; `data`
 * need not be aligned). Reference iommufd-uapi.md §4.3–4.4.
 *
 * As in the kernel the bitmap is never copied: its user pages are pinned a window at a
 * time and bits are set straight into the pinned frames.
 *
 * - The window (`iova_bitmap_get`) starts at the bitmap byte of the record that needed it
 *   (`iova_bitmap_advance_to`) and pins `ceil(bytes left / 4096) + (1 if that byte is not
 *   page aligned)` pages, at most 512 (`PAGE_SIZE / sizeof(struct page *)`); a partial pin
 *   keeps the pages it got. It maps the bitmap's bits from that byte up to the end of the
 *   pinned bytes or of the bitmap, whichever comes first.
 * - `iova_bitmap_set` with `'kernel'` records (the default) does not clip: a record that
 *   is not inside the mapped bits re-bases the window at its first bit and its bits are
 *   set up to the end of the last pinned page, past the end of the bitmap when the record
 *   reaches that far; a record crossing the pinned pages goes on after re-basing at the
 *   first bit not written (one bit earlier when its end is not `page_size` aligned, as the
 *   kernel's byte arithmetic does). A record before the bitmap's first IOVA, or whose
 *   window cannot be pinned (a bad `data`, an unmapped or read-only page), is dropped
 *   silently: the ioctl still returns 0 and the walk still cleans the IOPTE.
 * - Two records make the kernel loop forever (the ioctl never returns); the model sets
 *   the bits the kernel sets before it loops, then fails the ioctl with EDEADLK
 *   (`DirtyHazardKind` `'bitmap-livelock'`): a zero-length record (generic_pt, a
 *   contiguous leaf entered at its last item) at the window's first IOVA, which computes
 *   its last bit from `iova - 1` and sets every bit of the pinned pages (at IOVA 0 it
 *   goes on through the windows and returns); and a record whose end is not `page_size`
 *   aligned that runs off the pinned pages into a page that cannot be pinned: re-based one
 *   bit back, it finds the same window again.
 * - `'ideal'` records are clipped to the bitmap, and {@link IovaBitmap.checkPinnable}
 *   fails the read with EFAULT before the walk when any bitmap page cannot be pinned.
 *
 * Every difference is reported to the read's hazard tracker. Bit positions are numbers
 * relative to the bitmap's first bit (exact below 2^53 bits: any bitmap that fits memory).
 *
 * @module
 */

import {
  type DirtyBitmapSink,
  type DirtyHazardTracker,
  type DirtyRecords,
  FRAME_SIZE,
  IommuError,
  type PhysicalMemory,
  type Process,
} from '@iommu/core'

/** `PAGE_SIZE / sizeof(struct page *)`: the most bitmap pages pinned at once. */
const WINDOW_PAGES = 512
const BITS_PER_PAGE = FRAME_SIZE * 8
/** Records come in pages of 2^11 bytes or more: positions are kept in 2 KiB units. */
const UNIT_SHIFT = 11
const POW2 = Float64Array.from({ length: 65 }, (_, n) => 2 ** n)

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
  /** The bitmap's first IOVA in 2 KiB units. */
  readonly #baseUnit: number
  /** The bitmap's first IOVA is 0 (a zero-length record there does not loop). */
  readonly #baseZero: boolean
  /** Bits in the bitmap (`length >> pgshift`). */
  readonly #nbits: number
  /** Bytes in the bitmap (`mapped_total_index`). */
  readonly #totalBytes: number
  readonly #data: number
  readonly #clip: boolean
  readonly #hazards: DirtyHazardTracker | null
  // The pinned window: #winPages pages from the page holding bitmap byte #w0 / 8
  // (`mapped_base_index`), #pgoff its offset there; it maps bits [#w0, #w0 + #winBits).
  #winPages = 0
  #pgoff = 0
  #w0 = 0
  #winBits = 0
  readonly #pfns = new Int32Array(WINDOW_PAGES)
  readonly #words: Uint32Array[] = []
  /** Records (or their rest) dropped because the bitmap could not be pinned. */
  dropped = 0

  /**
   * @param iova - first IOVA of the bitmap (aligned to `page_size` and 2 KiB)
   * @param lengthMinus1 - length − 1 as the kernel computes it (u64 wrap)
   * @param pageSize - `page_size` (non-zero)
   * @param data - the user address of the bitmap
   * @param mode - `'kernel'` (default) or `'ideal'` (clipped, see the module doc)
   */
  constructor(
    proc: Process,
    memory: PhysicalMemory,
    iova: bigint,
    lengthMinus1: bigint,
    pageSize: bigint,
    data: bigint,
    mode: DirtyRecords = 'kernel',
    hazards: DirtyHazardTracker | null = null,
  ) {
    this.#proc = proc
    this.#memory = memory
    let shift = 0
    while (((pageSize >> BigInt(shift)) & 1n) === 0n) shift++
    this.#pgshift = shift
    const s = BigInt(shift)
    this.#baseUnit = Number(iova >> BigInt(UNIT_SHIFT))
    this.#baseZero = iova === 0n
    this.#nbits = Number(lengthMinus1 >> s) + 1
    this.#totalBytes = Number((lengthMinus1 >> s) / 8n) + 1
    this.#data = Number(data)
    this.#clip = mode === 'ideal'
    this.#hazards = hazards
  }

  /** First bit (relative to the bitmap) of the byte offset `units` (2 KiB units, ≥ 0). */
  #bitOf(units: number): number {
    const d = this.#pgshift - UNIT_SHIFT
    return d <= 0 ? units * (POW2[-d] as number) : Math.floor(units / (POW2[d] as number))
  }

  /** The 2 KiB unit (absolute, rounded down) where bit `bit` starts. */
  #unitOf(bit: number): number {
    const d = this.#pgshift - UNIT_SHIFT
    const rel = d >= 0 ? bit * (POW2[d] as number) : Math.floor(bit / (POW2[-d] as number))
    return this.#baseUnit + rel
  }

  /** `iova_bitmap_set` for `count` pages of `2^shift` bytes from page number `pfn`. */
  set(pfn: number, count: number, shift: number): void {
    const f = shift === UNIT_SHIFT ? 1 : (POW2[shift - UNIT_SHIFT] as number)
    const start = pfn * f
    const end = start + count * f
    const rel = start - this.#baseUnit
    if (count === 0) {
      if (!this.#clip) this.#setEmpty(rel, start)
      return
    }
    const relEnd = end - this.#baseUnit
    if (rel < 0 && !this.#clip) {
      // iova - bitmap->iova wraps: advance_to finds no such byte and drops the record.
      this.#hazards?.dropped('record-outside-bitmap', start, end)
      this.dropped++
      return
    }
    let b0 = rel < 0 ? 0 : this.#bitOf(rel)
    // Last bit: ((iova + length - 1) - base) >> pgshift.
    const d = this.#pgshift - UNIT_SHIFT
    let b1: number
    let gap = 0
    if (d <= 0) b1 = relEnd * (POW2[-d] as number) - 1
    else {
      const q = POW2[d] as number
      b1 = Math.floor((relEnd - 1) / q)
      gap = (b1 + 1) * q - relEnd
    }
    if (this.#clip) {
      if (b0 >= this.#nbits || b1 < 0) return
      if (b1 >= this.#nbits) {
        b1 = this.#nbits - 1
        gap = 0
      }
    }
    // The first bit not written yet (for what a drop loses, and to see the kernel loop).
    let unwritten = b0
    for (;;) {
      if (this.#winPages === 0 || b0 < this.#w0 || b1 >= this.#w0 + this.#winBits) {
        const byte = Math.floor(b0 / 8)
        if (byte >= this.#totalBytes) {
          this.#hazards?.dropped('record-outside-bitmap', this.#unitOf(unwritten), end)
          return
        }
        if (!this.#advanceTo(byte)) {
          this.#hazards?.dropped('bitmap-pin-failed', Math.max(start, this.#unitOf(unwritten)), end)
          this.dropped++
          return
        }
      }
      const shiftBits = this.#pgoff * 8 - this.#w0
      const pinnedBits = this.#winPages * BITS_PER_PAGE
      const cur = b0 + shiftBits
      const last = b1 + shiftBits
      const stop = last < pinnedBits ? last : pinnedBits - 1
      this.#write(cur, stop)
      if (stop - shiftBits >= this.#nbits) this.#past(cur - shiftBits, stop - shiftBits)
      if (last < pinnedBits) return
      // Past the pinned pages: iova += length - left, from the first bit not written
      // (one earlier when the record's end is not page_size aligned).
      const next = pinnedBits - shiftBits
      if (next === unwritten) {
        // Re-based one bit back into a window that still ends here (the next bitmap page
        // cannot be pinned): the kernel goes round this loop forever.
        this.#hazards?.livelock(this.#unitOf(next))
        throw new IommuError(
          'EDEADLK',
          'iova_bitmap_set loops forever: a record with an unaligned end meets a bitmap page that cannot be pinned (Linux 7.2 never returns from this ioctl)',
        )
      }
      unwritten = next
      b0 = gap === 0 ? unwritten : unwritten - 1
    }
  }

  /**
   * The batch form of {@link set} (`DirtyBitmapSink.setList`): writes the leading records
   * that lie whole in the pinned window's bits, where `set` would only write their bits
   * (no window move, nothing past the bitmap, no hazard), and stops at the first other.
   */
  setList(pfn: number, count: number, shift: number, list: Uint16Array, from: number): number {
    const n = list[0] as number
    const d = this.#pgshift - UNIT_SHIFT
    if (this.#winPages === 0 || d < 0 || count <= 0) return from
    const f = shift === UNIT_SHIFT ? 1 : (POW2[shift - UNIT_SHIFT] as number)
    const rel = pfn * f - this.#baseUnit
    if (rel < 0) return from
    const q = POW2[d] as number
    const w0 = this.#w0
    const wEnd = w0 + this.#winBits
    const shiftBits = this.#pgoff * 8 - w0
    const step = count * f
    let k = from
    if (step === q && rel % q === 0) {
      // One bit per record: entry i is bit b + i of the bitmap.
      const b = rel / q
      const words = this.#words
      for (; k <= n; k++) {
        const bit = b + (list[k] as number)
        if (bit < w0 || bit >= wEnd) return k
        const at = bit + shiftBits
        const pw = words[at >>> 15] as Uint32Array
        pw[(at >>> 5) & 1023] = (pw[(at >>> 5) & 1023] as number) | (1 << (at & 31))
      }
      return k
    }
    for (; k <= n; k++) {
      const r0 = rel + (list[k] as number) * step
      const b0 = Math.floor(r0 / q)
      const b1 = Math.floor((r0 + step - 1) / q)
      if (b0 < w0 || b1 >= wEnd) return k
      this.#write(b0 + shiftBits, b1 + shiftBits)
    }
    return k
  }

  /** A zero-length record at `rel` (units from the bitmap's start; `at` absolute). */
  #setEmpty(rel: number, at: number): void {
    if (rel < 0) return
    const b = this.#bitOf(rel)
    const d = this.#pgshift - UNIT_SHIFT
    const aligned = d <= 0 || rel % (POW2[d] as number) === 0
    // iova_bitmap_mapped_range(iova, 0): iova >= mapped->iova && iova - 1 <= its last byte.
    const end = this.#w0 + this.#winBits
    if (this.#winPages === 0 || b < this.#w0 || (aligned ? b > end : b >= end)) {
      const byte = Math.floor(b / 8)
      if (byte >= this.#totalBytes || !this.#advanceTo(byte)) return
    }
    if (!aligned) {
      // last_bit == cur_bit: one bit.
      const cur = b + this.#pgoff * 8 - this.#w0
      this.#write(cur, cur)
      this.#hazards?.fill(1, at)
      if (b >= this.#nbits) this.#past(b, b)
      return
    }
    if (b !== this.#w0) return // last_bit = cur_bit - 1: nothing
    // iova == mapped->iova: (iova - 1 - mapped->iova) >> pgshift wraps to the top, and
    // every bit of the pinned pages is set. The rest of the "record" then runs from the
    // end of the pinned pages to iova - 1 (mod 2^64): that is inside the window unless
    // iova is 0, so nothing moves again and the kernel loops.
    const fromZero = this.#baseZero && rel === 0
    for (;;) {
      const shiftBits = this.#pgoff * 8 - this.#w0
      const pinnedBits = this.#winPages * BITS_PER_PAGE
      this.#write(this.#pgoff * 8, pinnedBits - 1)
      this.#hazards?.fill(pinnedBits - this.#pgoff * 8, at)
      if (pinnedBits - 1 - shiftBits >= this.#nbits)
        this.#past(this.#w0, pinnedBits - 1 - shiftBits)
      if (!fromZero) {
        this.#hazards?.livelock(at)
        throw new IommuError(
          'EDEADLK',
          'iova_bitmap_set loops forever on a zero-length record at the window start: Linux 7.2 never returns from this ioctl',
        )
      }
      const byte = (pinnedBits - shiftBits) / 8
      if (byte >= this.#totalBytes || !this.#advanceTo(byte)) return
    }
  }

  /** Set window bits `cur..stop` (counted from the first pinned page's first bit). */
  #write(cur: number, stop: number): void {
    let p = cur
    while (p <= stop) {
      const page = Math.floor(p / BITS_PER_PAGE)
      const q0 = p - page * BITS_PER_PAGE
      const q1 = Math.min(stop - page * BITS_PER_PAGE, BITS_PER_PAGE - 1)
      const words = this.#words[page] as Uint32Array
      if (q0 === q1) words[q0 >>> 5] = (words[q0 >>> 5] as number) | (1 << (q0 & 31))
      else setRange(words, q0, q1)
      p += q1 - q0 + 1
    }
  }

  /** Bits `from..to` (relative to the bitmap) were set; some lie past its last bit. */
  #past(from: number, to: number): void {
    const first = Math.max(from, this.#nbits)
    const bytesPast = Math.floor(to / 8) + 1 - this.#totalBytes
    this.#hazards?.pastBitmap(to - first + 1, Math.max(bytesPast, 0))
  }

  /**
   * Pin the window starting at bitmap byte `byte` (`iova_bitmap_advance_to` +
   * `iova_bitmap_get`). False when not even its first page can be pinned (nothing is
   * pinned then).
   */
  #advanceTo(byte: number): boolean {
    this.#put()
    const addr = this.#data + byte
    const pgoff = addr % FRAME_SIZE
    const remaining = this.#totalBytes - byte
    const npages = Math.min(Math.ceil(remaining / FRAME_SIZE) + (pgoff ? 1 : 0), WINDOW_PAGES)
    const pinned = this.#pin(addr - pgoff, npages)
    if (pinned === 0) return false
    this.#winPages = pinned
    this.#pgoff = pgoff
    this.#w0 = byte * 8
    const bytes = Math.min(remaining, pinned * FRAME_SIZE - pgoff)
    this.#winBits = Math.min(bytes * 8, this.#nbits - this.#w0)
    for (let i = 0; i < pinned; i++)
      this.#words[i] = this.#memory.frameWords(this.#pfns[i] as number)
    return true
  }

  /** `pin_user_pages_fast(FOLL_WRITE)`: as many leading pages as can be pinned. */
  #pin(va: number, npages: number): number {
    if (!Number.isSafeInteger(va) || va < 0) return 0
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
    this.#winBits = 0
  }

  /**
   * Ideal records only: fail with EFAULT, before anything is read or cleaned, when a page
   * of the bitmap cannot be pinned for writing.
   *
   * @throws EFAULT
   */
  checkPinnable(): void {
    const first = this.#data - (this.#data % FRAME_SIZE)
    const pages = Math.ceil((this.#data + this.#totalBytes - first) / FRAME_SIZE)
    for (let done = 0; done < pages; done += WINDOW_PAGES) {
      const n = Math.min(WINDOW_PAGES, pages - done)
      const got = this.#pin(first + done * FRAME_SIZE, n)
      this.#proc.unpinPages(this.#pfns, got, 0)
      if (got !== n) throw new IommuError('EFAULT', 'the dirty bitmap cannot be pinned for writing')
    }
  }

  /** Release the pinned window (`iova_bitmap_free`). */
  free(): void {
    this.#put()
  }
}

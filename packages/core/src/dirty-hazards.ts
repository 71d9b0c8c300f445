/**
 * The dirty-tracking hazard detector: every place where Linux 7.2's dirty read
 * (`IOMMU_HWPT_GET_DIRTY_BITMAP` → `read_and_clear_dirty` → `iova_bitmap_set`) gives a
 * result that differs from the ideal one, with the IOVA whose dirt it lost.
 *
 * The model follows the kernel by default ({@link DirtyRecords} `'kernel'`): records are
 * made where and as long as the kernel makes them, `iova_bitmap_set` writes past the end of
 * the user's bitmap, a bitmap that cannot be pinned drops records while the IOPTEs are
 * still cleaned. The `'ideal'` mode (`createMachine({ dirtyRecords: 'ideal' })`) records
 * each dirty IOPTE exactly as its intersection with the query, a contiguous leaf whole,
 * never writes past the bitmap and fails with EFAULT before cleaning anything when the
 * bitmap cannot be pinned.
 *
 * Each read gets a {@link DirtyHazardTracker} from the machine's {@link DirtyHazardLog};
 * the walk, the bitmap writer and iommufd report to it, and at the end of the read it
 * appends one {@link DirtyHazard} per kind that occurred. Nothing is computed for a
 * record that the kernel makes exactly as the ideal one.
 *
 * IOVA ranges are kept as numbers in 2 KiB units ({@link GATHER_UNIT}: the smallest IO page
 * anywhere in the model), exact over the whole 64-bit space.
 *
 * @module
 */

import type { IommuDomain } from './domain.ts'

/** How dirty records are made: as Linux 7.2 makes them (default), or ideally. */
export type DirtyRecords = 'kernel' | 'ideal'

/**
 * What went wrong. All but the two marked *inherent* occur only with `'kernel'` records:
 *
 * - `'record-past-iopte'`: the record reaches past the end of its dirty IOPTE, reporting
 *   IOVA this IOPTE does not map. generic_pt `record_dirty` records the first entry of a
 *   walk from the query start with the whole item size; io-pgtable-arm's walker does the
 *   same and, from then on, records every leaf at that level shifted by the same offset
 *   (`walk_data->addr += size`), losing the head of each.
 * - `'record-short'`: the record stops before the end of the IOPTE's part in the query.
 *   generic_pt contiguous leaves (AMD v1 NextLevel 7): `record_dirty` uses the block's
 *   last index as an exclusive end, so the last item is not reported — all replicas are
 *   cleaned all the same. A walk that starts at the last item records zero bytes.
 * - `'iopte-outside-query'` (*inherent*): a dirty IOPTE lies partly outside the query and
 *   is cleaned whole: the dirt of its pages outside the query is never reported (the
 *   hardware keeps one dirty bit per IOPTE). Both modes.
 * - `'walk-stopped'` (*inherent*): iommufd's walk stops at the first IOVA without an area
 *   (the walk function's EINVAL is discarded, the ioctl returns 0): dirty IOPTEs after it
 *   are neither reported nor cleaned (`missed`). Both modes.
 * - `'walk-skipped'`: io-pgtable-arm's walker entered a table at a shifted address and
 *   never visited its first entries: they are neither reported nor cleaned (`missed`).
 * - `'past-bitmap'`: `iova_bitmap_set` does not clip: it set bits past the last bit of the
 *   bitmap, up to the end of the pinned page(s): {@link DirtyHazard.bytesPast} bytes past
 *   the end of the user's bitmap (`ceil(bits / 8)` bytes from `data`).
 * - `'bitmap-pin-failed'`: the bitmap page a record lands in could not be pinned (a bad
 *   `data` pointer, an unmapped or read-only page): `iova_bitmap_set` returns silently,
 *   the ioctl returns 0 and the walk still cleans the IOPTE: its dirt is lost.
 * - `'record-outside-bitmap'`: a record starts before the bitmap's first IOVA (or past
 *   its end) and `iova_bitmap_set` drops it whole.
 * - `'bitmap-fill'`: a zero-length record at the first IOVA of the pinned window (see
 *   `'record-short'`): `iova_bitmap_set` computes its last bit as `iova - 1` and sets every
 *   bit of the pinned pages.
 * - `'bitmap-livelock'`: the kernel loops in `iova_bitmap_set` forever (the ioctl never
 *   returns): after such a fill when the window's first IOVA is not 0, or when a record
 *   whose end is not `page_size` aligned runs off the pinned pages into a bitmap page
 *   that cannot be pinned. The model stops there and fails the ioctl with EDEADLK.
 */
export type DirtyHazardKind =
  | 'record-past-iopte'
  | 'record-short'
  | 'iopte-outside-query'
  | 'walk-stopped'
  | 'walk-skipped'
  | 'past-bitmap'
  | 'bitmap-pin-failed'
  | 'record-outside-bitmap'
  | 'bitmap-fill'
  | 'bitmap-livelock'

/** Every {@link DirtyHazardKind}, in report order. */
export const DIRTY_HAZARD_KINDS: readonly DirtyHazardKind[] = [
  'record-past-iopte',
  'record-short',
  'iopte-outside-query',
  'walk-stopped',
  'walk-skipped',
  'past-bitmap',
  'bitmap-pin-failed',
  'record-outside-bitmap',
  'bitmap-fill',
  'bitmap-livelock',
]

const KIND_INDEX = Object.fromEntries(DIRTY_HAZARD_KINDS.map((k, i) => [k, i])) as Record<
  DirtyHazardKind,
  number
>

/** Kinds that occur with ideal records too (per-IOPTE dirty bits, iommufd's walk). */
export const INHERENT_DIRTY_HAZARDS: ReadonlySet<DirtyHazardKind> = new Set([
  'iopte-outside-query',
  'walk-stopped',
])

/** log2 of the unit of {@link IovaRangeList}: 2 KiB. */
export const HAZARD_UNIT_SHIFT = 11
const UNIT = BigInt(HAZARD_UNIT_SHIFT)
/** 2^n for n in 0..53. */
const POW2 = Float64Array.from({ length: 54 }, (_, n) => 2 ** n)

/** A page number of `2^shift`-byte pages in 2 KiB units (`shift` ≥ 11). */
export function toHazardUnits(pfn: number, shift: number): number {
  return shift === HAZARD_UNIT_SHIFT ? pfn : pfn * (POW2[shift - HAZARD_UNIT_SHIFT] as number)
}

/** An IOVA range `[iova, iova + length)`. */
export interface IovaSpan {
  readonly iova: bigint
  readonly length: bigint
}

function span(start: number, end: number): IovaSpan {
  return { iova: BigInt(start) << UNIT, length: BigInt(end - start) << UNIT }
}

function hex(v: bigint): string {
  return `0x${v.toString(16)}`
}

/**
 * A list of IOVA ranges in 2 KiB units, kept in a growable `Float64Array` (no object per
 * range). Ranges are appended in walk order; touching or overlapping appends merge.
 */
export class IovaRangeList {
  #data = new Float64Array(16)
  #n = 0
  #sorted = true

  /** Number of ranges. */
  get count(): number {
    return this.#n
  }

  /** Total size in 2 KiB units (overlaps between non-adjacent appends counted twice). */
  get units(): number {
    let u = 0
    for (let i = 0; i < this.#n; i++)
      u += (this.#data[2 * i + 1] as number) - (this.#data[2 * i] as number)
    return u
  }

  /** Total size in bytes. */
  get bytes(): bigint {
    return BigInt(this.units) << UNIT
  }

  /** Append `[start, end)` (2 KiB units). */
  add(start: number, end: number): void {
    if (end <= start) return
    const n = this.#n
    if (n > 0) {
      const ls = this.#data[2 * n - 2] as number
      const le = this.#data[2 * n - 1] as number
      if (start >= ls && start <= le) {
        if (end > le) this.#data[2 * n - 1] = end
        return
      }
      if (start < ls) this.#sorted = false
    }
    if (2 * n + 2 > this.#data.length) {
      const grown = new Float64Array(this.#data.length * 2)
      grown.set(this.#data)
      this.#data = grown
    }
    this.#data[2 * n] = start
    this.#data[2 * n + 1] = end
    this.#n = n + 1
  }

  /** The ranges sorted by start, merged where they touch. */
  #normalize(): void {
    if (this.#sorted) return
    const pairs: [number, number][] = []
    for (let i = 0; i < this.#n; i++)
      pairs.push([this.#data[2 * i] as number, this.#data[2 * i + 1] as number])
    pairs.sort((a, b) => a[0] - b[0])
    this.#n = 0
    this.#sorted = true
    for (const [s, e] of pairs) this.add(s, e)
  }

  /** True when the byte at `iova` is in a range. */
  has(iova: bigint): boolean {
    return this.overlaps(iova, 1n)
  }

  /** True when `[iova, iova + length)` meets a range. */
  overlaps(iova: bigint, length: bigint): boolean {
    if (length <= 0n) return false
    this.#normalize()
    const s = Number(iova >> UNIT)
    const e = Number((iova + length - 1n) >> UNIT) + 1
    // Last range starting before e.
    let lo = 0
    let hi = this.#n
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if ((this.#data[2 * mid] as number) < e) lo = mid + 1
      else hi = mid
    }
    return lo > 0 && (this.#data[2 * lo - 1] as number) > s
  }

  /** Call `fn(start, end)` for each range, in 2 KiB units, sorted. */
  forEach(fn: (start: number, end: number) => void): void {
    this.#normalize()
    for (let i = 0; i < this.#n; i++)
      fn(this.#data[2 * i] as number, this.#data[2 * i + 1] as number)
  }

  /** The ranges as IOVA spans, sorted. */
  toArray(): IovaSpan[] {
    const out: IovaSpan[] = []
    this.forEach((s, e) => {
      out.push(span(s, e))
    })
    return out
  }
}

/** What a read is, for the record of its hazards. */
export interface DirtyReadInfo {
  /** `'IOMMU_HWPT_GET_DIRTY_BITMAP'` or the kernel function name of another caller. */
  readonly source: string
  /** The iommufd HWPT object ID, or null outside iommufd. */
  readonly hwptId: number | null
  readonly domain: IommuDomain | null
  /** The query: `[iova, iova + length)`. */
  readonly iova: bigint
  readonly length: bigint
  /** The bitmap's `page_size` (0n when there is no bitmap). */
  readonly pageSize: bigint
  /** The bitmap's user address (0n when there is no bitmap). */
  readonly data: bigint
  /** Read-and-clear (true) or `NO_CLEAR` (false). */
  readonly clear: boolean
}

/** One kind of hazard in one read: how often it occurred and what it lost. */
export class DirtyHazard {
  /** Sequence number of the read in the machine's log (hazards of one read share it). */
  readonly read: number
  readonly kind: DirtyHazardKind
  /** The read's record mode. */
  readonly mode: DirtyRecords
  readonly source: string
  readonly hwptId: number | null
  readonly domain: IommuDomain | null
  /** The query of the read. */
  readonly iova: bigint
  readonly length: bigint
  readonly pageSize: bigint
  /** The read cleaned what it reported (no `NO_CLEAR`). */
  readonly clear: boolean
  /** Occurrences in this read: IOPTEs, records or walk stops. */
  count = 0
  /**
   * IOVA whose dirt was lost: dirty IOPTEs (or parts) that were cleaned but are not in the
   * returned bitmap. A page the device wrote there since the last read will never be
   * reported.
   */
  readonly lost = new IovaRangeList()
  /**
   * IOVA of dirty IOPTEs (or parts) that are not in the returned bitmap but were not
   * cleaned either (`NO_CLEAR`, a skipped or unwalked entry): a later read can report them.
   */
  readonly missed = new IovaRangeList()
  /** `'past-bitmap'`: farthest byte written past the end of the user's bitmap, counted from it (1 = the byte right after). */
  bytesPast = 0
  /** `'past-bitmap'`, `'bitmap-fill'`: bits set past the bitmap's last bit / beyond the record. */
  bits = 0
  /** The first occurrence: the IOPTE and the record (when the kind has them). */
  iopte: IovaSpan | null = null
  record: IovaSpan | null = null

  constructor(read: number, kind: DirtyHazardKind, mode: DirtyRecords, info: DirtyReadInfo) {
    this.read = read
    this.kind = kind
    this.mode = mode
    this.source = info.source
    this.hwptId = info.hwptId
    this.domain = info.domain
    this.iova = info.iova
    this.length = info.length
    this.pageSize = info.pageSize
    this.clear = info.clear
  }

  /** One line for reports. */
  get message(): string {
    const where = `${this.source}${this.hwptId === null ? '' : ` hwpt ${this.hwptId}`} [${hex(this.iova)}, +${hex(this.length)})`
    const what: string[] = [`${this.kind} ×${this.count}`]
    if (this.lost.count) what.push(`lost ${this.lost.bytes / 1024n} KiB`)
    if (this.missed.count) what.push(`missed ${this.missed.bytes / 1024n} KiB`)
    if (this.bytesPast) what.push(`${this.bytesPast} bytes past the bitmap`)
    if (this.bits && this.kind !== 'past-bitmap') what.push(`${this.bits} stray bits`)
    if (this.iopte !== null)
      what.push(`e.g. IOPTE [${hex(this.iopte.iova)}, +${hex(this.iopte.length)})`)
    if (this.record !== null)
      what.push(`recorded [${hex(this.record.iova)}, +${hex(this.record.length)})`)
    return `${where}: ${what.join(', ')}`
  }

  /** JSON form: addresses as hex strings, ranges as `[iova, length]` hex pairs. */
  toJSON(): Record<string, unknown> {
    const pairs = (l: IovaRangeList) => l.toArray().map((s) => [hex(s.iova), hex(s.length)])
    return {
      read: this.read,
      kind: this.kind,
      mode: this.mode,
      source: this.source,
      hwptId: this.hwptId,
      iova: hex(this.iova),
      length: hex(this.length),
      pageSize: hex(this.pageSize),
      clear: this.clear,
      count: this.count,
      lostBytes: Number(this.lost.bytes),
      missedBytes: Number(this.missed.bytes),
      lost: pairs(this.lost),
      missed: pairs(this.missed),
      bytesPast: this.bytesPast,
      bits: this.bits,
      iopte: this.iopte && [hex(this.iopte.iova), hex(this.iopte.length)],
      record: this.record && [hex(this.record.iova), hex(this.record.length)],
    }
  }
}

/**
 * The hazards of one read, filled by the walk (through `IommuDirtyBitmap`), the bitmap
 * writer and iommufd, and appended to the log by {@link end}. Positions are in 2 KiB units.
 */
export class DirtyHazardTracker {
  readonly mode: DirtyRecords
  readonly clear: boolean
  /** The query, `[qStart, qEnd)` in units. */
  readonly qStart: number
  readonly qEnd: number
  /** The IOPTE whose record is being written (set before each record). */
  leafStart = 0
  leafEnd = 0
  readonly #log: DirtyHazardLog
  readonly #info: DirtyReadInfo
  readonly #read: number
  /** By kind, in {@link DIRTY_HAZARD_KINDS} order (created on first use). */
  readonly #byKind: (DirtyHazard | undefined)[] = []
  #ended = false

  constructor(log: DirtyHazardLog, read: number, mode: DirtyRecords, info: DirtyReadInfo) {
    this.#log = log
    this.#read = read
    this.mode = mode
    this.#info = info
    this.clear = info.clear
    this.qStart = Number(info.iova >> UNIT)
    this.qEnd = Number((info.iova + info.length - 1n) >> UNIT) + 1
  }

  #get(kind: DirtyHazardKind): DirtyHazard {
    const k = KIND_INDEX[kind]
    let h = this.#byKind[k]
    if (h === undefined) {
      h = new DirtyHazard(this.#read, kind, this.mode, this.#info)
      this.#byKind[k] = h
    }
    return h
  }

  /** Where the next record's dirt comes from (`count` pages of `2^shift` from `pfn`). */
  setLeaf(pfn: number, count: number, shift: number): void {
    this.leafStart = toHazardUnits(pfn, shift)
    this.leafEnd = this.leafStart + toHazardUnits(count, shift)
  }

  /** The next record is the whole IOPTE it comes from (cheaper than {@link setLeaf}). */
  recordIsLeaf(): void {
    this.leafStart = -1
  }

  /**
   * A write-dirty IOPTE `[l0, l1)` recorded as `[k0, k1)` where the ideal record is
   * `[i0, i1)` (the IOPTE ∩ the walk's query), all in units. Call only when they differ.
   */
  noteLeaf(l0: number, l1: number, k0: number, k1: number, i0: number, i1: number): void {
    const clear = this.clear
    if (this.mode === 'kernel' && (k0 !== i0 || k1 !== i1)) {
      // What the ideal record has and the kernel's does not: at most a head and a tail.
      const kind: DirtyHazardKind | null =
        k1 > l1 ? 'record-past-iopte' : i0 < k0 || k1 < i1 ? 'record-short' : null
      if (kind !== null) {
        const h = this.#get(kind)
        if (h.count++ === 0) {
          h.iopte = span(l0, l1)
          h.record = span(k0, k1)
        }
        const list = clear ? h.lost : h.missed
        if (k1 <= i0 || k0 >= i1) list.add(i0, i1)
        else {
          list.add(i0, k0)
          list.add(k1, i1)
        }
      }
    }
    if (clear && (l0 < i0 || i1 < l1)) {
      const h = this.#get('iopte-outside-query')
      if (h.count++ === 0) {
        h.iopte = span(l0, l1)
        h.record = span(k0, k1)
      }
      if (i1 <= i0) h.lost.add(l0, l1)
      else {
        h.lost.add(l0, i0)
        h.lost.add(i1, l1)
      }
    }
  }

  /**
   * `iova_bitmap_set` did not write `[from, to)` (units) of the current record: the part
   * of the current IOPTE inside the query is lost (or missed with NO_CLEAR).
   */
  dropped(kind: 'bitmap-pin-failed' | 'record-outside-bitmap', from: number, to: number): void {
    // After recordIsLeaf() the record is the IOPTE, and [from, to) its dropped tail.
    const whole = this.leafStart < 0
    const s = Math.max(from, whole ? from : this.leafStart, this.qStart)
    const e = Math.min(to, whole ? to : this.leafEnd, this.qEnd)
    if (e <= s) return
    const h = this.#get(kind)
    if (h.count++ === 0) {
      h.iopte = whole ? null : span(this.leafStart, this.leafEnd)
      h.record = span(from, to)
    }
    ;(this.clear ? h.lost : h.missed).add(s, e)
  }

  /** `iova_bitmap_set` set `bits` bits past the bitmap's last one, reaching `bytesPast` bytes past its end. */
  pastBitmap(bits: number, bytesPast: number): void {
    const h = this.#get('past-bitmap')
    h.count++
    h.bits += bits
    if (bytesPast > h.bytesPast) h.bytesPast = bytesPast
  }

  /** A zero-length record set `bits` bits it does not cover. */
  fill(bits: number, at: number): void {
    const h = this.#get('bitmap-fill')
    if (h.count++ === 0) h.record = span(at, at)
    h.bits += bits
  }

  /** The kernel would loop forever in `iova_bitmap_set` here. */
  livelock(at: number): void {
    const h = this.#get('bitmap-livelock')
    if (h.count++ === 0) h.record = span(at, at)
  }

  /** Dirty IOPTE `[from, to)` (units, clipped to the query) was not visited by the walk. */
  notVisited(kind: 'walk-skipped' | 'walk-stopped', l0: number, l1: number): void {
    const s = Math.max(l0, this.qStart)
    const e = Math.min(l1, this.qEnd)
    if (e <= s) return
    const h = this.#get(kind)
    if (h.count++ === 0) h.iopte = span(l0, l1)
    h.missed.add(s, e)
  }

  /** The read is over: append its hazards to the log (once). */
  end(): void {
    if (this.#ended) return
    this.#ended = true
    for (const h of this.#byKind) if (h !== undefined) this.#log.entries.push(h)
  }
}

/**
 * The machine's list of dirty-tracking hazards (`machine.dirtyHazards`), like the AMD
 * model's missing-invalidation detector (`staleUses`): every read that differed from
 * the ideal adds one {@link DirtyHazard} per kind.
 *
 * To check that no page written by a device since the previous read was silently lost:
 * note `const mark = log.entries.length` before the read; after it, a written page is
 * either set in the returned bitmap, or `log.unreported(iova, mark)` says `'lost'` (its
 * dirt is gone for good) or `'missed'` (still dirty in the IOPTE: expect it in a later
 * read).
 */
export class DirtyHazardLog {
  /** The hazards, in the order the reads ended. */
  readonly entries: DirtyHazard[] = []
  /** Detect at all (true by default); when false, reads get no tracker. */
  enabled = true
  #reads = 0

  /** Start tracking one read (null when disabled). */
  begin(mode: DirtyRecords, info: DirtyReadInfo): DirtyHazardTracker | null {
    if (!this.enabled) return null
    return new DirtyHazardTracker(this, ++this.#reads, mode, info)
  }

  /** Forget every hazard. */
  clear(): void {
    this.entries.length = 0
  }

  /** Entries from index `since` that lost IOVA. */
  withLoss(since = 0): DirtyHazard[] {
    return this.entries.slice(since).filter((h) => h.lost.count > 0)
  }

  /** Bytes of IOVA lost by entries from index `since`. */
  lostBytes(since = 0): bigint {
    let b = 0n
    for (let i = since; i < this.entries.length; i++)
      b += (this.entries[i] as DirtyHazard).lost.bytes
    return b
  }

  /**
   * Whether the byte at `iova` was left out of a read by entries from index `since`:
   * `'lost'` (cleaned, never reported), `'missed'` (not reported, still dirty) or null.
   */
  unreported(iova: bigint, since = 0): 'lost' | 'missed' | null {
    let missed = false
    for (let i = since; i < this.entries.length; i++) {
      const h = this.entries[i] as DirtyHazard
      if (h.lost.has(iova)) return 'lost'
      if (!missed && h.missed.has(iova)) missed = true
    }
    return missed ? 'missed' : null
  }
}

/**
 * IOTLB gather and the dirty-bitmap recorder (`struct iommu_iotlb_gather`,
 * `struct iommu_dirty_bitmap`).
 *
 * Both sit on hot paths (unmap of many leaves, one record per dirty IOPTE), so they keep
 * their bounds as plain numbers: addresses in units of {@link GATHER_UNIT} (2 KiB, the
 * smallest IO page size anywhere in the model), which makes every 64-bit address exact
 * below 2^53. The kernel-shaped `start`/`end` are exposed as `bigint` getters.
 *
 * @module
 */

import { type DirtyHazardTracker, type DirtyRecords, toHazardUnits } from './dirty-hazards.ts'

/** log2 of the resolution of gather bounds: 2 KiB, the smallest IO page in the model. */
export const GATHER_UNIT_SHIFT = 11
/** Resolution of gather bounds in bytes. */
export const GATHER_UNIT = 1 << GATHER_UNIT_SHIFT

const UNIT = BigInt(GATHER_UNIT_SHIFT)

/** What frees a frame: the machine's `PhysicalMemory`. */
export interface FrameReleaser {
  put(pfn: number): void
}
const ULONG_MAX = 0xffff_ffff_ffff_ffffn

/** A page number of `2^shift`-byte pages in gather units (the hazard detector's too). */
const toUnits = toHazardUnits

/**
 * Accumulates an IOVA range to invalidate, and the page-table pages to free after the
 * invalidation (`struct iommu_iotlb_gather`).
 *
 * Invariants, as in the kernel: a fresh gather is empty (`start` = ULONG_MAX, `end` = 0);
 * `iommuIotlbSync()` calls the driver's `iotlbSync` only when `start < end`, then re-inits.
 * Bounds are kept at 2 KiB resolution; a sub-2 KiB range is widened outward.
 */
export class IotlbGather {
  /** First gathered unit (inclusive); `Infinity` when empty. */
  startUnit = Number.POSITIVE_INFINITY
  /** Last gathered unit (inclusive); `-1` when empty. */
  endUnit = -1
  /**
   * Flush interval in bytes recorded by `IommuCore.iommuIotlbGatherAddPage` (0 = none).
   * Only the page-based drivers use it (arm-smmu-v3).
   */
  pgsize = 0
  /** Bitmap of page-table levels whose leaf entries were removed (generic_pt). */
  leafLevels = 0
  /** Bitmap of page-table levels whose table entries were removed (generic_pt). */
  tableLevels = 0
  /**
   * Page-table frames (PFNs) removed from the table, to free only after the IOTLB
   * (and walk caches) were invalidated. Add with {@link deferFree}.
   */
  readonly freelist: number[] = []
  #memory: FrameReleaser | null = null
  /** True if the flush will be done later by a full flush (flush queue). */
  queued = false

  /** IOVA of the first byte to flush; `ULONG_MAX` when empty (kernel init value). */
  get start(): bigint {
    return this.endUnit < 0 ? ULONG_MAX : BigInt(this.startUnit) << UNIT
  }

  /** IOVA of the last byte to flush (inclusive); 0 when empty. */
  get end(): bigint {
    return this.endUnit < 0 ? 0n : ((BigInt(this.endUnit) + 1n) << UNIT) - 1n
  }

  /** True when nothing was gathered (the kernel's `start >= end`). */
  get empty(): boolean {
    return this.endUnit < 0
  }

  /**
   * Queue a removed page-table frame to be freed by {@link releaseFreelist} once the
   * invalidation is done (the kernel's `iommu_pages_list_add(&gather->freelist, ...)`).
   */
  deferFree(memory: FrameReleaser, pfn: number): void {
    this.#memory = memory
    this.freelist.push(pfn)
  }

  /**
   * Free the queued page-table frames (`iommu_put_pages_list(&gather->freelist)`): only
   * after the IOTLB and walk caches were invalidated. `iommuIotlbSync` calls it after the
   * driver's `iotlbSync`.
   */
  releaseFreelist(): void {
    const mem = this.#memory
    if (mem !== null) for (const pfn of this.freelist) mem.put(pfn)
    this.freelist.length = 0
  }

  /**
   * Reset to the empty state (`iommu_iotlb_gather_init`). Frames still on the freelist
   * must have been released first: they are dropped from the list, not freed.
   */
  init(): void {
    this.startUnit = Number.POSITIVE_INFINITY
    this.endUnit = -1
    this.pgsize = 0
    this.leafLevels = 0
    this.tableLevels = 0
    this.freelist.length = 0
    this.queued = false
  }

  /**
   * Widen the range by `count` pages of `2^shift` bytes starting at page number `pfn`
   * (`iommu_iotlb_gather_add_range` on the hot path). `shift` must be ≥ 11.
   */
  addPages(pfn: number, count: number, shift: number): void {
    const s = toUnits(pfn, shift)
    const e = s + toUnits(count, shift) - 1
    if (s < this.startUnit) this.startUnit = s
    if (e > this.endUnit) this.endUnit = e
  }

  /** Widen the range by [iova, iova + size) (`iommu_iotlb_gather_add_range`). */
  addRange(iova: bigint, size: bigint): void {
    if (size <= 0n) return
    const s = Number(iova >> UNIT)
    const e = Number((iova + size - 1n) >> UNIT)
    if (s < this.startUnit) this.startUnit = s
    if (e > this.endUnit) this.endUnit = e
  }

  /**
   * True when [iova, iova + size) neither overlaps nor touches the gathered range
   * (`iommu_iotlb_gather_is_disjoint`). An empty gather is never disjoint.
   */
  isDisjoint(iova: bigint, size: bigint): boolean {
    if (this.endUnit < 0) return false
    const s = Number(iova >> UNIT)
    const e = Number((iova + size - 1n) >> UNIT)
    return e + 1 < this.startUnit || s > this.endUnit + 1
  }
}

/**
 * Where dirty IOVA ranges are written: iommufd's `iova_bitmap`, or anything with the same
 * one method. Ranges come as `count` pages of `2^shift` bytes from page number `pfn`.
 */
export interface DirtyBitmapSink {
  /** Mark [pfn << shift, (pfn + count) << shift) dirty (`iova_bitmap_set`). */
  set(pfn: number, count: number, shift: number): void
  /**
   * Optional batch form of {@link set}, for the dirty scan's records of one table frame:
   * `list[1..list[0]]` are entry numbers in ascending order, and entry `i` is the record
   * `set(pfn + i * count, count, shift)`.
   *
   * Write, from list position `from` on, the leading records that are plain writes (what
   * `set` would do with nothing else: no window to move, no hazard, no error) and return
   * the position of the first record not written (`list[0] + 1` when all were): the
   * caller makes that one with `set` and calls again from the next. Writing none (returning
   * `from`) is always correct.
   */
  setList?(pfn: number, count: number, shift: number, list: Uint16Array, from: number): number
}

/** Options of {@link IommuDirtyBitmap}. */
export interface IommuDirtyBitmapOptions {
  /** `'kernel'` (default): records as Linux 7.2 makes them; `'ideal'`: IOPTE ∩ query. */
  readonly mode?: DirtyRecords
  /** Where the hazards of this read go (null: not tracked). */
  readonly hazards?: DirtyHazardTracker | null
}

/**
 * The recorder a driver's `readAndClearDirty` reports into (`struct iommu_dirty_bitmap`):
 * each write-dirty IOPTE is recorded into the bitmap (if any) and into the gather (if any)
 * so that the caller can flush what was cleaned.
 *
 * Page-table walks call {@link recordLeaf} with both the record the kernel makes and the
 * ideal one; {@link mode} picks which is written, and the difference goes to the hazard
 * tracker. Drivers that only know one record call {@link record}.
 */
export class IommuDirtyBitmap {
  /** Sink for the dirty bits, or null to only clear (dirty tracking being enabled). */
  readonly bitmap: DirtyBitmapSink | null
  /** Range to invalidate after clearing, or null when the caller does not flush. */
  readonly gather: IotlbGather | null
  /** Which record {@link recordLeaf} writes. */
  readonly mode: DirtyRecords
  /** The read's hazard tracker, or null. */
  readonly hazards: DirtyHazardTracker | null
  /** Number of records, i.e. dirty IOPTEs reported. */
  records = 0

  constructor(
    bitmap: DirtyBitmapSink | null,
    gather: IotlbGather | null,
    options: IommuDirtyBitmapOptions = {},
  ) {
    this.bitmap = bitmap
    this.gather = gather
    this.mode = options.mode ?? 'kernel'
    this.hazards = options.hazards ?? null
    gather?.init()
  }

  /**
   * Record `count` dirty pages of `2^shift` bytes starting at page number `pfn`
   * (`iommu_dirty_bitmap_record`): into the bitmap and the gather, as given.
   */
  record(pfn: number, count: number, shift: number): void {
    this.records++
    this.hazards?.recordIsLeaf()
    this.bitmap?.set(pfn, count, shift)
    this.gather?.addPages(pfn, count, shift)
  }

  /**
   * Record the write-dirty IOPTEs of one table frame that lie whole in the query:
   * `list[1..list[0]]` are entry numbers in ascending order, and entry `i` is the IOPTE
   * `[pfn + i * count, +count)` in pages of `2^shift` bytes. Each is recorded exactly as a
   * walk records it alone, in order: as {@link record} when `count` is 1, else as
   * {@link recordLeaf} with the kernel's and the ideal record both the IOPTE. The gather
   * is widened once (it keeps only its bounds). The sink's
   * {@link DirtyBitmapSink.setList} writes the plain records, {@link DirtyBitmapSink.set}
   * the others. Empties the list (`list[0] = 0`).
   *
   * If the sink throws, `list[0]` is set to the number of records made before the one that
   * failed (which is counted in {@link records}, as `record` counts it), and the gather
   * holds the records made: as after the same records one by one.
   */
  recordList(pfn: number, count: number, shift: number, list: Uint16Array): void {
    const n = list[0] as number
    if (n === 0) return
    this.records += n
    const sink = this.bitmap
    if (sink !== null) {
      const k = sink.setList === undefined ? 1 : sink.setList(pfn, count, shift, list, 1)
      if (k <= n) this.#recordRest(sink, pfn, count, shift, list, k)
    }
    list[0] = 0
    const first = pfn + (list[1] as number) * count
    this.gather?.addPages(first, pfn + (list[n] as number) * count + count - first, shift)
  }

  /** {@link recordList} from list position `k`, where the sink's batch stopped. */
  #recordRest(
    sink: DirtyBitmapSink,
    pfn: number,
    count: number,
    shift: number,
    list: Uint16Array,
    from: number,
  ): void {
    const n = list[0] as number
    const h = this.hazards
    let k = from
    try {
      for (; k <= n; k++) {
        // A record the sink makes in full: as record() / recordLeaf() make it.
        const at = pfn + (list[k] as number) * count
        if (h !== null) {
          if (count === 1) h.recordIsLeaf()
          else h.setLeaf(at, count, shift)
        }
        sink.set(at, count, shift)
        if (sink.setList !== undefined) k = sink.setList(pfn, count, shift, list, k + 1) - 1
      }
    } catch (e) {
      // The failing record was counted before its set, the later ones never.
      this.records -= n - k
      list[0] = k - 1
      if (k > 1) {
        const first = pfn + (list[1] as number) * count
        this.gather?.addPages(first, pfn + (list[k - 1] as number) * count + count - first, shift)
      }
      throw e
    }
  }

  /**
   * Record a write-dirty IOPTE (or contiguous leaf) `[leafPfn, leafPfn + leafCount)`
   * that a walk over a query found, where the kernel records
   * `[kPfn, kPfn + kCount)` and the ideal record is `[iPfn, iPfn + iCount)` (the IOPTE ∩
   * the query). All in pages of `2^shift` bytes.
   *
   * `'kernel'`: the kernel's record goes to the bitmap and the gather (`record_dirty`,
   * `iommu_dirty_bitmap_record`). `'ideal'`: the ideal record to the bitmap, the whole
   * IOPTE to the gather (everything cleaned is flushed). A difference is noted by the
   * hazard tracker; nothing is computed when they agree.
   */
  recordLeaf(
    leafPfn: number,
    leafCount: number,
    kPfn: number,
    kCount: number,
    iPfn: number,
    iCount: number,
    shift: number,
  ): void {
    this.records++
    const h = this.hazards
    const kernel = this.mode === 'kernel'
    if (h !== null) {
      h.setLeaf(leafPfn, leafCount, shift)
      if (iCount !== leafCount || (kernel && (kPfn !== iPfn || kCount !== iCount))) {
        h.noteLeaf(
          h.leafStart,
          h.leafEnd,
          toHazardUnits(kPfn, shift),
          toHazardUnits(kPfn + kCount, shift),
          toHazardUnits(iPfn, shift),
          toHazardUnits(iPfn + iCount, shift),
        )
      }
    }
    if (kernel) {
      this.bitmap?.set(kPfn, kCount, shift)
      this.gather?.addPages(kPfn, kCount, shift)
    } else {
      this.bitmap?.set(iPfn, iCount, shift)
      this.gather?.addPages(leafPfn, leafCount, shift)
    }
  }
}

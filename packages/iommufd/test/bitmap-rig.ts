/**
 * The `IovaBitmap` tests' rig: a user bitmap in a fresh mapping, its hazard log and the
 * `IommuDirtyBitmap` a dirty read records through.
 */
import {
  createMachine,
  DirtyHazardLog,
  type DirtyRecords,
  IommuDirtyBitmap,
  IotlbGather,
} from '@iommu/core'
import { IovaBitmap } from '../src/index.ts'

export const PAGE = 4096

/** What {@link bitmapRig} builds. */
export interface BitmapRigOptions {
  /** IOVA of bit 0. */
  readonly base: bigint
  /** Bytes of IOVA per bit. */
  readonly pageSize: number
  /** Bits of the bitmap. */
  readonly nbits: number
  /** Bytes into the mapping where the bitmap starts (default 0). */
  readonly offset?: number
  /** Bitmap pages mapped; the one after them is not (pins fail there). */
  readonly mapped: number
  /** Record mode (default `'kernel'`). */
  readonly mode?: DirtyRecords
  /** The records also go to a gather (`rig.gather`); default false. */
  readonly gather?: boolean
}

/**
 * A bitmap of `nbits` bits of `pageSize` from IOVA `base`, at `offset` bytes into a fresh
 * mapping of `mapped` pages followed by an unmapped page.
 */
export function bitmapRig(o: BitmapRigOptions) {
  const m = createMachine()
  const proc = m.createProcess()
  const va = proc.mmap((o.mapped + 1) * PAGE)
  proc.munmap(va + o.mapped * PAGE, PAGE)
  const data = va + (o.offset ?? 0)
  const log = new DirtyHazardLog()
  const length = BigInt(o.nbits) * BigInt(o.pageSize)
  const mode = o.mode ?? 'kernel'
  const hazards = log.begin(mode, {
    source: 'test',
    hwptId: null,
    domain: null,
    iova: o.base,
    length,
    pageSize: BigInt(o.pageSize),
    data: BigInt(data),
    clear: true,
  })
  const bitmap = new IovaBitmap(
    proc,
    m.memory,
    o.base,
    length - 1n,
    BigInt(o.pageSize),
    BigInt(data),
    mode,
    hazards,
  )
  const gather = new IotlbGather()
  const dirty = new IommuDirtyBitmap(bitmap, o.gather === true ? gather : null, { mode, hazards })
  /** Free the bitmap (unpin) and end the read's hazard record. */
  const end = () => {
    bitmap.free()
    hazards?.end()
  }
  return { m, proc, va, data, log, hazards, bitmap, gather, dirty, end }
}

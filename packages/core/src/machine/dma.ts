/**
 * Device DMA: every access goes through the IOMMU unit's hardware `translate`, with the
 * permission checks and faults the hardware model applies, and then really moves bytes
 * between the device and physical memory.
 *
 * A DMA is all-or-nothing: the whole range is translated first and data moves only when
 * every page translated, so a faulting DMA leaves memory unchanged.
 *
 * @module
 */

import type { IommuUnit } from '../driver.ts'
import { IommuError } from '../errno.ts'
import { FRAME_SIZE, type PhysicalMemory } from './memory.ts'

/** Why a DMA was aborted. */
export type DmaFaultReason =
  /** No valid translation at some level (not present). */
  | 'translation'
  /** The translation forbids the access (read-only, no-read). */
  | 'permission'
  /** The device's entry blocks DMA (blocked domain, abort STE, DTE without V/TV). */
  | 'blocked'
  /** A malformed device/context/stream table entry. */
  | 'bad-entry'
  /** The IOVA is outside what the table can translate. */
  | 'address-size'
  /** The translated address is not memory. */
  | 'bus-error'

/**
 * One DMA access in flight, as the hardware sees it. The DMA engine reuses one object per
 * device and fills the inputs; `translate` fills the outputs.
 */
export class DmaTransaction {
  /** PCI requester ID (bus << 8 | devfn). */
  rid = 0
  /** Stream ID (SMMUv3); equals the RID unless the platform maps it. */
  sid = 0
  /** The PASID of the TLP prefix, valid when `hasPasid`. */
  pasid = 0
  /** Whether the access carries a PASID prefix. */
  hasPasid = false
  /** IOVA >> 12: exact for every 64-bit IOVA. */
  iovaPfn = 0
  /** IOVA & 0xfff. */
  offset = 0
  /** Write (true) or read. */
  write = false
  /** Output: physical byte address of the IOVA. */
  pa = 0
  /** Output: bytes translated contiguously from `pa` (≥ 1). */
  len = 0
  /** Output on failure: why. */
  fault: DmaFaultReason | null = null
  /** Output on failure: the table level that faulted, or -1. */
  faultLevel = -1

  /** The IOVA as a u64. */
  get iova(): bigint {
    return (BigInt(this.iovaPfn) << 12n) | BigInt(this.offset)
  }
}

/** Thrown to the DMA caller when the IOMMU aborted the access. */
export class DmaFault extends Error {
  override readonly name = 'DmaFault'
  /** The first IOVA that failed to translate. */
  readonly iova: bigint
  /** The access type. */
  readonly write: boolean
  /** The PASID, when the access had one. */
  readonly pasid: number | undefined
  /** Why the IOMMU aborted it. */
  readonly reason: DmaFaultReason
  /** The page-table level that faulted, if the hardware reports one. */
  readonly level: number

  constructor(txn: DmaTransaction) {
    const reason = txn.fault ?? 'translation'
    super(
      `DMA ${txn.write ? 'write' : 'read'} fault at IOVA 0x${txn.iova.toString(16)}` +
        `${txn.hasPasid ? ` PASID ${txn.pasid}` : ''}: ${reason}`,
    )
    this.iova = txn.iova
    this.write = txn.write
    this.pasid = txn.hasPasid ? txn.pasid : undefined
    this.reason = reason
    this.level = txn.faultLevel
  }
}

/** Options of a DMA. */
export interface DmaOptions {
  /** Issue the access with this PASID (a PASID TLP prefix). */
  readonly pasid?: number
}

/** Counters of a device's DMA engine. */
export interface DmaStats {
  /** DMA calls that completed. */
  transfers: number
  /** Bytes moved. */
  bytes: number
  /** Calls aborted by a fault. */
  faults: number
  /** Calls to the unit's `translate`. */
  translations: number
}

const U64_LIMIT = 1n << 64n

/**
 * The DMA engine of one device. Addresses are IOVAs: `number` (up to 2^53) or `bigint`
 * (any u64).
 */
export class DmaEngine {
  /** Counters. */
  readonly stats: DmaStats = { transfers: 0, bytes: 0, faults: 0, translations: 0 }
  readonly #memory: PhysicalMemory
  readonly #unit: IommuUnit | null
  readonly #txn = new DmaTransaction()
  #segPa = new Float64Array(64)
  /** Segment lengths: a merged run of contiguous pages may exceed 2^31 bytes. */
  #segLen = new Float64Array(64)

  constructor(memory: PhysicalMemory, unit: IommuUnit | null, rid: number, sid: number) {
    this.#memory = memory
    this.#unit = unit
    this.#txn.rid = rid
    this.#txn.sid = sid
  }

  /**
   * Read `length` bytes at `iova`.
   *
   * @throws DmaFault - a page did not translate or forbids reads
   */
  read(iova: number | bigint, length: number, options?: DmaOptions): Uint8Array {
    // Translate first: a length past the mapping faults instead of allocating.
    const n = this.#translateAll(iova, length, false, options)
    let out: Uint8Array
    try {
      out = new Uint8Array(length)
    } catch {
      throw new IommuError('ENOMEM', `${length}-byte DMA read`)
    }
    this.#copyIn(n, out)
    return out
  }

  /** Read `dst.length` bytes at `iova` into `dst`. @throws DmaFault */
  readInto(iova: number | bigint, dst: Uint8Array, options?: DmaOptions): void {
    if (!(dst instanceof Uint8Array)) throw new IommuError('EINVAL', 'not a Uint8Array')
    this.#copyIn(this.#translateAll(iova, dst.length, false, options), dst)
  }

  #copyIn(n: number, dst: Uint8Array): void {
    if (n === 1) {
      // One physically contiguous piece: no view of the buffer needed.
      this.#memory.readBytes(this.#segPa[0] as number, dst)
      this.stats.transfers++
      this.stats.bytes += dst.length
      return
    }
    let done = 0
    for (let i = 0; i < n; i++) {
      const len = this.#segLen[i] as number
      this.#memory.readBytes(this.#segPa[i] as number, dst.subarray(done, done + len))
      done += len
    }
    this.stats.transfers++
    this.stats.bytes += dst.length
  }

  /**
   * Write `data` at `iova`. Nothing is written unless the whole range translates.
   *
   * @throws DmaFault - a page did not translate or forbids writes
   */
  write(iova: number | bigint, data: Uint8Array, options?: DmaOptions): void {
    if (!(data instanceof Uint8Array)) throw new IommuError('EINVAL', 'not a Uint8Array')
    const n = this.#translateAll(iova, data.length, true, options)
    if (n === 1) {
      this.#memory.writeBytes(this.#segPa[0] as number, data)
      this.stats.transfers++
      this.stats.bytes += data.length
      return
    }
    let done = 0
    for (let i = 0; i < n; i++) {
      const len = this.#segLen[i] as number
      this.#memory.writeBytes(this.#segPa[i] as number, data.subarray(done, done + len))
      done += len
    }
    this.stats.transfers++
    this.stats.bytes += data.length
  }

  /** Translate the whole range into (pa, len) segments; returns the segment count. */
  #translateAll(
    iova: number | bigint,
    length: number,
    write: boolean,
    options: DmaOptions | undefined,
  ): number {
    const txn = this.#txn
    let pfn: number
    let off: number
    if (!Number.isSafeInteger(length) || length < 0) throw new IommuError('EINVAL', 'length')
    if (typeof iova === 'bigint') {
      if (iova < 0n || iova + BigInt(length) > U64_LIMIT) throw new IommuError('EINVAL', 'IOVA')
      pfn = Number(iova >> 12n)
      off = Number(iova & 0xfffn)
    } else if (typeof iova === 'number') {
      if (!Number.isSafeInteger(iova) || iova < 0) throw new IommuError('EINVAL', `IOVA ${iova}`)
      pfn = Math.floor(iova / FRAME_SIZE)
      off = iova - pfn * FRAME_SIZE
    } else {
      throw new IommuError('EINVAL', 'IOVA is neither a number nor a bigint')
    }
    const pasid = options?.pasid
    // A PASID TLP prefix carries 20 bits.
    if (pasid !== undefined && (!Number.isInteger(pasid) || pasid < 0 || pasid >= 2 ** 20)) {
      throw new IommuError('EINVAL', `PASID ${pasid}`)
    }
    txn.write = write
    txn.hasPasid = options?.pasid !== undefined
    txn.pasid = options?.pasid ?? 0
    let n = 0
    let left = length
    while (left > 0) {
      txn.iovaPfn = pfn
      txn.offset = off
      txn.fault = null
      txn.faultLevel = -1
      let pa: number
      let len: number
      if (this.#unit === null) {
        pa = pfn * FRAME_SIZE + off
        len = FRAME_SIZE - off
      } else {
        this.stats.translations++
        if (!this.#unit.translate(txn)) {
          this.stats.faults++
          throw new DmaFault(txn)
        }
        pa = txn.pa
        len = txn.len
      }
      if (len > left) len = left
      if (pa + len > this.#memory.size) {
        txn.fault = 'bus-error'
        this.stats.faults++
        throw new DmaFault(txn)
      }
      if (n > 0 && (this.#segPa[n - 1] as number) + (this.#segLen[n - 1] as number) === pa) {
        // Physically contiguous with the previous piece: one copy moves both.
        this.#segLen[n - 1] = (this.#segLen[n - 1] as number) + len
      } else {
        if (n === this.#segPa.length) this.#grow()
        this.#segPa[n] = pa
        this.#segLen[n] = len
        n++
      }
      left -= len
      off += len
      if (off >= FRAME_SIZE) {
        const pages = Math.floor(off / FRAME_SIZE)
        pfn += pages
        off -= pages * FRAME_SIZE
      }
    }
    return n
  }

  #grow(): void {
    const pa = new Float64Array(this.#segPa.length * 2)
    pa.set(this.#segPa)
    this.#segPa = pa
    const len = new Float64Array(this.#segLen.length * 2)
    len.set(this.#segLen)
    this.#segLen = len
  }
}

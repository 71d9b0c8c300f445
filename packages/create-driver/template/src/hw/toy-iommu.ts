/**
 * The "toy" IOMMU hardware: a made-up IOMMU, small enough to read in one sitting, built
 * like the real ones. It reads only its registers and what the driver wrote into memory:
 * a device table indexed by requester ID, and VT-d second-stage page tables (walked with
 * `@iommu/io-pgtable`'s hardware walker). It caches translations in an IOTLB that only an
 * invalidation empties, so a driver that forgets one keeps using a stale translation.
 *
 * Registers (32-bit):
 * - `CONTROL` — bit 0 `EN`: translate; while clear every DMA is aborted.
 * - `DT_BASE` — page number of the device table (65536 entries of 16 bytes, 256 pages).
 * - `INVALIDATE` — writing 1 empties the IOTLB (at once: no queue, no completion wait).
 *
 * Device-table entry (four 32-bit words, indexed by RID):
 * - word 0: bit 0 `V` (valid), bits 2:1 `MODE` (0 abort, 1 pass-through, 2 translate),
 *   bit 3 `DE` (set dirty bits on DMA writes), bits 7:4 the page table's top level.
 * - word 1: page number of the root table. Words 2 and 3 are reserved (zero).
 *
 * @module
 */

import type { DmaTransaction, Driver, IommuUnit, Machine, PhysicalMemory } from '@iommu/core'
import {
  Access,
  type AnyPageTableWalker,
  HwAd,
  PageTableWalker,
  type VtdSsConfig,
  vtdss,
  WalkFault,
} from '@iommu/io-pgtable'

/** Register offsets. */
export const ToyReg = { CONTROL: 0x00, DT_BASE: 0x08, INVALIDATE: 0x10 } as const
/** `CONTROL.EN`. */
export const CONTROL_EN = 1
/** Device-table entry fields (word 0). */
export const Dte = {
  SIZE: 16,
  V: 1 << 0,
  MODE_SHIFT: 1,
  DE: 1 << 3,
  TOP_SHIFT: 4,
} as const
/** `Dte` MODE values. */
export const DteMode = { ABORT: 0, PASSTHROUGH: 1, TRANSLATE: 2 } as const
/** Entries of the device table (one per RID). */
export const DT_ENTRIES = 65536

/** The page-table configuration the toy walks: VT-d second stage, 4 levels (48-bit IOVA). */
export const TOY_PT_CONFIG: VtdSsConfig = { topLevel: 3, forceCoherence: true }

const IOTLB_SETS = 256
/** IOTLB entry flags. */
const T_READ = Access.READ
const T_WRITE = Access.WRITE
/** The leaf was dirty in memory when cached (a write through it needs no update). */
const T_DIRTY = 4

// #region unit
/** One toy IOMMU instance. */
export class ToyIommuHw implements IommuUnit {
  readonly name: string
  /** Bound by the machine when the unit is added (never assigned here; see `IommuUnit`). */
  declare readonly driver: Driver
  /** No PASID support. */
  readonly maxPasids = 0
  /** Faults the unit raised (a real unit would log them in an event queue). */
  faults = 0
  readonly #memory: PhysicalMemory
  readonly #walker: AnyPageTableWalker
  #control = 0
  #dtBase = 0
  // The IOTLB, direct-mapped by IOVA page and RID, on typed arrays (no object per entry).
  readonly #tagRid = new Int32Array(IOTLB_SETS).fill(-1)
  readonly #tagPfn = new Float64Array(IOTLB_SETS)
  readonly #outPfn = new Float64Array(IOTLB_SETS)
  readonly #flags = new Uint8Array(IOTLB_SETS)

  constructor(machine: Machine, name: string) {
    this.name = name
    this.#memory = machine.memory
    this.#walker = new PageTableWalker(machine.memory, vtdss, TOY_PT_CONFIG)
  }
  // #endregion unit

  /** Write a register, with the hardware's side effects. */
  writeReg(offset: number, value: number): void {
    switch (offset) {
      case ToyReg.CONTROL:
        this.#control = value
        return
      case ToyReg.DT_BASE:
        this.#dtBase = value * 4096
        return
      case ToyReg.INVALIDATE:
        if (value & 1) this.#tagRid.fill(-1)
        return
    }
  }

  /** Read a register. */
  readReg(offset: number): number {
    if (offset === ToyReg.CONTROL) return this.#control
    if (offset === ToyReg.DT_BASE) return this.#dtBase / 4096
    return 0
  }

  // #region translate
  /** Translate one DMA access (`IommuHardware.translate`). */
  translate(txn: DmaTransaction): boolean {
    if ((this.#control & CONTROL_EN) === 0 || txn.hasPasid) return this.#fault(txn, 'blocked', -1)
    const mem = this.#memory
    const entry = this.#dtBase + txn.rid * Dte.SIZE
    const w0 = mem.read32(entry)
    if ((w0 & Dte.V) === 0) return this.#fault(txn, 'blocked', -1)
    const mode = (w0 >>> Dte.MODE_SHIFT) & 3
    if (mode === DteMode.ABORT) return this.#fault(txn, 'blocked', -1)
    if (mode === DteMode.PASSTHROUGH) {
      txn.pa = txn.iovaPfn * 4096 + txn.offset
      txn.len = 4096 - txn.offset
      return true
    }
    if (mode !== DteMode.TRANSLATE) return this.#fault(txn, 'bad-entry', -1)
    const dirtyOn = (w0 & Dte.DE) !== 0
    const need = txn.write ? T_WRITE : T_READ
    const set = (txn.iovaPfn ^ (txn.rid * 0x9e37)) & (IOTLB_SETS - 1)
    let flags = this.#flags[set] as number
    // An IOTLB hit needs no walk, unless a write must set the leaf's dirty bit first.
    const hit = this.#tagRid[set] === txn.rid && this.#tagPfn[set] === txn.iovaPfn
    if (!hit || (txn.write && dirtyOn && (flags & T_DIRTY) === 0)) {
      const top = (w0 >>> Dte.TOP_SHIFT) & 0xf
      const root = mem.read32(entry + 4)
      const ad = dirtyOn ? HwAd.ACCESSED | HwAd.DIRTY : 0
      const r = this.#walker.walk(root, top, txn.iovaPfn, need, ad)
      if (r.fault !== WalkFault.NONE) {
        const why = r.fault === WalkFault.PERMISSION ? 'permission' : 'translation'
        return this.#fault(txn, r.fault === WalkFault.RANGE ? 'address-size' : why, r.level)
      }
      flags = r.perm | (r.dirty ? T_DIRTY : 0)
      this.#tagRid[set] = txn.rid
      this.#tagPfn[set] = txn.iovaPfn
      this.#outPfn[set] = r.pagePfn
      this.#flags[set] = flags
    }
    if ((flags & need) === 0) return this.#fault(txn, 'permission', 0)
    txn.pa = (this.#outPfn[set] as number) * 4096 + txn.offset
    txn.len = 4096 - txn.offset
    return true
  }
  // #endregion translate

  #fault(txn: DmaTransaction, why: NonNullable<DmaTransaction['fault']>, level: number): false {
    txn.fault = why
    txn.faultLevel = level
    this.faults++
    return false
  }
}

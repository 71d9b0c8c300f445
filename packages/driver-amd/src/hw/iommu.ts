/**
 * The AMD IOMMU hardware model: one IOMMU instance with its MMIO registers, the device
 * table, command buffer and event log in the machine's memory, a DTE cache and an IOTLB.
 * It only reads what software wrote into memory and registers; the Linux driver in
 * `../driver.ts` programs it exactly through those.
 *
 * Caches are dropped only by the commands that drop them on real hardware
 * (INVALIDATE_DEVTAB_ENTRY, INVALIDATE_IOMMU_PAGES, INVALIDATE_IOMMU_ALL). A
 * missing-invalidation detector compares every cache hit with memory: when a DMA is about
 * to use a cached DTE or translation that no longer matches what is in memory, it records
 * where, what, and which command was missing — and the DMA still uses the stale entry, as
 * the hardware would.
 *
 * @module
 */

import type { DmaTransaction, Driver, IommuUnit, Machine, PhysicalMemory } from '@iommu/core'
import { type PathRecorder, PathRecords } from '@iommu/io-pgtable'
import { Iotlb, NO_PASID, POW2 } from './iotlb.ts'
import {
  CMD_SIZE,
  Cmd,
  CmdFlag,
  Control,
  Dte,
  decodeInvRange,
  Efr,
  EVT_SIZE,
  Event,
  EventFlag,
  LEN_SHIFT,
  Mmio,
  Status,
} from './regs.ts'

/** Access bits (as the page-table hardware view counts them). */
const READ = 1
const WRITE = 2

/** Hardware A/D update enables passed to the walker. */

/** Eight zero words: a DTE in a frame that holds no data. */
const ZERO_DTE = new Uint32Array(8)
export const WalkAd = { ACCESSED: 1, DIRTY: 2 } as const

/** What a host page-table walk returns (filled in place; no allocation per walk). */
export class HostWalkResult {
  /** 0 = translated, else the fault kind: 1 not present, 2 permission, 3 reserved entry, 4 range. */
  fault = 0
  /** Level (0 = 4 KiB items) where the walk faulted, or -1. */
  faultLevel = -1
  /** IOVA page number (4 KiB units) where the leaf starts. */
  leafVpn = 0
  /** Output page number where the leaf starts. */
  leafPa = 0
  /** Size of the leaf, log2 bytes. */
  sizeLg2 = 12
  /** Access bits the whole walk grants (read 1, write 2). */
  perm = 0
  /** The leaf's dirty bit after the walk. */
  dirty = false
}

/** Walk fault kinds of {@link HostWalkResult.fault}. */
export const HostWalkFault = {
  NONE: 0,
  NOT_PRESENT: 1,
  PERMISSION: 2,
  RESERVED: 3,
  RANGE: 4,
} as const

/**
 * The host (v1) page-table walk the hardware performs, reading only memory. The driver
 * package wires `@iommu/io-pgtable`'s AMD v1 hardware view here.
 */
export interface HostTableWalker {
  /**
   * Walk the v1 table at `rootPfn` with `mode` levels (DTE.Mode 1..6) for IOVA page
   * `iovaPfn` and the access `access` (1 read, 2 write). With `update`, apply the hardware
   * Accessed/Dirty updates enabled in `ad` ({@link WalkAd}) to the entries in memory; without
   * it, only look (the detector's comparison walk).
   */
  walk(
    rootPfn: number,
    mode: number,
    iovaPfn: number,
    access: number,
    ad: number,
    update: boolean,
    out: HostWalkResult,
  ): void
  /**
   * Optional, for the detector: after a walk that reached a leaf, record in
   * `out[at .. at + recordInts)` where it read its entries and what they held (false when
   * it cannot, e.g. the walk faulted).
   */
  recordPath?(out: Int32Array, at: number): boolean
  /**
   * True when every entry of the record at `rec[at]` still holds the same words: a walk of
   * the same IOVA page from the same root would give the same result.
   */
  pathUnchanged?(rec: Int32Array, at: number): boolean
  /** Ints per record of {@link recordPath}. */
  readonly recordInts?: number
}

/** A cached, decoded DTE (one object per device, not per DMA). */
interface CachedDte {
  readonly devid: number
  /** The eight 32-bit words as read, for the detector. */
  readonly raw: Uint32Array
  readonly v: boolean
  readonly tv: boolean
  readonly mode: number
  readonly rootPfn: number
  readonly ir: boolean
  readonly iw: boolean
  /** Hardware A/D enables ({@link WalkAd}). */
  readonly ad: number
  readonly gv: boolean
  readonly domid: number
  /** Why the entry is illegal, or null. */
  readonly illegal: string | null
  /** The detector already reported this cached copy as stale. */
  staleReported: boolean
}

/** A use of a stale cache entry that the driver forgot to invalidate. */
export interface StaleUse {
  /** Which cache held the stale entry. */
  readonly cache: 'dte' | 'iotlb'
  /** What differs between the cache and memory. */
  readonly what: string
  /** The command that would have dropped the entry. */
  readonly missing: 'INVALIDATE_DEVTAB_ENTRY' | 'INVALIDATE_IOMMU_PAGES'
  /** DeviceID of the DMA. */
  readonly devid: number
  /** DomainID the entry is tagged with. */
  readonly domid: number
  /** The DMA's IOVA. */
  readonly iova: bigint
  /** Whether the DMA was a write. */
  readonly write: boolean
}

/** A decoded event-log entry (for tests, tools and the driver's log reader). */
export interface AmdEvent {
  readonly code: number
  readonly devid: number
  /** PASID (GN set) or DomainID, as the record's word 1 [15:0] plus word 0 [19:16]. */
  readonly pasidOrDomid: number
  readonly flags: number
  readonly address: bigint
}

/** Decode one 16-byte event record from its four 32-bit words. */
export function decodeEvent(w0: number, w1: number, w2: number, w3: number): AmdEvent {
  return {
    code: (w1 >>> 28) & 0xf,
    devid: w0 & 0xffff,
    pasidOrDomid: (w0 & 0xf_0000) | (w1 & 0xffff),
    flags: (w1 >>> 16) & 0xfff,
    address: (BigInt(w3 >>> 0) << 32n) | BigInt(w2 >>> 0),
  }
}

/** Hardware configuration of an AMD IOMMU unit. */
export interface AmdIommuHwConfig {
  /** Extended Feature Register. Default: HATS = 6 levels, GT, PPR, HASup, HDSup, PASmax 16. */
  readonly efr?: bigint
  /** Extended Feature 2 Register. Default 0. */
  readonly efr2?: bigint
  /** IOTLB entries (default 1024, as QEMU's AMD-Vi) and associativity (default 4). */
  readonly iotlbEntries?: number
  readonly iotlbWays?: number
  /** Run the missing-invalidation detector on every cache hit (default true). */
  readonly detectStale?: boolean
  /**
   * Let the detector skip the walk of an IOTLB hit when every entry its fill walk read
   * holds the same words (default true). The reports are the same either way: false
   * walks on every hit (the reference the records are tested against).
   */
  readonly detectorRecords?: boolean
  /**
   * The unit's IVHD (type 11h/40h) declares HATDis: firmware says host address
   * translation is disabled. Read by the driver at init (`amd_iommu_hatdis`), as the
   * ACPI table is, not by the hardware model. Default false.
   */
  readonly ivhdHatdis?: boolean
}

/** The default EFR: 6-level host tables, GT, PPR, GIoSup, HASup, HDSup, 16-bit PASIDs. */
export const DEFAULT_EFR: bigint =
  Efr.PPR |
  Efr.GT |
  (2n << Efr.HATS_SHIFT) |
  (15n << Efr.PASMAX_SHIFT) |
  Efr.GIOSUP |
  Efr.HASUP |
  Efr.HDSUP

/** Counters of a unit. */
export interface AmdHwStats {
  translations: number
  walks: number
  dteFetches: number
  commands: number
  events: number
  eventsDropped: number
}

/** One AMD IOMMU instance. */
export class AmdIommuHw implements IommuUnit {
  readonly name: string
  /** Bound by the machine when the unit is added (never assigned here; see `IommuUnit`). */
  declare readonly driver: Driver
  readonly maxPasids: number
  readonly memory: PhysicalMemory
  /** The translation cache. */
  readonly iotlb: Iotlb
  /** Uses of stale cache entries found by the detector. */
  readonly staleUses: StaleUse[] = []
  readonly stats: AmdHwStats = {
    translations: 0,
    walks: 0,
    dteFetches: 0,
    commands: 0,
    events: 0,
    eventsDropped: 0,
  }
  /** Run the detector on cache hits. */
  detectStale: boolean
  readonly #walker: HostTableWalker
  readonly #regs = new Map<number, bigint>()
  readonly #dteCache: (CachedDte | undefined)[] = []
  readonly #walk = new HostWalkResult()
  readonly #peek = new HostWalkResult()
  /**
   * Per IOTLB entry, the fill walk's record (`HostTableWalker.recordPath`), with the IOVA
   * page and the cached DTE it was walked for: the detector re-walks a hit only when one
   * of them differs (same answer, fewer walks). Null when the walker keeps no records.
   */
  readonly #records: PathRecords<CachedDte> | null
  #devtabBase = 0
  #devtabEntries = 0
  #cmdBase = 0
  #cmdSize = 0
  #cmdHead = 0
  #evtBase = 0
  #evtSize = 0
  #evtHead = 0
  #evtTail = 0

  constructor(
    machine: Machine,
    name: string,
    walker: HostTableWalker,
    config: AmdIommuHwConfig = {},
  ) {
    this.name = name
    this.memory = machine.memory
    this.#walker = walker
    const efr = config.efr ?? DEFAULT_EFR
    this.#regs.set(Mmio.EXT_FEATURES, efr)
    this.#regs.set(Mmio.EXT_FEATURES2, config.efr2 ?? 0n)
    this.#regs.set(Mmio.STATUS, 0n)
    this.#regs.set(Mmio.CONTROL, 0n)
    const pasMax = Number((efr >> Efr.PASMAX_SHIFT) & 0x1fn)
    this.maxPasids = efr & Efr.GT ? 2 ** (pasMax + 1) : 0
    this.iotlb = new Iotlb(config.iotlbEntries ?? 1024, config.iotlbWays ?? 4)
    this.detectStale = config.detectStale ?? true
    const records =
      config.detectorRecords !== false && walker.recordPath && walker.pathUnchanged
        ? (walker.recordInts ?? 0)
        : 0
    this.#records = records > 0 ? new PathRecords(this.iotlb.sets * this.iotlb.ways, records) : null
  }

  // ------------------------------------------------------------------ MMIO

  /** Read a 64-bit MMIO register. */
  readMmio(offset: number): bigint {
    switch (offset) {
      case Mmio.CMD_HEAD:
        return BigInt(this.#cmdHead)
      case Mmio.EVT_HEAD:
        return BigInt(this.#evtHead)
      case Mmio.EVT_TAIL:
        return BigInt(this.#evtTail)
      default:
        return this.#regs.get(offset) ?? 0n
    }
  }

  /** Write a 64-bit MMIO register, with the hardware's side effects. */
  writeMmio(offset: number, value: bigint): void {
    switch (offset) {
      case Mmio.EXT_FEATURES:
      case Mmio.EXT_FEATURES2:
        return // read-only
      case Mmio.STATUS:
        // Status bits are write-1-to-clear.
        this.#regs.set(Mmio.STATUS, (this.#regs.get(Mmio.STATUS) ?? 0n) & ~value)
        return
      case Mmio.EVT_HEAD:
        this.#evtHead = Number(value & 0x7fff0n)
        return
      case Mmio.CMD_HEAD:
        this.#cmdHead = Number(value & 0x7fff0n)
        return
    }
    this.#regs.set(offset, value)
    switch (offset) {
      case Mmio.DEV_TABLE:
        this.#devtabBase = Number(value & 0x000f_ffff_ffff_f000n)
        this.#devtabEntries = ((Number(value & 0x1ffn) + 1) * 4096) / Dte.SIZE
        return
      case Mmio.CMD_BUF:
        this.#cmdBase = Number(value & 0x000f_ffff_ffff_f000n)
        this.#cmdSize = 2 ** Number((value >> LEN_SHIFT) & 0xfn) * CMD_SIZE
        this.#cmdHead = 0
        this.#regs.set(Mmio.CMD_TAIL, 0n)
        return
      case Mmio.EVT_BUF:
        this.#evtBase = Number(value & 0x000f_ffff_ffff_f000n)
        this.#evtSize = 2 ** Number((value >> LEN_SHIFT) & 0xfn) * EVT_SIZE
        this.#evtHead = 0
        this.#evtTail = 0
        return
      case Mmio.CONTROL:
        this.#updateStatusRun()
        this.#runCommands()
        return
      case Mmio.CMD_TAIL:
        this.#runCommands()
        return
    }
  }

  #control(bit: number): boolean {
    return (((this.#regs.get(Mmio.CONTROL) ?? 0n) >> BigInt(bit)) & 1n) === 1n
  }

  /** Control bits the hot paths test, decoded once per CONTROL write. */
  #enabled = false
  #evtLogOn = false
  #evtIntOn = false

  #setStatus(bits: bigint, on: boolean): void {
    const s = this.#regs.get(Mmio.STATUS) ?? 0n
    this.#regs.set(Mmio.STATUS, on ? s | bits : s & ~bits)
  }

  #updateStatusRun(): void {
    const en = this.#control(Control.IOMMU_EN)
    this.#enabled = en
    this.#evtLogOn = en && this.#control(Control.EVT_LOG_EN)
    this.#evtIntOn = this.#control(Control.EVT_INT_EN)
    this.#setStatus(Status.CMDBUF_RUN, en && this.#control(Control.CMDBUF_EN))
    this.#setStatus(Status.EVT_RUN, en && this.#control(Control.EVT_LOG_EN))
  }

  /** The unit's Extended Feature Register. */
  get efr(): bigint {
    return this.#regs.get(Mmio.EXT_FEATURES) ?? 0n
  }

  /** The unit's Extended Feature 2 Register. */
  get efr2(): bigint {
    return this.#regs.get(Mmio.EXT_FEATURES2) ?? 0n
  }

  // ------------------------------------------------------------------ command buffer

  #runCommands(): void {
    if (!(this.#control(Control.IOMMU_EN) && this.#control(Control.CMDBUF_EN))) return
    if ((this.#regs.get(Mmio.STATUS) ?? 0n) & Status.CMDBUF_RUN) {
      const tail = Number((this.#regs.get(Mmio.CMD_TAIL) ?? 0n) & 0x7fff0n)
      while (this.#cmdHead !== tail) {
        const pa = this.#cmdBase + this.#cmdHead
        if (!this.#execute(pa)) {
          // An illegal command halts the command processor (CmdBufRun clears).
          this.#setStatus(Status.CMDBUF_RUN, false)
          return
        }
        this.#cmdHead = (this.#cmdHead + CMD_SIZE) % this.#cmdSize
      }
    }
  }

  #execute(pa: number): boolean {
    const m = this.memory
    const w0 = m.read32(pa)
    const w1 = m.read32(pa + 4)
    const w2 = m.read32(pa + 8)
    const w3 = m.read32(pa + 12)
    this.stats.commands++
    switch ((w1 >>> 28) & 0xf) {
      case Cmd.COMPLETION_WAIT: {
        const addr = (w1 & 0xf_ffff) * 2 ** 32 + (w0 & 0xffff_fff8)
        if (w0 & CmdFlag.COMPL_WAIT_STORE) {
          m.write32(addr, w2)
          m.write32(addr + 4, w3)
        }
        if (w0 & CmdFlag.COMPL_WAIT_INT) this.#setStatus(Status.COM_WAIT_INT, true)
        return true
      }
      case Cmd.INVALIDATE_DEVTAB_ENTRY:
        this.#dteCache[w0 & 0xffff] = undefined
        return true
      case Cmd.INVALIDATE_IOMMU_PAGES: {
        const domid = w1 & 0xffff
        const address = (BigInt(w3 >>> 0) << 32n) | BigInt((w2 & ~0xfff) >>> 0)
        const [first, count] = decodeInvRange(address, (w2 & CmdFlag.PAGES_SIZE) !== 0)
        const pasid = w2 & CmdFlag.PAGES_GN ? w0 & 0xf_ffff : NO_PASID
        // PDE = 1 also drops cached directory entries; this model caches leaves only.
        this.iotlb.invalidateRange(domid, pasid, first, count)
        return true
      }
      case Cmd.INVALIDATE_IOTLB_PAGES:
      case Cmd.INVALIDATE_INTERRUPT_TABLE:
      case Cmd.PREFETCH_IOMMU_PAGES:
      case Cmd.COMPLETE_PPR_REQUEST:
        // Device ATCs, interrupt remapping and PPR are not modelled: accepted, no effect.
        return true
      case Cmd.INVALIDATE_IOMMU_ALL:
        this.#dteCache.length = 0
        this.iotlb.invalidateAll()
        return true
      default:
        this.#logEvent(0, 0, 0, Event.ILLEGAL_COMMAND_ERROR, BigInt(pa))
        return false
    }
  }

  // ------------------------------------------------------------------ event log

  #logEvent(
    devid: number,
    pasidOrDomid: number,
    flags: number,
    code: number,
    address: bigint,
  ): void {
    if (!this.#evtLogOn || this.#evtSize === 0) {
      this.stats.eventsDropped++
      return
    }
    const next = (this.#evtTail + EVT_SIZE) % this.#evtSize
    if (next === this.#evtHead) {
      // Full: the hardware sets EventOverflow and drops the record.
      this.#setStatus(Status.EVT_OVERFLOW, true)
      this.stats.eventsDropped++
      return
    }
    const pa = this.#evtBase + this.#evtTail
    const m = this.memory
    m.write32(pa, (devid & 0xffff) | (pasidOrDomid & 0xf_0000))
    m.write32(pa + 4, ((pasidOrDomid & 0xffff) | ((flags & 0xfff) << 16) | (code << 28)) >>> 0)
    m.write32(pa + 8, Number(address & 0xffff_ffffn))
    m.write32(pa + 12, Number((address >> 32n) & 0xffff_ffffn))
    this.#evtTail = next
    this.stats.events++
    if (this.#evtIntOn) this.#setStatus(Status.EVT_INT, true)
  }

  /** Decode the records between head and tail without consuming them (tests, tools). */
  pendingEvents(): AmdEvent[] {
    const out: AmdEvent[] = []
    const m = this.memory
    for (let h = this.#evtHead; h !== this.#evtTail; h = (h + EVT_SIZE) % this.#evtSize) {
      const pa = this.#evtBase + h
      out.push(decodeEvent(m.read32(pa), m.read32(pa + 4), m.read32(pa + 8), m.read32(pa + 12)))
    }
    return out
  }

  // ------------------------------------------------------------------ device table

  #readDte(devid: number): CachedDte {
    this.stats.dteFetches++
    const raw = new Uint32Array(8)
    const pa = this.#devtabBase + devid * Dte.SIZE
    for (let i = 0; i < 8; i++) raw[i] = this.memory.read32(pa + 4 * i)
    return decodeDte(devid, raw, this.efr)
  }

  #dte(devid: number, txn: DmaTransaction): CachedDte {
    let dte = this.#dteCache[devid]
    if (dte === undefined) {
      dte = this.#readDte(devid)
      this.#dteCache[devid] = dte
    } else if (this.detectStale && !dte.staleReported && !this.#dteMatches(devid, dte.raw)) {
      const pa = this.#devtabBase + devid * Dte.SIZE
      for (let i = 0; i < 8; i++) {
        if (this.memory.read32(pa + 4 * i) !== dte.raw[i]) {
          dte.staleReported = true
          this.staleUses.push({
            cache: 'dte',
            what: `DTE word ${i} cached 0x${(dte.raw[i] as number).toString(16)} but memory has 0x${this.memory.read32(pa + 4 * i).toString(16)}`,
            missing: 'INVALIDATE_DEVTAB_ENTRY',
            devid,
            domid: dte.domid,
            iova: txn.iova,
            write: txn.write,
          })
          break
        }
      }
    }
    return dte
  }

  /**
   * True when DTE `devid` in memory holds the words cached as `raw`. Every translation
   * asks, so it reads through the frame's word view (a DTE is 32 aligned bytes of one
   * 4 KiB frame, 128 to a frame), not eight read32 calls; a frame never written reads as
   * zeros and is not given storage by the check.
   */
  #dteMatches(devid: number, raw: Uint32Array): boolean {
    const words = this.memory.peekWords(this.#devtabBase / 4096 + (devid >>> 7)) ?? ZERO_DTE
    const at = words === ZERO_DTE ? 0 : (devid & 127) << 3
    return (
      words[at] === raw[0] &&
      words[at + 1] === raw[1] &&
      words[at + 2] === raw[2] &&
      words[at + 3] === raw[3] &&
      words[at + 4] === raw[4] &&
      words[at + 5] === raw[5] &&
      words[at + 6] === raw[6] &&
      words[at + 7] === raw[7]
    )
  }

  /**
   * The DTE cache's entries, for tools: each cached DeviceID with the DomainID it was
   * cached with and a copy of the eight 32-bit words as the hardware read them (compare
   * with memory to see a missing INVALIDATE_DEVTAB_ENTRY).
   */
  cachedDtes(): { readonly devid: number; readonly domid: number; readonly raw: Uint32Array }[] {
    const out: { devid: number; domid: number; raw: Uint32Array }[] = []
    this.#dteCache.forEach((d) => {
      if (d !== undefined) out.push({ devid: d.devid, domid: d.domid, raw: d.raw.slice() })
    })
    return out
  }

  // ------------------------------------------------------------------ translation

  translate(txn: DmaTransaction): boolean {
    this.stats.translations++
    if (!this.#enabled) {
      // IOMMU disabled: DMA is not translated.
      txn.pa = txn.iovaPfn * 4096 + txn.offset
      txn.len = 4096 - txn.offset
      return true
    }
    const devid = txn.rid
    const access = txn.write ? WRITE : READ
    if (devid >= this.#devtabEntries) {
      return this.#fault(txn, 'bad-entry', Event.ILLEGAL_DEV_TABLE_ENTRY, devid, 0, 0)
    }
    const dte = this.#dte(devid, txn)
    if (!dte.v) {
      // DTE.V = 0: the IOMMU passes the request through untranslated.
      txn.pa = txn.iovaPfn * 4096 + txn.offset
      txn.len = 4096 - txn.offset
      return true
    }
    if (dte.illegal !== null) {
      return this.#fault(txn, 'bad-entry', Event.ILLEGAL_DEV_TABLE_ENTRY, devid, 0, EventFlag.RZ)
    }
    if (!dte.tv) return this.#fault(txn, 'blocked', Event.IO_PAGE_FAULT, devid, dte.domid, 0)
    if (txn.hasPasid && !dte.gv) {
      // A PASID-tagged request needs guest translation (DTE.GV).
      return this.#fault(txn, 'blocked', Event.IO_PAGE_FAULT, devid, dte.domid, EventFlag.GN)
    }
    const dtePerm = (dte.ir ? READ : 0) | (dte.iw ? WRITE : 0)
    if (dte.mode === 0) {
      // Mode 0: no host translation; DTE.IR/IW still apply.
      if ((dtePerm & access) === 0) {
        return this.#fault(
          txn,
          'permission',
          Event.IO_PAGE_FAULT,
          devid,
          dte.domid,
          EventFlag.PR | EventFlag.PE,
        )
      }
      txn.pa = txn.iovaPfn * 4096 + txn.offset
      txn.len = 4096 - txn.offset
      return true
    }
    const tlb = this.iotlb
    let e = tlb.lookup(dte.domid, NO_PASID, txn.iovaPfn)
    if (e >= 0 && this.detectStale && !this.#unchangedSinceFill(e, dte, txn.iovaPfn)) {
      this.#checkEntry(e, dte, txn)
    }
    // A write through an entry cached clean goes back to memory to set D.
    const needDirty = txn.write && (dte.ad & WalkAd.DIRTY) !== 0
    if (e < 0 || (needDirty && tlb.dirty[e] === 0 && ((tlb.perm[e] as number) & WRITE) !== 0)) {
      const w = this.#walk
      this.stats.walks++
      this.#walker.walk(dte.rootPfn, dte.mode, txn.iovaPfn, access, dte.ad, true, w)
      if (w.fault !== 0) {
        const flags =
          w.fault === HostWalkFault.PERMISSION
            ? EventFlag.PR | EventFlag.PE
            : w.fault === HostWalkFault.RESERVED
              ? EventFlag.RZ
              : 0
        txn.faultLevel = w.faultLevel
        return this.#fault(
          txn,
          w.fault === HostWalkFault.PERMISSION
            ? 'permission'
            : w.fault === HostWalkFault.RANGE
              ? 'address-size'
              : 'translation',
          Event.IO_PAGE_FAULT,
          devid,
          dte.domid,
          flags,
        )
      }
      e = tlb.fill(dte.domid, NO_PASID, w.leafVpn, w.sizeLg2, w.leafPa, w.perm & dtePerm, w.dirty)
      const records = this.#records
      if (records !== null) {
        if (this.detectStale) records.save(e, this.#walker as PathRecorder, txn.iovaPfn, dte)
        else records.clear(e)
      }
    }
    if (((tlb.perm[e] as number) & access) === 0) {
      return this.#fault(
        txn,
        'permission',
        Event.IO_PAGE_FAULT,
        devid,
        dte.domid,
        EventFlag.PR | EventFlag.PE,
      )
    }
    const offPages = txn.iovaPfn - tlb.vpn(e)
    const leafBytes = POW2[tlb.sizeLg2(e)] as number
    const within = offPages * 4096 + txn.offset
    txn.pa = (tlb.pa[e] as number) * 4096 + within
    txn.len = leafBytes - within
    return true
  }

  #fault(
    txn: DmaTransaction,
    reason: DmaTransaction['fault'],
    code: number,
    devid: number,
    domid: number,
    flags: number,
  ): false {
    txn.fault = reason
    const f = flags | (txn.write ? EventFlag.RW : 0) | (txn.hasPasid ? EventFlag.GN : 0)
    const tag = txn.hasPasid ? txn.pasid : domid
    this.#logEvent(devid, tag, f, code, txn.iova)
    return false
  }

  /**
   * True when IOTLB entry `e` was filled by a walk of this IOVA page under this cached DTE
   * and every entry that walk read holds the same words: {@link #checkEntry}'s walk would
   * then find nothing.
   */
  #unchangedSinceFill(e: number, dte: CachedDte, iovaPfn: number): boolean {
    return this.#records?.unchanged(e, this.#walker as PathRecorder, iovaPfn, dte) === true
  }

  /** Detector: does IOTLB entry `e` still match the page table in memory? */
  #checkEntry(e: number, dte: CachedDte, txn: DmaTransaction): void {
    const tlb = this.iotlb
    const p = this.#peek
    // Look with no access: the check compares the mapping and its permissions with the
    // cached ones; a write through a read-only leaf is a permission fault, not staleness.
    this.#walker.walk(dte.rootPfn, dte.mode, txn.iovaPfn, 0, dte.ad, false, p)
    let what: string | null = null
    const dtePerm = (dte.ir ? READ : 0) | (dte.iw ? WRITE : 0)
    if (
      p.fault === HostWalkFault.NOT_PRESENT ||
      p.fault === HostWalkFault.RESERVED ||
      p.fault === HostWalkFault.RANGE
    ) {
      what = `IOTLB maps IOVA page 0x${txn.iovaPfn.toString(16)} to 0x${(tlb.pa[e] as number).toString(16)} but the page table no longer maps it`
    } else if (p.leafPa !== tlb.pa[e] || p.sizeLg2 !== tlb.sizeLg2(e) || p.leafVpn !== tlb.vpn(e)) {
      what = `IOTLB has a 2^${tlb.sizeLg2(e)} leaf at 0x${(tlb.pa[e] as number).toString(16)}, memory a 2^${p.sizeLg2} leaf at 0x${p.leafPa.toString(16)}`
    } else if ((p.perm & dtePerm) !== tlb.perm[e]) {
      what = `IOTLB permissions ${tlb.perm[e]} differ from the page table's ${p.perm & dtePerm}`
    } else if (tlb.dirty[e] === 1 && !p.dirty && (dte.ad & WalkAd.DIRTY) !== 0) {
      what = 'IOTLB caches the leaf as dirty but its D bit was cleared: writes will not be logged'
    }
    if (what !== null) {
      this.staleUses.push({
        cache: 'iotlb',
        what,
        missing: 'INVALIDATE_IOMMU_PAGES',
        devid: txn.rid,
        domid: dte.domid,
        iova: txn.iova,
        write: txn.write,
      })
    }
  }
}

/** Decode a DTE's eight words; `efr` decides which A/D updates are supported. */
function decodeDte(devid: number, raw: Uint32Array, efr: bigint): CachedDte {
  const d0lo = raw[0] as number
  const d0hi = raw[1] as number
  const d1lo = raw[2] as number
  const mode = (d0lo >>> 9) & 7
  const had = (d0lo >>> 7) & 3
  let illegal: string | null = null
  if (mode === 7) illegal = 'Mode 7 is reserved in a DTE'
  else if (had === 2) illegal = 'HAD = 10b is reserved'
  const rootPfn = (d0hi & 0xf_ffff) * 2 ** 20 + (d0lo >>> 12)
  if (illegal === null && (d0lo & 2) !== 0 && mode !== 0 && rootPfn === 0) {
    illegal = 'TV = 1 with a host table but no root pointer'
  }
  // HAD[0] enables A updates (needs HASup), HAD = 11b also D updates (needs HDSup).
  let ad = 0
  if (had & 1 && efr & Efr.HASUP) ad |= WalkAd.ACCESSED
  if (had === 3 && efr & Efr.HDSUP) ad |= WalkAd.DIRTY
  return {
    devid,
    raw,
    v: (d0lo & 1) !== 0,
    tv: (d0lo & 2) !== 0,
    mode,
    rootPfn,
    ir: (d0hi & (1 << 29)) !== 0,
    iw: (d0hi & (1 << 30)) !== 0,
    ad,
    gv: (d0hi & (1 << 23)) !== 0,
    domid: d1lo & 0xffff,
    illegal,
    staleReported: false,
  }
}

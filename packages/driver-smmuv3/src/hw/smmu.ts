/**
 * The ARM SMMUv3 hardware model (IHI 0070): one SMMU with its MMIO registers, the stream
 * table and context descriptors, the command, event and PRI queues in the machine's memory,
 * STE and CD configuration caches, a TLB tagged by VMID and ASID, and the Address
 * Translation Cache of ATS endpoints. It only reads what software wrote into memory and
 * registers; the Linux driver in `../driver.ts` programs it exactly through those.
 *
 * Translation: STE Config abort, bypass, stage 1 (CD table at a PA), stage 2, and nested
 * (the CD table and every stage-1 table at IPAs translated by the stage 2), with
 * S1CDMax/S1DSS substream selection, linear and two-level stream and CD tables, and
 * hardware Access-flag / dirty-state updates when the CD enables HA/HD (S1 DBM: a write to
 * a writable-clean leaf clears AP[2]). The walks use `@iommu/io-pgtable`'s ARM LPAE
 * hardware view.
 *
 * Caches are dropped only by the commands that drop them (CFGI_STE(_RANGE) also drops the
 * stream's CDs; CFGI_CD, CFGI_CD_ALL; TLBI_NH_*, TLBI_S12_VMALL, TLBI_S2_IPA — which keeps
 * combined nested entries, as the architecture does — TLBI_NSNH_ALL; ATC_INV for the
 * endpoint ATC). A missing-invalidation detector compares every cache hit with memory:
 * when a DMA is about to use a cached STE, CD, TLB or ATC entry that no longer matches what
 * is in memory, it records where, what, and which command was missing — and the DMA still
 * uses the stale entry, as the hardware would.
 *
 * Simplifications (documented in the README): no walk caches (a table freed without a
 * non-leaf TLBI is not caught), stage-2 translations of nested table and CD addresses are
 * not cached, global (nG = 0) stage-1 leaves are tagged with the CD's ASID like the others,
 * no stall model, no EL2 (STRW = EL2) regime, tables must start on a 4 KiB boundary, and a
 * nested walk's stage-1 A/D updates do not check stage-2 write permission.
 *
 * @module
 */

import type { DmaTransaction, Driver, IommuUnit, Machine, PhysicalMemory } from '@iommu/core'
import {
  type ArmLpaeConfig,
  type ArmLpaeParams,
  armLpae,
  HwAd,
  PageTableWalker,
  PathRecords,
  type TableTranslator,
  WalkFault,
} from '@iommu/io-pgtable'
import {
  ATC_INV_SIZE_ALL,
  Cmd,
  CmdqErr,
  Cr0,
  decodeEvent,
  decodePriRequest,
  Eats,
  EvtClass,
  EvtId,
  Gbpa,
  Gerror,
  Idr0,
  Idr1,
  Idr3,
  Idr5,
  IrqCtrl,
  Mmio,
  Op,
  PA_SIZE_BITS,
  type PriRequest,
  Queue,
  S1Dss,
  S1Fmt,
  type SmmuEvent,
  SteCfg,
  Strtab,
  SyncCs,
  tgToGranuleLg2,
} from './regs.ts'
import { KINDS_ALL, KINDS_S1_AND_NESTED, POW2, Tlb, TlbKind } from './tlb.ts'

const READ = 1
const WRITE = 2
const TWO32 = 4294967296

/** IDR0.TERM_MODEL (spec): terminated transactions always abort (CD.A must be 1). */
const IDR0_TERM_MODEL = 1 << 26

/**
 * Default IDR0: 2-level stream tables, terminate-only (no stalls), little-endian tables,
 * 2-level CD tables, 16-bit VMIDs and ASIDs, PRI, SEV, MSI, ATS, HYP, HTTU access+dirty,
 * coherent access, AArch64 tables, stage 1 and stage 2.
 */
export const DEFAULT_IDR0: number =
  (Idr0.ST_LVL_2LVL << Idr0.ST_LVL_SHIFT) |
  IDR0_TERM_MODEL |
  (Idr0.STALL_MODEL_TERMINATE << Idr0.STALL_MODEL_SHIFT) |
  (Idr0.TTENDIAN_LE << Idr0.TTENDIAN_SHIFT) |
  Idr0.CD2L |
  Idr0.VMID16 |
  Idr0.PRI |
  Idr0.SEV |
  Idr0.MSI |
  Idr0.ASID16 |
  Idr0.ATS |
  Idr0.HYP |
  (Idr0.HTTU_ACCESS_DIRTY << Idr0.HTTU_SHIFT) |
  Idr0.COHACC |
  (Idr0.TTF_AARCH64 << Idr0.TTF_SHIFT) |
  Idr0.S1P |
  Idr0.S2P

/**
 * Default IDR1: attribute-type override, 256-entry command queue, 128-entry event queue,
 * 256-entry PRI queue, 20-bit SubstreamIDs, 16-bit StreamIDs.
 */
export const DEFAULT_IDR1: number =
  Idr1.ATTR_TYPES_OVR |
  (8 << Idr1.CMDQS_SHIFT) |
  (7 << Idr1.EVTQS_SHIFT) |
  (8 << Idr1.PRIQS_SHIFT) |
  (20 << Idr1.SSIDSIZE_SHIFT) |
  (16 << Idr1.SIDSIZE_SHIFT)

/** Default IDR3: range invalidation, stage-2 forced write-back, hierarchical attribute disable. */
export const DEFAULT_IDR3: number = Idr3.RIL | Idr3.FWB | Idr3.HAD

/** Default IDR5: 4K, 16K and 64K granules, 48-bit output addresses. */
export const DEFAULT_IDR5: number = Idr5.GRAN4K | Idr5.GRAN16K | Idr5.GRAN64K | 5

/** Default AIDR: SMMUv3.2. */
export const DEFAULT_AIDR = 0x2

/** Hardware configuration of an SMMUv3 instance. */
export interface SmmuV3HwConfig {
  /** ID registers (defaults {@link DEFAULT_IDR0} ...). IDR2 and IDR4 read as 0. */
  readonly idr0?: number
  readonly idr1?: number
  readonly idr3?: number
  readonly idr5?: number
  /** Implementation ID (default 0: no known product, no errata). */
  readonly iidr?: number
  readonly aidr?: number
  /** TLB entries (default 1024) and associativity (default 4). */
  readonly tlbEntries?: number
  readonly tlbWays?: number
  /** ATC entries of the ATS endpoints together (default 256). */
  readonly atcEntries?: number
  /** Run the missing-invalidation detector on every cache hit (default true). */
  readonly detectStale?: boolean
  /**
   * The detector skips the comparison walk of a TLB hit on a stage-1-only or
   * stage-2-only entry when the walk that last found the entry up to date read entries
   * that all still hold the same words (default true). The reports are the same either
   * way: false walks on every hit (the reference the records are tested against).
   */
  readonly detectorRecords?: boolean
}

/** A use of a stale cache entry that software forgot to invalidate. */
export interface StaleUse {
  /** Which cache held the stale entry. */
  readonly cache: 'ste' | 'cd' | 'tlb' | 'atc'
  /** What differs between the cache and memory. */
  readonly what: string
  /** The command that would have dropped the entry. */
  readonly missing:
    | 'CFGI_STE'
    | 'CFGI_CD'
    | 'TLBI_NH_VA'
    | 'TLBI_S2_IPA'
    | 'TLBI_NH_ALL'
    | 'ATC_INV'
  /** StreamID of the DMA. */
  readonly sid: number
  /** SubstreamID of the DMA, or -1 without one. */
  readonly ssid: number
  /** VMID and ASID the entry is tagged with (TLB), else -1. */
  readonly vmid: number
  readonly asid: number
  /** The DMA's input address. */
  readonly iova: bigint
  /** Whether the DMA was a write. */
  readonly write: boolean
}

/** A PRI_RESP the endpoint received. */
/**
 * A RESUME the SMMU applied to a stalled transaction (`unit.resumes`). The model does not
 * hold the transaction: the DMA that stalled failed at once with its event (Stall = 1, STAG);
 * after a RETRY the device issues the access again.
 */
export interface StallResume {
  readonly sid: number
  readonly stag: number
  /** `Resume`: 0 terminate (STALL_TERM or RESUME with TERM), 1 retry, 2 abort. */
  readonly action: number
}

export interface PriResponse {
  readonly sid: number
  readonly ssid: number
  readonly ssv: boolean
  readonly grpid: number
  /** `PriResp`: 0 deny, 1 fail, 2 success. */
  readonly resp: number
}

/** A page request an ATS/PRI endpoint sends (PCIe PRI Page Request Message). */
export interface PageRequest {
  readonly pasid?: number
  readonly addr: bigint
  readonly read?: boolean
  readonly write?: boolean
  readonly exec?: boolean
  readonly priv?: boolean
  /** Last request of its Page Request Group. */
  readonly last?: boolean
  /** Page Request Group index (9 bits). */
  readonly grpid: number
}

/** A command the SMMU executed. */
export interface TracedCommand {
  readonly op: number
  readonly dw0: bigint
  readonly dw1: bigint
}

/** Counters of an SMMU. */
export interface SmmuV3HwStats {
  translations: number
  walks: number
  steFetches: number
  cdFetches: number
  commands: number
  events: number
  eventsDropped: number
  priRequests: number
  priDropped: number
  atcHits: number
  /** CMD_SYNC completions signalled by SEV (WFE wake-ups). */
  sev: number
}

/** An interrupt line of the SMMU (wired or MSI; the model does not distinguish). */
export type SmmuIrq = 'evtq' | 'priq' | 'gerror'

/** Stage-2 configuration decoded from an STE. */
interface S2Cfg {
  readonly walker: PageTableWalker<ArmLpaeConfig, ArmLpaeParams>
  readonly rootPfn: number
  readonly topLevel: number
  readonly oasPages: number
  readonly record: boolean
  /** STE.S2S: stage-2 faults stall. */
  readonly stall: boolean
}

/** A cached, decoded STE (one object per stream, not per DMA). */
interface CachedSte {
  readonly sid: number
  /** Where it was read from. */
  readonly pa: number
  /** The sixteen 32-bit words as read, for the detector. */
  readonly raw: Uint32Array
  readonly valid: boolean
  readonly config: number
  /** Why the entry is illegal (C_BAD_STE), or null. */
  readonly illegal: string | null
  readonly s1fmt: number
  /** S1ContextPtr: a PA, or an IPA when nested. */
  readonly s1ctxPtr: number
  readonly s1cdmax: number
  readonly s1dss: number
  readonly eats: number
  readonly vmid: number
  readonly s2: S2Cfg | null
  /** Nested: stage-1 table pages through the stage 2 (walks that update and that look). */
  readonly tables: TableTranslator | null
  readonly peekTables: TableTranslator | null
  /** Cached CDs by SubstreamID, and level-1 CD descriptors by index (-1 = invalid). */
  readonly cds: (CachedCd | undefined)[]
  readonly l1cds: (number | undefined)[]
  staleReported: boolean
}

/** A cached, decoded CD. */
interface CachedCd {
  readonly ssid: number
  /** Where it was read from (a PA). */
  readonly pa: number
  readonly raw: Uint32Array
  readonly valid: boolean
  readonly illegal: string | null
  /** EPD0: every input address faults. */
  readonly epd0: boolean
  readonly asid: number
  readonly walker: PageTableWalker<ArmLpaeConfig, ArmLpaeParams> | null
  readonly rootPfn: number
  readonly topLevel: number
  readonly oasPages: number
  /** HA/HD as the walker's {@link HwAd}. */
  readonly ad: number
  /** CD.R: record faults. */
  readonly record: boolean
  /** CD.S: stage-1 faults stall (the SMMU supports stalls). */
  readonly stall: boolean
  staleReported: boolean
}

/** Queue pointer helpers: an index of `shift` bits plus the wrap bit above it. */
function qPtr(v: number, shift: number): number {
  return v & ((2 << shift) - 1)
}
function qIdx(v: number, shift: number): number {
  return v & ((1 << shift) - 1)
}
function qInc(v: number, shift: number): number {
  return (qPtr(v, shift) + 1) & ((2 << shift) - 1)
}
function qFull(prod: number, cons: number, shift: number): boolean {
  return qIdx(prod, shift) === qIdx(cons, shift) && qPtr(prod, shift) !== qPtr(cons, shift)
}
function qEmpty(prod: number, cons: number, shift: number): boolean {
  return qPtr(prod, shift) === qPtr(cons, shift)
}

function addr(lo: number, hi: number): number {
  return (hi >>> 0) * TWO32 + (lo >>> 0)
}

/** A queue's base register decoded. */
interface QueueCfg {
  base: number
  shift: number
}

function decodeQueueBase(v: bigint): QueueCfg {
  return {
    base: Number(v & Queue.BASE_ADDR_MASK),
    shift: Number(v & Queue.BASE_LOG2SIZE_MASK),
  }
}

/** One ARM SMMUv3 instance. */
export class SmmuV3Hw implements IommuUnit {
  readonly name: string
  /** Bound by the machine when the unit is added (never assigned here; see `IommuUnit`). */
  declare readonly driver: Driver
  readonly maxPasids: number
  readonly memory: PhysicalMemory
  /** The TLB. */
  readonly tlb: Tlb
  /** The Address Translation Caches of the ATS endpoints behind this SMMU (tag = StreamID). */
  readonly atc: Tlb
  /** Uses of stale cache entries found by the detector. */
  readonly staleUses: StaleUse[] = []
  /** PRI responses the endpoints received, in order. */
  readonly priResponses: PriResponse[] = []
  /** RESUME / STALL_TERM commands that matched a stalled transaction, in order. */
  readonly resumes: StallResume[] = []
  readonly stats: SmmuV3HwStats = {
    translations: 0,
    walks: 0,
    steFetches: 0,
    cdFetches: 0,
    commands: 0,
    events: 0,
    eventsDropped: 0,
    priRequests: 0,
    priDropped: 0,
    atcHits: 0,
    sev: 0,
  }
  /** Commands executed, by opcode. */
  readonly commandCounts: Uint32Array = new Uint32Array(256)
  /** Every command executed, in order, while {@link traceCommands} is on (tests, tools). */
  readonly commandTrace: TracedCommand[] = []
  /** Record executed commands in {@link commandTrace}. */
  traceCommands = false
  /** Run the detector on cache hits. */
  detectStale: boolean
  /**
   * Per TLB entry, the path of the detector's last walk that found it up to date, with the
   * IOVA page and the cached CD (stage 1) or STE (stage 2) it was walked for; not for
   * nested entries. Null without records.
   */
  readonly #records: PathRecords<CachedSte | CachedCd> | null

  readonly #idr: readonly number[]
  readonly #iidr: number
  readonly #aidr: number
  readonly #oasBits: number
  readonly #sidBits: number
  readonly #ssidBits: number
  readonly #regs = new Map<number, number>()
  readonly #regs64 = new Map<number, bigint>()
  #cr0 = 0
  #gbpa = 0
  #irqCtrl = 0
  #gerror = 0
  #gerrorn = 0
  #strtabBase = 0
  #strtabFmt = 0
  #strtabSplit = 0
  #strtabLog2 = 0
  #cmdq: QueueCfg = { base: 0, shift: 0 }
  #cmdqProd = 0
  #cmdqCons = 0
  #evtq: QueueCfg = { base: 0, shift: 0 }
  #evtqProd = 0
  #evtqCons = 0
  #priq: QueueCfg = { base: 0, shift: 0 }
  #priqProd = 0
  #priqCons = 0
  #processing = false
  #pendingIrqs = 0
  #inIrq = false
  readonly #irqHandlers: Partial<Record<SmmuIrq, () => void>> = {}
  readonly #steCache: (CachedSte | undefined)[] = []
  readonly #walkers = new Map<string, PageTableWalker<ArmLpaeConfig, ArmLpaeParams>>()
  readonly #atsOn = new Set<number>()
  /** Stage-2 fault of the last nested table or CD address translation. */
  #xfFault: number = WalkFault.NONE
  #xfLevel = -1
  #xfIpaPfn = 0
  /** The address of the last failed structure fetch. */
  #fetchAddr = 0
  readonly #evt = new Uint32Array(8)
  /** Stalled transactions awaiting RESUME, as `sid * 65536 + stag`. */
  readonly #stalled = new Set<number>()
  #nextStag = 0

  constructor(machine: Machine, name: string, config: SmmuV3HwConfig = {}) {
    this.name = name
    this.memory = machine.memory
    this.#idr = [
      config.idr0 ?? DEFAULT_IDR0,
      config.idr1 ?? DEFAULT_IDR1,
      0,
      config.idr3 ?? DEFAULT_IDR3,
      0,
      config.idr5 ?? DEFAULT_IDR5,
    ]
    this.#iidr = config.iidr ?? 0
    this.#aidr = config.aidr ?? DEFAULT_AIDR
    const oas = this.#idr5 & Idr5.OAS_MASK
    this.#oasBits = PA_SIZE_BITS[oas] ?? 48
    this.#sidBits = (this.#idr1 >>> Idr1.SIDSIZE_SHIFT) & 0x3f
    this.#ssidBits = (this.#idr1 >>> Idr1.SSIDSIZE_SHIFT) & 0x1f
    this.maxPasids = 2 ** this.#ssidBits
    this.tlb = new Tlb(config.tlbEntries ?? 1024, config.tlbWays ?? 4)
    this.atc = new Tlb(config.atcEntries ?? 256, 4)
    this.detectStale = config.detectStale ?? true
    this.#records =
      config.detectorRecords === false ? null : new PathRecords(this.tlb.sets * this.tlb.ways)
  }

  get #idr0(): number {
    return this.#idr[0] as number
  }
  get #idr1(): number {
    return this.#idr[1] as number
  }
  get #idr3(): number {
    return this.#idr[3] as number
  }
  get #idr5(): number {
    return this.#idr[5] as number
  }

  // ------------------------------------------------------------------ MMIO

  /** Read a 32-bit register (page 0, or page 1 at 64 KiB). */
  readReg(offset: number): number {
    switch (offset) {
      case Mmio.IDR0:
      case Mmio.IDR1:
      case Mmio.IDR2:
      case Mmio.IDR3:
      case Mmio.IDR4:
      case Mmio.IDR5:
        return (this.#idr[offset >>> 2] as number) >>> 0
      case Mmio.IIDR:
        return this.#iidr >>> 0
      case Mmio.AIDR:
        return this.#aidr >>> 0
      case Mmio.CR0:
      case Mmio.CR0ACK:
        return this.#cr0 >>> 0
      case Mmio.GBPA:
        return this.#gbpa >>> 0
      case Mmio.IRQ_CTRL:
      case Mmio.IRQ_CTRLACK:
        return this.#irqCtrl >>> 0
      case Mmio.GERROR:
        return this.#gerror >>> 0
      case Mmio.GERRORN:
        return this.#gerrorn >>> 0
      case Mmio.CMDQ_PROD:
        return this.#cmdqProd >>> 0
      case Mmio.CMDQ_CONS:
        return this.#cmdqCons >>> 0
      case Mmio.EVTQ_PROD:
        return this.#evtqProd >>> 0
      case Mmio.EVTQ_CONS:
        return this.#evtqCons >>> 0
      case Mmio.PRIQ_PROD:
        return this.#priqProd >>> 0
      case Mmio.PRIQ_CONS:
        return this.#priqCons >>> 0
      default:
        return (this.#regs.get(offset) ?? 0) >>> 0
    }
  }

  /** Write a 32-bit register, with the hardware's side effects. */
  writeReg(offset: number, value: number): void {
    const v = value >>> 0
    switch (offset) {
      case Mmio.CR0: {
        const was = this.#cr0
        this.#cr0 = v & 0x1f
        // CR0ACK follows at once: the driver's poll sees its update complete.
        if (!(was & Cr0.CMDQEN) && v & Cr0.CMDQEN) this.#cmdqCons &= ~Queue.CONS_ERR_MASK
        this.#processCmdq()
        break
      }
      case Mmio.CR1:
      case Mmio.CR2:
      case Mmio.STRTAB_BASE_CFG:
        this.#regs.set(offset, v)
        if (offset === Mmio.STRTAB_BASE_CFG && !(this.#cr0 & Cr0.SMMUEN)) {
          this.#strtabFmt = (v >>> Strtab.CFG_FMT_SHIFT) & 3
          this.#strtabSplit = (v >>> Strtab.CFG_SPLIT_SHIFT) & 0x1f
          this.#strtabLog2 = v & Strtab.CFG_LOG2SIZE_MASK
        }
        break
      case Mmio.GBPA:
        // Only a write with UPDATE takes effect; UPDATE reads back clear once done.
        if (v & Gbpa.UPDATE) this.#gbpa = v & ~Gbpa.UPDATE
        break
      case Mmio.IRQ_CTRL:
        this.#irqCtrl = v & 7
        break
      case Mmio.GERRORN: {
        const ackedCmdq = (this.#gerror ^ this.#gerrorn) & Gerror.CMDQ_ERR
        this.#gerrorn = v
        // Acknowledging CMDQ_ERR restarts the command queue at CONS.
        if (ackedCmdq && !((this.#gerror ^ this.#gerrorn) & Gerror.CMDQ_ERR)) {
          this.#cmdqCons &= ~Queue.CONS_ERR_MASK
          this.#processCmdq()
        }
        break
      }
      case Mmio.CMDQ_PROD:
        this.#cmdqProd = qPtr(v, this.#cmdq.shift)
        this.#processCmdq()
        break
      case Mmio.CMDQ_CONS:
        if (!(this.#cr0 & Cr0.CMDQEN)) this.#cmdqCons = qPtr(v, this.#cmdq.shift)
        break
      case Mmio.EVTQ_PROD:
        if (!(this.#cr0 & Cr0.EVTQEN))
          this.#evtqProd = v & (qPtr(~0, this.#evtq.shift) | Queue.OVERFLOW_FLAG)
        break
      case Mmio.EVTQ_CONS:
        this.#evtqCons = v & (qPtr(~0, this.#evtq.shift) | Queue.OVERFLOW_FLAG)
        break
      case Mmio.PRIQ_PROD:
        if (!(this.#cr0 & Cr0.PRIQEN))
          this.#priqProd = v & (qPtr(~0, this.#priq.shift) | Queue.OVERFLOW_FLAG)
        break
      case Mmio.PRIQ_CONS:
        this.#priqCons = v & (qPtr(~0, this.#priq.shift) | Queue.OVERFLOW_FLAG)
        break
      case Mmio.IDR0:
      case Mmio.IDR1:
      case Mmio.IDR2:
      case Mmio.IDR3:
      case Mmio.IDR4:
      case Mmio.IDR5:
      case Mmio.IIDR:
      case Mmio.AIDR:
      case Mmio.CR0ACK:
      case Mmio.IRQ_CTRLACK:
      case Mmio.GERROR:
        return // read-only
      default:
        this.#regs.set(offset, v)
    }
    this.#deliverIrqs()
  }

  /** Read a 64-bit register. */
  readReg64(offset: number): bigint {
    return this.#regs64.get(offset) ?? 0n
  }

  /** Write a 64-bit register. Base registers only take effect while their unit is disabled. */
  writeReg64(offset: number, value: bigint): void {
    const v = BigInt.asUintN(64, value)
    switch (offset) {
      case Mmio.STRTAB_BASE:
        if (this.#cr0 & Cr0.SMMUEN) return
        this.#strtabBase = Number(v & Strtab.BASE_ADDR_MASK)
        break
      case Mmio.CMDQ_BASE:
        if (this.#cr0 & Cr0.CMDQEN) return
        this.#cmdq = decodeQueueBase(v)
        break
      case Mmio.EVTQ_BASE:
        if (this.#cr0 & Cr0.EVTQEN) return
        this.#evtq = decodeQueueBase(v)
        break
      case Mmio.PRIQ_BASE:
        if (this.#cr0 & Cr0.PRIQEN) return
        this.#priq = decodeQueueBase(v)
        break
    }
    this.#regs64.set(offset, v)
  }

  /**
   * Connect an interrupt line to a handler (the driver's `request_irq`). The handler runs
   * after the access that raised the interrupt has completed, if the line is enabled in
   * IRQ_CTRL.
   */
  connectIrq(line: SmmuIrq, handler: () => void): void {
    this.#irqHandlers[line] = handler
  }

  #raise(line: SmmuIrq): void {
    const bit =
      line === 'gerror'
        ? IrqCtrl.GERROR_IRQEN
        : line === 'priq'
          ? IrqCtrl.PRIQ_IRQEN
          : IrqCtrl.EVTQ_IRQEN
    if (this.#irqCtrl & bit) this.#pendingIrqs |= bit
  }

  #deliverIrqs(): void {
    if (this.#inIrq || this.#pendingIrqs === 0) return
    this.#inIrq = true
    try {
      while (this.#pendingIrqs !== 0) {
        const lines: [number, SmmuIrq][] = [
          [IrqCtrl.GERROR_IRQEN, 'gerror'],
          [IrqCtrl.EVTQ_IRQEN, 'evtq'],
          [IrqCtrl.PRIQ_IRQEN, 'priq'],
        ]
        for (const [bit, line] of lines) {
          if (!(this.#pendingIrqs & bit)) continue
          this.#pendingIrqs &= ~bit
          this.#irqHandlers[line]?.()
        }
      }
    } finally {
      this.#inIrq = false
    }
  }

  #toggleGerror(bit: number): void {
    // Only an error that is not already active toggles GERROR (GERROR == GERRORN there).
    if ((this.#gerror ^ this.#gerrorn) & bit) return
    this.#gerror ^= bit
    this.#raise('gerror')
  }

  /** The SMMU's output address size in bits (IDR5.OAS). */
  get oasBits(): number {
    return this.#oasBits
  }

  // ------------------------------------------------------------------ command queue

  #processCmdq(): void {
    if (this.#processing || !(this.#cr0 & Cr0.CMDQEN)) return
    if ((this.#gerror ^ this.#gerrorn) & Gerror.CMDQ_ERR) return
    const shift = this.#cmdq.shift
    this.#processing = true
    try {
      while (!qEmpty(this.#cmdqProd, this.#cmdqCons, shift)) {
        const pa = this.#cmdq.base + qIdx(this.#cmdqCons, shift) * Cmd.SIZE
        const err = this.#execute(pa)
        if (err !== CmdqErr.NONE) {
          // The queue stops at the command; CONS.ERR says why and GERROR.CMDQ_ERR toggles.
          this.#cmdqCons = qPtr(this.#cmdqCons, shift) | (err << Queue.CONS_ERR_SHIFT)
          this.#toggleGerror(Gerror.CMDQ_ERR)
          return
        }
        this.#cmdqCons = qInc(this.#cmdqCons, shift)
      }
    } finally {
      this.#processing = false
    }
  }

  /** Execute the command at `pa`; returns a CMDQ_CONS.ERR value. */
  #execute(pa: number): number {
    const m = this.memory
    const w0 = m.read32(pa)
    const w1 = m.read32(pa + 4)
    const w2 = m.read32(pa + 8)
    const w3 = m.read32(pa + 12)
    const op = w0 & 0xff
    const idr0 = this.#idr0
    const s2p = (idr0 & Idr0.S2P) !== 0
    const vmid = w1 & (idr0 & Idr0.VMID16 ? 0xffff : 0xff)
    const asid = (w1 >>> 16) & (idr0 & Idr0.ASID16 ? 0xffff : 0xff)
    this.stats.commands++
    switch (op) {
      case Op.PREFETCH_CFG:
      case Op.PREFETCH_ADDR:
        // A prefetch is a hint the model does not need.
        break
      case Op.CFGI_STE:
        this.#steCache[w1] = undefined
        break
      case Op.CFGI_ALL: {
        const range = w2 & 0x1f
        if (range === 31) this.#steCache.length = 0
        else {
          const n = 2 ** (range + 1)
          const first = w1 - (w1 % n)
          for (let sid = first; sid < first + n; sid++) this.#steCache[sid] = undefined
        }
        break
      }
      case Op.CFGI_CD: {
        const ste = this.#steCache[w1]
        if (ste !== undefined) {
          const ssid = (w0 >>> 12) & 0xf_ffff
          ste.cds[ssid] = undefined
          // Leaf = 0 also drops the level-1 descriptor the CD was reached through.
          if (!(w2 & 1)) ste.l1cds[ssid >>> cdSplit(ste.s1fmt)] = undefined
        }
        break
      }
      case Op.CFGI_CD_ALL: {
        const ste = this.#steCache[w1]
        if (ste !== undefined) {
          ste.cds.length = 0
          ste.l1cds.length = 0
        }
        break
      }
      case Op.TLBI_NH_ALL:
        if (!s2p) return CmdqErr.ILL
        this.tlb.invalidate(KINDS_S1_AND_NESTED, 0xffff_0000, vmid << 16, null)
        break
      case Op.TLBI_NH_ASID:
        this.tlb.invalidate(KINDS_S1_AND_NESTED, 0xffff_ffff, (vmid << 16) | asid, null)
        break
      case Op.TLBI_NH_VA:
      case Op.TLBI_NH_VAA: {
        const [first, count] = this.#tlbiRange(w0, w2, w3)
        if (op === Op.TLBI_NH_VA) {
          this.tlb.invalidate(
            KINDS_S1_AND_NESTED,
            0xffff_ffff,
            (vmid << 16) | asid,
            null,
            first,
            count,
          )
        } else {
          this.tlb.invalidate(KINDS_S1_AND_NESTED, 0xffff_0000, vmid << 16, null, first, count)
        }
        break
      }
      case Op.TLBI_EL2_ALL:
      case Op.TLBI_EL2_ASID:
      case Op.TLBI_EL2_VA:
      case Op.TLBI_EL2_VAA:
        // The model has no EL2 regime entries; without HYP the commands are illegal.
        if (!(idr0 & Idr0.HYP)) return CmdqErr.ILL
        break
      case Op.TLBI_S12_VMALL:
        if (!s2p) return CmdqErr.ILL
        this.tlb.invalidate(KINDS_ALL, 0xffff_0000, vmid << 16, null)
        break
      case Op.TLBI_S2_IPA: {
        if (!s2p) return CmdqErr.ILL
        // Stage-2-only entries; combined nested entries need TLBI_NH_* or S12_VMALL.
        const [first, count] = this.#tlbiRange(w0, w2, w3 & 0xf_ffff)
        this.tlb.invalidate(1 << TlbKind.S2, 0xffff_0000, vmid << 16, null, first, count)
        break
      }
      case Op.TLBI_NSNH_ALL:
        this.tlb.invalidateAll()
        break
      case Op.ATC_INV: {
        if (!(idr0 & Idr0.ATS)) return CmdqErr.ILL
        const size = w2 & 0x3f
        const ssv = (w0 & (1 << 11)) !== 0
        const ssid = (w0 >>> 12) & 0xf_ffff
        const pageLo = addr(w2 & ~0xfff, w3) / 4096
        if (size >= ATC_INV_SIZE_ALL)
          this.atc.invalidate(KINDS_ALL, 0xffff_ffff, w1, ssv ? ssid : null)
        else {
          const n = POW2[size] as number
          this.atc.invalidate(
            KINDS_ALL,
            0xffff_ffff,
            w1,
            ssv ? ssid : null,
            pageLo - (pageLo % n),
            n,
          )
        }
        break
      }
      case Op.PRI_RESP:
        if (!(idr0 & Idr0.PRI)) return CmdqErr.ILL
        this.priResponses.push({
          sid: w1,
          ssid: (w0 >>> 12) & 0xf_ffff,
          ssv: (w0 & (1 << 11)) !== 0,
          grpid: w2 & 0x1ff,
          resp: (w2 >>> 12) & 3,
        })
        break
      case Op.RESUME: {
        // A RESUME for a STAG that is not stalled is ignored (§4.7.2).
        const key = w1 * 65536 + (w2 & 0xffff)
        if (this.#stalled.delete(key)) {
          this.resumes.push({ sid: w1, stag: w2 & 0xffff, action: (w0 >>> 12) & 3 })
        }
        break
      }
      case Op.STALL_TERM:
        for (const key of [...this.#stalled]) {
          if (Math.floor(key / 65536) !== w1) continue
          this.#stalled.delete(key)
          this.resumes.push({ sid: w1, stag: key % 65536, action: 0 })
        }
        break
      case Op.CMD_SYNC: {
        const cs = (w0 >>> 12) & 3
        if (cs === SyncCs.IRQ && idr0 & Idr0.MSI) {
          const msiAddr = addr(w2 & ~3, w3 & 0xf_ffff)
          if (msiAddr !== 0) this.memory.write32(msiAddr, w1)
        } else if (cs === SyncCs.SEV) this.stats.sev++
        break
      }
      default:
        return CmdqErr.ILL
    }
    this.commandCounts[op] = (this.commandCounts[op] as number) + 1
    if (this.traceCommands) {
      this.commandTrace.push({
        op,
        dw0: (BigInt(w1 >>> 0) << 32n) | BigInt(w0 >>> 0),
        dw1: (BigInt(w3 >>> 0) << 32n) | BigInt(w2 >>> 0),
      })
    }
    return CmdqErr.NONE
  }

  /**
   * The pages a TLBI by address covers: one address when TG = 0 (or without IDR3.RIL), else
   * the range (NUM + 1) × 2^SCALE granules from it.
   */
  #tlbiRange(w0: number, w2: number, w3: number): [number, number] {
    const first = addr(w2 & ~0xfff, w3) / 4096
    const tg = (w2 >>> 10) & 3
    if (tg === 0 || !(this.#idr3 & Idr3.RIL)) return [first, 1]
    const num = ((w0 >>> 12) & 0x1f) + 1
    const scale = (w0 >>> 20) & 0x1f
    const granulePages = tg === 1 ? 1 : tg === 2 ? 4 : 16
    return [first, num * (POW2[scale] as number) * granulePages]
  }

  // ------------------------------------------------------------------ event and PRI queues

  #recordEvent(): void {
    if (!(this.#cr0 & Cr0.EVTQEN) || this.#evtq.shift === 0) {
      this.stats.eventsDropped++
      return
    }
    const shift = this.#evtq.shift
    if (qFull(this.#evtqProd, this.#evtqCons, shift)) {
      // Full: the record is lost; PROD.OVFLG toggles unless an overflow is already pending.
      if ((this.#evtqProd & Queue.OVERFLOW_FLAG) === (this.#evtqCons & Queue.OVERFLOW_FLAG)) {
        this.#evtqProd ^= Queue.OVERFLOW_FLAG
      }
      this.stats.eventsDropped++
      return
    }
    const pa = this.#evtq.base + qIdx(this.#evtqProd, shift) * 32
    for (let i = 0; i < 8; i++) this.memory.write32(pa + 4 * i, this.#evt[i] as number)
    this.#evtqProd = (this.#evtqProd & Queue.OVERFLOW_FLAG) | qInc(this.#evtqProd, shift)
    this.stats.events++
    this.#raise('evtq')
  }

  /**
   * Build an event record in the scratch buffer and queue it: ID, SID, SSV/SSID, RnW, S2,
   * CLASS, the input address, and the IPA (stage-2 faults) or fetch address.
   */
  #event(
    id: number,
    txn: DmaTransaction | null,
    sid: number,
    opts: { s2?: boolean; cls?: number; ipa?: number; fetch?: number; stag?: number } = {},
  ): void {
    const e = this.#evt
    const ssv = txn?.hasPasid === true
    e[0] = (id | (ssv ? 1 << 11 : 0) | (ssv ? ((txn?.pasid ?? 0) & 0xf_ffff) << 12 : 0)) >>> 0
    e[1] = sid >>> 0
    // Stall (dw1 bit 31) and STAG (dw1 [15:0]) of a stalled transaction.
    e[2] = opts.stag === undefined ? 0 : (0x8000_0000 | (opts.stag & 0xffff)) >>> 0
    let d1hi = 0
    if (txn !== null && !txn.write) d1hi |= 1 << 3 // RnW
    if (opts.s2) d1hi |= 1 << 7
    if (opts.cls !== undefined) d1hi |= (opts.cls & 3) << 8
    if (opts.cls === EvtClass.TT || opts.cls === EvtClass.CD) d1hi |= 1 << 12 // TTRnW: a read
    e[3] = d1hi >>> 0
    if (txn !== null) {
      e[4] = (txn.iovaPfn % 1048576) * 4096 + txn.offset
      e[5] = Math.floor(txn.iovaPfn / 1048576) >>> 0
    } else {
      e[4] = 0
      e[5] = 0
    }
    if (opts.ipa !== undefined) {
      e[6] = ((opts.ipa % 1048576) * 4096) >>> 0
      e[7] = Math.floor(opts.ipa / 1048576) & 0xf_ffff
    } else if (opts.fetch !== undefined) {
      e[6] = (opts.fetch % TWO32) & ~7
      e[7] = Math.floor(opts.fetch / TWO32) & 0xf_ffff
    } else {
      e[6] = 0
      e[7] = 0
    }
    this.#recordEvent()
  }

  /** Decode the records between CONS and PROD without consuming them (tests, tools). */
  pendingEvents(): SmmuEvent[] {
    const out: SmmuEvent[] = []
    const shift = this.#evtq.shift
    let c = qPtr(this.#evtqCons, shift)
    const p = qPtr(this.#evtqProd, shift)
    while (c !== p) {
      const pa = this.#evtq.base + qIdx(c, shift) * 32
      const q = (i: number) =>
        (BigInt(this.memory.read32(pa + 8 * i + 4)) << 32n) | BigInt(this.memory.read32(pa + 8 * i))
      out.push(decodeEvent([q(0), q(1), q(2), q(3)]))
      c = qInc(c, shift)
    }
    return out
  }

  /** Decode the PRI queue entries between CONS and PROD without consuming them. */
  pendingPriRequests(): PriRequest[] {
    const out: PriRequest[] = []
    const shift = this.#priq.shift
    let c = qPtr(this.#priqCons, shift)
    const p = qPtr(this.#priqProd, shift)
    while (c !== p) {
      const pa = this.#priq.base + qIdx(c, shift) * 16
      const q = (i: number) =>
        (BigInt(this.memory.read32(pa + 8 * i + 4)) << 32n) | BigInt(this.memory.read32(pa + 8 * i))
      out.push(decodePriRequest(q(0), q(1)))
      c = qInc(c, shift)
    }
    return out
  }

  /**
   * A PRI Page Request from the endpoint at `sid` (PCIe PRI). Queued in the PRI queue when
   * the SMMU supports PRI and the queue is enabled; a full queue loses it and toggles
   * PRIQ_PROD.OVFLG.
   *
   * @returns whether the request was queued
   */
  pageRequest(sid: number, req: PageRequest): boolean {
    if (!(this.#idr0 & Idr0.PRI) || !(this.#cr0 & Cr0.PRIQEN) || this.#priq.shift === 0) {
      this.stats.priDropped++
      return false
    }
    const shift = this.#priq.shift
    if (qFull(this.#priqProd, this.#priqCons, shift)) {
      if ((this.#priqProd & Queue.OVERFLOW_FLAG) === (this.#priqCons & Queue.OVERFLOW_FLAG)) {
        this.#priqProd ^= Queue.OVERFLOW_FLAG
      }
      this.stats.priDropped++
      return false
    }
    const pa = this.#priq.base + qIdx(this.#priqProd, shift) * 16
    const ssidValid = req.pasid !== undefined
    const w1 =
      ((req.pasid ?? 0) & 0xf_ffff) |
      (req.priv ? 1 << 26 : 0) |
      (req.exec ? 1 << 27 : 0) |
      (req.read ? 1 << 28 : 0) |
      (req.write ? 1 << 29 : 0) |
      (req.last ? 1 << 30 : 0) |
      (ssidValid ? 1 << 31 : 0)
    const a = BigInt.asUintN(64, req.addr)
    this.memory.write32(pa, sid >>> 0)
    this.memory.write32(pa + 4, w1 >>> 0)
    this.memory.write32(pa + 8, ((Number(a & 0xffff_f000n) | (req.grpid & 0x1ff)) >>> 0) >>> 0)
    this.memory.write32(pa + 12, Number(a >> 32n))
    this.#priqProd = (this.#priqProd & Queue.OVERFLOW_FLAG) | qInc(this.#priqProd, shift)
    this.stats.priRequests++
    this.#raise('priq')
    this.#deliverIrqs()
    return true
  }

  /**
   * The ATS Control register's Enable bit of the endpoint at `sid` (the PCI config write
   * `pci_enable_ats` / `pci_disable_ats` does). While enabled, the endpoint caches
   * translations in its ATC and sends translated requests; disabling empties its ATC.
   */
  setAts(sid: number, enabled: boolean): void {
    if (enabled) this.#atsOn.add(sid)
    else {
      this.#atsOn.delete(sid)
      this.atc.invalidate(KINDS_ALL, 0xffff_ffff, sid, null)
    }
  }

  /** Whether the endpoint at `sid` has ATS enabled. */
  atsEnabled(sid: number): boolean {
    return this.#atsOn.has(sid)
  }

  // ------------------------------------------------------------------ walkers

  /**
   * An ARM LPAE walker for a decoded configuration: the table parameters follow what the
   * STE/CD say (start level and first-level size), not what a kernel would have chosen.
   */
  #walker(
    stage: 1 | 2,
    granuleLg2: number,
    ias: number,
    oas: number,
    topLevel: number,
    pgdBits: number,
  ): PageTableWalker<ArmLpaeConfig, ArmLpaeParams> | null {
    const key = `${stage}:${granuleLg2}:${ias}:${oas}:${topLevel}:${pgdBits}`
    let w = this.#walkers.get(key)
    if (w === undefined) {
      let base: ArmLpaeParams
      try {
        base = armLpae.init({
          stage,
          granule: (2 ** granuleLg2) as 4096 | 16384 | 65536,
          ias,
          oas,
        })
      } catch {
        return null
      }
      const params: ArmLpaeParams = {
        ...base,
        topLevel,
        maxTopLevel: topLevel,
        startLevel: 3 - topLevel,
        pgdBits,
        concatenated: pgdBits > base.bitsPerLevel,
        vaBits: ias,
        ias,
      }
      w = new PageTableWalker(this.memory, armLpae, params)
      this.#walkers.set(key, w)
    }
    return w
  }

  // ------------------------------------------------------------------ stream table

  /**
   * The address of `sid`'s STE, or a negative event: -C_BAD_STREAMID when the StreamID is
   * outside the table or its level-1 descriptor is invalid, -F_STE_FETCH when it is not
   * memory.
   */
  #steAddress(sid: number): number {
    // Powers of two from the table, and no float `%`: this runs on every DMA the detector
    // checks.
    if (sid >= (POW2[Math.min(this.#strtabLog2, this.#sidBits)] as number)) {
      return -EvtId.C_BAD_STREAMID
    }
    let pa: number
    if (
      this.#strtabFmt === Strtab.CFG_FMT_2LVL &&
      this.#idr0 & (Idr0.ST_LVL_2LVL << Idr0.ST_LVL_SHIFT)
    ) {
      const split = this.#strtabSplit
      const per = POW2[split] as number
      const l1Index = Math.floor(sid / per)
      const l1 = this.#strtabBase + l1Index * 8
      if (l1 + 8 > this.memory.size) {
        this.#fetchAddr = l1
        return -EvtId.F_STE_FETCH
      }
      const lo = this.memory.read32(l1)
      const hi = this.memory.read32(l1 + 4)
      const span = Math.min(lo & 0x1f, split + 1)
      if (span === 0) return -EvtId.C_BAD_STREAMID
      const idx = sid - l1Index * per
      if (idx >= (POW2[span - 1] as number)) return -EvtId.C_BAD_STREAMID
      pa = addr(lo & ~0x3f, hi & 0xf_ffff) + idx * 64
    } else {
      pa = this.#strtabBase + sid * 64
    }
    if (pa + 64 > this.memory.size) {
      this.#fetchAddr = pa
      return -EvtId.F_STE_FETCH
    }
    return pa
  }

  #read16(pa: number): Uint32Array {
    const raw = new Uint32Array(16)
    for (let i = 0; i < 16; i++) raw[i] = this.memory.read32(pa + 4 * i)
    return raw
  }

  /** Decode an STE's words; checks the configuration as the SMMU would (C_BAD_STE). */
  #decodeSte(sid: number, pa: number, raw: Uint32Array): CachedSte {
    const w = (i: number) => raw[i] as number
    const valid = (w(0) & 1) !== 0
    const config = (w(0) >>> 1) & 7
    const s1fmt = (w(0) >>> 4) & 3
    const s1cdmax = w(1) >>> 27
    const idr0 = this.#idr0
    const vmid = w(4) & (idr0 & Idr0.VMID16 ? 0xffff : 0xff)
    const eats = (w(2) >>> 28) & 3
    let illegal: string | null = null
    let s2: S2Cfg | null = null
    if (valid) {
      if (config !== SteCfg.ABORT && config < SteCfg.BYPASS)
        illegal = `Config ${config} is reserved`
      else if (config & 1 && !(idr0 & Idr0.S1P)) illegal = 'stage 1 without IDR0.S1P'
      else if (config & 2 && config & 4 && !(idr0 & Idr0.S2P)) illegal = 'stage 2 without IDR0.S2P'
      else if (config & 1 && config & 4) {
        if (s1fmt === 3) illegal = 'S1Fmt 3 is reserved'
        else if (s1fmt !== S1Fmt.LINEAR && s1cdmax !== 0 && !(idr0 & Idr0.CD2L)) {
          illegal = 'two-level CD table without IDR0.CD2L'
        } else if (s1cdmax > this.#ssidBits) illegal = `S1CDMax ${s1cdmax} above SSIDSIZE`
      }
      if (illegal === null && config & 4 && config !== SteCfg.BYPASS) {
        if (eats === 3) illegal = 'EATS 3 is reserved'
        else if (eats !== Eats.ABT && !(idr0 & Idr0.ATS)) illegal = 'EATS without IDR0.ATS'
        else if (eats === Eats.TRANS && (w(5) >>> 25) & 1) illegal = 'EATS = 1 with S2S = 1'
      }
      if (illegal === null && config & 2 && config & 4) {
        const r = this.#decodeS2(raw)
        if (typeof r === 'string') illegal = r
        else s2 = r
      }
    }
    const nested = s2 !== null && config === SteCfg.NESTED
    const xlate = (update: boolean): TableTranslator | null =>
      nested && s2 !== null ? (pfn) => this.#s2Table(s2 as S2Cfg, pfn, update) : null
    return {
      sid,
      pa,
      raw,
      valid,
      config,
      illegal,
      s1fmt,
      s1ctxPtr: addr(w(0) & ~0x3f, w(1) & 0xf_ffff),
      s1cdmax,
      s1dss: w(2) & 3,
      eats: config === SteCfg.BYPASS ? Eats.ABT : eats,
      vmid,
      s2,
      tables: xlate(true),
      peekTables: xlate(false),
      cds: [],
      l1cds: [],
      staleReported: false,
    }
  }

  /** The stage-2 configuration of an STE (VTCR, S2TTB), or why it is illegal. */
  #decodeS2(raw: Uint32Array): S2Cfg | string {
    const q2hi = raw[5] as number
    const t0sz = q2hi & 0x3f
    const sl0 = (q2hi >>> 6) & 3
    const tg = (q2hi >>> 14) & 3
    const ps = (q2hi >>> 16) & 7
    if (!((q2hi >>> 19) & 1)) return 'S2AA64 = 0: AArch32 stage-2 tables are not supported'
    if ((q2hi >>> 20) & 1) return 'S2ENDI = 1: big-endian tables are not supported'
    const g = tgToGranuleLg2(tg)
    const granBit = g === 12 ? Idr5.GRAN4K : g === 14 ? Idr5.GRAN16K : g === 16 ? Idr5.GRAN64K : 0
    if (granBit === 0 || !(this.#idr5 & granBit)) return `S2TG ${tg} is not a supported granule`
    const oas = Math.min(PA_SIZE_BITS[ps] ?? this.#oasBits, this.#oasBits)
    const ias = 64 - t0sz
    const maxIas = g === 16 && this.#oasBits === 52 ? 52 : 48
    if (ias > maxIas || ias < 24) return `S2T0SZ ${t0sz} outside the supported input sizes`
    // SL0 gives the starting lookup level: 4K: 2 - SL0; 16K/64K: 3 - SL0.
    if (sl0 === 3) return 'S2SL0 3 is reserved'
    const start = (g === 12 ? 2 : 3) - sl0
    const bpl = g - 3
    const bits = ias - (g + bpl * (3 - start))
    // Up to 16 concatenated tables at the starting level.
    if (bits < 1 || bits > bpl + 4) return `S2SL0 ${sl0} inconsistent with S2T0SZ ${t0sz}`
    const walker = this.#walker(2, g, ias, oas, 3 - start, bits)
    if (walker === null) return 'unsupported stage-2 geometry'
    return {
      walker,
      rootPfn: Math.floor(addr((raw[6] as number) & ~0xf, (raw[7] as number) & 0xf_ffff) / 4096),
      topLevel: 3 - start,
      oasPages: POW2[oas - 12] as number,
      record: (((raw[5] as number) >>> 26) & 1) !== 0,
      stall: (((raw[5] as number) >>> 25) & 1) !== 0 && this.#stallsSupported(),
    }
  }

  /** Stage-2 translation of a stage-1 table or CD page of a nested stream (reads only). */
  #s2Table(s2: S2Cfg, ipaPfn: number, update: boolean): number {
    const r = s2.walker.walk(s2.rootPfn, s2.topLevel, ipaPfn, READ, 0, update)
    if (r.fault !== WalkFault.NONE || r.pagePfn >= s2.oasPages) {
      this.#xfFault = r.fault === WalkFault.NONE ? WalkFault.RANGE : r.fault
      this.#xfLevel = r.level
      this.#xfIpaPfn = ipaPfn
      return -1
    }
    return r.pagePfn
  }

  /** The STE for `sid` from the cache, or fetched; null after recording a fault. */
  #steFor(sid: number, txn: DmaTransaction): CachedSte | null {
    let ste = this.#steCache[sid]
    if (ste === undefined) {
      const pa = this.#steAddress(sid)
      if (pa < 0) {
        if (pa === -EvtId.F_STE_FETCH) {
          this.#event(EvtId.F_STE_FETCH, txn, sid, { fetch: this.#fetchAddr })
        } else this.#event(-pa, txn, sid)
        txn.fault = 'bad-entry'
        return null
      }
      this.stats.steFetches++
      ste = this.#decodeSte(sid, pa, this.#read16(pa))
      this.#steCache[sid] = ste
    } else if (this.detectStale && !ste.staleReported) {
      this.#checkSte(ste, txn)
    }
    return ste
  }

  #checkSte(ste: CachedSte, txn: DmaTransaction): void {
    const pa = this.#steAddress(ste.sid)
    let what: string | null = null
    if (pa !== ste.pa) {
      what = `STE cached from 0x${ste.pa.toString(16)} but the stream table now points at ${pa < 0 ? 'no STE' : `0x${pa.toString(16)}`}`
    } else {
      const i = this.#firstChange(pa, ste.raw)
      if (i >= 0) {
        const now = this.memory.read32(pa + 4 * i)
        what = `STE word ${i} (qword ${i >> 1}) cached 0x${(ste.raw[i] as number).toString(16)} but memory has 0x${now.toString(16)}`
      }
    }
    if (what !== null) {
      ste.staleReported = true
      this.#stale('ste', what, 'CFGI_STE', txn, -1, -1)
    }
  }

  /**
   * The first of the 16 words at `pa` (a 64-byte structure, inside one frame) that memory
   * no longer holds as `raw` does, or -1. A peek: a frame without storage reads as zeros
   * and is given none.
   */
  #firstChange(pa: number, raw: Uint32Array): number {
    const pfn = Math.floor(pa / 4096)
    const w = this.memory.peekWords(pfn)
    const at = (pa - pfn * 4096) >>> 2
    for (let i = 0; i < 16; i++) {
      if ((w === null ? 0 : (w[at + i] as number)) !== raw[i]) return i
    }
    return -1
  }

  #stale(
    cache: StaleUse['cache'],
    what: string,
    missing: StaleUse['missing'],
    txn: DmaTransaction,
    vmid: number,
    asid: number,
  ): void {
    this.staleUses.push({
      cache,
      what,
      missing,
      sid: txn.sid,
      ssid: txn.hasPasid ? txn.pasid : -1,
      vmid,
      asid,
      iova: txn.iova,
      write: txn.write,
    })
  }

  // ------------------------------------------------------------------ context descriptors

  /**
   * The address of CD `ssid` of an STE: a PA, or for a nested stream a PA reached through
   * the stage 2. Negative: -C_BAD_SUBSTREAMID (invalid level-1 descriptor), -F_CD_FETCH,
   * or -F_TRANSLATION etc. for a stage-2 fault (details in `#xf*`).
   */
  #cdAddress(ste: CachedSte, ssid: number, cached: boolean): number {
    let ipa: number
    if (ste.s1fmt === S1Fmt.LINEAR || ste.s1cdmax === 0) {
      ipa = ste.s1ctxPtr + ssid * 64
    } else {
      const split = cdSplit(ste.s1fmt)
      const l1idx = ssid >>> split
      let l2 = cached ? ste.l1cds[l1idx] : undefined
      if (l2 === undefined) {
        const l1pa = this.#s1Fetch(ste, ste.s1ctxPtr + l1idx * 8, !cached)
        if (l1pa < 0) return l1pa
        const lo = this.memory.read32(l1pa)
        const hi = this.memory.read32(l1pa + 4)
        l2 = lo & 1 ? addr(lo & ~0xfff, hi & 0xf_ffff) : -1
        if (cached) ste.l1cds[l1idx] = l2
      }
      if (l2 < 0) return -EvtId.C_BAD_SUBSTREAMID
      ipa = l2 + (ssid % 2 ** split) * 64
    }
    return this.#s1Fetch(ste, ipa, !cached)
  }

  /** A structure address of a stream: through the stage 2 when nested. */
  #s1Fetch(ste: CachedSte, a: number, peek: boolean): number {
    let pa = a
    if (ste.config === SteCfg.NESTED && ste.s2 !== null) {
      const pfn = this.#s2Table(ste.s2, Math.floor(a / 4096), !peek)
      if (pfn < 0) return -EvtId.F_TRANSLATION
      pa = pfn * 4096 + (a % 4096)
    }
    if (pa + 64 > this.memory.size) {
      this.#fetchAddr = pa
      return -EvtId.F_CD_FETCH
    }
    return pa
  }

  /** Decode a CD's words (C_BAD_CD checks as the SMMU makes them). */
  #decodeCd(ssid: number, pa: number, raw: Uint32Array): CachedCd {
    const w0 = raw[0] as number
    const w1 = raw[1] as number
    const idr0 = this.#idr0
    const valid = w0 >>> 31 !== 0
    const epd0 = ((w0 >>> 14) & 1) !== 0
    let illegal: string | null = null
    let walker: PageTableWalker<ArmLpaeConfig, ArmLpaeParams> | null = null
    let topLevel = 0
    let oasPages = 0
    const ips = w1 & 7
    const oas = Math.min(PA_SIZE_BITS[ips] ?? this.#oasBits, this.#oasBits)
    if (valid) {
      if (!((w1 >>> 9) & 1)) illegal = 'AA64 = 0: AArch32 stage-1 tables are not supported'
      else if ((w0 >>> 15) & 1) illegal = 'ENDI = 1: big-endian tables are not supported'
      else if (!((w1 >>> 14) & 1) && idr0 & IDR0_TERM_MODEL) illegal = 'A = 0 with IDR0.TERM_MODEL'
      else if (
        (w1 >>> 12) & 1 &&
        ((idr0 >>> Idr0.STALL_MODEL_SHIFT) & 3) === Idr0.STALL_MODEL_TERMINATE
      ) {
        illegal = 'S = 1 without stall support'
      } else if (!epd0) {
        const tsz = w0 & 0x3f
        const g = tgToGranuleLg2((w0 >>> 6) & 3)
        const granBit =
          g === 12 ? Idr5.GRAN4K : g === 14 ? Idr5.GRAN16K : g === 16 ? Idr5.GRAN64K : 0
        const vax = ((this.#idr5 >>> Idr5.VAX_SHIFT) & 3) === Idr5.VAX_52_BIT && g === 16
        if (granBit === 0 || !(this.#idr5 & granBit)) illegal = 'TG0 is not a supported granule'
        else if (tsz > 39 || tsz < (vax ? 12 : 16)) illegal = `T0SZ ${tsz} outside 16..39`
        else {
          const ias = 64 - tsz
          const bpl = g - 3
          const levels = Math.ceil((ias - g) / bpl)
          topLevel = levels - 1
          walker = this.#walker(1, g, ias, oas, topLevel, ias - g - bpl * (levels - 1))
          if (walker === null) illegal = 'unsupported stage-1 geometry'
          oasPages = POW2[oas - 12] as number
        }
      }
    }
    const httu = (idr0 >>> Idr0.HTTU_SHIFT) & 3
    const ha = ((w1 >>> 11) & 1) !== 0 && httu >= Idr0.HTTU_ACCESS
    const hd = ha && ((w1 >>> 10) & 1) !== 0 && httu >= Idr0.HTTU_ACCESS_DIRTY
    return {
      ssid,
      pa,
      raw,
      valid,
      illegal,
      epd0,
      asid: (w1 >>> 16) & (idr0 & Idr0.ASID16 ? 0xffff : 0xff),
      walker,
      rootPfn: Math.floor(addr((raw[2] as number) & ~0xfff, (raw[3] as number) & 0xf_ffff) / 4096),
      topLevel,
      oasPages,
      ad: (ha ? HwAd.ACCESSED : 0) | (hd ? HwAd.DIRTY : 0),
      record: ((w1 >>> 13) & 1) !== 0,
      stall: ((w1 >>> 12) & 1) !== 0,
      staleReported: false,
    }
  }

  /** CD `ssid` of `ste` from the cache or fetched; null after recording a fault. */
  #cdFor(ste: CachedSte, ssid: number, txn: DmaTransaction): CachedCd | null {
    let cd = ste.cds[ssid]
    if (cd === undefined) {
      const pa = this.#cdAddress(ste, ssid, true)
      if (pa < 0) {
        this.#cdFault(-pa, ste, txn)
        return null
      }
      this.stats.cdFetches++
      cd = this.#decodeCd(ssid, pa, this.#read16(pa))
      ste.cds[ssid] = cd
    } else if (this.detectStale && !cd.staleReported) {
      this.#checkCd(ste, cd, txn)
    }
    return cd
  }

  #cdFault(id: number, ste: CachedSte, txn: DmaTransaction): void {
    txn.fault = 'bad-entry'
    if (id === EvtId.F_TRANSLATION) {
      // A stage-2 fault while fetching the CD (or its level-1 descriptor).
      this.#s2Event(ste, txn, EvtClass.CD)
      return
    }
    this.#event(id, txn, ste.sid, id === EvtId.F_CD_FETCH ? { fetch: this.#fetchAddr } : {})
  }

  /** Record the stage-2 fault `#xf*` describes, as S2 with `cls`, if STE.S2R records it. */
  #s2Event(ste: CachedSte, txn: DmaTransaction, cls: number): void {
    txn.faultLevel = this.#xfLevel
    if (ste.s2 === null || !ste.s2.record) return
    this.#event(walkFaultEvent(this.#xfFault), txn, ste.sid, { s2: true, cls, ipa: this.#xfIpaPfn })
  }

  #checkCd(ste: CachedSte, cd: CachedCd, txn: DmaTransaction): void {
    const pa = this.#cdAddress(ste, cd.ssid, false)
    let what: string | null = null
    if (pa !== cd.pa) {
      what = `CD ${cd.ssid} cached from 0x${cd.pa.toString(16)} but the CD table now leads to ${pa < 0 ? 'no CD' : `0x${pa.toString(16)}`}`
    } else {
      const i = this.#firstChange(pa, cd.raw)
      if (i >= 0) {
        const now = this.memory.read32(pa + 4 * i)
        what = `CD ${cd.ssid} word ${i} (qword ${i >> 1}) cached 0x${(cd.raw[i] as number).toString(16)} but memory has 0x${now.toString(16)}`
      }
    }
    if (what !== null) {
      cd.staleReported = true
      this.#stale('cd', what, 'CFGI_CD', txn, -1, cd.asid)
    }
  }

  // ------------------------------------------------------------------ translation

  translate(txn: DmaTransaction): boolean {
    this.stats.translations++
    if (!(this.#cr0 & Cr0.SMMUEN)) {
      // Disabled: GBPA decides for every stream.
      if (this.#gbpa & Gbpa.ABORT) {
        txn.fault = 'blocked'
        return false
      }
      txn.pa = txn.iovaPfn * 4096 + txn.offset
      txn.len = 4096 - txn.offset
      return true
    }
    const ok =
      this.#atsOn.size !== 0 && this.#atsOn.has(txn.sid)
        ? this.#translateAts(txn)
        : this.#translate(txn, false)
    if (this.#pendingIrqs !== 0) this.#deliverIrqs()
    return ok
  }

  /** An ATS endpoint: its ATC first; a miss asks the SMMU (Translation Request) and caches. */
  #translateAts(txn: DmaTransaction): boolean {
    const sub = txn.hasPasid ? txn.pasid : -1
    const atc = this.atc
    const e = atc.lookup(1, txn.sid, sub, txn.iovaPfn)
    const access = txn.write ? WRITE : READ
    if (
      e >= 0 &&
      ((atc.perm[e] as number) & access) === access &&
      !(txn.write && atc.dirty[e] === 0)
    ) {
      // A translated request: with ATSCHK the SMMU lets it through only for EATS = 1 streams.
      const ste = this.#steFor(txn.sid, txn)
      if (ste === null) return false
      if (this.#cr0 & Cr0.ATSCHK && (!ste.valid || ste.eats !== Eats.TRANS)) {
        this.#event(EvtId.F_TRANSL_FORBIDDEN, txn, txn.sid)
        txn.fault = 'blocked'
        return false
      }
      this.stats.atcHits++
      if (this.detectStale) this.#checkAtc(e, txn)
      return this.#output(txn, atc, e)
    }
    return this.#translate(txn, true)
  }

  #checkAtc(e: number, txn: DmaTransaction): void {
    const atc = this.atc
    const pfn = this.#peekTranslate(txn)
    const offPages = txn.iovaPfn - atc.vpn(e)
    const cached = (atc.pa[e] as number) + offPages
    if (pfn !== cached) {
      this.#stale(
        'atc',
        `ATC maps page 0x${txn.iovaPfn.toString(16)} to 0x${cached.toString(16)} but the SMMU now translates it to ${pfn < 0 ? 'nothing' : `0x${pfn.toString(16)}`}`,
        'ATC_INV',
        txn,
        -1,
        -1,
      )
    }
  }

  #output(txn: DmaTransaction, cache: Tlb, e: number): true {
    const offPages = txn.iovaPfn - cache.vpn(e)
    const leafBytes = POW2[cache.sizeLg2(e)] as number
    const within = offPages * 4096 + txn.offset
    txn.pa = (cache.pa[e] as number) * 4096 + within
    txn.len = leafBytes - within
    return true
  }

  /** The SMMU's translation of one DMA (untranslated request, or an ATS Translation Request). */
  #translate(txn: DmaTransaction, ats: boolean): boolean {
    const sid = txn.sid
    const ste = this.#steFor(sid, txn)
    if (ste === null) return false
    if (!ste.valid || ste.illegal !== null) {
      this.#event(EvtId.C_BAD_STE, txn, sid)
      txn.fault = 'bad-entry'
      return false
    }
    const config = ste.config
    if (config === SteCfg.ABORT) {
      // Abort: terminated without an event.
      txn.fault = 'blocked'
      return false
    }
    let s1 = (config & 1) !== 0
    const s2 = (config & 2) !== 0
    if (txn.hasPasid && (!s1 || ste.s1cdmax === 0 || txn.pasid >= 2 ** ste.s1cdmax)) {
      this.#event(EvtId.C_BAD_SUBSTREAMID, txn, sid)
      txn.fault = 'bad-entry'
      return false
    }
    if (config === SteCfg.BYPASS) {
      txn.pa = txn.iovaPfn * 4096 + txn.offset
      txn.len = 4096 - txn.offset
      return true
    }
    let ssid = 0
    if (txn.hasPasid) ssid = txn.pasid
    else if (s1 && ste.s1cdmax !== 0) {
      if (ste.s1dss === S1Dss.TERMINATE) {
        this.#event(EvtId.F_STREAM_DISABLED, txn, sid)
        txn.fault = 'blocked'
        return false
      }
      if (ste.s1dss === S1Dss.BYPASS) s1 = false
    }
    let cd: CachedCd | null = null
    if (s1) {
      cd = this.#cdFor(ste, ssid, txn)
      if (cd === null) return false
      if (!cd.valid || cd.illegal !== null) {
        this.#event(EvtId.C_BAD_CD, txn, sid)
        txn.fault = 'bad-entry'
        return false
      }
    }
    const kind = s1 ? (s2 ? TlbKind.S12 : TlbKind.S1) : TlbKind.S2
    const asid = cd === null ? 0 : cd.asid
    const tag = ((ste.vmid << 16) | asid) >>> 0
    const tlb = this.tlb
    const access = txn.write ? WRITE : READ
    let e = tlb.lookup(kind, tag, 0, txn.iovaPfn)
    if (e >= 0 && this.detectStale && !this.#upToDate(e, kind, ste, cd, txn.iovaPfn)) {
      this.#checkTlb(e, ste, cd, txn)
    }
    if (
      e < 0 ||
      ((tlb.perm[e] as number) & access) !== access ||
      (txn.write && cd !== null && cd.ad & HwAd.DIRTY && tlb.dirty[e] === 0)
    ) {
      // A miss, or a write through an entry cached writable-clean (HTTU goes back to the
      // descriptor), or an access the cached permissions do not grant: walk.
      e = this.#walk(txn, ste, cd, kind, tag)
      if (e < 0) return false
    }
    if (ats && ste.eats === Eats.TRANS) {
      const sub = txn.hasPasid ? txn.pasid : -1
      this.atc.fill(
        1,
        sid,
        sub,
        tlb.vpn(e),
        tlb.sizeLg2(e),
        tlb.pa[e] as number,
        tlb.perm[e] as number,
        // Without HD there is no dirty state to set: a write may use the entry as it is.
        tlb.dirty[e] === 1 || cd === null || (cd.ad & HwAd.DIRTY) === 0,
      )
    }
    return this.#output(txn, tlb, e)
  }

  /** Walk stage 1 and/or stage 2 with A/D updates and fill the TLB; -1 after a fault. */
  #walk(
    txn: DmaTransaction,
    ste: CachedSte,
    cd: CachedCd | null,
    kind: number,
    tag: number,
  ): number {
    const access = txn.write ? WRITE : READ
    const sid = ste.sid
    this.stats.walks++
    let ipfn = txn.iovaPfn
    let sizeLg2 = 64
    let perm = READ | WRITE
    let dirty = false
    let ipaLeaf = -1
    if (cd !== null) {
      if (cd.epd0 || cd.walker === null) {
        return this.#s1Fault(txn, ste, cd, WalkFault.NOT_PRESENT, -1)
      }
      const r = cd.walker.walk(cd.rootPfn, cd.topLevel, ipfn, access, cd.ad, true, ste.tables)
      if (r.fault === WalkFault.TABLE_FETCH) {
        txn.fault = 'translation'
        this.#s2Event(ste, txn, EvtClass.TT)
        return -1
      }
      if (r.fault !== WalkFault.NONE) return this.#s1Fault(txn, ste, cd, r.fault, r.level)
      if (r.pagePfn >= cd.oasPages) return this.#s1Fault(txn, ste, cd, -1, r.level)
      sizeLg2 = r.sizeLg2
      perm = r.perm
      dirty = r.dirty
      ipfn = r.pagePfn
      ipaLeaf = ipfn - (ipfn % (POW2[sizeLg2 - 12] as number))
    }
    let pfn = ipfn
    const s2 = ste.config & 2 ? ste.s2 : null
    if (s2 !== null) {
      const r = s2.walker.walk(s2.rootPfn, s2.topLevel, ipfn, access, 0, true)
      if (r.fault !== WalkFault.NONE || r.pagePfn >= s2.oasPages) {
        txn.fault =
          r.fault === WalkFault.PERMISSION
            ? 'permission'
            : r.fault === WalkFault.NONE
              ? 'address-size'
              : 'translation'
        txn.faultLevel = r.level
        if (s2.record || s2.stall) {
          const id = r.fault === WalkFault.NONE ? EvtId.F_ADDR_SIZE : walkFaultEvent(r.fault)
          const o = { s2: true, cls: EvtClass.IN, ipa: ipfn }
          this.#event(id, txn, sid, s2.stall ? { ...o, stag: this.#stall(sid) } : o)
        }
        return -1
      }
      if (r.sizeLg2 < sizeLg2) sizeLg2 = r.sizeLg2
      perm &= r.perm
      pfn = r.pagePfn
    }
    const pages = POW2[sizeLg2 - 12] as number
    // (No float `%`: POW2's entries are doubles.)
    const within = pages === 1 ? 0 : txn.iovaPfn - Math.floor(txn.iovaPfn / pages) * pages
    const e = this.tlb.fill(
      kind,
      tag,
      0,
      txn.iovaPfn - within,
      sizeLg2,
      pfn - within,
      perm,
      dirty,
      ipaLeaf < 0 ? -1 : ipfn - within,
    )
    const records = this.#records
    if (records !== null) {
      // A single-stage fill walk read the entries a check of a hit would read.
      if (this.detectStale && kind === TlbKind.S1 && cd !== null && cd.walker !== null) {
        records.save(e, cd.walker, txn.iovaPfn, cd)
      } else if (this.detectStale && kind === TlbKind.S2 && s2 !== null) {
        records.save(e, s2.walker, txn.iovaPfn, ste)
      } else records.clear(e)
    }
    return e
  }

  /** A stage-1 fault (`fault` -1: the output address is beyond IPS/OAS). */
  #s1Fault(txn: DmaTransaction, ste: CachedSte, cd: CachedCd, fault: number, level: number): -1 {
    let id: number = EvtId.F_ADDR_SIZE
    txn.fault = 'address-size'
    if (fault >= 0) {
      id = walkFaultEvent(fault)
      txn.fault =
        fault === WalkFault.PERMISSION
          ? 'permission'
          : fault === WalkFault.RANGE
            ? 'address-size'
            : 'translation'
    }
    txn.faultLevel = level
    // A stalled fault is always recorded: software must resume it.
    if (cd.stall) this.#event(id, txn, ste.sid, { cls: EvtClass.IN, stag: this.#stall(ste.sid) })
    else if (cd.record) this.#event(id, txn, ste.sid, { cls: EvtClass.IN })
    return -1
  }

  /** Whether IDR0.STALL_MODEL allows stalls (stall or stall-force). */
  #stallsSupported(): boolean {
    return ((this.#idr0 >>> Idr0.STALL_MODEL_SHIFT) & 3) !== Idr0.STALL_MODEL_TERMINATE
  }

  /** Stall a faulting transaction of `sid`: a new STAG, held until RESUME or STALL_TERM. */
  #stall(sid: number): number {
    const stag = this.#nextStag
    this.#nextStag = (stag + 1) & 0xffff
    this.#stalled.add(sid * 65536 + stag)
    return stag
  }

  /** Stalled transactions awaiting RESUME, as `{ sid, stag }` (tests, tools). */
  stalledTransactions(): { sid: number; stag: number }[] {
    return [...this.#stalled].map((k) => ({ sid: Math.floor(k / 65536), stag: k % 65536 }))
  }

  /**
   * True when single-stage TLB entry `e` was last found up to date for this IOVA page
   * under this CD (stage 1) or STE (stage 2) and the entries that walk read are unchanged:
   * {@link #checkTlb} would find it up to date again.
   */
  #upToDate(e: number, kind: number, ste: CachedSte, cd: CachedCd | null, ipfn: number): boolean {
    const records = this.#records
    if (records === null || kind === TlbKind.S12) return false
    if (kind === TlbKind.S1) {
      return cd !== null && cd.walker !== null && records.unchanged(e, cd.walker, ipfn, cd)
    }
    return ste.s2 !== null && records.unchanged(e, ste.s2.walker, ipfn, ste)
  }

  /** Detector: does TLB entry `e` still match the tables in memory? */
  #checkTlb(e: number, ste: CachedSte, cd: CachedCd | null, txn: DmaTransaction): void {
    const tlb = this.tlb
    // Look with no access: the check compares mappings and permissions, it does not judge.
    const access = 0
    const kind = tlb.kind(e)
    const vmid = ste.vmid
    const asid = cd === null ? -1 : cd.asid
    let ipfn = txn.iovaPfn
    let sizeLg2 = 64
    let perm = READ | WRITE
    let dirty = false
    let gone: string | null = null
    let missing: StaleUse['missing'] = kind === TlbKind.S2 ? 'TLBI_S2_IPA' : 'TLBI_NH_VA'
    const offPages = txn.iovaPfn - tlb.vpn(e)
    if (cd !== null && cd.walker !== null && !cd.epd0) {
      const r = cd.walker.walk(cd.rootPfn, cd.topLevel, ipfn, access, cd.ad, false, ste.peekTables)
      if (r.fault !== WalkFault.NONE) {
        gone = 'the stage-1 table no longer maps it'
      } else {
        sizeLg2 = r.sizeLg2
        perm = r.perm
        dirty = r.dirty
        ipfn = r.pagePfn
        if (kind === TlbKind.S12 && ipfn !== (tlb.ipa[e] as number) + offPages) {
          gone = `stage 1 now maps it to IPA page 0x${ipfn.toString(16)}`
        }
      }
    }
    let pfn = ipfn
    const s2 = ste.config & 2 ? ste.s2 : null
    if (gone === null && s2 !== null) {
      const r = s2.walker.walk(s2.rootPfn, s2.topLevel, ipfn, access, 0, false)
      if (r.fault !== WalkFault.NONE) {
        gone = 'the stage-2 table no longer maps it'
      } else {
        if (r.sizeLg2 < sizeLg2) sizeLg2 = r.sizeLg2
        perm &= r.perm
        pfn = r.pagePfn
      }
      // A stale combined entry after a stage-2 change needs the VMID's stage-1 entries dropped.
      if (kind === TlbKind.S12) missing = 'TLBI_NH_ALL'
    }
    const cachedPfn = (tlb.pa[e] as number) + offPages
    let what: string | null = null
    if (gone !== null) {
      what = `TLB maps page 0x${txn.iovaPfn.toString(16)} to 0x${cachedPfn.toString(16)} but ${gone}`
    } else if (pfn !== cachedPfn || sizeLg2 < tlb.sizeLg2(e)) {
      what = `TLB has a 2^${tlb.sizeLg2(e)} leaf mapping page 0x${txn.iovaPfn.toString(16)} to 0x${cachedPfn.toString(16)}, memory a 2^${sizeLg2} leaf to 0x${pfn.toString(16)}`
    } else if (perm !== tlb.perm[e] && (tlb.perm[e] as number) & ~perm) {
      what = `TLB permissions ${tlb.perm[e]} exceed the tables' ${perm}`
    } else if (tlb.dirty[e] === 1 && !dirty && cd !== null && cd.ad & HwAd.DIRTY) {
      what =
        'TLB caches the leaf as writable-dirty but its descriptor is writable-clean (AP[2] set): writes will not be logged'
    }
    if (what !== null) {
      this.#stale('tlb', what, missing, txn, vmid, asid)
      return
    }
    // Up to date after one walk (stage 1 or stage 2 alone): keep where it read.
    const records = this.#records
    if (records === null) return
    if (kind === TlbKind.S1 && cd !== null && cd.walker !== null && !cd.epd0) {
      records.save(e, cd.walker, txn.iovaPfn, cd)
    } else if (kind === TlbKind.S2 && s2 !== null) {
      records.save(e, s2.walker, txn.iovaPfn, ste)
    }
  }

  /**
   * The translation the SMMU would give now from memory alone: STE, CD and tables read
   * fresh, nothing written, no cache touched. The output page, or -1.
   */
  #peekTranslate(txn: DmaTransaction): number {
    const sid = txn.sid
    const pa = this.#steAddress(sid)
    if (pa < 0) return -1
    const ste = this.#decodeSte(sid, pa, this.#read16(pa))
    if (!ste.valid || ste.illegal !== null || ste.config === SteCfg.ABORT) return -1
    if (ste.config === SteCfg.BYPASS) return txn.hasPasid ? -1 : txn.iovaPfn
    let s1 = (ste.config & 1) !== 0
    if (txn.hasPasid && (!s1 || ste.s1cdmax === 0 || txn.pasid >= 2 ** ste.s1cdmax)) return -1
    if (!txn.hasPasid && s1 && ste.s1cdmax !== 0) {
      if (ste.s1dss === S1Dss.TERMINATE) return -1
      if (ste.s1dss === S1Dss.BYPASS) s1 = false
    }
    const access = txn.write ? WRITE : READ
    let ipfn = txn.iovaPfn
    if (s1) {
      const cpa = this.#cdAddress(ste, txn.hasPasid ? txn.pasid : 0, false)
      if (cpa < 0) return -1
      const cd = this.#decodeCd(0, cpa, this.#read16(cpa))
      if (!cd.valid || cd.illegal !== null || cd.epd0 || cd.walker === null) return -1
      const r = cd.walker.walk(cd.rootPfn, cd.topLevel, ipfn, access, cd.ad, false, ste.peekTables)
      if (r.fault !== WalkFault.NONE) return -1
      ipfn = r.pagePfn
    }
    if (ste.config & 2 && ste.s2 !== null) {
      const r = ste.s2.walker.walk(ste.s2.rootPfn, ste.s2.topLevel, ipfn, access, 0, false)
      if (r.fault !== WalkFault.NONE) return -1
      return r.pagePfn
    }
    return ipfn
  }

  /** Whether `sid`'s STE is in the configuration cache (tests, tools). */
  steCached(sid: number): boolean {
    return this.#steCache[sid] !== undefined
  }

  /** Whether CD `ssid` of `sid` is in the configuration cache (tests, tools). */
  cdCached(sid: number, ssid: number): boolean {
    return this.#steCache[sid]?.cds[ssid] !== undefined
  }
}

/** log2 of the CDs per level-2 table of an S1Fmt. */
function cdSplit(s1fmt: number): number {
  return s1fmt === S1Fmt.L2_4K ? 6 : 10
}

/** The event of a walk fault. */
function walkFaultEvent(fault: number): number {
  switch (fault) {
    case WalkFault.PERMISSION:
      return EvtId.F_PERMISSION
    case WalkFault.ACCESS_FLAG:
      return EvtId.F_ACCESS
    default:
      return EvtId.F_TRANSLATION
  }
}

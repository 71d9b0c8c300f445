/**
 * The Intel VT-d remapping hardware model, scalable mode: one DMA-remapping unit with its
 * MMIO registers, the root / context / PASID structures in the machine's memory, the
 * context cache, PASID cache, IOTLB and the device TLB of ATS devices, the invalidation
 * queue, the fault-recording registers and the page request queue. It reads only what
 * software wrote into memory and registers; the Linux driver in `../driver.ts` programs it
 * exactly through those.
 *
 * Translation (§3.6–§3.8): first-stage (x86-64 tables), second-stage (VT-d SS tables) and
 * nested (every first-stage table address and the final guest-physical address translated
 * by the second stage), walked with `@iommu/io-pgtable`'s hardware views; first-stage A/D
 * bits always, second-stage A/D bits when the PASID entry's SSADE is set (§3.6.2, §3.7.2).
 *
 * Caches are dropped only by the queued-invalidation descriptors that drop them (§6.5.2),
 * at the spec's granularities. A missing-invalidation detector compares every cache hit
 * with memory: when a DMA is about to use a cached context entry, PASID entry, IOTLB or
 * device-TLB translation that no longer matches memory, it records where, what differs and
 * which descriptor was missing — and the DMA still uses the stale entry, as hardware would.
 *
 * Interrupts are modelled as synchronous calls of the handlers software installs in
 * {@link VtdIommuHw.irq} (the MSI the unit would send): fault events, page-request events
 * and invalidation-completion events, each masked by its control register's IM bit.
 *
 * @module
 */

import type { DmaTransaction, Driver, IommuUnit, Machine, PhysicalMemory } from '@iommu/core'
import {
  type FormatParams,
  HwAd,
  PageTableWalker,
  type PathRecorder,
  PathRecords,
  type TableTranslator,
  type VtdSsConfig,
  type VtdSsParams,
  vtdss,
  WalkFault,
  type X86_64Config,
  x86_64,
} from '@iommu/io-pgtable'
import { POW2, TlbKind, TranslationCache } from './iotlb.ts'
import {
  Cap,
  CcGran,
  Ctx,
  capFro,
  capMamv,
  capNfr,
  capSagaw,
  Ecap,
  ecapPss,
  Fectl,
  FRCD_SIZE,
  Fr,
  Frcd,
  Fsts,
  GCMD_PERSISTENT,
  Gcmd,
  Ics,
  IotlbGran,
  Iqa,
  Iqei,
  Iwd,
  PASID_DIR_ENTRY_SIZE,
  PASID_ENTRY_SIZE,
  PcGran,
  Pe,
  Pgtt,
  PiotlbGran,
  PRQ_DESC_SIZE,
  PRQ_TYPE_PAGE_REQ,
  Prq,
  Prs,
  QI_DESC_SIZE,
  Qi,
  Reg,
  RespCode,
  ROOT_ENTRY_SIZE,
  Rtaddr,
  SM_CONTEXT_SIZE,
  Ttm,
} from './regs.ts'

const READ = 1
const WRITE = 2
/** PASID tag of device-TLB entries cached for requests without PASID. */
const NO_PASID = -1
const AD = HwAd.ACCESSED | HwAd.DIRTY

/** Hardware configuration of a VT-d unit. */
export interface VtdIommuHwConfig {
  /** Capability register (default {@link DEFAULT_CAP}). */
  readonly cap?: bigint
  /** Extended capability register (default {@link DEFAULT_ECAP}). */
  readonly ecap?: bigint
  /** IOTLB entries (default 1024) and ways (default 4). */
  readonly iotlbEntries?: number
  readonly iotlbWays?: number
  /** Device-TLB entries shared by the unit's ATS devices (default 256, 4 ways). */
  readonly devtlbEntries?: number
  /** Run the missing-invalidation detector on every cache hit (default true). */
  readonly detectStale?: boolean
  /**
   * The detector skips the comparison walk of an IOTLB hit on a first- or second-stage
   * entry when the walk that last found the entry up to date read entries that all still
   * hold the same words (default true). The reports are the same either way: false walks
   * on every hit (the reference the records are tested against).
   */
  readonly detectorRecords?: boolean
}

/**
 * The default capability register: 65536 domain IDs, 4-level second stage (SAGAW bit 2,
 * MGAW 48), 2 MiB and 1 GiB second-stage pages, page-selective invalidation with MAMV 18,
 * 8 fault-recording registers at 0x400, read/write draining, first-stage 1 GiB pages.
 */
export const DEFAULT_CAP: bigint =
  6n |
  (4n << Cap.SAGAW_SHIFT) |
  (47n << Cap.MGAW_SHIFT) |
  (0x40n << Cap.FRO_SHIFT) |
  (3n << Cap.SLLPS_SHIFT) |
  Cap.PSI |
  (7n << Cap.NFR_SHIFT) |
  (18n << Cap.MAMV_SHIFT) |
  Cap.DWD |
  Cap.DRD |
  Cap.FL1GP

/**
 * The default extended capability register: coherent, QI, device TLB, pass-through, snoop
 * control, nesting, page requests (with drain), supervisor requests, 20-bit PASIDs,
 * scalable mode with SSADS, SSTS, FSTS and SMPWC.
 */
export const DEFAULT_ECAP: bigint =
  Ecap.C |
  Ecap.QI |
  Ecap.DT |
  Ecap.PT |
  Ecap.SC |
  (0x50n << Ecap.IRO_SHIFT) |
  Ecap.NEST |
  Ecap.PRS |
  Ecap.SRS |
  (19n << Ecap.PSS_SHIFT) |
  Ecap.PASID |
  Ecap.PDS |
  Ecap.SMTS |
  Ecap.SSADS |
  Ecap.SSTS |
  Ecap.FSTS |
  Ecap.SMPWC

/** Which cache held a stale entry, and the descriptor that would have dropped it. */
export type StaleCache = 'context' | 'pasid' | 'iotlb' | 'paging-structure' | 'devtlb'
export type MissingDescriptor =
  | 'context-cache invalidation'
  | 'PASID-cache invalidation'
  | 'IOTLB invalidation'
  | 'PASID-based IOTLB invalidation'
  | 'device-TLB invalidation'

/** A use of a stale cache entry that software forgot to invalidate. */
export interface StaleUse {
  readonly cache: StaleCache
  /** What differs between the cache and memory. */
  readonly what: string
  readonly missing: MissingDescriptor
  /** Source ID (RID) of the DMA. */
  readonly sid: number
  /** Domain ID the entry is tagged with (-1 for context entries). */
  readonly did: number
  /** PASID of the DMA, or -1 without one. */
  readonly pasid: number
  readonly iova: bigint
  readonly write: boolean
}

/** A decoded primary fault record (§11.4.14). */
export interface VtdFault {
  readonly reason: number
  readonly sid: number
  /** The PASID, or null when the request had none. */
  readonly pasid: number | null
  /** The faulting page address. */
  readonly addr: bigint
  /** Read (true) or write request. */
  readonly read: boolean
}

/** A page request as a PRI-capable device sends it (PCIe Page Request Message). */
export interface PageRequest {
  readonly rid: number
  /** PASID prefix, if any. */
  readonly pasid?: number
  /** Page address (bits 11:0 ignored). */
  readonly addr: bigint
  readonly read: boolean
  readonly write: boolean
  readonly exe?: boolean
  readonly priv?: boolean
  /** Last request in the page request group. */
  readonly lpig: boolean
  /** Page request group index (9 bits). */
  readonly prgIndex: number
}

/** An invalidation-queue descriptor the unit executed (its first two qwords). */
export interface TracedDescriptor {
  readonly q0: bigint
  readonly q1: bigint
}

/** A page request as decoded from the page request queue. */
export interface PageRequestRecord extends PageRequest {
  readonly pasidPresent: boolean
}

/** A page group response delivered to a device (by software or by the hardware itself). */
export interface PageGroupResponse {
  readonly rid: number
  readonly pasid: number | null
  readonly prgIndex: number
  /** `RespCode`: 0 success, 1 invalid request, 0xf failure. */
  readonly code: number
  /** Generated by the hardware (queue overflow, PRE clear), not by a descriptor. */
  readonly auto: boolean
}

/** The unit's interrupt lines: handlers software installs (the MSI vectors). */
export interface VtdIrq {
  /** Fault event (FECTL): a primary fault was recorded or a queue error occurred. */
  fault: (() => void) | null
  /** Page request event (PECTL): a page request was queued. */
  pageRequest: (() => void) | null
  /** Invalidation completion event (IECTL): a wait descriptor with IF completed. */
  invalidation: (() => void) | null
}

/** Counters of a unit. */
export interface VtdHwStats {
  translations: number
  walks: number
  contextFetches: number
  pasidFetches: number
  descriptors: number
  faults: number
  faultsDropped: number
  pageRequests: number
}

/** A decoded scalable-mode context entry with the root entry it came through. */
interface CachedContext {
  /** The root-entry qword and the four context-entry qwords as 32-bit words. */
  readonly raw: Uint32Array
  readonly fpd: boolean
  readonly dte: boolean
  readonly paside: boolean
  readonly pre: boolean
  /** PASIDs the directory covers: 2^(PDTS + 7) directory entries × 64. */
  readonly maxPasid: number
  readonly dirPfn: number
  readonly ridPasid: number
  staleReported: boolean
}

/** A decoded PASID table entry (with the directory entry it came through). */
interface CachedPasid {
  readonly sid: number
  readonly pasid: number
  /** Directory entry (2 words) and the 16 words of the PASID entry. */
  readonly raw: Uint32Array
  readonly dirPa: number
  readonly pePa: number
  readonly pgtt: number
  readonly did: number
  readonly fpd: boolean
  /** Second-stage root page and top level (AW + 1). */
  readonly ssRoot: number
  readonly ssLevel: number
  readonly ssade: boolean
  /** First-stage root page (a guest-physical page when nested) and top level. */
  readonly fsRoot: number
  readonly fsLevel: number
  staleReported: boolean
}

/** Why a context or PASID entry could not be used. */
interface EntryFault {
  readonly reason: number
  /** Fault processing disabled: abort without recording. */
  readonly fpd: boolean
}

/** Walk output shared by the translate path and the detector (reused, no allocation). */
class Translation {
  fault = 0
  faultLevel = -1
  /** IOVA page where the cached leaf starts, its output page and size. */
  leafVpn = 0
  leafPa = 0
  sizeLg2 = 12
  perm = 0
  dirty = false
  /** Nested: the guest-physical page of the leaf's start; -1 otherwise. */
  leafMid = -1
}

/** One VT-d DMA-remapping hardware unit (DRHD). */
export class VtdIommuHw implements IommuUnit {
  readonly name: string
  /** Bound by the machine when the unit is added (never assigned here; see `IommuUnit`). */
  declare readonly driver: Driver
  readonly maxPasids: number
  readonly memory: PhysicalMemory
  readonly cap: bigint
  readonly ecap: bigint
  /** IOTLB: combined leaf translations tagged by DID, PASID and kind. */
  readonly iotlb: TranslationCache
  /**
   * Paging-structure cache: the last-level table a first- or second-stage walk reached,
   * per 2 MiB region (tagged like the IOTLB); kept by leaf-only (IH = 1) invalidations.
   */
  readonly psc: TranslationCache
  /** Device TLBs of the unit's ATS devices (tagged by source ID and PASID). */
  readonly devtlb: TranslationCache
  /** Uses of stale cache entries found by the detector. */
  readonly staleUses: StaleUse[] = []
  /** Page group responses delivered to devices, in order. */
  readonly pageResponses: PageGroupResponse[] = []
  /** Register-programming errors the model noticed (e.g. two GCMD commands at once). */
  readonly diagnostics: string[] = []
  /** Every descriptor executed, in order, while {@link traceDescriptors} is on (tests, tools). */
  readonly descriptorTrace: TracedDescriptor[] = []
  /** Record executed descriptors in {@link descriptorTrace}. */
  traceDescriptors = false
  readonly irq: VtdIrq = { fault: null, pageRequest: null, invalidation: null }
  readonly stats: VtdHwStats = {
    translations: 0,
    walks: 0,
    contextFetches: 0,
    pasidFetches: 0,
    descriptors: 0,
    faults: 0,
    faultsDropped: 0,
    pageRequests: 0,
  }
  /** Run the detector on cache hits. */
  detectStale: boolean

  readonly #ssWalker: PageTableWalker<VtdSsConfig, VtdSsParams>
  readonly #fsWalker: PageTableWalker<X86_64Config, FormatParams>
  /** Level-0 walks from a cached table: no sign-extension check on a 9-bit index. */
  readonly #fsLeafWalker: PageTableWalker<X86_64Config, FormatParams>
  readonly #tr = new Translation()
  readonly #peek = new Translation()
  /**
   * Per IOTLB entry, the path of the detector's last walk that found it up to date, with
   * the IOVA page and the cached PASID entry (single-stage only): null without records.
   */
  readonly #records: PathRecords<CachedPasid> | null
  readonly #sagaw: number
  readonly #mamv: number
  readonly #fro: number
  readonly #nfr: number
  // Registers.
  #gsts = 0
  #rtaddr = 0n
  #fsts = 0
  #fectl = Fectl.IM
  #iqa = 0n
  #iqh = 0
  #iqt = 0
  #ics = 0
  #iqer = 0n
  #pqa = 0n
  #pqh = 0
  #pqt = 0
  #prs = 0
  #pectl = Fectl.IM
  readonly #frcd: Uint32Array
  #frNext = 0
  // Latched state.
  #te = false
  #ttm: number = Ttm.LEGACY
  #rootBase = 0
  // Caches.
  readonly #ctxCache: (CachedContext | undefined)[] = []
  readonly #peCache = new Map<number, CachedPasid>()
  /** The last PASID entry each source ID used (skips the map on the hot path). */
  readonly #peLast: (CachedPasid | undefined)[] = []
  /** Page request groups awaiting a response: `rid:pasid:prg` (-1 = no PASID). */
  readonly #openGroups = new Set<string>()
  // The walk in progress (nested resolver state).
  #resolveFault = 0
  #resolveRoot = 0
  #resolveLevel = 0
  #resolveAd = 0
  /** Table fetches of the walk in progress (the first is the root's). */
  #resolveCalls = 0
  readonly #resolve: TableTranslator
  /** The walker of the last single-stage walk from the root (not through the PSC), or null. */
  #rootWalker: PathRecorder | null = null
  // The paging-structure probe of a check: which page the walk fetched as its level-0 table.
  #pscCalls = 0
  #pscTop = 0
  #pscSeen = -1
  readonly #pscProbe: TableTranslator

  constructor(machine: Machine, name: string, config: VtdIommuHwConfig = {}) {
    this.name = name
    this.memory = machine.memory
    this.cap = config.cap ?? DEFAULT_CAP
    this.ecap = config.ecap ?? DEFAULT_ECAP
    this.maxPasids = this.ecap & Ecap.PASID ? 2 ** ecapPss(this.ecap) : 0
    this.iotlb = new TranslationCache(config.iotlbEntries ?? 1024, config.iotlbWays ?? 4)
    this.devtlb = new TranslationCache(config.devtlbEntries ?? 256, 4)
    this.psc = new TranslationCache(256, 4)
    this.detectStale = config.detectStale ?? true
    this.#records =
      config.detectorRecords === false ? null : new PathRecords(this.iotlb.sets * this.iotlb.ways)
    this.#sagaw = capSagaw(this.cap)
    this.#mamv = capMamv(this.cap)
    this.#fro = capFro(this.cap)
    this.#nfr = capNfr(this.cap)
    this.#frcd = new Uint32Array(this.#nfr * 4)
    this.#ssWalker = new PageTableWalker(this.memory, vtdss, { topLevel: 4 })
    this.#fsWalker = new PageTableWalker(this.memory, x86_64, { topLevel: 4, signExtend: true })
    this.#fsLeafWalker = new PageTableWalker(this.memory, x86_64, { topLevel: 4 })
    this.#resolve = (gpfn) => this.#resolveTable(gpfn)
    this.#pscProbe = (pfn) => {
      if (this.#pscCalls++ === this.#pscTop) this.#pscSeen = pfn
      return pfn
    }
  }

  // ------------------------------------------------------------------ MMIO

  /**
   * Read a register: 32-bit registers return their 32 bits; a fault-recording register
   * reads 8 bytes at +0 or +8, or its top dword at +12.
   */
  readMmio(offset: number): bigint {
    if (offset >= this.#fro && offset < this.#fro + this.#nfr * FRCD_SIZE) {
      const i = (offset - this.#fro) >> 2
      const w = this.#frcd
      if ((offset & 7) === 4) return BigInt(w[i] as number)
      return BigInt(w[i] as number) | (BigInt((w[i + 1] ?? 0) as number) << 32n)
    }
    switch (offset) {
      case Reg.VER:
        return 0x10n
      case Reg.CAP:
        return this.cap
      case Reg.ECAP:
        return this.ecap
      case Reg.GCMD:
        return 0n
      case Reg.GSTS:
        return BigInt(this.#gsts >>> 0)
      case Reg.RTADDR:
        return this.#rtaddr
      case Reg.FSTS:
        return BigInt(this.#fstsValue() >>> 0)
      case Reg.FECTL:
        return BigInt(this.#fectl >>> 0)
      case Reg.IQH:
        return BigInt(this.#iqh)
      case Reg.IQT:
        return BigInt(this.#iqt)
      case Reg.IQA:
        return this.#iqa
      case Reg.ICS:
        return BigInt(this.#ics)
      case Reg.IQER:
        return this.#iqer
      case Reg.PQH:
        return BigInt(this.#pqh)
      case Reg.PQT:
        return BigInt(this.#pqt)
      case Reg.PQA:
        return this.#pqa
      case Reg.PRS:
        return BigInt(this.#prs)
      case Reg.PECTL:
        return BigInt(this.#pectl >>> 0)
      default:
        return 0n
    }
  }

  /** Write a register, with the hardware's side effects. */
  writeMmio(offset: number, value: bigint): void {
    if (offset >= this.#fro && offset < this.#fro + this.#nfr * FRCD_SIZE) {
      // Only F (bit 127) is writable: write 1 to clear the record.
      if ((offset - this.#fro) % FRCD_SIZE === 12 && value & BigInt(Frcd.F >>> 0)) {
        const i = ((offset - this.#fro) >> 2) | 0
        this.#frcd[i] = ((this.#frcd[i] as number) & ~Frcd.F) >>> 0
      }
      return
    }
    const v32 = Number(value & 0xffff_ffffn) | 0
    switch (offset) {
      case Reg.GCMD:
        this.#writeGcmd(v32)
        return
      case Reg.RTADDR:
        this.#rtaddr = value
        return
      case Reg.FSTS: {
        const w1c = Fsts.PFO | Fsts.IQE | Fsts.ICE | Fsts.ITE | Fsts.PRO
        const hadIqe = (this.#fsts & Fsts.IQE) !== 0
        this.#fsts &= ~(v32 & w1c)
        // Clearing IQE lets the queue fetch again from IQH.
        if (hadIqe && (this.#fsts & Fsts.IQE) === 0) this.#runQueue()
        return
      }
      case Reg.FECTL:
        this.#fectl = (this.#fectl & ~Fectl.IM) | (v32 & Fectl.IM)
        return
      case Reg.IQT:
        this.#iqt = Number(value & 0x7fff0n)
        this.#runQueue()
        return
      case Reg.IQA:
        this.#iqa = value
        return
      case Reg.ICS:
        this.#ics &= ~(v32 & Ics.IWC)
        return
      case Reg.PQH:
        this.#pqh = Number(value & 0x7ffe0n)
        return
      case Reg.PQT:
        this.#pqt = Number(value & 0x7ffe0n)
        return
      case Reg.PQA:
        this.#pqa = value
        return
      case Reg.PRS:
        this.#prs &= ~(v32 & (Prs.PPR | Prs.PRO))
        return
      case Reg.PECTL:
        this.#pectl = (this.#pectl & ~Fectl.IM) | (v32 & Fectl.IM)
        return
      default:
        // Read-only or unmodelled registers ignore writes.
        return
    }
  }

  #fstsValue(): number {
    let ppf = false
    for (let i = 0; i < this.#nfr; i++) {
      if (((this.#frcd[4 * i + 3] as number) & Frcd.F) !== 0) ppf = true
    }
    return (this.#fsts & ~Fsts.PPF) | (ppf ? Fsts.PPF : 0)
  }

  /**
   * GCMD (§10.4.4): software changes one command at a time — the value written is the
   * current status with one bit flipped (an enable) or one one-shot bit set. A write that
   * changes more than one is a programming error: the model executes none of it and
   * records a diagnostic.
   */
  #writeGcmd(v: number): void {
    const persistentChanges = (v ^ this.#gsts) & GCMD_PERSISTENT
    const oneShots = v & (Gcmd.SRTP | Gcmd.SFL | Gcmd.WBF | Gcmd.SIRTP)
    const cmds = persistentChanges | oneShots
    if (cmds === 0) return
    if ((cmds & (cmds - 1)) !== 0) {
      this.diagnostics.push(
        `${this.name}: GCMD write 0x${(v >>> 0).toString(16)} issues more than one command (0x${(cmds >>> 0).toString(16)}); ignored`,
      )
      return
    }
    switch (cmds) {
      case Gcmd.TE:
        this.#te = (v & Gcmd.TE) !== 0
        this.#gsts = this.#te ? this.#gsts | Gcmd.TE : this.#gsts & ~Gcmd.TE
        return
      case Gcmd.QIE:
        if (v & Gcmd.QIE) {
          if (!(this.ecap & Ecap.QI)) return
          this.#iqh = 0
          this.#gsts |= Gcmd.QIE
          this.#runQueue()
        } else {
          this.#gsts &= ~Gcmd.QIE
        }
        return
      case Gcmd.SRTP: {
        this.#rootBase = Number(this.#rtaddr & Rtaddr.ADDR_MASK)
        const ttm = Number((this.#rtaddr >> Rtaddr.TTM_SHIFT) & 3n)
        this.#ttm = ttm === Ttm.SCALABLE && !(this.ecap & Ecap.SMTS) ? Ttm.LEGACY : ttm
        this.#gsts |= Gcmd.SRTP
        // With ESRTPS the root table switch also drops every translation cache.
        if (this.cap & Cap.ESRTPS) this.#dropAll()
        return
      }
      case Gcmd.SIRTP:
        this.#gsts |= Gcmd.SIRTP
        return
      case Gcmd.SFL:
        this.#gsts |= Gcmd.SFL
        return
      case Gcmd.WBF:
        // Write buffer flushed at once: WBFS reads clear.
        return
      default:
        // IRE, CFI, EAFL: accepted as status only.
        this.#gsts = v & cmds ? this.#gsts | cmds : this.#gsts & ~cmds
    }
  }

  #dropAll(): void {
    this.psc.invalidateAll()
    this.#ctxCache.length = 0
    this.#peCache.clear()
    this.#peLast.length = 0
    this.iotlb.invalidateAll()
    this.devtlb.invalidateAll()
  }

  /** The root table address and translation mode latched by the last SRTP. */
  get translationMode(): { rootTable: number; ttm: number; enabled: boolean } {
    return { rootTable: this.#rootBase, ttm: this.#ttm, enabled: this.#te }
  }

  // ------------------------------------------------------------------ faults

  /**
   * Primary fault logging (§7.1.3): the next record in round-robin order; when that record
   * still holds a fault the new one is lost and PFO is set.
   */
  #recordFault(reason: number, sid: number, pasid: number, iova: bigint, write: boolean): void {
    const i = this.#frNext
    const w = this.#frcd
    if (((w[4 * i + 3] as number) & Frcd.F) !== 0) {
      this.#fsts |= Fsts.PFO
      this.stats.faultsDropped++
      return
    }
    const hadPending = (this.#fstsValue() & Fsts.PPF) !== 0
    const addr = iova & ~0xfffn
    w[4 * i] = Number(addr & 0xffff_ffffn) >>> 0
    w[4 * i + 1] = Number(addr >> 32n) >>> 0
    w[4 * i + 2] = ((sid & 0xffff) | (pasid >= 0 ? Frcd.PP : 0)) >>> 0
    w[4 * i + 3] =
      ((reason & 0xff) |
        ((pasid >= 0 ? pasid & 0xf_ffff : 0) << Frcd.PV_SHIFT) |
        (write ? 0 : Frcd.T_READ) |
        Frcd.F) >>>
      0
    if (!hadPending) this.#fsts = (this.#fsts & ~(0xff << Fsts.FRI_SHIFT)) | (i << Fsts.FRI_SHIFT)
    this.#frNext = (i + 1) % this.#nfr
    this.stats.faults++
    this.#faultEvent()
  }

  #faultEvent(): void {
    if (this.#fectl & Fectl.IM) {
      this.#fectl |= Fectl.IP
      return
    }
    this.irq.fault?.()
  }

  /**
   * The context cache, for tools: each cached source ID with the words the hardware read
   * (the root-entry qword, then the context entry). Reading it changes nothing.
   */
  cachedContexts(): { readonly sid: number; readonly raw: Uint32Array }[] {
    const out: { sid: number; raw: Uint32Array }[] = []
    this.#ctxCache.forEach((c, sid) => {
      if (c !== undefined) out.push({ sid, raw: c.raw.slice() })
    })
    return out
  }

  /**
   * The PASID cache, for tools: each cached (source ID, PASID) with its DID and the words the
   * hardware read (the directory entry, then the PASID entry). Reading it changes nothing.
   */
  cachedPasidEntries(): {
    readonly sid: number
    readonly pasid: number
    readonly did: number
    readonly raw: Uint32Array
  }[] {
    return [...this.#peCache.values()].map((p) => ({
      sid: p.sid,
      pasid: p.pasid,
      did: p.did,
      raw: p.raw.slice(),
    }))
  }

  /** Decode the fault records that hold a fault, oldest first (tests, tools). */
  pendingFaults(): VtdFault[] {
    const out: VtdFault[] = []
    const start = (this.#fstsValue() >> Fsts.FRI_SHIFT) & 0xff
    for (let k = 0; k < this.#nfr; k++) {
      const i = (start + k) % this.#nfr
      const w = this.#frcd
      const d3 = w[4 * i + 3] as number
      if ((d3 & Frcd.F) === 0) continue
      const d2 = w[4 * i + 2] as number
      out.push({
        reason: d3 & 0xff,
        sid: d2 & 0xffff,
        pasid: d2 & Frcd.PP ? (d3 >>> Frcd.PV_SHIFT) & 0xf_ffff : null,
        addr: (BigInt(w[4 * i + 1] as number) << 32n) | BigInt(w[4 * i] as number),
        read: (d3 & Frcd.T_READ) !== 0,
      })
    }
    return out
  }

  // ------------------------------------------------------------------ structures in memory

  /** Root entry for `bus` then the scalable-mode context entry (§9.1, §9.4). */
  #readContext(sid: number): CachedContext | EntryFault {
    this.stats.contextFetches++
    const mem = this.memory
    const bus = sid >> 8
    const devfn = sid & 0xff
    const rootPa = this.#rootBase + bus * ROOT_ENTRY_SIZE + (devfn >= 0x80 ? 8 : 0)
    const root = mem.read64(rootPa)
    if ((root & 1n) === 0n) return { reason: Fr.ROOT_NOT_PRESENT, fpd: false }
    if ((root & 0xffen) !== 0n) return { reason: Fr.ROOT_RESERVED, fpd: false }
    const ctxPa = Number(root & Rtaddr.ADDR_MASK) + (devfn & 0x7f) * SM_CONTEXT_SIZE
    const raw = new Uint32Array(10)
    raw[0] = mem.read32(rootPa)
    raw[1] = mem.read32(rootPa + 4)
    for (let k = 0; k < 8; k++) raw[2 + k] = mem.read32(ctxPa + 4 * k)
    const lo = mem.read64(ctxPa)
    const hi = mem.read64(ctxPa + 8)
    const fpd = (lo & Ctx.FPD) !== 0n
    if ((lo & Ctx.P) === 0n) return { reason: Fr.CONTEXT_NOT_PRESENT, fpd: false }
    // Reserved: lo [8:5], hi [63:21], and the upper 128 bits.
    const upper = (raw[6] as number) | (raw[7] as number) | (raw[8] as number) | (raw[9] as number)
    if ((lo & 0x1e0n) !== 0n || hi >> 21n !== 0n || upper !== 0) {
      return { reason: Fr.CONTEXT_RESERVED, fpd }
    }
    const pdts = Number((lo >> Ctx.PDTS_SHIFT) & 7n)
    return {
      raw,
      fpd,
      dte: (lo & Ctx.DTE) !== 0n,
      paside: (lo & Ctx.PASIDE) !== 0n,
      pre: (lo & Ctx.PRE) !== 0n,
      maxPasid: 2 ** (pdts + 7) * 64,
      dirPfn: Number(lo >> 12n),
      ridPasid: Number(hi & Ctx.RID_PASID_MASK),
      staleReported: false,
    }
  }

  #context(sid: number, txn: DmaTransaction | null): CachedContext | EntryFault {
    const c = this.#ctxCache[sid]
    if (c === undefined) {
      const r = this.#readContext(sid)
      // Only present, well-formed entries are cached (CAP.CM = 0).
      if ('raw' in r && !(this.cap & Cap.CM)) this.#ctxCache[sid] = r
      return r
    }
    if (txn !== null && this.detectStale && !c.staleReported) this.#checkContext(sid, c, txn)
    return c
  }

  #checkContext(sid: number, c: CachedContext, txn: DmaTransaction): void {
    const mem = this.memory
    const devfn = sid & 0xff
    const rootPa = this.#rootBase + (sid >> 8) * ROOT_ENTRY_SIZE + (devfn >= 0x80 ? 8 : 0)
    // Peeks at the frames' words (a frame without storage reads as zeros): no storage is
    // given, and nothing is looked up per word.
    const rootPfn = Math.floor(rootPa / 4096)
    const rootWords = mem.peekWords(rootPfn)
    const ri = (rootPa - rootPfn * 4096) >>> 2
    const r0 = rootWords === null ? 0 : (rootWords[ri] as number)
    const r1 = rootWords === null ? 0 : (rootWords[ri + 1] as number)
    const ctxPa = r0 - (r0 & 0xfff) + r1 * 2 ** 32 + (devfn & 0x7f) * SM_CONTEXT_SIZE
    const ctxPfn = Math.floor(ctxPa / 4096)
    const ctxWords = mem.peekWords(ctxPfn)
    const ci = (ctxPa - ctxPfn * 4096) >>> 2
    for (let k = 0; k < 10; k++) {
      const now =
        k === 0 ? r0 : k === 1 ? r1 : ctxWords === null ? 0 : (ctxWords[ci + k - 2] as number)
      if (now !== c.raw[k]) {
        c.staleReported = true
        this.staleUses.push({
          cache: 'context',
          what: `${k < 2 ? 'root' : 'context'} entry word ${k < 2 ? k : k - 2} cached 0x${(c.raw[k] as number).toString(16)} but memory has 0x${now.toString(16)}`,
          missing: 'context-cache invalidation',
          sid,
          did: -1,
          pasid: txn.hasPasid ? txn.pasid : -1,
          iova: txn.iova,
          write: txn.write,
        })
        return
      }
    }
  }

  /** The PASID directory entry then the PASID table entry (§9.5, §9.6). */
  #readPasid(sid: number, ctx: CachedContext, pasid: number): CachedPasid | EntryFault {
    this.stats.pasidFetches++
    const mem = this.memory
    const dirPa = ctx.dirPfn * 4096 + (pasid >> 6) * PASID_DIR_ENTRY_SIZE
    const dir = mem.read64(dirPa)
    if ((dir & 1n) === 0n) return { reason: Fr.PASID_DIR_NOT_PRESENT, fpd: ctx.fpd }
    if ((dir & 0xffen) !== 0n) return { reason: Fr.PASID_DIR_RESERVED, fpd: ctx.fpd }
    const pePa = Number(dir & Pe.SSPTPTR_MASK) + (pasid & 63) * PASID_ENTRY_SIZE
    const v0 = mem.read64(pePa)
    const v1 = mem.read64(pePa + 8)
    const v2 = mem.read64(pePa + 16)
    const fpd = ctx.fpd || (v0 & Pe.FPD) !== 0n
    if ((v0 & Pe.P) === 0n) return { reason: Fr.PASID_NOT_PRESENT, fpd }
    const pgtt = Number((v0 & Pe.PGTT_MASK) >> Pe.PGTT_SHIFT)
    const aw = Number((v0 & Pe.AW_MASK) >> Pe.AW_SHIFT)
    const fspm = Number((v2 & Pe.FSPM_MASK) >> Pe.FSPM_SHIFT)
    const ssade = (v0 & Pe.SSADE) !== 0n
    const e = this.ecap
    const usesSs = pgtt === Pgtt.SS || pgtt === Pgtt.NESTED
    const usesFs = pgtt === Pgtt.FS || pgtt === Pgtt.NESTED
    let invalid = false
    if (pgtt === Pgtt.FS) invalid = !(e & Ecap.FSTS)
    else if (pgtt === Pgtt.SS) invalid = !(e & Ecap.SSTS)
    else if (pgtt === Pgtt.NESTED) invalid = !(e & Ecap.NEST)
    else if (pgtt === Pgtt.PT) invalid = !(e & Ecap.PT)
    else invalid = true
    if (usesSs && !((this.#sagaw >> aw) & 1)) invalid = true
    if (usesFs && (fspm > 1 || (fspm === 1 && !(this.cap & Cap.FL5LP)))) invalid = true
    if (invalid) return { reason: Fr.PASID_INVALID, fpd }
    if (ssade && !(e & Ecap.SSADS)) return { reason: Fr.PASID_RESERVED, fpd }
    if (usesSs && (v0 & Pe.SSPTPTR_MASK) === 0n) return { reason: Fr.SS_INVALID_ROOT, fpd }
    const raw = new Uint32Array(18)
    raw[0] = mem.read32(dirPa)
    raw[1] = mem.read32(dirPa + 4)
    for (let k = 0; k < 16; k++) raw[2 + k] = mem.read32(pePa + 4 * k)
    return {
      sid,
      pasid,
      raw,
      dirPa,
      pePa,
      pgtt,
      did: Number(v1 & Pe.DID_MASK),
      fpd,
      ssRoot: Number(v0 >> 12n),
      ssLevel: aw + 1,
      ssade,
      fsRoot: Number(v2 >> 12n),
      fsLevel: fspm === 1 ? 4 : 3,
      staleReported: false,
    }
  }

  #pasidEntry(
    sid: number,
    ctx: CachedContext,
    pasid: number,
    txn: DmaTransaction | null,
  ): CachedPasid | EntryFault {
    let pe = this.#peLast[sid]
    if (pe === undefined || pe.pasid !== pasid) {
      pe = this.#peCache.get(sid * 0x10_0000 + pasid)
      if (pe === undefined) {
        const r = this.#readPasid(sid, ctx, pasid)
        if (!('raw' in r)) return r
        pe = r
        if (!(this.cap & Cap.CM)) this.#peCache.set(sid * 0x10_0000 + pasid, pe)
        this.#peLast[sid] = pe
        return pe
      }
      this.#peLast[sid] = pe
    }
    if (txn !== null && this.detectStale && !pe.staleReported) this.#checkPasid(pe, txn)
    return pe
  }

  #checkPasid(pe: CachedPasid, txn: DmaTransaction): void {
    const mem = this.memory
    // Peeks, as in #checkContext: the directory entry's two words, then the entry's 16.
    const dirPfn = Math.floor(pe.dirPa / 4096)
    const dirWords = mem.peekWords(dirPfn)
    const di = (pe.dirPa - dirPfn * 4096) >>> 2
    const pePfn = Math.floor(pe.pePa / 4096)
    const peWords = mem.peekWords(pePfn)
    const pi = (pe.pePa - pePfn * 4096) >>> 2
    for (let k = 0; k < 18; k++) {
      const w = k < 2 ? dirWords : peWords
      const now = w === null ? 0 : (w[k < 2 ? di + k : pi + k - 2] as number)
      if (now !== pe.raw[k]) {
        pe.staleReported = true
        this.staleUses.push({
          cache: 'pasid',
          what: `${k < 2 ? 'PASID directory entry' : 'PASID entry'} word ${k < 2 ? k : k - 2} cached 0x${(pe.raw[k] as number).toString(16)} but memory has 0x${now.toString(16)}`,
          missing: 'PASID-cache invalidation',
          sid: pe.sid,
          did: pe.did,
          pasid: txn.hasPasid ? txn.pasid : -1,
          iova: txn.iova,
          write: txn.write,
        })
        return
      }
    }
  }

  // ------------------------------------------------------------------ translation

  translate(txn: DmaTransaction): boolean {
    this.stats.translations++
    if (!this.#te) {
      // Translation disabled: DMA is not remapped.
      txn.pa = txn.iovaPfn * 4096 + txn.offset
      txn.len = 4096 - txn.offset
      return true
    }
    if (this.#ttm === Ttm.ABORT_DMA) {
      txn.fault = 'blocked'
      return false
    }
    const sid = txn.rid
    const pasidTag = txn.hasPasid ? txn.pasid : -1
    if (this.#ttm !== Ttm.SCALABLE) {
      // Legacy-mode tables are not modelled: refuse the request as a malformed context.
      return this.#fault(txn, 'bad-entry', Fr.CONTEXT_INVALID, sid, pasidTag, false)
    }
    const ctx = this.#context(sid, txn)
    if (!('raw' in ctx))
      return this.#fault(txn, blockedOr(ctx.reason), ctx.reason, sid, pasidTag, ctx.fpd)
    let pasid: number
    if (txn.hasPasid) {
      if (!ctx.paside) return this.#fault(txn, 'blocked', Fr.PASIDE_CLEAR, sid, pasidTag, ctx.fpd)
      pasid = txn.pasid
    } else {
      pasid = ctx.ridPasid
    }
    if (pasid >= ctx.maxPasid) {
      return this.#fault(txn, 'blocked', Fr.PASID_TOO_LARGE, sid, pasidTag, ctx.fpd)
    }
    const pe = this.#pasidEntry(sid, ctx, pasid, txn)
    if (!('raw' in pe))
      return this.#fault(txn, blockedOr(pe.reason), pe.reason, sid, pasidTag, pe.fpd)
    if (pe.pgtt === Pgtt.PT) {
      txn.pa = txn.iovaPfn * 4096 + txn.offset
      txn.len = 4096 - txn.offset
      return true
    }
    const access = txn.write ? WRITE : READ
    if (ctx.dte) return this.#translateAts(txn, sid, pasidTag, pe, access)
    const e = this.#iotlbTranslate(txn, pe, access)
    if (e < 0) return false
    return this.#finish(txn, this.iotlb, e, access, sid, pe)
  }

  /**
   * An ATS device: its device TLB answers first; a miss is a translation request the
   * unit answers from its IOTLB or a walk, and the device caches the result (§4.2).
   */
  #translateAts(
    txn: DmaTransaction,
    sid: number,
    pasidTag: number,
    pe: CachedPasid,
    access: number,
  ): boolean {
    const dt = this.devtlb
    let d = dt.lookup(sid, pasidTag, txn.iovaPfn)
    if (d >= 0 && this.detectStale) this.#checkDevtlb(d, txn, pe)
    const needDirty =
      access === WRITE && d >= 0 && dt.dirty[d] === 0 && (dt.perm[d] as number) & WRITE
    if (d < 0 || needDirty) {
      const e = this.#iotlbTranslate(txn, pe, access)
      if (e < 0) return false
      const t = this.iotlb
      d = dt.fill(
        sid,
        pasidTag,
        0,
        t.vpn(e),
        t.sizeLg2(e),
        t.pa[e] as number,
        t.perm[e] as number,
        t.dirty[e] === 1,
      )
    }
    return this.#finish(txn, dt, d, access, sid, pe)
  }

  #finish(
    txn: DmaTransaction,
    cache: TranslationCache,
    e: number,
    access: number,
    sid: number,
    pe: CachedPasid,
  ): boolean {
    if (((cache.perm[e] as number) & access) === 0) {
      const reason = access === WRITE ? Fr.NO_WRITE : Fr.NO_READ
      return this.#fault(txn, 'permission', reason, sid, txn.hasPasid ? txn.pasid : -1, pe.fpd)
    }
    const within = (txn.iovaPfn - cache.vpn(e)) * 4096 + txn.offset
    txn.pa = (cache.pa[e] as number) * 4096 + within
    txn.len = (POW2[cache.sizeLg2(e)] as number) - within
    return true
  }

  /** IOTLB lookup, or a walk and a fill. @returns the entry, or -1 after a fault. */
  #iotlbTranslate(txn: DmaTransaction, pe: CachedPasid, access: number): number {
    const t = this.iotlb
    let e = t.lookup(pe.did, pe.pasid, txn.iovaPfn)
    if (e >= 0 && this.detectStale && !this.#upToDate(e, txn.iovaPfn, pe)) {
      this.#checkIotlb(e, txn, pe)
    }
    // A write through an entry cached clean goes back to memory to set D.
    if (e >= 0 && !(access === WRITE && t.dirty[e] === 0 && (t.perm[e] as number) & WRITE)) {
      return e
    }
    const tr = this.#tr
    this.stats.walks++
    this.#walk(pe, txn.iovaPfn, access, true, tr, txn)
    if (tr.fault !== 0) {
      txn.faultLevel = tr.faultLevel
      const kind =
        tr.fault === Fr.NO_READ || tr.fault === Fr.NO_WRITE
          ? 'permission'
          : tr.fault === Fr.FS_NON_CANONICAL || tr.fault === Fr.ADDRESS_BEYOND_MAX
            ? 'address-size'
            : tr.fault === Fr.FS_RESERVED || tr.fault === Fr.SS_RESERVED
              ? 'bad-entry'
              : 'translation'
      this.#fault(txn, kind, tr.fault, txn.rid, txn.hasPasid ? txn.pasid : -1, pe.fpd)
      return -1
    }
    const kind =
      pe.pgtt === Pgtt.FS ? TlbKind.FS : pe.pgtt === Pgtt.SS ? TlbKind.SS : TlbKind.NESTED
    e = t.fill(
      pe.did,
      pe.pasid,
      kind,
      tr.leafVpn,
      tr.sizeLg2,
      tr.leafPa,
      tr.perm,
      tr.dirty,
      tr.leafMid,
    )
    const records = this.#records
    if (records !== null) {
      // The fill walk, from the root, read the entries a check of a hit would read.
      const walker = this.#rootWalker
      if (this.detectStale && walker !== null) records.save(e, walker, txn.iovaPfn, pe)
      else records.clear(e)
    }
    return e
  }

  /**
   * Walk the tables of `pe` for IOVA page `ipfn`. With `update`, the hardware's A/D updates
   * land in memory; without it the walk only looks (the detector's comparison walk).
   * `out.fault` is 0 or a fault reason.
   */
  #walk(
    pe: CachedPasid,
    ipfn: number,
    access: number,
    update: boolean,
    out: Translation,
    txn: DmaTransaction | null = null,
  ): void {
    out.fault = 0
    out.faultLevel = -1
    out.leafMid = -1
    this.#rootWalker = null
    if (pe.pgtt === Pgtt.SS) {
      const ad = update && pe.ssade ? AD : 0
      this.#walkOne(pe, TlbKind.SS, pe.ssRoot, pe.ssLevel, ipfn, access, ad, update, out, txn)
      if (out.fault === 0 && pe.ssade === false) out.dirty = true
      return
    }
    if (pe.pgtt === Pgtt.FS) {
      this.#walkOne(
        pe,
        TlbKind.FS,
        pe.fsRoot,
        pe.fsLevel,
        ipfn,
        access,
        update ? AD : 0,
        update,
        out,
        txn,
      )
      return
    }
    // Nested: A/D always updated in first-stage entries.
    this.#resolveFault = 0
    this.#resolveRoot = pe.ssRoot
    this.#resolveLevel = pe.ssLevel
    this.#resolveAd = update && pe.ssade ? AD : 0
    this.#resolveCalls = 0
    const f = this.#fsWalker.walk(
      pe.fsRoot,
      pe.fsLevel,
      ipfn,
      access,
      update ? AD : 0,
      true,
      this.#resolve,
    )
    if (f.fault !== WalkFault.NONE) {
      out.fault = f.fault === WalkFault.TABLE_FETCH ? this.#resolveFault : fsFault(f.fault, access)
      out.faultLevel = f.level
      return
    }
    const fsSize = f.sizeLg2
    const fsPage = f.pagePfn
    const fsPerm = f.perm
    const fsDirty = f.dirty
    // The output of the first stage is guest-physical: translate it by the second stage.
    const s = this.#ssWalker.walk(
      pe.ssRoot,
      pe.ssLevel,
      fsPage,
      access,
      update && pe.ssade ? AD : 0,
    )
    if (s.fault !== WalkFault.NONE) {
      out.fault = ssFault(s.fault, access)
      out.faultLevel = s.level
      return
    }
    const size = Math.min(fsSize, s.sizeLg2)
    setLeaf(out, ipfn, size, s.pagePfn, fsPerm & s.perm, fsDirty && (!pe.ssade || s.dirty))
    out.leafMid = fsPage - (ipfn - out.leafVpn)
  }

  /**
   * A first- or second-stage walk with the paging-structure cache: a cached last-level
   * table for the 2 MiB region is used without reading the levels above it (§6.2.4); a
   * walk that reaches a level-0 table caches it.
   */
  #walkOne(
    pe: CachedPasid,
    kind: number,
    root: number,
    top: number,
    ipfn: number,
    access: number,
    ad: number,
    update: boolean,
    out: Translation,
    txn: DmaTransaction | null,
  ): void {
    const ss = kind === TlbKind.SS
    const psc = this.psc
    if (update) {
      const c = psc.lookup(pe.did, pe.pasid, ipfn)
      if (c >= 0 && psc.kind(c) === kind) {
        const table = psc.pa[c] as number
        if (txn !== null && this.detectStale) this.#checkPsc(pe, kind, root, top, ipfn, table, txn)
        const leafWalker = ss ? this.#ssWalker : this.#fsLeafWalker
        const r = leafWalker.walk(table, 0, ipfn & 511, access, ad)
        if (r.fault !== WalkFault.NONE) {
          out.fault = ss ? ssFault(r.fault, access) : fsFault(r.fault, access)
          out.faultLevel = 0
          return
        }
        setLeaf(out, ipfn, 12, r.pagePfn, r.perm, r.dirty)
        return
      }
    }
    const walker = ss ? this.#ssWalker : this.#fsWalker
    const r = walker.walk(root, top, ipfn, access, ad, true)
    if (r.fault !== WalkFault.NONE) {
      out.fault = ss ? ssFault(r.fault, access) : fsFault(r.fault, access)
      out.faultLevel = r.level
      return
    }
    setLeaf(out, ipfn, r.sizeLg2, r.pagePfn, r.perm, r.dirty)
    // A walk from the root: what it read can be recorded for the detector.
    this.#rootWalker = walker
    if (update && r.level === 0) {
      // The last-level table: the frame read at depth `top` (one entry per level).
      psc.fill(pe.did, pe.pasid, kind, ipfn - (ipfn % 512), 21, walker.readFrame(top), 0, false)
    }
  }

  /** Detector: does the cached last-level table still sit where memory leads? */
  #checkPsc(
    pe: CachedPasid,
    kind: number,
    root: number,
    top: number,
    ipfn: number,
    table: number,
    txn: DmaTransaction,
  ): void {
    this.#pscCalls = 0
    this.#pscTop = top
    this.#pscSeen = -1
    const walker = kind === TlbKind.SS ? this.#ssWalker : this.#fsWalker
    walker.walk(root, top, ipfn, 0, 0, false, this.#pscProbe)
    if (this.#pscSeen === table) return
    this.staleUses.push({
      cache: 'paging-structure',
      what: `caches the last-level table 0x${table.toString(16)} for the 2 MiB region of IOVA page 0x${ipfn.toString(16)}; memory leads to ${this.#pscSeen < 0 ? 'no last-level table' : `0x${this.#pscSeen.toString(16)}`} (a non-leaf invalidation, IH = 0, was needed)`,
      missing: kind === TlbKind.SS ? 'IOTLB invalidation' : 'PASID-based IOTLB invalidation',
      sid: txn.rid,
      did: pe.did,
      pasid: txn.hasPasid ? txn.pasid : -1,
      iova: txn.iova,
      write: txn.write,
    })
  }

  /**
   * Nested: the host page holding first-stage table page `gpfn`. The second stage must
   * grant read, and write because the walk sets A in first-stage entries.
   */
  #resolveTable(gpfn: number): number {
    const root = this.#resolveCalls++ === 0
    const ss = this.#ssWalker
    const ad = this.#resolveAd
    // Updating A in a first-stage entry is a write to guest memory (it dirties the page).
    const r = ss.walk(this.#resolveRoot, this.#resolveLevel, gpfn, ad ? READ | WRITE : READ, ad)
    if (r.fault === WalkFault.NONE) return r.pagePfn
    const readable =
      r.fault === WalkFault.PERMISSION &&
      ss.walk(this.#resolveRoot, this.#resolveLevel, gpfn, READ, 0).fault === WalkFault.NONE
    this.#resolveFault = readable
      ? Fr.NESTED_FS_WRITE
      : root
        ? Fr.NESTED_FS_ROOT_READ
        : Fr.NESTED_FS_READ
    return -1
  }

  #fault(
    txn: DmaTransaction,
    kind: NonNullable<DmaTransaction['fault']>,
    reason: number,
    sid: number,
    pasid: number,
    fpd: boolean,
  ): false {
    txn.fault = kind
    // Fault processing disabled: the request is aborted without a record (§7.1.1).
    if (!fpd) this.#recordFault(reason, sid, pasid, txn.iova, txn.write)
    return false
  }

  // ------------------------------------------------------------------ detector

  /**
   * True when IOTLB entry `e` was last found up to date for this IOVA page under this
   * cached PASID entry and the entries that walk read are unchanged: {@link #checkIotlb}
   * would find it up to date again.
   */
  #upToDate(e: number, ipfn: number, pe: CachedPasid): boolean {
    return this.#records?.unchanged(e, this.#ssWalker, ipfn, pe) === true
  }

  #checkIotlb(e: number, txn: DmaTransaction, pe: CachedPasid): void {
    const t = this.iotlb
    const p = this.#peek
    this.#walk(pe, txn.iovaPfn, 0, false, p)
    const what = differs(t, e, p, txn.iovaPfn, pe.ssade)
    if (what === null) {
      // One walker made the comparison walk (nested walks are not recorded).
      const records = this.#records
      if (records !== null && pe.pgtt !== Pgtt.NESTED) {
        records.save(e, pe.pgtt === Pgtt.SS ? this.#ssWalker : this.#fsWalker, txn.iovaPfn, pe)
      }
      return
    }
    // Which descriptor drops the entry: second-stage changes need an IOTLB invalidation,
    // first-stage ones (alone or under nesting) a PASID-based one.
    let missing: MissingDescriptor = 'IOTLB invalidation'
    if (pe.pgtt === Pgtt.FS) missing = 'PASID-based IOTLB invalidation'
    else if (pe.pgtt === Pgtt.NESTED) {
      const fsSide =
        p.fault === Fr.FS_NOT_PRESENT ||
        p.fault === Fr.FS_RESERVED ||
        p.fault === Fr.FS_NON_CANONICAL ||
        (p.fault === 0 &&
          p.leafMid + (txn.iovaPfn - p.leafVpn) !== (t.mid[e] as number) + (txn.iovaPfn - t.vpn(e)))
      if (fsSide) missing = 'PASID-based IOTLB invalidation'
    }
    this.staleUses.push({
      cache: 'iotlb',
      what,
      missing,
      sid: txn.rid,
      did: pe.did,
      pasid: txn.hasPasid ? txn.pasid : -1,
      iova: txn.iova,
      write: txn.write,
    })
  }

  #checkDevtlb(d: number, txn: DmaTransaction, pe: CachedPasid): void {
    const p = this.#peek
    this.#walk(pe, txn.iovaPfn, 0, false, p)
    const what = differs(this.devtlb, d, p, txn.iovaPfn, pe.ssade)
    if (what === null) return
    this.staleUses.push({
      cache: 'devtlb',
      what: `device TLB: ${what}`,
      missing: 'device-TLB invalidation',
      sid: txn.rid,
      did: pe.did,
      pasid: txn.hasPasid ? txn.pasid : -1,
      iova: txn.iova,
      write: txn.write,
    })
  }

  // ------------------------------------------------------------------ invalidation queue

  /** Fetch and execute descriptors from IQH to IQT (§6.5.2) while QI is on and no IQE. */
  #runQueue(): void {
    if ((this.#gsts & Gcmd.QIE) === 0 || this.#fsts & Fsts.IQE) return
    const dw = (this.#iqa & Iqa.DW) !== 0n
    const size = 4096 * 2 ** Number(this.#iqa & Iqa.QS_MASK)
    const step = dw ? QI_DESC_SIZE : 16
    const base = Number(this.#iqa & Iqa.ADDR_MASK)
    if (this.#iqt % step !== 0 || this.#iqt >= size) {
      this.#queueError(Iqei.TAIL)
      return
    }
    while (this.#iqh !== this.#iqt) {
      if (!this.#execute(base + this.#iqh, dw)) {
        // IQH keeps pointing at the offending descriptor; nothing more is fetched.
        this.#queueError(Iqei.INVALID)
        return
      }
      this.#iqh = (this.#iqh + step) % size
    }
  }

  #queueError(info: number): void {
    this.#fsts |= Fsts.IQE
    this.#iqer = BigInt(info)
    this.#faultEvent()
  }

  /** Execute one descriptor; false when it is invalid. */
  #execute(pa: number, dw: boolean): boolean {
    const mem = this.memory
    const q0 = mem.read64(pa)
    const q1 = mem.read64(pa + 8)
    const hi = dw ? mem.read64(pa + 16) | mem.read64(pa + 24) : 0n
    this.stats.descriptors++
    if (this.traceDescriptors) this.descriptorTrace.push({ q0, q1 })
    const type = Number(q0 & 0xfn)
    // Type bits [11:9] extend the type field; no descriptor uses them.
    if (q0 & 0xe00n) return false
    const gran = Number((q0 >> 4n) & 3n)
    const did = Number((q0 >> 16n) & 0xffffn)
    const pasid = Number((q0 >> 32n) & 0xf_ffffn)
    switch (type) {
      case Qi.CC: {
        if (!fits(q0, 0x3_ffff_ffff_003fn) || q1 !== 0n || hi !== 0n || gran === 0) return false
        if (gran === CcGran.DEVICE) {
          const sid = Number((q0 >> 32n) & 0xffffn)
          const fm = [0, 4, 6, 7][Number((q0 >> 48n) & 3n)] as number
          for (let s = sid & ~fm; s <= (sid | fm); s++) {
            if ((s & ~fm) === (sid & ~fm)) this.#ctxCache[s] = undefined
          }
        } else {
          // Global, or domain-selective (scalable-mode context entries carry no DID).
          this.#ctxCache.length = 0
        }
        return true
      }
      case Qi.IOTLB: {
        if (!fits(q0, 0xffff_00ffn) || hi !== 0n || gran === 0) return false
        if (gran === IotlbGran.PAGE) {
          const am = Number(q1 & 0x3fn)
          if (!fits(q1, ~0xf80n) || am > this.#mamv || !(this.cap & Cap.PSI)) return false
          const first = Number(q1 >> 12n)
          const sel = {
            kinds: 1 << TlbKind.SS,
            tag: did,
            pasid: -1,
            first: first - (first % 2 ** am),
            count: 2 ** am,
          }
          this.iotlb.invalidate(sel)
          // Nested entries are tagged by first-stage input addresses, not the
          // guest-physical range given: every nested entry of the domain goes (§6.5.2.3).
          this.iotlb.invalidate(all(1 << TlbKind.NESTED, did, -1))
          // IH = 0: the paging-structure caches go too.
          if ((q1 & 0x40n) === 0n) this.psc.invalidate(sel)
        } else if (gran === IotlbGran.DOMAIN) {
          if (q1 !== 0n) return false
          const sel = all((1 << TlbKind.SS) | (1 << TlbKind.NESTED), did, -1)
          this.iotlb.invalidate(sel)
          this.psc.invalidate(sel)
        } else {
          if (q1 !== 0n) return false
          this.iotlb.invalidateAll()
          this.psc.invalidateAll()
        }
        return true
      }
      case Qi.EIOTLB: {
        if (!fits(q0, 0xf_ffff_ffff_003fn) || hi !== 0n) return false
        const kinds = (1 << TlbKind.FS) | (1 << TlbKind.NESTED)
        if (gran === PiotlbGran.PAGE_IN_PASID) {
          const am = Number(q1 & 0x3fn)
          if (!fits(q1, ~0xf80n) || am > this.#mamv) return false
          const first = Number(q1 >> 12n)
          const sel = { kinds, tag: did, pasid, first: first - (first % 2 ** am), count: 2 ** am }
          this.iotlb.invalidate(sel)
          if ((q1 & 0x40n) === 0n) this.psc.invalidate(sel)
        } else if (gran === PiotlbGran.ALL_IN_PASID) {
          if (q1 !== 0n) return false
          this.iotlb.invalidate(all(kinds, did, pasid))
          this.psc.invalidate(all(kinds, did, pasid))
        } else {
          return false
        }
        return true
      }
      case Qi.PC: {
        if (!fits(q0, 0xf_ffff_ffff_003fn) || q1 !== 0n || hi !== 0n || gran === 2) return false
        for (const [key, pe] of this.#peCache) {
          const hit =
            gran === PcGran.GLOBAL ||
            (pe.did === did && (gran === PcGran.DOMAIN || pe.pasid === pasid))
          if (hit) {
            this.#peCache.delete(key)
            if (this.#peLast[pe.sid] === pe) this.#peLast[pe.sid] = undefined
          }
        }
        return true
      }
      case Qi.DIOTLB: {
        // PFSID [15:12] and [63:52], MIP [20:16], SID [47:32].
        if (!fits(q0, 0xfff0_ffff_001f_f00fn) || !fits(q1, ~0xffen) || hi !== 0n) return false
        const sid = Number((q0 >> 32n) & 0xffffn)
        this.#invalidateDevtlb(sid, NO_PASID, q1, (q1 & 1n) !== 0n)
        return true
      }
      case Qi.DEIOTLB: {
        // PFSID [15:12] and [63:52], MIP [8:4], SID [31:16], PASID [51:32].
        if (!fits(q0, 0xffff_ffff_ffff_f1ffn) || !fits(q1, ~0x7fen) || hi !== 0n) return false
        const sid = Number((q0 >> 16n) & 0xffffn)
        this.#invalidateDevtlb(sid, pasid, q1, (q1 & 0x800n) !== 0n)
        return true
      }
      case Qi.IEC:
        // Interrupt remapping is not modelled: the interrupt entry cache is empty.
        return fits(q0, 0xffff_f800_001fn) && q1 === 0n && hi === 0n
      case Qi.IWD: {
        if (!fits(q0, 0xffff_ffff_0000_00ffn) || !fits(q1, ~3n) || hi !== 0n) return false
        if (q0 & Iwd.SW) mem.write32(Number(q1 & ~3n), Number(q0 >> 32n))
        if (q0 & Iwd.IF) {
          this.#ics |= Ics.IWC
          this.irq.invalidation?.()
        }
        // PD: page requests are queued synchronously, nothing is in flight to drain.
        return true
      }
      case Qi.PGRP_RESP: {
        if (!fits(q0, 0xf_ffff_ffff_f01fn) || !fits(q1, 0xff8n)) return false
        const pasidPresent = (q0 & 0x10n) !== 0n
        const rid = Number((q0 >> 16n) & 0xffffn)
        const prg = Number((q1 >> 3n) & 0x1ffn)
        const code = Number((q0 >> 12n) & 0xfn)
        const key = groupKey(rid, pasidPresent ? pasid : -1, prg)
        this.#openGroups.delete(key)
        this.pageResponses.push({
          rid,
          pasid: pasidPresent ? pasid : null,
          prgIndex: prg,
          code,
          auto: false,
        })
        return true
      }
      default:
        return false
    }
  }

  /**
   * Device-TLB invalidation: with S = 0 one page, with S = 1 the lowest clear address bit
   * at or above 12, z, makes the range 2^(z + 1) bytes (§6.5.2.5).
   */
  #invalidateDevtlb(sid: number, pasid: number, q1: bigint, s: boolean): void {
    let first = Number(q1 >> 12n)
    let count = 1
    if (s) {
      let z = 12n
      while (z < 64n && ((q1 >> z) & 1n) === 1n) z++
      if (z >= 63n) {
        first = 0
        count = -1
      } else {
        count = 2 ** Number(z + 1n - 12n)
        first -= first % count
      }
    }
    this.devtlb.invalidate({ kinds: 0, tag: sid, pasid, first, count })
  }

  // ------------------------------------------------------------------ page requests

  /**
   * A device's page request (PCIe PRI) arriving at the unit (§7.5): checked against the
   * context entry, written to the page request queue at PQT, PPR set and the page request
   * event raised. A full queue sets PRO and drops the request (a last request in its
   * group gets a hardware response with Success, §7.5.1); a context without PRE gets an
   * Invalid Request response and a recorded fault.
   *
   * @returns whether the request was queued
   */
  pageRequest(req: PageRequest): boolean {
    this.stats.pageRequests++
    const pasid = req.pasid ?? -1
    const ctx = this.#te && this.#ttm === Ttm.SCALABLE ? this.#context(req.rid, null) : null
    const refuse = (reason: number, fpd: boolean): false => {
      if (!fpd) this.#recordFault(reason, req.rid, pasid, req.addr, req.write)
      if (req.lpig) this.#autoRespond(req, RespCode.INVALID)
      return false
    }
    if (ctx === null) return refuse(Fr.CONTEXT_INVALID, false)
    if (!('raw' in ctx)) return refuse(ctx.reason, ctx.fpd)
    if (!ctx.pre) return refuse(Fr.PRE_CLEAR, ctx.fpd)
    if (req.pasid !== undefined && !ctx.paside) return refuse(Fr.PASIDE_CLEAR, ctx.fpd)
    const size = 4096 * 2 ** Number(this.#pqa & 7n)
    const base = Number(this.#pqa & Iqa.ADDR_MASK)
    if (base === 0 || (this.#pqt + PRQ_DESC_SIZE) % size === this.#pqh || this.#prs & Prs.PRO) {
      this.#prs |= Prs.PRO
      if (req.lpig) this.#autoRespond(req, RespCode.SUCCESS)
      return false
    }
    const q0 =
      BigInt(PRQ_TYPE_PAGE_REQ) |
      (req.pasid !== undefined ? Prq.PASID_PRESENT : 0n) |
      (BigInt(req.rid & 0xffff) << Prq.RID_SHIFT) |
      (BigInt((req.pasid ?? 0) & 0xf_ffff) << Prq.PASID_SHIFT) |
      (req.exe ? Prq.EXE : 0n) |
      (req.priv ? Prq.PM : 0n)
    const q1 =
      (req.read ? Prq.RD : 0n) |
      (req.write ? Prq.WR : 0n) |
      (req.lpig ? Prq.LPIG : 0n) |
      (BigInt(req.prgIndex & 0x1ff) << Prq.PRG_SHIFT) |
      (req.addr & Prq.ADDR_MASK)
    const pa = base + this.#pqt
    this.memory.write64(pa, q0)
    this.memory.write64(pa + 8, q1)
    this.memory.write64(pa + 16, 0n)
    this.memory.write64(pa + 24, 0n)
    this.#pqt = (this.#pqt + PRQ_DESC_SIZE) % size
    if (req.lpig) this.#openGroups.add(groupKey(req.rid, pasid, req.prgIndex))
    this.#prs |= Prs.PPR
    if (this.#pectl & Fectl.IM) this.#pectl |= Fectl.IP
    else this.irq.pageRequest?.()
    return true
  }

  #autoRespond(req: PageRequest, code: number): void {
    this.pageResponses.push({
      rid: req.rid,
      pasid: req.pasid ?? null,
      prgIndex: req.prgIndex,
      code,
      auto: true,
    })
  }

  /** Whether a page request group still waits for its response. */
  groupPending(rid: number, pasid: number | null, prgIndex: number): boolean {
    return this.#openGroups.has(groupKey(rid, pasid ?? -1, prgIndex))
  }

  /** Decode the page requests between PQH and PQT without consuming them (tests, tools). */
  pendingPageRequests(): PageRequestRecord[] {
    const out: PageRequestRecord[] = []
    const size = 4096 * 2 ** Number(this.#pqa & 7n)
    const base = Number(this.#pqa & Iqa.ADDR_MASK)
    for (let h = this.#pqh; h !== this.#pqt; h = (h + PRQ_DESC_SIZE) % size) {
      out.push(decodePageRequest(this.memory.read64(base + h), this.memory.read64(base + h + 8)))
    }
    return out
  }
}

/** Decode a page request descriptor's first two qwords. */
export function decodePageRequest(q0: bigint, q1: bigint): PageRequestRecord {
  const pasidPresent = (q0 & Prq.PASID_PRESENT) !== 0n
  const pasid = Number((q0 >> Prq.PASID_SHIFT) & 0xf_ffffn)
  return {
    rid: Number((q0 >> Prq.RID_SHIFT) & 0xffffn),
    ...(pasidPresent ? { pasid } : {}),
    pasidPresent,
    addr: q1 & Prq.ADDR_MASK,
    read: (q1 & Prq.RD) !== 0n,
    write: (q1 & Prq.WR) !== 0n,
    exe: (q0 & Prq.EXE) !== 0n,
    priv: (q0 & Prq.PM) !== 0n,
    lpig: (q1 & Prq.LPIG) !== 0n,
    prgIndex: Number((q1 >> Prq.PRG_SHIFT) & 0x1ffn),
  }
}

function groupKey(rid: number, pasid: number, prg: number): string {
  return `${rid}:${pasid}:${prg}`
}

/** The value has no bit outside `mask`. */
function fits(v: bigint, mask: bigint): boolean {
  return (v & ~mask & 0xffff_ffff_ffff_ffffn) === 0n
}

function all(kinds: number, tag: number, pasid: number) {
  return { kinds, tag, pasid, first: 0, count: -1 }
}

/** Context and PASID faults that mean "no translation configured" read as blocked. */
function blockedOr(reason: number): NonNullable<DmaTransaction['fault']> {
  switch (reason) {
    case Fr.ROOT_NOT_PRESENT:
    case Fr.CONTEXT_NOT_PRESENT:
    case Fr.PASID_DIR_NOT_PRESENT:
    case Fr.PASID_NOT_PRESENT:
      return 'blocked'
    default:
      return 'bad-entry'
  }
}

function ssFault(f: number, access: number): number {
  switch (f) {
    case WalkFault.PERMISSION:
      return access === WRITE ? Fr.NO_WRITE : Fr.NO_READ
    case WalkFault.RESERVED:
      return Fr.SS_RESERVED
    case WalkFault.RANGE:
      return Fr.ADDRESS_BEYOND_MAX
    default:
      return Fr.SS_NOT_PRESENT
  }
}

function fsFault(f: number, access: number): number {
  switch (f) {
    case WalkFault.PERMISSION:
      return access === WRITE ? Fr.NO_WRITE : Fr.NO_READ
    case WalkFault.RESERVED:
      return Fr.FS_RESERVED
    case WalkFault.RANGE:
      return Fr.FS_NON_CANONICAL
    default:
      return Fr.FS_NOT_PRESENT
  }
}

function setLeaf(
  out: Translation,
  ipfn: number,
  sizeLg2: number,
  pagePfn: number,
  perm: number,
  dirty: boolean,
): void {
  const within = sizeLg2 === 12 ? 0 : ipfn % (POW2[sizeLg2 - 12] as number)
  out.leafVpn = ipfn - within
  out.leafPa = pagePfn - within
  out.sizeLg2 = sizeLg2
  out.perm = perm
  out.dirty = dirty
}

/** How a cached leaf differs from a fresh look-only walk (any access), or null. */
function differs(
  t: TranslationCache,
  e: number,
  p: Translation,
  ipfn: number,
  tracksDirty: boolean,
): string | null {
  const pa = t.pa[e] as number
  if (p.fault !== 0) {
    return `caches IOVA page 0x${ipfn.toString(16)} → 0x${pa.toString(16)} but the tables no longer map it (fault 0x${p.fault.toString(16)})`
  }
  if (p.leafPa !== pa || p.sizeLg2 !== t.sizeLg2(e) || p.leafVpn !== t.vpn(e)) {
    return `caches a 2^${t.sizeLg2(e)} leaf at 0x${pa.toString(16)}, memory has a 2^${p.sizeLg2} leaf at 0x${p.leafPa.toString(16)}`
  }
  if (p.perm !== t.perm[e]) {
    return `caches permissions ${t.perm[e]}, the tables now grant ${p.perm}`
  }
  if (tracksDirty && t.dirty[e] === 1 && !p.dirty) {
    return 'caches the leaf as dirty but its D bit was cleared: writes will not be logged'
  }
  return null
}

/**
 * The Linux arm-smmu-v3 driver (`drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c`,
 * `arm-smmu-v3-iommufd.c`) over the hardware model: it probes the SMMU from its ID
 * registers, builds the stream table, CD tables and queues in memory, and talks to the
 * SMMU only through MMIO, commands and the structures in memory, as the kernel does.
 *
 * What it models of 7.2: the command queue with its batches and CMD_SYNC completion (MSI
 * polling on coherent SMMUs, else SEV), the CMDQ error recovery (an illegal command is
 * replaced by a CMD_SYNC), the event and PRI queue threads; the hitless STE/CD writer;
 * stage-1 (ASID) and stage-2 (VMID) paging domains from io-pgtable ARM LPAE, the identity
 * and blocked domains, DIRTY_TRACKING (HTTU dirty state through CD.HA/HD), NEST_PARENT,
 * PASID attach through the CD table, ATS with its ATC invalidation ordering, and the
 * per-domain invalidation arrays that drive every TLBI and ATC_INV; and the vSMMU on core's
 * vIOMMU contract (nested domains from a guest vSTE, vDEVICEs, guest command invalidation,
 * guest-stage events to the vEVENTQ).
 *
 * @module
 */

import {
  copyStructFromFullUserArray,
  copyStructFromUser,
  type DirtyOps,
  DomainFeature,
  type DomainOps,
  DomainType,
  type Driver,
  defineDriver,
  FramePurpose,
  IotlbGather as Gather,
  HwInfoType,
  HwptAllocFlags,
  HwptDataType,
  IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE,
  IOMMU_FAULT_PAGE_REQUEST_PASID_VALID,
  IOMMU_FAULT_PERM_EXEC,
  IOMMU_FAULT_PERM_PRIV,
  IOMMU_FAULT_PERM_READ,
  IOMMU_FAULT_PERM_WRITE,
  IommuCap,
  IommuDomain,
  IommuError,
  type IommufdVdevice,
  type IommufdViommu,
  IommuPageResponseCode,
  type IommuResvRegion,
  type IopfFault,
  IopfQueue,
  type IotlbGather,
  iommufdViommuFindDev,
  iommufdViommuGetVdevId,
  iommufdViommuReportEvent,
  iopfFault,
  type Machine,
  type PageResponse,
  type PciDevice,
  Prot,
  ResvType,
  type UnitContext,
  type UserData,
  type UserDataArray,
  type ViommuOps,
} from '@iommu/core'
import {
  type ArmLpaeConfig,
  type ArmLpaeParams,
  armLpae,
  IoPgtableQuirk,
  PageTable,
  pageTableDirtyOps,
  pageTableDomainOps,
} from '@iommu/io-pgtable'
import {
  atcInvToCmd,
  type Command,
  cmdAtcInvAll,
  cmdCfgiAll,
  cmdCfgiCd,
  cmdCfgiSte,
  cmdOp,
  cmdPrefetchCfg,
  cmdPriResp,
  cmdResume,
  cmdSync,
  cmdTlbi,
  writeCommand,
} from './cmds.ts'
import {
  type Entry,
  type EntryStore,
  type EntryWriterOps,
  emptyEntry,
  Feat,
  getCdUsed,
  getSteUpdateSafe,
  getSteUsed,
  makeAbortSte,
  makeBypassSte,
  makeCdtableSte,
  makeS1Cd,
  makeS2DomainSte,
  type S1TableCfg,
  type S2TableCfg,
  writeEntry,
} from './entries.ts'
import {
  Cd,
  Cmd,
  CmdqErr,
  Cr0,
  Cr2,
  decodeEvent,
  decodePriRequest,
  Eats,
  EvtId,
  fieldGet,
  fieldPrep,
  Gbpa,
  Gerror,
  Idr0,
  Idr1,
  Idr3,
  Idr5,
  Iidr,
  IrqCtrl,
  Mmio,
  Op,
  type PriRequest,
  PriResp,
  Queue,
  Resume,
  S1Dss,
  S1Fmt,
  type SmmuEvent,
  Ste,
  SteCfg,
  Strtab,
  SyncCs,
} from './hw/regs.ts'
import { SmmuV3Hw, type SmmuV3HwConfig } from './hw/smmu.ts'
import {
  type Inv,
  type Invs,
  InvType,
  inv,
  invsMerge,
  invsNext,
  invsOf,
  invsPurge,
  invsUnref,
  isAts,
} from './invs.ts'
import {
  convertUserCmd,
  IOMMU_VEVENTQ_TYPE_ARM_SMMUV3,
  IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3,
  IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
  makeNestedDomainSte,
  validateVste,
} from './vsmmu.ts'

/** The software-managed MSI window (`MSI_IOVA_BASE`, `MSI_IOVA_LENGTH`). */
export const MSI_IOVA_BASE = 0x800_0000n
export const MSI_IOVA_LENGTH = 0x10_0000n

/** The CPU's virtual address bits the S1 input size is capped to (`VA_BITS`). */
const VA_BITS = 48
/** `CMDQ_BATCH_ENTRIES` (BITS_PER_LONG). */
const CMDQ_BATCH_ENTRIES = 64
/** Queue size caps (`*_MAX_SZ_SHIFT` with 4 KiB pages and MAX_PAGE_ORDER 10). */
const CMDQ_MAX_SZ_SHIFT = 18
const EVTQ_MAX_SZ_SHIFT = 17
const PRIQ_MAX_SZ_SHIFT = 18
/** `ARM_LPAE_GRANULE` of the 4 KiB tables the driver builds. */
const GRANULE = 4096
/** What `get_viommu_size` answers for an ARM_SMMUV3 vIOMMU (`sizeof(struct arm_vsmmu)`). */
const VSMMU_SIZE = 64

/** `ARM_SMMU_OPT_*`. */
export const Opt = {
  SKIP_PREFETCH: 1 << 0,
  PAGE0_REGS_ONLY: 1 << 1,
  MSIPOLL: 1 << 2,
  CMDQ_FORCE_SYNC: 1 << 3,
} as const

/** Options of {@link smmuv3}. */
export interface SmmuV3Options {
  /** Hardware configuration of units whose `createMachine` entry gives none. */
  readonly hw?: SmmuV3HwConfig
  /**
   * Invalidate the TLB after `read_and_clear_dirty` cleared dirty state. 7.2 does not: its
   * `iotlb_sync` returns at once for a gather without a page size, which is what the dirty
   * bitmap records into, so a leaf cached writable-dirty keeps absorbing writes without
   * setting its descriptor dirty again — lost dirty pages, which the hardware model's
   * detector reports. `true` gives the behaviour the architecture needs, for comparison.
   * Default false (the kernel's).
   */
  readonly flushAfterDirtyClear?: boolean
}

/**
 * Test-only switches that remove one invalidation from the driver's path, so that tests
 * can show the hardware model catching it. Never set outside tests.
 */
export interface SmmuV3TestHooks {
  /** Skip the TLBIs of `iotlb_sync` (unmap flushes). */
  skipIotlbSync: boolean
  /** Send the STE writer's CMD_SYNC without its CFGI_STE. */
  skipCfgiSte: boolean
  /** Send the CD writer's CMD_SYNC without its CFGI_CDs. */
  skipCfgiCd: boolean
}

/** An event the driver's event thread read, and whether a handler took it. */
export interface SmmuEventRecord {
  readonly event: SmmuEvent
  readonly handled: boolean
}

/** The driver's view of one queue (`struct arm_smmu_queue` + `llq`). */
interface SwQueue {
  readonly pa: number
  readonly shift: number
  readonly entryBytes: number
  prod: number
  cons: number
}

/** Per-SMMU driver state (`struct arm_smmu_device`). */
interface SmmuDevice {
  readonly hw: SmmuV3Hw
  readonly index: number
  features: number
  options: number
  readonly oas: number
  readonly pgsizeBitmap: bigint
  readonly asidBits: number
  readonly vmidBits: number
  readonly ssidBits: number
  readonly sidBits: number
  cmdq: SwQueue
  evtq: SwQueue
  priq: SwQueue
  strtab: {
    readonly twoLevel: boolean
    readonly basePa: number
    readonly numEnts: number
    readonly l2: (number | undefined)[]
  }
  readonly vmids: Set<number>
  readonly streams: Map<number, Master>
  readonly eventLog: SmmuEventRecord[]
  readonly priLog: PriRequest[]
  /** `smmu->evtq.iopf`: the IOPF queue of stalled faults (SMMUs that can stall). */
  readonly iopfQueue: IopfQueue | null
  cmdqTimeouts: number
  cmdqSkipped: number
  evtqOverflows: number
  priqOverflows: number
}

/** A master's CD table (`struct arm_smmu_ctx_desc_cfg`). */
interface CdTable {
  allocated: boolean
  /** `cdtab_dma`: the linear table or the level-1 table. */
  pa: number
  frames: number
  /** Level-2 tables of a two-level table, by level-1 index. */
  readonly l2: (number | undefined)[]
  usedSsids: number
  inSte: boolean
  s1fmt: number
  s1cdmax: number
}

/** Per-device driver state (`struct arm_smmu_master`). */
interface Master {
  readonly smmu: SmmuDevice
  readonly dev: PciDevice
  readonly streams: readonly number[]
  readonly cdTable: CdTable
  atsEnabled: boolean
  steAtsEnabled: boolean
  readonly stallEnabled: boolean
  /** Domains with a fault handler attached (`iopf_refcount`). */
  iopfRefcount: number
  readonly atsAlwaysOn: boolean
  ssidBits: number
  /** The vIOMMU and vSID of a nested master, for event forwarding (`master->vmaster`). */
  vmaster: Vmaster | null
}

/** A vIOMMU's driver state (`struct arm_vsmmu`). */
interface Vsmmu {
  readonly core: IommufdViommu
  readonly smmu: SmmuDevice
  readonly s2Parent: SmmuDomain
  /** The parent's VMID, shared by every vIOMMU on it. */
  readonly vmid: number
}

/** `struct arm_smmu_vmaster`. */
interface Vmaster {
  readonly vsmmu: Vsmmu
  readonly vsid: number
}

/** A domain on a master (`struct arm_smmu_master_domain`). */
interface MasterDomain {
  readonly master: Master
  readonly domain: IommuDomain
  readonly ssid: number
  readonly nestedAtsFlush: boolean
  /** This attachment took an IOPF reference (`using_iopf`). */
  usingIopf: boolean
}

/** The domain stages (`enum arm_smmu_domain_stage`). */
export const DomainStage = { S1: 0, S2: 1 } as const

/** An SMMUv3 paging domain (`struct arm_smmu_domain`). */
export class SmmuDomain extends IommuDomain {
  /** The SMMU the domain was finalised for. */
  smmu: SmmuDevice | null = null
  pt: PageTable<ArmLpaeConfig, ArmLpaeParams> | null = null
  stage: number = DomainStage.S1
  /** Stage 1: the ASID; stage 2: the VMID. */
  asid = 0
  vmid = 0
  /** Every invalidation of the domain reaches these (`smmu_domain->invs`). */
  invs: Invs = invsOf([])
  readonly devices: MasterDomain[] = []
  nrAtsMasters = 0
  enforceCoherency = false
  nestParent = false
}

/**
 * A nested domain from a guest's vSTE (`struct arm_smmu_nested_domain`): the guest owns the
 * CD table S1ContextPtr names (an IPA) and every substream in it.
 */
export class SmmuNestedDomain extends IommuDomain {
  /** The vSTE's qwords 0 and 1, EATS removed. */
  readonly ste: readonly [bigint, bigint]
  /** The guest asked for ATS (Config = S1 with EATS = 1). */
  readonly enableAts: boolean
  /** @internal the vIOMMU it was allocated on. */
  readonly vsmmu: Vsmmu

  constructor(vsmmu: Vsmmu, ste: readonly [bigint, bigint], enableAts: boolean, ops: DomainOps) {
    super({ type: DomainType.NESTED, ops: ops as DomainOps<never> })
    this.vsmmu = vsmmu
    this.ste = ste
    this.enableAts = enableAts
  }
}

/** The state of one attach (`struct arm_smmu_attach_state`). */
interface AttachState {
  readonly oldDomain: IommuDomain | null
  readonly master: Master
  cdNeedsAts: boolean
  disableAts: boolean
  readonly ssid: number
  atsEnabled: boolean
  vmaster: Vmaster | null
  newInvst: { domain: SmmuDomain; oldInvs: Invs; newInvs: Invs } | null
  oldInvst: { domain: SmmuDomain; oldInvs: Invs; build: Invs } | null
}

interface SmmuCaps {
  readonly dirtyTracking: true
  readonly nesting: true
  readonly pasid: true
  readonly enforceCacheCoherency: true
  readonly deferredFlush: true
  readonly iopf: true
}

const testHooks = new WeakMap<Driver, SmmuV3TestHooks>()

/** The test-only switches of a driver made by {@link smmuv3}. */
export function smmuv3TestHooks(driver: Driver): SmmuV3TestHooks {
  const h = testHooks.get(driver)
  if (h === undefined) throw new IommuError('EINVAL', `${driver.name} is not an SMMUv3 driver`)
  return h
}

/** The SMMU a device sits behind (for tests and tools). */
export function smmuv3UnitOf(dev: PciDevice): SmmuV3Hw {
  const u = dev.iommu?.unit ?? dev.unit
  if (!(u instanceof SmmuV3Hw))
    throw new IommuError('ENODEV', `${dev.name} is not behind an SMMUv3`)
  return u
}

function masterOf(dev: PciDevice): Master {
  const m = dev.iommu?.priv
  if (m === null || m === undefined)
    throw new IommuError('ENODEV', `${dev.name} not probed by smmuv3`)
  return m as Master
}

/** The events the driver's event thread consumed from the SMMU a device sits behind. */
export function smmuv3EventLog(dev: PciDevice): readonly SmmuEventRecord[] {
  return masterOf(dev).smmu.eventLog
}

/** The PRI requests the driver's PRI thread consumed from the SMMU a device sits behind. */
export function smmuv3PriLog(dev: PciDevice): readonly PriRequest[] {
  return masterOf(dev).smmu.priLog
}

/** What the driver found when it probed the SMMU behind a device (tests and tools). */
export function smmuv3Features(dev: PciDevice): { features: number; options: number; oas: number } {
  const s = masterOf(dev).smmu
  return { features: s.features, options: s.options, oas: s.oas }
}

/** The master's CD table as the driver keeps it (tests and tools). */
export function smmuv3CdTable(dev: PciDevice): {
  pa: number
  s1fmt: number
  s1cdmax: number
  usedSsids: number
} {
  const t = masterOf(dev).cdTable
  return { pa: t.pa, s1fmt: t.s1fmt, s1cdmax: t.s1cdmax, usedSsids: t.usedSsids }
}

const U64 = (1n << 64n) - 1n

function ilog2(x: number): number {
  return 31 - Math.clz32(x)
}

function lowestBitLg2(x: bigint): number {
  let s = 0
  while (((x >> BigInt(s)) & 1n) === 0n && s < 64) s++
  return s
}

/** Queue pointer helpers (index plus wrap bit). */
function ptr(v: number, shift: number): number {
  return v & ((2 << shift) - 1)
}
function idx(v: number, shift: number): number {
  return v & ((1 << shift) - 1)
}
function incN(v: number, shift: number, n: number): number {
  return (ptr(v, shift) + n) & ((2 << shift) - 1)
}
function used(prod: number, cons: number, shift: number): number {
  return (ptr(prod, shift) - ptr(cons, shift) + (2 << shift)) % (2 << shift)
}

/**
 * The ARM SMMUv3 driver. Each call makes a separate driver (registered once per machine);
 * every `createMachine` entry with it brings up one SMMU.
 */
export function smmuv3(options: SmmuV3Options = {}): Driver<SmmuCaps> {
  const hooks: SmmuV3TestHooks = { skipIotlbSync: false, skipCfgiSte: false, skipCfgiCd: false }
  const smmus: SmmuDevice[] = []
  // The ASID space is global (`arm_smmu_asid_xa`).
  const asids = new Map<number, SmmuDomain>()
  let machineRef: Machine | null = null

  const smmuAt = (index: number): SmmuDevice => smmus[index] as SmmuDevice

  // ---------------------------------------------------------------- command queue

  /**
   * arm_smmu_cmdq_issue_cmdlist(): copy the commands (and a CMD_SYNC) into the queue,
   * publish PROD, and for a sync wait for its completion: the MSI write of 0 over the
   * CMD_SYNC itself (MSIPOLL) or CONS passing it.
   *
   * @returns 0, or ETIMEDOUT when the queue is stuck (the kernel logs it)
   */
  const issueCmdlist = (
    smmu: SmmuDevice,
    cmds: readonly Command[],
    sync: boolean,
  ): 0 | 'ETIMEDOUT' => {
    const q = smmu.cmdq
    const hw = smmu.hw
    const mem = hw.memory
    const n = cmds.length + (sync ? 1 : 0)
    const size = 1 << q.shift
    if (size - used(q.prod, q.cons, q.shift) < n) {
      q.cons = ptr(hw.readReg(Mmio.CMDQ_CONS), q.shift)
      if (size - used(q.prod, q.cons, q.shift) < n) {
        smmu.cmdqTimeouts++
        return 'ETIMEDOUT'
      }
    }
    let prod = q.prod
    for (const c of cmds) {
      writeCommand(mem, q.pa + idx(prod, q.shift) * 16, c)
      prod = incN(prod, q.shift, 1)
    }
    let syncPa = -1
    if (sync) {
      syncPa = q.pa + idx(prod, q.shift) * 16
      const msi = (smmu.options & Opt.MSIPOLL) !== 0
      writeCommand(mem, syncPa, cmdSync(msi ? SyncCs.IRQ : SyncCs.SEV, msi ? BigInt(syncPa) : 0n))
      prod = incN(prod, q.shift, 1)
    }
    q.prod = prod
    hw.writeReg(Mmio.CMDQ_PROD, prod)
    q.cons = ptr(hw.readReg(Mmio.CMDQ_CONS), q.shift)
    if (sync) {
      const done =
        smmu.options & Opt.MSIPOLL ? mem.read32(syncPa) === 0 : used(prod, q.cons, q.shift) === 0
      if (!done) {
        smmu.cmdqTimeouts++
        return 'ETIMEDOUT'
      }
    }
    return 0
  }

  const issueCmd = (smmu: SmmuDevice, c: Command) => issueCmdlist(smmu, [c], false)
  const issueCmdWithSync = (smmu: SmmuDevice, c: Command) => issueCmdlist(smmu, [c], true)

  /** `struct arm_smmu_cmdq_batch`. */
  interface Batch {
    cmds: Command[]
  }

  /** arm_smmu_cmdq_batch_add_cmd(): a full batch goes out without a sync first. */
  const batchAdd = (smmu: SmmuDevice, b: Batch, c: Command) => {
    const forceSync =
      b.cmds.length === CMDQ_BATCH_ENTRIES - 1 && (smmu.options & Opt.CMDQ_FORCE_SYNC) !== 0
    if (forceSync) {
      issueCmdlist(smmu, b.cmds, true)
      b.cmds = []
    }
    if (b.cmds.length === CMDQ_BATCH_ENTRIES) {
      issueCmdlist(smmu, b.cmds, false)
      b.cmds = []
    }
    b.cmds.push(c)
  }

  const batchSubmit = (smmu: SmmuDevice, b: Batch) => issueCmdlist(smmu, b.cmds, true)

  /**
   * __arm_smmu_cmdq_skip_err(): on CERROR_ILL replace the command at CONS with a CMD_SYNC
   * (the issuer is not told); abort and ATC-timeout errors are retried as they are.
   */
  const skipErr = (smmu: SmmuDevice) => {
    const hw = smmu.hw
    const cons = hw.readReg(Mmio.CMDQ_CONS)
    const err = (cons >>> Queue.CONS_ERR_SHIFT) & 0x7f
    if (err === CmdqErr.NONE || err === CmdqErr.ABT || err === CmdqErr.ATC_INV_SYNC) return
    const q = smmu.cmdq
    writeCommand(hw.memory, q.pa + idx(cons, q.shift) * 16, cmdSync(SyncCs.SEV, 0n))
    smmu.cmdqSkipped++
  }

  /** arm_smmu_gerror_handler(). */
  const gerrorHandler = (smmu: SmmuDevice) => {
    const hw = smmu.hw
    const gerror = hw.readReg(Mmio.GERROR)
    const active = gerror ^ hw.readReg(Mmio.GERRORN)
    if (!(active & Gerror.ERR_MASK)) return
    if (active & Gerror.SFM_ERR) hw.writeReg(Mmio.CR0, 0)
    if (active & Gerror.CMDQ_ERR) skipErr(smmu)
    hw.writeReg(Mmio.GERRORN, gerror)
  }

  // ---------------------------------------------------------------- event and PRI queues

  /** Read one entry at CONS and move CONS on (`queue_remove_raw`). */
  const queueRemove = (smmu: SmmuDevice, q: SwQueue, consReg: number): bigint[] | null => {
    if (used(q.prod, q.cons, q.shift) === 0) return null
    const pa = q.pa + idx(q.cons, q.shift) * q.entryBytes
    const out: bigint[] = []
    for (let i = 0; i < q.entryBytes / 8; i++) out.push(smmu.hw.memory.read64(pa + 8 * i))
    q.cons = (q.cons & Queue.OVERFLOW_FLAG) | incN(q.cons, q.shift, 1)
    smmu.hw.writeReg(consReg, q.cons)
    return out
  }

  /** `queue_sync_prod_in`: true when the overflow flag moved (entries were lost). */
  const syncProdIn = (smmu: SmmuDevice, q: SwQueue, prodReg: number): boolean => {
    const prod = smmu.hw.readReg(prodReg)
    const overflow = (prod & Queue.OVERFLOW_FLAG) !== (q.prod & Queue.OVERFLOW_FLAG)
    q.prod = prod
    return overflow
  }

  /** `queue_sync_cons_ovf`: acknowledge an overflow. */
  const syncConsOvf = (smmu: SmmuDevice, q: SwQueue, consReg: number) => {
    if ((q.prod & Queue.OVERFLOW_FLAG) === (q.cons & Queue.OVERFLOW_FLAG)) return
    q.cons = (q.prod & Queue.OVERFLOW_FLAG) | ptr(q.cons, q.shift)
    smmu.hw.writeReg(consReg, q.cons)
  }

  /** arm_smmu_handle_event(): the events a handler may take, for a known stream. */
  const handleEvent = (smmu: SmmuDevice, evt: SmmuEvent): boolean => {
    switch (evt.id) {
      case EvtId.C_BAD_STE:
      case EvtId.F_STREAM_DISABLED:
      case EvtId.C_BAD_SUBSTREAMID:
      case EvtId.C_BAD_CD:
      case EvtId.F_TRANSLATION:
      case EvtId.F_ADDR_SIZE:
      case EvtId.F_ACCESS:
      case EvtId.F_PERMISSION:
        break
      default:
        return false
    }
    const master = smmu.streams.get(evt.sid)
    if (master === undefined) return false
    try {
      if (evt.stall) {
        // A stalled transaction is an I/O page fault: STAG is the group, the access the perm.
        let perm = evt.read ? IOMMU_FAULT_PERM_READ : IOMMU_FAULT_PERM_WRITE
        if (evt.instruction) perm |= IOMMU_FAULT_PERM_EXEC
        if (evt.privileged) perm |= IOMMU_FAULT_PERM_PRIV
        const fault = iopfFault({
          flags:
            IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE |
            (evt.ssv ? IOMMU_FAULT_PAGE_REQUEST_PASID_VALID : 0),
          grpid: evt.stag,
          perm,
          addr: evt.addr,
          pasid: evt.ssv ? evt.ssid : 0,
        })
        if (machineRef === null) return false
        machineRef.iommu.iommuReportDeviceFault(master.dev, fault)
        return true
      }
      // A nested master's guest-stage events go to its vIOMMU; the rest are the host's.
      if (master.vmaster === null || evt.s2) return false
      reportVmasterEvent(master.vmaster, evt.raw)
      return true
    } catch {
      return false
    }
  }

  /** arm_smmu_evtq_thread(). */
  const evtqThread = (smmu: SmmuDevice) => {
    const q = smmu.evtq
    do {
      for (;;) {
        const raw = queueRemove(smmu, q, Mmio.EVTQ_CONS)
        if (raw === null) break
        const event = decodeEvent(raw as [bigint, bigint, bigint, bigint])
        smmu.eventLog.push({ event, handled: handleEvent(smmu, event) })
      }
      if (syncProdIn(smmu, q, Mmio.EVTQ_PROD)) smmu.evtqOverflows++
    } while (used(q.prod, q.cons, q.shift) !== 0)
    syncConsOvf(smmu, q, Mmio.EVTQ_CONS)
  }

  /** arm_smmu_priq_thread(): 7.2 does not serve PRI; the last request of a group is denied. */
  const priqThread = (smmu: SmmuDevice) => {
    const q = smmu.priq
    do {
      for (;;) {
        const raw = queueRemove(smmu, q, Mmio.PRIQ_CONS)
        if (raw === null) break
        const req = decodePriRequest(raw[0] as bigint, raw[1] as bigint)
        smmu.priLog.push(req)
        if (req.last) {
          issueCmd(smmu, cmdPriResp(req.sid, req.ssid, req.ssidValid, req.grpid, PriResp.DENY))
        }
      }
      if (syncProdIn(smmu, q, Mmio.PRIQ_PROD)) smmu.priqOverflows++
    } while (used(q.prod, q.cons, q.shift) !== 0)
    syncConsOvf(smmu, q, Mmio.PRIQ_CONS)
  }

  // ---------------------------------------------------------------- stream table

  /** arm_smmu_get_step_for_sid(). */
  const stePa = (smmu: SmmuDevice, sid: number): number => {
    const t = smmu.strtab
    if (!t.twoLevel) return t.basePa + sid * Ste.SIZE
    const l2 = t.l2[sid >>> Strtab.SPLIT]
    if (l2 === undefined) throw new Error(`no level-2 stream table for SID ${sid}`)
    return l2 + (sid & ((1 << Strtab.SPLIT) - 1)) * Ste.SIZE
  }

  const memEntry = (smmu: SmmuDevice, pa: number): EntryStore => {
    const mem = smmu.hw.memory
    return { get: (i) => mem.read64(pa + 8 * i), set: (i, v) => mem.write64(pa + 8 * i, v) }
  }

  const writeRaw = (smmu: SmmuDevice, pa: number, e: Entry) => {
    for (let i = 0; i < 8; i++) smmu.hw.memory.write64(pa + 8 * i, e[i] as bigint)
  }

  /** arm_smmu_init_l2_strtab(): 256 abort STEs, then the level-1 descriptor. */
  const initL2Strtab = (smmu: SmmuDevice, sid: number) => {
    const t = smmu.strtab
    const l1 = sid >>> Strtab.SPLIT
    if (t.l2[l1] !== undefined) return
    const frames = ((1 << Strtab.SPLIT) * Ste.SIZE) / 4096
    const mem = smmu.hw.memory
    const pa = mem.allocFrames(frames, FramePurpose.IOMMU_HW, frames) * 4096
    const abort = makeAbortSte()
    for (let i = 0; i < 1 << Strtab.SPLIT; i++) writeRaw(smmu, pa + i * Ste.SIZE, abort)
    t.l2[l1] = pa
    // The SMMU does not cache an L1STD with SPAN = 0, so no CFGI is needed.
    mem.write64(
      t.basePa + l1 * 8,
      fieldPrep(Strtab.L1_DESC_SPAN_MASK, Strtab.SPLIT + 1) |
        (BigInt(pa) & Strtab.L1_DESC_L2PTR_MASK),
    )
  }

  /** arm_smmu_write_ste(): the hitless writer with CFGI_STE + CMD_SYNC, then a prefetch. */
  const writeSte = (master: Master, sid: number, target: Entry) => {
    const smmu = master.smmu
    const ops: EntryWriterOps = {
      getUsed: getSteUsed,
      getUpdateSafe: getSteUpdateSafe,
      sync: () => {
        if (hooks.skipCfgiSte) issueCmdlist(smmu, [], true)
        else issueCmdWithSync(smmu, cmdCfgiSte(sid, true))
      },
    }
    writeEntry(ops, memEntry(smmu, stePa(smmu, sid)), target)
    if (!(smmu.options & Opt.SKIP_PREFETCH)) issueCmd(smmu, cmdPrefetchCfg(sid))
  }

  /** arm_smmu_install_ste_for_dev(). */
  const installSteForDev = (master: Master, target: Entry) => {
    master.cdTable.inSte = fieldGet(Ste.Q0_CFG, target[0] as bigint) === SteCfg.S1_TRANS
    master.steAtsEnabled = fieldGet(Ste.Q1_EATS, target[1] as bigint) === Eats.TRANS
    const seen = new Set<number>()
    for (const sid of master.streams) {
      // Bridged PCI devices may end up with duplicated IDs.
      if (seen.has(sid)) continue
      seen.add(sid)
      writeSte(master, sid, target)
    }
  }

  // ---------------------------------------------------------------- context descriptors

  /** arm_smmu_sync_cd(): CFGI_CD for every stream of the master, then a sync. */
  const syncCd = (master: Master, ssid: number, leaf: boolean) => {
    const smmu = master.smmu
    const b: Batch = { cmds: [] }
    if (!hooks.skipCfgiCd) {
      for (const sid of master.streams) batchAdd(smmu, b, cmdCfgiCd(sid, ssid, leaf))
    }
    batchSubmit(smmu, b)
  }

  /** arm_smmu_alloc_cd_tables(): linear up to 1024 CDs (or without CD2L), else 2-level. */
  const allocCdTables = (master: Master) => {
    const t = master.cdTable
    const smmu = master.smmu
    const mem = smmu.hw.memory
    t.s1cdmax = master.ssidBits
    if (master.atsAlwaysOn) t.s1cdmax = Math.max(t.s1cdmax, 1)
    const maxContexts = 2 ** t.s1cdmax
    if (!(smmu.features & Feat.TWO_LVL_CDTAB) || maxContexts <= Cd.L2_ENTRIES) {
      t.s1fmt = S1Fmt.LINEAR
      t.frames = Math.ceil((maxContexts * Cd.SIZE) / 4096)
    } else {
      t.s1fmt = S1Fmt.L2_64K
      t.frames = Math.ceil((Math.ceil(maxContexts / Cd.L2_ENTRIES) * 8) / 4096)
    }
    t.pa = mem.allocFrames(t.frames, FramePurpose.IOMMU_HW, t.frames) * 4096
    t.allocated = true
  }

  const freeCdTables = (master: Master) => {
    const t = master.cdTable
    if (!t.allocated) return
    const mem = master.smmu.hw.memory
    for (const l2 of t.l2) if (l2 !== undefined) mem.freeFrames(l2 / 4096, 16)
    t.l2.length = 0
    mem.freeFrames(t.pa / 4096, t.frames)
    t.allocated = false
  }

  /** arm_smmu_get_cd_ptr(). */
  const getCdPtr = (master: Master, ssid: number): number | null => {
    const t = master.cdTable
    if (!t.allocated) return null
    if (t.s1fmt === S1Fmt.LINEAR) return t.pa + ssid * Cd.SIZE
    const l2 = t.l2[Math.floor(ssid / Cd.L2_ENTRIES)]
    return l2 === undefined ? null : l2 + (ssid % Cd.L2_ENTRIES) * Cd.SIZE
  }

  /** arm_smmu_alloc_cd_ptr(): a level-2 table on demand; an invalid L1CD may be cached. */
  const allocCdPtr = (master: Master, ssid: number): number => {
    const t = master.cdTable
    if (!t.allocated) allocCdTables(master)
    if (t.s1fmt === S1Fmt.L2_64K) {
      const i = Math.floor(ssid / Cd.L2_ENTRIES)
      if (t.l2[i] === undefined) {
        const mem = master.smmu.hw.memory
        const pa = mem.allocFrames(16, FramePurpose.IOMMU_HW, 16) * 4096
        t.l2[i] = pa
        mem.write64(t.pa + i * 8, (BigInt(pa) & Cd.L1_DESC_L2PTR) | Cd.L1_DESC_V)
        syncCd(master, ssid, false)
      }
    }
    const p = getCdPtr(master, ssid)
    if (p === null) throw new IommuError('ENOMEM', 'no CD')
    return p
  }

  /** arm_smmu_write_cd_entry(): counts the valid non-zero SubstreamIDs, then writes. */
  const writeCdEntry = (master: Master, ssid: number, cdPa: number, target: Entry) => {
    const smmu = master.smmu
    const targetValid = ((target[0] as bigint) & Cd.Q0_V) !== 0n
    const curValid = (smmu.hw.memory.read64(cdPa) & Cd.Q0_V) !== 0n
    if (ssid !== 0 && curValid !== targetValid) {
      if (curValid) master.cdTable.usedSsids--
      else master.cdTable.usedSsids++
    }
    const ops: EntryWriterOps = { getUsed: getCdUsed, sync: () => syncCd(master, ssid, true) }
    writeEntry(ops, memEntry(smmu, cdPa), target)
  }

  /** arm_smmu_clear_cd(). */
  const clearCd = (master: Master, ssid: number) => {
    if (!master.cdTable.allocated) return
    const p = getCdPtr(master, ssid)
    if (p === null) return
    writeCdEntry(master, ssid, p, emptyEntry())
  }

  const s1TableCfg = (d: SmmuDomain): S1TableCfg => {
    const pt = d.pt as PageTable<ArmLpaeConfig, ArmLpaeParams>
    const info = pt.hwInfo() as unknown as Omit<S1TableCfg, 'hd'>
    return { ...info, hd: (pt.params.quirks & IoPgtableQuirk.ARM_HD) !== 0 }
  }

  const s2TableCfg = (d: SmmuDomain): S2TableCfg => {
    const pt = d.pt as PageTable<ArmLpaeConfig, ArmLpaeParams>
    const info = pt.hwInfo() as unknown as Omit<S2TableCfg, 's2fwb'>
    return { ...info, s2fwb: (pt.params.quirks & IoPgtableQuirk.ARM_S2FWB) !== 0 }
  }

  const cdRef = (master: Master) => ({
    dma: BigInt(master.cdTable.pa),
    s1fmt: master.cdTable.s1fmt,
    s1cdmax: master.cdTable.s1cdmax,
  })

  // ---------------------------------------------------------------- invalidation

  /** arm_smmu_inv_size_too_big(): "everything", or too many TLBIs without range support. */
  const sizeTooBig = (smmu: SmmuDevice, size: bigint, granule: number): boolean => {
    if (size === 0n || size === U64) return true
    if (smmu.features & Feat.RANGE_INV) return false
    const maxOps = 1 << (ilog2(granule) - 3)
    return size >= BigInt(maxOps * granule)
  }

  /** arm_smmu_cmdq_batch_add_range(): per-granule TLBIs, or range TLBIs with RIL. */
  const batchAddRange = (
    smmu: SmmuDevice,
    b: Batch,
    cmd: Command,
    leaf: boolean,
    start: bigint,
    size: bigint,
    granule: number,
    tg: number,
  ) => {
    if (size === 0n) return
    const end = start + size
    let iova = start
    let numPages = 0n
    let ttl = 0
    let tgEnc = 0
    let invRange = BigInt(granule)
    const range = (smmu.features & Feat.RANGE_INV) !== 0
    if (range) {
      numPages = size >> BigInt(tg)
      tgEnc = (tg - 10) / 2
      // A leaf invalidation hints the level of the granule.
      if (leaf) ttl = 4 - Math.floor((ilog2(granule) - 3) / (tg - 3))
      else if ((numPages & 31n) === 1n) numPages++
    }
    while (iova < end) {
      const c: Command = [cmd[0], 0n]
      if (range) {
        // Each command covers NUM+1 chunks of 2^SCALE pages: 5 bits of the remaining size.
        const scale = lowestBitLg2(numPages)
        const num = (numPages >> BigInt(scale)) & 31n
        c[0] = cmd[0] | fieldPrep(Cmd.TLBI_D0_NUM, num - 1n) | fieldPrep(Cmd.TLBI_D0_SCALE, scale)
        invRange = num << BigInt(scale + tg)
        numPages -= num << BigInt(scale)
      }
      c[1] =
        fieldPrep(Cmd.TLBI_D1_LEAF, leaf ? 1 : 0) |
        fieldPrep(Cmd.TLBI_D1_TTL, ttl) |
        fieldPrep(Cmd.TLBI_D1_TG, tgEnc) |
        (iova & ~0xfffn & U64)
      batchAdd(smmu, b, c)
      iova += invRange
    }
  }

  /** arm_smmu_inv_to_cmdq_batch(): the ranged opcode, or the "everything" one. */
  const invToBatch = (
    i: Inv,
    b: Batch,
    cmd: Command,
    leaf: boolean,
    iova: bigint,
    size: bigint,
    granule: number,
  ) => {
    const smmu = smmuAt(i.smmu)
    if (sizeTooBig(smmu, size, granule)) {
      const c: Command = [(cmd[0] & ~0xffn) | BigInt(i.nsizeOpcode), cmd[1]]
      batchAdd(smmu, b, c)
      return
    }
    batchAddRange(smmu, b, cmd, leaf, iova, size, granule, i.pgsize)
  }

  /** arm_smmu_invs_end_batch(): sync when the SMMU changes, before S1_CLEAR, before ATS. */
  const endBatch = (cur: Inv, next: Inv): boolean =>
    cur.smmu !== next.smmu ||
    (cur.type !== InvType.S2_VMID_S1_CLEAR && next.type === InvType.S2_VMID_S1_CLEAR) ||
    (!isAts(cur) && isAts(next))

  /**
   * arm_smmu_domain_inv_range(): every entry of the domain's invalidation array, in order,
   * with a CMD_SYNC at each batch end. A size of 0 invalidates everything.
   */
  const domainInvRange = (
    d: SmmuDomain,
    iova: bigint,
    size: bigint,
    granule: number,
    leaf: boolean,
  ) => {
    const invs = d.invs
    let b: Batch = { cmds: [] }
    let cur = invsNext(invs, 0)
    while (cur < invs.numInvs) {
      const i = invs.inv[cur] as Inv
      const smmu = smmuAt(i.smmu)
      if (b.cmds.length === 0) b = { cmds: [] }
      switch (i.type) {
        case InvType.S1_ASID:
          invToBatch(i, b, cmdTlbi(i.sizeOpcode, i.id, 0), leaf, iova, size, granule)
          break
        case InvType.S2_VMID:
          invToBatch(i, b, cmdTlbi(i.sizeOpcode, 0, i.id), leaf, iova, size, granule)
          break
        case InvType.S2_VMID_S1_CLEAR:
          // TLBI_S12_VMALL already dropped the stage-1 entries.
          if (!sizeTooBig(smmu, size, granule)) batchAdd(smmu, b, cmdTlbi(i.sizeOpcode, 0, i.id))
          break
        case InvType.ATS:
          batchAdd(smmu, b, atcInvToCmd(i.id, i.ssid, iova, size))
          break
        case InvType.ATS_FULL:
          batchAdd(smmu, b, cmdAtcInvAll(i.id, 0))
          break
      }
      const next = invsNext(invs, cur + 1)
      if (b.cmds.length && (next >= invs.numInvs || endBatch(i, invs.inv[next] as Inv))) {
        batchSubmit(smmu, b)
        b = { cmds: [] }
      }
      cur = next
    }
  }

  /** arm_smmu_master_build_invs(): what a master on `d` contributes to its array. */
  const buildInvs = (master: Master, atsEnabled: boolean, ssid: number, d: SmmuDomain): Invs => {
    const smmu = master.smmu
    const out: Inv[] = []
    const pgsize = smmu.features & Feat.RANGE_INV ? lowestBitLg2(d.pgsizeBitmap) : 0
    if (d.stage === DomainStage.S1) {
      const e2h = (smmu.features & Feat.E2H) !== 0
      out.push(
        inv({
          smmu: smmu.index,
          type: InvType.S1_ASID,
          id: d.asid,
          pgsize,
          sizeOpcode: e2h ? Op.TLBI_EL2_VA : Op.TLBI_NH_VA,
          nsizeOpcode: e2h ? Op.TLBI_EL2_ASID : Op.TLBI_NH_ASID,
        }),
      )
    } else {
      out.push(
        inv({
          smmu: smmu.index,
          type: InvType.S2_VMID,
          id: d.vmid,
          pgsize,
          sizeOpcode: Op.TLBI_S2_IPA,
          nsizeOpcode: Op.TLBI_S12_VMALL,
        }),
      )
    }
    // Every nested stage-1 ASID must go when the parent stage 2 changes.
    if (d.nestParent) {
      out.push(
        inv({
          smmu: smmu.index,
          type: InvType.S2_VMID_S1_CLEAR,
          id: d.vmid,
          sizeOpcode: Op.TLBI_NH_ALL,
          nsizeOpcode: Op.TLBI_NH_ALL,
        }),
      )
    }
    if (atsEnabled) {
      for (const sid of master.streams) {
        out.push(
          inv({
            smmu: smmu.index,
            type: d.nestParent ? InvType.ATS_FULL : InvType.ATS,
            id: sid,
            ssid,
            sizeOpcode: Op.ATC_INV,
            nsizeOpcode: Op.ATC_INV,
          }),
        )
      }
    }
    return invsOf(out)
  }

  /** A domain that tracks its masters for invalidation, or null (`to_smmu_domain_devices`). */
  const domainDevices = (d: IommuDomain | null): SmmuDomain | null => {
    if (d === null) return null
    if (d.type & DomainFeature.PAGING && d instanceof SmmuDomain) return d
    // A nested domain's masters are threaded on its stage-2 parent.
    if (d instanceof SmmuNestedDomain) return d.vsmmu.s2Parent
    return null
  }

  /** arm_smmu_attach_prepare_invs(). */
  const prepareInvs = (state: AttachState, newDomain: IommuDomain | null) => {
    const oldD = domainDevices(state.oldDomain)
    const newD = domainDevices(newDomain)
    const master = state.master
    if (newD !== null) {
      const build = buildInvs(master, state.atsEnabled, state.ssid, newD)
      state.newInvst = { domain: newD, oldInvs: newD.invs, newInvs: invsMerge(newD.invs, build) }
    }
    if (oldD !== null) {
      const oldInvs = newD === oldD && state.newInvst !== null ? state.newInvst.newInvs : oldD.invs
      state.oldInvst = {
        domain: oldD,
        oldInvs,
        build: buildInvs(master, master.atsEnabled, state.ssid, oldD),
      }
    }
  }

  const installNewDomainInvs = (state: AttachState) => {
    if (state.newInvst !== null) state.newInvst.domain.invs = state.newInvst.newInvs
  }

  /** arm_smmu_inv_flush_iotlb_tag(): the ASID or VMID lost its last user. */
  const flushIotlbTag = (i: Inv) => {
    const smmu = smmuAt(i.smmu)
    if (i.type === InvType.S1_ASID) issueCmdWithSync(smmu, cmdTlbi(i.nsizeOpcode, i.id, 0))
    else if (i.type === InvType.S2_VMID) issueCmdWithSync(smmu, cmdTlbi(i.nsizeOpcode, 0, i.id))
  }

  /** arm_smmu_install_old_domain_invs(). */
  const installOldDomainInvs = (state: AttachState) => {
    const st = state.oldInvst
    if (st === null) return
    invsUnref(st.oldInvs, st.build)
    // An ASID/VMID in no array any more must be left clean in the TLB.
    const first = st.build.inv[0]
    if (first !== undefined && first.users === 0) flushIotlbTag(first)
    const purged = invsPurge(st.oldInvs)
    st.domain.invs = purged ?? st.oldInvs
  }

  // ---------------------------------------------------------------- ATS

  /** arm_smmu_ats_supported(): SMMU ATS, the root complex's ATS (assumed), the device's. */
  const atsSupported = (master: Master): boolean =>
    (master.smmu.features & Feat.ATS) !== 0 && master.dev.ats

  /** arm_smmu_atc_inv_master(): ATC_INV of everything for every stream, then a sync. */
  const atcInvMaster = (master: Master, ssid: number) => {
    const b: Batch = { cmds: [] }
    for (const sid of master.streams) batchAdd(master.smmu, b, cmdAtcInvAll(sid, ssid))
    batchSubmit(master.smmu, b)
  }

  /** arm_smmu_enable_ats(): flush the whole ATC, then set the ATS Enable bit. */
  const enableAts = (master: Master) => {
    atcInvMaster(master, 0)
    for (const sid of master.streams) master.smmu.hw.setAts(sid, true)
  }

  const pciDisableAts = (master: Master) => {
    for (const sid of master.streams) master.smmu.hw.setAts(sid, false)
  }

  // ---------------------------------------------------------------- attach

  const newState = (master: Master, oldDomain: IommuDomain | null, ssid: number): AttachState => ({
    oldDomain,
    master,
    cdNeedsAts: false,
    disableAts: false,
    ssid,
    atsEnabled: false,
    vmaster: null,
    newInvst: null,
    oldInvst: null,
  })

  const canwbs = (master: Master) => master.dev.data.canwbs === true

  /**
   * arm_smmu_dbm_capable(): HTTU dirty and coherency — a property of the SMMU, whatever the
   * device (the core's per-device `dirtyTracking` flag is the selftest mock's, not read here).
   */
  const dbmCapable = (smmu: SmmuDevice) =>
    (smmu.features & Feat.HD) !== 0 && (smmu.features & Feat.COHERENCY) !== 0

  /**
   * arm_smmu_attach_prepare(): decide ATS, prepare both invalidation arrays, put the master
   * on the new domain's list (EINVAL if it enforces coherency and the master is not CANWBS),
   * install the new array, and turn PCI ATS off before the STE stops allowing it.
   */
  const attachPrepare = (state: AttachState, newDomain: IommuDomain) => {
    const master = state.master
    const d = domainDevices(newDomain)
    if (d !== null || state.cdNeedsAts) {
      // Bypass STEs cannot use ATS; a CD table with S1DSS can ("13.6.4").
      state.atsEnabled = !state.disableAts && atsSupported(master)
    }
    prepareInvs(state, newDomain)
    if (d !== null) {
      if (newDomain instanceof SmmuNestedDomain) prepareVmaster(state, newDomain)
      const md: MasterDomain = {
        master,
        domain: newDomain,
        ssid: state.ssid,
        nestedAtsFlush: newDomain instanceof SmmuNestedDomain && newDomain.enableAts,
        usingIopf: false,
      }
      if (newDomain.iopfHandler) enableIopf(master, md)
      if (d.enforceCoherency && !canwbs(master)) {
        disableIopf(master, md)
        throw new IommuError('EINVAL', `${master.dev.name} cannot keep cache coherency`)
      }
      if (state.atsEnabled) d.nrAtsMasters++
      d.devices.unshift(md)
      installNewDomainInvs(state)
    }
    if (!state.atsEnabled && master.atsEnabled) pciDisableAts(master)
  }

  /** arm_smmu_remove_master_domain(). */
  const removeMasterDomain = (master: Master, domain: IommuDomain | null, ssid: number) => {
    const d = domainDevices(domain)
    if (d === null) return
    const flush = domain instanceof SmmuNestedDomain && domain.enableAts
    const i = d.devices.findIndex(
      (md) =>
        md.master === master &&
        md.domain === domain &&
        md.ssid === ssid &&
        md.nestedAtsFlush === flush,
    )
    if (i >= 0) {
      const [md] = d.devices.splice(i, 1)
      if (master.atsEnabled) d.nrAtsMasters--
      if (md !== undefined) disableIopf(master, md)
    }
  }

  /**
   * arm_smmu_enable_iopf(): a domain with a fault handler puts a master that can stall on
   * the SMMU's IOPF queue (others have nothing to do: PCI PRI is not served, see
   * `priqThread`).
   */
  const enableIopf = (master: Master, md: MasterDomain) => {
    if (!master.stallEnabled) return
    // Fault events carry one StreamID: a master with several is not tracked.
    if (master.streams.length !== 1) throw new IommuError('EOPNOTSUPP', 'several StreamIDs')
    const queue = master.smmu.iopfQueue
    if (queue === null) throw new IommuError('EOPNOTSUPP', 'no IOPF queue')
    if (master.iopfRefcount === 0) queue.addDevice(master.dev)
    master.iopfRefcount++
    md.usingIopf = true
  }

  /** arm_smmu_disable_iopf(). */
  const disableIopf = (master: Master, md: MasterDomain) => {
    if (!md.usingIopf) return
    md.usingIopf = false
    if (--master.iopfRefcount === 0) master.smmu.iopfQueue?.removeDevice(master.dev)
  }

  /**
   * arm_smmu_page_response(): RESUME the stalled transaction (STAG = the group): retry on
   * success, abort on INVALID/FAILURE, terminate for anything else; no CMD_SYNC.
   */
  const pageResponse = (dev: PciDevice, _evt: IopfFault, resp: PageResponse) => {
    const master = masterOf(dev)
    // The kernel WARNs: only stalls are reported.
    if (!master.stallEnabled) return
    let action: number
    switch (resp.code) {
      case IommuPageResponseCode.INVALID:
      case IommuPageResponseCode.FAILURE:
        action = Resume.ABORT
        break
      case IommuPageResponseCode.SUCCESS:
        action = Resume.RETRY
        break
      default:
        action = Resume.TERM
    }
    issueCmd(master.smmu, cmdResume(master.streams[0] as number, resp.grpid, action))
  }

  /**
   * arm_smmu_attach_commit(): with the STE/CD in place, sequence the ATC (enable after a
   * full flush, flush the SSID, or flush all when turning ATS off), leave the old domain and
   * drop its invalidation entries (flushing an ASID/VMID that lost its last user).
   */
  const attachCommit = (state: AttachState) => {
    const master = state.master
    // arm_smmu_attach_commit_vmaster(): every attach replaces the vmaster.
    master.vmaster = state.vmaster
    if (state.atsEnabled && !master.atsEnabled) enableAts(master)
    else if (state.atsEnabled && master.atsEnabled) atcInvMaster(master, state.ssid)
    else if (!state.atsEnabled && master.atsEnabled) atcInvMaster(master, 0)
    removeMasterDomain(master, state.oldDomain, state.ssid)
    installOldDomainInvs(state)
    master.atsEnabled = state.atsEnabled
  }

  /** arm_smmu_attach_dev(): a paging domain on the RID. */
  const attachDev = (domain: IommuDomain, dev: PciDevice, old: IommuDomain | null): void => {
    const d = domain as SmmuDomain
    const master = masterOf(dev)
    // A dirty-tracking domain needs no check of its own: its SMMU must be the master's,
    // and iommufd allocated it only if that SMMU is DBM-capable.
    if (d.smmu !== master.smmu) throw new IommuError('EINVAL', 'domain of another SMMU')
    let cdPa = -1
    if (d.stage === DomainStage.S1) cdPa = allocCdPtr(master, 0)
    else if (master.cdTable.usedSsids > 0) {
      throw new IommuError('EBUSY', `${dev.name}: PASIDs in use`)
    }
    const state = newState(master, old, 0)
    attachPrepare(state, d)
    if (d.stage === DomainStage.S1) {
      writeCdEntry(master, 0, cdPa, makeS1Cd(master, s1TableCfg(d), d.asid))
      installSteForDev(
        master,
        makeCdtableSte(master.smmu.features, master, cdRef(master), state.atsEnabled, S1Dss.SSID0),
      )
    } else {
      installSteForDev(
        master,
        makeS2DomainSte(master.smmu.features, master, s2TableCfg(d), d.vmid, state.atsEnabled),
      )
      clearCd(master, 0)
    }
    attachCommit(state)
  }

  /** arm_smmu_attach_dev_ste(): identity/blocked; a CD-table STE while PASIDs are in use. */
  const attachDevSte = (
    domain: IommuDomain,
    old: IommuDomain | null,
    dev: PciDevice,
    ste: Entry,
    s1dss: number,
  ) => {
    const master = masterOf(dev)
    const state = newState(master, old, 0)
    const atsAlwaysOn = master.atsAlwaysOn && s1dss !== S1Dss.TERMINATE
    let target = ste
    if (atsAlwaysOn || master.cdTable.usedSsids > 0) {
      // A CD table stays: ATS must be on since a PASID may use it.
      state.cdNeedsAts = true
      attachPrepare(state, domain)
      target = makeCdtableSte(master.smmu.features, master, cdRef(master), state.atsEnabled, s1dss)
    } else {
      attachPrepare(state, domain)
    }
    installSteForDev(master, target)
    attachCommit(state)
    clearCd(master, 0)
  }

  const identityAttach = (domain: IommuDomain, dev: PciDevice, old: IommuDomain | null) => {
    const master = masterOf(dev)
    attachDevSte(domain, old, dev, makeBypassSte(master.smmu.features), S1Dss.BYPASS)
  }

  const blockedAttach = (domain: IommuDomain, dev: PciDevice, old: IommuDomain | null) => {
    attachDevSte(domain, old, dev, makeAbortSte(), S1Dss.TERMINATE)
  }

  /** The RID's domain (`iommu_driver_get_domain_for_dev`). */
  const ridDomain = (dev: PciDevice): IommuDomain | null => dev.group?.domain ?? null

  /** arm_smmu_update_ste(): a CD-table STE with the RID's identity/blocked behaviour. */
  const updateSte = (master: Master, sidDomain: IommuDomain, atsEnabled: boolean) => {
    if (master.cdTable.inSte && master.steAtsEnabled === atsEnabled) return
    const s1dss = sidDomain.type === DomainType.IDENTITY ? S1Dss.BYPASS : S1Dss.TERMINATE
    installSteForDev(
      master,
      makeCdtableSte(master.smmu.features, master, cdRef(master), atsEnabled, s1dss),
    )
  }

  /** arm_smmu_set_pasid(). */
  const setPasid = (
    master: Master,
    d: SmmuDomain,
    pasid: number,
    cd: Entry,
    old: IommuDomain | null,
  ) => {
    const sidDomain = ridDomain(master.dev)
    if (d.smmu !== master.smmu) throw new IommuError('EINVAL', 'domain of another SMMU')
    if (
      !master.cdTable.inSte &&
      sidDomain?.type !== DomainType.IDENTITY &&
      sidDomain?.type !== DomainType.BLOCKED
    ) {
      throw new IommuError('EINVAL', 'the RID has no CD table and is neither identity nor blocked')
    }
    const cdPa = allocCdPtr(master, pasid)
    const state = newState(master, old, pasid)
    attachPrepare(state, d)
    writeCdEntry(master, pasid, cdPa, cd)
    if (sidDomain !== null) updateSte(master, sidDomain, state.atsEnabled)
    attachCommit(state)
  }

  /** arm_smmu_s1_set_dev_pasid(): stage-1 domains only. */
  const s1SetDevPasid = (
    domain: IommuDomain,
    dev: PciDevice,
    pasid: number,
    old: IommuDomain | null,
  ) => {
    const d = domain as SmmuDomain
    const master = masterOf(dev)
    if (d.smmu !== master.smmu) throw new IommuError('EINVAL', 'domain of another SMMU')
    if (d.stage !== DomainStage.S1) throw new IommuError('EINVAL', 'PASIDs need a stage-1 domain')
    setPasid(master, d, pasid, makeS1Cd(master, s1TableCfg(d), d.asid), old)
  }

  /**
   * arm_smmu_blocking_set_dev_pasid(): clear the CD, flush the PASID's ATC, leave the old
   * domain; when the last PASID goes, an identity/blocked RID returns to a plain STE.
   */
  const blockingSetDevPasid = (
    _blocked: IommuDomain,
    dev: PciDevice,
    pasid: number,
    old: IommuDomain | null,
  ) => {
    const master = masterOf(dev)
    const state = newState(master, old, pasid)
    prepareInvs(state, null)
    clearCd(master, pasid)
    if (master.atsEnabled) atcInvMaster(master, pasid)
    removeMasterDomain(master, old, pasid)
    installOldDomainInvs(state)
    if (master.cdTable.usedSsids === 0) {
      const sidDomain = ridDomain(dev)
      if (
        sidDomain !== null &&
        (sidDomain.type === DomainType.IDENTITY || sidDomain.type === DomainType.BLOCKED)
      ) {
        sidDomain.ops.attachDev(sidDomain, dev, sidDomain)
      }
    }
  }

  // ---------------------------------------------------------------- vSMMU (arm-smmu-v3-iommufd.c)

  /**
   * arm_smmu_attach_prepare_vmaster(): find the device's vDEVICE on the domain's vIOMMU. A
   * translating (Config = S1) vSTE needs one (ENOENT): CD and ATC invalidations and events
   * go by vSID. Abort and bypass vSTEs attach without one (the GBPA case).
   */
  const prepareVmaster = (state: AttachState, nested: SmmuNestedDomain) => {
    let cfg = fieldGet(Ste.Q0_CFG, nested.ste[0])
    if (!(nested.ste[0] & Ste.Q0_V)) cfg = SteCfg.ABORT
    let vsid: bigint
    try {
      vsid = iommufdViommuGetVdevId(nested.vsmmu.core, state.master.dev)
    } catch (e) {
      if (cfg === SteCfg.ABORT || cfg === SteCfg.BYPASS) return
      throw e
    }
    state.vmaster = { vsmmu: nested.vsmmu, vsid: Number(vsid) }
  }

  /**
   * arm_smmu_attach_dev_nested(): the physical STE from the vSTE on the parent's stage 2.
   * For a Config = S1 vSTE the guest owns the virtual ATS state: ATS stays off unless its
   * vSTE asked for EATS = 1, since only then does it send ATC_INV.
   */
  const attachDevNested = (domain: IommuDomain, dev: PciDevice, old: IommuDomain | null) => {
    const nested = domain as SmmuNestedDomain
    const master = masterOf(dev)
    if (nested.vsmmu.smmu !== master.smmu) throw new IommuError('EINVAL', 'vIOMMU of another SMMU')
    if (master.cdTable.usedSsids > 0) throw new IommuError('EBUSY', `${dev.name}: PASIDs in use`)
    const state = newState(master, old, 0)
    if (fieldGet(Ste.Q0_CFG, nested.ste[0]) === SteCfg.S1_TRANS)
      state.disableAts = !nested.enableAts
    attachPrepare(state, nested)
    const parent = nested.vsmmu.s2Parent
    const s2Ste = makeS2DomainSte(
      master.smmu.features,
      master,
      s2TableCfg(parent),
      parent.vmid,
      state.atsEnabled,
    )
    installSteForDev(master, makeNestedDomainSte(nested.ste, s2Ste))
    attachCommit(state)
  }

  const nestedOps: DomainOps = {
    attachDev: attachDevNested,
    free() {},
  }

  /** arm_vsmmu_alloc_domain_nested(): `struct iommu_hwpt_arm_smmuv3 { le64 ste[2] }`. */
  const allocDomainNested = (viommu: IommufdViommu, flags: number, data: UserData): IommuDomain => {
    if (flags) throw new IommuError('EOPNOTSUPP', `flags 0x${flags.toString(16)}`)
    const v = copyStructFromUser(data, HwptDataType.ARM_SMMUV3, 16, 16)
    const { ste, enableAts } = validateVste([v.getBigUint64(0, true), v.getBigUint64(8, true)])
    return new SmmuNestedDomain(viommu.priv as Vsmmu, ste, enableAts, nestedOps)
  }

  /** arm_vsmmu_vsid_to_sid(): the single StreamID of the vSID's device. */
  const vsidToSid = (vsmmu: Vsmmu, vsid: number): number | null => {
    const dev = iommufdViommuFindDev(vsmmu.core, vsid)
    if (dev === null) return null
    return (masterOf(dev).streams[0] as number) ?? null
  }

  /**
   * arm_vsmmu_cache_invalidate(): the guest's raw commands, converted in user order and
   * issued in blocks of 63 plus a CMD_SYNC on the main queue. `entryNum` reports how far it
   * got: a conversion failure stops at its index (the commands converted since the last
   * issued block are not sent); a stuck sync counts all but the block's last command.
   */
  const cacheInvalidate = (viommu: IommufdViommu, array: UserDataArray) => {
    const vsmmu = viommu.priv as Vsmmu
    let raw: DataView
    try {
      raw = copyStructFromFullUserArray(array, IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3, 16)
    } catch (e) {
      array.entryNum = 0
      throw e
    }
    const n = array.entryNum
    const cmds: Command[] = []
    let cur = 0
    let last = 0
    try {
      while (cur !== n) {
        cmds.push(
          convertUserCmd(
            [raw.getBigUint64(cur * 16, true), raw.getBigUint64(cur * 16 + 8, true)],
            vsmmu.vmid,
            (vsid) => vsidToSid(vsmmu, vsid),
          ),
        )
        cur++
        if (cur !== n && cur - last !== CMDQ_BATCH_ENTRIES - 1) continue
        if (issueCmdlist(vsmmu.smmu, cmds.slice(last, cur), true) !== 0) {
          cur--
          throw new IommuError('ETIMEDOUT', 'CMD_SYNC timeout')
        }
        last = cur
      }
    } finally {
      array.entryNum = cur
    }
  }

  /** arm_vsmmu_vdevice_init(): a vSID maps to the master's one StreamID. */
  const vdeviceInit = (vdev: IommufdVdevice) => {
    if (masterOf(vdev.dev).streams.length !== 1) {
      throw new IommuError('EOPNOTSUPP', 'vDEVICE of a master with several StreamIDs')
    }
  }

  const vsmmuOps: ViommuOps = { allocDomainNested, cacheInvalidate, vdeviceInit }

  /**
   * arm_vmaster_report_event(): the raw record with the vSID in place of the StreamID, to
   * the vIOMMU's vEVENTQ (`struct iommu_vevent_arm_smmuv3 { le64 evt[4] }`).
   */
  const reportVmasterEvent = (vmaster: Vmaster, raw: readonly bigint[]) => {
    const data = new Uint8Array(32)
    const v = new DataView(data.buffer)
    v.setBigUint64(0, ((raw[0] as bigint) & 0xffff_ffffn) | (BigInt(vmaster.vsid) << 32n), true)
    for (let i = 1; i < 4; i++) v.setBigUint64(8 * i, raw[i] as bigint, true)
    iommufdViommuReportEvent(vmaster.vsmmu.core, IOMMU_VEVENTQ_TYPE_ARM_SMMUV3, data)
  }

  /**
   * arm_smmu_get_viommu_size(): nesting, no CMDQ_FORCE_SYNC erratum, and a way to keep the
   * VM from bypassing the cache (a CANWBS device or S2FWB).
   */
  const getViommuSize = (dev: PciDevice, type: number): number => {
    const master = masterOf(dev)
    const smmu = master.smmu
    if (!(smmu.features & Feat.NESTING)) return 0
    if (smmu.options & Opt.CMDQ_FORCE_SYNC) return 0
    if (!canwbs(master) && !(smmu.features & Feat.S2FWB)) return 0
    // `struct arm_vsmmu`; other types belong to implementations (Tegra241) not modelled.
    return type === IOMMU_VIOMMU_TYPE_ARM_SMMUV3 ? VSMMU_SIZE : 0
  }

  /** arm_vsmmu_init(): the parent's SMMU and VMID. */
  const viommuInit = (viommu: IommufdViommu, parent: IommuDomain, _data: UserData | null) => {
    const smmu = smmus.find((s) => s.hw === viommu.unit)
    if (!(parent instanceof SmmuDomain) || smmu === undefined || parent.smmu !== smmu) {
      throw new IommuError('EINVAL', 'parent of another SMMU')
    }
    const vsmmu: Vsmmu = { core: viommu, smmu, s2Parent: parent, vmid: parent.vmid }
    viommu.priv = vsmmu
    viommu.ops = vsmmuOps
  }

  // ---------------------------------------------------------------- domains

  const tableOf = (d: SmmuDomain): PageTable<ArmLpaeConfig, ArmLpaeParams> => {
    if (d.pt === null) throw new IommuError('ENODEV', 'domain has no page table')
    return d.pt
  }

  const paging = pageTableDomainOps<SmmuDomain>(armLpae, tableOf)

  /** `tlb_flush_walk`: table pages leave the tables; flush walks (leaf = false). */
  const flushWalk = (d: SmmuDomain, gather: IotlbGather) => {
    if (gather.empty) return
    domainInvRange(d, gather.start, gather.end - gather.start + 1n, GRANULE, false)
  }

  const domainOps = {
    ...paging,
    attachDev,
    setDevPasid: s1SetDevPasid,
    /**
     * arm_smmu_unmap_pages(): io-pgtable-arm gathers each unmapped leaf with
     * `iommu_iotlb_gather_add_page`, which syncs first when the page size changes or the
     * range is disjoint, and records the page size `iotlb_sync` needs.
     */
    unmapPages(
      d: SmmuDomain,
      iova: bigint,
      pgsize: bigint,
      pgcount: number,
      gather: IotlbGather,
    ): bigint {
      const scratch = new Gather()
      scratch.queued = gather.queued
      const n = tableOf(d).unmapPages(iova, pgsize, pgcount, scratch)
      if (n > 0n && !gather.queued) {
        if (
          (gather.pgsize && BigInt(gather.pgsize) !== pgsize) ||
          gather.isDisjoint(iova, pgsize)
        ) {
          machineRef?.iommu.iommuIotlbSync(d, gather)
        }
        gather.pgsize = Number(pgsize)
        gather.addRange(iova, n)
      }
      return n
    },
    flushIotlbAll(d: SmmuDomain) {
      if (d.smmu !== null) domainInvRange(d, 0n, 0n, 0, false)
    },
    /** arm_smmu_iotlb_sync(): nothing without a page size (see `flushAfterDirtyClear`). */
    iotlbSync(d: SmmuDomain, gather: IotlbGather) {
      if (hooks.skipIotlbSync) return
      let pgsize = gather.pgsize
      if (!pgsize) {
        if (!options.flushAfterDirtyClear) return
        pgsize = GRANULE
      }
      domainInvRange(d, gather.start, gather.end - gather.start + 1n, pgsize, true)
    },
    /** arm_smmu_enforce_cache_coherency(): every master must be CANWBS. */
    enforceCacheCoherency(d: SmmuDomain): boolean {
      const ok = d.devices.every((md) => canwbs(md.master))
      d.enforceCoherency = ok
      return ok
    },
    /** arm_smmu_domain_free_paging(): the table, then the ASID or VMID. */
    free(d: SmmuDomain) {
      d.pt?.free()
      d.pt = null
      if (d.stage === DomainStage.S1) {
        if (asids.get(d.asid) === d) asids.delete(d.asid)
      } else if (d.vmid && d.smmu !== null) d.smmu.vmids.delete(d.vmid)
    },
  } satisfies DomainOps<SmmuDomain>

  const dirtyOps = {
    ...pageTableDirtyOps<SmmuDomain>(tableOf),
    /** arm_smmu_set_dirty_tracking(): HD is always on; iommufd's clear pass is the enable. */
    setDirtyTracking(_d: SmmuDomain, _enabled: boolean) {},
  } satisfies DirtyOps<SmmuDomain>

  /** arm_smmu_domain_finalise(): the io-pgtable, the ASID or VMID, the geometry. */
  const finalise = (d: SmmuDomain, smmu: SmmuDevice, flags: number) => {
    const dirty = (flags & HwptAllocFlags.DIRTY_TRACKING) !== 0
    const coherent = (smmu.features & Feat.COHERENCY) !== 0
    let cfg: ArmLpaeConfig
    if (d.stage === DomainStage.S1) {
      const ias = Math.min(smmu.features & Feat.VAX ? 52 : 48, VA_BITS)
      cfg = {
        stage: 1,
        pgsizeBitmap: smmu.pgsizeBitmap,
        ias,
        oas: smmu.oas,
        coherentWalk: coherent,
        quirks: dirty ? IoPgtableQuirk.ARM_HD : 0,
      }
    } else {
      if (dirty) throw new IommuError('EOPNOTSUPP', 'no dirty tracking on stage 2')
      cfg = {
        stage: 2,
        pgsizeBitmap: smmu.pgsizeBitmap,
        ias: smmu.oas,
        oas: smmu.oas,
        coherentWalk: coherent,
        quirks:
          smmu.features & Feat.S2FWB && flags & HwptAllocFlags.NEST_PARENT
            ? IoPgtableQuirk.ARM_S2FWB
            : 0,
      }
    }
    let pt: PageTable<ArmLpaeConfig, ArmLpaeParams>
    try {
      pt = new PageTable(smmu.hw.memory, armLpae, cfg, {
        iotlbSync: (gather) => flushWalk(d, gather),
      })
    } catch (e) {
      // alloc_io_pgtable_ops() returned NULL.
      throw new IommuError('ENOMEM', `io-pgtable: ${(e as Error).message}`)
    }
    if (d.stage === DomainStage.S1) {
      let asid = 0
      for (let a = 1; a < 2 ** smmu.asidBits; a++) {
        if (!asids.has(a)) {
          asid = a
          break
        }
      }
      if (asid === 0) {
        pt.free()
        throw new IommuError('EBUSY', 'no free ASID')
      }
      asids.set(asid, d)
      d.asid = asid
    } else {
      let vmid = 0
      // VMID 0 stays reserved for stage-1-only STEs.
      for (let v = 1; v < 2 ** smmu.vmidBits; v++) {
        if (!smmu.vmids.has(v)) {
          vmid = v
          break
        }
      }
      if (vmid === 0) {
        pt.free()
        throw new IommuError('ENOSPC', 'no free VMID')
      }
      smmu.vmids.add(vmid)
      d.vmid = vmid
    }
    d.pt = pt
    d.smmu = smmu
    d.pgsizeBitmap = pt.pgsizeBitmap
    d.geometry.apertureStart = 0n
    d.geometry.apertureEnd = (1n << BigInt(cfg.ias)) - 1n
    d.geometry.forceAperture = true
  }

  const blockedDomain = new IommuDomain({
    type: DomainType.BLOCKED,
    ops: { attachDev: blockedAttach, setDevPasid: blockingSetDevPasid },
  })
  const identityDomain = new IommuDomain({
    type: DomainType.IDENTITY,
    ops: { attachDev: identityAttach },
  })

  // ---------------------------------------------------------------- probe

  /** arm_smmu_device_hw_probe(): features from the ID registers. */
  const hwProbe = (
    hw: SmmuV3Hw,
  ): Omit<SmmuDevice, 'cmdq' | 'evtq' | 'priq' | 'strtab' | 'iopfQueue'> & {
    cmdqShift: number
    evtqShift: number
    priqShift: number
  } => {
    const fail = (why: string): never => {
      throw new IommuError('ENXIO', `${hw.name}: ${why}`)
    }
    let features = 0
    let opts = 0
    const idr0 = hw.readReg(Mmio.IDR0)
    // Firmware (DT dma-coherent / IORT COHACC) is taken to agree with IDR0.COHACC.
    const coherent = (idr0 & Idr0.COHACC) !== 0
    if (coherent) features |= Feat.COHERENCY
    if (((idr0 >>> Idr0.ST_LVL_SHIFT) & 3) === Idr0.ST_LVL_2LVL) features |= Feat.TWO_LVL_STRTAB
    if (idr0 & Idr0.CD2L) features |= Feat.TWO_LVL_CDTAB
    switch ((idr0 >>> Idr0.TTENDIAN_SHIFT) & 3) {
      case Idr0.TTENDIAN_MIXED:
        features |= Feat.TT_LE | Feat.TT_BE
        break
      case Idr0.TTENDIAN_LE:
        features |= Feat.TT_LE
        break
      default:
        fail('unknown/unsupported TT endianness')
    }
    if (idr0 & Idr0.PRI) features |= Feat.PRI
    if (idr0 & Idr0.ATS) features |= Feat.ATS
    if (idr0 & Idr0.SEV) features |= Feat.SEV
    if (idr0 & Idr0.MSI) {
      features |= Feat.MSI
      if (coherent) opts |= Opt.MSIPOLL
    }
    // HYP; E2H would need a VHE host, which the model's CPU is not.
    if (idr0 & Idr0.HYP) features |= Feat.HYP
    switch ((idr0 >>> Idr0.HTTU_SHIFT) & 3) {
      case Idr0.HTTU_ACCESS_DIRTY_HAFT:
        features |= Feat.HAFT | Feat.HD | Feat.HA
        break
      case Idr0.HTTU_ACCESS_DIRTY:
        features |= Feat.HD | Feat.HA
        break
      case Idr0.HTTU_ACCESS:
        features |= Feat.HA
        break
    }
    switch ((idr0 >>> Idr0.STALL_MODEL_SHIFT) & 3) {
      case Idr0.STALL_MODEL_FORCE:
        features |= Feat.STALL_FORCE | Feat.STALLS
        break
      case Idr0.STALL_MODEL_STALL:
        features |= Feat.STALLS
        break
    }
    if (idr0 & Idr0.S1P) features |= Feat.TRANS_S1
    if (idr0 & Idr0.S2P) features |= Feat.TRANS_S2
    if (!(idr0 & (Idr0.S1P | Idr0.S2P))) fail('no translation support')
    if (!((idr0 >>> Idr0.TTF_SHIFT) & 3 & Idr0.TTF_AARCH64))
      fail('AArch64 table format not supported')
    const asidBits = idr0 & Idr0.ASID16 ? 16 : 8
    const vmidBits = idr0 & Idr0.VMID16 ? 16 : 8
    const idr1 = hw.readReg(Mmio.IDR1)
    if (idr1 & (Idr1.TABLES_PRESET | Idr1.QUEUES_PRESET | Idr1.REL)) {
      fail('embedded implementation not supported')
    }
    if (idr1 & Idr1.ATTR_TYPES_OVR) features |= Feat.ATTR_TYPES_OVR
    const cmdqShift = Math.min(CMDQ_MAX_SZ_SHIFT, (idr1 >>> Idr1.CMDQS_SHIFT) & 0x1f)
    if (cmdqShift <= ilog2(CMDQ_BATCH_ENTRIES)) {
      fail(`command queue size <= ${CMDQ_BATCH_ENTRIES} entries not supported`)
    }
    const evtqShift = Math.min(EVTQ_MAX_SZ_SHIFT, (idr1 >>> Idr1.EVTQS_SHIFT) & 0x1f)
    const priqShift = Math.min(PRIQ_MAX_SZ_SHIFT, (idr1 >>> Idr1.PRIQS_SHIFT) & 0x1f)
    const ssidBits = (idr1 >>> Idr1.SSIDSIZE_SHIFT) & 0x1f
    const sidBits = (idr1 >>> Idr1.SIDSIZE_SHIFT) & 0x3f
    // Fewer StreamID bits than one level-2 table covers: a linear table.
    if (sidBits <= Strtab.SPLIT) features &= ~Feat.TWO_LVL_STRTAB
    const idr3 = hw.readReg(Mmio.IDR3)
    if (idr3 & Idr3.RIL) features |= Feat.RANGE_INV
    if (idr3 & Idr3.FWB) features |= Feat.S2FWB
    if (((idr3 >>> Idr3.BBML_SHIFT) & 3) === 2) features |= Feat.BBML2
    const idr5 = hw.readReg(Mmio.IDR5)
    let pgsizeBitmap = 0n
    if (idr5 & Idr5.GRAN64K) pgsizeBitmap |= (1n << 16n) | (1n << 29n)
    if (idr5 & Idr5.GRAN16K) pgsizeBitmap |= (1n << 14n) | (1n << 25n)
    if (idr5 & Idr5.GRAN4K) pgsizeBitmap |= (1n << 12n) | (1n << 21n) | (1n << 30n)
    if (((idr5 >>> Idr5.VAX_SHIFT) & 3) === Idr5.VAX_52_BIT) features |= Feat.VAX
    let oas = 48
    switch (idr5 & Idr5.OAS_MASK) {
      case 0:
        oas = 32
        break
      case 1:
        oas = 36
        break
      case 2:
        oas = 40
        break
      case 3:
        oas = 42
        break
      case 4:
        oas = 44
        break
      case 6:
        oas = 52
        pgsizeBitmap |= 1n << 42n
        break
    }
    if (features & Feat.TRANS_S1 && features & Feat.TRANS_S2) features |= Feat.NESTING
    // arm_smmu_device_iidr_probe(): errata of Arm's SMMUs.
    const iidr = hw.readReg(Mmio.IIDR)
    if ((iidr & Iidr.IMPLEMENTER_MASK) === Iidr.IMPLEMENTER_ARM) {
      const product = (iidr >>> Iidr.PRODUCTID_SHIFT) & 0xfff
      const variant = (iidr >>> Iidr.VARIANT_SHIFT) & 0xf
      const revision = (iidr >>> Iidr.REVISION_SHIFT) & 0xf
      if (product === Iidr.PRODUCTID_ARM_MMU_600) {
        if (variant === 0 && revision <= 2) features &= ~Feat.SEV
        if (variant < 2) features &= ~Feat.NESTING
      } else if (product === Iidr.PRODUCTID_ARM_MMU_700) {
        features &= ~Feat.BTM
        if (variant < 1 || revision < 1) {
          opts |= Opt.CMDQ_FORCE_SYNC
          features &= ~Feat.NESTING
        }
      }
    }
    return {
      hw,
      index: smmus.length,
      features,
      options: opts,
      oas,
      pgsizeBitmap,
      asidBits,
      vmidBits,
      ssidBits,
      sidBits,
      vmids: new Set(),
      streams: new Map(),
      eventLog: [],
      priLog: [],
      cmdqTimeouts: 0,
      cmdqSkipped: 0,
      evtqOverflows: 0,
      priqOverflows: 0,
      cmdqShift,
      evtqShift,
      priqShift,
    }
  }

  /** arm_smmu_init_one_queue(). */
  const initQueue = (hw: SmmuV3Hw, shift: number, entryBytes: number): SwQueue => {
    const bytes = 2 ** shift * entryBytes
    const frames = Math.ceil(bytes / 4096)
    const pa = hw.memory.allocFrames(frames, FramePurpose.IOMMU_HW, frames) * 4096
    return { pa, shift, entryBytes, prod: 0, cons: 0 }
  }

  const qBase = (q: SwQueue): bigint =>
    Queue.BASE_RWA | (BigInt(q.pa) & Queue.BASE_ADDR_MASK) | BigInt(q.shift)

  /** arm_smmu_write_reg_sync(): write and wait for the ACK register to follow. */
  const writeRegSync = (hw: SmmuV3Hw, value: number, reg: number, ack: number) => {
    hw.writeReg(reg, value)
    if (hw.readReg(ack) !== value >>> 0) {
      throw new IommuError(
        'ETIMEDOUT',
        `${hw.name}: register 0x${reg.toString(16)} not acknowledged`,
      )
    }
  }

  /** arm_smmu_device_reset(). */
  const deviceReset = (smmu: SmmuDevice) => {
    const hw = smmu.hw
    if (hw.readReg(Mmio.CR0) & Cr0.SMMUEN) {
      // Abort incoming transactions while the SMMU is reset.
      hw.writeReg(Mmio.GBPA, hw.readReg(Mmio.GBPA) | Gbpa.ABORT | Gbpa.UPDATE)
    }
    writeRegSync(hw, 0, Mmio.CR0, Mmio.CR0ACK)
    // CR1: inner-shareable write-back tables and queues.
    hw.writeReg(Mmio.CR1, (3 << 10) | (1 << 8) | (1 << 6) | (3 << 4) | (1 << 2) | 1)
    hw.writeReg(Mmio.CR2, Cr2.PTM | Cr2.RECINVSID | (smmu.features & Feat.E2H ? Cr2.E2H : 0))
    // arm_smmu_write_strtab()
    const t = smmu.strtab
    const cfg = t.twoLevel
      ? (Strtab.CFG_FMT_2LVL << Strtab.CFG_FMT_SHIFT) |
        ((ilog2(t.numEnts) + Strtab.SPLIT) & Strtab.CFG_LOG2SIZE_MASK) |
        (Strtab.SPLIT << Strtab.CFG_SPLIT_SHIFT)
      : (Strtab.CFG_FMT_LINEAR << Strtab.CFG_FMT_SHIFT) | smmu.sidBits
    hw.writeReg64(Mmio.STRTAB_BASE, (BigInt(t.basePa) & Strtab.BASE_ADDR_MASK) | Strtab.BASE_RA)
    hw.writeReg(Mmio.STRTAB_BASE_CFG, cfg)
    hw.writeReg64(Mmio.CMDQ_BASE, qBase(smmu.cmdq))
    hw.writeReg(Mmio.CMDQ_PROD, smmu.cmdq.prod)
    hw.writeReg(Mmio.CMDQ_CONS, smmu.cmdq.cons)
    let enables = Cr0.CMDQEN
    writeRegSync(hw, enables, Mmio.CR0, Mmio.CR0ACK)
    issueCmdWithSync(smmu, cmdCfgiAll())
    if (smmu.features & Feat.HYP) issueCmdWithSync(smmu, cmdOp(Op.TLBI_EL2_ALL))
    issueCmdWithSync(smmu, cmdOp(Op.TLBI_NSNH_ALL))
    hw.writeReg64(Mmio.EVTQ_BASE, qBase(smmu.evtq))
    hw.writeReg(Mmio.EVTQ_PROD, smmu.evtq.prod)
    hw.writeReg(Mmio.EVTQ_CONS, smmu.evtq.cons)
    enables |= Cr0.EVTQEN
    writeRegSync(hw, enables, Mmio.CR0, Mmio.CR0ACK)
    if (smmu.features & Feat.PRI) {
      hw.writeReg64(Mmio.PRIQ_BASE, qBase(smmu.priq))
      hw.writeReg(Mmio.PRIQ_PROD, smmu.priq.prod)
      hw.writeReg(Mmio.PRIQ_CONS, smmu.priq.cons)
      enables |= Cr0.PRIQEN
      writeRegSync(hw, enables, Mmio.CR0, Mmio.CR0ACK)
    }
    if (smmu.features & Feat.ATS) {
      enables |= Cr0.ATSCHK
      writeRegSync(hw, enables, Mmio.CR0, Mmio.CR0ACK)
    }
    // arm_smmu_setup_irqs(): the handlers, then the enables.
    writeRegSync(hw, 0, Mmio.IRQ_CTRL, Mmio.IRQ_CTRLACK)
    hw.connectIrq('gerror', () => gerrorHandler(smmu))
    hw.connectIrq('evtq', () => evtqThread(smmu))
    let irqen = IrqCtrl.EVTQ_IRQEN | IrqCtrl.GERROR_IRQEN
    if (smmu.features & Feat.PRI) {
      hw.connectIrq('priq', () => priqThread(smmu))
      irqen |= IrqCtrl.PRIQ_IRQEN
    }
    writeRegSync(hw, irqen, Mmio.IRQ_CTRL, Mmio.IRQ_CTRLACK)
    enables |= Cr0.SMMUEN
    writeRegSync(hw, enables, Mmio.CR0, Mmio.CR0ACK)
  }

  // ---------------------------------------------------------------- the descriptor

  const driver = defineDriver({
    name: 'smmuv3',
    apiVersion: 1,
    capabilities: {
      dirtyTracking: true,
      nesting: true,
      pasid: true,
      enforceCacheCoherency: true,
      deferredFlush: true,
      iopf: true,
    },
    createUnit(ctx: UnitContext) {
      machineRef = ctx.machine
      const config = (ctx.config as SmmuV3HwConfig | undefined) ?? options.hw ?? {}
      const hw = new SmmuV3Hw(ctx.machine, `smmu${ctx.index}`, config)
      const p = hwProbe(hw)
      const { cmdqShift, evtqShift, priqShift, ...dev } = p
      // arm_smmu_init_structures(): queues and the stream table.
      const mem = hw.memory
      const twoLevel = (dev.features & Feat.TWO_LVL_STRTAB) !== 0
      let strtab: SmmuDevice['strtab']
      if (twoLevel) {
        const lastL1 = Math.floor((2 ** dev.sidBits - 1) / 2 ** Strtab.SPLIT)
        const numL1 = Math.min(lastL1 + 1, Strtab.MAX_L1_ENTRIES)
        const frames = Math.ceil((numL1 * 8) / 4096)
        const pa = mem.allocFrames(frames, FramePurpose.IOMMU_HW, frames) * 4096
        strtab = { twoLevel, basePa: pa, numEnts: numL1, l2: [] }
      } else {
        const n = 2 ** dev.sidBits
        const frames = Math.ceil((n * Ste.SIZE) / 4096)
        const pa = mem.allocFrames(frames, FramePurpose.IOMMU_HW, frames) * 4096
        const abort = makeAbortSte()
        for (let i = 0; i < n; i++) {
          for (let q = 0; q < 8; q++) mem.write64(pa + i * Ste.SIZE + 8 * q, abort[q] as bigint)
        }
        strtab = { twoLevel, basePa: pa, numEnts: n, l2: [] }
      }
      const smmu: SmmuDevice = {
        ...dev,
        cmdq: initQueue(hw, cmdqShift, 16),
        evtq: initQueue(hw, evtqShift, 32),
        priq:
          dev.features & Feat.PRI
            ? initQueue(hw, priqShift, 16)
            : { pa: 0, shift: 0, entryBytes: 16, prod: 0, cons: 0 },
        strtab,
        // The kernel also needs FEAT_SVA (CONFIG_ARM_SMMU_V3_SVA and a CPU the SMMU can
        // share tables with); the model assumes both.
        iopfQueue: dev.features & Feat.STALLS ? new IopfQueue(`smmu${ctx.index}-iopfq`) : null,
      }
      smmus.push(smmu)
      deviceReset(smmu)
      return hw
    },
    ops: {
      pageResponse,
      /** arm_smmu_capable(). */
      capable(dev, cap) {
        const master = masterOf(dev)
        const f = master.smmu.features
        switch (cap) {
          case IommuCap.CACHE_COHERENCY:
            return (f & Feat.COHERENCY) !== 0
          case IommuCap.ENFORCE_CACHE_COHERENCY:
            return canwbs(master)
          case IommuCap.NOEXEC:
          case IommuCap.DEFERRED_FLUSH:
            return true
          case IommuCap.DIRTY_TRACKING:
            return dbmCapable(master.smmu)
          case IommuCap.PCI_ATS_SUPPORTED:
            return atsSupported(master)
          default:
            return false
        }
      },
      /**
       * arm_smmu_hw_info(): `struct iommu_hw_info_arm_smmuv3 { u32 flags, __reserved,
       * idr[6], iidr, aidr }`, the raw registers.
       */
      hwInfo(dev, type) {
        if (type !== HwInfoType.DEFAULT && type !== HwInfoType.ARM_SMMUV3) {
          throw new IommuError('EOPNOTSUPP', `hw_info type ${type}`)
        }
        const hw = masterOf(dev).smmu.hw
        const data = new Uint8Array(40)
        const v = new DataView(data.buffer)
        for (let i = 0; i <= 5; i++) v.setUint32(8 + 4 * i, hw.readReg(Mmio.IDR0 + 4 * i), true)
        v.setUint32(32, hw.readReg(Mmio.IIDR), true)
        v.setUint32(36, hw.readReg(Mmio.AIDR), true)
        return { type: HwInfoType.ARM_SMMUV3, data }
      },
      /** arm_smmu_domain_alloc_paging_flags(). */
      domainAllocPagingFlags(dev, flags, data) {
        const smmu = masterOf(dev).smmu
        const allowed =
          HwptAllocFlags.DIRTY_TRACKING | HwptAllocFlags.PASID | HwptAllocFlags.NEST_PARENT
        if (flags & ~allowed) throw new IommuError('EOPNOTSUPP', `flags 0x${flags.toString(16)}`)
        if (data !== null) throw new IommuError('EOPNOTSUPP', 'user data')
        const d = new SmmuDomain({
          dirtyOps: null,
        })
        switch (flags) {
          case 0:
            // Prefer stage 1 when the SMMU has it.
            d.stage = smmu.features & Feat.TRANS_S1 ? DomainStage.S1 : DomainStage.S2
            break
          case HwptAllocFlags.NEST_PARENT:
            if (!(smmu.features & Feat.NESTING)) {
              throw new IommuError('EOPNOTSUPP', 'no nesting')
            }
            d.stage = DomainStage.S2
            d.nestParent = true
            break
          case HwptAllocFlags.DIRTY_TRACKING:
          case HwptAllocFlags.DIRTY_TRACKING | HwptAllocFlags.PASID:
          case HwptAllocFlags.PASID:
            if (!(smmu.features & Feat.TRANS_S1)) throw new IommuError('EOPNOTSUPP', 'no stage 1')
            // Whether the SMMU can track is not checked: iommufd asks IOMMU_CAP_DIRTY_TRACKING
            // before it allocates (EOPNOTSUPP), as 7.2's driver relies on.
            d.stage = DomainStage.S1
            break
          default:
            throw new IommuError('EOPNOTSUPP', `flags 0x${flags.toString(16)}`)
        }
        finalise(d, smmu, flags)
        if (flags & HwptAllocFlags.DIRTY_TRACKING && d.stage === DomainStage.S1) {
          d.dirtyOps = dirtyOps as DirtyOps
        }
        return d
      },
      /** arm_smmu_probe_device(). */
      probeDevice(dev) {
        const hw = dev.unit
        const smmu = smmus.find((s) => s.hw === hw)
        if (smmu === undefined || dev.iommu === null) throw new IommuError('ENODEV', dev.name)
        const sid = dev.streamId
        // arm_smmu_sid_in_range()
        const inRange = smmu.strtab.twoLevel
          ? sid >>> Strtab.SPLIT < smmu.strtab.numEnts
          : sid < smmu.strtab.numEnts
        if (!inRange) throw new IommuError('ERANGE', `StreamID 0x${sid.toString(16)} out of range`)
        const existing = smmu.streams.get(sid)
        if (existing !== undefined && existing.dev !== dev) {
          throw new IommuError('ENODEV', `aliasing StreamID 0x${sid.toString(16)} unsupported`)
        }
        if (smmu.strtab.twoLevel) initL2Strtab(smmu, sid)
        const stallForce = (smmu.features & Feat.STALL_FORCE) !== 0
        const master: Master = {
          smmu,
          dev,
          streams: [sid],
          cdTable: {
            allocated: false,
            pa: 0,
            frames: 0,
            l2: [],
            usedSsids: 0,
            inSte: false,
            s1fmt: S1Fmt.LINEAR,
            s1cdmax: 0,
          },
          atsEnabled: false,
          steAtsEnabled: false,
          // PCI functions never have dma-can-stall; only a forced stall model stalls them.
          stallEnabled: stallForce,
          atsAlwaysOn: false,
          vmaster: null,
          iopfRefcount: 0,
          // arm_smmu_enable_pasid(): the PCI PASID width, capped by the SMMU's.
          ssidBits: Math.min(dev.pasidBits, smmu.ssidBits),
        }
        if (!(smmu.features & Feat.TWO_LVL_CDTAB)) {
          master.ssidBits = Math.min(master.ssidBits, Cd.LINEAR_CDMAX)
        }
        smmu.streams.set(sid, master)
        dev.iommu.priv = master
        return hw as SmmuV3Hw
      },
      /** arm_smmu_release_device(). */
      releaseDevice(dev) {
        const master = masterOf(dev)
        if (master.atsEnabled) pciDisableAts(master)
        for (const sid of master.streams) master.smmu.streams.delete(sid)
        freeCdTables(master)
      },
      deviceGroup(dev) {
        if (machineRef === null) throw new IommuError('ENODEV', 'smmuv3 not initialised')
        return machineRef.iommu.pciDeviceGroup(dev)
      },
      /** arm_smmu_get_resv_regions(): the software-managed MSI window. */
      getResvRegions(): IommuResvRegion[] {
        return [
          {
            start: MSI_IOVA_BASE,
            length: MSI_IOVA_LENGTH,
            prot: Prot.WRITE | Prot.NOEXEC | Prot.MMIO,
            type: ResvType.SW_MSI,
          },
        ]
      },
      /** arm_smmu_def_domain_type(): identity only for HiSilicon's PTT device. */
      defDomainType() {
        return 0
      },
      userPasidTable: true,
      blockedDomain,
      releaseDomain: blockedDomain,
      identityDomain,
    },
    domainOps,
    dirtyOps,
    nesting: { getViommuSize, viommuInit },
  })
  testHooks.set(driver, hooks)
  return driver
}

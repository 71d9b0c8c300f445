/**
 * The Linux intel-iommu driver (`drivers/iommu/intel/iommu.c`, `pasid.c`, `cache.c`,
 * `dmar.c`, `prq.c`) over the hardware model, in scalable mode: it programs the root
 * table, scalable-mode context entries, PASID directories and PASID tables in memory and
 * talks to the unit only through MMIO registers and the invalidation queue, as the kernel
 * does.
 *
 * What it models of the 7.2 driver: probe from CAP/ECAP (scalable mode only, queued
 * invalidation with wait descriptors), first-stage (x86-64) and second-stage (VT-d SS)
 * paging domains with 7.2's `domain_alloc_paging_flags` choices, the identity and blocked
 * domains, RID attach (block first, then set up the PASID-0 entry) and PASID attach and
 * replace (`set_dev_pasid`: tear down, then set up), cache tags and the flush strategy of
 * `cache.c` (batched IOTLB / PASID-based IOTLB / device-TLB descriptors), second-stage dirty
 * tracking through SSADE, enforce-cache-coherency (SNP / PGSNP), nested domains
 * (`IOMMU_HWPT_DATA_VTD_S1`, attach per RID and per PASID, user cache invalidation,
 * NESTING cache tags), the fault handler, and the page request queue reader reporting
 * through the core's IOPF path. Not modelled: SVA, interrupt remapping, legacy
 * (non-scalable) mode.
 *
 * @module
 */

import {
  copyStructFromUser,
  copyStructFromUserArray,
  type DirtyOps,
  type DomainOps,
  DomainType,
  type Driver,
  defineDriver,
  FramePurpose,
  HwInfoType,
  HwptAllocFlags,
  HwptDataType,
  IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE,
  IOMMU_FAULT_PAGE_REQUEST_PASID_VALID,
  IOMMU_FAULT_PAGE_RESPONSE_NEEDS_PASID,
  IOMMU_FAULT_PERM_EXEC,
  IOMMU_FAULT_PERM_PRIV,
  IOMMU_FAULT_PERM_READ,
  IOMMU_FAULT_PERM_WRITE,
  IOMMU_NO_PASID,
  IommuCap,
  IommuDomain,
  IommuError,
  type IommuResvRegion,
  type IopfFault,
  IopfQueue,
  type IotlbGather,
  iopfFault,
  type Machine,
  type PageResponse,
  type PciDevice,
  Prot,
  ResvType,
  SYNC_MAP_NOOP,
  type UnitContext,
  type UserData,
  type UserDataArray,
} from '@iommu/core'
import {
  type AnyPageTable,
  type FormatParams,
  PageTable,
  pageTableDirtyOps,
  pageTableDomainOps,
  type VtdSsConfig,
  type VtdSsParams,
  vtdss,
  type X86_64Config,
  x86_64,
} from '@iommu/io-pgtable'
import {
  decodePageRequest,
  type PageRequestRecord,
  type VtdFault,
  VtdIommuHw,
  type VtdIommuHwConfig,
} from './hw/iommu.ts'
import {
  Cap,
  CcGran,
  Ctx,
  capFro,
  capMamv,
  capMgaw,
  capNdoms,
  capNfr,
  capSagaw,
  capSllps,
  Ecap,
  FLPT_DEFAULT_DID,
  FRCD_SIZE,
  Frcd,
  Fsts,
  Gcmd,
  IotlbGran,
  Iqa,
  Iwd,
  PASID_ENTRY_SIZE,
  PcGran,
  Pe,
  Pgtt,
  PiotlbGran,
  PRQ_DESC_SIZE,
  Prs,
  QI_DESC_SIZE,
  QI_DONE,
  Qi,
  Reg,
  RespCode,
  ROOT_ENTRY_SIZE,
  Rtaddr,
  SM_CONTEXT_SIZE,
} from './hw/regs.ts'

/** `IOAPIC_RANGE_START` / `IOAPIC_RANGE_END`: the interrupt (MSI) window. */
export const IOAPIC_RANGE_START = 0xfee0_0000n
export const IOAPIC_RANGE_END = 0xfeef_ffffn
/** `IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17`: no read-only mappings on a nest parent. */
export const IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17 = 1

/** `struct iommu_hwpt_vtd_s1` flags (`IOMMU_VTD_S1_*`). */
export const IOMMU_VTD_S1_SRE = 1 << 0
export const IOMMU_VTD_S1_EAFE = 1 << 1
export const IOMMU_VTD_S1_WPE = 1 << 2
/** `IOMMU_HWPT_INVALIDATE_DATA_VTD_S1`: the invalidation array type of a VT-d nested HWPT. */
export const IOMMU_HWPT_INVALIDATE_DATA_VTD_S1 = 0
/** `IOMMU_VTD_INV_FLAGS_LEAF`: only leaf entries changed (IH = 1). */
export const IOMMU_VTD_INV_FLAGS_LEAF = 1 << 0
/** `sizeof(struct iommu_hwpt_vtd_s1)` and `sizeof(struct iommu_hwpt_vtd_s1_invalidate)`. */
const VTD_S1_SIZE = 24
const VTD_S1_INV_SIZE = 24
/** `QI_LENGTH`: descriptors in the invalidation queue. */
const QI_LENGTH = 256
/** `QI_MAX_BATCHED_DESC_COUNT`. */
const QI_MAX_BATCH = 16
/** `PRQ_ORDER`: the page request queue is 2^4 pages. */
const PRQ_ORDER = 4
/** `MAX_AGAW_PFN_WIDTH`: a size order that means "everything". */
const MAX_AGAW_PFN_WIDTH = 52
/** `QI_DEV_IOTLB_MAX_INVS`. */
const QI_DEV_IOTLB_MAX_INVS = 32
/** `intel_pasid_max_id`. */
const PASID_MAX = 0x10_0000
const QI_IN_USE = 1
const QI_FREE = 0
const U64_MAX = 0xffff_ffff_ffff_ffffn

/** A firmware RMRR (DMAR table): a range that devices in its scope need identity-mapped. */
export interface Rmrr {
  readonly base: bigint
  /** Last byte (inclusive). */
  readonly end: bigint
  /** BDFs (`'SSSS:BB:DD.F'`) in the RMRR's device scope. */
  readonly devices: readonly string[]
  /** The devices are USB or graphics (`device_rmrr_is_relaxable`): DIRECT_RELAXABLE. */
  readonly relaxable?: boolean
}

/** Options of {@link intel}. */
export interface IntelOptions {
  /** Hardware configuration of units whose `createMachine` entry gives none. */
  readonly hw?: VtdIommuHwConfig
  /** `intel_iommu=sp_off`: 4 KiB pages only. Default false. */
  readonly superpageOff?: boolean
  /** Firmware RMRRs, reported as DIRECT reserved regions of the devices in their scope. */
  readonly rmrr?: readonly Rmrr[]
}

/**
 * Test-only switches that remove one invalidation from the driver's path, so that tests
 * can show the hardware model catching it. Never set outside tests.
 */
export interface IntelTestHooks {
  /** Drop the IOTLB / PASID-based IOTLB descriptors of `cache_tag_flush_range`. */
  skipIotlbFlush: boolean
  /** Drop the device-TLB descriptors of `cache_tag_flush_range`. */
  skipDevtlbFlush: boolean
  /** Drop the PASID-cache invalidation after a PASID entry changes. */
  skipPasidCacheFlush: boolean
}

/** A 128-bit descriptor as the driver builds it (qw2/qw3 are zero). */
type QiDesc = readonly [bigint, bigint]

/** Per-unit driver state (`struct intel_iommu`). */
interface IntelIommu {
  readonly hw: VtdIommuHw
  readonly seqId: number
  readonly cap: bigint
  readonly ecap: bigint
  readonly agaw: number
  readonly rootPa: number
  readonly qiPa: number
  readonly qiStatusPa: number
  freeHead: number
  gcmd: number
  /** Domain IDs in use (`domain_ida`), indexed by DID. */
  readonly dids: Uint8Array
  readonly prqPa: number
  /** Faults the fault handler read (`dmar_fault`). */
  readonly faultLog: VtdFault[]
  /** Page requests the PRQ thread read (`prq_event_thread`). */
  readonly prqLog: PageRequestRecord[]
  /** `qi_submit_sync` calls that returned -EINVAL after an IQE. */
  qiErrors: number
  /** The IOPF queue of the unit's PRI devices (`iopf_queue`). */
  iopfQueue: IopfQueue | null
}

/** A device's PASID table (`struct pasid_table`). */
interface PasidTable {
  readonly dirPa: number
  readonly dirFrames: number
  readonly maxPasid: number
}

/** Per-device driver state (`struct device_domain_info`). */
interface DevInfo {
  readonly dev: PciDevice
  readonly bus: number
  readonly devfn: number
  readonly sid: number
  readonly iommu: IntelIommu
  readonly atsSupported: boolean
  readonly pasidSupported: boolean
  readonly priSupported: boolean
  readonly atsQdep: number
  atsEnabled: boolean
  pasidEnabled: boolean
  priEnabled: boolean
  /** Fault-capable domains attached (`iopf_refcount`). */
  iopfRefcount: number
  domainAttached: boolean
  domain: VtdDomain | null
  pasidTable: PasidTable | null
}

/** Cache tag types (`enum cache_tag_type`). */
const TagType = { IOTLB: 0, DEVTLB: 1, NESTING_IOTLB: 2, NESTING_DEVTLB: 3 } as const

/** `struct cache_tag`. */
interface CacheTag {
  readonly type: number
  readonly iommu: IntelIommu
  readonly did: number
  readonly pasid: number
  /** The device for device-TLB tags. */
  readonly info: DevInfo | null
  users: number
}

/** A VT-d paging domain (`struct dmar_domain`). */
export class VtdDomain extends IommuDomain {
  /**
   * Which table the domain translates with: first stage (x86-64), second stage, or a
   * user-managed first stage nested on a second-stage parent.
   */
  readonly stage: 'fs' | 'ss' | 'nested'
  fspt: PageTable<X86_64Config, FormatParams> | null = null
  sspt: PageTable<VtdSsConfig, VtdSsParams> | null = null
  /** Per-unit domain IDs and reference counts (`iommu_array`). */
  readonly iommus: Map<IntelIommu, { did: number; refcnt: number }> = new Map()
  /** Devices attached through their RID (`devices`). */
  readonly devices: Set<DevInfo> = new Set()
  /** (device, PASID) attachments (`dev_pasids`). */
  readonly devPasids: { info: DevInfo; pasid: number }[] = []
  /** `cache_tags`. */
  readonly cacheTags: CacheTag[] = []
  /** PASID entries get PGSNP / leaves get SNP (`force_snooping`). */
  forceSnooping = false
  /** SSADE is on in every PASID entry of the domain (`dirty_tracking`). */
  dirtyTracking = false
  /** Allocated with NEST_PARENT (`nested_parent`). */
  nestedParent = false
  /** Flush on map (`iotlb_sync_map`): caching mode or RWBF hardware. */
  iotlbSyncMapNeeded = false
  /** Nest parent: the nested domains on it (`s1_domains`). */
  readonly s1Domains: Set<VtdDomain> = new Set()
  /** Nested domain: its parent (`s2_domain`). */
  s2Domain: VtdDomain | null = null
  /** Nested domain: the user's `struct iommu_hwpt_vtd_s1` (`s1_cfg`). */
  s1Cfg: { readonly flags: bigint; readonly pgtblAddr: bigint; readonly addrWidth: number } | null =
    null

  constructor(stage: 'fs' | 'ss' | 'nested', init: ConstructorParameters<typeof IommuDomain>[0]) {
    super(init)
    this.stage = stage
  }

  /** The domain ID of the domain on a unit, or -1. */
  didOn(hw: VtdIommuHw): number {
    for (const [iommu, info] of this.iommus) if (iommu.hw === hw) return info.did
    return -1
  }
}

interface IntelCaps {
  readonly dirtyTracking: true
  readonly nesting: true
  readonly pasid: true
  readonly enforceCacheCoherency: true
  readonly deferredFlush: true
  readonly iopf: true
}

const testHooks = new WeakMap<Driver, IntelTestHooks>()

/** The test-only switches of a driver made by {@link intel}. */
export function intelTestHooks(driver: Driver): IntelTestHooks {
  const h = testHooks.get(driver)
  if (h === undefined) throw new Error(`${driver.name} is not an Intel driver`)
  return h
}

/** The hardware unit behind a device (for tests and tools). */
export function intelUnitOf(dev: PciDevice): VtdIommuHw {
  const u = dev.iommu?.unit ?? dev.unit
  if (!(u instanceof VtdIommuHw)) throw new IommuError('ENODEV', `${dev.name} is not behind VT-d`)
  return u
}

/** The fault records the driver's fault handler read from the device's unit. */
export function intelFaultLog(dev: PciDevice): readonly VtdFault[] {
  return infoOf(dev).iommu.faultLog
}

/** The page requests the driver's page-request thread read from the device's unit. */
export function intelPageRequestLog(dev: PciDevice): readonly PageRequestRecord[] {
  return infoOf(dev).iommu.prqLog
}

function infoOf(dev: PciDevice): DevInfo {
  const d = dev.iommu?.priv
  if (d === null || d === undefined)
    throw new IommuError('ENODEV', `${dev.name} not probed by intel`)
  return d as DevInfo
}

/** `__iommu_calculate_sagaw` then `__iommu_calculate_agaw` for 57 bits. */
function calculateAgaw(cap: bigint, ecap: bigint): number {
  const sl = capSagaw(cap)
  const fl = 4 | (cap & Cap.FL5LP ? 8 : 0)
  let sagaw = sl
  if (ecap & Ecap.FSTS) sagaw = ecap & Ecap.SSTS ? fl & sl : fl
  for (let agaw = 3; agaw >= 0; agaw--) if ((sagaw >> agaw) & 1) return agaw
  return -1
}

/** `compute_vasz_lg2_fs`. */
function vaszFs(cap: bigint): { vasz: number; top: number } {
  const mgaw = capMgaw(cap)
  if (mgaw > 48 && cap & Cap.FL5LP) return { vasz: Math.min(57, mgaw), top: 4 }
  return { vasz: Math.min(48, mgaw), top: 3 }
}

/** `compute_vasz_lg2_ss`: 0 when no table size fits. */
function vaszSs(cap: bigint): { vasz: number; top: number } {
  const sagaw = capSagaw(cap)
  const mgaw = capMgaw(cap)
  const ffs = (x: number) => (x === 0 ? 0 : 32 - Math.clz32(x & -x))
  if (mgaw > 48 && sagaw >= 8) return { vasz: Math.min(57, mgaw), top: 4 }
  if (mgaw > 39 && sagaw >= 4) return { vasz: Math.min(48, mgaw), top: 3 + ffs(sagaw >> 3) }
  if (mgaw > 30 && sagaw >= 2) return { vasz: Math.min(39, mgaw), top: 2 + ffs(sagaw >> 2) }
  return { vasz: 0, top: 0 }
}

/** `calculate_psi_aligned_address`: [address, size order] covering [start, last]. */
function psiAligned(start: bigint, last: bigint): [bigint, number] {
  const s = start & ~0xfffn & U64_MAX
  const x = s ^ last
  const szLg2 = x === 0n ? 0 : x.toString(2).length
  if (szLg2 <= 12) return [s, 0]
  if (szLg2 >= 64) return [0n, MAX_AGAW_PFN_WIDTH]
  return [s & ~((1n << BigInt(szLg2)) - 1n), szLg2 - 12]
}

/**
 * The Intel VT-d driver. Each call makes a separate driver (registered once per machine);
 * every `createMachine` entry with it brings up one DMA-remapping unit.
 */
export function intel(options: IntelOptions = {}): Driver<IntelCaps> {
  const hooks: IntelTestHooks = {
    skipIotlbFlush: false,
    skipDevtlbFlush: false,
    skipPasidCacheFlush: false,
  }
  const iommus: IntelIommu[] = []
  let machineRef: Machine | null = null

  const smSupported = (iommu: IntelIommu) => (iommu.ecap & Ecap.SMTS) !== 0n
  const pasidSupported = (iommu: IntelIommu) =>
    smSupported(iommu) && (iommu.ecap & Ecap.PASID) !== 0n
  const ssadsSupported = (iommu: IntelIommu) =>
    smSupported(iommu) && (iommu.ecap & Ecap.SSADS) !== 0n && (iommu.ecap & Ecap.SMPWC) !== 0n
  const nestedSupported = (iommu: IntelIommu) =>
    smSupported(iommu) && (iommu.ecap & Ecap.NEST) !== 0n

  // ---------------------------------------------------------------- queued invalidation

  /**
   * `qi_submit_sync`: copy the descriptors and a wait descriptor (status write of
   * QI_DONE) to the queue, move the tail, poll the status. An IQE whose head is the first
   * descriptor of this submission is repaired as the kernel does (the bad descriptor is
   * replaced by the wait descriptor, IQE cleared) and returns -EINVAL (false).
   */
  const qiSubmitSync = (iommu: IntelIommu, descs: readonly QiDesc[], drain = false): boolean => {
    const hw = iommu.hw
    const mem = hw.memory
    const n = descs.length
    const index = iommu.freeHead
    const waitIndex = (index + n) % QI_LENGTH
    const slot = (i: number) => iommu.qiPa + (i % QI_LENGTH) * QI_DESC_SIZE
    for (let i = 0; i < n; i++) {
      const d = descs[i] as QiDesc
      const pa = slot(index + i)
      mem.write64(pa, d[0])
      mem.write64(pa + 8, d[1])
      mem.write64(pa + 16, 0n)
      mem.write64(pa + 24, 0n)
      mem.write32(iommu.qiStatusPa + ((index + i) % QI_LENGTH) * 4, QI_IN_USE)
    }
    const statusPa = iommu.qiStatusPa + waitIndex * 4
    mem.write32(statusPa, QI_IN_USE)
    const wait0 = (BigInt(QI_DONE) << 32n) | Iwd.SW | BigInt(Qi.IWD) | (drain ? Iwd.PD : 0n)
    const waitPa = slot(waitIndex)
    mem.write64(waitPa, wait0)
    mem.write64(waitPa + 8, BigInt(statusPa))
    mem.write64(waitPa + 16, 0n)
    mem.write64(waitPa + 24, 0n)
    iommu.freeHead = (index + n + 1) % QI_LENGTH
    hw.writeMmio(Reg.IQT, BigInt(iommu.freeHead * QI_DESC_SIZE))
    let ok = true
    if (mem.read32(statusPa) !== QI_DONE) {
      // qi_check_fault
      const fsts = Number(hw.readMmio(Reg.FSTS))
      const head = Number(hw.readMmio(Reg.IQH)) / QI_DESC_SIZE
      if (fsts & Fsts.IQE && head === index) {
        const bad = slot(head)
        for (let k = 0; k < QI_DESC_SIZE; k += 8) mem.write64(bad + k, mem.read64(waitPa + k))
        hw.writeMmio(Reg.FSTS, BigInt(Fsts.IQE))
        iommu.qiErrors++
        ok = false
      } else {
        throw new IommuError(
          'EIO',
          `${hw.name}: invalidation wait never completed (FSTS 0x${fsts.toString(16)}, IQH ${head}); qi_submit_sync would spin`,
        )
      }
    }
    for (let i = 0; i <= n; i++)
      mem.write32(iommu.qiStatusPa + ((index + i) % QI_LENGTH) * 4, QI_FREE)
    return ok
  }

  /** `qi_desc_iotlb`. */
  const descIotlb = (
    iommu: IntelIommu,
    did: number,
    addr: bigint,
    am: number,
    gran: number,
  ): QiDesc => {
    const dw = iommu.cap & Cap.DWD ? 1n : 0n
    const dr = iommu.cap & Cap.DRD ? 1n : 0n
    const ih = addr & 1n
    return [
      (BigInt(did) << 16n) | (dr << 7n) | (dw << 6n) | (BigInt(gran) << 4n) | BigInt(Qi.IOTLB),
      (addr & ~0xfffn) | (ih << 6n) | BigInt(am & 0x3f),
    ]
  }

  /** `qi_desc_piotlb_all` / `qi_desc_piotlb`. */
  const descPiotlb = (
    did: number,
    pasid: number,
    addr: bigint,
    am: number,
    ih: boolean,
  ): QiDesc => {
    const q0 = (BigInt(pasid) << 32n) | (BigInt(did) << 16n) | BigInt(Qi.EIOTLB)
    if (am >= MAX_AGAW_PFN_WIDTH) return [q0 | (BigInt(PiotlbGran.ALL_IN_PASID) << 4n), 0n]
    return [
      q0 | (BigInt(PiotlbGran.PAGE_IN_PASID) << 4n),
      (addr & ~0xfffn) | (ih ? 1n << 6n : 0n) | BigInt(am),
    ]
  }

  /** `qi_desc_dev_iotlb`. */
  const descDevIotlb = (info: DevInfo, addr: bigint, mask: number): QiDesc => {
    let q1 = addr & ~0xfffn
    if (mask) q1 = ((addr | ((1n << BigInt(12 + mask - 1)) - 1n)) & ~0xfffn & U64_MAX) | 1n
    const qdep = info.atsQdep >= QI_DEV_IOTLB_MAX_INVS ? 0 : info.atsQdep
    return [(BigInt(info.sid) << 32n) | (BigInt(qdep) << 16n) | BigInt(Qi.DIOTLB), q1]
  }

  /** `qi_desc_dev_iotlb_pasid`. */
  const descDevIotlbPasid = (info: DevInfo, pasid: number, addr: bigint, order: number): QiDesc => {
    let q1 = addr & ~0xfffn
    if (order) {
      q1 |= ((1n << BigInt(order + 12)) - 1n) & ~0xfffn
      q1 &= ~(1n << BigInt(12 + order - 1))
      q1 |= 1n << 11n
    }
    const qdep = info.atsQdep >= QI_DEV_IOTLB_MAX_INVS ? 0 : info.atsQdep
    return [
      (BigInt(pasid) << 32n) |
        (BigInt(info.sid) << 16n) |
        (BigInt(qdep) << 4n) |
        BigInt(Qi.DEIOTLB),
      q1 & U64_MAX,
    ]
  }

  const flushContextDevice = (iommu: IntelIommu, did: number, sid: number) => {
    qiSubmitSync(iommu, [
      [
        (BigInt(sid) << 32n) | (BigInt(did) << 16n) | (BigInt(CcGran.DEVICE) << 4n) | BigInt(Qi.CC),
        0n,
      ],
    ])
  }

  const flushPasidCache = (iommu: IntelIommu, did: number, gran: number, pasid: number) => {
    if (hooks.skipPasidCacheFlush && gran === PcGran.PASID) return
    qiSubmitSync(iommu, [
      [(BigInt(pasid) << 32n) | (BigInt(did) << 16n) | (BigInt(gran) << 4n) | BigInt(Qi.PC), 0n],
    ])
  }

  const flushIotlbDsi = (iommu: IntelIommu, did: number) =>
    qiSubmitSync(iommu, [descIotlb(iommu, did, 0n, 0, IotlbGran.DOMAIN)])

  /** `devtlb_invalidation_with_pasid`: everything of (device, PASID) when ATS is on. */
  const devtlbInvalidationWithPasid = (info: DevInfo, pasid: number) => {
    if (!info.atsEnabled || !(info.iommu.gcmd & Gcmd.TE)) return
    if (pasid === IOMMU_NO_PASID) {
      qiSubmitSync(info.iommu, [descDevIotlb(info, 0n, 64 - 12)])
    } else {
      qiSubmitSync(info.iommu, [descDevIotlbPasid(info, pasid, 0n, 64 - 12)])
    }
  }

  // ---------------------------------------------------------------- fault and PRQ handlers

  /** `dmar_fault`: read and clear the pending primary fault records. */
  const dmarFault = (iommu: IntelIommu) => {
    const hw = iommu.hw
    const fsts = Number(hw.readMmio(Reg.FSTS))
    if (!(fsts & Fsts.PPF)) return
    const fro = capFro(iommu.cap)
    const nfr = capNfr(iommu.cap)
    let idx = (fsts >> Fsts.FRI_SHIFT) & 0xff
    for (;;) {
      const reg = fro + idx * FRCD_SIZE
      const d3 = Number(hw.readMmio(reg + 12))
      if (!(d3 & Frcd.F)) break
      const d2 = Number(hw.readMmio(reg + 8) & 0xffff_ffffn)
      iommu.faultLog.push({
        reason: d3 & 0xff,
        sid: d2 & 0xffff,
        pasid: d2 & Frcd.PP ? (d3 >>> Frcd.PV_SHIFT) & 0xf_ffff : null,
        addr: hw.readMmio(reg) & ~0xfffn,
        read: (d3 & Frcd.T_READ) !== 0,
      })
      hw.writeMmio(reg + 12, BigInt(Frcd.F >>> 0))
      idx = (idx + 1) % nfr
    }
    hw.writeMmio(Reg.FSTS, BigInt(Fsts.PFO | Fsts.PPF | Fsts.PRO))
  }

  /** `handle_bad_prq_event`: answer a group the driver cannot report. */
  const badPrq = (iommu: IntelIommu, r: PageRequestRecord, code: number) => {
    if (!r.lpig) return
    qiSubmitSync(iommu, [
      [
        (BigInt(r.pasid ?? 0) << 32n) |
          (BigInt(r.rid) << 16n) |
          (r.pasidPresent ? 1n << 4n : 0n) |
          (BigInt(code) << 12n) |
          BigInt(Qi.PGRP_RESP),
        BigInt(r.prgIndex) << 3n,
      ],
    ])
  }

  /** `prq_event_thread`: read the page request queue from PQH to PQT. */
  const prqEventThread = (iommu: IntelIommu) => {
    const hw = iommu.hw
    hw.writeMmio(Reg.PRS, BigInt(Prs.PPR))
    const mask = 4096 * 2 ** PRQ_ORDER - PRQ_DESC_SIZE
    const tail = Number(hw.readMmio(Reg.PQT)) & mask
    let head = Number(hw.readMmio(Reg.PQH)) & mask
    while (head !== tail) {
      const pa = iommu.prqPa + head
      const r = decodePageRequest(hw.memory.read64(pa), hw.memory.read64(pa + 8))
      const canonical = r.addr < 1n << 47n || r.addr >= U64_MAX - (1n << 47n) + 1n
      if (!canonical || (r.priv && (r.read || r.write)) || (r.exe && r.read)) {
        badPrq(iommu, r, RespCode.INVALID)
      } else if (r.lpig && !r.read && !r.write) {
        // A stop marker: no response.
      } else if (!iommuHasDevice(iommu, r.rid)) {
        badPrq(iommu, r, RespCode.INVALID)
      } else {
        iommu.prqLog.push(r)
        prqReport(iommu, r, pa)
      }
      head = (head + PRQ_DESC_SIZE) & mask
    }
    hw.writeMmio(Reg.PQH, BigInt(tail))
    if (Number(hw.readMmio(Reg.PRS)) & Prs.PRO) {
      const h = Number(hw.readMmio(Reg.PQH)) & mask
      const t = Number(hw.readMmio(Reg.PQT)) & mask
      if (h === t) hw.writeMmio(Reg.PRS, BigInt(Prs.PRO))
    }
  }

  /** `intel_prq_report`: hand the request to the core's IOPF path. */
  const prqReport = (iommu: IntelIommu, r: PageRequestRecord, pa: number) => {
    const info = devices.get(iommu.hw)?.get(r.rid)
    if (info === undefined || machineRef === null) return
    let perm = 0
    if (r.read) perm |= IOMMU_FAULT_PERM_READ
    if (r.write) perm |= IOMMU_FAULT_PERM_WRITE
    if (r.exe) perm |= IOMMU_FAULT_PERM_EXEC
    if (r.priv) perm |= IOMMU_FAULT_PERM_PRIV
    let flags = r.lpig ? IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE : 0
    if (r.pasidPresent) {
      flags |= IOMMU_FAULT_PAGE_REQUEST_PASID_VALID | IOMMU_FAULT_PAGE_RESPONSE_NEEDS_PASID
    }
    const mem = iommu.hw.memory
    const evt = iopfFault({
      addr: r.addr,
      pasid: r.pasid ?? 0,
      grpid: r.prgIndex,
      perm,
      flags,
      privateData: [mem.read64(pa + 16), mem.read64(pa + 24)],
    })
    try {
      machineRef.iommu.iommuReportDeviceFault(info.dev, evt)
    } catch (e) {
      // No handler: the core already answered INVALID through pageResponse.
      if (!(e instanceof IommuError)) throw e
    }
  }

  const devices = new Map<VtdIommuHw, Map<number, DevInfo>>()
  const iommuHasDevice = (iommu: IntelIommu, rid: number) =>
    devices.get(iommu.hw)?.get(rid)?.atsSupported === true

  // ---------------------------------------------------------------- context and PASID tables

  /** `iommu_context_addr`: the scalable-mode context entry, allocating its table. */
  const contextAddr = (iommu: IntelIommu, bus: number, devfn: number, alloc: boolean): number => {
    const mem = iommu.hw.memory
    const rootPa = iommu.rootPa + bus * ROOT_ENTRY_SIZE + (devfn >= 0x80 ? 8 : 0)
    let root = mem.read64(rootPa)
    if ((root & 1n) === 0n) {
      if (!alloc) return -1
      const table = mem.allocFrame(FramePurpose.IOMMU_HW) * 4096
      root = BigInt(table) | 1n
      mem.write64(rootPa, root)
    }
    return Number(root & Rtaddr.ADDR_MASK) + (devfn & 0x7f) * SM_CONTEXT_SIZE
  }

  /** `intel_pasid_alloc_table`. */
  const allocPasidTable = (info: DevInfo): PasidTable => {
    const maxPasid = info.pasidSupported ? Math.min(info.dev.pciMaxPasids, PASID_MAX) : 0
    const size = maxPasid >> 3
    let order = 0
    while (size > 4096 * 2 ** order) order++
    const frames = 2 ** order
    const mem = info.iommu.hw.memory
    const dirPa = mem.allocFrames(frames, FramePurpose.IOMMU_HW, frames) * 4096
    return { dirPa, dirFrames: frames, maxPasid: 2 ** (order + 12 + 3) }
  }

  /** `intel_pasid_free_table`. */
  const freePasidTable = (info: DevInfo) => {
    const t = info.pasidTable
    if (t === null) return
    info.pasidTable = null
    const mem = info.iommu.hw.memory
    for (let i = 0; i < t.maxPasid >> 6; i++) {
      const pde = mem.read64(t.dirPa + i * 8)
      if (pde & 1n) mem.freeFrames(Number(pde >> 12n), 1)
    }
    mem.freeFrames(t.dirPa / 4096, t.dirFrames)
  }

  /** `intel_pasid_get_entry`: the PASID entry's address, allocating its table; -1 = none. */
  const pasidEntry = (info: DevInfo, pasid: number): number => {
    const t = info.pasidTable
    if (t === null || pasid >= t.maxPasid) return -1
    const mem = info.iommu.hw.memory
    const pdePa = t.dirPa + (pasid >> 6) * 8
    let pde = mem.read64(pdePa)
    if ((pde & 1n) === 0n) {
      pde = BigInt(mem.allocFrame(FramePurpose.IOMMU_HW) * 4096) | 1n
      mem.write64(pdePa, pde)
    }
    return Number(pde & ~0xfffn) + (pasid & 63) * PASID_ENTRY_SIZE
  }

  /** `context_entry_set_pasid_table` via `device_pasid_table_setup`. */
  const setupSmContext = (info: DevInfo) => {
    const iommu = info.iommu
    const mem = iommu.hw.memory
    const ctx = contextAddr(iommu, info.bus, info.devfn, true)
    if (mem.read64(ctx) & Ctx.P) return
    const t = info.pasidTable as PasidTable
    const maxPde = t.maxPasid >> 6
    const firstBit = 31 - Math.clz32(maxPde & -maxPde)
    const pds = firstBit < 7 ? 0 : firstBit - 7
    let lo = BigInt(t.dirPa) | (BigInt(pds) << Ctx.PDTS_SHIFT)
    if (info.atsSupported) lo |= Ctx.DTE
    if (info.pasidSupported) lo |= Ctx.PASIDE
    if (info.priSupported) lo |= Ctx.PRE
    for (let k = 16; k < SM_CONTEXT_SIZE; k += 8) mem.write64(ctx + k, 0n)
    mem.write64(ctx + 8, BigInt(IOMMU_NO_PASID))
    mem.write64(ctx, lo)
    mem.write64(ctx, lo | Ctx.P)
    if (iommu.cap & Cap.CM) {
      flushContextDevice(iommu, 0, info.sid)
      flushIotlbDsi(iommu, 0)
    }
  }

  /** `device_pasid_table_teardown`. */
  const teardownSmContext = (info: DevInfo) => {
    const iommu = info.iommu
    const mem = iommu.hw.memory
    const ctx = contextAddr(iommu, info.bus, info.devfn, false)
    if (ctx < 0) return
    const lo = mem.read64(ctx)
    const did = Number((mem.read64(ctx + 8) >> 8n) & 0xffffn)
    mem.write64(ctx, lo & ~Ctx.P)
    // intel_context_flush_no_pasid: device-selective context cache, then the device TLB.
    flushContextDevice(iommu, did, info.sid)
    if (info.atsEnabled) {
      qiSubmitSync(iommu, [descDevIotlb(info, 0n, MAX_AGAW_PFN_WIDTH)])
    }
    for (let k = 0; k < SM_CONTEXT_SIZE; k += 8) mem.write64(ctx + k, 0n)
  }

  /** Write a PASID entry's eight qwords, val0 (with P) last. */
  const writePasidEntry = (mem: VtdIommuHw['memory'], pa: number, v: readonly bigint[]) => {
    for (let k = 7; k >= 1; k--) mem.write64(pa + 8 * k, v[k] ?? 0n)
    mem.write64(pa, (v[0] as bigint) & ~Pe.P)
    mem.write64(pa, v[0] as bigint)
  }

  /** `pasid_flush_caches` after a not-present → present change. */
  const pasidFlushCaches = (iommu: IntelIommu, pasid: number, did: number) => {
    if (iommu.cap & Cap.CM) {
      flushPasidCache(iommu, did, PcGran.PASID, pasid)
      qiSubmitSync(iommu, [descPiotlb(did, pasid, 0n, MAX_AGAW_PFN_WIDTH, false)])
    }
    // Otherwise only the write buffer (no RWBF here: nothing to do).
  }

  /** Look up the entry for a setup: ENODEV without one, EBUSY when present. */
  const entryForSetup = (info: DevInfo, pasid: number): number => {
    const pa = pasidEntry(info, pasid)
    if (pa < 0)
      throw new IommuError('ENODEV', `${info.dev.name}: no PASID table entry for ${pasid}`)
    if (info.iommu.hw.memory.read64(pa) & Pe.P) {
      throw new IommuError('EBUSY', `${info.dev.name}: PASID ${pasid} entry is present`)
    }
    return pa
  }

  /** `intel_pasid_tear_down_entry`. */
  const tearDownEntry = (info: DevInfo, pasid: number, faultIgnore: boolean) => {
    const iommu = info.iommu
    const mem = iommu.hw.memory
    const pa = pasidEntry(info, pasid)
    if (pa < 0) return
    const v0 = mem.read64(pa)
    if ((v0 & Pe.P) === 0n) {
      if (v0 & Pe.FPD) for (let k = 0; k < 8; k++) mem.write64(pa + 8 * k, 0n)
      return
    }
    const did = Number(mem.read64(pa + 8) & Pe.DID_MASK)
    const pgtt = Number((v0 & Pe.PGTT_MASK) >> Pe.PGTT_SHIFT)
    mem.write64(pa, v0 & ~Pe.P)
    flushPasidCache(iommu, did, PcGran.PASID, pasid)
    if (pgtt === Pgtt.PT || pgtt === Pgtt.FS) {
      qiSubmitSync(iommu, [descPiotlb(did, pasid, 0n, MAX_AGAW_PFN_WIDTH, false)])
    } else {
      flushIotlbDsi(iommu, did)
    }
    devtlbInvalidationWithPasid(info, pasid)
    mem.write64(pa, faultIgnore ? Pe.FPD : 0n)
    for (let k = 1; k < 8; k++) mem.write64(pa + 8 * k, 0n)
    if (!faultIgnore) drainPasidPrq(info, pasid)
  }

  /**
   * `intel_iommu_drain_pasid_prq`: the page request thread already consumed the queue (it
   * runs on every page request interrupt), then a fenced wait, an IOTLB flush and a
   * device-TLB flush with the page-request drain option (VT-d §7.10).
   */
  const drainPasidPrq = (info: DevInfo, pasid: number) => {
    if (!info.iopfRefcount) return
    const iommu = info.iommu
    const d = info.domain
    const did = d?.iommus.get(iommu)?.did ?? FLPT_DEFAULT_DID
    const fence: QiDesc = [(BigInt(QI_DONE) << 32n) | Iwd.FN | BigInt(Qi.IWD), 0n]
    const descs: QiDesc[] =
      pasid === IOMMU_NO_PASID
        ? [
            fence,
            descIotlb(iommu, did, 0n, 0, IotlbGran.DOMAIN),
            descDevIotlb(info, 0n, MAX_AGAW_PFN_WIDTH),
          ]
        : [
            fence,
            descPiotlb(did, pasid, 0n, MAX_AGAW_PFN_WIDTH, false),
            descDevIotlbPasid(info, pasid, 0n, MAX_AGAW_PFN_WIDTH),
          ]
    qiSubmitSync(iommu, descs, true)
  }

  /** `intel_pasid_setup_first_level`. */
  const setupFirstLevel = (info: DevInfo, d: VtdDomain, pasid: number) => {
    const iommu = info.iommu
    const pt = d.fspt as PageTable<X86_64Config, FormatParams>
    const levels = pt.root.level + 1
    if (!(iommu.ecap & Ecap.FSTS)) throw new IommuError('EINVAL', 'no first-stage translation')
    if (levels === 5 && !(iommu.cap & Cap.FL5LP)) {
      throw new IommuError('EINVAL', 'no first-stage 5-level paging')
    }
    const pa = entryForSetup(info, pasid)
    const did = domainIdIommu(d, iommu)
    const v0 = (BigInt(iommu.agaw) << Pe.AW_SHIFT) | (BigInt(Pgtt.FS) << Pe.PGTT_SHIFT) | Pe.P
    const v1 =
      BigInt(did) | (d.forceSnooping ? Pe.PGSNP : 0n) | (iommu.ecap & Ecap.SMPWC ? Pe.PWSNP : 0n)
    const v2 = (BigInt(pt.root.pfn) << 12n) | (levels === 5 ? 1n << Pe.FSPM_SHIFT : 0n)
    writePasidEntry(iommu.hw.memory, pa, [v0, v1, v2])
    pasidFlushCaches(iommu, pasid, did)
  }

  /** `intel_pasid_setup_second_level`. */
  const setupSecondLevel = (info: DevInfo, d: VtdDomain, pasid: number) => {
    const iommu = info.iommu
    if (!(iommu.ecap & Ecap.SSTS)) throw new IommuError('EINVAL', 'no second-stage translation')
    const did = domainIdIommu(d, iommu)
    const pa = entryForSetup(info, pasid)
    const pt = d.sspt as PageTable<VtdSsConfig, VtdSsParams>
    const aw = pt.root.level - 1
    const v0 =
      (BigInt(pt.root.pfn) << 12n) |
      (BigInt(aw) << Pe.AW_SHIFT) |
      (BigInt(Pgtt.SS) << Pe.PGTT_SHIFT) |
      (d.dirtyTracking ? Pe.SSADE : 0n) |
      Pe.P
    // PWSNP unless the table is DMA-incoherent (the unit is page-walk coherent here).
    const v1 = BigInt(did) | (iommu.ecap & Ecap.SMPWC ? Pe.PWSNP : 0n)
    writePasidEntry(iommu.hw.memory, pa, [v0, v1])
    pasidFlushCaches(iommu, pasid, did)
  }

  /**
   * `intel_pasid_setup_nested`: the user's first-stage pointer (a guest-physical address,
   * stored unmasked as the kernel does) over the parent's second-stage table; checked here,
   * not at allocation: address width 48 or 57 (57 needs FS5LP), SRE needs SRS, EAFE needs
   * EAFS; unknown flag bits are ignored.
   */
  const setupNested = (info: DevInfo, d: VtdDomain, pasid: number) => {
    const iommu = info.iommu
    const cfg = d.s1Cfg
    const s2 = d.s2Domain
    if (cfg === null || s2 === null) throw new Error('not a nested domain')
    if (cfg.addrWidth === 57) {
      if (!(iommu.cap & Cap.FL5LP)) throw new IommuError('EINVAL', '5-level paging not supported')
    } else if (cfg.addrWidth !== 48) {
      throw new IommuError('EINVAL', `stage-1 address width ${cfg.addrWidth}`)
    }
    const sre = (cfg.flags & BigInt(IOMMU_VTD_S1_SRE)) !== 0n
    const eafe = (cfg.flags & BigInt(IOMMU_VTD_S1_EAFE)) !== 0n
    if (sre && !(iommu.ecap & Ecap.SRS)) throw new IommuError('EINVAL', 'no supervisor requests')
    if (eafe && !(iommu.ecap & Ecap.EAFS)) throw new IommuError('EINVAL', 'no extended access flag')
    const pa = entryForSetup(info, pasid)
    const did = domainIdIommu(d, iommu)
    const ss = ssTable(s2)
    let v2 = (cfg.addrWidth === 57 ? 1n << Pe.FSPM_SHIFT : 0n) | cfg.pgtblAddr
    if (sre) {
      v2 |= Pe.SRE
      if (cfg.flags & BigInt(IOMMU_VTD_S1_WPE)) v2 |= Pe.WPE
    }
    if (eafe) v2 |= Pe.EAFE
    const v0 =
      (BigInt(ss.root.pfn) << 12n) |
      (BigInt(ss.root.level - 1) << Pe.AW_SHIFT) |
      (s2.dirtyTracking ? Pe.SSADE : 0n) |
      (BigInt(Pgtt.NESTED) << Pe.PGTT_SHIFT) |
      Pe.P
    const v1 =
      BigInt(did) | (s2.forceSnooping ? Pe.PGSNP : 0n) | (iommu.ecap & Ecap.SMPWC ? Pe.PWSNP : 0n)
    writePasidEntry(iommu.hw.memory, pa, [v0, v1, v2 & U64_MAX])
    pasidFlushCaches(iommu, pasid, did)
  }

  /** `intel_pasid_setup_pass_through`. */
  const setupPassThrough = (info: DevInfo, pasid: number) => {
    const iommu = info.iommu
    const pa = entryForSetup(info, pasid)
    const v0 = (BigInt(iommu.agaw) << Pe.AW_SHIFT) | (BigInt(Pgtt.PT) << Pe.PGTT_SHIFT) | Pe.P
    const v1 = BigInt(FLPT_DEFAULT_DID) | (iommu.ecap & Ecap.SMPWC ? Pe.PWSNP : 0n)
    writePasidEntry(iommu.hw.memory, pa, [v0, v1])
    pasidFlushCaches(iommu, pasid, FLPT_DEFAULT_DID)
  }

  /** `intel_pasid_setup_dirty_tracking`. */
  const setupDirtyTracking = (info: DevInfo, pasid: number, enabled: boolean) => {
    const iommu = info.iommu
    const mem = iommu.hw.memory
    const pa = pasidEntry(info, pasid)
    if (pa < 0) throw new IommuError('ENODEV', `${info.dev.name}: no PASID entry ${pasid}`)
    const v0 = mem.read64(pa)
    const did = Number(mem.read64(pa + 8) & Pe.DID_MASK)
    const pgtt = Number((v0 & Pe.PGTT_MASK) >> Pe.PGTT_SHIFT)
    if (pgtt !== Pgtt.SS && pgtt !== Pgtt.NESTED) {
      throw new IommuError('EOPNOTSUPP', `dirty tracking on translation type ${pgtt}`)
    }
    if (((v0 & Pe.SSADE) !== 0n) === enabled) return
    mem.write64(pa, enabled ? v0 | Pe.SSADE : v0 & ~Pe.SSADE)
    flushPasidCache(iommu, did, PcGran.PASID, pasid)
    flushIotlbDsi(iommu, did)
    devtlbInvalidationWithPasid(info, pasid)
  }

  /** `intel_pasid_setup_page_snoop_control` + `intel_pasid_flush_present`. */
  const setupPageSnoop = (info: DevInfo, pasid: number) => {
    const iommu = info.iommu
    const mem = iommu.hw.memory
    const pa = pasidEntry(info, pasid)
    if (pa < 0 || !(mem.read64(pa) & Pe.P)) return
    const v1 = mem.read64(pa + 8)
    mem.write64(pa + 8, v1 | Pe.PGSNP)
    const did = Number(v1 & Pe.DID_MASK)
    flushPasidCache(iommu, did, PcGran.PASID, pasid)
    qiSubmitSync(iommu, [descPiotlb(did, pasid, 0n, MAX_AGAW_PFN_WIDTH, false)])
    devtlbInvalidationWithPasid(info, pasid)
  }

  // ---------------------------------------------------------------- domain IDs and cache tags

  const domainIdIommu = (d: VtdDomain, iommu: IntelIommu): number => {
    const e = d.iommus.get(iommu)
    if (e === undefined) throw new Error(`domain not attached to ${iommu.hw.name}`)
    return e.did
  }

  /** `domain_attach_iommu`: a domain ID on the unit (ENOSPC when none is free). */
  const domainAttachIommu = (d: VtdDomain, iommu: IntelIommu) => {
    const cur = d.iommus.get(iommu)
    if (cur !== undefined) {
      cur.refcnt++
      return
    }
    const ndoms = iommu.dids.length
    for (let did = 2; did < ndoms; did++) {
      if (iommu.dids[did] === 0) {
        iommu.dids[did] = 1
        d.iommus.set(iommu, { did, refcnt: 1 })
        return
      }
    }
    throw new IommuError('ENOSPC', `${iommu.hw.name}: no free domain IDs`)
  }

  /** `domain_detach_iommu`. */
  const domainDetachIommu = (d: VtdDomain, iommu: IntelIommu) => {
    const cur = d.iommus.get(iommu)
    if (cur === undefined) return
    if (--cur.refcnt === 0) {
      iommu.dids[cur.did] = 0
      d.iommus.delete(iommu)
    }
  }

  const tagMatch = (
    t: CacheTag,
    type: number,
    iommu: IntelIommu,
    did: number,
    pasid: number,
    info: DevInfo,
  ) =>
    t.type === type &&
    t.did === did &&
    t.pasid === pasid &&
    (type === TagType.IOTLB || type === TagType.NESTING_IOTLB ? t.iommu === iommu : t.info === info)

  /** `cache_tag_assign`: new tags go after the last tag of the same unit. */
  const tagAssign = (d: VtdDomain, did: number, info: DevInfo, pasid: number, type: number) => {
    let at = 0
    for (let i = 0; i < d.cacheTags.length; i++) {
      const t = d.cacheTags[i] as CacheTag
      if (tagMatch(t, type, info.iommu, did, pasid, info)) {
        t.users++
        return
      }
      if (t.iommu === info.iommu) at = i + 1
    }
    const isDev = type === TagType.DEVTLB || type === TagType.NESTING_DEVTLB
    d.cacheTags.splice(at, 0, {
      type,
      iommu: info.iommu,
      did,
      pasid,
      info: isDev ? info : null,
      users: 1,
    })
  }

  const tagUnassign = (d: VtdDomain, did: number, info: DevInfo, pasid: number, type: number) => {
    const i = d.cacheTags.findIndex((t) => tagMatch(t, type, info.iommu, did, pasid, info))
    if (i < 0) return
    const t = d.cacheTags[i] as CacheTag
    if (--t.users === 0) d.cacheTags.splice(i, 1)
  }

  /** `cache_tag_assign_domain`: a nested domain's DID also tags its parent (NESTING_*). */
  const tagAssignDomain = (d: VtdDomain, info: DevInfo, pasid: number) => {
    const did = domainIdIommu(d, info.iommu)
    tagAssign(d, did, info, pasid, TagType.IOTLB)
    if (info.atsEnabled) tagAssign(d, did, info, pasid, TagType.DEVTLB)
    const parent = d.s2Domain
    if (parent === null) return
    tagAssign(parent, did, info, pasid, TagType.NESTING_IOTLB)
    if (info.atsEnabled) tagAssign(parent, did, info, pasid, TagType.NESTING_DEVTLB)
  }

  /** `cache_tag_unassign_domain`. */
  const tagUnassignDomain = (d: VtdDomain, info: DevInfo, pasid: number) => {
    const did = domainIdIommu(d, info.iommu)
    tagUnassign(d, did, info, pasid, TagType.IOTLB)
    if (info.atsEnabled) tagUnassign(d, did, info, pasid, TagType.DEVTLB)
    const parent = d.s2Domain
    if (parent === null) return
    tagUnassign(parent, did, info, pasid, TagType.NESTING_IOTLB)
    if (info.atsEnabled) tagUnassign(parent, did, info, pasid, TagType.NESTING_DEVTLB)
  }

  /** `intel_iommu_enable_iopf`: the first fault-capable domain puts the device on the queue. */
  const enableIopf = (info: DevInfo) => {
    if (!info.priEnabled || info.iommu.iopfQueue === null) {
      throw new IommuError('ENODEV', `${info.dev.name}: PRI is not enabled`)
    }
    if (info.iopfRefcount++ === 0) info.iommu.iopfQueue.addDevice(info.dev)
  }

  /** `intel_iommu_disable_iopf`. */
  const disableIopf = (info: DevInfo) => {
    if (!info.priEnabled || info.iopfRefcount === 0) return
    if (--info.iopfRefcount === 0) info.iommu.iopfQueue?.removeDevice(info.dev)
  }

  /** `iopf_for_domain_set` / `_remove` / `_replace`. */
  const iopfSet = (d: IommuDomain | null, info: DevInfo) => {
    if (d?.iopfHandler) enableIopf(info)
  }
  const iopfRemove = (d: IommuDomain | null, info: DevInfo) => {
    if (d?.iopfHandler) disableIopf(info)
  }
  const iopfReplace = (next: IommuDomain | null, old: IommuDomain | null, info: DevInfo) => {
    iopfSet(next, info)
    iopfRemove(old, info)
  }

  /**
   * `cache_tag_flush_range`: one batch of descriptors per unit (at most 16 per
   * submission), IOTLB or PASID-based IOTLB per IOTLB tag, device-TLB per DEVTLB tag.
   */
  const flushRange = (d: VtdDomain, start: bigint, end: bigint, ih: boolean) => {
    let [addr, mask] = psiAligned(start, end)
    let batchIommu: IntelIommu | null = null
    const batch: QiDesc[] = []
    const flush = () => {
      if (batchIommu !== null && batch.length) qiSubmitSync(batchIommu, batch)
      batch.length = 0
    }
    const add = (desc: QiDesc) => {
      batch.push(desc)
      if (batch.length === QI_MAX_BATCH) flush()
    }
    // intel_domain_use_piotlb: first-stage and nested domains.
    const usePiotlb = d.stage !== 'ss'
    for (const tag of d.cacheTags) {
      if (batchIommu !== null && batchIommu !== tag.iommu) flush()
      batchIommu = tag.iommu
      const iommu = tag.iommu
      switch (tag.type) {
        case TagType.IOTLB:
        case TagType.NESTING_IOTLB: {
          if (hooks.skipIotlbFlush) break
          if (usePiotlb) {
            add(descPiotlb(tag.did, tag.pasid, addr, mask, ih))
            break
          }
          // Page-selective when supported and small enough, else domain-selective.
          if (!(iommu.cap & Cap.PSI) || mask > capMamv(iommu.cap)) {
            add(descIotlb(iommu, tag.did, 0n, 0, IotlbGran.DOMAIN))
          } else {
            add(descIotlb(iommu, tag.did, addr | (ih ? 1n : 0n), mask, IotlbGran.PAGE))
          }
          break
        }
        case TagType.NESTING_DEVTLB:
        case TagType.DEVTLB: {
          if (tag.type === TagType.NESTING_DEVTLB) {
            // The kernel widens the range to everything for this and every later tag.
            addr = 0n
            mask = MAX_AGAW_PFN_WIDTH
          }
          if (hooks.skipDevtlbFlush || !(iommu.gcmd & Gcmd.TE)) break
          const info = tag.info as DevInfo
          add(
            tag.pasid === IOMMU_NO_PASID
              ? descDevIotlb(info, addr, mask)
              : descDevIotlbPasid(info, tag.pasid, addr, mask),
          )
          break
        }
      }
    }
    flush()
  }

  const flushAll = (d: VtdDomain) => flushRange(d, 0n, U64_MAX, false)

  // ---------------------------------------------------------------- attach / detach

  /** `device_block_translation`: tear down the RID's PASID-0 entry. */
  const blockTranslation = (info: DevInfo) => {
    if (!info.domainAttached) return
    const d = info.domain
    if (d !== null) tagUnassignDomain(d, info, IOMMU_NO_PASID)
    tearDownEntry(info, IOMMU_NO_PASID, false)
    info.domainAttached = false
    if (d === null) return
    d.devices.delete(info)
    domainDetachIommu(d, info.iommu)
    info.domain = null
  }

  /** `paging_domain_compatible` (a nested domain is checked through its parent). */
  const compatible = (domain: VtdDomain, info: DevInfo) => {
    const d = domain.s2Domain ?? domain
    const iommu = info.iommu
    const bad = (why: string): never => {
      throw new IommuError('EINVAL', `${info.dev.name}: ${why}`)
    }
    if (d.stage === 'fs') {
      if (!smSupported(iommu) || !(iommu.ecap & Ecap.FSTS)) bad('no first-stage translation')
      const pt = d.fspt as PageTable<X86_64Config, FormatParams>
      if (!(iommu.cap & Cap.FL5LP) && pt.params.vaBits > 48) bad('no 5-level first stage')
      if (!(iommu.cap & Cap.FL1GP) && d.pgsizeBitmap & (1n << 30n))
        bad('no 1 GiB first-stage pages')
      return
    }
    const pt = d.sspt as PageTable<VtdSsConfig, VtdSsParams>
    if (d.dirtyOps !== null && !ssadsSupported(iommu)) bad('no second-stage dirty tracking')
    if (d.nestedParent && !nestedSupported(iommu)) bad('no nesting')
    if (!(iommu.ecap & Ecap.SSTS)) bad('no second-stage translation')
    if (capMgaw(iommu.cap) < pt.params.vaBits) bad('address width beyond MGAW')
    if (!((capSagaw(iommu.cap) >> (pt.root.level - 1)) & 1)) bad('table levels not in SAGAW')
    const sllps = capSllps(iommu.cap)
    if (!(sllps & 1) && d.pgsizeBitmap & (1n << 21n)) bad('no 2 MiB second-stage pages')
    if (!(sllps & 2) && d.pgsizeBitmap & (1n << 30n)) bad('no 1 GiB second-stage pages')
    if (pt.params.forceCoherence && !(iommu.ecap & Ecap.SC)) bad('no snoop control')
  }

  /** `dmar_domain_attach_device`. */
  const domainAttachDevice = (d: VtdDomain, info: DevInfo) => {
    domainAttachIommu(d, info.iommu)
    info.domain = d
    info.domainAttached = true
    d.devices.add(info)
    try {
      if (d.stage === 'fs') setupFirstLevel(info, d, IOMMU_NO_PASID)
      else setupSecondLevel(info, d, IOMMU_NO_PASID)
      tagAssignDomain(d, info, IOMMU_NO_PASID)
    } catch (e) {
      blockTranslation(info)
      throw e
    }
  }

  /** `intel_iommu_attach_device`: blocked first, so a failure leaves the device blocked. */
  const attachDev = (domain: IommuDomain, dev: PciDevice, old: IommuDomain | null): void => {
    const info = infoOf(dev)
    const d = domain as VtdDomain
    blockTranslation(info)
    compatible(d, info)
    iopfReplace(domain, old, info)
    try {
      domainAttachDevice(d, info)
    } catch (e) {
      iopfReplace(old, domain, info)
      throw e
    }
  }

  /** `domain_add_dev_pasid`. */
  const addDevPasid = (d: VtdDomain, info: DevInfo, pasid: number) => {
    domainAttachIommu(d, info.iommu)
    tagAssignDomain(d, info, pasid)
    d.devPasids.push({ info, pasid })
  }

  /** `domain_remove_dev_pasid`. */
  const removeDevPasid = (domain: IommuDomain | null, info: DevInfo, pasid: number) => {
    if (domain === null || !(domain instanceof VtdDomain)) return
    const i = domain.devPasids.findIndex((p) => p.info === info && p.pasid === pasid)
    if (i < 0) return
    domain.devPasids.splice(i, 1)
    tagUnassignDomain(domain, info, pasid)
    domainDetachIommu(domain, info.iommu)
  }

  /** `intel_iommu_set_dev_pasid`. */
  const setDevPasid = (
    domain: IommuDomain,
    dev: PciDevice,
    pasid: number,
    old: IommuDomain | null,
  ): void => {
    const info = infoOf(dev)
    const d = domain as VtdDomain
    if (d.stage !== 'nested' && !domain.isPaging) {
      throw new IommuError('EINVAL', 'not a paging domain')
    }
    if (!pasidSupported(info.iommu)) throw new IommuError('EOPNOTSUPP', 'no PASID support')
    compatible(d, info)
    addDevPasid(d, info, pasid)
    try {
      iopfReplace(domain, old, info)
    } catch (e) {
      removeDevPasid(d, info, pasid)
      throw e
    }
    try {
      if (old !== null) tearDownEntry(info, pasid, false)
      if (d.stage === 'fs') setupFirstLevel(info, d, pasid)
      else if (d.stage === 'ss') setupSecondLevel(info, d, pasid)
      else setupNested(info, d, pasid)
    } catch (e) {
      iopfReplace(old, domain, info)
      removeDevPasid(d, info, pasid)
      throw e
    }
    removeDevPasid(old, info, pasid)
  }

  /**
   * `intel_nested_attach_dev`: blocked first; the parent must suit this unit; the nested
   * domain gets a DID here, its cache tags (and NESTING tags on the parent), IOPF when it
   * has a fault handler, then the PGTT = nested entry of PASID 0.
   */
  const nestedAttach = (domain: IommuDomain, dev: PciDevice): void => {
    const info = infoOf(dev)
    const d = domain as VtdDomain
    blockTranslation(info)
    compatible(d, info)
    domainAttachIommu(d, info.iommu)
    try {
      tagAssignDomain(d, info, IOMMU_NO_PASID)
      try {
        iopfSet(domain, info)
        try {
          setupNested(info, d, IOMMU_NO_PASID)
        } catch (e) {
          iopfRemove(domain, info)
          throw e
        }
      } catch (e) {
        tagUnassignDomain(d, info, IOMMU_NO_PASID)
        throw e
      }
    } catch (e) {
      domainDetachIommu(d, info.iommu)
      throw e
    }
    info.domain = d
    info.domainAttached = true
    d.devices.add(info)
  }

  /**
   * `intel_nested_cache_invalidate_user`: one `struct iommu_hwpt_vtd_s1_invalidate` at a
   * time, each flushed before the next is read; `entryNum` becomes the number handled.
   */
  const nestedCacheInvalidateUser = (domain: IommuDomain, array: UserDataArray): void => {
    const d = domain as VtdDomain
    let done = 0
    try {
      if (array.type !== IOMMU_HWPT_INVALIDATE_DATA_VTD_S1) {
        throw new IommuError('EINVAL', `invalidation type ${array.type}`)
      }
      for (let i = 0; i < array.entryNum; i++) {
        const v = copyStructFromUserArray(
          array,
          IOMMU_HWPT_INVALIDATE_DATA_VTD_S1,
          i,
          VTD_S1_INV_SIZE,
          VTD_S1_INV_SIZE,
        )
        const addr = v.getBigUint64(0, true)
        const npages = v.getBigUint64(8, true)
        const flags = v.getUint32(16, true)
        if (flags & ~IOMMU_VTD_INV_FLAGS_LEAF || v.getUint32(20, true)) {
          throw new IommuError('EOPNOTSUPP', `entry ${i}: flags 0x${flags.toString(16)}`)
        }
        if (addr & 0xfffn || (npages === U64_MAX && addr !== 0n)) {
          throw new IommuError('EINVAL', `entry ${i}: address 0x${addr.toString(16)}`)
        }
        // addr + nrpages_to_size(npages) - 1, in u64 arithmetic (npages = U64_MAX wraps).
        const last = (addr + ((npages << 12n) & U64_MAX) - 1n) & U64_MAX
        flushRange(d, addr, last, (flags & IOMMU_VTD_INV_FLAGS_LEAF) !== 0)
        done++
      }
    } finally {
      array.entryNum = done
    }
  }

  /** `blocking_domain_attach_dev`. */
  const blockedAttach = (_domain: IommuDomain, dev: PciDevice): void => {
    const info = infoOf(dev)
    iopfRemove(info.domain, info)
    blockTranslation(info)
  }

  /** `blocking_domain_set_dev_pasid`. */
  const blockedSetDevPasid = (
    _domain: IommuDomain,
    dev: PciDevice,
    pasid: number,
    old: IommuDomain | null,
  ): void => {
    const info = infoOf(dev)
    tearDownEntry(info, pasid, false)
    iopfRemove(old, info)
    removeDevPasid(old, info, pasid)
  }

  /** `identity_domain_attach_dev`. */
  const identityAttach = (_domain: IommuDomain, dev: PciDevice, old: IommuDomain | null): void => {
    const info = infoOf(dev)
    blockTranslation(info)
    iopfRemove(old, info)
    setupPassThrough(info, IOMMU_NO_PASID)
    info.domainAttached = true
  }

  /** `identity_domain_set_dev_pasid`. */
  const identitySetDevPasid = (
    _domain: IommuDomain,
    dev: PciDevice,
    pasid: number,
    old: IommuDomain | null,
  ): void => {
    const info = infoOf(dev)
    if (!pasidSupported(info.iommu)) throw new IommuError('EOPNOTSUPP', 'no PASID support')
    iopfReplace(null, old, info)
    if (old !== null) tearDownEntry(info, pasid, false)
    setupPassThrough(info, pasid)
    removeDevPasid(old, info, pasid)
  }

  // ---------------------------------------------------------------- domains

  const fsTable = (d: VtdDomain): PageTable<X86_64Config, FormatParams> => {
    if (d.fspt === null) throw new IommuError('EINVAL', 'not a first-stage domain')
    return d.fspt
  }
  const ssTable = (d: VtdDomain): PageTable<VtdSsConfig, VtdSsParams> => {
    if (d.sspt === null) throw new IommuError('EINVAL', 'not a second-stage domain')
    return d.sspt
  }

  const common = {
    attachDev,
    setDevPasid,
    /** `intel_flush_iotlb_all`. */
    flushIotlbAll: (d: VtdDomain) => flushAll(d),
    /** `intel_iommu_tlb_sync`: IH (leaf only) when no table pages were freed. */
    iotlbSync(d: VtdDomain, gather: IotlbGather) {
      flushRange(d, gather.start, gather.end, gather.freelist.length === 0)
    },
    /** `intel_iommu_iotlb_sync_map`: caching-mode / RWBF hardware only. */
    iotlbSyncMap(d: VtdDomain, iova: bigint, size: bigint) {
      if (d.iotlbSyncMapNeeded) flushRange(d, iova, iova + size - 1n, false)
    },
    /** The sync above does nothing: iommufd's per-page maps may go in one call. */
    [SYNC_MAP_NOOP]: (d: VtdDomain) => !d.iotlbSyncMapNeeded,
    free(d: VtdDomain) {
      if (d.devices.size || d.devPasids.length || d.s1Domains.size) {
        throw new Error(`VT-d domain freed while attached or nested on`)
      }
      d.fspt?.free()
      d.sspt?.free()
    },
  }

  /** `intel_fs_paging_domain_ops`. */
  const fsOps = {
    ...pageTableDomainOps<VtdDomain>(x86_64, fsTable),
    ...common,
    /** `intel_iommu_enforce_cache_coherency_fs`: PGSNP in every attached PASID-0 entry. */
    enforceCacheCoherency(d: VtdDomain) {
      if (d.forceSnooping) return true
      for (const info of d.devices) if (!(info.iommu.ecap & Ecap.SC)) return false
      d.forceSnooping = true
      for (const info of d.devices) setupPageSnoop(info, IOMMU_NO_PASID)
      return true
    },
  } satisfies DomainOps<VtdDomain>

  /** `intel_ss_paging_domain_ops`. */
  const ssOps = {
    ...pageTableDomainOps<VtdDomain>(vtdss, ssTable),
    ...common,
    /** `intel_iommu_enforce_cache_coherency_ss`: SNP in every leaf mapped from now on. */
    enforceCacheCoherency(d: VtdDomain) {
      for (const info of d.devices) if (!(info.iommu.ecap & Ecap.SC)) return false
      ssTable(d).params.forceCoherence = true
      d.forceSnooping = true
      return true
    },
  } satisfies DomainOps<VtdDomain>

  /** `domain_set_dirty_tracking`: every RID and PASID attachment. */
  const domainSetDirtyTracking = (d: VtdDomain, enable: boolean) => {
    for (const info of d.devices) setupDirtyTracking(info, IOMMU_NO_PASID, enable)
    for (const p of d.devPasids) setupDirtyTracking(p.info, p.pasid, enable)
  }

  /** `parent_domain_set_dirty_tracking`: every nested domain's entries, rolled back. */
  const parentSetDirtyTracking = (d: VtdDomain, enable: boolean) => {
    try {
      for (const s1 of d.s1Domains) domainSetDirtyTracking(s1, enable)
    } catch (e) {
      for (const s1 of d.s1Domains) domainSetDirtyTracking(s1, d.dirtyTracking)
      throw e
    }
  }

  const dirtyOps = {
    ...pageTableDirtyOps<VtdDomain>(ssTable),
    /**
     * `intel_iommu_set_dirty_tracking`: SSADE in every PASID entry of the domain and, on a
     * nest parent, of every nested domain on it; rolled back on failure.
     */
    setDirtyTracking(d: VtdDomain, enable: boolean) {
      if (d.dirtyTracking === enable) return
      try {
        domainSetDirtyTracking(d, enable)
        if (d.nestedParent) parentSetDirtyTracking(d, enable)
      } catch (e) {
        domainSetDirtyTracking(d, d.dirtyTracking)
        throw e
      }
      d.dirtyTracking = enable
    },
  } satisfies DirtyOps<VtdDomain>

  /** `intel_nested_domain_ops`. */
  const nestedOps = {
    attachDev: nestedAttach,
    setDevPasid,
    cacheInvalidateUser: nestedCacheInvalidateUser,
    /** `intel_nested_domain_free`. */
    free(d: VtdDomain) {
      d.s2Domain?.s1Domains.delete(d)
    },
  } satisfies DomainOps<VtdDomain>

  /** `intel_iommu_domain_alloc_nested` (nested.c). */
  const domainAllocNested = (
    dev: PciDevice,
    parent: IommuDomain,
    flags: number,
    data: UserData,
  ): IommuDomain => {
    const iommu = infoOf(dev).iommu
    if (!nestedSupported(iommu) || flags & ~HwptAllocFlags.PASID) {
      throw new IommuError('EOPNOTSUPP', 'nesting or flags')
    }
    if (data.type !== HwptDataType.VTD_S1) {
      throw new IommuError('EOPNOTSUPP', `data type ${data.type}`)
    }
    const s2 = parent as VtdDomain
    if (!(s2 instanceof VtdDomain) || s2.stage !== 'ss' || !s2.nestedParent) {
      throw new IommuError('EINVAL', 'parent is not a second-stage nest parent')
    }
    // struct iommu_hwpt_vtd_s1 {u64 flags; u64 pgtbl_addr; u32 addr_width; u32 __reserved}
    const v = copyStructFromUser(data, HwptDataType.VTD_S1, VTD_S1_SIZE, VTD_S1_SIZE)
    const d = new VtdDomain('nested', { type: DomainType.NESTED, ops: nestedOps })
    d.s2Domain = s2
    d.s1Cfg = {
      flags: v.getBigUint64(0, true),
      pgtblAddr: v.getBigUint64(8, true),
      addrWidth: v.getUint32(16, true),
    }
    s2.s1Domains.add(d)
    return d
  }

  /** The page-table hooks of a domain: its flush for table pages a map replaced. */
  const tableOptions = (d: VtdDomain, pgsizeBitmap: bigint) => ({
    pgsizeBitmap,
    iotlbSync: (gather: IotlbGather) => flushRange(d, gather.start, gather.end, false),
  })

  /** The domain takes the table's page sizes and aperture. */
  const adoptTable = (d: VtdDomain, pt: AnyPageTable) => {
    d.pgsizeBitmap = pt.pgsizeBitmap
    Object.assign(d.geometry, pt.geometry)
  }

  /** `intel_iommu_domain_alloc_first_stage`: EOPNOTSUPP lets the caller try second stage. */
  const allocFirstStage = (info: DevInfo, flags: number): VtdDomain => {
    const iommu = info.iommu
    if (flags & ~HwptAllocFlags.PASID) throw new IommuError('EOPNOTSUPP', 'first stage: flags')
    if (!smSupported(iommu) || !(iommu.ecap & Ecap.FSTS)) {
      throw new IommuError('EOPNOTSUPP', 'no first-stage translation')
    }
    const { vasz, top } = vaszFs(iommu.cap)
    let mask = U64_MAX
    if (!(iommu.cap & Cap.FL1GP)) mask &= ~(1n << 30n)
    if (options.superpageOff) mask = 1n << 12n
    const d = new VtdDomain('fs', { ops: fsOps })
    const pt = new PageTable(
      iommu.hw.memory,
      x86_64,
      { topLevel: top, hwMaxVaBits: vasz, hwMaxOaBits: 52, signExtend: true },
      tableOptions(d, mask),
    )
    d.fspt = pt
    adoptTable(d, pt)
    d.iotlbSyncMapNeeded = (iommu.cap & Cap.RWBF) !== 0n
    return d
  }

  /** `intel_iommu_domain_alloc_second_stage`. */
  const allocSecondStage = (info: DevInfo, flags: number): VtdDomain => {
    const iommu = info.iommu
    const allowed =
      HwptAllocFlags.NEST_PARENT | HwptAllocFlags.DIRTY_TRACKING | HwptAllocFlags.PASID
    if (flags & ~allowed) throw new IommuError('EOPNOTSUPP', `flags 0x${flags.toString(16)}`)
    if (flags & HwptAllocFlags.NEST_PARENT && !nestedSupported(iommu)) {
      throw new IommuError('EOPNOTSUPP', 'no nesting')
    }
    if (flags & HwptAllocFlags.DIRTY_TRACKING && !ssadsSupported(iommu)) {
      throw new IommuError('EOPNOTSUPP', 'no second-stage A/D (SSADS, SMPWC)')
    }
    if (smSupported(iommu) && !(iommu.ecap & Ecap.SSTS)) {
      throw new IommuError('EOPNOTSUPP', 'no second-stage translation')
    }
    const { vasz, top } = vaszSs(iommu.cap)
    const sllps = capSllps(iommu.cap)
    let mask = U64_MAX
    if (!(sllps & 1)) mask &= ~(1n << 21n)
    if (!(sllps & 2)) mask &= ~(1n << 30n)
    if (options.superpageOff) mask = 1n << 12n
    const parent = (flags & HwptAllocFlags.NEST_PARENT) !== 0
    const d = new VtdDomain('ss', {
      ops: ssOps,
      dirtyOps: flags & HwptAllocFlags.DIRTY_TRACKING ? dirtyOps : null,
    })
    const pt = new PageTable(
      iommu.hw.memory,
      vtdss,
      { topLevel: top, hwMaxVaBits: vasz, hwMaxOaBits: 52, forceWriteable: parent },
      tableOptions(d, mask),
    )
    d.sspt = pt
    adoptTable(d, pt)
    d.nestedParent = parent
    d.iotlbSyncMapNeeded = (iommu.cap & (Cap.RWBF | Cap.CM)) !== 0n
    return d
  }

  const blockedDomain = new IommuDomain({
    type: DomainType.BLOCKED,
    ops: { attachDev: blockedAttach, setDevPasid: blockedSetDevPasid },
  })
  const identityDomain = new IommuDomain({
    type: DomainType.IDENTITY,
    ops: { attachDev: identityAttach, setDevPasid: identitySetDevPasid },
  })

  // ---------------------------------------------------------------- unit bring-up

  const driver = defineDriver({
    name: 'intel',
    apiVersion: 1,
    capabilities: {
      dirtyTracking: true,
      nesting: true,
      pasid: true,
      enforceCacheCoherency: true,
      deferredFlush: true,
      iopf: true,
    },
    /** `init_dmars` for one DRHD: root table, QI, fault handler, PRQ, translation on. */
    createUnit(ctx: UnitContext) {
      machineRef = ctx.machine
      const config = (ctx.config as VtdIommuHwConfig | undefined) ?? options.hw ?? {}
      const mem = ctx.machine.memory
      const hw = new VtdIommuHw(ctx.machine, `dmar${ctx.index}`, config)
      const cap = hw.cap
      const ecap = hw.ecap
      if (!(ecap & Ecap.SMTS) || !(ecap & Ecap.QI)) {
        throw new IommuError('ENODEV', `${hw.name}: the model's driver needs scalable mode and QI`)
      }
      const iommu: IntelIommu = {
        hw,
        seqId: iommus.length,
        cap,
        ecap,
        agaw: calculateAgaw(cap, ecap),
        rootPa: mem.allocFrame(FramePurpose.IOMMU_HW) * 4096,
        qiPa: mem.allocFrames(2, FramePurpose.IOMMU_HW, 2) * 4096,
        qiStatusPa: mem.allocFrame(FramePurpose.IOMMU_HW) * 4096,
        freeHead: 0,
        gcmd: 0,
        dids: new Uint8Array(Math.min(capNdoms(cap), 65536)),
        prqPa: 0,
        faultLog: [],
        prqLog: [],
        qiErrors: 0,
        iopfQueue: null,
      }
      iommus.push(iommu)
      devices.set(hw, new Map())
      // Faults: the handler reads the records; unmask the fault event.
      hw.irq.fault = () => dmarFault(iommu)
      dmarFault(iommu)
      hw.writeMmio(Reg.FECTL, 0n)
      // __dmar_enable_qi: tail 0, queue base with DW = 1 and QS = 1 (256 × 256 bits).
      hw.writeMmio(Reg.IQT, 0n)
      hw.writeMmio(Reg.IQA, BigInt(iommu.qiPa) | Iqa.DW | 1n)
      iommu.gcmd |= Gcmd.QIE
      hw.writeMmio(Reg.GCMD, BigInt(iommu.gcmd >>> 0))
      // iommu_set_root_entry, then the global flushes (no ESRTPS).
      hw.writeMmio(Reg.RTADDR, BigInt(iommu.rootPa) | Rtaddr.SMT)
      hw.writeMmio(Reg.GCMD, BigInt((iommu.gcmd | Gcmd.SRTP) >>> 0))
      if (!(cap & Cap.ESRTPS)) {
        qiSubmitSync(iommu, [[(BigInt(CcGran.GLOBAL) << 4n) | BigInt(Qi.CC), 0n]])
        flushPasidCache(iommu, 0, PcGran.GLOBAL, 0)
        qiSubmitSync(iommu, [descIotlb(iommu, 0, 0n, 0, IotlbGran.GLOBAL)])
      }
      // intel_iommu_enable_prq.
      if (ecap & Ecap.PASID && ecap & Ecap.PRS) {
        const frames = 2 ** PRQ_ORDER
        const prqPa = mem.allocFrames(frames, FramePurpose.IOMMU_HW, frames) * 4096
        ;(iommu as { prqPa: number }).prqPa = prqPa
        iommu.iopfQueue = new IopfQueue(`dmar${ctx.index}-iopfq`)
        hw.irq.pageRequest = () => prqEventThread(iommu)
        hw.writeMmio(Reg.PQH, 0n)
        hw.writeMmio(Reg.PQT, 0n)
        hw.writeMmio(Reg.PQA, BigInt(prqPa) | BigInt(PRQ_ORDER))
        hw.writeMmio(Reg.PECTL, 0n)
      }
      // iommu_enable_translation.
      iommu.gcmd |= Gcmd.TE
      hw.writeMmio(Reg.GCMD, BigInt(iommu.gcmd >>> 0))
      return hw
    },
    ops: {
      /** `intel_iommu_capable`. */
      capable(dev, cap) {
        const info = infoOf(dev)
        switch (cap) {
          case IommuCap.CACHE_COHERENCY:
            return true
          case IommuCap.ENFORCE_CACHE_COHERENCY:
            return (info.iommu.ecap & Ecap.SC) !== 0n
          case IommuCap.DIRTY_TRACKING:
            // ssads_supported(): the unit's, whatever the device.
            return ssadsSupported(info.iommu)
          case IommuCap.PCI_ATS_SUPPORTED:
            return info.atsSupported
          default:
            return false
        }
      },
      /** `intel_iommu_hw_info`: `struct iommu_hw_info_vtd {flags, __reserved, cap, ecap}`. */
      hwInfo(dev, type) {
        if (type !== HwInfoType.DEFAULT && type !== HwInfoType.INTEL_VTD) {
          throw new IommuError('EOPNOTSUPP', `hw_info type ${type}`)
        }
        const iommu = infoOf(dev).iommu
        const data = new Uint8Array(24)
        const v = new DataView(data.buffer)
        v.setUint32(0, IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17, true)
        v.setBigUint64(8, iommu.cap, true)
        v.setBigUint64(16, iommu.ecap, true)
        return { type: HwInfoType.INTEL_VTD, data }
      },
      /** `intel_iommu_domain_alloc_paging_flags`: first stage preferred, then second. */
      domainAllocPagingFlags(dev, flags, data) {
        if (data !== null) throw new IommuError('EOPNOTSUPP', 'intel: user data')
        const info = infoOf(dev)
        try {
          return allocFirstStage(info, flags)
        } catch (e) {
          if (!(e instanceof IommuError && e.code === 'EOPNOTSUPP')) throw e
        }
        return allocSecondStage(info, flags)
      },
      /** `intel_iommu_probe_device`. */
      probeDevice(dev) {
        const iommu = iommus.find((i) => i.hw === dev.unit)
        if (iommu === undefined || dev.iommu === null) throw new IommuError('ENODEV', dev.name)
        const sm = smSupported(iommu)
        const atsSupported = (iommu.ecap & Ecap.DT) !== 0n && dev.ats
        const info: DevInfo = {
          dev,
          bus: dev.bus,
          devfn: dev.devfn,
          sid: dev.rid,
          iommu,
          atsSupported,
          pasidSupported: sm && pasidSupported(iommu) && dev.pasidBits > 0,
          priSupported:
            sm &&
            atsSupported &&
            (iommu.ecap & Ecap.PRS) !== 0n &&
            (iommu.ecap & Ecap.PDS) !== 0n &&
            dev.pri,
          atsQdep: QI_DEV_IOTLB_MAX_INVS,
          atsEnabled: false,
          pasidEnabled: false,
          priEnabled: false,
          iopfRefcount: 0,
          domainAttached: false,
          domain: null,
          pasidTable: null,
        }
        dev.iommu.priv = info
        devices.get(iommu.hw)?.set(info.sid, info)
        info.pasidTable = allocPasidTable(info)
        setupSmContext(info)
        return iommu.hw
      },
      /** `intel_iommu_probe_finalize`: PASID, ATS (and a DEVTLB tag), PRI. */
      probeFinalize(dev) {
        const info = infoOf(dev)
        if (info.pasidSupported) info.pasidEnabled = true
        if (info.atsSupported) {
          info.atsEnabled = true
          const d = info.domain
          if (d !== null)
            tagAssign(d, domainIdIommu(d, info.iommu), info, IOMMU_NO_PASID, TagType.DEVTLB)
        }
        if (info.atsEnabled && info.priSupported) info.priEnabled = true
      },
      /** `intel_iommu_release_device`. */
      releaseDevice(dev) {
        const info = infoOf(dev)
        info.priEnabled = false
        info.atsEnabled = false
        info.pasidEnabled = false
        devices.get(info.iommu.hw)?.delete(info.sid)
        teardownSmContext(info)
        freePasidTable(info)
      },
      deviceGroup(dev) {
        if (machineRef === null) throw new IommuError('ENODEV', 'intel not initialised')
        return machineRef.iommu.pciDeviceGroup(dev)
      },
      /** `intel_iommu_get_resv_regions`: RMRRs of the device, then the IOAPIC/MSI window. */
      getResvRegions(dev) {
        const out: IommuResvRegion[] = []
        for (const r of options.rmrr ?? []) {
          if (!r.devices.includes(dev.bdf)) continue
          out.push({
            start: r.base,
            length: r.end - r.base + 1n,
            prot: Prot.READ | Prot.WRITE,
            type: r.relaxable ? ResvType.DIRECT_RELAXABLE : ResvType.DIRECT,
          })
        }
        out.push({
          start: IOAPIC_RANGE_START,
          length: IOAPIC_RANGE_END - IOAPIC_RANGE_START + 1n,
          prot: 0,
          type: ResvType.MSI,
        })
        return out
      },
      /** `device_def_domain_type`: DMA when the unit cannot pass through. */
      defDomainType(dev) {
        return infoOf(dev).iommu.ecap & Ecap.PT ? 0 : DomainType.DMA
      },
      /** `intel_iommu_page_response`: a page group response descriptor. */
      pageResponse(dev: PciDevice, evt: IopfFault, response: PageResponse) {
        const info = infoOf(dev)
        const prm = evt.fault.prm
        const pasidPresent = (prm.flags & IOMMU_FAULT_PAGE_REQUEST_PASID_VALID) !== 0
        // The code goes out as given: IOMMU_PAGE_RESP_FAILURE (2) is not PCIe's 0xf.
        qiSubmitSync(info.iommu, [
          [
            (BigInt(prm.pasid) << 32n) |
              (BigInt(info.sid) << 16n) |
              (pasidPresent ? 1n << 4n : 0n) |
              (BigInt(response.code & 0xf) << 12n) |
              BigInt(Qi.PGRP_RESP),
            BigInt(prm.grpid & 0x1ff) << 3n,
          ],
        ])
      },
      pgsizeBitmap: (1n << 12n) | (1n << 21n) | (1n << 30n),
      blockedDomain,
      releaseDomain: blockedDomain,
      identityDomain,
    },
    domainOps: ssOps,
    dirtyOps,
    nesting: { domainAllocNested },
  })
  testHooks.set(driver, hooks)
  return driver
}

/**
 * The Linux AMD IOMMU driver (`drivers/iommu/amd/iommu.c`, `init.c`, `iommufd.c`) over
 * the hardware model: it programs the device table, command buffer and event log in
 * memory and talks to the unit only through MMIO and commands, as the kernel does.
 *
 * What it models of the 7.2 driver: v1 ("host") paging domains from the generic AMD v1
 * page table (dynamic top, FORCE_COHERENCE), DIRTY_TRACKING and NEST_PARENT allocation
 * flags, the blocked and identity domains, attach/detach writing DTEs in the kernel's
 * order with INVALIDATE_DEVTAB_ENTRY and COMPLETION_WAIT, the flush strategy (gathered
 * INVALIDATE_IOMMU_PAGES then COMPLETION_WAIT), and dirty tracking through DTE.HAD.
 * Not modelled yet: v2 (GCR3/PASID) domains, SVA, PPR/IOPF, interrupt remapping.
 *
 * @module
 */

import {
  type DirtyOps,
  type DomainOps,
  DomainType,
  type Driver,
  defineDriver,
  FramePurpose,
  HwInfoType,
  HwptAllocFlags,
  IommuCap,
  IommuDomain,
  IommuError,
  type IommuResvRegion,
  type IotlbGather,
  type Machine,
  type PciDevice,
  ResvType,
  type UnitContext,
} from '@iommu/core'
import {
  type AmdV1Config,
  type AmdV1Params,
  amdv1,
  PATH_RECORD_INTS,
  PageTable,
  PageTableWalker,
  pageTableDirtyOps,
  pageTableDomainOps,
  WalkFault,
} from '@iommu/io-pgtable'
import {
  AmdIommuHw,
  type AmdIommuHwConfig,
  DEFAULT_EFR,
  type HostTableWalker,
  type HostWalkResult,
} from './hw/iommu.ts'
import { POW2 } from './hw/iotlb.ts'
import {
  CMD_INV_ALL_PAGES_ADDRESS,
  CMD_SIZE,
  Cmd,
  CmdFlag,
  Control,
  Dte,
  Efr,
  Efr2,
  LEN_SHIFT,
  Mmio,
} from './hw/regs.ts'

/** `MSI_RANGE_START` / `MSI_RANGE_END`. */
export const MSI_RANGE_START = 0xfee0_0000n
export const MSI_RANGE_END = 0xfeef_ffffn
/** `HT_RANGE_START` / `HT_RANGE_END`: HyperTransport reserved space. */
export const HT_RANGE_START = 0xfd_0000_0000n
export const HT_RANGE_END = 0xff_ffff_ffffn
/** `FEATURE_HT_RANGE_IGNORE` in EFR2. */
const EFR2_HT_RANGE_IGNORE = 1n << 11n

const U64_MAX = 0xffff_ffff_ffff_ffffn
const DEV_TABLE_FRAMES = (65536 * Dte.SIZE) / 4096
const CMD_BUF_FRAMES = 2
const EVT_BUF_FRAMES = 2

/** Options of {@link amd}. */
export interface AmdOptions {
  /** Hardware configuration of units whose `createMachine` entry gives none. */
  readonly hw?: AmdIommuHwConfig
  /** `amd_iommu=pgsize_4k`-like narrowing of the page sizes (`amd_iommu_pgsize_bitmap`). */
  readonly pgsizeBitmap?: bigint
}

/**
 * Test-only switches that remove one invalidation from the driver's path, so that tests
 * can show the hardware model catching it. Never set outside tests.
 */
export interface AmdTestHooks {
  /** Skip INVALIDATE_IOMMU_PAGES in `iotlbSync` (unmap and dirty-clear flushes). */
  skipIotlbSync: boolean
  /** Skip INVALIDATE_DEVTAB_ENTRY after DTE updates. */
  skipDteFlush: boolean
}

/** Per-unit driver state (`struct amd_iommu`). */
interface AmdIommu {
  readonly hw: AmdIommuHw
  readonly index: number
  readonly devTablePa: number
  readonly cmdBufPa: number
  readonly evtBufPa: number
  readonly cmdSemPa: number
  cmdTail: number
  cmdSemVal: number
  needSync: boolean
  /** Event records consumed by the driver's log reader. */
  readonly eventLog: AmdEventRecord[]
}

/** An event-log record as the driver read it (`iommu_print_event`). */
export interface AmdEventRecord {
  readonly words: readonly [number, number, number, number]
}

/** Per-device driver state (`struct iommu_dev_data`). */
interface DevData {
  readonly devid: number
  readonly iommu: AmdIommu
  domain: AmdDomain | null
  atsEnabled: boolean
}

/** An AMD protection domain (`struct protection_domain`). */
export class AmdDomain extends IommuDomain {
  /** The domain ID tagging its IOTLB entries. */
  readonly id: number
  /** The v1 host page table (null for the identity domain). */
  pt: PageTable<AmdV1Config, AmdV1Params> | null = null
  /** Devices attached (`dev_list`). */
  readonly devices: Set<DevData> = new Set()
  /** Units with attached devices and their refcounts (`iommu_array`). */
  readonly iommus: Map<AmdIommu, number> = new Map()
  /** DTE.HAD is set for every attached device. */
  dirtyTracking = false
  /** Allocated with NEST_PARENT. */
  nestParent = false

  constructor(id: number, init: ConstructorParameters<typeof IommuDomain>[0]) {
    super(init)
    this.id = id
  }
}

interface AmdCaps {
  readonly dirtyTracking: true
  readonly nesting: false
  readonly pasid: false
  readonly enforceCacheCoherency: true
  readonly deferredFlush: true
  readonly iopf: false
}

const testHooks = new WeakMap<Driver, AmdTestHooks>()

/** The test-only switches of a driver made by {@link amd}. */
export function amdTestHooks(driver: Driver): AmdTestHooks {
  const h = testHooks.get(driver)
  if (h === undefined) throw new Error(`${driver.name} is not an AMD driver`)
  return h
}

/** The driver's hardware unit behind a device (for tests and tools). */
export function amdUnitOf(dev: PciDevice): AmdIommuHw {
  const u = dev.iommu?.unit ?? dev.unit
  if (!(u instanceof AmdIommuHw)) throw new IommuError('ENODEV', `${dev.name} is not behind AMD-Vi`)
  return u
}

/** The event records the driver consumed from a unit's event log. */
export function amdEventLog(dev: PciDevice): readonly AmdEventRecord[] {
  return stateOf(dev).iommu.eventLog
}

function stateOf(dev: PciDevice): DevData {
  const d = dev.iommu?.priv
  if (d === null || d === undefined) throw new IommuError('ENODEV', `${dev.name} not probed by amd`)
  return d as DevData
}

/** Adapts io-pgtable's AMD v1 hardware view to the unit's walker contract. */
function amdv1Walker(machine: Machine, efr: bigint): HostTableWalker {
  const hats = Number((efr >> Efr.HATS_SHIFT) & 3n)
  const walker = new PageTableWalker(machine.memory, amdv1, {
    hwMaxVaBits: [48, 57, 64][hats] ?? 64,
  })
  return {
    walk(rootPfn, mode, iovaPfn, access, ad, update, out: HostWalkResult): void {
      const r = walker.walk(rootPfn, mode - 1, iovaPfn, access, update ? ad : 0)
      out.fault = r.fault === WalkFault.ACCESS_FLAG ? WalkFault.NOT_PRESENT : r.fault
      out.faultLevel = r.fault === WalkFault.NONE ? -1 : r.level
      if (r.fault !== WalkFault.NONE) return
      // The IOVA page's offset in its leaf, in pages (a table, not Math.pow; no float `%`).
      const pages = POW2[r.sizeLg2 - 12] as number
      const within = pages === 1 ? 0 : iovaPfn - Math.floor(iovaPfn / pages) * pages
      out.sizeLg2 = r.sizeLg2
      out.leafVpn = iovaPfn - within
      out.leafPa = r.pagePfn - within
      out.perm = r.perm
      out.dirty = r.dirty
    },
    recordPath: (out, at) => walker.recordPath(out, at),
    pathUnchanged: (rec, at) => walker.pathUnchanged(rec, at),
    recordInts: PATH_RECORD_INTS,
  }
}

/**
 * The AMD-Vi driver. Each call makes a separate driver (registered once per machine);
 * every `createMachine` entry with it brings up one IOMMU unit.
 */
export function amd(options: AmdOptions = {}): Driver<AmdCaps> {
  const hooks: AmdTestHooks = { skipIotlbSync: false, skipDteFlush: false }
  const iommus: AmdIommu[] = []
  // Domain IDs 1..65535 (`amd_iommu_pdom_id_alloc`); 0 is reserved.
  const usedIds = new Set<number>()
  let machineRef: Machine | null = null
  /**
   * `amd_iommu_hatdis`, global as in the kernel: an IVHD declared HATDis, or the EFR's
   * HATS field holds the invalid 11b. No v1 (host) page table, no hardware dirty tracking.
   */
  let hatdis = false
  /** `amd_iommu_efr`: the first unit's EFR stands for all (`late_iommu_features_init`). */
  const globalEfr = (): bigint => iommus[0]?.hw.efr ?? 0n
  /** `amd_iommu_v2_pgtbl_supported`: GIoSup and GTSup. */
  const v2Supported = (): boolean =>
    (globalEfr() & Efr.GIOSUP) !== 0n && (globalEfr() & Efr.GT) !== 0n

  const allocDomainId = (): number => {
    for (let id = 1; id < 65536; id++) {
      if (!usedIds.has(id)) {
        usedIds.add(id)
        return id
      }
    }
    throw new IommuError('ENOSPC', 'no free AMD domain ID')
  }

  // ---------------------------------------------------------------- command buffer

  /** `iommu_queue_command`: copy a command to the buffer and advance the tail. */
  const queueCommand = (iommu: AmdIommu, w: readonly [number, number, number, number]) => {
    const mem = iommu.hw.memory
    const pa = iommu.cmdBufPa + iommu.cmdTail
    for (let i = 0; i < 4; i++) mem.write32(pa + 4 * i, (w[i] as number) >>> 0)
    iommu.cmdTail = (iommu.cmdTail + CMD_SIZE) % (CMD_BUF_FRAMES * 4096)
    iommu.hw.writeMmio(Mmio.CMD_TAIL, BigInt(iommu.cmdTail))
    iommu.needSync = true
  }

  /** `iommu_completion_wait`: COMPLETION_WAIT storing a sequence number, then poll it. */
  const completionWait = (iommu: AmdIommu) => {
    if (!iommu.needSync) return
    const data = ++iommu.cmdSemVal
    const pa = iommu.cmdSemPa
    queueCommand(iommu, [
      (pa & 0xffff_fff8) | CmdFlag.COMPL_WAIT_STORE,
      Math.floor(pa / 2 ** 32) | (Cmd.COMPLETION_WAIT << 28),
      data >>> 0,
      Math.floor(data / 2 ** 32),
    ])
    iommu.needSync = false
    const got = iommu.hw.memory.read32(pa) + iommu.hw.memory.read32(pa + 4) * 2 ** 32
    if (got < data) throw new IommuError('EIO', `${iommu.hw.name}: completion-wait timed out`)
    readEvents(iommu)
  }

  /** `iommu_poll_events`: consume the event log (the driver's interrupt thread). */
  const readEvents = (iommu: AmdIommu) => {
    const hw = iommu.hw
    const mem = hw.memory
    let head = Number(hw.readMmio(Mmio.EVT_HEAD))
    const tail = Number(hw.readMmio(Mmio.EVT_TAIL))
    while (head !== tail) {
      const pa = iommu.evtBufPa + head
      iommu.eventLog.push({
        words: [mem.read32(pa), mem.read32(pa + 4), mem.read32(pa + 8), mem.read32(pa + 12)],
      })
      // Erratum 732: the driver zeroes a consumed entry.
      mem.fill(pa, 16, 0)
      head = (head + 16) % (EVT_BUF_FRAMES * 4096)
      hw.writeMmio(Mmio.EVT_HEAD, BigInt(head))
    }
  }

  /** `build_inv_address`: encode [address, last] as INVALIDATE_*_PAGES address + S. */
  const invAddress = (address: bigint, last: bigint): bigint => {
    const a = address & ~0xfffn & U64_MAX
    const szLg2 = (a ^ last).toString(2).length
    if ((a ^ last) === 0n || szLg2 <= 12) return a
    if (szLg2 > 52) return CMD_INV_ALL_PAGES_ADDRESS | BigInt(CmdFlag.PAGES_SIZE)
    let out = a
    if (szLg2 > 13) out |= ((1n << BigInt(szLg2 - 1)) - 1n) & ~0xfffn
    return out | BigInt(CmdFlag.PAGES_SIZE)
  }

  /** `build_inv_iommu_pages` + queue. */
  const invIommuPages = (
    iommu: AmdIommu,
    address: bigint,
    last: bigint,
    domid: number,
    flags: number,
  ) => {
    const inv = invAddress(address, last)
    queueCommand(iommu, [
      0,
      domid | (Cmd.INVALIDATE_IOMMU_PAGES << 28),
      (Number(inv & 0xffff_ffffn) | flags) >>> 0,
      Number(inv >> 32n),
    ])
  }

  /** `amd_iommu_domain_flush_pages`: every unit of the domain, then wait. */
  const domainFlushPages = (d: AmdDomain, address: bigint, last: bigint, flags: number) => {
    for (const iommu of d.iommus.keys()) invIommuPages(iommu, address, last, d.id, flags)
    for (const iommu of d.iommus.keys()) completionWait(iommu)
  }

  /** `amd_iommu_domain_flush_all`: everything, including PDEs. */
  const domainFlushAll = (d: AmdDomain) => domainFlushPages(d, 0n, U64_MAX, CmdFlag.PAGES_PDE)

  // ---------------------------------------------------------------- device table

  const dteAddr = (dd: DevData) => dd.iommu.devTablePa + dd.devid * Dte.SIZE

  /** `iommu_flush_dte` / `device_flush_dte`. */
  const flushDte = (dd: DevData) => {
    if (hooks.skipDteFlush) return
    queueCommand(dd.iommu, [dd.devid, Cmd.INVALIDATE_DEVTAB_ENTRY << 28, 0, 0])
  }

  /**
   * `update_dte256`: write the two 128-bit halves in the order that keeps V/GV last when
   * setting and first when clearing, then flush the DTE.
   */
  const updateDte = (dd: DevData, next: readonly bigint[]) => {
    const mem = dd.iommu.hw.memory
    const pa = dteAddr(dd)
    const cur0 = mem.read64(pa)
    const upper = () => {
      mem.write64(pa + 16, next[2] as bigint)
      mem.write64(pa + 24, next[3] as bigint)
    }
    const lower = () => {
      mem.write64(pa, next[0] as bigint)
      mem.write64(pa + 8, next[1] as bigint)
    }
    const nextV = ((next[0] as bigint) & Dte.V) !== 0n
    if ((cur0 & Dte.V) === 0n || (nextV && (cur0 & Dte.GV) === 0n)) {
      upper()
      lower()
    } else {
      lower()
      upper()
    }
    flushDte(dd)
    completionWait(dd.iommu)
  }

  /** `set_dte_entry` (v1 paging and passthrough) or `clear_dte_entry` (blocked). */
  const setDteEntry = (dd: DevData, top?: { pfn: number; level: number }) => {
    const mem = dd.iommu.hw.memory
    const oldDomid = Number(mem.read64(dteAddr(dd) + 8) & Dte.DOMID_MASK)
    const d = dd.domain
    // amd_iommu_make_clear_dte: V only (no IVHD persistent bits in this machine).
    let d0 = Dte.V
    let d1 = 0n
    const d2 = mem.read64(dteAddr(dd) + 16)
    if (d !== null && d.type === DomainType.IDENTITY) {
      d0 |= Dte.TV | Dte.IR | Dte.IW
      d1 |= BigInt(d.id) | (dd.atsEnabled ? Dte.IOTLB : 0n)
    } else if (d !== null && d.pt !== null) {
      const root = top ?? d.pt.root
      d0 |=
        Dte.TV |
        (BigInt(root.level + 1) << Dte.MODE_SHIFT) |
        (d.dirtyTracking ? Dte.HAD : 0n) |
        (BigInt(root.pfn) << 12n) |
        Dte.IR |
        Dte.IW
      d1 |= BigInt(d.id) | (dd.atsEnabled ? Dte.IOTLB : 0n)
    }
    updateDte(dd, [d0, d1, d2, 0n])
    // set_dte_entry flushes whatever was cached under the DTE's previous domain ID
    // (amd_iommu_flush_tlb_domid); clear_dte_entry does not.
    if (oldDomid && d !== null) {
      invIommuPages(dd.iommu, 0n, U64_MAX, oldDomid, CmdFlag.PAGES_PDE)
      completionWait(dd.iommu)
    }
  }

  // ---------------------------------------------------------------- attach / detach

  const attachIommu = (d: AmdDomain, iommu: AmdIommu) => {
    d.iommus.set(iommu, (d.iommus.get(iommu) ?? 0) + 1)
  }

  const detachIommu = (d: AmdDomain, iommu: AmdIommu) => {
    const n = (d.iommus.get(iommu) ?? 0) - 1
    if (n <= 0) d.iommus.delete(iommu)
    else d.iommus.set(iommu, n)
  }

  /** `detach_device`: clear the DTE, flush the domain, drop the references. */
  const detachDevice = (dd: DevData) => {
    const d = dd.domain
    if (d === null) return
    dd.domain = null
    setDteEntry(dd)
    domainFlushAll(d)
    d.devices.delete(dd)
    detachIommu(d, dd.iommu)
  }

  /** `attach_device`. */
  const attachDevice = (dd: DevData, d: AmdDomain) => {
    if (dd.domain !== null) throw new IommuError('EBUSY', 'device attached')
    attachIommu(d, dd.iommu)
    dd.domain = d
    d.devices.add(dd)
    setDteEntry(dd)
  }

  /** `amd_iommu_hd_support`: a property of the IOMMU (EFR.HDSup), never with HATDis. */
  const hdSupport = (iommu: AmdIommu) => !hatdis && (iommu.hw.efr & Efr.HDSUP) !== 0n

  /** `amd_iommu_attach_device`. */
  const attachDev = (domain: IommuDomain, dev: PciDevice): void => {
    const dd = stateOf(dev)
    const d = domain as AmdDomain
    if (dd.domain === d) return
    // Dirty tracking is enforced at attach: the device's IOMMU must support it (EINVAL).
    if (domain.dirtyOps !== null && !hdSupport(dd.iommu)) {
      throw new IommuError('EINVAL', `${dev.name}: its IOMMU has no hardware dirty tracking`)
    }
    if (dd.domain !== null) detachDevice(dd)
    attachDevice(dd, d)
  }

  /** `blocked_domain_attach_device`. */
  const blockedAttach = (_domain: IommuDomain, dev: PciDevice): void => {
    const dd = stateOf(dev)
    if (dd.domain !== null) detachDevice(dd)
    setDteEntry(dd)
  }

  // ---------------------------------------------------------------- domains

  const tableOf = (d: AmdDomain): PageTable<AmdV1Config, AmdV1Params> => {
    if (d.pt === null) throw new IommuError('EINVAL', 'domain has no page table')
    return d.pt
  }

  const paging = pageTableDomainOps<AmdDomain>(amdv1, tableOf)

  const domainOps = {
    ...paging,
    attachDev,
    flushIotlbAll: (d: AmdDomain) => domainFlushAll(d),
    /** `amd_iommu_iotlb_sync`: the gathered range, PDE when tables were freed. */
    iotlbSync(d: AmdDomain, gather: IotlbGather) {
      if (hooks.skipIotlbSync) return
      domainFlushPages(d, gather.start, gather.end, gather.freelist.length ? CmdFlag.PAGES_PDE : 0)
    },
    /** `amd_iommu_enforce_cache_coherency`: IOMMU_PTE_FC is always set. */
    enforceCacheCoherency: () => true,
    free(d: AmdDomain) {
      if (d.devices.size) throw new Error(`AMD domain ${d.id} freed while attached`)
      d.pt?.free()
      usedIds.delete(d.id)
    },
  } satisfies DomainOps<AmdDomain>

  const dirtyOps = {
    ...pageTableDirtyOps<AmdDomain>(tableOf),
    /** `amd_iommu_set_dirty_tracking`: HAD in every attached DTE, then flush all. */
    setDirtyTracking(d: AmdDomain, enable: boolean) {
      if (d.dirtyTracking === enable) return
      let flush = false
      for (const dd of d.devices) {
        const mem = dd.iommu.hw.memory
        const pa = dteAddr(dd)
        const d0 = mem.read64(pa)
        mem.write64(pa, enable ? d0 | Dte.HAD : d0 & ~Dte.HAD)
        flushDte(dd)
        flush = true
      }
      if (flush) domainFlushAll(d)
      d.dirtyTracking = enable
    },
  } satisfies DirtyOps<AmdDomain>

  /** `amd_iommu_domain_alloc_paging_v1`: none with HATDis. */
  const allocV1 = (dev: PciDevice, flags: number): AmdDomain => {
    if (hatdis) throw new IommuError('EOPNOTSUPP', 'amd: HATDis, no host (v1) page table')
    const iommu = stateOf(dev).iommu
    const hats = Number((iommu.hw.efr >> Efr.HATS_SHIFT) & 3n)
    const id = allocDomainId()
    const d = new AmdDomain(id, {
      ops: domainOps,
      dirtyOps: flags & HwptAllocFlags.DIRTY_TRACKING ? dirtyOps : null,
    })
    let pt: PageTable<AmdV1Config, AmdV1Params>
    try {
      pt = new PageTable(
        iommu.hw.memory,
        amdv1,
        {
          startingLevel: 2,
          hwMaxVaBits: [48, 57, 64][hats] ?? 64,
          hwMaxOaBits: 52,
          forceCoherence: true,
        },
        {
          // The narrowed page sizes (amd_iommu_pgsize_bitmap) also bound map_range.
          ...(options.pgsizeBitmap === undefined ? {} : { pgsizeBitmap: options.pgsizeBitmap }),
          // amd_iommu_change_top: rewrite every attached DTE with the new root and mode.
          changeTop: (topPfn, topLevel) => {
            for (const dd of d.devices) setDteEntry(dd, { pfn: topPfn, level: topLevel })
            for (const io of d.iommus.keys()) completionWait(io)
          },
          iotlbSync: (gather) => domainOps.iotlbSync(d, gather),
        },
      )
    } catch (e) {
      usedIds.delete(id)
      throw e
    }
    d.pt = pt
    d.pgsizeBitmap = pt.pgsizeBitmap
    const g = pt.geometry
    d.geometry.apertureStart = g.apertureStart
    d.geometry.apertureEnd = g.apertureEnd
    d.geometry.forceAperture = g.forceAperture
    d.nestParent = (flags & HwptAllocFlags.NEST_PARENT) !== 0
    return d
  }

  const blockedDomain = new IommuDomain({
    type: DomainType.BLOCKED,
    ops: { attachDev: blockedAttach },
  })
  const identityDomain = new AmdDomain(allocDomainId(), {
    type: DomainType.IDENTITY,
    ops: { attachDev },
  })

  const driver = defineDriver({
    name: 'amd',
    apiVersion: 1,
    capabilities: {
      dirtyTracking: true,
      nesting: false,
      pasid: false,
      enforceCacheCoherency: true,
      deferredFlush: true,
      iopf: false,
    },
    createUnit(ctx: UnitContext) {
      machineRef = ctx.machine
      const config = (ctx.config as AmdIommuHwConfig | undefined) ?? options.hw ?? {}
      const mem = ctx.machine.memory
      const efr = config.efr ?? DEFAULT_EFR
      // init_iommu_one / early_amd_iommu_init: the IVHD attribute, or HATS = 11b.
      if (config.ivhdHatdis || (iommus.length === 0 && ((efr >> Efr.HATS_SHIFT) & 3n) === 3n)) {
        hatdis = true
      }
      const walker = amdv1Walker(ctx.machine, efr)
      const hw = new AmdIommuHw(ctx.machine, `amd-iommu${ctx.index}`, walker, config)
      // init.c: device table, command buffer, event log, completion-wait semaphore.
      const devTablePa =
        mem.allocFrames(DEV_TABLE_FRAMES, FramePurpose.IOMMU_HW, DEV_TABLE_FRAMES) * 4096
      const cmdBufPa = mem.allocFrames(CMD_BUF_FRAMES, FramePurpose.IOMMU_HW, CMD_BUF_FRAMES) * 4096
      const evtBufPa = mem.allocFrames(EVT_BUF_FRAMES, FramePurpose.IOMMU_HW, EVT_BUF_FRAMES) * 4096
      const cmdSemPa = mem.allocFrame(FramePurpose.IOMMU_HW) * 4096
      // init_device_table_dma: every DTE valid with TV and no permissions (DMA aborted).
      for (let devid = 0; devid < 65536; devid++) mem.write32(devTablePa + devid * Dte.SIZE, 3)
      hw.writeMmio(Mmio.DEV_TABLE, BigInt(devTablePa) | BigInt(DEV_TABLE_FRAMES - 1))
      hw.writeMmio(Mmio.CMD_BUF, BigInt(cmdBufPa) | (9n << LEN_SHIFT))
      hw.writeMmio(Mmio.EVT_BUF, BigInt(evtBufPa) | (9n << LEN_SHIFT))
      hw.writeMmio(
        Mmio.CONTROL,
        (1n << BigInt(Control.IOMMU_EN)) |
          (1n << BigInt(Control.EVT_LOG_EN)) |
          (1n << BigInt(Control.CMDBUF_EN)) |
          (1n << BigInt(Control.COHERENT_EN)),
      )
      const iommu: AmdIommu = {
        hw,
        index: iommus.length,
        devTablePa,
        cmdBufPa,
        evtBufPa,
        cmdSemPa,
        cmdTail: 0,
        cmdSemVal: 0,
        needSync: false,
        eventLog: [],
      }
      iommus.push(iommu)
      // amd_iommu_flush_all_caches at enable time.
      queueCommand(iommu, [0, Cmd.INVALIDATE_IOMMU_ALL << 28, 0, 0])
      completionWait(iommu)
      return hw
    },
    ops: {
      capable(dev, cap) {
        switch (cap) {
          case IommuCap.CACHE_COHERENCY:
          case IommuCap.ENFORCE_CACHE_COHERENCY:
            return true
          case IommuCap.DIRTY_TRACKING:
            return hdSupport(stateOf(dev).iommu)
          case IommuCap.PCI_ATS_SUPPORTED:
            return dev.ats
          default:
            return false
        }
      },
      /** `amd_iommufd_hw_info`: `struct iommu_hw_info_amd { u64 efr; u64 efr2 }`. */
      hwInfo(dev, type) {
        if (type !== HwInfoType.DEFAULT && type !== HwInfoType.AMD) {
          throw new IommuError('EOPNOTSUPP', `hw_info type ${type}`)
        }
        const hw = stateOf(dev).iommu.hw
        const data = new Uint8Array(16)
        const v = new DataView(data.buffer)
        v.setBigUint64(0, hw.efr, true)
        v.setBigUint64(8, hw.efr2, true)
        return { type: HwInfoType.AMD, data }
      },
      /** `amd_iommu_domain_alloc_paging_flags`. */
      domainAllocPagingFlags(dev, flags, data) {
        const iommu = stateOf(dev).iommu
        const supported =
          HwptAllocFlags.DIRTY_TRACKING | HwptAllocFlags.PASID | HwptAllocFlags.NEST_PARENT
        if (flags & ~supported || data !== null) {
          throw new IommuError('EOPNOTSUPP', `amd: flags 0x${flags.toString(16)} or user data`)
        }
        const wantDirty = (flags & HwptAllocFlags.DIRTY_TRACKING) !== 0
        const wantParent = (flags & HwptAllocFlags.NEST_PARENT) !== 0
        if (flags & HwptAllocFlags.PASID) {
          throw new IommuError('EOPNOTSUPP', 'amd: v2 (PASID) page tables are not modelled')
        }
        if (wantDirty && !hdSupport(iommu)) {
          throw new IommuError('EOPNOTSUPP', 'amd: no HDSup (or HATDis)')
        }
        // No flags: the v1 default, then v2, which the model does not have (the kernel
        // allocates a v2 table here when the IOMMU has GTSup and GIoSup).
        if (flags === 0 && hatdis) {
          throw new IommuError('EOPNOTSUPP', 'amd: HATDis, and v2 page tables are not modelled')
        }
        const efr = iommu.hw.efr
        if (wantParent && !(efr & Efr.GT && efr & Efr.GIOSUP && iommu.hw.efr2 & Efr2.GCR3TRPMODE)) {
          throw new IommuError('EOPNOTSUPP', 'amd: nest parent needs GTSup, GIoSup, GCR3TRPMode')
        }
        return allocV1(dev, flags)
      },
      /** `amd_iommu_probe_device`: find the unit, set up `iommu_dev_data`. */
      probeDevice(dev) {
        const hw = dev.unit
        const iommu = iommus.find((i) => i.hw === hw)
        if (iommu === undefined || dev.iommu === null) throw new IommuError('ENODEV', dev.name)
        // PD_MODE_NONE: HATDis without v2 support leaves no DMA translation at all.
        if (hatdis && !v2Supported()) {
          throw new IommuError('ENODEV', `${dev.name}: HATDis and no v2 page table support`)
        }
        const dd: DevData = { devid: dev.rid, iommu, domain: null, atsEnabled: false }
        dev.iommu.priv = dd
        completionWait(iommu)
        return iommu.hw
      },
      releaseDevice(dev) {
        const dd = stateOf(dev)
        if (dd.domain !== null) detachDevice(dd)
      },
      deviceGroup(dev) {
        if (machineRef === null) throw new IommuError('ENODEV', 'amd not initialised')
        return machineRef.iommu.pciDeviceGroup(dev)
      },
      /** `amd_iommu_get_resv_regions`: the MSI window and the HyperTransport hole. */
      getResvRegions(dev) {
        const out: IommuResvRegion[] = [
          {
            start: MSI_RANGE_START,
            length: MSI_RANGE_END - MSI_RANGE_START + 1n,
            prot: 0,
            type: ResvType.MSI,
          },
        ]
        if (!(stateOf(dev).iommu.hw.efr2 & EFR2_HT_RANGE_IGNORE)) {
          out.push({
            start: HT_RANGE_START,
            length: HT_RANGE_END - HT_RANGE_START + 1n,
            prot: 0,
            type: ResvType.RESERVED,
          })
        }
        return out
      },
      /** `amd_iommu_def_domain_type`: untrusted → DMA; PASID-capable → identity. */
      defDomainType(dev) {
        if (dev.untrusted) return DomainType.DMA
        if (dev.pasidBits > 0) return DomainType.IDENTITY
        return 0
      },
      pgsizeBitmap: 0xffff_ffff_ffff_f000n & ~(1n << 39n),
      blockedDomain,
      releaseDomain: blockedDomain,
      identityDomain,
    },
    domainOps,
    dirtyOps,
  })
  identityDomain.owner = driver
  testHooks.set(driver, hooks)
  return driver
}

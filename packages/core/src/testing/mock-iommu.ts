/**
 * A mock IOMMU driver in the spirit of the kernel selftest's (`iommufd/selftest.c`): a
 * 2 KiB IO page (half the CPU page, to exercise sub-page alignment), the aperture
 * 0x1000000–0x7fffffff, devices with and without dirty tracking, injectable reserved
 * regions, a hook that marks IOVA dirty as hardware would, a nested domain with an
 * "IOTLB" array, and the PASID-1024 fake error.
 *
 * It keeps its own simple page table (a radix of 512-entry blocks keyed by IO page
 * number) and does not depend on `@iommu/io-pgtable`. Its "hardware" is a RID/PASID →
 * domain table written by attach and read by `translate`, which marks IO pages dirty on
 * DMA writes while the domain tracks dirty pages.
 *
 * Dirty reads follow the 7.2 mock, which walks with generic_pt (`record_dirty`): the first
 * IOPTE of a read is recorded from the read's start with its full size, the others whole.
 * Its IOPTEs are single IO pages or huge pages: the 7.2 mock's AMD v1 format can also hold
 * contiguous leaves (a 4 KiB CPU page as two 2 KiB items), which this mock does not build;
 * `@iommu/driver-amd` has them.
 *
 * @module
 */

import {
  DomainType,
  HwptAllocFlags,
  IOMMU_DIRTY_NO_CLEAR,
  IommuCap,
  PAGE_SIZE,
  Prot,
} from '../constants.ts'
import {
  copyStructFromFullUserArray,
  copyStructFromUser,
  copyStructToUser,
  type DirtyOps,
  type DomainOps,
  IommuDomain,
  type IommuResvRegion,
  type UserData,
  type UserDataArray,
} from '../domain.ts'
import { type Driver, defineDriver, type IommuUnit, type UnitContext } from '../driver.ts'
import { IommuError } from '../errno.ts'
import type { IommuDirtyBitmap, IotlbGather } from '../gather.ts'
import {
  IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE,
  IOMMU_FAULT_PAGE_REQUEST_PASID_VALID,
  IOMMU_FAULT_PERM_READ,
  IOMMU_FAULT_PERM_WRITE,
  type IopfFault,
  IopfQueue,
  iopfFault,
  type PageResponse,
} from '../iommu/iopf.ts'
import type { DmaTransaction } from '../machine/dma.ts'
import type { Machine } from '../machine/machine.ts'
import { FramePurpose, type PhysicalMemory } from '../machine/memory.ts'
import type { PciDevice } from '../machine/pci.ts'
import {
  type IommufdHwQueue,
  type IommufdViommu,
  iommufdHwQueueDepend,
  iommufdHwQueueUndepend,
  iommufdViommuAllocMmap,
  iommufdViommuDestroyMmap,
  iommufdViommuFindDev,
  iommufdViommuGetVdevId,
  iommufdViommuReportEvent,
  type ViommuOps,
} from '../viommu.ts'

/** `MOCK_APERTURE_START`. */
export const MOCK_APERTURE_START = 0x100_0000n
/** `MOCK_APERTURE_LAST`. */
export const MOCK_APERTURE_LAST = 0x7fff_ffffn
/** `MOCK_PAGE_SIZE`: the mock IOPTE granule. */
export const MOCK_PAGE_SIZE = 2048
/** `MOCK_HUGE_PAGE_SIZE`: 512 mock pages. */
export const MOCK_HUGE_PAGE_SIZE = 512 * MOCK_PAGE_SIZE
/** `MOCK_PASID_WIDTH`: PASID bits of a `MOCK_FLAGS_DEVICE_PASID` device. */
export const MOCK_PASID_WIDTH = 20
/** `IOMMU_HW_INFO_TYPE_SELFTEST`. */
export const IOMMU_HW_INFO_TYPE_SELFTEST = 0xfeed_beef
/** `IOMMU_HW_INFO_SELFTEST_REGVAL`. */
export const IOMMU_HW_INFO_SELFTEST_REGVAL = 0xdead_beef
/** `IOMMU_HWPT_DATA_SELFTEST`: `struct iommu_hwpt_selftest { u32 iotlb; u32 pagetable_type }`. */
export const IOMMU_HWPT_DATA_SELFTEST = 0xdead
/** `IOMMU_HWPT_INVALIDATE_DATA_SELFTEST`. */
export const IOMMU_HWPT_INVALIDATE_DATA_SELFTEST = 0xdead_beef
/** `IOMMU_TEST_INVALIDATE_FLAG_ALL`. */
export const IOMMU_TEST_INVALIDATE_FLAG_ALL = 1
/** `MOCK_NESTED_DOMAIN_IOTLB_ID_MAX` / `_NUM`. */
export const MOCK_NESTED_DOMAIN_IOTLB_ID_MAX = 3
export const MOCK_NESTED_DOMAIN_IOTLB_NUM = 4
/** `IOMMU_VIOMMU_TYPE_SELFTEST`: data `struct iommu_viommu_selftest`. */
export const IOMMU_VIOMMU_TYPE_SELFTEST = 0xdead_beef
/** `IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST`: entries `struct iommu_viommu_invalidate_selftest`. */
export const IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST = 0xdead_beef
/** `IOMMU_VEVENTQ_TYPE_SELFTEST`: events `struct iommu_viommu_event_selftest { u32 virt_id }`. */
export const IOMMU_VEVENTQ_TYPE_SELFTEST = 0xbeef_beef
/** `IOMMU_HW_QUEUE_TYPE_SELFTEST`. */
export const IOMMU_HW_QUEUE_TYPE_SELFTEST = 0xdead_beef
/** `IOMMU_TEST_HW_QUEUE_MAX`: HW queues per mock vIOMMU. */
export const IOMMU_TEST_HW_QUEUE_MAX = 2
/** `MOCK_DEV_CACHE_ID_MAX` / `MOCK_DEV_CACHE_NUM`: the per-device mock cache. */
export const MOCK_DEV_CACHE_ID_MAX = 3
export const MOCK_DEV_CACHE_NUM = 4
/** `IOMMU_TEST_DEV_CACHE_DEFAULT`: the initial value of each mock device cache word. */
export const IOMMU_TEST_DEV_CACHE_DEFAULT = 0xbaddad
/** `IOMMU_TEST_PASID_RESERVED`: the PASID with the fake second-attach error. */
export const IOMMU_TEST_PASID_RESERVED = 1024
/**
 * `MOCK_IOMMUPT_*`: the `pagetable_type` of the selftest HWPT data, exactly 7.2's
 * `iommufd_test.h`; `mock_domain_alloc_pgtable` answers EOPNOTSUPP for any other value.
 */
export const MockPagetableType = { DEFAULT: 0, HUGE: 1 } as const

const F_PRESENT = 1
const F_READ = 2
const F_WRITE = 4
const F_DIRTY = 8
const F_START = 16
const F_LAST = 32
const F_HUGE = 64

const BLOCK_SHIFT = 9
const BLOCK = 1 << BLOCK_SHIFT

interface Block {
  /** Output page number (PA >> pageShift) per entry. */
  readonly pa: Float64Array
  readonly flags: Uint8Array
  used: number
}

/** Options of {@link mockIommu}. */
export interface MockIommuOptions {
  /** Driver name (default `'mock'`); two drivers in one machine need two names. */
  readonly name?: string
  /** IO page size in bytes: a power of two ≥ 2 KiB (default 2 KiB). */
  readonly ioPageSize?: number
  /** Also map huge pages of this size (the old `MOCK_FLAGS_DEVICE_HUGE_IOVA`); 0 = no. */
  readonly hugePageSize?: number
  /** Aperture of paging domains (default `MOCK_APERTURE_START`..`MOCK_APERTURE_LAST`). */
  readonly aperture?: { readonly start: bigint; readonly end: bigint }
  /** Reserved regions reported for every device (injected). */
  readonly resvRegions?: readonly IommuResvRegion[]
  /** PASIDs the mock IOMMU supports (default 2^20). */
  readonly maxPasids?: number
  /**
   * How devices are grouped: `'generic'` (one group per device, as the kernel mock) or
   * `'pci'` (devices sharing an `isolationGroup` label share a group).
   */
  readonly deviceGroup?: 'generic' | 'pci'
  /**
   * The default domain: `'blocked'` (the kernel mock's static default) or `'auto'` (the
   * core picks DMA or identity as for a real driver).
   */
  readonly defaultDomain?: 'blocked' | 'auto'
}

/** A mock paging domain with its own page table. */
export class MockDomain extends IommuDomain {
  /** log2 of the IO page size. */
  readonly pageShift: number
  /** Huge page size in IO pages (0 = none). */
  readonly hugePages: number
  /** Huge-only domain (`MOCK_IOMMUPT_HUGE`): every map must be huge-aligned and sized. */
  readonly hugeOnly: boolean
  /** Dirty tracking is on (`MOCK_DIRTY_TRACK`). */
  dirtyTracking = false
  readonly #blocks = new Map<number, Block>()
  /** Mapped IO pages. */
  mappedPages = 0

  constructor(
    ops: DomainOps<MockDomain>,
    dirty: DirtyOps<MockDomain> | null,
    o: {
      pageShift: number
      hugePages: number
      hugeOnly: boolean
      pgsizeBitmap: bigint
      aperture: { start: bigint; end: bigint }
    },
  ) {
    super({
      ops,
      dirtyOps: dirty,
      pgsizeBitmap: o.pgsizeBitmap,
      geometry: {
        apertureStart: o.aperture.start,
        apertureEnd: o.aperture.end,
        forceAperture: true,
      },
    })
    this.pageShift = o.pageShift
    this.hugePages = o.hugePages
    this.hugeOnly = o.hugeOnly
  }

  #block(index: number, create: boolean): Block | undefined {
    const key = Math.floor(index / BLOCK)
    let b = this.#blocks.get(key)
    if (b === undefined && create) {
      b = { pa: new Float64Array(BLOCK), flags: new Uint8Array(BLOCK), used: 0 }
      this.#blocks.set(key, b)
    }
    return b
  }

  /** Flags of IO page `index` (0 = not mapped). */
  flagsAt(index: number): number {
    const b = this.#block(index, false)
    return b === undefined ? 0 : (b.flags[index % BLOCK] as number)
  }

  /** Output page number of IO page `index` (valid when mapped). */
  paAt(index: number): number {
    const b = this.#block(index, false)
    return b === undefined ? 0 : (b.pa[index % BLOCK] as number)
  }

  /** @internal store one entry. */
  set(index: number, paPage: number, flags: number): void {
    const b = this.#block(index, true) as Block
    const i = index % BLOCK
    if (b.flags[i] === 0) {
      b.used++
      this.mappedPages++
    }
    b.pa[i] = paPage
    b.flags[i] = flags
  }

  /** @internal erase one entry; returns its flags. */
  erase(index: number): number {
    const key = Math.floor(index / BLOCK)
    const b = this.#blocks.get(key)
    if (b === undefined) return 0
    const i = index % BLOCK
    const f = b.flags[i] as number
    if (f !== 0) {
      b.flags[i] = 0
      this.mappedPages--
      if (--b.used === 0) this.#blocks.delete(key)
    }
    return f
  }

  /** @internal update flags of a mapped entry. */
  setFlags(index: number, flags: number): void {
    const b = this.#block(index, false)
    if (b !== undefined) b.flags[index % BLOCK] = flags
  }

  /** First IO page of the huge page containing `index` (or `index` itself). */
  pteStart(index: number): number {
    if (this.hugePages && this.flagsAt(index) & F_HUGE) {
      return index - (index % this.hugePages)
    }
    return index
  }

  /** IO pages covered by the IOPTE at `index`. */
  pteLength(index: number): number {
    return this.hugePages && this.flagsAt(index) & F_HUGE ? this.hugePages : 1
  }
}

/** Model stage-1 entry bit: the entry is valid. */
export const MOCK_S1_VALID = 1n << 0n
/** Model stage-1 entry bit: writes are allowed. */
export const MOCK_S1_WRITE = 1n << 1n
/** Model stage-1 entry field: the output guest-physical frame (bits 12..51). */
export const MOCK_S1_ADDR_MASK = 0x000f_ffff_ffff_f000n

/**
 * A mock nested (user-managed stage-1) domain with its mock IOTLB.
 *
 * The kernel's mock nested domain translates nothing (its hardware never walks a stage 1).
 * This model adds a small stage 1 that exists only here, so that a test can send DMA
 * through both stages: a one-level table of little-endian u64 entries in guest memory,
 * one entry per 4 KiB of IOVA from IOVA 0 (bit 0 valid, bit 1 writable, bits 12..51 the
 * guest-physical frame). Every read of the table goes through the parent's stage 2, as
 * nested hardware reads a guest table. The table is given to the domain with
 * {@link setStage1Table} — never through the uAPI data, whose layout stays the kernel's.
 * Without a table the stage 1 is the identity (IOVA = guest-physical address).
 */
export class MockNestedDomain extends IommuDomain {
  /** `iotlb[MOCK_NESTED_DOMAIN_IOTLB_NUM]`, invalidated by `cacheInvalidateUser`. */
  readonly iotlb: Uint32Array = new Uint32Array(MOCK_NESTED_DOMAIN_IOTLB_NUM)
  /** The stage-2 parent. */
  readonly parent: MockDomain
  /** The vIOMMU the domain was allocated on (`mock_viommu`), or null. */
  readonly viommu: IommufdViommu | null
  /** Guest-physical address of the model stage-1 table; null = identity stage 1. */
  s1Table: bigint | null = null
  /** Entries of the model stage-1 table (the IOVA it covers is `entries * 4 KiB`). */
  s1Entries = 0

  constructor(
    ops: DomainOps<MockNestedDomain>,
    parent: MockDomain,
    iotlb: number,
    viommu: IommufdViommu | null = null,
  ) {
    super({ type: DomainType.NESTED, ops })
    this.parent = parent
    this.iotlb.fill(iotlb)
    this.viommu = viommu
  }

  /**
   * Point the model stage 1 at a table of `entries` u64 entries at guest-physical `gpa`
   * (8-byte aligned), or back to the identity with `null`. Model only: the kernel's mock
   * has no stage 1.
   */
  setStage1Table(gpa: bigint | null, entries = 0): void {
    if (gpa !== null && (gpa % 8n !== 0n || !Number.isSafeInteger(entries) || entries <= 0)) {
      throw new RangeError('stage-1 table: 8-byte aligned GPA and a positive entry count')
    }
    this.s1Table = gpa
    this.s1Entries = gpa === null ? 0 : entries
  }
}

/** A DMA the mock hardware could not translate, as its event log records it. */
export interface MockFaultRecord {
  readonly rid: number
  readonly pasid: number | undefined
  readonly iova: bigint
  readonly write: boolean
  /** The domain the access went through. */
  readonly domain: IommuDomain | null
}

/** Per-device state of the mock (`struct mock_dev`). */
export interface MockDev {
  domain: IommuDomain | null
  readonly pasids: Map<number, IommuDomain>
  pasid1024FakeError: boolean
  /** The vIOMMU of the attached nested domain, and the device's virtual ID on it. */
  viommu: IommufdViommu | null
  vdevId: bigint
  /** `cache[MOCK_DEV_CACHE_NUM]`, invalidated through the vIOMMU. */
  readonly cache: Uint32Array
  /** Fault-capable domains attached (`iopf_refcount`). */
  iopfRefcount: number
}

/** `struct mock_viommu`: the driver part of a mock vIOMMU. */
export interface MockViommu {
  /** The two pages offered through mmap (first frame), or 0. */
  pagePfn: number
  mmapOffset: bigint
  readonly hwQueue: (IommufdHwQueue | null)[]
  readonly s2Parent: MockDomain
}

/**
 * The mock IOMMU unit: its "hardware" is the RID/PASID → domain table. The machine binds
 * it to its driver (`unit.driver`) when it is added.
 */
export class MockIommuUnit implements IommuUnit {
  readonly name: string
  /** Bound by the machine when the unit is added (never assigned here; see `IommuUnit`). */
  declare readonly driver: Driver
  readonly maxPasids: number
  readonly #byRid = new Map<number, MockDev>()
  /** DMA translations performed. */
  translations = 0
  /** DMA faults the hardware logged, for {@link MockIommuUnit.irq}. */
  readonly faultLog: MockFaultRecord[] = []
  /** Every page response the driver sent (`mock_domain_page_response`), oldest first. */
  readonly pageResponses: {
    readonly dev: PciDevice
    readonly evt: IopfFault
    readonly response: PageResponse
  }[] = []

  readonly #memory: PhysicalMemory | null
  /** The driver's interrupt thread, set by the driver: handles the fault log. */
  irqHandler: ((unit: MockIommuUnit) => void) | null = null

  constructor(name: string, maxPasids: number, memory: PhysicalMemory | null = null) {
    this.name = name
    this.maxPasids = maxPasids
    this.#memory = memory
  }

  /** Per-device state (`struct mock_dev`) of the device with requester ID `rid`. */
  devState(rid: number): MockDev {
    let s = this.#byRid.get(rid)
    if (s === undefined) {
      s = {
        domain: null,
        pasids: new Map(),
        pasid1024FakeError: false,
        viommu: null,
        vdevId: 0n,
        cache: new Uint32Array(MOCK_DEV_CACHE_NUM).fill(IOMMU_TEST_DEV_CACHE_DEFAULT),
        iopfRefcount: 0,
      }
      this.#byRid.set(rid, s)
    }
    return s
  }

  /**
   * Raise the unit's interrupt: the driver handles the DMA faults the hardware logged
   * (forwarding them as vEVENTs and page requests). Model only.
   */
  irq(): void {
    this.irqHandler?.(this)
  }

  /** Log a DMA fault as the hardware's event queue would. */
  #logFault(txn: DmaTransaction, domain: IommuDomain | null): void {
    this.faultLog.push({
      rid: txn.rid,
      pasid: txn.hasPasid ? txn.pasid : undefined,
      iova: txn.iova,
      write: txn.write,
      domain,
    })
  }

  // Results of #s2, kept in fields so that a translation allocates nothing.
  #s2f = 0
  #s2pa = 0
  #s2len = 0
  #s2index = 0

  /** Stage 2 of IO page (`iovaPfn`, `offset`) in `d`: sets `#s2f` (0 = not mapped) etc. */
  #s2(d: MockDomain, iovaPfn: number, offset: number): void {
    const shift = d.pageShift
    // IO page number of the access, exact for any 64-bit IOVA.
    const index =
      shift <= 12
        ? iovaPfn * 2 ** (12 - shift) + Math.floor(offset / 2 ** shift)
        : Math.floor(iovaPfn / 2 ** (shift - 12))
    this.#s2index = index
    const f = d.flagsAt(index)
    this.#s2f = f
    if (f === 0) return
    const pageSize = 2 ** shift
    const within = (iovaPfn * 4096 + offset) % pageSize
    this.#s2pa = d.paAt(index) * pageSize + within
    this.#s2len = pageSize - within
  }

  /**
   * The model stage 1 of a nested domain: the guest-physical address of `txn`'s IOVA, or
   * null after setting `txn.fault`. Table reads go through stage 2.
   */
  #s1(n: MockNestedDomain, txn: DmaTransaction): number | null {
    if (n.s1Table === null) return txn.iovaPfn * 4096 + txn.offset
    if (txn.iovaPfn >= n.s1Entries) {
      txn.fault = 'translation'
      return null
    }
    const entryGpa = Number(n.s1Table) + txn.iovaPfn * 8
    this.#s2(n.parent, Math.floor(entryGpa / 4096), entryGpa % 4096)
    const mem = this.#memory
    if (this.#s2f === 0 || !(this.#s2f & F_READ) || mem === null) {
      // The table itself does not translate in stage 2.
      txn.fault = 'translation'
      txn.faultLevel = 1
      return null
    }
    const raw = new Uint8Array(8)
    mem.readBytes(this.#s2pa, raw)
    const pte = new DataView(raw.buffer).getBigUint64(0, true)
    if (!(pte & MOCK_S1_VALID)) {
      txn.fault = 'translation'
      return null
    }
    if (txn.write && !(pte & MOCK_S1_WRITE)) {
      txn.fault = 'permission'
      return null
    }
    return Number(pte & MOCK_S1_ADDR_MASK) + txn.offset
  }

  translate(txn: DmaTransaction): boolean {
    this.translations++
    const st = this.#byRid.get(txn.rid)
    const domain = (txn.hasPasid ? st?.pasids.get(txn.pasid) : st?.domain) ?? null
    let d: IommuDomain | null = domain
    let iovaPfn = txn.iovaPfn
    let offset = txn.offset
    if (domain instanceof MockNestedDomain) {
      // Nested: the model stage 1 gives a guest-physical address, stage 2 the rest.
      const gpa = this.#s1(domain, txn)
      if (gpa === null) {
        this.#logFault(txn, domain)
        return false
      }
      d = domain.parent
      iovaPfn = Math.floor(gpa / 4096)
      offset = gpa % 4096
    }
    if (d === null || d.type === DomainType.BLOCKED) {
      txn.fault = 'blocked'
      return false
    }
    if (d.type === DomainType.IDENTITY) {
      txn.pa = iovaPfn * 4096 + offset
      txn.len = 4096 - offset
      return true
    }
    if (!(d instanceof MockDomain)) {
      txn.fault = 'bad-entry'
      return false
    }
    this.#s2(d, iovaPfn, offset)
    const f = this.#s2f
    if (f === 0) {
      txn.fault = 'translation'
      if (domain !== d) this.#logFault(txn, domain)
      return false
    }
    if (!(f & (txn.write ? F_WRITE : F_READ))) {
      txn.fault = 'permission'
      if (domain !== d) this.#logFault(txn, domain)
      return false
    }
    if (txn.write && d.dirtyTracking && !(f & F_DIRTY)) {
      // Hardware sets the dirty bit of the whole IOPTE on the first write through it.
      const start = d.pteStart(this.#s2index)
      d.setFlags(start, d.flagsAt(start) | F_DIRTY)
    }
    txn.pa = this.#s2pa
    // A nested access never runs past the 4 KiB stage-1 page it translated.
    txn.len = domain === d ? this.#s2len : Math.min(this.#s2len, 4096 - offset)
    return true
  }
}

interface MockCaps {
  readonly dirtyTracking: true
  readonly nesting: true
  readonly pasid: true
  readonly enforceCacheCoherency: false
  readonly deferredFlush: false
  readonly iopf: true
}

function log2(v: number): number {
  return 31 - Math.clz32(v)
}

/**
 * Mark IO pages of [iova, iova + length) dirty as the hardware would on a DMA write
 * (the selftest's `IOMMU_TEST_OP_DIRTY`): the whole IOPTE containing each page.
 *
 * @returns the number of IOPTEs newly marked
 * @throws EINVAL - dirty tracking is off, or the range is not IO-page aligned
 */
export function mockMarkDirty(domain: IommuDomain, iova: bigint, length: bigint): number {
  if (!(domain instanceof MockDomain)) throw new IommuError('EINVAL', 'not a mock paging domain')
  if (!domain.dirtyTracking) throw new IommuError('EINVAL', 'dirty tracking is off')
  const page = BigInt(2 ** domain.pageShift)
  if (iova % page !== 0n || length % page !== 0n || length === 0n) {
    throw new IommuError('EINVAL', 'unaligned dirty range')
  }
  let n = 0
  const first = Number(iova / page)
  const count = Number(length / page)
  for (let i = first; i < first + count; i++) {
    const f = domain.flagsAt(i)
    if (f === 0) continue
    const start = domain.pteStart(i)
    const sf = domain.flagsAt(start)
    if (!(sf & F_DIRTY)) {
      domain.setFlags(start, sf | F_DIRTY)
      n++
    }
  }
  return n
}

/**
 * Build the mock driver. Each call is a separate driver (use distinct `name`s to put
 * two in one machine).
 */
export function mockIommu(options: MockIommuOptions = {}): Driver<MockCaps> {
  const name = options.name ?? 'mock'
  const pageSize = options.ioPageSize ?? MOCK_PAGE_SIZE
  if (pageSize < 2048 || (pageSize & (pageSize - 1)) !== 0) {
    throw new RangeError(`mock IO page size must be a power of two >= 2048: ${pageSize}`)
  }
  const pageShift = log2(pageSize)
  const huge = options.hugePageSize ?? 0
  if (huge && (huge <= pageSize || (huge & (huge - 1)) !== 0)) {
    throw new RangeError(`mock huge page size must be a larger power of two: ${huge}`)
  }
  const aperture = options.aperture ?? { start: MOCK_APERTURE_START, end: MOCK_APERTURE_LAST }
  const units: MockIommuUnit[] = []
  let machineRef: Machine | null = null

  const unitOf = (dev: PciDevice): MockIommuUnit => {
    const u = dev.iommu?.unit ?? dev.unit
    if (!(u instanceof MockIommuUnit)) throw new IommuError('ENODEV', `${dev.name}: not mock`)
    return u
  }

  /** One IOPF queue for the driver (`mock_iommu_iopf_queue`). */
  const iopfQueue = new IopfQueue(`${name}-iopf`)

  /** `mock_dev_enable_iopf`: a fault-capable domain puts the device on the IOPF queue. */
  const enableIopf = (dev: PciDevice, domain: IommuDomain | null): void => {
    if (!domain?.iopfHandler) return
    const st = unitOf(dev).devState(dev.rid)
    if (st.iopfRefcount) {
      st.iopfRefcount++
      return
    }
    iopfQueue.addDevice(dev)
    st.iopfRefcount = 1
  }

  /** `mock_dev_disable_iopf`. */
  const disableIopf = (dev: PciDevice, domain: IommuDomain | null): void => {
    if (!domain?.iopfHandler) return
    const st = unitOf(dev).devState(dev.rid)
    if (--st.iopfRefcount) return
    iopfQueue.removeDevice(dev)
  }

  /** `mock_domain_nop_attach`. */
  const attachDev = (domain: IommuDomain, dev: PciDevice): void => {
    // A device without dirty tracking cannot join a dirty-tracking domain (EINVAL).
    if (domain.dirtyOps !== null && !dev.dirtyTracking) {
      throw new IommuError('EINVAL', `${dev.name} cannot track dirty pages`)
    }
    const st = unitOf(dev).devState(dev.rid)
    let viommu: IommufdViommu | null = null
    let vdevId = 0n
    if (domain instanceof MockNestedDomain && domain.viommu !== null) {
      // A vIOMMU-backed nested domain needs the device's vDEVICE (ENOENT).
      viommu = domain.viommu
      vdevId = iommufdViommuGetVdevId(viommu, dev)
    }
    if (viommu !== st.viommu) {
      st.viommu = viommu
      st.vdevId = vdevId
    }
    enableIopf(dev, domain)
    disableIopf(dev, st.domain)
    st.domain = domain
  }

  /** `mock_domain_set_dev_pasid_nop`, with the PASID-1024 fake error. */
  const setDevPasid = (
    domain: IommuDomain,
    dev: PciDevice,
    pasid: number,
    old: IommuDomain | null,
  ): void => {
    const st = unitOf(dev).devState(dev.rid)
    if (pasid === IOMMU_TEST_PASID_RESERVED) {
      if (domain.type === DomainType.BLOCKED) {
        st.pasid1024FakeError = false
      } else if (st.pasid1024FakeError) {
        st.pasid1024FakeError = false
        throw new IommuError('ENOMEM', 'mock: fake error on the second PASID 1024 attach')
      } else {
        st.pasid1024FakeError = true
      }
    }
    enableIopf(dev, domain)
    disableIopf(dev, old)
    if (domain.type === DomainType.BLOCKED) st.pasids.delete(pasid)
    else st.pasids.set(pasid, domain)
  }

  const blockedDomain = new IommuDomain({
    type: DomainType.BLOCKED,
    ops: { attachDev, setDevPasid },
  })
  const identityDomain = new IommuDomain({
    type: DomainType.IDENTITY,
    ops: { attachDev, setDevPasid },
  })

  const faults = () => machineRef?.faults ?? null

  const pagingOps = {
    attachDev,
    setDevPasid,
    mapPages(d, iova, paddr, pgsize, pgcount, prot) {
      const step = BigInt(pageSize)
      // The huge-only variant maps nothing but whole huge pages of its own size
      // (MOCK_HUGE_PAGE_SIZE, whatever the driver's `hugePageSize` option).
      const hugeBytes = BigInt(d.hugePages * pageSize)
      if (d.hugeOnly && (pgsize !== hugeBytes || iova % hugeBytes !== 0n)) {
        throw new IommuError('ENOLINK', 'mock huge domain: map is not huge-aligned')
      }
      if (!(prot & (Prot.READ | Prot.WRITE))) throw new IommuError('EINVAL', 'no access')
      if (faults()?.shouldFail('mock:map')) throw new IommuError('ENOMEM', 'injected map failure')
      const first = Number(iova / step)
      const per = Number(pgsize / step)
      const total = per * pgcount
      for (let k = 0; k < total; k++) {
        if (d.flagsAt(first + k) !== 0) {
          // Roll back this call's entries: nothing of it stays mapped.
          for (let j = 0; j < k; j++) d.erase(first + j)
          throw new IommuError(
            'EADDRINUSE',
            `mock: IOVA 0x${(iova + BigInt(k) * step).toString(16)} is mapped`,
          )
        }
        let f = F_PRESENT
        if (prot & Prot.READ) f |= F_READ
        if (prot & Prot.WRITE) f |= F_WRITE
        if (k === 0) f |= F_START
        if (k === total - 1) f |= F_LAST
        if (per > 1) f |= F_HUGE
        d.set(first + k, Number(paddr / step) + k, f)
      }
      return pgsize * BigInt(pgcount)
    },
    unmapPages(d, iova, pgsize, pgcount, gather: IotlbGather) {
      const step = BigInt(pageSize)
      const first = Number(iova / step)
      const total = Number((pgsize * BigInt(pgcount)) / step)
      let n = 0
      for (; n < total; n++) {
        const f = d.erase(first + n)
        if (f === 0) break
        // iommufd must only unmap whole maps: the mock checks it as the kernel's WARNs do.
        if (!d.hugePages && n === 0 && !(f & F_START)) {
          throw new Error(`mock: unmap at 0x${iova.toString(16)} splits a mapping`)
        }
        if (!d.hugePages && n === total - 1 && !(f & F_LAST)) {
          throw new Error('mock: unmap ends inside a mapping')
        }
      }
      if (n) gather.addRange(iova, BigInt(n) * step)
      return BigInt(n) * step
    },
    iovaToPhys(d, iova) {
      const step = BigInt(pageSize)
      const index = Number(iova / step)
      if (d.flagsAt(index) === 0) return 0n
      return BigInt(d.paAt(index)) * step + (iova % step)
    },
    free() {},
  } satisfies DomainOps<MockDomain>

  const dirtyOps: DirtyOps<MockDomain> = {
    setDirtyTracking(d, enabled) {
      if (enabled && d.dirtyOps === null) throw new IommuError('EINVAL', 'no dirty ops')
      d.dirtyTracking = enabled
    },
    readAndClearDirty(d, iova, size, flags, dirty: IommuDirtyBitmap) {
      const step = BigInt(pageSize)
      const first = Number(iova / step)
      const end = first + Number((size + step - 1n) / step)
      for (let i = first; i < end; ) {
        const f = d.flagsAt(i)
        if (f === 0) {
          i++
          continue
        }
        // A huge IOPTE is one entry, cleaned whole. The 7.2 mock walks with generic_pt
        // (record_dirty): the first entry is recorded from the query start with the
        // IOPTE's size, the others from their base.
        const start = d.pteStart(i)
        const len = d.pteLength(i)
        const sf = d.flagsAt(start)
        if (sf & F_DIRTY) {
          // One IO page: the kernel's record is the IOPTE, inside the query.
          if (len === 1) dirty.record(start, 1, pageShift)
          else {
            const i0 = Math.max(start, first)
            const i1 = Math.min(start + len, end)
            dirty.recordLeaf(start, len, i === first ? first : start, len, i0, i1 - i0, pageShift)
          }
          if (!(flags & IOMMU_DIRTY_NO_CLEAR)) d.setFlags(start, sf & ~F_DIRTY)
        }
        i = start + len
      }
    },
  }

  const nestedOps: DomainOps<MockNestedDomain> = {
    attachDev,
    setDevPasid,
    cacheInvalidateUser(d, array: UserDataArray) {
      let processed = 0
      try {
        if (array.type !== IOMMU_HWPT_INVALIDATE_DATA_SELFTEST) {
          throw new IommuError('EINVAL', `invalidation type ${array.type}`)
        }
        for (let i = 0; i < array.entryNum; i++) {
          // iommu_copy_struct_from_user_array: each entry is copied like user data, so an
          // entry_len above the struct size is EINVAL (not a zero-tail check).
          const entry: UserData = {
            type: array.type,
            len: array.entryLen,
            read: () => array.readEntry(i),
          }
          const inv = copyStructFromUser(entry, IOMMU_HWPT_INVALIDATE_DATA_SELFTEST, 8, 8)
          const flags = inv.getUint32(0, true)
          const id = inv.getUint32(4, true)
          if (flags & ~IOMMU_TEST_INVALIDATE_FLAG_ALL) throw new IommuError('EOPNOTSUPP', 'flags')
          if (id > MOCK_NESTED_DOMAIN_IOTLB_ID_MAX) throw new IommuError('EINVAL', 'iotlb_id')
          if (flags & IOMMU_TEST_INVALIDATE_FLAG_ALL) d.iotlb.fill(0)
          else d.iotlb[id] = 0
          processed++
        }
      } finally {
        array.entryNum = processed
      }
    },
    free() {},
  }

  const allocPaging = (dev: PciDevice, flags: number, data: UserData | null): MockDomain => {
    const known = HwptAllocFlags.DIRTY_TRACKING | HwptAllocFlags.NEST_PARENT | HwptAllocFlags.PASID
    const wantDirty = (flags & HwptAllocFlags.DIRTY_TRACKING) !== 0
    if (flags & ~known || (wantDirty && !dev.dirtyTracking)) {
      throw new IommuError('EOPNOTSUPP', `mock: flags 0x${flags.toString(16)}`)
    }
    let type: number = MockPagetableType.DEFAULT
    if (data !== null) {
      if (data.type !== IOMMU_HWPT_DATA_SELFTEST && data.type !== 0) {
        throw new IommuError('EOPNOTSUPP', `mock: data type 0x${data.type.toString(16)}`)
      }
      type = copyStructFromUser(data, IOMMU_HWPT_DATA_SELFTEST, 8, 4).getUint32(4, true)
    }
    // mock_domain_alloc_pgtable: a switch over the two types 7.2 knows.
    if (type !== MockPagetableType.DEFAULT && type !== MockPagetableType.HUGE) {
      throw new IommuError('EOPNOTSUPP', `mock: pagetable_type ${type}`)
    }
    const hugeOnly = type === MockPagetableType.HUGE
    const hugeSize = hugeOnly ? MOCK_HUGE_PAGE_SIZE : huge
    if (faults()?.shouldFail('mock:domain'))
      throw new IommuError('ENOMEM', 'injected alloc failure')
    return new MockDomain(pagingOps, wantDirty ? dirtyOps : null, {
      pageShift,
      hugePages: hugeSize ? hugeSize / pageSize : 0,
      hugeOnly,
      // The huge variant must also accept the CPU page size for iommufd to take it.
      pgsizeBitmap: hugeOnly
        ? BigInt(MOCK_HUGE_PAGE_SIZE) | 4096n
        : BigInt(pageSize) | BigInt(huge),
      aperture: hugeOnly ? { start: 0n, end: 0xffff_ffff_ffff_ffffn } : aperture,
    })
  }

  const mockViommuOf = (v: IommufdViommu): MockViommu => v.priv as MockViommu

  /** `__mock_domain_alloc_nested`. */
  const allocNested = (
    parent: MockDomain,
    data: UserData,
    viommu: IommufdViommu | null,
  ): MockNestedDomain => {
    if (data.type !== IOMMU_HWPT_DATA_SELFTEST) {
      throw new IommuError('EOPNOTSUPP', `nested data type ${data.type}`)
    }
    const cfg = copyStructFromUser(data, IOMMU_HWPT_DATA_SELFTEST, 8, 4)
    if (faults()?.shouldFail('mock:nested')) throw new IommuError('ENOMEM', 'mock nested')
    return new MockNestedDomain(nestedOps, parent, cfg.getUint32(0, true), viommu)
  }

  /** `mock_viommu_ops`. */
  const viommuOps: ViommuOps = {
    destroy(viommu) {
      const mv = mockViommuOf(viommu)
      if (mv.mmapOffset) iommufdViommuDestroyMmap(viommu, mv.mmapOffset)
      if (mv.pagePfn) machineRef?.memory.freeFrames(mv.pagePfn, 2)
    },
    allocDomainNested(viommu, flags, data) {
      if (flags & ~HwptAllocFlags.PASID) throw new IommuError('EOPNOTSUPP', 'nested flags')
      return allocNested(mockViommuOf(viommu).s2Parent, data, viommu)
    },
    cacheInvalidate(viommu, array) {
      // A zero-length array only checks the type.
      if (array.entryNum === 0 && array.type === IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST) return
      let done = 0
      try {
        if (faults()?.shouldFail('mock:inv')) throw new IommuError('ENOMEM', 'mock cmds')
        // The whole array first: a copy failure handles nothing.
        const cmds = copyStructFromFullUserArray(array, IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST, 12)
        for (; done < array.entryNum; done++) {
          const flags = cmds.getUint32(done * 12, true)
          const vdevId = cmds.getUint32(done * 12 + 4, true)
          const cacheId = cmds.getUint32(done * 12 + 8, true)
          if (flags & ~IOMMU_TEST_INVALIDATE_FLAG_ALL) throw new IommuError('EOPNOTSUPP', 'flags')
          if (cacheId > MOCK_DEV_CACHE_ID_MAX) throw new IommuError('EINVAL', 'cache_id')
          const dev = iommufdViommuFindDev(viommu, vdevId)
          if (dev === null) throw new IommuError('EINVAL', `no vDEVICE 0x${vdevId.toString(16)}`)
          const cache = unitOf(dev).devState(dev.rid).cache
          if (flags & IOMMU_TEST_INVALIDATE_FLAG_ALL) cache.fill(0)
          else cache[cacheId] = 0
        }
      } finally {
        array.entryNum = done
      }
    },
    getHwQueueSize(_viommu, type) {
      return type === IOMMU_HW_QUEUE_TYPE_SELFTEST ? 1 : 0
    },
    hwQueueInitPhys(q, index, basePa) {
      if (index >= IOMMU_TEST_HW_QUEUE_MAX) throw new IommuError('EINVAL', `queue ${index}`)
      const mv = mockViommuOf(q.viommu)
      if (mv.hwQueue[index]) throw new IommuError('EEXIST', `queue ${index} exists`)
      let prev: IommufdHwQueue | null = null
      if (index) {
        prev = mv.hwQueue[index - 1] ?? null
        if (prev === null) throw new IommuError('EIO', `queue ${index - 1} missing`)
      }
      // Catches a core that converted the physical address wrongly.
      const pa = machineRef?.iommu.iommuIovaToPhys(mv.s2Parent, q.baseAddr)
      if (basePa !== pa) throw new IommuError('EFAULT', 'base address does not translate')
      if (prev !== null) iommufdHwQueueDepend(q, prev)
      q.priv = { index, prev }
      mv.hwQueue[index] = q
      q.destroy = (hq) => {
        const p = hq.priv as { index: number; prev: IommufdHwQueue | null }
        mv.hwQueue[p.index] = null
        if (p.prev !== null) iommufdHwQueueUndepend(hq, p.prev)
      }
    },
  }

  /**
   * The driver's interrupt thread over the unit's fault log (model only: the kernel's mock
   * reports through the TRIGGER_* test operations): a fault of a device attached to a
   * vIOMMU-backed nested domain is forwarded as a selftest vEVENT `{virt_id}`, and a PRI
   * capable device's fault as a page request (LAST_PAGE, READ/WRITE, the 4 KiB page).
   */
  let grpid = 0
  const mockIrq = (unit: MockIommuUnit): void => {
    for (const rec of unit.faultLog.splice(0)) {
      const st = unit.devState(rec.rid)
      if (st.viommu !== null && st.vdevId) {
        const ev = new Uint8Array(4)
        new DataView(ev.buffer).setUint32(0, Number(st.vdevId & 0xffff_ffffn), true)
        try {
          iommufdViommuReportEvent(st.viommu, IOMMU_VEVENTQ_TYPE_SELFTEST, ev)
        } catch {
          // No vEVENTQ of the type: the event is dropped, as the kernel drops it.
        }
      }
      const dev = machineRef?.devices.find((d) => d.rid === rec.rid && d.unit === unit)
      if (dev === undefined || !dev.pri) continue
      const evt = iopfFault({
        flags:
          IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE |
          (rec.pasid === undefined ? 0 : IOMMU_FAULT_PAGE_REQUEST_PASID_VALID),
        pasid: rec.pasid ?? 0,
        grpid: grpid++ & 0x1ff,
        perm: rec.write ? IOMMU_FAULT_PERM_READ | IOMMU_FAULT_PERM_WRITE : IOMMU_FAULT_PERM_READ,
        addr: rec.iova & ~0xfffn,
      })
      try {
        machineRef?.iommu.iommuReportDeviceFault(dev, evt)
      } catch {
        // No handler: the core already answered INVALID.
      }
    }
  }

  return defineDriver({
    name,
    apiVersion: 1,
    capabilities: {
      dirtyTracking: true,
      nesting: true,
      pasid: true,
      enforceCacheCoherency: false,
      deferredFlush: false,
      iopf: true,
    },
    createUnit(ctx: UnitContext): MockIommuUnit {
      machineRef = ctx.machine
      const unit = new MockIommuUnit(
        `${name}-iommu${units.length}`,
        options.maxPasids ?? 2 ** MOCK_PASID_WIDTH,
        ctx.machine.memory,
      )
      unit.irqHandler = mockIrq
      units.push(unit)
      return unit
    },
    ops: {
      capable(dev, cap) {
        if (cap === IommuCap.CACHE_COHERENCY) return true
        if (cap === IommuCap.DIRTY_TRACKING) return dev.dirtyTracking
        return false
      },
      hwInfo(_dev, type) {
        if (type !== 0 && type !== IOMMU_HW_INFO_TYPE_SELFTEST) {
          throw new IommuError('EOPNOTSUPP', `mock: hw_info type ${type}`)
        }
        const data = new Uint8Array(8)
        new DataView(data.buffer).setUint32(4, IOMMU_HW_INFO_SELFTEST_REGVAL, true)
        return { type: IOMMU_HW_INFO_TYPE_SELFTEST, data }
      },
      domainAllocPagingFlags: allocPaging,
      probeDevice(dev) {
        return unitOf(dev)
      },
      deviceGroup(dev) {
        const m = machineRef
        if (m === null) throw new IommuError('ENODEV', 'mock unit not created')
        return options.deviceGroup === 'pci'
          ? m.iommu.pciDeviceGroup(dev)
          : m.iommu.genericDeviceGroup(dev)
      },
      getResvRegions() {
        return [...(options.resvRegions ?? [])]
      },
      pageResponse(dev, evt, response) {
        // The kernel's mock ignores responses; the model records them for tests.
        unitOf(dev).pageResponses.push({ dev, evt, response })
      },
      pgsizeBitmap: BigInt(pageSize) | BigInt(huge),
      blockedDomain,
      identityDomain,
      ...(options.defaultDomain === 'auto' ? {} : { defaultDomain: blockedDomain }),
      userPasidTable: true,
    },
    domainOps: pagingOps,
    dirtyOps,
    nesting: {
      domainAllocNested(_dev, parent, flags, data) {
        if (flags & ~HwptAllocFlags.PASID) throw new IommuError('EOPNOTSUPP', 'nested flags')
        if (!(parent instanceof MockDomain)) throw new IommuError('EINVAL', 'parent not paging')
        return allocNested(parent, data, null)
      },
      getViommuSize(_dev, type) {
        return type === IOMMU_VIOMMU_TYPE_SELFTEST ? 1 : 0
      },
      /** `mock_viommu_init`: with data, echo it and offer two pages through mmap. */
      viommuInit(viommu, parent, data) {
        const mv: MockViommu = {
          pagePfn: 0,
          mmapOffset: 0n,
          hwQueue: new Array(IOMMU_TEST_HW_QUEUE_MAX).fill(null),
          s2Parent: parent as MockDomain,
        }
        if (data !== null) {
          // struct iommu_viommu_selftest { u32 in_data, out_data; u64 out_mmap_offset, _length }
          const inData = copyStructFromUser(data, IOMMU_VIOMMU_TYPE_SELFTEST, 24, 8).getUint32(
            0,
            true,
          )
          const mem = (machineRef as Machine).memory
          mv.pagePfn = mem.allocFrames(2, FramePurpose.KERNEL)
          try {
            mv.mmapOffset = iommufdViommuAllocMmap(viommu, mv.pagePfn, 2 * PAGE_SIZE)
            try {
              const first = new Uint8Array(4)
              new DataView(first.buffer).setUint32(0, inData, true)
              mem.writeBytes(mv.pagePfn * PAGE_SIZE, first)
              const out = new Uint8Array(24)
              const v = new DataView(out.buffer)
              v.setUint32(0, inData, true)
              v.setUint32(4, inData, true)
              v.setBigUint64(8, mv.mmapOffset, true)
              v.setBigUint64(16, BigInt(2 * PAGE_SIZE), true)
              copyStructToUser(data, IOMMU_VIOMMU_TYPE_SELFTEST, out, 8)
            } catch (e) {
              iommufdViommuDestroyMmap(viommu, mv.mmapOffset)
              throw e
            }
          } catch (e) {
            mem.freeFrames(mv.pagePfn, 2)
            throw e
          }
        }
        viommu.priv = mv
        viommu.ops = viommuOps
      },
    },
  })
}

/**
 * Pre-copy live migration of a VM with a passthrough device, driven through the iommufd
 * uAPI exactly as a VMM does it: guest RAM mapped into an IOAS in DIMM-sized areas, a
 * HWPT with dirty tracking on the chosen IOMMU model, round 0 copying everything, each
 * later round reading and clearing the dirty bitmap (IOMMU_HWPT_GET_DIRTY_BITMAP) and
 * copying the dirty pages over a modelled link while the device keeps writing, then
 * stop-and-copy and a page-for-page verification of the destination.
 *
 * @module
 */

import {
  createMachine,
  type DirtyRecords,
  type Driver,
  IommuError,
  type IommuSpec,
  IotlbGather,
  type Machine,
  type PciDevice,
  PfnArray,
  type Process,
  type StorageSource,
} from '@iommu/core'
import {
  type HwptPaging,
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_HWPT_DIRTY_TRACKING_ENABLE,
  IOMMU_HWPT_GET_DIRTY_BITMAP,
  IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR,
  IOMMU_HWPT_SET_DIRTY_TRACKING,
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_IOAS_UNMAP,
  type Iommufd,
  type IommufdDevice,
  ObjType,
  openIommufd,
} from '@iommu/iommufd'
import { type MigrationReport, type RoundReport, summarizeHazards } from './report.ts'
import {
  buildVendor,
  CONTIGUOUS_IOPTE_MODES,
  IOMMU_MODELS,
  type IommuModel,
  type IopteMode,
  isIommuModel,
  pageTableOf,
  summarizeStale,
  VENDORS,
  type Vendor,
  vendorOfUnit,
} from './vendors.ts'
import { GuestIommu } from './viommu.ts'
import { hwptAlloc, ioasAlloc, ioasMap } from './vmm.ts'
import { type DmaWrite, stampBytes, Workload, type WorkloadConfig } from './workload.ts'

const PAGE = 4096
const MIB = 1024 * 1024
const GIB = 1024 * MIB
/**
 * Guest RAM starts at 4 GiB of IOVA, above the x86 MSI window (as guest physical memory
 * does), and continues above any range the IOMMU reserves (AMD's HyperTransport hole
 * below 1 TiB), as a VMM relocates RAM above it.
 */
export const GUEST_IOVA = 0x1_0000_0000

export {
  CONTIGUOUS_IOPTE_MODES,
  IOMMU_MODELS,
  IOPTE_MODES,
  type IommuModel,
  type IopteMode,
  isIommuModel,
} from './vendors.ts'

/**
 * How to break the run on purpose (verification must then fail):
 * - `tracking-never-enabled`: the VMM never enables dirty tracking (on the nest parent
 *   with `viommu`);
 * - `drop-guest-invalidation` (`viommu` only): the VMM drops the guest's invalidations
 *   instead of forwarding them with IOMMU_HWPT_INVALIDATE.
 */
export type Breakage = 'none' | 'tracking-never-enabled' | 'drop-guest-invalidation'
/** Every {@link Breakage}. */
export const BREAKAGES: readonly Breakage[] = [
  'none',
  'tracking-never-enabled',
  'drop-guest-invalidation',
]

/** The shape of one device's workload (offsets are relative to guest RAM). */
export type DeviceWorkload = Omit<WorkloadConfig, 'memoryBytes' | 'seed'>

/** One passthrough device of the VM and what it writes. */
export interface DeviceConfig {
  readonly name: string
  readonly workload: DeviceWorkload
}

/** Options of {@link migrate}. */
export interface MigrateOptions {
  /**
   * The IOMMU: a model by name (`'amd'`, `'intel'`, `'smmuv3'`, `'mock'`), or any driver —
   * a `Driver` made by `defineDriver` (e.g. a third-party plugin), or `{ driver, config }`
   * to give its unit a hardware configuration. A driver object runs as given: `iopte` then
   * only chooses how the VMM maps (the driver's page sizes decide the IOPTEs), and
   * `detector` and `ideal` apply to the named models only.
   */
  readonly iommu: IommuModel | Driver | IommuSpec
  /** Guest RAM in bytes (a multiple of the DIMM size). */
  readonly memoryBytes: number
  /** Guest RAM is mapped into the IOAS in areas (DIMMs) of this size. */
  readonly dimmBytes: number
  readonly iopte: IopteMode
  readonly seed: number
  /** Link bandwidth in bytes per simulated second. */
  readonly bandwidth: number
  /** Stop pre-copy after this many rounds (round 0 included). */
  readonly maxRounds: number
  /** Converge when the remaining dirty set can be sent within this downtime (seconds). */
  readonly maxDowntime: number
  /** The device workload (offsets are relative to guest RAM), when `devices` is not given. */
  readonly workload: DeviceWorkload
  /**
   * The passthrough devices, each with its own workload (seeded `seed + index`). Default:
   * one device, `passthrough-nic`, running `workload`.
   */
  readonly devices?: readonly DeviceConfig[]
  /** Hot-unplug the last DIMM during this pre-copy round (null = never). */
  readonly unplugRound: number | null
  readonly breakage: Breakage
  /** Run the named model's missing-invalidation detector on every cache hit. */
  readonly detector: boolean
  /**
   * Dirty records as Linux 7.2 makes them (`'kernel'`, the default) or ideal ones: see
   * `MachineOptions.dirtyRecords`. `ideal: true` implies `'ideal'`.
   */
  readonly dirtyRecords?: DirtyRecords
  /**
   * Fix the known 7.2 kernel bugs: ideal dirty records, and on SMMUv3 the TLBI after a
   * clearing dirty read (`smmuv3({ flushAfterDirtyClear: true })`). Default false: the run
   * follows the kernel.
   */
  readonly ideal?: boolean
  /**
   * A guest with a vIOMMU: the VMM builds a nest parent (stage 2 = guest RAM) and, where
   * the driver has them, a vIOMMU and vDEVICEs; a guest IOMMU driver writes its own
   * stage-1 structures into guest RAM and the devices DMA to guest IOVAs (`intel`,
   * `smmuv3`).
   */
  readonly viommu?: boolean
  /** Copy/write interleaving steps per round. */
  readonly stepsPerRound: number
  /** Progress callback: fraction of the current round done. */
  readonly onProgress?: (p: { round: number; phase: string; fraction: number }) => void
  /**
   * Where the machine's RAM takes its bulk data buffers (`MachineOptions.storage`); the
   * CLI passes buffers a worker faulted in ahead (`node/prefault.ts`). No effect on results.
   */
  readonly storage?: StorageSource
}

/**
 * Defaults: a 4 GiB guest, 10 Gbit/s, a NIC-like ring plus random writes. The ring and the
 * hot set shrink with small guests so that they always fit.
 */
export function defaultOptions(o: Partial<MigrateOptions> = {}): MigrateOptions {
  const memoryBytes = o.memoryBytes ?? 4 * GIB
  return {
    iommu: 'amd',
    memoryBytes,
    dimmBytes: o.dimmBytes ?? Math.min(GIB, memoryBytes),
    iopte: '4k',
    seed: 1,
    bandwidth: 10e9 / 8,
    maxRounds: 30,
    maxDowntime: 0.1,
    workload: defaultWorkload(memoryBytes),
    unplugRound: null,
    breakage: 'none',
    detector: true,
    stepsPerRound: 32,
    ...o,
  }
}

/** The default device workload for a guest of `memoryBytes`. */
export function defaultWorkload(memoryBytes: number): DeviceWorkload {
  const ringBytes = Math.min(64 * MIB, Math.max(MIB, memoryBytes / 16))
  const hotBytes = Math.min(256 * MIB, Math.max(MIB, memoryBytes / 8))
  return {
    ringBytes,
    ringOffset: Math.min(16 * MIB, memoryBytes / 16),
    ringWriteBytes: 2048,
    ringRate: 100_000,
    randomRate: 80_000,
    randomWriteBytes: 512,
    locality: 0.98,
    hotBytes,
    hotOffset: Math.min(128 * MIB, memoryBytes / 4),
  }
}

/** The devices of a run: `devices`, or one NIC running `workload`. */
export function devicesOf(o: MigrateOptions): readonly DeviceConfig[] {
  return o.devices ?? [{ name: 'passthrough-nic', workload: o.workload }]
}

/**
 * The machine's IOMMU entry for the options.
 *
 * @throws EINVAL - an unknown model name, or an `iopte` mode the model's page table lacks
 */
function iommuFor(o: MigrateOptions): Driver | IommuSpec {
  const iommu = o.iommu
  if (typeof iommu !== 'string') return iommu
  if (!isIommuModel(iommu)) {
    throw new IommuError(
      'EINVAL',
      `unknown IOMMU model '${String(iommu)}' (models: ${IOMMU_MODELS.join(', ')}; or pass a Driver)`,
    )
  }
  if (iommu !== 'amd' && CONTIGUOUS_IOPTE_MODES.includes(o.iopte)) {
    throw new IommuError('EINVAL', `iopte ${o.iopte} needs AMD v1 contiguous leaves: use amd`)
  }
  return buildVendor(iommu, { iopte: o.iopte, detector: o.detector, ideal: o.ideal === true })
}

/** The name a report gives the IOMMU. */
function iommuName(iommu: MigrateOptions['iommu']): string {
  if (typeof iommu === 'string') return iommu
  return 'kind' in iommu ? iommu.name : iommu.driver.name
}

/** What a run will take, estimated from its options before anything is set up. */
export interface RunEstimate {
  /** Peak memory of the process in bytes (with a safety margin). */
  readonly memoryBytes: number
  /** Device DMA writes of round 0, which copies all of guest RAM while the device runs. */
  readonly round0Writes: number
}

/**
 * Estimate a run's peak memory and work. Per GiB of guest RAM the model holds about
 * 3 MiB of typed arrays with 4 KiB IOPTEs (frame metadata, the VMM's and the destination's
 * page arrays, pin lists, the IO page table: 8 of the 12 bytes per guest page, dirty
 * bitmaps), counted as 4 MiB; on top of that every page the device writes gets 4 KiB of
 * data: the ring, the hot set and the scattered writes of round 0 (which lasts memory /
 * bandwidth of simulated time), counted half again for the later rounds, and 1.4 times
 * over for the copies copy-on-write keeps (a page written after it was sent holds its
 * old copy for the destination). Plus 200 MiB for the runtime and code, and a margin of a
 * fifth. Calibrated on runs of 4 and 16 GiB of every vendor, with and without `viommu`
 * (they peaked at 0.8–0.9 of the estimate before the margin).
 */
export function estimateRun(o: MigrateOptions): RunEstimate {
  const pages = o.memoryBytes / PAGE
  const round0Seconds = o.memoryBytes / o.bandwidth
  let written = 0
  let rate = 0
  for (const { workload: w } of devicesOf(o)) {
    const scattered = w.randomRate * (1 - w.locality) * round0Seconds * 1.5
    written += (w.ringBytes + w.hotBytes) / PAGE + scattered
    rate += w.ringRate + w.randomRate
  }
  written = Math.min(pages, written)
  const bytes = 200 * MIB + (4 * MIB * o.memoryBytes) / GIB + 1.4 * written * PAGE
  return {
    memoryBytes: Math.ceil(bytes * 1.2),
    round0Writes: Math.ceil(rate * round0Seconds),
  }
}

interface Dimm {
  /** Offset in guest RAM. */
  readonly offset: number
  /** Where the DIMM sits in the IOAS. */
  readonly iova: number
  readonly bytes: number
  plugged: boolean
}

/** A usable IOVA range, inclusive, as IOMMU_IOAS_IOVA_RANGES reports it. */
export interface IovaRange {
  readonly start: bigint
  readonly last: bigint
}

/**
 * Place `count` DIMMs of `bytes` each in the usable IOVA ranges, in order from `from`,
 * each DIMM whole inside one range and 2 MiB aligned, as a VMM lays guest RAM out around
 * the holes the IOMMU reserves.
 *
 * @returns each DIMM's IOVA, or null when the ranges cannot hold them
 */
export function layoutDimms(
  usable: readonly IovaRange[],
  count: number,
  bytes: number,
  from: number = GUEST_IOVA,
): number[] | null {
  const size = BigInt(bytes)
  const align = 2n * BigInt(MIB)
  const out: number[] = []
  let at = BigInt(from)
  const sorted = [...usable].sort((a, b) => (a.start < b.start ? -1 : 1))
  for (const r of sorted) {
    if (out.length === count) break
    if (r.last < at) continue
    let cur = r.start > at ? r.start : at
    cur = (cur + align - 1n) & ~(align - 1n)
    while (out.length < count && cur + size - 1n <= r.last && cur + size - 1n < 2n ** 53n) {
      out.push(Number(cur))
      cur += size
    }
    at = cur
  }
  return out.length === count ? out : null
}

/** IOMMU_IOAS_IOVA_RANGES the way a VMM calls it: once for the count, once for the ranges. */
function iovaRanges(fd: Iommufd, vmm: Process, ioas: number): IovaRange[] {
  const cmd = { size: 32, ioas_id: ioas, num_iovas: 0, allowed_iovas: 0n }
  try {
    fd.ioctl(IOMMU_IOAS_IOVA_RANGES, cmd)
  } catch (e) {
    if (!(e instanceof IommuError && e.code === 'EMSGSIZE')) throw e
  }
  const n = cmd.num_iovas
  const buf = vmm.mmap(Math.max(PAGE, n * 16))
  fd.ioctl(IOMMU_IOAS_IOVA_RANGES, { ...cmd, num_iovas: n, allowed_iovas: BigInt(buf) })
  const bytes = vmm.read(buf, n * 16)
  vmm.munmap(buf, Math.max(PAGE, n * 16))
  const v = new DataView(bytes.buffer)
  return Array.from({ length: n }, (_, i) => ({
    start: v.getBigUint64(i * 16, true),
    last: v.getBigUint64(i * 16 + 8, true),
  }))
}

/** One device of the VM, as the VMM holds it. */
interface RigDevice {
  readonly dev: PciDevice
  readonly idev: IommufdDevice
  readonly workload: Workload
  writes: number
}

/** Everything a run sets up. */
interface Rig {
  readonly m: Machine
  readonly vmm: Process
  readonly fd: Iommufd
  readonly devices: RigDevice[]
  /** The HWPT whose dirty bits the VMM reads (the nest parent with `viommu`). */
  readonly hwpt: number
  readonly ioas: number
  readonly guestVa: number
  /** The VMM's view of guest RAM: the frame of each guest page (compact). */
  readonly srcPfns: PfnArray
  /** The destination VM's RAM. */
  readonly dstPfns: PfnArray
  readonly dest: Process
  readonly destVa: number
  readonly dimms: Dimm[]
  readonly bitmapVa: number
  readonly bitmap: Uint8Array
  /** The guest's IOMMU driver and the VMM's vIOMMU (`viommu`), else null. */
  readonly guest: GuestIommu | null
}

function setup(o: MigrateOptions): Rig {
  if (o.memoryBytes % o.dimmBytes !== 0 || o.dimmBytes % (2 * MIB) !== 0) {
    throw new RangeError('guest memory must be whole DIMMs of 2 MiB multiples')
  }
  if (o.viommu && o.unplugRound !== null) {
    throw new IommuError('EINVAL', 'hot-unplug with a vIOMMU guest is not modelled')
  }
  if (!o.viommu && o.breakage === 'drop-guest-invalidation') {
    throw new IommuError('EINVAL', 'drop-guest-invalidation needs a vIOMMU guest')
  }
  const pages = o.memoryBytes / PAGE
  // RAM for the source guest, the destination, tables and hardware structures.
  const ram = Math.min(2 ** 43, 2 ** Math.ceil(Math.log2(o.memoryBytes * 2 + 2 * GIB)))
  const m = createMachine({
    memorySize: ram,
    iommus: [iommuFor(o)],
    dirtyRecords: o.ideal ? 'ideal' : (o.dirtyRecords ?? 'kernel'),
    ...(o.storage === undefined ? {} : { storage: o.storage }),
  })
  const vmm = m.createProcess()
  const fd = openIommufd(m, vmm)
  const ioas = ioasAlloc(fd, o.iopte !== '4k')
  // The devices first: their reserved regions shape the IOVA space guest RAM goes into.
  const configs = devicesOf(o)
  const devices: RigDevice[] = configs.map((c, i) => {
    const dev = m.addPciDevice({ name: c.name, pasidBits: o.viommu ? 20 : 0 })
    return {
      dev,
      idev: fd.bindDevice(dev),
      workload: new Workload({ ...c.workload, memoryBytes: o.memoryBytes, seed: o.seed + i }),
      writes: 0,
    }
  })
  let hwpt = 0
  if (o.viommu) {
    // As a VMM starts with VFIO cdevs: every device on the IOAS (the vIOMMU comes later).
    for (const d of devices) d.idev.attach(ioas)
  } else {
    hwpt = hwptAlloc(fd, (devices[0] as RigDevice).idev.id, ioas, IOMMU_HWPT_ALLOC_DIRTY_TRACKING)
    for (const d of devices) d.idev.attach(hwpt)
  }
  const count = o.memoryBytes / o.dimmBytes
  const iovas = layoutDimms(iovaRanges(fd, vmm, ioas), count, o.dimmBytes)
  if (iovas === null) {
    throw new RangeError(`${count} DIMMs of ${o.dimmBytes} bytes do not fit the usable IOVA space`)
  }
  const guestVa = vmm.mmap(o.memoryBytes)
  const dimms: Dimm[] = []
  for (let i = 0; i < count; i++) {
    const offset = i * o.dimmBytes
    const iova = iovas[i] as number
    ioasMap(fd, ioas, guestVa + offset, o.dimmBytes, iova)
    dimms.push({ offset, iova, bytes: o.dimmBytes, plugged: true })
  }
  // The VMM's view of guest RAM (source) and the destination VM's RAM.
  const srcPfns = new PfnArray(pages)
  vmm.pageFrames(guestVa, pages, true, srcPfns)
  const dest = m.createProcess()
  // THP-backed like the source: a 2 MiB run of frames costs a few bytes of metadata.
  const destVa = dest.mmap(o.memoryBytes)
  const dstPfns = new PfnArray(pages)
  dest.pageFrames(destVa, pages, true, dstPfns)
  const bitmapBytes = Math.ceil(pages / 64) * 8
  const bitmapVa = vmm.mmap(bitmapBytes)
  let guest: GuestIommu | null = null
  if (o.viommu) {
    const model = typeof o.iommu === 'string' ? o.iommu : null
    if (model !== 'intel' && model !== 'smmuv3') {
      throw new IommuError('EINVAL', '--viommu needs --iommu intel or smmuv3')
    }
    guest = GuestIommu.create({
      model,
      m,
      vmm,
      fd,
      ioas,
      devices: devices.map((d) => ({ dev: d.dev, idev: d.idev, ring: d.workload.config })),
      guestVa,
      memoryBytes: o.memoryBytes,
      gpa: (off) => gpaOf(dimms, o.dimmBytes, off),
      dropInvalidations: o.breakage === 'drop-guest-invalidation',
      seed: o.seed,
    })
    hwpt = guest.parentHwpt
  }
  return {
    m,
    vmm,
    fd,
    devices,
    hwpt,
    ioas,
    guestVa,
    srcPfns,
    dstPfns,
    dest,
    destVa,
    dimms,
    bitmapVa,
    bitmap: new Uint8Array(bitmapBytes),
    guest,
  }
}

/** The IOVA in the IOAS (the guest-physical address) of a guest RAM offset. */
function gpaOf(dimms: readonly Dimm[], dimmBytes: number, offset: number): number {
  const d = dimms[Math.floor(offset / dimmBytes)] as Dimm
  return d.iova + (offset - d.offset)
}

/**
 * Split every IOPTE of the domain's page table down to 4 KiB (before tracking) or merge
 * them back to 2 MiB (after), flushing what changed. A 1 GiB leaf splits twice.
 */
function resizeIoptes(r: Rig, mode: 'split' | 'merge', o: MigrateOptions): number {
  const domain = r.fd.ctx.get<HwptPaging>(r.hwpt, ObjType.HWPT_PAGING).domain
  const pt = domain === null ? null : pageTableOf(domain)
  if (domain === null || pt === null) {
    throw new RangeError(`--iopte split needs a page-table driver; ${iommuName(o.iommu)} has none`)
  }
  const gather = new IotlbGather()
  let changed = 0
  for (const d of r.dimms) {
    for (let off = 0; off < d.bytes; off += 2 * MIB) {
      const iova = BigInt(d.iova + off)
      if (mode === 'split') {
        // A 2 MiB leaf splits into 512 leaves of 4 KiB (a 1 GiB one first into 2 MiB ones).
        while (pt.split(iova, gather) > 0n) changed++
      } else if (pt.merge(iova, BigInt(2 * MIB), gather) > 0n) {
        changed++
      }
      if (gather.freelist.length > 64 || changed % 4096 === 4095)
        r.m.iommu.iommuIotlbSync(domain, gather)
    }
  }
  r.m.iommu.iommuIotlbSync(domain, gather)
  return changed
}

/** IOMMU_HWPT_GET_DIRTY_BITMAP over one DIMM into the shared bitmap buffer. */
function readDimmBitmap(r: Rig, dimm: Dimm, flags: number): void {
  r.fd.ioctl(IOMMU_HWPT_GET_DIRTY_BITMAP, {
    size: 48,
    hwpt_id: r.hwpt,
    flags,
    __reserved: 0,
    iova: BigInt(dimm.iova),
    length: BigInt(dimm.bytes),
    page_size: BigInt(PAGE),
    data: BigInt(r.bitmapVa + dimm.offset / PAGE / 8),
  })
}

/**
 * Read (and clear, unless NO_CLEAR) the dirty bitmap of every plugged DIMM into `out`
 * (bit `p` = guest page `p`, as the uAPI bitmap lays it out). With a vIOMMU guest the
 * guest CPU's writes (its page tables: KVM's dirty log) join them; without dirty tracking
 * on the nest parent every page the devices can reach is dirty.
 *
 * @returns how many pages are dirty
 */
function readDirty(r: Rig, out: Uint32Array, flags = 0, only?: Dimm): number {
  const bytes = r.bitmap.length
  r.bitmap.fill(0)
  const guest = r.guest
  if (guest !== null && !guest.parentTracksDirty) {
    // No IOMMU dirty tracking: the VMM must assume every DMA-mapped page changed.
    for (const d of r.dimms) {
      if (d.plugged) setBits(r.bitmap, d.offset / PAGE, d.bytes / PAGE)
    }
  } else {
    r.vmm.write(r.bitmapVa, r.bitmap)
    for (const d of r.dimms) {
      if (d.plugged && (only === undefined || only === d)) readDimmBitmap(r, d, flags)
    }
    r.vmm.readInto(r.bitmapVa, r.bitmap)
  }
  guest?.harvestCpuDirty(r.bitmap, flags === 0)
  out.set(new Uint32Array(r.bitmap.buffer, 0, bytes / 4))
  return popcount(out)
}

/** Number of set bits. */
function popcount(words: Uint32Array): number {
  let n = 0
  for (let i = 0; i < words.length; i++) {
    let w = words[i] as number
    w -= (w >>> 1) & 0x55555555
    w = (w & 0x33333333) + ((w >>> 2) & 0x33333333)
    n += (Math.imul((w + (w >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24) as number
  }
  return n
}

/** Set `count` bits of a little-endian bitmap from bit `first`. */
function setBits(bitmap: Uint8Array, first: number, count: number): void {
  for (let p = first; p < first + count; p++) {
    bitmap[p >> 3] = (bitmap[p >> 3] as number) | (1 << (p & 7))
  }
}

/**
 * The set bits of a page bitmap in ascending order, taken a few at a time: each call of
 * {@link take} hands the next `count` page indices to `fn`.
 */
class BitCursor {
  readonly #words: Uint32Array
  #word = 0
  #bits: number
  constructor(words: Uint32Array) {
    this.#words = words
    this.#bits = words[0] ?? 0
  }

  /**
   * The next `count` set bits as runs of consecutive pages: `fn(first, n)` per run
   * (whole words of ones at a time).
   */
  takeRuns(pages: number, fn: (first: number, n: number) => void): void {
    let count = pages
    const words = this.#words
    let w = this.#bits
    let i = this.#word
    let runStart = -1
    let runLen = 0
    while (count > 0 && i < words.length) {
      if (w === 0) {
        w = words[++i] ?? 0
        continue
      }
      let p: number
      let n: number
      if (w === 0xffff_ffff && count >= 32) {
        // A whole word of set bits.
        p = i * 32
        n = 32
        w = words[++i] ?? 0
      } else {
        const low = w & -w
        p = i * 32 + (31 - Math.clz32(low))
        n = 1
        w ^= low
      }
      count -= n
      if (runLen > 0 && runStart + runLen === p) {
        runLen += n
      } else {
        if (runLen > 0) fn(runStart, runLen)
        runStart = p
        runLen = n
      }
    }
    if (runLen > 0) fn(runStart, runLen)
    this.#word = i
    this.#bits = w
  }

  take(pages: number, fn: (page: number) => void): void {
    let count = pages
    const words = this.#words
    let w = this.#bits
    let i = this.#word
    while (count > 0 && i < words.length) {
      if (w === 0) {
        w = words[++i] ?? 0
        continue
      }
      const low = w & -w
      fn(i * 32 + (31 - Math.clz32(low)))
      w ^= low
      count--
    }
    this.#word = i
    this.#bits = w
  }
}

/** The page indices set in a bitmap, ascending. */
function bitIndices(words: Uint32Array, count: number): Int32Array {
  const out = new Int32Array(count)
  let n = 0
  new BitCursor(words).take(count, (p) => {
    out[n++] = p
  })
  return out
}

/**
 * Bytes of typed arrays the model holds besides guest data, and the data storage (see
 * `MigrationReport.memory`); zeros where the runtime cannot tell (a browser).
 */
function memorySample(
  r: Rig,
  storage: StorageSource | undefined,
): { bookkeepingBytes: number; dataBytes: number } {
  const p = (globalThis as { process?: { memoryUsage?: () => { arrayBuffers: number } } }).process
  if (!p?.memoryUsage) return { bookkeepingBytes: 0, dataBytes: 0 }
  const s = r.m.memory.frameStats()
  // The slabs hold guest data, the IO page tables and the VMM's bitmap buffer.
  const dataBytes = s.storageBytes - s.byPurpose.pgtable * PAGE - r.bitmap.length
  // Buffers a storage source allocated on another thread (a prefault worker) are counted
  // by that thread's allocator, not this one's.
  const arrayBuffers = p.memoryUsage().arrayBuffers + (storage?.otherThread ? s.sourcedBytes : 0)
  return { bookkeepingBytes: arrayBuffers - dataBytes, dataBytes }
}

/**
 * Compare guest pages [first, first + count) of source and destination, frame runs at a
 * time; `noteMismatch(page)` for each page that differs.
 *
 * @returns pages compared
 */
function verify(
  r: Rig,
  first: number,
  count: number,
  noteMismatch: (page: number) => void,
): number {
  const end = first + count
  let p = first
  while (p < end) {
    const e = Math.min(r.srcPfns.runEnd(p, end), r.dstPfns.runEnd(p, end))
    const at = p
    r.m.memory.compareFrames(r.srcPfns.get(p), r.dstPfns.get(p), e - p, (i) => noteMismatch(at + i))
    p = e
  }
  return count
}

/** Peak RSS in bytes where the runtime can tell (Node), else 0 (a browser). */
function peakRss(): number {
  const p = (globalThis as { process?: { resourceUsage?: () => { maxRSS: number } } }).process
  return p?.resourceUsage ? p.resourceUsage().maxRSS * 1024 : 0
}

/** What {@link migration} yields after each round. */
export interface RoundStep {
  /** The round that just ended (the last step is the stop-and-copy round). */
  readonly report: RoundReport
  /**
   * Guest page indices the round sent, ascending; read it before the next step (it is
   * built from the round's bitmap when first read).
   */
  readonly sent: Int32Array
}

/** A {@link RoundStep} whose `sent` list is made from the round's bitmap on first use. */
function roundStep(report: RoundReport, bits: Uint32Array, count: number): RoundStep {
  let sent: Int32Array | null = null
  return {
    report,
    get sent() {
      sent ??= bitIndices(bits, count)
      return sent
    },
  }
}

/**
 * Run one migration.
 *
 * @returns the report; `verified(report)` tells whether the destination equals the source
 */
export function migrate(o: MigrateOptions): MigrationReport {
  const run = migration(o)
  for (;;) {
    const step = run.next()
    if (step.done) return step.value
  }
}

/**
 * {@link migrate}, a round at a time: yields after every pre-copy round and after
 * stop-and-copy, and returns the report. A caller that stops iterating abandons the run.
 */
export function* migration(o: MigrateOptions): Generator<RoundStep, MigrationReport, void> {
  const wall0 = performance.now()
  const r = setup(o)
  const pages = o.memoryBytes / PAGE
  const mem = r.m.memory
  const guest = r.guest
  if (o.iopte === 'split') resizeIoptes(r, 'split', o)
  const tracking = guest === null || guest.parentTracksDirty
  if (o.breakage !== 'tracking-never-enabled' && tracking) {
    r.fd.ioctl(IOMMU_HWPT_SET_DIRTY_TRACKING, {
      size: 16,
      flags: IOMMU_HWPT_DIRTY_TRACKING_ENABLE,
      hwpt_id: r.hwpt,
      __reserved: 0,
    })
  }
  const unplugged: [number, number][] = []
  if (guest !== null) unplugged.push([guest.reservedOffset, o.memoryBytes])
  const excluded = {
    excludes: (off: number, len: number) => unplugged.some(([s, e]) => off < e && s < off + len),
  }
  const buf = new Uint8Array(PAGE)
  // One writer per device, made once (no closure per round).
  const emits = r.devices.map((d, i) => {
    const dma = d.dev.dma
    return (w: DmaWrite) => {
      const data = stampBytes(buf, w.length, w.stamp, w.offset)
      if (guest !== null) {
        dma.write(guest.iova(i, w.offset), data)
      } else {
        // A write never crosses a page, so never a DIMM: one DIMM holds it.
        const dm = r.dimms[Math.floor(w.offset / o.dimmBytes)] as Dimm
        dma.write(dm.iova + (w.offset - dm.offset), data)
      }
      d.writes++
    }
  })
  const deviceRuns = (seconds: number) => {
    // Nothing to exclude until a DIMM is unplugged (or a vIOMMU guest reserves its tables).
    const ex = unplugged.length > 0 ? excluded : undefined
    for (const [i, d] of r.devices.entries()) {
      d.workload.run(seconds, emits[i] as (w: DmaWrite) => void, ex)
    }
    guest?.deviceStatus()
  }
  const writes = () => r.devices.reduce((n, d) => n + d.writes, 0)

  const rounds: RoundReport[] = []
  // This round's pages and the next round's, as bitmaps (swapped each round); the spare
  // one is also the unplug scratch and, at the end, the stop-and-copy read.
  const words = r.bitmap.length / 4
  let dirty = new Uint32Array(words)
  let spare = new Uint32Array(words)
  let toSend = pages
  dirty.fill(0xffff_ffff, 0, pages >>> 5)
  if (pages & 31) dirty[pages >>> 5] = 2 ** (pages & 31) - 1
  // Send guest pages [p, p + n): frame runs at a time (contiguous on both sides).
  const send = (first: number, n: number) => {
    const end = first + n
    let p = first
    while (p < end) {
      const e = Math.min(r.srcPfns.runEnd(p, end), r.dstPfns.runEnd(p, end))
      mem.copyFrames(r.dstPfns.get(p), r.srcPfns.get(p), e - p)
      p = e
    }
  }
  let converged = false
  let simTime = 0
  let totalBytes = 0
  let unplug: { bytes: number; dirtyPagesRescued: number; verifiedPages: number } | null = null
  let mismatches = 0
  const firstMismatches: number[] = []
  const noteMismatch = (page: number) => {
    mismatches++
    if (firstMismatches.length < 16) firstMismatches.push(page * PAGE)
  }
  const threshold = Math.floor((o.bandwidth * o.maxDowntime) / PAGE)
  let memory = { bookkeepingBytes: 0, dataBytes: 0 }
  const sampleMemory = () => {
    const m = memorySample(r, o.storage)
    if (m.bookkeepingBytes + m.dataBytes > memory.bookkeepingBytes + memory.dataBytes) memory = m
  }

  for (let round = 0; round < o.maxRounds; round++) {
    const t0 = performance.now()
    const seconds = (toSend * PAGE) / o.bandwidth
    const writes0 = writes()
    const steps = Math.max(1, Math.min(o.stepsPerRound, toSend))
    const cursor = new BitCursor(dirty)
    let sent = 0
    for (let s = 0; s < steps; s++) {
      const end = Math.round(((s + 1) * toSend) / steps)
      cursor.takeRuns(end - sent, send)
      sent = end
      deviceRuns(seconds / steps)
      // The guest moves its rings halfway through every round.
      if (guest !== null && s === steps >> 1) guest.moveRings()
      o.onProgress?.({ round, phase: 'pre-copy', fraction: (s + 1) / steps })
    }
    if (o.unplugRound === round && r.dimms.length > 1) {
      unplug = hotUnplug(r, spare, unplugged, noteMismatch)
    }
    const b0 = performance.now()
    const next = readDirty(r, spare)
    const bitmapMs = performance.now() - b0
    sampleMemory()
    rounds.push({
      round,
      stopAndCopy: false,
      dirtyPages: toSend,
      bytesSent: toSend * PAGE,
      simSeconds: seconds,
      dmaWrites: writes() - writes0,
      wallMs: performance.now() - t0,
      bitmapMs,
    })
    yield roundStep(rounds[rounds.length - 1] as RoundReport, dirty, toSend)
    ;[dirty, spare] = [spare, dirty]
    simTime += seconds
    totalBytes += toSend * PAGE
    toSend = next
    if (toSend <= threshold) {
      converged = true
      break
    }
    // Without dirty tracking every round resends all DMA-mapped memory: no round can make
    // progress, so the VMM stops pre-copy after round 0.
    if (!tracking) break
  }

  // Stop-and-copy: the device is quiesced; send what the last bitmap (plus a final read) holds.
  const t0 = performance.now()
  const b0 = performance.now()
  const extra = spare
  readDirty(r, extra)
  const bitmapMs = performance.now() - b0
  for (let i = 0; i < words; i++) dirty[i] = (dirty[i] as number) | (extra[i] as number)
  toSend = popcount(dirty)
  new BitCursor(dirty).takeRuns(toSend, send)
  sampleMemory()
  const downtime = (toSend * PAGE) / o.bandwidth
  rounds.push({
    round: rounds.length,
    stopAndCopy: true,
    dirtyPages: toSend,
    bytesSent: toSend * PAGE,
    simSeconds: downtime,
    dmaWrites: 0,
    wallMs: performance.now() - t0,
    bitmapMs,
  })
  yield roundStep(rounds[rounds.length - 1] as RoundReport, dirty, toSend)
  simTime += downtime
  totalBytes += toSend * PAGE
  if (o.iopte === 'split') resizeIoptes(r, 'merge', o)

  // Verification: every page of every plugged DIMM equal on both sides.
  let verifiedPages = unplug ? unplug.verifiedPages : 0
  for (const d of r.dimms) {
    if (d.plugged) verifiedPages += verify(r, d.offset / PAGE, d.bytes / PAGE, noteMismatch)
  }
  // The destination rebuilds its vIOMMU from the migrated guest and the device DMAs there.
  const viommu =
    guest === null
      ? null
      : guest.finish({
          dest: r.dest,
          destVa: r.destVa,
          dstPfns: r.dstPfns,
          dimms: r.dimms.map((d) => ({ offset: d.offset, iova: d.iova, bytes: d.bytes })),
          iopte4k: o.iopte === '4k',
        })
  const unit = r.m.units[0]
  const vendor: Vendor | null =
    typeof o.iommu === 'string' && isIommuModel(o.iommu) ? VENDORS[o.iommu] : vendorOfUnit(unit)
  const stale = summarizeStale(
    vendor,
    unit !== undefined && vendor !== null ? vendor.staleUses(unit) : [],
    tracking && o.breakage !== 'tracking-never-enabled',
  )
  const hw = unit !== undefined && vendor !== null ? vendor.stats(unit) : null
  // What the kernel's dirty reads lost or left out (the dirty-tracking hazard detector).
  const hazards = summarizeHazards(r.m.dirtyHazards.entries, BigInt(GUEST_IOVA), pages)
  r.fd.close()
  const wallSeconds = (performance.now() - wall0) / 1000
  const dirtyPath =
    vendor === null
      ? "the driver's read_and_clear_dirty"
      : guest !== null
        ? guest.parentTracksDirty
          ? vendor.nestedDirtyPath
          : `${vendor.nestedDirtyPath}, all DMA-mapped pages sent every round`
        : vendor.dirtyPath
  return {
    config: {
      iommu: iommuName(o.iommu),
      memoryBytes: o.memoryBytes,
      dimmBytes: o.dimmBytes,
      iopte: o.iopte,
      seed: o.seed,
      bandwidth: o.bandwidth,
      maxRounds: o.maxRounds,
      maxDowntime: o.maxDowntime,
      workload: o.workload,
      devices: devicesOf(o).map((d) => d.name),
      unplugRound: o.unplugRound,
      breakage: o.breakage,
      detector: o.detector,
      dirtyRecords: o.ideal ? 'ideal' : (o.dirtyRecords ?? 'kernel'),
      ideal: o.ideal === true,
      viommu: o.viommu === true,
    },
    vendor: {
      name: vendor?.label ?? iommuName(o.iommu),
      dirtyPath,
    },
    thresholdPages: threshold,
    rounds,
    converged,
    downtimeSeconds: downtime,
    totalSimSeconds: simTime,
    totalBytesSent: totalBytes,
    totalDmaWrites: writes(),
    deviceWrites: r.devices.map((d) => d.writes),
    verifiedPages,
    mismatchedPages: mismatches,
    firstMismatches,
    unplug: unplug ? { bytes: unplug.bytes, dirtyPagesRescued: unplug.dirtyPagesRescued } : null,
    dirtyHazards: hazards.kinds,
    lostPages: hazards.lostPages,
    staleTranslations: stale,
    hw,
    viommu,
    wallSeconds,
    speedup: simTime / wallSeconds,
    peakRssBytes: peakRss(),
    memory,
  }
}

/**
 * Hot-unplug the last plugged DIMM mid-migration: the guest stops using it, the VMM reads
 * its dirty bits with NO_CLEAR (the unmap will destroy them), sends those pages, checks the
 * DIMM arrived whole, then unmaps it from the IOAS and from its own address space.
 */
function hotUnplug(
  r: Rig,
  scratch: Uint32Array,
  unplugged: [number, number][],
  noteMismatch: (page: number) => void,
): { bytes: number; dirtyPagesRescued: number; verifiedPages: number } {
  const dimm = [...r.dimms].reverse().find((d) => d.plugged)
  if (dimm === undefined) throw new RangeError('no DIMM to unplug')
  // The guest has offlined the memory: the device no longer targets it.
  unplugged.push([dimm.offset, dimm.offset + dimm.bytes])
  const n = readDirty(r, scratch, IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR, dimm)
  const mem = r.m.memory
  new BitCursor(scratch).take(n, (p) => mem.copyFrame(r.dstPfns.get(p), r.srcPfns.get(p)))
  const verifiedPages = verify(r, dimm.offset / PAGE, dimm.bytes / PAGE, noteMismatch)
  r.fd.ioctl(IOMMU_IOAS_UNMAP, {
    size: 24,
    ioas_id: r.ioas,
    iova: BigInt(dimm.iova),
    length: BigInt(dimm.bytes),
  })
  r.vmm.munmap(r.guestVa + dimm.offset, dimm.bytes)
  dimm.plugged = false
  return { bytes: dimm.bytes, dirtyPagesRescued: n, verifiedPages }
}

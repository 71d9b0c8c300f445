/**
 * A seeded random-ioctl fuzzer for the uAPI: plausible and malformed ioctls (wrong `size`,
 * unknown flags, non-zero reserved fields, wrong JavaScript types, zero and overflowing
 * lengths, bogus ids and user pointers, arguments passed by address), device DMA between
 * them, VFIO-style bind/attach/replace/detach, address-space changes under pinned memory
 * and injected allocation failures, on any machine a caller builds.
 *
 * It checks three things:
 * - every failure that leaves an ioctl or a public API is an `IommuError` with a Linux
 *   errno (an ioctl's also carries `syscall: 'ioctl'`);
 * - nothing leaks: at the end of each "world" (a machine, a VMM, a few hundred operations)
 *   everything is closed and every pin, every charge and every frame is back to zero;
 * - dirty tracking loses nothing it does not own up to: every 2 KiB unit a device
 *   DMA-wrote through a HWPT with tracking enabled, since that unit was last read and
 *   cleared, is set in the bitmap the next IOMMU_HWPT_GET_DIRTY_BITMAP over it returns,
 *   unless a detector explains the miss: the machine's dirty-tracking hazard log
 *   (`machine.dirtyHazards`: Linux 7.2 lost the unit's dirt, or left it dirty for a later
 *   read) or the IOMMU hardware's missing-invalidation detector (a write through a stale
 *   cached translation that the hardware never logged as dirty). Every other miss, in a
 *   well-formed read or a malformed one, is a finding; so is a write the IOMMU did not log
 *   while no stale translation explains it.
 *
 * The run is a pure function of the seed and the machine factory.
 *
 * @module
 */

import {
  type DirtyHazard,
  type DirtyHazardKind,
  type DirtyHazardLog,
  DmaFault,
  DomainType,
  ERRNO,
  FRAME_SIZE,
  IOMMU_DIRTY_NO_CLEAR,
  IommuDirtyBitmap,
  type IommuDomain,
  IommuError,
  IovaRangeList,
  MAP_SHARED,
  type Machine,
  type PciDevice,
  PROT_READ,
  PROT_WRITE,
  type Process,
} from '@iommu/core'
import {
  IOMMU_HW_QUEUE_TYPE_SELFTEST,
  IOMMU_HWPT_DATA_SELFTEST,
  IOMMU_HWPT_INVALIDATE_DATA_SELFTEST,
  IOMMU_VEVENTQ_TYPE_SELFTEST,
  IOMMU_VIOMMU_TYPE_SELFTEST,
  MOCK_APERTURE_START,
} from '@iommu/core/testing/mock'
import type { IommufdDevice } from '../device.ts'
import { fdClose, fdGet, fdInstall, fdPoll, fdRead, fdWrite } from '../fd-table.ts'
import { HwptPaging } from '../hw-pagetable.ts'
import type { IoptArea } from '../io-pagetable.ts'
import { type Iommufd, openIommufd } from '../iommufd.ts'
import { ObjType } from '../object.ts'
import {
  IOMMU_DESTROY,
  IOMMU_FAULT_QUEUE_ALLOC,
  IOMMU_GET_HW_INFO,
  IOMMU_HW_QUEUE_ALLOC,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_ALLOC_PASID,
  IOMMU_HWPT_DIRTY_TRACKING_ENABLE,
  IOMMU_HWPT_FAULT_ID_VALID,
  IOMMU_HWPT_GET_DIRTY_BITMAP,
  IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR,
  IOMMU_HWPT_INVALIDATE,
  IOMMU_HWPT_SET_DIRTY_TRACKING,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_ALLOW_IOVAS,
  IOMMU_IOAS_CHANGE_PROCESS,
  IOMMU_IOAS_COPY,
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FILE,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_IOAS_UNMAP,
  IOMMU_OPTION,
  IOMMU_TEST_CMD,
  IOMMU_TEST_OP_ACCESS_PAGES,
  IOMMU_TEST_OP_ACCESS_REPLACE_IOAS,
  IOMMU_TEST_OP_ACCESS_RW,
  IOMMU_TEST_OP_ADD_RESERVED,
  IOMMU_TEST_OP_CREATE_ACCESS,
  IOMMU_TEST_OP_DESTROY_ACCESS_PAGES,
  IOMMU_TEST_OP_DIRTY,
  IOMMU_TEST_OP_MD_CHECK_MAP,
  IOMMU_TEST_OP_MD_CHECK_REFS,
  IOMMU_TEST_OP_MOCK_DOMAIN,
  IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS,
  IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE,
  IOMMU_TEST_OP_PASID_ATTACH,
  IOMMU_TEST_OP_PASID_CHECK_HWPT,
  IOMMU_TEST_OP_PASID_DETACH,
  IOMMU_TEST_OP_PASID_REPLACE,
  IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT,
  IOMMU_TEST_OP_TRIGGER_IOPF,
  IOMMU_TEST_OP_TRIGGER_VEVENT,
  IOMMU_VDEVICE_ALLOC,
  IOMMU_VEVENTQ_ALLOC,
  IOMMU_VFIO_IOAS,
  IOMMU_VIOMMU_ALLOC,
  MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES,
  MOCK_FLAGS_DEVICE_NO_DIRTY,
  MOCK_FLAGS_DEVICE_PASID,
} from '../uapi/constants.ts'
import {
  bytesToObject,
  cInt,
  type Field,
  parseStruct,
  type StructLayout,
  writeField,
} from '../uapi/struct.ts'
import {
  IOMMU_DESTROY_LAYOUT,
  IOMMU_FAULT_ALLOC_LAYOUT,
  IOMMU_HW_INFO_LAYOUT,
  IOMMU_HW_QUEUE_ALLOC_LAYOUT,
  IOMMU_HWPT_ALLOC_LAYOUT,
  IOMMU_HWPT_GET_DIRTY_BITMAP_LAYOUT,
  IOMMU_HWPT_INVALIDATE_LAYOUT,
  IOMMU_HWPT_SET_DIRTY_TRACKING_LAYOUT,
  IOMMU_IOAS_ALLOC_LAYOUT,
  IOMMU_IOAS_ALLOW_IOVAS_LAYOUT,
  IOMMU_IOAS_CHANGE_PROCESS_LAYOUT,
  IOMMU_IOAS_COPY_LAYOUT,
  IOMMU_IOAS_IOVA_RANGES_LAYOUT,
  IOMMU_IOAS_MAP_FILE_LAYOUT,
  IOMMU_IOAS_MAP_LAYOUT,
  IOMMU_IOAS_UNMAP_LAYOUT,
  IOMMU_OPTION_LAYOUT,
  IOMMU_TEST_CMD_LAYOUT,
  IOMMU_VDEVICE_ALLOC_LAYOUT,
  IOMMU_VEVENTQ_ALLOC_LAYOUT,
  IOMMU_VFIO_IOAS_LAYOUT,
  IOMMU_VIOMMU_ALLOC_LAYOUT,
} from '../uapi/structs.ts'
import { Rng } from './rng.ts'

const PAGE = BigInt(FRAME_SIZE)
const U64_MAX = 0xffff_ffff_ffff_ffffn
/** The oracle's unit of dirt: the smallest IO page of any in-tree IOMMU (the mock's). */
const UNIT_SHIFT = 11n
const RW = IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE
/** Bytes of the bitmap buffer well-formed dirty reads use. */
const BITMAP_BYTES = 64 * 1024
const SCRATCH_BYTES = 64 * 1024
/** Where the well-formed setup maps guest memory: inside the mock aperture, not reserved on AMD. */
const GUEST_IOVA = 0x1000_0000n

// ------------------------------------------------------------------ public API

/** What the fuzzer runs against. */
export interface UapiFuzzTarget {
  /** A name for the report. */
  readonly name: string
  /**
   * A fresh machine with the IOMMU under test as unit 0. The fuzzer adds its own PCI
   * devices behind unit 0 and processes; it opens iommufd in test mode, so a mock unit 0
   * also gets the selftest's mock devices.
   */
  machine(): Machine
  /**
   * The IOMMU hardware's missing-invalidation detector, when it has one (`staleUses` of
   * the AMD, VT-d and SMMUv3 models): the live list of DMA accesses that used a cached
   * translation software should have invalidated. A DMA write that reaches memory without
   * its IOPTE becoming dirty is a finding unless a stale use of a write was added to this
   * list during it. Linux 7.2's SMMUv3 driver needs it: it does not invalidate the TLB
   * after a clearing dirty read, so a leaf cached writable-dirty absorbs later writes
   * without logging them (unless the target uses `smmuv3({ flushAfterDirtyClear: true })`).
   */
  staleUses?(m: Machine): readonly { readonly write: boolean }[]
}

/** Options of {@link runUapiFuzz}. */
export interface UapiFuzzOptions {
  readonly seed: number
  /** Operations in all (ioctls, DMA, device and address-space operations). */
  readonly ops: number
  /** Operations per world before it is torn down and checked for leaks (default 400). */
  readonly opsPerWorld?: number
  /** Stop collecting problems after this many (default 50); counting goes on. */
  readonly maxProblems?: number
  /** Called every 10,000 operations with the number done. */
  readonly onProgress?: (done: number) => void
  /**
   * Replay world `world` alone (worlds draw from independent streams, so the seed and the
   * world number of a finding reproduce it) and log every operation.
   */
  readonly trace?: { readonly world: number; log(op: number, what: string, outcome: string): void }
}

/** One finding. `op` is the global operation index (reproduce with the same seed). */
export interface UapiFuzzProblem {
  readonly kind: 'exception' | 'bad-error' | 'leak' | 'dirty-false-negative'
  readonly world: number
  readonly op: number
  /** The operation, e.g. `IOMMU_IOAS_MAP {...}` or `dma write 0x... +4096`. */
  readonly what: string
  readonly detail: string
}

/** Figures of a run. */
export interface UapiFuzzReport {
  readonly target: string
  readonly seed: number
  ops: number
  worlds: number
  ioctls: number
  /** Per command (`@mem` when passed by address): calls, and how many returned 0. */
  readonly byCommand: Record<string, { calls: number; ok: number }>
  /** ioctls that returned 0. */
  succeeded: number
  /** Failures by errno name, over ioctls and the other public APIs. */
  readonly errnos: Record<string, number>
  dmaWrites: number
  dmaFaults: number
  /** Allocation failures injected. */
  injected: number
  readonly dirty: {
    /** GET_DIRTY_BITMAP calls that succeeded. */
    reads: number
    /** ... of which well-formed: a valid, big enough bitmap and a range fully mapped. */
    wellFormedReads: number
    /** Written units a read covered, which the oracle expected to find set. */
    expected: number
    /**
     * Written units whose dirt a clearing read lost, as the hazard log explains it: in
     * the read's range and missing from its bitmap, or outside it (a dirty IOPTE cleaned
     * whole, `'iopte-outside-query'`). They are not expected again.
     */
    lost: number
    /** {@link lost} by hazard kind. */
    readonly lostByKind: Record<string, number>
    /** Expected units missing from a bitmap that the hazard log lists as still dirty (`'missed'`): still expected. */
    missed: number
    /** {@link missed} by hazard kind. */
    readonly missedByKind: Record<string, number>
    /**
     * Units of DMA writes the IOMMU did not log as dirty while its hardware detector
     * reported a write through a stale translation (see {@link UapiFuzzTarget.staleUses}):
     * lost before any read, not expected.
     */
    unlogged: number
    /** Stale uses the hardware detector reported, writes and reads (0 without the hook). */
    staleUses: number
    /**
     * Expected units missing from a bitmap that no detector explains, in all reads / in
     * well-formed reads; each one is also a `'dirty-false-negative'` finding.
     */
    falseNegatives: number
    falseNegativesWellFormed: number
  }
  readonly problems: UapiFuzzProblem[]
}

// ------------------------------------------------------------------ world state

interface Buffer {
  readonly va: number
  readonly size: number
}

/** The oracle's record for one paging HWPT. */
interface DirtyRecord {
  tracking: boolean
  /** Written units (IOVA >> UNIT_SHIFT) → the area they were written through. */
  readonly written: Map<number, IoptArea>
}

interface World {
  readonly index: number
  readonly m: Machine
  readonly proc: Process
  readonly other: Process
  readonly fd: Iommufd
  readonly bufs: Buffer[]
  readonly scratch: number
  readonly bitmap: number
  readonly readOnly: number
  readonly hole: number
  readonly memfdFd: number
  readonly mfdVa: number
  readonly baseFrames: number
  readonly devices: PciDevice[]
  readonly idevs: IommufdDevice[]
  readonly ids: number[]
  readonly ioas: number[]
  readonly hwpts: number[]
  readonly devIds: number[]
  readonly stdevs: number[]
  readonly accessFds: number[]
  readonly accessItems: { fd: number; id: number }[]
  readonly viommus: number[]
  readonly faults: number[]
  /** Fault-queue and vEVENTQ fds, and iommufd mmaps (address, length). */
  readonly eventFds: number[]
  readonly mmaps: { va: number; length: number }[]
  readonly maps: { ioas: number; iova: bigint; length: bigint }[]
  readonly dirty: Map<HwptPaging, DirtyRecord>
}

// ------------------------------------------------------------------ the fuzzer

/**
 * Run the fuzzer. Never throws for what it finds: every finding is in `problems`.
 *
 * @example
 * ```ts
 * const r = runUapiFuzz({ name: 'mock', machine: () => createMachine({ iommus: [mockIommu()] }) },
 *   { seed: 1, ops: 20_000 })
 * expect(r.problems).toEqual([])
 * ```
 */
export function runUapiFuzz(target: UapiFuzzTarget, options: UapiFuzzOptions): UapiFuzzReport {
  return new Fuzzer(target, options).run()
}

class Fuzzer {
  readonly #target: UapiFuzzTarget
  #r: Rng
  readonly #seed: number
  readonly #opsPerWorld: number
  readonly #maxProblems: number
  readonly #onProgress: ((done: number) => void) | undefined
  readonly #trace: UapiFuzzOptions['trace']
  #outcome = ''
  readonly #total: number
  readonly report: UapiFuzzReport
  #op = 0
  #what = ''
  /** fail_nth for the API calls of the current step, 0 for none. */
  #inject = 0
  /** The errno name of the last failure classified, or null. */
  #lastErrno: string | null = null

  constructor(target: UapiFuzzTarget, o: UapiFuzzOptions) {
    this.#target = target
    this.#seed = o.seed
    this.#r = new Rng(o.seed)
    this.#total = o.ops
    this.#opsPerWorld = o.opsPerWorld ?? 400
    this.#maxProblems = o.maxProblems ?? 50
    this.#onProgress = o.onProgress
    this.#trace = o.trace
    this.report = {
      target: target.name,
      seed: o.seed,
      ops: 0,
      worlds: 0,
      ioctls: 0,
      byCommand: {},
      succeeded: 0,
      errnos: {},
      dmaWrites: 0,
      dmaFaults: 0,
      injected: 0,
      dirty: {
        reads: 0,
        wellFormedReads: 0,
        expected: 0,
        lost: 0,
        lostByKind: {},
        missed: 0,
        missedByKind: {},
        unlogged: 0,
        staleUses: 0,
        falseNegatives: 0,
        falseNegativesWellFormed: 0,
      },
      problems: [],
    }
  }

  run(): UapiFuzzReport {
    while (this.#op < this.#total) {
      // Each world draws from its own stream, so that one world replays alone.
      this.#r = new Rng(Math.imul(this.#seed ^ 0x5bd1_e995, 0x9e37_79b1) + this.report.worlds)
      if (this.#trace !== undefined && this.#trace.world !== this.report.worlds) {
        this.#op = Math.min(this.#total, this.#op + this.#opsPerWorld)
        this.report.worlds++
        continue
      }
      const w = this.#guard('world setup', () => this.#newWorld()) as World | undefined
      if (w === undefined) break
      const end = Math.min(this.#total, this.#op + this.#opsPerWorld)
      if (this.#r.chance(0.85)) this.#vmSetup(w)
      if (this.#r.chance(0.4)) this.#nestSetup(w)
      for (; this.#op < end; this.#op++) {
        this.#outcome = 'ok'
        this.#what = '(nothing to do)'
        this.#step(w)
        if (this.#trace?.world === w.index) this.#trace.log(this.#op, this.#what, this.#outcome)
        if (this.#onProgress && (this.#op + 1) % 10_000 === 0) this.#onProgress(this.#op + 1)
      }
      this.#teardown(w)
      this.report.worlds++
    }
    this.report.ops = this.#op
    return this.report
  }

  #problem(kind: UapiFuzzProblem['kind'], world: number, detail: string): void {
    if (this.report.problems.length >= this.#maxProblems) return
    this.report.problems.push({ kind, world, op: this.#op, what: this.#what, detail })
  }

  /** Run a non-ioctl public API; returns its result or undefined when it failed. */
  #guard<T>(what: string, fn: () => T, world = this.report.worlds, w?: World): T | undefined {
    this.#what = what
    try {
      return w === undefined ? fn() : this.#armed(w, fn)
    } catch (e) {
      this.#classify(e, false, world)
      return undefined
    }
  }

  /** Count an error, or report it when it is not an `IommuError` with a Linux errno. */
  #classify(e: unknown, ioctl: boolean, world: number): void {
    this.#outcome = e instanceof Error ? e.message : String(e)
    this.#lastErrno = null
    if (e instanceof DmaFault) {
      this.report.dmaFaults++
      return
    }
    if (!(e instanceof IommuError)) {
      const err = e as Error
      this.#problem('exception', world, `${err?.name}: ${err?.message}\n${err?.stack ?? ''}`)
      return
    }
    const known = Object.hasOwn(ERRNO, e.code) && e.errno === -ERRNO[e.code]
    if (!known || (ioctl && e.syscall !== 'ioctl')) {
      this.#problem('bad-error', world, `${e.code} errno ${e.errno} syscall ${e.syscall}`)
      return
    }
    this.report.errnos[e.code] = (this.report.errnos[e.code] ?? 0) + 1
    this.#lastErrno = e.code
  }

  // ---------------------------------------------------------------- worlds

  #newWorld(): World {
    const r = this.#r
    const m = this.#target.machine()
    const baseFrames = framesOwned(m)
    // Some worlds have a memlock limit, some a privileged VMM.
    const rlimit = r.chance(0.3) ? (1 + r.int(64)) * 2 ** 20 : Number.POSITIVE_INFINITY
    const proc = m.createProcess({ rlimitMemlock: rlimit })
    const other = m.createProcess()
    const root = r.chance(0.3)
    const fd = openIommufd(m, proc, {
      test: true,
      vfio: r.chance(0.1),
      cred: { CAP_IPC_LOCK: root, CAP_SYS_RESOURCE: root || r.chance(0.2) },
    })
    const bufs: Buffer[] = []
    for (const size of [4 << 20, 64 << 10, 2 << 20]) {
      bufs.push({ va: proc.mmap(size, { hugepage: r.chance(0.7) }), size })
    }
    const readOnly = proc.mmap(64 << 10, { prot: PROT_READ })
    bufs.push({ va: readOnly, size: 64 << 10 })
    const memfd = proc.memfdCreate('fuzz')
    memfd.ftruncate(1 << 20)
    const memfdFd = fdInstall(proc, memfd)
    const mfdVa = proc.mmap(1 << 20, { file: memfd })
    bufs.push({ va: mfdVa, size: 1 << 20 })
    const hole = proc.mmap(1 << 20)
    proc.munmap(hole, 1 << 20)
    const scratch = proc.mmap(SCRATCH_BYTES)
    const bitmap = proc.mmap(BITMAP_BYTES)
    const devices: PciDevice[] = []
    for (let i = 0; i < 3; i++) {
      const d = this.#guard('addPciDevice', () =>
        m.addPciDevice({ pasidBits: i === 1 ? 20 : 0, dirtyTracking: i !== 2 }),
      )
      if (d !== undefined) devices.push(d)
    }
    return {
      index: this.report.worlds,
      m,
      proc,
      other,
      fd,
      bufs,
      scratch,
      bitmap,
      readOnly,
      hole,
      memfdFd,
      mfdVa,
      baseFrames,
      devices,
      idevs: [],
      ids: [],
      ioas: [],
      hwpts: [],
      devIds: [],
      stdevs: [],
      accessFds: [],
      accessItems: [],
      viommus: [],
      faults: [],
      eventFds: [],
      mmaps: [],
      maps: [],
      dirty: new Map(),
    }
  }

  /** Close everything and check that nothing stayed pinned, charged or allocated. */
  #teardown(w: World): void {
    const leak = (detail: string) => this.#problem('leak', w.index, detail)
    this.#what = 'teardown'
    try {
      w.m.faults.disarm()
      for (const idev of w.idevs) this.#guard('unbind', () => idev.unbind(), w.index)
      // Exit unmaps the iommufd's MMIO mappings and closes every fd: access and event
      // fds the fuzz lost track of (an output cut by a short `size`) as well as the
      // iommufd and the memfd.
      for (const m of w.mmaps) w.proc.munmap(m.va, m.length)
      for (const p of [w.proc, w.other]) {
        for (let fd = 3; fd < 1024; fd++) if (fdGet(p, fd) !== undefined) fdClose(p, fd)
      }
      this.#what = 'teardown'
      if (!w.fd.ctx.released) leak('the iommufd context was not released')
      const stats = w.m.memory.frameStats()
      if (stats.pins !== 0) leak(`${stats.pins} pins left`)
      for (const p of [w.proc, w.other]) {
        if (p.mm.pinnedVm !== 0) leak(`pid ${p.pid}: pinned_vm ${p.mm.pinnedVm}`)
        if (p.mm.lockedVm !== 0) leak(`pid ${p.pid}: mm locked_vm ${p.mm.lockedVm}`)
        if (p.user.lockedVm !== 0) leak(`pid ${p.pid}: user locked_vm ${p.user.lockedVm}`)
      }
      for (const d of [...w.m.devices]) w.m.removePciDevice(d)
      w.proc.exit()
      w.other.exit()
      const after = w.m.memory.frameStats()
      if (framesOwned(w.m) !== w.baseFrames) {
        leak(
          `${framesOwned(w.m) - w.baseFrames} frames not freed ` +
            `(${JSON.stringify(after.byPurpose)})`,
        )
      }
    } catch (e) {
      const err = e as Error
      this.#problem('exception', w.index, `teardown: ${err?.name}: ${err?.message}\n${err?.stack}`)
    }
  }

  /**
   * What a VMM does first, well-formed: an IOAS with guest memory mapped, a device on a
   * dirty-tracking HWPT with tracking on. The random operations then start from a state
   * where DMA lands and dirty bitmaps have something to say.
   */
  #vmSetup(w: World): void {
    const r = this.#r
    const alloc = { size: 12, flags: 0, out_ioas_id: 0 }
    if (!this.#issue(w, IOMMU_IOAS_ALLOC, alloc, 'IOMMU_IOAS_ALLOC')) return
    const ioas = alloc.out_ioas_id
    this.#addId(w, w.ioas, ioas)
    const maps: [number, bigint][] = [
      [0, GUEST_IOVA],
      [2, GUEST_IOVA + (8n << 20n)],
      [4, GUEST_IOVA + (16n << 20n)],
    ]
    for (const [b, iova] of maps) {
      const buf = w.bufs[b] as Buffer
      const cmd = {
        size: 40,
        flags: RW | IOMMU_IOAS_MAP_FIXED_IOVA,
        ioas_id: ioas,
        user_va: BigInt(buf.va),
        length: BigInt(buf.size),
        iova,
      }
      if (this.#issue(w, IOMMU_IOAS_MAP, cmd, 'IOMMU_IOAS_MAP')) {
        this.#addMap(w, ioas, cmd.iova, cmd.length)
      }
    }
    const dev = w.devices[0]
    if (dev === undefined) return
    const idev = this.#guard('bind', () => w.fd.bindDevice(dev), w.index, w)
    if (idev === undefined) return
    w.idevs.push(idev)
    this.#addId(w, w.devIds, idev.id)
    const hwpt = {
      size: 48,
      flags: r.chance(0.8) ? IOMMU_HWPT_ALLOC_DIRTY_TRACKING : 0,
      dev_id: idev.id,
      pt_id: ioas,
      out_hwpt_id: 0,
    }
    if (!this.#issue(w, IOMMU_HWPT_ALLOC, hwpt, 'IOMMU_HWPT_ALLOC')) return
    this.#addId(w, w.hwpts, hwpt.out_hwpt_id)
    this.#guard('attach', () => idev.attach(hwpt.out_hwpt_id), w.index)
    const track = { size: 16, flags: IOMMU_HWPT_DIRTY_TRACKING_ENABLE, hwpt_id: hwpt.out_hwpt_id }
    if (this.#issue(w, IOMMU_HWPT_SET_DIRTY_TRACKING, track, 'IOMMU_HWPT_SET_DIRTY_TRACKING')) {
      this.#trackingChanged(w, track)
    }
  }

  /**
   * The vIOMMU family, well-formed, on a selftest mock device (nothing succeeds on other
   * drivers, which is fine): a nest parent, a vIOMMU, a vDEVICE, a vEVENTQ, a fault queue,
   * a nested HWPT and a HW queue, so that random operations meet live objects.
   */
  #nestSetup(w: World): void {
    const ioas = w.ioas[0]
    const map = w.maps[0]
    if (ioas === undefined) return
    const md = {
      size: 72,
      op: IOMMU_TEST_OP_MOCK_DOMAIN,
      id: ioas,
      mock_domain: { out_stdev_id: 0, out_hwpt_id: 0, out_idev_id: 0 },
    }
    if (!this.#issue(w, IOMMU_TEST_CMD, md, 'IOMMU_TEST_CMD')) return
    this.testCmdDone(w, md)
    const dev = md.mock_domain.out_idev_id
    const parent = {
      size: 48,
      flags: IOMMU_HWPT_ALLOC_NEST_PARENT,
      dev_id: dev,
      pt_id: ioas,
      out_hwpt_id: 0,
    }
    if (!this.#issue(w, IOMMU_HWPT_ALLOC, parent, 'IOMMU_HWPT_ALLOC')) return
    this.#addId(w, w.hwpts, parent.out_hwpt_id)
    const viommu = {
      size: 40,
      type: IOMMU_VIOMMU_TYPE_SELFTEST,
      dev_id: dev,
      hwpt_id: parent.out_hwpt_id,
      out_viommu_id: 0,
    }
    if (!this.#issue(w, IOMMU_VIOMMU_ALLOC, viommu, 'IOMMU_VIOMMU_ALLOC')) return
    const v = viommu.out_viommu_id
    this.#addId(w, w.viommus, v)
    const vdev = { size: 24, viommu_id: v, dev_id: dev, virt_id: 1n, out_vdevice_id: 0 }
    if (this.#issue(w, IOMMU_VDEVICE_ALLOC, vdev, 'IOMMU_VDEVICE_ALLOC')) {
      this.#addId(w, w.ids, vdev.out_vdevice_id)
    }
    const q = {
      size: 32,
      viommu_id: v,
      type: IOMMU_VEVENTQ_TYPE_SELFTEST,
      veventq_depth: 4,
      out_veventq_id: 0,
      out_veventq_fd: 0,
    }
    if (this.#issue(w, IOMMU_VEVENTQ_ALLOC, q, 'IOMMU_VEVENTQ_ALLOC'))
      this.#addFile(w, q.out_veventq_fd)
    const fault = { size: 16, flags: 0, out_fault_id: 0, out_fault_fd: 0 }
    if (this.#issue(w, IOMMU_FAULT_QUEUE_ALLOC, fault, 'IOMMU_FAULT_QUEUE_ALLOC')) {
      this.#addId(w, w.faults, fault.out_fault_id)
      this.#addFile(w, fault.out_fault_fd)
    }
    w.proc.write(w.scratch, new Uint8Array(8))
    const nested = {
      size: 48,
      flags: fault.out_fault_id ? IOMMU_HWPT_FAULT_ID_VALID : 0,
      dev_id: dev,
      pt_id: v,
      data_type: IOMMU_HWPT_DATA_SELFTEST,
      data_len: 8,
      data_uptr: BigInt(w.scratch),
      fault_id: fault.out_fault_id,
      out_hwpt_id: 0,
    }
    if (this.#issue(w, IOMMU_HWPT_ALLOC, nested, 'IOMMU_HWPT_ALLOC')) {
      this.#addId(w, w.hwpts, nested.out_hwpt_id)
    }
    if (map !== undefined) {
      const hwq = {
        size: 40,
        viommu_id: v,
        type: IOMMU_HW_QUEUE_TYPE_SELFTEST,
        index: 0,
        nesting_parent_iova: map.iova,
        length: BigInt(FRAME_SIZE),
        out_hw_queue_id: 0,
      }
      if (this.#issue(w, IOMMU_HW_QUEUE_ALLOC, hwq, 'IOMMU_HW_QUEUE_ALLOC')) {
        this.#addId(w, w.ids, hwq.out_hw_queue_id)
      }
    }
  }

  // ---------------------------------------------------------------- one step

  #step(w: World): void {
    const r = this.#r
    const kind = r.weighted<() => void>([
      [60, () => this.#ioctl(w)],
      [6, () => this.#rawIoctl(w)],
      [2, () => this.#unknownIoctl(w)],
      [14, () => this.#dma(w)],
      [8, () => this.#dirtyRead(w)],
      [6, () => this.#deviceOp(w)],
      [3, () => this.#fileOp(w)],
      [3, () => this.#addressSpaceOp(w)],
    ])
    // A few operations run with an allocation failure injected somewhere inside.
    this.#inject = r.chance(0.04) ? 1 + r.int(24) : 0
    try {
      kind()
    } finally {
      this.#inject = 0
    }
  }

  /** Run `fn` with the step's injected allocation failure armed, if it has one. */
  #armed<T>(w: World, fn: () => T): T {
    const faults = w.m.faults
    if (this.#inject) faults.arm(this.#inject)
    try {
      return fn()
    } finally {
      if (this.#inject && faults.firedAt !== null) this.report.injected++
      faults.arm(0)
    }
  }

  /** Issue one ioctl and classify the outcome. Returns true when it returned 0. */
  #issue(w: World, cmd: number, arg: unknown, name: string, fd: Iommufd = w.fd): boolean {
    this.#what = `${name} ${describe(arg)}`
    this.report.ioctls++
    const stat = this.report.byCommand[name] ?? { calls: 0, ok: 0 }
    this.report.byCommand[name] = stat
    stat.calls++
    try {
      const rc = this.#armed(w, () => fd.ioctl(cmd as never, arg))
      if (rc !== 0) this.#problem('exception', w.index, `ioctl returned ${String(rc)}`)
      this.report.succeeded++
      stat.ok++
      return true
    } catch (e) {
      this.#classify(e, true, w.index)
      return false
    }
  }

  // ---------------------------------------------------------------- values

  #u32(w: World): number {
    const r = this.#r
    return r.weighted<() => number>([
      [4, () => (w.ids.length ? r.pick(w.ids) : 1)],
      [3, () => r.int(16)],
      [2, () => r.pick([0x7fff_ffff, 0x8000_0000, 0xffff_ffff, 0xfffe, 0x1_0000 - 1])],
      [1, () => r.u32()],
    ])()
  }

  #iova(w: World): bigint {
    const r = this.#r
    return r.weighted<() => bigint>([
      [5, () => (w.maps.length ? r.pick(w.maps).iova : MOCK_APERTURE_START)],
      [3, () => MOCK_APERTURE_START + BigInt(r.int(1024)) * PAGE],
      [3, () => (1n << 32n) + BigInt(r.int(4096)) * PAGE],
      [2, () => BigInt(r.int(1 << 20)) * PAGE],
      [
        2,
        () =>
          r.pick([
            0n,
            PAGE,
            1n << 39n,
            1n << 47n,
            1n << 48n,
            1n << 52n,
            1n << 57n,
            1n << 63n,
            U64_MAX - PAGE + 1n,
            U64_MAX - 2n * PAGE + 1n,
            U64_MAX,
            0xfd_0000_0000n,
            0xfee0_0000n,
          ]),
      ],
      [1, () => r.u64()],
      [1, () => BigInt(r.int(1 << 30)) * 2048n + BigInt(r.int(3)) * 0x800n],
    ])()
  }

  #length(): bigint {
    const r = this.#r
    return r.weighted<() => bigint>([
      [8, () => BigInt(1 + r.int(64)) * PAGE],
      [2, () => BigInt(1 + r.int(4)) * (2n << 20n)],
      [
        2,
        () =>
          r.pick([
            0n,
            1n,
            2048n,
            PAGE - 1n,
            PAGE + 1n,
            1n << 32n,
            1n << 40n,
            1n << 52n,
            1n << 62n,
            1n << 63n,
            U64_MAX - PAGE + 1n,
            U64_MAX - PAGE,
            U64_MAX - 1n,
            U64_MAX,
          ]),
      ],
      [1, () => r.u64()],
    ])()
  }

  /** A user pointer: mostly into a buffer, sometimes bad. */
  #uptr(w: World): bigint {
    const r = this.#r
    return r.weighted<() => bigint>([
      [6, () => BigInt(r.pick(w.bufs).va)],
      [2, () => BigInt(r.pick(w.bufs).va + r.int(16) * FRAME_SIZE)],
      [
        2,
        () =>
          r.pick([
            0n,
            1n,
            BigInt(w.hole),
            BigInt(w.bufs[0]?.va ?? 0) + 123n,
            1n << 47n,
            (1n << 53n) + 1n,
            U64_MAX - PAGE + 1n,
            U64_MAX,
          ]),
      ],
      [1, () => r.u64()],
    ])()
  }

  /** A value of the wrong JavaScript type or range. */
  #junk(): unknown {
    const r = this.#r
    return r.pick<() => unknown>([
      () => '',
      () => '7',
      () => 'abc',
      () => Number.NaN,
      () => Number.POSITIVE_INFINITY,
      () => -1,
      () => -(2 ** 31),
      () => 1.5,
      () => 2 ** 32,
      () => 2 ** 53,
      () => 2 ** 64,
      () => -0,
      () => ({}),
      () => ({ a: 1 }),
      () => [],
      () => [1, 2, 3],
      () => null,
      () => true,
      () => -1n,
      () => 1n << 64n,
      () => 1n << 70n,
      () => 5n,
      () => 7,
      () => new Uint8Array(4),
      () => Symbol('junk'),
    ])()
  }

  /** A random value for a field of the given kind (right type, any value). */
  #valueFor(w: World, f: Field): unknown {
    switch (f.kind) {
      case 'u64':
        return this.#r.weighted<() => bigint>([
          [2, () => this.#iova(w)],
          [2, () => this.#length()],
          [1, () => this.#uptr(w)],
        ])()
      case 'u8x3':
        return [this.#r.int(2), 0, this.#r.int(256)]
      case 's32':
        return this.#r.pick([-1, 0, 3, w.memfdFd, 0x7fff_ffff, -0x8000_0000])
      case 'u8':
        return this.#r.int(256)
      case 'u16':
        return this.#r.pick([0, 1, 2, 3, 0xffff])
      default:
        return this.#u32(w)
    }
  }

  /** Damage an argument object: the malformed half of the fuzz. */
  #mutate(w: World, layout: StructLayout<unknown>, arg: Record<string, unknown>): void {
    const r = this.#r
    const n = 1 + r.int(3)
    for (let i = 0; i < n; i++) {
      const fields = layout.fields
      const f = r.pick(fields)
      switch (r.int(9)) {
        case 0:
          arg.size = r.pick<unknown>([
            0,
            4,
            layout.minSize - 1,
            layout.minSize,
            layout.sizeof,
            layout.sizeof + 4,
            layout.sizeof + 8,
            4096,
            0xffff_ffff,
            this.#junk(),
          ])
          break
        case 1:
        case 2:
        case 3:
          arg[f.name] = this.#valueFor(w, f)
          break
        case 4:
          arg[f.name] = this.#junk()
          break
        case 5:
          delete arg[f.name]
          break
        case 6:
          // Bytes past the kernel struct (E2BIG when non-zero and size > sizeof).
          arg[`__tail${r.int(3)}`] = r.pick<unknown>([1, 0, 1n, 'x', [0, 1], { z: 1 }])
          if (r.chance(0.5)) arg.size = layout.sizeof + 8
          break
        case 7: {
          const m = layout.members.length ? r.pick(layout.members) : null
          if (m === null) break
          const cur = arg[m.name]
          const obj =
            typeof cur === 'object' && cur !== null ? (cur as Record<string, unknown>) : {}
          const mf = r.pick(m.fields)
          obj[mf.name] = r.chance(0.5) ? this.#valueFor(w, mf) : this.#junk()
          arg[m.name] = r.chance(0.1) ? this.#junk() : obj
          break
        }
        default:
          if (f.name.startsWith('__reserved')) arg[f.name] = f.kind === 'u8x3' ? [0, 1, 0] : 1
          else if (f.name === 'flags') arg.flags = 1 << r.int(32)
          else arg[f.name] = this.#valueFor(w, f)
      }
    }
  }

  // ---------------------------------------------------------------- ioctls

  #ioctl(w: World): void {
    const r = this.#r
    const gen = r.pick(this.#generators)
    const [name, cmd, layout, build, after] = gen
    const arg = build.call(this, w)
    const mutated = r.chance(0.35)
    if (mutated) this.#mutate(w, layout, arg)
    const fd = r.chance(0.05) ? w.fd.as(w.other) : w.fd
    // Outputs cannot be written into a frozen object (copy_to_user to read-only memory).
    if (r.chance(0.03)) deepFreeze(arg)
    if (this.#issue(w, cmd, arg, name, fd) && after) {
      after.call(this, w, kernelView(layout, arg), mutated)
    }
  }

  readonly #generators: readonly (readonly [
    string,
    number,
    StructLayout<unknown>,
    (this: Fuzzer, w: World) => Record<string, unknown>,
    ((this: Fuzzer, w: World, arg: Record<string, unknown>, mutated: boolean) => void) | null,
  ])[] = [
    [
      'IOMMU_IOAS_ALLOC',
      IOMMU_IOAS_ALLOC,
      IOMMU_IOAS_ALLOC_LAYOUT,
      () => ({ size: 12, flags: 0, out_ioas_id: 0 }),
      function (w, a) {
        this.#addId(w, w.ioas, a.out_ioas_id)
      },
    ],
    [
      'IOMMU_DESTROY',
      IOMMU_DESTROY,
      IOMMU_DESTROY_LAYOUT,
      function (w) {
        return { size: 8, id: this.#u32(w) }
      },
      null,
    ],
    [
      'IOMMU_IOAS_IOVA_RANGES',
      IOMMU_IOAS_IOVA_RANGES,
      IOMMU_IOAS_IOVA_RANGES_LAYOUT,
      function (w) {
        const r = this.#r
        return {
          size: 32,
          ioas_id: this.#someId(w, w.ioas),
          num_iovas: r.pick([0, 1, 4, 64, 0xffff_ffff]),
          allowed_iovas: r.chance(0.8) ? BigInt(w.scratch) : this.#uptr(w),
        }
      },
      null,
    ],
    [
      'IOMMU_IOAS_ALLOW_IOVAS',
      IOMMU_IOAS_ALLOW_IOVAS,
      IOMMU_IOAS_ALLOW_IOVAS_LAYOUT,
      function (w) {
        const r = this.#r
        const n = r.pick([0, 0, 1, 2, 3, 1000, 0xffff_ffff])
        const bytes = new Uint8Array(16 * Math.min(n, 3))
        const v = new DataView(bytes.buffer)
        for (let i = 0; i < Math.min(n, 3); i++) {
          const start = r.chance(0.8) ? MOCK_APERTURE_START * BigInt(1 + i * 8) : this.#iova(w)
          const len = r.chance(0.8) ? 1n << 28n : this.#length()
          v.setBigUint64(16 * i, start, true)
          v.setBigUint64(16 * i + 8, (start + len - 1n) & U64_MAX, true)
        }
        w.proc.write(w.scratch, bytes)
        return {
          size: 24,
          ioas_id: this.#someId(w, w.ioas),
          num_iovas: n,
          allowed_iovas: r.chance(0.9) ? BigInt(w.scratch) : this.#uptr(w),
        }
      },
      null,
    ],
    [
      'IOMMU_IOAS_MAP',
      IOMMU_IOAS_MAP,
      IOMMU_IOAS_MAP_LAYOUT,
      function (w) {
        const r = this.#r
        const buf = r.pick(w.bufs)
        const off = r.int(buf.size / FRAME_SIZE) * FRAME_SIZE
        const length = r.chance(0.75)
          ? BigInt((1 + r.int((buf.size - off) / FRAME_SIZE)) * FRAME_SIZE)
          : this.#length()
        const fixed = r.chance(0.5)
        const flags = r.chance(0.9) ? RW : r.pick([IOMMU_IOAS_MAP_READABLE, 0, 7, 8])
        return {
          size: 40,
          flags: fixed ? flags | IOMMU_IOAS_MAP_FIXED_IOVA : flags,
          ioas_id: this.#someId(w, w.ioas),
          user_va: r.chance(0.85) ? BigInt(buf.va + off) : this.#uptr(w),
          length,
          iova: fixed ? this.#iova(w) : 0n,
        }
      },
      function (w, a) {
        this.#addMap(w, a.ioas_id, a.iova, a.length)
      },
    ],
    [
      'IOMMU_IOAS_MAP_FILE',
      IOMMU_IOAS_MAP_FILE,
      IOMMU_IOAS_MAP_FILE_LAYOUT,
      function (w) {
        const r = this.#r
        const fixed = r.chance(0.5)
        return {
          size: 40,
          flags: fixed ? RW | IOMMU_IOAS_MAP_FIXED_IOVA : RW,
          ioas_id: this.#someId(w, w.ioas),
          fd: r.chance(0.8) ? w.memfdFd : r.pick([-1, 0, 1, 2, 99, w.fd.fd]),
          start: r.chance(0.8) ? BigInt(r.int(256)) * PAGE : this.#length(),
          length: r.chance(0.7) ? BigInt(1 + r.int(64)) * PAGE : this.#length(),
          iova: fixed ? this.#iova(w) : 0n,
        }
      },
      function (w, a) {
        this.#addMap(w, a.ioas_id, a.iova, a.length)
      },
    ],
    [
      'IOMMU_IOAS_COPY',
      IOMMU_IOAS_COPY,
      IOMMU_IOAS_COPY_LAYOUT,
      function (w) {
        const r = this.#r
        const src = w.maps.length ? r.pick(w.maps) : null
        const fixed = r.chance(0.5)
        return {
          size: 40,
          flags: fixed ? RW | IOMMU_IOAS_MAP_FIXED_IOVA : RW,
          dst_ioas_id: this.#someId(w, w.ioas),
          src_ioas_id: src?.ioas ?? this.#someId(w, w.ioas),
          length: src !== null && r.chance(0.7) ? src.length : this.#length(),
          dst_iova: fixed ? this.#iova(w) : 0n,
          src_iova: src?.iova ?? this.#iova(w),
        }
      },
      function (w, a) {
        this.#addMap(w, a.dst_ioas_id, a.dst_iova, a.length)
      },
    ],
    [
      'IOMMU_IOAS_UNMAP',
      IOMMU_IOAS_UNMAP,
      IOMMU_IOAS_UNMAP_LAYOUT,
      function (w) {
        const r = this.#r
        const map = w.maps.length ? r.pick(w.maps) : null
        if (map !== null && r.chance(0.6)) {
          return { size: 24, ioas_id: map.ioas, iova: map.iova, length: map.length }
        }
        if (r.chance(0.2))
          return { size: 24, ioas_id: this.#someId(w, w.ioas), iova: 0n, length: U64_MAX }
        return {
          size: 24,
          ioas_id: this.#someId(w, w.ioas),
          iova: this.#iova(w),
          length: this.#length(),
        }
      },
      null,
    ],
    [
      'IOMMU_OPTION',
      IOMMU_OPTION,
      IOMMU_OPTION_LAYOUT,
      function (w) {
        const r = this.#r
        return {
          size: 24,
          option_id: r.pick([0, 1, 2]),
          op: r.pick([0, 1, 2]),
          object_id: r.chance(0.5) ? 0 : this.#someId(w, w.ioas),
          val64: r.pick([0n, 1n, 2n, U64_MAX]),
        }
      },
      null,
    ],
    [
      'IOMMU_VFIO_IOAS',
      IOMMU_VFIO_IOAS,
      IOMMU_VFIO_IOAS_LAYOUT,
      function (w) {
        return { size: 16, ioas_id: this.#someId(w, w.ioas), op: this.#r.pick([0, 1, 2, 3]) }
      },
      null,
    ],
    [
      'IOMMU_HWPT_ALLOC',
      IOMMU_HWPT_ALLOC,
      IOMMU_HWPT_ALLOC_LAYOUT,
      function (w) {
        const r = this.#r
        const nested = r.chance(0.25)
        let dataLen = 0
        if (nested) {
          const b = new Uint8Array(8)
          new DataView(b.buffer).setUint32(0, r.pick([0, 1, 2, 0xbadbad]), true)
          w.proc.write(w.scratch, b)
          dataLen = r.pick([8, 4, 16])
        }
        return {
          size: 48,
          flags: r.weighted<number>([
            [4, 0],
            [4, IOMMU_HWPT_ALLOC_DIRTY_TRACKING],
            [2, IOMMU_HWPT_ALLOC_NEST_PARENT],
            [1, IOMMU_HWPT_ALLOC_PASID],
            [1, IOMMU_HWPT_FAULT_ID_VALID],
            [1, IOMMU_HWPT_ALLOC_NEST_PARENT | IOMMU_HWPT_ALLOC_DIRTY_TRACKING],
          ]),
          dev_id: this.#someId(w, w.devIds),
          pt_id: !nested
            ? this.#someId(w, w.ioas)
            : r.chance(0.5)
              ? this.#someId(w, w.viommus)
              : this.#someId(w, w.hwpts),
          data_type: nested ? IOMMU_HWPT_DATA_SELFTEST : 0,
          data_len: dataLen,
          data_uptr: nested ? BigInt(w.scratch) : 0n,
          fault_id: this.#someId(w, w.faults),
        }
      },
      function (w, a) {
        this.#addId(w, w.hwpts, a.out_hwpt_id)
      },
    ],
    [
      'IOMMU_GET_HW_INFO',
      IOMMU_GET_HW_INFO,
      IOMMU_HW_INFO_LAYOUT,
      function (w) {
        const r = this.#r
        return {
          size: r.pick([32, 40]),
          flags: r.pick([0, 0, 1]),
          dev_id: this.#someId(w, w.devIds),
          data_len: r.pick([0, 4, 16, 64, 4096]),
          data_uptr: r.chance(0.8) ? BigInt(w.scratch) : this.#uptr(w),
          in_data_type: r.pick([0, 0, 4, 0xfeedbeef]),
        }
      },
      null,
    ],
    [
      'IOMMU_HWPT_SET_DIRTY_TRACKING',
      IOMMU_HWPT_SET_DIRTY_TRACKING,
      IOMMU_HWPT_SET_DIRTY_TRACKING_LAYOUT,
      function (w) {
        return {
          size: 16,
          flags: this.#r.chance(0.7) ? IOMMU_HWPT_DIRTY_TRACKING_ENABLE : 0,
          hwpt_id: this.#someId(w, w.hwpts),
        }
      },
      function (w, a) {
        this.#trackingChanged(w, a)
      },
    ],
    [
      'IOMMU_HWPT_INVALIDATE',
      IOMMU_HWPT_INVALIDATE,
      IOMMU_HWPT_INVALIDATE_LAYOUT,
      function (w) {
        const r = this.#r
        const b = new Uint8Array(32)
        const v = new DataView(b.buffer)
        v.setUint32(0, r.pick([0, 1, 2]), true)
        v.setUint32(4, r.int(4), true)
        w.proc.write(w.scratch, b)
        return {
          size: 32,
          hwpt_id: this.#someId(w, w.hwpts),
          data_uptr: r.chance(0.8) ? BigInt(w.scratch) : this.#uptr(w),
          data_type: r.chance(0.8) ? IOMMU_HWPT_INVALIDATE_DATA_SELFTEST : r.int(4),
          entry_len: r.pick([8, 4, 16, 4097]),
          entry_num: r.pick([0, 1, 2, 1 << 20]),
        }
      },
      null,
    ],
    [
      'IOMMU_FAULT_QUEUE_ALLOC',
      IOMMU_FAULT_QUEUE_ALLOC,
      IOMMU_FAULT_ALLOC_LAYOUT,
      () => ({ size: 16, flags: 0 }),
      function (w, a) {
        this.#addId(w, w.faults, a.out_fault_id)
        this.#addFile(w, a.out_fault_fd)
      },
    ],
    [
      'IOMMU_VIOMMU_ALLOC',
      IOMMU_VIOMMU_ALLOC,
      IOMMU_VIOMMU_ALLOC_LAYOUT,
      function (w) {
        const r = this.#r
        return {
          size: 40,
          type: r.pick([IOMMU_VIOMMU_TYPE_SELFTEST, IOMMU_VIOMMU_TYPE_SELFTEST, 0, 1]),
          dev_id: this.#someId(w, w.devIds),
          hwpt_id: this.#someId(w, w.hwpts),
          data_len: r.pick([0, 0, 4, 8, 16]),
          data_uptr: r.chance(0.8) ? BigInt(w.scratch) : this.#uptr(w),
        }
      },
      function (w, a) {
        this.#addId(w, w.viommus, a.out_viommu_id)
      },
    ],
    [
      'IOMMU_VDEVICE_ALLOC',
      IOMMU_VDEVICE_ALLOC,
      IOMMU_VDEVICE_ALLOC_LAYOUT,
      function (w) {
        return {
          size: 24,
          viommu_id: this.#someId(w, w.viommus),
          dev_id: this.#someId(w, w.devIds),
          virt_id: BigInt(this.#r.int(8)),
        }
      },
      function (w, a) {
        this.#addId(w, w.ids, a.out_vdevice_id)
      },
    ],
    [
      'IOMMU_IOAS_CHANGE_PROCESS',
      IOMMU_IOAS_CHANGE_PROCESS,
      IOMMU_IOAS_CHANGE_PROCESS_LAYOUT,
      () => ({ size: 8 }),
      null,
    ],
    [
      'IOMMU_VEVENTQ_ALLOC',
      IOMMU_VEVENTQ_ALLOC,
      IOMMU_VEVENTQ_ALLOC_LAYOUT,
      function (w) {
        const r = this.#r
        return {
          size: 32,
          viommu_id: this.#someId(w, w.viommus),
          type: r.pick([IOMMU_VEVENTQ_TYPE_SELFTEST, IOMMU_VEVENTQ_TYPE_SELFTEST, 0, 1]),
          veventq_depth: r.pick([0, 1, 2, 16, 1 << 19, 0xffff_ffff]),
        }
      },
      function (w, a) {
        this.#addId(w, w.ids, a.out_veventq_id)
        this.#addFile(w, a.out_veventq_fd)
      },
    ],
    [
      'IOMMU_HW_QUEUE_ALLOC',
      IOMMU_HW_QUEUE_ALLOC,
      IOMMU_HW_QUEUE_ALLOC_LAYOUT,
      function (w) {
        const r = this.#r
        const map = w.maps.length ? r.pick(w.maps) : null
        return {
          size: 40,
          viommu_id: this.#someId(w, w.viommus),
          type: r.pick([IOMMU_HW_QUEUE_TYPE_SELFTEST, IOMMU_HW_QUEUE_TYPE_SELFTEST, 0]),
          index: r.int(3),
          nesting_parent_iova: map !== null && r.chance(0.7) ? map.iova : this.#iova(w),
          length: map !== null && r.chance(0.7) ? BigInt(PAGE) : this.#length(),
        }
      },
      function (w, a) {
        this.#addId(w, w.ids, a.out_hw_queue_id)
      },
    ],
    [
      'IOMMU_TEST_CMD',
      IOMMU_TEST_CMD,
      IOMMU_TEST_CMD_LAYOUT,
      Fuzzer.prototype.testCmd,
      Fuzzer.prototype.testCmdDone,
    ],
  ]

  /** An IOMMU_TEST_CMD with a plausible operation. */
  testCmd(this: Fuzzer, w: World): Record<string, unknown> {
    const r = this.#r
    const op = r.pick([
      IOMMU_TEST_OP_ADD_RESERVED,
      IOMMU_TEST_OP_MOCK_DOMAIN,
      IOMMU_TEST_OP_MOCK_DOMAIN,
      IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS,
      IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE,
      IOMMU_TEST_OP_MD_CHECK_MAP,
      IOMMU_TEST_OP_MD_CHECK_REFS,
      IOMMU_TEST_OP_CREATE_ACCESS,
      IOMMU_TEST_OP_DESTROY_ACCESS_PAGES,
      IOMMU_TEST_OP_ACCESS_PAGES,
      IOMMU_TEST_OP_ACCESS_PAGES,
      IOMMU_TEST_OP_ACCESS_RW,
      IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT,
      IOMMU_TEST_OP_ACCESS_REPLACE_IOAS,
      IOMMU_TEST_OP_DIRTY,
      IOMMU_TEST_OP_PASID_ATTACH,
      IOMMU_TEST_OP_PASID_REPLACE,
      IOMMU_TEST_OP_PASID_DETACH,
      IOMMU_TEST_OP_PASID_CHECK_HWPT,
      IOMMU_TEST_OP_TRIGGER_IOPF,
      IOMMU_TEST_OP_TRIGGER_VEVENT,
      r.int(40),
    ])
    const map = w.maps.length ? r.pick(w.maps) : null
    const iova = map !== null && r.chance(0.7) ? map.iova : this.#iova(w)
    const length = map !== null && r.chance(0.6) ? map.length : this.#length()
    const accessFd = w.accessFds.length && r.chance(0.9) ? r.pick(w.accessFds) : this.#u32(w)
    const a: Record<string, unknown> = { size: 72, op, id: 0 }
    switch (op) {
      case IOMMU_TEST_OP_ADD_RESERVED:
        a.id = this.#someId(w, w.ioas)
        a.add_reserved = { start: this.#iova(w), length: this.#length() }
        break
      case IOMMU_TEST_OP_MOCK_DOMAIN:
      case IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS:
        a.id = r.chance(0.7) ? this.#someId(w, w.ioas) : this.#someId(w, w.hwpts)
        a.mock_domain_flags = {
          dev_flags: r.pick([0, MOCK_FLAGS_DEVICE_NO_DIRTY, MOCK_FLAGS_DEVICE_PASID, 2]),
        }
        break
      case IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE:
        a.id = this.#someId(w, w.stdevs)
        a.mock_domain_replace = {
          pt_id: r.chance(0.5) ? this.#someId(w, w.ioas) : this.#someId(w, w.hwpts),
        }
        break
      case IOMMU_TEST_OP_MD_CHECK_MAP:
        a.id = this.#someId(w, w.hwpts)
        a.check_map = { iova, length, uptr: this.#uptr(w) }
        break
      case IOMMU_TEST_OP_MD_CHECK_REFS:
        a.check_refs = { length, uptr: this.#uptr(w), refs: r.int(3) }
        break
      case IOMMU_TEST_OP_CREATE_ACCESS:
        a.id = this.#someId(w, w.ioas)
        a.create_access = {
          flags: r.chance(0.8) ? MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES : r.int(4),
        }
        break
      case IOMMU_TEST_OP_DESTROY_ACCESS_PAGES: {
        const it = w.accessItems.length ? r.pick(w.accessItems) : null
        a.id = it?.fd ?? accessFd
        a.destroy_access_pages = { access_pages_id: it?.id ?? r.int(4) }
        break
      }
      case IOMMU_TEST_OP_ACCESS_PAGES:
        a.id = accessFd
        a.access_pages = {
          flags: r.int(2),
          iova,
          length: r.chance(0.7) ? BigInt(1 + r.int(16)) * PAGE : length,
          uptr: r.chance(0.5) ? 0n : this.#uptr(w),
        }
        break
      case IOMMU_TEST_OP_ACCESS_RW:
        a.id = accessFd
        a.access_rw = {
          iova: iova + BigInt(r.int(3000)),
          length: r.chance(0.8) ? BigInt(1 + r.int(9000)) : length,
          uptr: r.chance(0.8) ? BigInt(w.scratch) : this.#uptr(w),
          flags: r.int(8),
        }
        break
      case IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT:
        a.memory_limit = { limit: r.pick([0, 11, 12, 4096, 65536]) }
        break
      case IOMMU_TEST_OP_ACCESS_REPLACE_IOAS:
        a.id = accessFd
        a.access_replace_ioas = { ioas_id: this.#someId(w, w.ioas) }
        break
      case IOMMU_TEST_OP_DIRTY: {
        const bits = new Uint8Array(64)
        for (let i = 0; i < bits.length; i++) bits[i] = r.u32() & 0xff
        w.proc.write(w.scratch, bits)
        a.id = this.#someId(w, w.hwpts)
        a.dirty = {
          iova,
          length: r.chance(0.7) ? 512n * 2048n : length,
          page_size: r.pick([2048n, PAGE, 0n, 3n]),
          uptr: r.chance(0.9) ? BigInt(w.scratch) : this.#uptr(w),
        }
        break
      }
      case IOMMU_TEST_OP_PASID_ATTACH:
      case IOMMU_TEST_OP_PASID_REPLACE:
        a.id = this.#someId(w, w.stdevs)
        a.pasid_attach = {
          pasid: r.pick([0, 1, 2, 1024, 1 << 20, 0xffff_ffff]),
          pt_id: r.chance(0.5) ? this.#someId(w, w.ioas) : this.#someId(w, w.hwpts),
        }
        break
      case IOMMU_TEST_OP_TRIGGER_IOPF:
        a.trigger_iopf = {
          dev_id: this.#someId(w, w.devIds),
          pasid: r.pick([0, 1, 2]),
          grpid: r.int(4),
          perm: r.int(8),
          addr: iova,
        }
        break
      case IOMMU_TEST_OP_TRIGGER_VEVENT:
        a.trigger_vevent = { dev_id: this.#someId(w, w.devIds) }
        break
      case IOMMU_TEST_OP_PASID_DETACH:
        a.id = this.#someId(w, w.stdevs)
        a.pasid_detach = { pasid: r.pick([0, 1, 2, 1024]) }
        break
      case IOMMU_TEST_OP_PASID_CHECK_HWPT:
        a.id = this.#someId(w, w.stdevs)
        a.pasid_check = { pasid: r.pick([0, 1, 2]), hwpt_id: this.#someId(w, w.hwpts) }
        break
      default:
        a.id = this.#u32(w)
    }
    return a
  }

  /** Harvest the ids a successful test command handed out. */
  testCmdDone(this: Fuzzer, w: World, a: Record<string, unknown>): void {
    const m = (name: string) => (a[name] ?? {}) as Record<string, unknown>
    switch (a.op) {
      case IOMMU_TEST_OP_MOCK_DOMAIN:
      case IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS: {
        const md = m('mock_domain')
        this.#addId(w, w.stdevs, md.out_stdev_id)
        this.#addId(w, w.hwpts, md.out_hwpt_id)
        this.#addId(w, w.devIds, md.out_idev_id)
        break
      }
      case IOMMU_TEST_OP_CREATE_ACCESS:
        {
          // A size that cuts the output leaves the caller's value: only take a real new fd.
          const fd = m('create_access').out_access_fd
          if (typeof fd === 'number' && fd !== w.fd.fd && fd !== w.memfdFd) w.accessFds.push(fd)
        }
        break
      case IOMMU_TEST_OP_ACCESS_PAGES: {
        const id = m('access_pages').out_access_pages_id
        if (typeof id === 'number' && typeof a.id === 'number') w.accessItems.push({ fd: a.id, id })
        break
      }
    }
  }

  #addId(w: World, list: number[], id: unknown): void {
    if (typeof id !== 'number' || id === 0) return
    list.push(id)
    w.ids.push(id)
    if (list.length > 64) list.shift()
    if (w.ids.length > 128) w.ids.shift()
  }

  #addFile(w: World, fd: unknown): void {
    // A size that cuts the output leaves the caller's value: take only a new event file.
    if (typeof fd !== 'number' || fd === w.fd.fd || fd === w.memfdFd) return
    if (!w.eventFds.includes(fd)) w.eventFds.push(fd)
  }

  #someId(w: World, list: readonly number[]): number {
    if (list.length && this.#r.chance(0.85)) return this.#r.pick(list)
    return this.#u32(w)
  }

  #addMap(w: World, ioas: unknown, iova: unknown, length: unknown): void {
    if (typeof ioas !== 'number' || typeof iova !== 'bigint' || typeof length !== 'bigint') return
    w.maps.push({ ioas, iova, length })
    if (w.maps.length > 64) w.maps.shift()
  }

  /** The paging HWPT object behind an id, if that is what it is. */
  #hwptPaging(w: World, id: unknown): HwptPaging | null {
    if (typeof id !== 'number') return null
    try {
      const o = w.fd.ctx.objects.get(id, ObjType.ANY)
      return o instanceof HwptPaging ? o : null
    } catch {
      return null
    }
  }

  #record(w: World, hwpt: HwptPaging): DirtyRecord {
    let rec = w.dirty.get(hwpt)
    if (rec === undefined) {
      rec = { tracking: false, written: new Map() }
      w.dirty.set(hwpt, rec)
    }
    return rec
  }

  /** SET_DIRTY_TRACKING succeeded: enabling starts from clean IOPTEs, disabling stops. */
  #trackingChanged(w: World, a: Record<string, unknown>): void {
    const hwpt = this.#hwptPaging(w, a.hwpt_id ?? 0)
    // A field the caller left out reads as zero, as in a C designated initializer.
    const flags = a.flags ?? 0
    if (hwpt === null || typeof flags !== 'number') return
    const rec = this.#record(w, hwpt)
    rec.tracking = (flags & IOMMU_HWPT_DIRTY_TRACKING_ENABLE) !== 0
    rec.written.clear()
  }

  // ---------------------------------------------------------------- raw and unknown ioctls

  /** An ioctl whose argument is a user address of the struct's bytes. */
  #rawIoctl(w: World): void {
    const r = this.#r
    const [name, cmd, layout, build, after] = r.pick(this.#generators)
    const arg = build.call(this, w)
    if (r.chance(0.3)) this.#mutate(w, layout, arg)
    const size = typeof arg.size === 'number' ? arg.size >>> 0 : layout.sizeof
    const bytes = new Uint8Array(Math.min(Math.max(layout.sizeof, 4), SCRATCH_BYTES / 2))
    const view = new DataView(bytes.buffer)
    for (const f of layout.fields) {
      const v = arg[f.name]
      try {
        if (f.off + f.bytes <= bytes.length) writeField(view, f, v ?? (f.kind === 'u64' ? 0n : 0))
      } catch {
        // a junk value: leave random bytes there
        for (let i = 0; i < f.bytes; i++) bytes[f.off + i] = r.u32() & 0xff
      }
    }
    view.setUint32(0, size, true)
    const at = w.scratch + SCRATCH_BYTES / 2
    w.proc.write(at, bytes)
    // Sometimes junk past the kernel struct, sometimes an address near the end of memory.
    if (r.chance(0.2)) w.proc.write(at + layout.sizeof, new Uint8Array([0, 0, r.int(2)]))
    const addr = r.weighted<() => unknown>([
      [8, () => BigInt(at)],
      [2, () => at],
      [1, () => BigInt(w.scratch + SCRATCH_BYTES - 4)],
      [1, () => this.#uptr(w)],
      [1, () => r.pick([0, 1.5, -1, Number.NaN, 2 ** 60, null, undefined])],
    ])()
    const direct = addr === at || addr === BigInt(at)
    if (!this.#issue(w, cmd, addr, `${name}@mem`) || after === null || !direct) return
    // What the kernel saw (zeros past `size`) and wrote back: keep the state in step.
    const back = w.proc.read(at, layout.sizeof)
    back.fill(0, Math.min(size, layout.sizeof))
    back.set(w.proc.read(at, Math.min(size, layout.sizeof)))
    after.call(this, w, bytesToObject(layout, back), true)
  }

  #unknownIoctl(w: World): void {
    const r = this.#r
    const cmd = r.pick([0, 0x3b7f, 0x3b95, 0x3b9f, 0x3ba1, 0x3c85, 0x1_3b85, -1, r.u32()])
    this.#issue(w, cmd, r.chance(0.5) ? { size: 8 } : this.#junk(), `unknown command`)
  }

  // ---------------------------------------------------------------- DMA and the oracle

  #dma(w: World): void {
    const r = this.#r
    // A device in an identity domain reaches all of physical memory, page tables included,
    // as on real hardware: DMA at random addresses from it corrupts the kernel, not the
    // model. Devices in blocked or paging domains only.
    const devs = w.m.devices.filter(
      (d) => w.m.iommu.iommuGetDomainForDev(d)?.type !== DomainType.IDENTITY,
    )
    if (devs.length === 0) return
    // Mostly a device attached to a paging HWPT, at an IOVA its IOAS maps.
    const attached = devs.filter(
      (d) => w.m.iommu.iommuGetDomainForDev(d)?.cookie instanceof HwptPaging,
    )
    const dev = attached.length && r.chance(0.85) ? r.pick(attached) : r.pick(devs)
    const hwpt = w.m.iommu.iommuGetDomainForDev(dev)?.cookie
    const areas = hwpt instanceof HwptPaging ? hwpt.ioas.iopt.areas : []
    let iova: bigint
    if (areas.length && r.chance(0.9)) {
      const a = r.pick(areas)
      const span = a.length > 1n << 24n ? 1n << 24n : a.length
      iova = a.iova + BigInt(r.int(Number(span)))
    } else {
      iova = this.#iova(w)
    }
    iova &= U64_MAX
    const len = 1 + r.int(r.chance(0.8) ? 256 : 16384)
    const write = r.chance(0.7)
    this.#what = `dma ${write ? 'write' : 'read'} ${dev.name} 0x${iova.toString(16)} +${len}`
    const data = new Uint8Array(len)
    data[0] = 1 + r.int(255)
    const stale = this.#target.staleUses?.(w.m) ?? []
    const staleBefore = stale.length
    try {
      if (write) {
        dev.dma.write(iova, data)
        this.report.dmaWrites++
        let staleWrite = false
        for (let i = staleBefore; i < stale.length; i++) {
          if (stale[i]?.write) staleWrite = true
        }
        this.#recordWrite(w, dev, iova, len, staleWrite)
      } else {
        dev.dma.read(iova, len)
      }
    } catch (e) {
      this.#classify(e, false, w.index)
    } finally {
      this.report.dirty.staleUses += stale.length - staleBefore
    }
  }

  /**
   * The oracle: remember which units a device wrote through a tracking HWPT, after checking
   * that the IOMMU logged them: each one's IOPTE is dirty now (a read-only look through
   * the domain's `dirtyOps`). A unit left clean is lost for good: explained when the
   * hardware detector saw a write through a stale translation during this DMA
   * (`staleWrite`), else a finding.
   */
  #recordWrite(w: World, dev: PciDevice, iova: bigint, len: number, staleWrite: boolean): void {
    const domain: IommuDomain | null = w.m.iommu.iommuGetDomainForDev(dev)
    const hwpt = domain?.cookie
    if (domain === null || !(hwpt instanceof HwptPaging)) return
    const rec = w.dirty.get(hwpt)
    if (rec === undefined || !rec.tracking) return
    const last = iova + BigInt(len) - 1n
    const logged = dirtyUnits(domain, iova, last)
    for (let u = iova >> UNIT_SHIFT; u <= last >> UNIT_SHIFT; u++) {
      const area = hwpt.ioas.iopt.areaIterFirst(u << UNIT_SHIFT, u << UNIT_SHIFT)
      if (area === null) continue
      if (logged !== null && !logged.has(u << UNIT_SHIFT)) {
        // Not expected from any read: reported here, once.
        if (staleWrite) this.report.dirty.unlogged++
        else {
          this.#problem(
            'dirty-false-negative',
            w.index,
            `HWPT ${hwpt.id}: the DMA wrote IOVA 0x${(u << UNIT_SHIFT).toString(16)} but its ` +
              'IOPTE is not dirty, and the hardware reported no stale translation',
          )
        }
        continue
      }
      rec.written.set(Number(u), area)
    }
  }

  /**
   * A GET_DIRTY_BITMAP, well-formed most of the time, then the oracle's check of what it
   * returned.
   */
  #dirtyRead(w: World): void {
    const r = this.#r
    const hwptId = this.#someId(w, w.hwpts)
    const hwpt = this.#hwptPaging(w, hwptId)
    const iopt = hwpt?.ioas.iopt
    const areas = iopt?.areas ?? []
    let iova: bigint
    let length: bigint
    if (areas.length && r.chance(0.85)) {
      const i = r.int(areas.length)
      const j = Math.min(areas.length - 1, i + r.int(3))
      iova = (areas[i] as IoptArea).iova
      length = (areas[j] as IoptArea).last + 1n - iova
    } else {
      iova = this.#iova(w)
      length = this.#length()
    }
    const align = BigInt(iopt?.iovaAlignment ?? FRAME_SIZE)
    iova -= iova % align
    length += align - 1n
    length -= length % align
    let pageSize = r.pick([align, PAGE, PAGE, 2n << 20n])
    if (iova % pageSize || length % pageSize) pageSize = align
    const bytes = (length / pageSize + 7n) / 8n
    const good = bytes <= BigInt(BITMAP_BYTES) && r.chance(0.9)
    const data = good ? BigInt(w.bitmap + r.int(8) * 8) : this.#uptr(w)
    const flags = r.chance(0.2) ? IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR : 0
    const arg: Record<string, unknown> = {
      size: 48,
      hwpt_id: hwptId,
      flags,
      iova,
      length,
      page_size: pageSize,
      data,
    }
    const mutated = r.chance(0.15)
    if (mutated) this.#mutate(w, IOMMU_HWPT_GET_DIRTY_BITMAP_LAYOUT, arg)
    w.proc.write(w.bitmap, new Uint8Array(BITMAP_BYTES))
    const covered =
      iopt !== undefined &&
      length > 0n &&
      iopt.forEachContigArea(iova, iova + length - 1n, () => {})
    // Why a read is not well-formed, for the report; '' when it is.
    const shape = mutated
      ? 'mutated arguments'
      : !good
        ? 'a bitmap outside the buffer'
        : !covered
          ? 'a range with a gap'
          : ''
    const mark = w.m.dirtyHazards.entries.length
    const ok = this.#issue(w, IOMMU_HWPT_GET_DIRTY_BITMAP, arg, 'IOMMU_HWPT_GET_DIRTY_BITMAP')
    // A failure after the walk began (EDEADLK: the kernel would never return) may have
    // cleaned and reported part of the range; every other failure comes before it.
    if (!ok && this.#lastErrno !== 'EDEADLK') return
    const view = kernelView(IOMMU_HWPT_GET_DIRTY_BITMAP_LAYOUT, arg)
    const target = this.#hwptPaging(w, view.hwpt_id)
    if (target === null) return
    this.#checkDirty(w, target, view, shape, mark, ok)
  }

  /**
   * The oracle's check of one GET_DIRTY_BITMAP (`a` as the kernel saw it). Each written
   * unit in the range is set in the bitmap, or the hazard entries the read added (from
   * index `mark` of `machine.dirtyHazards`) list it as lost (cleaned, never reported: not
   * expected again) or missed (still dirty: expected from a later read); any other miss is
   * a finding. A clearing read may also lose written units outside its range (a dirty
   * IOPTE cleaned whole): the hazard log lists those too. A read that failed midway
   * (`ok` false) settles what its bitmap shows and what it lost, and finds nothing: the
   * units it did not reach are still dirty.
   */
  #checkDirty(
    w: World,
    hwpt: HwptPaging,
    a: Record<string, unknown>,
    shape: string,
    mark: number,
    ok: boolean,
  ): void {
    const wellFormed = shape === ''
    const { iova = 0n, length = 0n, page_size: ps = 0n, data = 0n, flags = 0 } = a
    if (
      typeof iova !== 'bigint' ||
      typeof length !== 'bigint' ||
      typeof ps !== 'bigint' ||
      typeof data !== 'bigint' ||
      typeof flags !== 'number' ||
      ps === 0n
    ) {
      return
    }
    const d = this.report.dirty
    if (ok) {
      d.reads++
      if (wellFormed) d.wellFormedReads++
    }
    const rec = w.dirty.get(hwpt)
    if (rec === undefined) return
    const clear = (flags & IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR) === 0
    const last = iova + ((length - 1n) & U64_MAX)
    const pgshift = lowBitShift(ps)
    const hazards = w.m.dirtyHazards
    const areas = new Set(hwpt.ioas.iopt.areas)
    const count = (by: Record<string, number>, kind: string) => {
      by[kind] = (by[kind] ?? 0) + 1
    }
    for (const [u, area] of rec.written) {
      const at = BigInt(u) << UNIT_SHIFT
      // Dirt goes with its IOPTE: an area unmapped since the write owes nothing.
      if (!areas.has(area) || area.pages === null) {
        rec.written.delete(u)
        continue
      }
      const inside = at >= iova && at <= last
      if (inside && ok) d.expected++
      if (inside && bitSet(w.proc, data, (at >> pgshift) - (iova >> pgshift))) {
        if (clear) rec.written.delete(u)
        continue
      }
      const why = unreportedBy(hazards, at, mark)
      if (why?.lost) {
        d.lost++
        count(d.lostByKind, why.kind)
        rec.written.delete(u)
        continue
      }
      if (!inside || !ok) continue
      if (why !== null) {
        d.missed++
        count(d.missedByKind, why.kind)
        continue
      }
      d.falseNegatives++
      if (wellFormed) d.falseNegativesWellFormed++
      this.#problem(
        'dirty-false-negative',
        w.index,
        `${wellFormed ? 'well-formed read' : `read (with ${shape})`} of HWPT ${hwpt.id}: IOVA ` +
          `0x${at.toString(16)} was written by DMA, is not in the bitmap, and the dirty ` +
          'hazard log does not list it',
      )
      // Reported once: the next read starts from what this one cleaned.
      if (clear) rec.written.delete(u)
    }
  }

  // ---------------------------------------------------------------- devices, address space

  #deviceOp(w: World): void {
    const r = this.#r
    const idev = w.idevs.length ? r.pick(w.idevs) : null
    const pt = () => (r.chance(0.5) ? this.#someId(w, w.ioas) : this.#someId(w, w.hwpts))
    const pasid = r.chance(0.8) ? 0 : r.pick([1, 2, 1 << 19, 1 << 20])
    r.weighted<() => void>([
      [
        3,
        () => {
          const dev = w.devices.length ? r.pick(w.devices) : null
          if (dev === null) return
          const bound = this.#guard(`bind ${dev.name}`, () => w.fd.bindDevice(dev), w.index, w)
          if (bound !== undefined) {
            w.idevs.push(bound)
            this.#addId(w, w.devIds, bound.id)
          }
        },
      ],
      [4, () => idev && this.#guard('attach', () => idev.attach(pt(), pasid), w.index, w)],
      [3, () => idev && this.#guard('replace', () => idev.replace(pt(), pasid), w.index, w)],
      [2, () => idev && this.#guard('detach', () => idev.detach(pasid), w.index, w)],
      [
        1,
        () => {
          if (idev === null) return
          // Unbinding cannot fail; the device is gone from the context either way.
          this.#guard('unbind', () => idev.unbind(), w.index)
          w.idevs.splice(w.idevs.indexOf(idev), 1)
        },
      ],
      [
        1,
        () => {
          const fd = w.accessFds.length ? r.pick(w.accessFds) : null
          if (fd === null) return
          this.#guard('close access fd', () => fdClose(w.proc, fd), w.index)
          w.accessFds.splice(w.accessFds.indexOf(fd), 1)
        },
      ],
    ])()
  }

  /** read/write/poll on fault-queue and vEVENTQ fds; mmap of a vIOMMU's MMIO and munmap. */
  #fileOp(w: World): void {
    const r = this.#r
    const fd = w.eventFds.length && r.chance(0.9) ? r.pick(w.eventFds) : r.pick([0, 3, 99])
    const buf = r.chance(0.85) ? BigInt(w.scratch) : this.#uptr(w)
    const count = r.pick([0, 1, 8, 16, 40, 48, 80, 4096, 2 ** 31])
    const pos = r.chance(0.9) ? 0 : r.pick([1, 40, -1])
    r.weighted<() => void>([
      [
        3,
        () =>
          this.#guard(`read ${fd} ${count}`, () => fdRead(w.proc, fd, buf, count, pos), w.index, w),
      ],
      [
        2,
        () =>
          this.#guard(
            `write ${fd} ${count}`,
            () => fdWrite(w.proc, fd, buf, count, pos),
            w.index,
            w,
          ),
      ],
      [1, () => this.#guard(`poll ${fd}`, () => fdPoll(w.proc, fd), w.index, w)],
      [
        2,
        () => {
          const length = r.pick([FRAME_SIZE, FRAME_SIZE, 2 * FRAME_SIZE, 0, 100])
          const offset = BigInt(r.pick([0, 1, 2, 3, 16]) * FRAME_SIZE) + (r.chance(0.1) ? 1n : 0n)
          const va = this.#guard(
            `mmap ${offset} ${length}`,
            () =>
              w.fd.mmap(
                null,
                length,
                PROT_READ | PROT_WRITE,
                r.chance(0.9) ? MAP_SHARED : 0,
                offset,
              ),
            w.index,
            w,
          )
          if (va !== undefined) w.mmaps.push({ va, length })
        },
      ],
      [
        1,
        () => {
          const m = w.mmaps.pop()
          if (m !== undefined) this.#guard('munmap', () => w.proc.munmap(m.va, m.length), w.index)
        },
      ],
    ])()
  }

  /** Change the address space under pinned memory: unmap and remap part of a buffer. */
  #addressSpaceOp(w: World): void {
    const r = this.#r
    const buf = r.pick(w.bufs.slice(0, 3))
    const pages = 1 + r.int(16)
    const off = r.int(buf.size / FRAME_SIZE - pages) * FRAME_SIZE
    this.#guard(
      'munmap+mmap',
      () => {
        w.proc.munmap(buf.va + off, pages * FRAME_SIZE)
        w.proc.mmap(pages * FRAME_SIZE, { addr: buf.va + off })
      },
      w.index,
    )
  }
}

/**
 * Frames that must all come back when a world is closed: every frame but the hardware
 * structures a driver may allocate on first use and keep for the unit's lifetime, as the
 * kernel does (VT-d context tables of a bus, for one).
 */
function framesOwned(m: Machine): number {
  const s = m.memory.frameStats()
  return s.allocated - s.byPurpose.iommuHw
}

/**
 * The argument as the kernel saw it, for a call that returned 0: every field converted as
 * C converts what the caller gave (a number for a u64, a bigint for a u32), fields past
 * `size` zero, and the outputs the call wrote back.
 */
function kernelView(
  layout: StructLayout<unknown>,
  arg: Record<string, unknown>,
): Record<string, unknown> {
  try {
    const size = cInt('u32', arg.size ?? 0) as number
    return parseStruct(layout, arg, size) as Record<string, unknown>
  } catch {
    return arg
  }
}

function deepFreeze(o: object): void {
  if (ArrayBuffer.isView(o)) return
  for (const v of Object.values(o)) if (typeof v === 'object' && v !== null) deepFreeze(v)
  Object.freeze(o)
}

/** `ffs(x) - 1` of a non-zero u64. */
function lowBitShift(x: bigint): bigint {
  let s = 0n
  while (((x >> s) & 1n) === 0n) s++
  return s
}

/** Whether bit `bit` of the user bitmap at `data` is set (unreadable reads as clear). */
function bitSet(proc: Process, data: bigint, bit: bigint): boolean {
  try {
    const b = proc.read(data + bit / 8n, 1)[0] as number
    return (b & (1 << Number(bit % 8n))) !== 0
  } catch {
    return false
  }
}

/**
 * THE ONE PLACE where the dirty oracle asks the dirty-tracking hazard detector: whether
 * the read that added entries from index `since` of `log` left the written unit at `at`
 * out, and how: `lost` (its IOPTE was cleaned, the dirt is gone) or not (`'missed'`: still
 * dirty, a later read reports it), with the hazard kind; null when no entry lists it.
 */
function unreportedBy(
  log: DirtyHazardLog,
  at: bigint,
  since: number,
): { readonly lost: boolean; readonly kind: DirtyHazardKind } | null {
  let missed: DirtyHazardKind | null = null
  for (let i = since; i < log.entries.length; i++) {
    const h = log.entries[i] as DirtyHazard
    if (h.lost.has(at)) return { lost: true, kind: h.kind }
    if (missed === null && h.missed.has(at)) missed = h.kind
  }
  return missed === null ? null : { lost: false, kind: missed }
}

/**
 * The 2 KiB units of `[iova, last]` whose IOPTE is dirty now, by a read-only look through
 * the domain's `dirtyOps` (ideal records: each dirty IOPTE ∩ the range), or null when the
 * driver refused the look.
 */
function dirtyUnits(domain: IommuDomain, iova: bigint, last: bigint): IovaRangeList | null {
  const ops = domain.dirtyOps
  if (ops === null) return null
  // Walks are asked for whole IO pages, as the kernel asks (areas are aligned to them).
  const pgsize = domain.pgsizeBitmap & -domain.pgsizeBitmap
  if (pgsize === 0n) return null
  const start = iova - (iova % pgsize)
  const end = last - (last % pgsize) + pgsize
  const units = new IovaRangeList()
  const sink = {
    set(pfn: number, count: number, shift: number) {
      const scale = 2 ** (shift - Number(UNIT_SHIFT))
      units.add(pfn * scale, (pfn + count) * scale)
    },
  }
  try {
    ops.readAndClearDirty(
      domain,
      start,
      end - start,
      IOMMU_DIRTY_NO_CLEAR,
      new IommuDirtyBitmap(sink, null, { mode: 'ideal' }),
    )
  } catch {
    return null
  }
  return units
}

/** A short printable form of an ioctl argument (bigint as hex). */
function describe(arg: unknown): string {
  try {
    return JSON.stringify(arg, (_k, v) => {
      if (typeof v === 'bigint') return `0x${v.toString(16)}n`
      if (typeof v === 'symbol') return v.toString()
      if (typeof v === 'number' && !Number.isFinite(v)) return String(v)
      if (v instanceof Uint8Array) return `Uint8Array(${v.length})`
      return v
    })
  } catch {
    return String(arg)
  }
}

/**
 * A live machine built from a scenario: the vendor's IOMMU unit, the devices bound to an
 * iommufd context the way VFIO cdev binds them, the VMM's guest RAM, and a log of every
 * call with its arguments, its outputs and its errno. Commands are real uAPI calls through
 * `@iommu/iommufd` and real DMA through the device's engine; nothing is simulated here.
 *
 * Replaying the same scenario gives the same machine, the same object IDs and the same
 * log, which is what makes a permalink reproducible.
 *
 * @module
 */

import {
  createMachine,
  DmaFault,
  type IommuDomain,
  isIommuError,
  type Machine,
  type PciDevice,
  type Process,
} from '@iommu/core'
import {
  type HwptPaging,
  IOMMU_DESTROY,
  IOMMU_GET_HW_INFO,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_DIRTY_TRACKING_ENABLE,
  IOMMU_HWPT_GET_DIRTY_BITMAP,
  IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR,
  IOMMU_HWPT_SET_DIRTY_TRACKING,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_IOAS_UNMAP,
  IOMMU_OPTION,
  IOMMU_OPTION_HUGE_PAGES,
  IOMMU_OPTION_OP_SET,
  IOMMU_VDEVICE_ALLOC,
  IOMMU_VIOMMU_ALLOC,
  IOMMU_VIOMMU_TYPE_DEFAULT,
  type Iommufd,
  type IommufdDevice,
  ObjType,
  openIommufd,
  UAPI_STRUCTS,
} from '@iommu/iommufd'
import { IOMMU_VIOMMU_TYPE_ARM_SMMUV3, IOMMU_VIOMMU_TYPE_SELFTEST } from '@iommu/iommufd/uapi'
import { hex } from '../decode/bitfield.ts'
import { vendorById } from '../vendors/index.ts'
import {
  type DetectorReport,
  type MappedRange,
  type VendorContext,
  type VendorDescriptor,
  type VendorOptions,
  vendorOptions,
} from '../vendors/types.ts'
import { dirtyHazardReport } from './hazards.ts'
import type { Command, ExplorerState, MachineSpec, ViommuType } from './scenario.ts'

const PAGE = 4096
const MIB = 1024 * 1024

/** The uAPI name and number of each command the panel issues. */
const IOCTL_NAMES: Readonly<Record<number, string>> = {
  [IOMMU_IOAS_ALLOC]: 'IOMMU_IOAS_ALLOC',
  [IOMMU_IOAS_MAP]: 'IOMMU_IOAS_MAP',
  [IOMMU_IOAS_UNMAP]: 'IOMMU_IOAS_UNMAP',
  [IOMMU_OPTION]: 'IOMMU_OPTION',
  [IOMMU_HWPT_ALLOC]: 'IOMMU_HWPT_ALLOC',
  [IOMMU_HWPT_SET_DIRTY_TRACKING]: 'IOMMU_HWPT_SET_DIRTY_TRACKING',
  [IOMMU_HWPT_GET_DIRTY_BITMAP]: 'IOMMU_HWPT_GET_DIRTY_BITMAP',
  [IOMMU_GET_HW_INFO]: 'IOMMU_GET_HW_INFO',
  [IOMMU_DESTROY]: 'IOMMU_DESTROY',
  [IOMMU_VIOMMU_ALLOC]: 'IOMMU_VIOMMU_ALLOC',
  [IOMMU_VDEVICE_ALLOC]: 'IOMMU_VDEVICE_ALLOC',
}

/** `IOMMU_VIOMMU_TYPE_*` of the panel's type names. */
const VIOMMU_TYPE: Readonly<Record<ViommuType, number>> = {
  default: IOMMU_VIOMMU_TYPE_DEFAULT,
  'arm-smmuv3': IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
  selftest: IOMMU_VIOMMU_TYPE_SELFTEST,
}

/** An error a call returned. */
export interface CallError {
  /** `EINVAL`, or for a DMA the fault reason. */
  readonly code: string
  /** Negative errno (0 for a DMA fault). */
  readonly errno: number
  readonly message: string
}

/** One line of the call log. */
export interface LogEntry {
  /** Position in the log (setup entries included). */
  readonly seq: number
  /** Index of the scenario command, or -1 for setup (machine build, bind). */
  readonly command: number
  /** What was called: `IOMMU_IOAS_MAP`, `VFIO_DEVICE_ATTACH_IOMMUFD_PT`, `DMA write`. */
  readonly call: string
  /** The ioctl number, for ioctls. */
  readonly nr: number | null
  /** The kernel struct, for ioctls (`iommu_ioas_map`). */
  readonly struct: string | null
  /** Arguments as shown (name, value), in struct order, after the call. */
  readonly args: readonly (readonly [string, string])[]
  /** Names of the fields the kernel wrote back. */
  readonly outputs: readonly string[]
  /** What came back, in words. */
  readonly result: string
  readonly error: CallError | null
}

/** A HWPT the session knows of. */
export interface HwptInfo {
  readonly id: number
  /** The device index it was allocated for or attached through. */
  readonly dev: number
  /** The IOAS it maps. */
  readonly ioas: number
  /** Allocated by an attach to an IOAS (destroyed with its last attachment). */
  readonly auto: boolean
  readonly flags: number
}

/** A device of the session. */
export interface SessionDevice {
  readonly name: string
  readonly dev: PciDevice
  readonly idev: IommufdDevice
  /** The pt_id it is attached to, or null. */
  pt: number | null
  /** The HWPT the attach resolved to, or null. */
  hwpt: number | null
}

function fmtFlags(v: number, names: readonly (readonly [number, string])[]): string {
  if (v === 0) return '0'
  const on = names.filter(([m]) => (v & m) !== 0).map(([, n]) => n)
  const rest = names.reduce((acc, [m]) => acc & ~m, v)
  if (rest) on.push(hex(rest))
  return on.join(' | ')
}

function sizeofStruct(name: string): number {
  const s = UAPI_STRUCTS[name]
  if (s === undefined) throw new Error(`no uAPI struct ${name}`)
  return s.sizeof
}

/** Runs of set bits in a bitmap, as IOVA ranges. */
function bitmapRanges(bytes: Uint8Array, iova: bigint, pages: number): [bigint, number][] {
  const out: [bigint, number][] = []
  let start = -1
  for (let p = 0; p <= pages; p++) {
    const set = p < pages && ((bytes[p >> 3] as number) >> (p & 7)) & 1
    if (set && start < 0) start = p
    if (!set && start >= 0) {
      out.push([iova + BigInt(start * PAGE), p - start])
      start = -1
    }
  }
  return out
}

/** Describe IOVA runs: `3 pages: 0x1000 (1), 0x5000..0x6fff (2)`. */
export function describeRanges(ranges: readonly (readonly [bigint, number])[]): string {
  const pages = ranges.reduce((n, [, c]) => n + c, 0)
  if (pages === 0) return 'no dirty pages'
  const shown = ranges
    .slice(0, 8)
    .map(([s, c]) => (c === 1 ? hex(s) : `${hex(s)}..${hex(s + BigInt(c * PAGE) - 1n)}`))
  return `${pages} dirty page${pages === 1 ? '' : 's'}: ${shown.join(', ')}${ranges.length > 8 ? ', …' : ''}`
}

/** The bytes a `DMA_WRITE` command writes: a pattern from the seed and the command index. */
export function dmaPattern(seed: number, command: number, length: number): Uint8Array {
  const out = new Uint8Array(length)
  let x = (seed * 0x9e37_79b1 + command * 0x85eb_ca6b + 1) >>> 0
  for (let i = 0; i < length; i++) {
    // xorshift32: deterministic bytes, different per command.
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    out[i] = x & 0xff
  }
  return out
}

/** A machine built from a scenario, and the log of everything done to it. */
export class Session {
  readonly vendor: VendorDescriptor
  readonly options: VendorOptions
  readonly spec: MachineSpec
  readonly seed: number
  readonly machine: Machine
  readonly vmm: Process
  readonly fd: Iommufd
  /** The VMM's guest RAM (user VA of its first byte) and size. */
  readonly guestVa: number
  readonly guestBytes: number
  readonly devices: SessionDevice[] = []
  readonly log: LogEntry[] = []
  /** IOAS IDs allocated (and not destroyed). */
  readonly ioas: number[] = []
  /** HWPTs allocated or created by attach. */
  readonly hwpts: HwptInfo[] = []
  /** vIOMMUs allocated: ID, the device index and the nest-parent HWPT. */
  readonly viommus: { readonly id: number; readonly dev: number; readonly hwpt: number }[] = []
  /** Mapped IOVA ranges per IOAS (from successful MAP / UNMAP). */
  readonly mapped: Map<number, MappedRange[]> = new Map()
  /** Hook switches currently on. */
  readonly hooksOn: Set<string> = new Set()
  /** Scenario commands run so far. */
  commandsRun = 0

  constructor(spec: MachineSpec, seed: number) {
    this.spec = spec
    this.seed = seed
    this.vendor = vendorById(spec.vendor)
    this.options = vendorOptions(this.vendor, spec.options)
    this.machine = createMachine({ iommus: [this.vendor.createIommu(this.options)] })
    this.vmm = this.machine.createProcess()
    this.fd = openIommufd(this.machine, this.vmm)
    this.guestBytes = spec.guestMiB * MIB
    this.guestVa = this.vmm.mmap(this.guestBytes)
    this.#push(-1, 'open("/dev/iommu")', null, null, [], [], `fd ${this.fd.fd}`, null)
    this.#push(
      -1,
      'mmap (guest RAM)',
      null,
      null,
      [
        ['length', hex(this.guestBytes)],
        ['addr', hex(this.guestVa)],
      ],
      ['addr'],
      `${spec.guestMiB} MiB of guest RAM at VA ${hex(this.guestVa)}`,
      null,
    )
    for (const d of spec.devices) {
      const dev = this.machine.addPciDevice({
        name: d.name,
        pasidBits: d.pasidBits,
        ats: d.ats,
        // Per device on the mock only; on hardware the unit decides (a vendor option).
        dirtyTracking: this.vendor.deviceDirtyTracking ? d.dirtyTracking : true,
      })
      const idev = this.fd.bindDevice(dev)
      this.devices.push({ name: d.name, dev, idev, pt: null, hwpt: null })
      this.#push(
        -1,
        'VFIO_DEVICE_BIND_IOMMUFD',
        null,
        null,
        [
          ['device', `${d.name} (${dev.bdf})`],
          ['out_devid', String(idev.id)],
        ],
        ['out_devid'],
        `dev_id ${idev.id}`,
        null,
      )
    }
  }

  /** What the vendor descriptor looks at. */
  get vendorContext(): VendorContext {
    const unit = this.machine.units[0]
    if (unit === undefined) throw new Error('no IOMMU unit')
    return { machine: this.machine, unit }
  }

  /** Every detector's report: the vendor's own, then the dirty-tracking hazard detector. */
  detectors(): DetectorReport[] {
    return [...this.vendor.detectors(this.vendorContext), dirtyHazardReport(this.machine)]
  }

  /** The driver of the unit (for hooks). */
  get driver() {
    return this.vendorContext.unit.driver
  }

  /** Run the scenario's commands from `commandsRun` on. */
  runAll(commands: readonly Command[]): void {
    for (let i = this.commandsRun; i < commands.length; i++) {
      this.run(commands[i] as Command)
    }
  }

  /** Run one scenario command and log it. Never throws for a failing call. */
  run(cmd: Command): LogEntry {
    const index = this.commandsRun++
    const before = this.log.length
    try {
      this.#run(cmd, index)
    } catch (e) {
      // A JavaScript error here is a bug in the explorer or the model: show it as such.
      if (this.log.length === before) {
        this.#push(index, cmd.op, null, null, [], [], 'internal error', {
          code: 'BUG',
          errno: 0,
          message: (e as Error).message,
        })
      }
    }
    return this.log[this.log.length - 1] as LogEntry
  }

  #push(
    command: number,
    call: string,
    nr: number | null,
    struct: string | null,
    args: (readonly [string, string])[],
    outputs: string[],
    result: string,
    error: CallError | null,
  ): LogEntry {
    const e: LogEntry = {
      seq: this.log.length,
      command,
      call,
      nr,
      struct,
      args,
      outputs,
      result,
      error,
    }
    this.log.push(e)
    return e
  }

  /**
   * Issue an ioctl with `arg` and log it: fields are listed in `order`, `outs` are the
   * fields the kernel writes back.
   */
  #ioctl(
    index: number,
    nr: number,
    struct: string,
    arg: Record<string, number | bigint>,
    show: (k: string, v: number | bigint) => string,
    outs: string[],
    onOk: () => string,
  ): boolean {
    let error: CallError | null = null
    try {
      // biome-ignore lint/suspicious/noExplicitAny: the command number is chosen at run time
      this.fd.ioctl(nr as any, arg)
    } catch (e) {
      if (!isIommuError(e)) throw e
      error = { code: e.code, errno: e.errno, message: e.message }
    }
    const args = Object.entries(arg).map(([k, v]) => [k, show(k, v)] as const)
    const name = IOCTL_NAMES[nr] ?? hex(nr)
    this.#push(
      index,
      name,
      nr,
      struct,
      args,
      error === null ? outs : [],
      error === null ? onOk() : `${error.code} (${error.errno})`,
      error,
    )
    return error === null
  }

  #dev(i: number): SessionDevice {
    const d = this.devices[i]
    if (d === undefined) throw new Error(`no device ${i}`)
    return d
  }

  #noteHwpt(info: HwptInfo): void {
    if (!this.hwpts.some((h) => h.id === info.id)) this.hwpts.push(info)
  }

  /** Forget HWPTs and IOASes that are gone (auto HWPTs die with their last attachment). */
  #prune(): void {
    for (let i = this.hwpts.length - 1; i >= 0; i--) {
      if (this.hwptObject((this.hwpts[i] as HwptInfo).id) === null) this.hwpts.splice(i, 1)
    }
    for (let i = this.ioas.length - 1; i >= 0; i--) {
      const id = this.ioas[i] as number
      try {
        this.fd.ctx.get(id, ObjType.IOAS)
      } catch {
        this.ioas.splice(i, 1)
        this.mapped.delete(id)
      }
    }
    for (let i = this.viommus.length - 1; i >= 0; i--) {
      try {
        this.fd.ctx.get((this.viommus[i] as { id: number }).id, ObjType.VIOMMU)
      } catch {
        this.viommus.splice(i, 1)
      }
    }
  }

  #attachCall(index: number, cmd: { dev: number; pt: number }, replace: boolean): void {
    const d = this.#dev(cmd.dev)
    const call = replace
      ? 'VFIO_DEVICE_ATTACH_IOMMUFD_PT (replace)'
      : 'VFIO_DEVICE_ATTACH_IOMMUFD_PT'
    let error: CallError | null = null
    let hwpt = 0
    try {
      hwpt = replace ? d.idev.replace(cmd.pt) : d.idev.attach(cmd.pt)
    } catch (e) {
      if (!isIommuError(e)) throw e
      error = { code: e.code, errno: e.errno, message: e.message }
    }
    if (error === null) {
      d.pt = cmd.pt
      d.hwpt = hwpt
      const isIoas = this.ioas.includes(cmd.pt)
      const h = this.hwptObject(hwpt)
      this.#noteHwpt({
        id: hwpt,
        dev: cmd.dev,
        ioas: h?.ioas.id ?? cmd.pt,
        auto: isIoas,
        flags: 0,
      })
    }
    this.#prune()
    this.#push(
      index,
      call,
      null,
      'vfio_device_attach_iommufd_pt',
      [
        ['device', `${d.name} (dev_id ${d.idev.id})`],
        ['pt_id', String(cmd.pt)],
        ['pt_id (out)', error === null ? String(hwpt) : '—'],
      ],
      error === null ? ['pt_id (out)'] : [],
      error === null
        ? `attached to HWPT ${hwpt}${hwpt !== cmd.pt ? ` (automatic, for IOAS ${cmd.pt})` : ''}`
        : `${error.code} (${error.errno})`,
      error,
    )
  }

  #run(cmd: Command, index: number): void {
    const u64 = (s: string) => BigInt(s)
    const plain = (_k: string, v: number | bigint) => (typeof v === 'bigint' ? hex(v) : String(v))
    switch (cmd.op) {
      case 'IOAS_ALLOC': {
        const arg = { size: sizeofStruct('iommu_ioas_alloc'), flags: 0, out_ioas_id: 0 }
        if (
          this.#ioctl(
            index,
            IOMMU_IOAS_ALLOC,
            'iommu_ioas_alloc',
            arg,
            plain,
            ['out_ioas_id'],
            () => `ioas_id ${arg.out_ioas_id}`,
          )
        ) {
          this.ioas.push(arg.out_ioas_id)
          this.mapped.set(arg.out_ioas_id, [])
        }
        return
      }
      case 'IOAS_MAP': {
        const flags =
          (cmd.fixed ? IOMMU_IOAS_MAP_FIXED_IOVA : 0) |
          (cmd.write ? IOMMU_IOAS_MAP_WRITEABLE : 0) |
          (cmd.read ? IOMMU_IOAS_MAP_READABLE : 0)
        const arg = {
          size: sizeofStruct('iommu_ioas_map'),
          flags,
          ioas_id: cmd.ioas,
          __reserved: 0,
          user_va: BigInt(this.guestVa) + u64(cmd.offset),
          length: u64(cmd.length),
          iova: u64(cmd.iova),
        }
        const show = (k: string, v: number | bigint) =>
          k === 'flags'
            ? fmtFlags(Number(v), [
                [IOMMU_IOAS_MAP_FIXED_IOVA, 'FIXED_IOVA'],
                [IOMMU_IOAS_MAP_WRITEABLE, 'WRITEABLE'],
                [IOMMU_IOAS_MAP_READABLE, 'READABLE'],
              ])
            : k === 'user_va'
              ? `${hex(v)} (guest + ${cmd.offset})`
              : plain(k, v)
        if (
          this.#ioctl(
            index,
            IOMMU_IOAS_MAP,
            'iommu_ioas_map',
            arg,
            show,
            ['iova'],
            () => `mapped ${hex(arg.length)} bytes at IOVA ${hex(arg.iova)}`,
          )
        ) {
          this.mapped.get(cmd.ioas)?.push({ iova: arg.iova, length: arg.length })
        }
        return
      }
      case 'IOAS_UNMAP': {
        const arg = {
          size: sizeofStruct('iommu_ioas_unmap'),
          ioas_id: cmd.ioas,
          iova: u64(cmd.iova),
          length: u64(cmd.length),
        }
        if (
          this.#ioctl(
            index,
            IOMMU_IOAS_UNMAP,
            'iommu_ioas_unmap',
            arg,
            plain,
            ['length'],
            () => `unmapped ${hex(arg.length)} bytes`,
          )
        ) {
          const list = this.mapped.get(cmd.ioas)
          if (list !== undefined) {
            const s = u64(cmd.iova)
            const e = s + arg.length
            this.mapped.set(
              cmd.ioas,
              list.filter((r) => r.iova + r.length <= s || r.iova >= e),
            )
          }
        }
        return
      }
      case 'OPTION_HUGE_PAGES': {
        const arg = {
          size: sizeofStruct('iommu_option'),
          option_id: IOMMU_OPTION_HUGE_PAGES,
          op: IOMMU_OPTION_OP_SET,
          __reserved: 0,
          object_id: cmd.ioas,
          val64: cmd.enable ? 1n : 0n,
        }
        const show = (k: string, v: number | bigint) =>
          k === 'option_id'
            ? 'IOMMU_OPTION_HUGE_PAGES'
            : k === 'op'
              ? 'IOMMU_OPTION_OP_SET'
              : plain(k, v)
        this.#ioctl(index, IOMMU_OPTION, 'iommu_option', arg, show, [], () =>
          cmd.enable ? 'huge pages allowed' : 'huge pages off: 4 KiB IOPTEs only',
        )
        return
      }
      case 'HWPT_ALLOC': {
        const d = this.#dev(cmd.dev)
        const flags =
          (cmd.dirtyTracking ? IOMMU_HWPT_ALLOC_DIRTY_TRACKING : 0) |
          (cmd.nestParent ? IOMMU_HWPT_ALLOC_NEST_PARENT : 0)
        const arg = {
          size: sizeofStruct('iommu_hwpt_alloc'),
          flags,
          dev_id: d.idev.id,
          pt_id: cmd.pt,
          out_hwpt_id: 0,
          __reserved: 0,
          data_type: 0,
          data_len: 0,
          data_uptr: 0n,
        }
        const show = (k: string, v: number | bigint) =>
          k === 'flags'
            ? fmtFlags(Number(v), [
                [IOMMU_HWPT_ALLOC_NEST_PARENT, 'NEST_PARENT'],
                [IOMMU_HWPT_ALLOC_DIRTY_TRACKING, 'DIRTY_TRACKING'],
              ])
            : k === 'data_type'
              ? 'IOMMU_HWPT_DATA_NONE'
              : plain(k, v)
        if (
          this.#ioctl(
            index,
            IOMMU_HWPT_ALLOC,
            'iommu_hwpt_alloc',
            arg,
            show,
            ['out_hwpt_id'],
            () => `hwpt_id ${arg.out_hwpt_id}`,
          )
        ) {
          this.#noteHwpt({ id: arg.out_hwpt_id, dev: cmd.dev, ioas: cmd.pt, auto: false, flags })
        }
        return
      }
      case 'ATTACH':
      case 'REPLACE':
        this.#attachCall(index, cmd, cmd.op === 'REPLACE')
        return
      case 'DETACH': {
        const d = this.#dev(cmd.dev)
        let error: CallError | null = null
        try {
          d.idev.detach()
        } catch (e) {
          if (!isIommuError(e)) throw e
          error = { code: e.code, errno: e.errno, message: e.message }
        }
        if (error === null) {
          d.pt = null
          d.hwpt = null
        }
        this.#prune()
        this.#push(
          index,
          'VFIO_DEVICE_DETACH_IOMMUFD_PT',
          null,
          'vfio_device_detach_iommufd_pt',
          [['device', `${d.name} (dev_id ${d.idev.id})`]],
          [],
          error === null ? 'detached (blocked)' : `${error.code} (${error.errno})`,
          error,
        )
        return
      }
      case 'SET_DIRTY_TRACKING': {
        const arg = {
          size: sizeofStruct('iommu_hwpt_set_dirty_tracking'),
          flags: cmd.enable ? IOMMU_HWPT_DIRTY_TRACKING_ENABLE : 0,
          hwpt_id: cmd.hwpt,
          __reserved: 0,
        }
        const show = (k: string, v: number | bigint) =>
          k === 'flags'
            ? fmtFlags(Number(v), [[IOMMU_HWPT_DIRTY_TRACKING_ENABLE, 'ENABLE']])
            : plain(k, v)
        this.#ioctl(
          index,
          IOMMU_HWPT_SET_DIRTY_TRACKING,
          'iommu_hwpt_set_dirty_tracking',
          arg,
          show,
          [],
          () => (cmd.enable ? 'dirty tracking on' : 'dirty tracking off'),
        )
        return
      }
      case 'GET_DIRTY_BITMAP': {
        const length = u64(cmd.length)
        const iova = u64(cmd.iova)
        const pages = Number(length / BigInt(PAGE))
        const bytes = Math.max(8, Math.ceil(pages / 64) * 8)
        const buf = this.vmm.mmap(bytes)
        const arg = {
          size: sizeofStruct('iommu_hwpt_get_dirty_bitmap'),
          hwpt_id: cmd.hwpt,
          flags: cmd.noClear ? IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR : 0,
          __reserved: 0,
          iova,
          length,
          page_size: BigInt(PAGE),
          data: BigInt(buf),
        }
        const show = (k: string, v: number | bigint) =>
          k === 'flags'
            ? fmtFlags(Number(v), [[IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR, 'NO_CLEAR']])
            : plain(k, v)
        this.#ioctl(
          index,
          IOMMU_HWPT_GET_DIRTY_BITMAP,
          'iommu_hwpt_get_dirty_bitmap',
          arg,
          show,
          [],
          () => {
            const bitmap = new Uint8Array(bytes)
            this.vmm.readInto(buf, bitmap)
            return describeRanges(bitmapRanges(bitmap, iova, pages))
          },
        )
        this.vmm.munmap(buf, bytes)
        return
      }
      case 'GET_HW_INFO': {
        const d = this.#dev(cmd.dev)
        const buf = this.vmm.mmap(PAGE)
        const arg = {
          size: sizeofStruct('iommu_hw_info'),
          flags: 0,
          dev_id: d.idev.id,
          data_len: 64,
          data_uptr: BigInt(buf),
          out_data_type: 0,
          out_max_pasid_log2: 0,
          out_capabilities: 0n,
        }
        this.#ioctl(
          index,
          IOMMU_GET_HW_INFO,
          'iommu_hw_info',
          arg,
          plain,
          ['data_len', 'out_data_type', 'out_max_pasid_log2', 'out_capabilities'],
          () => {
            const data = new Uint8Array(arg.data_len)
            this.vmm.readInto(buf, data)
            const words: string[] = []
            const v = new DataView(data.buffer)
            for (let o = 0; o + 8 <= data.length; o += 8) {
              words.push(hex(v.getBigUint64(o, true), 16))
            }
            return `type ${arg.out_data_type}, data ${words.join(' ') || '(none)'}`
          },
        )
        this.vmm.munmap(buf, PAGE)
        return
      }
      case 'VIOMMU_ALLOC': {
        const d = this.#dev(cmd.dev)
        const arg = {
          size: sizeofStruct('iommu_viommu_alloc'),
          flags: 0,
          type: VIOMMU_TYPE[cmd.type],
          dev_id: d.idev.id,
          hwpt_id: cmd.hwpt,
          out_viommu_id: 0,
          data_len: 0,
          __reserved: 0,
          data_uptr: 0n,
        }
        const show = (k: string, v: number | bigint) =>
          k === 'type'
            ? `IOMMU_VIOMMU_TYPE_${cmd.type.toUpperCase().replace('-', '_')}`
            : plain(k, v)
        if (
          this.#ioctl(
            index,
            IOMMU_VIOMMU_ALLOC,
            'iommu_viommu_alloc',
            arg,
            show,
            ['out_viommu_id'],
            () => `viommu_id ${arg.out_viommu_id}`,
          )
        ) {
          this.viommus.push({ id: arg.out_viommu_id, dev: cmd.dev, hwpt: cmd.hwpt })
        }
        return
      }
      case 'VDEVICE_ALLOC': {
        const d = this.#dev(cmd.dev)
        const arg = {
          size: sizeofStruct('iommu_vdevice_alloc'),
          viommu_id: cmd.viommu,
          dev_id: d.idev.id,
          out_vdevice_id: 0,
          virt_id: u64(cmd.virtId),
        }
        this.#ioctl(
          index,
          IOMMU_VDEVICE_ALLOC,
          'iommu_vdevice_alloc',
          arg,
          plain,
          ['out_vdevice_id'],
          () => `vdevice_id ${arg.out_vdevice_id}`,
        )
        return
      }
      case 'DESTROY': {
        const arg = { size: sizeofStruct('iommu_destroy'), id: cmd.id }
        if (
          this.#ioctl(
            index,
            IOMMU_DESTROY,
            'iommu_destroy',
            arg,
            plain,
            [],
            () => `object ${cmd.id} destroyed`,
          )
        ) {
          this.#prune()
        }
        return
      }
      case 'DMA_WRITE':
      case 'DMA_READ': {
        const d = this.#dev(cmd.dev)
        const iova = u64(cmd.iova)
        const write = cmd.op === 'DMA_WRITE'
        let error: CallError | null = null
        let result = ''
        try {
          if (write) {
            d.dev.dma.write(iova, dmaPattern(this.seed, index, cmd.length))
            result = `wrote ${cmd.length} bytes`
          } else {
            const data = d.dev.dma.read(iova, cmd.length)
            const head = Array.from(data.subarray(0, 16), (b) => b.toString(16).padStart(2, '0'))
            result = `read ${cmd.length} bytes: ${head.join(' ')}${cmd.length > 16 ? ' …' : ''}`
          }
        } catch (e) {
          if (e instanceof DmaFault) {
            error = { code: `DMA fault: ${e.reason}`, errno: 0, message: e.message }
          } else if (isIommuError(e)) {
            error = { code: e.code, errno: e.errno, message: e.message }
          } else throw e
        }
        this.#push(
          index,
          write ? 'DMA write' : 'DMA read',
          null,
          null,
          [
            ['device', `${d.name} (RID ${hex(d.dev.rid, 4)})`],
            ['iova', hex(iova)],
            ['length', String(cmd.length)],
          ],
          [],
          error === null ? result : error.code,
          error,
        )
        return
      }
      case 'HOOK': {
        const h = this.vendor.hooks.find((x) => x.name === cmd.name)
        let error: CallError | null = null
        if (h === undefined) {
          error = {
            code: 'EINVAL',
            errno: -22,
            message: `${this.vendor.label} has no hook ${cmd.name}`,
          }
        } else {
          h.set(this.driver, cmd.on)
          if (cmd.on) this.hooksOn.add(cmd.name)
          else this.hooksOn.delete(cmd.name)
        }
        this.#push(
          index,
          'fault injection',
          null,
          null,
          [
            ['hook', h?.label ?? cmd.name],
            ['on', String(cmd.on)],
          ],
          [],
          error === null ? (cmd.on ? 'driver will skip it' : 'driver behaves') : error.code,
          error,
        )
        return
      }
    }
  }

  /** The HWPT_PAGING object with this ID, or null when it is gone. */
  hwptObject(id: number): HwptPaging | null {
    try {
      return this.fd.ctx.get<HwptPaging>(id, ObjType.HWPT_PAGING)
    } catch {
      return null
    }
  }

  /** The domain behind a HWPT, or null. */
  hwptDomain(id: number): IommuDomain | null {
    return this.hwptObject(id)?.domain ?? null
  }

  /** The IOVA ranges mapped in the IOAS a HWPT belongs to. */
  hwptRanges(id: number): readonly MappedRange[] {
    const h = this.hwptObject(id)
    return h === null ? [] : (this.mapped.get(h.ioas.id) ?? [])
  }
}

/** Build a session from a state and run its commands. */
export function replay(state: ExplorerState): Session {
  const s = new Session(state.machine, state.seed)
  s.runAll(state.commands)
  return s
}

/**
 * Event queues (`eventq.c`): the FAULT object that delivers I/O page faults to user space
 * and takes its page responses, and the vEVENTQ object that delivers a vIOMMU's events —
 * each with its anonymous file (`[iommufd-pgfault]`, `[iommufd-viommu-event]`) whose
 * `read`, `write` and `poll` behave as the kernel's fops (reference iommufd-uapi.md §5.6,
 * §5.7).
 *
 * Neither file ever blocks: a read of an empty queue returns 0 (the kernel's fops do not
 * look at O_NONBLOCK and never return EAGAIN); `poll` tells whether a read would find
 * something.
 *
 * @module
 */

import {
  type IommuDomain,
  IommuError,
  IommuPageResponseCode,
  type IopfGroup,
  iopfFreeGroup,
  iopfGroupDequeue,
  iopfGroupResponse,
} from '@iommu/core'
import type { IommufdCtx } from './ctx.ts'
import type { IommufdDevice } from './device.ts'
import {
  bytesBuffer,
  type FdFile,
  fdAlloc,
  fdSet,
  fdTake,
  POLLIN,
  POLLOUT,
  POLLRDNORM,
  type UserBuffer,
} from './fd-table.ts'
import type { Hwpt } from './hw-pagetable.ts'
import { IommufdObject, ObjType } from './object.ts'
import { IOMMU_VEVENTQ_FLAG_LOST_EVENTS, IOMMU_VEVENTQ_TYPE_DEFAULT } from './uapi/constants.ts'
import type { iommu_fault_alloc, iommu_veventq_alloc } from './uapi/structs.ts'
import type { Ucmd } from './ucmd.ts'
import type { IommufdViommuObj } from './viommu.ts'

/** `sizeof(struct iommu_hwpt_pgfault)`. */
export const IOMMU_HWPT_PGFAULT_SIZE = 40
/** `sizeof(struct iommu_hwpt_page_response)`. */
export const IOMMU_HWPT_PAGE_RESPONSE_SIZE = 8
/** `sizeof(struct iommufd_vevent_header)`. */
export const IOMMUFD_VEVENT_HEADER_SIZE = 8
/** `VEVENTQ_MAX_DEPTH`: an arbitrary bound that fits every existing hardware. */
export const VEVENTQ_MAX_DEPTH = 1 << 19
/** `IOMMUFD_PAGE_RESP_SUCCESS` / `_INVALID` (same values as the core's codes). */
export const IOMMUFD_PAGE_RESP_SUCCESS = 0
export const IOMMUFD_PAGE_RESP_INVALID = 1

/** The attach handle iommufd gives the core (`struct iommufd_attach_handle`). */
export interface IommufdAttachHandle {
  domain: IommuDomain | null
  readonly idev: IommufdDevice
}

/** The file of an event queue: holds a `users` reference on its object and the context. */
abstract class EventqFile implements FdFile {
  #open = true
  protected readonly obj: IommufdObject
  protected readonly ctx: IommufdCtx

  constructor(obj: IommufdObject, ctx: IommufdCtx) {
    this.obj = obj
    this.ctx = ctx
    obj.users++
    ctx.refGet()
  }

  abstract read(buf: UserBuffer, count: number, pos?: number): number

  /**
   * Convenience: `read(2)` into a fresh buffer of `count` bytes.
   *
   * @returns the bytes read (possibly none)
   * @throws the read's errno
   */
  readBytes(count: number): Uint8Array {
    if (!Number.isSafeInteger(count) || count < 0) throw new IommuError('EINVAL', 'count')
    let b: Uint8Array
    try {
      b = new Uint8Array(count)
    } catch {
      throw new IommuError('ENOMEM', `${count}-byte buffer`)
    }
    return b.subarray(0, this.read(bytesBuffer(b), count))
  }

  /** `iommufd_eventq_fops_release`. */
  release(): void {
    if (!this.#open) return
    this.#open = false
    this.obj.users--
    this.ctx.refPut()
  }
}

// ------------------------------------------------------------------ FAULT

/** `struct iommufd_fault`: IOPF groups waiting to be read, and those waiting for a response. */
export class IommufdFault extends IommufdObject {
  readonly type = ObjType.FAULT
  /** Groups reported and not yet read (`common.deliver`). */
  readonly deliver: IopfGroup[] = []
  /** Groups read and not yet answered, by cookie (`response`, ALLOC1 xarray). */
  readonly response: Map<number, IopfGroup> = new Map()
  file: FaultFile | null = null
  readonly ctx: IommufdCtx

  constructor(ctx: IommufdCtx) {
    super()
    this.ctx = ctx
  }

  /** `iommufd_fault_iopf_handler`: the domain's `iopfHandler`. */
  handle(group: IopfGroup): void {
    iopfGroupDequeue(group)
    this.deliver.push(group)
  }

  /** `iommufd_fault_destroy`: every group still here is answered INVALID. */
  destroy(): void {
    for (const g of this.deliver.splice(0)) {
      iopfGroupResponse(g, IommuPageResponseCode.INVALID)
      iopfFreeGroup(g)
    }
    for (const [cookie, g] of [...this.response]) {
      this.response.delete(cookie)
      iopfGroupResponse(g, IommuPageResponseCode.INVALID)
      iopfFreeGroup(g)
    }
  }

  /** `xa_alloc(&fault->response, ..., xa_limit_32b)`: the lowest free cookie from 1. */
  #allocCookie(group: IopfGroup): number {
    if (this.ctx.machine.faults.shouldFail('iommufd:fault_cookie')) {
      throw new IommuError('ENOMEM', 'fault cookie')
    }
    let c = 1
    while (this.response.has(c)) c++
    if (c > 0xffff_ffff) throw new IommuError('EBUSY', 'no cookie left')
    this.response.set(c, group)
    return c
  }

  /** `iommufd_fault_fops_read`. */
  read(buf: UserBuffer, count: number, pos = 0): number {
    if (pos || count % IOMMU_HWPT_PGFAULT_SIZE) throw new IommuError('ESPIPE', 'read size')
    let done = 0
    let rc: IommuError | null = null
    for (;;) {
      const group = this.deliver.shift()
      if (group === undefined) break
      if (done >= count || group.faultCount * IOMMU_HWPT_PGFAULT_SIZE > count - done) {
        this.deliver.unshift(group)
        // The buffer does not take the first group whole.
        if (done === 0) rc = new IommuError('EINVAL', 'buffer smaller than the fault group')
        break
      }
      try {
        group.cookie = this.#allocCookie(group)
      } catch (e) {
        this.deliver.unshift(group)
        rc = e as IommuError
        break
      }
      const idev = (group.attachHandle as unknown as IommufdAttachHandle).idev
      let groupDone = done
      try {
        for (const f of group.faults) {
          buf.copyTo(groupDone, composeFault(f.fault.prm, idev.id, group.cookie))
          groupDone += IOMMU_HWPT_PGFAULT_SIZE
        }
      } catch (e) {
        this.response.delete(group.cookie)
        this.deliver.unshift(group)
        rc = e instanceof IommuError ? e : new IommuError('EFAULT', 'read buffer')
        break
      }
      done = groupDone
    }
    if (done === 0 && rc !== null) throw rc
    return done
  }

  /** `iommufd_fault_fops_write`: page responses. */
  write(buf: UserBuffer, count: number, pos = 0): number {
    if (pos || count % IOMMU_HWPT_PAGE_RESPONSE_SIZE) throw new IommuError('ESPIPE', 'write size')
    let done = 0
    let rc: IommuError | null = null
    while (count > done) {
      let resp: DataView
      try {
        const b = buf.copyFrom(done, IOMMU_HWPT_PAGE_RESPONSE_SIZE)
        resp = new DataView(b.buffer, b.byteOffset, b.byteLength)
      } catch {
        rc = new IommuError('EFAULT', 'response buffer')
        break
      }
      const cookie = resp.getUint32(0, true)
      const code = resp.getUint32(4, true)
      if (code !== IOMMUFD_PAGE_RESP_SUCCESS && code !== IOMMUFD_PAGE_RESP_INVALID) {
        rc = new IommuError('EINVAL', `response code ${code}`)
        break
      }
      const group = this.response.get(cookie)
      if (group === undefined) {
        rc = new IommuError('EINVAL', `no fault with cookie ${cookie}`)
        break
      }
      this.response.delete(cookie)
      iopfGroupResponse(group, code)
      iopfFreeGroup(group)
      done += IOMMU_HWPT_PAGE_RESPONSE_SIZE
    }
    if (done === 0 && rc !== null) throw rc
    return done
  }

  /** `iommufd_eventq_fops_poll`: always writable, readable when a group is pending. */
  poll(): number {
    return POLLOUT | (this.deliver.length ? POLLIN | POLLRDNORM : 0)
  }
}

/** `iommufd_compose_fault_message`: one `struct iommu_hwpt_pgfault`. */
function composeFault(
  prm: { flags: number; pasid: number; grpid: number; perm: number; addr: bigint },
  devId: number,
  cookie: number,
): Uint8Array {
  const b = new Uint8Array(IOMMU_HWPT_PGFAULT_SIZE)
  const v = new DataView(b.buffer)
  v.setUint32(0, prm.flags, true)
  v.setUint32(4, devId, true)
  v.setUint32(8, prm.pasid, true)
  v.setUint32(12, prm.grpid, true)
  v.setUint32(16, prm.perm, true)
  v.setBigUint64(24, prm.addr, true)
  // length (always 0) at 32, cookie at 36
  v.setUint32(36, cookie, true)
  return b
}

/** The `[iommufd-pgfault]` file. */
export class FaultFile extends EventqFile {
  readonly fault: IommufdFault
  constructor(fault: IommufdFault, ctx: IommufdCtx) {
    super(fault, ctx)
    this.fault = fault
  }
  read(buf: UserBuffer, count: number, pos = 0): number {
    return this.fault.read(buf, count, pos)
  }
  write(buf: UserBuffer, count: number, pos = 0): number {
    return this.fault.write(buf, count, pos)
  }
  /** Convenience: `write(2)` of `bytes` (page responses). @returns bytes taken */
  writeBytes(bytes: Uint8Array): number {
    return this.write(bytesBuffer(bytes), bytes.length)
  }
  poll(): number {
    return this.fault.poll()
  }
}

/**
 * `iommufd_auto_response_faults`: answer INVALID every group of `hwpt`'s fault queue that
 * came through `handle` (the attachment being detached or replaced), read or not.
 */
export function iommufdAutoResponseFaults(hwpt: Hwpt, handle: IommufdAttachHandle | null): void {
  const fault = hwpt.fault
  if (fault === null || handle === null) return
  const mine = (g: IopfGroup): boolean => (g.attachHandle as unknown) === handle
  for (let i = 0; i < fault.deliver.length; ) {
    const g = fault.deliver[i] as IopfGroup
    if (!mine(g)) {
      i++
      continue
    }
    fault.deliver.splice(i, 1)
    iopfGroupResponse(g, IommuPageResponseCode.INVALID)
    iopfFreeGroup(g)
  }
  for (const [cookie, g] of [...fault.response]) {
    if (!mine(g)) continue
    fault.response.delete(cookie)
    iopfGroupResponse(g, IommuPageResponseCode.INVALID)
    iopfFreeGroup(g)
  }
}

/** `iommufd_eventq_init`: the file and its fd (the fd is installed by the caller). */
function eventqInit<F extends FdFile>(ucmd: Ucmd<unknown>, make: () => F): { file: F; fd: number } {
  if (ucmd.ctx.machine.faults.shouldFail('iommufd:eventq_file')) {
    throw new IommuError('ENOMEM', 'anon inode file')
  }
  const file = make()
  let fd: number
  try {
    fd = fdAlloc(ucmd.caller.proc)
  } catch (e) {
    file.release()
    throw e
  }
  return { file, fd }
}

/** IOMMU_FAULT_QUEUE_ALLOC (reference §2.18). */
export function iommufdFaultAlloc(ucmd: Ucmd<iommu_fault_alloc>): void {
  const { cmd, ctx, caller } = ucmd
  if (cmd.flags) throw new IommuError('EOPNOTSUPP', 'flags')
  const fault = ctx.objects.alloc(new IommufdFault(ctx))
  let fd = -1
  try {
    const r = eventqInit(ucmd as Ucmd<unknown>, () => new FaultFile(fault, ctx))
    fault.file = r.file
    fd = r.fd
    cmd.out_fault_id = fault.id
    cmd.out_fault_fd = fd
    ucmd.respond()
  } catch (e) {
    if (fd >= 0) fdTake(caller.proc, fd)
    // abort_and_destroy: the file is released synchronously first.
    fault.file?.release()
    ctx.objects.abortAndDestroy(fault)
    throw e
  }
  fdSet(caller.proc, fd, fault.file as FaultFile)
  ctx.objects.finalize(fault)
}

/** `iommufd_get_fault`. @throws ENOENT */
export function getFault(ctx: IommufdCtx, id: number): IommufdFault {
  return ctx.get<IommufdFault>(id, ObjType.FAULT)
}

// ------------------------------------------------------------------ vEVENTQ

/** `struct iommufd_vevent`: a queued event, or the queue's lost-events marker. */
interface Vevent {
  flags: number
  sequence: number
  data: Uint8Array | null
}

/** `struct iommufd_veventq`. */
export class IommufdVeventq extends IommufdObject {
  readonly type = ObjType.VEVENTQ
  readonly viommu: IommufdViommuObj
  /** `IOMMU_VEVENTQ_TYPE_*`. */
  readonly vtype: number
  readonly depth: number
  /** Normal events queued (the marker does not count). */
  numEvents = 0
  /** The next sequence number (wraps at INT_MAX). */
  sequence = 0
  readonly deliver: Vevent[] = []
  /** The one pre-allocated lost-events marker (`lost_events_header`). */
  readonly lost: Vevent = { flags: IOMMU_VEVENTQ_FLAG_LOST_EVENTS, sequence: 0, data: null }
  file: VeventqFile | null = null

  constructor(viommu: IommufdViommuObj, vtype: number, depth: number) {
    super()
    this.viommu = viommu
    this.vtype = vtype
    this.depth = depth
  }

  /** `iommufd_veventq_destroy` / `_abort`. */
  destroy(): void {
    this.deliver.length = 0
    this.viommu.users--
    const list = this.viommu.veventqs
    const i = list.indexOf(this)
    if (i >= 0) list.splice(i, 1)
  }

  /** `iommufd_vevent_handler`: append `ev` (a new event or the marker) with a sequence. */
  #enqueue(ev: Vevent): void {
    // The marker, when last, is replaced by whatever comes next (§5.7 step 1).
    if (this.deliver[this.deliver.length - 1] === this.lost) this.deliver.pop()
    this.deliver.push(ev)
    ev.sequence = this.sequence
    this.sequence = (this.sequence + 1) & 0x7fff_ffff
  }

  /**
   * `iommufd_viommu_report_event`'s part under the queue lock: queue a copy of `data`, or
   * the lost-events marker when the queue is full or the event cannot be allocated.
   *
   * @throws ENOMEM - the allocation failed (the marker was queued)
   */
  report(data: Uint8Array, ctx: IommufdCtx): void {
    if (ctx.machine.faults.shouldFail('iommufd:vevent')) {
      this.#enqueue(this.lost)
      throw new IommuError('ENOMEM', 'vEVENT')
    }
    if (this.numEvents === this.depth) {
      this.#enqueue(this.lost)
      return
    }
    this.numEvents++
    this.#enqueue({ flags: 0, sequence: 0, data: data.slice() })
  }

  /** `iommufd_veventq_deliver_restore`. */
  #restore(ev: Vevent, wasMarker: boolean): void {
    if (wasMarker) {
      // The copy of the marker goes; an empty queue gets the marker itself back.
      if (this.deliver.length === 0) this.deliver.unshift(this.lost)
      return
    }
    this.deliver.unshift(ev)
  }

  /** `iommufd_veventq_fops_read`. */
  read(buf: UserBuffer, count: number, pos = 0): number {
    if (pos) throw new IommuError('ESPIPE', 'read offset')
    if (count < IOMMUFD_VEVENT_HEADER_SIZE) throw new IommuError('EINVAL', 'read size')
    let done = 0
    let rc: IommuError | null = null
    for (;;) {
      const next = this.deliver.shift()
      if (next === undefined) break
      const marker = next === this.lost
      // A copy of the marker goes out; the marker itself stays for the next loss.
      const cur: Vevent = marker ? { ...next } : next
      if (done >= count || IOMMUFD_VEVENT_HEADER_SIZE > count - done) {
        this.#restore(cur, marker)
        break
      }
      const len = cur.data?.length ?? 0
      if (!marker && IOMMUFD_VEVENT_HEADER_SIZE + len > count - done) {
        this.#restore(cur, marker)
        if (done === 0) rc = new IommuError('EINVAL', 'buffer smaller than the event')
        break
      }
      const hdr = new Uint8Array(IOMMUFD_VEVENT_HEADER_SIZE)
      const v = new DataView(hdr.buffer)
      v.setUint32(0, cur.flags, true)
      v.setUint32(4, cur.sequence, true)
      try {
        buf.copyTo(done, hdr)
        if (len) buf.copyTo(done + IOMMUFD_VEVENT_HEADER_SIZE, cur.data as Uint8Array)
      } catch {
        this.#restore(cur, marker)
        rc = new IommuError('EFAULT', 'read buffer')
        break
      }
      if (!marker) this.numEvents--
      done += IOMMUFD_VEVENT_HEADER_SIZE + len
    }
    if (done === 0 && rc !== null) throw rc
    return done
  }

  /** `iommufd_eventq_fops_poll`. */
  poll(): number {
    return this.deliver.length ? POLLIN | POLLRDNORM : 0
  }
}

/** The `[iommufd-viommu-event]` file (no write op: EINVAL). */
export class VeventqFile extends EventqFile {
  readonly veventq: IommufdVeventq
  constructor(veventq: IommufdVeventq, ctx: IommufdCtx) {
    super(veventq, ctx)
    this.veventq = veventq
  }
  read(buf: UserBuffer, count: number, pos = 0): number {
    return this.veventq.read(buf, count, pos)
  }
  poll(): number {
    return this.veventq.poll()
  }
}

/** `iommufd_viommu_find_veventq`. */
export function findVeventq(viommu: IommufdViommuObj, type: number): IommufdVeventq | undefined {
  return viommu.veventqs.find((q) => q.vtype === type)
}

/** IOMMU_VEVENTQ_ALLOC (reference §2.22). */
export function iommufdVeventqAlloc(ucmd: Ucmd<iommu_veventq_alloc>): void {
  const { cmd, ctx, caller } = ucmd
  if (cmd.flags || cmd.__reserved || cmd.type === IOMMU_VEVENTQ_TYPE_DEFAULT) {
    throw new IommuError('EOPNOTSUPP', 'flags, __reserved or type')
  }
  if (!cmd.veventq_depth || cmd.veventq_depth > VEVENTQ_MAX_DEPTH) {
    throw new IommuError('EINVAL', 'veventq_depth')
  }
  const viommu = ctx.get<IommufdViommuObj>(cmd.viommu_id, ObjType.VIOMMU)
  if (findVeventq(viommu, cmd.type)) throw new IommuError('EEXIST', `vEVENTQ type ${cmd.type}`)
  const q = ctx.objects.alloc(new IommufdVeventq(viommu, cmd.type, cmd.veventq_depth))
  viommu.users++
  viommu.veventqs.push(q)
  let fd = -1
  try {
    const r = eventqInit(ucmd as Ucmd<unknown>, () => new VeventqFile(q, ctx))
    q.file = r.file
    fd = r.fd
    cmd.out_veventq_id = q.id
    cmd.out_veventq_fd = fd
    ucmd.respond()
  } catch (e) {
    if (fd >= 0) fdTake(caller.proc, fd)
    q.file?.release()
    ctx.objects.abortAndDestroy(q)
    throw e
  }
  ctx.objects.finalize(q)
  fdSet(caller.proc, fd, q.file as VeventqFile)
}

/**
 * ACCESS objects (`device.c`, `pages.c`): in-kernel users of an IOAS — emulated devices
 * such as VFIO mdev drivers — that pin pages by IOVA or copy bytes through it, and are
 * told to let go when user space unmaps (reference iommufd-uapi.md §3.11).
 *
 * @module
 */

import { FRAME_SIZE, IommuError, type PfnArray, type Process, Prot } from '@iommu/core'
import type { IommufdCtx } from './ctx.ts'
import { type IoptAccessUser, type IoptArea, ULONG_MAX } from './io-pagetable.ts'
import { getIoas, type Ioas } from './ioas.ts'
import { IommufdObject, ObjType } from './object.ts'
import type { IoptPages } from './pages.ts'

const PAGE = BigInt(FRAME_SIZE)

/** `IOMMUFD_ACCESS_RW_WRITE`: write to the IOAS instead of reading. */
export const IOMMUFD_ACCESS_RW_WRITE = 1 << 0
/** `IOMMUFD_ACCESS_RW_KTHREAD`: the caller runs in a kernel thread. */
export const IOMMUFD_ACCESS_RW_KTHREAD = 1 << 1
/** `__IOMMUFD_ACCESS_RW_SLOW_PATH` (test only): force the pin-and-copy path. */
export const IOMMUFD_ACCESS_RW_SLOW_PATH = 1 << 2

/** What the creator of an access provides (`struct iommufd_access_ops`). */
export interface IommufdAccessOps {
  /** The access pins pages (raises the IOAS alignment to PAGE_SIZE). */
  readonly needsPinPages: boolean
  /**
   * User space is unmapping `[iova, iova + length)`: unpin everything pinned in it before
   * returning (`unmap`). Required to pin pages.
   */
  unmap?(iova: bigint, length: bigint): void
}

/** `struct iommufd_access`. */
export class IommufdAccess extends IommufdObject implements IoptAccessUser {
  readonly type = ObjType.ACCESS
  readonly ops: IommufdAccessOps
  readonly iovaAlignment: number
  /** An internal access (HW queues): no ops, no context reference, may lock areas. */
  readonly internal: boolean
  ioas: Ioas | null = null
  /** The IOAS pins were taken from (`ioas_unpin`). */
  ioasUnpin: Ioas | null = null
  readonly #ctx: IommufdCtx

  constructor(ctx: IommufdCtx, ops: IommufdAccessOps, internal = false) {
    super()
    this.#ctx = ctx
    this.ops = ops
    this.internal = internal
    this.iovaAlignment = ops.needsPinPages || internal ? FRAME_SIZE : 1
  }

  get ctx(): IommufdCtx {
    return this.#ctx
  }

  notifyUnmap(iova: bigint, length: bigint): void {
    this.ops.unmap?.(iova, length)
  }

  /** `iommufd_access_destroy_object`. */
  destroy(): void {
    if (this.ioas !== null) changeIoas(this, null)
    if (!this.internal) this.#ctx.refPut()
  }

  /** `iommufd_access_attach_internal`: attach to an IOAS object directly. */
  attachInternal(ioas: Ioas): void {
    if (this.ioas !== null) throw new Error('iommufd_access_attach_internal: attached')
    changeIoas(this, ioas)
  }

  /** Attach to an IOAS (`iommufd_access_attach`). @throws ENOENT, EADDRINUSE */
  attach(ioasId: number): void {
    if (this.ioas !== null) throw new IommuError('EINVAL', 'access already attached')
    changeIoasId(this, ioasId)
  }

  /** Move to another IOAS, unpinning everything first (`iommufd_access_replace`). */
  replace(ioasId: number): void {
    if (this.ioas === null) throw new IommuError('ENOENT', 'access not attached')
    changeIoasId(this, ioasId)
  }

  /** Detach from the IOAS (`iommufd_access_detach`). */
  detach(): void {
    if (this.ioas === null) throw new Error('iommufd_access_detach: not attached')
    changeIoas(this, null)
  }

  /** Destroy the access (`iommufd_access_destroy`); the creator stops using it first. */
  release(): void {
    this.#ctx.objects.destroyUser(this)
  }

  /**
   * Pin `[iova, iova + length)` and return the PFN of each CPU page in `out`
   * (`iommufd_access_pin_pages`). Undo with {@link unpinPages} of the same range.
   *
   * @param flags - {@link IOMMUFD_ACCESS_RW_WRITE} to pin for writing
   * @throws EINVAL - length 0, not page aligned, or the range is being unmapped; EOVERFLOW;
   *   ENOENT - not attached or not fully mapped; EPERM - write to a read-only mapping;
   *   pinning errors
   */
  pinPages(iova: bigint, length: bigint, out: Int32Array, flags = 0, lockArea = false): void {
    // Internal accesses have no unmap op: they lock the areas instead.
    if (this.iovaAlignment !== FRAME_SIZE || (!this.internal && !this.ops.unmap)) {
      throw new IommuError('EINVAL', 'access cannot pin pages')
    }
    const last = checkRange(iova, length)
    const ioas = this.ioas
    if (ioas === null) throw new IommuError('ENOENT', 'access not attached')
    const done: { area: IoptArea; start: number; last: number }[] = []
    let at = 0
    try {
      const covered = ioas.iopt.forEachContigArea(iova, last, (area, cur, pieceLast) => {
        if (area.preventAccess || !contigAligned(area, cur, last)) {
          throw new IommuError('EINVAL', 'not page aligned or being unmapped')
        }
        if (!checkAreaProt(area, flags)) throw new IommuError('EPERM', 'area protection')
        const start = area.indexOf(cur)
        const end = area.indexOf(pieceLast)
        areaAddAccess(this.#ctx, area, start, end, out, at, flags)
        // `lock_area`: IOAS_UNMAP of a locked area is EBUSY until it is unpinned.
        if (lockArea) area.numLocks++
        done.push({ area, start, last: end })
        at += end - start + 1
      })
      if (!covered) throw new IommuError('ENOENT', 'range not fully mapped')
    } catch (e) {
      for (const d of done) {
        areaRemoveAccess(d.area, d.start, d.last)
        if (lockArea) d.area.numLocks--
      }
      throw e
    }
  }

  /**
   * Undo {@link pinPages} for exactly the same range (`iommufd_access_unpin_pages`);
   * internal accesses unlock the areas they locked.
   */
  unpinPages(iova: bigint, length: bigint, unlockArea = this.internal): void {
    const last = checkRange(iova, length)
    const ioas = this.ioasUnpin
    if (ioas === null) throw new Error('iommufd_access_unpin_pages: not attached')
    ioas.iopt.forEachContigArea(iova, last, (area, cur, pieceLast) => {
      areaRemoveAccess(area, area.indexOf(cur), area.indexOf(pieceLast))
      if (unlockArea) area.numLocks--
    })
  }

  /**
   * Copy `data.length` bytes to or from the IOAS at `iova` (`iommufd_access_rw`).
   *
   * @param flags - {@link IOMMUFD_ACCESS_RW_WRITE}, {@link IOMMUFD_ACCESS_RW_KTHREAD}
   * @param caller - the process making the call (`current`), or null for a kernel thread
   * @throws EINVAL, EOVERFLOW, ENOENT, EPERM, EFAULT
   */
  rw(iova: bigint, data: Uint8Array, flags = 0, caller: Process | null = null): void {
    const last = checkRange(iova, BigInt(data.length))
    const ioas = this.ioas
    if (ioas === null) throw new IommuError('ENOENT', 'access not attached')
    let off = 0
    const covered = ioas.iopt.forEachContigArea(iova, last, (area, cur, pieceLast) => {
      if (area.preventAccess) throw new IommuError('EINVAL', 'area is being unmapped')
      if (!checkAreaProt(area, flags)) throw new IommuError('EPERM', 'area protection')
      const n = Number(pieceLast - cur + 1n)
      pagesRwAccess(
        this.#ctx,
        area.pages as IoptPages,
        area.startByteOf(cur),
        data.subarray(off, off + n),
        flags,
        caller,
      )
      off += n
    })
    if (!covered) throw new IommuError('ENOENT', 'range not fully mapped')
  }
}

function checkRange(iova: bigint, length: bigint): bigint {
  if (length === 0n) throw new IommuError('EINVAL', 'length 0')
  const last = iova + length - 1n
  if (last > ULONG_MAX) throw new IommuError('EOVERFLOW', 'iova + length')
  return last
}

/** `iopt_area_contig_is_aligned`: pins work on whole CPU pages across areas. */
function contigAligned(area: IoptArea, cur: bigint, last: bigint): boolean {
  if (area.startByteOf(cur) % PAGE) return false
  if (last > area.last && area.startByteOf(area.last) % PAGE !== PAGE - 1n) return false
  return true
}

function checkAreaProt(area: IoptArea, flags: number): boolean {
  return (area.iommuProt & (flags & IOMMUFD_ACCESS_RW_WRITE ? Prot.WRITE : Prot.READ)) !== 0
}

/** `iommufd_access_change_ioas`. */
function changeIoas(access: IommufdAccess, next: Ioas | null): void {
  const cur = access.ioas
  if (cur !== access.ioasUnpin) throw new IommuError('EBUSY', 'racing detach')
  if (cur === next) return
  access.ioas = null
  if (next !== null) {
    try {
      next.iopt.addAccess(access)
    } catch (e) {
      access.ioas = cur
      throw e
    }
    next.users++
  }
  if (cur !== null) {
    access.ops.unmap?.(0n, ULONG_MAX)
    cur.iopt.removeAccess(access)
    cur.users--
  }
  access.ioas = next
  access.ioasUnpin = next
}

function changeIoasId(access: IommufdAccess, id: number): void {
  changeIoas(access, getIoas(access.ctx, id))
}

/**
 * Create an access (`iommufd_access_create`); it keeps the context open until it is
 * destroyed. Attach it with {@link IommufdAccess.attach}.
 *
 * @throws ENOMEM
 */
export function iommufdAccessCreate(ctx: IommufdCtx, ops: IommufdAccessOps): IommufdAccess {
  const access = ctx.objects.alloc(new IommufdAccess(ctx, ops))
  // The creating driver is a user until it destroys the access.
  access.users++
  ctx.refGet()
  ctx.objects.finalize(access)
  return access
}

/**
 * `iommufd_access_create_internal`: an access for iommufd's own use (a HW queue's pinned
 * memory). It does not hold the context; its creator destroys it with `release`.
 *
 * @throws ENOMEM
 */
export function iommufdAccessCreateInternal(ctx: IommufdCtx): IommufdAccess {
  const access = ctx.objects.alloc(new IommufdAccess(ctx, { needsPinPages: true }, true))
  access.users++
  ctx.objects.finalize(access)
  return access
}

/** `iopt_area_add_access`: record an exact-range pin and pin what is not pinned yet. */
function areaAddAccess(
  ctx: IommufdCtx,
  area: IoptArea,
  start: number,
  last: number,
  out: Int32Array,
  at: number,
  flags: number,
): void {
  const pages = area.pages as IoptPages
  if (flags & IOMMUFD_ACCESS_RW_WRITE && !pages.writable) {
    throw new IommuError('EPERM', 'read-only pages')
  }
  let rec = pages.accesses.find((a) => a.start === start && a.last === last)
  if (rec !== undefined) {
    rec.users++
  } else {
    if (ctx.machine.faults.shouldFail('iommufd:access_pin')) {
      throw new IommuError('ENOMEM', 'access pin record')
    }
    const pinned = pages.pinHoles(start, last)
    try {
      pages.updatePinned()
    } catch (e) {
      pages.unpinSpans(pinned)
      throw e
    }
    rec = { start, last, users: 1 }
    pages.accesses.push(rec)
  }
  area.numAccesses++
  ;(pages.pfns as PfnArray).copyTo(start, last - start + 1, out, at)
}

/** `iopt_area_remove_access`: drop a pin record user; the last unpins. */
function areaRemoveAccess(area: IoptArea, start: number, last: number): void {
  const pages = area.pages as IoptPages
  const i = pages.accesses.findIndex((a) => a.start === start && a.last === last)
  const rec = pages.accesses[i]
  if (rec === undefined) throw new Error('iopt_area_remove_access: no such pin record')
  area.numAccesses--
  if (--rec.users) return
  pages.accesses.splice(i, 1)
  pages.unpinUncovered(start, last)
  pages.updateUnpinned()
}

/**
 * `iopt_pages_rw_access`: copy through the source address space when the caller is the
 * source process, else through pinned (or temporarily pinned) pages.
 */
function pagesRwAccess(
  ctx: IommufdCtx,
  pages: IoptPages,
  startByte: bigint,
  buf: Uint8Array,
  flags: number,
  caller: Process | null,
): void {
  const write = (flags & IOMMUFD_ACCESS_RW_WRITE) !== 0
  if (write && !pages.writable) throw new IommuError('EPERM', 'read-only pages')
  const startIndex = Number(startByte / PAGE)
  const lastIndex = Number((startByte + BigInt(buf.length) - 1n) / PAGE)
  const src = pages.source
  const changeMm = caller !== pages.proc || (flags & IOMMUFD_ACCESS_RW_SLOW_PATH) !== 0
  if (src.type === 'user' && !(changeMm && !(flags & IOMMUFD_ACCESS_RW_KTHREAD))) {
    // The fast path: copy_{to,from}_user in the source address space.
    const va = src.uptr + startByte
    if (write) pages.proc.write(va, buf)
    else pages.proc.readInto(va, buf)
    return
  }
  if (
    src.type === 'user' &&
    startIndex === lastIndex &&
    ctx.machine.faults.shouldFail('iommufd:rw_page')
  ) {
    throw new IommuError('EINVAL', 'injected rw_page failure')
  }
  rwSlow(ctx, pages, startIndex, lastIndex, Number(startByte % PAGE), buf, write)
}

/** `iopt_pages_rw_slow`: pin what is not pinned, copy by physical address, unpin again. */
function rwSlow(
  ctx: IommufdCtx,
  pages: IoptPages,
  startIndex: number,
  lastIndex: number,
  offset: number,
  buf: Uint8Array,
  write: boolean,
): void {
  const temp = pages.pinHoles(startIndex, lastIndex)
  try {
    const pfns = pages.pfns as PfnArray
    const mem = ctx.machine.memory
    let done = 0
    let off = offset
    for (let i = startIndex; i <= lastIndex; i++) {
      const n = Math.min(FRAME_SIZE - off, buf.length - done)
      const pa = pfns.get(i) * FRAME_SIZE + off
      if (write) mem.writeBytes(pa, buf.subarray(done, done + n))
      else mem.readBytes(pa, buf.subarray(done, done + n))
      done += n
      off = 0
    }
  } finally {
    pages.unpinSpans(temp)
  }
}

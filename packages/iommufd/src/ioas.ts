/**
 * The IOAS object and its ioctls (`ioas.c`): IOAS_ALLOC, IOAS_IOVA_RANGES,
 * IOAS_ALLOW_IOVAS, IOAS_MAP, IOAS_MAP_FILE, IOAS_COPY, IOAS_UNMAP, IOMMU_OPTION and
 * IOAS_CHANGE_PROCESS, with the kernel's validation order (reference iommufd-uapi.md §2).
 *
 * @module
 */

import { FRAME_SIZE, IommuError, Memfd, Prot } from '@iommu/core'
import type { Caller, IommufdCtx } from './ctx.ts'
import { fdGet } from './fd-table.ts'
import type { HwptPaging } from './hw-pagetable.ts'
import type { Span } from './interval.ts'
import { IoPagetable, type PagesSlice, ULONG_MAX } from './io-pagetable.ts'
import { IommufdObject, ObjType } from './object.ts'
import { AccountMode, chargePinned, IoptPages, type PagesSource } from './pages.ts'
import {
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_OPTION_HUGE_PAGES,
  IOMMU_OPTION_OP_GET,
  IOMMU_OPTION_OP_SET,
  IOMMU_OPTION_RLIMIT_MODE,
  IOMMU_VFIO_IOAS_CLEAR,
  IOMMU_VFIO_IOAS_GET,
  IOMMU_VFIO_IOAS_SET,
} from './uapi/constants.ts'
import type {
  iommu_ioas_alloc,
  iommu_ioas_allow_iovas,
  iommu_ioas_change_process,
  iommu_ioas_copy,
  iommu_ioas_iova_ranges,
  iommu_ioas_map,
  iommu_ioas_map_file,
  iommu_ioas_unmap,
  iommu_option,
  iommu_vfio_ioas,
} from './uapi/structs.ts'
import type { Ucmd } from './ucmd.ts'

const MAP_FLAGS = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_READABLE
const PAGE = BigInt(FRAME_SIZE)
/** `SIZE_MAX - PAGE_SIZE`: the largest length a pages object accepts. */
const MAX_PAGES_LENGTH = ULONG_MAX - PAGE

/** `struct iommufd_ioas`. */
export class Ioas extends IommufdObject {
  readonly type = ObjType.IOAS
  readonly iopt: IoPagetable
  /** HWPT_PAGINGs linked to this IOAS, auto and manual (`hwpt_list`). */
  readonly hwptList: HwptPaging[] = []
  readonly #ctx: IommufdCtx

  constructor(ctx: IommufdCtx) {
    super()
    this.#ctx = ctx
    this.iopt = new IoPagetable(ctx.machine)
  }

  /** `iommufd_ioas_destroy`: unmap everything, drop test reservations and allowed ranges. */
  destroy(): void {
    this.iopt.unmapAll()
    this.iopt.removeReservedIova(null)
    this.iopt.setAllowIova([])
    if (this.#ctx.vfioIoas === this) this.#ctx.vfioIoas = null
    const left = this.iopt
    if (left.domains.length || left.accesses.length || left.areas.length || left.reserved.length) {
      throw new Error(`iommufd_ioas_destroy: IOAS ${this.id} still in use`)
    }
  }
}

/** `iommufd_get_ioas`. @throws ENOENT */
export function getIoas(ctx: IommufdCtx, id: number): Ioas {
  return ctx.get<Ioas>(id, ObjType.IOAS)
}

/** `iommufd_ioas_alloc`: a new reserved IOAS (finalize or abort it). @throws ENOMEM */
export function ioasAlloc(ctx: IommufdCtx): Ioas {
  return ctx.objects.alloc(new Ioas(ctx))
}

/** IOMMU_IOAS_ALLOC. */
export function iommufdIoasAllocIoctl(ucmd: Ucmd<iommu_ioas_alloc>): void {
  const { cmd, ctx } = ucmd
  if (cmd.flags) throw new IommuError('EOPNOTSUPP', 'flags')
  const ioas = ioasAlloc(ctx)
  cmd.out_ioas_id = ioas.id
  try {
    ucmd.respond()
  } catch (e) {
    ctx.objects.abortAndDestroy(ioas)
    throw e
  }
  ctx.objects.finalize(ioas)
}

/** Encode `iommu_iova_range`s (16 bytes each, little-endian). */
function rangeBytes(r: Span<bigint>): Uint8Array {
  const b = new Uint8Array(16)
  const v = new DataView(b.buffer)
  v.setBigUint64(0, r.start, true)
  v.setBigUint64(8, r.last, true)
  return b
}

/**
 * IOMMU_IOAS_IOVA_RANGES: the holes of the reserved tree; writes back the total count
 * and fails EMSGSIZE after that when the array was too small (reference §2.5).
 */
export function iommufdIoasIovaRanges(ucmd: Ucmd<iommu_ioas_iova_ranges>): void {
  const { cmd, ctx, caller } = ucmd
  if (cmd.__reserved) throw new IommuError('EOPNOTSUPP', '__reserved')
  const ioas = getIoas(ctx, cmd.ioas_id)
  const max = cmd.num_iovas
  const ranges = ioas.iopt.iovaRanges()
  cmd.num_iovas = 0
  cmd.out_iova_alignment = BigInt(ioas.iopt.iovaAlignment)
  for (const r of ranges) {
    if (cmd.num_iovas < max) {
      caller.proc.write(cmd.allowed_iovas + BigInt(cmd.num_iovas * 16), rangeBytes(r))
    }
    cmd.num_iovas++
  }
  ucmd.respond()
  if (cmd.num_iovas > max) throw new IommuError('EMSGSIZE', `${cmd.num_iovas} ranges > ${max}`)
}

/** IOMMU_IOAS_ALLOW_IOVAS: replace the allowed list atomically (reference §2.6). */
export function iommufdIoasAllowIovas(ucmd: Ucmd<iommu_ioas_allow_iovas>): void {
  const { cmd, ctx, caller } = ucmd
  if (cmd.__reserved) throw new IommuError('EOPNOTSUPP', '__reserved')
  const ioas = getIoas(ctx, cmd.ioas_id)
  const { list, error } = loadIovas(caller, cmd.allowed_iovas, cmd.num_iovas)
  // One allocation per range loaded, in order, before the range that fails.
  for (let i = 0; i < list.length; i++) {
    if (ctx.machine.faults.shouldFail('iommufd:allowed')) throw new IommuError('ENOMEM', 'allowed')
  }
  if (error !== null) throw error
  list.sort((a, b) => (a.start < b.start ? -1 : 1))
  ioas.iopt.setAllowIova(list)
}

/** Ranges read per `read` of the user array. */
const LOAD_CHUNK = 4096

/**
 * `iommufd_ioas_load_iovas`: the ranges in array order up to the first one that cannot
 * be read (EFAULT), is empty (EINVAL) or intersects an earlier one (EINVAL), and that
 * error. The kernel checks each range against an interval tree of the earlier ones; the
 * first intersecting index is found here by bisection over sorted prefixes, so that a
 * long array costs O(n log² n), not O(n²).
 */
function loadIovas(
  caller: Caller,
  uptr: bigint,
  num: number,
): { list: Span<bigint>[]; error: IommuError | null } {
  const list: Span<bigint>[] = []
  let error: IommuError | null = null
  outer: for (let i = 0; i < num; i += LOAD_CHUNK) {
    const n = Math.min(LOAD_CHUNK, num - i)
    let bytes: Uint8Array | null = null
    try {
      bytes = caller.proc.read(uptr + BigInt(i * 16), n * 16)
    } catch {
      // Some range of this chunk is unreadable: find which, one at a time.
    }
    for (let k = 0; k < n; k++) {
      let b: Uint8Array
      try {
        b =
          bytes?.subarray(k * 16, k * 16 + 16) ?? caller.proc.read(uptr + BigInt((i + k) * 16), 16)
      } catch {
        error = new IommuError('EFAULT', `allowed range ${i + k}`)
        break outer
      }
      const v = new DataView(b.buffer, b.byteOffset, 16)
      const start = v.getBigUint64(0, true)
      const last = v.getBigUint64(8, true)
      if (start >= last) {
        error = new IommuError('EINVAL', `allowed range ${i + k}: start >= last`)
        break outer
      }
      list.push({ start, last })
    }
  }
  const clash = firstIntersecting(list)
  if (clash < 0) return { list, error }
  return {
    list: list.slice(0, clash),
    error: new IommuError('EINVAL', `allowed range ${clash} intersects an earlier one`),
  }
}

/** The smallest index whose range intersects an earlier one, or -1. */
function firstIntersecting(list: readonly Span<bigint>[]): number {
  const disjoint = (n: number): boolean => {
    const s = list.slice(0, n).sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0))
    for (let i = 1; i < s.length; i++)
      if ((s[i] as Span<bigint>).start <= (s[i - 1] as Span<bigint>).last) return false
    return true
  }
  if (disjoint(list.length)) return -1
  // The longest disjoint prefix ends just before the first clash.
  let lo = 1
  let hi = list.length
  while (lo < hi) {
    const mid = (lo + hi + 1) >>> 1
    if (disjoint(mid)) lo = mid
    else hi = mid - 1
  }
  return lo
}

/** `conv_iommu_prot`: IOMMU_CACHE always (coherent DMA is mandatory), plus R/W. */
function convIommuProt(flags: number): number {
  let prot = Prot.CACHE
  if (flags & IOMMU_IOAS_MAP_WRITEABLE) prot |= Prot.WRITE
  if (flags & IOMMU_IOAS_MAP_READABLE) prot |= Prot.READ
  return prot
}

/** The MAP/MAP_FILE/COPY flag checks shared by the three ioctls. */
function checkMapFlags(flags: number, u64s: readonly bigint[], reserved: number): void {
  if (flags & ~MAP_FLAGS || reserved) throw new IommuError('EOPNOTSUPP', 'flags or __reserved')
  if (u64s.some((v) => v >= ULONG_MAX)) throw new IommuError('EOVERFLOW', 'IOVA or length')
  if (!(flags & (IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_READABLE))) {
    throw new IommuError('EINVAL', 'neither READABLE nor WRITEABLE')
  }
}

/**
 * `iopt_alloc_pages`: a pages object for `length` bytes starting `startByte` into its
 * first page, charged in USER mode unless the caller has CAP_IPC_LOCK.
 *
 * @throws EINVAL - length 0 or too large; ENOMEM
 */
function allocPages(
  ctx: IommufdCtx,
  caller: Caller,
  source: PagesSource,
  startByte: number,
  length: bigint,
  writable: boolean,
): IoptPages {
  if (length > MAX_PAGES_LENGTH || length === 0n) throw new IommuError('EINVAL', 'length')
  if (ctx.machine.faults.shouldFail('iommufd:pages')) throw new IommuError('ENOMEM', 'pages')
  const npages = Number((length + BigInt(startByte) + PAGE - 1n) / PAGE)
  const mode = caller.cred.CAP_IPC_LOCK ? AccountMode.NONE : AccountMode.USER
  return new IoptPages(ctx.machine, source, npages, writable, mode)
}

/**
 * `iopt_map_user_pages`/`iopt_map_file_pages` after their own checks: a pages object for
 * the source, mapped by `iopt_map_common` with the context's accounting mode; writes the
 * IOVA back.
 */
function mapSource(
  ucmd: Ucmd<{ flags: number; length: bigint; iova: bigint }>,
  ioas: Ioas,
  source: PagesSource,
  startByte: number,
): void {
  const { cmd, ctx, caller } = ucmd
  const writable = (cmd.flags & IOMMU_IOAS_MAP_WRITEABLE) !== 0
  const pages = allocPages(ctx, caller, source, startByte, cmd.length, writable)
  if (ctx.accountMode === AccountMode.MM && pages.accountMode === AccountMode.USER) {
    pages.accountMode = AccountMode.MM
  }
  const fixed = cmd.flags & IOMMU_IOAS_MAP_FIXED_IOVA ? cmd.iova : null
  try {
    cmd.iova = ioas.iopt.mapPages(
      [{ pages, startByte: BigInt(startByte), length: cmd.length }],
      cmd.length,
      fixed,
      convIommuProt(cmd.flags),
    )
  } catch (e) {
    pages.put()
    throw e
  }
  ucmd.respond()
}

/** IOMMU_IOAS_MAP (reference §2.7). */
export function iommufdIoasMap(ucmd: Ucmd<iommu_ioas_map>): void {
  const { cmd, ctx, caller } = ucmd
  checkMapFlags(cmd.flags, [cmd.iova, cmd.length], cmd.__reserved)
  const ioas = getIoas(ctx, cmd.ioas_id)
  // iopt_alloc_user_pages
  if (cmd.user_va + cmd.length > ULONG_MAX) throw new IommuError('EOVERFLOW', 'user_va + length')
  const startByte = Number(cmd.user_va % PAGE)
  const uptr = cmd.user_va - BigInt(startByte)
  mapSource(ucmd, ioas, { type: 'user', proc: caller.proc, uptr }, startByte)
}

/** IOMMU_IOAS_MAP_FILE (reference §2.8): memfds only. */
export function iommufdIoasMapFile(ucmd: Ucmd<iommu_ioas_map_file>): void {
  const { cmd, ctx, caller } = ucmd
  checkMapFlags(cmd.flags, [cmd.iova, cmd.length], 0)
  const ioas = getIoas(ctx, cmd.ioas_id)
  // iopt_map_file_pages
  if (cmd.length === 0n) throw new IommuError('EINVAL', 'length 0')
  if (cmd.start + cmd.length - 1n > ULONG_MAX) throw new IommuError('EOVERFLOW', 'start + length')
  const startByte = Number(cmd.start % PAGE)
  const file = fdGet(caller.proc, cmd.fd)
  if (file === undefined) throw new IommuError('EBADF', `fd ${cmd.fd}`)
  // Only shmem-like files can be pinned (memfd_pin_folios).
  if (!(file instanceof Memfd)) throw new IommuError('EINVAL', `fd ${cmd.fd} is not a memfd`)
  const start = cmd.start - BigInt(startByte)
  mapSource(ucmd, ioas, { type: 'file', proc: caller.proc, file, start }, startByte)
}

/** IOMMU_IOAS_COPY: share the source's pinned pages at a new IOVA (reference §2.9). */
export function iommufdIoasCopy(ucmd: Ucmd<iommu_ioas_copy>): void {
  const { cmd, ctx } = ucmd
  checkMapFlags(cmd.flags, [cmd.length, cmd.src_iova, cmd.dst_iova], 0)
  const src = getIoas(ctx, cmd.src_ioas_id)
  const slices: PagesSlice[] = src.iopt.getPages(cmd.src_iova, cmd.length)
  try {
    const dst = getIoas(ctx, cmd.dst_ioas_id)
    const fixed = cmd.flags & IOMMU_IOAS_MAP_FIXED_IOVA ? cmd.dst_iova : null
    cmd.dst_iova = dst.iopt.mapPages(slices, cmd.length, fixed, convIommuProt(cmd.flags))
  } catch (e) {
    for (const s of slices) s.pages.put()
    throw e
  }
  ucmd.respond()
}

/** IOMMU_IOAS_UNMAP: whole areas only; (0, U64_MAX) unmaps everything (reference §2.10). */
export function iommufdIoasUnmap(ucmd: Ucmd<iommu_ioas_unmap>): void {
  const { cmd, ctx } = ucmd
  const ioas = getIoas(ctx, cmd.ioas_id)
  let unmapped: bigint
  if (cmd.iova === 0n && cmd.length === ULONG_MAX) {
    unmapped = ioas.iopt.unmapAll()
  } else {
    if (cmd.iova >= ULONG_MAX || cmd.length >= ULONG_MAX) {
      throw new IommuError('EOVERFLOW', 'IOVA or length')
    }
    unmapped = ioas.iopt.unmapIova(cmd.iova, cmd.length)
    if (unmapped === 0n) throw new IommuError('ENOENT', 'nothing mapped in the range')
  }
  cmd.length = unmapped
  ucmd.respond()
}

/** IOMMU_OPTION (reference §2.11): RLIMIT_MODE (global) and HUGE_PAGES (per IOAS). */
export function iommufdOption(ucmd: Ucmd<iommu_option>): void {
  const { cmd, ctx, caller } = ucmd
  if (cmd.__reserved) throw new IommuError('EOPNOTSUPP', '__reserved')
  if (cmd.option_id === IOMMU_OPTION_RLIMIT_MODE) {
    if (cmd.object_id) throw new IommuError('EOPNOTSUPP', 'object_id')
    if (cmd.op === IOMMU_OPTION_OP_GET) {
      cmd.val64 = ctx.accountMode === AccountMode.MM ? 1n : 0n
    } else if (cmd.op === IOMMU_OPTION_OP_SET) {
      if (!caller.cred.CAP_SYS_RESOURCE) throw new IommuError('EPERM', 'CAP_SYS_RESOURCE')
      if (!ctx.objects.empty) throw new IommuError('EBUSY', 'objects exist')
      if (cmd.val64 === 0n) ctx.accountMode = AccountMode.USER
      else if (cmd.val64 === 1n) ctx.accountMode = AccountMode.MM
      else throw new IommuError('EINVAL', `val64 ${cmd.val64}`)
    } else {
      throw new IommuError('EOPNOTSUPP', `op ${cmd.op}`)
    }
  } else if (cmd.option_id === IOMMU_OPTION_HUGE_PAGES) {
    const ioas = getIoas(ctx, cmd.object_id)
    if (cmd.op === IOMMU_OPTION_OP_GET) {
      cmd.val64 = ioas.iopt.disableLargePages ? 0n : 1n
    } else if (cmd.op === IOMMU_OPTION_OP_SET) {
      if (cmd.val64 === 0n) ioas.iopt.setDisableLargePages()
      else if (cmd.val64 === 1n) ioas.iopt.setEnableLargePages()
      else throw new IommuError('EINVAL', `val64 ${cmd.val64}`)
    } else {
      throw new IommuError('EOPNOTSUPP', `op ${cmd.op}`)
    }
  } else {
    throw new IommuError('EOPNOTSUPP', `option ${cmd.option_id}`)
  }
  ucmd.respond(['val64'])
}

/** Whether the pages' charge must move to `caller` (`need_charge_update`). */
function needChargeUpdate(pages: IoptPages, caller: Caller): boolean {
  switch (pages.accountMode) {
    case AccountMode.NONE:
      return false
    case AccountMode.MM:
      return pages.proc.mm !== caller.proc.mm
    default:
      return pages.proc.user !== caller.proc.user || pages.proc.mm !== caller.proc.mm
  }
}

/**
 * IOMMU_IOAS_CHANGE_PROCESS: move the charge of every (file-backed) pages object of every
 * IOAS to the caller (reference §2.21).
 */
export function iommufdIoasChangeProcess(ucmd: Ucmd<iommu_ioas_change_process>): void {
  const { cmd, ctx, caller } = ucmd
  if (cmd.__reserved) throw new IommuError('EOPNOTSUPP', '__reserved')
  const areas = [...ctx.objects.objects()]
    .filter((o): o is Ioas => o.type === ObjType.IOAS)
    .flatMap((ioas) => ioas.iopt.areas)
  for (const a of areas) {
    if (a.pages === null) throw new IommuError('EBUSY', 'area under construction')
    if (a.pages.type !== 'file') throw new IommuError('EINVAL', 'a map is not a file map')
  }
  // Count each pages object once: its charge moves whole.
  const all = [0, 0, 0]
  const counted = new Set<IoptPages>()
  for (const a of areas) {
    const p = a.src
    if (counted.has(p) || !needChargeUpdate(p, caller)) continue
    counted.add(p)
    all[p.accountMode] = (all[p.accountMode] as number) + p.lastNpinned
  }
  const charged: number[] = []
  try {
    for (const mode of [AccountMode.NONE, AccountMode.USER, AccountMode.MM]) {
      const n = all[mode] as number
      if (!n) continue
      chargePinned(mode, caller.proc, n, true)
      charged.push(mode)
    }
  } catch (e) {
    for (const mode of charged)
      chargePinned(mode as AccountMode, caller.proc, all[mode] as number, false)
    throw e
  }
  for (const p of counted) {
    chargePinned(p.accountMode, p.proc, p.lastNpinned, false)
    p.proc = caller.proc
  }
}

/** IOMMU_VFIO_IOAS (reference §2.12): get, set or clear the IOAS of the VFIO compat ioctls. */
export function iommufdVfioIoas(ucmd: Ucmd<iommu_vfio_ioas>): void {
  const { cmd, ctx } = ucmd
  if (cmd.__reserved) throw new IommuError('EOPNOTSUPP', '__reserved')
  switch (cmd.op) {
    case IOMMU_VFIO_IOAS_GET: {
      if (ctx.vfioIoas === null) throw new IommuError('ENODEV', 'no compat IOAS')
      cmd.ioas_id = ctx.vfioIoas.id
      ucmd.respond()
      return
    }
    case IOMMU_VFIO_IOAS_SET:
      ctx.vfioIoas = getIoas(ctx, cmd.ioas_id)
      return
    case IOMMU_VFIO_IOAS_CLEAR:
      ctx.vfioIoas = null
      return
    default:
      throw new IommuError('EOPNOTSUPP', `op ${cmd.op}`)
  }
}

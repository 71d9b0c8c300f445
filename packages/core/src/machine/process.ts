/**
 * Simulated processes: user address spaces backed by physical frames, page pinning, and
 * memfd-like file objects.
 *
 * Anonymous memory is populated on first touch (a read of an untouched page sees zeros
 * without allocating, as with the kernel's zero page). Like transparent huge pages, an
 * anonymous mapping is populated with 2 MiB-aligned physically contiguous 512-frame runs
 * wherever a whole aligned 2 MiB block lies inside it, so that IOMMU mappings of it can
 * use 2 MiB IOPTEs; `hugepage: false` turns that off.
 *
 * Virtual addresses are `number`s (user space is below 2^47). The pinned-page counters on
 * {@link Mm} and {@link UserStruct} are what iommufd's accounting updates; GUP itself does
 * not account, as in the kernel.
 *
 * @module
 */

import { IommuError } from '../errno.ts'
import { FRAME_SIZE, FramePurpose, type PhysicalMemory } from './memory.ts'
import { PfnArray } from './pfn-array.ts'

/** Mapping protection: readable. */
export const PROT_READ = 1
/** Mapping protection: writable. */
export const PROT_WRITE = 2
/** Mapping protection: executable (`VM_EXEC`; drivers may refuse it). */
export const PROT_EXEC = 4
/** `mmap` flag: changes are shared with the file (`VM_SHARED`). */
export const MAP_SHARED = 0x01
/** `mmap` flag: a private copy-on-write mapping. */
export const MAP_PRIVATE = 0x02

const HUGE_PAGES = 512
const HUGE_SIZE = HUGE_PAGES * FRAME_SIZE
/** Top of the user address space mmap allocates below (x86-64 47-bit, minus a guard). */
const MMAP_TOP = 0x7fff_0000_0000
/** `TASK_SIZE` of x86-64 with 4-level paging: no mapping reaches past it. */
const TASK_SIZE = 0x7fff_ffff_f000

/**
 * A page array of `n` entries; ENOMEM when the host cannot hold it (the model keeps one
 * PFN per page of a mapping or a file, so a huge sparse object costs real memory).
 */
function allocPfns(n: number, what: string): Int32Array<ArrayBuffer> {
  try {
    return new Int32Array(n)
  } catch {
    throw new IommuError('ENOMEM', `${what}: ${n} pages`)
  }
}

/**
 * The page array of a mapping of `n` pages; ENOMEM when the host cannot hold it (a PFN per
 * page for memory populated page by page).
 */
function allocPageArray(n: number): PfnArray {
  // The model's page arrays index up to 2^32 pages (16 TiB), as a typed array does.
  if (n > MAX_ARRAY_PAGES) throw new IommuError('ENOMEM', `mmap: ${n} pages`)
  try {
    return new PfnArray(n)
  } catch {
    throw new IommuError('ENOMEM', `mmap: ${n} pages`)
  }
}
const MAX_ARRAY_PAGES = 2 ** 32

/** `npages` must be a page count that fits `out` from `outOffset` (EINVAL otherwise). */
function checkCount(npages: number, out: Int32Array | PfnArray, outOffset: number): void {
  if (
    !Number.isSafeInteger(npages) ||
    npages < 0 ||
    !Number.isSafeInteger(outOffset) ||
    outOffset < 0 ||
    outOffset + npages > out.length
  ) {
    throw new IommuError('EINVAL', `${npages} pages into an array of ${out.length}`)
  }
}
const MMAP_BOTTOM = 0x1_0000_0000

/** A memfd-like anonymous file: pages owned by the file, shared by its mappings. */
export class Memfd {
  /** The name given at creation (`memfd_create(name)`). */
  readonly name: string
  /** File size in bytes. */
  size = 0
  #pages = new Int32Array(0)
  #closed = false
  #mapCount = 0
  readonly #memory: PhysicalMemory

  constructor(memory: PhysicalMemory, name: string) {
    this.#memory = memory
    this.name = name
  }

  /**
   * Set the file size (`ftruncate`). Shrinking drops the pages beyond the new end.
   *
   * @throws EINVAL for a negative size; EBADF when closed
   */
  ftruncate(size: number): void {
    if (this.#closed) throw new IommuError('EBADF', `memfd ${this.name} is closed`)
    if (!Number.isInteger(size) || size < 0) throw new IommuError('EINVAL', `bad size ${size}`)
    const pages = Math.ceil(size / FRAME_SIZE)
    if (pages < this.#pages.length) {
      for (let i = pages; i < this.#pages.length; i++) {
        const pfn = this.#pages[i] as number
        if (pfn !== 0) this.#memory.put(pfn)
      }
      this.#pages = this.#pages.slice(0, pages)
    } else if (pages > this.#pages.length) {
      const grown = allocPfns(pages, `memfd ${this.name}`)
      grown.set(this.#pages)
      this.#pages = grown
    }
    this.size = size
  }

  /** Number of pages in the file. */
  get pageCount(): number {
    return this.#pages.length
  }

  /**
   * The frame of file page `index`, allocating it when `alloc` (else 0 when absent).
   *
   * @throws EFAULT - beyond the end of the file
   */
  page(index: number, alloc: boolean): number {
    if (index < 0 || index >= this.#pages.length) {
      throw new IommuError('EFAULT', `memfd ${this.name}: page ${index} beyond EOF`)
    }
    let pfn = this.#pages[index] as number
    if (pfn === 0 && alloc) {
      pfn = this.#memory.allocFrame(FramePurpose.USER)
      this.#pages[index] = pfn
    }
    return pfn
  }

  /** Close the file descriptor; the pages go when the last mapping goes too. */
  close(): void {
    this.#closed = true
    this.#maybeRelease()
  }

  /** @internal a mapping was created. */
  addMap(): void {
    this.#mapCount++
  }

  /** @internal a mapping was removed. */
  dropMap(): void {
    this.#mapCount--
    this.#maybeRelease()
  }

  get closed(): boolean {
    return this.#closed
  }

  #maybeRelease(): void {
    if (!this.#closed || this.#mapCount > 0) return
    for (let i = 0; i < this.#pages.length; i++) {
      const pfn = this.#pages[i] as number
      if (pfn !== 0) this.#memory.put(pfn)
    }
    this.#pages = new Int32Array(0)
  }
}

/** One mapping of the address space. */
interface Vma {
  start: number
  end: number
  readonly prot: number
  readonly file: Memfd | null
  /** File page of `start` (file mappings). */
  pgoff: number
  /** PFN of each page, 0 = not populated (anonymous mappings). */
  pages: PfnArray | null
  readonly hugepage: boolean
  /** Device frames (`VM_PFNMAP`): not the process's memory, never pinned. */
  readonly pfnmap: boolean
  /** The mapping's `vm_operations_struct`, if any. */
  readonly ops: VmOps | null
}

/**
 * Callbacks of a device mapping (`struct vm_operations_struct`): `open` runs for each new
 * piece when a munmap splits the mapping, `close` for each piece that goes.
 */
export interface VmOps {
  open?(): void
  close?(): void
}

/** Options of {@link Process.mmap}. */
export interface MmapOptions {
  /** Map this file (MAP_SHARED); anonymous private memory when absent. */
  readonly file?: Memfd
  /** Offset in the file, page aligned. */
  readonly offset?: number
  /** `PROT_READ | PROT_WRITE` by default. */
  readonly prot?: number
  /** Place the mapping exactly here (MAP_FIXED_NOREPLACE); EEXIST if it overlaps. */
  readonly addr?: number
  /** Populate every page now (MAP_POPULATE). */
  readonly populate?: boolean
  /** Back anonymous memory with 2 MiB-aligned contiguous runs (THP). Default true. */
  readonly hugepage?: boolean
  /**
   * Map physical frames from `pfn` on (`io_remap_pfn_range` in a driver's `mmap`): device
   * memory such as a vIOMMU's MMIO page. Such pages cannot be pinned (EFAULT). `ops.close`
   * runs when the mapping (or a piece of it) goes.
   */
  readonly pfnmap?: { readonly pfn: number; readonly ops?: VmOps }
}

/** Per-user accounting (`struct user_struct`) and the RLIMIT_MEMLOCK that bounds it. */
export class UserStruct {
  /** Pages charged to the user's locked_vm. */
  lockedVm = 0
  /** RLIMIT_MEMLOCK in bytes; Infinity = unlimited. */
  rlimitMemlock: number

  constructor(rlimitMemlock = Number.POSITIVE_INFINITY) {
    this.rlimitMemlock = rlimitMemlock
  }
}

/** Per-address-space counters (`struct mm_struct`). */
export class Mm {
  /** Pages charged to the mm's pinned_vm. */
  pinnedVm = 0
  /** Pages charged to the mm's locked_vm. */
  lockedVm = 0
}

/** Options of {@link Process}. */
export interface ProcessOptions {
  /** The user the process runs as (shared accounting); a fresh one by default. */
  readonly user?: UserStruct
  /** RLIMIT_MEMLOCK in bytes for a fresh user. */
  readonly rlimitMemlock?: number
}

let nextPid = 1000

function toVa(addr: number | bigint): number {
  const v = typeof addr === 'bigint' ? Number(addr) : addr
  if (!Number.isSafeInteger(v) || v < 0 || BigInt(v) !== BigInt(addr)) {
    throw new IommuError('EFAULT', `bad user address ${addr}`)
  }
  return v
}

/** A user process of the simulated machine. */
export class Process {
  /** Process ID. */
  readonly pid: number
  /** The user the process runs as. */
  readonly user: UserStruct
  /** The address space's counters. */
  readonly mm: Mm = new Mm()
  readonly #memory: PhysicalMemory
  /** Mappings sorted by start. */
  readonly #vmas: Vma[] = []
  #exited = false

  constructor(memory: PhysicalMemory, options: ProcessOptions = {}) {
    this.#memory = memory
    this.pid = nextPid++
    this.user = options.user ?? new UserStruct(options.rlimitMemlock)
  }

  /** Create a memfd-like file (`memfd_create`). */
  memfdCreate(name: string): Memfd {
    return new Memfd(this.#memory, name)
  }

  /**
   * Map `length` bytes (rounded up to pages) and return the address (`mmap`).
   *
   * @throws EINVAL - zero length or unaligned fixed address/offset; EEXIST - a fixed
   *   address overlaps a mapping; ENOMEM - no room left in the address space or for
   *   populating
   */
  mmap(length: number, options: MmapOptions = {}): number {
    this.#alive()
    if (!Number.isSafeInteger(length) || length <= 0) throw new IommuError('EINVAL', 'length')
    const size = Math.ceil(length / FRAME_SIZE) * FRAME_SIZE
    const offset = options.offset ?? 0
    if (!Number.isSafeInteger(offset) || offset < 0 || offset % FRAME_SIZE !== 0) {
      throw new IommuError('EINVAL', `bad file offset ${offset}`)
    }
    let start: number
    if (options.addr !== undefined) {
      start = options.addr
      if (!Number.isSafeInteger(start) || start % FRAME_SIZE !== 0) {
        throw new IommuError('EINVAL', `unaligned fixed address ${start}`)
      }
      // Outside the user address space (get_unmapped_area): ENOMEM.
      if (start < 0 || start + size > TASK_SIZE) throw new IommuError('ENOMEM', 'fixed address')
      if (this.#overlaps(start, start + size)) throw new IommuError('EEXIST', 'fixed address busy')
    } else {
      start = this.#findGap(size, size >= HUGE_SIZE ? HUGE_SIZE : FRAME_SIZE)
    }
    const file = options.file ?? null
    const pfnmap = options.pfnmap
    const prot = options.prot ?? PROT_READ | PROT_WRITE
    // A private writable anonymous mapping is committed memory: with the default
    // overcommit heuristic (__vm_enough_memory, OVERCOMMIT_GUESS) one larger than all of
    // RAM fails.
    if (
      file === null &&
      pfnmap === undefined &&
      (prot & PROT_WRITE) !== 0 &&
      size / FRAME_SIZE > this.#memory.totalFrames
    ) {
      throw new IommuError('ENOMEM', `mmap of ${size} bytes: more than RAM`)
    }
    const vma: Vma = {
      start,
      end: start + size,
      prot,
      file,
      pgoff: offset / FRAME_SIZE,
      pages: file === null ? allocPageArray(size / FRAME_SIZE) : null,
      hugepage: options.hugepage ?? true,
      pfnmap: pfnmap !== undefined,
      ops: pfnmap?.ops ?? null,
    }
    if (pfnmap !== undefined && vma.pages !== null) {
      for (let i = 0; i < vma.pages.length; i++) this.#memory.get(pfnmap.pfn + i)
      vma.pages.setRun(0, vma.pages.length, pfnmap.pfn)
    }
    file?.addMap()
    this.#insert(vma)
    if (options.populate) this.#populate(vma, 0, size / FRAME_SIZE)
    return start
  }

  /**
   * Unmap [addr, addr + length) (`munmap`), splitting mappings as needed. Pages still
   * pinned stay allocated until unpinned.
   *
   * @throws EINVAL - unaligned address or zero length
   */
  munmap(addr: number | bigint, length: number): void {
    const start = toVa(addr)
    if (start % FRAME_SIZE !== 0 || !Number.isSafeInteger(length) || length <= 0) {
      throw new IommuError('EINVAL', 'munmap range')
    }
    const end = start + Math.ceil(length / FRAME_SIZE) * FRAME_SIZE
    for (let i = 0; i < this.#vmas.length; ) {
      const v = this.#vmas[i] as Vma
      if (v.end <= start || v.start >= end) {
        i++
        continue
      }
      const cutS = Math.max(start, v.start)
      const cutE = Math.min(end, v.end)
      this.#dropPages(v, (cutS - v.start) / FRAME_SIZE, (cutE - cutS) / FRAME_SIZE)
      const pieces: Vma[] = []
      if (v.start < cutS) pieces.push(this.#slice(v, v.start, cutS))
      if (cutE < v.end) pieces.push(this.#slice(v, cutE, v.end))
      for (const p of pieces) {
        p.file?.addMap()
        p.ops?.open?.()
      }
      v.file?.dropMap()
      v.ops?.close?.()
      this.#vmas.splice(i, 1, ...pieces)
      i += pieces.length
    }
  }

  /**
   * Read `length` bytes at `addr`; untouched pages read as zeros.
   *
   * @throws EFAULT - not mapped; EINVAL - `length` is no byte count; ENOMEM - the host
   *   cannot hold the bytes
   */
  read(addr: number | bigint, length: number): Uint8Array {
    if (!Number.isSafeInteger(length) || length < 0) throw new IommuError('EINVAL', 'length')
    const va = toVa(addr)
    // Fault before allocating: a length far past the mapping is EFAULT, not a huge buffer.
    this.#access(va, length, false, () => {})
    let out: Uint8Array
    try {
      out = new Uint8Array(length)
    } catch {
      throw new IommuError('ENOMEM', `${length}-byte read`)
    }
    this.readInto(va, out)
    return out
  }

  /** Read `dst.length` bytes at `addr` into `dst`. @throws EFAULT */
  readInto(addr: number | bigint, dst: Uint8Array): void {
    this.#access(toVa(addr), dst.length, false, (pfn, off, done, n) => {
      if (pfn === 0) dst.fill(0, done, done + n)
      else this.#memory.readBytes(pfn * FRAME_SIZE + off, dst.subarray(done, done + n))
    })
  }

  /** Write `src` at `addr`, populating pages. @throws EFAULT (unmapped or read-only) */
  write(addr: number | bigint, src: Uint8Array): void {
    this.#access(toVa(addr), src.length, true, (pfn, off, done, n) => {
      this.#memory.writeBytes(pfn * FRAME_SIZE + off, src.subarray(done, done + n))
    })
  }

  /**
   * Pin `npages` pages from page-aligned `addr` for long-term DMA
   * (`pin_user_pages(FOLL_LONGTERM)`), populating them, and write their PFNs to
   * `out[outOffset ...]`. Does not account: the caller charges locked/pinned VM.
   *
   * @throws EFAULT - part of the range is unmapped, or `write` on a read-only mapping;
   *   ENOMEM - populating failed. Nothing stays pinned on failure.
   */
  pinUserPages(
    addr: number | bigint,
    npages: number,
    write: boolean,
    out: Int32Array | PfnArray,
    outOffset = 0,
  ): void {
    const start = toVa(addr)
    if (start % FRAME_SIZE !== 0) throw new IommuError('EINVAL', 'unaligned pin address')
    checkCount(npages, out, outOffset)
    const mem = this.#memory
    // Runs pinned so far (first PFN, count), to undo on failure.
    const done: number[] = []
    let at = outOffset
    const pinRun = (pfn: number, n: number) => {
      mem.pinRange(pfn, n)
      done.push(pfn, n)
    }
    try {
      this.#walk(start, npages, write, (v, first, count) => {
        // pin_user_pages() refuses VM_PFNMAP/VM_IO mappings.
        if (v.pfnmap) throw new IommuError('EFAULT', 'device mapping cannot be pinned')
        if (v.pages !== null) {
          const pages = v.pages
          this.#populate(v, first, count)
          // Whole physically contiguous runs at a time.
          for (let k = first; k < first + count; ) {
            const e = pages.runEnd(k, first + count)
            pinRun(pages.get(k), e - k)
            k = e
          }
          pages.copyTo(first, count, out, at)
          at += count
        } else {
          const f = v.file as Memfd
          for (let k = 0; k < count; k++) {
            const pfn = f.page(v.pgoff + first + k, true)
            pinRun(pfn, 1)
            if (out instanceof PfnArray) out.set(at++, pfn)
            else out[at++] = pfn
          }
        }
      })
    } catch (e) {
      for (let k = 0; k < done.length; k += 2) {
        mem.unpinRange(done[k] as number, done[k + 1] as number)
      }
      throw e
    }
  }

  /** Drop one pin from each of `count` frames in `pfns[offset ...]`. */
  unpinPages(pfns: Int32Array | PfnArray, count: number, offset = 0): void {
    const mem = this.#memory
    if (pfns instanceof PfnArray) {
      for (let k = offset; k < offset + count; ) {
        const e = pfns.runEnd(k, offset + count)
        mem.unpinRange(pfns.get(k), e - k)
        k = e
      }
      return
    }
    for (let k = 0; k < count; k++) mem.unpin(pfns[offset + k] as number)
  }

  /**
   * The frame behind the page at `addr`, populating it when `populate` (else 0 for an
   * untouched anonymous page).
   *
   * @throws EFAULT - not mapped
   */
  pageFrame(addr: number | bigint, populate: boolean): number {
    let pfn = 0
    this.#walk(Math.floor(toVa(addr) / FRAME_SIZE) * FRAME_SIZE, 1, false, (v, first) => {
      if (v.pages !== null) {
        if (populate) this.#populate(v, first, 1)
        pfn = v.pages.get(first)
      } else {
        pfn = (v.file as Memfd).page(v.pgoff + first, populate)
      }
    })
    return pfn
  }

  /**
   * The frames behind `npages` pages from page-aligned `addr`, written to
   * `out[outOffset ...]` without pinning (what a VMM reads through its own mapping of guest
   * memory). Untouched anonymous pages give 0 unless `populate`.
   *
   * @throws EFAULT - part of the range is unmapped
   */
  pageFrames(
    addr: number | bigint,
    npages: number,
    populate: boolean,
    out: Int32Array | PfnArray,
    outOffset = 0,
  ): void {
    const start = toVa(addr)
    if (start % FRAME_SIZE !== 0) throw new IommuError('EINVAL', 'unaligned address')
    checkCount(npages, out, outOffset)
    let done = 0
    this.#walk(start, npages, false, (v, first, count) => {
      if (v.pages !== null) {
        if (populate) this.#populate(v, first, count)
        v.pages.copyTo(first, count, out, outOffset + done)
        done += count
      } else {
        const f = v.file as Memfd
        for (let k = 0; k < count; k++) {
          const pfn = f.page(v.pgoff + first + k, populate)
          if (out instanceof PfnArray) out.set(outOffset + done++, pfn)
          else out[outOffset + done++] = pfn
        }
      }
    })
  }

  /** True when [addr, addr + length) is fully mapped (with write access if `write`). */
  isMapped(addr: number, length: number, write = false): boolean {
    try {
      const s = Math.floor(addr / FRAME_SIZE) * FRAME_SIZE
      this.#walk(s, Math.ceil((addr + length - s) / FRAME_SIZE), write, () => {})
      return true
    } catch {
      return false
    }
  }

  /** Tear down the address space (`exit`): every mapping goes. */
  exit(): void {
    for (const v of this.#vmas) {
      this.#dropPages(v, 0, (v.end - v.start) / FRAME_SIZE)
      v.file?.dropMap()
      v.ops?.close?.()
    }
    this.#vmas.length = 0
    this.#exited = true
  }

  // ------------------------------------------------------------------ internals

  #alive(): void {
    if (this.#exited) throw new IommuError('ESRCH', `process ${this.pid} has exited`)
  }

  #overlaps(start: number, end: number): boolean {
    return this.#vmas.some((v) => v.start < end && start < v.end)
  }

  #findGap(size: number, align: number): number {
    let top = MMAP_TOP
    for (let i = this.#vmas.length - 1; i >= -1; i--) {
      const below = i >= 0 ? (this.#vmas[i] as Vma).end : MMAP_BOTTOM
      const start = Math.floor((top - size) / align) * align
      if (start >= below) return start
      if (i >= 0) top = Math.min(top, (this.#vmas[i] as Vma).start)
    }
    throw new IommuError('ENOMEM', 'address space exhausted')
  }

  #insert(vma: Vma): void {
    let i = 0
    while (i < this.#vmas.length && (this.#vmas[i] as Vma).start < vma.start) i++
    this.#vmas.splice(i, 0, vma)
  }

  #slice(v: Vma, start: number, end: number): Vma {
    const first = (start - v.start) / FRAME_SIZE
    const count = (end - start) / FRAME_SIZE
    return {
      start,
      end,
      prot: v.prot,
      file: v.file,
      pgoff: v.pgoff + first,
      pages: v.pages === null ? null : v.pages.slice(first, first + count),
      hugepage: v.hugepage,
      pfnmap: v.pfnmap,
      ops: v.ops,
    }
  }

  #dropPages(v: Vma, first: number, count: number): void {
    const pages = v.pages
    if (pages === null) return
    // Whole physically contiguous runs at a time, as put_page of each page in order.
    for (let k = first; k < first + count; ) {
      const pfn = pages.get(k)
      if (pfn === 0) {
        k++
        continue
      }
      const e = pages.runEnd(k, first + count)
      this.#memory.putRange(pfn, e - k)
      k = e
    }
    pages.setRun(first, count, 0)
  }

  /** Visit the mappings covering [start, start + npages pages) in order. */
  #walk(
    start: number,
    npages: number,
    write: boolean,
    fn: (v: Vma, firstPage: number, count: number) => void,
  ): void {
    this.#alive()
    let addr = start
    const end = start + npages * FRAME_SIZE
    let i = 0
    while (addr < end) {
      while (i < this.#vmas.length && (this.#vmas[i] as Vma).end <= addr) i++
      const v = this.#vmas[i]
      if (v === undefined || v.start > addr) {
        throw new IommuError('EFAULT', `address 0x${addr.toString(16)} is not mapped`)
      }
      if (write && (v.prot & PROT_WRITE) === 0) {
        throw new IommuError('EFAULT', `address 0x${addr.toString(16)} is read-only`)
      }
      if ((v.prot & PROT_READ) === 0 && !write) {
        throw new IommuError('EFAULT', `address 0x${addr.toString(16)} is not readable`)
      }
      const stop = Math.min(end, v.end)
      fn(v, (addr - v.start) / FRAME_SIZE, (stop - addr) / FRAME_SIZE)
      addr = stop
    }
  }

  /** Byte-granular access helper: `fn(pfn, offsetInPage, doneBytes, n)` per page piece. */
  #access(
    addr: number,
    length: number,
    write: boolean,
    fn: (pfn: number, off: number, done: number, n: number) => void,
  ): void {
    if (length === 0) return
    const first = Math.floor(addr / FRAME_SIZE) * FRAME_SIZE
    const npages = Math.ceil((addr + length - first) / FRAME_SIZE)
    let done = 0
    let off = addr - first
    this.#walk(first, npages, write, (v, page, count) => {
      if (write && v.pages !== null) this.#populate(v, page, count)
      for (let k = 0; k < count; k++) {
        const pfn =
          v.pages !== null
            ? v.pages.get(page + k)
            : (v.file as Memfd).page(v.pgoff + page + k, write)
        const n = Math.min(FRAME_SIZE - off, length - done)
        fn(pfn, off, done, n)
        done += n
        off = 0
      }
    })
  }

  /** Allocate frames for the untouched pages of [first, first + count) of an anon VMA. */
  #populate(v: Vma, first: number, count: number): void {
    const pages = v.pages as PfnArray
    const mem = this.#memory
    let k = first
    const end = first + count
    while (k < end) {
      if (pages.get(k) !== 0) {
        k++
        continue
      }
      const va = v.start + k * FRAME_SIZE
      const blockVa = Math.floor(va / HUGE_SIZE) * HUGE_SIZE
      const blockFirst = (blockVa - v.start) / FRAME_SIZE
      if (
        v.hugepage &&
        blockVa >= v.start &&
        blockVa + HUGE_SIZE <= v.end &&
        pages.isZero(blockFirst, HUGE_PAGES)
      ) {
        const pfn = mem.allocFrames(HUGE_PAGES, FramePurpose.USER, HUGE_PAGES)
        pages.setRun(blockFirst, HUGE_PAGES, pfn)
        k = blockFirst + HUGE_PAGES
        continue
      }
      pages.set(k, mem.allocFrame(FramePurpose.USER))
      k++
    }
  }
}

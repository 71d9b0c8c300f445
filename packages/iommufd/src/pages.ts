/**
 * `struct iopt_pages`: the memory behind one MAP or MAP_FILE, pinned at most once however
 * many areas (COPY), domains and in-kernel accesses use it, and charged to the mapping
 * process's pinned/locked memory (reference iommufd-uapi.md §3.1, §3.9).
 *
 * Pinned PFNs live in one `Int32Array` per pages object (0 = not pinned), never in per-page
 * objects. A page is pinned while it is covered by an area that is filled into the IOAS's
 * domains (the kernel's `domains_itree`) or by an access pin record (`access_itree`);
 * coverage is kept as a handful of index ranges and pinning works on their holes.
 *
 * @module
 */

import {
  FRAME_SIZE,
  IommuError,
  isIommuError,
  type Machine,
  type Memfd,
  PfnArray,
  type Process,
} from '@iommu/core'
import { holesOf, type Span } from './interval.ts'

/** `IOPT_PAGES_ACCOUNT_*`: how pinned pages are charged. */
export const AccountMode = { NONE: 0, USER: 1, MM: 2 } as const
/** One of {@link AccountMode}. */
export type AccountMode = (typeof AccountMode)[keyof typeof AccountMode]

/** A pin record of in-kernel accesses (`struct iopt_pages_access`): exact range + users. */
export interface PagesAccess {
  readonly start: number
  readonly last: number
  users: number
}

/**
 * What the pages source from: a user VA range or a memfd range. Addresses and offsets are
 * the caller's u64 values, page aligned, kept exact (they guide the IOVA alignment).
 */
export type PagesSource =
  | { readonly type: 'user'; readonly proc: Process; readonly uptr: bigint }
  | { readonly type: 'file'; readonly proc: Process; readonly file: Memfd; readonly start: bigint }

const PAGE = BigInt(FRAME_SIZE)
/**
 * Pages GUP pins per call (`TEMP_MEMORY_LIMIT / sizeof(struct page *)` of
 * `pfn_reader_user_pin`); also how far ahead a range is faulted in before it fails.
 */
const PIN_CHUNK = 8192

/** `struct iopt_pages`. */
export class IoptPages {
  /** `kref`: areas (and COPY lists) holding the pages. */
  kref = 1
  /** The process the pages are charged to and pinned from (`source_mm/task/user`). */
  proc: Process
  readonly source: PagesSource
  /** Pages spanned, counted from the page-aligned start. */
  readonly npages: number
  readonly writable: boolean
  accountMode: AccountMode
  /**
   * Pinned PFN per page index, 0 when not pinned; allocated at the first pin and grown to
   * the highest index pinned, never sized by a length nothing has pinned yet. Compact:
   * a physically contiguous 2 MiB run of pages costs 8 bytes.
   */
  pfns: PfnArray | null = null
  /** Pages currently pinned. */
  npinned = 0
  /** Pages currently charged (`last_npinned`). */
  lastNpinned = 0
  /** Index ranges of areas filled into domains (`domains_itree`). */
  readonly domainSpans = new Set<Span<number>>()
  /** Access pin records (`access_itree`). */
  readonly accesses: PagesAccess[] = []
  readonly #machine: Machine

  constructor(
    machine: Machine,
    source: PagesSource,
    npages: number,
    writable: boolean,
    mode: AccountMode,
  ) {
    this.#machine = machine
    this.source = source
    this.proc = source.proc
    this.npages = npages
    this.writable = writable
    this.accountMode = mode
    // The pages hold the file open (`get_file`).
    if (source.type === 'file') source.file.addMap()
  }

  get type(): 'user' | 'file' {
    return this.source.type
  }

  /** Every coverage range: filled areas and access pin records. */
  *#coverage(): Iterable<Span<number>> {
    yield* this.domainSpans
    yield* this.accesses
  }

  /** Holes of the current coverage inside `[start, last]`. */
  holes(start: number, last: number): Span<number>[] {
    return holesOf(this.#coverage(), start, last, 1)
  }

  /**
   * Pin `[start, last]` where nothing pins it yet; the caller then adds its coverage range.
   * All or nothing.
   *
   * @returns the holes that were pinned (to undo with {@link unpinSpans})
   * @throws EFAULT - unmapped/exited source (or injected); EINVAL - past the end of a memfd;
   *   ENOMEM
   */
  pinHoles(start: number, last: number): Span<number>[] {
    const holes = this.holes(start, last)
    const done: Span<number>[] = []
    try {
      for (const h of holes) {
        this.#pinRange(h.start, h.last)
        done.push(h)
      }
    } catch (e) {
      this.unpinSpans(done)
      throw e
    }
    return holes
  }

  #pinRange(start: number, last: number): void {
    const faults = this.#machine.faults
    if (this.pfns === null && faults.shouldFail('iommufd:pfns')) {
      throw new IommuError('ENOMEM', 'pfn array')
    }
    // pfn_reader_user_pin's fault-injection point reports EFAULT.
    if (faults.shouldFail('iommufd:pin')) throw new IommuError('EFAULT', 'injected pin failure')
    const n = last - start + 1
    // Fail a range that cannot be pinned before sizing anything by it: the length of a MAP
    // is the user's, not what is mapped.
    this.#checkPinnable(start, n)
    const pfns = this.#pfnsUpTo(last)
    const src = this.source
    if (src.type === 'user') {
      try {
        src.proc.pinUserPages(src.uptr + BigInt(start) * PAGE, n, this.writable, pfns, start)
      } catch (e) {
        // The source mm is gone (mmget_not_zero fails): EFAULT.
        if (isIommuError(e, 'ESRCH')) throw new IommuError('EFAULT', 'source process exited')
        throw e
      }
    } else {
      const first = Number(src.start / PAGE) + start
      const mem = this.#machine.memory
      let k = 0
      try {
        for (; k < n; k++) {
          const pfn = src.file.page(first + k, true)
          mem.pin(pfn)
          pfns.set(start + k, pfn)
        }
      } catch (e) {
        for (let j = 0; j < k; j++) {
          mem.unpin(pfns.get(start + j))
          pfns.set(start + j, 0)
        }
        throw e
      }
    }
    this.npinned += n
  }

  /**
   * Fail as the pin path does when `n` pages from index `start` cannot all be pinned,
   * with its side effects: GUP (`pin_user_pages_fast` from `pfn_reader_user_pin`) faults
   * in and pins chunk by chunk up to the first hole or protection mismatch, where it
   * returns -EFAULT, and everything is unpinned again; `memfd_pin_folios` allocates the
   * file's pages up to its end, and past it the shmem read fails -EINVAL. Neither path
   * sizes anything by the requested length, and RLIMIT_MEMLOCK is only checked after the
   * whole range is pinned (`pfn_reader_update_pinned`), so a huge length fails here.
   *
   * @throws EFAULT - unmapped, read-only for a writable map, or the source exited;
   *   EINVAL - past the end of the memfd; ENOMEM - faulting in ran out of memory
   */
  #checkPinnable(start: number, n: number): void {
    const src = this.source
    if (src.type === 'file') {
      const first = Number(src.start / PAGE) + start
      const count = src.file.pageCount
      if (first + n <= count) return
      for (let k = first; k < count; k++) src.file.page(k, true)
      throw new IommuError(
        'EINVAL',
        `memfd ${src.file.name}: page ${Math.max(first, count)} past EOF`,
      )
    }
    const va = src.uptr + BigInt(start) * PAGE
    const bytes = n * FRAME_SIZE
    if (va + BigInt(bytes) <= 2n ** 53n && src.proc.isMapped(Number(va), bytes, this.writable)) {
      return
    }
    const scratch = new Int32Array(Math.min(n, PIN_CHUNK))
    try {
      for (let done = 0; done < n; done += scratch.length) {
        const c = Math.min(scratch.length, n - done)
        src.proc.pinUserPages(va + BigInt(done) * PAGE, c, this.writable, scratch)
        src.proc.unpinPages(scratch, c)
      }
    } catch (e) {
      if (isIommuError(e, 'ESRCH')) throw new IommuError('EFAULT', 'source process exited')
      throw e
    }
    throw new IommuError('EFAULT', 'range not mapped')
  }

  /** The PFN array, grown to hold index `last`; allocated when first needed. */
  #pfnsUpTo(last: number): PfnArray {
    const old = this.pfns
    if (old !== null && old.length > last) return old
    // Grow geometrically so that access pins of ascending ranges copy little.
    const len = Math.min(this.npages, Math.max(last + 1, (old?.length ?? 0) * 2))
    let grown: PfnArray
    try {
      // A typed array's limit, as the plain PFN array had.
      if (len > 2 ** 32) throw new RangeError('too long')
      grown = new PfnArray(len)
    } catch {
      // kvcalloc failing: the host cannot hold the array.
      throw new IommuError('ENOMEM', `pfn array of ${len} pages`)
    }
    if (old !== null) old.copyTo(0, old.length, grown, 0)
    this.pfns = grown
    return grown
  }

  /** Unpin the given index ranges (pages no coverage holds any more). */
  unpinSpans(spans: Iterable<Span<number>>): void {
    const pfns = this.pfns
    if (pfns === null) return
    const mem = this.#machine.memory
    for (const s of spans) {
      // Physically contiguous runs at a time, in ascending order as unpin of each page.
      for (let i = s.start; i <= s.last; ) {
        const e = pfns.runEnd(i, s.last + 1)
        mem.unpinRange(pfns.get(i), e - i)
        i = e
      }
      pfns.setRun(s.start, s.last - s.start + 1, 0)
      this.npinned -= s.last - s.start + 1
    }
  }

  /** Unpin what `[start, last]` leaves uncovered after its coverage was removed. */
  unpinUncovered(start: number, last: number): void {
    this.unpinSpans(this.holes(start, last))
  }

  /**
   * Charge or uncharge the change in pinned pages (`pfn_reader_user_update_pinned`).
   *
   * @throws ENOMEM - over RLIMIT_MEMLOCK (or injected); nothing is charged then
   */
  updatePinned(): void {
    if (this.npinned === this.lastNpinned) return
    if (this.npinned < this.lastNpinned) {
      this.#charge(this.lastNpinned - this.npinned, false)
      return
    }
    if (this.#machine.faults.shouldFail('iommufd:account')) {
      throw new IommuError('ENOMEM', 'injected accounting failure')
    }
    this.#charge(this.npinned - this.lastNpinned, true)
  }

  /** Uncharge pages that were unpinned (`update_unpinned`); never fails. */
  updateUnpinned(): void {
    if (this.npinned < this.lastNpinned) this.#charge(this.lastNpinned - this.npinned, false)
  }

  #charge(n: number, inc: boolean): void {
    chargePinned(this.accountMode, this.proc, n, inc)
    this.lastNpinned = this.npinned
  }

  /** Drop a reference (`iopt_put_pages`); the last one releases the file. */
  put(): void {
    if (--this.kref > 0) return
    if (this.npinned !== 0 || this.domainSpans.size !== 0 || this.accesses.length !== 0) {
      throw new Error('iopt_release_pages: pages still pinned')
    }
    if (this.source.type === 'file') this.source.file.dropMap()
  }
}

/**
 * Charge `n` pinned pages to `proc` in `mode` (`iopt_pages_update_pinned`): USER mode to
 * the user's `locked_vm` (io_uring style), MM mode to the mm's `locked_vm` (VFIO style),
 * both bounded by RLIMIT_MEMLOCK; every mode adds to the mm's `pinned_vm`.
 *
 * @throws ENOMEM - the limit would be exceeded (nothing is charged)
 */
export function chargePinned(mode: AccountMode, proc: Process, n: number, inc: boolean): void {
  const limit = Math.floor(proc.user.rlimitMemlock / FRAME_SIZE)
  if (mode === AccountMode.USER) {
    if (inc && proc.user.lockedVm + n > limit) {
      throw new IommuError('ENOMEM', `RLIMIT_MEMLOCK: user locked_vm would exceed ${limit}`)
    }
    proc.user.lockedVm += inc ? n : -n
  } else if (mode === AccountMode.MM) {
    if (inc && proc.mm.lockedVm + n > limit) {
      throw new IommuError('ENOMEM', `RLIMIT_MEMLOCK: mm locked_vm would exceed ${limit}`)
    }
    proc.mm.lockedVm += inc ? n : -n
  }
  proc.mm.pinnedVm += inc ? n : -n
}

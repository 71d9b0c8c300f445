/**
 * `struct io_pagetable`: an IOAS's IOVA → memory map (areas), its reserved and allowed
 * ranges, the domains that mirror it and the in-kernel accesses that read it
 * (reference iommufd-uapi.md §3).
 *
 * IOVAs are `bigint` here: the map is a handful of intervals and every operation is once
 * per area or per contiguous PFN run, never per page. Pinned PFNs stay in the pages'
 * typed arrays; filling a domain batches each physically contiguous run into one
 * `iommuMap` call.
 *
 * @module
 */

import {
  FRAME_SIZE,
  IOMMU_DIRTY_NO_CLEAR,
  IommuDirtyBitmap,
  type IommuDomain,
  IommuError,
  IotlbGather,
  type Machine,
  type PciDevice,
  type PfnArray,
  Prot,
  ResvType,
} from '@iommu/core'
import { holesOf, intersects, type Span } from './interval.ts'
import type { IoptPages } from './pages.ts'

const PAGE = BigInt(FRAME_SIZE)
/** `ULONG_MAX` of a 64-bit kernel. */
export const ULONG_MAX = 0xffff_ffff_ffff_ffffn
/** `HPAGE_SIZE`: the THP size that caps automatic IOVA alignment. */
const HPAGE_SIZE = 2n * 1024n * 1024n
/** After this many unmap callbacks that did not unpin, the kernel gives up (WARN). */
const MAX_UNMAP_TRIES = 100

/** An in-kernel user of an IOAS, as the io_pagetable sees it (`struct iommufd_access`). */
export interface IoptAccessUser {
  /** PAGE_SIZE when the access pins pages, else 1. */
  readonly iovaAlignment: number
  /** Internal accesses (HW queues) lock areas and get no unmap callback. */
  readonly internal: boolean
  /** The driver's `unmap` op: stop using and unpin anything in the range. */
  notifyUnmap(iova: bigint, length: bigint): void
}

/** A reservation of the IOAS (`struct iopt_reserved`). */
interface Reserved extends Span<bigint> {
  readonly owner: unknown
}

/** `struct iopt_area`: one contiguous IOVA interval of one MAP/MAP_FILE/COPY. */
export class IoptArea implements Span<bigint> {
  iova: bigint
  last: bigint
  /** Null while the area is being created or torn down. */
  pages: IoptPages | null = null
  /** The pages the area maps (valid during creation too). */
  readonly src: IoptPages
  /** Byte offset of the area's first byte in the pages (a u64: exact for any area). */
  readonly startByte: bigint
  /** `iommu_prot` (`Prot` bits). */
  readonly iommuProt: number
  numAccesses = 0
  numLocks = 0
  preventAccess = false
  /** The area's index range in `src.domainSpans` while it is filled into domains. */
  span: Span<number> | null = null

  constructor(src: IoptPages, iova: bigint, length: bigint, startByte: bigint, prot: number) {
    this.src = src
    this.iova = iova
    this.last = iova + length - 1n
    this.startByte = startByte
    this.iommuProt = prot
  }

  get start(): bigint {
    return this.iova
  }

  get length(): bigint {
    return this.last - this.iova + 1n
  }

  /** `page_offset`: the sub-page offset of the first byte. */
  get pageOffset(): number {
    return Number(this.startByte % PAGE)
  }

  /** First page index in the pages (`iopt_area_index`); below 2^52, exact. */
  get index(): number {
    return Number(this.startByte / PAGE)
  }

  /** Last page index (`iopt_area_last_index`). */
  get lastIndex(): number {
    return Number((this.startByte + this.length - 1n) / PAGE)
  }

  /** Byte offset in the pages of `iova` (`iopt_area_start_byte`). */
  startByteOf(iova: bigint): bigint {
    return this.startByte + (iova - this.iova)
  }

  /** Page index of `iova` (`iopt_area_iova_to_index`). */
  indexOf(iova: bigint): number {
    return Number(this.startByteOf(iova) / PAGE)
  }
}

/** A slice of pages to place in an IOAS (`struct iopt_pages_list`). */
export interface PagesSlice {
  readonly pages: IoptPages
  readonly startByte: bigint
  readonly length: bigint
}

function lowBit(v: bigint): bigint {
  return v & -v
}

function roundupPow2(v: bigint): bigint {
  let p = 1n
  while (p < v) p <<= 1n
  return p
}

/** `1 << __ffs(pgsize_bitmap)`: a domain's smallest page. */
export function minPageSize(domain: IommuDomain): number {
  return Number(lowBit(domain.pgsizeBitmap))
}

/** `struct io_pagetable`. */
export class IoPagetable {
  /** Areas sorted by IOVA, never overlapping. */
  readonly areas: IoptArea[] = []
  readonly #reserved: Reserved[] = []
  #allowed: Span<bigint>[] = []
  /** Domains mirroring the map; the array stays compact like the kernel's xarray. */
  readonly domains: IommuDomain[] = []
  readonly accesses: IoptAccessUser[] = []
  /** `iova_alignment`, at most PAGE_SIZE. */
  iovaAlignment = 1
  disableLargePages = false
  readonly #machine: Machine

  constructor(machine: Machine) {
    this.#machine = machine
  }

  get reserved(): readonly Span<bigint>[] {
    return this.#reserved
  }

  get allowed(): readonly Span<bigint>[] {
    return this.#allowed
  }

  // ---------------------------------------------------------------- lookups

  /** Index of the first area whose last IOVA is >= `iova`. */
  #lowerBound(iova: bigint): number {
    let lo = 0
    let hi = this.areas.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if ((this.areas[mid] as IoptArea).last < iova) lo = mid + 1
      else hi = mid
    }
    return lo
  }

  /** The first area intersecting `[start, last]` (`iopt_area_iter_first`). */
  areaIterFirst(start: bigint, last: bigint): IoptArea | null {
    const a = this.areas[this.#lowerBound(start)]
    return a !== undefined && a.iova <= last ? a : null
  }

  /** Areas intersecting `[start, last]`, in IOVA order. */
  *areasIn(start: bigint, last: bigint): Iterable<IoptArea> {
    for (let i = this.#lowerBound(start); i < this.areas.length; i++) {
      const a = this.areas[i] as IoptArea
      if (a.iova > last) return
      yield a
    }
  }

  #insertArea(area: IoptArea): void {
    this.areas.splice(this.#lowerBound(area.iova), 0, area)
  }

  /** Take an area out of the tree (`iopt_abort_area`). */
  removeArea(area: IoptArea): void {
    const i = this.areas.indexOf(area)
    if (i >= 0) this.areas.splice(i, 1)
  }

  /**
   * Walk the areas that cover `[iova, last]` back to back from `iova`
   * (`iopt_for_each_contig_area`), calling `fn(area, cur, pieceLast)` for each piece.
   * Stops at the first gap or area under construction.
   *
   * @returns true when the whole range was covered (`iopt_area_contig_done`)
   */
  forEachContigArea(
    iova: bigint,
    last: bigint,
    fn: (area: IoptArea, cur: bigint, pieceLast: bigint) => void,
  ): boolean {
    let i = this.#lowerBound(iova)
    let area = this.areas[i]
    let cur = iova
    if (area === undefined || area.iova > iova || area.pages === null) return false
    for (;;) {
      const pieceLast = last < area.last ? last : area.last
      fn(area, cur, pieceLast)
      if (last <= area.last) return true
      cur = area.last + 1n
      area = this.areas[++i]
      if (area === undefined || area.iova !== cur || area.pages === null) return false
    }
  }

  // ---------------------------------------------------------------- reserved / allowed

  /**
   * Reserve `[start, last]` for `owner` (`iopt_reserve_iova`).
   *
   * @throws EADDRINUSE - an area or an allowed range intersects it; ENOMEM
   */
  reserveIova(start: bigint, last: bigint, owner: unknown): void {
    if (this.areaIterFirst(start, last) !== null || intersects(this.#allowed, start, last)) {
      throw new IommuError(
        'EADDRINUSE',
        `reserving [0x${start.toString(16)}, 0x${last.toString(16)}]`,
      )
    }
    if (this.#machine.faults.shouldFail('iommufd:reserved')) {
      throw new IommuError('ENOMEM', 'reserved range')
    }
    let i = 0
    while (i < this.#reserved.length && (this.#reserved[i] as Reserved).start <= start) i++
    this.#reserved.splice(i, 0, { start, last, owner })
  }

  /** Drop every reservation of `owner` (`iopt_remove_reserved_iova`). */
  removeReservedIova(owner: unknown): void {
    for (let i = this.#reserved.length - 1; i >= 0; i--) {
      if ((this.#reserved[i] as Reserved).owner === owner) this.#reserved.splice(i, 1)
    }
  }

  /**
   * Replace the allowed ranges (`iopt_set_allow_iova`); `ranges` are validated and sorted.
   *
   * @throws EADDRINUSE - a new range intersects a reservation (the old list stays)
   */
  setAllowIova(ranges: Span<bigint>[]): void {
    for (const r of ranges) {
      if (intersects(this.#reserved, r.start, r.last)) {
        throw new IommuError('EADDRINUSE', 'allowed range intersects a reserved range')
      }
    }
    this.#allowed = ranges
  }

  /** IOAS_IOVA_RANGES: the holes of the reserved tree over all of u64. */
  iovaRanges(): Span<bigint>[] {
    return holesOf(this.#reserved, 0n, ULONG_MAX, 1n)
  }

  /**
   * Reserve the device's regions in this IOAS (`iopt_table_enforce_dev_resv_regions`).
   * Direct-relaxable regions are ignored.
   *
   * @param countMsi - check the MSI region combination (first attach)
   * @throws EADDRINUSE - a region intersects an area or allowed range; EINVAL - an
   *   impossible MSI combination (or injected)
   */
  enforceDevResvRegions(dev: PciDevice, countMsi: boolean): void {
    if (this.#machine.faults.shouldFail('iommufd:resv')) {
      throw new IommuError('EINVAL', 'injected reserved-region failure')
    }
    let hw = 0
    let sw = 0
    try {
      for (const r of this.#machine.iommu.iommuGetResvRegions(dev)) {
        if (r.type === ResvType.DIRECT_RELAXABLE) continue
        if (countMsi && r.type === ResvType.MSI) hw++
        if (countMsi && r.type === ResvType.SW_MSI) sw++
        this.reserveIova(r.start, r.start + r.length - 1n, dev)
      }
      // Drivers must not offer both MSI kinds, nor two SW MSI windows (WARN).
      if ((sw && hw) || sw > 1) throw new IommuError('EINVAL', 'bad MSI region combination')
    } catch (e) {
      this.removeReservedIova(dev)
      throw e
    }
  }

  // ---------------------------------------------------------------- IOVA allocation

  /**
   * `iopt_check_iova`: a fixed IOVA must be aligned, free of reservations (EINVAL) and of
   * areas (EEXIST).
   */
  checkIova(iova: bigint, length: bigint): void {
    if ((iova & BigInt(this.iovaAlignment - 1)) !== 0n) {
      throw new IommuError('EINVAL', `IOVA 0x${iova.toString(16)} not aligned`)
    }
    const last = iova + length - 1n
    if (last > ULONG_MAX) throw new IommuError('EOVERFLOW', 'IOVA + length overflows')
    if (intersects(this.#reserved, iova, last)) {
      throw new IommuError('EINVAL', 'IOVA range intersects a reserved range')
    }
    if (this.areaIterFirst(iova, last) !== null) {
      throw new IommuError('EEXIST', 'IOVA range is already mapped')
    }
  }

  /**
   * `iopt_alloc_iova`: the first fit, lowest IOVA at or above PAGE_SIZE (and inside the
   * allowed ranges if any), aligned to the largest power of two dividing both the length
   * (rounded up) and the source address, capped at the THP size, keeping the source's
   * sub-page offset (reference §3.2).
   *
   * @throws EOVERFLOW - length 0 or ≥ ULONG_MAX/2; EINVAL - that alignment is below the
   *   IOAS alignment; ENOSPC - no hole fits
   */
  allocIova(addr: bigint, length: bigint): bigint {
    if (length === 0n || length >= ULONG_MAX / 2n) throw new IommuError('EOVERFLOW', 'length')
    const pageOffset = addr % PAGE
    let align = roundupPow2(length)
    if (addr !== 0n && lowBit(addr) < align) align = lowBit(addr)
    if (align >= HPAGE_SIZE) align = HPAGE_SIZE
    if (align < BigInt(this.iovaAlignment)) {
      throw new IommuError('EINVAL', `IOVA alignment ${align} below ${this.iovaAlignment}`)
    }
    const lo = PAGE
    const hi = ULONG_MAX - PAGE
    const allowedSpans =
      this.#allowed.length === 0 ? [{ start: lo, last: hi }] : mergedSpans(this.#allowed, lo, hi)
    const used = [...this.#reserved, ...this.areas]
    for (const span of allowedSpans) {
      const first = fitIn(span.start, span.last, length, align, pageOffset)
      if (first === null) continue
      for (const hole of holesOf(used, first, span.last, 1n)) {
        const iova = fitIn(hole.start, hole.last, length, align, pageOffset)
        if (iova !== null) return iova
      }
    }
    throw new IommuError('ENOSPC', `no ${length}-byte IOVA hole`)
  }

  // ---------------------------------------------------------------- alignment

  /** `iopt_check_iova_alignment`: every area conforms to `align` (else EADDRINUSE). */
  #checkIovaAlignment(align: number): void {
    const mask = BigInt(align - 1)
    for (const a of this.areas) {
      if (
        (a.iova & mask) !== 0n ||
        (a.length & mask) !== 0n ||
        (a.pageOffset & (align - 1)) !== 0
      ) {
        throw new IommuError(
          'EADDRINUSE',
          `area at 0x${a.iova.toString(16)} is not ${align}-aligned`,
        )
      }
    }
  }

  /** `iopt_calculate_iova_alignment`. @throws EADDRINUSE */
  calculateIovaAlignment(): void {
    let align = this.disableLargePages ? FRAME_SIZE : 1
    for (const d of this.domains) align = Math.max(align, minPageSize(d))
    for (const a of this.accesses) align = Math.max(align, a.iovaAlignment)
    if (align > this.iovaAlignment) this.#checkIovaAlignment(align)
    this.iovaAlignment = align
  }

  /**
   * IOMMU_OPTION_HUGE_PAGES = 0 (`iopt_disable_large_pages`).
   *
   * @throws EINVAL - a domain is attached and an area exists; EADDRINUSE - an area is not
   *   PAGE_SIZE aligned
   */
  setDisableLargePages(): void {
    if (this.disableLargePages) return
    if (this.domains.length > 0 && this.areas.length > 0) {
      throw new IommuError('EINVAL', 'domains already hold mappings')
    }
    this.disableLargePages = true
    try {
      this.calculateIovaAlignment()
    } catch (e) {
      this.disableLargePages = false
      throw e
    }
  }

  /** IOMMU_OPTION_HUGE_PAGES = 1 (`iopt_enable_large_pages`). */
  setEnableLargePages(): void {
    this.disableLargePages = false
    this.calculateIovaAlignment()
  }

  /** `iopt_add_access`. @throws EADDRINUSE, ENOMEM */
  addAccess(access: IoptAccessUser): void {
    if (this.#machine.faults.shouldFail('iommufd:access_list')) {
      throw new IommuError('ENOMEM', 'access list')
    }
    this.accesses.push(access)
    try {
      this.calculateIovaAlignment()
    } catch (e) {
      this.accesses.pop()
      throw e
    }
  }

  /** `iopt_remove_access`. */
  removeAccess(access: IoptAccessUser): void {
    const i = this.accesses.indexOf(access)
    if (i >= 0) this.accesses.splice(i, 1)
    this.calculateIovaAlignment()
  }

  // ---------------------------------------------------------------- map / unmap

  /**
   * Place slices of pages back to back at a fixed or automatic IOVA and fill every domain
   * (`iopt_map_pages`). The slices' page references move into the new areas on success;
   * on failure the caller still owns them.
   *
   * @param iova - the fixed IOVA, or null to allocate one
   * @returns the IOVA of the first area
   * @throws EINVAL, EOVERFLOW, EEXIST, ENOSPC, EPERM, and pinning/driver errors
   */
  mapPages(
    slices: readonly PagesSlice[],
    length: bigint,
    iova: bigint | null,
    prot: number,
  ): bigint {
    const faults = this.#machine.faults
    for (let i = 0; i < slices.length; i++) {
      if (faults.shouldFail('iommufd:area')) throw new IommuError('ENOMEM', 'area')
    }
    if ((length & BigInt(this.iovaAlignment - 1)) !== 0n || length === 0n) {
      throw new IommuError('EINVAL', `length 0x${length.toString(16)} not aligned`)
    }
    let dst: bigint
    if (iova === null) {
      // The first slice's source address guides the alignment.
      const first = slices[0] as PagesSlice
      const src = first.pages.source
      const base = src.type === 'user' ? src.uptr : src.start
      dst = this.allocIova(base + first.startByte, length)
    } else {
      this.checkIova(iova, length)
      dst = iova
    }
    const areas: IoptArea[] = []
    try {
      let at = dst
      for (const s of slices) {
        areas.push(this.#newArea(s, at, prot))
        at += s.length
      }
      for (let i = 0; i < areas.length; i++) {
        try {
          this.#fillDomains(areas[i] as IoptArea)
        } catch (e) {
          for (let j = 0; j < i; j++) this.#unfillDomains(areas[j] as IoptArea)
          throw e
        }
      }
    } catch (e) {
      for (const a of areas) this.removeArea(a)
      throw e
    }
    for (const a of areas) a.pages = a.src
    return dst
  }

  /** `iopt_insert_area`: checks, then inserts with a null `pages` (under construction). */
  #newArea(s: PagesSlice, iova: bigint, prot: number): IoptArea {
    // IOMMU_WRITE needs pages pinned writable.
    if (prot & Prot.WRITE && !s.pages.writable) throw new IommuError('EPERM', 'read-only pages')
    if (Number(s.startByte % PAGE) & (this.iovaAlignment - 1)) {
      throw new IommuError('EINVAL', 'page offset below the IOAS alignment')
    }
    if (iova + s.length - 1n > ULONG_MAX) throw new IommuError('EOVERFLOW', 'area end')
    const area = new IoptArea(s.pages, iova, s.length, s.startByte, prot)
    this.#insertArea(area)
    return area
  }

  /**
   * Unmap every area inside `[start, last]`; an area sticking out fails ENOENT, leaving the
   * areas already removed unmapped (`iopt_unmap_iova_range`, reference §2.10).
   *
   * @returns bytes unmapped
   * @throws ENOENT, EBUSY
   */
  unmapIovaRange(start: bigint, last: bigint): bigint {
    let unmapped = 0n
    let from = start
    let tries = 0
    for (;;) {
      const area = this.areaIterFirst(from, last)
      if (area === null) return unmapped
      if (area.pages === null) throw new IommuError('EBUSY', 'area under construction')
      if (area.numLocks) throw new IommuError('EBUSY', 'area locked by a HW queue')
      if (area.iova < from || area.last > last) {
        throw new IommuError(
          'ENOENT',
          `area [0x${area.iova.toString(16)}, 0x${area.last.toString(16)}] not covered`,
        )
      }
      if (area.iova !== from) tries = 0
      if (area.numAccesses) {
        // Ask every access to unpin, then look again.
        from = area.iova
        area.preventAccess = true
        for (const a of [...this.accesses]) if (!a.internal) a.notifyUnmap(area.iova, area.length)
        // The kernel WARNs and fails the unmap with EDEADLOCK (= EDEADLK on Linux).
        if (++tries > MAX_UNMAP_TRIES) {
          throw new IommuError('EDEADLK', 'an access does not unpin the range')
        }
        continue
      }
      const pages = area.pages
      area.pages = null
      this.#unfillDomains(area)
      this.removeArea(area)
      pages.put()
      unmapped += area.length
      if (area.last >= last) return unmapped
      from = area.last + 1n
    }
  }

  /** `iopt_unmap_iova`. @throws EINVAL (length 0), EOVERFLOW, ENOENT, EBUSY */
  unmapIova(iova: bigint, length: bigint): bigint {
    if (length === 0n) throw new IommuError('EINVAL', 'length 0')
    const last = iova + length - 1n
    if (last > ULONG_MAX) throw new IommuError('EOVERFLOW', 'IOVA + length overflows')
    return this.unmapIovaRange(iova, last)
  }

  /** `iopt_unmap_all`: succeeds on an empty IOAS. */
  unmapAll(): bigint {
    return this.unmapIovaRange(0n, ULONG_MAX)
  }

  /**
   * The pages behind `[iova, iova + length)` as slices, for COPY (`iopt_get_pages`). The
   * range must be covered by contiguous areas.
   *
   * @throws EINVAL (length 0), EOVERFLOW, ENOENT (a gap), ENOMEM
   */
  getPages(iova: bigint, length: bigint): PagesSlice[] {
    if (length === 0n) throw new IommuError('EINVAL', 'length 0')
    const last = iova + length - 1n
    if (last > ULONG_MAX) throw new IommuError('EOVERFLOW', 'IOVA + length overflows')
    const out: PagesSlice[] = []
    try {
      const done = this.forEachContigArea(iova, last, (area, cur, pieceLast) => {
        if (this.#machine.faults.shouldFail('iommufd:pages_list')) {
          throw new IommuError('ENOMEM', 'pages list')
        }
        const pages = area.pages as IoptPages
        pages.kref++
        out.push({ pages, startByte: area.startByteOf(cur), length: pieceLast - cur + 1n })
      })
      if (!done) throw new IommuError('ENOENT', 'source range is not fully mapped')
    } catch (e) {
      for (const s of out) s.pages.put()
      throw e
    }
    return out
  }

  // ---------------------------------------------------------------- domains

  /** Map an area's pinned PFNs into `domain`, one `iommuMap` per contiguous run. */
  #mapArea(domain: IommuDomain, area: IoptArea): void {
    const core = this.#machine.iommu
    const pfns = area.src.pfns as PfnArray
    const last = area.lastIndex
    const end = area.last + 1n
    let cur = area.iova
    let offset = area.pageOffset
    try {
      for (let i = area.index; i <= last; ) {
        // The physically contiguous run from i (batch_from_pages); a 2 MiB block at a time.
        const j = pfns.runEnd(i, last + 1) - 1
        const runEnd = cur + BigInt((j - i + 1) * FRAME_SIZE - offset)
        const next = runEnd < end ? runEnd : end
        const pa = BigInt(pfns.get(i)) * PAGE + BigInt(offset)
        // batch_iommu_map_small: with large pages disabled every page is its own iommu_map.
        if (this.disableLargePages) core.iommuMapSmall(domain, cur, pa, next - cur, area.iommuProt)
        else core.iommuMap(domain, cur, pa, next - cur, area.iommuProt)
        cur = next
        offset = 0
        i = j + 1
      }
    } catch (e) {
      if (cur !== area.iova) core.iommuUnmap(domain, area.iova, cur - area.iova)
      throw e
    }
  }

  #unmapArea(domain: IommuDomain, area: IoptArea): void {
    const n = this.#machine.iommu.iommuUnmap(domain, area.iova, area.length)
    // iommu_unmap_nofail: anything else is a driver or model bug (WARN).
    if (n !== area.length) throw new Error(`iommufd: unmap of ${area.length} bytes unmapped ${n}`)
  }

  /**
   * Pin a new area and map it into every domain (`iopt_area_fill_domains`). On failure
   * every domain is left unchanged.
   */
  #fillDomains(area: IoptArea): void {
    if (this.domains.length === 0) return
    const pages = area.src
    const pinned = pages.pinHoles(area.index, area.lastIndex)
    let done = 0
    try {
      for (const d of this.domains) {
        this.#mapArea(d, area)
        done++
      }
      pages.updatePinned()
    } catch (e) {
      for (let i = 0; i < done; i++) this.#unmapArea(this.domains[i] as IommuDomain, area)
      pages.unpinSpans(pinned)
      throw e
    }
    area.span = { start: area.index, last: area.lastIndex }
    pages.domainSpans.add(area.span)
  }

  /** Unmap an area from every domain and unpin what nothing else holds. */
  #unfillDomains(area: IoptArea): void {
    const span = area.span
    if (span === null) return
    for (const d of this.domains) this.#unmapArea(d, area)
    const pages = area.src
    pages.domainSpans.delete(span)
    area.span = null
    pages.unpinUncovered(span.start, span.last)
    pages.updateUnpinned()
  }

  /**
   * Add a domain: raise the alignment, reserve outside its aperture and fill it with every
   * area (`iopt_table_add_domain`). On failure nothing changes.
   *
   * @throws EINVAL - its smallest page exceeds PAGE_SIZE; EADDRINUSE - an area conflicts
   *   with the new alignment or aperture; pinning and driver errors
   */
  addDomain(domain: IommuDomain): void {
    if (this.domains.includes(domain)) throw new Error('iopt_table_add_domain: domain added twice')
    const align = Math.max(minPageSize(domain), this.iovaAlignment)
    if (align > FRAME_SIZE) throw new IommuError('EINVAL', `IO page ${align} above PAGE_SIZE`)
    if (align !== this.iovaAlignment) this.#checkIovaAlignment(align)
    const g = domain.geometry
    try {
      // No area may exist outside the aperture.
      if (g.apertureStart !== 0n) this.reserveIova(0n, g.apertureStart - 1n, domain)
      if (g.apertureEnd !== ULONG_MAX) this.reserveIova(g.apertureEnd + 1n, ULONG_MAX, domain)
      if (this.#machine.faults.shouldFail('iommufd:domain_slot')) {
        throw new IommuError('ENOMEM', 'domain slot')
      }
      this.#fillDomain(domain)
    } catch (e) {
      this.removeReservedIova(domain)
      throw e
    }
    this.iovaAlignment = align
    this.domains.push(domain)
  }

  /** Fill one new domain with every area (`iopt_fill_domain`). */
  #fillDomain(domain: IommuDomain): void {
    const first = this.domains.length === 0
    const done: IoptArea[] = []
    try {
      for (const area of this.areas) {
        const pages = area.pages
        if (pages === null) continue
        if (!first) {
          this.#mapArea(domain, area)
          done.push(area)
          continue
        }
        // The first domain pins: the pages come from the source process.
        const pinned = pages.pinHoles(area.index, area.lastIndex)
        let mapped = false
        try {
          this.#mapArea(domain, area)
          mapped = true
          pages.updatePinned()
        } catch (e) {
          if (mapped) this.#unmapArea(domain, area)
          pages.unpinSpans(pinned)
          throw e
        }
        area.span = { start: area.index, last: area.lastIndex }
        pages.domainSpans.add(area.span)
        done.push(area)
      }
    } catch (e) {
      for (const area of done) {
        this.#unmapArea(domain, area)
        if (first && area.span !== null) {
          area.src.domainSpans.delete(area.span)
          area.src.unpinUncovered(area.span.start, area.span.last)
          area.src.updateUnpinned()
          area.span = null
        }
      }
      throw e
    }
  }

  /**
   * Remove a domain (`iopt_table_remove_domain`): unmap every area from it; the last
   * domain also unpins. Drops its aperture reservations and recomputes the alignment.
   */
  removeDomain(domain: IommuDomain): void {
    const i = this.domains.indexOf(domain)
    if (i < 0) throw new Error('iopt_table_remove_domain: unknown domain')
    // Keep the array compact: the tail entry takes the freed slot.
    const tail = this.domains.pop() as IommuDomain
    if (i < this.domains.length) this.domains[i] = tail
    if (this.domains.length > 0) {
      for (const area of this.areas) if (area.pages !== null) this.#unmapArea(domain, area)
    } else {
      for (const area of this.areas) {
        if (area.pages === null || area.span === null) continue
        this.#unmapArea(domain, area)
        const span = area.span
        area.src.domainSpans.delete(span)
        area.span = null
        area.src.unpinUncovered(span.start, span.last)
        area.src.updateUnpinned()
      }
    }
    this.removeReservedIova(domain)
    this.calculateIovaAlignment()
  }

  // ---------------------------------------------------------------- dirty tracking

  /**
   * IOMMU_HWPT_SET_DIRTY_TRACKING (`iopt_set_dirty_tracking`): enabling first reads and
   * clears every area's dirty IOPTEs into no bitmap and flushes, for a clean snapshot.
   *
   * @throws EOPNOTSUPP - the domain has no dirty ops; the driver's errors
   */
  setDirtyTracking(domain: IommuDomain, enable: boolean): void {
    const ops = domain.dirtyOps
    if (ops === null) throw new IommuError('EOPNOTSUPP', 'domain cannot track dirty IOPTEs')
    if (enable) {
      const gather = new IotlbGather()
      const dirty = new IommuDirtyBitmap(null, gather, { mode: this.#machine.dirtyRecords })
      try {
        for (const area of this.areas) {
          if (area.pages === null) continue
          ops.readAndClearDirty(domain, area.iova, area.length, 0, dirty)
        }
      } finally {
        this.#machine.iommu.iommuIotlbSync(domain, gather)
      }
    }
    ops.setDirtyTracking(domain, enable)
  }

  /**
   * Report the dirty IOPTEs of `[iova, last]` into `dirty` (`iommu_read_and_clear_dirty`):
   * the contiguous areas from `iova` are walked and the first gap or driver error ends the
   * walk silently, as in the kernel (reference §4.3). Flushes unless NO_CLEAR.
   *
   * With a hazard tracker on `dirty`, the dirty IOPTEs the walk did not reach (in the areas
   * after the gap, or after the piece whose driver call failed) are reported as
   * `'walk-stopped'` (found by a read-only walk).
   *
   * @throws EDEADLK - the kernel would never return (`iova_bitmap_set` livelock)
   */
  readAndClearDirty(
    domain: IommuDomain,
    iova: bigint,
    last: bigint,
    flags: number,
    dirty: IommuDirtyBitmap,
  ): void {
    const ops = domain.dirtyOps
    if (ops === null) throw new IommuError('EOPNOTSUPP', 'domain cannot track dirty IOPTEs')
    // The first IOVA the walk did not reach.
    let reached = iova
    try {
      const done = this.forEachContigArea(iova, last, (_area, cur, pieceLast) => {
        reached = pieceLast + 1n
        ops.readAndClearDirty(domain, cur, pieceLast - cur + 1n, flags, dirty)
      })
      if (done) reached = last + 1n
    } catch (e) {
      // The kernel discards the walk's errors (iova_bitmap_for_each's return is ignored);
      // a livelock is not an error there: the ioctl never returns.
      if (!(e instanceof IommuError) || e.code === 'EDEADLK') throw e
    }
    if (dirty.hazards !== null && reached <= last) this.#notReached(domain, reached, last, dirty)
    if (!(flags & IOMMU_DIRTY_NO_CLEAR) && dirty.gather !== null) {
      this.#machine.iommu.iommuIotlbSync(domain, dirty.gather)
    }
  }

  /** Report the dirty IOPTEs of the areas in `[from, last]` as missed by a stopped walk. */
  #notReached(domain: IommuDomain, from: bigint, last: bigint, dirty: IommuDirtyBitmap): void {
    const h = dirty.hazards
    const ops = domain.dirtyOps
    if (h === null || ops === null) return
    const collect = new IommuDirtyBitmap(
      {
        set(pfn, count, shift) {
          h.setLeaf(pfn, count, shift)
          h.notVisited('walk-stopped', h.leafStart, h.leafEnd)
        },
      },
      null,
      { mode: 'ideal' },
    )
    for (const area of this.areasIn(from, last)) {
      if (area.pages === null) continue
      const s = area.iova > from ? area.iova : from
      const e = area.last < last ? area.last : last
      try {
        ops.readAndClearDirty(domain, s, e - s + 1n, IOMMU_DIRTY_NO_CLEAR, collect)
      } catch {
        // A read-only look: whatever the driver refuses stays unknown.
      }
    }
  }
}

/** The allowed ranges as merged spans clipped to `[lo, hi]` (`interval_tree_for_each_span`). */
function mergedSpans(list: readonly Span<bigint>[], lo: bigint, hi: bigint): Span<bigint>[] {
  const holes = holesOf(list, lo, hi, 1n)
  const out: Span<bigint>[] = []
  let cur = lo
  for (const h of holes) {
    if (h.start > cur) out.push({ start: cur, last: h.start - 1n })
    cur = h.last + 1n
  }
  if (cur <= hi) out.push({ start: cur, last: hi })
  return out
}

/**
 * `__alloc_iova_check_range`: the aligned start (with the sub-page offset) of a range that
 * can hold `length` bytes, or null. The aligned start must be strictly below `last`.
 */
function fitIn(
  start: bigint,
  last: bigint,
  length: bigint,
  align: bigint,
  pageOffset: bigint,
): bigint | null {
  const up = start + align - 1n
  if (up > ULONG_MAX) return null
  const aligned = (up & ~(align - 1n)) | pageOffset
  if (aligned >= last || last - aligned < length - 1n) return null
  return aligned
}

/**
 * The IOMMU's translation cache, tagged the way AMD hardware tags it: by DomainID (and
 * PASID for guest translations), IOVA page and page size. Set-associative, bounded, with
 * round-robin replacement per set; every field lives in a typed array, so a lookup or a
 * fill allocates nothing.
 *
 * A cached entry covers one whole leaf (4 KiB, 2 MiB, 1 GiB, or a NextLevel=7 size) and
 * remembers the combined permissions of the walk and whether the leaf was already dirty,
 * so that a write through a clean entry goes back to memory to set D (§2.2.7).
 *
 * @module
 */

/** 2^n for n in 0..64, so that the hot paths never call Math.pow. */
export const POW2: Float64Array = Float64Array.from({ length: 65 }, (_, n) => 2 ** n)

/** Sentinel PASID of host (non-guest) translations. */
export const NO_PASID = -1

/** Counters of an {@link Iotlb}. */
export interface IotlbStats {
  hits: number
  misses: number
  fills: number
  evictions: number
  invalidated: number
}

function mix(domid: number, pasid: number, vpn: number, sizeLg2: number): number {
  // vpn mod 2^32 (ToUint32 is exact for a non-negative integer below 2^53; `%` by 2^32
  // would be a floating-point modulo).
  const lo = vpn >>> 0
  const hi = (vpn - lo) / 4294967296
  let h = Math.imul(lo ^ Math.imul(hi, 0x9e3779b1), 0x85ebca6b)
  h ^= Math.imul(domid + 1, 0xc2b2ae35) ^ Math.imul(pasid + 2, 0x27d4eb2f) ^ sizeLg2
  h ^= h >>> 15
  return h >>> 0
}

/** A set-associative IOTLB. */
export class Iotlb {
  readonly sets: number
  readonly ways: number
  readonly stats: IotlbStats = { hits: 0, misses: 0, fills: 0, evictions: 0, invalidated: 0 }
  readonly #valid: Uint8Array
  readonly #domid: Uint16Array
  readonly #pasid: Int32Array
  readonly #sizeLg2: Uint8Array
  /** IOVA page number (4 KiB units) of the start of the cached leaf. */
  readonly #vpn: Float64Array
  /** Output page number (4 KiB units) of the start of the cached leaf. */
  readonly pa: Float64Array
  /** Access bits the walk granted (1 read, 2 write). */
  readonly perm: Uint8Array
  /** The leaf's dirty bit was set when cached. */
  readonly dirty: Uint8Array
  readonly #next: Uint8Array
  /** How many valid entries of each size are cached (index = size lg2). */
  readonly #sizeCount = new Int32Array(65)
  #sizesPresent: number[] = []

  constructor(entries = 1024, ways = 4) {
    if (entries % ways !== 0 || ((entries / ways) & (entries / ways - 1)) !== 0) {
      throw new RangeError(`IOTLB geometry ${entries}/${ways}: sets must be a power of two`)
    }
    this.sets = entries / ways
    this.ways = ways
    this.#valid = new Uint8Array(entries)
    this.#domid = new Uint16Array(entries)
    this.#pasid = new Int32Array(entries)
    this.#sizeLg2 = new Uint8Array(entries)
    this.#vpn = new Float64Array(entries)
    this.pa = new Float64Array(entries)
    this.perm = new Uint8Array(entries)
    this.dirty = new Uint8Array(entries)
    this.#next = new Uint8Array(this.sets)
  }

  /** Number of valid entries. */
  get size(): number {
    let n = 0
    for (const c of this.#sizeCount) n += c
    return n
  }

  /**
   * Find the entry translating IOVA page `iovaPfn` for (domid, pasid).
   *
   * @returns the entry index, or -1 on a miss. Counts the hit or miss.
   */
  lookup(domid: number, pasid: number, iovaPfn: number): number {
    const sizes = this.#sizesPresent
    for (let k = 0; k < sizes.length; k++) {
      const s = sizes[k] as number
      const vpn = s === 12 ? iovaPfn : iovaPfn - (iovaPfn % (POW2[s - 12] as number))
      const base = (mix(domid, pasid, vpn, s) & (this.sets - 1)) * this.ways
      for (let w = base; w < base + this.ways; w++) {
        if (
          this.#valid[w] === 1 &&
          this.#vpn[w] === vpn &&
          this.#sizeLg2[w] === s &&
          this.#domid[w] === domid &&
          this.#pasid[w] === pasid
        ) {
          this.stats.hits++
          return w
        }
      }
    }
    this.stats.misses++
    return -1
  }

  /** Size (log2 bytes) of the leaf an entry caches. */
  sizeLg2(index: number): number {
    return this.#sizeLg2[index] as number
  }

  /** IOVA page number of the start of the leaf an entry caches. */
  vpn(index: number): number {
    return this.#vpn[index] as number
  }

  /** Domain ID an entry is tagged with. */
  domid(index: number): number {
    return this.#domid[index] as number
  }

  /** PASID an entry is tagged with ({@link NO_PASID} for host translations). */
  pasid(index: number): number {
    return this.#pasid[index] as number
  }

  /**
   * Cache a leaf of `2^sizeLg2` bytes whose IOVA starts at page `vpn` and output at page
   * `pa` (both aligned to the leaf). Replaces an entry for the same leaf, else evicts
   * round-robin within the set.
   *
   * @returns the entry index
   */
  fill(
    domid: number,
    pasid: number,
    vpn: number,
    sizeLg2: number,
    pa: number,
    perm: number,
    dirty: boolean,
  ): number {
    const set = mix(domid, pasid, vpn, sizeLg2) & (this.sets - 1)
    const base = set * this.ways
    // One pass: the entry for the same leaf, else the set's first free way.
    let slot = -1
    let free = -1
    for (let w = base; w < base + this.ways; w++) {
      if (this.#valid[w] === 0) {
        if (free < 0) free = w
      } else if (
        this.#vpn[w] === vpn &&
        this.#sizeLg2[w] === sizeLg2 &&
        this.#domid[w] === domid &&
        this.#pasid[w] === pasid
      ) {
        slot = w
        break
      }
    }
    if (slot < 0) slot = free
    if (slot < 0) {
      const next = this.#next[set] as number
      slot = base + next
      this.#next[set] = next + 1 === this.ways ? 0 : next + 1
      this.#drop(slot)
      this.stats.evictions++
    }
    if (this.#valid[slot] === 1) this.#drop(slot)
    this.#valid[slot] = 1
    this.#domid[slot] = domid
    this.#pasid[slot] = pasid
    this.#sizeLg2[slot] = sizeLg2
    this.#vpn[slot] = vpn
    this.pa[slot] = pa
    this.perm[slot] = perm
    this.dirty[slot] = dirty ? 1 : 0
    const before = this.#sizeCount[sizeLg2] as number
    this.#sizeCount[sizeLg2] = before + 1
    if (before === 0) this.#refreshSizes()
    this.stats.fills++
    return slot
  }

  #drop(i: number): void {
    if (this.#valid[i] !== 1) return
    this.#valid[i] = 0
    const s = this.#sizeLg2[i] as number
    const left = (this.#sizeCount[s] as number) - 1
    this.#sizeCount[s] = left
    if (left === 0) this.#refreshSizes()
  }

  #refreshSizes(): void {
    const out: number[] = []
    for (let s = 12; s < 65; s++) if ((this.#sizeCount[s] as number) > 0) out.push(s)
    this.#sizesPresent = out
  }

  /**
   * Drop the entries of `domid` (and `pasid`, or any PASID when `pasid` is undefined) that
   * overlap IOVA pages [first, first + count).
   *
   * @returns how many entries were dropped
   */
  invalidateRange(domid: number, pasid: number | undefined, first: number, count: number): number {
    let n = 0
    const end = first + count
    for (let i = 0; i < this.#valid.length; i++) {
      if (this.#valid[i] !== 1 || this.#domid[i] !== domid) continue
      if (pasid !== undefined && this.#pasid[i] !== pasid) continue
      const s = this.#vpn[i] as number
      const e = s + (POW2[(this.#sizeLg2[i] as number) - 12] as number)
      if (s < end && first < e) {
        this.#drop(i)
        n++
      }
    }
    this.stats.invalidated += n
    return n
  }

  /** Drop every entry. */
  invalidateAll(): void {
    for (let i = 0; i < this.#valid.length; i++) {
      if (this.#valid[i] === 1) this.stats.invalidated++
    }
    this.#valid.fill(0)
    this.#sizeCount.fill(0)
    this.#sizesPresent = []
  }

  /** Entry indices currently valid, for diagnostics and tests. */
  validEntries(): number[] {
    const out: number[] = []
    for (let i = 0; i < this.#valid.length; i++) if (this.#valid[i] === 1) out.push(i)
    return out
  }
}

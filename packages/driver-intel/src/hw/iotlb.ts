/**
 * The VT-d translation caches that hold leaves: the IOTLB (tagged by domain ID, PASID and
 * the kind of translation — first-stage, second-stage or nested, which decides which
 * invalidation descriptor drops it, §6.5.2.3 / §6.5.2.4) and, with the same layout, the
 * device TLB of an ATS device (tagged by source ID and PASID, dropped only by device-TLB
 * invalidations, §6.5.2.5 / §6.5.2.6).
 *
 * Set-associative with round-robin replacement; every field lives in a typed array, so a
 * lookup or a fill allocates nothing. An entry covers one whole leaf (4 KiB, 2 MiB or
 * 1 GiB) and remembers the permissions of the walk and whether the leaf was dirty, so a
 * write through an entry cached clean goes back to memory to set D.
 *
 * @module
 */

/** 2^n for n in 0..64, so that the hot paths never call Math.pow. */
export const POW2: Float64Array = Float64Array.from({ length: 65 }, (_, n) => 2 ** n)

/** What an IOTLB entry translates (the PASID entry's PGTT that produced it). */
export const TlbKind = { FS: 1, SS: 2, NESTED: 3 } as const

/** Counters of a {@link TranslationCache}. */
export interface TlbStats {
  hits: number
  misses: number
  fills: number
  evictions: number
  invalidated: number
}

/** What an invalidation selects; `-1` in a tag field means "any". */
export interface TlbSelector {
  /** Bit set of `1 << TlbKind` to drop (0 = every kind). */
  readonly kinds: number
  readonly tag: number
  readonly pasid: number
  /** First 4 KiB page and page count of the range; count < 0 = every page. */
  readonly first: number
  readonly count: number
}

function slotHash(tag: number, pasid: number, vpn: number, sizeLg2: number): number {
  const lo = vpn >>> 0
  const hi = Math.floor(vpn / 4294967296)
  let h = Math.imul(lo, 0x9e3779b1) ^ Math.imul(hi + sizeLg2, 0x7feb352d)
  h ^= Math.imul(tag ^ (pasid << 7), 0x846ca68b)
  h ^= h >>> 16
  return h >>> 0
}

/** A set-associative leaf cache tagged by (tag, PASID). */
export class TranslationCache {
  readonly sets: number
  readonly ways: number
  readonly stats: TlbStats = { hits: 0, misses: 0, fills: 0, evictions: 0, invalidated: 0 }
  readonly #valid: Uint8Array
  /** Domain ID (IOTLB) or source ID (device TLB). */
  readonly #tag: Uint16Array
  readonly #pasid: Int32Array
  readonly #kind: Uint8Array
  readonly #sizeLg2: Uint8Array
  readonly #vpn: Float64Array
  /** Output page number (4 KiB units) of the start of the cached leaf. */
  readonly pa: Float64Array
  /** Access bits the walk granted (1 read, 2 write). */
  readonly perm: Uint8Array
  /** The leaf was dirty when cached (or D updates are off for it). */
  readonly dirty: Uint8Array
  /**
   * Nested entries: the guest-physical page the first stage produced for the leaf's start
   * (what tells a first-stage change from a second-stage one); -1 otherwise.
   */
  readonly mid: Float64Array
  readonly #rr: Uint8Array
  readonly #perSize = new Int32Array(65)
  #sizes: number[] = []

  constructor(entries: number, ways: number) {
    const sets = entries / ways
    if (!Number.isInteger(sets) || sets < 1 || (sets & (sets - 1)) !== 0) {
      throw new RangeError(`translation cache ${entries}/${ways}: sets must be a power of two`)
    }
    this.sets = sets
    this.ways = ways
    this.#valid = new Uint8Array(entries)
    this.#tag = new Uint16Array(entries)
    this.#pasid = new Int32Array(entries)
    this.#kind = new Uint8Array(entries)
    this.#sizeLg2 = new Uint8Array(entries)
    this.#vpn = new Float64Array(entries)
    this.pa = new Float64Array(entries)
    this.perm = new Uint8Array(entries)
    this.dirty = new Uint8Array(entries)
    this.mid = new Float64Array(entries)
    this.#rr = new Uint8Array(sets)
  }

  /** Number of valid entries. */
  get size(): number {
    let n = 0
    for (let s = 0; s < 65; s++) n += this.#perSize[s] as number
    return n
  }

  #match(i: number, tag: number, pasid: number, vpn: number, sizeLg2: number): boolean {
    return (
      this.#valid[i] === 1 &&
      this.#vpn[i] === vpn &&
      this.#sizeLg2[i] === sizeLg2 &&
      this.#tag[i] === tag &&
      this.#pasid[i] === pasid
    )
  }

  /**
   * The entry translating page `iovaPfn` for (tag, pasid), or -1 (counted as a miss).
   */
  lookup(tag: number, pasid: number, iovaPfn: number): number {
    const sizes = this.#sizes
    for (let k = 0; k < sizes.length; k++) {
      const s = sizes[k] as number
      const vpn = s === 12 ? iovaPfn : iovaPfn - (iovaPfn % (POW2[s - 12] as number))
      const base = (slotHash(tag, pasid, vpn, s) & (this.sets - 1)) * this.ways
      for (let i = base; i < base + this.ways; i++) {
        if (this.#match(i, tag, pasid, vpn, s)) {
          this.stats.hits++
          return i
        }
      }
    }
    this.stats.misses++
    return -1
  }

  /** Leaf size (log2 bytes) of an entry. */
  sizeLg2(i: number): number {
    return this.#sizeLg2[i] as number
  }

  /** First IOVA page of the leaf an entry caches. */
  vpn(i: number): number {
    return this.#vpn[i] as number
  }

  /** The {@link TlbKind} of an entry. */
  kind(i: number): number {
    return this.#kind[i] as number
  }

  /** Domain ID or source ID of an entry. */
  tag(i: number): number {
    return this.#tag[i] as number
  }

  /** PASID an entry is tagged with. */
  pasid(i: number): number {
    return this.#pasid[i] as number
  }

  /** Entry indices currently valid, for tools and tests. */
  validEntries(): number[] {
    const out: number[] = []
    for (let i = 0; i < this.#valid.length; i++) if (this.#valid[i] === 1) out.push(i)
    return out
  }

  /**
   * Cache a leaf of 2^sizeLg2 bytes starting at IOVA page `vpn` and output page `pa`,
   * replacing an entry for the same leaf, else a free way, else round-robin in the set.
   *
   * @returns the entry index
   */
  fill(
    tag: number,
    pasid: number,
    kind: number,
    vpn: number,
    sizeLg2: number,
    pa: number,
    perm: number,
    dirty: boolean,
    mid = -1,
  ): number {
    const base = (slotHash(tag, pasid, vpn, sizeLg2) & (this.sets - 1)) * this.ways
    let slot = -1
    let free = -1
    for (let i = base; i < base + this.ways; i++) {
      if (this.#match(i, tag, pasid, vpn, sizeLg2)) {
        slot = i
        break
      }
      if (free < 0 && this.#valid[i] === 0) free = i
    }
    if (slot < 0) slot = free
    if (slot < 0) {
      const set = base / this.ways
      slot = base + ((this.#rr[set] as number) % this.ways)
      this.#rr[set] = ((this.#rr[set] as number) + 1) % this.ways
      this.stats.evictions++
    }
    this.#drop(slot)
    this.#valid[slot] = 1
    this.#tag[slot] = tag
    this.#pasid[slot] = pasid
    this.#kind[slot] = kind
    this.#sizeLg2[slot] = sizeLg2
    this.#vpn[slot] = vpn
    this.pa[slot] = pa
    this.perm[slot] = perm
    this.dirty[slot] = dirty ? 1 : 0
    this.mid[slot] = mid
    const count = (this.#perSize[sizeLg2] as number) + 1
    this.#perSize[sizeLg2] = count
    if (count === 1) this.#resize()
    this.stats.fills++
    return slot
  }

  #drop(i: number): void {
    if (this.#valid[i] !== 1) return
    this.#valid[i] = 0
    const s = this.#sizeLg2[i] as number
    const left = (this.#perSize[s] as number) - 1
    this.#perSize[s] = left
    if (left === 0) this.#resize()
  }

  #resize(): void {
    const out: number[] = []
    for (let s = 12; s < 65; s++) if ((this.#perSize[s] as number) > 0) out.push(s)
    this.#sizes = out
  }

  /**
   * Drop the entries `sel` selects (an entry overlapping the range goes whole).
   *
   * @returns how many were dropped
   */
  invalidate(sel: TlbSelector): number {
    let n = 0
    const end = sel.first + sel.count
    for (let i = 0; i < this.#valid.length; i++) {
      if (this.#valid[i] !== 1) continue
      if (sel.kinds !== 0 && (sel.kinds & (1 << (this.#kind[i] as number))) === 0) continue
      if (sel.tag >= 0 && this.#tag[i] !== sel.tag) continue
      if (sel.pasid >= 0 && this.#pasid[i] !== sel.pasid) continue
      if (sel.count >= 0) {
        const s = this.#vpn[i] as number
        const e = s + (POW2[(this.#sizeLg2[i] as number) - 12] as number)
        if (!(s < end && sel.first < e)) continue
      }
      this.#drop(i)
      n++
    }
    this.stats.invalidated += n
    return n
  }

  /** Drop every entry. */
  invalidateAll(): number {
    const n = this.size
    this.#valid.fill(0)
    this.#perSize.fill(0)
    this.#sizes = []
    this.stats.invalidated += n
    return n
  }
}

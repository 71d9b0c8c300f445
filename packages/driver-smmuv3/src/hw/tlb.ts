/**
 * The SMMU's translation caches: the TLB, tagged as SMMUv3 tags it (the translation regime
 * kind, VMID and ASID), and the same structure serving as the ATS device's Address
 * Translation Cache (tagged by StreamID and PASID). Set-associative and bounded, with
 * round-robin replacement per set; every field lives in a typed array, so a lookup or a
 * fill allocates nothing.
 *
 * An entry caches one whole leaf (the smaller of the stage-1 and stage-2 leaves of a
 * nested translation) with the combined permissions of the walk and whether the stage-1
 * leaf was already writable-dirty, so that a write through an entry cached writable-clean
 * goes back to the descriptor (HTTU, §3.13).
 *
 * @module
 */

/** 2^n for n in 0..64, so that the hot paths never call Math.pow. */
export const POW2: Float64Array = Float64Array.from({ length: 65 }, (_, n) => 2 ** n)

/** What an IOTLB entry translates (its `kind`). */
export const TlbKind = {
  /** Stage 1 only (STE.Config = S1 translate): VA → PA, tagged (VMID, ASID). */
  S1: 1,
  /** Stage 2 only (Config = S2 translate, or nested with stage 1 bypassed): IPA → PA. */
  S2: 2,
  /** Nested: a combined S1+S2 entry, VA → PA, tagged (VMID, ASID). */
  S12: 3,
} as const

/** Bit masks of kinds, for {@link Tlb.invalidate}. */
export const KINDS_S1_AND_NESTED = (1 << TlbKind.S1) | (1 << TlbKind.S12)
export const KINDS_ALL = 0xff

/** Counters of a {@link Tlb}. */
export interface TlbStats {
  hits: number
  misses: number
  fills: number
  evictions: number
  invalidated: number
}

function mix(kind: number, tag: number, sub: number, vpn: number, sizeLg2: number): number {
  const lo = vpn >>> 0 // vpn mod 2^32, exact below 2^53 (`%` would be a float modulo)
  const hi = (vpn - lo) / 4294967296
  let h = Math.imul(lo ^ Math.imul(hi, 0x9e3779b1), 0x85ebca6b)
  h ^= Math.imul(tag + kind, 0xc2b2ae35) ^ Math.imul(sub + 2, 0x27d4eb2f) ^ sizeLg2
  h ^= h >>> 15
  return h >>> 0
}

/** A set-associative translation cache. */
export class Tlb {
  readonly sets: number
  readonly ways: number
  readonly stats: TlbStats = { hits: 0, misses: 0, fills: 0, evictions: 0, invalidated: 0 }
  readonly #valid: Uint8Array
  readonly #kind: Uint8Array
  readonly #tag: Uint32Array
  readonly #sub: Int32Array
  readonly #sizeLg2: Uint8Array
  /** Input page number (4 KiB units) of the start of the cached leaf. */
  readonly #vpn: Float64Array
  /** Output page number (4 KiB units) of the start of the cached leaf. */
  readonly pa: Float64Array
  /** Nested entries: the intermediate page number the stage 1 produced for the leaf start. */
  readonly ipa: Float64Array
  /** Access bits the walk granted (1 read, 2 write). */
  readonly perm: Uint8Array
  /** The stage-1 leaf was writable-dirty when cached. */
  readonly dirty: Uint8Array
  readonly #next: Uint8Array
  /** How many valid entries of each size are cached (index = size lg2). */
  readonly #sizeCount = new Int32Array(65)
  #sizesPresent: number[] = []

  /**
   * @throws RangeError - the geometry does not give a power-of-two number of sets
   */
  constructor(entries = 1024, ways = 4) {
    if (entries % ways !== 0 || ((entries / ways) & (entries / ways - 1)) !== 0) {
      throw new RangeError(`TLB geometry ${entries}/${ways}: sets must be a power of two`)
    }
    this.sets = entries / ways
    this.ways = ways
    this.#valid = new Uint8Array(entries)
    this.#kind = new Uint8Array(entries)
    this.#tag = new Uint32Array(entries)
    this.#sub = new Int32Array(entries)
    this.#sizeLg2 = new Uint8Array(entries)
    this.#vpn = new Float64Array(entries)
    this.pa = new Float64Array(entries)
    this.ipa = new Float64Array(entries)
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

  #matches(w: number, kind: number, tag: number, sub: number, vpn: number, s: number): boolean {
    return (
      this.#valid[w] === 1 &&
      this.#vpn[w] === vpn &&
      this.#sizeLg2[w] === s &&
      this.#tag[w] === tag &&
      this.#kind[w] === kind &&
      this.#sub[w] === sub
    )
  }

  /**
   * Find the entry translating input page `vpn` for (kind, tag, sub).
   *
   * @returns the entry index, or -1 on a miss. Counts the hit or miss.
   */
  lookup(kind: number, tag: number, sub: number, vpn: number): number {
    const sizes = this.#sizesPresent
    for (let k = 0; k < sizes.length; k++) {
      const s = sizes[k] as number
      const start = s === 12 ? vpn : vpn - (vpn % (POW2[s - 12] as number))
      const base = (mix(kind, tag, sub, start, s) & (this.sets - 1)) * this.ways
      for (let w = base; w < base + this.ways; w++) {
        if (this.#matches(w, kind, tag, sub, start, s)) {
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

  /** Input page number of the start of the leaf an entry caches. */
  vpn(index: number): number {
    return this.#vpn[index] as number
  }

  /** The entry's kind ({@link TlbKind}). */
  kind(index: number): number {
    return this.#kind[index] as number
  }

  /** The entry's tag (IOTLB: VMID << 16 | ASID; ATC: StreamID). */
  tag(index: number): number {
    return this.#tag[index] as number
  }

  /**
   * Cache a leaf of `2^sizeLg2` bytes whose input starts at page `vpn` and output at page
   * `pa` (both aligned to the leaf). Replaces an entry for the same leaf, else evicts
   * round-robin within the set.
   *
   * @returns the entry index
   */
  fill(
    kind: number,
    tag: number,
    sub: number,
    vpn: number,
    sizeLg2: number,
    pa: number,
    perm: number,
    dirty: boolean,
    ipa = -1,
  ): number {
    const base = (mix(kind, tag, sub, vpn, sizeLg2) & (this.sets - 1)) * this.ways
    let slot = -1
    for (let w = base; w < base + this.ways; w++) {
      if (this.#matches(w, kind, tag, sub, vpn, sizeLg2)) {
        slot = w
        break
      }
    }
    if (slot < 0) {
      for (let w = base; w < base + this.ways; w++) {
        if (this.#valid[w] === 0) {
          slot = w
          break
        }
      }
    }
    if (slot < 0) {
      const set = base / this.ways
      slot = base + ((this.#next[set] as number) % this.ways)
      this.#next[set] = ((this.#next[set] as number) + 1) % this.ways
      this.#drop(slot)
      this.stats.evictions++
    }
    if (this.#valid[slot] === 1) this.#drop(slot)
    this.#valid[slot] = 1
    this.#kind[slot] = kind
    this.#tag[slot] = tag
    this.#sub[slot] = sub
    this.#sizeLg2[slot] = sizeLg2
    this.#vpn[slot] = vpn
    this.pa[slot] = pa
    this.ipa[slot] = ipa
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
   * Drop the entries whose kind is in `kinds` (a bit mask, bit k = kind k), whose tag
   * matches `tagValue` under `tagMask`, whose `sub` equals `sub` (any when null), and whose
   * leaf overlaps input pages [first, first + count) (every leaf when `count` is Infinity).
   *
   * @returns how many entries were dropped
   */
  invalidate(
    kinds: number,
    tagMask: number,
    tagValue: number,
    sub: number | null,
    first = 0,
    count = Number.POSITIVE_INFINITY,
  ): number {
    let n = 0
    const end = first + count
    const want = (tagValue & tagMask) >>> 0
    for (let i = 0; i < this.#valid.length; i++) {
      if (this.#valid[i] !== 1) continue
      if (((kinds >>> (this.#kind[i] as number)) & 1) === 0) continue
      if (((this.#tag[i] as number) & tagMask) >>> 0 !== want) continue
      if (sub !== null && this.#sub[i] !== sub) continue
      if (count !== Number.POSITIVE_INFINITY) {
        const s = this.#vpn[i] as number
        const e = s + (POW2[(this.#sizeLg2[i] as number) - 12] as number)
        if (!(s < end && first < e)) continue
      }
      this.#drop(i)
      n++
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

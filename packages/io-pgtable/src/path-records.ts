/**
 * Per-entry walk records for a hardware model's missing-invalidation detector.
 *
 * A detector compares a cached translation with a fresh walk of the tables in memory on
 * every hit. While every entry a walk read still holds the same words, a walk of the same
 * IOVA page from the same root gives the same result, so the comparison can be skipped:
 * {@link PathRecords} keeps, per cache entry, one {@link PageTableWalker.recordPath} record
 * with the IOVA page and the cached context (a DTE, PASID entry, STE/CD object) it was
 * walked for. A record is only as good as its cache entry: {@link PathRecords.clear} it
 * whenever the entry is filled again.
 *
 * @module
 */

import { PATH_RECORD_INTS } from './walk.ts'

/** What {@link PathRecords} needs of a walker (`PageTableWalker` has both). */
export interface PathRecorder {
  /** Record the last walk's entries at `out[at]`; false (nothing recorded) when it cannot. */
  recordPath(out: Int32Array, at: number): boolean
  /** True when every entry of the record at `rec[at]` still holds the recorded words. */
  pathUnchanged(rec: Int32Array, at: number): boolean
}

/** One walk record per cache entry, keyed by IOVA page and cached context. */
export class PathRecords<K extends object> {
  readonly #ints: number
  readonly #rec: Int32Array
  readonly #ipfn: Float64Array
  readonly #key: (K | undefined)[]

  /**
   * @param entries - cache entries (records are indexed like them)
   * @param ints - ints per record (`PATH_RECORD_INTS`, or a walker adapter's own size)
   */
  constructor(entries: number, ints = PATH_RECORD_INTS) {
    this.#ints = ints
    this.#rec = new Int32Array(entries * ints)
    this.#ipfn = new Float64Array(entries)
    this.#key = new Array<K | undefined>(entries)
  }

  /** Forget entry `e`'s record (call when the entry is filled). */
  clear(e: number): void {
    this.#rec[e * this.#ints] = 0
    this.#key[e] = undefined
  }

  /**
   * Keep `walker`'s last walk as entry `e`'s record, made for IOVA page `ipfn` under `key`
   * (or clear it when the walker cannot record that walk).
   */
  save(e: number, walker: PathRecorder, ipfn: number, key: K): void {
    if (walker.recordPath(this.#rec, e * this.#ints)) {
      this.#ipfn[e] = ipfn
      this.#key[e] = key
    } else {
      this.#key[e] = undefined
    }
  }

  /**
   * True when entry `e` has a record made for `ipfn` under `key` whose entries all hold
   * the same words in memory: a walk now would read and give the same as then.
   */
  unchanged(e: number, walker: PathRecorder, ipfn: number, key: K): boolean {
    if (this.#key[e] !== key || this.#ipfn[e] !== ipfn) return false
    return walker.pathUnchanged(this.#rec, e * this.#ints)
  }
}

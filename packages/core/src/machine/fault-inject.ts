/**
 * Fault injection in the style of the kernel's `fail_nth`: arm it with N and the N-th
 * allocation point reached afterwards fails (once). Used by fail-nth tests to prove that
 * every error path unwinds completely.
 *
 * @module
 */

/** A fault-injection point's answer source, shared by a machine and what runs on it. */
export class FaultInjector {
  #countdown = 0
  /** Allocation points reached since the last {@link arm} (or creation). */
  hits = 0
  /** Where the injected failure happened (the `site` of the failing point), if it did. */
  firedAt: string | null = null

  /**
   * Make the `nth` allocation point from now fail (1 = the very next one). 0 disarms.
   */
  arm(nth: number): void {
    if (!Number.isInteger(nth) || nth < 0) throw new RangeError(`fail_nth must be >= 0: ${nth}`)
    this.#countdown = nth
    this.hits = 0
    this.firedAt = null
  }

  /** Stop injecting. */
  disarm(): void {
    this.#countdown = 0
  }

  /** True while armed and not yet fired. */
  get armed(): boolean {
    return this.#countdown > 0
  }

  /**
   * Called by every allocation point. Returns true when this point must fail.
   *
   * @param site - a name for diagnostics (`'frame'`, `'iommufd:object'`, ...)
   */
  shouldFail(site: string): boolean {
    this.hits++
    if (this.#countdown === 0) return false
    if (--this.#countdown !== 0) return false
    this.firedAt = site
    return true
  }
}

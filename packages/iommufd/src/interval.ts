/**
 * Small interval helpers over inclusive ranges. The IOAS keeps few intervals (areas,
 * reservations, allowed ranges, pin records), so sorted arrays and linear merges stand in
 * for the kernel's interval trees; lookups that run per IOVA use binary search.
 *
 * @module
 */

/** An inclusive range `[start, last]`. */
export interface Span<T extends number | bigint> {
  readonly start: T
  readonly last: T
}

/**
 * The holes of the union of `used` inside `[from, to]` (`interval_tree_span_iter`): ranges
 * that overlap or touch merge into one used span.
 */
export function holesOf<T extends number | bigint>(
  used: Iterable<Span<T>>,
  from: T,
  to: T,
  one: T,
): Span<T>[] {
  const list = [...used].filter((r) => r.last >= from && r.start <= to)
  list.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0))
  const out: Span<T>[] = []
  let cur = from
  let done = false
  for (const r of list) {
    if (r.start > cur) out.push({ start: cur, last: ((r.start as number) - (one as number)) as T })
    if (r.last >= to) {
      done = true
      break
    }
    if (r.last >= cur) cur = ((r.last as number) + (one as number)) as T
  }
  if (!done && cur <= to) out.push({ start: cur, last: to })
  return out
}

/** True when some range of `list` intersects `[start, last]`. */
export function intersects<T extends number | bigint>(
  list: Iterable<Span<T>>,
  start: T,
  last: T,
): boolean {
  for (const r of list) if (r.start <= last && r.last >= start) return true
  return false
}

/**
 * Encoding pieces shared by the formats whose output address sits at bits 51:12 of the
 * entry (AMD v1, x86-64, VT-d) (internal).
 *
 * @module
 */

import { IommuError } from '@iommu/core'
import { HwAd } from '../format.ts'

/** Output address of an entry whose OA field is bits 51:12. */
export function oaField(w: Uint32Array, i: number): number {
  return ((w[2 * i] as number) >>> 12) + ((w[2 * i + 1] as number) & 0xf_ffff) * 0x10_0000
}

/**
 * Write `count` leaves with the OA at bits 51:12: leaf k maps `pfn + k * pfnStep` (any
 * bits below the step, like AMD's size code, travel with it) and is written to
 * `replicas` consecutive entries. `lo`/`hi` are the other bits.
 */
export function fillLeaves(
  w: Uint32Array,
  i: number,
  count: number,
  replicas: number,
  pfn: number,
  pfnStep: number,
  lo: number,
  hi: number,
): void {
  let j = i << 1
  let oa = pfn
  if (replicas === 1 && pfnStep < 0x10_0000) {
    // The hot case (runs of pages or blocks): runs that do not carry into the high word.
    const inc = pfnStep << 12
    let left = count
    while (left > 0) {
      const high = Math.floor(oa / 0x10_0000)
      const low = oa - high * 0x10_0000
      const run = Math.min(left, Math.ceil((0x10_0000 - low) / pfnStep))
      const hw = (high | hi) >>> 0
      let v = (low << 12) | lo
      for (const end = j + 2 * run; j < end; j += 2) {
        w[j] = v
        w[j + 1] = hw
        v = (v + inc) | 0
      }
      left -= run
      oa += run * pfnStep
    }
    return
  }
  for (let k = 0; k < count; k++) {
    const l = ((oa << 12) | lo) >>> 0
    const h = (Math.floor(oa / 0x10_0000) | hi) >>> 0
    for (let r = 0; r < replicas; r++) {
      w[j] = l
      w[j + 1] = h
      j += 2
    }
    oa += pfnStep
  }
}

/**
 * The first index in `[from, to)` of a frame whose low word does not satisfy
 * `(lo & mask) === value`, or `to` (the format accelerators' scan). Eight entries at a
 * time while they all match (one test per block, no branch per entry), then entry by
 * entry.
 */
export function scanLow(
  w: Uint32Array,
  from: number,
  to: number,
  mask: number,
  value: number,
): number {
  let j = from << 1
  const end = to << 1
  for (; j + 16 <= end; j += 16) {
    const miss =
      (((w[j] as number) & mask) ^ value) |
      (((w[j + 2] as number) & mask) ^ value) |
      (((w[j + 4] as number) & mask) ^ value) |
      (((w[j + 6] as number) & mask) ^ value) |
      (((w[j + 8] as number) & mask) ^ value) |
      (((w[j + 10] as number) & mask) ^ value) |
      (((w[j + 12] as number) & mask) ^ value) |
      (((w[j + 14] as number) & mask) ^ value)
    if (miss !== 0) break
  }
  while (j < end && ((w[j] as number) & mask) === value) j += 2
  return j >>> 1
}

/**
 * The hardware accessed/dirty update of formats with both flags in the low word: A on every
 * entry walked when ACCESSED is on, D on a written leaf when DIRTY is on.
 */
export function setAccessedDirty(
  w: Uint32Array,
  i: number,
  leaf: boolean,
  write: boolean,
  ad: number,
  accessed: number,
  dirty: number,
): void {
  const old = w[2 * i] as number
  let lo = old
  if (ad & HwAd.ACCESSED) lo |= accessed
  if (leaf && write && ad & HwAd.DIRTY) lo |= dirty
  // Only a change is written (the hardware sets bits that are clear): no store, no dirty
  // cache line, on the walks that find them set.
  if (lo >>> 0 !== old) w[2 * i] = lo
}

/** First checks of `pt_iommu_init`: the VA width within the format's, a non-zero OA width (EINVAL). */
export function checkHwBits(name: string, va: number, oa: number, maxVa: number): void {
  if (!Number.isInteger(va) || va <= 0 || va > maxVa) {
    throw new IommuError('EINVAL', `${name}: hwMaxVaBits ${va} outside 1..${maxVa}`)
  }
  if (!Number.isInteger(oa) || oa <= 0) throw new IommuError('EINVAL', `${name}: hwMaxOaBits ${oa}`)
}

/** The check of `pt_iommu_init` after the format's own: the OA width fits the format (EINVAL). */
export function checkOaBits(name: string, oa: number, maxOa: number): void {
  if (oa > maxOa) throw new IommuError('EINVAL', `${name}: hwMaxOaBits ${oa} above ${maxOa}`)
}

/** Configuration fields common to the fixed-depth x86-style formats. */
export interface FixedTopConfig {
  /** Root level (levels - 1). */
  readonly topLevel: number
  /** IOVA bits the hardware translates; default: what the root spans. */
  readonly hwMaxVaBits?: number
  /** Output address bits. Default 52. */
  readonly hwMaxOaBits?: number
}

/**
 * `pt_iommu_init` for a 4 KiB-granule, 9-bit, fixed-root format whose largest root is
 * level 4 (57-bit VA): the shared checks, in the kernel's order.
 *
 * @throws EINVAL - bad VA/OA widths; EOPNOTSUPP - a root level outside `minTop..4`, or a
 *   VA wider than a smaller root spans
 */
export function initFixedTop(
  name: string,
  cfg: FixedTopConfig,
  minTop: number,
  signExtend: boolean,
): {
  granuleLg2: number
  bitsPerLevel: number
  topLevel: number
  maxTopLevel: number
  vaBits: number
  oaBits: number
  signExtend: boolean
  dynamicTop: false
  upperVa: false
} {
  const top = cfg.topLevel
  const span = 12 + 9 * (top + 1)
  const va = cfg.hwMaxVaBits ?? Math.min(span, 57)
  const oa = cfg.hwMaxOaBits ?? 52
  checkHwBits(name, va, oa, 57)
  if (!Number.isInteger(top) || top < minTop || top > 4) {
    throw new IommuError('EOPNOTSUPP', `${name}: topLevel ${top} outside ${minTop}..4`)
  }
  checkOaBits(name, oa, 52)
  // pt_init_common: a root below the largest must span the VA.
  if (top !== 4 && va > span) {
    throw new IommuError('EOPNOTSUPP', `${name}: a level-${top} root spans ${span} bits, not ${va}`)
  }
  return {
    granuleLg2: 12,
    bitsPerLevel: 9,
    topLevel: top,
    maxTopLevel: top,
    vaBits: va,
    oaBits: oa,
    signExtend,
    dynamicTop: false,
    upperVa: false,
  }
}

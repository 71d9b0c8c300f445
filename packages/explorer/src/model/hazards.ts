/**
 * The dirty-tracking hazard detector (`machine.dirtyHazards` of `@iommu/core`) as a report
 * of the Detectors tab, for every vendor: each GET_DIRTY_BITMAP whose Linux 7.2 result
 * differs from the ideal one, with the kind, the HWPT, the query, the IOVA it lost or left
 * dirty, and the bytes it wrote past the user's bitmap.
 *
 * @module
 */

import type {
  DirtyHazard,
  DirtyHazardKind,
  DirtyHazardLog,
  IovaRangeList,
  Machine,
} from '@iommu/core'
import { hex } from '../decode/bitfield.ts'
import type { DetectorReport, Finding } from '../vendors/types.ts'

/** Ranges listed per finding; the rest are counted. */
const MAX_RANGES = 6

/** What each kind means, in one sentence (see `DirtyHazardKind` in `@iommu/core`). */
const MEANING: Record<DirtyHazardKind, string> = {
  'record-past-iopte':
    'The record reaches past its dirty IOPTE: IOVA the IOPTE does not map is reported dirty (generic_pt record_dirty, io-pgtable-arm’s shifted walk).',
  'record-short':
    'The record stops before the end of its dirty IOPTE (a contiguous leaf recorded one item short); the rest was cleaned and never reported.',
  'iopte-outside-query':
    'A dirty IOPTE reaches outside the read and was cleaned whole: its dirt outside the read is never reported.',
  'walk-stopped':
    'The walk stopped at an IOVA without an area: the dirty IOPTEs after it were neither reported nor cleaned.',
  'walk-skipped':
    'io-pgtable-arm entered a table at a shifted address: its first entries were neither reported nor cleaned.',
  'past-bitmap': 'iova_bitmap_set did not clip: it set bits past the end of the user’s bitmap.',
  'bitmap-pin-failed':
    'A bitmap page could not be pinned: iova_bitmap_set dropped the records there while the walk cleaned the IOPTEs.',
  'record-outside-bitmap':
    'A record started outside the bitmap and iova_bitmap_set dropped it whole.',
  'bitmap-fill': 'A zero-length record made iova_bitmap_set set every bit of the pinned pages.',
  'bitmap-livelock':
    'The kernel would loop forever in iova_bitmap_set (the ioctl never returns); the model failed it with EDEADLK.',
}

/** A size in bytes as B, KiB, MiB or GiB (exact). */
function size(bytes: bigint): string {
  for (const [unit, shift] of [
    ['GiB', 30n],
    ['MiB', 20n],
    ['KiB', 10n],
  ] as const) {
    if (bytes >= 1n << shift && bytes % (1n << shift) === 0n) return `${bytes >> shift} ${unit}`
  }
  return `${bytes} B`
}

/** `[0x1000_3000, +4 KiB)`. */
function span(iova: bigint, length: bigint): string {
  return `[${hex(iova)}, +${size(length)})`
}

/** The ranges of a list, at most {@link MAX_RANGES}, and their total. */
export function rangesText(list: IovaRangeList): string {
  const all = list.toArray()
  const shown = all.slice(0, MAX_RANGES).map((s) => span(s.iova, s.length))
  if (all.length > MAX_RANGES) shown.push(`… ${all.length - MAX_RANGES} more`)
  return `${size(list.bytes)}: ${shown.join(' ')}`
}

/** One finding per hazard entry: an error when dirt was lost or the kernel would hang. */
export function hazardFinding(h: DirtyHazard): Finding {
  const detail: Record<string, string> = {
    kind: h.kind,
    read: `#${h.read} (${h.clear ? 'read and clear' : 'NO_CLEAR'}, ${h.mode} records)`,
    HWPT: h.hwptId === null ? h.source : String(h.hwptId),
    query: `${span(h.iova, h.length)}, page_size ${size(h.pageSize)}`,
    count: String(h.count),
  }
  if (h.lost.count) detail.lost = rangesText(h.lost)
  if (h.missed.count) detail['missed (still dirty)'] = rangesText(h.missed)
  if (h.bytesPast) detail['past the bitmap'] = `${h.bytesPast} bytes (${h.bits} bits)`
  else if (h.bits) detail['stray bits'] = String(h.bits)
  if (h.iopte !== null) detail.IOPTE = span(h.iopte.iova, h.iopte.length)
  if (h.record !== null) detail.recorded = span(h.record.iova, h.record.length)
  const severe = h.lost.count > 0 || h.kind === 'bitmap-livelock' || h.bytesPast > 0
  return { severity: severe ? 'error' : 'warning', text: MEANING[h.kind], detail }
}

/** The Detectors-tab report of a machine's dirty-tracking hazard log. */
export function dirtyHazardReport(machine: Machine): DetectorReport {
  const log: DirtyHazardLog = machine.dirtyHazards
  return {
    title: 'Dirty-tracking hazard detector',
    about: `Each IOMMU_HWPT_GET_DIRTY_BITMAP is compared with the ideal read (records: ${machine.dirtyRecords}): where Linux 7.2 loses dirty pages (cleaned, never reported), leaves them dirty for a later read, or writes past the user’s bitmap, the read is listed with its IOVA ranges (2 KiB resolution).`,
    enabled: log.enabled,
    findings: log.entries.map(hazardFinding),
  }
}

/**
 * Migration reports: the per-round table, the totals, the dirty-tracking hazards,
 * `--json` and the `--svg` figure.
 *
 * @module
 */

import type { DirtyHazard, DirtyHazardKind } from '@iommu/core'
import { migrationChart } from './chart.ts'
import type { HwStats, StaleSummary } from './vendors.ts'
import type { ViommuReport } from './viommu.ts'

/** One kind of dirty-tracking hazard over the whole migration. */
export interface DirtyHazardSummary {
  readonly kind: DirtyHazardKind
  /** Dirty reads where it happened. */
  readonly reads: number
  /** Occurrences (IOPTEs, records) over all reads. */
  readonly count: number
  /** Guest pages whose dirt it lost (cleaned, never reported), counted once. */
  readonly lostPages: number
  /** Guest pages it left out of a read but left dirty, counted once. */
  readonly missedPages: number
  /** Farthest write past the end of a bitmap, in bytes. */
  readonly bytesPast: number
  /** The first occurrence, as the detector words it. */
  readonly example: string
}

/**
 * Sum the detector's entries per kind; pages are the 4 KiB guest pages from `guestIova`.
 *
 * @returns the kinds, and the guest pages lost by any of them (each counted once)
 */
export function summarizeHazards(
  entries: readonly DirtyHazard[],
  guestIova: bigint,
  pages: number,
): { kinds: DirtyHazardSummary[]; lostPages: number } {
  const first = Number(guestIova >> 11n)
  // One bit per guest page.
  const bits = () => new Uint8Array(Math.ceil(pages / 8))
  const mark = (seen: Uint8Array, l: DirtyHazard['lost']): number => {
    let n = 0
    l.forEach((s, e) => {
      const from = Math.max(0, Math.floor((s - first) / 2))
      const to = Math.min(pages, Math.ceil((e - first) / 2))
      for (let p = from; p < to; p++) {
        const b = 1 << (p & 7)
        if (((seen[p >>> 3] as number) & b) === 0) {
          seen[p >>> 3] = (seen[p >>> 3] as number) | b
          n++
        }
      }
    })
    return n
  }
  const anyLost = bits()
  let lostPages = 0
  const byKind = new Map<DirtyHazardKind, DirtyHazard[]>()
  for (const h of entries) {
    const list = byKind.get(h.kind) ?? []
    list.push(h)
    byKind.set(h.kind, list)
    lostPages += mark(anyLost, h.lost)
  }
  const kinds: DirtyHazardSummary[] = []
  for (const [kind, list] of byKind) {
    const lost = bits()
    const missed = bits()
    kinds.push({
      kind,
      reads: list.length,
      count: list.reduce((n, h) => n + h.count, 0),
      lostPages: list.reduce((n, h) => n + mark(lost, h.lost), 0),
      missedPages: list.reduce((n, h) => n + mark(missed, h.missed), 0),
      bytesPast: list.reduce((n, h) => Math.max(n, h.bytesPast), 0),
      example: (list[0] as DirtyHazard).message,
    })
  }
  return { kinds, lostPages }
}

/** One pre-copy round (round 0 copies everything) or the final stop-and-copy. */
export interface RoundReport {
  /** 0, 1, ...; the stop-and-copy round has `stopAndCopy: true`. */
  readonly round: number
  readonly stopAndCopy: boolean
  /** Pages the round had to send (all of memory in round 0, then the dirty bitmap). */
  readonly dirtyPages: number
  /** Bytes sent over the link. */
  readonly bytesSent: number
  /** Simulated duration of the round in seconds. */
  readonly simSeconds: number
  /** Device DMA writes issued while the round ran. */
  readonly dmaWrites: number
  /** Wall-clock milliseconds the simulation spent on the round. */
  readonly wallMs: number
  /** Wall-clock milliseconds spent in IOMMU_HWPT_GET_DIRTY_BITMAP. */
  readonly bitmapMs: number
}

/** The parameters of a run, as reported. */
export interface MigrationConfig {
  /** The IOMMU driver's name. */
  readonly iommu: string
  readonly memoryBytes: number
  readonly dimmBytes: number
  readonly iopte: string
  readonly seed: number
  /** Link bandwidth in bytes per simulated second. */
  readonly bandwidth: number
  readonly maxRounds: number
  /** Allowed downtime in seconds. */
  readonly maxDowntime: number
  readonly workload: Readonly<Record<string, number>>
  readonly unplugRound: number | null
  readonly breakage: string
  readonly detector: boolean
  /** How the dirty reads recorded: `'kernel'` (Linux 7.2) or `'ideal'`. */
  readonly dirtyRecords: string
  /** The device names. */
  readonly devices: readonly string[]
  /** The known 7.2 kernel bugs were fixed for the run (`--ideal`). */
  readonly ideal: boolean
  /** A guest with a vIOMMU (`--viommu`). */
  readonly viommu: boolean
}

/** Everything a migration run reports. */
export interface MigrationReport {
  readonly config: MigrationConfig
  /** The IOMMU hardware and the dirty path its driver used. */
  readonly vendor: { readonly name: string; readonly dirtyPath: string }
  /**
   * The downtime budget in pages: what the link sends within the allowed downtime
   * (`bandwidth × maxDowntime / 4096`). Pre-copy stops once the dirty set is this small.
   */
  readonly thresholdPages: number
  readonly rounds: readonly RoundReport[]
  /** Did the dirty set fall under the threshold before the round limit? */
  readonly converged: boolean
  /** Simulated downtime: the stop-and-copy round. */
  readonly downtimeSeconds: number
  /** Simulated total migration time. */
  readonly totalSimSeconds: number
  readonly totalBytesSent: number
  readonly totalDmaWrites: number
  /** DMA writes per device, in `config.devices` order. */
  readonly deviceWrites: readonly number[]
  /** Pages compared by the verification, and the mismatches found. */
  readonly verifiedPages: number
  readonly mismatchedPages: number
  /** First mismatching page offsets (at most 16). */
  readonly firstMismatches: readonly number[]
  /** Hot-unplug: bytes unplugged and dirty pages rescued by the NO_CLEAR read. */
  readonly unplug: { readonly bytes: number; readonly dirtyPagesRescued: number } | null
  /** The dirty-tracking hazard detector's findings, per kind. */
  readonly dirtyHazards: readonly DirtyHazardSummary[]
  /** Guest pages whose dirt a read cleaned without reporting it (each counted once). */
  readonly lostPages: number
  /**
   * DMA that used a stale IOTLB or configuration-cache entry, per missing invalidation, as
   * the unit's missing-invalidation detector found them (empty without a detector).
   */
  readonly staleTranslations: readonly StaleSummary[]
  /** The IOMMU unit's counters (null for a unit the simulator has no adapter for). */
  readonly hw: HwStats | null
  /** The vIOMMU guest (`viommu`), else null. */
  readonly viommu: ViommuReport | null
  /** Wall-clock seconds of the whole simulation, and its speed. */
  readonly wallSeconds: number
  /** Simulated seconds per wall-clock second (above 1: faster than real time). */
  readonly speedup: number
  /** Peak resident set size of the process in bytes. */
  readonly peakRssBytes: number
  /**
   * Memory of the run, sampled after every round (the largest sample): `bookkeeping` is
   * every typed array of the model except the guest's data — frame metadata, the page
   * arrays of both VMs, pin lists, IO page tables, dirty bitmaps (the VMM's buffer
   * included), copy-on-write share counts; `data` is the storage of the pages written
   * (4 KiB per distinct copy, with the slabs' free slots). 0 where the runtime cannot tell
   * (a browser).
   */
  readonly memory?: { readonly bookkeepingBytes: number; readonly dataBytes: number }
}

/**
 * The verification passed: the destination equals the source, no dirty read lost a page
 * (a lost page the destination happens to hold is luck, not tracking), no DMA used a stale
 * translation (a missing invalidation), and with a vIOMMU every guest IOVA translates on
 * the destination to the same guest page.
 */
export function verified(r: MigrationReport): boolean {
  return (
    r.mismatchedPages === 0 &&
    r.verifiedPages > 0 &&
    r.lostPages === 0 &&
    r.staleTranslations.length === 0 &&
    (r.viommu === null || r.viommu.destination.mismatches === 0)
  )
}

/** Human-readable binary size. */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let v = n
  let u = 0
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024
    u++
  }
  return `${v >= 100 || u === 0 ? v.toFixed(0) : v.toFixed(1)} ${units[u]}`
}

function seconds(s: number): string {
  if (s < 1e-3) return `${(s * 1e6).toFixed(0)} µs`
  if (s < 1) return `${(s * 1e3).toFixed(1)} ms`
  return `${s.toFixed(2)} s`
}

function table(head: string[], rows: string[][], right: boolean[]): string {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] as string).length)))
  const line = (r: string[]) =>
    r
      .map((c, i) => (right[i] ? c.padStart(w[i] as number) : c.padEnd(w[i] as number)))
      .join('  ')
      .trimEnd()
  return [line(head), line(w.map((n) => '-'.repeat(n))), ...rows.map(line)].join('\n')
}

/** The per-round table. */
export function formatRounds(rounds: readonly RoundReport[]): string {
  return table(
    ['round', 'dirty pages', 'sent', 'sim time', 'DMA writes', 'bitmap read', 'wall'],
    rounds.map((r) => [
      r.stopAndCopy ? 'stop&copy' : String(r.round),
      r.dirtyPages.toLocaleString('en-US'),
      formatBytes(r.bytesSent),
      seconds(r.simSeconds),
      r.dmaWrites.toLocaleString('en-US'),
      `${r.bitmapMs.toFixed(1)} ms`,
      `${r.wallMs.toFixed(0)} ms`,
    ]),
    [false, true, true, true, true, true, true],
  )
}

/** The totals block. */
export function formatTotals(r: MigrationReport): string {
  const lines = [
    `IOMMU:            ${r.vendor.name}${r.config.ideal ? ' (known 7.2 bugs fixed: --ideal)' : ''}`,
    `dirty tracking:   ${r.vendor.dirtyPath}`,
    `converged:        ${r.converged ? 'yes' : r.viommu !== null && !r.viommu.parentTracksDirty ? 'no (no dirty tracking: stop-and-copy of all DMA-mapped memory)' : 'no (round limit reached)'}`,
    `rounds:           ${r.rounds.filter((x) => !x.stopAndCopy).length} pre-copy + stop-and-copy`,
    `sent:             ${formatBytes(r.totalBytesSent)}`,
    `simulated time:   ${seconds(r.totalSimSeconds)} (downtime ${seconds(r.downtimeSeconds)})`,
    `device writes:    ${r.totalDmaWrites.toLocaleString('en-US')}${r.config.devices.length > 1 ? ` (${r.config.devices.map((d, i) => `${d} ${(r.deviceWrites[i] ?? 0).toLocaleString('en-US')}`).join(', ')})` : ''}`,
    // Wall time over simulated time: below 1 the model runs faster than the migration.
    `wall clock:       ${r.wallSeconds.toFixed(2)} s (${(r.wallSeconds / r.totalSimSeconds).toFixed(1)}× the simulated time), peak RSS ${formatBytes(r.peakRssBytes)}`,
  ]
  if (r.unplug) {
    lines.push(
      `hot-unplug:       ${formatBytes(r.unplug.bytes)} removed, ${r.unplug.dirtyPagesRescued} dirty pages read with NO_CLEAR first`,
    )
  } else if (typeof r.config.unplugRound === 'number') {
    lines.push(`hot-unplug:       not done: pre-copy ended before round ${r.config.unplugRound}`)
  }
  if (r.hw !== null) {
    const h = r.hw
    const lookups = h.iotlbHits + h.iotlbMisses
    lines.push(
      `IOMMU hardware:   ${h.translations.toLocaleString('en-US')} translations, ${h.walks.toLocaleString('en-US')} walks, IOTLB hit rate ${lookups ? ((100 * h.iotlbHits) / lookups).toFixed(1) : '0.0'}%, ${h.queueCommands.toLocaleString('en-US')} ${h.queueCommandsAre}`,
    )
  }
  if (r.viommu !== null) lines.push(...formatViommu(r.viommu))
  if (r.dirtyHazards.length === 0) lines.push('dirty hazards:    none')
  for (const [i, h] of r.dirtyHazards.entries()) {
    const what = [`${h.count.toLocaleString('en-US')}× in ${h.reads} reads`]
    if (h.lostPages) what.push(`${h.lostPages.toLocaleString('en-US')} pages lost`)
    if (h.missedPages) what.push(`${h.missedPages.toLocaleString('en-US')} pages missed`)
    if (h.bytesPast) what.push(`up to ${h.bytesPast} bytes past the bitmap`)
    lines.push(
      `${i === 0 ? 'dirty hazards:' : ''.padEnd(14)}    ${h.kind}: ${what.join(', ')}`,
      `${''.padEnd(18)}e.g. ${h.example}`,
    )
  }
  if (r.staleTranslations.length === 0) lines.push('stale translations: none')
  for (const [i, t] of r.staleTranslations.entries()) {
    lines.push(
      `${i === 0 ? 'stale translations:' : ''.padEnd(19)} ${t.uses.toLocaleString('en-US')} DMA through stale ${t.cache} entries (${t.writes.toLocaleString('en-US')} writes, ${t.pages.toLocaleString('en-US')} IOVA pages): missing ${t.missing}`,
      `${''.padEnd(18)}e.g. ${t.example}`,
    )
    if (t.cause !== null) lines.push(`${''.padEnd(18)}cause: ${t.cause}`)
  }
  const staleWrites = r.staleTranslations.reduce((n, t) => n + t.writes, 0)
  const mismatch = `${r.mismatchedPages} of ${r.verifiedPages} pages differ${r.mismatchedPages === 0 && (r.lostPages > 0 || staleWrites > 0) ? ' (by luck: later copies carried the unlogged writes)' : ''}${r.firstMismatches.length ? ` (first at offsets ${r.firstMismatches.map((o) => `0x${o.toString(16)}`).join(', ')})` : ''}`
  lines.push(
    verified(r)
      ? `verification:     OK — destination equals source, ${r.verifiedPages.toLocaleString('en-US')} pages compared`
      : `verification:     FAILED — ${mismatch}${r.lostPages ? `; the dirty reads lost ${r.lostPages.toLocaleString('en-US')} pages` : ''}${r.staleTranslations.length ? `; ${r.staleTranslations.reduce((n, t) => n + t.uses, 0).toLocaleString('en-US')} DMA used stale translations${staleWrites ? ` (${staleWrites.toLocaleString('en-US')} writes the IOMMU did not log)` : ''}` : ''}${r.viommu?.destination.mismatches ? `; ${r.viommu.destination.mismatches} guest IOVAs translate elsewhere on the destination` : ''}`,
  )
  return lines.join('\n')
}

/** The vIOMMU lines of the totals. */
function formatViommu(v: ViommuReport): string[] {
  return [
    `vIOMMU:           ${v.kind}; nest parent ${v.parentTracksDirty ? 'with dirty tracking' : `without dirty tracking (${v.parentDirtyErrno} on NEST_PARENT | DIRTY_TRACKING)`}`,
    `guest IOMMU:      ${v.guestTablePages} pages of guest structures (${v.guestFormat}), ${v.ringMoves} ring moves, ${v.guestInvalidations} invalidations ${v.invalidationsDropped ? 'DROPPED by the VMM' : `forwarded (${v.invalidationPath})`}`,
    `guest faults:     ${v.faults} DMA faults on unmapped guest IOVAs, ${v.faultsReported} reported through ${v.faultPath}`,
    `destination:      ${v.destination.rebuilt}; ${v.destination.probes.toLocaleString('en-US')} guest IOVA pages probed by DMA, ${v.destination.mismatches} land elsewhere`,
  ]
}

/** The machine-readable report (`--json`). */
export function toJson(r: MigrationReport): string {
  return `${JSON.stringify({ ...r, verified: verified(r) }, null, 2)}\n`
}

/**
 * The figure of a run (`--svg`): dirty pages and bytes sent per round, with the run's
 * parameters, a legend, axes with units, the downtime budget, and a log scale when the
 * rounds span orders of magnitude. Self-contained SVG.
 */
export function toSvg(r: MigrationReport, title?: string): string {
  return migrationChart(r, title)
}

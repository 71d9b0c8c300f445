/**
 * The migration view's model: the sim's own engine (`@iommu/sim/engine`'s `migration`
 * generator, the same code `iommu-sim migrate` runs) driven a round at a time, with what
 * the heatmap needs kept per round: which pages each round sent, and how often each page
 * came back dirty.
 *
 * @module
 */

import type { IommuSpec } from '@iommu/core'
import {
  defaultOptions,
  formatTotals,
  type IommuModel,
  isIommuModel,
  type MigrateOptions,
  type MigrationReport,
  migration,
  type RoundReport,
  type RoundStep,
  verified,
} from '@iommu/sim/engine'
import type { VendorDescriptor, VendorOptions } from '../vendors/types.ts'
import type { MigrationSpec } from './scenario.ts'

const MIB = 1024 * 1024
const PAGE = 4096

/**
 * What the sim migrates over for a vendor: its named model when it has one (the sim then
 * also narrows the IOPTE sizes for `2m` and runs AMD's detector), else the vendor's own unit
 * (`createIommu`), which the sim takes as any driver.
 */
export function simIommu(
  vendor: Pick<VendorDescriptor, 'simModel' | 'createIommu'>,
  options: VendorOptions,
): IommuModel | IommuSpec {
  const m = vendor.simModel
  return m !== null && isIommuModel(m) ? m : vendor.createIommu(options)
}

/** The sim's options for a view spec (guest RAM in 2 MiB multiples, DIMMs of up to 64 MiB). */
export function migrateOptions(
  spec: MigrationSpec,
  iommu: IommuModel | IommuSpec,
  seed: number,
): MigrateOptions {
  const memoryBytes = Math.max(2, spec.guestMiB - (spec.guestMiB % 2)) * MIB
  let dimm = Math.min(64 * MIB, memoryBytes)
  while (memoryBytes % dimm !== 0) dimm -= 2 * MIB
  return {
    ...defaultOptions({ memoryBytes, dimmBytes: dimm }),
    iommu,
    iopte: spec.iopte,
    seed,
    bandwidth: (spec.linkMbps * 1e6) / 8,
    maxRounds: spec.maxRounds,
    maxDowntime: spec.downtimeMs / 1000,
    breakage: spec.breakTracker ? 'tracking-never-enabled' : 'none',
  }
}

/** One finished round, kept for the view. */
export interface RoundView {
  readonly report: RoundReport
  /** The guest pages it sent (a copy). */
  readonly sent: Int32Array
}

/** A migration in progress or done. */
export class MigrationRun {
  readonly options: MigrateOptions
  /** Guest pages. */
  readonly pages: number
  readonly rounds: RoundView[] = []
  /** In how many rounds after round 0 each page was sent (was dirty). */
  readonly dirtyRounds: Uint16Array
  report: MigrationReport | null = null
  error: string | null = null
  readonly #gen: Generator<RoundStep, MigrationReport, void>

  constructor(options: MigrateOptions) {
    this.options = options
    this.pages = options.memoryBytes / PAGE
    this.dirtyRounds = new Uint16Array(this.pages)
    this.#gen = migration(options)
  }

  get done(): boolean {
    return this.report !== null || this.error !== null
  }

  /** Run one more round (or finish). @returns false when there is nothing left */
  step(): boolean {
    if (this.done) return false
    try {
      const r = this.#gen.next()
      if (r.done) {
        this.report = r.value
        return false
      }
      const sent = r.value.sent.slice()
      if (r.value.report.round > 0) {
        for (let i = 0; i < sent.length; i++) {
          const p = sent[i] as number
          this.dirtyRounds[p] = (this.dirtyRounds[p] as number) + 1
        }
      }
      this.rounds.push({ report: r.value.report, sent })
      // The stop-and-copy round is the last step; collect the report right away.
      if (r.value.report.stopAndCopy) this.step()
      return true
    } catch (e) {
      this.error = (e as Error).message
      return false
    }
  }

  /**
   * The sim's totals block, one line per figure, as the CLI prints it, minus the wall-clock
   * line (here it would count the pauses between rounds).
   */
  totals(): string[] {
    if (this.report === null) return []
    return formatTotals(this.report)
      .split('\n')
      .filter((l) => !l.startsWith('wall clock:'))
  }

  /** The verification line, or null before the end. */
  verification(): { ok: boolean; line: string } | null {
    if (this.report === null) return null
    const line = this.totals().find((l) => l.startsWith('verification:')) ?? ''
    return { ok: verified(this.report), line: line.replace(/\s+/, ' ') }
  }
}

/** How a heatmap cell is coloured. */
export type HeatMode = 'round' | 'heat'

/** Geometry of the heatmap: cells of `pagesPerCell` pages, `cols` cells per row. */
export interface HeatGeometry {
  readonly pagesPerCell: number
  readonly cols: number
  readonly rows: number
  readonly cells: number
}

/** Columns of the heatmap. */
export const HEAT_COLS = 256

/** The geometry for `pages` guest pages at `pagesPerCell` (a power of two). */
export function heatGeometry(pages: number, pagesPerCell: number): HeatGeometry {
  const cells = Math.ceil(pages / pagesPerCell)
  return { pagesPerCell, cols: HEAT_COLS, rows: Math.ceil(cells / HEAT_COLS), cells }
}

/** The smallest power-of-two block that keeps the map within `maxRows` rows. */
export function autoPagesPerCell(pages: number, maxRows = 128): number {
  let ppc = 1
  while (Math.ceil(pages / ppc / HEAT_COLS) > maxRows) ppc *= 2
  return ppc
}

/**
 * Per-cell values in 0..1: for `round` mode the share of the cell's pages the round sent,
 * for `heat` mode the share of later rounds the cell's pages were dirty in (the most dirty
 * page of the cell).
 */
export function cellValues(
  run: MigrationRun,
  g: HeatGeometry,
  mode: HeatMode,
  round: number,
): Float32Array {
  const out = new Float32Array(g.cells)
  if (mode === 'round') {
    const r = run.rounds[round]
    if (r === undefined) return out
    for (let i = 0; i < r.sent.length; i++) {
      const c = Math.floor((r.sent[i] as number) / g.pagesPerCell)
      out[c] = (out[c] as number) + 1 / g.pagesPerCell
    }
    return out
  }
  const later = Math.max(1, run.rounds.filter((r) => r.report.round > 0).length)
  for (let p = 0; p < run.pages; p++) {
    const c = Math.floor(p / g.pagesPerCell)
    const v = (run.dirtyRounds[p] as number) / later
    if (v > (out[c] as number)) out[c] = v
  }
  return out
}

/** RGB of a cell: grey when zero, then a ramp (blue for round 0, red for stop-and-copy). */
export function cellColour(
  v: number,
  kind: 'initial' | 'round' | 'final' | 'heat',
): [number, number, number] {
  if (v <= 0) return [232, 235, 240]
  const t = Math.min(1, 0.35 + 0.65 * v)
  const [r, g, b] =
    kind === 'initial'
      ? [60, 110, 200]
      : kind === 'final'
        ? [200, 40, 40]
        : kind === 'heat'
          ? [150, 30, 120]
          : [230, 110, 20]
  const mix = (c: number, base: number) => Math.round(base + (c - base) * t)
  return [mix(r, 240), mix(g, 240), mix(b, 240)]
}

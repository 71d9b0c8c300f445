/**
 * Parameter sweeps (`iommu-sim sweep FILE --vary NAME=V1,V2 ...`) and vendor comparisons
 * (`iommu-sim compare`): the grid of runs, what each row reports, and the CSV, JSON and
 * figure of the results. Browser-safe; the worker pool that runs a grid is in `node/`.
 *
 * @module
 */

import { comparisonChart, hazardPhrases } from './chart.ts'
import type { MigrateOptions } from './migrate.ts'
import { formatBytes, type MigrationReport, verified } from './report.ts'
import { parseScenario, type Scenario, ScenarioError, scenarioOptions } from './scenario.ts'
import { IOMMU_MODELS, IOPTE_MODES } from './vendors.ts'

/** A sweepable parameter: how a value is read and applied to a scenario. */
interface SweepParam {
  readonly name: string
  readonly help: string
  /** The value as it applies (numbers in the scenario's units). */
  parse(raw: string): number | string | boolean
  apply(s: Scenario, v: number | string | boolean): void
}

/** Parse a rate like `10G`, `25G`, `100M` (bit/s, decimal). */
function rateOf(raw: string): number {
  const m = /^(\d+(?:\.\d+)?)([KMGT]?)$/i.exec(raw.trim())
  if (m === null) throw new ScenarioError(`bad rate '${raw}' (e.g. 1G, 25G)`)
  const mult = { '': 1, K: 1e3, M: 1e6, G: 1e9, T: 1e12 }[
    (m[2] ?? '').toUpperCase() as '' | 'K' | 'M' | 'G' | 'T'
  ]
  return Number(m[1]) * mult
}

/** Parse a size like `512M`, `4G` (binary) into MiB. */
function mibOf(raw: string): number {
  const m = /^(\d+(?:\.\d+)?)([MGT])$/i.exec(raw.trim())
  if (m === null) throw new ScenarioError(`bad size '${raw}' (e.g. 512M, 4G)`)
  return Number(m[1]) * { M: 1, G: 1024, T: 1024 * 1024 }[(m[2] as string).toUpperCase() as 'M']
}

function numberOf(raw: string): number {
  const v = raw.trim() === '' ? Number.NaN : Number(raw)
  if (!Number.isFinite(v) || v < 0) throw new ScenarioError(`bad number '${raw}'`)
  return v
}

function choiceOf(choices: readonly string[], what: string): (raw: string) => string {
  return (raw) => {
    if (!choices.includes(raw)) {
      throw new ScenarioError(`unknown ${what} '${raw}' (${choices.join(', ')})`)
    }
    return raw
  }
}

/** Every device's workload field `k` set to `v`. */
function eachDevice(s: Scenario, k: 'randomRate' | 'ringRate' | 'locality', v: number): void {
  for (const d of s.machine.devices) d.workload = { ...d.workload, [k]: v }
}

/** The parameters `--vary` takes, one row each. */
export const SWEEP_PARAMS: readonly SweepParam[] = [
  {
    name: 'link',
    help: 'link rate in bit/s (1G, 10G, 25G)',
    parse: rateOf,
    apply: (s, v) => {
      s.migration.linkMbps = (v as number) / 1e6
    },
  },
  {
    name: 'iopte',
    help: `IOPTE mode (${IOPTE_MODES.map((m) => m.name).join(', ')})`,
    parse: choiceOf(
      IOPTE_MODES.map((m) => m.name),
      'IOPTE mode',
    ),
    apply: (s, v) => {
      s.migration.iopte = v as Scenario['migration']['iopte']
    },
  },
  {
    name: 'vendor',
    help: `IOMMU model (${IOMMU_MODELS.join(', ')})`,
    parse: choiceOf(IOMMU_MODELS, 'IOMMU model'),
    apply: (s, v) => {
      s.machine.vendor = v as Scenario['machine']['vendor']
    },
  },
  {
    name: 'dirty-rate',
    help: 'random DMA writes per simulated second, every device',
    parse: numberOf,
    apply: (s, v) => eachDevice(s, 'randomRate', v as number),
  },
  {
    name: 'ring-rate',
    help: 'ring writes per simulated second, every device',
    parse: numberOf,
    apply: (s, v) => eachDevice(s, 'ringRate', v as number),
  },
  {
    name: 'locality',
    help: 'share of random writes in the hot set, every device',
    parse: numberOf,
    apply: (s, v) => eachDevice(s, 'locality', v as number),
  },
  {
    name: 'guest',
    help: 'guest RAM (512M, 4G)',
    parse: mibOf,
    apply: (s, v) => {
      s.migration.guestMiB = v as number
    },
  },
  {
    name: 'downtime',
    help: 'allowed downtime in milliseconds',
    parse: numberOf,
    apply: (s, v) => {
      s.migration.downtimeMs = v as number
    },
  },
  {
    name: 'seed',
    help: 'workload seed',
    parse: numberOf,
    apply: (s, v) => {
      s.seed = v as number
    },
  },
  {
    name: 'ideal',
    help: 'known kernel bugs fixed (on, off)',
    parse: (raw) => choiceOf(['on', 'off'], 'switch')(raw) === 'on',
    apply: (s, v) => {
      s.migration.ideal = v as boolean
    },
  },
]

/** One `--vary NAME=V1,V2,...`. */
export interface Vary {
  readonly param: SweepParam
  /** The values as written and as parsed. */
  readonly raw: readonly string[]
  readonly values: readonly (number | string | boolean)[]
}

/**
 * Parse `NAME=V1,V2,...`.
 *
 * @throws ScenarioError - an unknown name, no value, or a value the parameter refuses
 */
export function parseVary(arg: string): Vary {
  const eq = arg.indexOf('=')
  const name = eq < 0 ? arg : arg.slice(0, eq)
  const param = SWEEP_PARAMS.find((p) => p.name === name)
  if (param === undefined) {
    throw new ScenarioError(
      `--vary: unknown parameter '${name}' (${SWEEP_PARAMS.map((p) => p.name).join(', ')})`,
    )
  }
  const raw = eq < 0 ? [] : arg.slice(eq + 1).split(',')
  if (raw.length === 0 || raw.some((r) => r === '')) {
    throw new ScenarioError(`--vary ${name}: give values, e.g. ${name}=a,b`)
  }
  return { param, raw, values: raw.map((r) => param.parse(r)) }
}

/** One point of a sweep: the values it varies, and the options it runs. */
export interface SweepPoint {
  readonly index: number
  /** `name=value` per varied parameter, in `--vary` order. */
  readonly labels: readonly string[]
  readonly options: MigrateOptions
}

/**
 * Every combination of the varied values over the base scenario (the first `--vary` the
 * slowest), each checked as a scenario.
 *
 * @throws ScenarioError - a point the scenario rules refuse (named by its values)
 */
export function sweepGrid(baseText: string, yaml: boolean, varies: readonly Vary[]): SweepPoint[] {
  const base = parseScenario(baseText, yaml)
  const names = new Set<string>()
  for (const v of varies) {
    if (names.has(v.param.name)) throw new ScenarioError(`--vary ${v.param.name} twice`)
    names.add(v.param.name)
  }
  const out: SweepPoint[] = []
  const pick: number[] = varies.map(() => 0)
  for (;;) {
    const s = structuredClone(base)
    const labels: string[] = []
    varies.forEach((v, i) => {
      const k = pick[i] as number
      v.param.apply(s, v.values[k] as number | string | boolean)
      labels.push(`${v.param.name}=${v.raw[k]}`)
    })
    let options: MigrateOptions
    try {
      options = scenarioOptions(s)
    } catch (e) {
      throw new ScenarioError(`${labels.join(' ')}: ${(e as Error).message}`)
    }
    out.push({ index: out.length, labels, options })
    let i = varies.length - 1
    while (i >= 0) {
      pick[i] = (pick[i] as number) + 1
      if ((pick[i] as number) < (varies[i] as Vary).values.length) break
      pick[i] = 0
      i--
    }
    if (i < 0) break
  }
  return out
}

/** What one run contributes to a table, a CSV row and the figure. */
export interface RunRow {
  readonly label: string
  readonly vendor: string
  readonly dirtyPath: string
  readonly preCopyRounds: number
  readonly converged: boolean
  readonly pagesSent: number
  readonly bytesSent: number
  readonly downtimeSeconds: number
  readonly totalSimSeconds: number
  /** Wall milliseconds spent in IOMMU_HWPT_GET_DIRTY_BITMAP over the run. */
  readonly bitmapMs: number
  readonly translations: number | null
  readonly iotlbHitRate: number | null
  readonly queueCommands: number | null
  /** The hazards, one phrase each. */
  readonly hazards: readonly string[]
  readonly verified: boolean
  readonly mismatchedPages: number
  readonly wallSeconds: number
}

/** The row of one report. */
export function runRow(label: string, r: MigrationReport): RunRow {
  const lookups = r.hw === null ? 0 : r.hw.iotlbHits + r.hw.iotlbMisses
  return {
    label,
    vendor: r.vendor.name,
    dirtyPath: r.vendor.dirtyPath,
    preCopyRounds: r.rounds.filter((x) => !x.stopAndCopy).length,
    converged: r.converged,
    pagesSent: r.totalBytesSent / 4096,
    bytesSent: r.totalBytesSent,
    downtimeSeconds: r.downtimeSeconds,
    totalSimSeconds: r.totalSimSeconds,
    bitmapMs: r.rounds.reduce((n, x) => n + x.bitmapMs, 0),
    translations: r.hw?.translations ?? null,
    iotlbHitRate: r.hw === null || lookups === 0 ? null : r.hw.iotlbHits / lookups,
    queueCommands: r.hw?.queueCommands ?? null,
    hazards: hazardPhrases(r),
    verified: verified(r),
    mismatchedPages: r.mismatchedPages,
    wallSeconds: r.wallSeconds,
  }
}

function seconds(s: number): string {
  if (s < 1e-3) return `${(s * 1e6).toFixed(0)} µs`
  if (s < 1) return `${(s * 1e3).toFixed(1)} ms`
  return `${s.toFixed(2)} s`
}

/** The comparison table: one line per run. */
export function formatRunTable(rows: readonly RunRow[], first = 'run'): string {
  const head = [
    first,
    'rounds',
    'pages sent',
    'downtime',
    'bitmap read',
    'translations',
    'IOTLB hits',
    'inval. cmds',
    'hazards',
    'verification',
  ]
  const cells = rows.map((r) => [
    r.label,
    `${r.preCopyRounds}${r.converged ? '' : '*'}`,
    r.pagesSent.toLocaleString('en-US'),
    seconds(r.downtimeSeconds),
    `${r.bitmapMs.toFixed(1)} ms`,
    r.translations === null ? '-' : r.translations.toLocaleString('en-US'),
    r.iotlbHitRate === null ? '-' : `${(100 * r.iotlbHitRate).toFixed(1)}%`,
    r.queueCommands === null ? '-' : r.queueCommands.toLocaleString('en-US'),
    r.hazards.length ? r.hazards.join('; ') : 'none',
    r.verified ? 'OK' : `FAILED (${r.mismatchedPages} pages differ)`,
  ])
  const right = [false, true, true, true, true, true, true, true, false, false]
  const w = head.map((h, i) => Math.max(h.length, ...cells.map((c) => (c[i] as string).length)))
  const line = (c: string[]) =>
    c
      .map((x, i) => (right[i] ? x.padStart(w[i] as number) : x.padEnd(w[i] as number)))
      .join('  ')
      .trimEnd()
  return [line(head), line(w.map((n) => '-'.repeat(n))), ...cells.map(line)].join('\n')
}

/** The rows as CSV (RFC 4180 quoting), with the varied parameters as leading columns. */
export function toCsv(points: readonly SweepPoint[], rows: readonly RunRow[]): string {
  const names = (points[0]?.labels ?? []).map((l) => l.slice(0, l.indexOf('=')))
  const q = (v: unknown) => {
    const s = v === null ? '' : String(v)
    return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s
  }
  const cols = [
    'vendor',
    'dirty_path',
    'pre_copy_rounds',
    'converged',
    'pages_sent',
    'bytes_sent',
    'downtime_s',
    'total_sim_s',
    'bitmap_ms',
    'translations',
    'iotlb_hit_rate',
    'queue_commands',
    'hazards',
    'verified',
    'mismatched_pages',
    'wall_s',
  ]
  const lines = [[...names, ...cols].join(',')]
  rows.forEach((r, i) => {
    const p = points[i] as SweepPoint
    lines.push(
      [
        ...p.labels.map((l) => l.slice(l.indexOf('=') + 1)),
        r.vendor,
        r.dirtyPath,
        r.preCopyRounds,
        r.converged,
        r.pagesSent,
        r.bytesSent,
        r.downtimeSeconds,
        r.totalSimSeconds,
        r.bitmapMs.toFixed(3),
        r.translations,
        r.iotlbHitRate === null ? null : r.iotlbHitRate.toFixed(4),
        r.queueCommands,
        r.hazards.join('; '),
        r.verified,
        r.mismatchedPages,
        r.wallSeconds.toFixed(3),
      ]
        .map(q)
        .join(','),
    )
  })
  return `${lines.join('\n')}\n`
}

/** The figure of a sweep or a comparison: downtime and data sent per run. */
export function runsChart(
  title: string,
  rows: readonly RunRow[],
  o: { params: string; budgetSeconds: number; xTitle: string },
): string {
  const lines: { text: string; bad?: boolean }[] = [{ text: o.params }]
  const paths = new Map<string, string>()
  for (const r of rows) paths.set(r.vendor, r.dirtyPath)
  for (const [v, p] of paths) lines.push({ text: `${v} · dirty tracking: ${p}` })
  const hazards = rows.filter((r) => r.hazards.length > 0)
  lines.push(
    hazards.length === 0
      ? { text: 'hazards: none' }
      : {
          text: `hazards: ${hazards.map((r) => `${r.label}: ${r.hazards.join('; ')}`).join(' · ')}`,
          bad: true,
        },
  )
  return comparisonChart({
    title,
    lines,
    runs: rows.map((r) => ({ label: r.label, failed: !r.verified })),
    downtime: rows.map((r) => r.downtimeSeconds),
    sent: rows.map((r) => r.bytesSent),
    budgetSeconds: o.budgetSeconds,
    xTitle: o.xTitle,
  })
}

/** The common parameters of runs, for a figure's subtitle. */
export function describeOptions(o: MigrateOptions): string {
  const gbit = Number(((o.bandwidth * 8) / 1e9).toPrecision(3))
  return `${formatBytes(o.memoryBytes)} guest · ${o.iopte} IOPTEs · ${gbit} Gbit/s link · seed ${o.seed}${o.viommu ? ' · vIOMMU guest' : ''}${o.ideal ? ' · known kernel bugs fixed' : ''}`
}

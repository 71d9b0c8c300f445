/**
 * The `iommu-sim` command line. Every option is a row of {@link OPTIONS}: its parser,
 * bounds and help line come from there, and the checks across options follow in
 * {@link optionsFromArgs}. A usage error is one line on stderr and exit status 2, before
 * any work.
 *
 * @module
 */

import {
  closeSync,
  existsSync,
  openSync,
  readFileSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs'
import { availableParallelism, loadavg, totalmem } from 'node:os'
import { parseArgs } from 'node:util'
import cliProgress from 'cli-progress'
import {
  defaultOptions,
  estimateRun,
  IOMMU_MODELS,
  IOPTE_MODES,
  type IommuModel,
  type IopteMode,
  isIommuModel,
  type MigrateOptions,
  migrate,
} from './migrate.ts'
import { defaultWorkers, runPool } from './node/pool.ts'
import { type PrefaultedStorage, prefaultedStorage } from './node/prefault.ts'
import {
  formatBytes,
  formatRounds,
  formatTotals,
  type MigrationReport,
  toJson,
  toSvg,
  verified,
} from './report.ts'
import { parseScenario, ScenarioError, scenarioJsonSchema, scenarioOptions } from './scenario.ts'
import {
  describeOptions,
  formatRunTable,
  parseVary,
  type RunRow,
  runRow,
  runsChart,
  SWEEP_PARAMS,
  type SweepPoint,
  sweepGrid,
  toCsv,
} from './sweep.ts'

const MIB = 2 ** 20
const GIB = 2 ** 30
const TIB = 2 ** 40
/** The models `--viommu` runs on: a nest parent and a guest-visible stage-1 format. */
const VIOMMU_MODELS: readonly IommuModel[] = ['intel', 'smmuv3']

/** Exit statuses, as `--help` lists them. */
export const EXIT = { OK: 0, VERIFY_FAILED: 1, USAGE: 2 } as const

/** A mistake on the command line: reported as one line, exit status 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError'
}

/** Round 0 of a run above this many device writes takes hours: refused without --force. */
export const MAX_ROUND0_WRITES = 5e8

type Kind = 'size' | 'rate' | 'int' | 'number' | 'choice' | 'flag' | 'file'

/** One command-line option. */
interface OptionSpec {
  readonly name: string
  readonly kind: Kind
  readonly arg?: string
  readonly help: string
  readonly min?: number
  readonly max?: number
  readonly choices?: readonly string[]
  /** What a choice names, singular and plural, for the error (`IOMMU model`, `models`). */
  readonly noun?: readonly [string, string]
}

/** Every option of `iommu-sim migrate`, in help order. */
export const OPTIONS: readonly OptionSpec[] = [
  {
    name: 'iommu',
    kind: 'choice',
    arg: 'MODEL',
    choices: IOMMU_MODELS,
    noun: ['IOMMU model', 'models'],
    help: `IOMMU model: ${IOMMU_MODELS.join(', ')} (default amd)`,
  },
  {
    name: 'memory',
    kind: 'size',
    arg: 'SIZE',
    min: 128 * MIB,
    max: TIB,
    help: 'guest RAM, 128M..1T, e.g. 4G, 64G (default 4G)',
  },
  {
    name: 'dimm',
    kind: 'size',
    arg: 'SIZE',
    min: 2 * MIB,
    max: TIB,
    help: 'IOAS area size: a 2M multiple dividing --memory (default min(1G, memory))',
  },
  {
    name: 'iopte',
    kind: 'choice',
    arg: 'MODE',
    choices: IOPTE_MODES.map((m) => m.name),
    noun: ['IOPTE mode', 'modes'],
    help: IOPTE_MODES.map((m) => `${m.name}: ${m.help}`).join('; '),
  },
  {
    name: 'seed',
    kind: 'int',
    arg: 'N',
    min: 0,
    max: 2 ** 32 - 1,
    help: 'workload seed (default 1)',
  },
  {
    name: 'bandwidth',
    kind: 'rate',
    arg: 'RATE',
    min: 1e6,
    max: 1e13,
    help: 'link rate in bit/s, 1M..10T, e.g. 10G, 25G (default 10G)',
  },
  {
    name: 'max-rounds',
    kind: 'int',
    arg: 'N',
    min: 1,
    max: 10_000,
    help: 'pre-copy round limit, round 0 included (default 30)',
  },
  {
    name: 'max-downtime',
    kind: 'number',
    arg: 'S',
    min: 0,
    max: 3600,
    help: 'converge when the rest fits in S seconds (default 0.1)',
  },
  {
    name: 'ring',
    kind: 'size',
    arg: 'SIZE',
    min: 0,
    max: TIB,
    help: 'device ring buffer size, 4K multiple, at most --memory (default 64M)',
  },
  {
    name: 'ring-rate',
    kind: 'number',
    arg: 'N',
    min: 0,
    max: 1e8,
    help: 'ring writes per simulated second (default 100000)',
  },
  {
    name: 'random-rate',
    kind: 'number',
    arg: 'N',
    min: 0,
    max: 1e8,
    help: 'random writes per simulated second (default 80000)',
  },
  {
    name: 'locality',
    kind: 'number',
    arg: 'F',
    min: 0,
    max: 1,
    help: 'share of random writes into the hot set, 0..1 (default 0.98)',
  },
  {
    name: 'hot-set',
    kind: 'size',
    arg: 'SIZE',
    min: 0,
    max: TIB,
    help: 'hot set size, at most --memory (default 256M)',
  },
  {
    name: 'unplug-round',
    kind: 'int',
    arg: 'N',
    min: 0,
    max: 9_999,
    help: 'hot-unplug the last DIMM during pre-copy round N (< --max-rounds, 2+ DIMMs)',
  },
  {
    name: 'ideal',
    kind: 'flag',
    help: 'fix the known 7.2 kernel bugs: ideal dirty records, and the TLBI after a dirty clear on smmuv3',
  },
  {
    name: 'viommu',
    kind: 'flag',
    help: 'a guest with a vIOMMU: nested translation on a nest parent (intel, smmuv3)',
  },
  {
    name: 'break-tracker',
    kind: 'flag',
    help: 'never enable dirty tracking (verification must then fail)',
  },
  {
    name: 'break-invalidation',
    kind: 'flag',
    help: "with --viommu: the VMM drops the guest's invalidations (verification must then fail)",
  },
  {
    name: 'no-detector',
    kind: 'flag',
    help: "skip the IOMMU model's missing-invalidation detector (faster; only differing pages then reveal a missing TLBI)",
  },
  { name: 'json', kind: 'file', arg: 'FILE', help: 'write every figure as JSON' },
  { name: 'svg', kind: 'file', arg: 'FILE', help: 'write a chart of dirty pages per round' },
  {
    name: 'force',
    kind: 'flag',
    help: 'run even if the estimate says the host memory is too small or round 0 too long',
  },
  { name: 'no-progress', kind: 'flag', help: 'no progress bar (it is shown only on a TTY anyway)' },
  {
    name: 'no-prefault',
    kind: 'flag',
    help: "no worker thread faulting RAM's storage in ahead (same results; first writes then wait for the host's page faults)",
  },
]

function usageText(): string {
  const rows: (readonly [string, string])[] = OPTIONS.map((o) => [
    `  --${o.name}${o.arg ? ` ${o.arg}` : ''}`,
    o.help,
  ])
  rows.push(['  -h, --help', 'this text'])
  const w = Math.max(...rows.map(([l]) => l.length)) + 2
  const cw = Math.max(...COMMANDS.map(([c]) => c.length)) + 4
  const sweepRows = SWEEP_PARAMS.map((p) => `  ${p.name.padEnd(12)}${p.help}`)
  return `Usage: iommu-sim COMMAND [options]

Live-migrate a VM with passthrough devices over the IOMMU model: pre-copy rounds driven by
IOMMU_HWPT_GET_DIRTY_BITMAP, then stop-and-copy, then a page-for-page verification.

Commands:
${COMMANDS.map(([c, h]) => `  ${c.padEnd(cw)}${h}`).join('\n')}

Options of migrate (and of compare, which takes --vendors ${IOMMU_MODELS.join(',')} instead of --iommu):
${rows.map(([l, h]) => `${l.padEnd(w)}${h}`).join('\n')}

Options of sweep: --vary NAME=V1,V2 (repeatable; every combination runs), --workers N
(default: the available cores, ${availableParallelism()} here), --out PREFIX (PREFIX.csv,
.json, .svg; default sweep), --measure-speedup (the grid on 1 worker, then on N: both walls
and the ratio), --no-progress. NAME is one of:
${sweepRows.join('\n')}

Exit status:
  ${EXIT.OK}  the destination equals the source (every run, for compare and sweep)
  ${EXIT.VERIFY_FAILED}  verification failed: pages differ, a dirty read lost pages or a DMA used a stale translation
  ${EXIT.USAGE}  bad options, a bad scenario or an output file that cannot be written (one line on stderr, no work done)
`
}

/** `a`, `a or b`, `a, b or c`. */
function orList(xs: readonly string[]): string {
  return xs.length < 2 ? (xs[0] ?? '') : `${xs.slice(0, -1).join(', ')} or ${xs.at(-1)}`
}

/** Parse a size like `4G`, `512M`, `65536`, `1.5G` (binary units) into whole bytes. */
export function parseSize(s: string): number {
  const m = /^(\d+(?:\.\d+)?)([KMGT]?)(i?B?)?$/i.exec(s.trim())
  if (m === null) throw new UsageError(`bad size '${s}' (e.g. 512M, 4G, 1T)`)
  const mult = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 }[
    (m[2] ?? '').toUpperCase() as '' | 'K' | 'M' | 'G' | 'T'
  ]
  return Math.round(Number(m[1]) * mult)
}

/** Parse a rate like `10G` (bit/s, decimal units). */
export function parseRate(s: string): number {
  const m = /^(\d+(?:\.\d+)?)([KMGT]?)$/i.exec(s.trim())
  if (m === null) throw new UsageError(`bad rate '${s}' (e.g. 100M, 10G)`)
  const mult = { '': 1, K: 1e3, M: 1e6, G: 1e9, T: 1e12 }[
    (m[2] ?? '').toUpperCase() as '' | 'K' | 'M' | 'G' | 'T'
  ]
  return Number(m[1]) * mult
}

/** `10G`-style decimal units of a rate. */
function formatRate(x: number): string {
  for (const [u, m] of [
    ['T', 1e12],
    ['G', 1e9],
    ['M', 1e6],
    ['K', 1e3],
  ] as const) {
    if (x >= m) return `${x / m}${u}`
  }
  return String(x)
}

/** One option's value, parsed and range-checked as its row says. */
function parseValue(o: OptionSpec, raw: string): number | string {
  let v: number
  switch (o.kind) {
    case 'choice':
      if (!(o.choices ?? []).includes(raw)) {
        const [noun, plural] = o.noun ?? ['value', 'values']
        throw new UsageError(
          `--${o.name}: unknown ${noun} '${raw}' (${plural}: ${(o.choices ?? []).join(', ')})`,
        )
      }
      return raw
    case 'file':
      return raw
    case 'size':
      v = parseSize(raw)
      break
    case 'rate':
      v = parseRate(raw)
      break
    default:
      v = raw.trim() === '' ? Number.NaN : Number(raw)
      if (o.kind === 'int' && !Number.isInteger(v)) {
        throw new UsageError(`--${o.name} must be an integer: '${raw}'`)
      }
  }
  if (!Number.isFinite(v) || v < (o.min ?? -Infinity) || v > (o.max ?? Infinity)) {
    const fmt = (x: number) =>
      o.kind === 'size' && x >= MIB
        ? formatBytes(x)
        : o.kind === 'rate'
          ? `${formatRate(x)}bit/s`
          : String(x)
    throw new UsageError(
      `--${o.name} must be between ${fmt(o.min ?? 0)} and ${fmt(o.max ?? 0)}: '${raw}'`,
    )
  }
  return v
}

/** What the host offers a run; injectable for tests. */
export interface HostInfo {
  /** Bytes of memory the process may use. */
  readonly memoryBytes: number
}

/**
 * The host's memory: `os.totalmem()`, or `IOMMU_SIM_HOST_MEMORY` (a size such as `24G`)
 * when set, so that tests see the same host everywhere.
 */
export function hostInfo(env: NodeJS.ProcessEnv = process.env): HostInfo {
  const forced = env.IOMMU_SIM_HOST_MEMORY
  return { memoryBytes: forced === undefined ? totalmem() : parseSize(forced) }
}

/**
 * Why `path` cannot be written, or null when it can: an existing file is opened for
 * writing without truncating it; a new one is created and removed again.
 */
function unwritable(path: string): string | null {
  try {
    if (statSync(path, { throwIfNoEntry: false })?.isDirectory()) return 'is a directory'
    if (existsSync(path)) {
      closeSync(openSync(path, 'r+'))
    } else {
      closeSync(openSync(path, 'wx'))
      unlinkSync(path)
    }
    return null
  } catch (e) {
    // "ENOENT: no such file or directory, open 'x'" → its first part.
    return ((e as Error).message ?? String(e)).split(',')[0] ?? String(e)
  }
}

/** The parsed command line of `iommu-sim migrate`. */
export interface ParsedArgs {
  readonly options: MigrateOptions
  readonly json: string | null
  readonly svg: string | null
  readonly progress: boolean
  /** Storage faulted in ahead by a worker thread (not `--no-prefault`). */
  readonly prefault: boolean
}

/**
 * Turn `migrate` arguments into options, checking every value and the combinations
 * before anything runs.
 *
 * @throws UsageError - the first problem, as one line
 */
export function optionsFromArgs(args: string[], host: HostInfo = hostInfo()): ParsedArgs {
  let values: Record<string, string | boolean | undefined>
  try {
    values = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: Object.fromEntries(
        OPTIONS.map((o) => [o.name, { type: o.kind === 'flag' ? 'boolean' : 'string' } as const]),
      ),
    }).values
  } catch (e) {
    // node:util's messages: a missing value reads as "argument missing" or "ambiguous".
    const msg = (e as Error).message
    const name = /'(--[\w-]+)/.exec(msg)?.[1]
    if (name !== undefined && /argument (missing|is ambiguous)/.test(msg)) {
      throw new UsageError(`${name} needs a value`)
    }
    const unknown = /^Unknown option '([^']+)'/.exec(msg)?.[1]
    if (unknown !== undefined) throw new UsageError(`unknown option ${unknown} (--help)`)
    const positional = /^Unexpected argument '([^']+)'/.exec(msg)?.[1]
    if (positional !== undefined)
      throw new UsageError(`unexpected argument '${positional}' (--help)`)
    throw new UsageError(msg.split('\n')[0] ?? msg)
  }
  const get = <T extends number | string>(name: string): T | undefined => {
    const raw = values[name]
    if (raw === undefined || typeof raw === 'boolean') return undefined
    const spec = OPTIONS.find((o) => o.name === name) as OptionSpec
    return parseValue(spec, raw) as T
  }
  const flag = (name: string) => values[name] === true

  const iommu = get<IommuModel>('iommu') ?? 'amd'
  const iopte = get<IopteMode>('iopte') ?? '4k'
  const mode = IOPTE_MODES.find((m) => m.name === iopte)
  if (mode !== undefined && !(mode.models as readonly string[]).includes(iommu)) {
    throw new UsageError(`--iopte ${iopte} needs --iommu ${orList(mode.models)}`)
  }
  const memoryBytes = get<number>('memory') ?? 4 * GIB
  const base = defaultOptions({ memoryBytes })
  const dimmBytes = get<number>('dimm') ?? base.dimmBytes
  if (dimmBytes % (2 * MIB) !== 0) {
    throw new UsageError(`--dimm must be a multiple of 2M: ${formatBytes(dimmBytes)}`)
  }
  if (memoryBytes % dimmBytes !== 0) {
    throw new UsageError(
      `--dimm ${formatBytes(dimmBytes)} does not divide --memory ${formatBytes(memoryBytes)}`,
    )
  }
  const w = base.workload
  const ringBytes = get<number>('ring') ?? w.ringBytes
  if (ringBytes % 4096 !== 0) throw new UsageError(`--ring must be a multiple of 4K: ${ringBytes}`)
  if (ringBytes > memoryBytes) {
    throw new UsageError(
      `--ring ${formatBytes(ringBytes)} is larger than --memory ${formatBytes(memoryBytes)}`,
    )
  }
  const hotBytes = get<number>('hot-set') ?? w.hotBytes
  if (hotBytes > memoryBytes) {
    throw new UsageError(
      `--hot-set ${formatBytes(hotBytes)} is larger than --memory ${formatBytes(memoryBytes)}`,
    )
  }
  const maxRounds = get<number>('max-rounds') ?? base.maxRounds
  const unplugRound = get<number>('unplug-round') ?? null
  if (unplugRound !== null && unplugRound >= maxRounds) {
    throw new UsageError(
      `--unplug-round ${unplugRound} is past the last pre-copy round (--max-rounds ${maxRounds})`,
    )
  }
  if (unplugRound !== null && memoryBytes / dimmBytes < 2) {
    throw new UsageError('--unplug-round needs at least 2 DIMMs (--dimm smaller than --memory)')
  }
  const viommu = flag('viommu')
  if (viommu && !VIOMMU_MODELS.includes(iommu)) {
    throw new UsageError(
      `--viommu needs --iommu ${orList(VIOMMU_MODELS)} (${iommu === 'amd' ? 'the AMD vIOMMU of 7.2 is not modelled yet' : 'the mock has no guest-visible stage-1 format'})`,
    )
  }
  if (viommu && unplugRound !== null) {
    throw new UsageError(
      '--unplug-round and --viommu: hot-unplug with a vIOMMU guest is not modelled',
    )
  }
  if (flag('break-invalidation') && !viommu) {
    throw new UsageError('--break-invalidation needs --viommu')
  }
  if (flag('break-invalidation') && flag('break-tracker')) {
    throw new UsageError('--break-invalidation and --break-tracker: break one thing at a time')
  }
  const json = (values.json as string | undefined) ?? null
  const svg = (values.svg as string | undefined) ?? null
  for (const [name, path] of [
    ['json', json],
    ['svg', svg],
  ] as const) {
    const why = path === null ? null : unwritable(path)
    if (why !== null) throw new UsageError(`--${name} ${path}: cannot write (${why})`)
  }
  const options: MigrateOptions = {
    ...base,
    iommu,
    iopte,
    dimmBytes,
    seed: get<number>('seed') ?? base.seed,
    bandwidth: (get<number>('bandwidth') ?? base.bandwidth * 8) / 8,
    maxRounds,
    maxDowntime: get<number>('max-downtime') ?? base.maxDowntime,
    workload: {
      ...w,
      ringBytes,
      ringOffset: Math.min(w.ringOffset, memoryBytes - ringBytes),
      ringRate: get<number>('ring-rate') ?? w.ringRate,
      randomRate: get<number>('random-rate') ?? w.randomRate,
      locality: get<number>('locality') ?? w.locality,
      hotBytes,
      hotOffset: Math.min(w.hotOffset, memoryBytes - hotBytes),
    },
    unplugRound,
    breakage: flag('break-tracker')
      ? 'tracking-never-enabled'
      : flag('break-invalidation')
        ? 'drop-guest-invalidation'
        : 'none',
    detector: !flag('no-detector'),
    ideal: flag('ideal'),
    viommu,
  }
  if (!flag('force')) checkEstimate(options, host)
  return {
    options,
    json,
    svg,
    progress: !flag('no-progress') && process.stdout.isTTY === true,
    prefault: !flag('no-prefault'),
  }
}

let prefault: PrefaultedStorage | null = null
/** The process's one prefaulting storage source, or nothing with `--no-prefault`. */
function storageFor(on: boolean): { storage?: PrefaultedStorage } {
  if (!on) return {}
  prefault ??= prefaultedStorage()
  return { storage: prefault }
}

/** A progress bar on a TTY, else null. */
function roundBar(progress: boolean): cliProgress.SingleBar | null {
  return progress
    ? new cliProgress.SingleBar(
        {
          format: ' {bar} round {round} {phase} {percentage}%',
          hideCursor: true,
          clearOnComplete: true,
        },
        cliProgress.Presets.shades_classic,
      )
    : null
}

/** One migration with the bar, its tables on stdout, and the report files. */
function runOne(
  o: MigrateOptions,
  out: { json: string | null; svg: string | null; progress: boolean; prefault: boolean },
): number {
  process.stdout.write(
    `iommu-sim migrate: ${formatBytes(o.memoryBytes)} guest on ${typeof o.iommu === 'string' ? o.iommu : 'a driver'}${o.viommu ? ' with a vIOMMU' : ''}, ${o.iopte} IOPTEs, ` +
      `${(o.bandwidth * 8) / 1e9} Gbit/s link, seed ${o.seed}${o.ideal ? ', known kernel bugs fixed' : ''}` +
      `${o.devices && o.devices.length > 1 ? `, ${o.devices.length} devices` : ''}\n`,
  )
  const bar = roundBar(out.progress)
  bar?.start(100, 0, { round: 0, phase: 'setup' })
  let report: ReturnType<typeof migrate>
  try {
    report = migrate({
      ...o,
      ...storageFor(out.prefault),
      ...(bar
        ? {
            onProgress: (p) =>
              bar.update(Math.round(p.fraction * 100), { round: p.round, phase: p.phase }),
          }
        : {}),
    })
  } finally {
    bar?.stop()
  }
  process.stdout.write(`\n${formatRounds(report.rounds)}\n\n${formatTotals(report)}\n`)
  try {
    if (out.json !== null) writeFileSync(out.json, toJson(report))
    if (out.svg !== null) writeFileSync(out.svg, toSvg(report))
  } catch (e) {
    // Checked before the run; the file system changed since.
    throw new UsageError(`cannot write the report: ${(e as Error).message}`)
  }
  return verified(report) ? EXIT.OK : EXIT.VERIFY_FAILED
}

/** The commands and their one-line help. */
const COMMANDS = [
  ['migrate [options]', 'one live migration (the options below)'],
  ['compare [options] [--vendors LIST]', 'the same run on each vendor: one table, one chart'],
  ['run FILE [--json F] [--svg F]', 'a scenario file (JSON or YAML)'],
  [
    'sweep FILE --vary NAME=V1,V2 ...',
    'every combination, in parallel on all cores: CSV, JSON, chart',
  ],
  ['schema', "the scenario files' JSON Schema"],
] as const

/** Split `--name VALUE` / `--name=VALUE` / `--flag` arguments that `names` lists out of `args`. */
function takeArgs(
  args: readonly string[],
  names: Record<string, 'value' | 'flag' | 'multi'>,
): { rest: string[]; values: Record<string, string[]> } {
  const rest: string[] = []
  const values: Record<string, string[]> = {}
  for (let i = 0; i < args.length; i++) {
    const a = args[i] as string
    const m = /^--([\w-]+)(?:=(.*))?$/.exec(a)
    const name = m?.[1]
    const kind = name === undefined ? undefined : names[name]
    if (m === null || name === undefined || kind === undefined) {
      rest.push(a)
      continue
    }
    const list = values[name] ?? []
    values[name] = list
    if (kind === 'flag') {
      if (m[2] !== undefined) throw new UsageError(`--${name} takes no value`)
      list.push('')
      continue
    }
    const v = m[2] ?? args[++i]
    if (v === undefined) throw new UsageError(`--${name} needs a value`)
    if (kind === 'value' && list.length > 0) throw new UsageError(`--${name} given twice`)
    list.push(v)
  }
  return { rest, values }
}

/** A scenario file's text and whether it is YAML. */
function readScenarioFile(path: string): { text: string; yaml: boolean } {
  try {
    return { text: readFileSync(path, 'utf8'), yaml: /\.ya?ml$/i.test(path) }
  } catch (e) {
    throw new UsageError(`${path}: ${((e as Error).message ?? String(e)).split(',')[0]}`)
  }
}

function checkWritable(label: string, path: string | null): void {
  const why = path === null ? null : unwritable(path)
  if (why !== null) throw new UsageError(`${label} ${path}: cannot write (${why})`)
}

/** `iommu-sim compare`: the same options on each vendor. */
function compare(args: string[]): number {
  const { rest, values } = takeArgs(args, { vendors: 'value' })
  if (rest.some((a) => a === '--iommu' || a.startsWith('--iommu='))) {
    throw new UsageError('compare runs several vendors: --vendors LIST, not --iommu')
  }
  const viommu = rest.includes('--viommu')
  const vendors = (values.vendors?.[0]?.split(',') ?? (viommu ? VIOMMU_MODELS : IOMMU_MODELS)).map(
    (v) => v.trim(),
  )
  for (const v of vendors) {
    if (!isIommuModel(v)) {
      throw new UsageError(
        `--vendors: unknown IOMMU model '${v}' (models: ${IOMMU_MODELS.join(', ')})`,
      )
    }
  }
  if (new Set(vendors).size !== vendors.length) throw new UsageError('--vendors: a vendor twice')
  // Every vendor's options are checked before the first run.
  const runs = vendors.map((v) => optionsFromArgs([...rest, '--iommu', v]))
  const first = runs[0] as ParsedArgs
  const reports: MigrationReport[] = []
  const rows: RunRow[] = []
  for (const [i, p] of runs.entries()) {
    const o = p.options
    process.stdout.write(`[${i + 1}/${runs.length}] ${vendors[i]}: `)
    const bar = roundBar(p.progress)
    bar?.start(100, 0, { round: 0, phase: 'setup' })
    let r: MigrationReport
    try {
      r = migrate({
        ...o,
        ...storageFor(p.prefault),
        ...(bar
          ? {
              onProgress: (x) =>
                bar.update(Math.round(x.fraction * 100), { round: x.round, phase: x.phase }),
            }
          : {}),
      })
    } finally {
      bar?.stop()
    }
    reports.push(r)
    rows.push(runRow(vendors[i] as string, r))
    process.stdout.write(
      `${verified(r) ? 'verified' : 'VERIFICATION FAILED'}, downtime ${(r.downtimeSeconds * 1e3).toFixed(1)} ms, ${r.wallSeconds.toFixed(1)} s wall\n`,
    )
  }
  const params = describeOptions(first.options)
  process.stdout.write(`\niommu-sim compare: ${params}\n\n${formatRunTable(rows, 'vendor')}\n`)
  process.stdout.write(
    '\n* did not converge: the round limit, or no dirty tracking (every DMA-mapped page sent each round)\n',
  )
  for (const r of rows) process.stdout.write(`${r.vendor}: dirty tracking: ${r.dirtyPath}\n`)
  for (const r of reports) {
    for (const t of r.staleTranslations) {
      if (t.cause !== null) process.stdout.write(`${r.vendor.name}: ${t.cause}\n`)
    }
  }
  if (first.json !== null) {
    writeFileSync(
      first.json,
      `${JSON.stringify({ vendors, rows, reports: reports.map((r) => ({ ...r, verified: verified(r) })) }, null, 2)}\n`,
    )
  }
  if (first.svg !== null) {
    writeFileSync(
      first.svg,
      runsChart('The same migration on each vendor', rows, {
        params,
        budgetSeconds: first.options.maxDowntime,
        xTitle: 'IOMMU vendor',
      }),
    )
  }
  return rows.every((r) => r.verified) ? EXIT.OK : EXIT.VERIFY_FAILED
}

/** `iommu-sim run FILE`. */
function runFile(args: string[]): number {
  const { rest, values } = takeArgs(args, {
    json: 'value',
    svg: 'value',
    'no-progress': 'flag',
    'no-prefault': 'flag',
    force: 'flag',
  })
  const [file, ...extra] = rest
  if (file === undefined) throw new UsageError('run needs a scenario file: iommu-sim run FILE')
  if (extra.length > 0) throw new UsageError(`unexpected argument '${extra[0]}' (--help)`)
  const { text, yaml } = readScenarioFile(file)
  const options = scenarioOptionsOrUsage(text, yaml, file)
  const json = values.json?.[0] ?? null
  const svg = values.svg?.[0] ?? null
  checkWritable('--json', json)
  checkWritable('--svg', svg)
  if (values.force === undefined) checkEstimate(options, hostInfo())
  return runOne(options, {
    json,
    svg,
    progress: values['no-progress'] === undefined && process.stdout.isTTY === true,
    prefault: values['no-prefault'] === undefined,
  })
}

function scenarioOptionsOrUsage(text: string, yaml: boolean, file: string): MigrateOptions {
  try {
    return scenarioOptions(parseScenario(text, yaml))
  } catch (e) {
    if (e instanceof ScenarioError) throw new UsageError(`${file}: ${e.message}`)
    throw e
  }
}

/** `iommu-sim sweep FILE --vary ...`. */
async function sweep(args: string[]): Promise<number> {
  const { rest, values } = takeArgs(args, {
    vary: 'multi',
    workers: 'value',
    out: 'value',
    'measure-speedup': 'flag',
    'no-progress': 'flag',
  })
  const [file, ...extra] = rest
  if (file === undefined)
    throw new UsageError('sweep needs a scenario file: iommu-sim sweep FILE --vary NAME=V1,V2')
  if (extra.length > 0) throw new UsageError(`unexpected argument '${extra[0]}' (--help)`)
  const varies = (values.vary ?? []).map((v) => {
    try {
      return parseVary(v)
    } catch (e) {
      if (e instanceof ScenarioError) throw new UsageError(e.message)
      throw e
    }
  })
  if (varies.length === 0) throw new UsageError('sweep needs at least one --vary NAME=V1,V2')
  const workersRaw = values.workers?.[0]
  const workers = workersRaw === undefined ? defaultWorkers() : Number(workersRaw)
  if (!Number.isInteger(workers) || workers < 1 || workers > 256) {
    throw new UsageError(`--workers must be an integer between 1 and 256: '${workersRaw}'`)
  }
  const { text, yaml } = readScenarioFile(file)
  let points: SweepPoint[]
  try {
    points = sweepGrid(text, yaml, varies)
  } catch (e) {
    if (e instanceof ScenarioError) throw new UsageError(`${file}: ${e.message}`)
    throw e
  }
  const prefix = values.out?.[0] ?? 'sweep'
  const files = { csv: `${prefix}.csv`, json: `${prefix}.json`, svg: `${prefix}.svg` }
  for (const f of Object.values(files)) checkWritable('--out', f)
  const host = hostInfo()
  for (const p of points) {
    const est = estimateRun(p.options)
    // Every worker may hold one run at a time.
    if (est.memoryBytes * Math.min(workers, points.length) > host.memoryBytes) {
      throw new UsageError(
        `${p.labels.join(' ')}: ${Math.min(workers, points.length)} runs at once need about ${formatBytes(est.memoryBytes * Math.min(workers, points.length))}; this host has ${formatBytes(host.memoryBytes)} (fewer --workers)`,
      )
    }
  }
  const progress = values['no-progress'] === undefined && process.stdout.isTTY === true
  process.stdout.write(
    `iommu-sim sweep: ${points.length} runs (${varies.map((v) => `${v.param.name}: ${v.raw.join(', ')}`).join('; ')}) on ${workers} worker${workers === 1 ? '' : 's'}\n`,
  )
  const jobs = points.map((p) => p.options)
  // Longest first (by the device writes the runs simulate): the pool stays busy to the end.
  const cost = jobs.map((o) => estimateRun(o).round0Writes)
  const order = jobs.map((_, i) => i).sort((a, b) => (cost[b] as number) - (cost[a] as number))
  const pass = async (
    n: number,
    label: string,
  ): Promise<{ reports: MigrationReport[]; wall: number }> => {
    const bar = progress
      ? new cliProgress.SingleBar(
          {
            format: ` {bar} {value}/{total} runs ${label}{active}`,
            hideCursor: true,
            clearOnComplete: true,
          },
          cliProgress.Presets.shades_classic,
        )
      : null
    const active = new Map<number, number>()
    bar?.start(points.length, 0, { active: '' })
    let done = 0
    const t0 = performance.now()
    try {
      const reports = await runPool(
        jobs,
        n,
        (e) => {
          if (e.type === 'progress') active.set(e.index, e.round)
          else {
            active.delete(e.index)
            done++
            if (bar === null) {
              const r = e.report
              process.stdout.write(
                `  [${done}/${points.length}]${label} ${(points[e.index] as SweepPoint).labels.join(' ')}: downtime ${(r.downtimeSeconds * 1e3).toFixed(1)} ms, ${formatBytes(r.totalBytesSent)} sent, ${verified(r) ? 'verified' : 'VERIFICATION FAILED'}\n`,
              )
            }
          }
          bar?.update(done, {
            active: active.size
              ? ` · running ${[...active].map(([i, r]) => `#${i + 1} round ${r}`).join(', ')}`
              : '',
          })
        },
        order,
      )
      return { reports, wall: (performance.now() - t0) / 1000 }
    } finally {
      bar?.stop()
    }
  }
  let speed: { one: number; many: number; load: number[] } | null = null
  let result: { reports: MigrationReport[]; wall: number }
  if (values['measure-speedup'] !== undefined) {
    const load0 = loadavg()
    const one = await pass(1, ' (1 worker)')
    result = await pass(workers, ` (${workers} workers)`)
    speed = { one: one.wall, many: result.wall, load: [...load0, ...loadavg()] }
  } else {
    result = await pass(workers, '')
  }
  const rows = result.reports.map((r, i) => runRow((points[i] as SweepPoint).labels.join(' '), r))
  process.stdout.write(
    `\n${formatRunTable(rows)}\n\n* did not converge: the round limit, or no dirty tracking (every DMA-mapped page sent each round)\n`,
  )
  const base = points[0] as SweepPoint
  writeFileSync(files.csv, toCsv(points, rows))
  writeFileSync(
    files.json,
    `${JSON.stringify(
      {
        scenario: file,
        vary: varies.map((v) => ({ name: v.param.name, values: v.raw })),
        workers,
        wallSeconds: result.wall,
        speedup: speed,
        points: points.map((p, i) => ({
          labels: p.labels,
          row: rows[i],
          report: { ...(result.reports[i] as MigrationReport), verified: rows[i]?.verified },
        })),
      },
      null,
      2,
    )}\n`,
  )
  writeFileSync(
    files.svg,
    runsChart(`Sweep over ${varies.map((v) => v.param.name).join(' × ')}`, rows, {
      params: `${file}: ${describeOptions(scenarioOptions(parseScenario(text, yaml)))}, varied: ${varies.map((v) => v.param.name).join(', ')} · ${points.length} runs on ${workers} workers`,
      budgetSeconds: base.options.maxDowntime,
      xTitle: varies.map((v) => v.param.name).join(' × '),
    }),
  )
  process.stdout.write(
    `wrote ${files.csv}, ${files.json}, ${files.svg}\nwall clock: ${result.wall.toFixed(2)} s on ${workers} worker${workers === 1 ? '' : 's'}\n`,
  )
  if (speed !== null) {
    process.stdout.write(
      `speedup: ${speed.one.toFixed(2)} s on 1 worker, ${speed.many.toFixed(2)} s on ${workers}: ${(speed.one / speed.many).toFixed(2)}× ` +
        `(load average ${speed.load
          .slice(0, 3)
          .map((x) => x.toFixed(2))
          .join(' ')} before, ${speed.load
          .slice(3)
          .map((x) => x.toFixed(2))
          .join(' ')} after; ${availableParallelism()} cores available)\n`,
    )
  }
  return rows.every((r) => r.verified) ? EXIT.OK : EXIT.VERIFY_FAILED
}

/** Refuse a run the estimate says the host cannot hold or round 0 cannot finish. */
function checkEstimate(options: MigrateOptions, host: HostInfo): void {
  const est = estimateRun(options)
  const memoryBytes = options.memoryBytes
  if (est.memoryBytes > host.memoryBytes) {
    throw new UsageError(
      `a ${formatBytes(memoryBytes)} guest needs about ${formatBytes(est.memoryBytes)} of memory; ` +
        `this host has ${formatBytes(host.memoryBytes)} (--force to run anyway)`,
    )
  }
  if (est.round0Writes > MAX_ROUND0_WRITES) {
    throw new UsageError(
      `round 0 alone would simulate ${est.round0Writes.toExponential(1)} device writes ` +
        `(copying ${formatBytes(memoryBytes)} at ${formatRate(options.bandwidth * 8)}bit/s takes ` +
        `${(memoryBytes / options.bandwidth / 3600).toFixed(1)} h of simulated time); ` +
        'a faster --bandwidth, a smaller --memory or lower rates, or --force',
    )
  }
}

/** Run the CLI; returns the exit status (a promise for `sweep`). */
export function main(argv: string[]): number | Promise<number> {
  const [command, ...rest] = argv
  const usage = (message: string) => {
    process.stderr.write(`iommu-sim: ${message}\n`)
    return EXIT.USAGE
  }
  if (command === '-h' || command === '--help' || rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(usageText())
    return EXIT.OK
  }
  if (command === undefined) return usage('missing command: iommu-sim migrate [options] (--help)')
  const guarded = <T extends number | Promise<number>>(fn: () => T): number | Promise<number> => {
    try {
      const r = fn()
      return r instanceof Promise
        ? r.catch((e: unknown) => {
            if (e instanceof UsageError) return usage(e.message)
            throw e
          })
        : r
    } catch (e) {
      if (e instanceof UsageError) return usage(e.message)
      throw e
    }
  }
  switch (command) {
    case 'migrate':
      return guarded(() => {
        const { options, json, svg, progress, prefault } = optionsFromArgs(rest)
        return runOne(options, { json, svg, progress, prefault })
      })
    case 'compare':
      return guarded(() => compare(rest))
    case 'run':
      return guarded(() => runFile(rest))
    case 'sweep':
      return guarded(() => sweep(rest))
    case 'schema':
      if (rest.length > 0) return usage(`unexpected argument '${rest[0]}' (--help)`)
      process.stdout.write(`${JSON.stringify(scenarioJsonSchema(), null, 2)}\n`)
      return EXIT.OK
    default:
      return usage(`unknown command '${command}' (--help)`)
  }
}

/**
 * The `iommu-sim` command line.
 *
 * @module
 */

import { writeFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import cliProgress from 'cli-progress'
import {
  defaultOptions,
  IOMMU_MODELS,
  type IopteMode,
  isIommuModel,
  type MigrateOptions,
  migrate,
} from './migrate.ts'
import { formatBytes, formatRounds, formatTotals, toJson, toSvg, verified } from './report.ts'

const USAGE = `Usage: iommu-sim migrate [options]

Live-migrate a VM with a passthrough device over the IOMMU model: pre-copy rounds driven by
IOMMU_HWPT_GET_DIRTY_BITMAP, then stop-and-copy, then a page-for-page verification.
Exits 0 when the destination equals the source, 1 when it does not, 2 on bad options.

Options:
  --iommu MODEL         IOMMU model: ${IOMMU_MODELS.join(' | ')} (default amd)
  --memory SIZE         guest RAM, e.g. 4G, 64G (default 4G)
  --dimm SIZE           IOAS area size; guest RAM is whole DIMMs (default min(1G, memory))
  --iopte MODE          4k | 2m | split (2M mapped, split to 4K while tracking, merged after)
  --seed N              workload seed (default 1)
  --bandwidth RATE      link rate in bit/s, e.g. 10G, 25G (default 10G)
  --max-rounds N        pre-copy round limit, round 0 included (default 30)
  --max-downtime S      converge when the rest fits in S seconds (default 0.1)
  --ring SIZE           device ring buffer size (default 64M)
  --ring-rate N         ring writes per simulated second (default 100000)
  --random-rate N       random writes per simulated second (default 80000)
  --locality F          share of random writes into the hot set, 0..1 (default 0.98)
  --hot-set SIZE        hot set size (default 256M)
  --unplug-round N      hot-unplug the last DIMM during pre-copy round N
  --break-tracker       never enable dirty tracking (verification must then fail)
  --no-detector         skip the AMD model's missing-invalidation detector (faster)
  --json FILE           write every figure as JSON
  --svg FILE            write a chart of dirty pages per round
  --no-progress         no progress bar (it is shown only on a TTY anyway)
  -h, --help            this text
`

/** Parse a size like `4G`, `512M`, `65536`. */
export function parseSize(s: string): number {
  const m = /^(\d+(?:\.\d+)?)([KMGT]?)(i?B?)?$/i.exec(s.trim())
  if (m === null) throw new RangeError(`bad size '${s}'`)
  const mult = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 }[
    (m[2] ?? '').toUpperCase() as '' | 'K' | 'M' | 'G' | 'T'
  ]
  return Math.round(Number(m[1]) * mult)
}

/** Parse a rate like `10G` (bit/s, decimal). */
export function parseRate(s: string): number {
  const m = /^(\d+(?:\.\d+)?)([KMGT]?)$/i.exec(s.trim())
  if (m === null) throw new RangeError(`bad rate '${s}'`)
  const mult = { '': 1, K: 1e3, M: 1e6, G: 1e9, T: 1e12 }[
    (m[2] ?? '').toUpperCase() as '' | 'K' | 'M' | 'G' | 'T'
  ]
  return Number(m[1]) * mult
}

function number(name: string, v: string, min: number, max: number): number {
  const n = Number(v)
  if (!Number.isFinite(n) || n < min || n > max) {
    throw new RangeError(`--${name} must be between ${min} and ${max}: '${v}'`)
  }
  return n
}

/** Turn `migrate` arguments into options (throws RangeError on bad input). */
export function optionsFromArgs(args: string[]): {
  options: MigrateOptions
  json: string | null
  svg: string | null
  progress: boolean
} {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      iommu: { type: 'string' },
      memory: { type: 'string' },
      dimm: { type: 'string' },
      iopte: { type: 'string' },
      seed: { type: 'string' },
      bandwidth: { type: 'string' },
      'max-rounds': { type: 'string' },
      'max-downtime': { type: 'string' },
      ring: { type: 'string' },
      'ring-rate': { type: 'string' },
      'random-rate': { type: 'string' },
      locality: { type: 'string' },
      'hot-set': { type: 'string' },
      'unplug-round': { type: 'string' },
      'break-tracker': { type: 'boolean' },
      'no-detector': { type: 'boolean' },
      json: { type: 'string' },
      svg: { type: 'string' },
      'no-progress': { type: 'boolean' },
    },
  })
  const iommu = values.iommu ?? 'amd'
  if (!isIommuModel(iommu)) {
    throw new RangeError(
      `--iommu: unknown IOMMU model '${iommu}' (models: ${IOMMU_MODELS.join(', ')})`,
    )
  }
  const iopte = (values.iopte ?? '4k') as IopteMode
  if (!['4k', '2m', 'split'].includes(iopte))
    throw new RangeError('--iopte must be 4k, 2m or split')
  const memoryBytes = values.memory ? parseSize(values.memory) : 4 * 2 ** 30
  if (memoryBytes < 2 ** 27 || memoryBytes > 2 ** 40) {
    throw new RangeError('--memory must be between 128M and 1T')
  }
  const base = defaultOptions({ memoryBytes })
  const w = base.workload
  const ringBytes = values.ring ? parseSize(values.ring) : w.ringBytes
  const hotBytes = values['hot-set'] ? parseSize(values['hot-set']) : w.hotBytes
  const options: MigrateOptions = {
    ...base,
    iommu,
    iopte,
    dimmBytes: values.dimm ? parseSize(values.dimm) : base.dimmBytes,
    seed: values.seed ? number('seed', values.seed, 0, 2 ** 32 - 1) : base.seed,
    bandwidth: values.bandwidth ? parseRate(values.bandwidth) / 8 : base.bandwidth,
    maxRounds: values['max-rounds']
      ? number('max-rounds', values['max-rounds'], 1, 10000)
      : base.maxRounds,
    maxDowntime: values['max-downtime']
      ? number('max-downtime', values['max-downtime'], 0, 3600)
      : base.maxDowntime,
    workload: {
      ...w,
      ringBytes,
      ringOffset: Math.min(w.ringOffset, memoryBytes - ringBytes),
      ringRate: values['ring-rate'] ? number('ring-rate', values['ring-rate'], 0, 1e8) : w.ringRate,
      randomRate: values['random-rate']
        ? number('random-rate', values['random-rate'], 0, 1e8)
        : w.randomRate,
      locality: values.locality ? number('locality', values.locality, 0, 1) : w.locality,
      hotBytes,
      hotOffset: Math.min(w.hotOffset, memoryBytes - hotBytes),
    },
    unplugRound: values['unplug-round']
      ? number('unplug-round', values['unplug-round'], 0, 10000)
      : null,
    breakage: values['break-tracker'] ? 'tracking-never-enabled' : 'none',
    detector: !values['no-detector'],
  }
  return {
    options,
    json: values.json ?? null,
    svg: values.svg ?? null,
    progress: !values['no-progress'] && process.stdout.isTTY === true,
  }
}

/** Run the CLI; returns the exit code. */
export function main(argv: string[]): number {
  const [command, ...rest] = argv
  if (
    command === undefined ||
    command === '-h' ||
    command === '--help' ||
    rest.includes('--help') ||
    rest.includes('-h')
  ) {
    process.stdout.write(USAGE)
    return command === undefined ? 2 : 0
  }
  if (command !== 'migrate') {
    process.stderr.write(`iommu-sim: unknown command '${command}'\n\n${USAGE}`)
    return 2
  }
  let parsed: ReturnType<typeof optionsFromArgs>
  try {
    parsed = optionsFromArgs(rest)
  } catch (e) {
    process.stderr.write(`iommu-sim: ${(e as Error).message}\n`)
    return 2
  }
  const { options, json, svg, progress } = parsed
  const o = options
  process.stdout.write(
    `iommu-sim migrate: ${formatBytes(o.memoryBytes)} guest on ${o.iommu}, ${o.iopte} IOPTEs, ` +
      `${(o.bandwidth * 8) / 1e9} Gbit/s link, seed ${o.seed}\n`,
  )
  const bar = progress
    ? new cliProgress.SingleBar(
        {
          format: ' {bar} round {round} {phase} {percentage}%',
          hideCursor: true,
          clearOnComplete: true,
        },
        cliProgress.Presets.shades_classic,
      )
    : null
  bar?.start(100, 0, { round: 0, phase: 'setup' })
  let report: ReturnType<typeof migrate>
  try {
    report = migrate({
      ...o,
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
  if (json !== null) writeFileSync(json, toJson(report))
  if (svg !== null) writeFileSync(svg, toSvg(report))
  return verified(report) ? 0 : 1
}

/**
 * `pnpm bench:scale`: cost versus size. For guests of 1, 16, 64, 256 GiB and 1 TiB (4 KiB
 * IOPTEs, the AMD model): pin + map through IOAS_MAP + HWPT_ALLOC, GET_DIRTY_BITMAP over
 * the whole IOAS with 1% of the pages dirty, and a verified pre-copy migration with the
 * default workload and link (`pnpm sim migrate --memory SIZE`). Each measurement runs in
 * a child process of its own, so that its memory is its own. Prints time and memory, and
 * both per GiB: linear growth shows as a flat per-GiB column.
 *
 * Options (`pnpm bench:scale -- OPTIONS`): `--sizes 1,16,64` (GiB), `--json FILE`,
 * `--no-migrate`. The 1 TiB migration takes several minutes; the CLI refuses it (its
 * `estimateRun`, about 19 GiB) on a host with less memory than that.
 *
 * With `--stack GIB` (internal) it measures one size in this process and prints JSON.
 */

import { spawnSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { type ChildMigration, loadAverage, migrateChild, REPO_ROOT } from './child.ts'
import { GIB, measureStack, PAGE, type StackFigures } from './stack.ts'

const SIZES = [1, 16, 64, 256, 1024]
/** Up to this size the 1% dirty pages are written with data (above: zero bytes, D bits only). */
const DATA_WRITES_UP_TO = 64

function option(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? process.argv[i + 1] : undefined
}

interface Row {
  readonly gib: number
  readonly stack:
    | (StackFigures & { readonly maxRssBytes: number; readonly cpuSeconds: number })
    | null
  readonly migration: ChildMigration | null
  readonly load: number
}

/** One size's stack measurement in a child process. */
function stackChild(gib: number): Row['stack'] {
  const r = spawnSync(
    process.execPath,
    [
      '--conditions=@iommu/source',
      '--import',
      'tsx',
      fileURLToPath(import.meta.url),
      '--stack',
      String(gib),
    ],
    { cwd: REPO_ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 20 },
  )
  if (r.status !== 0) throw new Error(`stack measurement of ${gib} GiB: exit ${r.status}`)
  return JSON.parse(r.stdout.trim().split('\n').pop() as string)
}

function fmt(v: number, digits = 2): string {
  if (!Number.isFinite(v)) return '—'
  const a = Math.abs(v)
  return a >= 100 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : v.toFixed(digits)
}

function table(rows: readonly Row[]): string {
  const head = [
    'guest',
    'pin+map s',
    'ms/GiB',
    'map RSS GiB',
    'GET_DIRTY_BITMAP ms',
    'ms/GiB',
    'migration wall s',
    'CPU s',
    'CPU s/GiB',
    'peak RSS GiB',
    'MiB/GiB',
    'bookkeeping B/page',
    'verified',
    'load',
  ]
  const body = rows.map((r) => {
    const s = r.stack
    const m = r.migration
    const pages = (r.gib * GIB) / PAGE
    const mem = m?.report.memory as { bookkeepingBytes: number } | undefined
    return [
      r.gib >= 1024 ? `${r.gib / 1024} TiB` : `${r.gib} GiB`,
      s ? fmt((s.mapMs + s.fillMs) / 1000) : '—',
      s ? fmt((s.mapMs + s.fillMs) / r.gib) : '—',
      s ? fmt(s.maxRssBytes / GIB) : '—',
      s ? fmt(s.uapiClearMs) : '—',
      s ? fmt(s.uapiClearMs / r.gib) : '—',
      m ? fmt(m.wallSeconds) : '—',
      m ? fmt(m.cpuSeconds) : '—',
      m ? fmt(m.cpuSeconds / r.gib, 3) : '—',
      m ? fmt(m.maxRssBytes / GIB) : '—',
      m ? fmt(m.maxRssBytes / 2 ** 20 / r.gib) : '—',
      mem ? fmt(mem.bookkeepingBytes / pages) : '—',
      m ? (m.report.mismatchedPages === 0 && (m.report.lostPages ?? 0) === 0 ? 'yes' : 'NO') : '—',
      fmt(r.load),
    ]
  })
  const w = head.map((h, i) => Math.max(h.length, ...body.map((b) => (b[i] as string).length)))
  const line = (cells: string[]) => cells.map((c, i) => c.padStart(w[i] as number)).join('  ')
  return [line(head), line(w.map((n) => '-'.repeat(n))), ...body.map(line)].join('\n')
}

async function main(): Promise<void> {
  const one = option('stack')
  if (one !== undefined) {
    const gib = Number(one)
    const c0 = process.cpuUsage()
    const s = measureStack(gib, gib <= DATA_WRITES_UP_TO, gib >= 256 ? 3 : 7)
    const c = process.cpuUsage(c0)
    console.log(
      JSON.stringify({
        ...s,
        maxRssBytes: process.resourceUsage().maxRSS * 1024,
        cpuSeconds: (c.user + c.system) / 1e6,
      }),
    )
    return
  }
  const sizes = (option('sizes') ?? SIZES.join(','))
    .split(',')
    .map((x) => Number(x.trim()))
    .filter((x) => x > 0)
  const migrate = !process.argv.includes('--no-migrate')
  const rows: Row[] = []
  for (const gib of sizes) {
    process.stderr.write(`bench:scale: ${gib} GiB: pin + map, GET_DIRTY_BITMAP...\n`)
    const load = loadAverage()
    const stack = stackChild(gib)
    let migration: ChildMigration | null = null
    if (migrate) {
      process.stderr.write(`bench:scale: ${gib} GiB: migration...\n`)
      migration = migrateChild(['--memory', `${gib}G`])
    }
    rows.push({ gib, stack, migration, load })
    process.stderr.write(`${table(rows)}\n`)
  }
  console.log(
    '\nIOMMU model: cost versus guest size (AMD model, 4 KiB IOPTEs; 1% dirty; default workload, 10 Gbit/s)',
  )
  console.log(table(rows))
  console.log(
    `\n(1% dirty marked by DMA writes of data up to ${DATA_WRITES_UP_TO} GiB, of a zero byte above: the same D bits without storing the pages; load = 1-minute load average at the start of each size)`,
  )
  const json = option('json')
  if (json !== undefined) {
    writeFileSync(
      json,
      JSON.stringify(
        rows.map((r) => ({
          gib: r.gib,
          load: r.load,
          stack: r.stack,
          migration: r.migration && {
            wallSeconds: r.migration.wallSeconds,
            cpuSeconds: r.migration.cpuSeconds,
            maxRssBytes: r.migration.maxRssBytes,
            report: r.migration.report,
          },
        })),
        null,
        2,
      ),
    )
  }
}

await main()

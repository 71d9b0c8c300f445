/**
 * `compare` and `sweep`: the grid of a sweep, its CSV, and the commands end to end on tiny
 * guests (the sweep as a process, on a pool of 2 workers).
 */
import { execFile } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { migrate } from '../src/migrate.ts'
import { ScenarioError } from '../src/scenario.ts'
import { parseVary, runRow, sweepGrid, toCsv } from '../src/sweep.ts'
import { runMain } from './stdout.ts'

const HERE = dirname(fileURLToPath(import.meta.url))
const MAIN = join(HERE, '../src/main.ts')
const MIB = 2 ** 20

const BASE = JSON.stringify({
  v: 1,
  machine: {
    vendor: 'intel',
    devices: [
      { name: 'nic0', workload: { ringMiB: 2, ringOffsetMiB: 8, hotMiB: 8, hotOffsetMiB: 32 } },
    ],
  },
  migration: { guestMiB: 128, dimmMiB: 64, linkMbps: 10000, downtimeMs: 20 },
})

function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--conditions=@iommu/source', '--import', 'tsx', MAIN, ...args],
      { env: { ...process.env, IOMMU_SIM_HOST_MEMORY: '24G' } },
      (e, stdout, stderr) => {
        resolve({ code: e ? ((e as { code?: number }).code ?? -1) : 0, stdout, stderr })
      },
    )
  })
}

describe('sweep grids', () => {
  it('every combination, the first --vary the slowest, each a checked scenario', () => {
    const g = sweepGrid(BASE, false, [parseVary('link=1G,25G'), parseVary('iopte=4k,2m,split')])
    expect(g.map((p) => p.labels.join(' '))).toEqual([
      'link=1G iopte=4k',
      'link=1G iopte=2m',
      'link=1G iopte=split',
      'link=25G iopte=4k',
      'link=25G iopte=2m',
      'link=25G iopte=split',
    ])
    expect(g[4]?.options.bandwidth).toBe(25e9 / 8)
    expect(g[4]?.options.iopte).toBe('2m')
    const rates = sweepGrid(BASE, false, [parseVary('dirty-rate=1000,5000')])
    expect(rates.map((p) => p.options.devices?.[0]?.workload.randomRate)).toEqual([1000, 5000])
  })

  it('refuses an unknown parameter, a bad value and a point the rules refuse', () => {
    const err = (fn: () => unknown) => {
      try {
        fn()
        return 'OK'
      } catch (e) {
        return e instanceof ScenarioError ? e.message : `not a ScenarioError: ${e}`
      }
    }
    expect(err(() => parseVary('colour=red'))).toBe(
      "--vary: unknown parameter 'colour' (link, iopte, vendor, dirty-rate, ring-rate, locality, guest, downtime, seed, ideal)",
    )
    expect(err(() => parseVary('link='))).toBe('--vary link: give values, e.g. link=a,b')
    expect(err(() => parseVary('link=fast'))).toBe("bad rate 'fast' (e.g. 1G, 25G)")
    expect(err(() => sweepGrid(BASE, false, [parseVary('iopte=4k,16k')]))).toBe(
      'iopte=16k: migration.iopte 16k needs vendor amd',
    )
  })

  it('writes one CSV row per run, the varied values first', () => {
    const g = sweepGrid(BASE, false, [parseVary('seed=1,2')])
    const rows = g.map((p) => runRow(p.labels.join(' '), migrate(p.options)))
    const csv = toCsv(g, rows).trimEnd().split('\n')
    expect(csv[0]).toBe(
      'seed,vendor,dirty_path,pre_copy_rounds,converged,pages_sent,bytes_sent,downtime_s,total_sim_s,bitmap_ms,translations,iotlb_hit_rate,queue_commands,hazards,verified,mismatched_pages,wall_s',
    )
    expect(csv).toHaveLength(3)
    expect(csv[1]?.startsWith('1,Intel VT-d,"VT-d second-stage D bit (bit 9), set by')).toBe(true)
    expect(rows.every((r) => r.verified)).toBe(true)
    expect(rows[0]?.bytesSent).toBeGreaterThanOrEqual(128 * MIB)
  })
})

describe('iommu-sim compare and sweep', () => {
  it('compare: one line per vendor, the dirty paths, exit 0 when all verify', () => {
    const { code, stdout: text } = runMain([
      'compare',
      '--vendors',
      'intel,mock',
      '--memory',
      '128M',
      '--dimm',
      '64M',
      '--no-progress',
    ])
    expect(code).toBe(0)
    expect(text).toMatch(/^intel +1 +\d[\d,]* +[\d.]+ ms .* OK$/m)
    expect(text).toMatch(/^mock +1 .* - +- +- +none +OK$/m)
    expect(text).toContain('Intel VT-d: dirty tracking: VT-d second-stage D bit (bit 9)')
  })

  it.concurrent('sweep: 2 workers, CSV, JSON and chart, and the speedup over one worker', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'iommu-sweep-'))
    const file = join(dir, 's.json')
    writeFileSync(file, BASE)
    const r = await cli([
      'sweep',
      file,
      '--vary',
      'link=10G,25G',
      '--workers',
      '2',
      '--measure-speedup',
      '--out',
      join(dir, 'out'),
    ])
    expect(r.stderr).toBe('')
    expect(r.code).toBe(0)
    expect(r.stdout).toContain('iommu-sim sweep: 2 runs (link: 10G, 25G) on 2 workers')
    expect(r.stdout).toMatch(/speedup: [\d.]+ s on 1 worker, [\d.]+ s on 2: [\d.]+× \(load average/)
    expect(readFileSync(join(dir, 'out.csv'), 'utf8').trimEnd().split('\n')).toHaveLength(3)
    const json = JSON.parse(readFileSync(join(dir, 'out.json'), 'utf8'))
    expect(json.points.map((p: { labels: string[] }) => p.labels)).toEqual([
      ['link=10G'],
      ['link=25G'],
    ])
    expect(json.points[1].report.config.bandwidth).toBe(25e9 / 8)
    expect(json.workers).toBe(2)
    expect(existsSync(join(dir, 'out.svg'))).toBe(true)
    expect(readFileSync(join(dir, 'out.svg'), 'utf8')).toContain('Sweep over link')
  })

  it.concurrent('sweep and run refuse bad input with one line, exit 2', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'iommu-sweep-'))
    const file = join(dir, 's.json')
    writeFileSync(file, BASE)
    expect(await cli(['sweep', file])).toEqual({
      code: 2,
      stdout: '',
      stderr: 'iommu-sim: sweep needs at least one --vary NAME=V1,V2\n',
    })
    expect(await cli(['run', join(dir, 'none.json')])).toEqual({
      code: 2,
      stdout: '',
      stderr: `iommu-sim: ${join(dir, 'none.json')}: ENOENT: no such file or directory\n`,
    })
  })
})

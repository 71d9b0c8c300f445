/**
 * `iommu-sim` as a user meets it: every bad command line is one line on stderr and exit
 * status 2 before any work, a failed verification is 1, success is 0. The process tests
 * spawn the real CLI; the unit tests check the validation and the DIMM layout.
 */
import { execFile } from 'node:child_process'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createMachine } from '@iommu/core'
import {
  amd,
  HT_RANGE_END,
  HT_RANGE_START,
  MSI_RANGE_END,
  MSI_RANGE_START,
} from '@iommu/driver-amd'
import { IOMMU_IOAS_ALLOC, IOMMU_IOAS_IOVA_RANGES, openIommufd } from '@iommu/iommufd'
import { describe, expect, it } from 'vitest'
import {
  defaultOptions,
  estimateRun,
  GUEST_IOVA,
  IOMMU_MODELS,
  IOPTE_MODES,
  layoutDimms,
  MAX_ROUND0_WRITES,
  OPTIONS,
  optionsFromArgs,
  SWEEP_PARAMS,
  UsageError,
} from '../src/index.ts'

const MIB = 2 ** 20
const GIB = 2 ** 30
const MAIN = join(dirname(fileURLToPath(import.meta.url)), '../src/main.ts')
/** Every spawned CLI sees the same 24 GiB host. */
const HOST = { memoryBytes: 24 * GIB }

interface Run {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

function cli(args: string[]): Promise<Run> {
  return new Promise((done) => {
    execFile(
      process.execPath,
      ['--conditions=@iommu/source', '--import', 'tsx', MAIN, ...args],
      { env: { ...process.env, IOMMU_SIM_HOST_MEMORY: '24G' }, maxBuffer: 1 << 24 },
      (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1
        done({ code, stdout, stderr })
      },
    )
  })
}

const dir = mkdtempSync(join(tmpdir(), 'iommu-sim-cli-'))
const aFile = join(dir, 'file')
writeFileSync(aFile, 'not a directory')

/** [arguments after `migrate`, the one line on stderr]. */
const USAGE_ERRORS: readonly (readonly [string[], string])[] = [
  [['--bandwidth', '0'], "--bandwidth must be between 1Mbit/s and 10Tbit/s: '0'"],
  [
    ['--memory', '1T', '--hot-set', '16G'],
    'a 1.0 TiB guest needs about 45.5 GiB of memory; this host has 24.0 GiB (--force to run anyway)',
  ],
  [
    ['--memory', '768G', '--hot-set', '8G'],
    'a 768 GiB guest needs about 27.5 GiB of memory; this host has 24.0 GiB (--force to run anyway)',
  ],
  [
    ['--json', join(dir, 'missing', 'r.json')],
    `--json ${join(dir, 'missing', 'r.json')}: cannot write (ENOENT: no such file or directory)`,
  ],
  [
    ['--svg', join(aFile, 'r.svg')],
    `--svg ${join(aFile, 'r.svg')}: cannot write (ENOTDIR: not a directory)`,
  ],
  [['--json', dir], `--json ${dir}: cannot write (is a directory)`],
  [['--dimm', '3G'], '--dimm 3.0 GiB does not divide --memory 4.0 GiB'],
  [['--dimm', '3M'], '--dimm must be a multiple of 2M: 3.0 MiB'],
  [['--ring', '8G'], '--ring 8.0 GiB is larger than --memory 4.0 GiB'],
  [['--ring', '1000'], '--ring must be a multiple of 4K: 1000'],
  [['--hot-set', '5G'], '--hot-set 5.0 GiB is larger than --memory 4.0 GiB'],
  [['--iommu', 'mock', '--iopte', 'split'], '--iopte split needs --iommu amd, intel or smmuv3'],
  [
    ['--viommu'],
    '--viommu needs --iommu intel or smmuv3 (the AMD vIOMMU of 7.2 is not modelled yet)',
  ],
  [
    ['--viommu', '--iommu', 'mock'],
    '--viommu needs --iommu intel or smmuv3 (the mock has no guest-visible stage-1 format)',
  ],
  [['--iommu', 'intel', '--break-invalidation'], '--break-invalidation needs --viommu'],
  [
    ['--iommu', 'intel', '--viommu', '--memory', '1G', '--dimm', '512M', '--unplug-round', '1'],
    '--unplug-round and --viommu: hot-unplug with a vIOMMU guest is not modelled',
  ],
  [['--iopte', '1g'], "--iopte: unknown IOPTE mode '1g' (modes: 4k, 2m, split, 16k, 64k)"],
  [['--seed', '1.5'], "--seed must be an integer: '1.5'"],
  [['--seed=-1'], "--seed must be between 0 and 4294967295: '-1'"],
  [['--unplug-round', '30'], '--unplug-round 30 is past the last pre-copy round (--max-rounds 30)'],
  [
    ['--memory', '1G', '--dimm', '1G', '--unplug-round', '1'],
    '--unplug-round needs at least 2 DIMMs (--dimm smaller than --memory)',
  ],
  [
    ['--bandwidth', '1M'],
    'round 0 alone would simulate 6.2e+9 device writes (copying 4.0 GiB at 1Mbit/s takes 9.5 h ' +
      'of simulated time); a faster --bandwidth, a smaller --memory or lower rates, or --force',
  ],
  [['--memory'], '--memory needs a value'],
  [['--memory', 'lots'], "bad size 'lots' (e.g. 512M, 4G, 1T)"],
  [['--locality', '2'], "--locality must be between 0 and 1: '2'"],
  [['--frob'], 'unknown option --frob (--help)'],
  [['extra'], "unexpected argument 'extra' (--help)"],
]

describe('iommu-sim as a process', () => {
  for (const [args, message] of USAGE_ERRORS) {
    it.concurrent(`migrate ${args.join(' ')}: exit 2, one line, no work`, async () => {
      const r = await cli(['migrate', ...args, '--no-progress'])
      expect(r).toEqual({ code: 2, stdout: '', stderr: `iommu-sim: ${message}\n` })
    })
  }

  it.concurrent('no command, an unknown command: exit 2, one line', async () => {
    expect(await cli([])).toEqual({
      code: 2,
      stdout: '',
      stderr: 'iommu-sim: missing command: iommu-sim migrate [options] (--help)\n',
    })
    expect(await cli(['fly'])).toEqual({
      code: 2,
      stdout: '',
      stderr: "iommu-sim: unknown command 'fly' (--help)\n",
    })
  })

  it.concurrent('--help lists every option and the exit statuses, exit 0', async () => {
    const r = await cli(['migrate', '--help'])
    expect(r.code).toBe(0)
    for (const o of OPTIONS) expect(r.stdout).toContain(`--${o.name}`)
    expect(r.stdout).toContain(
      'Exit status:\n  0  the destination equals the source (every run, for compare and sweep)\n',
    )
    expect(r.stdout).toContain(
      '  1  verification failed: pages differ, a dirty read lost pages or a DMA used a stale translation\n',
    )
    expect(r.stdout).toContain('  2  bad options, a bad scenario')
    for (const c of ['migrate', 'compare', 'run FILE', 'sweep FILE', 'schema']) {
      expect(r.stdout).toContain(`\n  ${c}`)
    }
    for (const p of SWEEP_PARAMS) expect(r.stdout).toContain(`\n  ${p.name.padEnd(12)}${p.help}\n`)
  })

  it.concurrent('a verified run exits 0 and writes the reports; a broken tracker exits 1', async () => {
    const small = ['--memory', '128M', '--dimm', '64M', '--no-progress']
    const json = join(dir, 'ok.json')
    const ok = await cli(['migrate', ...small, '--json', json, '--svg', join(dir, 'ok.svg')])
    expect([ok.code, ok.stderr]).toEqual([0, ''])
    expect(ok.stdout).toMatch(/verification: {5}OK/)
    expect(JSON.parse(readFileSync(json, 'utf8')).verified).toBe(true)
    const bad = await cli(['migrate', ...small, '--break-tracker'])
    expect([bad.code, bad.stderr]).toEqual([1, ''])
    expect(bad.stdout).toMatch(/verification: {5}FAILED/)
  })
})

describe('optionsFromArgs', () => {
  const usage = (args: string[]) => {
    try {
      optionsFromArgs(args, HOST)
      return 'OK'
    } catch (e) {
      if (e instanceof UsageError) return e.message
      throw e
    }
  }

  it('takes every option from its row and converts units', () => {
    const p = optionsFromArgs(
      [
        ...['--memory', '8G', '--dimm', '512M', '--iopte', '2m', '--seed', '9'],
        ...['--bandwidth', '25G', '--max-rounds', '7', '--max-downtime', '0.5', '--ring', '16M'],
        ...['--ring-rate', '10', '--random-rate', '20', '--locality', '0.5', '--hot-set', '1G'],
        ...['--unplug-round', '3', '--break-tracker', '--no-detector', '--no-progress'],
      ],
      HOST,
    )
    const o = p.options
    expect([o.memoryBytes, o.dimmBytes, o.iopte, o.seed, o.bandwidth]).toEqual([
      8 * GIB,
      512 * MIB,
      '2m',
      9,
      25e9 / 8,
    ])
    expect([o.maxRounds, o.maxDowntime, o.unplugRound, o.breakage, o.detector]).toEqual([
      7,
      0.5,
      3,
      'tracking-never-enabled',
      false,
    ])
    expect(o.workload).toMatchObject({
      ringBytes: 16 * MIB,
      ringRate: 10,
      randomRate: 20,
      locality: 0.5,
      hotBytes: GIB,
    })
    expect(p.progress).toBe(false)
  })

  it('keeps the ring and the hot set inside guest memory when they are as large as it', () => {
    const o = optionsFromArgs(['--memory', '256M', '--ring', '256M', '--hot-set', '256M'], HOST)
    expect([o.options.workload.ringOffset, o.options.workload.hotOffset]).toEqual([0, 0])
  })

  it('refuses what the host cannot hold or round 0 cannot finish, unless --force', () => {
    // A 1 TiB guest fits a 24 GiB host (about 19 GiB estimated), not with 16 GiB of hot set.
    expect(usage(['--memory', '1T'])).toBe('OK')
    const big = ['--memory', '1T', '--hot-set', '16G']
    expect(usage(big)).toMatch(/needs about .*\(--force to run anyway\)$/)
    expect(usage([...big, '--force'])).toBe('OK')
    expect(usage(['--memory', '64G'])).toBe('OK')
    expect(usage(['--bandwidth', '10M'])).toMatch(/^round 0 alone would simulate 6\.2e\+8 /)
    expect(usage(['--bandwidth', '10M', '--force'])).toBe('OK')
    // A long round 0 also fills memory with written pages.
    expect(usage(['--bandwidth', '100M', '--memory', '64G'])).toMatch(/needs about 85\.6 GiB/)
  })

  it('checks each --iopte mode against the IOMMU models its row names', () => {
    for (const mode of IOPTE_MODES) {
      for (const iommu of IOMMU_MODELS) {
        const ok = (mode.models as readonly string[]).includes(iommu)
        const models = mode.models.length === 1 ? mode.models[0] : 'amd, intel or smmuv3'
        expect(usage(['--iommu', iommu, '--iopte', mode.name])).toBe(
          ok ? 'OK' : `--iopte ${mode.name} needs --iommu ${models}`,
        )
      }
    }
  })
})

describe('estimateRun', () => {
  it('grows with guest memory and with a slower link', () => {
    const e = (memoryBytes: number, bw = 10e9 / 8) =>
      estimateRun({ ...defaultOptions({ memoryBytes }), bandwidth: bw })
    expect(e(4 * GIB).memoryBytes).toBeLessThan(e(64 * GIB).memoryBytes)
    // 4 GiB at 10 Gbit/s: 3.44 s of round 0 at 180,000 writes/s, as the README's run.
    expect(e(4 * GIB).round0Writes).toBe(Math.ceil(180_000 * ((4 * GIB) / 1.25e9)))
    expect(e(4 * GIB, 1e6 / 8).round0Writes).toBeGreaterThan(MAX_ROUND0_WRITES)
  })
})

describe('layoutDimms', () => {
  it('places DIMMs from 4 GiB upward, around the ranges the AMD IOMMU reserves', () => {
    // The usable ranges as a VMM reads them: attach the device, then IOAS_IOVA_RANGES.
    const m = createMachine({ iommus: [amd()] })
    const vmm = m.createProcess()
    const fd = openIommufd(m, vmm)
    const alloc = { size: 12, flags: 0, out_ioas_id: 0 }
    fd.ioctl(IOMMU_IOAS_ALLOC, alloc)
    fd.bindDevice(m.addPciDevice()).attach(alloc.out_ioas_id)
    const buf = vmm.mmap(4096)
    const cmd = { size: 32, ioas_id: alloc.out_ioas_id, num_iovas: 8, allowed_iovas: BigInt(buf) }
    fd.ioctl(IOMMU_IOAS_IOVA_RANGES, cmd)
    const v = new DataView(vmm.read(buf, cmd.num_iovas * 16).buffer)
    const ranges = Array.from({ length: cmd.num_iovas }, (_, i) => ({
      start: v.getBigUint64(i * 16, true),
      last: v.getBigUint64(i * 16 + 8, true),
    }))
    // A 1 TiB guest in 1 GiB DIMMs: 1008 below the HyperTransport hole, 16 above 1 TiB.
    const at = layoutDimms(ranges, 1024, GIB) as number[]
    expect(at).toHaveLength(1024)
    expect(at[0]).toBe(GUEST_IOVA)
    expect(at[1007]).toBe(Number(HT_RANGE_START) - GIB)
    expect(at[1008]).toBe(Number(HT_RANGE_END) + 1)
    for (const a of at) {
      const last = BigInt(a + GIB - 1)
      expect(last < HT_RANGE_START || BigInt(a) > HT_RANGE_END).toBe(true)
      expect(last < MSI_RANGE_START || BigInt(a) > MSI_RANGE_END).toBe(true)
    }
  })

  it('skips a hole too small for a DIMM, aligns to 2 MiB, and says when nothing fits', () => {
    const r = (start: bigint, last: bigint) => ({ start, last })
    const ranges = [
      r(0n, 0x1_3fff_ffffn),
      r(0x1_4010_0000n, 0x1_7fff_ffffn),
      r(0x2_0000_0000n, 0x2_ffff_ffffn),
    ]
    expect(layoutDimms(ranges, 3, GIB)).toEqual([0x1_0000_0000, 0x2_0000_0000, 0x2_4000_0000])
    expect(layoutDimms(ranges, 3, 512 * MIB)).toEqual([0x1_0000_0000, 0x1_2000_0000, 0x1_4020_0000])
    expect(layoutDimms(ranges, 8, GIB)).toBeNull()
  })
})

/**
 * `pnpm bench`: every package's benchmarks in one summary table, with the anchors from
 * `peers-and-performance.md` beside our figures, plus the whole-stack figures:
 * GET_DIRTY_BITMAP over a 64 GiB IOAS (4 KiB IOPTEs, 1% dirty) through the uAPI on the AMD
 * model against the bare page-table dirty scan, and a 64 GiB migration's wall time and
 * peak memory (run in a child process so that its memory is its own).
 */

import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createMachine, IOMMU_DIRTY_NO_CLEAR, IommuDirtyBitmap, IotlbGather } from '@iommu/core'
import { type AmdDomain, amd } from '@iommu/driver-amd'
import {
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_HWPT_DIRTY_TRACKING_ENABLE,
  IOMMU_HWPT_GET_DIRTY_BITMAP,
  IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR,
  IOMMU_HWPT_SET_DIRTY_TRACKING,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_OPTION,
  IOMMU_OPTION_HUGE_PAGES,
  IOMMU_OPTION_OP_SET,
  openIommufd,
} from '@iommu/iommufd'
import { type Figure, main, msOnce } from '../../../tooling/bench/harness.ts'
import { run as coreBench } from '../../core/bench/machine.bench.ts'
import { run as amdBench } from '../../driver-amd/bench/amd.bench.ts'
import { run as intelBench } from '../../driver-intel/bench/intel.bench.ts'
import { run as smmuv3Bench } from '../../driver-smmuv3/bench/smmuv3.bench.ts'
import { run as pgtableBench } from '../../io-pgtable/bench/io-pgtable.bench.ts'
import { run as iommufdBench } from '../../iommufd/bench/iommufd.bench.ts'

const GIB = 2 ** 30
const PAGE = 4096
const IOVA = 0x1_0000_0000

function prefix(pkg: string, figures: Figure[]): Figure[] {
  return figures.map((f) => ({ ...f, name: `${pkg} · ${f.name}` }))
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)] as number
}

/** GET_DIRTY_BITMAP over 64 GiB of 4 KiB IOPTEs with 1% dirty, uAPI against bare scan. */
export function dirtyBitmap64G(): Figure[] {
  const bytes = 64 * GIB
  const pages = bytes / PAGE
  const m = createMachine({
    memorySize: 2 ** 38,
    iommus: [{ driver: amd(), config: { detectStale: false } }],
  })
  const vmm = m.createProcess()
  const fd = openIommufd(m, vmm)
  const alloc = { size: 12, flags: 0, out_ioas_id: 0 }
  fd.ioctl(IOMMU_IOAS_ALLOC, alloc)
  fd.ioctl(IOMMU_OPTION, {
    size: 24,
    option_id: IOMMU_OPTION_HUGE_PAGES,
    op: IOMMU_OPTION_OP_SET,
    object_id: alloc.out_ioas_id,
    val64: 0n,
  })
  const guest = vmm.mmap(bytes)
  const mapMs = msOnce(() =>
    fd.ioctl(IOMMU_IOAS_MAP, {
      size: 40,
      flags: IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
      ioas_id: alloc.out_ioas_id,
      user_va: BigInt(guest),
      length: BigInt(bytes),
      iova: BigInt(IOVA),
    }),
  )
  const dev = m.addPciDevice()
  const idev = fd.bindDevice(dev)
  const hwpt = {
    size: 48,
    flags: IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
    dev_id: idev.id,
    pt_id: alloc.out_ioas_id,
    out_hwpt_id: 0,
  }
  // The HWPT is filled with the IOAS's mappings (pinning every page) at allocation.
  const fillMs = msOnce(() => fd.ioctl(IOMMU_HWPT_ALLOC, hwpt))
  idev.attach(hwpt.out_hwpt_id)
  fd.ioctl(IOMMU_HWPT_SET_DIRTY_TRACKING, {
    size: 16,
    flags: IOMMU_HWPT_DIRTY_TRACKING_ENABLE,
    hwpt_id: hwpt.out_hwpt_id,
  })
  const one = new Uint8Array([1])
  const dirtyOnePercent = () => {
    for (let p = 0; p < pages; p += 100) dev.dma.write(IOVA + p * PAGE, one)
  }
  const bitmapBytes = pages / 8
  const bitmap = vmm.mmap(bitmapBytes)
  const zero = new Uint8Array(bitmapBytes)
  const uapi = (flags: number) => {
    vmm.write(bitmap, zero)
    fd.ioctl(IOMMU_HWPT_GET_DIRTY_BITMAP, {
      size: 48,
      hwpt_id: hwpt.out_hwpt_id,
      flags,
      iova: BigInt(IOVA),
      length: BigInt(bytes),
      page_size: BigInt(PAGE),
      data: BigInt(bitmap),
    })
  }
  const domain = dev.group?.domain as AmdDomain | undefined
  const pt = domain?.pt
  if (!domain || !pt) throw new Error('no page table')
  const bits = new Uint8Array(bitmapBytes)
  // The bare scan's own bitmap: one bit per 4 KiB page of the range.
  const sink = {
    set(pfn: number, count: number, shift: number) {
      // A lean baseline: no Math.pow for the 4 KiB records this table produces.
      const f = shift === 12 ? 1 : 2 ** (shift - 12)
      const first = pfn * f - IOVA / PAGE
      const end = first + count * f
      for (let i = first; i < end; i++) bits[i >> 3] = (bits[i >> 3] as number) | (1 << (i & 7))
    },
  }
  const bare = (flags: number) => {
    bits.fill(0)
    const gather = new IotlbGather()
    pt.readAndClearDirtyPages(IOVA / PAGE, pages, flags, new IommuDirtyBitmap(sink, gather))
    m.iommu.iommuIotlbSync(domain, gather)
  }
  dirtyOnePercent()
  const uapiNoClear: number[] = []
  const bareNoClear: number[] = []
  // Alternate the two, several times, and keep medians: both are tens of milliseconds.
  for (let i = 0; i < 9; i++) {
    uapiNoClear.push(msOnce(() => uapi(IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR)))
    bareNoClear.push(msOnce(() => bare(IOMMU_DIRTY_NO_CLEAR)))
  }
  const uapiClear: number[] = []
  const bareClear: number[] = []
  for (let i = 0; i < 7; i++) {
    dirtyOnePercent()
    uapiClear.push(msOnce(() => uapi(0)))
    dirtyOnePercent()
    bareClear.push(msOnce(() => bare(0)))
  }
  fd.close()
  const u = median(uapiClear)
  const b = median(bareClear)
  const un = median(uapiNoClear)
  const bn = median(bareNoClear)
  return [
    {
      name: 'IOAS_MAP + HWPT_ALLOC 64 GiB, 4 KiB IOPTEs (pin + map 16 Mi pages)',
      value: (mapMs + fillMs) / 1000,
      unit: 's',
      better: 'lower',
    },
    {
      name: 'GET_DIRTY_BITMAP 64 GiB 4K 1% dirty, read-and-clear',
      value: u,
      unit: 'ms',
      better: 'lower',
    },
    {
      name: 'bare AMD v1 dirty scan 64 GiB, read-and-clear',
      value: b,
      unit: 'ms',
      better: 'lower',
    },
    {
      name: 'GET_DIRTY_BITMAP / bare scan (read-and-clear)',
      value: u / b,
      unit: '×',
      anchor: 1.5,
      anchorNote: 'target ≤ 1.5×',
      better: 'lower',
    },
    {
      name: 'GET_DIRTY_BITMAP 64 GiB 4K 1% dirty, NO_CLEAR',
      value: un,
      unit: 'ms',
      better: 'lower',
    },
    {
      name: 'GET_DIRTY_BITMAP / bare scan (NO_CLEAR)',
      value: un / bn,
      unit: '×',
      anchor: 1.5,
      anchorNote: 'target ≤ 1.5×',
      better: 'lower',
    },
    {
      name: 'GET_DIRTY_BITMAP IOPTE rate, read-and-clear',
      value: pages / (u * 1e3),
      unit: 'M PTE/s',
      anchor: 1024 / 3,
      anchorNote: 'JS read-and-clear microbench (peers §5: 1 Mi PTEs in 3.0 ms)',
      better: 'higher',
    },
  ]
}

/** A 64 GiB migration in a child process: wall time and peak RSS. */
export function migration64G(): Figure[] {
  const here = dirname(fileURLToPath(import.meta.url))
  const dir = mkdtempSync(join(tmpdir(), 'iommu-sim-bench-'))
  const json = join(dir, 'migrate-64g.json')
  execFileSync(
    process.execPath,
    [
      '--conditions=@iommu/source',
      '--import',
      'tsx',
      join(here, '../src/main.ts'),
      'migrate',
      '--memory',
      '64G',
      '--json',
      json,
      '--no-progress',
    ],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  )
  const r = JSON.parse(readFileSync(json, 'utf8'))
  return [
    {
      name: `64 GiB migration wall time (${r.verified ? 'verified' : 'NOT verified'}, ${r.rounds.length - 1} rounds)`,
      value: r.wallSeconds,
      unit: 's',
      anchor: 60,
      anchorNote: 'target < 1 minute',
      better: 'lower',
    },
    {
      name: '64 GiB migration peak RSS',
      value: r.peakRssBytes / GIB,
      unit: 'GiB',
      anchor: 2,
      anchorNote: 'target < 2 GiB',
      better: 'lower',
    },
    {
      name: '64 GiB migration simulated/wall speed',
      value: r.speedup,
      unit: '×',
      better: 'higher',
    },
  ]
}

export async function run(): Promise<Figure[]> {
  const figures: Figure[] = []
  const step = async (pkg: string, f: () => Figure[] | Promise<Figure[]>) => {
    process.stderr.write(`bench: ${pkg}...\n`)
    figures.push(...prefix(pkg, await f()))
  }
  await step('core', coreBench)
  await step('io-pgtable', pgtableBench)
  await step('driver-amd', amdBench)
  await step('driver-intel', intelBench)
  await step('driver-smmuv3', smmuv3Bench)
  await step('iommufd', iommufdBench)
  await step('sim', dirtyBitmap64G)
  await step('sim', migration64G)
  return figures
}

await main(import.meta.url, 'IOMMU model: benchmark summary', run)

/**
 * io-pgtable benchmark: per format, the kernel micro-benchmark's map/unmap calls, a 16 GiB
 * range of 4 KiB pages (map, unmap, read-and-clear-dirty), random lookups and the table
 * memory per page. Prints figures next to their anchors; asserts nothing.
 */

import { performance } from 'node:perf_hooks'
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads'
import {
  type DirtyBitmapSink,
  IOMMU_DIRTY_NO_CLEAR,
  IommuDirtyBitmap,
  IotlbGather,
  PhysicalMemory,
  Prot,
} from '@iommu/core'
import {
  Access,
  type AnyPageTable,
  amdv1,
  armLpae,
  HwAd,
  IoPgtableQuirk,
  PageTable,
  vtdss,
  x86_64,
} from '@iommu/io-pgtable'
import { type Figure, main } from '../../../tooling/bench/harness.ts'
import { buildCBaseline, type CScan, runCScan } from './c-baseline.ts'

const RW = Prot.READ | Prot.WRITE
/** 16 GiB of 4 KiB pages. */
const BIG = 4 * 1024 * 1024
/** Start of the big range: 64 GiB, so small-call tests below it stay apart. */
const BIG_BASE = 16 * 1024 * 1024

interface Bench {
  readonly name: string
  /** The C baseline's name for the format (`dirty-scan.c`), for formats that track dirt. */
  readonly c?: string
  /** Kernel figures from the generic_pt v7 cover letter (i7-12700): map 1x4K, 256x4K, unmap 256x4K. */
  readonly kernel: readonly [number, number, number]
  readonly kernelNote: string
  readonly make: (memory: PhysicalMemory) => AnyPageTable
}

const BENCHES: readonly Bench[] = [
  {
    name: 'arm-lpae S1 4K (HD)',
    c: 'arm-s1',
    kernel: [65, 389, 357],
    kernelNote: 'io-pgtable-arm, i7-12700',
    make: (m) =>
      new PageTable(m, armLpae, { stage: 1, ias: 48, oas: 48, quirks: IoPgtableQuirk.ARM_HD }),
  },
  {
    name: 'amdv1',
    c: 'amdv1',
    kernel: [53, 386, 353],
    kernelNote: 'generic_pt amdv1, i7-12700',
    make: (m) => new PageTable(m, amdv1, { startingLevel: 2 }, { changeTop: () => {} }),
  },
  {
    name: 'x86_64 (AMD v2)',
    kernel: [56, 405, 228],
    kernelNote: 'generic_pt x86_64, i7-12700',
    make: (m) => new PageTable(m, x86_64, { topLevel: 3, hwMaxVaBits: 47 }),
  },
  {
    name: 'vtdss',
    c: 'vtdss',
    kernel: [55, 391, 210],
    kernelNote: 'generic_pt vtdss, i7-12700',
    make: (m) => new PageTable(m, vtdss, { topLevel: 3 }),
  },
]

/** Median of per-round averages of `call(i)`, over `rounds` rounds of `batch` calls. */
function medianNs(rounds: number, batch: number, call: (i: number) => void): number {
  const samples: number[] = []
  for (let r = 0; r < rounds; r++) {
    const t0 = performance.now()
    for (let i = 0; i < batch; i++) call(i)
    samples.push(((performance.now() - t0) * 1e6) / batch)
  }
  samples.sort((a, b) => a - b)
  return samples[samples.length >> 1] as number
}

/** Cost of one performance.now() pair, to take out of per-call timings. */
function clockNs(): number {
  let t = 0
  for (let r = 0; r < 3; r++) {
    const n = 100_000
    const t0 = performance.now()
    for (let i = 0; i < n; i++) performance.now()
    t = ((performance.now() - t0) * 1e6) / n
  }
  return t
}

/**
 * ns per map and per unmap call of `pages` contiguous 4 KiB pages, the way the kernel's
 * micro-benchmark measures: map and unmap the same range in a loop, timing each call.
 */
function mapUnmapCalls(
  pt: AnyPageTable,
  pages: number,
  api: 'pages' | 'bigint' = 'pages',
): { map: number; unmap: number } {
  const clock = clockNs()
  const gather = new IotlbGather()
  // One 2 MiB-aligned range; 256 pages do not cover the level-0 table, which stays.
  const iova = 512
  const pa = 0x10_0000
  const rounds: [number, number][] = []
  for (let r = 0; r < 9; r++) {
    let map = 0
    let unmap = 0
    const loops = 20_000
    const bIova = BigInt(iova) << 12n
    const bPa = BigInt(pa) << 12n
    for (let i = 0; i < loops; i++) {
      if (api === 'pages') {
        const t0 = performance.now()
        pt.map(iova, pa, pages, RW)
        const t1 = performance.now()
        pt.unmap(iova, pages, gather)
        const t2 = performance.now()
        map += t1 - t0
        unmap += t2 - t1
      } else {
        const t0 = performance.now()
        pt.mapPages(bIova, bPa, 4096n, pages, RW)
        const t1 = performance.now()
        pt.unmapPages(bIova, 4096n, pages, gather)
        const t2 = performance.now()
        map += t1 - t0
        unmap += t2 - t1
      }
    }
    gather.releaseFreelist()
    gather.init()
    rounds.push([(map * 1e6) / loops - clock, (unmap * 1e6) / loops - clock])
  }
  const med = (k: 0 | 1) => rounds.map((r) => r[k]).sort((a, b) => a - b)[4] as number
  return { map: med(0), unmap: med(1) }
}

/** A dirty bitmap over the big range: one bit per 4 KiB page. */
function bitmapSink(): DirtyBitmapSink & { bits: Uint32Array } {
  const bits = new Uint32Array(BIG / 32)
  return {
    bits,
    set(pfn, count, shift) {
      if (shift === 12 && count === 1) {
        // One 4 KiB record: one bit, as the C loop sets it.
        const k = pfn - BIG_BASE
        bits[k >>> 5] = (bits[k >>> 5] as number) | (1 << (k & 31))
        return
      }
      const first = pfn * 2 ** (shift - 12) - BIG_BASE
      const n = count * 2 ** (shift - 12)
      for (let k = first; k < first + n; k++)
        bits[k >>> 5] = (bits[k >>> 5] as number) | (1 << (k & 31))
    },
    // The records of one table frame (`list[1..list[0]]`), 4 KiB each: a bit each.
    setList(pfn, count, shift, list, from) {
      if (shift !== 12 || count !== 1) return from
      const pos = pfn - BIG_BASE
      const n = list[0] as number
      for (let k = from; k <= n; k++) {
        const b = pos + (list[k] as number)
        bits[b >>> 5] = (bits[b >>> 5] as number) | (1 << (b & 31))
      }
      return n + 1
    },
  }
}

function benchFormat(b: Bench, cBinary: string | null): Figure[] {
  const memory = new PhysicalMemory()
  const pt = b.make(memory)
  const figures: Figure[] = []
  const fig = (
    name: string,
    value: number,
    unit: string,
    rest: Omit<Figure, 'name' | 'value' | 'unit'> = {},
  ) => figures.push({ name: `${b.name}: ${name}`, value, unit, ...rest })

  // Page-number API (what a driver's hot path and map_range use) ...
  const one = mapUnmapCalls(pt, 1)
  const many = mapUnmapCalls(pt, 256)
  // ... and the kernel-shaped bigint ops the core calls.
  const opOne = mapUnmapCalls(pt, 1, 'bigint')
  const opMany = mapUnmapCalls(pt, 256, 'bigint')
  fig('mapPages 1×4K', one.map, 'ns/call', {
    anchor: b.kernel[0],
    anchorNote: b.kernelNote,
    better: 'lower',
  })
  fig('mapPages 256×4K', many.map, 'ns/call', {
    anchor: 1000,
    anchorNote: `target < 1 µs (kernel ${b.kernel[1]} ns, ${b.kernelNote})`,
    better: 'lower',
  })
  fig('mapPages op 1×4K (bigint API)', opOne.map, 'ns/call', { better: 'lower' })
  fig('mapPages op 256×4K (bigint API)', opMany.map, 'ns/call', { better: 'lower' })
  fig('unmapPages op 256×4K (bigint API)', opMany.unmap, 'ns/call', { better: 'lower' })
  fig('unmapPages 1×4K', one.unmap, 'ns/call', { better: 'lower' })
  fig('unmapPages 256×4K', many.unmap, 'ns/call', {
    anchor: b.kernel[2],
    anchorNote: b.kernelNote,
    better: 'lower',
  })

  // 16 GiB as 4 KiB pages: a PA one page off a 2 MiB boundary keeps every leaf at 4 KiB.
  const framesBefore = memory.frameStats().byPurpose.pgtable
  let t0 = performance.now()
  pt.map(BIG_BASE, 0x20_0000 + 1, BIG, RW)
  const mapMs = performance.now() - t0
  const tableBytes = (memory.frameStats().byPurpose.pgtable - framesBefore) * 4096
  fig('map 16 GiB as 4K', BIG / (mapMs / 1000) / 1e6, 'M pages/s', {
    anchor: 184,
    anchorNote: 'JS radix map microbench (peers §5)',
    better: 'higher',
  })
  fig('table memory', tableBytes / BIG, 'B/page', {
    anchor: 8.8,
    anchorNote: 'target ≤ 1.1 × 8 B',
    better: 'lower',
  })

  // Random lookups over the range.
  const probes = new Float64Array(1 << 20)
  let seed = 0x1234_5678
  for (let i = 0; i < probes.length; i++) {
    seed = (Math.imul(seed, 1_103_515_245) + 12_345) >>> 0
    probes[i] = BIG_BASE + (seed % BIG)
  }
  let sink = 0
  const lookupNs = medianNs(5, probes.length, (i) => {
    sink += pt.translate(probes[i] as number)
  })
  fig('translate (random, page numbers)', lookupNs, 'ns/call', {
    anchor: 8,
    anchorNote: 'JS radix walk microbench (peers §5)',
    better: 'lower',
  })
  const bigProbes = Array.from({ length: 1 << 16 }, (_, i) => BigInt(probes[i] as number) << 12n)
  const bigNs = medianNs(5, bigProbes.length, (i) => {
    sink += Number(pt.iovaToPhys(bigProbes[i] as bigint) & 1n)
  })
  fig('iovaToPhys (random, bigint API)', bigNs, 'ns/call', { better: 'lower' })

  if (pt.dirtyTracking) {
    const walker = pt.walker()
    const root = pt.root
    const scan = (flags: number, bitmap: DirtyBitmapSink | null) => {
      const d = new IommuDirtyBitmap(bitmap, bitmap === null ? null : new IotlbGather())
      pt.readAndClearDirtyPages(BIG_BASE, BIG, flags, d)
      return d.records
    }
    scan(0, null) // ARM DBM leaves start dirty: clear them (what iommufd does on enable)
    const markDirty = (every: number) => {
      for (let k = 0; k < BIG; k += every)
        walker.walk(root.pfn, root.level, BIG_BASE + k, Access.WRITE, HwAd.DIRTY)
    }
    const bitmap = bitmapSink()
    const withC = cBinary !== null && b.c !== undefined
    const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number
    const gb = (BIG * 4096) / 1e9
    // Every 100th, 10th and 2nd leaf dirty. Blocks of TypeScript scans alternate with the C
    // loop's (when built), three times, and medians are kept: both run in this run, under
    // the same load. The scan with none dirty is timed after the 1% ones.
    for (const [label, every, reps] of [
      ['1% dirty', 100, 5],
      ['10% dirty', 10, 3],
      ['50% dirty', 2, 3],
    ] as const) {
      const blocks = withC ? 3 : 1
      const jsDirty: number[] = []
      const jsClean: number[] = []
      const cRuns: CScan[] = []
      let records = 0
      for (let blk = 0; blk < blocks; blk++) {
        const samples: number[] = []
        for (let r = 0; r < reps; r++) {
          markDirty(every)
          bitmap.bits.fill(0)
          t0 = performance.now()
          records = scan(0, bitmap)
          samples.push(performance.now() - t0)
        }
        jsDirty.push(med(samples))
        if (every === 100) {
          const clean: number[] = []
          for (let r = 0; r < 5; r++) {
            t0 = performance.now()
            if (scan(IOMMU_DIRTY_NO_CLEAR, bitmap) !== 0)
              throw new Error('the table should be clean')
            clean.push(performance.now() - t0)
          }
          jsClean.push(med(clean))
        }
        if (withC) cRuns.push(runCScan(cBinary as string, b.c as string, reps, every))
      }
      if (records !== Math.ceil(BIG / every))
        throw new Error(`expected ${Math.ceil(BIG / every)} dirty IOPTEs, got ${records}`)
      const rows: [string, number, number | undefined][] = [
        [label, med(jsDirty), withC ? med(cRuns.map((c) => c.dirty)) : undefined],
      ]
      if (every === 100)
        rows.push(['none dirty', med(jsClean), withC ? med(cRuns.map((c) => c.clean)) : undefined])
      if (cRuns.some((c) => c.records !== records)) throw new Error('the C loop found other dirt')
      for (const [what, ms, c] of rows) {
        const rate = BIG / (ms / 1000) / 1e6
        const target = what === '1% dirty' || what === 'none dirty'
        if (c !== undefined) {
          fig(`readAndClearDirty 16 GiB, ${what}: C loop (cc -O2), same run`, c, 'M PTE/s', {
            better: 'higher',
          })
          fig(
            `readAndClearDirty 16 GiB, ${what}: ours / C loop`,
            rate / c,
            '×',
            target
              ? {
                  anchor: 0.75,
                  anchorNote: 'target ≥ 0.75× the same-algorithm C loop',
                  better: 'higher',
                }
              : { better: 'higher' },
          )
        }
        fig(
          `readAndClearDirty 16 GiB, ${what}`,
          rate,
          'M PTE/s',
          target
            ? {
                anchor: 500,
                anchorNote: 'target > 500 M PTE/s (plain C loop: 1500)',
                better: 'higher',
              }
            : { better: 'higher' },
        )
        fig(`readAndClearDirty 16 GiB, ${what}`, (ms * 1e6) / BIG, 'ns/PTE', { better: 'lower' })
        fig(`readAndClearDirty 16 GiB, ${what}`, gb / (ms / 1000), 'GB IOVA/s', {
          better: 'higher',
        })
      }
    }
  }

  const gather = new IotlbGather()
  t0 = performance.now()
  const unmapped = pt.unmap(BIG_BASE, BIG, gather)
  const unmapMs = performance.now() - t0
  if (unmapped !== BIG) throw new Error(`unmapped ${unmapped} of ${BIG} pages`)
  gather.releaseFreelist()
  fig('unmap 16 GiB of 4K', BIG / (unmapMs / 1000) / 1e6, 'M pages/s', { better: 'higher' })
  pt.free()
  if (sink === 0.5) console.log(sink)
  return figures
}

/** One format's figures, measured in a worker thread of its own. */
function inWorker(index: number, cBinary: string | null): Promise<Figure[]> {
  return new Promise((resolve, reject) => {
    // Loader hooks registered with --import do not reach workers on Node 20: register tsx
    // in the worker, then load this module.
    const boot = `import('tsx/esm/api').then((m) => { m.register(); return import(${JSON.stringify(import.meta.url)}) })`
    const worker = new Worker(boot, { eval: true, workerData: { bench: index, cBinary } })
    worker.once('message', (figures: Figure[]) => resolve(figures))
    worker.once('error', reject)
  })
}

/**
 * The figures of every format. Each format runs in its own worker thread, so that its
 * code is compiled for it alone, as the kernel compiles generic_pt once per format (in one
 * isolate the shared algorithms see every format's functions and run slower).
 */
export async function run(options: { c?: boolean } = {}): Promise<Figure[]> {
  const figures: Figure[] = []
  let cBinary: string | null = null
  if (options.c !== false && process.env.IOMMU_BENCH_NO_C === undefined) {
    const built = buildCBaseline()
    if ('path' in built) cBinary = built.path
    else process.stderr.write(`bench: C baseline of the dirty scan skipped: ${built.skipped}\n`)
  }
  for (let i = 0; i < BENCHES.length; i++) figures.push(...(await inWorker(i, cBinary)))
  return figures
}

const job = isMainThread
  ? undefined
  : (workerData as { bench?: number; cBinary?: string | null } | undefined)
if (job?.bench !== undefined) {
  parentPort?.postMessage(benchFormat(BENCHES[job.bench] as Bench, job.cBinary ?? null))
} else {
  await main(import.meta.url, '@iommu/io-pgtable: page-table formats', run)
}

/**
 * Machine benchmarks: frame allocation, and 4 KiB DMA through the mock IOMMU: writes and
 * reads, on pages touched for the first time and in steady state, with the host's own
 * cost of a fresh page beside them (what a first write cannot avoid), a copy-on-write
 * write, and writes with dirty tracking on.
 */
import { type Figure, main, nsPerOp } from '../../../tooling/bench/harness.ts'
import {
  createMachine,
  type DmaEngine,
  FramePurpose,
  HwptAllocFlags,
  type IommuDomain,
  type Machine,
  Prot,
} from '../src/index.ts'
import { mockIommu } from '../src/testing/index.ts'

const PAGE = 4096
const IOVA = 0x100_0000

/** A device behind the mock IOMMU with `pages` pinned pages mapped at {@link IOVA}. */
function dmaRig(
  pages: number,
  flags = 0,
): { m: Machine; dma: DmaEngine; pfn: number; domain: IommuDomain } {
  const m = createMachine({ iommus: [mockIommu({ ioPageSize: PAGE })] })
  const dev = m.addPciDevice()
  m.iommu.iommuDeviceClaimDmaOwner(dev, 'bench')
  const d = m.iommu.iommuPagingDomainAllocFlags(dev, flags)
  const g = dev.group
  if (g === null) throw new Error('no group')
  m.iommu.iommuAttachGroupHandle(d, g, { domain: null })
  const proc = m.createProcess()
  const va = proc.mmap(pages * PAGE)
  const pfns = new Int32Array(pages)
  proc.pinUserPages(va, pages, true, pfns)
  m.iommu.iommuMap(
    d,
    BigInt(IOVA),
    BigInt(pfns[0] as number) * BigInt(PAGE),
    BigInt(pages * PAGE),
    Prot.READ | Prot.WRITE,
  )
  return { m, dma: dev.dma, pfn: pfns[0] as number, domain: d }
}

/** CPU nanoseconds per call of `fn(i)` for i in [0, n) (one pass: first touches happen once). */
function cpuNsOnce(n: number, fn: (i: number) => void): number {
  const c0 = process.cpuUsage()
  for (let i = 0; i < n; i++) fn(i)
  const c = process.cpuUsage(c0)
  return ((c.user + c.system) * 1e3) / n
}

/** Median of `k` samples of {@link cpuNsOnce}, each on fresh pages from `make`. */
function medianOnce(k: number, n: number, make: () => (i: number) => void): number {
  const xs: number[] = []
  for (let r = 0; r < k; r++) xs.push(cpuNsOnce(n, make()))
  xs.sort((a, b) => a - b)
  return xs[Math.floor(k / 2)] as number
}

/**
 * 4 KiB DMA through the mock IOMMU with 4 KiB IOPTEs (CPU time, so that other load on the
 * machine counts less): steady state on a 64 MiB working set already written; the
 * device's first touch of pages the CPU wrote (out of the caches); first touch on pages
 * never written (a read returns zeros without storage; a write takes its storage, and the
 * host faults a fresh page in); copy-on-write; dirty tracking on.
 */
export function dmaFigures(): Figure[] {
  const pages = 16384
  // Writes carry data and reads land elsewhere: a read into the written buffer would make
  // the next writes all zeros (which leave a fresh frame without storage, not a first touch).
  const buf = new Uint8Array(PAGE).fill(0xa5)
  const sink = new Uint8Array(PAGE)
  const figures: Figure[] = []
  const steady = dmaRig(pages)
  for (let i = 0; i < pages; i++) steady.dma.write(IOVA + i * PAGE, buf)
  let i = 0
  const w = nsPerOp(() => steady.dma.write(IOVA + (i++ % pages) * PAGE, buf))
  const r = nsPerOp(() => steady.dma.readInto(IOVA + (i++ % pages) * PAGE, sink))
  // First touch: 4 rigs of 64 Ki pages (256 MiB), one pass each.
  const fresh = 65536
  const rigs = [0, 1, 2, 3].map(() => dmaRig(fresh))
  let k = 0
  const ftRead = medianOnce(3, fresh, () => {
    const d = (rigs[k++ % 4] as { dma: DmaEngine }).dma
    return (j) => d.readInto(IOVA + j * PAGE, sink)
  })
  const ftWrite = medianOnce(3, fresh, () => {
    const d = (rigs[k++ % 4] as { dma: DmaEngine }).dma
    return (j) => d.write(IOVA + j * PAGE, buf)
  })
  // The device's first touch of pages the CPU wrote (guest RAM in use: a buffer the guest
  // filled or zeroed), out of the CPU caches: a read and a write both copy 4 KiB of cold
  // memory, after a walk of IOPTEs the device has not used yet.
  const written = [0, 1].map(() => {
    const rig = dmaRig(fresh)
    for (let j = 0; j < fresh; j++) rig.m.memory.writeBytes((rig.pfn + j) * PAGE, buf)
    return rig
  })
  new Uint8Array(64 << 20).fill(3)
  const ftReadWritten = cpuNsOnce(fresh, (j) =>
    (written[0] as { dma: DmaEngine }).dma.readInto(IOVA + j * PAGE, sink),
  )
  new Uint8Array(64 << 20).fill(4)
  const ftWriteWritten = cpuNsOnce(fresh, (j) =>
    (written[1] as { dma: DmaEngine }).dma.write(IOVA + j * PAGE, buf),
  )
  // The host's part of a first write: a fresh 4 KiB page of a new buffer, faulted in.
  const held: Uint8Array[] = []
  const floor = medianOnce(3, fresh, () => (j) => {
    if ((j & 255) === 0) held.push(new Uint8Array(256 * PAGE))
    ;(held[held.length - 1] as Uint8Array).set(buf, (j & 255) * PAGE)
  })
  held.length = 0
  // The store's part: a 4 KiB copy into memory the host has faulted in but the CPU caches
  // do not hold (what a first write copies into, however its storage was prepared).
  const cold = new Uint8Array(fresh * PAGE).fill(1)
  new Uint8Array(64 << 20).fill(2)
  const coldStore = cpuNsOnce(fresh, (j) => cold.set(buf, j * PAGE))
  // First touch on storage the machine already holds: the first half of a rig's pages is
  // written, then given back (a copy of a zero page releases a frame's storage), and the
  // second half's first writes take those slots: the model's own cost of a first write.
  const reuse = dmaRig(2 * fresh)
  for (let j = 0; j < fresh; j++) reuse.dma.write(IOVA + j * PAGE, buf)
  const zero = reuse.m.memory.allocFrame(FramePurpose.USER)
  for (let j = 0; j < fresh; j++) reuse.m.memory.copyFrame(reuse.pfn + j, zero)
  const ftWriteWarm = cpuNsOnce(fresh, (j) => reuse.dma.write(IOVA + (fresh + j) * PAGE, buf))
  // Copy-on-write: a page copied (shared storage) and then written by the device.
  const cow = dmaRig(fresh)
  for (let j = 0; j < fresh; j++) cow.dma.write(IOVA + j * PAGE, buf)
  const spare = cow.m.memory.allocFrames(fresh, FramePurpose.USER)
  for (let j = 0; j < fresh; j++) cow.m.memory.copyFrame(spare + j, cow.pfn + j)
  const cowWrite = cpuNsOnce(fresh, (j) => cow.dma.write(IOVA + j * PAGE, buf))
  // Dirty tracking on: the mock marks the IOPTE of every write (steady state).
  const tracked = dmaRig(pages, HwptAllocFlags.DIRTY_TRACKING)
  for (let j = 0; j < pages; j++) tracked.dma.write(IOVA + j * PAGE, buf)
  tracked.domain.dirtyOps?.setDirtyTracking(tracked.domain, true)
  const wDirty = nsPerOp(() => tracked.dma.write(IOVA + (i++ % pages) * PAGE, buf))
  const add = (name: string, value: number, extra: Partial<Figure> = {}) =>
    figures.push({ name, value, unit: 'ns/DMA', better: 'lower', ...extra })
  add('DMA write 4 KiB (mock IOMMU), steady state', w)
  add('DMA read 4 KiB (mock IOMMU), steady state', r)
  figures.push({
    name: 'DMA write / read 4 KiB, steady state',
    value: w / r,
    unit: '×',
    anchor: 1.5,
    anchorNote: 'target ≤ 1.5×',
    better: 'lower',
  })
  figures.push({
    name: 'DMA write 4 KiB throughput, steady state',
    value: PAGE / w,
    unit: 'GB/s',
    better: 'higher',
  })
  add('DMA write 4 KiB, first touch (CPU)', ftWrite)
  add('DMA read 4 KiB, first touch (CPU)', ftRead)
  add('host: fault in a fresh 4 KiB page of a new buffer (CPU)', floor)
  add('host: copy 4 KiB into faulted-in memory not in cache (CPU)', coldStore)
  figures.push({
    name: 'DMA write / read 4 KiB, first touch',
    value: ftWrite / ftRead,
    unit: '×',
    anchor: 1.5,
    anchorNote: 'target ≤ 1.5×',
    better: 'lower',
  })
  add('DMA write 4 KiB, first device touch of a page the CPU wrote (CPU)', ftWriteWritten)
  add('DMA read 4 KiB, first device touch of a page the CPU wrote (CPU)', ftReadWritten)
  figures.push({
    name: 'DMA write / read 4 KiB, first device touch of a page the CPU wrote',
    value: ftWriteWritten / ftReadWritten,
    unit: '×',
    anchor: 1.5,
    anchorNote: 'target ≤ 1.5×',
    better: 'lower',
  })
  add('DMA write 4 KiB, first touch on storage the machine holds (CPU)', ftWriteWarm)
  figures.push({
    name: 'DMA write / read 4 KiB, first touch on storage the machine holds',
    value: ftWriteWarm / ftRead,
    unit: '×',
    anchor: 1.5,
    anchorNote: 'target ≤ 1.5×',
    better: 'lower',
  })
  add('DMA write 4 KiB over a copied page (copy-on-write, CPU)', cowWrite)
  add('DMA write 4 KiB with dirty tracking on, steady state', wDirty)
  return figures
}

export function run(): Figure[] {
  const m = createMachine({ iommus: [mockIommu({ ioPageSize: 4096 })] })
  const mem = m.memory
  const figures: Figure[] = []

  const one = nsPerOp(() => {
    const p = mem.allocFrame(FramePurpose.PGTABLE)
    mem.put(p)
  })
  figures.push({
    name: 'frame alloc+free (1 frame)',
    value: one,
    unit: 'ns/frame',
    better: 'lower',
  })
  const batch = 512
  const run512 = nsPerOp(
    () => {
      const p = mem.allocFrames(batch, FramePurpose.USER)
      mem.freeFrames(p, batch)
    },
    { opsPerCall: batch },
  )
  figures.push({
    name: 'frame alloc+free (512-frame run)',
    value: run512,
    unit: 'ns/frame',
    better: 'lower',
  })
  const rate = nsPerOp(
    () => {
      const p = mem.allocFrames(1 << 16, FramePurpose.USER)
      mem.freeFrames(p, 1 << 16)
    },
    { opsPerCall: 1 << 16, samples: 5 },
  )
  figures.push({
    name: 'frames allocated per second (64 Ki runs)',
    value: 1e3 / rate,
    unit: 'M frames/s',
    better: 'higher',
  })

  figures.push(...dmaFigures())
  return figures
}

await main(import.meta.url, '@iommu/core: simulated machine', run)

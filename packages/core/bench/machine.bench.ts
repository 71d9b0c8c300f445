/**
 * Machine benchmarks: frame allocation and 4 KiB DMA copy rates through the mock IOMMU.
 */
import { type Figure, main, nsPerOp } from '../../../tooling/bench/harness.ts'
import { createMachine, FramePurpose, Prot } from '../src/index.ts'
import { mockIommu } from '../src/testing/index.ts'

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

  // 4 KiB DMA through the mock IOMMU with 4 KiB IOPTEs.
  const dev = m.addPciDevice()
  m.iommu.iommuDeviceClaimDmaOwner(dev, 'bench')
  const d = m.iommu.iommuPagingDomainAllocFlags(dev)
  const g = dev.group
  if (g === null) throw new Error('no group')
  m.iommu.iommuAttachGroupHandle(d, g, { domain: null })
  const proc = m.createProcess()
  const pages = 16384
  const va = proc.mmap(pages * 4096)
  const pfns = new Int32Array(pages)
  proc.pinUserPages(va, pages, true, pfns)
  const base = 0x100_0000n
  m.iommu.iommuMap(
    d,
    base,
    BigInt(pfns[0] as number) * 4096n,
    BigInt(pages) * 4096n,
    Prot.READ | Prot.WRITE,
  )
  const buf = new Uint8Array(4096).fill(0xa5)
  let i = 0
  const w = nsPerOp(() => {
    dev.dma.write(0x100_0000 + (i++ % pages) * 4096, buf)
  })
  figures.push({ name: 'DMA write 4 KiB (mock IOMMU)', value: w, unit: 'ns/DMA', better: 'lower' })
  figures.push({
    name: 'DMA write 4 KiB throughput',
    value: 4096 / w,
    unit: 'GB/s',
    better: 'higher',
  })
  const r = nsPerOp(() => {
    dev.dma.readInto(0x100_0000 + (i++ % pages) * 4096, buf)
  })
  figures.push({ name: 'DMA read 4 KiB (mock IOMMU)', value: r, unit: 'ns/DMA', better: 'lower' })
  figures.push({
    name: 'DMA read 4 KiB throughput',
    value: 4096 / r,
    unit: 'GB/s',
    better: 'higher',
  })
  return figures
}

await main(import.meta.url, '@iommu/core: simulated machine', run)

/**
 * AMD-Vi DMA translation rates: IOTLB hits and misses with 4 KiB and 2 MiB IOPTEs, with
 * the missing-invalidation detector off (hardware speed) and on (its cost).
 */

import { createMachine, DmaTransaction, Prot } from '@iommu/core'
import { type Figure, main, nsPerOp } from '../../../tooling/bench/harness.ts'
import { type AmdIommuHw, amd } from '../src/index.ts'

function setup(detect: boolean) {
  const m = createMachine({ iommus: [{ driver: amd(), config: { detectStale: detect } }] })
  const dev = m.addPciDevice()
  const core = m.iommu
  core.iommuDeviceClaimDmaOwner(dev, 'bench')
  const d = core.iommuPagingDomainAllocFlags(dev)
  const g = dev.group
  if (g === null) throw new Error('no group')
  core.iommuAttachGroupHandle(d, g, { domain: null })
  // 256 MiB mapped with 4 KiB IOPTEs at 4 GiB, and 1 GiB with 2 MiB IOPTEs at 64 GiB.
  const pa4k = m.memory.allocFrames(65536, 1) * 4096
  for (let i = 0; i < 65536; i++) {
    core.iommuMap(
      d,
      0x1_0000_0000n + BigInt(i) * 4096n,
      BigInt(pa4k + i * 4096),
      4096n,
      Prot.READ | Prot.WRITE,
    )
  }
  const pa2m = m.memory.allocFrames(262144, 1, 512) * 4096
  for (let i = 0; i < 512; i++) {
    const off = BigInt(i) * 0x20_0000n
    core.iommuMap(d, 0x10_0000_0000n + off, BigInt(pa2m) + off, 0x20_0000n, Prot.READ | Prot.WRITE)
  }
  return { unit: m.units[0] as AmdIommuHw, rid: dev.rid }
}

export function run(): Figure[] {
  const figures: Figure[] = []
  for (const detect of [false, true]) {
    const { unit, rid } = setup(detect)
    const txn = new DmaTransaction()
    txn.rid = rid
    txn.sid = rid
    const tag = detect ? ' (detector on)' : ''
    const rate = (name: string, base: number, span: number, stride: number) => {
      let i = 0
      const ns = nsPerOp(() => {
        txn.iovaPfn = base + ((i++ * stride) % span)
        txn.offset = 0
        if (!unit.translate(txn)) throw new Error('fault')
      })
      figures.push({
        name: `${name}${tag}`,
        value: 1e3 / ns,
        unit: 'M translations/s',
        better: 'higher',
      })
    }
    // Hits: a working set far below the IOTLB's 1024 entries.
    rate('IOTLB hit, 4 KiB IOPTEs', 0x10_0000, 64, 1)
    rate('IOTLB hit, 2 MiB IOPTEs', 0x100_0000, 64 * 512, 512)
    // Misses: strided over more leaves than the IOTLB holds.
    rate('IOTLB miss (walk), 4 KiB IOPTEs', 0x10_0000, 65536, 4099)
    rate('IOTLB miss (walk), 2 MiB IOPTEs', 0x100_0000, 512 * 512, 512 * 37)
  }
  return figures
}

await main(import.meta.url, '@iommu/driver-amd: DMA translation', run)

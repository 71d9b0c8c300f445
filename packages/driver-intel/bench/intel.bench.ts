/**
 * VT-d DMA translation rates: IOTLB hits and misses for second-stage (4 KiB and 2 MiB
 * IOPTEs), first-stage and nested (first stage behind a second stage, per PASID)
 * translations, with the missing-invalidation detector off (hardware speed) and on (its
 * cost) for the second stage.
 */

import {
  createMachine,
  DmaTransaction,
  HwptAllocFlags,
  type IommuDomain,
  type Machine,
  type PciDevice,
  Prot,
} from '@iommu/core'
import { PageTable, x86_64 } from '@iommu/io-pgtable'
import { type Figure, main, nsPerOp } from '../../../tooling/bench/harness.ts'
import { intel, Pe, Pgtt, type VtdDomain, type VtdIommuHw } from '../src/index.ts'

const MAP4K = 0x1_0000_0000n
const MAP2M = 0x10_0000_0000n

function attach(m: Machine, dev: PciDevice, flags: number): IommuDomain {
  const core = m.iommu
  core.iommuDeviceClaimDmaOwner(dev, 'bench')
  const d = core.iommuPagingDomainAllocFlags(dev, flags)
  const g = dev.group
  if (g === null) throw new Error('no group')
  core.iommuAttachGroupHandle(d, g, { domain: null })
  return d
}

/** 256 MiB with 4 KiB IOPTEs at 4 GiB and 1 GiB with 2 MiB IOPTEs at 64 GiB. */
function mapWorkingSet(m: Machine, d: IommuDomain, pa4k: number, pa2m: number): void {
  const rw = Prot.READ | Prot.WRITE
  for (let i = 0; i < 65536; i++) {
    m.iommu.iommuMap(d, MAP4K + BigInt(i) * 4096n, BigInt(pa4k + i * 4096), 4096n, rw)
  }
  for (let i = 0; i < 512; i++) {
    const off = BigInt(i) * 0x20_0000n
    m.iommu.iommuMap(d, MAP2M + off, BigInt(pa2m) + off, 0x20_0000n, rw)
  }
}

function setup(detect: boolean) {
  const m = createMachine({ iommus: [{ driver: intel(), config: { detectStale: detect } }] })
  const pa4k = m.memory.allocFrames(65536, 1) * 4096
  const pa2m = m.memory.allocFrames(262144, 1, 512) * 4096
  // Second stage (a DIRTY_TRACKING domain is second-stage) on one device's RID.
  const ssDev = m.addPciDevice({ pasidBits: 20 })
  mapWorkingSet(m, attach(m, ssDev, HwptAllocFlags.DIRTY_TRACKING), pa4k, pa2m)
  // First stage (the default choice) on another.
  const fsDev = m.addPciDevice()
  mapWorkingSet(m, attach(m, fsDev, 0), pa4k, pa2m)
  // Nested on PASID 1 of the first device: a guest first-stage table whose pages and data
  // sit at guest-physical = host-physical addresses behind a nest-parent second stage that
  // maps the low 8 GiB 1:1 with 1 GiB IOPTEs.
  const parent = m.iommu.iommuPagingDomainAllocFlags(ssDev, HwptAllocFlags.NEST_PARENT) as VtdDomain
  for (let g = 0n; g < 8n; g++) {
    m.iommu.iommuMap(parent, g << 30n, g << 30n, 1n << 30n, Prot.READ | Prot.WRITE)
  }
  const guest = new PageTable(m.memory, x86_64, { topLevel: 3, signExtend: true })
  guest.map(Number(MAP4K >> 12n), pa4k / 4096, 65536, Prot.READ | Prot.WRITE)
  const unit = m.units[0] as VtdIommuHw
  writeNestedEntry(m, unit, ssDev, parent, guest.root.pfn)
  return { unit, ssRid: ssDev.rid, fsRid: fsDev.rid }
}

/** PGTT = nested entry for PASID 1, next to the driver's PASID-0 entry. */
function writeNestedEntry(
  m: Machine,
  unit: VtdIommuHw,
  dev: PciDevice,
  parent: VtdDomain,
  fsRoot: number,
): void {
  const mem = m.memory
  const { rootTable } = unit.translationMode
  const root = mem.read64(rootTable + dev.bus * 16 + (dev.devfn >= 0x80 ? 8 : 0))
  const ctx = Number(root & ~0xfffn) + (dev.devfn & 0x7f) * 32
  const dir = Number(mem.read64(ctx) & ~0xfffn)
  const entry = Number(mem.read64(dir) & ~0xfffn) + 64
  const ss = parent.sspt
  if (ss === null) throw new Error('no second stage')
  mem.write64(entry + 8, 1000n)
  mem.write64(entry + 16, BigInt(fsRoot) << 12n)
  mem.write64(
    entry,
    (BigInt(ss.root.pfn) << 12n) |
      (BigInt(ss.root.level - 1) << Pe.AW_SHIFT) |
      (BigInt(Pgtt.NESTED) << Pe.PGTT_SHIFT) |
      Pe.P,
  )
}

export function run(): Figure[] {
  const figures: Figure[] = []
  for (const detect of [false, true]) {
    const { unit, ssRid, fsRid } = setup(detect)
    const txn = new DmaTransaction()
    const tag = detect ? ' (detector on)' : ''
    const rate = (
      name: string,
      rid: number,
      pasid: number,
      base: number,
      span: number,
      stride: number,
    ) => {
      txn.rid = rid
      txn.sid = rid
      txn.hasPasid = pasid >= 0
      txn.pasid = Math.max(pasid, 0)
      let i = 0
      const ns = nsPerOp(() => {
        txn.iovaPfn = base + ((i++ * stride) % span)
        txn.offset = 0
        if (!unit.translate(txn)) throw new Error(`fault ${txn.fault}`)
      })
      figures.push({
        name: `${name}${tag}`,
        value: 1e3 / ns,
        unit: 'M translations/s',
        better: 'higher',
      })
    }
    const p4k = Number(MAP4K >> 12n)
    const p2m = Number(MAP2M >> 12n)
    // Hits: a working set far below the IOTLB's 1024 entries; misses: strided over more.
    rate('second stage, IOTLB hit, 4 KiB IOPTEs', ssRid, -1, p4k, 64, 1)
    rate('second stage, IOTLB miss (walk), 4 KiB IOPTEs', ssRid, -1, p4k, 65536, 4099)
    if (detect) continue
    rate('second stage, IOTLB hit, 2 MiB IOPTEs', ssRid, -1, p2m, 64 * 512, 512)
    rate('second stage, IOTLB miss (walk), 2 MiB IOPTEs', ssRid, -1, p2m, 512 * 512, 512 * 37)
    rate('first stage, IOTLB hit, 4 KiB IOPTEs', fsRid, -1, p4k, 64, 1)
    rate('first stage, IOTLB miss (walk), 4 KiB IOPTEs', fsRid, -1, p4k, 65536, 4099)
    rate('nested (PASID), IOTLB hit, 4 KiB IOPTEs', ssRid, 1, p4k, 64, 1)
    rate('nested (PASID), IOTLB miss (two-stage walk), 4 KiB IOPTEs', ssRid, 1, p4k, 65536, 4099)
  }
  return figures
}

await main(import.meta.url, '@iommu/driver-intel: DMA translation', run)

/**
 * SMMUv3 DMA translation rates: TLB hits and misses for stage 1 (4 KiB and 2 MiB IOPTEs),
 * stage 2, and nested (every stage-1 table read and the output through the stage 2), with
 * the missing-invalidation detector off (hardware speed) and on (its cost).
 */

import {
  createMachine,
  DmaTransaction,
  FramePurpose,
  HwptAllocFlags,
  type Machine,
  PciDevice,
  Prot,
} from '@iommu/core'
import { armLpae, PageTable } from '@iommu/io-pgtable'
import { type Figure, main, nsPerOp } from '../../../tooling/bench/harness.ts'
import {
  Cr0,
  fieldPrep,
  Mmio,
  makeCdtableSte,
  makeS1Cd,
  makeS2DomainSte,
  type S1TableCfg,
  type S2TableCfg,
  SmmuV3Hw,
  Ste,
  SteCfg,
  smmuv3,
} from '../src/index.ts'

const IOVA_4K = 0x1_0000_0000
const IOVA_2M = 0x10_0000_0000
const PAGES_4K = 65536
const BLOCKS_2M = 512

/** 256 MiB of frames whose first PA is never 2 MiB aligned, so that they map as 4 KiB leaves. */
function frames4k(m: Machine): number {
  const pa = m.memory.allocFrames(PAGES_4K + 1, FramePurpose.USER) * 4096
  return pa % 0x20_0000 === 0 ? pa + 4096 : pa
}

interface Rig {
  readonly unit: SmmuV3Hw
  readonly sid: number
}

/** 256 MiB of 4 KiB IOPTEs at 4 GiB and 1 GiB of 2 MiB IOPTEs at 64 GiB, through the driver. */
function driverRig(detect: boolean, flags: number): Rig {
  const m = createMachine({ iommus: [{ driver: smmuv3(), config: { detectStale: detect } }] })
  const dev = m.addPciDevice()
  const core = m.iommu
  core.iommuDeviceClaimDmaOwner(dev, 'bench')
  const d = core.iommuDomainAllocPagingUser(dev, flags, null)
  const g = dev.group
  if (g === null) throw new Error('no group')
  core.iommuAttachGroupHandle(d, g, { domain: null })
  const pa4k = frames4k(m)
  core.iommuMap(d, BigInt(IOVA_4K), BigInt(pa4k), BigInt(PAGES_4K * 4096), Prot.READ | Prot.WRITE)
  const pa2m = m.memory.allocFrames(BLOCKS_2M * 512, FramePurpose.USER, 512) * 4096
  core.iommuMap(d, BigInt(IOVA_2M), BigInt(pa2m), BigInt(BLOCKS_2M) << 21n, Prot.READ | Prot.WRITE)
  return { unit: m.units[0] as SmmuV3Hw, sid: dev.streamId }
}

function write64s(m: Machine, pa: number, e: readonly bigint[]): void {
  for (let i = 0; i < e.length; i++) m.memory.write64(pa + 8 * i, e[i] as bigint)
}

/**
 * A nested stream programmed by hand: the stage 2 maps IPA = PA with 1 GiB blocks over the
 * first 256 GiB, so the guest's stage-1 tables (built with io-pgtable where IPA = PA) are
 * read through a real stage-2 walk each time.
 */
function nestedRig(detect: boolean): Rig {
  const m = createMachine({ iommus: [smmuv3()] })
  const hw = new SmmuV3Hw(m, 'bench', { detectStale: detect })
  const dev = new PciDevice(m.memory, hw, '00:02.0', {})
  const strtab = m.memory.allocFrames(4, FramePurpose.IOMMU_HW, 4) * 4096
  const cmdq = m.memory.allocFrame(FramePurpose.IOMMU_HW) * 4096
  hw.writeReg64(Mmio.STRTAB_BASE, BigInt(strtab))
  hw.writeReg(Mmio.STRTAB_BASE_CFG, 8)
  hw.writeReg64(Mmio.CMDQ_BASE, BigInt(cmdq) | 8n)
  hw.writeReg(Mmio.CR0, Cr0.CMDQEN | Cr0.SMMUEN)
  const s2 = new PageTable(m.memory, armLpae, { stage: 2, ias: 40, oas: 48 })
  s2.mapRange(0n, 0n, 256n << 30n, Prot.READ | Prot.WRITE)
  const s1 = new PageTable(m.memory, armLpae, { stage: 1, ias: 48, oas: 48 })
  const pa4k = frames4k(m)
  s1.mapRange(BigInt(IOVA_4K), BigInt(pa4k), BigInt(PAGES_4K * 4096), Prot.READ | Prot.WRITE)
  const pa2m = m.memory.allocFrames(BLOCKS_2M * 512, FramePurpose.USER, 512) * 4096
  s1.mapRange(BigInt(IOVA_2M), BigInt(pa2m), BigInt(BLOCKS_2M) << 21n, Prot.READ | Prot.WRITE)
  const cdPa = m.memory.allocFrame(FramePurpose.KERNEL) * 4096
  const master = { stallEnabled: false }
  write64s(m, cdPa, makeS1Cd(master, { ...(s1.hwInfo() as unknown as S1TableCfg), hd: false }, 1))
  const ste = makeS2DomainSte(
    0,
    master,
    { ...(s2.hwInfo() as unknown as S2TableCfg), s2fwb: false },
    1,
    false,
  )
  const vste = makeCdtableSte(0, master, { dma: BigInt(cdPa), s1fmt: 0, s1cdmax: 0 }, false, 0)
  ste[0] = Ste.Q0_V | fieldPrep(Ste.Q0_CFG, SteCfg.NESTED) | ((vste[0] as bigint) & Ste.Q0_S1CTXPTR)
  ste[1] = (ste[1] as bigint) | (vste[1] as bigint)
  write64s(m, strtab + dev.streamId * 64, ste)
  return { unit: hw, sid: dev.streamId }
}

export function run(): Figure[] {
  const figures: Figure[] = []
  const rigs: [string, (detect: boolean) => Rig][] = [
    ['S1', (d) => driverRig(d, 0)],
    ['S2', (d) => driverRig(d, HwptAllocFlags.NEST_PARENT)],
    ['nested', nestedRig],
  ]
  for (const detect of [false, true]) {
    for (const [stage, make] of rigs) {
      const { unit, sid } = make(detect)
      const txn = new DmaTransaction()
      txn.rid = sid
      txn.sid = sid
      const tag = detect ? ' (detector on)' : ''
      const rate = (name: string, base: number, span: number, stride: number) => {
        let i = 0
        const ns = nsPerOp(() => {
          txn.iovaPfn = base + ((i++ * stride) % span)
          txn.offset = 0
          if (!unit.translate(txn)) throw new Error(`fault: ${txn.fault}`)
        })
        figures.push({
          name: `${stage}: ${name}${tag}`,
          value: 1e3 / ns,
          unit: 'M translations/s',
          better: 'higher',
        })
      }
      // Hits: a working set far below the TLB's 1024 entries.
      rate('TLB hit, 4 KiB IOPTEs', IOVA_4K / 4096, 64, 1)
      rate('TLB hit, 2 MiB IOPTEs', IOVA_2M / 4096, 64 * 512, 512)
      // Misses: strided over more leaves than the TLB holds.
      rate('TLB miss (walk), 4 KiB IOPTEs', IOVA_4K / 4096, PAGES_4K, 4099)
      rate('TLB miss (walk), 2 MiB IOPTEs', IOVA_2M / 4096, BLOCKS_2M * 512, 512 * 37)
    }
  }
  return figures
}

await main(import.meta.url, '@iommu/driver-smmuv3: DMA translation', run)

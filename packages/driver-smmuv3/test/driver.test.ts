/**
 * The arm-smmu-v3 driver against the hardware model: probe decisions from the ID
 * registers, the allocation-flag errno table (reference §1.7), the exact command sequences
 * of attach, detach and unmap (CFGI + CMD_SYNC per writer sync, the TLBI / ATC_INV batches
 * with their syncs), the PASID rules, and capable() / hw_info / reserved regions.
 */
import {
  createMachine,
  HwInfoType,
  HwptAllocFlags,
  IommuCap,
  type IommuDomain,
  type Machine,
  type PciDevice,
  Prot,
  ResvType,
} from '@iommu/core'
import { describe, expect, it } from 'vitest'
import {
  DEFAULT_IDR0,
  DEFAULT_IDR1,
  DomainStage,
  fieldGet,
  Idr0,
  Idr1,
  Mmio,
  MSI_IOVA_BASE,
  MSI_IOVA_LENGTH,
  type SmmuDomain,
  SmmuV3Hw,
  type SmmuV3HwConfig,
  Ste,
  SteCfg,
  smmuv3,
  smmuv3CdTable,
} from '../src/index.ts'
import { traceCommands } from './helpers.ts'

interface Rig {
  m: Machine
  unit: SmmuV3Hw
  dev: PciDevice
}

function rig(config: SmmuV3HwConfig = {}, dev: Parameters<Machine['addPciDevice']>[0] = {}): Rig {
  const m = createMachine({ iommus: [{ driver: smmuv3(), config }] })
  const d = m.addPciDevice(dev)
  m.iommu.iommuDeviceClaimDmaOwner(d, 'test')
  return { m, unit: m.units[0] as SmmuV3Hw, dev: d }
}

const alloc = (r: Rig, flags: number) => r.m.iommu.iommuDomainAllocPagingUser(r.dev, flags, null)

function attach(r: Rig, d: IommuDomain): void {
  const g = r.dev.group
  if (g === null) throw new Error('no group')
  r.m.iommu.iommuAttachGroupHandle(d, g, { domain: null })
}

/** Run `fn` and return the names of the commands the SMMU executed meanwhile. */
const commands = (r: Rig, fn: () => void) => traceCommands(r.unit, fn).map((c) => c.op)

/** The device's STE qwords 0 and 1. */
function ste(r: Rig): [bigint, bigint] {
  const base = Number(r.unit.readReg64(Mmio.STRTAB_BASE) & 0x000f_ffff_ffff_ffc0n)
  const sid = r.dev.streamId
  const l1 = r.m.memory.read64(base + (sid >>> 8) * 8)
  const pa = Number(l1 & 0x000f_ffff_ffff_ffc0n) + (sid & 0xff) * 64
  return [r.m.memory.read64(pa), r.m.memory.read64(pa + 8)]
}

const config = (r: Rig) => fieldGet(Ste.Q0_CFG, ste(r)[0])

describe('probe', () => {
  it('leaves the unit → driver binding to the machine: every unit it creates is bound to the descriptor', () => {
    const d = smmuv3()
    const m = createMachine({ iommus: [d, d] })
    expect(m.units.map((u) => u.driver === d)).toEqual([true, true])
    expect(m.units[0]).not.toBe(m.units[1])
    // The bare hardware carries no driver of its own.
    expect(Object.hasOwn(new SmmuV3Hw(m, 'bare'), 'driver')).toBe(false)
  })

  it('refuses an SMMU without translation, without AArch64 tables, or with a tiny command queue', () => {
    const bad: SmmuV3HwConfig[] = [
      { idr0: DEFAULT_IDR0 & ~(Idr0.S1P | Idr0.S2P) },
      { idr0: DEFAULT_IDR0 & ~(3 << Idr0.TTF_SHIFT) },
      { idr1: (DEFAULT_IDR1 & ~(0x1f << Idr1.CMDQS_SHIFT)) | (6 << Idr1.CMDQS_SHIFT) },
    ]
    for (const c of bad) {
      expect(() => createMachine({ iommus: [{ driver: smmuv3(), config: c }] })).toThrow(
        expect.objectContaining({ code: 'ENXIO' }),
      )
    }
  })

  it('uses a linear stream table for 8-bit StreamIDs and refuses a StreamID beyond it', () => {
    const idr1 = (DEFAULT_IDR1 & ~0x3f) | 8
    const m = createMachine({ iommus: [{ driver: smmuv3(), config: { idr1 } }] })
    const unit = m.units[0] as SmmuV3Hw
    // STRTAB_BASE_CFG: FMT linear, LOG2SIZE 8.
    expect(unit.readReg(Mmio.STRTAB_BASE_CFG)).toBe(8)
    expect(m.addPciDevice({ bdf: '00:1f.7' }).streamId).toBe(0xff)
    expect(() => m.addPciDevice({ bdf: '01:00.0' })).toThrow(
      expect.objectContaining({ code: 'ERANGE' }),
    )
  })

  it('drops nesting on an MMU-700 r0p0 (errata 2268618, 2812531)', () => {
    const iidr = (0x487 << 20) | 0x43b
    const r = rig({ iidr })
    expect(() => alloc(r, HwptAllocFlags.NEST_PARENT)).toThrow(
      expect.objectContaining({ code: 'EOPNOTSUPP' }),
    )
  })
})

describe('paging-domain allocation flags (reference §1.7)', () => {
  it('gives stage 1 for 0, DIRTY_TRACKING, PASID and DIRTY|PASID; stage 2 for NEST_PARENT', () => {
    const r = rig()
    const cases: [number, number, boolean, boolean][] = [
      [0, DomainStage.S1, false, false],
      [HwptAllocFlags.DIRTY_TRACKING, DomainStage.S1, true, false],
      [HwptAllocFlags.PASID, DomainStage.S1, false, false],
      [HwptAllocFlags.DIRTY_TRACKING | HwptAllocFlags.PASID, DomainStage.S1, true, false],
      [HwptAllocFlags.NEST_PARENT, DomainStage.S2, false, true],
    ]
    for (const [flags, stage, dirty, parent] of cases) {
      const d = alloc(r, flags) as SmmuDomain
      expect([d.stage, d.dirtyOps !== null, d.nestParent]).toEqual([stage, dirty, parent])
      expect(d.geometry.apertureEnd).toBe((1n << 48n) - 1n)
      expect(d.pgsizeBitmap).toBe((1n << 12n) | (1n << 21n) | (1n << 30n))
      r.m.iommu.iommuDomainFree(d)
    }
  })

  it('refuses NEST_PARENT with DIRTY or PASID, unknown bits and user data with EOPNOTSUPP', () => {
    const r = rig()
    for (const flags of [
      HwptAllocFlags.NEST_PARENT | HwptAllocFlags.DIRTY_TRACKING,
      HwptAllocFlags.NEST_PARENT | HwptAllocFlags.PASID,
      HwptAllocFlags.NEST_PARENT | HwptAllocFlags.DIRTY_TRACKING | HwptAllocFlags.PASID,
      1 << 5,
    ]) {
      expect(() => alloc(r, flags)).toThrow(expect.objectContaining({ code: 'EOPNOTSUPP' }))
    }
    const data = { type: 2, len: 16, read: () => new Uint8Array(16) }
    expect(() => r.m.iommu.iommuDomainAllocPagingUser(r.dev, 0, data)).toThrow(
      expect.objectContaining({ code: 'EOPNOTSUPP' }),
    )
  })

  it('gives stage 2 for 0 on a stage-2-only SMMU and refuses stage-1 flags and nesting there', () => {
    const r = rig({ idr0: DEFAULT_IDR0 & ~Idr0.S1P })
    const d = alloc(r, 0) as SmmuDomain
    expect(d.stage).toBe(DomainStage.S2)
    // VMID 1 went to the device's default DMA domain; 0 stays reserved.
    expect(d.vmid).toBe(2)
    for (const flags of [
      HwptAllocFlags.PASID,
      HwptAllocFlags.DIRTY_TRACKING,
      HwptAllocFlags.NEST_PARENT,
    ]) {
      expect(() => alloc(r, flags)).toThrow(expect.objectContaining({ code: 'EOPNOTSUPP' }))
    }
  })
})

describe('command sequences', () => {
  it('attach writes CD 0 (0 → S1: two CFGI_CD syncs) then the STE (abort → CD table: two CFGI_STE syncs)', () => {
    const r = rig()
    const d = alloc(r, 0)
    expect(config(r)).toBe(SteCfg.ABORT)
    expect(commands(r, () => attach(r, d))).toEqual([
      'CFGI_CD',
      'CMD_SYNC',
      'CFGI_CD',
      'CMD_SYNC',
      'CFGI_STE',
      'CMD_SYNC',
      'CFGI_STE',
      'CMD_SYNC',
      'PREFETCH_CFG',
    ])
    expect(config(r)).toBe(SteCfg.S1_TRANS)
    // Detach: the STE back to abort, the ASID lost its last user (flushed), CD 0 cleared.
    expect(commands(r, () => r.m.iommu.iommuDetachGroupHandle(d, r.dev.group as never))).toEqual([
      'CFGI_STE',
      'CMD_SYNC',
      'CFGI_STE',
      'CMD_SYNC',
      'PREFETCH_CFG',
      'TLBI_NH_ASID',
      'CMD_SYNC',
      'CFGI_CD',
      'CMD_SYNC',
      'CFGI_CD',
      'CMD_SYNC',
    ])
    expect(r.unit.staleUses).toEqual([])
  })

  it('replacing S1 with S2 is hitless in three STE syncs, and flushes the old ASID', () => {
    const r = rig()
    const s1 = alloc(r, 0)
    const s2 = alloc(r, HwptAllocFlags.NEST_PARENT) as SmmuDomain
    attach(r, s1)
    const seq = commands(r, () =>
      r.m.iommu.iommuReplaceGroupHandle(r.dev.group as never, s2, { domain: null }),
    )
    expect(seq.slice(0, 7)).toEqual([
      'CFGI_STE',
      'CMD_SYNC',
      'CFGI_STE',
      'CMD_SYNC',
      'CFGI_STE',
      'CMD_SYNC',
      'PREFETCH_CFG',
    ])
    expect(seq).toContain('TLBI_NH_ASID')
    expect(config(r)).toBe(SteCfg.S2_TRANS)
    expect(ste(r)[0] & 1n).toBe(1n)
  })

  it('unmap with ATS: the TLBI batch and its sync, then ATC_INV and a sync', () => {
    const r = rig({}, { ats: true })
    const d = alloc(r, 0)
    attach(r, d)
    const pa = r.m.memory.allocFrames(16, 1) * 4096
    r.m.iommu.iommuMap(d, 0x10_0000n, BigInt(pa), 0x1_0000n, Prot.READ | Prot.WRITE)
    r.dev.dma.read(0x10_0000, 4)
    expect(commands(r, () => r.m.iommu.iommuUnmap(d, 0x10_0000n, 0x1_0000n))).toEqual([
      'TLBI_NH_VA',
      'CMD_SYNC',
      'ATC_INV',
      'CMD_SYNC',
    ])
    // Sixteen pages from 0x100000: SIZE 4 at 0x100000, no SSV, the device's SID.
    const atc = r.unit.commandTrace[2] ?? { dw0: 0n, dw1: 0n }
    expect(atc.dw0).toBe(0x40n | (BigInt(r.dev.streamId) << 32n))
    expect(atc.dw1).toBe(0x10_0000n | 4n)
  })

  it('unmap on a nest parent with ATS: S2_IPA, sync, NH_ALL, sync, a full ATC_INV, sync', () => {
    const r = rig({}, { ats: true })
    const d = alloc(r, HwptAllocFlags.NEST_PARENT)
    attach(r, d)
    const pa = r.m.memory.allocFrames(1, 1) * 4096
    r.m.iommu.iommuMap(d, 0x10_0000n, BigInt(pa), 0x1000n, Prot.READ | Prot.WRITE)
    const seq = commands(r, () => r.m.iommu.iommuUnmap(d, 0x10_0000n, 0x1000n))
    expect(seq).toEqual([
      'TLBI_S2_IPA',
      'CMD_SYNC',
      'TLBI_NH_ALL',
      'CMD_SYNC',
      'ATC_INV',
      'CMD_SYNC',
    ])
    expect((r.unit.commandTrace[4]?.dw1 ?? 0n) & 0x3fn).toBe(52n)
  })

  it('flush_iotlb_all uses the non-ranged opcodes: NH_ASID, or S12_VMALL without NH_ALL', () => {
    const r = rig()
    const s1 = alloc(r, 0)
    attach(r, s1)
    expect(commands(r, () => r.m.iommu.iommuFlushIotlbAll(s1))).toEqual([
      'TLBI_NH_ASID',
      'CMD_SYNC',
    ])
    const s2 = alloc(r, HwptAllocFlags.NEST_PARENT)
    r.m.iommu.iommuReplaceGroupHandle(r.dev.group as never, s2, { domain: null })
    expect(commands(r, () => r.m.iommu.iommuFlushIotlbAll(s2))).toEqual([
      'TLBI_S12_VMALL',
      'CMD_SYNC',
    ])
  })
})

describe('PASIDs through the CD table', () => {
  it('a PASID on a blocked RID makes a CD-table STE with S1DSS terminate; the last detach downgrades it', () => {
    const r = rig({}, { pasidBits: 20 })
    const d = alloc(r, HwptAllocFlags.PASID)
    r.m.iommu.iommuAttachDevicePasid(d, r.dev, 5)
    expect(config(r)).toBe(SteCfg.S1_TRANS)
    expect(fieldGet(Ste.Q1_S1DSS, ste(r)[1])).toBe(0)
    expect(smmuv3CdTable(r.dev)).toMatchObject({ s1fmt: 2, s1cdmax: 20, usedSsids: 1 })
    r.m.iommu.iommuDetachDevicePasid(d, r.dev, 5)
    expect(smmuv3CdTable(r.dev).usedSsids).toBe(0)
    expect(config(r)).toBe(SteCfg.ABORT)
  })

  it('refuses a stage-2 domain on a PASID, a PASID while the RID is on stage 2, and stage 2 while PASIDs are used', () => {
    const r = rig({}, { pasidBits: 20 })
    const s2 = alloc(r, HwptAllocFlags.NEST_PARENT)
    expect(() => s2.ops.setDevPasid?.(s2, r.dev, 3, null)).toThrow(
      expect.objectContaining({ code: 'EINVAL' }),
    )
    attach(r, s2)
    const s1 = alloc(r, HwptAllocFlags.PASID)
    expect(() => r.m.iommu.iommuAttachDevicePasid(s1, r.dev, 3)).toThrow(
      expect.objectContaining({ code: 'EINVAL' }),
    )
    r.m.iommu.iommuDetachGroupHandle(s2, r.dev.group as never)
    r.m.iommu.iommuAttachDevicePasid(s1, r.dev, 3)
    expect(() => attach(r, s2)).toThrow(expect.objectContaining({ code: 'EBUSY' }))
  })
})

describe('capable(), hw_info and reserved regions', () => {
  it('answers per reference §1.4', () => {
    const r = rig({}, { ats: true, data: { canwbs: true } })
    const cap = (c: number) => r.m.iommu.deviceIommuCapable(r.dev, c as never)
    expect(
      [
        IommuCap.CACHE_COHERENCY,
        IommuCap.NOEXEC,
        IommuCap.PRE_BOOT_PROTECTION,
        IommuCap.ENFORCE_CACHE_COHERENCY,
        IommuCap.DEFERRED_FLUSH,
        IommuCap.DIRTY_TRACKING,
        IommuCap.PCI_ATS_SUPPORTED,
      ].map(cap),
    ).toEqual([true, true, false, true, true, true, true])
    const plain = rig({ idr0: DEFAULT_IDR0 & ~Idr0.COHACC })
    const pcap = (c: number) => plain.m.iommu.deviceIommuCapable(plain.dev, c as never)
    // Without COHACC: no coherency, so no dirty tracking (HD needs it too), no ATS device.
    expect(
      [
        IommuCap.CACHE_COHERENCY,
        IommuCap.ENFORCE_CACHE_COHERENCY,
        IommuCap.DIRTY_TRACKING,
        IommuCap.PCI_ATS_SUPPORTED,
      ].map(pcap),
    ).toEqual([false, false, false, false])
  })

  it('hw_info answers DEFAULT and ARM_SMMUV3 with 40 bytes, anything else EOPNOTSUPP', () => {
    const r = rig()
    const ops = r.unit.driver.ops
    const info = ops.hwInfo?.(r.dev, HwInfoType.DEFAULT)
    expect(info?.type).toBe(HwInfoType.ARM_SMMUV3)
    expect(info?.data.length).toBe(40)
    expect(() => ops.hwInfo?.(r.dev, HwInfoType.INTEL_VTD)).toThrow(
      expect.objectContaining({ code: 'EOPNOTSUPP' }),
    )
  })

  it('reports the software-managed MSI window', () => {
    const r = rig()
    expect(r.m.iommu.iommuGetResvRegions(r.dev)).toContainEqual({
      start: MSI_IOVA_BASE,
      length: MSI_IOVA_LENGTH,
      prot: Prot.WRITE | Prot.NOEXEC | Prot.MMIO,
      type: ResvType.SW_MSI,
    })
  })
})

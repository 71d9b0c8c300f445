/**
 * The vSMMU (arm-smmu-v3-iommufd.c) on core's vIOMMU contract. iommufd's vIOMMU object model
 * is not in this tree yet, so the tests stand in for it: they build the `IommufdViommu` with
 * its hooks (vDEVICE table, vEVENTQ) and call the driver's ops as iommufd's ioctls would —
 * VIOMMU_ALLOC (getViommuSize + viommuInit), HWPT_ALLOC on the vIOMMU (allocDomainNested,
 * owner stamped), VDEVICE_ALLOC (vdeviceInit), HWPT_INVALIDATE on the vIOMMU
 * (cacheInvalidate), and the vEVENTQ (reportEvent).
 */
import {
  createMachine,
  DmaFault,
  type Driver,
  FramePurpose,
  HwptAllocFlags,
  HwptDataType,
  type IommuDomain,
  IommuError,
  type IommufdViommu,
  type Machine,
  type PciDevice,
  Prot,
  type UserDataArray,
  type ViommuAllocOps,
} from '@iommu/core'
import { describe, expect, it } from 'vitest'
import {
  type Command,
  cmdAtcInvAll,
  cmdCfgiCd,
  cmdCfgiSte,
  cmdOp,
  cmdTlbi,
  DEFAULT_IDR3,
  EvtClass,
  EvtId,
  fieldGet,
  fieldPrep,
  Idr3,
  IOMMU_VEVENTQ_TYPE_ARM_SMMUV3,
  IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3,
  IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
  Mmio,
  Op,
  type SmmuDomain,
  type SmmuNestedDomain,
  type SmmuV3Hw,
  type SmmuV3HwConfig,
  Ste,
  SteCfg,
  smmuv3,
  smmuv3EventLog,
} from '../src/index.ts'
import { buildGuestS1, type GuestS1, traceCommands } from './helpers.ts'

const G = 0x8000_0000
const GUEST_PAGES = 32

interface Vm {
  m: Machine
  driver: Driver
  unit: SmmuV3Hw
  dev: PciDevice
  parent: SmmuDomain
  viommu: IommufdViommu
  /** vSID → device, as IOMMU_VDEVICE_ALLOC fills it. */
  vdevs: Map<bigint, PciDevice>
  /** What reached the vEVENTQ; null while the vIOMMU has no vEVENTQ. */
  vevents: Uint8Array[] | null
  hostOf(ipa: number): number
  guest: GuestS1
}

function nesting(driver: Driver): ViommuAllocOps {
  return driver.nesting as ViommuAllocOps
}

/** A VM: guest RAM at IPA G in a nest-parent S2, one device, a vIOMMU on the parent. */
function vm(opts: { config?: SmmuV3HwConfig; ats?: boolean; vsid?: bigint | null } = {}): Vm {
  const driver = smmuv3()
  const m = createMachine({ iommus: [{ driver, config: opts.config ?? {} }] })
  const unit = m.units[0] as SmmuV3Hw
  const dev = m.addPciDevice({ ats: opts.ats ?? false })
  m.iommu.iommuDeviceClaimDmaOwner(dev, 'vmm')
  const parent = m.iommu.iommuDomainAllocPagingUser(
    dev,
    HwptAllocFlags.NEST_PARENT,
    null,
  ) as SmmuDomain
  const host = m.memory.allocFrames(GUEST_PAGES, FramePurpose.USER) * 4096
  m.iommu.iommuMap(
    parent,
    BigInt(G),
    BigInt(host),
    BigInt(GUEST_PAGES * 4096),
    Prot.READ | Prot.WRITE,
  )
  const hostOf = (ipa: number) => host + (ipa - G)
  const guest = buildGuestS1((ipa, v) => m.memory.write64(hostOf(ipa), v), G)
  m.memory.writeBytes(hostOf(guest.dataIpa), new Uint8Array([0x9a]))
  const vdevs = new Map<bigint, PciDevice>()
  const v: Vm = {
    m,
    driver,
    unit,
    dev,
    parent,
    viommu: null as never,
    vdevs,
    vevents: [],
    hostOf,
    guest,
  }
  expect(nesting(driver).getViommuSize(dev, IOMMU_VIOMMU_TYPE_ARM_SMMUV3)).toBeGreaterThan(0)
  v.viommu = {
    id: 100,
    type: IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
    unit,
    parent,
    ops: null,
    priv: null,
    hooks: {
      findDev: (id) => vdevs.get(id) ?? null,
      getVdevId(d) {
        for (const [id, x] of vdevs) if (x === d) return id
        throw new IommuError('ENOENT', 'no vDEVICE')
      },
      reportEvent(type, data) {
        if (v.vevents === null || type !== IOMMU_VEVENTQ_TYPE_ARM_SMMUV3) {
          throw new IommuError('EOPNOTSUPP', 'no vEVENTQ')
        }
        v.vevents.push(data)
      },
      allocMmap() {
        throw new IommuError('EOPNOTSUPP', 'no mmap')
      },
      destroyMmap() {},
    },
  }
  nesting(driver).viommuInit(v.viommu, parent, null)
  const vsid = opts.vsid === undefined ? 0x42n : opts.vsid
  if (vsid !== null) {
    v.viommu.ops?.vdeviceInit?.({
      id: 101,
      viommu: v.viommu,
      dev,
      virtId: vsid,
      priv: null,
      destroy: null,
    })
    vdevs.set(vsid, dev)
  }
  return v
}

function userSte(ste: readonly [bigint, bigint], len = 16, type: number = HwptDataType.ARM_SMMUV3) {
  const bytes = new Uint8Array(len)
  const dv = new DataView(bytes.buffer)
  if (len >= 8) dv.setBigUint64(0, ste[0], true)
  if (len >= 16) dv.setBigUint64(8, ste[1], true)
  return { type, len, read: () => bytes }
}

/** The guest's vSTE: Config = S1 translate on its CD table, S1DSS as given. */
function guestVste(v: Vm, eats = 0): [bigint, bigint] {
  return [
    Ste.Q0_V | fieldPrep(Ste.Q0_CFG, SteCfg.S1_TRANS) | (BigInt(v.guest.cdTable) & Ste.Q0_S1CTXPTR),
    fieldPrep(Ste.Q1_S1CIR, 1) |
      fieldPrep(Ste.Q1_S1COR, 1) |
      fieldPrep(Ste.Q1_S1CSH, 3) |
      fieldPrep(Ste.Q1_EATS, eats),
  ]
}

/** HWPT_ALLOC on the vIOMMU: the driver's domain, owner stamped as iommufd does. */
function nestedHwpt(v: Vm, ste: readonly [bigint, bigint], flags = 0): SmmuNestedDomain {
  const d = v.viommu.ops?.allocDomainNested?.(v.viommu, flags, userSte(ste)) as SmmuNestedDomain
  d.owner = v.driver
  return d
}

function attach(v: Vm, d: IommuDomain): void {
  const g = v.dev.group
  if (g === null) throw new Error('no group')
  v.m.iommu.iommuReplaceGroupHandle(g, d, { domain: null })
}

/** HWPT_INVALIDATE on the vIOMMU with raw 16-byte commands. */
function invalidate(
  v: Vm,
  cmds: Command[],
  entryLen = 16,
  type = IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3,
) {
  const array: UserDataArray = {
    type,
    entryLen,
    entryNum: cmds.length,
    readEntry(i) {
      const b = new Uint8Array(entryLen)
      const dv = new DataView(b.buffer)
      dv.setBigUint64(0, (cmds[i] as Command)[0], true)
      dv.setBigUint64(8, (cmds[i] as Command)[1], true)
      return b
    },
  }
  let err: unknown = null
  try {
    v.viommu.ops?.cacheInvalidate?.(v.viommu, array)
  } catch (e) {
    err = e
  }
  return { entryNum: array.entryNum, code: err === null ? null : (err as IommuError).code }
}

function steQ(v: Vm): bigint[] {
  const base = Number(v.unit.readReg64(Mmio.STRTAB_BASE) & 0x000f_ffff_ffff_ffc0n)
  const sid = v.dev.streamId
  const l2 = Number(v.m.memory.read64(base + (sid >>> 8) * 8) & 0x000f_ffff_ffff_ffc0n)
  const pa = l2 + (sid & 0xff) * 64
  return Array.from({ length: 4 }, (_, i) => v.m.memory.read64(pa + 8 * i))
}

const trace = (v: Vm, fn: () => void) => traceCommands(v.unit, fn)

describe('vIOMMU allocation', () => {
  it('get_viommu_size needs nesting and S2FWB (or a CANWBS device), and the ARM_SMMUV3 type', () => {
    const v = vm()
    const n = nesting(v.driver)
    expect(n.getViommuSize(v.dev, 2)).toBe(0)
    const noFwb = createMachine({
      iommus: [{ driver: smmuv3(), config: { idr3: DEFAULT_IDR3 & ~Idr3.FWB } }],
    })
    const d1 = noFwb.addPciDevice()
    const d2 = noFwb.addPciDevice({ data: { canwbs: true } })
    const nn = nesting((noFwb.units[0] as SmmuV3Hw).driver)
    expect(nn.getViommuSize(d1, IOMMU_VIOMMU_TYPE_ARM_SMMUV3)).toBe(0)
    expect(nn.getViommuSize(d2, IOMMU_VIOMMU_TYPE_ARM_SMMUV3)).toBeGreaterThan(0)
  })

  it('takes the parent VMID and refuses a parent of another SMMU', () => {
    const v = vm()
    expect((v.viommu.priv as { vmid: number }).vmid).toBe(v.parent.vmid)
    const other = vm()
    const stranger = { ...v.viommu, ops: null, priv: null, unit: other.unit }
    expect(() => nesting(v.driver).viommuInit(stranger, v.parent, null)).toThrow(
      expect.objectContaining({ code: 'EINVAL' }),
    )
  })
})

describe('nested domains from a vSTE', () => {
  it('validates the vSTE: flags EOPNOTSUPP, type and length EINVAL, foreign bits, Config and EATS EIO', () => {
    const v = vm()
    const ops = v.viommu.ops
    const good = guestVste(v)
    const code = (f: () => unknown) => {
      try {
        f()
      } catch (e) {
        return (e as IommuError).code
      }
      return null
    }
    expect(
      code(() => ops?.allocDomainNested?.(v.viommu, HwptAllocFlags.PASID, userSte(good))),
    ).toBe('EOPNOTSUPP')
    expect(code(() => ops?.allocDomainNested?.(v.viommu, 0, userSte(good, 16, 1)))).toBe('EINVAL')
    expect(code(() => ops?.allocDomainNested?.(v.viommu, 0, userSte(good, 8)))).toBe('EINVAL')
    expect(code(() => ops?.allocDomainNested?.(v.viommu, 0, userSte(good, 24)))).toBe('EINVAL')
    const bad: [bigint, bigint][] = [
      [good[0] | Ste.Q0_V, good[1] | Ste.Q1_MEV],
      [(good[0] & ~Ste.Q0_CFG) | fieldPrep(Ste.Q0_CFG, SteCfg.NESTED), good[1]],
      [(good[0] & ~Ste.Q0_CFG) | fieldPrep(Ste.Q0_CFG, SteCfg.S2_TRANS), good[1]],
      [good[0], good[1] | fieldPrep(Ste.Q1_EATS, 2)],
    ]
    for (const s of bad)
      expect(code(() => ops?.allocDomainNested?.(v.viommu, 0, userSte(s)))).toBe('EIO')
    // V = 0: whatever else it holds, an all-zero vSTE (abort).
    expect(nestedHwpt(v, [good[0] & ~Ste.Q0_V, ~0n]).ste).toEqual([0n, 0n])
    const d = nestedHwpt(v, guestVste(v, 1))
    expect([d.enableAts, fieldGet(Ste.Q1_EATS, d.ste[1])]).toEqual([true, 0])
  })

  it('a Config = S1 vSTE needs a vDEVICE (ENOENT); abort and bypass vSTEs attach without one', () => {
    const v = vm({ vsid: null })
    expect(() => attach(v, nestedHwpt(v, guestVste(v)))).toThrow(
      expect.objectContaining({ code: 'ENOENT' }),
    )
    attach(v, nestedHwpt(v, [Ste.Q0_V | fieldPrep(Ste.Q0_CFG, SteCfg.BYPASS), 0n]))
    // Bypass: the parent's plain stage-2 STE with its VMID.
    expect(fieldGet(Ste.Q0_CFG, steQ(v)[0] as bigint)).toBe(SteCfg.S2_TRANS)
    expect(fieldGet(Ste.Q2_S2VMID, steQ(v)[2] as bigint)).toBe(v.parent.vmid)
    expect(v.dev.dma.read(G + 0x5000, 1)[0]).toBe(0x9a)
    attach(v, nestedHwpt(v, [0n, 0n]))
    expect(fieldGet(Ste.Q0_CFG, steQ(v)[0] as bigint)).toBe(SteCfg.ABORT)
  })

  it('installs Config = nested and the device walks the guest CD table and tables through the parent', () => {
    const v = vm()
    attach(v, nestedHwpt(v, guestVste(v)))
    const [q0, q1, q2] = steQ(v) as [bigint, bigint, bigint]
    expect(fieldGet(Ste.Q0_CFG, q0)).toBe(SteCfg.NESTED)
    expect(q0 & Ste.Q0_S1CTXPTR).toBe(BigInt(v.guest.cdTable))
    expect(q1 & Ste.Q1_MEV).toBe(Ste.Q1_MEV)
    expect(fieldGet(Ste.Q2_S2VMID, q2)).toBe(v.parent.vmid)
    expect(v.dev.dma.read(v.guest.VA, 1)[0]).toBe(0x9a)
    expect(v.unit.staleUses).toEqual([])
  })

  it('refuses a nested attach while PASIDs are in use (EBUSY)', () => {
    const m = createMachine({ iommus: [smmuv3()] })
    const dev = m.addPciDevice({ pasidBits: 8 })
    m.iommu.iommuDeviceClaimDmaOwner(dev, 'vmm')
    const s1 = m.iommu.iommuDomainAllocPagingUser(dev, HwptAllocFlags.PASID, null)
    m.iommu.iommuAttachDevicePasid(s1, dev, 1)
    const parent = m.iommu.iommuDomainAllocPagingUser(dev, HwptAllocFlags.NEST_PARENT, null)
    const driver = (m.units[0] as SmmuV3Hw).driver
    const viommu: IommufdViommu = {
      id: 1,
      type: IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
      unit: m.units[0] as SmmuV3Hw,
      parent,
      ops: null,
      priv: null,
      hooks: {
        findDev: () => null,
        getVdevId: () => 1n,
        reportEvent() {},
        allocMmap: () => 0n,
        destroyMmap() {},
      },
    }
    nesting(driver).viommuInit(viommu, parent, null)
    const d = viommu.ops?.allocDomainNested?.(viommu, 0, userSte([0n, 0n])) as IommuDomain
    d.owner = driver
    expect(() => d.ops.attachDev(d, dev, null)).toThrow(expect.objectContaining({ code: 'EBUSY' }))
  })
})

describe('guest invalidation through the vIOMMU', () => {
  it('rewrites the VMID of NH TLBIs, turns NSNH_ALL into NH_ALL, and vSIDs into the StreamID', () => {
    const v = vm()
    attach(v, nestedHwpt(v, guestVste(v)))
    const vmid = BigInt(v.parent.vmid)
    const sid = BigInt(v.dev.streamId)
    const seq = trace(v, () =>
      expect(
        invalidate(v, [
          cmdTlbi(Op.TLBI_NH_ASID, 77, 0x3333),
          cmdOp(Op.TLBI_NSNH_ALL),
          cmdCfgiCd(0x42, 0, true),
        ]),
      ).toEqual({ entryNum: 3, code: null }),
    )
    expect(seq.map((c) => c.op)).toEqual(['TLBI_NH_ASID', 'TLBI_NH_ALL', 'CFGI_CD', 'CMD_SYNC'])
    expect(seq[0]?.dw0).toBe(BigInt(Op.TLBI_NH_ASID) | (vmid << 32n) | (77n << 48n))
    expect(seq[1]?.dw0).toBe(BigInt(Op.TLBI_NH_ALL) | (vmid << 32n))
    expect(seq[2]?.dw0).toBe(BigInt(Op.CFGI_CD) | (sid << 32n))
  })

  it('stops at an unknown vSID or a forbidden command with EIO and entry_num at it', () => {
    const v = vm()
    expect(invalidate(v, [cmdTlbi(Op.TLBI_NH_ASID, 1, 0), cmdCfgiCd(0x99, 0, true)])).toEqual({
      entryNum: 1,
      code: 'EIO',
    })
    expect(invalidate(v, [cmdCfgiSte(0x42, true)])).toEqual({ entryNum: 0, code: 'EIO' })
    expect(invalidate(v, [cmdTlbi(Op.TLBI_S12_VMALL, 0, 1)])).toEqual({ entryNum: 0, code: 'EIO' })
    // An empty array is EINVAL here (the SMMUv3 quirk); so is another data type.
    expect(invalidate(v, [])).toEqual({ entryNum: 0, code: 'EINVAL' })
    expect(invalidate(v, [cmdOp(Op.TLBI_NSNH_ALL)], 16, 7)).toEqual({ entryNum: 0, code: 'EINVAL' })
  })

  it('issues blocks of 63 commands and a CMD_SYNC; a failure drops the unissued block it counted', () => {
    const v = vm()
    const many = Array.from({ length: 130 }, () => cmdTlbi(Op.TLBI_NH_ASID, 5, 0))
    const seq = trace(v, () => expect(invalidate(v, many)).toEqual({ entryNum: 130, code: null }))
    expect(seq.filter((c) => c.op === 'CMD_SYNC')).toHaveLength(3)
    expect(seq.findIndex((c) => c.op === 'CMD_SYNC')).toBe(63)
    const broken = [...many]
    broken[70] = cmdCfgiSte(0, true)
    const seq2 = trace(v, () =>
      expect(invalidate(v, broken)).toEqual({ entryNum: 70, code: 'EIO' }),
    )
    // Only the first block went out: commands 63..69 were converted but never issued.
    expect(seq2.filter((c) => c.op === 'TLBI_NH_ASID')).toHaveLength(63)
  })

  it('a guest CD change needs the guest CFGI_CD: the detector says so, and the command fixes it', () => {
    const v = vm()
    attach(v, nestedHwpt(v, guestVste(v)))
    expect(v.dev.dma.read(v.guest.VA, 1)[0]).toBe(0x9a)
    v.guest.setAsid(78)
    v.dev.dma.read(v.guest.VA, 1)
    expect(v.unit.staleUses[0]).toMatchObject({
      cache: 'cd',
      missing: 'CFGI_CD',
      sid: v.dev.streamId,
    })
    invalidate(v, [cmdCfgiCd(0x42, 0, true), cmdTlbi(Op.TLBI_NH_ASID, 77, 0)])
    v.unit.staleUses.length = 0
    expect(v.dev.dma.read(v.guest.VA, 1)[0]).toBe(0x9a)
    expect(v.unit.staleUses).toEqual([])
  })

  it('forwards the guest ATC_INV with the physical StreamID when the guest enabled ATS', () => {
    const v = vm({ ats: true })
    attach(v, nestedHwpt(v, guestVste(v, 0)))
    // EATS = 0 in the vSTE: the kernel keeps ATS off for the guest.
    expect(fieldGet(Ste.Q1_EATS, steQ(v)[1] as bigint)).toBe(0)
    expect(v.unit.atsEnabled(v.dev.streamId)).toBe(false)
    attach(v, nestedHwpt(v, guestVste(v, 1)))
    expect(fieldGet(Ste.Q1_EATS, steQ(v)[1] as bigint)).toBe(1)
    expect(v.unit.atsEnabled(v.dev.streamId)).toBe(true)
    const seq = trace(v, () => invalidate(v, [cmdAtcInvAll(0x42, 0)]))
    expect(seq[0]?.dw0).toBe(BigInt(Op.ATC_INV) | (BigInt(v.dev.streamId) << 32n))
  })
})

describe('the nest parent and guest events', () => {
  it('an unmap of the parent reaches the combined entries: S2_IPA, NH_ALL of the VMID, then the DMA faults', () => {
    const v = vm()
    attach(v, nestedHwpt(v, guestVste(v)))
    expect(v.dev.dma.read(v.guest.VA, 1)[0]).toBe(0x9a)
    const seq = trace(v, () => v.m.iommu.iommuUnmap(v.parent, BigInt(v.guest.dataIpa), 0x1000n))
    expect(seq.map((c) => c.op)).toEqual(['TLBI_S2_IPA', 'CMD_SYNC', 'TLBI_NH_ALL', 'CMD_SYNC'])
    expect(() => v.dev.dma.read(v.guest.VA, 1)).toThrow(DmaFault)
    expect(v.unit.staleUses).toEqual([])
  })

  it('forwards a guest-stage fault to the vEVENTQ with the vSID, and keeps stage-2 faults', () => {
    const v = vm()
    attach(v, nestedHwpt(v, guestVste(v)))
    expect(() => v.dev.dma.read(0x5000_0000, 4)).toThrow(
      expect.objectContaining({ reason: 'translation' }),
    )
    expect(v.vevents).toHaveLength(1)
    const rec = new DataView((v.vevents as Uint8Array[])[0]?.buffer as ArrayBuffer)
    expect(rec.getBigUint64(0, true)).toBe(BigInt(EvtId.F_TRANSLATION) | (0x42n << 32n))
    expect(rec.getBigUint64(16, true)).toBe(0x5000_0000n)
    expect(smmuv3EventLog(v.dev).at(-1)?.handled).toBe(true)
    // The stage-1 output IPA outside guest RAM: a stage-2 fault, the host's.
    expect(() => v.dev.dma.read(v.guest.VA + 0x1000, 1)).toThrow(DmaFault)
    expect(v.vevents).toHaveLength(1)
    expect(smmuv3EventLog(v.dev).at(-1)).toMatchObject({
      handled: false,
      event: {
        id: EvtId.F_TRANSLATION,
        s2: true,
        class: EvtClass.IN,
        ipa: BigInt(v.guest.strayIpa),
      },
    })
    // Without a vEVENTQ the guest event is logged as unhandled.
    v.vevents = null
    expect(() => v.dev.dma.read(0x5000_0000, 4)).toThrow(DmaFault)
    expect(smmuv3EventLog(v.dev).at(-1)?.handled).toBe(false)
    // Back on a kernel domain, the vmaster is gone.
    v.m.iommu.iommuReplaceGroupHandle(v.dev.group as never, v.parent, { domain: null })
    v.vevents = []
    expect(() => v.dev.dma.read(0x7000_0000, 4)).toThrow(DmaFault)
    expect(v.vevents).toHaveLength(0)
  })
})

/**
 * The vSMMU (`arm-smmu-v3-iommufd.c`) end to end through iommufd's uAPI, the way a VMM
 * drives it (reference nesting-viommu.md §2.5–2.8, §5): guest RAM on an IOAS, a NEST_PARENT
 * HWPT (the stage 2), IOMMU_VIOMMU_ALLOC type ARM_SMMUV3, IOMMU_VDEVICE_ALLOC (the vSID), the
 * guest's CD table and stage-1 tables written at IPAs inside guest RAM, the guest's vSTE
 * installed with IOMMU_HWPT_ALLOC on the vIOMMU, device DMA through both stages, guest
 * invalidation with raw commands through IOMMU_HWPT_INVALIDATE on the vIOMMU, guest-stage
 * events read from a vEVENTQ fd, the stage-2 invalidation of IOAS_UNMAP reaching every vIOMMU
 * on the parent, and what 7.2 does with PRI page requests of a device on a fault-capable
 * nested HWPT.
 */
import {
  createMachine,
  DmaFault,
  type Machine,
  type PciDevice,
  type PciDeviceOptions,
  type Process,
} from '@iommu/core'
import {
  fdClose,
  fdPoll,
  fdRead,
  fdWrite,
  type HwptPaging,
  IOMMU_DESTROY,
  IOMMU_FAULT_QUEUE_ALLOC,
  IOMMU_GET_HW_INFO,
  IOMMU_HW_INFO_FLAG_INPUT_TYPE,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_ALLOC_PASID,
  IOMMU_HWPT_FAULT_ID_VALID,
  IOMMU_HWPT_INVALIDATE,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_IOAS_UNMAP,
  IOMMU_PGFAULT_FLAGS_LAST_PAGE,
  IOMMU_PGFAULT_PERM_READ,
  IOMMU_PGFAULT_PERM_WRITE,
  IOMMU_VDEVICE_ALLOC,
  IOMMU_VEVENTQ_ALLOC,
  IOMMU_VIOMMU_ALLOC,
  IOMMU_VIOMMU_TYPE_DEFAULT,
  IOMMUFD_PAGE_RESP_INVALID,
  IOMMUFD_PAGE_RESP_SUCCESS,
  type Iommufd,
  type IommufdDevice,
  ObjType,
  openIommufd,
  POLLIN,
} from '@iommu/iommufd'
import {
  IOMMU_HW_INFO_TYPE_ARM_SMMUV3,
  IOMMU_HW_INFO_TYPE_INTEL_VTD,
  IOMMU_HWPT_DATA_ARM_SMMUV3,
  IOMMU_HWPT_DATA_VTD_S1,
  IOMMU_VEVENTQ_TYPE_ARM_SMMUV3,
  IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3,
  IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
  IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV,
} from '@iommu/iommufd/uapi'
import { describe, expect, it } from 'vitest'
import {
  Cmd,
  type Command,
  Cr0,
  cmdAtcInvAll,
  cmdCfgiCd,
  cmdCfgiSte,
  cmdOp,
  cmdTlbi,
  DEFAULT_IDR0,
  DEFAULT_IDR3,
  EvtClass,
  EvtId,
  fieldGet,
  fieldPrep,
  Idr0,
  Idr3,
  Mmio,
  Op,
  PriResp,
  Resume,
  type SmmuDomain,
  type SmmuV3Hw,
  type SmmuV3HwConfig,
  Ste,
  SteCfg,
  smmuv3,
  smmuv3EventLog,
  smmuv3PriLog,
} from '../src/index.ts'
import { buildGuestS1, type GuestS1, traceCommands } from './helpers.ts'

const PAGE = 4096
/** Guest RAM: IPA G onwards (= the IOVA it is mapped at in the IOAS). */
const G = 0x8000_0000
const GUEST_PAGES = 32
/** buildGuestS1's data page is guest page 5; page 6 is where the guest remaps VA. */
const DATA_PAGE = 5
const OTHER_PAGE = 6
const VSID = 0x42n

interface Vm {
  m: Machine
  unit: SmmuV3Hw
  vmm: Process
  fd: Iommufd
  ioas: number
  /** The VMM's mapping of guest RAM. */
  ram: number
  parent: number
  guest: GuestS1
}

interface Dev {
  dev: PciDevice
  idev: IommufdDevice
}

function ioctlErr(fn: () => unknown): string | null {
  try {
    fn()
    return null
  } catch (e) {
    return (e as { code?: string }).code ?? 'not an IommuError'
  }
}

function le64(...v: bigint[]): Uint8Array {
  const b = new Uint8Array(8 * v.length)
  const dv = new DataView(b.buffer)
  for (const [i, x] of v.entries()) dv.setBigUint64(8 * i, BigInt.asUintN(64, x), true)
  return b
}

/** Copy `bytes` into a fresh page of the VMM and return its address (a user pointer). */
function userBytes(v: Vm, bytes: Uint8Array): bigint {
  const va = v.vmm.mmap(Math.max(PAGE, Math.ceil(bytes.length / PAGE) * PAGE))
  v.vmm.write(va, bytes)
  return BigInt(va)
}

function ioasMap(v: Vm, firstPage: number, pages: number): void {
  v.fd.ioctl(IOMMU_IOAS_MAP, {
    size: 40,
    flags: IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
    ioas_id: v.ioas,
    user_va: BigInt(v.ram + firstPage * PAGE),
    length: BigInt(pages * PAGE),
    iova: BigInt(G + firstPage * PAGE),
  })
}

/**
 * A VM: guest RAM mapped into an IOAS in three areas (so the VMM can unmap the data page
 * alone), the guest's stage-1 world written into it, and a NEST_PARENT HWPT allocated for
 * the first device.
 */
function vm(
  opts: { config?: SmmuV3HwConfig; dev?: PciDeviceOptions; stall?: boolean } = {},
): Vm & Dev {
  const m = createMachine({ iommus: [{ driver: smmuv3(), config: opts.config ?? {} }] })
  const unit = m.units[0] as SmmuV3Hw
  const vmm = m.createProcess()
  const fd = openIommufd(m, vmm)
  const alloc = { size: 12, flags: 0, out_ioas_id: 0 }
  fd.ioctl(IOMMU_IOAS_ALLOC, alloc)
  const ram = vmm.mmap(GUEST_PAGES * PAGE)
  const put = (ipa: number, val: bigint) => vmm.write(ram + (ipa - G), le64(val))
  const guest = buildGuestS1(put, G, 77, opts.stall ?? false)
  const v: Vm = { m, unit, vmm, fd, ioas: alloc.out_ioas_id, ram, parent: 0, guest }
  ioasMap(v, 0, DATA_PAGE)
  ioasMap(v, DATA_PAGE, 1)
  ioasMap(v, DATA_PAGE + 1, GUEST_PAGES - DATA_PAGE - 1)
  vmm.write(ram + DATA_PAGE * PAGE, new Uint8Array([0x9a]))
  const d = addDev(v, opts.dev)
  const parent = {
    size: 48,
    flags: IOMMU_HWPT_ALLOC_NEST_PARENT,
    dev_id: d.idev.id,
    pt_id: v.ioas,
    out_hwpt_id: 0,
  }
  fd.ioctl(IOMMU_HWPT_ALLOC, parent)
  v.parent = parent.out_hwpt_id
  return { ...v, ...d }
}

/** VFIO cdev: a new device, bound, attached to the IOAS (as a VMM starts). */
function addDev(v: Vm, o: PciDeviceOptions = {}): Dev {
  const dev = v.m.addPciDevice(o)
  const idev = v.fd.bindDevice(dev)
  idev.attach(v.ioas)
  return { dev, idev }
}

function viommuAlloc(v: Vm, devId: number, type = IOMMU_VIOMMU_TYPE_ARM_SMMUV3, hwpt = v.parent) {
  const cmd = { size: 40, flags: 0, type, dev_id: devId, hwpt_id: hwpt, out_viommu_id: 0 }
  v.fd.ioctl(IOMMU_VIOMMU_ALLOC, cmd)
  return cmd.out_viommu_id
}

function vdeviceAlloc(v: Vm, viommu: number, devId: number, vsid = VSID): number {
  const cmd = { size: 24, viommu_id: viommu, dev_id: devId, virt_id: vsid, out_vdevice_id: 0 }
  v.fd.ioctl(IOMMU_VDEVICE_ALLOC, cmd)
  return cmd.out_vdevice_id
}

/** IOMMU_HWPT_ALLOC on the vIOMMU with `struct iommu_hwpt_arm_smmuv3 { le64 ste[2] }`. */
function nestedHwpt(
  v: Vm,
  devId: number,
  viommu: number,
  ste: readonly [bigint, bigint],
  o: { flags?: number; len?: number; type?: number; faultId?: number } = {},
): number {
  const bytes = new Uint8Array(o.len ?? 16)
  bytes.set(le64(ste[0], ste[1]).subarray(0, bytes.length))
  const cmd = {
    size: 56,
    flags: o.flags ?? 0,
    dev_id: devId,
    pt_id: viommu,
    data_type: o.type ?? IOMMU_HWPT_DATA_ARM_SMMUV3,
    data_len: bytes.length,
    data_uptr: userBytes(v, bytes),
    fault_id: o.faultId ?? 0,
    out_hwpt_id: 0,
  }
  v.fd.ioctl(IOMMU_HWPT_ALLOC, cmd)
  return cmd.out_hwpt_id
}

/** The guest's vSTE: Config = S1 translate on its CD table at an IPA. */
function guestVste(v: Vm, eats = 0): [bigint, bigint] {
  return [
    Ste.Q0_V | fieldPrep(Ste.Q0_CFG, SteCfg.S1_TRANS) | (BigInt(v.guest.cdTable) & Ste.Q0_S1CTXPTR),
    fieldPrep(Ste.Q1_S1CIR, 1) |
      fieldPrep(Ste.Q1_S1COR, 1) |
      fieldPrep(Ste.Q1_S1CSH, 3) |
      fieldPrep(Ste.Q1_EATS, eats),
  ]
}

const BYPASS_VSTE: [bigint, bigint] = [Ste.Q0_V | fieldPrep(Ste.Q0_CFG, SteCfg.BYPASS), 0n]
const ABORT_VSTE: [bigint, bigint] = [Ste.Q0_V | fieldPrep(Ste.Q0_CFG, SteCfg.ABORT), 0n]

/** TLBI_NH_VA as a guest writes it: ASID, the VA, Leaf; its VMID field is the guest's. */
function tlbiNhVa(asid: number, va: number, vmid = 0x7777): Command {
  return [
    BigInt(Op.TLBI_NH_VA) | fieldPrep(Cmd.TLBI_D0_ASID, asid) | fieldPrep(Cmd.TLBI_D0_VMID, vmid),
    (BigInt(va) & Cmd.TLBI_D1_VA) | Cmd.TLBI_D1_LEAF,
  ]
}

/**
 * IOMMU_HWPT_INVALIDATE on `id` with raw 16-byte commands (or `entryLen`-byte entries, the
 * extra bytes given by `tail`). Returns the errno (null on success) and `entry_num` as
 * written back.
 */
function invalidate(
  v: Vm,
  id: number,
  cmds: Command[],
  o: { entryLen?: number; type?: number; tail?: number } = {},
): [string | null, number] {
  const len = o.entryLen ?? 16
  const buf = new Uint8Array(Math.max(1, cmds.length * len))
  cmds.forEach((c, i) => {
    const e = new Uint8Array(Math.max(len, 16))
    e.set(le64(c[0], c[1]))
    if (len > 16) e[16] = o.tail ?? 0
    buf.set(e.subarray(0, len), i * len)
  })
  const cmd = {
    size: 32,
    hwpt_id: id,
    data_uptr: userBytes(v, buf),
    data_type: o.type ?? IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3,
    entry_len: len,
    entry_num: cmds.length,
    __reserved: 0,
  }
  const err = ioctlErr(() => v.fd.ioctl(IOMMU_HWPT_INVALIDATE, cmd))
  return [err, cmd.entry_num]
}

function veventqAlloc(v: Vm, viommu: number, depth = 8): { id: number; fd: number } {
  const cmd = {
    size: 32,
    flags: 0,
    viommu_id: viommu,
    type: IOMMU_VEVENTQ_TYPE_ARM_SMMUV3,
    veventq_depth: depth,
    out_veventq_id: 0,
    out_veventq_fd: 0,
  }
  v.fd.ioctl(IOMMU_VEVENTQ_ALLOC, cmd)
  return { id: cmd.out_veventq_id, fd: cmd.out_veventq_fd }
}

/** read(2) of a vEVENTQ fd: each `iommufd_vevent_header` + `iommu_vevent_arm_smmuv3`. */
function readVevents(v: Vm, fd: number): { flags: number; seq: number; evt: bigint[] }[] {
  const buf = v.vmm.mmap(PAGE)
  const n = fdRead(v.vmm, fd, buf, PAGE)
  const dv = new DataView(v.vmm.read(buf, n).buffer)
  const out: { flags: number; seq: number; evt: bigint[] }[] = []
  for (let o = 0; o < n; o += 40) {
    out.push({
      flags: dv.getUint32(o, true),
      seq: dv.getUint32(o + 4, true),
      evt: [0, 1, 2, 3].map((i) => dv.getBigUint64(o + 8 + 8 * i, true)),
    })
  }
  v.vmm.munmap(buf, PAGE)
  return out
}

/** The device's STE as the SMMU reads it (STRTAB_BASE → L1 descriptor → STE). */
function steQ(v: Vm, dev: PciDevice): bigint[] {
  const base = Number(v.unit.readReg64(Mmio.STRTAB_BASE) & 0x000f_ffff_ffff_ffc0n)
  const sid = dev.streamId
  const l2 = Number(v.m.memory.read64(base + (sid >>> 8) * 8) & 0x000f_ffff_ffff_ffc0n)
  const pa = l2 + (sid & 0xff) * 64
  return Array.from({ length: 4 }, (_, i) => v.m.memory.read64(pa + 8 * i))
}

function parentDomain(v: Vm): SmmuDomain {
  return v.fd.ctx.get<HwptPaging>(v.parent, ObjType.HWPT_PAGING).domain as SmmuDomain
}

const trace = (v: Vm, fn: () => void) => traceCommands(v.unit, fn)

/** A VM with the vIOMMU, the device's vDEVICE and the guest's Config = S1 vSTE attached. */
function nestedVm(o: { config?: SmmuV3HwConfig; dev?: PciDeviceOptions; eats?: number } = {}) {
  const v = vm(o)
  const viommu = viommuAlloc(v, v.idev.id)
  vdeviceAlloc(v, viommu, v.idev.id)
  const hwpt = nestedHwpt(v, v.idev.id, viommu, guestVste(v, o.eats ?? 0))
  v.idev.replace(hwpt)
  return { ...v, viommu, hwpt }
}

describe('the VMM sets up a vSMMU', () => {
  it('GET_HW_INFO gives the raw ID registers; another type is EOPNOTSUPP', () => {
    const v = vm()
    const buf = v.vmm.mmap(PAGE)
    const info = (flags: number, type: number) => ({
      size: 40,
      flags,
      dev_id: v.idev.id,
      data_len: 40,
      data_uptr: BigInt(buf),
      in_data_type: type,
      out_data_type: 0,
      out_max_pasid_log2: 0,
      out_capabilities: 0n,
    })
    const a = info(IOMMU_HW_INFO_FLAG_INPUT_TYPE, IOMMU_HW_INFO_TYPE_ARM_SMMUV3)
    v.fd.ioctl(IOMMU_GET_HW_INFO, a)
    expect([a.out_data_type, a.data_len]).toEqual([IOMMU_HW_INFO_TYPE_ARM_SMMUV3, 40])
    const dv = new DataView(v.vmm.read(buf, 40).buffer)
    // What a VMM reads before offering a vSMMU: IDR0.S1P and S2P (nesting), IDR3.FWB.
    const idr0 = dv.getUint32(8, true)
    expect(idr0 & (Idr0.S1P | Idr0.S2P)).toBe(Idr0.S1P | Idr0.S2P)
    expect(dv.getUint32(8 + 12, true) & Idr3.FWB).toBe(Idr3.FWB)
    for (let i = 0; i <= 5; i++) expect(dv.getUint32(8 + 4 * i, true)).toBe(v.unit.readReg(4 * i))
    expect(dv.getUint32(32, true)).toBe(v.unit.readReg(Mmio.IIDR))
    // arm_smmu_hw_info(): any other requested type goes to the implementation (none).
    expect(
      ioctlErr(() =>
        v.fd.ioctl(
          IOMMU_GET_HW_INFO,
          info(IOMMU_HW_INFO_FLAG_INPUT_TYPE, IOMMU_HW_INFO_TYPE_INTEL_VTD),
        ),
      ),
    ).toBe('EOPNOTSUPP')
  })

  it('IOMMU_VIOMMU_ALLOC: type ARM_SMMUV3 on a nest parent, the parent VMID; the errno of the rest', () => {
    const v = vm()
    const id = v.idev.id
    expect(ioctlErr(() => viommuAlloc(v, id, IOMMU_VIOMMU_TYPE_DEFAULT))).toBe('EOPNOTSUPP')
    // Tegra241 CMDQV needs the implementation ops this SMMU has not.
    expect(ioctlErr(() => viommuAlloc(v, id, IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV))).toBe('EOPNOTSUPP')
    const plain = { size: 48, flags: 0, dev_id: id, pt_id: v.ioas, out_hwpt_id: 0 }
    v.fd.ioctl(IOMMU_HWPT_ALLOC, plain)
    expect(
      ioctlErr(() => viommuAlloc(v, id, IOMMU_VIOMMU_TYPE_ARM_SMMUV3, plain.out_hwpt_id)),
    ).toBe('EINVAL')
    const viommu = viommuAlloc(v, id)
    vdeviceAlloc(v, viommu, id)
    v.idev.replace(nestedHwpt(v, id, viommu, guestVste(v)))
    // The vIOMMU's VMID is the parent's: the nested STE and every guest TLBI carry it.
    const vmid = parentDomain(v).vmid
    expect(fieldGet(Ste.Q2_S2VMID, steQ(v, v.dev)[2] as bigint)).toBe(vmid)
    const seq = trace(v, () => invalidate(v, viommu, [cmdTlbi(Op.TLBI_NH_ASID, 77, 0x3333)]))
    expect(seq[0]?.dw0).toBe(BigInt(Op.TLBI_NH_ASID) | (BigInt(vmid) << 32n) | (77n << 48n))
    // The vIOMMU holds its parent: the parent cannot go first.
    expect(ioctlErr(() => v.fd.ioctl(IOMMU_DESTROY, { size: 8, id: v.parent }))).toBe('EBUSY')
  })

  it('needs S2FWB, or a CANWBS device, to offer a vIOMMU (get_viommu_size)', () => {
    const config = { idr3: DEFAULT_IDR3 & ~Idr3.FWB }
    const v = vm({ config })
    expect(ioctlErr(() => viommuAlloc(v, v.idev.id))).toBe('EOPNOTSUPP')
    const coherent = addDev(v, { data: { canwbs: true } })
    expect(viommuAlloc(v, coherent.idev.id)).toBeGreaterThan(0)
  })

  it('refuses a parent of another SMMU (arm_vsmmu_init: EINVAL)', () => {
    const driver = smmuv3()
    const m = createMachine({ iommus: [driver, driver] })
    const vmm = m.createProcess()
    const fd = openIommufd(m, vmm)
    const alloc = { size: 12, flags: 0, out_ioas_id: 0 }
    fd.ioctl(IOMMU_IOAS_ALLOC, alloc)
    const a = fd.bindDevice(m.addPciDevice({ iommu: 0 }))
    const b = fd.bindDevice(m.addPciDevice({ iommu: 1 }))
    const parent = {
      size: 48,
      flags: IOMMU_HWPT_ALLOC_NEST_PARENT,
      dev_id: a.id,
      pt_id: alloc.out_ioas_id,
      out_hwpt_id: 0,
    }
    fd.ioctl(IOMMU_HWPT_ALLOC, parent)
    const cmd = {
      size: 40,
      flags: 0,
      type: IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
      dev_id: b.id,
      hwpt_id: parent.out_hwpt_id,
      out_viommu_id: 0,
    }
    expect(ioctlErr(() => fd.ioctl(IOMMU_VIOMMU_ALLOC, cmd))).toBe('EINVAL')
    cmd.dev_id = a.id
    fd.ioctl(IOMMU_VIOMMU_ALLOC, cmd)
    // A device behind the other SMMU cannot take a HWPT from this vIOMMU.
    const bytes = vmm.mmap(PAGE)
    vmm.write(bytes, le64(BYPASS_VSTE[0], BYPASS_VSTE[1]))
    expect(
      ioctlErr(() =>
        fd.ioctl(IOMMU_HWPT_ALLOC, {
          size: 56,
          dev_id: b.id,
          pt_id: cmd.out_viommu_id,
          data_type: IOMMU_HWPT_DATA_ARM_SMMUV3,
          data_len: 16,
          data_uptr: BigInt(bytes),
          out_hwpt_id: 0,
        }),
      ),
    ).toBe('EINVAL')
  })
})

describe("the guest's vSTE through IOMMU_HWPT_ALLOC on the vIOMMU", () => {
  it('validates it as arm_vsmmu_alloc_domain_nested does: flags EOPNOTSUPP, type and length EINVAL, illegal fields EIO', () => {
    const v = vm()
    const viommu = viommuAlloc(v, v.idev.id)
    const id = v.idev.id
    const good = guestVste(v)
    const alloc = (ste: [bigint, bigint], o = {}) =>
      ioctlErr(() => nestedHwpt(v, id, viommu, ste, o))
    expect(alloc(good, { flags: IOMMU_HWPT_ALLOC_PASID })).toBe('EOPNOTSUPP')
    expect(alloc(good, { type: IOMMU_HWPT_DATA_VTD_S1 })).toBe('EINVAL')
    expect(alloc(good, { len: 8 })).toBe('EINVAL')
    expect(alloc(good, { len: 24 })).toBe('EINVAL')
    const bad: [bigint, bigint][] = [
      // MEV is the kernel's to set.
      [good[0], good[1] | Ste.Q1_MEV],
      // Config nested and stage 2 are not the guest's.
      [(good[0] & ~Ste.Q0_CFG) | fieldPrep(Ste.Q0_CFG, SteCfg.NESTED), good[1]],
      [(good[0] & ~Ste.Q0_CFG) | fieldPrep(Ste.Q0_CFG, SteCfg.S2_TRANS), good[1]],
      // EATS = S1CHK.
      [good[0], good[1] | fieldPrep(Ste.Q1_EATS, 2)],
    ]
    for (const s of bad) expect(alloc(s)).toBe('EIO')
    // V = 0 is accepted whatever else the words hold (an abort, and nothing is checked).
    expect(alloc([good[0] & ~Ste.Q0_V, ~0n])).toBeNull()
    expect(alloc(good)).toBeNull()
  })

  it('installs Config = nested: DMA walks the guest CD table and stage-1 tables through the stage 2', () => {
    const v = nestedVm()
    const [q0, q1, q2] = steQ(v, v.dev) as [bigint, bigint, bigint]
    expect(fieldGet(Ste.Q0_CFG, q0)).toBe(SteCfg.NESTED)
    expect(q0 & Ste.Q0_S1CTXPTR).toBe(BigInt(v.guest.cdTable))
    expect(q1 & Ste.Q1_MEV).toBe(Ste.Q1_MEV)
    expect(fieldGet(Ste.Q2_S2VMID, q2)).toBe(parentDomain(v).vmid)
    // Read: VA → (guest S1) IPA G + 5 pages → (S2) the VMM's RAM page 5.
    expect(v.dev.dma.read(v.guest.VA, 1)[0]).toBe(0x9a)
    // Write: the bytes land in the VMM's RAM where both stages say, nowhere else.
    v.dev.dma.write(v.guest.VA + 0x10, new Uint8Array([1, 2, 3, 4]))
    expect([...v.vmm.read(v.ram + DATA_PAGE * PAGE + 0x10, 4)]).toEqual([1, 2, 3, 4])
    expect([...v.vmm.read(v.ram + OTHER_PAGE * PAGE + 0x10, 4)]).toEqual([0, 0, 0, 0])
    expect(v.unit.staleUses).toEqual([])
  })

  it('a Config = S1 vSTE needs a vDEVICE (ENOENT); abort and bypass vSTEs attach without one', () => {
    const v = vm()
    const viommu = viommuAlloc(v, v.idev.id)
    const s1 = nestedHwpt(v, v.idev.id, viommu, guestVste(v))
    expect(ioctlErr(() => v.idev.replace(s1))).toBe('ENOENT')
    // Bypass: the parent's plain stage-2 STE with its VMID; DMA uses IPAs.
    v.idev.replace(nestedHwpt(v, v.idev.id, viommu, BYPASS_VSTE))
    const q = steQ(v, v.dev)
    expect(fieldGet(Ste.Q0_CFG, q[0] as bigint)).toBe(SteCfg.S2_TRANS)
    expect(fieldGet(Ste.Q2_S2VMID, q[2] as bigint)).toBe(parentDomain(v).vmid)
    expect(v.dev.dma.read(G + DATA_PAGE * PAGE, 1)[0]).toBe(0x9a)
    // Abort, and V = 0 whatever the rest holds (validation zeroes it): an abort STE, no event.
    const invalid: [bigint, bigint] = [guestVste(v)[0] & ~Ste.Q0_V, ~0n]
    for (const ste of [ABORT_VSTE, invalid]) {
      v.idev.replace(nestedHwpt(v, v.idev.id, viommu, ste))
      expect(fieldGet(Ste.Q0_CFG, steQ(v, v.dev)[0] as bigint)).toBe(SteCfg.ABORT)
      const events = smmuv3EventLog(v.dev).length
      expect(() => v.dev.dma.read(G + DATA_PAGE * PAGE, 1)).toThrow(DmaFault)
      expect(smmuv3EventLog(v.dev)).toHaveLength(events)
    }
  })

  it('a nested HWPT and PASIDs exclude each other (iommufd: the nested HWPT is not PASID-compatible)', () => {
    const v = vm({ dev: { pasidBits: 8 } })
    const viommu = viommuAlloc(v, v.idev.id)
    vdeviceAlloc(v, viommu, v.idev.id)
    const nested = nestedHwpt(v, v.idev.id, viommu, guestVste(v))
    const s1 = {
      size: 48,
      flags: IOMMU_HWPT_ALLOC_PASID,
      dev_id: v.idev.id,
      pt_id: v.ioas,
      out_hwpt_id: 0,
    }
    v.fd.ioctl(IOMMU_HWPT_ALLOC, s1)
    // The RID is on the IOAS's automatic HWPT (not PASID-compatible): PASID attach EINVAL.
    v.idev.replace(nested)
    expect(ioctlErr(() => v.idev.attach(s1.out_hwpt_id, 1))).toBe('EINVAL')
    // The other order: PASID 1 in use, a RID HWPT that is not PASID-compatible is EINVAL
    // (iommufd_hwpt_pasid_compat) before the driver's own EBUSY could answer.
    v.idev.replace(s1.out_hwpt_id)
    v.idev.attach(s1.out_hwpt_id, 1)
    expect(ioctlErr(() => v.idev.replace(nested))).toBe('EINVAL')
  })
})

describe('guest invalidation through IOMMU_HWPT_INVALIDATE on the vIOMMU', () => {
  it('a guest table change needs TLBI_NH_VA; a CD change needs CFGI_CD by vSID', () => {
    const v = nestedVm()
    v.vmm.write(v.ram + OTHER_PAGE * PAGE, new Uint8Array([0x6b]))
    expect(v.dev.dma.read(v.guest.VA, 1)[0]).toBe(0x9a)
    // The guest remaps VA to its page 6 without invalidating: the TLB still translates to
    // page 5, and the detector names the command the guest owes.
    v.guest.setLeaf(v.guest.VA, G + OTHER_PAGE * PAGE)
    expect(v.dev.dma.read(v.guest.VA, 1)[0]).toBe(0x9a)
    expect(v.unit.staleUses.at(-1)).toMatchObject({
      cache: 'tlb',
      missing: 'TLBI_NH_VA',
      sid: v.dev.streamId,
    })
    const vmid = BigInt(parentDomain(v).vmid)
    const seq = trace(v, () =>
      expect(invalidate(v, v.viommu, [tlbiNhVa(v.guest.asid, v.guest.VA)])).toEqual([null, 1]),
    )
    // The guest's VMID field was replaced by the vIOMMU's; the VA and Leaf went through.
    expect(seq.map((c) => c.op)).toEqual(['TLBI_NH_VA', 'CMD_SYNC'])
    expect(fieldGet(Cmd.TLBI_D0_VMID, seq[0]?.dw0 ?? 0n)).toBe(Number(vmid))
    expect(seq[0]?.dw1).toBe(BigInt(v.guest.VA) | 1n)
    v.unit.staleUses.length = 0
    expect(v.dev.dma.read(v.guest.VA, 1)[0]).toBe(0x6b)
    // A new ASID in CD 0: CFGI_CD names the vSID (it reaches the SMMU with the StreamID),
    // then the old ASID's entries go with TLBI_NH_ASID.
    v.guest.setAsid(78)
    v.dev.dma.read(v.guest.VA, 1)
    expect(v.unit.staleUses.at(-1)).toMatchObject({ cache: 'cd', missing: 'CFGI_CD' })
    const seq2 = trace(v, () =>
      expect(
        invalidate(v, v.viommu, [
          cmdCfgiCd(Number(VSID), 0, true),
          cmdTlbi(Op.TLBI_NH_ASID, v.guest.asid, 0),
        ]),
      ).toEqual([null, 2]),
    )
    expect(seq2.map((c) => c.op)).toEqual(['CFGI_CD', 'TLBI_NH_ASID', 'CMD_SYNC'])
    expect(fieldGet(Cmd.CFGI_D0_SID, seq2[0]?.dw0 ?? 0n)).toBe(v.dev.streamId)
    v.unit.staleUses.length = 0
    expect(v.dev.dma.read(v.guest.VA, 1)[0]).toBe(0x6b)
    expect(v.unit.staleUses).toEqual([])
  })

  it('converts NSNH_ALL to NH_ALL of the VMID; EIO and entry_num at a forbidden command or an unknown vSID', () => {
    const v = nestedVm()
    const vmid = BigInt(parentDomain(v).vmid)
    const seq = trace(v, () =>
      expect(invalidate(v, v.viommu, [cmdOp(Op.TLBI_NSNH_ALL)])).toEqual([null, 1]),
    )
    expect(seq[0]).toEqual({
      op: 'TLBI_NH_ALL',
      dw0: BigInt(Op.TLBI_NH_ALL) | (vmid << 32n),
      dw1: 0n,
    })
    const asid = cmdTlbi(Op.TLBI_NH_ASID, 1, 0)
    expect(invalidate(v, v.viommu, [asid, cmdCfgiCd(0x99, 0, true)])).toEqual(['EIO', 1])
    for (const forbidden of [
      cmdCfgiSte(Number(VSID), true),
      cmdOp(Op.CFGI_ALL),
      cmdTlbi(Op.TLBI_S12_VMALL, 0, 1),
      cmdTlbi(Op.TLBI_S2_IPA, 0, 1),
      cmdOp(Op.CMD_SYNC),
      cmdOp(0x7f),
    ]) {
      expect(invalidate(v, v.viommu, [asid, asid, forbidden])).toEqual(['EIO', 2])
    }
  })

  it("keeps 7.2's quirks: an empty array is EINVAL, and a failure drops the converted, unissued block it counted", () => {
    const v = nestedVm()
    expect(invalidate(v, v.viommu, [])).toEqual(['EINVAL', 0])
    expect(invalidate(v, v.viommu, [cmdOp(Op.TLBI_NSNH_ALL)], { type: 7 })).toEqual(['EINVAL', 0])
    // The guest remaps VA and sends its TLBI_NH_VA with a bad CFGI_CD behind it: entry_num
    // counts the TLBI, but it was never issued (the block goes out only at 63 or the end).
    v.dev.dma.read(v.guest.VA, 1)
    v.vmm.write(v.ram + OTHER_PAGE * PAGE, new Uint8Array([0x6b]))
    v.guest.setLeaf(v.guest.VA, G + OTHER_PAGE * PAGE)
    const seq = trace(v, () =>
      expect(
        invalidate(v, v.viommu, [tlbiNhVa(v.guest.asid, v.guest.VA), cmdCfgiCd(0x99, 0, true)]),
      ).toEqual(['EIO', 1]),
    )
    expect(seq).toEqual([])
    expect(v.dev.dma.read(v.guest.VA, 1)[0]).toBe(0x9a)
    expect(v.unit.staleUses.at(-1)).toMatchObject({ missing: 'TLBI_NH_VA' })
    // Blocks of 63 plus a CMD_SYNC; a failure at 70 leaves commands 63..69 unissued.
    const many = Array.from({ length: 130 }, () => cmdTlbi(Op.TLBI_NH_ASID, 5, 0))
    const full = trace(v, () => expect(invalidate(v, v.viommu, many)).toEqual([null, 130]))
    expect(full.filter((c) => c.op === 'CMD_SYNC')).toHaveLength(3)
    expect(full.findIndex((c) => c.op === 'CMD_SYNC')).toBe(63)
    many[70] = cmdCfgiSte(0, true)
    const cut = trace(v, () => expect(invalidate(v, v.viommu, many)).toEqual(['EIO', 70]))
    expect(cut.filter((c) => c.op === 'TLBI_NH_ASID')).toHaveLength(63)
  })

  it('a CMD_SYNC that never completes is ETIMEDOUT, entry_num counting all but the last command of the block', () => {
    const v = nestedVm()
    // The SMMU stops consuming commands (its command queue disabled under the driver).
    const cr0 = v.unit.readReg(Mmio.CR0)
    v.unit.writeReg(Mmio.CR0, cr0 & ~Cr0.CMDQEN)
    const asid = cmdTlbi(Op.TLBI_NH_ASID, 5, 0)
    expect(invalidate(v, v.viommu, [asid, asid, asid])).toEqual(['ETIMEDOUT', 2])
    // 70 commands: the first block (63) fails, so entry_num is 62.
    expect(
      invalidate(
        v,
        v.viommu,
        Array.from({ length: 70 }, () => asid),
      ),
    ).toEqual(['ETIMEDOUT', 62])
  })

  it('copies entries of other lengths as copy_struct_from_user does', () => {
    const v = nestedVm()
    // 8-byte entries: the second qword reads as zero (TLBI_NH_ASID needs none).
    const seq = trace(v, () =>
      expect(invalidate(v, v.viommu, [cmdTlbi(Op.TLBI_NH_ASID, 9, 0)], { entryLen: 8 })).toEqual([
        null,
        1,
      ]),
    )
    expect(seq.map((c) => c.op)).toEqual(['TLBI_NH_ASID', 'CMD_SYNC'])
    // Longer entries: zero extra bytes are fine, anything else is E2BIG with entry_num 0.
    expect(invalidate(v, v.viommu, [cmdOp(Op.TLBI_NSNH_ALL)], { entryLen: 24 })).toEqual([null, 1])
    expect(invalidate(v, v.viommu, [cmdOp(Op.TLBI_NSNH_ALL)], { entryLen: 24, tail: 1 })).toEqual([
      'E2BIG',
      0,
    ])
  })

  it('forwards the guest ATC_INV with the physical StreamID when the guest enabled ATS', () => {
    const v = nestedVm({ dev: { ats: true } })
    // EATS = 0 in the vSTE: the kernel keeps ATS off for the guest.
    expect(fieldGet(Ste.Q1_EATS, steQ(v, v.dev)[1] as bigint)).toBe(0)
    expect(v.unit.atsEnabled(v.dev.streamId)).toBe(false)
    v.idev.replace(nestedHwpt(v, v.idev.id, v.viommu, guestVste(v, 1)))
    expect(fieldGet(Ste.Q1_EATS, steQ(v, v.dev)[1] as bigint)).toBe(1)
    expect(v.unit.atsEnabled(v.dev.streamId)).toBe(true)
    const seq = trace(v, () => invalidate(v, v.viommu, [cmdAtcInvAll(Number(VSID), 0)]))
    expect(seq[0]?.dw0).toBe(BigInt(Op.ATC_INV) | (BigInt(v.dev.streamId) << 32n))
  })
})

describe('the nest parent and guest events', () => {
  it('an IOAS_UNMAP reaches every vIOMMU on the parent: S2_IPA, NH_ALL of the shared VMID, then the DMA faults', () => {
    const v = nestedVm()
    // A second vIOMMU on the same parent (another vSMMU of the VM), with its own device.
    const b = addDev(v)
    const viommu2 = viommuAlloc(v, b.idev.id)
    vdeviceAlloc(v, viommu2, b.idev.id, 0x43n)
    b.idev.replace(nestedHwpt(v, b.idev.id, viommu2, guestVste(v)))
    expect(fieldGet(Ste.Q2_S2VMID, steQ(v, b.dev)[2] as bigint)).toBe(parentDomain(v).vmid)
    expect(v.dev.dma.read(v.guest.VA, 1)[0]).toBe(0x9a)
    expect(b.dev.dma.read(v.guest.VA, 1)[0]).toBe(0x9a)
    const vmid = BigInt(parentDomain(v).vmid)
    const seq = trace(v, () =>
      v.fd.ioctl(IOMMU_IOAS_UNMAP, {
        size: 24,
        ioas_id: v.ioas,
        iova: BigInt(G + DATA_PAGE * PAGE),
        length: BigInt(PAGE),
      }),
    )
    expect(seq.map((c) => c.op)).toEqual(['TLBI_S2_IPA', 'CMD_SYNC', 'TLBI_NH_ALL', 'CMD_SYNC'])
    expect(seq[2]?.dw0).toBe(BigInt(Op.TLBI_NH_ALL) | (vmid << 32n))
    for (const d of [v.dev, b.dev]) {
      expect(() => d.dma.read(v.guest.VA, 1)).toThrow(
        expect.objectContaining({ reason: 'translation' }),
      )
      expect(smmuv3EventLog(d).at(-1)?.event).toMatchObject({ s2: true, class: EvtClass.IN })
    }
    expect(v.unit.staleUses).toEqual([])
  })

  it('delivers a guest-stage fault to the vEVENTQ fd with the vSID in StreamID; stage-2 faults stay the host’s', () => {
    const v = nestedVm()
    const q = veventqAlloc(v, v.viommu)
    expect(fdPoll(v.vmm, q.fd) & POLLIN).toBe(0)
    expect(() => v.dev.dma.read(0x5000_0000, 4)).toThrow(
      expect.objectContaining({ reason: 'translation' }),
    )
    expect(fdPoll(v.vmm, q.fd) & POLLIN).toBe(POLLIN)
    const raw = smmuv3EventLog(v.dev).at(-1)?.event.raw ?? []
    const [ev] = readVevents(v, q.fd)
    expect(ev?.flags).toBe(0)
    expect(ev?.seq).toBe(0)
    // The raw record, StreamID replaced by the vSID, every other bit as the SMMU wrote it.
    expect(ev?.evt).toEqual([
      BigInt(EvtId.F_TRANSLATION) | (VSID << 32n),
      raw[1],
      0x5000_0000n,
      raw[3],
    ])
    expect(raw[0]).toBe(BigInt(EvtId.F_TRANSLATION) | (BigInt(v.dev.streamId) << 32n))
    expect(smmuv3EventLog(v.dev).at(-1)?.handled).toBe(true)
    // The stage-1 output IPA outside guest RAM: a stage-2 fault, the host's, not forwarded.
    expect(() => v.dev.dma.read(v.guest.VA + PAGE, 1)).toThrow(DmaFault)
    expect(fdPoll(v.vmm, q.fd) & POLLIN).toBe(0)
    expect(smmuv3EventLog(v.dev).at(-1)).toMatchObject({
      handled: false,
      event: { id: EvtId.F_TRANSLATION, s2: true, ipa: BigInt(v.guest.strayIpa) },
    })
    // A second guest fault gets the next sequence number.
    expect(() => v.dev.dma.write(0x6000_0000, new Uint8Array([1]))).toThrow(DmaFault)
    const [ev2] = readVevents(v, q.fd)
    expect(ev2?.seq).toBe(1)
    expect(ev2?.evt[2]).toBe(0x6000_0000n)
    // Without a vEVENTQ (fd closed, object destroyed) the guest event is the host's to log.
    fdClose(v.vmm, q.fd)
    v.fd.ioctl(IOMMU_DESTROY, { size: 8, id: q.id })
    expect(() => v.dev.dma.read(0x5000_0000, 4)).toThrow(DmaFault)
    expect(smmuv3EventLog(v.dev).at(-1)?.handled).toBe(false)
    // Back on a kernel (stage-1) domain the vmaster is gone: its stage-1 faults are the
    // host's even with a vEVENTQ.
    const q2 = veventqAlloc(v, v.viommu)
    v.idev.replace(v.ioas)
    expect(() => v.dev.dma.read(0x5000_0000, 4)).toThrow(DmaFault)
    expect(smmuv3EventLog(v.dev).at(-1)).toMatchObject({ handled: false, event: { s2: false } })
    expect(fdPoll(v.vmm, q2.fd) & POLLIN).toBe(0)
  })

  it('PRI page requests on a fault-capable nested HWPT: 7.2 denies them in its PRI thread, the fault fd stays empty', () => {
    const v = vm({ dev: { ats: true, pri: true } })
    const viommu = viommuAlloc(v, v.idev.id)
    vdeviceAlloc(v, viommu, v.idev.id)
    const fault = { size: 16, flags: 0, out_fault_id: 0, out_fault_fd: 0 }
    v.fd.ioctl(IOMMU_FAULT_QUEUE_ALLOC, fault)
    // FAULT_ID_VALID is iommufd's (stripped before the driver): the allocation succeeds and
    // the attach too (arm_smmu_enable_iopf() has nothing to do for a master that cannot stall).
    const hwpt = nestedHwpt(v, v.idev.id, viommu, guestVste(v, 1), {
      flags: IOMMU_HWPT_FAULT_ID_VALID,
      faultId: fault.out_fault_id,
    })
    v.idev.replace(hwpt)
    expect(v.dev.iommu?.faultParam ?? null).toBeNull()
    const sid = v.dev.streamId
    expect(v.unit.pageRequest(sid, { addr: 0x5000_0000n, read: true, grpid: 3 })).toBe(true)
    expect(v.unit.pageRequest(sid, { addr: 0x5000_1000n, read: true, last: true, grpid: 3 })).toBe(
      true,
    )
    // arm_smmu_handle_ppr(): logged as unexpected, the last request of the group denied.
    expect(smmuv3PriLog(v.dev)).toHaveLength(2)
    expect(v.unit.priResponses).toEqual([
      { sid, ssid: 0, ssv: false, grpid: 3, resp: PriResp.DENY },
    ])
    expect(fdPoll(v.vmm, fault.out_fault_fd) & POLLIN).toBe(0)
    const buf = v.vmm.mmap(PAGE)
    expect(fdRead(v.vmm, fault.out_fault_fd, buf, 40)).toBe(0)
  })
})

describe('stall faults: the IOPF route 7.2 has on SMMUv3', () => {
  /** IDR0.STALL_MODEL = stall-force: every master stalls (PCI functions included). */
  const STALL_FORCE = {
    idr0:
      ((DEFAULT_IDR0 & ~(3 << Idr0.STALL_MODEL_SHIFT)) |
        (Idr0.STALL_MODEL_FORCE << Idr0.STALL_MODEL_SHIFT)) >>>
      0,
  }

  /** A nested master on a fault-capable HWPT, the guest's CD asking for stalls. */
  function stallVm() {
    const v = vm({ config: STALL_FORCE, stall: true })
    const viommu = viommuAlloc(v, v.idev.id)
    vdeviceAlloc(v, viommu, v.idev.id)
    const fault = { size: 16, flags: 0, out_fault_id: 0, out_fault_fd: 0 }
    v.fd.ioctl(IOMMU_FAULT_QUEUE_ALLOC, fault)
    const hwpt = nestedHwpt(v, v.idev.id, viommu, guestVste(v), {
      flags: IOMMU_HWPT_FAULT_ID_VALID,
      faultId: fault.out_fault_id,
    })
    v.idev.replace(hwpt)
    return { ...v, viommu, hwpt, faultFd: fault.out_fault_fd }
  }

  function readFaults(v: Vm, fd: number) {
    const buf = v.vmm.mmap(PAGE)
    const n = fdRead(v.vmm, fd, buf, 4 * 40)
    const dv = new DataView(v.vmm.read(buf, n).buffer)
    const out = []
    for (let o = 0; o < n; o += 40) {
      out.push({
        flags: dv.getUint32(o, true),
        dev_id: dv.getUint32(o + 4, true),
        pasid: dv.getUint32(o + 8, true),
        grpid: dv.getUint32(o + 12, true),
        perm: dv.getUint32(o + 16, true),
        addr: dv.getBigUint64(o + 24, true),
        length: dv.getUint32(o + 32, true),
        cookie: dv.getUint32(o + 36, true),
      })
    }
    return out
  }

  function respond(v: Vm, fd: number, cookie: number, code: number): void {
    const buf = v.vmm.mmap(PAGE)
    const b = new Uint8Array(8)
    new DataView(b.buffer).setUint32(0, cookie, true)
    new DataView(b.buffer).setUint32(4, code, true)
    v.vmm.write(buf, b)
    expect(fdWrite(v.vmm, fd, buf, 8)).toBe(8)
  }

  it('a guest-stage stall reaches the fault fd; the response RESUMEs it and the retry goes through', () => {
    const v = stallVm()
    // The stream's CD and STE ask for stalls; the master is on the SMMU's IOPF queue.
    expect(v.dev.iommu?.faultParam).toBeTruthy()
    const q = veventqAlloc(v, v.viommu)
    const va = v.guest.VA + 2 * PAGE
    expect(() => v.dev.dma.read(va + 0x10, 4)).toThrow(
      expect.objectContaining({ reason: 'translation' }),
    )
    const sid = v.dev.streamId
    const [stalled] = v.unit.stalledTransactions()
    expect(stalled?.sid).toBe(sid)
    const ev = smmuv3EventLog(v.dev).at(-1)
    expect(ev).toMatchObject({
      handled: true,
      event: { stall: true, s2: false, stag: stalled?.stag },
    })
    // arm_smmu_handle_event() takes a stall before the vmaster: no vEVENT.
    expect(fdPoll(v.vmm, q.fd) & POLLIN).toBe(0)
    const [f] = readFaults(v, v.faultFd)
    expect(f).toEqual({
      flags: IOMMU_PGFAULT_FLAGS_LAST_PAGE,
      dev_id: v.idev.id,
      pasid: 0,
      grpid: stalled?.stag,
      perm: IOMMU_PGFAULT_PERM_READ,
      addr: BigInt(va + 0x10),
      length: 0,
      cookie: f?.cookie,
    })
    // The guest maps the page (no TLBI needed: nothing was cached) and answers.
    v.vmm.write(v.ram + OTHER_PAGE * PAGE + 0x10, new Uint8Array([4, 3, 2, 1]))
    v.guest.setLeaf(va, G + OTHER_PAGE * PAGE)
    const seq = trace(v, () => respond(v, v.faultFd, f?.cookie ?? -1, IOMMUFD_PAGE_RESP_SUCCESS))
    // arm_smmu_page_response(): RESUME with the STAG and RETRY, no CMD_SYNC.
    expect(seq).toEqual([
      {
        op: 'RESUME',
        dw0: BigInt(Op.RESUME) | fieldPrep(Cmd.RESUME_D0_RESP, Resume.RETRY) | (BigInt(sid) << 32n),
        dw1: BigInt(stalled?.stag ?? -1),
      },
    ])
    expect(v.unit.resumes).toEqual([{ sid, stag: stalled?.stag, action: Resume.RETRY }])
    expect(v.unit.stalledTransactions()).toEqual([])
    expect([...v.dev.dma.read(va + 0x10, 4)]).toEqual([4, 3, 2, 1])
    expect(v.unit.staleUses).toEqual([])
  })

  it('INVALID aborts; a stage-2 stall goes the same way; detach answers what is left', () => {
    const v = stallVm()
    const sid = v.dev.streamId
    expect(() => v.dev.dma.write(0x5000_0000, new Uint8Array([1]))).toThrow(DmaFault)
    const [f] = readFaults(v, v.faultFd)
    expect(f).toMatchObject({
      flags: IOMMU_PGFAULT_FLAGS_LAST_PAGE,
      perm: IOMMU_PGFAULT_PERM_WRITE,
    })
    respond(v, v.faultFd, f?.cookie ?? -1, IOMMUFD_PAGE_RESP_INVALID)
    expect(v.unit.resumes.at(-1)).toEqual({ sid, stag: f?.grpid, action: Resume.ABORT })
    // The stage-1 output IPA outside guest RAM: a stage-2 fault, stalled by STE.S2S, and
    // reported as an IOPF like any stall (7.2 does not look at S2 for stalls).
    expect(() => v.dev.dma.read(v.guest.VA + PAGE, 1)).toThrow(DmaFault)
    expect(smmuv3EventLog(v.dev).at(-1)).toMatchObject({
      handled: true,
      event: { stall: true, s2: true, ipa: BigInt(v.guest.strayIpa) },
    })
    const [g] = readFaults(v, v.faultFd)
    expect(g?.addr).toBe(BigInt(v.guest.VA + PAGE))
    // Unanswered when the device leaves the HWPT: answered INVALID (RESUME abort), and the
    // master leaves the IOPF queue with its last fault-capable domain.
    v.idev.replace(v.parent)
    expect(v.unit.resumes.at(-1)).toEqual({ sid, stag: g?.grpid, action: Resume.ABORT })
    expect(v.unit.stalledTransactions()).toEqual([])
    expect(v.dev.iommu?.faultParam ?? null).toBeNull()
    // On a kernel domain without a fault handler the core aborts the stall itself.
    expect(() => v.dev.dma.read(0x7000_0000_0000, 1)).toThrow(DmaFault)
    expect(smmuv3EventLog(v.dev).at(-1)).toMatchObject({ handled: false, event: { stall: true } })
    expect(v.unit.resumes.at(-1)?.action).toBe(Resume.ABORT)
    expect(v.unit.stalledTransactions()).toEqual([])
  })
})

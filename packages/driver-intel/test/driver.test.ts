/**
 * The intel-iommu driver's choices against the kernel's: the allocation-flag table
 * (reference §1.7), capabilities, reserved regions, PASID attach and replace, SSADE in
 * every PASID entry of a dirty-tracking domain, and the page request path.
 */
import {
  createMachine,
  HwptAllocFlags,
  IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE,
  IOMMU_FAULT_PAGE_REQUEST_PASID_VALID,
  IOMMU_FAULT_PAGE_RESPONSE_NEEDS_PASID,
  IOMMU_FAULT_PERM_READ,
  IOMMU_FAULT_PERM_WRITE,
  IommuCap,
  type IommuDomain,
  IommuPageResponseCode,
  type IopfGroup,
  iopfGroupResponse,
  type Machine,
  type PciDevice,
  Prot,
  ResvType,
} from '@iommu/core'
import { describe, expect, it } from 'vitest'
import {
  DEFAULT_CAP,
  DEFAULT_ECAP,
  Ecap,
  Fr,
  intel,
  intelFaultLog,
  intelPageRequestLog,
  Pe,
  Pgtt,
  RespCode,
  type VtdDomain,
  VtdIommuHw,
} from '../src/index.ts'

const { NEST_PARENT, DIRTY_TRACKING, PASID } = HwptAllocFlags

function rig(ecap = DEFAULT_ECAP, devOpts: Parameters<Machine['addPciDevice']>[0] = {}) {
  const m = createMachine({ iommus: [{ driver: intel(), config: { ecap, cap: DEFAULT_CAP } }] })
  const dev = m.addPciDevice({ pasidBits: 20, ...devOpts })
  m.iommu.iommuDeviceClaimDmaOwner(dev, 'test')
  return { m, dev, unit: m.units[0] as VtdIommuHw }
}

function alloc(m: Machine, dev: PciDevice, flags: number): VtdDomain {
  return m.iommu.iommuDomainAllocPagingUser(dev, flags, null) as VtdDomain
}

function errno(fn: () => unknown): string | null {
  try {
    fn()
    return null
  } catch (e) {
    return (e as { code?: string }).code ?? 'not an IommuError'
  }
}

/** The PASID entry of (dev, pasid), read the way the hardware finds it. */
function pasidEntry(m: Machine, unit: VtdIommuHw, dev: PciDevice, pasid: number): number {
  const mem = m.memory
  const root = mem.read64(
    unit.translationMode.rootTable + dev.bus * 16 + (dev.devfn >= 0x80 ? 8 : 0),
  )
  const ctx = Number(root & ~0xfffn) + (dev.devfn & 0x7f) * 32
  const dir = Number(mem.read64(ctx) & ~0xfffn)
  return Number(mem.read64(dir + (pasid >> 6) * 8) & ~0xfffn) + (pasid & 63) * 64
}

describe('unit binding', () => {
  it('leaves the unit → driver binding to the machine: every unit it creates is bound to the descriptor', () => {
    const d = intel()
    const m = createMachine({ iommus: [d, d] })
    expect(m.units.map((u) => u.driver === d)).toEqual([true, true])
    expect(m.units[0]).not.toBe(m.units[1])
    // The bare hardware carries no driver of its own.
    expect(Object.hasOwn(new VtdIommuHw(m, 'bare'), 'driver')).toBe(false)
  })
})

describe('domain_alloc_paging_flags (reference §1.7)', () => {
  it('prefers the first stage and falls back to the second stage as 7.2 does', () => {
    const { m, dev } = rig()
    const cases: [number, 'fs' | 'ss', boolean, boolean][] = [
      [0, 'fs', false, false],
      [PASID, 'fs', false, false],
      [NEST_PARENT, 'ss', true, false],
      [DIRTY_TRACKING, 'ss', false, true],
      [DIRTY_TRACKING | PASID, 'ss', false, true],
      [NEST_PARENT | DIRTY_TRACKING, 'ss', true, true],
      [NEST_PARENT | PASID, 'ss', true, false],
    ]
    for (const [flags, stage, parent, dirty] of cases) {
      const d = alloc(m, dev, flags)
      expect([flags, d.stage, d.nestedParent, d.dirtyOps !== null]).toEqual([
        flags,
        stage,
        parent,
        dirty,
      ])
      // 4-level tables, 4 KiB / 2 MiB / 1 GiB, 48-bit aperture (canonical lower half for FS).
      expect(d.pgsizeBitmap).toBe((1n << 12n) | (1n << 21n) | (1n << 30n))
      m.iommu.iommuDomainFree(d)
    }
    expect(errno(() => alloc(m, dev, 1 << 30))).toBe('EOPNOTSUPP')
    const data = { type: 1, len: 24, read: () => new Uint8Array(24) }
    expect(errno(() => m.iommu.iommuDomainAllocPagingUser(dev, 0, data))).toBe('EOPNOTSUPP')
  })

  it('refuses NEST_PARENT without ECAP.NEST and DIRTY_TRACKING without SSADS or SMPWC', () => {
    const noNest = rig(DEFAULT_ECAP & ~Ecap.NEST)
    expect(errno(() => alloc(noNest.m, noNest.dev, NEST_PARENT))).toBe('EOPNOTSUPP')
    for (const bit of [Ecap.SSADS, Ecap.SMPWC]) {
      const r = rig(DEFAULT_ECAP & ~bit)
      expect(errno(() => alloc(r.m, r.dev, DIRTY_TRACKING))).toBe('EOPNOTSUPP')
      expect(r.m.iommu.deviceIommuCapable(r.dev, IommuCap.DIRTY_TRACKING)).toBe(false)
    }
    // Without first-stage support even flags 0 get a second-stage table.
    const noFs = rig(DEFAULT_ECAP & ~Ecap.FSTS)
    expect(alloc(noFs.m, noFs.dev, 0).stage).toBe('ss')
  })

  it('refuses read-only maps on a nest parent (ERRATA_772415_SPR17)', () => {
    const { m, dev } = rig()
    const d = alloc(m, dev, NEST_PARENT)
    expect(errno(() => m.iommu.iommuMap(d, 0x10_0000n, 0x20_0000n, 0x1000n, Prot.READ))).toBe(
      'EINVAL',
    )
    m.iommu.iommuMap(d, 0x10_0000n, 0x20_0000n, 0x1000n, Prot.READ | Prot.WRITE)
  })
})

describe('capabilities and reserved regions', () => {
  it('answers capable() per reference §1.4', () => {
    const { m, dev } = rig()
    const cap = (c: number) => m.iommu.deviceIommuCapable(dev, c as never)
    expect(cap(IommuCap.CACHE_COHERENCY)).toBe(true)
    expect(cap(IommuCap.ENFORCE_CACHE_COHERENCY)).toBe(true)
    expect(cap(IommuCap.DIRTY_TRACKING)).toBe(true)
    expect(cap(IommuCap.NOEXEC)).toBe(false)
    expect(cap(IommuCap.DEFERRED_FLUSH)).toBe(false)
    expect(cap(IommuCap.PCI_ATS_SUPPORTED)).toBe(false)
    const noSc = rig(DEFAULT_ECAP & ~Ecap.SC, { ats: true })
    expect(noSc.m.iommu.deviceIommuCapable(noSc.dev, IommuCap.ENFORCE_CACHE_COHERENCY)).toBe(false)
    expect(noSc.m.iommu.deviceIommuCapable(noSc.dev, IommuCap.PCI_ATS_SUPPORTED)).toBe(true)
  })

  it('reports RMRRs of the device and the IOAPIC/MSI window; a DIRECT RMRR stays 1:1', () => {
    const bdf = '0000:01:00.0'
    const m = createMachine({
      iommus: [
        intel({
          rmrr: [
            { base: 0xe000_0000n, end: 0xe00f_ffffn, devices: [bdf] },
            { base: 0xd000_0000n, end: 0xd000_ffffn, devices: ['0000:02:00.0'] },
          ],
        }),
      ],
    })
    const dev = m.addPciDevice({ bdf })
    expect(m.iommu.iommuGetResvRegions(dev)).toEqual([
      {
        start: 0xe000_0000n,
        length: 0x10_0000n,
        prot: Prot.READ | Prot.WRITE,
        type: ResvType.DIRECT,
      },
      { start: 0xfee0_0000n, length: 0x10_0000n, prot: 0, type: ResvType.MSI },
    ])
    const d = dev.group?.defaultDomain as IommuDomain
    expect(m.iommu.iommuIovaToPhys(d, 0xe000_1234n)).toBe(0xe000_1234n)
    expect(dev.dma.read(0xe000_1000n, 4)).toHaveLength(4)
  })
})

describe('PASID attach and replace', () => {
  it('binds a domain to (RID, PASID) and replaces it by tear-down and set-up', () => {
    const { m, dev, unit } = rig()
    const iommu = m.iommu
    const a = alloc(m, dev, PASID)
    const b = alloc(m, dev, PASID | DIRTY_TRACKING)
    const pa = m.memory.allocFrames(2, 1) * 4096
    iommu.iommuMap(a, 0x4000_0000n, BigInt(pa), 0x1000n, Prot.READ | Prot.WRITE)
    iommu.iommuMap(b, 0x4000_0000n, BigInt(pa + 4096), 0x1000n, Prot.READ | Prot.WRITE)
    m.memory.writeBytes(pa, new Uint8Array([1]))
    m.memory.writeBytes(pa + 4096, new Uint8Array([2]))
    iommu.iommuAttachDevicePasid(a, dev, 3, { domain: null })
    const entry = pasidEntry(m, unit, dev, 3)
    const pgtt = () => Number((m.memory.read64(entry) & Pe.PGTT_MASK) >> Pe.PGTT_SHIFT)
    expect(pgtt()).toBe(Pgtt.FS)
    expect(Number(m.memory.read64(entry + 8) & Pe.DID_MASK)).toBe(a.didOn(unit))
    expect(dev.dma.read(0x4000_0000n, 1, { pasid: 3 })[0]).toBe(1)
    // The RID itself is blocked (claimed, no domain).
    expect(() => dev.dma.read(0x4000_0000n, 1)).toThrow()
    iommu.iommuReplaceDevicePasid(b, dev, 3, { domain: null })
    expect(pgtt()).toBe(Pgtt.SS)
    expect(Number(m.memory.read64(entry + 8) & Pe.DID_MASK)).toBe(b.didOn(unit))
    expect(dev.dma.read(0x4000_0000n, 1, { pasid: 3 })[0]).toBe(2)
    expect(a.devPasids).toEqual([])
    iommu.iommuDetachDevicePasid(b, dev, 3)
    expect(m.memory.read64(entry)).toBe(0n)
    expect(() => dev.dma.read(0x4000_0000n, 1, { pasid: 3 })).toThrow()
    expect(intelFaultLog(dev).at(-1)).toMatchObject({ reason: Fr.PASID_NOT_PRESENT, pasid: 3 })
    expect(unit.staleUses).toEqual([])
  })

  it('turns SSADE on in the RID and every PASID entry of a dirty-tracking domain', () => {
    const { m, dev, unit } = rig()
    const d = alloc(m, dev, DIRTY_TRACKING | PASID)
    const g = dev.group
    if (g === null) throw new Error('no group')
    m.iommu.iommuAttachGroupHandle(d, g, { domain: null })
    m.iommu.iommuAttachDevicePasid(d, dev, 9, { domain: null })
    const entries = [pasidEntry(m, unit, dev, 0), pasidEntry(m, unit, dev, 9)]
    const ssade = () => entries.map((e) => (m.memory.read64(e) & Pe.SSADE) !== 0n)
    expect(ssade()).toEqual([false, false])
    d.dirtyOps?.setDirtyTracking(d, true)
    expect(ssade()).toEqual([true, true])
    d.dirtyOps?.setDirtyTracking(d, false)
    expect(ssade()).toEqual([false, false])
  })
})

describe('page requests through the driver', () => {
  it("reports a page group to the domain's fault handler and sends its response", () => {
    const { m, dev, unit } = rig(DEFAULT_ECAP, { ats: true, pri: true })
    const d = alloc(m, dev, PASID)
    const groups: IopfGroup[] = []
    d.iopfHandler = (g) => groups.push(g)
    m.iommu.iommuAttachDevicePasid(d, dev, 4, { domain: null })
    expect(dev.iommu?.faultParam).toBeTruthy()
    const req = { rid: dev.rid, pasid: 4, read: true, write: true, prgIndex: 17 }
    expect(unit.pageRequest({ ...req, addr: 0x5000_0000n, lpig: false })).toBe(true)
    expect(unit.pageRequest({ ...req, addr: 0x5000_1000n, lpig: true })).toBe(true)
    // The page request interrupt ran the driver's reader: the queue is empty again.
    expect(unit.pendingPageRequests()).toEqual([])
    expect(intelPageRequestLog(dev)).toHaveLength(2)
    expect(groups).toHaveLength(1)
    const g = groups[0] as IopfGroup
    expect(g.faultCount).toBe(2)
    expect(g.lastFault.fault.prm).toEqual({
      flags:
        IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE |
        IOMMU_FAULT_PAGE_REQUEST_PASID_VALID |
        IOMMU_FAULT_PAGE_RESPONSE_NEEDS_PASID,
      pasid: 4,
      grpid: 17,
      perm: IOMMU_FAULT_PERM_READ | IOMMU_FAULT_PERM_WRITE,
      addr: 0x5000_1000n,
      privateData: [0n, 0n],
    })
    expect(unit.groupPending(dev.rid, 4, 17)).toBe(true)
    iopfGroupResponse(g, IommuPageResponseCode.SUCCESS)
    expect(unit.groupPending(dev.rid, 4, 17)).toBe(false)
    expect(unit.pageResponses).toEqual([
      { rid: dev.rid, pasid: 4, prgIndex: 17, code: RespCode.SUCCESS, auto: false },
    ])
    // Detaching the PASID drains and takes the device off the IOPF queue.
    m.iommu.iommuDetachDevicePasid(d, dev, 4)
    expect(dev.iommu?.faultParam ?? null).toBeNull()
    expect(unit.staleUses).toEqual([])
  })

  it("answers INVALID when the PASID's domain has no fault handler", () => {
    const { m, dev, unit } = rig(DEFAULT_ECAP, { ats: true, pri: true })
    const d = alloc(m, dev, PASID)
    m.iommu.iommuAttachDevicePasid(d, dev, 4, { domain: null })
    const r = { rid: dev.rid, pasid: 4, addr: 0n, read: true, write: false, lpig: true }
    expect(unit.pageRequest({ ...r, prgIndex: 5 })).toBe(true)
    expect(unit.groupPending(dev.rid, 4, 5)).toBe(false)
    expect(unit.pageResponses).toEqual([
      { rid: dev.rid, pasid: 4, prgIndex: 5, code: RespCode.INVALID, auto: false },
    ])
  })

  it('answers Invalid Request itself for a request it cannot report (no ATS/PRI device)', () => {
    const { dev, unit } = rig(DEFAULT_ECAP, { ats: true, pri: true })
    // A RID the unit has no device for: the context is not present, the hardware refuses.
    expect(
      unit.pageRequest({
        rid: 0x7700,
        addr: 0n,
        read: true,
        write: false,
        lpig: true,
        prgIndex: 2,
      }),
    ).toBe(false)
    expect(unit.pageResponses.at(-1)).toMatchObject({
      rid: 0x7700,
      code: RespCode.INVALID,
      auto: true,
    })
    expect(intelFaultLog(dev).at(-1)?.reason).toBe(Fr.ROOT_NOT_PRESENT)
  })
})

import { describe, expect, it } from 'vitest'
import { DomainType, HwptAllocFlags, Prot, ResvType } from '../constants.ts'
import { type DomainOps, IommuDomain } from '../domain.ts'
import { IommuError } from '../errno.ts'
import { IotlbGather } from '../gather.ts'
import { createMachine, type Machine } from '../machine/machine.ts'
import type { PciDevice, PciDeviceOptions } from '../machine/pci.ts'
import {
  IOMMU_TEST_PASID_RESERVED,
  type MockDomain,
  type MockIommuOptions,
  type MockIommuUnit,
  mockIommu,
} from '../testing/mock-iommu.ts'
import type { AttachHandle, IommuGroup } from './group.ts'

function rig(o: MockIommuOptions = {}, machine: { defaultDomainType?: number } = {}) {
  const m = createMachine({ iommus: [mockIommu(o), mockIommu({ name: 'other' })], ...machine })
  const add = (d: PciDeviceOptions = {}) => m.addPciDevice(d)
  return { m, core: m.iommu, add }
}

function code(fn: () => unknown): string | undefined {
  try {
    fn()
  } catch (e) {
    return e instanceof IommuError ? e.code : `not an IommuError: ${e}`
  }
  return undefined
}

function grp(dev: PciDevice): IommuGroup {
  const g = dev.group
  if (g === null) throw new Error('no group')
  return g
}

function unitDomain(m: Machine, dev: PciDevice): IommuDomain | null {
  return (m.units[0] as MockIommuUnit).devState(dev.rid).domain
}

const h = (): AttachHandle => ({ domain: null })

describe('probe and default domains (§1.5 rule 4)', () => {
  it('gives every device a group and attaches the default domain at probe', () => {
    const { core, add } = rig()
    const dev = add({ pasidBits: 20 })
    const g = grp(dev)
    expect(core.groups.has(g)).toBe(true)
    expect(g.domain).toBe(g.defaultDomain)
    // The mock, like the kernel's, forces its blocked domain as the default domain.
    expect(g.defaultDomain?.type).toBe(DomainType.BLOCKED)
    expect(dev.iommu?.maxPasids).toBe(2 ** 20)
  })

  it('allocates a PASID-capable DMA domain for PASID devices, DMA otherwise', () => {
    const { add } = rig({ defaultDomain: 'auto' })
    const plain = add()
    expect(grp(plain).defaultDomain?.type).toBe(DomainType.DMA)
    const pasid = add({ pasidBits: 8 })
    expect(grp(pasid).defaultDomain?.type).toBe(DomainType.DMA)
    expect(pasid.iommu?.maxPasids).toBe(256)
  })

  it('uses identity with iommu.passthrough, but an untrusted device forces DMA', () => {
    const { add } = rig({ defaultDomain: 'auto' }, { defaultDomainType: DomainType.IDENTITY })
    expect(grp(add()).defaultDomain?.type).toBe(DomainType.IDENTITY)
    expect(grp(add({ untrusted: true })).defaultDomain?.type).toBe(DomainType.DMA)
  })

  it('identity-maps IOMMU_RESV_DIRECT regions into a DMA default domain before attach', () => {
    const { core, add } = rig({ defaultDomain: 'auto' })
    const region = {
      start: 0x20_0000n,
      length: 0x3000n,
      prot: Prot.READ | Prot.WRITE,
      type: ResvType.DIRECT,
    }
    const dev = add({ resvRegions: [region] })
    const d = grp(dev).defaultDomain as IommuDomain
    expect(core.iommuIovaToPhys(d, 0x20_1234n)).toBe(0x20_1234n)
    expect(core.iommuIovaToPhys(d, 0x20_3000n)).toBe(0n)
    expect(dev.iommu?.requireDirect).toBe(true)
    // DMA works through the direct mapping right away.
    dev.dma.write(0x20_0010n, new Uint8Array([9]))
  })

  it('releases devices and frees the group when the last one leaves', () => {
    const { m, core, add } = rig({ defaultDomain: 'auto' })
    const dev = add()
    const g = grp(dev)
    m.removePciDevice(dev)
    expect(dev.iommu).toBeNull()
    expect(core.groups.has(g)).toBe(false)
    expect(g.defaultDomain).toBeNull()
  })
})

describe('group-wide attach (§1.5 rules 1–3)', () => {
  it('rule 1: attaches every device of the group; setting the same domain again is a no-op', () => {
    const { m, core, add } = rig({ deviceGroup: 'pci' })
    const a = add({ isolationGroup: 'bridge' })
    const b = add({ isolationGroup: 'bridge' })
    expect(grp(a)).toBe(grp(b))
    const d = core.iommuPagingDomainAllocFlags(a)
    core.iommuAttachGroup(d, grp(a))
    expect(grp(a).domain).toBe(d)
    expect(unitDomain(m, a)).toBe(d)
    expect(unitDomain(m, b)).toBe(d)
    // iommu_attach_group checks for a non-core domain first, even the same one (EBUSY)...
    expect(code(() => core.iommuAttachGroup(d, grp(a)))).toBe('EBUSY')
    // ...while a replace to the domain already attached calls no driver at all.
    ;(m.units[0] as MockIommuUnit).devState(b.rid).domain = null
    core.iommuReplaceGroupHandle(grp(a), d, h())
    expect(unitDomain(m, b)).toBeNull()
    expect(grp(a).domain).toBe(d)
  })

  it('rule 1: a device failing attach rolls the others back and keeps group.domain', () => {
    const { m, core, add } = rig({ deviceGroup: 'pci' })
    const a = add({ isolationGroup: 'x' })
    const b = add({ isolationGroup: 'x', dirtyTracking: false })
    const g = grp(a)
    const old = g.domain
    const dirty = core.iommuPagingDomainAllocFlags(a, HwptAllocFlags.DIRTY_TRACKING)
    // b cannot track dirty pages: attach fails with EINVAL after a was switched.
    expect(code(() => core.iommuAttachGroup(dirty, g))).toBe('EINVAL')
    expect(g.domain).toBe(old)
    expect(unitDomain(m, a)).toBe(old)
    expect(unitDomain(m, b)).toBe(old)
  })

  it('rule 2: EBUSY when another non-core domain is attached; detach or replace first', () => {
    const { core, add } = rig()
    const dev = add()
    const d1 = core.iommuPagingDomainAllocFlags(dev)
    const d2 = core.iommuPagingDomainAllocFlags(dev)
    core.iommuAttachGroup(d1, grp(dev))
    expect(code(() => core.iommuAttachGroup(d2, grp(dev)))).toBe('EBUSY')
    core.iommuDetachGroup(d1, grp(dev))
    expect(grp(dev).domain).toBe(grp(dev).defaultDomain)
    core.iommuAttachGroup(d2, grp(dev))
    expect(grp(dev).domain).toBe(d2)
  })

  it("rule 2: EINVAL for a domain of another driver; static domains of the driver's own are fine", () => {
    const { m, core, add } = rig()
    const dev = add()
    const foreign = core.iommuPagingDomainAllocFlags(m.addPciDevice({ iommu: 1 }))
    expect(code(() => core.iommuAttachGroup(foreign, grp(dev)))).toBe('EINVAL')
    const ident = dev.unit?.driver.ops.identityDomain as IommuDomain
    core.iommuAttachGroup(ident, grp(dev))
    expect(grp(dev).domain).toBe(ident)
  })

  it('rule 2: iommu_attach_device is EINVAL for a group of more than one device', () => {
    const { core, add } = rig({ deviceGroup: 'pci' })
    const a = add({ isolationGroup: 'y' })
    add({ isolationGroup: 'y' })
    const d = core.iommuPagingDomainAllocFlags(a)
    expect(code(() => core.iommuAttachDevice(d, a))).toBe('EINVAL')
    const solo = add()
    core.iommuAttachDevice(core.iommuPagingDomainAllocFlags(solo), solo)
  })

  it('rule 2: detach returns to the blocking domain when owned, the default domain otherwise', () => {
    const { core, add } = rig({ defaultDomain: 'auto' })
    const dev = add()
    const g = grp(dev)
    const d = core.iommuPagingDomainAllocFlags(dev)
    core.iommuAttachGroup(d, g)
    core.iommuDetachGroup(d, g)
    expect(g.domain).toBe(g.defaultDomain)
    core.iommuDeviceClaimDmaOwner(dev, 'vfio')
    core.iommuAttachGroupHandle(d, g, h())
    core.iommuDetachGroupHandle(d, g)
    expect(g.domain).toBe(g.blockingDomain)
    expect(g.domain?.type).toBe(DomainType.BLOCKED)
  })

  it('rule 3: the first attach by handle is EBUSY while a handle is stored for PASID 0', () => {
    const { core, add } = rig()
    const dev = add()
    const g = grp(dev)
    const d = core.iommuPagingDomainAllocFlags(dev)
    const handle = h()
    core.iommuAttachGroupHandle(d, g, handle)
    expect(handle.domain).toBe(d)
    expect(code(() => core.iommuAttachGroupHandle(d, g, h()))).toBe('EBUSY')
  })

  it('rule 3: replace goes straight to the new domain; on failure the old domain and handle stay', () => {
    const { m, core, add } = rig()
    const dev = add({ dirtyTracking: false })
    const g = grp(dev)
    const d1 = core.iommuPagingDomainAllocFlags(dev)
    const h1 = h()
    core.iommuAttachGroupHandle(d1, g, h1)
    const d2 = core.iommuPagingDomainAllocFlags(dev)
    const h2 = h()
    core.iommuReplaceGroupHandle(g, d2, h2)
    expect(g.domain).toBe(d2)
    expect(g.pasidArray.get(0)?.handle).toBe(h2)
    const good = m.addPciDevice()
    const dirty = core.iommuPagingDomainAllocFlags(good, HwptAllocFlags.DIRTY_TRACKING)
    expect(code(() => core.iommuReplaceGroupHandle(g, dirty, h()))).toBe('EINVAL')
    expect(g.domain).toBe(d2)
    expect(g.pasidArray.get(0)?.handle).toBe(h2)
  })
})

describe('DMA ownership (§1.5 rule 5)', () => {
  it('the first claim moves the group to the blocking domain; the last release restores the default', () => {
    const { core, add } = rig({ defaultDomain: 'auto', deviceGroup: 'pci' })
    const a = add({ isolationGroup: 'z' })
    const b = add({ isolationGroup: 'z' })
    const g = grp(a)
    core.iommuDeviceClaimDmaOwner(a, 'vfio')
    expect(g.domain).toBe(g.blockingDomain)
    core.iommuDeviceClaimDmaOwner(b, 'vfio')
    expect(g.ownerCnt).toBe(2)
    core.iommuDeviceReleaseDmaOwner(b)
    expect(g.domain).toBe(g.blockingDomain)
    core.iommuDeviceReleaseDmaOwner(a)
    expect(g.domain).toBe(g.defaultDomain)
    expect(g.owner).toBeNull()
  })

  it('EPERM: another owner cookie, or a kernel driver using the DMA API', () => {
    const { core, add } = rig({ defaultDomain: 'auto' })
    const dev = add()
    core.iommuDeviceClaimDmaOwner(dev, 'vfio')
    expect(code(() => core.iommuDeviceClaimDmaOwner(dev, 'other'))).toBe('EPERM')
    expect(code(() => core.iommuGroupClaimDmaOwner(grp(dev), 'vfio'))).toBe('EPERM')
    const k = add()
    core.iommuDeviceUseDefaultDomain(k)
    expect(code(() => core.iommuDeviceClaimDmaOwner(k, 'vfio'))).toBe('EPERM')
  })

  it('EBUSY: claiming a group attached to a non-default domain or with PASIDs attached', () => {
    const { core, add } = rig()
    const dev = add({ pasidBits: 20 })
    const d = core.iommuPagingDomainAllocFlags(dev, HwptAllocFlags.PASID)
    core.iommuAttachGroup(d, grp(dev))
    expect(code(() => core.iommuDeviceClaimDmaOwner(dev, 'vfio'))).toBe('EBUSY')
    core.iommuDetachGroup(d, grp(dev))
    core.iommuAttachDevicePasid(d, dev, 5)
    expect(code(() => core.iommuDeviceClaimDmaOwner(dev, 'vfio'))).toBe('EBUSY')
  })

  it('EBUSY: a kernel driver cannot use the DMA API of a user-owned group', () => {
    const { core, add } = rig()
    const dev = add()
    core.iommuDeviceClaimDmaOwner(dev, 'vfio')
    expect(code(() => core.iommuDeviceUseDefaultDomain(dev))).toBe('EBUSY')
  })

  it('EINVAL: a device with IOMMU_RESV_DIRECT regions can never be blocked, so never claimed', () => {
    const { core, add } = rig({ defaultDomain: 'auto' })
    const dev = add({
      resvRegions: [{ start: 0x10_0000n, length: 0x1000n, prot: Prot.READ, type: ResvType.DIRECT }],
    })
    expect(code(() => core.iommuDeviceClaimDmaOwner(dev, 'vfio'))).toBe('EINVAL')
    expect(grp(dev).domain).toBe(grp(dev).defaultDomain)
    expect(grp(dev).ownerCnt).toBe(0)
  })
})

describe('PASID attach (§1.6)', () => {
  function pasidRig() {
    const r = rig()
    const dev = r.add({ pasidBits: 10 })
    const d = r.core.iommuPagingDomainAllocFlags(dev, HwptAllocFlags.PASID)
    return { ...r, dev, d }
  }

  it('rule 1: EOPNOTSUPP for a domain without set_dev_pasid', () => {
    const { core, dev } = pasidRig()
    const ops: DomainOps = { attachDev() {} }
    const bare = new IommuDomain({ ops })
    bare.owner = dev.unit?.driver ?? null
    expect(code(() => core.iommuAttachDevicePasid(bare, dev, 3))).toBe('EOPNOTSUPP')
  })

  it('rule 2: EINVAL for PASID 0 and for a domain of another driver', () => {
    const { m, core, dev, d } = pasidRig()
    expect(code(() => core.iommuAttachDevicePasid(d, dev, 0))).toBe('EINVAL')
    const foreign = core.iommuPagingDomainAllocFlags(m.addPciDevice({ iommu: 1 }))
    expect(code(() => core.iommuAttachDevicePasid(foreign, dev, 3))).toBe('EINVAL')
  })

  it('rule 3: EBUSY while the group is in PCI reset recovery', () => {
    const r = rig()
    const dev = r.add({ pasidBits: 10, ats: true })
    const d = r.core.iommuPagingDomainAllocFlags(dev)
    r.core.pciDevResetIommuPrepare(dev)
    expect(code(() => r.core.iommuAttachDevicePasid(d, dev, 3))).toBe('EBUSY')
    expect(code(() => r.core.iommuAttachGroup(d, grp(dev)))).toBe('EBUSY')
    r.core.pciDevResetIommuDone(dev)
    r.core.iommuAttachDevicePasid(d, dev, 3)
    expect(grp(dev).pasidDomain(3)).toBe(d)
  })

  it('rule 4: EINVAL when the PASID does not fit a PASID-capable device', () => {
    const { core, dev, d } = pasidRig()
    expect(code(() => core.iommuAttachDevicePasid(d, dev, 1024))).toBe('EINVAL')
    core.iommuAttachDevicePasid(d, dev, 1023)
  })

  it('rule 5: EBUSY when the PASID is already attached (attach never overwrites)', () => {
    const { core, dev, d } = pasidRig()
    core.iommuAttachDevicePasid(d, dev, 7)
    expect(code(() => core.iommuAttachDevicePasid(d, dev, 7))).toBe('EBUSY')
  })

  it('rule 6: the entry becomes visible only after success; failures leave nothing', () => {
    const r = rig()
    const dev = r.add({ pasidBits: 20 })
    const d1 = r.core.iommuPagingDomainAllocFlags(dev)
    const d2 = r.core.iommuPagingDomainAllocFlags(dev)
    const p = IOMMU_TEST_PASID_RESERVED
    r.core.iommuAttachDevicePasid(d1, dev, p)
    // The mock fails the second non-blocked set_dev_pasid of PASID 1024 with ENOMEM.
    const h1 = h()
    expect(code(() => r.core.iommuReplaceDevicePasid(d2, dev, p, h1))).toBe('ENOMEM')
    expect(grp(dev).pasidDomain(p)).toBe(d1)
    expect(h1.domain).toBeNull()
  })

  it('replace: EINVAL when nothing is attached, without a handle, or with the same handle', () => {
    const { core, dev, d } = pasidRig()
    expect(code(() => core.iommuReplaceDevicePasid(d, dev, 9, h()))).toBe('EINVAL')
    expect(grp(dev).pasidArray.has(9)).toBe(false)
    const handle = h()
    core.iommuAttachDevicePasid(d, dev, 9, handle)
    expect(code(() => core.iommuReplaceDevicePasid(d, dev, 9, handle))).toBe('EINVAL')
    expect(code(() => core.iommuReplaceDevicePasid(d, dev, 9, null as never))).toBe('EINVAL')
    // The same domain with a new handle only swaps the handle.
    const h2 = h()
    core.iommuReplaceDevicePasid(d, dev, 9, h2)
    expect(grp(dev).pasidArray.get(9)?.handle).toBe(h2)
  })

  it('detach removes through the blocked domain and cannot fail', () => {
    const { m, core, dev, d } = pasidRig()
    core.iommuAttachDevicePasid(d, dev, 4)
    expect((m.units[0] as MockIommuUnit).devState(dev.rid).pasids.get(4)).toBe(d)
    core.iommuDetachDevicePasid(d, dev, 4)
    expect(grp(dev).pasidArray.has(4)).toBe(false)
    expect((m.units[0] as MockIommuUnit).devState(dev.rid).pasids.has(4)).toBe(false)
    core.iommuDetachDevicePasid(d, dev, 4)
  })

  it('devices without PASIDs are skipped: a group mixing both still takes PASIDs', () => {
    const r = rig({ deviceGroup: 'pci' })
    const a = r.add({ isolationGroup: 'p', pasidBits: 4 })
    const b = r.add({ isolationGroup: 'p' })
    const d = r.core.iommuPagingDomainAllocFlags(a)
    r.core.iommuAttachDevicePasid(d, b, 15)
    expect((r.m.units[0] as MockIommuUnit).devState(b.rid).pasids.has(15)).toBe(false)
    expect((r.m.units[0] as MockIommuUnit).devState(a.rid).pasids.get(15)).toBe(d)
  })

  it('hands out global PASIDs in [1, max_pasids - 1]', () => {
    const { core, dev } = pasidRig()
    expect(core.iommuAllocGlobalPasid(dev)).toBe(1)
    expect(core.iommuAllocGlobalPasid(dev)).toBe(2)
    core.iommuFreeGlobalPasid(1)
    expect(core.iommuAllocGlobalPasid(dev)).toBe(1)
    const none = rig().add()
    expect(core.iommuAllocGlobalPasid(none)).toBe(0xffff_ffff)
  })
})

describe('reserved regions (§1.8)', () => {
  it('merges regions of the same type that overlap or touch, never across types', () => {
    const { core, add } = rig({
      deviceGroup: 'pci',
      resvRegions: [{ start: 0x8000000n, length: 0x100000n, prot: 0, type: ResvType.SW_MSI }],
    })
    const a = add({
      isolationGroup: 'r',
      resvRegions: [
        { start: 0x1000n, length: 0x1000n, prot: 0, type: ResvType.RESERVED },
        { start: 0x3000n, length: 0x1000n, prot: 0, type: ResvType.RESERVED },
      ],
    })
    add({
      isolationGroup: 'r',
      resvRegions: [
        { start: 0x2000n, length: 0x1000n, prot: 0, type: ResvType.RESERVED },
        { start: 0x2800n, length: 0x100n, prot: 0, type: ResvType.DIRECT_RELAXABLE },
      ],
    })
    const list = core.iommuGetGroupResvRegions(grp(a))
    expect(list.map((r) => [r.start, r.length, r.type])).toEqual([
      [0x1000n, 0x3000n, ResvType.RESERVED],
      [0x2800n, 0x100n, ResvType.DIRECT_RELAXABLE],
      [0x8000000n, 0x100000n, ResvType.SW_MSI],
    ])
  })
})

describe('iommu_map / iommu_unmap (§1.9)', () => {
  function mapRig() {
    const r = rig({ ioPageSize: 4096, hugePageSize: 0x20_0000 })
    const dev = r.add()
    const d = r.core.iommuPagingDomainAllocFlags(dev) as MockDomain
    return { ...r, dev, d }
  }

  it('EINVAL for a domain without paging, without page sizes, or unaligned arguments', () => {
    const { core, d, dev } = mapRig()
    const blocked = grp(dev).defaultDomain as IommuDomain
    expect(code(() => core.iommuMap(blocked, 0n, 0n, 4096n, Prot.READ))).toBe('EINVAL')
    expect(code(() => core.iommuMap(d, 0x1000800n, 0x10_0000n, 4096n, Prot.READ))).toBe('EINVAL')
    expect(code(() => core.iommuMap(d, 0x1000000n, 0x10_0800n, 4096n, Prot.READ))).toBe('EINVAL')
    expect(code(() => core.iommuMap(d, 0x1000000n, 0x10_0000n, 100n, Prot.READ))).toBe('EINVAL')
    expect(d.mappedPages).toBe(0)
  })

  it('iommu_pgsize splits a range into the largest pages alignment allows', () => {
    const { core, d } = mapRig()
    // 0x1f_f000..0x60_1000: one 4K page, then 2 MiB pages, then a 4K tail.
    expect(core.iommuPgsize(d, 0x1f_f000n, 0x1f_f000n, 0x40_2000n)).toEqual({
      pgsize: 4096n,
      count: 1,
    })
    expect(core.iommuPgsize(d, 0x20_0000n, 0x20_0000n, 0x40_1000n)).toEqual({
      pgsize: 0x20_0000n,
      count: 2,
    })
    // IOVA and PA offset differently within 2 MiB: only 4K pages, all of them.
    expect(core.iommuPgsize(d, 0x20_0000n, 0x20_1000n, 0x40_0000n)).toEqual({
      pgsize: 4096n,
      count: 1024,
    })
    core.iommuMap(d, 0x1f_f000n, 0x1f_f000n, 0x40_2000n, Prot.READ | Prot.WRITE)
    expect(d.pteLength(0x200)).toBe(512)
    expect(d.pteLength(0x1ff)).toBe(1)
    expect(d.pteLength(0x600)).toBe(1)
    expect(core.iommuIovaToPhys(d, 0x3f_fff0n)).toBe(0x3f_fff0n)
  })

  it('unmaps everything this call mapped when a later piece fails', () => {
    const { core, d } = mapRig()
    core.iommuMap(d, 0x40_0000n, 0x80_0000n, 0x1000n, Prot.READ)
    expect(code(() => core.iommuMap(d, 0x3f_e000n, 0x1f_e000n, 0x4000n, Prot.READ))).toBe(
      'EADDRINUSE',
    )
    expect(core.iommuIovaToPhys(d, 0x3f_e000n)).toBe(0n)
    expect(core.iommuIovaToPhys(d, 0x40_0000n)).toBe(0x80_0000n)
  })

  it('unmap returns bytes unmapped, stops at the first hole, and is 0 when unaligned', () => {
    const { core, d } = mapRig()
    core.iommuMap(d, 0x100_0000n, 0x100_0000n, 0x3000n, Prot.READ)
    core.iommuMap(d, 0x100_4000n, 0x100_4000n, 0x1000n, Prot.READ)
    expect(core.iommuUnmap(d, 0x100_0800n, 0x1000n)).toBe(0n)
    expect(core.iommuUnmap(d, 0x100_0000n, 0x5000n)).toBe(0x3000n)
    expect(core.iommuIovaToPhys(d, 0x100_4000n)).toBe(0x100_4000n)
  })

  it('syncs the gather only when something was gathered, then frees its table pages', () => {
    const { m, core, d } = mapRig()
    const synced: [bigint, bigint][] = []
    d.ops = { ...d.ops, iotlbSync: (_d, g) => synced.push([g.start, g.end]) } as DomainOps
    const g = new IotlbGather()
    core.iommuIotlbSync(d, g)
    expect(synced).toEqual([])
    core.iommuMap(d, 0x200_0000n, 0x200_0000n, 0x2000n, Prot.READ)
    expect(core.iommuUnmap(d, 0x200_0000n, 0x2000n)).toBe(0x2000n)
    expect(synced).toEqual([[0x200_0000n, 0x200_1fffn]])
    const pfn = m.memory.allocFrame(2)
    g.addRange(0x1000n, 0x1000n)
    g.deferFree(m.memory, pfn)
    core.iommuIotlbSync(d, g)
    expect(m.memory.isAllocated(pfn)).toBe(false)
    expect(g.empty).toBe(true)
  })

  it('gather add_page syncs first when the page size differs or the range is disjoint', () => {
    const { core, d } = mapRig()
    const synced: bigint[] = []
    d.ops = { ...d.ops, iotlbSync: (_d, g) => synced.push(g.start) } as DomainOps
    const g = new IotlbGather()
    core.iommuIotlbGatherAddPage(d, g, 0x1000n, 0x1000n)
    core.iommuIotlbGatherAddPage(d, g, 0x2000n, 0x1000n)
    expect(synced).toEqual([])
    core.iommuIotlbGatherAddPage(d, g, 0x10_0000n, 0x1000n)
    expect(synced).toEqual([0x1000n])
    core.iommuIotlbGatherAddPage(d, g, 0x10_1000n, 0x20_0000n)
    expect(synced).toEqual([0x1000n, 0x10_0000n])
    expect([g.start, g.end]).toEqual([0x10_1000n, 0x30_0fffn])
  })

  it('iova_to_phys: identity returns the IOVA, blocked returns 0', () => {
    const { core, dev } = mapRig()
    const ops = dev.unit?.driver.ops
    expect(core.iommuIovaToPhys(ops?.identityDomain as IommuDomain, 0x1234n)).toBe(0x1234n)
    expect(core.iommuIovaToPhys(ops?.blockedDomain as IommuDomain, 0x1234n)).toBe(0n)
  })
})

describe('the DMA data path end to end', () => {
  it('process memory → mapping → device write → process read sees the bytes', () => {
    const m = createMachine({ iommus: [mockIommu()] })
    const core = m.iommu
    const dev = m.addPciDevice()
    core.iommuDeviceClaimDmaOwner(dev, 'test')
    const d = core.iommuPagingDomainAllocFlags(dev)
    core.iommuAttachGroupHandle(d, grp(dev), h())
    const proc = m.createProcess()
    const va = proc.mmap(8192)
    proc.write(va, new TextEncoder().encode('hello from the CPU'))
    const pfns = new Int32Array(2)
    proc.pinUserPages(va, 2, true, pfns)
    for (let i = 0; i < 2; i++) {
      core.iommuMap(
        d,
        0x100_0000n + BigInt(i) * 4096n,
        BigInt(pfns[i] as number) * 4096n,
        4096n,
        Prot.READ | Prot.WRITE,
      )
    }
    expect(new TextDecoder().decode(dev.dma.read(0x100_0000n, 18))).toBe('hello from the CPU')
    dev.dma.write(0x100_0ffen, new TextEncoder().encode('device!'))
    expect(new TextDecoder().decode(proc.read(va + 0xffe, 7))).toBe('device!')
    expect(dev.dma.stats).toMatchObject({ transfers: 2, faults: 0 })
  })

  it('keeps pinned pages alive for DMA after the process unmaps them', () => {
    const m = createMachine({ iommus: [mockIommu()] })
    const dev = m.addPciDevice()
    const d = m.iommu.iommuPagingDomainAllocFlags(dev)
    m.iommu.iommuAttachGroup(d, grp(dev))
    const proc = m.createProcess()
    const va = proc.mmap(4096)
    const pfns = new Int32Array(1)
    proc.pinUserPages(va, 1, true, pfns)
    m.iommu.iommuMap(
      d,
      0x100_0000n,
      BigInt(pfns[0] as number) * 4096n,
      4096n,
      Prot.WRITE | Prot.READ,
    )
    proc.munmap(va, 4096)
    dev.dma.write(0x100_0000n, new Uint8Array([42]))
    expect(m.memory.read32((pfns[0] as number) * 4096) & 0xff).toBe(42)
    proc.unpinPages(pfns, 1)
    expect(m.memory.isAllocated(pfns[0] as number)).toBe(false)
  })
})

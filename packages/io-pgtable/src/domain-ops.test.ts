import {
  type DirtyOps,
  type DomainOps,
  IommuCore,
  IommuDirtyBitmap,
  IommuDomain,
  type IommuError,
  IotlbGather,
  PhysicalMemory,
  Prot,
} from '@iommu/core'
import { describe, expect, it } from 'vitest'
import { pageTableDirtyOps, pageTableDomainOps } from './domain-ops.ts'
import { Access, HwAd } from './format.ts'
import { amdv1 } from './formats/amdv1.ts'
import { armLpae } from './formats/arm-lpae.ts'
import type { AnyPageTable } from './page-table.ts'
import { PageTable } from './page-table.ts'
import { errnoOf } from './testing/helpers.ts'

const RW = Prot.READ | Prot.WRITE

/** A driver domain the way a driver would write one: a page table plus hardware hooks. */
class TestDomain extends IommuDomain {
  table: AnyPageTable = null as unknown as AnyPageTable
  readonly synced: [bigint, bigint, number][] = []
}

function amdDomain(memory: PhysicalMemory) {
  const tops: [number, number][] = []
  const ops: DomainOps<TestDomain> = {
    ...pageTableDomainOps<TestDomain>(amdv1, (d) => d.table),
    attachDev: () => {},
    iotlbSync: (d, g) => {
      d.synced.push([g.start, g.end, g.freelist.length])
    },
  }
  const dirtyOps: DirtyOps<TestDomain> = {
    ...pageTableDirtyOps<TestDomain>((d) => d.table),
    setDirtyTracking: () => {},
  }
  // DomainInit takes the driver's ops untyped (the core calls them with its domain).
  const domain = new TestDomain({
    ops: ops as DomainOps<never>,
    dirtyOps: dirtyOps as DirtyOps<never>,
  })
  domain.table = new PageTable(
    memory,
    amdv1,
    { startingLevel: 2 },
    {
      changeTop: (pfn, level) => tops.push([pfn, level]),
      iotlbSync: (g) => domain.ops.iotlbSync?.(domain, g),
    },
  )
  domain.pgsizeBitmap = domain.table.pgsizeBitmap
  Object.assign(domain.geometry, domain.table.geometry)
  return { domain, tops }
}

describe('pageTableDomainOps / pageTableDirtyOps through the IOMMU core', () => {
  it('generic_pt formats get mapRange/unmapRange; io-pgtable-arm formats only mapPages/unmapPages', () => {
    const amd = pageTableDomainOps(amdv1, () => null as unknown as AnyPageTable)
    const arm = pageTableDomainOps(armLpae, () => null as unknown as AnyPageTable)
    expect(Object.keys(amd).sort()).toEqual([
      'iovaToPhys',
      'mapPages',
      'mapRange',
      'unmapPages',
      'unmapRange',
    ])
    expect(Object.keys(arm).sort()).toEqual(['iovaToPhys', 'mapPages', 'unmapPages'])
  })

  it('AMD v1: iommu_map hands the whole range to map_range; a conflict rolls back what the call mapped', () => {
    const memory = new PhysicalMemory()
    const core = new IommuCore()
    const { domain } = amdDomain(memory)
    core.iommuMap(domain, 0x60_1000n, 0x1000n, 0x1000n, RW)
    // 4M at 4M with a 2M-aligned PA: 2 x 2M leaves; the second meets the page at 6M+4K.
    let err: IommuError | undefined
    try {
      core.iommuMap(domain, 0x40_0000n, 0x4020_0000n, 0x40_0000n, RW)
    } catch (e) {
      err = e as IommuError
    }
    expect(err?.code).toBe('EADDRINUSE')
    expect(err?.progress).toBe(0x20_0000n)
    // The core unmapped the 2M that went in, and synced it.
    expect(core.iommuIovaToPhys(domain, 0x40_0000n)).toBe(0n)
    expect(domain.synced.at(-1)?.slice(0, 2)).toEqual([0x40_0000n, 0x5f_ffffn])
    expect(core.iommuIovaToPhys(domain, 0x60_1234n)).toBe(0x1234n)
    // map_range does not check alignment the way the io-pgtable path does: ENXIO.
    expect(errnoOf(() => core.iommuMap(domain, 0x800n, 0n, 0x1000n, RW))).toBe('ENXIO')
    expect(core.iommuUnmap(domain, 0x60_1000n, 0x1000n)).toBe(0x1000n)
    domain.table.free()
    expect(memory.frameStats().byPurpose.pgtable).toBe(0)
  })

  it('AMD v1: tables a block replaces are freed after the domain iotlb_sync, during the map', () => {
    const memory = new PhysicalMemory()
    const core = new IommuCore()
    const { domain } = amdDomain(memory)
    core.iommuMap(domain, 0x20_0000n, 0x1000n, 0x1000n, RW)
    core.iommuUnmap(domain, 0x20_0000n, 0x1000n)
    const frames = memory.frameStats().byPurpose.pgtable
    domain.synced.length = 0
    core.iommuMap(domain, 0x20_0000n, 0x4000_0000n, 0x20_0000n, RW)
    expect(domain.synced).toEqual([[0x20_0000n, 0x3f_ffffn, 1]])
    expect(memory.frameStats().byPurpose.pgtable).toBe(frames - 1)
    domain.table.free()
  })

  it('AMD v1: dirty ops read what the hardware wrote; the core gather gets the range', () => {
    const memory = new PhysicalMemory()
    const core = new IommuCore()
    const { domain } = amdDomain(memory)
    core.iommuMap(domain, 0n, 0x10_0000n, 0x20_0000n, RW)
    const pt = domain.table
    pt.walker().walk(pt.root.pfn, pt.root.level, 0x1ff, Access.WRITE, HwAd.ACCESSED | HwAd.DIRTY)
    const seen: number[] = []
    const gather = new IotlbGather()
    domain.dirtyOps?.readAndClearDirty(
      domain,
      0n,
      0x20_0000n,
      0,
      new IommuDirtyBitmap({ set: (pfn, count, shift) => seen.push(pfn, count, shift) }, gather),
    )
    // 0x100000 is 1M aligned and the IOVA 2M: the leaves are 2 x 1M contiguous ones. 7.2's
    // record_dirty stops one item short of a contiguous leaf: 255 pages, and the gather
    // gets the same range.
    expect(seen).toEqual([0x100, 0xff, 12])
    expect([gather.start, gather.end]).toEqual([0x10_0000n, 0x1f_efffn])
    domain.table.free()
  })

  it('ARM: the core checks alignment (EINVAL) and splits with iommu_pgsize; a partial block unmap is 0', () => {
    const memory = new PhysicalMemory()
    const core = new IommuCore()
    const ops: DomainOps<TestDomain> = {
      ...pageTableDomainOps<TestDomain>(armLpae, (d) => d.table),
      attachDev: () => {},
    }
    const domain = new TestDomain({ ops: ops as DomainOps<never> })
    domain.table = new PageTable(memory, armLpae, { stage: 1, ias: 48, oas: 48 })
    domain.pgsizeBitmap = domain.table.pgsizeBitmap
    expect(errnoOf(() => core.iommuMap(domain, 0x800n, 0n, 0x1000n, RW))).toBe('EINVAL')
    core.iommuMap(domain, 0x1f_f000n, 0x1f_f000n, 0x20_2000n, RW)
    // 4K, a 2M block, 4K.
    expect(domain.table.pgtableWalk(0x20_0000n).at(-1)?.level).toBe(1)
    expect(core.iommuUnmap(domain, 0x20_0000n, 0x1000n)).toBe(0n)
    expect(core.iommuUnmap(domain, 0x1f_f000n, 0x20_2000n)).toBe(0x20_2000n)
    expect(core.iommuIovaToPhys(domain, 0x20_0000n)).toBe(0n)
    domain.table.free()
    expect(memory.frameStats().byPurpose.pgtable).toBe(0)
  })
})

// The hardware model keeps what it cached until the driver invalidates it: a mapping
// removed without an IOTLB flush still translates. This is what makes a missing
// invalidation in a driver visible in tests.
import { createMachine, FramePurpose, IotlbGather, Prot } from '@iommu/core'
import { describe, expect, it } from 'vitest'
import { type ToyIommuHw, toy } from '../src/index.ts'

describe('the toy IOMMU hardware', () => {
  it('uses a cached translation until the IOTLB is invalidated', () => {
    const m = createMachine({ iommus: [toy()] })
    const dev = m.addPciDevice()
    const core = m.iommu
    const d = core.iommuDomainAllocPagingUser(dev, 0, null)
    core.iommuAttachDevice(d, dev)
    const pfn = m.memory.allocFrame(FramePurpose.USER)
    m.memory.write32(pfn * 4096, 0xc0ffee)
    core.iommuMap(d, 0x10_0000n, BigInt(pfn) * 4096n, 4096n, Prot.READ | Prot.WRITE)
    expect(dev.dma.read(0x10_0000n, 4)).toEqual(new Uint8Array([0xee, 0xff, 0xc0, 0]))
    // Unmap without the flush the core would do: the IOTLB still has the translation.
    const gather = new IotlbGather()
    expect(core.iommuUnmapFast(d, 0x10_0000n, 4096n, gather)).toBe(4096n)
    expect(dev.dma.read(0x10_0000n, 4)).toEqual(new Uint8Array([0xee, 0xff, 0xc0, 0]))
    // The flush (the driver's iotlbSync) removes it.
    core.iommuIotlbSync(d, gather)
    expect(() => dev.dma.read(0x10_0000n, 4)).toThrow(
      expect.objectContaining({ reason: 'translation' }),
    )
    expect((m.units[0] as ToyIommuHw).faults).toBe(1)
  })

  it('aborts every DMA while translation is disabled', () => {
    const m = createMachine({ iommus: [toy()] })
    const dev = m.addPciDevice()
    const hw = m.units[0] as ToyIommuHw
    hw.writeReg(0, 0)
    expect(() => dev.dma.read(0n, 4)).toThrow(expect.objectContaining({ reason: 'blocked' }))
  })
})

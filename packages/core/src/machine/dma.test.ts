import { describe, expect, it } from 'vitest'
import { defineDriver, type IommuHardware, type IommuUnit } from '../driver.ts'
import { DmaFault, type DmaTransaction } from './dma.ts'
import { createMachine } from './machine.ts'
import { PciDevice } from './pci.ts'

/** A unit mapping IOVA page n to PA page n + 0x1000, faulting at IOVA page 5. */
function shiftingDriver(
  seen: { pfn: number; off: number; pasid: number | null; write: boolean }[],
) {
  return defineDriver({
    name: 'shift',
    apiVersion: 1,
    capabilities: {
      dirtyTracking: false,
      nesting: false,
      pasid: false,
      enforceCacheCoherency: false,
      deferredFlush: false,
      iopf: false,
    },
    createUnit(): IommuHardware {
      return {
        name: 'shift0',
        maxPasids: 0,
        translate(txn: DmaTransaction) {
          seen.push({
            pfn: txn.iovaPfn,
            off: txn.offset,
            pasid: txn.hasPasid ? txn.pasid : null,
            write: txn.write,
          })
          if (txn.iovaPfn === 5) {
            txn.fault = 'translation'
            txn.faultLevel = 0
            return false
          }
          txn.pa = (txn.iovaPfn + 0x1000) * 4096 + txn.offset
          txn.len = 4096 - txn.offset
          return true
        },
      }
    },
    ops: {
      probeDevice: (dev) => dev.unit as IommuUnit,
      deviceGroup: () => {
        throw new Error('unused')
      },
    },
    domainOps: { attachDev() {} },
  })
}

function setup() {
  const seen: { pfn: number; off: number; pasid: number | null; write: boolean }[] = []
  const m = createMachine({ iommus: [shiftingDriver(seen)], memorySize: 2 ** 34 })
  // Placed behind the unit without probing: this test driver has no groups.
  const dev = new PciDevice(m.memory, m.units[0] as IommuUnit, '00:03.0', {})
  return { m, dev, seen }
}

describe('DMA engine', () => {
  it('translates each page through the unit and moves the bytes', () => {
    const { m, dev, seen } = setup()
    const data = new Uint8Array(5000).map((_, i) => i & 0xff)
    dev.dma.write(0x1ff0, data, { pasid: 3 })
    expect(seen.map((s) => [s.pfn, s.off])).toEqual([
      [1, 0xff0],
      [2, 0],
      [3, 0],
    ])
    expect(seen.every((s) => s.pasid === 3 && s.write)).toBe(true)
    const back = new Uint8Array(5000)
    m.memory.readBytes(0x1001 * 4096 + 0xff0, back)
    expect(back).toEqual(data)
    expect(dev.dma.read(0x1ff0, 5000)).toEqual(data)
    expect(dev.dma.stats).toMatchObject({ transfers: 2, bytes: 10000, faults: 0 })
  })

  it('aborts the whole DMA on a fault and writes nothing', () => {
    const { m, dev } = setup()
    const e = (() => {
      try {
        dev.dma.write(4 * 4096, new Uint8Array(8192).fill(0xee))
      } catch (err) {
        return err
      }
      return null
    })()
    expect(e).toBeInstanceOf(DmaFault)
    expect(e).toMatchObject({ iova: 5n * 4096n, write: true, reason: 'translation', level: 0 })
    expect(m.memory.isMaterialized(0x1004)).toBe(false)
    expect(dev.dma.stats.faults).toBe(1)
  })

  it('takes u64 IOVAs as bigint, exactly at the top of the 64-bit space', () => {
    const { dev, seen } = setup()
    expect(() => dev.dma.read(0xffff_ffff_ffff_f000n, 16)).toThrow(DmaFault)
    expect(seen.at(-1)?.pfn).toBe(2 ** 52 - 1)
    expect(() => dev.dma.read(0xffff_ffff_ffff_fff0n, 32)).toThrow(
      expect.objectContaining({ code: 'EINVAL' }),
    )
  })
})

describe('DMA arguments a device cannot issue', () => {
  it('a read far past the mapping faults before a buffer is sized by it; bad values are EINVAL', () => {
    const { dev } = setup()
    expect(() => dev.dma.read(0x1000, 2 ** 40)).toThrow(DmaFault)
    const code = (fn: () => unknown) => {
      try {
        fn()
        return 'OK'
      } catch (e) {
        return (e as { code?: string }).code ?? String(e)
      }
    }
    expect(code(() => dev.dma.read(0x1000, -1))).toBe('EINVAL')
    expect(code(() => dev.dma.read(0x1000, 1.5))).toBe('EINVAL')
    expect(code(() => dev.dma.read('0x1000' as never, 4))).toBe('EINVAL')
    expect(code(() => dev.dma.write(0x1000, 'abc' as never))).toBe('EINVAL')
    expect(code(() => dev.dma.read(0x1000, 4, { pasid: 1 << 20 }))).toBe('EINVAL')
    expect(code(() => dev.dma.read(0x1000, 4, { pasid: -1 }))).toBe('EINVAL')
  })
})

/**
 * The missing-invalidation detector's shortcut: an IOTLB hit whose fill walk's entries
 * are unchanged in memory is not walked again. Runs with and without the shortcut must
 * report the same stale uses, in the same order, with the same DMA outcomes.
 */
import {
  createMachine,
  DmaFault,
  FramePurpose,
  HwptAllocFlags,
  IommuDirtyBitmap,
  IotlbGather,
  Prot,
} from '@iommu/core'
import { Rng } from '@iommu/iommufd/testing'
import { describe, expect, it } from 'vitest'
import { type AmdIommuHw, amd, amdTestHooks } from '../src/index.ts'

const PAGE = 4096
const IOVA = 0x40_0000
const BLOCK = 2 * 1024 * 1024

/** A seeded run of DMA, unmaps, remaps and dirty reads, some without their flush. */
function run(records: boolean, seed: number): { log: string[]; stale: unknown[]; hits: number } {
  const driver = amd({ hw: { detectorRecords: records } })
  const m = createMachine({ iommus: [driver] })
  const hooks = amdTestHooks(driver)
  const dev = m.addPciDevice()
  m.iommu.iommuDeviceClaimDmaOwner(dev, 'test')
  const d = m.iommu.iommuPagingDomainAllocFlags(dev, HwptAllocFlags.DIRTY_TRACKING)
  const g = dev.group
  if (g === null) throw new Error('no group')
  m.iommu.iommuAttachGroupHandle(d, g, { domain: null })
  d.dirtyOps?.setDirtyTracking(d, true)
  const pages = 48
  const frames = m.memory.allocFrames(1024, FramePurpose.USER, 512)
  const mapped = new Int32Array(pages).fill(-1)
  const map = (i: number, f: number) => {
    m.iommu.iommuMap(
      d,
      BigInt(IOVA + i * PAGE),
      BigInt((frames + f) * PAGE),
      BigInt(PAGE),
      Prot.READ | Prot.WRITE,
    )
    mapped[i] = f
  }
  for (let i = 0; i < pages; i++) map(i, i)
  const rng = new Rng(seed)
  const r = (n: number) => rng.int(n)
  const log: string[] = []
  let big = false
  const buf = new Uint8Array(64)
  for (let op = 0; op < 4000; op++) {
    const i = r(pages)
    const k = r(10)
    try {
      if (k < 7) {
        buf.fill(op & 0xff)
        if (k < 4) dev.dma.write(IOVA + i * PAGE + r(64) * 64, buf)
        else log.push(`r${dev.dma.read(IOVA + i * PAGE, 1)[0]}`)
      } else if (k < 9 && !big) {
        hooks.skipIotlbSync = r(3) === 0
        if (mapped[i] !== -1) {
          m.iommu.iommuUnmap(d, BigInt(IOVA + i * PAGE), BigInt(PAGE))
          mapped[i] = -1
        } else {
          map(i, r(pages * 2))
        }
      } else if (r(2) === 0) {
        // Everything unmapped (freeing the leaf table), then one 2 MiB leaf or 4 KiB pages.
        hooks.skipIotlbSync = r(3) === 0
        if (big) m.iommu.iommuUnmap(d, BigInt(IOVA), BigInt(BLOCK))
        else {
          for (let j = 0; j < pages; j++) {
            if (mapped[j] !== -1) m.iommu.iommuUnmap(d, BigInt(IOVA + j * PAGE), BigInt(PAGE))
          }
        }
        hooks.skipIotlbSync = false
        mapped.fill(-1)
        big = r(2) === 0
        if (big) {
          const at = r(2) * 512
          m.iommu.iommuMap(
            d,
            BigInt(IOVA),
            BigInt((frames + at) * PAGE),
            BigInt(BLOCK),
            Prot.READ | Prot.WRITE,
          )
          for (let j = 0; j < pages; j++) mapped[j] = at + j
        } else {
          for (let j = 0; j < pages; j++) map(j, r(pages * 2))
        }
      } else {
        hooks.skipIotlbSync = r(3) === 0
        const gather = new IotlbGather()
        d.dirtyOps?.readAndClearDirty(
          d,
          BigInt(IOVA),
          BigInt(pages * PAGE),
          0,
          new IommuDirtyBitmap(null, gather),
        )
        m.iommu.iommuIotlbSync(d, gather)
      }
    } catch (e) {
      if (!(e instanceof DmaFault)) throw e
      log.push(`f${e.iova}`)
    } finally {
      hooks.skipIotlbSync = false
    }
  }
  const hw = m.units[0] as AmdIommuHw
  return { log, stale: hw.staleUses, hits: hw.stats.translations - hw.stats.walks }
}

describe('the detector with fill-walk records', () => {
  for (const seed of [1, 2, 3]) {
    it(`reports exactly what re-walking every IOTLB hit reports (seed ${seed})`, () => {
      const fast = run(true, seed)
      const slow = run(false, seed)
      expect(fast.stale.length).toBeGreaterThan(0)
      expect(fast.hits).toBeGreaterThan(300)
      expect(fast).toEqual(slow)
    })
  }
})

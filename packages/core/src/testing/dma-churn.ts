/**
 * A seeded churn of DMA through one paging domain: reads and writes, 4 KiB unmaps and
 * remaps, everything replaced by one 2 MiB leaf or new 4 KiB pages (freeing and making
 * leaf tables), and dirty reads, with the driver's IOTLB flush dropped now and then. Two
 * configurations of a hardware model that must behave the same (a detector with and
 * without a shortcut, say) give the same {@link DmaChurnResult.log} for the same random
 * source, and the caller compares what the models report.
 *
 * @module
 */

import { HwptAllocFlags, Prot } from '../constants.ts'
import type { IommuDomain } from '../domain.ts'
import type { Driver } from '../driver.ts'
import { IommuError } from '../errno.ts'
import { IommuDirtyBitmap, IotlbGather } from '../gather.ts'
import { DmaFault } from '../machine/dma.ts'
import { createMachine, type Machine } from '../machine/machine.ts'
import { FramePurpose } from '../machine/memory.ts'

const PAGE = 4096
const IOVA = 0x40_0000
const BLOCK = 2 * 1024 * 1024

/** Options of {@link dmaChurn}. */
export interface DmaChurnOptions {
  /** The driver under test (a fresh instance: the churn builds its own machine). */
  readonly driver: Driver
  /** Drop (`true`) or keep the driver's IOTLB flush, e.g. through its test hooks. */
  readonly skipFlush: (skip: boolean) => void
  /** Uniform integer in `[0, n)`, seeded by the caller. */
  readonly random: (n: number) => number
  /**
   * `iommu_paging_domain_alloc_flags` flags of the domain. Default: DIRTY_TRACKING, or none
   * when the driver refuses it (EOPNOTSUPP).
   */
  readonly flags?: number
  /** Operations (default 4000). */
  readonly ops?: number
}

/** What {@link dmaChurn} saw. */
export interface DmaChurnResult {
  /** The machine, for the caller to read its unit's reports. */
  readonly machine: Machine
  /** Every DMA read's first byte (`r…`) and every DMA fault's IOVA (`f…`), in order. */
  readonly log: string[]
}

/** Run the churn; see the module's description. */
export function dmaChurn(o: DmaChurnOptions): DmaChurnResult {
  const m = createMachine({ iommus: [o.driver] })
  const r = o.random
  const dev = m.addPciDevice()
  m.iommu.iommuDeviceClaimDmaOwner(dev, 'dma-churn')
  let domain: IommuDomain
  try {
    domain = m.iommu.iommuPagingDomainAllocFlags(dev, o.flags ?? HwptAllocFlags.DIRTY_TRACKING)
  } catch (e) {
    if (o.flags !== undefined || !(e instanceof IommuError) || e.code !== 'EOPNOTSUPP') throw e
    domain = m.iommu.iommuPagingDomainAllocFlags(dev, 0)
  }
  const g = dev.group
  if (g === null) throw new Error('dma-churn: the device has no group')
  m.iommu.iommuAttachGroupHandle(domain, g, { domain: null })
  const dirtyOps = domain.dirtyOps ?? null
  dirtyOps?.setDirtyTracking(domain, true)
  const pages = 48
  const frames = m.memory.allocFrames(1024, FramePurpose.USER, 512)
  const mapped = new Int32Array(pages).fill(-1)
  const map = (i: number, f: number) => {
    m.iommu.iommuMap(
      domain,
      BigInt(IOVA + i * PAGE),
      BigInt((frames + f) * PAGE),
      BigInt(PAGE),
      Prot.READ | Prot.WRITE,
    )
    mapped[i] = f
  }
  const unmap = (iova: number, bytes: number) =>
    m.iommu.iommuUnmap(domain, BigInt(iova), BigInt(bytes))
  for (let i = 0; i < pages; i++) map(i, i)
  const log: string[] = []
  let big = false
  const buf = new Uint8Array(64)
  const ops = o.ops ?? 4000
  for (let op = 0; op < ops; op++) {
    const i = r(pages)
    const k = r(10)
    try {
      if (k < 7) {
        buf.fill(op & 0xff)
        if (k < 4) dev.dma.write(IOVA + i * PAGE + r(64) * 64, buf)
        else log.push(`r${dev.dma.read(IOVA + i * PAGE, 1)[0]}`)
      } else if (k < 9 && !big) {
        o.skipFlush(r(3) === 0)
        if (mapped[i] !== -1) {
          unmap(IOVA + i * PAGE, PAGE)
          mapped[i] = -1
        } else {
          map(i, r(pages * 2))
        }
      } else if (r(2) === 0) {
        // Everything unmapped (freeing the leaf table), then one 2 MiB leaf or 4 KiB pages.
        o.skipFlush(r(3) === 0)
        if (big) unmap(IOVA, BLOCK)
        else for (let j = 0; j < pages; j++) if (mapped[j] !== -1) unmap(IOVA + j * PAGE, PAGE)
        o.skipFlush(false)
        mapped.fill(-1)
        big = r(2) === 0
        if (big) {
          const at = r(2) * 512
          m.iommu.iommuMap(
            domain,
            BigInt(IOVA),
            BigInt((frames + at) * PAGE),
            BigInt(BLOCK),
            Prot.READ | Prot.WRITE,
          )
          for (let j = 0; j < pages; j++) mapped[j] = at + j
        } else {
          for (let j = 0; j < pages; j++) map(j, r(pages * 2))
        }
      } else if (dirtyOps !== null) {
        o.skipFlush(r(3) === 0)
        const gather = new IotlbGather()
        const dirty = new IommuDirtyBitmap(null, gather)
        // Over mapped runs only, as iommufd reads its areas (io-pgtable-arm fails on a hole).
        for (let j = 0; j < pages; ) {
          if (mapped[j] === -1) {
            j++
            continue
          }
          let end = j + 1
          while (end < pages && mapped[end] !== -1) end++
          const from = BigInt(IOVA + j * PAGE)
          dirtyOps.readAndClearDirty(domain, from, BigInt((end - j) * PAGE), 0, dirty)
          j = end
        }
        m.iommu.iommuIotlbSync(domain, gather)
      }
    } catch (e) {
      if (!(e instanceof DmaFault)) throw e
      log.push(`f${e.iova}`)
    } finally {
      o.skipFlush(false)
    }
  }
  return { machine: m, log }
}

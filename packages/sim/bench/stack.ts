/**
 * Whole-stack measurements shared by `pnpm bench` and `pnpm bench:scale`: a guest of N GiB
 * pinned and mapped through IOAS_MAP + HWPT_ALLOC (4 KiB IOPTEs) on the AMD model, the
 * bare page-table map of the same pages beside it, and IOMMU_HWPT_GET_DIRTY_BITMAP over
 * the whole IOAS with 1% of the pages dirty beside the bare page-table dirty scan.
 *
 * @module
 */

import {
  createMachine,
  IOMMU_DIRTY_NO_CLEAR,
  IommuDirtyBitmap,
  IotlbGather,
  PfnArray,
  Prot,
} from '@iommu/core'
import { type AmdDomain, amd } from '@iommu/driver-amd'
import { amdv1, PageTable } from '@iommu/io-pgtable'
import {
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_HWPT_DIRTY_TRACKING_ENABLE,
  IOMMU_HWPT_GET_DIRTY_BITMAP,
  IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR,
  IOMMU_HWPT_SET_DIRTY_TRACKING,
  openIommufd,
} from '@iommu/iommufd'
import { hwptAlloc, ioasAlloc, ioasMap } from '../src/vmm.ts'

export const GIB = 2 ** 30
export const PAGE = 4096
/** The guest's IOVA: 1 TiB, above the AMD IOMMU's reserved HyperTransport range, so that
 * every size up to several TiB is one area. */
const IOVA = 2 ** 40

/** What {@link measureStack} measured (milliseconds unless named otherwise). */
export interface StackFigures {
  readonly pages: number
  /** IOAS_MAP (areas; nothing pinned yet) and HWPT_ALLOC (pin + fill the domain). */
  readonly mapMs: number
  readonly fillMs: number
  /** CPU time of both. */
  readonly uapiCpuMs: number
  /** The bare page-table map of the same pages: wall and CPU, mean of two. */
  readonly bareMapMs: number
  readonly bareMapCpuMs: number
  /** Bytes of typed arrays after the map (ArrayBuffers of the process). */
  readonly arrayBytesAfterMap: number
  /** GET_DIRTY_BITMAP read-and-clear and NO_CLEAR, and the bare scans (medians). */
  readonly uapiClearMs: number
  readonly bareClearMs: number
  readonly uapiNoClearMs: number
  readonly bareNoClearMs: number
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)] as number
}

function cpuMs(fn: () => void): { ms: number; cpuMs: number } {
  const c0 = process.cpuUsage()
  const t0 = performance.now()
  fn()
  const ms = performance.now() - t0
  const c = process.cpuUsage(c0)
  return { ms, cpuMs: (c.user + c.system) / 1000 }
}

/**
 * Measure a guest of `gib` GiB (see the module comment).
 *
 * @param dataWrites - mark the 1% dirty with DMA writes of a non-zero byte (every dirty
 *   page then holds data); false writes a zero byte, which sets the same D bits and
 *   leaves the page without storage (for guests whose 1% would not fit in memory)
 * @param reps - GET_DIRTY_BITMAP samples of each kind
 */
export function measureStack(gib: number, dataWrites = true, reps = 7): StackFigures {
  const bytes = gib * GIB
  const pages = bytes / PAGE
  const m = createMachine({
    memorySize: Math.max(2 ** 38, 2 ** Math.ceil(Math.log2(bytes * 2))),
    iommus: [{ driver: amd(), config: { detectStale: false } }],
  })
  const vmm = m.createProcess()
  const fd = openIommufd(m, vmm)
  const ioas = ioasAlloc(fd, false)
  const guest = vmm.mmap(bytes)
  const dev = m.addPciDevice()
  const idev = fd.bindDevice(dev)
  const map = cpuMs(() => ioasMap(fd, ioas, guest, bytes, IOVA))
  // The HWPT is filled with the IOAS's mappings (pinning every page) at allocation.
  let hwptId = 0
  const fill = cpuMs(() => {
    hwptId = hwptAlloc(fd, idev.id, ioas, IOMMU_HWPT_ALLOC_DIRTY_TRACKING)
  })
  const arrayBytesAfterMap = process.memoryUsage().arrayBuffers
  // The bare page-table map of the same pages: the same PFNs at the same IOVAs in a fresh
  // AMD v1 table, 4 KiB IOPTEs (one-page maps, as with large pages off), twice.
  const frames = new PfnArray(pages)
  vmm.pageFrames(guest, pages, false, frames)
  const bareMap = () => {
    const pt = new PageTable(m.memory, amdv1, { startingLevel: 2 }, { changeTop: () => {} })
    const r = cpuMs(() => {
      for (let i = 0; i < pages; ) {
        const e = frames.runEnd(i, pages)
        pt.mapEach(IOVA / PAGE + i, frames.get(i), e - i, Prot.READ | Prot.WRITE)
        i = e
      }
    })
    pt.free()
    return r
  }
  const bare = [bareMap(), bareMap()] as const
  idev.attach(hwptId)
  fd.ioctl(IOMMU_HWPT_SET_DIRTY_TRACKING, {
    size: 16,
    flags: IOMMU_HWPT_DIRTY_TRACKING_ENABLE,
    hwpt_id: hwptId,
  })
  const one = new Uint8Array([dataWrites ? 1 : 0])
  const dirtyOnePercent = () => {
    for (let p = 0; p < pages; p += 100) dev.dma.write(IOVA + p * PAGE, one)
  }
  const bitmapBytes = pages / 8
  const bitmap = vmm.mmap(bitmapBytes)
  const zero = new Uint8Array(bitmapBytes)
  const uapi = (flags: number) => {
    vmm.write(bitmap, zero)
    fd.ioctl(IOMMU_HWPT_GET_DIRTY_BITMAP, {
      size: 48,
      hwpt_id: hwptId,
      flags,
      iova: BigInt(IOVA),
      length: BigInt(bytes),
      page_size: BigInt(PAGE),
      data: BigInt(bitmap),
    })
  }
  const domain = dev.group?.domain as AmdDomain | undefined
  const pt = domain?.pt
  if (!domain || !pt) throw new Error('no page table')
  const bits = new Uint8Array(bitmapBytes)
  // The bare scan's own bitmap: one bit per 4 KiB page of the range.
  const sink = {
    set(pfn: number, count: number, shift: number) {
      // A lean baseline: no Math.pow for the 4 KiB records this table produces.
      const f = shift === 12 ? 1 : 2 ** (shift - 12)
      const first = pfn * f - IOVA / PAGE
      const end = first + count * f
      for (let i = first; i < end; i++) bits[i >> 3] = (bits[i >> 3] as number) | (1 << (i & 7))
    },
    // The records of one table frame (`list[1..list[0]]`), as iommufd's bitmap takes them.
    setList(pfn: number, count: number, shift: number, list: Uint16Array, from: number) {
      if (shift !== 12 || count !== 1) return from
      const pos = pfn - IOVA / PAGE
      const n = list[0] as number
      for (let k = from; k <= n; k++) {
        const i = pos + (list[k] as number)
        bits[i >> 3] = (bits[i >> 3] as number) | (1 << (i & 7))
      }
      return n + 1
    },
  }
  const bareScan = (flags: number) => {
    bits.fill(0)
    const gather = new IotlbGather()
    pt.readAndClearDirtyPages(IOVA / PAGE, pages, flags, new IommuDirtyBitmap(sink, gather))
    m.iommu.iommuIotlbSync(domain, gather)
  }
  const ms = (fn: () => void) => cpuMs(fn).ms
  dirtyOnePercent()
  const uapiNoClear: number[] = []
  const bareNoClear: number[] = []
  // Alternate the two, several times, and keep medians.
  for (let i = 0; i < reps; i++) {
    uapiNoClear.push(ms(() => uapi(IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR)))
    bareNoClear.push(ms(() => bareScan(IOMMU_DIRTY_NO_CLEAR)))
  }
  const uapiClear: number[] = []
  const bareClear: number[] = []
  for (let i = 0; i < reps; i++) {
    dirtyOnePercent()
    uapiClear.push(ms(() => uapi(0)))
    dirtyOnePercent()
    bareClear.push(ms(() => bareScan(0)))
  }
  fd.close()
  return {
    pages,
    mapMs: map.ms,
    fillMs: fill.ms,
    uapiCpuMs: map.cpuMs + fill.cpuMs,
    bareMapMs: (bare[0].ms + bare[1].ms) / 2,
    bareMapCpuMs: (bare[0].cpuMs + bare[1].cpuMs) / 2,
    arrayBytesAfterMap,
    uapiClearMs: median(uapiClear),
    bareClearMs: median(bareClear),
    uapiNoClearMs: median(uapiNoClear),
    bareNoClearMs: median(bareNoClear),
  }
}

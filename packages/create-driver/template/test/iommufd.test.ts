// The toy driven through iommufd exactly as a VMM drives a VFIO device: bind, map user
// memory into an IOAS, allocate a dirty-tracking HWPT on the toy, attach, let the device
// DMA, and read the dirty bitmap back.
import { createMachine } from '@iommu/core'
import {
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_HWPT_DIRTY_TRACKING_ENABLE,
  IOMMU_HWPT_GET_DIRTY_BITMAP,
  IOMMU_HWPT_SET_DIRTY_TRACKING,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_IOAS_UNMAP,
  openIommufd,
} from '@iommu/iommufd'
import { describe, expect, it } from 'vitest'
import { toy } from '../src/index.ts'

/** ASCII bytes of `s`, and back (the template needs no DOM or Node typings). */
const bytes = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0))
const text = (b: Uint8Array) => String.fromCharCode(...b)

const IOVA = 0x4000_0000n
const PAGES = 64
const PAGES_N = BigInt(PAGES)

// #region iommufd
function setup() {
  const m = createMachine({ iommus: [toy()] })
  const vmm = m.createProcess()
  const fd = openIommufd(m, vmm)
  const ioas = { size: 12, flags: 0, out_ioas_id: 0 }
  fd.ioctl(IOMMU_IOAS_ALLOC, ioas)
  const buf = vmm.mmap(PAGES * 4096)
  fd.ioctl(IOMMU_IOAS_MAP, {
    size: 40,
    flags: IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
    ioas_id: ioas.out_ioas_id,
    __reserved: 0,
    user_va: BigInt(buf),
    length: BigInt(PAGES * 4096),
    iova: IOVA,
  })
  const dev = m.addPciDevice({ name: 'nic' })
  const idev = fd.bindDevice(dev)
  return { m, vmm, fd, ioas: ioas.out_ioas_id, buf, dev, idev }
}
// #endregion iommufd

describe('the toy IOMMU through iommufd', () => {
  it('binds a device, attaches it to an IOAS and moves data both ways by DMA', () => {
    const { vmm, fd, ioas, buf, dev, idev } = setup()
    idev.attach(ioas)
    vmm.write(buf + 0x100, bytes('from the CPU'))
    expect(text(dev.dma.read(IOVA + 0x100n, 12))).toBe('from the CPU')
    dev.dma.write(IOVA + 5n * 4096n, bytes('from the device'))
    expect(text(vmm.read(buf + 5 * 4096, 15))).toBe('from the device')
    // Detached, the device sits on the blocked domain: every DMA is aborted.
    idev.detach()
    expect(() => dev.dma.read(IOVA, 4)).toThrow(expect.objectContaining({ reason: 'blocked' }))
    // Unmapping takes the IOVA away from the device (and invalidates the IOTLB).
    idev.attach(ioas)
    expect(dev.dma.read(IOVA + 0x100n, 4)).toHaveLength(4)
    fd.ioctl(IOMMU_IOAS_UNMAP, { size: 24, ioas_id: ioas, iova: IOVA, length: 4096n * PAGES_N })
    expect(() => dev.dma.read(IOVA + 0x100n, 4)).toThrow(
      expect.objectContaining({ reason: 'translation' }),
    )
  })

  it('tracks the pages the device writes: IOMMU_HWPT_GET_DIRTY_BITMAP reports them once', () => {
    const { vmm, fd, ioas, dev, idev } = setup()
    const hwpt = {
      size: 48,
      flags: IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
      dev_id: idev.id,
      pt_id: ioas,
      __reserved: 0,
      data_type: 0,
      data_len: 0,
      data_uptr: 0n,
      out_hwpt_id: 0,
    }
    fd.ioctl(IOMMU_HWPT_ALLOC, hwpt)
    idev.attach(hwpt.out_hwpt_id)
    fd.ioctl(IOMMU_HWPT_SET_DIRTY_TRACKING, {
      size: 16,
      flags: IOMMU_HWPT_DIRTY_TRACKING_ENABLE,
      hwpt_id: hwpt.out_hwpt_id,
      __reserved: 0,
    })
    const bitmap = vmm.mmap(4096)
    const readBitmap = (): number[] => {
      vmm.write(bitmap, new Uint8Array(PAGES / 8))
      fd.ioctl(IOMMU_HWPT_GET_DIRTY_BITMAP, {
        size: 48,
        hwpt_id: hwpt.out_hwpt_id,
        flags: 0,
        __reserved: 0,
        iova: IOVA,
        length: BigInt(PAGES * 4096),
        page_size: 4096n,
        data: BigInt(bitmap),
      })
      const bits = vmm.read(bitmap, PAGES / 8)
      const pages: number[] = []
      for (let p = 0; p < PAGES; p++) if ((bits[p >> 3] as number) & (1 << (p & 7))) pages.push(p)
      return pages
    }
    expect(readBitmap()).toEqual([])
    dev.dma.write(IOVA + 3n * 4096n, new Uint8Array([1]))
    dev.dma.write(IOVA + 40n * 4096n + 4000n, new Uint8Array(200).fill(2))
    dev.dma.read(IOVA + 7n * 4096n, 16)
    expect(readBitmap()).toEqual([3, 40, 41])
    // Read and cleared: nothing until the device writes again (through a flushed IOTLB).
    expect(readBitmap()).toEqual([])
    dev.dma.write(IOVA + 3n * 4096n, new Uint8Array([3]))
    expect(readBitmap()).toEqual([3])
  })
})

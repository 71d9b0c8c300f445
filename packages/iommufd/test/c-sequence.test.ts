/**
 * The hand-written C-style VMM sequence: open, IOAS_ALLOC, MAP, bind, attach,
 * HWPT_ALLOC with DIRTY_TRACKING, SET_DIRTY_TRACKING, DMA writes from the device,
 * GET_DIRTY_BITMAP — the bitmap holds exactly the written pages.
 */
import { createMachine } from '@iommu/core'
import { MOCK_APERTURE_START, mockIommu } from '@iommu/core/testing'
import { describe, expect, it } from 'vitest'
import {
  IOMMU_DESTROY,
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
  openIommufd,
} from '../src/index.ts'

const PAGE = 4096

describe('C-style VMM sequence (reference §4, issue "done when")', () => {
  it('GET_DIRTY_BITMAP after device DMA writes reports exactly the written pages', () => {
    const m = createMachine({ iommus: [mockIommu({ ioPageSize: 4096 })] })
    const vmm = m.createProcess()
    const fd = openIommufd(m, vmm)

    // struct iommu_ioas_alloc alloc = { .size = sizeof(alloc) };
    const alloc = { size: 12, flags: 0, out_ioas_id: 0 }
    expect(fd.ioctl(IOMMU_IOAS_ALLOC, alloc)).toBe(0)
    const ioasId = alloc.out_ioas_id
    expect(ioasId).toBe(1)

    // 64 guest pages at IOVA MOCK_APERTURE_START.
    const npages = 64
    const guest = vmm.mmap(npages * PAGE)
    const map = {
      size: 40,
      flags: IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
      ioas_id: ioasId,
      user_va: BigInt(guest),
      length: BigInt(npages * PAGE),
      iova: MOCK_APERTURE_START,
    }
    expect(fd.ioctl(IOMMU_IOAS_MAP, map)).toBe(0)

    // VFIO_DEVICE_BIND_IOMMUFD + VFIO_DEVICE_ATTACH_IOMMUFD_PT(ioas).
    const dev = m.addPciDevice()
    const idev = fd.bindDevice(dev)
    const autoHwpt = idev.attach(ioasId)
    expect(autoHwpt).toBeGreaterThan(ioasId)

    // A dirty-tracking HWPT on the same IOAS, and move the device onto it.
    const hwpt = {
      size: 48,
      flags: IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
      dev_id: idev.id,
      pt_id: ioasId,
      out_hwpt_id: 0,
    }
    expect(fd.ioctl(IOMMU_HWPT_ALLOC, hwpt)).toBe(0)
    expect(idev.replace(hwpt.out_hwpt_id)).toBe(hwpt.out_hwpt_id)
    // The automatic HWPT went with its last device.
    expect(() => fd.ioctl(IOMMU_DESTROY, { size: 8, id: autoHwpt })).toThrow(/ENOENT/)

    expect(
      fd.ioctl(IOMMU_HWPT_SET_DIRTY_TRACKING, {
        size: 16,
        flags: IOMMU_HWPT_DIRTY_TRACKING_ENABLE,
        hwpt_id: hwpt.out_hwpt_id,
      }),
    ).toBe(0)

    // The device writes pages 3, 17, 18 and 63; it only reads page 40.
    const written = [3, 17, 18, 63]
    for (const p of written) {
      dev.dma.write(MOCK_APERTURE_START + BigInt(p * PAGE + 100), new Uint8Array([p]))
    }
    dev.dma.read(MOCK_APERTURE_START + BigInt(40 * PAGE), 16)
    expect(vmm.read(guest + 17 * PAGE + 100, 1)[0]).toBe(17)

    const bitmap = vmm.mmap(PAGE)
    const get = {
      size: 48,
      hwpt_id: hwpt.out_hwpt_id,
      flags: 0,
      iova: MOCK_APERTURE_START,
      length: BigInt(npages * PAGE),
      page_size: BigInt(PAGE),
      data: BigInt(bitmap),
    }
    expect(fd.ioctl(IOMMU_HWPT_GET_DIRTY_BITMAP, get)).toBe(0)
    const words = new BigUint64Array(vmm.read(bitmap, 8).buffer)
    const expected = written.reduce((acc, p) => acc | (1n << BigInt(p)), 0n)
    expect(words[0]).toBe(expected)

    // Read-and-clear: a second read into a zeroed bitmap reports nothing.
    vmm.write(bitmap, new Uint8Array(8))
    fd.ioctl(IOMMU_HWPT_GET_DIRTY_BITMAP, get)
    expect(new BigUint64Array(vmm.read(bitmap, 8).buffer)[0]).toBe(0n)

    idev.unbind()
    fd.close()
    expect(m.memory.frameStats().pins).toBe(0)
  })
})

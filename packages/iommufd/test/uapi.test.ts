/**
 * The uAPI boundary: struct sizes and offsets, arguments in process memory, write-back
 * of outputs (also before an error), the size rules on partial structs, and validation
 * of argument objects (reference iommufd-uapi.md §2.1–2.2, appendix A).
 */
import { createMachine } from '@iommu/core'
import { mockIommu } from '@iommu/core/testing'
import { describe, expect, it } from 'vitest'
import {
  IOMMU_DESTROY,
  IOMMU_GET_HW_INFO,
  IOMMU_HWPT_ALLOC,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_IOAS_MAP,
  IOMMU_TEST_CMD,
  openIommufd,
  UAPI_STRUCTS,
} from '../src/index.ts'
import {
  IOMMU_FAULT_QUEUE_ALLOC,
  IOMMU_HW_QUEUE_ALLOC,
  IOMMU_TEST_OP_MOCK_DOMAIN,
  IOMMU_VDEVICE_ALLOC,
  IOMMU_VEVENTQ_ALLOC,
  IOMMU_VIOMMU_ALLOC,
} from '../src/uapi/index.ts'
import { errnoOf, expectErrno, ioasAlloc, mockDomain, PAGE_SIZE } from './helpers.ts'

function world(test = false) {
  const m = createMachine({ iommus: [mockIommu()] })
  const proc = m.createProcess()
  const fd = openIommufd(m, proc, { test })
  return { m, proc, fd }
}

function u32(proc: { read(a: number, n: number): Uint8Array }, va: number): number {
  return new DataView(proc.read(va, 4).buffer).getUint32(0, true)
}

describe('uAPI structs (appendix A)', () => {
  it('sizeof and min_size match the kernel table', () => {
    const expected: Record<string, [number, number]> = {
      iommu_destroy: [8, 8],
      iommu_ioas_alloc: [12, 12],
      iommu_ioas_allow_iovas: [24, 24],
      iommu_ioas_copy: [40, 40],
      iommu_ioas_iova_ranges: [32, 32],
      iommu_ioas_map: [40, 40],
      iommu_ioas_unmap: [24, 24],
      iommu_option: [24, 24],
      iommu_vfio_ioas: [12, 12],
      iommu_hwpt_alloc: [48, 24],
      iommu_hw_info: [40, 32],
      iommu_hwpt_set_dirty_tracking: [16, 16],
      iommu_hwpt_get_dirty_bitmap: [48, 48],
      iommu_hwpt_invalidate: [32, 32],
      iommu_fault_alloc: [16, 16],
      iommu_ioas_map_file: [40, 40],
      iommu_viommu_alloc: [40, 24],
      iommu_vdevice_alloc: [24, 24],
      iommu_ioas_change_process: [8, 8],
      iommu_veventq_alloc: [32, 28],
      iommu_hw_queue_alloc: [40, 40],
      iommu_iova_range: [16, 16],
      iommu_test_cmd: [72, 68],
    }
    for (const [name, [sizeof, min]] of Object.entries(expected)) {
      expect([name, UAPI_STRUCTS[name]?.sizeof, UAPI_STRUCTS[name]?.minSize]).toEqual([
        name,
        sizeof,
        min,
      ])
    }
    expect(UAPI_STRUCTS.iommu_hw_info?.offsetof).toMatchObject({
      in_data_type: 24,
      out_data_type: 24,
      out_max_pasid_log2: 28,
      out_capabilities: 32,
    })
  })
})

describe('arguments in process memory (§2.1)', () => {
  it('IOAS_ALLOC from a struct in memory writes out_ioas_id back', () => {
    const { proc, fd } = world()
    const va = proc.mmap(PAGE_SIZE)
    proc.write(va, new Uint8Array([12, 0, 0, 0]))
    expect(fd.ioctl(IOMMU_IOAS_ALLOC, BigInt(va))).toBe(0)
    expect(u32(proc, va + 8)).toBe(1)
    // A pointer that is not mapped: EFAULT reading `size`.
    expectErrno('EFAULT', () => fd.ioctl(IOMMU_IOAS_ALLOC, 0x1000n))
  })

  it('IOVA_RANGES writes num_iovas back before failing EMSGSIZE (§2.5)', () => {
    const { proc, fd } = world()
    const id = ioasAlloc(fd)
    const va = proc.mmap(PAGE_SIZE)
    const b = new DataView(new ArrayBuffer(32))
    b.setUint32(0, 32, true)
    b.setUint32(4, id, true)
    proc.write(va, new Uint8Array(b.buffer))
    expectErrno('EMSGSIZE', () => fd.ioctl(IOMMU_IOAS_IOVA_RANGES, BigInt(va)))
    expect(u32(proc, va + 8)).toBe(1)
    expect(new DataView(proc.read(va + 24, 8).buffer).getBigUint64(0, true)).toBe(1n)
  })

  it('an object created before a failing write-back is aborted: EFAULT and the ID stays free', () => {
    const { proc, fd } = world()
    const va = proc.mmap(PAGE_SIZE, { prot: 1 })
    // size 0 in a read-only zero page: EINVAL before anything is written.
    expectErrno('EINVAL', () => fd.ioctl(IOMMU_IOAS_ALLOC, BigInt(va)))
    // A read-only page holding { size = 12 } cannot be written back.
    const ro = (() => {
      const memfd = proc.memfdCreate('ro')
      memfd.ftruncate(PAGE_SIZE)
      const w = proc.mmap(PAGE_SIZE, { file: memfd })
      proc.write(w, new Uint8Array([12]))
      return proc.mmap(PAGE_SIZE, { file: memfd, prot: 1 })
    })()
    expectErrno('EFAULT', () => fd.ioctl(IOMMU_IOAS_ALLOC, BigInt(ro)))
    expect(ioasAlloc(fd)).toBe(1)
  })

  it('a short struct reads zero beyond size and gets only its first bytes back (§2.1)', () => {
    const { fd } = world(true)
    const ioas = ioasAlloc(fd)
    const md = mockDomain(fd, ioas)
    // size 32 of iommu_hw_info: out_capabilities (offset 32) is neither read nor written.
    const info = { size: 32, dev_id: md.idevId, out_capabilities: 77n, out_max_pasid_log2: 9 }
    fd.ioctl(IOMMU_GET_HW_INFO, info)
    expect(info.out_capabilities).toBe(77n)
    expect(info.out_max_pasid_log2).toBe(0)
    // size 24 of iommu_hwpt_alloc: data_type/len/uptr read as zero whatever the object holds.
    const alloc = {
      size: 24,
      dev_id: md.idevId,
      pt_id: ioas,
      data_type: 0xdead,
      data_len: 8,
      out_hwpt_id: 0,
    }
    fd.ioctl(IOMMU_HWPT_ALLOC, alloc)
    expect(alloc.out_hwpt_id).toBeGreaterThan(0)
  })

  it('values a C field cannot hold are EINVAL; u64 fields take bigints only', () => {
    const { fd } = world()
    expectErrno('EINVAL', () => fd.ioctl(IOMMU_DESTROY, { size: 8, id: -1 }))
    expectErrno('EINVAL', () => fd.ioctl(IOMMU_DESTROY, { size: 8, id: 2 ** 32 }))
    expectErrno('EINVAL', () => fd.ioctl(IOMMU_DESTROY, { size: 8.5, id: 0 }))
    const map = { size: 40, ioas_id: 1, length: 4096 } as unknown as { size: number }
    expectErrno('EINVAL', () => fd.ioctl(IOMMU_IOAS_MAP, map))
  })

  it('IOMMU_TEST_CMD is ENOTTY unless the context was opened in test mode (§2.1)', () => {
    const plain = world(false)
    expectErrno('ENOTTY', () =>
      plain.fd.ioctl(IOMMU_TEST_CMD, { size: 72, op: IOMMU_TEST_OP_MOCK_DOMAIN }),
    )
    const test = world(true)
    expectErrno('ENOENT', () =>
      test.fd.ioctl(IOMMU_TEST_CMD, { size: 72, op: IOMMU_TEST_OP_MOCK_DOMAIN }),
    )
    // A command in a hole of the table, or one with size bits, is ENOTTY too.
    expectErrno('ENOTTY', () => test.fd.ioctl(0x3b95, { size: 8 }))
    expectErrno('ENOTTY', () => test.fd.ioctl(0xc0283b85, { size: 40 }))
  })

  it('the vIOMMU family answers the kernel errno of a driver without vIOMMU support', () => {
    const { fd } = world()
    expectErrno('EOPNOTSUPP', () => fd.ioctl(IOMMU_FAULT_QUEUE_ALLOC, { size: 16 }))
    expectErrno('EOPNOTSUPP', () => fd.ioctl(IOMMU_VIOMMU_ALLOC, { size: 40, type: 0 }))
    expectErrno('ENOENT', () => fd.ioctl(IOMMU_VIOMMU_ALLOC, { size: 40, type: 1, dev_id: 5 }))
    expectErrno('ENOENT', () => fd.ioctl(IOMMU_VDEVICE_ALLOC, { size: 24, viommu_id: 1 }))
    expectErrno('EINVAL', () =>
      fd.ioctl(IOMMU_VEVENTQ_ALLOC, { size: 32, type: 1, veventq_depth: 0 }),
    )
    expectErrno('EOVERFLOW', () =>
      fd.ioctl(IOMMU_HW_QUEUE_ALLOC, {
        size: 40,
        type: 1,
        length: 2n,
        nesting_parent_iova: 2n ** 64n - 1n,
      }),
    )
    expect(errnoOf(() => fd.ioctl(IOMMU_HW_QUEUE_ALLOC, { size: 40, type: 1, length: 2n }))).toBe(
      'ENOENT',
    )
  })
})

/**
 * The uAPI boundary: struct sizes and offsets, arguments in process memory, write-back
 * of outputs (also before an error), the size rules on partial structs, and validation
 * of argument objects (reference iommufd-uapi.md §2.1–2.2, appendix A).
 */
import { createMachine } from '@iommu/core'
import { mockIommu } from '@iommu/core/testing'
import { describe, expect, it } from 'vitest'
import {
  fdInstall,
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
  _testCmdMockDomain,
  _testIoctlIoasAlloc,
  expectErrno,
  PAGE_SIZE,
} from '../src/testing/index.ts'
import {
  decodeStruct,
  decodeStructArray,
  encodeStruct,
  encodeStructArray,
  IOMMU_DESTROY_LAYOUT,
  IOMMU_FAULT_QUEUE_ALLOC,
  IOMMU_HW_INFO_ARM_SMMUV3_LAYOUT,
  IOMMU_HW_QUEUE_ALLOC,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_AMD_GUEST_LAYOUT,
  IOMMU_HWPT_ARM_SMMUV3_LAYOUT,
  IOMMU_HWPT_INVALIDATE_SELFTEST_LAYOUT,
  IOMMU_HWPT_SELFTEST_LAYOUT,
  IOMMU_HWPT_VTD_S1_LAYOUT,
  IOMMU_IOAS_MAP_FILE,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_IOAS_UNMAP,
  IOMMU_TEST_HW_INFO_LAYOUT,
  IOMMU_TEST_INVALIDATE_FLAG_ALL,
  IOMMU_TEST_OP_MOCK_DOMAIN,
  IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS,
  IOMMU_VDEVICE_ALLOC,
  IOMMU_VEVENTQ_ALLOC,
  IOMMU_VIOMMU_ALLOC,
  IOMMU_VTD_S1_SRE,
  IOMMU_VTD_S1_WPE,
  MOCK_FLAGS_DEVICE_NO_DIRTY,
} from '../src/uapi/index.ts'
import { errnoOf } from './helpers.ts'

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
    const id = _testIoctlIoasAlloc(fd)
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
    expect(_testIoctlIoasAlloc(fd)).toBe(1)
  })

  it('a short struct reads zero beyond size and gets only its first bytes back (§2.1)', () => {
    const { fd } = world(true)
    const ioas = _testIoctlIoasAlloc(fd)
    const md = _testCmdMockDomain(fd, ioas)
    // size 32 of iommu_hw_info: out_capabilities (offset 32) is neither read nor written.
    const info = { size: 32, dev_id: md.idev_id, out_capabilities: 77n, out_max_pasid_log2: 9 }
    fd.ioctl(IOMMU_GET_HW_INFO, info)
    expect(info.out_capabilities).toBe(77n)
    expect(info.out_max_pasid_log2).toBe(0)
    // size 24 of iommu_hwpt_alloc: data_type/len/uptr read as zero whatever the object holds.
    const alloc = {
      size: 24,
      dev_id: md.idev_id,
      pt_id: ioas,
      data_type: 0xdead,
      data_len: 8,
      out_hwpt_id: 0,
    }
    fd.ioctl(IOMMU_HWPT_ALLOC, alloc)
    expect(alloc.out_hwpt_id).toBeGreaterThan(0)
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

  it('the vIOMMU family checks its arguments in the kernel order (§2.18–2.23)', () => {
    const { fd } = world()
    expectErrno('EOPNOTSUPP', () => fd.ioctl(IOMMU_FAULT_QUEUE_ALLOC, { size: 16, flags: 1 }))
    const fault = { size: 16, out_fault_id: 0, out_fault_fd: 0 }
    fd.ioctl(IOMMU_FAULT_QUEUE_ALLOC, fault)
    expect(fault.out_fault_id).toBe(1)
    expect(fault.out_fault_fd).toBeGreaterThan(fd.fd)
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

describe('integer fields convert as C converts them (issue #10)', () => {
  it('-1 in a __u32 is 0xffffffff: DESTROY looks the object up and fails ENOENT', () => {
    const { fd } = world()
    expect(errnoOf(() => fd.ioctl(IOMMU_DESTROY, { size: 8, id: -1 }))).toBe('ENOENT')
    expect(errnoOf(() => fd.ioctl(IOMMU_DESTROY, { size: 8n, id: 0xffff_ffffn }))).toBe('ENOENT')
  })

  it('values wider than the field keep their low bits: 0x1_0000_0001 in a __u32 is 1', () => {
    const { fd } = world()
    expect(_testIoctlIoasAlloc(fd)).toBe(1)
    expect(fd.ioctl(IOMMU_DESTROY, { size: 8, id: 0x1_0000_0001 })).toBe(0)
    expect(errnoOf(() => fd.ioctl(IOMMU_DESTROY, { size: 8, id: (1n << 40n) | 1n }))).toBe('ENOENT')
  })

  it('~FLAG in a __u32 flags field is the unknown-flags EOPNOTSUPP, no >>> 0 needed', () => {
    const { fd } = world(true)
    const ioas = _testIoctlIoasAlloc(fd)
    const md = _testCmdMockDomain(fd, ioas)
    expectErrno('EOPNOTSUPP', () =>
      fd.ioctl(IOMMU_HWPT_ALLOC, {
        size: 48,
        flags: ~IOMMU_HWPT_ALLOC_NEST_PARENT,
        dev_id: md.idev_id,
        pt_id: ioas,
      }),
    )
    expectErrno('EOPNOTSUPP', () =>
      fd.ioctl(IOMMU_IOAS_MAP, { size: 40, flags: ~IOMMU_IOAS_MAP_FIXED_IOVA, ioas_id: ioas }),
    )
  })

  it('numbers in __u64 fields map; -1n is U64_MAX; outputs come back as the kernel types', () => {
    const { proc, fd } = world()
    const ioas = _testIoctlIoasAlloc(fd)
    const buf = proc.mmap(4 * PAGE_SIZE)
    const map = {
      size: 40,
      flags: IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
      ioas_id: ioas,
      user_va: buf,
      length: 4 * PAGE_SIZE,
      iova: 0,
    }
    expect(fd.ioctl(IOMMU_IOAS_MAP, map)).toBe(0)
    // The output field holds what the kernel wrote: a __u64, so a bigint (first fit
    // aligned to the 16 KiB the length and address share).
    expect(map.iova).toBe(0x4000n)
    // iova 0, length -1n (U64_MAX): unmap everything, the bytes unmapped written back.
    const unmap = { size: 24, ioas_id: ioas, iova: 0, length: -1n }
    expect(fd.ioctl(IOMMU_IOAS_UNMAP, unmap)).toBe(0)
    expect(unmap.length).toBe(BigInt(4 * PAGE_SIZE))
    const alloc = { size: 12, out_ioas_id: 0n }
    fd.ioctl(IOMMU_IOAS_ALLOC, alloc)
    expect(alloc.out_ioas_id).toBe(2)
  })

  it('-1 in an __s32 stays -1 (EBADF), 2^32 + fd is fd, a boolean is 0 or 1', () => {
    const { proc, fd } = world()
    const ioas = _testIoctlIoasAlloc(fd)
    const memfd = proc.memfdCreate('m')
    memfd.ftruncate(PAGE_SIZE)
    const mfd = fdInstall(proc, memfd)
    const file = (fdValue: number | bigint) => ({
      size: 40,
      flags: IOMMU_IOAS_MAP_READABLE,
      ioas_id: ioas,
      fd: fdValue,
      length: PAGE_SIZE,
    })
    expectErrno('EBADF', () => fd.ioctl(IOMMU_IOAS_MAP_FILE, file(-1)))
    expectErrno('EBADF', () => fd.ioctl(IOMMU_IOAS_MAP_FILE, file(0xffff_ffff)))
    expect(fd.ioctl(IOMMU_IOAS_MAP_FILE, file(2 ** 32 + mfd))).toBe(0)
    // _Bool: true is 1, an unknown IOAS_ALLOC flag.
    const untyped = { size: 12, flags: true } as unknown as { size: number }
    expectErrno('EOPNOTSUPP', () => fd.ioctl(IOMMU_IOAS_ALLOC, untyped))
    expect(
      fd.ioctl(IOMMU_IOAS_ALLOC, { size: 12, flags: false } as unknown as { size: number }),
    ).toBe(0)
  })

  it('what is not an integer is EINVAL naming the field, before any lookup', () => {
    const { fd } = world(true)
    const bad: [string, unknown, RegExp][] = [
      ['id', 1.5, /iommu_destroy\.id: 1\.5 is not an integer/],
      ['id', Number.NaN, /iommu_destroy\.id: NaN is not an integer/],
      ['id', Number.POSITIVE_INFINITY, /iommu_destroy\.id: Infinity is not an integer/],
      ['id', 2 ** 53, /iommu_destroy\.id: 9007199254740992 is beyond 2\^53/],
      ['id', '1', /iommu_destroy\.id: the string "1" is not an integer/],
      ['id', {}, /iommu_destroy\.id: an object is not an integer/],
      ['id', null, /iommu_destroy\.id: null is not an integer/],
      ['size', 8.5, /iommu_destroy\.size: 8\.5 is not an integer/],
    ]
    for (const [field, value, message] of bad) {
      const arg = { size: 8, id: 1, [field]: value } as unknown as { size: number }
      expect(() => fd.ioctl(IOMMU_DESTROY, arg)).toThrow(message)
      expect(errnoOf(() => fd.ioctl(IOMMU_DESTROY, arg))).toBe('EINVAL')
    }
    // Inside a union member, and a member that is not a struct.
    const member = {
      size: 72,
      op: IOMMU_TEST_OP_MOCK_DOMAIN,
      mock_domain_flags: { dev_flags: 0.5 },
    }
    expect(() => fd.ioctl(IOMMU_TEST_CMD, member)).toThrow(
      /iommu_test_cmd\.mock_domain_flags\.dev_flags: 0\.5 is not an integer/,
    )
    const notStruct = { size: 72, op: 2, mock_domain: 5 } as unknown as { size: number }
    expect(() => fd.ioctl(IOMMU_TEST_CMD, notStruct)).toThrow(/iommu_test_cmd\.mock_domain: /)
    // A bigint in a __u32 of a union member converts like any other.
    const ioas = _testIoctlIoasAlloc(fd)
    const cmd = {
      size: 72,
      op: IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS,
      id: BigInt(ioas),
      mock_domain_flags: { dev_flags: BigInt(MOCK_FLAGS_DEVICE_NO_DIRTY), out_hwpt_id: 0n },
    }
    expect(fd.ioctl(IOMMU_TEST_CMD, cmd)).toBe(0)
    expect(cmd.mock_domain_flags.out_hwpt_id).toBeGreaterThan(ioas)
  })

  it('an argument in process memory is the same bytes the object stands for', () => {
    const { proc, fd } = world()
    const va = proc.mmap(PAGE_SIZE)
    proc.write(va, encodeStruct(IOMMU_DESTROY_LAYOUT, { size: 8, id: -1 }))
    expect(u32(proc, va + 4)).toBe(0xffff_ffff)
    expectErrno('ENOENT', () => fd.ioctl(IOMMU_DESTROY, BigInt(va)))
  })
})

describe('encodeStruct / decodeStruct: structs passed by pointer', () => {
  it('encode lays fields out as C, converting integers; decode reads the kernel types', () => {
    const bytes = encodeStruct(IOMMU_HWPT_VTD_S1_LAYOUT, {
      flags: IOMMU_VTD_S1_SRE | IOMMU_VTD_S1_WPE,
      pgtbl_addr: 0x1234_5000,
      addr_width: 48n,
    })
    expect(bytes.length).toBe(24)
    const v = new DataView(bytes.buffer)
    expect([v.getBigUint64(0, true), v.getBigUint64(8, true), v.getUint32(16, true)]).toEqual([
      5n,
      0x1234_5000n,
      48,
    ])
    expect(decodeStruct(IOMMU_HWPT_VTD_S1_LAYOUT, bytes)).toEqual({
      flags: 5n,
      pgtbl_addr: 0x1234_5000n,
      addr_width: 48,
      __reserved: 0,
    })
  })

  it('arrays: shorter initializers are zero-padded, longer ones EINVAL', () => {
    const ste = encodeStruct(IOMMU_HWPT_ARM_SMMUV3_LAYOUT, { ste: [-1] })
    expect(decodeStruct(IOMMU_HWPT_ARM_SMMUV3_LAYOUT, ste).ste).toEqual([2n ** 64n - 1n, 0n])
    const info = encodeStruct(IOMMU_HW_INFO_ARM_SMMUV3_LAYOUT, {
      idr: new Uint32Array([1, 2, 3, 4, 5, 6]),
      aidr: 7,
    })
    expect(decodeStruct(IOMMU_HW_INFO_ARM_SMMUV3_LAYOUT, info)).toMatchObject({
      idr: [1, 2, 3, 4, 5, 6],
      iidr: 0,
      aidr: 7,
    })
    expect(() => encodeStruct(IOMMU_HWPT_AMD_GUEST_LAYOUT, { dte: [1, 2, 3, 4, 5] })).toThrow(
      /iommu_hwpt_amd_guest\.dte: 5 elements for an array of 4/,
    )
    expect(() => encodeStruct(IOMMU_HWPT_AMD_GUEST_LAYOUT, { dte: [1, 0.5] })).toThrow(
      /iommu_hwpt_amd_guest\.dte: \[1\]: 0\.5 is not an integer/,
    )
  })

  it('an unknown field is EINVAL; a struct array is entries sizeof apart; short bytes read zero', () => {
    const bad = { iotlb: 1, pagetable: 2 } as unknown as { iotlb: number }
    expect(() => encodeStruct(IOMMU_HWPT_SELFTEST_LAYOUT, bad)).toThrow(
      /iommu_hwpt_selftest has no field pagetable/,
    )
    const reqs = encodeStructArray(IOMMU_HWPT_INVALIDATE_SELFTEST_LAYOUT, [
      { flags: IOMMU_TEST_INVALIDATE_FLAG_ALL },
      { iotlb_id: 3 },
    ])
    expect(decodeStructArray(IOMMU_HWPT_INVALIDATE_SELFTEST_LAYOUT, reqs, 2)).toEqual([
      { flags: 1, iotlb_id: 0 },
      { flags: 0, iotlb_id: 3 },
    ])
    expect(decodeStruct(IOMMU_TEST_HW_INFO_LAYOUT, new Uint8Array([1, 0, 0, 0, 2]))).toEqual({
      flags: 1,
      test_reg: 2,
    })
  })
})

/**
 * Type tests of the raw layer: argument objects are the kernel structs as C initializes
 * them (every integer field a number or a bigint), every field optional but `size`,
 * unknown fields rejected for known commands, and unknown commands take anything.
 */
import { expectTypeOf, test } from 'vitest'
import type { Iommufd } from './iommufd.ts'
import {
  IOMMU_DESTROY,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_IOAS_MAP,
  IOMMU_TEST_CMD,
} from './uapi/constants.ts'
import type { iommu_hw_info_arm_smmuv3, iommu_ioas_map } from './uapi/structs.ts'

declare const fd: Iommufd

test('iommu_ioas_map is what the kernel reads: u64 as bigint, the rest number', () => {
  expectTypeOf<iommu_ioas_map>().toEqualTypeOf<{
    size: number
    flags: number
    ioas_id: number
    __reserved: number
    user_va: bigint
    length: bigint
    iova: bigint
  }>()
  expectTypeOf<iommu_hw_info_arm_smmuv3['idr']>().toEqualTypeOf<readonly number[]>()
})

test('ioctl takes a designated initializer, a user address or NULL', () => {
  expectTypeOf(fd.ioctl(IOMMU_IOAS_MAP, { size: 40, ioas_id: 1, length: 4096n })).toEqualTypeOf<0>()
  expectTypeOf(fd.ioctl(IOMMU_IOAS_MAP, 0x1000n)).toEqualTypeOf<0>()
  expectTypeOf(fd.ioctl(IOMMU_IOAS_MAP, null)).toEqualTypeOf<0>()
  // What C accepts: numbers in u64 fields, bigints in u32 fields, negative values.
  fd.ioctl(IOMMU_IOAS_MAP, { size: 40, length: 4096, iova: 0x100_0000, ioas_id: 1n })
  fd.ioctl(IOMMU_DESTROY, { size: 8, id: -1 })
  fd.ioctl(IOMMU_HWPT_ALLOC, { size: 48, flags: ~IOMMU_HWPT_ALLOC_NEST_PARENT })
  // @ts-expect-error size is required
  fd.ioctl(IOMMU_IOAS_MAP, { ioas_id: 1 })
  // @ts-expect-error no such field
  fd.ioctl(IOMMU_IOAS_MAP, { size: 40, ioasid: 1 })
  // @ts-expect-error a string is not an integer
  fd.ioctl(IOMMU_IOAS_MAP, { size: 40, length: '4096' })
  fd.ioctl(IOMMU_TEST_CMD, { size: 72, op: 2, mock_domain: { out_hwpt_id: 0 } })
  // @ts-expect-error no such field in a union member
  fd.ioctl(IOMMU_TEST_CMD, { size: 72, op: 2, mock_domain: { hwpt_id: 0 } })
  fd.ioctl(0x3b7f, { anything: true })
})

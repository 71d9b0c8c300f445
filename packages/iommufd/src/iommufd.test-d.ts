/**
 * Type tests of the raw layer: argument objects are the kernel structs (u64 as bigint),
 * every field optional but `size`, and unknown commands take anything.
 */
import { expectTypeOf, test } from 'vitest'
import type { Iommufd } from './iommufd.ts'
import { IOMMU_IOAS_MAP, IOMMU_TEST_CMD } from './uapi/constants.ts'
import type { iommu_ioas_map } from './uapi/structs.ts'

declare const fd: Iommufd

test('iommu_ioas_map has the kernel fields, u64 as bigint', () => {
  expectTypeOf<iommu_ioas_map>().toEqualTypeOf<{
    size: number
    flags: number
    ioas_id: number
    __reserved: number
    user_va: bigint
    length: bigint
    iova: bigint
  }>()
})

test('ioctl takes a designated initializer, a user address or NULL', () => {
  expectTypeOf(fd.ioctl(IOMMU_IOAS_MAP, { size: 40, ioas_id: 1, length: 4096n })).toEqualTypeOf<0>()
  expectTypeOf(fd.ioctl(IOMMU_IOAS_MAP, 0x1000n)).toEqualTypeOf<0>()
  expectTypeOf(fd.ioctl(IOMMU_IOAS_MAP, null)).toEqualTypeOf<0>()
  // @ts-expect-error a u64 field is a bigint
  fd.ioctl(IOMMU_IOAS_MAP, { size: 40, length: 4096 })
  // @ts-expect-error size is required
  fd.ioctl(IOMMU_IOAS_MAP, { ioas_id: 1 })
  // @ts-expect-error no such field
  fd.ioctl(IOMMU_IOAS_MAP, { size: 40, ioasid: 1 })
  fd.ioctl(IOMMU_TEST_CMD, { size: 72, op: 2, mock_domain: { out_hwpt_id: 0 } })
  fd.ioctl(0x3b7f, { anything: true })
})

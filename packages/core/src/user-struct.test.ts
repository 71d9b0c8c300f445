import { describe, expect, it } from 'vitest'
import {
  copyStructFromFullUserArray,
  copyStructToUser,
  type UserData,
  type UserDataArray,
} from './domain.ts'
import { isIommuError } from './errno.ts'
import { defineUserStruct } from './user-struct.ts'

function errnoOf(fn: () => void): string {
  try {
    fn()
    return 'OK'
  } catch (e) {
    if (isIommuError(e)) return e.code
    throw e
  }
}

function arrayOf(
  bytes: Uint8Array,
  type: number,
  entryLen: number,
  entryNum: number,
): UserDataArray {
  return {
    type,
    entryLen,
    entryNum,
    readEntry: (i) => bytes.slice(i * entryLen, (i + 1) * entryLen),
  }
}

// struct iommu_viommu_invalidate_selftest { __u32 flags; __u32 vdev_id; __u32 cache_id; }
const INV = defineUserStruct({
  name: 'iommu_viommu_invalidate_selftest',
  type: 0xdeadbeef,
  fields: [
    ['flags', 'u32'],
    ['vdev_id', 'u32'],
    ['cache_id', 'u32'],
  ],
  minLast: 'cache_id',
})

// struct iommu_hwpt_vtd_s1 { __aligned_u64 flags; pgtbl_addr; __u32 addr_width; __reserved }
const VTD_S1 = defineUserStruct({
  name: 'iommu_hwpt_vtd_s1',
  type: 1,
  fields: [
    ['flags', 'u64'],
    ['pgtbl_addr', 'u64'],
    ['addr_width', 'u32'],
    ['__reserved', 'u32'],
  ],
  minLast: '__reserved',
})

describe('defineUserStruct: the kernel layout and size rules', () => {
  it('lays out fields with natural alignment', () => {
    expect(INV.sizeof).toBe(12)
    expect(VTD_S1.sizeof).toBe(24)
    expect(VTD_S1.offsets).toEqual({ flags: 0, pgtbl_addr: 8, addr_width: 16, __reserved: 20 })
    const STE = defineUserStruct({
      name: 'iommu_hwpt_arm_smmuv3',
      type: 2,
      fields: [['ste', 'u64', 2]],
      minLast: 'ste',
    })
    expect(STE.sizeof).toBe(16)
    const v = STE.decode(new DataView(STE.encode({ ste: [1n, 2n ** 63n] }).buffer))
    expect(v.ste).toEqual([1n, 2n ** 63n])
  })

  it('fromUser: type and length checks (iommu_copy_struct_from_user)', () => {
    const bytes = VTD_S1.encode({ flags: 1n, pgtbl_addr: 0x1000n, addr_width: 48 })
    const data = (len: number, type = 1): UserData => ({
      type,
      len,
      read: () => bytes.slice(0, len),
    })
    expect(VTD_S1.fromUser(data(24))).toEqual({
      flags: 1n,
      pgtbl_addr: 0x1000n,
      addr_width: 48,
      __reserved: 0,
    })
    expect(errnoOf(() => VTD_S1.fromUser(data(24, 2)))).toBe('EINVAL')
    expect(errnoOf(() => VTD_S1.fromUser(data(23)))).toBe('EINVAL')
    expect(errnoOf(() => VTD_S1.fromUser(data(25)))).toBe('EINVAL')
    expect(errnoOf(() => VTD_S1.fromUser(null))).toBe('EINVAL')
  })

  it('the full-array copy zero-extends short entries and refuses non-zero long tails (§5.3)', () => {
    const raw = new Uint8Array(32)
    const dv = new DataView(raw.buffer)
    dv.setUint32(0, 7, true) // entry 0 flags with entry_len 13
    dv.setUint32(4, 0x99, true)
    // entry_len 13: entry 0 has a zero 13th byte, entry 1 starts at 13.
    dv.setUint32(17, 0x88, true)
    const two = INV.fromFullUserArray(arrayOf(raw, 0xdeadbeef, 13, 2))
    expect(two[0]).toEqual({ flags: 7, vdev_id: 0x99, cache_id: 0 })
    expect(two[1]?.vdev_id).toBe(0x88)
    raw[12] = 1
    expect(errnoOf(() => INV.fromFullUserArray(arrayOf(raw, 0xdeadbeef, 13, 1)))).toBe('E2BIG')
    // entry_len 1: only flags' low byte survives; vdev_id reads 0.
    expect(INV.fromFullUserArray(arrayOf(raw, 0xdeadbeef, 1, 1))[0]).toEqual({
      flags: 7,
      vdev_id: 0,
      cache_id: 0,
    })
    expect(errnoOf(() => copyStructFromFullUserArray(arrayOf(raw, 1, 12, 1), 0xdeadbeef, 12))).toBe(
      'EINVAL',
    )
    expect(errnoOf(() => INV.fromFullUserArray(arrayOf(raw, 0xdeadbeef, 12, 0)))).toBe('EINVAL')
  })

  it('the per-entry copy refuses entries longer than the struct (nested HWPT path)', () => {
    const raw = new Uint8Array(32)
    expect(errnoOf(() => INV.fromUserArray(arrayOf(raw, 0xdeadbeef, 13, 1), 0))).toBe('EINVAL')
    expect(errnoOf(() => INV.fromUserArray(arrayOf(raw, 0xdeadbeef, 12, 1), 1))).toBe('EINVAL')
    expect(INV.fromUserArray(arrayOf(raw, 0xdeadbeef, 12, 2), 1)).toEqual({
      flags: 0,
      vdev_id: 0,
      cache_id: 0,
    })
  })

  it('toUser writes min(len, sizeof) bytes (iommu_copy_struct_to_user)', () => {
    // struct iommu_viommu_selftest { u32 in_data; u32 out_data; u64 out_mmap_offset; length }
    const SEL = defineUserStruct({
      name: 'iommu_viommu_selftest',
      type: 0xdeadbeef,
      fields: [
        ['in_data', 'u32'],
        ['out_data', 'u32'],
        ['out_mmap_offset', 'u64'],
        ['out_mmap_length', 'u64'],
      ],
      minLast: 'out_data',
    })
    expect([SEL.sizeof, SEL.minLen]).toEqual([24, 8])
    const out = new Uint8Array(24).fill(0xee)
    const data: UserData = {
      type: 0xdeadbeef,
      len: 8,
      read: () => out.slice(0, 8),
      write: (b) => out.set(b),
    }
    SEL.toUser(data, { in_data: 1, out_data: 2, out_mmap_offset: 3n })
    expect([...out.subarray(0, 12)]).toEqual([1, 0, 0, 0, 2, 0, 0, 0, 0xee, 0xee, 0xee, 0xee])
    const ro: UserData = { type: 0xdeadbeef, len: 8, read: () => out.slice(0, 8) }
    expect(errnoOf(() => copyStructToUser(ro, 0xdeadbeef, new Uint8Array(24), 8))).toBe('EFAULT')
    expect(errnoOf(() => SEL.toUser({ ...data, len: 25 }, {}))).toBe('EINVAL')
    expect(errnoOf(() => SEL.toUser({ ...data, len: 7 }, {}))).toBe('EINVAL')
  })
})

/**
 * `tools/testing/selftests/iommu/iommufd_utils.h` in TypeScript: the helpers the
 * selftests call, with the C names in camelCase and the C argument order, so that a
 * selftest ports one line for one line.
 *
 * Two layers, as in C:
 *
 * - `_test*(fd, ...)`: the C `static int _test_*(int fd, ...)` functions. They return
 *   what the C function returns through its out-pointers (a `__u64` as `bigint`, other
 *   integers as `number`; an object with the C names when there are several; 0 when
 *   there are none) and throw the `IommuError` where C returns -1 with `errno` set, so
 *   `EXPECT_ERRNO(E, _test_x(...))` is `expectErrno(E, () => _testX(...))`.
 * - `test*(...)`: the C macros (`test_cmd_*`, `test_err_*`, `test_ioctl_*`, `check_refs`).
 *   Like the macros they use the running fixture's `self.fd` (and `self.ioas_id` where the
 *   C uses `self->ioas_id`), assert success (`ASSERT_EQ(0, ...)`) or the errno
 *   (`EXPECT_ERRNO`), and return the out-pointer values.
 *
 * Out-pointer arguments (`&hwpt_id`, `NULL`) are dropped; the other arguments keep their
 * C order. A `void *data` argument is an address in the process, `null`, or a
 * `Uint8Array` (see {@link UserPtr}). Integer arguments take `number` or `bigint` like the
 * struct fields they fill.
 *
 * The vIOMMU-family helpers (vIOMMU, vDEVICE, HW queue, vEVENTQ, fault queues and IOPF,
 * cache and IOTLB checks, invalidation, PASID) have their own section at the end.
 *
 * @module
 */

import { IommuError, MAP_SHARED, PROT_READ, PROT_WRITE } from '@iommu/core'
import { fdClose, fdPoll, fdRead, fdWrite } from '../fd-table.ts'
import { type Iommufd, openIommufd } from '../iommufd.ts'
import {
  IOMMU_DESTROY,
  IOMMU_FAULT_QUEUE_ALLOC,
  IOMMU_GET_HW_INFO,
  IOMMU_HW_INFO_FLAG_INPUT_TYPE,
  IOMMU_HW_INFO_SELFTEST_REGVAL,
  IOMMU_HW_INFO_TYPE_DEFAULT,
  IOMMU_HW_INFO_TYPE_SELFTEST,
  IOMMU_HW_QUEUE_ALLOC,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_DATA_NONE,
  IOMMU_HWPT_DATA_SELFTEST,
  IOMMU_HWPT_DIRTY_TRACKING_ENABLE,
  IOMMU_HWPT_GET_DIRTY_BITMAP,
  IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR,
  IOMMU_HWPT_INVALIDATE,
  IOMMU_HWPT_SET_DIRTY_TRACKING,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FILE,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_IOAS_UNMAP,
  IOMMU_PGFAULT_PERM_READ,
  IOMMU_PGFAULT_PERM_WRITE,
  IOMMU_TEST_CMD,
  IOMMU_TEST_OP_ACCESS_REPLACE_IOAS,
  IOMMU_TEST_OP_CREATE_ACCESS,
  IOMMU_TEST_OP_DESTROY_ACCESS_PAGES,
  IOMMU_TEST_OP_DEV_CHECK_CACHE,
  IOMMU_TEST_OP_DIRTY,
  IOMMU_TEST_OP_MD_CHECK_IOTLB,
  IOMMU_TEST_OP_MD_CHECK_MAP,
  IOMMU_TEST_OP_MD_CHECK_REFS,
  IOMMU_TEST_OP_MOCK_DOMAIN,
  IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS,
  IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE,
  IOMMU_TEST_OP_PASID_ATTACH,
  IOMMU_TEST_OP_PASID_CHECK_HWPT,
  IOMMU_TEST_OP_PASID_DETACH,
  IOMMU_TEST_OP_PASID_REPLACE,
  IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT,
  IOMMU_TEST_OP_TRIGGER_IOPF,
  IOMMU_TEST_OP_TRIGGER_VEVENT,
  IOMMU_VDEVICE_ALLOC,
  IOMMU_VEVENTQ_ALLOC,
  IOMMU_VEVENTQ_FLAG_LOST_EVENTS,
  IOMMU_VIOMMU_ALLOC,
  IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST,
  MOCK_DEV_CACHE_NUM,
  MOCK_NESTED_DOMAIN_IOTLB_NUM,
} from '../uapi/constants.ts'
import { type CInt, encodeStruct } from '../uapi/struct.ts'
import { IOMMU_HWPT_SELFTEST_LAYOUT, IOMMU_TEST_HW_INFO_LAYOUT } from '../uapi/structs.ts'
import {
  assertEq,
  BUFFER_SIZE,
  buffer,
  currentSelf,
  expectErrno,
  type FixtureSelf,
  ioctlErrno,
  SelftestAssertionError,
} from './harness.ts'

/** `sizeof(struct iommu_test_cmd)`. */
const TEST_CMD_SIZE = 72
/** The CPU page size. */
const PAGE = 4096

/**
 * A `void *` argument: an address in the caller's process (`number`/`bigint`), `null`
 * (NULL), or a `Uint8Array` standing for a C object (`&data`): the helper copies it into
 * the process, passes its address, and copies the bytes back afterwards, so outputs the
 * kernel writes there (GET_HW_INFO's data) appear in the array. Build one with
 * `encodeStruct`.
 */
export type UserPtr = number | bigint | Uint8Array | null

/** Run `fn` with `data` as a user pointer (see {@link UserPtr}). */
export function withUserPtr<T>(fd: Iommufd, data: UserPtr, fn: (uptr: bigint) => T): T {
  if (!(data instanceof Uint8Array)) return fn(data === null ? 0n : BigInt(data))
  const p = fd.caller.proc
  const len = Math.max(data.length, 1)
  const va = p.mmap(len)
  try {
    p.write(va, data)
    return fn(BigInt(va))
  } finally {
    data.set(p.read(va, data.length))
    p.munmap(va, len)
  }
}

function self(): FixtureSelf & Record<string, unknown> {
  return currentSelf()
}

function selfIoasId(): number {
  const id = self().ioas_id
  if (typeof id !== 'number') throw new Error('this helper uses self->ioas_id: set it in setup')
  return id
}

const RW = IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_READABLE

// ------------------------------------------------------------------ refs and maps

/** `_test_cmd_md_check_refs`: every page of [ptr, ptr + length) has `refs` pins (`IOMMU_TEST_OP_MD_CHECK_REFS`). */
export function _testCmdMdCheckRefs(fd: Iommufd, ptr: CInt, length: CInt, refs: CInt): 0 {
  return fd.ioctl(IOMMU_TEST_CMD, {
    size: TEST_CMD_SIZE,
    op: IOMMU_TEST_OP_MD_CHECK_REFS,
    check_refs: { length, uptr: ptr, refs },
  })
}

/** `check_refs(ptr, length, refs)`. */
export function checkRefs(ptr: CInt, length: CInt, refs: CInt): void {
  _testCmdMdCheckRefs(self().fd, ptr, length, refs)
}

/** `IOMMU_TEST_OP_MD_CHECK_MAP`: the mock domain `hwpt_id` maps `iova` to the pages under `ptr`. */
export function _testCmdMdCheckMap(
  fd: Iommufd,
  hwpt_id: CInt,
  ptr: CInt,
  iova: CInt,
  length: CInt,
): 0 {
  return fd.ioctl(IOMMU_TEST_CMD, {
    size: TEST_CMD_SIZE,
    op: IOMMU_TEST_OP_MD_CHECK_MAP,
    id: hwpt_id,
    check_map: { iova, length, uptr: ptr },
  })
}

/**
 * `check_mock_iova(ptr, iova, length)` of `iommufd.c`: the check against `self.hwpt_id`,
 * and `self.hwpt_ids[1]` when the fixture has a second mock domain.
 */
export function checkMockIova(ptr: CInt, iova: CInt, length: CInt): void {
  const s = self()
  if (typeof s.hwpt_id !== 'number')
    throw new Error('check_mock_iova uses self->hwpt_id: set it in setup')
  _testCmdMdCheckMap(s.fd, s.hwpt_id, ptr, iova, length)
  const second = (s.hwpt_ids as readonly number[] | undefined)?.[1]
  if (second) _testCmdMdCheckMap(s.fd, second, ptr, iova, length)
}

// ------------------------------------------------------------------ mock domains

/** What `test_cmd_mock_domain` returns through its pointers. */
export interface MockDomainIds {
  readonly stdev_id: number
  readonly hwpt_id: number
  readonly idev_id: number
}

/** `_test_cmd_mock_domain`: a mock device attached to `ioas_id` (an IOAS or a HWPT). */
export function _testCmdMockDomain(fd: Iommufd, ioas_id: CInt): MockDomainIds {
  const cmd = {
    size: TEST_CMD_SIZE,
    op: IOMMU_TEST_OP_MOCK_DOMAIN,
    id: ioas_id,
    mock_domain: { out_stdev_id: 0, out_hwpt_id: 0, out_idev_id: 0 },
  }
  fd.ioctl(IOMMU_TEST_CMD, cmd)
  const m = cmd.mock_domain
  return { stdev_id: m.out_stdev_id, hwpt_id: m.out_hwpt_id, idev_id: m.out_idev_id }
}

/** `test_cmd_mock_domain(ioas_id, &stdev_id, &hwpt_id, &idev_id)`. */
export function testCmdMockDomain(ioas_id: CInt): MockDomainIds {
  return _testCmdMockDomain(self().fd, ioas_id)
}

/** `test_err_mock_domain(errno, ioas_id, ...)`. */
export function testErrMockDomain(errno: number, ioas_id: CInt): void {
  expectErrno(errno, () => _testCmdMockDomain(self().fd, ioas_id))
}

/** `_test_cmd_mock_domain_flags`: a mock device with `MOCK_FLAGS_DEVICE_*` attached to `ioas_id`. */
export function _testCmdMockDomainFlags(
  fd: Iommufd,
  ioas_id: CInt,
  stdev_flags: CInt,
): MockDomainIds {
  const cmd = {
    size: TEST_CMD_SIZE,
    op: IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS,
    id: ioas_id,
    mock_domain_flags: { dev_flags: stdev_flags, out_stdev_id: 0, out_hwpt_id: 0, out_idev_id: 0 },
  }
  fd.ioctl(IOMMU_TEST_CMD, cmd)
  const m = cmd.mock_domain_flags
  return { stdev_id: m.out_stdev_id, hwpt_id: m.out_hwpt_id, idev_id: m.out_idev_id }
}

/** `test_cmd_mock_domain_flags(ioas_id, flags, &stdev_id, &hwpt_id, &idev_id)`. */
export function testCmdMockDomainFlags(ioas_id: CInt, flags: CInt): MockDomainIds {
  return _testCmdMockDomainFlags(self().fd, ioas_id, flags)
}

/** `test_err_mock_domain_flags(errno, ioas_id, flags, ...)`. */
export function testErrMockDomainFlags(errno: number, ioas_id: CInt, flags: CInt): void {
  expectErrno(errno, () => _testCmdMockDomainFlags(self().fd, ioas_id, flags))
}

/** `_test_cmd_mock_domain_replace`: move the mock device to `pt_id`; returns the HWPT it resolved to. */
export function _testCmdMockDomainReplace(fd: Iommufd, stdev_id: CInt, pt_id: CInt): number {
  const cmd = {
    size: TEST_CMD_SIZE,
    op: IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE,
    id: stdev_id,
    mock_domain_replace: { pt_id },
  }
  fd.ioctl(IOMMU_TEST_CMD, cmd)
  return cmd.mock_domain_replace.pt_id as number
}

/** `test_cmd_mock_domain_replace(stdev_id, pt_id)`; returns the resolved HWPT (C passes NULL). */
export function testCmdMockDomainReplace(stdev_id: CInt, pt_id: CInt): number {
  return _testCmdMockDomainReplace(self().fd, stdev_id, pt_id)
}

/** `test_err_mock_domain_replace(errno, stdev_id, pt_id)`. */
export function testErrMockDomainReplace(errno: number, stdev_id: CInt, pt_id: CInt): void {
  expectErrno(errno, () => _testCmdMockDomainReplace(self().fd, stdev_id, pt_id))
}

// ------------------------------------------------------------------ HWPT allocation

/** `_test_cmd_hwpt_alloc`: IOMMU_HWPT_ALLOC; returns `out_hwpt_id`. */
export function _testCmdHwptAlloc(
  fd: Iommufd,
  device_id: CInt,
  pt_id: CInt,
  ft_id: CInt,
  flags: CInt,
  data_type: CInt,
  data: UserPtr,
  data_len: CInt,
): number {
  return withUserPtr(fd, data, (uptr) => {
    const cmd = {
      size: 48,
      flags,
      dev_id: device_id,
      pt_id,
      data_type,
      data_len,
      data_uptr: uptr,
      fault_id: ft_id,
      out_hwpt_id: 0,
    }
    fd.ioctl(IOMMU_HWPT_ALLOC, cmd)
    return cmd.out_hwpt_id
  })
}

/** `test_cmd_hwpt_alloc(device_id, pt_id, flags, &hwpt_id)`. */
export function testCmdHwptAlloc(device_id: CInt, pt_id: CInt, flags: CInt): number {
  return _testCmdHwptAlloc(self().fd, device_id, pt_id, 0, flags, IOMMU_HWPT_DATA_NONE, null, 0)
}

/**
 * `test_cmd_hwpt_alloc_iommupt(device_id, pt_id, flags, iommupt_type, &hwpt_id)`: a
 * selftest HWPT whose `struct iommu_hwpt_selftest` asks for a `MOCK_IOMMUPT_*` table.
 */
export function testCmdHwptAllocIommupt(
  device_id: CInt,
  pt_id: CInt,
  flags: CInt,
  iommupt_type: CInt,
): number {
  const user_cfg = encodeStruct(IOMMU_HWPT_SELFTEST_LAYOUT, { pagetable_type: iommupt_type })
  return _testCmdHwptAlloc(
    self().fd,
    device_id,
    pt_id,
    0,
    flags,
    IOMMU_HWPT_DATA_SELFTEST,
    user_cfg,
    user_cfg.length,
  )
}

/** `test_err_hwpt_alloc(errno, device_id, pt_id, flags, &hwpt_id)`. */
export function testErrHwptAlloc(errno: number, device_id: CInt, pt_id: CInt, flags: CInt): void {
  expectErrno(errno, () =>
    _testCmdHwptAlloc(self().fd, device_id, pt_id, 0, flags, IOMMU_HWPT_DATA_NONE, null, 0),
  )
}

/** `test_cmd_hwpt_alloc_nested(device_id, pt_id, flags, &hwpt_id, data_type, data, data_len)`. */
export function testCmdHwptAllocNested(
  device_id: CInt,
  pt_id: CInt,
  flags: CInt,
  data_type: CInt,
  data: UserPtr,
  data_len: CInt,
): number {
  return _testCmdHwptAlloc(self().fd, device_id, pt_id, 0, flags, data_type, data, data_len)
}

/** `test_err_hwpt_alloc_nested(errno, device_id, pt_id, flags, &hwpt_id, data_type, data, data_len)`. */
export function testErrHwptAllocNested(
  errno: number,
  device_id: CInt,
  pt_id: CInt,
  flags: CInt,
  data_type: CInt,
  data: UserPtr,
  data_len: CInt,
): void {
  expectErrno(errno, () =>
    _testCmdHwptAlloc(self().fd, device_id, pt_id, 0, flags, data_type, data, data_len),
  )
}

// ------------------------------------------------------------------ accesses

/** `_test_cmd_access_replace_ioas`. */
export function _testCmdAccessReplaceIoas(fd: Iommufd, access_id: CInt, ioas_id: CInt): 0 {
  return fd.ioctl(IOMMU_TEST_CMD, {
    size: TEST_CMD_SIZE,
    op: IOMMU_TEST_OP_ACCESS_REPLACE_IOAS,
    id: access_id,
    access_replace_ioas: { ioas_id },
  })
}

/** `test_cmd_access_replace_ioas(access_id, ioas_id)`. */
export function testCmdAccessReplaceIoas(access_id: CInt, ioas_id: CInt): void {
  _testCmdAccessReplaceIoas(self().fd, access_id, ioas_id)
}

/** `_test_cmd_create_access`: an access on `ioas_id`; returns its fd (`*access_id`). */
export function _testCmdCreateAccess(fd: Iommufd, ioas_id: CInt, flags: CInt): number {
  const cmd = {
    size: TEST_CMD_SIZE,
    op: IOMMU_TEST_OP_CREATE_ACCESS,
    id: ioas_id,
    create_access: { flags, out_access_fd: 0 },
  }
  fd.ioctl(IOMMU_TEST_CMD, cmd)
  return cmd.create_access.out_access_fd
}

/** `test_cmd_create_access(ioas_id, &access_id, flags)`. */
export function testCmdCreateAccess(ioas_id: CInt, flags: CInt): number {
  return _testCmdCreateAccess(self().fd, ioas_id, flags)
}

/** `_test_cmd_destroy_access`: `close(access_id)` in the process that owns `fd`. */
export function _testCmdDestroyAccess(fd: Iommufd, access_id: number): 0 {
  fdClose(fd.caller.proc, access_id)
  return 0
}

/** `test_cmd_destroy_access(access_id)`. */
export function testCmdDestroyAccess(access_id: number): void {
  _testCmdDestroyAccess(self().fd, access_id)
}

/** `_test_cmd_destroy_access_pages`. */
export function _testCmdDestroyAccessPages(fd: Iommufd, access_id: CInt, access_pages_id: CInt): 0 {
  return fd.ioctl(IOMMU_TEST_CMD, {
    size: TEST_CMD_SIZE,
    op: IOMMU_TEST_OP_DESTROY_ACCESS_PAGES,
    id: access_id,
    destroy_access_pages: { access_pages_id },
  })
}

/** `test_cmd_destroy_access_pages(access_id, access_pages_id)`. */
export function testCmdDestroyAccessPages(access_id: CInt, access_pages_id: CInt): void {
  _testCmdDestroyAccessPages(self().fd, access_id, access_pages_id)
}

/** `test_err_destroy_access_pages(errno, access_id, access_pages_id)`. */
export function testErrDestroyAccessPages(
  errno: number,
  access_id: CInt,
  access_pages_id: CInt,
): void {
  expectErrno(errno, () => _testCmdDestroyAccessPages(self().fd, access_id, access_pages_id))
}

// ------------------------------------------------------------------ dirty tracking

/** `_test_cmd_set_dirty_tracking`. */
export function _testCmdSetDirtyTracking(fd: Iommufd, hwpt_id: CInt, enabled: boolean): 0 {
  return fd.ioctl(IOMMU_HWPT_SET_DIRTY_TRACKING, {
    size: 16,
    flags: enabled ? IOMMU_HWPT_DIRTY_TRACKING_ENABLE : 0,
    hwpt_id,
  })
}

/** `test_cmd_set_dirty_tracking(hwpt_id, enabled)`. */
export function testCmdSetDirtyTracking(hwpt_id: CInt, enabled: boolean): void {
  _testCmdSetDirtyTracking(self().fd, hwpt_id, enabled)
}

/** `_test_cmd_get_dirty_bitmap`: IOMMU_HWPT_GET_DIRTY_BITMAP into the bitmap at `bitmap`. */
export function _testCmdGetDirtyBitmap(
  fd: Iommufd,
  hwpt_id: CInt,
  length: CInt,
  iova: CInt,
  page_size: CInt,
  bitmap: CInt,
  flags: CInt,
): 0 {
  return fd.ioctl(IOMMU_HWPT_GET_DIRTY_BITMAP, {
    size: 48,
    hwpt_id,
    flags,
    iova,
    length,
    page_size,
    data: bitmap,
  })
}

/** `test_cmd_get_dirty_bitmap(fd, hwpt_id, length, iova, page_size, bitmap, flags)`. */
export function testCmdGetDirtyBitmap(
  fd: Iommufd,
  hwpt_id: CInt,
  length: CInt,
  iova: CInt,
  page_size: CInt,
  bitmap: CInt,
  flags: CInt,
): void {
  _testCmdGetDirtyBitmap(fd, hwpt_id, length, iova, page_size, bitmap, flags)
}

/**
 * `_test_cmd_mock_domain_set_dirty`: mark dirty, in the mock domain, the IOPTE under
 * each set bit of the bitmap at `bitmap` (`IOMMU_TEST_OP_DIRTY`); returns `out_nr_dirty`.
 */
export function _testCmdMockDomainSetDirty(
  fd: Iommufd,
  hwpt_id: CInt,
  length: CInt,
  iova: CInt,
  page_size: CInt,
  bitmap: CInt,
): bigint {
  const cmd = {
    size: TEST_CMD_SIZE,
    op: IOMMU_TEST_OP_DIRTY,
    id: hwpt_id,
    dirty: { iova, length, page_size, uptr: bitmap, out_nr_dirty: 0n },
  }
  fd.ioctl(IOMMU_TEST_CMD, cmd)
  return cmd.dirty.out_nr_dirty
}

/** `test_cmd_mock_domain_set_dirty(fd, hwpt_id, length, iova, page_size, bitmap, &nr)`. */
export function testCmdMockDomainSetDirty(
  fd: Iommufd,
  hwpt_id: CInt,
  length: CInt,
  iova: CInt,
  page_size: CInt,
  bitmap: CInt,
): bigint {
  return _testCmdMockDomainSetDirty(fd, hwpt_id, length, iova, page_size, bitmap)
}

/**
 * `_test_mock_dirty_bitmaps`: mark the first IOPTE of every pair dirty through the mock,
 * read the bitmap (with `flags`) and check that exactly those IOPTEs' bits are set, then
 * read again and check that they are gone (or, with NO_CLEAR, still there). `nbits` bits
 * of `page_size` from `iova`; `pte_page_size` is the IOPTE size; `bitmap` an address in
 * the process with room for `nbits` bits.
 */
export function _testMockDirtyBitmaps(
  fd: Iommufd,
  hwpt_id: CInt,
  length: CInt,
  iova: CInt,
  page_size: number,
  pte_page_size: number,
  bitmap: number,
  nbits: number,
  flags: number,
): 0 {
  const p = fd.caller.proc
  const npte = Math.trunc(pte_page_size / page_size)
  const pteset = 2 * npte
  const nr = Math.trunc(nbits / pteset) || 1
  const bitmap_size = Math.ceil(nbits / 8)
  // test_bit() reads whole words: cover the last pteset the loops below look at.
  const readBytes = Math.ceil((Math.ceil(nbits / pteset) * pteset) / 64) * 8
  const test_bit = (b: Uint8Array, nr_: number) => (((b[nr_ >>> 3] ?? 0) >> (nr_ & 7)) & 1) === 1

  // One dirty IOPTE at the start of every pair, set through the mock.
  const marks = new Uint8Array(bitmap_size)
  for (let i = 0; i < nbits; i += pteset) marks[i >>> 3] = (marks[i >>> 3] ?? 0) | (1 << (i & 7))
  p.write(bitmap, marks)
  const out_dirty = _testCmdMockDomainSetDirty(fd, hwpt_id, length, iova, page_size, bitmap)
  assertEq(BigInt(nr), out_dirty, 'IOPTEs marked dirty (out_nr_dirty)')

  // The first read reports exactly those IOPTEs' bits.
  p.write(bitmap, new Uint8Array(bitmap_size))
  _testCmdGetDirtyBitmap(fd, hwpt_id, length, iova, page_size, bitmap, flags)
  let got = p.read(bitmap, readBytes)
  for (let i = 0; i < nbits; i += pteset) {
    for (let j = 0; j < pteset; j++) {
      if (test_bit(got, i + j) !== j < npte) {
        assertEq(j < npte, test_bit(got, i + j), `first read, bit ${i + j}`)
      }
    }
    assertEq(!(i % pteset), test_bit(got, i), `first read, bit ${i}`)
  }

  // The second read: nothing left, unless the first one was NO_CLEAR.
  p.write(bitmap, new Uint8Array(bitmap_size))
  _testCmdGetDirtyBitmap(fd, hwpt_id, length, iova, page_size, bitmap, flags)
  got = p.read(bitmap, readBytes)
  const noClear = (flags & IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR) !== 0
  for (let i = 0; i < nbits; i += pteset) {
    for (let j = 0; j < pteset; j++) {
      if (test_bit(got, i + j) !== (j < npte && noClear)) {
        assertEq(j < npte && noClear, test_bit(got, i + j), `second read, bit ${i + j}`)
      }
    }
  }
  return 0
}

/** `test_mock_dirty_bitmaps(hwpt_id, length, iova, page_size, pte_size, bitmap, bitmap_size, flags, _metadata)`. */
export function testMockDirtyBitmaps(
  hwpt_id: CInt,
  length: CInt,
  iova: CInt,
  page_size: number,
  pte_size: number,
  bitmap: number,
  bitmap_size: number,
  flags: number,
): void {
  _testMockDirtyBitmaps(
    self().fd,
    hwpt_id,
    length,
    iova,
    page_size,
    pte_size,
    bitmap,
    bitmap_size,
    flags,
  )
}

// ------------------------------------------------------------------ IOAS

/** `_test_ioctl_destroy`: IOMMU_DESTROY. */
export function _testIoctlDestroy(fd: Iommufd, id: CInt): 0 {
  return fd.ioctl(IOMMU_DESTROY, { size: 8, id })
}

/** `test_ioctl_destroy(id)`. */
export function testIoctlDestroy(id: CInt): void {
  _testIoctlDestroy(self().fd, id)
}

/** `_test_ioctl_ioas_alloc`: returns `out_ioas_id`. */
export function _testIoctlIoasAlloc(fd: Iommufd): number {
  const cmd = { size: 12, out_ioas_id: 0 }
  fd.ioctl(IOMMU_IOAS_ALLOC, cmd)
  return cmd.out_ioas_id
}

/** `test_ioctl_ioas_alloc(&id)`: asserts the ID is not 0. */
export function testIoctlIoasAlloc(): number {
  const id = _testIoctlIoasAlloc(self().fd)
  if (id === 0) throw new SelftestAssertionError('IOAS_ALLOC returned ID 0')
  return id
}

/**
 * `_test_ioctl_ioas_map`: IOMMU_IOAS_MAP of [buffer, buffer + length); `iova` is read
 * when `flags` has FIXED_IOVA. Returns the IOVA (`*iova`).
 */
export function _testIoctlIoasMap(
  fd: Iommufd,
  ioas_id: CInt,
  buffer_: CInt,
  length: CInt,
  iova: CInt,
  flags: CInt,
): bigint {
  const cmd = {
    size: 40,
    flags,
    ioas_id,
    user_va: buffer_,
    length,
    iova: (BigInt(flags) & BigInt(IOMMU_IOAS_MAP_FIXED_IOVA)) !== 0n ? iova : 0,
  }
  fd.ioctl(IOMMU_IOAS_MAP, cmd)
  return cmd.iova as bigint
}

/** `test_ioctl_ioas_map(buffer, length, &iova)` on `self.ioas_id`. */
export function testIoctlIoasMap(buffer_: CInt, length: CInt): bigint {
  return _testIoctlIoasMap(self().fd, selfIoasId(), buffer_, length, 0, RW)
}

/** `test_err_ioctl_ioas_map(errno, buffer, length, &iova)`. */
export function testErrIoctlIoasMap(errno: number, buffer_: CInt, length: CInt): void {
  expectErrno(errno, () => _testIoctlIoasMap(self().fd, selfIoasId(), buffer_, length, 0, RW))
}

/** `test_ioctl_ioas_map_id(ioas_id, buffer, length, &iova)`. */
export function testIoctlIoasMapId(ioas_id: CInt, buffer_: CInt, length: CInt): bigint {
  return _testIoctlIoasMap(self().fd, ioas_id, buffer_, length, 0, RW)
}

/** `test_ioctl_ioas_map_fixed(buffer, length, iova)`. */
export function testIoctlIoasMapFixed(buffer_: CInt, length: CInt, iova: CInt): void {
  _testIoctlIoasMap(self().fd, selfIoasId(), buffer_, length, iova, IOMMU_IOAS_MAP_FIXED_IOVA | RW)
}

/** `test_ioctl_ioas_map_fixed_id(ioas_id, buffer, length, iova)`. */
export function testIoctlIoasMapFixedId(
  ioas_id: CInt,
  buffer_: CInt,
  length: CInt,
  iova: CInt,
): void {
  _testIoctlIoasMap(self().fd, ioas_id, buffer_, length, iova, IOMMU_IOAS_MAP_FIXED_IOVA | RW)
}

/** `test_err_ioctl_ioas_map_fixed(errno, buffer, length, iova)`. */
export function testErrIoctlIoasMapFixed(
  errno: number,
  buffer_: CInt,
  length: CInt,
  iova: CInt,
): void {
  expectErrno(errno, () =>
    _testIoctlIoasMap(
      self().fd,
      selfIoasId(),
      buffer_,
      length,
      iova,
      IOMMU_IOAS_MAP_FIXED_IOVA | RW,
    ),
  )
}

/** `_test_ioctl_ioas_unmap`: returns the bytes unmapped (`*out_len`). */
export function _testIoctlIoasUnmap(fd: Iommufd, ioas_id: CInt, iova: CInt, length: CInt): bigint {
  const cmd = { size: 24, ioas_id, iova, length }
  fd.ioctl(IOMMU_IOAS_UNMAP, cmd)
  return cmd.length as bigint
}

/** `test_ioctl_ioas_unmap(iova, length)` on `self.ioas_id`. */
export function testIoctlIoasUnmap(iova: CInt, length: CInt): void {
  _testIoctlIoasUnmap(self().fd, selfIoasId(), iova, length)
}

/** `test_ioctl_ioas_unmap_id(ioas_id, iova, length)`. */
export function testIoctlIoasUnmapId(ioas_id: CInt, iova: CInt, length: CInt): void {
  _testIoctlIoasUnmap(self().fd, ioas_id, iova, length)
}

/** `test_err_ioctl_ioas_unmap(errno, iova, length)`. */
export function testErrIoctlIoasUnmap(errno: number, iova: CInt, length: CInt): void {
  expectErrno(errno, () => _testIoctlIoasUnmap(self().fd, selfIoasId(), iova, length))
}

/** `_test_ioctl_ioas_map_file`: IOMMU_IOAS_MAP_FILE; returns the IOVA. */
export function _testIoctlIoasMapFile(
  fd: Iommufd,
  ioas_id: CInt,
  mfd_: CInt,
  start: CInt,
  length: CInt,
  iova: CInt,
  flags: CInt,
): bigint {
  const cmd = {
    size: 40,
    flags,
    ioas_id,
    fd: mfd_,
    start,
    length,
    iova: (BigInt(flags) & BigInt(IOMMU_IOAS_MAP_FIXED_IOVA)) !== 0n ? iova : 0,
  }
  fd.ioctl(IOMMU_IOAS_MAP_FILE, cmd)
  return cmd.iova as bigint
}

/** `test_ioctl_ioas_map_file(mfd, start, length, &iova)` on `self.ioas_id`. */
export function testIoctlIoasMapFile(mfd_: CInt, start: CInt, length: CInt): bigint {
  return _testIoctlIoasMapFile(self().fd, selfIoasId(), mfd_, start, length, 0, RW)
}

/** `test_err_ioctl_ioas_map_file(errno, mfd, start, length, &iova)`. */
export function testErrIoctlIoasMapFile(
  errno: number,
  mfd_: CInt,
  start: CInt,
  length: CInt,
): void {
  expectErrno(errno, () =>
    _testIoctlIoasMapFile(self().fd, selfIoasId(), mfd_, start, length, 0, RW),
  )
}

/** `test_ioctl_ioas_map_id_file(ioas_id, mfd, start, length, &iova)`. */
export function testIoctlIoasMapIdFile(
  ioas_id: CInt,
  mfd_: CInt,
  start: CInt,
  length: CInt,
): bigint {
  return _testIoctlIoasMapFile(self().fd, ioas_id, mfd_, start, length, 0, RW)
}

/** `test_ioctl_ioas_map_fixed_file(mfd, start, length, iova)`. */
export function testIoctlIoasMapFixedFile(mfd_: CInt, start: CInt, length: CInt, iova: CInt): void {
  _testIoctlIoasMapFile(
    self().fd,
    selfIoasId(),
    mfd_,
    start,
    length,
    iova,
    IOMMU_IOAS_MAP_FIXED_IOVA | RW,
  )
}

/** `_test_ioctl_set_temp_memory_limit`: the pages an access may pin at once, temporarily. */
export function _testIoctlSetTempMemoryLimit(fd: Iommufd, limit: CInt): 0 {
  return fd.ioctl(IOMMU_TEST_CMD, {
    size: TEST_CMD_SIZE,
    op: IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT,
    memory_limit: { limit },
  })
}

/** `test_ioctl_set_temp_memory_limit(limit)`. */
export function testIoctlSetTempMemoryLimit(limit: CInt): void {
  _testIoctlSetTempMemoryLimit(self().fd, limit)
}

/** `test_ioctl_set_default_memory_limit()`: back to 65536. */
export function testIoctlSetDefaultMemoryLimit(): void {
  testIoctlSetTempMemoryLimit(65536)
}

/**
 * `teardown_iommufd(fd)`: close `fd`, then check on a fresh `/dev/iommu` that nothing of
 * the global buffer is still pinned.
 */
export function teardownIommufd(fd: Iommufd): void {
  fd.close()
  const fresh = openIommufd(fd.ctx.machine, fd.caller.proc, { test: true })
  _testCmdMdCheckRefs(fresh, buffer, BUFFER_SIZE, 0)
  fresh.close()
}

// ------------------------------------------------------------------ GET_HW_INFO

/** What `_test_cmd_get_hw_info` returns through its pointers. */
export interface HwInfoOut {
  /** `*capabilities` (a `uint32_t` in C: the low 32 bits of `out_capabilities`). */
  readonly capabilities: number
  /** `*max_pasid`: `out_max_pasid_log2`. */
  readonly max_pasid: number
}

/**
 * `_test_cmd_get_hw_info`: IOMMU_GET_HW_INFO into `data` (`data_len` bytes; NULL
 * allowed), with the C helper's checks: the type is the selftest's, the kernel's length
 * is `sizeof(struct iommu_test_hw_info)`, bytes past it are zero, and what fits of
 * `test_reg`/`flags` holds REGVAL/0.
 */
export function _testCmdGetHwInfo(
  fd: Iommufd,
  device_id: CInt,
  data_type: CInt,
  data: UserPtr,
  data_len: number,
): HwInfoOut {
  return withUserPtr(fd, data, (uptr) => {
    const cmd = {
      size: 40,
      flags:
        BigInt(data_type) !== BigInt(IOMMU_HW_INFO_TYPE_DEFAULT)
          ? IOMMU_HW_INFO_FLAG_INPUT_TYPE
          : 0,
      dev_id: device_id,
      data_len,
      in_data_type: data_type,
      data_uptr: uptr,
      out_capabilities: 0n,
      out_data_type: 0,
      out_max_pasid_log2: 0,
    }
    fd.ioctl(IOMMU_GET_HW_INFO, cmd)
    assertEq(IOMMU_HW_INFO_TYPE_SELFTEST, cmd.out_data_type, 'out_data_type')
    assertEq(IOMMU_TEST_HW_INFO_LAYOUT.sizeof, cmd.data_len, 'data_len')
    if (uptr !== 0n) {
      const user = fd.caller.proc.read(uptr, data_len)
      for (let i = cmd.data_len; i < data_len; i++) assertEq(0, user[i], `trailing byte ${i}`)
      const info = new DataView(user.buffer, user.byteOffset, user.byteLength)
      if (data_len >= 8)
        assertEq(IOMMU_HW_INFO_SELFTEST_REGVAL, info.getUint32(4, true), 'test_reg')
      if (data_len >= 4) assertEq(0, info.getUint32(0, true), 'flags')
    }
    return {
      capabilities: Number(cmd.out_capabilities & 0xffff_ffffn),
      max_pasid: cmd.out_max_pasid_log2,
    }
  })
}

/** `test_cmd_get_hw_info(device_id, data_type, data, data_len)`. */
export function testCmdGetHwInfo(
  device_id: CInt,
  data_type: CInt,
  data: UserPtr,
  data_len: number,
): void {
  _testCmdGetHwInfo(self().fd, device_id, data_type, data, data_len)
}

/** `test_err_get_hw_info(errno, device_id, data_type, data, data_len)`. */
export function testErrGetHwInfo(
  errno: number,
  device_id: CInt,
  data_type: CInt,
  data: UserPtr,
  data_len: number,
): void {
  expectErrno(errno, () => _testCmdGetHwInfo(self().fd, device_id, data_type, data, data_len))
}

/** `test_cmd_get_hw_capabilities(device_id, caps)`: returns `caps`. */
export function testCmdGetHwCapabilities(device_id: CInt): number {
  return _testCmdGetHwInfo(self().fd, device_id, IOMMU_HW_INFO_TYPE_DEFAULT, null, 0).capabilities
}

/** `test_cmd_get_hw_info_pasid(device_id, &max_pasid)`: returns `max_pasid`. */
export function testCmdGetHwInfoPasid(device_id: CInt): number {
  return _testCmdGetHwInfo(self().fd, device_id, IOMMU_HW_INFO_TYPE_DEFAULT, null, 0).max_pasid
}

// ------------------------------------------------------------------ vIOMMU family

/** An `int *`/`__u32 *` in-out argument (`&num_inv`, `&prev_seq`): read and written. */
export interface Ref<T> {
  value: T
}

/** `test_cmd_hwpt_alloc_iopf(device_id, pt_id, fault_id, flags, &hwpt_id, data_type, data, data_len)`. */
export function testCmdHwptAllocIopf(
  device_id: CInt,
  pt_id: CInt,
  fault_id: CInt,
  flags: CInt,
  data_type: CInt,
  data: UserPtr,
  data_len: CInt,
): number {
  return _testCmdHwptAlloc(self().fd, device_id, pt_id, fault_id, flags, data_type, data, data_len)
}

/** `test_err_hwpt_alloc_iopf(errno, device_id, pt_id, fault_id, flags, ...)`. */
export function testErrHwptAllocIopf(
  errno: number,
  device_id: CInt,
  pt_id: CInt,
  fault_id: CInt,
  flags: CInt,
  data_type: CInt,
  data: UserPtr,
  data_len: CInt,
): void {
  expectErrno(errno, () =>
    _testCmdHwptAlloc(self().fd, device_id, pt_id, fault_id, flags, data_type, data, data_len),
  )
}

/** `test_cmd_hwpt_check_iotlb(hwpt_id, iotlb_id, expected)` (`IOMMU_TEST_OP_MD_CHECK_IOTLB`). */
export function testCmdHwptCheckIotlb(hwpt_id: CInt, iotlb_id: CInt, expected: CInt): void {
  self().fd.ioctl(IOMMU_TEST_CMD, {
    size: TEST_CMD_SIZE,
    op: IOMMU_TEST_OP_MD_CHECK_IOTLB,
    id: hwpt_id,
    check_iotlb: { id: iotlb_id, iotlb: expected },
  })
}

/** `test_cmd_hwpt_check_iotlb_all(hwpt_id, expected)`. */
export function testCmdHwptCheckIotlbAll(hwpt_id: CInt, expected: CInt): void {
  for (let i = 0; i < MOCK_NESTED_DOMAIN_IOTLB_NUM; i++) testCmdHwptCheckIotlb(hwpt_id, i, expected)
}

/** `test_cmd_dev_check_cache(device_id, cache_id, expected)` (`IOMMU_TEST_OP_DEV_CHECK_CACHE`). */
export function testCmdDevCheckCache(device_id: CInt, cache_id: CInt, expected: CInt): void {
  self().fd.ioctl(IOMMU_TEST_CMD, {
    size: TEST_CMD_SIZE,
    op: IOMMU_TEST_OP_DEV_CHECK_CACHE,
    id: device_id,
    check_dev_cache: { id: cache_id, cache: expected },
  })
}

/** `test_cmd_dev_check_cache_all(device_id, expected)`. */
export function testCmdDevCheckCacheAll(device_id: CInt, expected: CInt): void {
  for (let c = 0; c < MOCK_DEV_CACHE_NUM; c++) testCmdDevCheckCache(device_id, c, expected)
}

function invalidate(
  fd: Iommufd,
  id: CInt,
  reqs: UserPtr,
  data_type: CInt,
  lreq: CInt,
  nreqs: Ref<number>,
): 0 {
  return withUserPtr(fd, reqs, (uptr) => {
    const cmd = {
      size: 32,
      hwpt_id: id,
      data_type,
      data_uptr: uptr,
      entry_len: lreq,
      entry_num: nreqs.value,
    }
    try {
      return fd.ioctl(IOMMU_HWPT_INVALIDATE, cmd)
    } finally {
      // `*nreqs = cmd.entry_num`, whatever the ioctl returned.
      nreqs.value = cmd.entry_num
    }
  })
}

/** `_test_cmd_hwpt_invalidate(fd, hwpt_id, reqs, data_type, lreq, &nreqs)`. */
export function _testCmdHwptInvalidate(
  fd: Iommufd,
  hwpt_id: CInt,
  reqs: UserPtr,
  data_type: CInt,
  lreq: CInt,
  nreqs: Ref<number>,
): 0 {
  return invalidate(fd, hwpt_id, reqs, data_type, lreq, nreqs)
}

/** `test_cmd_hwpt_invalidate(hwpt_id, reqs, data_type, lreq, &nreqs)`. */
export function testCmdHwptInvalidate(
  hwpt_id: CInt,
  reqs: UserPtr,
  data_type: CInt,
  lreq: CInt,
  nreqs: Ref<number>,
): void {
  _testCmdHwptInvalidate(self().fd, hwpt_id, reqs, data_type, lreq, nreqs)
}

/** `test_err_hwpt_invalidate(errno, hwpt_id, reqs, data_type, lreq, &nreqs)`. */
export function testErrHwptInvalidate(
  errno: number,
  hwpt_id: CInt,
  reqs: UserPtr,
  data_type: CInt,
  lreq: CInt,
  nreqs: Ref<number>,
): void {
  expectErrno(errno, () => _testCmdHwptInvalidate(self().fd, hwpt_id, reqs, data_type, lreq, nreqs))
}

/** `_test_cmd_viommu_invalidate(fd, viommu_id, reqs, data_type, lreq, &nreqs)`. */
export function _testCmdViommuInvalidate(
  fd: Iommufd,
  viommu_id: CInt,
  reqs: UserPtr,
  data_type: CInt,
  lreq: CInt,
  nreqs: Ref<number>,
): 0 {
  return invalidate(fd, viommu_id, reqs, data_type, lreq, nreqs)
}

/** `test_cmd_viommu_invalidate(viommu, reqs, lreq, &nreqs)`: the selftest data type. */
export function testCmdViommuInvalidate(
  viommu: CInt,
  reqs: UserPtr,
  lreq: CInt,
  nreqs: Ref<number>,
): void {
  _testCmdViommuInvalidate(
    self().fd,
    viommu,
    reqs,
    IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST,
    lreq,
    nreqs,
  )
}

/** `test_err_viommu_invalidate(errno, viommu_id, reqs, data_type, lreq, &nreqs)`. */
export function testErrViommuInvalidate(
  errno: number,
  viommu_id: CInt,
  reqs: UserPtr,
  data_type: CInt,
  lreq: CInt,
  nreqs: Ref<number>,
): void {
  expectErrno(errno, () =>
    _testCmdViommuInvalidate(self().fd, viommu_id, reqs, data_type, lreq, nreqs),
  )
}

/** `_test_ioctl_fault_alloc(fd, &fault_id, &fault_fd)`. */
export function _testIoctlFaultAlloc(fd: Iommufd): { fault_id: number; fault_fd: number } {
  const cmd = { size: 16, flags: 0, out_fault_id: 0, out_fault_fd: 0 }
  fd.ioctl(IOMMU_FAULT_QUEUE_ALLOC, cmd)
  return { fault_id: cmd.out_fault_id, fault_fd: cmd.out_fault_fd }
}

/** `test_ioctl_fault_alloc(&fault_id, &fault_fd)`. */
export function testIoctlFaultAlloc(): { fault_id: number; fault_fd: number } {
  const r = _testIoctlFaultAlloc(self().fd)
  if (r.fault_id === 0 || r.fault_fd === 0) throw new SelftestAssertionError('fault alloc')
  return r
}

/**
 * `_test_cmd_trigger_iopf(fd, device_id, pasid, fault_fd)`: trigger a page request
 * (grpid 2, READ|WRITE, addr 0xdeadbeaf), read one `struct iommu_hwpt_pgfault` from the
 * fault fd and answer it SUCCESS with its cookie. EIO when nothing could be read or the
 * response was not taken, as the C helper returns -EIO.
 */
export function _testCmdTriggerIopf(
  fd: Iommufd,
  device_id: CInt,
  pasid: CInt,
  fault_fd: number,
): 0 {
  fd.ioctl(IOMMU_TEST_CMD, {
    size: TEST_CMD_SIZE,
    op: IOMMU_TEST_OP_TRIGGER_IOPF,
    trigger_iopf: {
      dev_id: device_id,
      pasid,
      grpid: 0x2,
      perm: IOMMU_PGFAULT_PERM_READ | IOMMU_PGFAULT_PERM_WRITE,
      addr: 0xdeadbeafn,
    },
  })
  const p = fd.caller.proc
  const buf = p.mmap(PAGE)
  try {
    if (fdRead(p, fault_fd, buf, 40) <= 0) throw new IommuError('EIO', 'no fault to read')
    const cookie = new DataView(p.read(buf + 36, 4).buffer).getUint32(0, true)
    const resp = new Uint8Array(8)
    new DataView(resp.buffer).setUint32(0, cookie, true) // code SUCCESS
    p.write(buf + 64, resp)
    if (fdWrite(p, fault_fd, buf + 64, 8) <= 0) throw new IommuError('EIO', 'response not taken')
    return 0
  } finally {
    p.munmap(buf, PAGE)
  }
}

/** `test_cmd_trigger_iopf(device_id, fault_fd)`: on PASID 0x1, as the C macro. */
export function testCmdTriggerIopf(device_id: CInt, fault_fd: number): void {
  _testCmdTriggerIopf(self().fd, device_id, 0x1, fault_fd)
}

/** `test_cmd_trigger_iopf_pasid(device_id, pasid, fault_fd)`. */
export function testCmdTriggerIopfPasid(device_id: CInt, pasid: CInt, fault_fd: number): void {
  _testCmdTriggerIopf(self().fd, device_id, pasid, fault_fd)
}

/** `_test_cmd_viommu_alloc(fd, device_id, hwpt_id, flags, type, data, data_len, &viommu_id)`. */
export function _testCmdViommuAlloc(
  fd: Iommufd,
  device_id: CInt,
  hwpt_id: CInt,
  flags: CInt,
  type: CInt,
  data: UserPtr,
  data_len: CInt,
): number {
  return withUserPtr(fd, data, (uptr) => {
    const cmd = {
      size: 40,
      flags,
      type,
      dev_id: device_id,
      hwpt_id,
      data_uptr: uptr,
      data_len,
      out_viommu_id: 0,
    }
    fd.ioctl(IOMMU_VIOMMU_ALLOC, cmd)
    return cmd.out_viommu_id
  })
}

/** `test_cmd_viommu_alloc(device_id, hwpt_id, type, data, data_len, &viommu_id)`. */
export function testCmdViommuAlloc(
  device_id: CInt,
  hwpt_id: CInt,
  type: CInt,
  data: UserPtr,
  data_len: CInt,
): number {
  return _testCmdViommuAlloc(self().fd, device_id, hwpt_id, 0, type, data, data_len)
}

/** `test_err_viommu_alloc(errno, device_id, hwpt_id, type, data, data_len, &viommu_id)`. */
export function testErrViommuAlloc(
  errno: number,
  device_id: CInt,
  hwpt_id: CInt,
  type: CInt,
  data: UserPtr,
  data_len: CInt,
): void {
  expectErrno(errno, () =>
    _testCmdViommuAlloc(self().fd, device_id, hwpt_id, 0, type, data, data_len),
  )
}

/** `_test_cmd_vdevice_alloc(fd, viommu_id, idev_id, virt_id, &vdev_id)`. */
export function _testCmdVdeviceAlloc(
  fd: Iommufd,
  viommu_id: CInt,
  idev_id: CInt,
  virt_id: CInt,
): number {
  const cmd = { size: 24, viommu_id, dev_id: idev_id, virt_id, out_vdevice_id: 0 }
  fd.ioctl(IOMMU_VDEVICE_ALLOC, cmd)
  return cmd.out_vdevice_id
}

/** `test_cmd_vdevice_alloc(viommu_id, idev_id, virt_id, &vdev_id)`. */
export function testCmdVdeviceAlloc(viommu_id: CInt, idev_id: CInt, virt_id: CInt): number {
  return _testCmdVdeviceAlloc(self().fd, viommu_id, idev_id, virt_id)
}

/** `test_err_vdevice_alloc(errno, viommu_id, idev_id, virt_id, &vdev_id)`. */
export function testErrVdeviceAlloc(
  errno: number,
  viommu_id: CInt,
  idev_id: CInt,
  virt_id: CInt,
): void {
  expectErrno(errno, () => _testCmdVdeviceAlloc(self().fd, viommu_id, idev_id, virt_id))
}

/** `_test_cmd_hw_queue_alloc(fd, viommu_id, type, idx, base_addr, len, &hw_queue_id)`. */
export function _testCmdHwQueueAlloc(
  fd: Iommufd,
  viommu_id: CInt,
  type: CInt,
  idx: CInt,
  base_addr: CInt,
  len: CInt,
): number {
  const cmd = {
    size: 40,
    viommu_id,
    type,
    index: idx,
    nesting_parent_iova: base_addr,
    length: len,
    out_hw_queue_id: 0,
  }
  fd.ioctl(IOMMU_HW_QUEUE_ALLOC, cmd)
  return cmd.out_hw_queue_id
}

/** `test_cmd_hw_queue_alloc(viommu_id, type, idx, base_addr, len, &out_qid)`. */
export function testCmdHwQueueAlloc(
  viommu_id: CInt,
  type: CInt,
  idx: CInt,
  base_addr: CInt,
  len: CInt,
): number {
  return _testCmdHwQueueAlloc(self().fd, viommu_id, type, idx, base_addr, len)
}

/** `test_err_hw_queue_alloc(errno, viommu_id, type, idx, base_addr, len, &out_qid)`. */
export function testErrHwQueueAlloc(
  errno: number,
  viommu_id: CInt,
  type: CInt,
  idx: CInt,
  base_addr: CInt,
  len: CInt,
): void {
  expectErrno(errno, () => _testCmdHwQueueAlloc(self().fd, viommu_id, type, idx, base_addr, len))
}

/** `_test_cmd_veventq_alloc(fd, viommu_id, type, depth, &veventq_id, &veventq_fd)`. */
export function _testCmdVeventqAlloc(
  fd: Iommufd,
  viommu_id: CInt,
  type: CInt,
  depth: CInt,
): { veventq_id: number; veventq_fd: number } {
  const cmd = {
    size: 32,
    viommu_id,
    type,
    veventq_depth: depth,
    out_veventq_id: 0,
    out_veventq_fd: 0,
  }
  fd.ioctl(IOMMU_VEVENTQ_ALLOC, cmd)
  return { veventq_id: cmd.out_veventq_id, veventq_fd: cmd.out_veventq_fd }
}

/** `test_cmd_veventq_alloc(viommu_id, type, depth, &veventq_id, &veventq_fd)`. */
export function testCmdVeventqAlloc(
  viommu_id: CInt,
  type: CInt,
  depth: CInt,
): { veventq_id: number; veventq_fd: number } {
  return _testCmdVeventqAlloc(self().fd, viommu_id, type, depth)
}

/** `test_err_veventq_alloc(errno, viommu_id, type, depth, ...)`. */
export function testErrVeventqAlloc(errno: number, viommu_id: CInt, type: CInt, depth: CInt): void {
  expectErrno(errno, () => _testCmdVeventqAlloc(self().fd, viommu_id, type, depth))
}

/** `_test_cmd_trigger_vevents(fd, dev_id, nvevents)` (`IOMMU_TEST_OP_TRIGGER_VEVENT`). */
export function _testCmdTriggerVevents(fd: Iommufd, dev_id: CInt, nvevents: number): 0 {
  for (let i = 0; i < nvevents; i++) {
    fd.ioctl(IOMMU_TEST_CMD, {
      size: TEST_CMD_SIZE,
      op: IOMMU_TEST_OP_TRIGGER_VEVENT,
      trigger_vevent: { dev_id },
    })
  }
  return 0
}

/** `test_cmd_trigger_vevents(dev_id, nvevents)`. */
export function testCmdTriggerVevents(dev_id: CInt, nvevents: number): void {
  _testCmdTriggerVevents(self().fd, dev_id, nvevents)
}

/**
 * `_test_cmd_read_vevents(fd, event_fd, nvevents, virt_id, &prev_seq)`: poll, then read
 * `nvevents` selftest events in one read; a lost-events header or a sequence gap is
 * EOVERFLOW, a `virt_id` other than expected EINVAL, nothing read EFAULT (the C helper's
 * errno values).
 */
export function _testCmdReadVevents(
  fd: Iommufd,
  event_fd: number,
  nvevents: number,
  virt_id: CInt,
  prev_seq: Ref<number>,
): 0 {
  const p = fd.caller.proc
  const rec = 8 + 4 // struct iommufd_vevent_header + struct iommu_viommu_event_selftest
  fdPoll(p, event_fd)
  const len = Math.max(nvevents * rec, 1)
  const buf = p.mmap(len)
  try {
    const bytes = fdRead(p, event_fd, buf, nvevents * rec)
    if (bytes <= 0) throw new IommuError('EFAULT', 'no vEVENT read')
    const v = new DataView(p.read(buf, nvevents * rec).buffer)
    for (let i = 0; i < nvevents; i++) {
      const flags = v.getUint32(i * rec, true)
      const sequence = v.getUint32(i * rec + 4, true)
      if (flags & IOMMU_VEVENTQ_FLAG_LOST_EVENTS || sequence - prev_seq.value > 1) {
        prev_seq.value = sequence
        throw new IommuError('EOVERFLOW', 'vEVENTs lost')
      }
      prev_seq.value = sequence
      // As the C helper, the payload checked is the first record's.
      if (v.getUint32(8, true) !== Number(virt_id)) throw new IommuError('EINVAL', 'virt_id')
    }
    return 0
  } finally {
    p.munmap(buf, len)
  }
}

/** `test_cmd_read_vevents(event_fd, nvevents, virt_id, &prev_seq)`. */
export function testCmdReadVevents(
  event_fd: number,
  nvevents: number,
  virt_id: CInt,
  prev_seq: Ref<number>,
): void {
  _testCmdReadVevents(self().fd, event_fd, nvevents, virt_id, prev_seq)
}

/** `test_err_read_vevents(errno, event_fd, nvevents, virt_id, &prev_seq)`. */
export function testErrReadVevents(
  errno: number,
  event_fd: number,
  nvevents: number,
  virt_id: CInt,
  prev_seq: Ref<number>,
): void {
  expectErrno(errno, () => _testCmdReadVevents(self().fd, event_fd, nvevents, virt_id, prev_seq))
}

/**
 * `test_err_mmap(errno, length, offset)`: `mmap(NULL, length, PROT_READ | PROT_WRITE,
 * MAP_SHARED, self->fd, offset)` fails with `errno`.
 */
export function testErrMmap(errno: number, length: number, offset: CInt): void {
  expectErrno(errno, () =>
    self().fd.mmap(null, length, PROT_READ | PROT_WRITE, MAP_SHARED, BigInt(offset)),
  )
}

function pasidCmd(op: number, stdev_id: CInt, pasid: CInt, pt_id: CInt) {
  return {
    size: TEST_CMD_SIZE,
    op,
    id: stdev_id,
    // pasid_attach and pasid_replace share their layout in the union.
    pasid_attach: { pasid, pt_id },
  }
}

function selfStdevId(): CInt {
  const id = self().stdev_id
  if (typeof id !== 'number') throw new Error('this helper uses self->stdev_id: set it in setup')
  return id
}

/** `_test_cmd_pasid_attach(fd, stdev_id, pasid, pt_id)`. */
export function _testCmdPasidAttach(fd: Iommufd, stdev_id: CInt, pasid: CInt, pt_id: CInt): 0 {
  return fd.ioctl(IOMMU_TEST_CMD, pasidCmd(IOMMU_TEST_OP_PASID_ATTACH, stdev_id, pasid, pt_id))
}

/** `test_cmd_pasid_attach(pasid, hwpt_id)` on `self.stdev_id`. */
export function testCmdPasidAttach(pasid: CInt, hwpt_id: CInt): void {
  _testCmdPasidAttach(self().fd, selfStdevId(), pasid, hwpt_id)
}

/** `test_err_pasid_attach(errno, pasid, hwpt_id)`. */
export function testErrPasidAttach(errno: number, pasid: CInt, hwpt_id: CInt): void {
  expectErrno(errno, () => _testCmdPasidAttach(self().fd, selfStdevId(), pasid, hwpt_id))
}

/** `_test_cmd_pasid_replace(fd, stdev_id, pasid, pt_id)`. */
export function _testCmdPasidReplace(fd: Iommufd, stdev_id: CInt, pasid: CInt, pt_id: CInt): 0 {
  return fd.ioctl(IOMMU_TEST_CMD, pasidCmd(IOMMU_TEST_OP_PASID_REPLACE, stdev_id, pasid, pt_id))
}

/** `test_cmd_pasid_replace(pasid, hwpt_id)`. */
export function testCmdPasidReplace(pasid: CInt, hwpt_id: CInt): void {
  _testCmdPasidReplace(self().fd, selfStdevId(), pasid, hwpt_id)
}

/** `test_err_pasid_replace(errno, pasid, hwpt_id)`. */
export function testErrPasidReplace(errno: number, pasid: CInt, hwpt_id: CInt): void {
  expectErrno(errno, () => _testCmdPasidReplace(self().fd, selfStdevId(), pasid, hwpt_id))
}

/** `_test_cmd_pasid_detach(fd, stdev_id, pasid)`. */
export function _testCmdPasidDetach(fd: Iommufd, stdev_id: CInt, pasid: CInt): 0 {
  return fd.ioctl(IOMMU_TEST_CMD, {
    size: TEST_CMD_SIZE,
    op: IOMMU_TEST_OP_PASID_DETACH,
    id: stdev_id,
    pasid_detach: { pasid },
  })
}

/** `test_cmd_pasid_detach(pasid)`. */
export function testCmdPasidDetach(pasid: CInt): void {
  _testCmdPasidDetach(self().fd, selfStdevId(), pasid)
}

/**
 * `test_cmd_pasid_check_hwpt(fd, stdev_id, pasid, hwpt_id)`: 0 when `pasid` is attached
 * to `hwpt_id` (0: to nothing), else the negative errno, as the C function returns.
 */
export function testCmdPasidCheckHwpt(
  fd: Iommufd,
  stdev_id: CInt,
  pasid: CInt,
  hwpt_id: CInt,
): number {
  return ioctlErrno(fd, IOMMU_TEST_CMD, {
    size: TEST_CMD_SIZE,
    op: IOMMU_TEST_OP_PASID_CHECK_HWPT,
    id: stdev_id,
    pasid_check: { pasid, hwpt_id },
  })
}

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

import { fdClose } from '../fd-table.ts'
import { type Iommufd, openIommufd } from '../iommufd.ts'
import {
  IOMMU_DESTROY,
  IOMMU_GET_HW_INFO,
  IOMMU_HW_INFO_FLAG_INPUT_TYPE,
  IOMMU_HW_INFO_SELFTEST_REGVAL,
  IOMMU_HW_INFO_TYPE_DEFAULT,
  IOMMU_HW_INFO_TYPE_SELFTEST,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_DATA_NONE,
  IOMMU_HWPT_DATA_SELFTEST,
  IOMMU_HWPT_DIRTY_TRACKING_ENABLE,
  IOMMU_HWPT_GET_DIRTY_BITMAP,
  IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR,
  IOMMU_HWPT_SET_DIRTY_TRACKING,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FILE,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_IOAS_UNMAP,
  IOMMU_TEST_CMD,
  IOMMU_TEST_OP_ACCESS_REPLACE_IOAS,
  IOMMU_TEST_OP_CREATE_ACCESS,
  IOMMU_TEST_OP_DESTROY_ACCESS_PAGES,
  IOMMU_TEST_OP_DIRTY,
  IOMMU_TEST_OP_MD_CHECK_MAP,
  IOMMU_TEST_OP_MD_CHECK_REFS,
  IOMMU_TEST_OP_MOCK_DOMAIN,
  IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS,
  IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE,
  IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT,
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
  SelftestAssertionError,
} from './harness.ts'

/** `sizeof(struct iommu_test_cmd)`. */
const TEST_CMD_SIZE = 72

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
//
// test_cmd_hwpt_alloc_iopf, test_ioctl_fault_alloc, test_cmd_trigger_iopf(_pasid),
// test_cmd_viommu_alloc, test_cmd_vdevice_alloc, test_cmd_hw_queue_alloc,
// test_cmd_veventq_alloc, test_cmd_trigger_vevents, test_cmd_read_vevents,
// test_cmd_dev_check_cache(_all), test_cmd_hwpt_check_iotlb(_all),
// test_cmd_hwpt_invalidate, test_cmd_viommu_invalidate, test_err_mmap and
// test_cmd_pasid_{attach,replace,detach,check_hwpt}, with their test_err_ forms, belong
// here. They come with the vIOMMU family of ioctls (vIOMMU, vDEVICE, fault queues,
// vEVENTQ, HW queues) and follow the conventions above: `_test*(fd, ...)` throwing the
// IommuError, `test*(...)` on `self.fd` (`self.stdev_id` for the PASID helpers).

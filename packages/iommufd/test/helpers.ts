/**
 * What the ported tests share beyond `@iommu/iommufd/testing`: the selftest world as one
 * object (for the tests not written as `fixture()`s), shorthands over the harness' `_test*`
 * functions for calls the tests make often (automatic or fixed IOVA in one call, HWPT
 * data by address), and the ACCESS_PAGES test command, which `iommufd_utils.h` has no
 * helper for.
 */
import { type Errno, isIommuError, type Machine, type Process } from '@iommu/core'
import type { Iommufd } from '../src/index.ts'
import {
  _testCmdHwptAlloc,
  _testIoctlIoasMap,
  _testIoctlIoasMapFile,
  buffer,
  machine,
  mfd,
  mfd_buffer,
  openDevIommu,
  proc,
  setupSizes,
  teardownIommufd,
} from '../src/testing/index.ts'
import {
  IOMMU_HWPT_DATA_NONE,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_TEST_CMD,
  IOMMU_TEST_OP_ACCESS_PAGES,
  MOCK_APERTURE_START,
} from '../src/uapi/index.ts'

/** `MOCK_APERTURE_START`. */
export const APERTURE = MOCK_APERTURE_START
export const RW = IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE

/** The errno an action throws, or `'OK'`. */
export function errnoOf(fn: () => unknown): Errno | 'OK' {
  try {
    fn()
    return 'OK'
  } catch (e) {
    if (isIommuError(e)) return e.code
    throw e
  }
}

/** The harness' world of one test (see `setupSizes`) and an open context. */
export interface Env {
  readonly m: Machine
  readonly proc: Process
  readonly fd: Iommufd
  /** The global buffer (16 pages, MAP_SHARED). */
  readonly buffer: number
  /** The global memfd and its mapping. */
  readonly mfd: number
  readonly mfdBuffer: number
}

/** `setup_sizes()` and `open("/dev/iommu")`, as root unless `root: false`. */
export function setup(opts: { memorySize?: number; root?: boolean } = {}): Env {
  setupSizes(opts.memorySize === undefined ? {} : { machine: { memorySize: opts.memorySize } })
  const root = opts.root ?? true
  const fd = openDevIommu({ cred: { CAP_SYS_RESOURCE: root, CAP_IPC_LOCK: root } })
  return { m: machine, proc, fd, buffer, mfd, mfdBuffer: mfd_buffer }
}

/** `teardown_iommufd`: close, then check on a fresh fd that nothing of the buffer is pinned. */
export function teardown(env: Env): void {
  teardownIommufd(env.fd)
}

/** `_test_ioctl_ioas_map`, `iova` null = automatic. Returns the IOVA. */
export function ioasMap(
  fd: Iommufd,
  ioasId: number,
  va: number,
  length: number | bigint,
  iova: number | bigint | null = null,
  flags = RW,
): bigint {
  const fixed = iova === null ? 0 : IOMMU_IOAS_MAP_FIXED_IOVA
  return _testIoctlIoasMap(fd, ioasId, va, length, iova ?? 0, flags | fixed)
}

/** `_test_ioctl_ioas_map_file`, `iova` null = automatic. */
export function ioasMapFile(
  fd: Iommufd,
  ioasId: number,
  mfd_: number,
  start: number,
  length: number,
  iova: number | bigint | null = null,
): bigint {
  const fixed = iova === null ? 0 : IOMMU_IOAS_MAP_FIXED_IOVA
  return _testIoctlIoasMapFile(fd, ioasId, mfd_, start, length, iova ?? 0, RW | fixed)
}

/** `_test_cmd_hwpt_alloc` without a fault queue, driver data (if any) already in the process. */
export function hwptAlloc(
  fd: Iommufd,
  devId: number,
  ptId: number,
  flags: number,
  data?: { type: number; len: number; uptr: bigint },
): number {
  if (data === undefined) {
    return _testCmdHwptAlloc(fd, devId, ptId, 0, flags, IOMMU_HWPT_DATA_NONE, null, 0)
  }
  return _testCmdHwptAlloc(fd, devId, ptId, 0, flags, data.type, data.uptr, data.len)
}

/** IOMMU_TEST_OP_ACCESS_PAGES; returns the pin record id. */
export function accessPages(
  fd: Iommufd,
  accessFd: number,
  iova: bigint,
  length: number,
  uptr: number,
  flags = 0,
): number {
  const cmd = {
    size: 72,
    op: IOMMU_TEST_OP_ACCESS_PAGES,
    id: accessFd,
    access_pages: { iova, length, uptr, flags, out_access_pages_id: 0 },
  }
  fd.ioctl(IOMMU_TEST_CMD, cmd)
  return cmd.access_pages.out_access_pages_id
}

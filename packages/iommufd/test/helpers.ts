/**
 * Test helpers in the spirit of the selftest's `iommufd_utils.h` (our own code): a
 * machine with the mock IOMMU, a process with the selftest's global buffers, and one
 * short function per ioctl that returns the outputs or throws the errno.
 */
import { createMachine, type Errno, isIommuError, type Machine, type Process } from '@iommu/core'
import { MOCK_APERTURE_START, mockIommu } from '@iommu/core/testing'
import { expect } from 'vitest'
import {
  fdInstall,
  IOMMU_DESTROY,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_GET_DIRTY_BITMAP,
  IOMMU_HWPT_SET_DIRTY_TRACKING,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FILE,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_IOAS_UNMAP,
  IOMMU_TEST_CMD,
  type Iommufd,
  openIommufd,
} from '../src/index.ts'
import {
  IOMMU_HWPT_DIRTY_TRACKING_ENABLE,
  IOMMU_TEST_OP_ACCESS_PAGES,
  IOMMU_TEST_OP_CREATE_ACCESS,
  IOMMU_TEST_OP_DESTROY_ACCESS_PAGES,
  IOMMU_TEST_OP_DIRTY,
  IOMMU_TEST_OP_MD_CHECK_MAP,
  IOMMU_TEST_OP_MD_CHECK_REFS,
  IOMMU_TEST_OP_MOCK_DOMAIN,
  IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS,
  IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE,
} from '../src/uapi/index.ts'

export const PAGE_SIZE = 4096
export const HUGEPAGE_SIZE = 2 * 1024 * 1024
/** The selftest's global buffer: 16 CPU pages. */
export const BUFFER_SIZE = 16 * PAGE_SIZE
/** Where the global buffer sits (THP aligned, like the selftest's posix_memalign). */
export const BUFFER_VA = 0x4000_0000
/** `MOCK_APERTURE_START` as a number. */
export const APERTURE = Number(MOCK_APERTURE_START)
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

/** `EXPECT_ERRNO`: the action fails with exactly `code` from an ioctl. */
export function expectErrno(code: Errno, fn: () => unknown): void {
  try {
    fn()
  } catch (e) {
    if (!isIommuError(e)) throw e
    expect(e.code).toBe(code)
    return
  }
  expect.fail(`expected ${code}, the call succeeded`)
}

/** One open context on a machine with the mock IOMMU (2 KiB IO pages). */
export interface Env {
  readonly m: Machine
  readonly proc: Process
  readonly fd: Iommufd
  /** The global buffer (anonymous, shared). */
  readonly buffer: number
  /** The global memfd and its mapping. */
  readonly mfd: number
  readonly mfdBuffer: number
}

/** Build the selftest world: machine, process with the global buffers, test-mode fd. */
export function setup(opts: { memorySize?: number; root?: boolean } = {}): Env {
  const m = createMachine({
    iommus: [mockIommu()],
    ...(opts.memorySize === undefined ? {} : { memorySize: opts.memorySize }),
  })
  const proc = m.createProcess()
  const buffer = proc.mmap(BUFFER_SIZE, { addr: BUFFER_VA })
  const memfd = proc.memfdCreate('buffer')
  memfd.ftruncate(BUFFER_SIZE)
  const mfd = fdInstall(proc, memfd)
  const mfdBuffer = proc.mmap(BUFFER_SIZE, { file: memfd })
  const root = opts.root ?? true
  const fd = openIommufd(m, proc, {
    test: true,
    cred: { CAP_SYS_RESOURCE: root, CAP_IPC_LOCK: root },
  })
  return { m, proc, fd, buffer, mfd, mfdBuffer }
}

/** `teardown_iommufd`: close, then check on a fresh fd that nothing of the buffer is pinned. */
export function teardown(env: Env): void {
  env.fd.close()
  const fd = openIommufd(env.m, env.proc, { test: true })
  checkRefs(fd, env.buffer, BUFFER_SIZE, 0)
  fd.close()
}

export function ioasAlloc(fd: Iommufd): number {
  const cmd = { size: 12, out_ioas_id: 0 }
  fd.ioctl(IOMMU_IOAS_ALLOC, cmd)
  expect(cmd.out_ioas_id).not.toBe(0)
  return cmd.out_ioas_id
}

export function destroy(fd: Iommufd, id: number): void {
  fd.ioctl(IOMMU_DESTROY, { size: 8, id })
}

/** IOAS_MAP; `iova` null = automatic. Returns the IOVA. */
export function ioasMap(
  fd: Iommufd,
  ioasId: number,
  va: number,
  length: number | bigint,
  iova: number | bigint | null = null,
  flags = RW,
): bigint {
  const cmd = {
    size: 40,
    flags: iova === null ? flags : flags | IOMMU_IOAS_MAP_FIXED_IOVA,
    ioas_id: ioasId,
    user_va: BigInt(va),
    length: BigInt(length),
    iova: iova === null ? 0n : BigInt(iova),
  }
  fd.ioctl(IOMMU_IOAS_MAP, cmd)
  return cmd.iova
}

/** IOAS_MAP_FILE; `iova` null = automatic. */
export function ioasMapFile(
  fd: Iommufd,
  ioasId: number,
  mfd: number,
  start: number,
  length: number,
  iova: number | bigint | null = null,
): bigint {
  const cmd = {
    size: 40,
    flags: iova === null ? RW : RW | IOMMU_IOAS_MAP_FIXED_IOVA,
    ioas_id: ioasId,
    fd: mfd,
    start: BigInt(start),
    length: BigInt(length),
    iova: iova === null ? 0n : BigInt(iova),
  }
  fd.ioctl(IOMMU_IOAS_MAP_FILE, cmd)
  return cmd.iova
}

/** IOAS_UNMAP; returns the bytes unmapped. */
export function ioasUnmap(
  fd: Iommufd,
  ioasId: number,
  iova: number | bigint,
  length: number | bigint,
): bigint {
  const cmd = { size: 24, ioas_id: ioasId, iova: BigInt(iova), length: BigInt(length) }
  fd.ioctl(IOMMU_IOAS_UNMAP, cmd)
  return cmd.length
}

export interface MockDomain {
  readonly stdevId: number
  readonly hwptId: number
  readonly idevId: number
}

/** IOMMU_TEST_OP_MOCK_DOMAIN(_FLAGS): a mock device attached to `ptId`. */
export function mockDomain(fd: Iommufd, ptId: number, devFlags?: number): MockDomain {
  const cmd = {
    size: 72,
    op: devFlags === undefined ? IOMMU_TEST_OP_MOCK_DOMAIN : IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS,
    id: ptId,
    mock_domain_flags: { dev_flags: devFlags ?? 0 },
    mock_domain: { out_stdev_id: 0, out_hwpt_id: 0, out_idev_id: 0 },
  }
  fd.ioctl(IOMMU_TEST_CMD, cmd)
  return {
    stdevId: cmd.mock_domain.out_stdev_id,
    hwptId: cmd.mock_domain.out_hwpt_id,
    idevId: cmd.mock_domain.out_idev_id,
  }
}

/** IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE; returns the resolved HWPT. */
export function mockDomainReplace(fd: Iommufd, stdevId: number, ptId: number): number {
  const cmd = {
    size: 72,
    op: IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE,
    id: stdevId,
    mock_domain_replace: { pt_id: ptId },
  }
  fd.ioctl(IOMMU_TEST_CMD, cmd)
  return cmd.mock_domain_replace.pt_id
}

/** IOMMU_HWPT_ALLOC with optional driver data already in the caller's memory. */
export function hwptAlloc(
  fd: Iommufd,
  devId: number,
  ptId: number,
  flags: number,
  data?: { type: number; len: number; uptr: bigint },
): number {
  const cmd = {
    size: 48,
    flags,
    dev_id: devId,
    pt_id: ptId,
    data_type: data?.type ?? 0,
    data_len: data?.len ?? 0,
    data_uptr: data?.uptr ?? 0n,
    out_hwpt_id: 0,
  }
  fd.ioctl(IOMMU_HWPT_ALLOC, cmd)
  return cmd.out_hwpt_id
}

/** `check_refs`: every page of the range has `refs` pins. */
export function checkRefs(fd: Iommufd, va: number, length: number, refs: number): void {
  fd.ioctl(IOMMU_TEST_CMD, {
    size: 72,
    op: IOMMU_TEST_OP_MD_CHECK_REFS,
    check_refs: { length: BigInt(length), uptr: BigInt(va), refs },
  })
}

/** `check_mock_iova`: the mock domain maps `iova` to the frames under `va`. */
export function checkMockIova(
  fd: Iommufd,
  hwptId: number,
  va: number,
  iova: bigint,
  length: number,
): void {
  fd.ioctl(IOMMU_TEST_CMD, {
    size: 72,
    op: IOMMU_TEST_OP_MD_CHECK_MAP,
    id: hwptId,
    check_map: { iova, length: BigInt(length), uptr: BigInt(va) },
  })
}

/** IOMMU_TEST_OP_CREATE_ACCESS; returns the access fd. */
export function createAccess(fd: Iommufd, ioasId: number, flags: number): number {
  const cmd = {
    size: 72,
    op: IOMMU_TEST_OP_CREATE_ACCESS,
    id: ioasId,
    create_access: { flags, out_access_fd: 0 },
  }
  fd.ioctl(IOMMU_TEST_CMD, cmd)
  return cmd.create_access.out_access_fd
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
    access_pages: {
      iova,
      length: BigInt(length),
      uptr: BigInt(uptr),
      flags,
      out_access_pages_id: 0,
    },
  }
  fd.ioctl(IOMMU_TEST_CMD, cmd)
  return cmd.access_pages.out_access_pages_id
}

export function destroyAccessPages(fd: Iommufd, accessFd: number, id: number): void {
  fd.ioctl(IOMMU_TEST_CMD, {
    size: 72,
    op: IOMMU_TEST_OP_DESTROY_ACCESS_PAGES,
    id: accessFd,
    destroy_access_pages: { access_pages_id: id },
  })
}

export function setDirtyTracking(fd: Iommufd, hwptId: number, enable: boolean): void {
  fd.ioctl(IOMMU_HWPT_SET_DIRTY_TRACKING, {
    size: 16,
    flags: enable ? IOMMU_HWPT_DIRTY_TRACKING_ENABLE : 0,
    hwpt_id: hwptId,
  })
}

export function getDirtyBitmap(
  fd: Iommufd,
  hwptId: number,
  iova: bigint,
  length: bigint,
  pageSize: bigint,
  data: number,
  flags = 0,
): void {
  fd.ioctl(IOMMU_HWPT_GET_DIRTY_BITMAP, {
    size: 48,
    hwpt_id: hwptId,
    flags,
    iova,
    length,
    page_size: pageSize,
    data: BigInt(data),
  })
}

/** IOMMU_TEST_OP_DIRTY: mark the IOPTE under each set bit; returns `out_nr_dirty`. */
export function mockSetDirty(
  fd: Iommufd,
  hwptId: number,
  iova: bigint,
  length: bigint,
  pageSize: bigint,
  bitmap: number,
): bigint {
  const cmd = {
    size: 72,
    op: IOMMU_TEST_OP_DIRTY,
    id: hwptId,
    dirty: { iova, length, page_size: pageSize, uptr: BigInt(bitmap), out_nr_dirty: 0n },
  }
  fd.ioctl(IOMMU_TEST_CMD, cmd)
  return cmd.dirty.out_nr_dirty
}

/**
 * Port of the selftest FIXTURE(iommufd_ioas) and its variants no_domain, mock_domain
 * (plus a PASID-capable device), two_mock_domain and mock_domain_limit
 * (reference iommufd-uapi.md §7.1, §2.4–2.11, §3).
 */
import type { Process } from '@iommu/core'
import {
  IOMMU_HW_INFO_SELFTEST_REGVAL,
  IOMMU_HW_INFO_TYPE_SELFTEST,
  IOMMU_HWPT_DATA_SELFTEST,
  IOMMU_HWPT_INVALIDATE_DATA_SELFTEST,
  IOMMU_TEST_INVALIDATE_FLAG_ALL,
  MOCK_APERTURE_LAST,
  MOCK_APERTURE_START,
  MOCK_NESTED_DOMAIN_IOTLB_ID_MAX,
  MOCK_PAGE_SIZE,
  MOCK_PASID_WIDTH,
} from '@iommu/core/testing'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import {
  fdClose,
  IOMMU_DESTROY,
  IOMMU_GET_HW_INFO,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_FAULT_ID_VALID,
  IOMMU_HWPT_INVALIDATE,
  IOMMU_IOAS_ALLOW_IOVAS,
  IOMMU_IOAS_COPY,
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_OPTION,
  IOMMU_OPTION_HUGE_PAGES,
  IOMMU_OPTION_OP_GET,
  IOMMU_OPTION_OP_SET,
  IOMMU_TEST_CMD,
  type Iommufd,
} from '../src/index.ts'
import {
  _testCmdCreateAccess,
  _testCmdDestroyAccessPages,
  _testCmdHwptAlloc,
  _testCmdMdCheckMap,
  _testCmdMockDomain,
  _testCmdMockDomainFlags,
  _testCmdMockDomainReplace,
  _testCmdTriggerIopf,
  _testIoctlDestroy,
  _testIoctlFaultAlloc,
  _testIoctlIoasAlloc,
  _testIoctlIoasUnmap,
  _testIoctlSetTempMemoryLimit,
  BUFFER_SIZE,
  expectErrno,
  HUGEPAGE_SIZE,
  PAGE_SIZE,
} from '../src/testing/index.ts'
import {
  IOMMU_HW_INFO_FLAG_INPUT_TYPE,
  IOMMU_HW_INFO_TYPE_DEFAULT,
  IOMMU_HWPT_DATA_NONE,
  IOMMU_HWPT_INVALIDATE_DATA_SELFTEST_INVALID,
  IOMMU_TEST_DEV_CACHE_DEFAULT,
  IOMMU_TEST_IOTLB_DEFAULT,
  IOMMU_TEST_OP_ACCESS_RW,
  IOMMU_TEST_OP_ADD_RESERVED,
  IOMMU_TEST_OP_DEV_CHECK_CACHE,
  IOMMU_TEST_OP_MD_CHECK_IOTLB,
  MOCK_ACCESS_RW_SLOW_PATH,
  MOCK_ACCESS_RW_WRITE,
  MOCK_DEV_CACHE_NUM,
  MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES,
  MOCK_FLAGS_DEVICE_PASID,
} from '../src/uapi/index.ts'
import {
  APERTURE,
  accessPages,
  type Env,
  hwptAlloc,
  ioasMap,
  RW,
  setup,
  teardown,
} from './helpers.ts'

interface Variant {
  readonly name: string
  readonly mockDomains: number
  readonly memoryLimit: number
  readonly pasidCapable: boolean
}

const VARIANTS: readonly Variant[] = [
  { name: 'no_domain', mockDomains: 0, memoryLimit: 0, pasidCapable: false },
  { name: 'mock_domain', mockDomains: 1, memoryLimit: 0, pasidCapable: true },
  { name: 'two_mock_domain', mockDomains: 2, memoryLimit: 0, pasidCapable: false },
  { name: 'mock_domain_limit', mockDomains: 1, memoryLimit: 16, pasidCapable: false },
]

function checkDevCacheAll(fd: Iommufd, devId: number, cache: number): void {
  for (let id = 0; id < MOCK_DEV_CACHE_NUM; id++) {
    fd.ioctl(IOMMU_TEST_CMD, {
      size: 72,
      op: IOMMU_TEST_OP_DEV_CHECK_CACHE,
      id: devId,
      check_dev_cache: { id, cache },
    })
  }
}

function checkIotlb(fd: Iommufd, hwptId: number, id: number, iotlb: number): void {
  fd.ioctl(IOMMU_TEST_CMD, {
    size: 72,
    op: IOMMU_TEST_OP_MD_CHECK_IOTLB,
    id: hwptId,
    check_iotlb: { id, iotlb },
  })
}

function addReserved(
  fd: Iommufd,
  ioasId: number,
  start: number | bigint,
  length: number | bigint,
): void {
  fd.ioctl(IOMMU_TEST_CMD, {
    size: 72,
    op: IOMMU_TEST_OP_ADD_RESERVED,
    id: ioasId,
    add_reserved: { start: BigInt(start), length: BigInt(length) },
  })
}

/** Write `iommu_iova_range`s into the process. */
function writeRanges(
  proc: Process,
  va: number,
  ranges: readonly (readonly [bigint, bigint])[],
): void {
  const b = new Uint8Array(16 * ranges.length)
  const v = new DataView(b.buffer)
  ranges.forEach(([s, l], i) => {
    v.setBigUint64(16 * i, s, true)
    v.setBigUint64(16 * i + 8, l, true)
  })
  proc.write(va, b)
}

function readRange(proc: Process, va: number, i: number): [bigint, bigint] {
  const v = new DataView(proc.read(va + 16 * i, 16).buffer)
  return [v.getBigUint64(0, true), v.getBigUint64(8, true)]
}

/** Byte arrays equal (vitest's deep equality is too slow for thousands of checks). */
function same(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i])
}

/** `check_access_rw`: byte-granular reads and writes through an access around a page edge. */
function checkAccessRw(
  env: Env,
  accessFd: number,
  iova: bigint,
  buf: number,
  defFlags: number,
): void {
  const { fd, proc } = env
  const rnd = new Uint8Array(BUFFER_SIZE)
  for (let i = 0; i < rnd.length; i++) rnd[i] = (i * 2654435761) >>> 24
  proc.write(buf, rnd)
  const tmp = proc.mmap(PAGE_SIZE)
  const cmd = {
    size: 72,
    op: IOMMU_TEST_OP_ACCESS_RW,
    id: accessFd,
    access_rw: { iova: 0n, length: 0n, uptr: BigInt(tmp), flags: 0 },
  }
  let bad = 0
  for (let off = PAGE_SIZE - 50; off < PAGE_SIZE + 50; off++) {
    for (let len = 1; len < 64; len++) {
      cmd.access_rw = {
        iova: iova + BigInt(off),
        length: BigInt(len),
        uptr: BigInt(tmp),
        flags: defFlags,
      }
      fd.ioctl(IOMMU_TEST_CMD, cmd)
      if (!same(proc.read(tmp, len), proc.read(buf + off, len))) bad++
      const data = new Uint8Array(len).map((_, i) => (off + len + i) & 0xff)
      proc.write(tmp, data)
      cmd.access_rw.flags = defFlags | MOCK_ACCESS_RW_WRITE
      fd.ioctl(IOMMU_TEST_CMD, cmd)
      if (!same(proc.read(buf + off, len), data)) bad++
    }
  }
  expect(bad).toBe(0)
  // A multi-page read.
  const big = proc.mmap(BUFFER_SIZE)
  cmd.access_rw = { iova, length: BigInt(BUFFER_SIZE), uptr: BigInt(big), flags: defFlags }
  fd.ioctl(IOMMU_TEST_CMD, cmd)
  expect(same(proc.read(big, BUFFER_SIZE), proc.read(buf, BUFFER_SIZE))).toBe(true)
  proc.munmap(big, BUFFER_SIZE)
  proc.munmap(tmp, PAGE_SIZE)
}

for (const variant of VARIANTS) {
  describe(`FIXTURE(iommufd_ioas) variant ${variant.name}`, () => {
    let env: Env
    let ioasId = 0
    let stdevId = 0
    let hwptId = 0
    let deviceId = 0
    let baseIova = 0
    let devicePasidId = 0

    beforeEach(() => {
      env = setup()
      ioasId = _testIoctlIoasAlloc(env.fd)
      _testIoctlSetTempMemoryLimit(env.fd, variant.memoryLimit || 65536)
      stdevId = hwptId = deviceId = baseIova = devicePasidId = 0
      for (let i = 0; i < variant.mockDomains; i++) {
        const md = _testCmdMockDomain(env.fd, ioasId)
        stdevId = md.stdev_id
        hwptId = md.hwpt_id
        deviceId = md.idev_id
        checkDevCacheAll(env.fd, deviceId, IOMMU_TEST_DEV_CACHE_DEFAULT)
        baseIova = APERTURE
      }
      if (variant.pasidCapable)
        devicePasidId = _testCmdMockDomainFlags(env.fd, ioasId, MOCK_FLAGS_DEVICE_PASID).idev_id
    })
    afterEach(() => {
      _testIoctlSetTempMemoryLimit(env.fd, 65536)
      teardown(env)
    })

    it('ioas_auto_destroy: closing frees the IOAS (§1.2)', () => {})

    it('ioas_destroy: EBUSY while a device uses it, else destroyed (§1.3)', () => {
      if (stdevId) expectErrno('EBUSY', () => _testIoctlDestroy(env.fd, ioasId))
      else _testIoctlDestroy(env.fd, ioasId)
    })

    it('alloc_hwpt_nested: nested HWPT and invalidation matrix (§2.13, §2.17, §5.3)', () => {
      const data = env.proc.mmap(PAGE_SIZE)
      const dv = new DataView(new ArrayBuffer(8))
      dv.setUint32(0, IOMMU_TEST_IOTLB_DEFAULT, true)
      env.proc.write(data, new Uint8Array(dv.buffer))
      const sel = (len = 8, uptr = BigInt(data), type = IOMMU_HWPT_DATA_SELFTEST) => ({
        type,
        len,
        uptr,
      })
      if (!deviceId) {
        expectErrno('ENOENT', () => hwptAlloc(env.fd, deviceId, ioasId, 0))
        expectErrno('ENOENT', () => hwptAlloc(env.fd, deviceId, 0, 0, sel()))
        expectErrno('ENOENT', () => _testCmdMockDomainReplace(env.fd, stdevId, 0))
        return
      }
      expectErrno('ENOENT', () => hwptAlloc(env.fd, ioasId, deviceId, 0))
      expectErrno('EINVAL', () => hwptAlloc(env.fd, deviceId, deviceId, 0))
      expectErrno('EOPNOTSUPP', () =>
        hwptAlloc(
          env.fd,
          deviceId,
          ioasId,
          IOMMU_HWPT_ALLOC_NEST_PARENT | IOMMU_HWPT_FAULT_ID_VALID,
        ),
      )
      const parent = hwptAlloc(env.fd, deviceId, ioasId, IOMMU_HWPT_ALLOC_NEST_PARENT)
      const notParent = hwptAlloc(env.fd, deviceId, ioasId, 0)
      expectErrno('EINVAL', () =>
        hwptAlloc(env.fd, deviceId, parent, 0, sel(8, BigInt(data), IOMMU_HWPT_DATA_NONE)),
      )
      expectErrno('EOPNOTSUPP', () =>
        hwptAlloc(env.fd, deviceId, parent, 0, sel(8, BigInt(data), IOMMU_HWPT_DATA_SELFTEST + 1)),
      )
      expectErrno('EINVAL', () => hwptAlloc(env.fd, deviceId, parent, 0, sel(3)))
      expectErrno('EFAULT', () => hwptAlloc(env.fd, deviceId, parent, 0, sel(8, 0n)))
      expectErrno('EOPNOTSUPP', () =>
        hwptAlloc(env.fd, deviceId, parent, IOMMU_HWPT_ALLOC_NEST_PARENT, sel()),
      )
      expectErrno('EINVAL', () => hwptAlloc(env.fd, deviceId, notParent, 0, sel()))
      const nested = [
        hwptAlloc(env.fd, deviceId, parent, 0, sel()),
        hwptAlloc(env.fd, deviceId, parent, 0, sel()),
      ]
      const { fault_id: faultId, fault_fd: faultFd } = _testIoctlFaultAlloc(env.fd)
      expectErrno('ENOENT', () =>
        _testCmdHwptAlloc(
          env.fd,
          deviceId,
          parent,
          0xffff_ffff,
          IOMMU_HWPT_FAULT_ID_VALID,
          IOMMU_HWPT_DATA_SELFTEST,
          data,
          8,
        ),
      )
      const iopfHwptId = _testCmdHwptAlloc(
        env.fd,
        deviceId,
        parent,
        faultId,
        IOMMU_HWPT_FAULT_ID_VALID,
        IOMMU_HWPT_DATA_SELFTEST,
        data,
        8,
      )
      for (const n of nested)
        for (let i = 0; i < 4; i++) checkIotlb(env.fd, n, i, IOMMU_TEST_IOTLB_DEFAULT)
      expectErrno('EINVAL', () => hwptAlloc(env.fd, deviceId, nested[0] as number, 0, sel()))
      expectErrno('EBUSY', () => _testIoctlDestroy(env.fd, parent))

      // Invalidation requests: { u32 flags; u32 iotlb_id } x2 at `reqs`.
      const reqs = env.proc.mmap(PAGE_SIZE)
      const setReqs = (r: readonly [number, number][]) => {
        const b = new DataView(new ArrayBuffer(16))
        r.forEach(([f, id], i) => {
          b.setUint32(8 * i, f, true)
          b.setUint32(8 * i + 4, id, true)
        })
        env.proc.write(reqs, new Uint8Array(b.buffer))
      }
      const inv = (
        hwpt: number,
        num: number,
        entryLen = 8,
        type = IOMMU_HWPT_INVALIDATE_DATA_SELFTEST,
        uptr = BigInt(reqs),
      ) => {
        const cmd = {
          size: 32,
          hwpt_id: hwpt,
          data_uptr: uptr,
          data_type: type,
          entry_len: entryLen,
          entry_num: num,
        }
        try {
          env.fd.ioctl(IOMMU_HWPT_INVALIDATE, cmd)
          return { rc: 'OK', num: cmd.entry_num }
        } catch (e) {
          return { rc: (e as { code: string }).code, num: cmd.entry_num }
        }
      }
      const n0 = nested[0] as number
      const n1 = nested[1] as number
      setReqs([
        [0, 0],
        [0, 0],
      ])
      expect(inv(parent, 1)).toEqual({ rc: 'EINVAL', num: 0 })
      expect(inv(n0, 0)).toEqual({ rc: 'OK', num: 0 })
      expect(inv(n0, 1, 8, IOMMU_HWPT_INVALIDATE_DATA_SELFTEST_INVALID)).toEqual({
        rc: 'EINVAL',
        num: 0,
      })
      expect(inv(n0, 1, 9)).toEqual({ rc: 'EINVAL', num: 0 })
      expect(inv(n0, 1, 1)).toEqual({ rc: 'EINVAL', num: 0 })
      expect(inv(n0, 1, PAGE_SIZE + 1)).toEqual({ rc: 'EINVAL', num: 0 })
      expect(inv(n0, (1 << 19) + 1)).toEqual({ rc: 'EINVAL', num: 0 })
      setReqs([[0xffff_ffff, 0]])
      expect(inv(n0, 1)).toEqual({ rc: 'EOPNOTSUPP', num: 0 })
      setReqs([[0, 0]])
      expect(inv(n0, 1, 8, IOMMU_HWPT_INVALIDATE_DATA_SELFTEST, 0n)).toEqual({
        rc: 'EINVAL',
        num: 0,
      })
      expect(inv(n0, 1, 0)).toEqual({ rc: 'EINVAL', num: 0 })
      setReqs([[0, MOCK_NESTED_DOMAIN_IOTLB_ID_MAX + 1]])
      expect(inv(n0, 1)).toEqual({ rc: 'EINVAL', num: 0 })
      // Two requests, the second bad: the first is done and counted.
      setReqs([
        [0, 0],
        [0xffff_ffff, 1],
      ])
      expect(inv(n0, 2)).toEqual({ rc: 'EOPNOTSUPP', num: 1 })
      checkIotlb(env.fd, n0, 0, 0)
      for (const i of [1, 2, 3]) checkIotlb(env.fd, n0, i, IOMMU_TEST_IOTLB_DEFAULT)
      setReqs([
        [0, 0],
        [0, MOCK_NESTED_DOMAIN_IOTLB_ID_MAX + 1],
      ])
      expect(inv(n0, 2)).toEqual({ rc: 'EINVAL', num: 1 })
      for (const i of [1, 2, 3]) checkIotlb(env.fd, n0, i, IOMMU_TEST_IOTLB_DEFAULT)
      setReqs([[0, 1]])
      expect(inv(n0, 1)).toEqual({ rc: 'OK', num: 1 })
      checkIotlb(env.fd, n0, 1, 0)
      setReqs([
        [0, 2],
        [0, 3],
      ])
      expect(inv(n0, 2)).toEqual({ rc: 'OK', num: 2 })
      for (let i = 0; i < 4; i++) checkIotlb(env.fd, n0, i, 0)
      setReqs([[IOMMU_TEST_INVALIDATE_FLAG_ALL, 0]])
      expect(inv(n1, 1)).toEqual({ rc: 'OK', num: 1 })
      for (let i = 0; i < 4; i++) checkIotlb(env.fd, n1, i, 0)

      // Move the device between nested HWPTs: each is busy while attached.
      _testCmdMockDomainReplace(env.fd, stdevId, n0)
      expectErrno('EBUSY', () => _testIoctlDestroy(env.fd, n0))
      _testCmdMockDomainReplace(env.fd, stdevId, n1)
      expectErrno('EBUSY', () => _testIoctlDestroy(env.fd, n1))
      _testIoctlDestroy(env.fd, n0)
      // To the IOPF HWPT: busy, and a page request round-trips through the fault fd.
      _testCmdMockDomainReplace(env.fd, stdevId, iopfHwptId)
      expectErrno('EBUSY', () => _testIoctlDestroy(env.fd, iopfHwptId))
      _testCmdTriggerIopf(env.fd, deviceId, 0x1, faultFd)
      _testCmdMockDomainReplace(env.fd, stdevId, parent)
      _testIoctlDestroy(env.fd, n1)
      _testIoctlDestroy(env.fd, iopfHwptId)
      _testCmdMockDomainReplace(env.fd, stdevId, ioasId)
      _testIoctlDestroy(env.fd, parent)
      _testIoctlDestroy(env.fd, notParent)
      fdClose(env.proc, faultFd)
      _testIoctlDestroy(env.fd, faultId)
    })

    it('hwpt_attach: a new device attaches directly to a HWPT id (§1.4)', () => {
      if (stdevId) _testCmdMockDomain(env.fd, hwptId)
      else expectErrno('ENOENT', () => _testCmdMockDomain(env.fd, hwptId))
    })

    it('ioas_area_destroy: an area does not keep the IOAS alive (§1.3)', () => {
      ioasMap(env.fd, ioasId, env.buffer, PAGE_SIZE, baseIova)
      if (stdevId) expectErrno('EBUSY', () => _testIoctlDestroy(env.fd, ioasId))
      else _testIoctlDestroy(env.fd, ioasId)
    })

    it('ioas_area_auto_destroy: ten areas go with the context (§1.2)', () => {
      for (let i = 0; i < 10; i++)
        ioasMap(env.fd, ioasId, env.buffer, PAGE_SIZE, baseIova + i * PAGE_SIZE)
    })

    it('get_hw_info: data sizes, types, capabilities, max PASID (§2.14)', () => {
      const buf = env.proc.mmap(PAGE_SIZE)
      const hwInfo = (devId: number, type: number, len: number, uptr: bigint) => {
        const cmd = {
          size: 40,
          dev_id: devId,
          data_len: len,
          in_data_type: type,
          data_uptr: uptr,
          flags: type === IOMMU_HW_INFO_TYPE_DEFAULT ? 0 : IOMMU_HW_INFO_FLAG_INPUT_TYPE,
          out_data_type: 0,
          out_max_pasid_log2: 0,
          out_capabilities: 0n,
        }
        env.fd.ioctl(IOMMU_GET_HW_INFO, cmd)
        expect(cmd.out_data_type).toBe(IOMMU_HW_INFO_TYPE_SELFTEST)
        expect(cmd.data_len).toBe(8)
        return cmd
      }
      if (!deviceId) {
        expectErrno('ENOENT', () => hwInfo(deviceId, IOMMU_HW_INFO_TYPE_DEFAULT, 8, BigInt(buf)))
        return
      }
      hwInfo(deviceId, IOMMU_HW_INFO_TYPE_DEFAULT, 0, 0n)
      env.proc.write(buf, new Uint8Array(16).fill(0xaa))
      hwInfo(deviceId, IOMMU_HW_INFO_TYPE_DEFAULT, 8, BigInt(buf))
      const regs = new DataView(env.proc.read(buf, 16).buffer)
      expect(regs.getUint32(0, true)).toBe(0)
      expect(regs.getUint32(4, true)).toBe(IOMMU_HW_INFO_SELFTEST_REGVAL)
      expect(regs.getUint32(8, true)).toBe(0xaaaaaaaa)
      expectErrno('EOPNOTSUPP', () =>
        hwInfo(deviceId, IOMMU_HW_INFO_TYPE_SELFTEST + 1, 8, BigInt(buf)),
      )
      hwInfo(deviceId, IOMMU_HW_INFO_TYPE_SELFTEST, 8, BigInt(buf))
      // A larger buffer has its tail zeroed; a smaller one gets the prefix.
      env.proc.write(buf, new Uint8Array(16).fill(0xaa))
      hwInfo(deviceId, IOMMU_HW_INFO_TYPE_DEFAULT, 16, BigInt(buf))
      expect(env.proc.read(buf + 8, 8)).toEqual(new Uint8Array(8))
      env.proc.write(buf, new Uint8Array(16).fill(0xaa))
      hwInfo(deviceId, IOMMU_HW_INFO_TYPE_DEFAULT, 4, BigInt(buf))
      expect(new DataView(env.proc.read(buf, 8).buffer).getUint32(4, true)).toBe(0xaaaaaaaa)
      expect(hwInfo(deviceId, 0, 0, 0n).out_max_pasid_log2).toBe(0)
      if (variant.pasidCapable) {
        expect(hwInfo(devicePasidId, 0, 0, 0n).out_max_pasid_log2).toBe(MOCK_PASID_WIDTH)
      }
    })

    it('area: unmap ENOENT when empty, no splitting, overlaps EEXIST, unmap-all (§2.10, §3.3)', () => {
      for (let i = 0; i < 10; i++)
        expectErrno('ENOENT', () => _testIoctlIoasUnmap(env.fd, ioasId, i * PAGE_SIZE, PAGE_SIZE))
      for (let i = 0; i < 10; i++)
        ioasMap(env.fd, ioasId, env.buffer, PAGE_SIZE, baseIova + i * PAGE_SIZE)
      for (let i = 0; i < 10; i++)
        _testIoctlIoasUnmap(env.fd, ioasId, baseIova + i * PAGE_SIZE, PAGE_SIZE)
      ioasMap(env.fd, ioasId, env.buffer, PAGE_SIZE * 2, baseIova + 16 * PAGE_SIZE)
      expectErrno('ENOENT', () =>
        _testIoctlIoasUnmap(env.fd, ioasId, baseIova + 16 * PAGE_SIZE, PAGE_SIZE),
      )
      expectErrno('ENOENT', () =>
        _testIoctlIoasUnmap(env.fd, ioasId, baseIova + 17 * PAGE_SIZE, PAGE_SIZE),
      )
      for (const [len, at] of [
        [2, 16],
        [1, 16],
        [1, 17],
        [2, 15],
        [3, 15],
      ] as const) {
        expectErrno('EEXIST', () =>
          ioasMap(env.fd, ioasId, env.buffer, len * PAGE_SIZE, baseIova + at * PAGE_SIZE),
        )
      }
      expect(_testIoctlIoasUnmap(env.fd, ioasId, 0n, 0xffff_ffff_ffff_ffffn)).toBe(
        BigInt(2 * PAGE_SIZE),
      )
      expect(_testIoctlIoasUnmap(env.fd, ioasId, 0n, 0xffff_ffff_ffff_ffffn)).toBe(0n)
    })

    it('unmap_fully_contained_areas: holes are fine, cut areas ENOENT (§2.10)', () => {
      const base = baseIova + 4 * PAGE_SIZE
      for (let i = 0; i < 4; i++)
        ioasMap(env.fd, ioasId, env.buffer, 8 * PAGE_SIZE, base + i * 16 * PAGE_SIZE)
      expectErrno('ENOENT', () =>
        _testIoctlIoasUnmap(env.fd, ioasId, base - 4 * PAGE_SIZE, 8 * PAGE_SIZE),
      )
      expectErrno('ENOENT', () =>
        _testIoctlIoasUnmap(
          env.fd,
          ioasId,
          base + 3 * 16 * PAGE_SIZE + 8 * PAGE_SIZE - 4 * PAGE_SIZE,
          8 * PAGE_SIZE,
        ),
      )
      const len = 3 * 16 * PAGE_SIZE + 8 * PAGE_SIZE + 4 * PAGE_SIZE
      expect(_testIoctlIoasUnmap(env.fd, ioasId, base - 4 * PAGE_SIZE, len)).toBe(
        BigInt(32 * PAGE_SIZE),
      )
    })

    it('area_auto_iova: alignment, reserved ranges avoided, allowed ranges honoured (§3.2)', () => {
      const iovas: bigint[] = []
      for (let i = 0; i < 10; i++) iovas.push(ioasMap(env.fd, ioasId, env.buffer, PAGE_SIZE))
      for (const v of iovas) _testIoctlIoasUnmap(env.fd, ioasId, v, PAGE_SIZE)
      const lowbit = (n: number) => BigInt(n & -n)
      for (let i = 0; i < 10; i++) {
        const len = PAGE_SIZE * (i + 1)
        iovas[i] = ioasMap(env.fd, ioasId, stdevId ? env.buffer : 2 ** 31, len)
        expect((iovas[i] as bigint) % lowbit(len)).toBe(0n)
      }
      for (let i = 0; i < 10; i++)
        _testIoctlIoasUnmap(env.fd, ioasId, iovas[i] as bigint, PAGE_SIZE * (i + 1))
      const rStart = BigInt(PAGE_SIZE * 4)
      const rLen = BigInt(PAGE_SIZE * 100)
      addReserved(env.fd, ioasId, rStart, rLen)
      for (let i = 0; i < 10; i++) {
        const len = PAGE_SIZE * (i + 1)
        const v = ioasMap(env.fd, ioasId, env.buffer, len)
        iovas[i] = v
        expect(v % lowbit(len)).toBe(0n)
        expect(v > rStart && v < rStart + rLen).toBe(false)
      }
      for (let i = 0; i < 10; i++)
        _testIoctlIoasUnmap(env.fd, ioasId, iovas[i] as bigint, PAGE_SIZE * (i + 1))
      const ranges = env.proc.mmap(PAGE_SIZE)
      const allow = { size: 24, ioas_id: ioasId, num_iovas: 1, allowed_iovas: BigInt(ranges) }
      writeRanges(env.proc, ranges, [[BigInt(PAGE_SIZE), BigInt(PAGE_SIZE * 600)]])
      expectErrno('EADDRINUSE', () => env.fd.ioctl(IOMMU_IOAS_ALLOW_IOVAS, allow))
      const [lo, hi] = stdevId
        ? [
            MOCK_APERTURE_START + BigInt(PAGE_SIZE),
            MOCK_APERTURE_START + BigInt(PAGE_SIZE * 600 - 1),
          ]
        : [BigInt(PAGE_SIZE * 200), BigInt(PAGE_SIZE * 600 - 1)]
      writeRanges(env.proc, ranges, [[lo, hi]])
      env.fd.ioctl(IOMMU_IOAS_ALLOW_IOVAS, allow)
      for (let i = 0; i < 10; i++) {
        const len = PAGE_SIZE * (i + 1)
        const v = ioasMap(env.fd, ioasId, env.buffer, len)
        iovas[i] = v
        expect(v % lowbit(len)).toBe(0n)
        expect(v >= lo && v + BigInt(len) <= hi + 1n).toBe(true)
      }
      for (let i = 0; i < 10; i++)
        _testIoctlIoasUnmap(env.fd, ioasId, iovas[i] as bigint, PAGE_SIZE * (i + 1))
    })

    it('reserved_overflow: a reservation up to the top leaves no room (ENOSPC) (§3.2)', () => {
      addReserved(env.fd, ioasId, 6n, 0xffff_ffff_ffff_8001n)
      expectErrno('ENOSPC', () => ioasMap(env.fd, ioasId, env.buffer, 0x5000))
    })

    it('area_allowed: reserved vs allowed conflicts are EADDRINUSE both ways (§3.5)', () => {
      const ranges = env.proc.mmap(PAGE_SIZE)
      const allow = { size: 24, ioas_id: ioasId, num_iovas: 1, allowed_iovas: BigInt(ranges) }
      const start = BigInt(baseIova)
      writeRanges(env.proc, ranges, [[start, start + BigInt(PAGE_SIZE * 600)]])
      env.fd.ioctl(IOMMU_IOAS_ALLOW_IOVAS, allow)
      expectErrno('EADDRINUSE', () =>
        addReserved(env.fd, ioasId, start + BigInt(PAGE_SIZE), PAGE_SIZE),
      )
      allow.num_iovas = 0
      env.fd.ioctl(IOMMU_IOAS_ALLOW_IOVAS, allow)
      addReserved(env.fd, ioasId, start + BigInt(PAGE_SIZE), PAGE_SIZE)
      allow.num_iovas = 1
      expectErrno('EADDRINUSE', () => env.fd.ioctl(IOMMU_IOAS_ALLOW_IOVAS, allow))
    })

    it('copy_area: copy inside one IOAS and into a new one at IOVA 0 (§2.9)', () => {
      ioasMap(env.fd, ioasId, env.buffer, PAGE_SIZE, baseIova)
      const copy = {
        size: 40,
        flags: IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_WRITEABLE,
        dst_ioas_id: ioasId,
        src_ioas_id: ioasId,
        length: BigInt(PAGE_SIZE),
        src_iova: BigInt(baseIova),
        dst_iova: BigInt(baseIova + PAGE_SIZE),
      }
      env.fd.ioctl(IOMMU_IOAS_COPY, copy)
      copy.dst_iova = 0n
      copy.dst_ioas_id = _testIoctlIoasAlloc(env.fd)
      env.fd.ioctl(IOMMU_IOAS_COPY, copy)
    })

    it('iova_ranges: holes of the reserved tree; EMSGSIZE after writing back (§2.5, §3.4)', () => {
      const ranges = env.buffer
      const cmd = {
        size: 32,
        ioas_id: ioasId,
        num_iovas: BUFFER_SIZE / 16,
        allowed_iovas: BigInt(ranges),
        out_iova_alignment: 0n,
      }
      env.fd.ioctl(IOMMU_IOAS_IOVA_RANGES, cmd)
      expect(cmd.num_iovas).toBe(1)
      if (!stdevId) {
        expect(readRange(env.proc, ranges, 0)).toEqual([0n, 0xffff_ffff_ffff_ffffn])
        expect(cmd.out_iova_alignment).toBe(1n)
      } else {
        expect(readRange(env.proc, ranges, 0)).toEqual([MOCK_APERTURE_START, MOCK_APERTURE_LAST])
        expect(cmd.out_iova_alignment).toBe(BigInt(MOCK_PAGE_SIZE))
      }
      env.proc.write(ranges, new Uint8Array(BUFFER_SIZE))
      cmd.num_iovas = 0
      expectErrno('EMSGSIZE', () => env.fd.ioctl(IOMMU_IOAS_IOVA_RANGES, cmd))
      expect(cmd.num_iovas).toBe(1)
      expect(readRange(env.proc, ranges, 0)).toEqual([0n, 0n])
      addReserved(env.fd, ioasId, PAGE_SIZE, PAGE_SIZE)
      cmd.num_iovas = BUFFER_SIZE / 16
      env.fd.ioctl(IOMMU_IOAS_IOVA_RANGES, cmd)
      if (!stdevId) {
        expect(cmd.num_iovas).toBe(2)
        expect(readRange(env.proc, ranges, 0)).toEqual([0n, BigInt(PAGE_SIZE - 1)])
        expect(readRange(env.proc, ranges, 1)).toEqual([
          BigInt(PAGE_SIZE * 2),
          0xffff_ffff_ffff_ffffn,
        ])
      } else {
        expect(cmd.num_iovas).toBe(1)
        expect(readRange(env.proc, ranges, 0)).toEqual([MOCK_APERTURE_START, MOCK_APERTURE_LAST])
      }
      env.proc.write(ranges, new Uint8Array(BUFFER_SIZE))
      cmd.num_iovas = 1
      if (!stdevId) {
        expectErrno('EMSGSIZE', () => env.fd.ioctl(IOMMU_IOAS_IOVA_RANGES, cmd))
        expect(cmd.num_iovas).toBe(2)
        expect(readRange(env.proc, ranges, 0)).toEqual([0n, BigInt(PAGE_SIZE - 1)])
      } else {
        env.fd.ioctl(IOMMU_IOAS_IOVA_RANGES, cmd)
        expect(cmd.num_iovas).toBe(1)
        expect(readRange(env.proc, ranges, 0)).toEqual([MOCK_APERTURE_START, MOCK_APERTURE_LAST])
      }
      expect(readRange(env.proc, ranges, 1)).toEqual([0n, 0n])
    })

    it('access_domain_destory: an access pin inside a huge page survives the domain going (§3.11)', () => {
      const buf = env.proc.mmap(2 * HUGEPAGE_SIZE, { populate: true })
      ioasMap(env.fd, ioasId, buf, 2 * HUGEPAGE_SIZE, baseIova)
      const acc = _testCmdCreateAccess(env.fd, ioasId, MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES)
      const id = accessPages(env.fd, acc, BigInt(baseIova + PAGE_SIZE), PAGE_SIZE, buf + PAGE_SIZE)
      if (stdevId) _testIoctlDestroy(env.fd, stdevId)
      _testCmdDestroyAccessPages(env.fd, acc, id)
      fdClose(env.proc, acc)
      env.proc.munmap(buf, 2 * HUGEPAGE_SIZE)
    })

    it('access_pin: pin 1..15 pages, double users, a domain added while pinned (§3.11)', () => {
      const acc = _testCmdCreateAccess(env.fd, ioasId, MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES)
      const start = MOCK_APERTURE_START
      for (let npages = 1; npages < BUFFER_SIZE / PAGE_SIZE; npages++) {
        const len = npages * PAGE_SIZE
        ioasMap(env.fd, ioasId, env.buffer, BUFFER_SIZE, start)
        _testCmdDestroyAccessPages(env.fd, acc, accessPages(env.fd, acc, start, len, env.buffer))
        const a = accessPages(env.fd, acc, start, len, env.buffer)
        const b = accessPages(env.fd, acc, start, len, env.buffer)
        _testCmdDestroyAccessPages(env.fd, acc, b)
        _testCmdDestroyAccessPages(env.fd, acc, a)
        const c = accessPages(env.fd, acc, start, len, env.buffer)
        const md = _testCmdMockDomain(env.fd, ioasId)
        _testCmdMdCheckMap(env.fd, md.hwpt_id, env.buffer, start, BUFFER_SIZE)
        _testIoctlDestroy(env.fd, md.stdev_id)
        _testCmdDestroyAccessPages(env.fd, acc, c)
        _testIoctlIoasUnmap(env.fd, ioasId, start, BUFFER_SIZE)
      }
      fdClose(env.proc, acc)
    })

    it('access_pin_unmap: unmapping a pinned range calls the access unmap (§3.11)', () => {
      const acc = _testCmdCreateAccess(env.fd, ioasId, MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES)
      ioasMap(env.fd, ioasId, env.buffer, BUFFER_SIZE, MOCK_APERTURE_START)
      const id = accessPages(env.fd, acc, MOCK_APERTURE_START, BUFFER_SIZE, env.buffer)
      _testIoctlIoasUnmap(env.fd, ioasId, MOCK_APERTURE_START, BUFFER_SIZE)
      expectErrno('ENOENT', () => _testCmdDestroyAccessPages(env.fd, acc, id))
      fdClose(env.proc, acc)
    })

    it('access_rw: byte-granular reads and writes, fast and slow path (§3.11)', () => {
      const acc = _testCmdCreateAccess(env.fd, ioasId, 0)
      const iova = ioasMap(env.fd, ioasId, env.buffer, BUFFER_SIZE)
      checkAccessRw(env, acc, iova, env.buffer, 0)
      checkAccessRw(env, acc, iova, env.buffer, MOCK_ACCESS_RW_SLOW_PATH)
      _testIoctlIoasUnmap(env.fd, ioasId, iova, BUFFER_SIZE)
      fdClose(env.proc, acc)
    })

    it('access_rw_unaligned: an IOVA offset by MOCK_PAGE_SIZE (§3.11)', () => {
      const acc = _testCmdCreateAccess(env.fd, ioasId, 0)
      const iova = BigInt(baseIova + MOCK_PAGE_SIZE)
      ioasMap(env.fd, ioasId, env.buffer, BUFFER_SIZE, iova)
      checkAccessRw(env, acc, iova, env.buffer, 0)
      _testIoctlIoasUnmap(env.fd, ioasId, iova, BUFFER_SIZE)
      fdClose(env.proc, acc)
    })

    /** A child sharing a memfd mapping with the parent at the same address (fork + MAP_SHARED). */
    function forkShared(): { child: Process; shared: number } {
      const memfd = env.proc.memfdCreate('shared')
      memfd.ftruncate(BUFFER_SIZE)
      const shared = env.proc.mmap(BUFFER_SIZE, { file: memfd })
      const child = env.m.createProcess({ user: env.proc.user })
      child.mmap(BUFFER_SIZE, { file: memfd, addr: shared })
      memfd.close()
      return { child, shared }
    }

    it('fork_gone: a map made by an exited child pins only if a domain was there (§3.10)', () => {
      const acc = _testCmdCreateAccess(env.fd, ioasId, 0)
      const { child, shared } = forkShared()
      ioasMap(env.fd.as(child), ioasId, shared, BUFFER_SIZE, MOCK_APERTURE_START)
      child.exit()
      if (stdevId) {
        _testCmdMockDomain(env.fd, ioasId)
        checkAccessRw(env, acc, MOCK_APERTURE_START, shared, 0)
      } else {
        expectErrno('EFAULT', () => _testCmdMockDomain(env.fd, ioasId))
      }
      fdClose(env.proc, acc)
    })

    it('fork_present: a map of a live child is readable after adding a domain (§3.10)', () => {
      const acc = _testCmdCreateAccess(env.fd, ioasId, 0)
      const { child, shared } = forkShared()
      ioasMap(env.fd.as(child), ioasId, shared, BUFFER_SIZE, MOCK_APERTURE_START)
      _testCmdMockDomain(env.fd, ioasId)
      checkAccessRw(env, acc, MOCK_APERTURE_START, shared, 0)
      child.exit()
      fdClose(env.proc, acc)
    })

    it('ioas_option_huge_pages: get 1, set 0, get 0, set 2 EINVAL, set 1 (§2.11)', () => {
      const cmd = {
        size: 24,
        option_id: IOMMU_OPTION_HUGE_PAGES,
        op: IOMMU_OPTION_OP_GET,
        val64: 3n,
        object_id: ioasId,
      }
      env.fd.ioctl(IOMMU_OPTION, cmd)
      expect(cmd.val64).toBe(1n)
      cmd.op = IOMMU_OPTION_OP_SET
      cmd.val64 = 0n
      env.fd.ioctl(IOMMU_OPTION, cmd)
      cmd.op = IOMMU_OPTION_OP_GET
      cmd.val64 = 3n
      env.fd.ioctl(IOMMU_OPTION, cmd)
      expect(cmd.val64).toBe(0n)
      cmd.op = IOMMU_OPTION_OP_SET
      cmd.val64 = 2n
      expectErrno('EINVAL', () => env.fd.ioctl(IOMMU_OPTION, cmd))
      cmd.val64 = 1n
      env.fd.ioctl(IOMMU_OPTION, cmd)
    })

    it('ioas_iova_alloc: every length 1..2*PAGE_SIZE-1; with a domain only 2 KiB multiples (§2.7)', () => {
      for (let len = 1; len !== PAGE_SIZE * 2; len++) {
        if (variant.mockDomains && len % MOCK_PAGE_SIZE) {
          expectErrno('EINVAL', () => ioasMap(env.fd, ioasId, env.buffer, len))
        } else {
          _testIoctlIoasUnmap(env.fd, ioasId, ioasMap(env.fd, ioasId, env.buffer, len), len)
        }
      }
    })

    it('ioas_align_change: HUGE_PAGES=0 raises the alignment; misaligned areas EADDRINUSE (§3.8)', () => {
      if (variant.mockDomains) return
      const cmd = {
        size: 24,
        option_id: IOMMU_OPTION_HUGE_PAGES,
        op: IOMMU_OPTION_OP_SET,
        object_id: ioasId,
        val64: 0n,
      }
      ioasMap(env.fd, ioasId, env.buffer, PAGE_SIZE, MOCK_APERTURE_START)
      env.fd.ioctl(IOMMU_OPTION, cmd)
      expectErrno('EINVAL', () =>
        ioasMap(
          env.fd,
          ioasId,
          env.buffer + MOCK_PAGE_SIZE,
          PAGE_SIZE,
          MOCK_APERTURE_START + BigInt(PAGE_SIZE),
        ),
      )
      env.fd.ioctl(IOMMU_OPTION, cmd)
      cmd.val64 = 1n
      env.fd.ioctl(IOMMU_OPTION, cmd)
      ioasMap(
        env.fd,
        ioasId,
        env.buffer + MOCK_PAGE_SIZE,
        PAGE_SIZE,
        MOCK_APERTURE_START + BigInt(PAGE_SIZE),
      )
      cmd.val64 = 0n
      expectErrno('EADDRINUSE', () => env.fd.ioctl(IOMMU_OPTION, cmd))
      _testIoctlIoasUnmap(env.fd, ioasId, MOCK_APERTURE_START + BigInt(PAGE_SIZE), PAGE_SIZE)
      _testIoctlIoasUnmap(env.fd, ioasId, MOCK_APERTURE_START, PAGE_SIZE)
    })

    it('copy_sweep: 2 KiB windows fully inside the source copy, others ENOENT (§2.9)', () => {
      const dst = _testIoctlIoasAlloc(env.fd)
      const copy = {
        size: 40,
        flags: IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_WRITEABLE,
        src_ioas_id: ioasId,
        dst_ioas_id: dst,
        dst_iova: MOCK_APERTURE_START,
        length: BigInt(MOCK_PAGE_SIZE),
        src_iova: 0n,
      }
      const last = MOCK_APERTURE_START + BigInt(BUFFER_SIZE - (variant.mockDomains ? 1 : 2))
      ioasMap(env.fd, ioasId, env.buffer, last - MOCK_APERTURE_START + 1n, MOCK_APERTURE_START)
      for (let iova = MOCK_APERTURE_START - BigInt(PAGE_SIZE); iova <= last; iova += 511n) {
        copy.src_iova = iova
        copy.dst_iova = MOCK_APERTURE_START
        if (iova < MOCK_APERTURE_START || iova + copy.length - 1n > last) {
          expectErrno('ENOENT', () => env.fd.ioctl(IOMMU_IOAS_COPY, copy))
        } else {
          env.fd.ioctl(IOMMU_IOAS_COPY, copy)
          _testIoctlIoasUnmap(env.fd, dst, copy.dst_iova, copy.length)
        }
      }
      _testIoctlDestroy(env.fd, dst)
    })
  })
}

describe('IOAS rules beyond the selftest', () => {
  let env: Env
  beforeEach(() => {
    env = setup()
  })
  afterEach(() => teardown(env))

  it('IOAS IDs are lowest-free from 1 and reused after DESTROY (§1.1)', () => {
    expect([
      _testIoctlIoasAlloc(env.fd),
      _testIoctlIoasAlloc(env.fd),
      _testIoctlIoasAlloc(env.fd),
    ]).toEqual([1, 2, 3])
    _testIoctlDestroy(env.fd, 2)
    expect(_testIoctlIoasAlloc(env.fd)).toBe(2)
    expect(_testIoctlIoasAlloc(env.fd)).toBe(4)
  })

  it('MAP validation order: flags EOPNOTSUPP, then EOVERFLOW, then R/W EINVAL, then ENOENT (§2.7)', () => {
    const map = (o: object) => env.fd.ioctl(0x3b85, { size: 40, ...o })
    expectErrno('EOPNOTSUPP', () => map({ flags: 1 << 3, iova: 0xffff_ffff_ffff_ffffn }))
    expectErrno('EOPNOTSUPP', () => map({ flags: RW, __reserved: 1 }))
    expectErrno('EOVERFLOW', () => map({ flags: 0, length: 0xffff_ffff_ffff_ffffn }))
    expectErrno('EINVAL', () => map({ flags: 0, ioas_id: 99 }))
    expectErrno('ENOENT', () => map({ flags: RW, ioas_id: 99 }))
    const id = _testIoctlIoasAlloc(env.fd)
    expectErrno('EINVAL', () => map({ flags: RW, ioas_id: id, length: 0n }))
    expectErrno('EOVERFLOW', () =>
      map({ flags: RW, ioas_id: id, user_va: 0xffff_ffff_ffff_f000n, length: 0x2000n }),
    )
  })

  it('MAP on a domain-less IOAS is lazy: a bad VA only fails when a domain attaches (§3.10)', () => {
    const id = _testIoctlIoasAlloc(env.fd)
    ioasMap(env.fd, id, 0x7000_0000_0000, PAGE_SIZE * 4, MOCK_APERTURE_START)
    expectErrno('EFAULT', () => _testCmdMockDomain(env.fd, id))
    // The attach was rolled back completely.
    expect(env.m.memory.frameStats().pins).toBe(0)
  })

  it('UNMAP is not atomic: areas before a cut area stay unmapped (§2.10 quirk)', () => {
    const id = _testIoctlIoasAlloc(env.fd)
    ioasMap(env.fd, id, env.buffer, PAGE_SIZE, MOCK_APERTURE_START)
    ioasMap(env.fd, id, env.buffer, 2 * PAGE_SIZE, MOCK_APERTURE_START + BigInt(2 * PAGE_SIZE))
    expectErrno('ENOENT', () => _testIoctlIoasUnmap(env.fd, id, MOCK_APERTURE_START, 3 * PAGE_SIZE))
    expectErrno('ENOENT', () => _testIoctlIoasUnmap(env.fd, id, MOCK_APERTURE_START, PAGE_SIZE))
    expect(_testIoctlIoasUnmap(env.fd, id, MOCK_APERTURE_START, 4 * PAGE_SIZE)).toBe(
      BigInt(2 * PAGE_SIZE),
    )
  })

  it('COPY of a read-only source as WRITEABLE is EPERM; COPY shares the pins (§2.9, §3.7)', () => {
    const id = _testIoctlIoasAlloc(env.fd)
    _testCmdMockDomain(env.fd, id)
    ioasMap(env.fd, id, env.buffer, PAGE_SIZE, MOCK_APERTURE_START, 4 /* READABLE */)
    const copy = {
      size: 40,
      flags: IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_WRITEABLE,
      src_ioas_id: id,
      dst_ioas_id: id,
      length: BigInt(PAGE_SIZE),
      src_iova: MOCK_APERTURE_START,
      dst_iova: MOCK_APERTURE_START + 0x10000n,
    }
    expectErrno('EPERM', () => env.fd.ioctl(IOMMU_IOAS_COPY, copy))
    _testIoctlIoasUnmap(env.fd, id, MOCK_APERTURE_START, PAGE_SIZE)
    ioasMap(env.fd, id, env.buffer, PAGE_SIZE, MOCK_APERTURE_START)
    env.fd.ioctl(IOMMU_IOAS_COPY, copy)
    const pfn = env.proc.pageFrame(env.buffer, false)
    expect(env.m.memory.pinCount(pfn)).toBe(1)
    _testIoctlIoasUnmap(env.fd, id, MOCK_APERTURE_START, PAGE_SIZE)
    expect(env.m.memory.pinCount(pfn)).toBe(1)
  })

  it('IOMMU_DESTROY of a referenced object is EBUSY and changes nothing (§1.2)', () => {
    const id = _testIoctlIoasAlloc(env.fd)
    const md = _testCmdMockDomain(env.fd, id)
    expectErrno('EBUSY', () => env.fd.ioctl(IOMMU_DESTROY, { size: 8, id: md.hwpt_id }))
    expectErrno('EBUSY', () => env.fd.ioctl(IOMMU_DESTROY, { size: 8, id: md.idev_id }))
    _testIoctlDestroy(env.fd, md.stdev_id)
    // The automatic HWPT went with its last device; the IOAS is free.
    expectErrno('ENOENT', () => env.fd.ioctl(IOMMU_DESTROY, { size: 8, id: md.hwpt_id }))
    _testIoctlDestroy(env.fd, id)
  })
})

/**
 * Port of the selftest FIXTURE(iommufd_mock_domain): one or two mock domains on an IOAS,
 * with small, huge-page and memfd buffers (reference iommufd-uapi.md §7.1, §2.7–2.9,
 * §3.7, §1.4).
 */
import { MockPagetableType } from '@iommu/core/testing'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import {
  fdClose,
  fdInstall,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_IOAS_COPY,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_IOAS_UNMAP,
  IOMMU_TEST_CMD,
} from '../src/index.ts'
import {
  _testCmdCreateAccess,
  _testCmdDestroyAccessPages,
  _testCmdHwptAlloc,
  _testCmdMdCheckMap,
  _testCmdMdCheckRefs,
  _testCmdMockDomain,
  _testCmdMockDomainReplace,
  _testIoctlDestroy,
  _testIoctlIoasAlloc,
  _testIoctlIoasUnmap,
  BUFFER_SIZE,
  expectErrno,
  HUGEPAGE_SIZE,
  PAGE_SIZE,
} from '../src/testing/index.ts'
import {
  IOMMU_HWPT_DATA_SELFTEST,
  IOMMU_TEST_DEV_CACHE_DEFAULT,
  IOMMU_TEST_OP_ACCESS_REPLACE_IOAS,
  IOMMU_TEST_OP_DEV_CHECK_CACHE,
  MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES,
  MOCK_IOMMUPT_DEFAULT,
  MOCK_IOMMUPT_HUGE,
} from '../src/uapi/index.ts'
import {
  APERTURE,
  accessPages,
  type Env,
  errnoOf,
  hwptAlloc,
  ioasMap,
  ioasMapFile,
  setup,
  teardown,
} from './helpers.ts'

const MOCK_PAGE = 2048

interface Variant {
  readonly name: string
  readonly mockDomains: number
  readonly hugepages: boolean
  readonly file: boolean
}

const VARIANTS: readonly Variant[] = [
  { name: 'one_domain', mockDomains: 1, hugepages: false, file: false },
  { name: 'two_domains', mockDomains: 2, hugepages: false, file: false },
  { name: 'one_domain_hugepage', mockDomains: 1, hugepages: true, file: false },
  { name: 'two_domains_hugepage', mockDomains: 2, hugepages: true, file: false },
  { name: 'one_domain_file', mockDomains: 1, hugepages: false, file: true },
  { name: 'one_domain_file_hugepage', mockDomains: 1, hugepages: true, file: true },
]

for (const variant of VARIANTS) {
  describe(`FIXTURE(iommufd_mock_domain) variant ${variant.name}`, () => {
    let env: Env
    let ioasId = 0
    let hwptIds: number[] = []
    let stdevIds: number[] = []
    let idevIds: number[] = []
    const bufSize = variant.hugepages ? HUGEPAGE_SIZE * 2 : PAGE_SIZE * 8

    beforeEach(() => {
      env = setup()
      ioasId = _testIoctlIoasAlloc(env.fd)
      hwptIds = [0, 0]
      stdevIds = []
      idevIds = []
      for (let i = 0; i < variant.mockDomains; i++) {
        const md = _testCmdMockDomain(env.fd, ioasId)
        stdevIds.push(md.stdev_id)
        hwptIds[i] = md.hwpt_id
        idevIds.push(md.idev_id)
        for (let c = 0; c < 4; c++) {
          env.fd.ioctl(IOMMU_TEST_CMD, {
            size: 72,
            op: IOMMU_TEST_OP_DEV_CHECK_CACHE,
            id: md.idev_id,
            check_dev_cache: { id: c, cache: IOMMU_TEST_DEV_CACHE_DEFAULT },
          })
        }
      }
    })
    afterEach(() => teardown(env))

    /** `check_mock_iova`: in every domain of the fixture. */
    const checkIova = (va: number, iova: bigint, length: number) => {
      for (const h of hwptIds) if (h) _testCmdMdCheckMap(env.fd, h, va, iova, length)
    }

    /** A buffer like the selftest's mmap (THP-backed when hugepages) or memfd_mmap. */
    const newBuf = (): { buf: number; mfd: number } => {
      if (!variant.file)
        return { buf: env.proc.mmap(bufSize, { populate: variant.hugepages }), mfd: -1 }
      const memfd = env.proc.memfdCreate('buffer')
      memfd.ftruncate(bufSize)
      return { buf: env.proc.mmap(bufSize, { file: memfd }), mfd: fdInstall(env.proc, memfd) }
    }

    it('basic: a page is visible in every domain; unmapped VA or past EOF fails (§2.7, §2.8)', () => {
      if (variant.file) {
        const iova = ioasMapFile(env.fd, ioasId, env.mfd, 0, PAGE_SIZE)
        checkIova(env.mfdBuffer, iova, PAGE_SIZE)
        const { mfd } = newBuf()
        expectErrno('EINVAL', () => ioasMapFile(env.fd, ioasId, mfd, 0, bufSize + 1))
        const memfd = env.proc.memfdCreate('tmp')
        memfd.ftruncate(bufSize)
        const tmp = fdInstall(env.proc, memfd)
        memfd.ftruncate(0)
        expectErrno('EINVAL', () => ioasMapFile(env.fd, ioasId, tmp, 0, bufSize))
        fdClose(env.proc, tmp)
        fdClose(env.proc, mfd)
        return
      }
      const iova = ioasMap(env.fd, ioasId, env.buffer, PAGE_SIZE)
      checkIova(env.buffer, iova, PAGE_SIZE)
      const buf = env.proc.mmap(bufSize, { populate: variant.hugepages })
      env.proc.munmap(buf + bufSize / 2, bufSize / 2)
      expectErrno('EFAULT', () => ioasMap(env.fd, ioasId, buf, bufSize))
      env.proc.munmap(buf, bufSize / 2)
      expectErrno('EFAULT', () => ioasMap(env.fd, ioasId, buf, bufSize))
    })

    /**
     * Map every start/length of the buffer in 2 KiB steps (fewer for huge pages), run
     * `during` while mapped, check the domains and the pin counts, then undo `during`.
     */
    const allAligns = (during: () => () => void) => {
      const step = variant.hugepages ? bufSize / 16 : MOCK_PAGE
      const { buf, mfd } = newBuf()
      _testCmdMdCheckRefs(env.fd, buf, bufSize, 0)
      for (let start = 0; start < bufSize; start += step) {
        for (
          let end = variant.hugepages ? bufSize : start + MOCK_PAGE;
          end < bufSize;
          end += MOCK_PAGE
        ) {
          const length = end - start
          const iova = variant.file
            ? ioasMapFile(env.fd, ioasId, mfd, start, length)
            : ioasMap(env.fd, ioasId, buf + start, length)
          const undo = during()
          checkIova(buf + start, iova, length)
          const lo = Math.floor(start / PAGE_SIZE) * PAGE_SIZE
          _testCmdMdCheckRefs(env.fd, buf + lo, Math.floor(end / PAGE_SIZE) * PAGE_SIZE - lo, 1)
          undo()
          _testIoctlIoasUnmap(env.fd, ioasId, iova, length)
        }
      }
      _testCmdMdCheckRefs(env.fd, buf, bufSize, 0)
      env.proc.munmap(buf, bufSize)
      if (variant.file) fdClose(env.proc, mfd)
    }

    it('all_aligns: every start/length in 2 KiB steps maps right and pins once (§3.2, §3.9)', () => {
      allAligns(() => () => {})
    })

    it('all_aligns_copy: as all_aligns while a second domain comes and goes (§3.7, §3.10)', () => {
      allAligns(() => {
        const old = hwptIds[1] as number
        const md = _testCmdMockDomain(env.fd, ioasId)
        hwptIds[1] = md.hwpt_id
        return () => {
          _testIoctlDestroy(env.fd, md.stdev_id)
          hwptIds[1] = old
        }
      })
    })

    it('user_copy: pin in a domain-less IOAS, COPY into the domain IOAS, replace the access IOAS (§2.9, §3.11)', () => {
      const buf = variant.file ? env.mfdBuffer : env.buffer
      const mapSrc = (id: number) =>
        variant.file
          ? ioasMapFile(env.fd, id, env.mfd, 0, BUFFER_SIZE)
          : ioasMap(env.fd, id, buf, BUFFER_SIZE)
      const copy = {
        size: 40,
        flags: IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_WRITEABLE,
        dst_ioas_id: ioasId,
        dst_iova: BigInt(APERTURE),
        length: BigInt(BUFFER_SIZE),
        src_ioas_id: 0,
        src_iova: 0n,
      }
      const src = _testIoctlIoasAlloc(env.fd)
      copy.src_iova = mapSrc(src)
      const acc = _testCmdCreateAccess(env.fd, src, MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES)
      accessPages(env.fd, acc, copy.src_iova, BUFFER_SIZE, buf)
      copy.src_ioas_id = src
      env.fd.ioctl(IOMMU_IOAS_COPY, copy)
      checkIova(buf, BigInt(APERTURE), BUFFER_SIZE)

      const next = _testIoctlIoasAlloc(env.fd)
      copy.src_iova = mapSrc(next)
      env.fd.ioctl(IOMMU_TEST_CMD, {
        size: 72,
        op: IOMMU_TEST_OP_ACCESS_REPLACE_IOAS,
        id: acc,
        access_replace_ioas: { ioas_id: next },
      })
      env.fd.ioctl(IOMMU_IOAS_UNMAP, {
        size: 24,
        ioas_id: ioasId,
        iova: BigInt(APERTURE),
        length: BigInt(BUFFER_SIZE),
      })
      _testIoctlDestroy(env.fd, src)

      const id = accessPages(env.fd, acc, copy.src_iova, BUFFER_SIZE, buf)
      copy.src_ioas_id = next
      env.fd.ioctl(IOMMU_IOAS_COPY, copy)
      checkIova(buf, BigInt(APERTURE), BUFFER_SIZE)
      _testCmdDestroyAccessPages(env.fd, acc, id)
      fdClose(env.proc, acc)
      _testIoctlDestroy(env.fd, next)
    })

    it('replace: replacing to another IOAS frees the old automatic HWPT (§1.4)', () => {
      const other = _testIoctlIoasAlloc(env.fd)
      _testCmdMockDomainReplace(env.fd, stdevIds[0] as number, other)
      if (variant.mockDomains === 1) {
        expectErrno('ENOENT', () =>
          _testCmdMockDomainReplace(env.fd, stdevIds[0] as number, hwptIds[0] as number),
        )
      }
      _testCmdMockDomainReplace(env.fd, stdevIds[0] as number, other)
      if (variant.mockDomains >= 2) {
        _testCmdMockDomainReplace(env.fd, stdevIds[0] as number, hwptIds[1] as number)
        _testCmdMockDomainReplace(env.fd, stdevIds[0] as number, hwptIds[1] as number)
        _testCmdMockDomainReplace(env.fd, stdevIds[0] as number, hwptIds[0] as number)
      }
      _testCmdMockDomainReplace(env.fd, stdevIds[0] as number, ioasId)
      _testIoctlDestroy(env.fd, other)
    })

    it('alloc_hwpt: unknown flags EOPNOTSUPP; manual HWPTs busy while attached (§2.13)', () => {
      for (let i = 0; i < variant.mockDomains; i++) {
        const idev = idevIds[i] as number
        const stdev = stdevIds[i] as number
        expectErrno('EOPNOTSUPP', () =>
          hwptAlloc(env.fd, idev, ioasId, ~IOMMU_HWPT_ALLOC_NEST_PARENT >>> 0),
        )
        const h0 = hwptAlloc(env.fd, idev, ioasId, 0)
        const h1 = hwptAlloc(env.fd, idev, ioasId, IOMMU_HWPT_ALLOC_NEST_PARENT)
        _testCmdMockDomainReplace(env.fd, stdev, h0)
        expectErrno('EBUSY', () => _testIoctlDestroy(env.fd, h0))
        _testCmdMockDomainReplace(env.fd, stdev, h1)
        expectErrno('EBUSY', () => _testIoctlDestroy(env.fd, h1))
        _testCmdMockDomainReplace(env.fd, stdev, ioasId)
        _testIoctlDestroy(env.fd, h1)
        const md = _testCmdMockDomain(env.fd, h0)
        _testIoctlDestroy(env.fd, md.stdev_id)
        _testIoctlDestroy(env.fd, h0)
      }
    })
  })
}

describe('IOMMU_HWPT_ALLOC with struct iommu_hwpt_selftest (mock_domain_alloc_pgtable)', () => {
  let env: Env
  beforeEach(() => {
    env = setup()
  })
  afterEach(() => teardown(env))

  /** The errno of a paging HWPT asking for `pagetable_type`, with `len` bytes of data. */
  const alloc = (pagetableType: number, len = 8, dataType = IOMMU_HWPT_DATA_SELFTEST) => {
    const ioas = _testIoctlIoasAlloc(env.fd)
    const { idev_id } = _testCmdMockDomain(env.fd, ioas)
    const data = new Uint8Array(16)
    new DataView(data.buffer).setUint32(4, pagetableType, true)
    return errnoOf(() =>
      _testCmdHwptAlloc(env.fd, idev_id, ioas, 0, 0, dataType, data.subarray(0, len), len),
    )
  }

  it('takes MOCK_IOMMUPT_DEFAULT and MOCK_IOMMUPT_HUGE; 7.2 knows no other type: EOPNOTSUPP', () => {
    expect([MOCK_IOMMUPT_DEFAULT, MOCK_IOMMUPT_HUGE].map((t) => alloc(t))).toEqual(['OK', 'OK'])
    // 2 is not a type in 7.2's iommufd_test.h (an AMD v1 mock table is not one either).
    expect([2, 3, 0x8000_0000, 0xffff_ffff].map((t) => alloc(t))).toEqual([
      'EOPNOTSUPP',
      'EOPNOTSUPP',
      'EOPNOTSUPP',
      'EOPNOTSUPP',
    ])
    // Only `iotlb` is required (offsetofend): 4 bytes read as MOCK_IOMMUPT_DEFAULT.
    expect(alloc(2, 4)).toBe('OK')
    // Longer than the kernel's struct, or too short: __iommu_copy_struct_from_user's EINVAL.
    expect([alloc(0, 12), alloc(0, 2)]).toEqual(['EINVAL', 'EINVAL'])
    // Another driver's data type: EOPNOTSUPP before the copy.
    expect(alloc(0, 8, 1)).toBe('EOPNOTSUPP')
  })

  it('keeps the uAPI constants of 7.2: MockPagetableType has DEFAULT and HUGE only', () => {
    expect(MockPagetableType).toEqual({ DEFAULT: MOCK_IOMMUPT_DEFAULT, HUGE: MOCK_IOMMUPT_HUGE })
  })
})

/**
 * Port of the selftest FIXTURE(iommufd_dirty_tracking): buffers from 8 KiB to 256 MiB,
 * 2 KiB and 1 MiB IOPTEs, aligned and misaligned user bitmaps, read-and-clear and
 * NO_CLEAR (reference iommufd-uapi.md §4, §7.1).
 */
import {
  IOMMU_HWPT_DATA_SELFTEST,
  MOCK_HUGE_PAGE_SIZE,
  MockPagetableType,
} from '@iommu/core/testing'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import {
  IOMMU_GET_HW_INFO,
  IOMMU_HW_CAP_DIRTY_TRACKING,
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_HWPT_ALLOC_PASID,
  IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR,
  IOMMU_OPTION,
  IOMMU_OPTION_HUGE_PAGES,
  IOMMU_OPTION_OP_SET,
  IOMMU_TEST_CMD,
} from '../src/index.ts'
import {
  IOMMU_TEST_OP_PASID_ATTACH,
  IOMMU_TEST_OP_PASID_DETACH,
  MOCK_FLAGS_DEVICE_NO_DIRTY,
  MOCK_FLAGS_DEVICE_PASID,
} from '../src/uapi/index.ts'
import {
  APERTURE,
  destroy,
  type Env,
  expectErrno,
  getDirtyBitmap,
  HUGEPAGE_SIZE,
  hwptAlloc,
  ioasAlloc,
  ioasMap,
  mockDomain,
  mockSetDirty,
  PAGE_SIZE,
  setDirtyTracking,
  setup,
  teardown,
} from './helpers.ts'

const MOCK_PAGE = 2048
const KiB = 1024
const MiB = 1024 * KiB

interface Variant {
  readonly name: string
  readonly bufferSize: number
  readonly hugepages: boolean
}

const VARIANTS: readonly Variant[] = [
  { name: 'domain_dirty8k', bufferSize: 8 * KiB, hugepages: false },
  { name: 'domain_dirty16k', bufferSize: 16 * KiB, hugepages: false },
  { name: 'domain_dirty64k', bufferSize: 64 * KiB, hugepages: false },
  { name: 'domain_dirty128k', bufferSize: 128 * KiB, hugepages: false },
  { name: 'domain_dirty320k', bufferSize: 320 * KiB, hugepages: false },
  { name: 'domain_dirty64M', bufferSize: 64 * MiB, hugepages: false },
  { name: 'domain_dirty64M_huge', bufferSize: 64 * MiB, hugepages: true },
  { name: 'domain_dirty128M', bufferSize: 128 * MiB, hugepages: false },
  { name: 'domain_dirty128M_huge', bufferSize: 128 * MiB, hugepages: true },
  { name: 'domain_dirty256M', bufferSize: 256 * MiB, hugepages: false },
  { name: 'domain_dirty256M_huge', bufferSize: 256 * MiB, hugepages: true },
]

/** Test and set bits of a little-endian bitmap held in a byte array. */
const testBit = (b: Uint8Array, i: number) => (((b[i >>> 3] as number) >> (i & 7)) & 1) === 1

for (const variant of VARIANTS) {
  describe(`FIXTURE(iommufd_dirty_tracking) variant ${variant.name}`, () => {
    let env: Env
    let ioasId = 0
    let hwptId = 0
    let stdevId = 0
    let idevId = 0
    let buffer = 0
    let bitmap = 0
    const bitmapBits = variant.bufferSize / MOCK_PAGE
    const bitmapBytes = Math.ceil(bitmapBits / 8)

    beforeEach(() => {
      env = setup()
      const size = variant.hugepages
        ? Math.max(variant.bufferSize, HUGEPAGE_SIZE)
        : variant.bufferSize
      buffer = env.proc.mmap(size, { populate: variant.hugepages })
      // Room for the bitmap plus a page for the misaligned cases.
      bitmap = env.proc.mmap(bitmapBytes + PAGE_SIZE)
      ioasId = ioasAlloc(env.fd)
      // The IO page size must be what the dirty logic expects.
      if (!variant.hugepages) {
        env.fd.ioctl(IOMMU_OPTION, {
          size: 24,
          option_id: IOMMU_OPTION_HUGE_PAGES,
          op: IOMMU_OPTION_OP_SET,
          object_id: ioasId,
          val64: 0n,
        })
      }
      const md = mockDomain(env.fd, ioasId)
      stdevId = md.stdevId
      hwptId = md.hwptId
      idevId = md.idevId
    })
    afterEach(() => teardown(env))

    /** `test_cmd_hwpt_alloc_iommupt`: a dirty-tracking HWPT of the mock page-table type. */
    const allocIommupt = (type: number) => {
      const data = env.proc.mmap(PAGE_SIZE)
      const b = new DataView(new ArrayBuffer(8))
      b.setUint32(4, type, true)
      env.proc.write(data, new Uint8Array(b.buffer))
      return hwptAlloc(env.fd, idevId, ioasId, IOMMU_HWPT_ALLOC_DIRTY_TRACKING, {
        type: IOMMU_HWPT_DATA_SELFTEST,
        len: 8,
        uptr: BigInt(data),
      })
    }

    /** `test_mock_dirty_bitmaps` (reference §4.6). */
    const mockDirtyBitmaps = (hwpt: number, pteSize: number, bm: number, flags: number) => {
      const npte = pteSize / MOCK_PAGE
      const pteset = 2 * npte
      const nr = Math.floor(bitmapBits / pteset) || 1
      const iova = BigInt(APERTURE)
      const length = BigInt(variant.bufferSize)
      const ps = BigInt(MOCK_PAGE)
      const marks = new Uint8Array(bitmapBytes)
      for (let i = 0; i < bitmapBits; i += pteset)
        marks[i >>> 3] = (marks[i >>> 3] as number) | (1 << (i & 7))
      env.proc.write(bm, marks)
      expect(mockSetDirty(env.fd, hwpt, iova, length, ps, bm)).toBe(BigInt(nr))

      env.proc.write(bm, new Uint8Array(bitmapBytes))
      getDirtyBitmap(env.fd, hwpt, iova, length, ps, bm, flags)
      let got = env.proc.read(bm, bitmapBytes)
      for (let i = 0; i < bitmapBits; i += pteset) {
        for (let j = 0; j < pteset; j++) {
          if (testBit(got, i + j) !== j < npte) {
            expect.fail(`first read: bit ${i + j} is ${testBit(got, i + j)}`)
          }
        }
      }
      env.proc.write(bm, new Uint8Array(bitmapBytes))
      getDirtyBitmap(env.fd, hwpt, iova, length, ps, bm, flags)
      got = env.proc.read(bm, bitmapBytes)
      const noClear = (flags & IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR) !== 0
      for (let i = 0; i < bitmapBits; i += pteset) {
        for (let j = 0; j < pteset; j++) {
          if (testBit(got, i + j) !== (j < npte && noClear)) {
            expect.fail(`second read: bit ${i + j} is ${testBit(got, i + j)}`)
          }
        }
      }
    }

    it('enforce_dirty: NO_DIRTY device cannot attach (EINVAL) nor allocate (EOPNOTSUPP) (§4.1)', () => {
      const h = hwptAlloc(env.fd, idevId, ioasId, IOMMU_HWPT_ALLOC_DIRTY_TRACKING)
      const ok = mockDomain(env.fd, h)
      expectErrno('EINVAL', () => mockDomain(env.fd, h, MOCK_FLAGS_DEVICE_NO_DIRTY))
      destroy(env.fd, ok.stdevId)
      destroy(env.fd, h)
      const other = ioasAlloc(env.fd)
      const nd = mockDomain(env.fd, other, MOCK_FLAGS_DEVICE_NO_DIRTY)
      expectErrno('EOPNOTSUPP', () =>
        hwptAlloc(env.fd, nd.idevId, other, IOMMU_HWPT_ALLOC_DIRTY_TRACKING),
      )
      destroy(env.fd, nd.stdevId)
    })

    it('set_dirty_tracking: enable then disable on a dirty HWPT (§2.15)', () => {
      const h = hwptAlloc(env.fd, idevId, ioasId, IOMMU_HWPT_ALLOC_DIRTY_TRACKING)
      const md = mockDomain(env.fd, h)
      setDirtyTracking(env.fd, h, true)
      setDirtyTracking(env.fd, h, false)
      destroy(env.fd, md.stdevId)
      destroy(env.fd, h)
    })

    it('pasid_set_dirty_tracking: a PASID-attached dirty HWPT; NO_DIRTY PASID attach EINVAL (§4.1)', () => {
      const pasid = 100
      const h = hwptAlloc(
        env.fd,
        idevId,
        ioasId,
        IOMMU_HWPT_ALLOC_PASID | IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
      )
      const pasidCmd = (op: number, id: number) => ({
        size: 72,
        op,
        id,
        pasid_attach: { pasid, pt_id: h },
      })
      const md = mockDomain(env.fd, h, MOCK_FLAGS_DEVICE_PASID)
      env.fd.ioctl(IOMMU_TEST_CMD, pasidCmd(IOMMU_TEST_OP_PASID_ATTACH, md.stdevId))
      setDirtyTracking(env.fd, h, true)
      setDirtyTracking(env.fd, h, false)
      env.fd.ioctl(IOMMU_TEST_CMD, {
        size: 72,
        op: IOMMU_TEST_OP_PASID_DETACH,
        id: md.stdevId,
        pasid_detach: { pasid },
      })
      destroy(env.fd, md.stdevId)
      const other = ioasAlloc(env.fd)
      const nd = mockDomain(env.fd, other, MOCK_FLAGS_DEVICE_PASID | MOCK_FLAGS_DEVICE_NO_DIRTY)
      expectErrno('EINVAL', () =>
        env.fd.ioctl(IOMMU_TEST_CMD, pasidCmd(IOMMU_TEST_OP_PASID_ATTACH, nd.stdevId)),
      )
      destroy(env.fd, nd.stdevId)
      destroy(env.fd, h)
    })

    it('device_dirty_capability: GET_HW_INFO reports IOMMU_HW_CAP_DIRTY_TRACKING (§4.1)', () => {
      const h = hwptAlloc(env.fd, idevId, ioasId, 0)
      const md = mockDomain(env.fd, h)
      const cmd = { size: 40, dev_id: idevId, out_capabilities: 0n }
      env.fd.ioctl(IOMMU_GET_HW_INFO, cmd)
      expect(cmd.out_capabilities & BigInt(IOMMU_HW_CAP_DIRTY_TRACKING)).toBe(
        BigInt(IOMMU_HW_CAP_DIRTY_TRACKING),
      )
      destroy(env.fd, md.stdevId)
      destroy(env.fd, h)
    })

    for (const noClear of [false, true]) {
      const name = noClear ? 'get_dirty_bitmap_no_clear' : 'get_dirty_bitmap'
      it(`${name}: exact bits with aligned, +MOCK_PAGE_SIZE and +0xff1 bitmaps (§4.3, §4.6)`, () => {
        const pteSize = variant.hugepages ? MOCK_HUGE_PAGE_SIZE : MOCK_PAGE
        ioasMap(env.fd, ioasId, buffer, variant.bufferSize, APERTURE)
        const h = allocIommupt(
          variant.hugepages ? MockPagetableType.HUGE : MockPagetableType.DEFAULT,
        )
        setDirtyTracking(env.fd, h, true)
        const flags = noClear ? IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR : 0
        mockDirtyBitmaps(h, pteSize, bitmap, flags)
        mockDirtyBitmaps(h, pteSize, bitmap + MOCK_PAGE, flags)
        mockDirtyBitmaps(h, pteSize, bitmap + 0xff1, flags)
        destroy(env.fd, h)
        expect(stdevId).not.toBe(0)
        void hwptId
      })
    }
  })
}

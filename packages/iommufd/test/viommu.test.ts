/**
 * FIXTURE(iommufd_viommu) of `tools/testing/selftests/iommu/iommufd.c` (Linux 7.2) on the
 * harness of `@iommu/iommufd/testing`, variants no_viommu and mock_viommu: the C fixture
 * and TEST_Fs in the C order, one line of TypeScript per line of C (reference
 * iommufd-uapi.md §2.19–2.23, §5, §7.1; nesting-viommu.md §5.2).
 */
import { MAP_SHARED, PROT_READ, PROT_WRITE } from '@iommu/core'
import { expect } from 'vitest'
import { fdClose, fdRead } from '../src/index.ts'
import {
  _testIoctlDestroy,
  buffer,
  EBUSY,
  EEXIST,
  EINVAL,
  EIO,
  ENOENT,
  ENXIO,
  EOPNOTSUPP,
  EOVERFLOW,
  expectErrno,
  type FixtureSelf,
  fixture,
  openDevIommu,
  PAGE_SIZE,
  proc,
  type Ref,
  SKIP,
  teardownIommufd,
  testCmdDevCheckCache,
  testCmdDevCheckCacheAll,
  testCmdHwptAlloc,
  testCmdHwptAllocIopf,
  testCmdHwptAllocNested,
  testCmdHwQueueAlloc,
  testCmdMockDomain,
  testCmdMockDomainReplace,
  testCmdReadVevents,
  testCmdTriggerIopf,
  testCmdTriggerVevents,
  testCmdVdeviceAlloc,
  testCmdVeventqAlloc,
  testCmdViommuAlloc,
  testCmdViommuInvalidate,
  testErrHwptAllocIopf,
  testErrHwQueueAlloc,
  testErrIoctlIoasUnmap,
  testErrMmap,
  testErrMockDomainReplace,
  testErrReadVevents,
  testErrVdeviceAlloc,
  testErrVeventqAlloc,
  testErrViommuAlloc,
  testErrViommuInvalidate,
  testIoctlDestroy,
  testIoctlFaultAlloc,
  testIoctlIoasAlloc,
  testIoctlIoasMap,
  testIoctlIoasUnmap,
  testIoctlSetDefaultMemoryLimit,
} from '../src/testing/index.ts'
import {
  IOMMU_HW_QUEUE_TYPE_DEFAULT,
  IOMMU_HW_QUEUE_TYPE_SELFTEST,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_DATA_SELFTEST,
  IOMMU_HWPT_FAULT_ID_VALID,
  IOMMU_HWPT_SELFTEST_LAYOUT,
  IOMMU_TEST_DEV_CACHE_DEFAULT,
  IOMMU_TEST_HW_QUEUE_MAX,
  IOMMU_TEST_INVALIDATE_FLAG_ALL,
  IOMMU_TEST_IOTLB_DEFAULT,
  IOMMU_VEVENTQ_TYPE_SELFTEST,
  IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST,
  IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST_INVALID,
  IOMMU_VIOMMU_SELFTEST_LAYOUT,
  IOMMU_VIOMMU_TYPE_SELFTEST,
  MOCK_APERTURE_START,
  MOCK_DEV_CACHE_ID_MAX,
} from '../src/uapi/index.ts'
import { encodeStruct } from '../src/uapi/struct.ts'

interface Self extends FixtureSelf {
  ioas_id: number
  stdev_id: number
  hwpt_id: number
  nested_hwpt_id: number
  device_id: number
  viommu_id: number
}

interface Variant {
  readonly viommu: number
}

/** `struct iommu_hwpt_selftest data = { .iotlb = IOMMU_TEST_IOTLB_DEFAULT }`. */
const selftestData = () =>
  encodeStruct(IOMMU_HWPT_SELFTEST_LAYOUT, { iotlb: IOMMU_TEST_IOTLB_DEFAULT })

/** `struct iommu_viommu_invalidate_selftest inv_reqs[2]`, as bytes. */
function invReqs(
  reqs: readonly { flags: number; vdev_id: number; cache_id: number }[],
): Uint8Array {
  const b = new Uint8Array(24)
  const v = new DataView(b.buffer)
  for (const [i, r] of reqs.entries()) {
    v.setUint32(12 * i, r.flags >>> 0, true)
    v.setUint32(12 * i + 4, r.vdev_id, true)
    v.setUint32(12 * i + 8, r.cache_id, true)
  }
  return b
}

fixture<Self, Variant>(
  'iommufd_viommu',
  {
    variants: { no_viommu: { viommu: 0 }, mock_viommu: { viommu: 1 } },
    setup(self, variant) {
      self.fd = openDevIommu()
      self.ioas_id = testIoctlIoasAlloc()
      testIoctlSetDefaultMemoryLimit()
      self.stdev_id = self.hwpt_id = self.nested_hwpt_id = self.device_id = self.viommu_id = 0
      if (variant.viommu) {
        const data = selftestData()
        ;({ stdev_id: self.stdev_id, idev_id: self.device_id } = testCmdMockDomain(self.ioas_id))
        // Allocate a nesting parent hwpt
        self.hwpt_id = testCmdHwptAlloc(self.device_id, self.ioas_id, IOMMU_HWPT_ALLOC_NEST_PARENT)
        // Allocate a vIOMMU taking refcount of the parent hwpt
        self.viommu_id = testCmdViommuAlloc(
          self.device_id,
          self.hwpt_id,
          IOMMU_VIOMMU_TYPE_SELFTEST,
          null,
          0,
        )
        // Allocate a regular nested hwpt
        self.nested_hwpt_id = testCmdHwptAllocNested(
          self.device_id,
          self.viommu_id,
          0,
          IOMMU_HWPT_DATA_SELFTEST,
          data,
          data.length,
        )
      }
    },
    teardown(self) {
      teardownIommufd(self.fd)
    },
  },
  (TEST_F) => {
    TEST_F('viommu_auto_destroy', () => {})

    TEST_F('viommu_negative_tests', (self) => {
      const device_id = self.device_id
      const ioas_id = self.ioas_id
      if (self.device_id) {
        // Negative test -- invalid hwpt (hwpt_id=0)
        testErrViommuAlloc(ENOENT, device_id, 0, IOMMU_VIOMMU_TYPE_SELFTEST, null, 0)
        // Negative test -- not a nesting parent hwpt
        const hwpt_id = testCmdHwptAlloc(device_id, ioas_id, 0)
        testErrViommuAlloc(EINVAL, device_id, hwpt_id, IOMMU_VIOMMU_TYPE_SELFTEST, null, 0)
        testIoctlDestroy(hwpt_id)
        // Negative test -- unsupported viommu type
        testErrViommuAlloc(EOPNOTSUPP, device_id, self.hwpt_id, 0xdead, null, 0)
        expectErrno(EBUSY, () => _testIoctlDestroy(self.fd, self.hwpt_id))
        expectErrno(EBUSY, () => _testIoctlDestroy(self.fd, self.viommu_id))
      } else {
        testErrViommuAlloc(
          ENOENT,
          self.device_id,
          self.hwpt_id,
          IOMMU_VIOMMU_TYPE_SELFTEST,
          null,
          0,
        )
      }
    })

    TEST_F('viommu_alloc_nested_iopf', (self) => {
      const data = selftestData()
      const viommu_id = self.viommu_id
      const dev_id = self.device_id
      if (!dev_id) SKIP('Skipping test for variant no_viommu')
      const { fault_id, fault_fd } = testIoctlFaultAlloc()
      testErrHwptAllocIopf(
        ENOENT,
        dev_id,
        viommu_id,
        0xffff_ffff,
        IOMMU_HWPT_FAULT_ID_VALID,
        IOMMU_HWPT_DATA_SELFTEST,
        data,
        data.length,
      )
      testErrHwptAllocIopf(
        EOPNOTSUPP,
        dev_id,
        viommu_id,
        fault_id,
        (IOMMU_HWPT_FAULT_ID_VALID | (1 << 31)) >>> 0,
        IOMMU_HWPT_DATA_SELFTEST,
        data,
        data.length,
      )
      const iopf_hwpt_id = testCmdHwptAllocIopf(
        dev_id,
        viommu_id,
        fault_id,
        IOMMU_HWPT_FAULT_ID_VALID,
        IOMMU_HWPT_DATA_SELFTEST,
        data,
        data.length,
      )
      // Must allocate vdevice before attaching to a nested hwpt
      testErrMockDomainReplace(ENOENT, self.stdev_id, iopf_hwpt_id)
      testCmdVdeviceAlloc(viommu_id, dev_id, 0x99)
      testCmdMockDomainReplace(self.stdev_id, iopf_hwpt_id)
      expectErrno(EBUSY, () => _testIoctlDestroy(self.fd, iopf_hwpt_id))
      testCmdTriggerIopf(dev_id, fault_fd)

      testCmdMockDomainReplace(self.stdev_id, self.ioas_id)
      testIoctlDestroy(iopf_hwpt_id)
      fdClose(proc, fault_fd)
      testIoctlDestroy(fault_id)
    })

    TEST_F('viommu_alloc_with_data', (self) => {
      const data = encodeStruct(IOMMU_VIOMMU_SELFTEST_LAYOUT, { in_data: 0xbeef })
      if (!self.device_id) SKIP('Skipping test for variant no_viommu')
      self.viommu_id = testCmdViommuAlloc(
        self.device_id,
        self.hwpt_id,
        IOMMU_VIOMMU_TYPE_SELFTEST,
        data,
        data.length,
      )
      const v = new DataView(data.buffer)
      const out_data = v.getUint32(4, true)
      const out_mmap_offset = v.getBigUint64(8, true)
      const out_mmap_length = Number(v.getBigUint64(16, true))
      expect(out_data).toBe(0xbeef)

      // Negative mmap tests -- offset and length cannot be changed
      testErrMmap(ENXIO, out_mmap_length, out_mmap_offset + BigInt(PAGE_SIZE))
      testErrMmap(ENXIO, out_mmap_length, out_mmap_offset + BigInt(PAGE_SIZE * 2))
      testErrMmap(ENXIO, out_mmap_length / 2, out_mmap_offset)
      testErrMmap(ENXIO, out_mmap_length * 2, out_mmap_offset)

      // Now do a correct mmap for a loopback test
      const test = self.fd.mmap(
        null,
        out_mmap_length,
        PROT_READ | PROT_WRITE,
        MAP_SHARED,
        out_mmap_offset,
      )
      expect(new DataView(proc.read(test, 4).buffer).getUint32(0, true)).toBe(0xbeef)

      // The owner of the mmap region should be blocked
      expectErrno(EBUSY, () => _testIoctlDestroy(self.fd, self.viommu_id))
      proc.munmap(test, out_mmap_length)
    })

    TEST_F('vdevice_alloc', (self) => {
      const viommu_id = self.viommu_id
      const dev_id = self.device_id
      const prev_seq: Ref<number> = { value: -1 }
      const hdr_size = 8 // sizeof(struct iommufd_vevent_header)
      const vbuf = proc.mmap(64)
      if (dev_id) {
        // Must allocate vdevice before attaching to a nested hwpt
        testErrMockDomainReplace(ENOENT, self.stdev_id, self.nested_hwpt_id)

        // Test depth lower and upper bounds (mirrors kernel cap)
        const VEVENTQ_MAX_DEPTH = 1 << 19
        testErrVeventqAlloc(EINVAL, viommu_id, IOMMU_VEVENTQ_TYPE_SELFTEST, 0)
        testErrVeventqAlloc(EINVAL, viommu_id, IOMMU_VEVENTQ_TYPE_SELFTEST, VEVENTQ_MAX_DEPTH + 1)
        let q = testCmdVeventqAlloc(viommu_id, IOMMU_VEVENTQ_TYPE_SELFTEST, VEVENTQ_MAX_DEPTH)
        fdClose(proc, q.veventq_fd)
        testIoctlDestroy(q.veventq_id)

        // Allocate a vEVENTQ with veventq_depth=2
        q = testCmdVeventqAlloc(viommu_id, IOMMU_VEVENTQ_TYPE_SELFTEST, 2)
        testErrVeventqAlloc(EEXIST, viommu_id, IOMMU_VEVENTQ_TYPE_SELFTEST, 2)

        // Invalid read counts on an empty vEVENTQ
        expectErrno(EINVAL, () => fdRead(proc, q.veventq_fd, vbuf, 0))
        expectErrno(EINVAL, () => fdRead(proc, q.veventq_fd, vbuf, hdr_size - 1))

        // Set vdev_id to 0x99, unset it, and set to 0x88
        let vdev_id = testCmdVdeviceAlloc(viommu_id, dev_id, 0x99)
        testCmdMockDomainReplace(self.stdev_id, self.nested_hwpt_id)
        testCmdTriggerVevents(dev_id, 1)

        // Invalid read counts on a non-empty vEVENTQ
        expectErrno(EINVAL, () => fdRead(proc, q.veventq_fd, vbuf, 0))
        // header fits but the event's payload doesn't
        expectErrno(EINVAL, () => fdRead(proc, q.veventq_fd, vbuf, hdr_size))

        testCmdReadVevents(q.veventq_fd, 1, 0x99, prev_seq)
        testErrVdeviceAlloc(EEXIST, viommu_id, dev_id, 0x99)
        testCmdMockDomainReplace(self.stdev_id, self.ioas_id)
        testIoctlDestroy(vdev_id)

        // Try again with 0x88
        vdev_id = testCmdVdeviceAlloc(viommu_id, dev_id, 0x88)
        testCmdMockDomainReplace(self.stdev_id, self.nested_hwpt_id)
        // Trigger an overflow with three events
        testCmdTriggerVevents(dev_id, 3)
        testErrReadVevents(EOVERFLOW, q.veventq_fd, 3, 0x88, prev_seq)
        // Overflow must be gone after the previous reads
        testCmdTriggerVevents(dev_id, 1)
        testCmdReadVevents(q.veventq_fd, 1, 0x88, prev_seq)
        fdClose(proc, q.veventq_fd)
        testCmdMockDomainReplace(self.stdev_id, self.ioas_id)
        testIoctlDestroy(vdev_id)
        testIoctlDestroy(q.veventq_id)
      } else {
        testErrVdeviceAlloc(ENOENT, viommu_id, dev_id, 0x99)
      }
    })

    TEST_F('vdevice_cache', (self) => {
      const viommu_id = self.viommu_id
      const dev_id = self.device_id
      const num_inv: Ref<number> = { value: 0 }
      if (!dev_id) SKIP('Skipping test for variant no_viommu')
      const vdev_id = testCmdVdeviceAlloc(viommu_id, dev_id, 0x99)
      testCmdDevCheckCacheAll(dev_id, IOMMU_TEST_DEV_CACHE_DEFAULT)
      const T = IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST
      const D = IOMMU_TEST_DEV_CACHE_DEFAULT
      const req = { flags: 0, vdev_id: 0, cache_id: 0 }
      const req1 = { flags: 0, vdev_id: 0, cache_id: 0 }

      // Check data_type by passing zero-length array
      num_inv.value = 0
      testCmdViommuInvalidate(viommu_id, invReqs([req]), 12, num_inv)
      expect(num_inv.value).toBe(0)

      // Negative test: Invalid data_type
      num_inv.value = 1
      testErrViommuInvalidate(
        EINVAL,
        viommu_id,
        invReqs([req]),
        IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST_INVALID,
        12,
        num_inv,
      )
      expect(num_inv.value).toBe(0)

      // Negative test: structure size sanity
      num_inv.value = 1
      testErrViommuInvalidate(EINVAL, viommu_id, invReqs([req]), T, 12 + 1, num_inv)
      expect(num_inv.value).toBe(0)
      num_inv.value = 1
      testErrViommuInvalidate(EINVAL, viommu_id, invReqs([req]), T, 1, num_inv)
      expect(num_inv.value).toBe(0)

      // Negative test: invalid flag is passed
      num_inv.value = 1
      Object.assign(req, { flags: 0xffffffff, vdev_id: 0x99 })
      testErrViommuInvalidate(EOPNOTSUPP, viommu_id, invReqs([req]), T, 12, num_inv)
      expect(num_inv.value).toBe(0)

      // Negative test: invalid data_uptr when array is not empty
      num_inv.value = 1
      Object.assign(req, { flags: 0, vdev_id: 0x99 })
      testErrViommuInvalidate(EINVAL, viommu_id, null, T, 12, num_inv)
      expect(num_inv.value).toBe(0)

      // Negative test: invalid entry_len when array is not empty
      num_inv.value = 1
      testErrViommuInvalidate(EINVAL, viommu_id, invReqs([req]), T, 0, num_inv)
      expect(num_inv.value).toBe(0)

      // Negative test: invalid cache_id
      num_inv.value = 1
      Object.assign(req, { flags: 0, vdev_id: 0x99, cache_id: MOCK_DEV_CACHE_ID_MAX + 1 })
      testErrViommuInvalidate(EINVAL, viommu_id, invReqs([req]), T, 12, num_inv)
      expect(num_inv.value).toBe(0)

      // Negative test: invalid vdev_id
      num_inv.value = 1
      Object.assign(req, { flags: 0, vdev_id: 0x9, cache_id: 0 })
      testErrViommuInvalidate(EINVAL, viommu_id, invReqs([req]), T, 12, num_inv)
      expect(num_inv.value).toBe(0)

      // Invalidate the 1st cache entry but fail the 2nd request due to invalid flags
      num_inv.value = 2
      Object.assign(req, { flags: 0, vdev_id: 0x99, cache_id: 0 })
      Object.assign(req1, { flags: 0xffffffff, vdev_id: 0x99, cache_id: 1 })
      testErrViommuInvalidate(EOPNOTSUPP, viommu_id, invReqs([req, req1]), T, 12, num_inv)
      expect(num_inv.value).toBe(1)
      for (const [i, c] of [0, D, D, D].entries()) testCmdDevCheckCache(dev_id, i, c)

      // Invalidate the 1st cache entry but fail the 2nd request due to invalid cache_id
      num_inv.value = 2
      Object.assign(req, { flags: 0, vdev_id: 0x99, cache_id: 0 })
      Object.assign(req1, { flags: 0, vdev_id: 0x99, cache_id: MOCK_DEV_CACHE_ID_MAX + 1 })
      testErrViommuInvalidate(EINVAL, viommu_id, invReqs([req, req1]), T, 12, num_inv)
      expect(num_inv.value).toBe(1)
      for (const [i, c] of [0, D, D, D].entries()) testCmdDevCheckCache(dev_id, i, c)

      // Invalidate the 2nd cache entry and verify
      num_inv.value = 1
      Object.assign(req, { flags: 0, vdev_id: 0x99, cache_id: 1 })
      testCmdViommuInvalidate(viommu_id, invReqs([req]), 12, num_inv)
      expect(num_inv.value).toBe(1)
      for (const [i, c] of [0, 0, D, D].entries()) testCmdDevCheckCache(dev_id, i, c)

      // Invalidate the 3rd and 4th cache entries and verify
      num_inv.value = 2
      Object.assign(req, { flags: 0, vdev_id: 0x99, cache_id: 2 })
      Object.assign(req1, { flags: 0, vdev_id: 0x99, cache_id: 3 })
      testCmdViommuInvalidate(viommu_id, invReqs([req, req1]), 12, num_inv)
      expect(num_inv.value).toBe(2)
      testCmdDevCheckCacheAll(dev_id, 0)

      // Invalidate all cache entries for nested_dev_id[1] and verify
      num_inv.value = 1
      Object.assign(req, { vdev_id: 0x99, flags: IOMMU_TEST_INVALIDATE_FLAG_ALL })
      testCmdViommuInvalidate(viommu_id, invReqs([req]), 12, num_inv)
      expect(num_inv.value).toBe(1)
      testCmdDevCheckCacheAll(dev_id, 0)
      testIoctlDestroy(vdev_id)
    })

    TEST_F('hw_queue', (self) => {
      let iova: bigint = BigInt(MOCK_APERTURE_START)
      const viommu_id = self.viommu_id
      const T = IOMMU_HW_QUEUE_TYPE_SELFTEST
      if (!viommu_id) SKIP('Skipping test for variant no_viommu')

      // Fail IOMMU_HW_QUEUE_TYPE_DEFAULT
      testErrHwQueueAlloc(EOPNOTSUPP, viommu_id, IOMMU_HW_QUEUE_TYPE_DEFAULT, 0, iova, PAGE_SIZE)
      // Fail queue addr and length
      testErrHwQueueAlloc(EINVAL, viommu_id, T, 0, iova, 0)
      testErrHwQueueAlloc(EOVERFLOW, viommu_id, T, 0, 0xffff_ffff_ffff_ffffn, PAGE_SIZE)
      // Fail missing iova
      testErrHwQueueAlloc(ENOENT, viommu_id, T, 0, iova, PAGE_SIZE)

      // Map iova
      iova = testIoctlIoasMap(buffer, PAGE_SIZE)
      const iova2 = testIoctlIoasMap(buffer + PAGE_SIZE, PAGE_SIZE)

      // Fail index=1 and =MAX; must start from index=0
      testErrHwQueueAlloc(EIO, viommu_id, T, 1, iova, PAGE_SIZE)
      testErrHwQueueAlloc(EINVAL, viommu_id, T, IOMMU_TEST_HW_QUEUE_MAX, iova, PAGE_SIZE)

      // Allocate index=0, declare ownership of the iova
      const hw_queue_id0 = testCmdHwQueueAlloc(viommu_id, T, 0, iova, PAGE_SIZE)
      // Fail duplicated index
      testErrHwQueueAlloc(EEXIST, viommu_id, T, 0, iova, PAGE_SIZE)
      // Fail unmap, due to iova ownership
      testErrIoctlIoasUnmap(EBUSY, iova, PAGE_SIZE)
      // The 2nd page is not pinned, so it can be unmmap
      testIoctlIoasUnmap(iova2, PAGE_SIZE)

      // Allocate index=1, with an unaligned case
      const hw_queue_id1 = testCmdHwQueueAlloc(
        viommu_id,
        T,
        1,
        iova + BigInt(PAGE_SIZE / 2),
        PAGE_SIZE / 2,
      )
      // Fail to destroy, due to dependency
      expectErrno(EBUSY, () => _testIoctlDestroy(self.fd, hw_queue_id0))

      // Destroy in descending order
      testIoctlDestroy(hw_queue_id1)
      testIoctlDestroy(hw_queue_id0)
      // Now it can unmap the first page
      testIoctlIoasUnmap(iova, PAGE_SIZE)
    })

    TEST_F('vdevice_tombstone', (self) => {
      const viommu_id = self.viommu_id
      const dev_id = self.device_id
      if (!dev_id) SKIP('Skipping test for variant no_viommu')
      const vdev_id = testCmdVdeviceAlloc(viommu_id, dev_id, 0x99)
      testIoctlDestroy(self.stdev_id)
      expectErrno(ENOENT, () => _testIoctlDestroy(self.fd, vdev_id))
    })
  },
)

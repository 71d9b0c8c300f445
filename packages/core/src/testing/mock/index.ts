/**
 * @iommu/core/testing/mock — the selftest's mock IOMMU driver alone (what
 * `drivers/iommu/iommufd/selftest.c` provides), for run-time users such as iommufd's test
 * mode: no conformance kit, no test framework.
 *
 * @module
 */

export {
  IOMMU_HW_INFO_SELFTEST_REGVAL,
  IOMMU_HW_INFO_TYPE_SELFTEST,
  IOMMU_HW_QUEUE_TYPE_SELFTEST,
  IOMMU_HWPT_DATA_SELFTEST,
  IOMMU_HWPT_INVALIDATE_DATA_SELFTEST,
  IOMMU_TEST_DEV_CACHE_DEFAULT,
  IOMMU_TEST_HW_QUEUE_MAX,
  IOMMU_TEST_INVALIDATE_FLAG_ALL,
  IOMMU_TEST_PASID_RESERVED,
  IOMMU_VEVENTQ_TYPE_SELFTEST,
  IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST,
  IOMMU_VIOMMU_TYPE_SELFTEST,
  MOCK_APERTURE_LAST,
  MOCK_APERTURE_START,
  MOCK_DEV_CACHE_ID_MAX,
  MOCK_DEV_CACHE_NUM,
  MOCK_HUGE_PAGE_SIZE,
  MOCK_NESTED_DOMAIN_IOTLB_ID_MAX,
  MOCK_NESTED_DOMAIN_IOTLB_NUM,
  MOCK_PAGE_SIZE,
  MOCK_PASID_WIDTH,
  MOCK_S1_ADDR_MASK,
  MOCK_S1_VALID,
  MOCK_S1_WRITE,
  type MockDev,
  MockDomain,
  type MockFaultRecord,
  type MockIommuOptions,
  MockIommuUnit,
  MockNestedDomain,
  MockPagetableType,
  type MockViommu,
  mockIommu,
  mockMarkDirty,
} from '../mock-iommu.ts'

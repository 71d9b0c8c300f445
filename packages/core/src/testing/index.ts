/**
 * @iommu/core/testing — the mock IOMMU driver and the driver conformance kit.
 *
 * @module
 */

export {
  DOCUMENTED_ERRNO,
  type DriverConformanceOptions,
  describeDriverConformance,
} from './conformance.ts'
export {
  IOMMU_HW_INFO_SELFTEST_REGVAL,
  IOMMU_HW_INFO_TYPE_SELFTEST,
  IOMMU_HWPT_DATA_SELFTEST,
  IOMMU_HWPT_INVALIDATE_DATA_SELFTEST,
  IOMMU_TEST_INVALIDATE_FLAG_ALL,
  IOMMU_TEST_PASID_RESERVED,
  MOCK_APERTURE_LAST,
  MOCK_APERTURE_START,
  MOCK_HUGE_PAGE_SIZE,
  MOCK_NESTED_DOMAIN_IOTLB_ID_MAX,
  MOCK_NESTED_DOMAIN_IOTLB_NUM,
  MOCK_PAGE_SIZE,
  MOCK_PASID_WIDTH,
  MockDomain,
  type MockIommuOptions,
  MockIommuUnit,
  MockNestedDomain,
  MockPagetableType,
  mockIommu,
  mockMarkDirty,
} from './mock-iommu.ts'

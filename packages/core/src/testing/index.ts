/**
 * @iommu/core/testing — the mock IOMMU driver (also alone: `@iommu/core/testing/mock`) and
 * the driver conformance kit, which needs vitest (an optional peer). Run-time code that
 * only needs the mock imports `@iommu/core/testing/mock`, which loads no test framework.
 *
 * @module
 */

export {
  DOCUMENTED_ERRNO,
  type DriverConformanceCase,
  type DriverConformanceOptions,
  describeDriverConformance,
  driverConformanceCases,
} from './conformance.ts'
export * from './mock/index.ts'

/**
 * @iommu/core/testing — the mock IOMMU driver (also alone: `@iommu/core/testing/mock`) and
 * the driver conformance kit. Importing it loads no test framework: the kit finds vitest
 * when a suite or a case is defined.
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

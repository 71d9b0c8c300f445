/**
 * @iommu/core/testing — the mock IOMMU driver (also alone: `@iommu/core/testing/mock`), the
 * driver conformance kit, which needs vitest (an optional peer), and a seeded DMA churn
 * for comparing two configurations of a hardware model (`dmaChurn`). Run-time code that
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
export { type DmaChurnOptions, type DmaChurnResult, dmaChurn } from './dma-churn.ts'
export * from './mock/index.ts'

/**
 * @iommu/io-pgtable/testing — the format conformance kit (vitest + fast-check, optional
 * peers) and helpers for page-table tests.
 *
 * @module
 */

export {
  conflictErrno,
  describeFormatConformance,
  type FormatConfigCase,
  type FormatConformanceOptions,
} from './conformance.ts'
export {
  countLeaves,
  errnoOf,
  leafTotal,
  ReferenceMap,
  type RefMapping,
  type TableHarness,
  tableHarness,
} from './helpers.ts'
export { PROPERTY_SEED, type PropertyOptions, propertyCase } from './property.ts'

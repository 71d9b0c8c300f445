/**
 * @iommu/io-pgtable — bit-exact IOMMU page-table formats (ARM LPAE, AMD v1, x86-64, VT-d
 * second stage) over one set of generic algorithms (map, unmap, iova-to-phys,
 * read-and-clear-dirty, split, merge), a hardware walker, and the domain ops a driver gets
 * from them.
 *
 * @module
 */

export {
  type PageTableDomainOps,
  pageTableDirtyOps,
  pageTableDomainOps,
  type TableOf,
} from './domain-ops.ts'
export {
  Access,
  type Algorithm,
  type AnyPageTableFormat,
  type Attrs,
  definePageTableFormat,
  EntryType,
  type FormatConfig,
  type FormatParams,
  HW_RESERVED,
  HwAd,
  type PageTableFormat,
  type PageTableFormatSpec,
  WalkFault,
} from './format.ts'
export { AMDV1_PTE, type AmdV1Config, type AmdV1Params, amdv1 } from './formats/amdv1.ts'
export {
  ARM_LPAE_MAIR,
  ARM_LPAE_PTE,
  type ArmLpaeConfig,
  type ArmLpaeParams,
  armLpae,
  IoPgtableQuirk,
} from './formats/arm-lpae.ts'
export { VTDSS_PTE, type VtdSsConfig, type VtdSsParams, vtdss } from './formats/vtdss.ts'
export { X86_64_PTE, type X86_64Config, x86_64 } from './formats/x86-64.ts'
export { type AnyPageTable, PageTable, type PageTableRoot } from './page-table.ts'
export { type PathRecorder, PathRecords } from './path-records.ts'
export type { PageTableHooks, PageTableOptions } from './table.ts'
export {
  type AnyPageTableWalker,
  PATH_RECORD_INTS,
  PageTableWalker,
  type TableTranslator,
  type WalkResult,
} from './walk.ts'

/**
 * @iommu/sim — `iommu-sim`: live-migration scenarios over the whole IOMMU model.
 *
 * @module
 */

export { migrationChart, wantsLogScale } from './chart.ts'
export {
  EXIT,
  type HostInfo,
  hostInfo,
  MAX_ROUND0_WRITES,
  main,
  OPTIONS,
  optionsFromArgs,
  type ParsedArgs,
  parseRate,
  parseSize,
  UsageError,
} from './cli.ts'
export {
  type Breakage,
  CONTIGUOUS_IOPTE_MODES,
  defaultOptions,
  estimateRun,
  GUEST_IOVA,
  IOMMU_MODELS,
  IOPTE_MODES,
  type IommuModel,
  type IopteMode,
  type IovaRange,
  isIommuModel,
  layoutDimms,
  type MigrateOptions,
  migrate,
  migration,
  type RoundStep,
  type RunEstimate,
} from './migrate.ts'
export {
  type DirtyHazardSummary,
  formatBytes,
  formatRounds,
  formatTotals,
  type MigrationConfig,
  type MigrationReport,
  type RoundReport,
  summarizeHazards,
  toJson,
  toSvg,
  verified,
} from './report.ts'
export {
  type DmaWrite,
  type ExcludedRanges,
  Rng,
  stampBytes,
  Workload,
  type WorkloadConfig,
} from './workload.ts'

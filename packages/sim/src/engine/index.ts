/**
 * @iommu/sim/engine — the migration engine without the command line: `migrate`, the
 * round-by-round `migration` generator, the reports and the workload. Browser-safe (the
 * explorer runs it); `@iommu/sim` adds the CLI, which needs Node.
 *
 * @module
 */

export { migrationChart, wantsLogScale } from '../chart.ts'
export {
  type Breakage,
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
} from '../migrate.ts'
export {
  formatBytes,
  formatRounds,
  formatTotals,
  type MigrationConfig,
  type MigrationReport,
  type RoundReport,
  toJson,
  toSvg,
  verified,
} from '../report.ts'
export {
  type DmaWrite,
  type ExcludedRanges,
  Rng,
  stampBytes,
  Workload,
  type WorkloadConfig,
} from '../workload.ts'

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
  IOMMU_MODELS,
  type IommuModel,
  type IopteMode,
  isIommuModel,
  type MigrateOptions,
  migrate,
  migration,
  type RoundStep,
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

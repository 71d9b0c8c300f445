/**
 * @iommu/sim — `iommu-sim`: live-migration scenarios over the whole IOMMU model.
 *
 * @module
 */

export { migrationChart, wantsLogScale } from './chart.ts'
export { main, optionsFromArgs, parseRate, parseSize } from './cli.ts'
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
} from './migrate.ts'
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
} from './report.ts'
export {
  type DmaWrite,
  type ExcludedRanges,
  Rng,
  stampBytes,
  Workload,
  type WorkloadConfig,
} from './workload.ts'

/**
 * @iommu/sim/engine — the migration engine without the command line: `migrate`, the
 * round-by-round `migration` generator, the reports and the workload. Browser-safe (the
 * explorer runs it); `@iommu/sim` adds the CLI, which needs Node.
 *
 * @module
 */

export {
  type ComparisonFigure,
  comparisonChart,
  hazardPhrases,
  migrationChart,
  wantsLogScale,
} from '../chart.ts'
export {
  BREAKAGES,
  type Breakage,
  CONTIGUOUS_IOPTE_MODES,
  type DeviceConfig,
  type DeviceWorkload,
  defaultOptions,
  defaultWorkload,
  devicesOf,
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
} from '../report.ts'
export {
  parseScenario,
  SCENARIO_HAZARDS,
  SCENARIO_VERSION,
  Scenario,
  ScenarioError,
  type ScenarioInput,
  scenarioJsonSchema,
  scenarioOptions,
} from '../scenario.ts'
export {
  describeOptions,
  formatRunTable,
  parseVary,
  type RunRow,
  runRow,
  runsChart,
  SWEEP_PARAMS,
  type SweepPoint,
  sweepGrid,
  toCsv,
  type Vary,
} from '../sweep.ts'
export {
  buildVendor,
  type HwStats,
  SMMUV3_DIRTY_CLEAR_CAUSE,
  type StaleSummary,
  type StaleUse,
  summarizeStale,
  VENDORS,
  type Vendor,
  type VendorBuild,
  vendorOfUnit,
} from '../vendors.ts'
export { GUEST_LINEAR_IOVA, GUEST_RING_IOVA, type ViommuReport } from '../viommu.ts'
export {
  type DmaWrite,
  type ExcludedRanges,
  Rng,
  stampBytes,
  Workload,
  type WorkloadConfig,
} from '../workload.ts'

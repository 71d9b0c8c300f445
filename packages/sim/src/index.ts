/**
 * @iommu/sim — `iommu-sim`: live-migration scenarios over the whole IOMMU model: the
 * engine (`@iommu/sim/engine`, browser-safe) and the command line, which needs Node.
 *
 * @module
 */

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
export * from './engine/index.ts'

/**
 * @iommu/driver-amd — the AMD-Vi hardware model (`hw/`) and the Linux AMD IOMMU driver on
 * top of it, as a plugin for the IOMMU model.
 *
 * @module
 */

export {
  AmdDomain,
  type AmdEventRecord,
  type AmdOptions,
  type AmdTestHooks,
  amd,
  amdEventLog,
  amdTestHooks,
  amdUnitOf,
  HT_RANGE_END,
  HT_RANGE_START,
  MSI_RANGE_END,
  MSI_RANGE_START,
} from './driver.ts'
export {
  type AmdEvent,
  type AmdHwStats,
  AmdIommuHw,
  type AmdIommuHwConfig,
  DEFAULT_EFR,
  decodeEvent,
  type HostTableWalker,
  HostWalkFault,
  HostWalkResult,
  type StaleUse,
  WalkAd,
} from './hw/iommu.ts'
export { Iotlb, type IotlbStats, NO_PASID } from './hw/iotlb.ts'
export {
  CMD_INV_ALL_PAGES_ADDRESS,
  Cmd,
  CmdFlag,
  Control,
  Dte,
  decodeInvRange,
  Efr,
  Efr2,
  Event,
  EventFlag,
  Mmio,
  PageMode,
  Status,
} from './hw/regs.ts'

/**
 * The toy IOMMU: its hardware model and its Linux-style driver, as a plugin for the
 * IOMMU model (`@iommu/core`).
 *
 * @module
 */

export { ToyDomain, type ToyOptions, toy } from './driver.ts'
export {
  CONTROL_EN,
  DT_ENTRIES,
  Dte,
  DteMode,
  TOY_PT_CONFIG,
  ToyIommuHw,
  ToyReg,
} from './hw/toy-iommu.ts'

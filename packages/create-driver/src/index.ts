/**
 * @iommu/create-driver — scaffold an IOMMU driver plugin package (`npm init @iommu/driver`).
 *
 * @module
 */

export { main } from './cli.ts'
export {
  type CreateDriverOptions,
  createDriverPackage,
  isPackageName,
  TEMPLATE_DIR,
} from './create.ts'

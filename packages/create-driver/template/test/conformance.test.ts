// The driver conformance kit of @iommu/core: the contract every IOMMU driver plugin meets
// (capabilities tied to ops, iommufd can bind it, attach/replace/detach, map → DMA →
// unmap with the data checked, blocked and identity domains, dirty tracking, errno).
// #region kit
import { describeDriverConformance } from '@iommu/core/testing'
import { toy } from '../src/index.ts'

describeDriverConformance(() => toy())
// #endregion kit

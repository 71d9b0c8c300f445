// The format conformance kit of @iommu/io-pgtable. The toy uses an existing format (VT-d
// second stage); a driver that brings its own format (`definePageTableFormat`) runs the
// kit on that format here instead, with the configurations its driver uses.
// #region format-kit
import { vtdss } from '@iommu/io-pgtable'
import { describeFormatConformance } from '@iommu/io-pgtable/testing'
import { TOY_PT_CONFIG } from '../src/index.ts'

describeFormatConformance(vtdss, [{ name: 'the toy driver configuration', cfg: TOY_PT_CONFIG }], {
  property: { runs: 10, commands: 20 },
})
// #endregion format-kit

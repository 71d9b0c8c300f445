import { describeDriverConformance } from '@iommu/core/testing'
import { expect } from 'vitest'
import { intel, VtdIommuHw } from '../src/index.ts'

describeDriverConformance(() => intel(), {
  afterEach(machine) {
    for (const unit of machine.units) {
      if (unit instanceof VtdIommuHw) {
        expect(unit.staleUses).toEqual([])
        expect(unit.diagnostics).toEqual([])
      }
    }
  },
})

import { describeDriverConformance } from '@iommu/core/testing'
import { expect } from 'vitest'
import { AmdIommuHw, amd } from '../src/index.ts'

describeDriverConformance(() => amd(), {
  afterEach(machine) {
    for (const unit of machine.units) {
      if (unit instanceof AmdIommuHw) expect(unit.staleUses).toEqual([])
    }
  },
})

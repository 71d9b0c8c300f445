import { describeDriverConformance } from '@iommu/core/testing'
import { expect } from 'vitest'
import { AmdIommuHw, amd, DEFAULT_EFR, Efr } from '../src/index.ts'

// Dirty tracking is the unit's (EFR.HDSup): the kit's refusal case puts its device behind a
// unit without it.
describeDriverConformance(() => amd(), {
  noDirtyUnitConfig: { efr: DEFAULT_EFR & ~Efr.HDSUP },
  afterEach(machine) {
    for (const unit of machine.units) {
      if (unit instanceof AmdIommuHw) expect(unit.staleUses).toEqual([])
    }
  },
})

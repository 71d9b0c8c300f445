import { describeDriverConformance } from '@iommu/core/testing'
import { expect } from 'vitest'
import { DEFAULT_CAP, DEFAULT_ECAP, Ecap, intel, VtdIommuHw } from '../src/index.ts'

// Dirty tracking is the unit's (ECAP.SSADS with SMPWC): the kit's refusal case puts its
// device behind a unit without SSADS.
describeDriverConformance(() => intel(), {
  noDirtyUnitConfig: { cap: DEFAULT_CAP, ecap: DEFAULT_ECAP & ~Ecap.SSADS },
  afterEach(machine) {
    for (const unit of machine.units) {
      if (unit instanceof VtdIommuHw) {
        expect(unit.staleUses).toEqual([])
        expect(unit.diagnostics).toEqual([])
      }
    }
  },
})

// The driver kit on variants of the template's toy driver: the toy passes every case; a
// toy whose blocked domain leaves the device-table entry translating fails exactly the
// blocked-domain case (before that case existed it passed the whole kit).
import { DomainType, type Driver, defineDriver, IommuDomain } from '@iommu/core'
import { driverConformanceCases } from '@iommu/core/testing'
import { describe, expect, it } from 'vitest'
import { toy } from '../template/src/index.ts'

function failing(make: () => Driver): string[] {
  const out: string[] = []
  for (const c of driverConformanceCases(make)) {
    try {
      c.run()
    } catch (e) {
      out.push(`${c.name}: ${(e as Error).message.split('\n')[0]}`)
    }
  }
  return out
}

describe('the driver kit on the template toy', () => {
  it('passes the toy as generated', () => {
    expect(failing(() => toy())).toEqual([])
  })

  it('fails a toy whose blocked domain leaves the hardware entry valid', () => {
    const leaky = () => {
      const base = toy({ name: 'leaky-toy' })
      const blockedDomain = new IommuDomain({
        type: DomainType.BLOCKED,
        ops: { attachDev() {} },
      })
      return defineDriver({ ...base, ops: { ...base.ops, blockedDomain } })
    }
    const f = failing(leaky)
    expect(f).toHaveLength(1)
    expect(f[0]).toMatch(
      /^faults every DMA on the blocked domain, whatever was attached before: leaky-toy: DMA went through/,
    )
  })
})

import { describe, expect, it } from 'vitest'
import { HwptAllocFlags, IommuCap } from '../constants.ts'
import { IommuDomain } from '../domain.ts'
import { type Driver, defineDriver } from '../driver.ts'
import { IommuError } from '../errno.ts'
import { driverConformanceCases } from './conformance.ts'
import { mockIommu } from './mock-iommu.ts'

/** Run every case of the kit; the titles and messages of the ones that fail. */
function failures(make: () => Driver, options = {}): { name: string; message: string }[] {
  const out: { name: string; message: string }[] = []
  for (const c of driverConformanceCases(make, options)) {
    try {
      c.run()
    } catch (e) {
      out.push({ name: c.name, message: String((e as Error).message) })
    }
  }
  return out
}

/** The mock driver with some of its ops replaced (what a buggy plugin would ship). */
function patchedMock(name: string, patch: (base: Driver) => Partial<Driver['ops']>): Driver {
  const base = mockIommu({ name })
  return defineDriver({ ...base, ops: { ...base.ops, ...patch(base) } })
}

/** The PASID op of a static domain of the mock (it has one). */
function pasidOp(d: IommuDomain): NonNullable<IommuDomain['ops']['setDevPasid']> {
  const op = d.ops.setDevPasid
  if (op === undefined) throw new Error('the mock domain has no setDevPasid')
  return op
}

/** Its blocked domain "attaches" without touching the hardware: the old entry stays valid. */
const leakyBlocked = () =>
  patchedMock('leaky-blocked', (base) => {
    const real = base.ops.blockedDomain as IommuDomain
    const leaky = new IommuDomain({
      type: real.type,
      ops: { attachDev() {}, setDevPasid: pasidOp(real) },
    })
    return { blockedDomain: leaky }
  })

/** Its identity domain programs a blocking entry: nothing passes through. */
const blockingIdentity = () =>
  patchedMock('blocking-identity', (base) => {
    const blocked = base.ops.blockedDomain as IommuDomain
    const real = base.ops.identityDomain as IommuDomain
    const wrong = new IommuDomain({
      type: real.type,
      ops: {
        attachDev: (_d, dev, old) => blocked.ops.attachDev(blocked, dev, old),
        setDevPasid: pasidOp(real),
      },
    })
    return { identityDomain: wrong }
  })

/** It never reports IOMMU_CAP_CACHE_COHERENCY, so iommufd cannot bind its devices. */
const incoherent = () =>
  patchedMock('incoherent', (base) => ({
    capable: (dev, cap) =>
      cap === IommuCap.CACHE_COHERENCY ? false : (base.ops.capable?.(dev, cap) ?? false),
  }))

/** It claims dirty tracking for a device whose path cannot track, and attaches it anyway. */
const dirtyEverywhere = () =>
  patchedMock('dirty-everywhere', (base) => ({
    capable: (dev, cap) =>
      cap === IommuCap.DIRTY_TRACKING ? true : (base.ops.capable?.(dev, cap) ?? false),
  }))

/** It refuses DIRTY_TRACKING on an incapable device with EINVAL instead of EOPNOTSUPP. */
const dirtyEinval = () =>
  patchedMock('dirty-einval', (base) => ({
    domainAllocPagingFlags(dev, flags, data) {
      if (flags & HwptAllocFlags.DIRTY_TRACKING && !dev.dirtyTracking) {
        throw new IommuError('EINVAL', 'no dirty tracking')
      }
      return (
        base.ops.domainAllocPagingFlags as NonNullable<Driver['ops']['domainAllocPagingFlags']>
      )(dev, flags, data)
    },
  }))

describe('the driver conformance kit catches broken drivers', () => {
  it('passes the mock driver on every case', () => {
    expect(failures(() => mockIommu())).toEqual([])
  })

  it('fails a driver whose blocked domain leaves the hardware entry valid', () => {
    const f = failures(leakyBlocked)
    expect(f.map((x) => x.name)).toEqual([
      'faults every DMA on the blocked domain, whatever was attached before',
    ])
    expect(f[0]?.message).toMatch(/DMA went through after the group moved to its blocking domain/)
  })

  it('fails a driver whose identity domain does not pass DMA through', () => {
    const f = failures(blockingIdentity)
    expect(f.map((x) => x.name)).toEqual([
      'passes DMA through on the identity domain (IOVA == PA), both ways',
    ])
    expect(f[0]?.message).toMatch(/identity domain must reach PA == IOVA/)
  })

  it('fails a driver that reports dirty tracking where the hardware cannot track', () => {
    expect(failures(dirtyEverywhere).map((x) => x.name)).toEqual([
      'refuses a dirty-tracking domain on a device without dirty tracking (EINVAL)',
    ])
  })

  it('fails a driver that refuses DIRTY_TRACKING with another errno than EOPNOTSUPP', () => {
    const f = failures(dirtyEinval)
    expect(f.map((x) => x.name)).toEqual([
      'refuses a dirty-tracking domain on a device without dirty tracking (EINVAL)',
    ])
    expect(f[0]?.message).toMatch(/EINVAL.*EOPNOTSUPP|EOPNOTSUPP.*EINVAL/s)
  })

  it('fails a driver iommufd cannot bind, saying why', () => {
    const f = failures(incoherent)
    expect(f.map((x) => x.name)).toEqual([
      'can be bound by iommufd: capable(IOMMU_CAP_CACHE_COHERENCY) is true',
    ])
    expect(f[0]?.message).toMatch(/IommuCap\.CACHE_COHERENCY.*iommufd refuses to bind/s)
    // A unit meant to be refused by iommufd opts out of the check.
    expect(failures(incoherent, { iommufd: false })).toEqual([])
  })
})

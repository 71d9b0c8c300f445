import { describe, expect, it } from 'vitest'
import { IommuDomain } from './domain.ts'
import { type Driver, DriverRegistry, defineDriver, validateDriver } from './driver.ts'
import { IommuError } from './errno.ts'
import { createMachine } from './machine/machine.ts'
import { mockIommu } from './testing/mock-iommu.ts'

const NO_CAPS = {
  dirtyTracking: false,
  nesting: false,
  pasid: false,
  enforceCacheCoherency: false,
  deferredFlush: false,
  iopf: false,
} as const

/** A minimal plugin as an untyped JavaScript author might write it. */
function plainSpec(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    name: 'plain',
    apiVersion: 1,
    capabilities: { ...NO_CAPS },
    createUnit() {
      throw new Error('not used')
    },
    ops: { probeDevice() {}, deviceGroup() {} },
    domainOps: { attachDev() {} },
    ...extra,
  }
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn()
  } catch (e) {
    return e instanceof IommuError ? e.code : 'not-an-IommuError'
  }
  return undefined
}

describe('defineDriver / validateDriver (run-time checks for untyped plugins)', () => {
  it('accepts a minimal driver and freezes the descriptor', () => {
    const d = defineDriver(plainSpec() as never) as Driver
    expect(d.kind).toBe('iommu-driver')
    expect(Object.isFrozen(d)).toBe(true)
  })

  it('EINVAL: dirty tracking declared without dirtyOps', () => {
    const spec = plainSpec({ capabilities: { ...NO_CAPS, dirtyTracking: true } })
    expect(codeOf(() => validateDriver(spec))).toBe('EINVAL')
    expect(codeOf(() => defineDriver(spec as never))).toBe('EINVAL')
  })

  it('EINVAL: dirtyOps with only one of its two functions', () => {
    const spec = plainSpec({
      capabilities: { ...NO_CAPS, dirtyTracking: true },
      dirtyOps: { setDirtyTracking() {} },
    })
    expect(codeOf(() => validateDriver(spec))).toBe('EINVAL')
  })

  it('EINVAL: nesting declared without nesting ops', () => {
    const spec = plainSpec({ capabilities: { ...NO_CAPS, nesting: true } })
    expect(codeOf(() => validateDriver(spec))).toBe('EINVAL')
    const empty = plainSpec({ capabilities: { ...NO_CAPS, nesting: true }, nesting: {} })
    expect(codeOf(() => validateDriver(empty))).toBe('EINVAL')
  })

  it('EINVAL: getViommuSize and viommuInit only as a pair; nesting ops need the capability', () => {
    const caps = { ...NO_CAPS, nesting: true }
    const half = plainSpec({ capabilities: caps, nesting: { getViommuSize() {} } })
    expect(codeOf(() => validateDriver(half))).toBe('EINVAL')
    const mixed = plainSpec({
      capabilities: caps,
      nesting: { domainAllocNested() {}, viommuInit() {} },
    })
    expect(codeOf(() => validateDriver(mixed))).toBe('EINVAL')
    const pair = plainSpec({ capabilities: caps, nesting: { getViommuSize() {}, viommuInit() {} } })
    expect(codeOf(() => validateDriver(pair))).toBeUndefined()
    const undeclared = plainSpec({ nesting: { domainAllocNested() {} } })
    expect(codeOf(() => validateDriver(undeclared))).toBe('EINVAL')
  })

  it('EINVAL: PASID declared without set_dev_pasid and a blocked domain', () => {
    const spec = plainSpec({ capabilities: { ...NO_CAPS, pasid: true } })
    expect(codeOf(() => validateDriver(spec))).toBe('EINVAL')
    const ok = plainSpec({
      capabilities: { ...NO_CAPS, pasid: true },
      domainOps: { attachDev() {}, setDevPasid() {} },
      ops: { probeDevice() {}, deviceGroup() {}, blockedDomain: new IommuDomain() },
    })
    expect(codeOf(() => validateDriver(ok))).toBeUndefined()
  })

  it('EINVAL: enforce-coherency, deferred-flush and IOPF declared without their ops', () => {
    for (const cap of ['enforceCacheCoherency', 'deferredFlush', 'iopf']) {
      const spec = plainSpec({ capabilities: { ...NO_CAPS, [cap]: true } })
      expect(
        codeOf(() => validateDriver(spec)),
        cap,
      ).toBe('EINVAL')
    }
  })

  it('EINVAL: dirtyOps present without declaring dirty tracking', () => {
    const spec = plainSpec({ dirtyOps: { setDirtyTracking() {}, readAndClearDirty() {} } })
    expect(codeOf(() => validateDriver(spec))).toBe('EINVAL')
  })

  it('EINVAL: wrong apiVersion, missing required ops, non-boolean capability', () => {
    expect(codeOf(() => validateDriver(plainSpec({ apiVersion: 2 })))).toBe('EINVAL')
    expect(codeOf(() => validateDriver(plainSpec({ ops: { deviceGroup() {} } })))).toBe('EINVAL')
    expect(codeOf(() => validateDriver(plainSpec({ domainOps: {} })))).toBe('EINVAL')
    const caps = { ...NO_CAPS, iopf: 'yes' }
    expect(codeOf(() => validateDriver(plainSpec({ capabilities: caps })))).toBe('EINVAL')
    expect(codeOf(() => validateDriver(null))).toBe('EINVAL')
  })
})

describe('DriverRegistry (explicit registration)', () => {
  it('EEXIST: a second driver with the same name', () => {
    const reg = new DriverRegistry()
    const a = mockIommu()
    reg.register(a)
    reg.register(a)
    expect(reg.list()).toEqual([a])
    expect(codeOf(() => reg.register(mockIommu()))).toBe('EEXIST')
    reg.register(mockIommu({ name: 'mock2' }))
    expect(reg.list().map((d) => d.name)).toEqual(['mock', 'mock2'])
  })

  it('EINVAL: a descriptor not made by defineDriver', () => {
    const reg = new DriverRegistry()
    expect(codeOf(() => reg.register(plainSpec() as never))).toBe('EINVAL')
  })

  it('machines register drivers explicitly and reject duplicate names with EEXIST', () => {
    const m = createMachine({ iommus: [mockIommu()] })
    expect(m.registry.get('mock')).toBeDefined()
    expect(codeOf(() => m.addIommu(mockIommu()))).toBe('EEXIST')
    expect(m.units.length).toBe(1)
  })
})

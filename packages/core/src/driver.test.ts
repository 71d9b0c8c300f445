import { describe, expect, it } from 'vitest'
import { DomainType } from './constants.ts'
import { IommuDomain } from './domain.ts'
import {
  type Driver,
  DriverRegistry,
  defineDriver,
  type IommuHardware,
  type IommuUnit,
  validateDriver,
} from './driver.ts'
import { IommuError } from './errno.ts'
import { IommuGroup } from './iommu/group.ts'
import { createMachine } from './machine/machine.ts'
import type { PciDevice } from './machine/pci.ts'
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

describe('unit → driver binding (the machine binds each unit to the driver that made it)', () => {
  /** A driver whose createUnit returns `make()` and whose probe returns `probe(dev)`. */
  function unitDriver(
    name: string,
    make: () => IommuHardware,
    probe?: (dev: PciDevice) => IommuHardware,
  ): Driver {
    return defineDriver({
      name,
      apiVersion: 1,
      capabilities: NO_CAPS,
      createUnit: make,
      ops: {
        probeDevice: probe ?? ((dev) => dev.unit as IommuUnit),
        deviceGroup: () => new IommuGroup(),
        defaultDomain: new IommuDomain({ type: DomainType.BLOCKED, ops: { attachDev() {} } }),
      },
      domainOps: { attachDev() {} },
    })
  }
  const hw = (): IommuHardware => ({ name: 'hw0', maxPasids: 0, translate: () => false })

  it('unit.driver is the very descriptor defineDriver returned, set by the machine', () => {
    const created: IommuHardware[] = []
    const d = unitDriver('bind', () => {
      const h = hw()
      created.push(h)
      return h
    })
    const m = createMachine({ iommus: [d, d] })
    expect(m.units.length).toBe(2)
    expect(m.units[0]).toBe(created[0])
    expect(m.units[1]).toBe(created[1])
    expect(m.units[0]?.driver).toBe(d)
    expect(m.units[1]?.driver).toBe(d)
    // Read-only and not enumerable: the binding cannot be changed afterwards.
    const u = m.units[0] as IommuUnit
    expect(Object.keys(u)).not.toContain('driver')
    expect(() => {
      ;(u as { driver: unknown }).driver = null
    }).toThrow(TypeError)
    // A device probes onto the driver of the unit it sits behind.
    const dev = m.addPciDevice({ iommu: 1 })
    expect(dev.iommu?.unit).toBe(m.units[1])
  })

  it('EINVAL: createUnit returns a frozen object, another driver’s unit, or a unit twice', () => {
    const frozen = unitDriver('frozen', () => Object.freeze(hw()))
    expect(codeOf(() => createMachine({ iommus: [frozen] }))).toBe('EINVAL')
    const a = unitDriver('a', hw)
    const m = createMachine({ iommus: [a] })
    const stolen = m.units[0] as IommuUnit
    const b = unitDriver('b', () => stolen)
    expect(codeOf(() => m.addIommu(b))).toBe('EINVAL')
    const again = unitDriver('again', () => stolen)
    expect(codeOf(() => createMachine({ iommus: [a] }).addIommu(again))).toBe('EINVAL')
    const m2 = createMachine()
    const same = hw()
    const twice = unitDriver('twice', () => same)
    m2.addIommu(twice)
    expect(codeOf(() => m2.addIommu(twice))).toBe('EINVAL')
    expect(m2.units.length).toBe(1)
    expect(codeOf(() => m.addIommu(unitDriver('none', () => ({}) as never)))).toBe('EINVAL')
  })

  it('EINVAL: probeDevice answers a unit its driver did not create; the device is not added', () => {
    let released = 0
    const other = hw()
    const d = defineDriver({
      name: 'liar',
      apiVersion: 1,
      capabilities: NO_CAPS,
      createUnit: hw,
      ops: {
        probeDevice: () => other,
        releaseDevice: () => {
          released++
        },
        deviceGroup: () => new IommuGroup(),
      },
      domainOps: { attachDev() {} },
    })
    const m = createMachine({ iommus: [d] })
    expect(codeOf(() => m.addPciDevice())).toBe('EINVAL')
    expect(m.devices.length).toBe(0)
    expect(released).toBe(1)
  })
})

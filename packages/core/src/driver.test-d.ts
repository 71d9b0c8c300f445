import { describe, expectTypeOf, it } from 'vitest'
import type { DirtyOps, DomainOps, NestingOps } from './index.ts'
import { type Driver, defineDriver, IommuDomain } from './index.ts'

const base = {
  name: 'typed',
  apiVersion: 1,
  createUnit: () => {
    throw new Error('unused')
  },
  ops: { probeDevice: () => null as never, deviceGroup: () => null as never },
  domainOps: { attachDev() {} } satisfies DomainOps,
} as const

const off = {
  dirtyTracking: false,
  nesting: false,
  pasid: false,
  enforceCacheCoherency: false,
  deferredFlush: false,
  iopf: false,
} as const

const dirtyOps: DirtyOps = { setDirtyTracking() {}, readAndClearDirty() {} }
const nesting: NestingOps = { domainAllocNested: () => new IommuDomain() }
const viommuNesting: NestingOps = { getViommuSize: () => 1, viommuInit() {} }

describe('capabilities are tied to ops in the type', () => {
  it('a driver declaring nothing needs no optional ops', () => {
    const d = defineDriver({ ...base, capabilities: off })
    expectTypeOf(d).toMatchTypeOf<Driver>()
  })

  it('dirty tracking declared without dirtyOps does not compile', () => {
    // @ts-expect-error dirtyOps is required when dirtyTracking is true
    defineDriver({ ...base, capabilities: { ...off, dirtyTracking: true } })
    const ok = defineDriver({ ...base, capabilities: { ...off, dirtyTracking: true }, dirtyOps })
    expectTypeOf(ok.dirtyOps).toEqualTypeOf<DirtyOps>()
  })

  it('dirtyOps without declaring dirty tracking does not compile', () => {
    // @ts-expect-error dirtyOps is forbidden when dirtyTracking is false
    defineDriver({ ...base, capabilities: off, dirtyOps })
  })

  it('nesting declared without nesting ops does not compile', () => {
    // @ts-expect-error nesting ops are required when nesting is true
    defineDriver({ ...base, capabilities: { ...off, nesting: true } })
    defineDriver({ ...base, capabilities: { ...off, nesting: true }, nesting })
    defineDriver({ ...base, capabilities: { ...off, nesting: true }, nesting: viommuNesting })
  })

  it('nesting ops need domainAllocNested or the vIOMMU pair', () => {
    // @ts-expect-error an empty nesting table offers nothing
    const none: NestingOps = {}
    // @ts-expect-error viommuInit without getViommuSize
    const half: NestingOps = { viommuInit() {} }
    expectTypeOf(none).toMatchTypeOf<NestingOps>()
    expectTypeOf(half).toMatchTypeOf<NestingOps>()
  })

  it('PASID declared without set_dev_pasid and a blocked domain does not compile', () => {
    // @ts-expect-error setDevPasid and blockedDomain are required when pasid is true
    defineDriver({ ...base, capabilities: { ...off, pasid: true } })
    defineDriver({
      ...base,
      capabilities: { ...off, pasid: true },
      ops: { ...base.ops, blockedDomain: new IommuDomain() },
      domainOps: { attachDev() {}, setDevPasid() {} },
    })
  })

  it('enforce-coherency, deferred flush and IOPF require their ops', () => {
    // @ts-expect-error enforceCacheCoherency is required
    defineDriver({ ...base, capabilities: { ...off, enforceCacheCoherency: true } })
    // @ts-expect-error flushIotlbAll is required
    defineDriver({ ...base, capabilities: { ...off, deferredFlush: true } })
    // @ts-expect-error pageResponse is required
    defineDriver({ ...base, capabilities: { ...off, iopf: true } })
    defineDriver({
      ...base,
      capabilities: { ...off, enforceCacheCoherency: true, deferredFlush: true, iopf: true },
      ops: { ...base.ops, pageResponse() {} },
      domainOps: { attachDev() {}, enforceCacheCoherency: () => true, flushIotlbAll() {} },
    })
  })

  it('a driver seen through the base type has optional dirty and nesting ops', () => {
    expectTypeOf<Driver['dirtyOps']>().toEqualTypeOf<DirtyOps | undefined>()
    expectTypeOf<Driver['nesting']>().toEqualTypeOf<NestingOps | undefined>()
  })
})

/**
 * Scenario files: the examples parse into the options they say, every rule refuses with one
 * line naming the field, the committed JSON Schema is the schema's, and the explorer's own
 * schema accepts a sim scenario.
 */
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
// The explorer's document schema (zod only): a sim scenario must load there too.
import { parseState } from '../../explorer/src/model/scenario.ts'
import {
  parseScenario,
  type ScenarioInput,
  scenarioJsonSchema,
  scenarioOptions,
} from '../src/scenario.ts'

const MIB = 2 ** 20
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
const read = (f: string) => readFileSync(join(ROOT, f), 'utf8')

function doc(o: { machine?: object; migration?: object; v?: unknown } = {}): string {
  const base: ScenarioInput = {
    v: 1,
    machine: { vendor: 'intel', devices: [{ name: 'nic0' }] },
    migration: { guestMiB: 256 },
  }
  return JSON.stringify({
    ...base,
    ...o,
    machine: { ...base.machine, ...o.machine },
    migration: { ...base.migration, ...o.migration },
  })
}

/** The one-line error of a document, or 'OK'. */
function refusal(text: string, yaml = false): string {
  try {
    scenarioOptions(parseScenario(text, yaml))
    return 'OK'
  } catch (e) {
    return `${(e as Error).name}: ${(e as Error).message}`
  }
}

describe('scenario files', () => {
  it('two devices, each with its own workload, in bytes', () => {
    const o = scenarioOptions(parseScenario(read('scenarios/two-devices.json')))
    expect(o.iommu).toBe('intel')
    expect([o.memoryBytes, o.dimmBytes]).toEqual([1024 * MIB, 512 * MIB])
    expect(o.bandwidth).toBe(10e9 / 8)
    expect(o.maxDowntime).toBe(0.1)
    expect(o.devices?.map((d) => d.name)).toEqual(['nic0', 'nvme0'])
    expect(o.devices?.[0]?.workload).toMatchObject({
      ringBytes: 16 * MIB,
      ringOffset: 16 * MIB,
      ringRate: 100_000,
    })
    expect(o.devices?.[1]?.workload).toMatchObject({
      ringBytes: 0,
      randomRate: 40_000,
      randomWriteBytes: 4096,
      locality: 0.9,
      hotBytes: 64 * MIB,
      hotOffset: 256 * MIB,
    })
  })

  it('YAML, a vIOMMU guest on SMMUv3', () => {
    const o = scenarioOptions(parseScenario(read('scenarios/viommu-smmuv3.yaml'), true))
    expect([o.iommu, o.viommu, o.seed, o.memoryBytes]).toEqual(['smmuv3', true, 7, 512 * MIB])
    expect(o.bandwidth).toBe(25e9 / 8)
  })

  it('hazards and the explorer breakTracker switch become the breakage', () => {
    const opts = (migration: object) => scenarioOptions(parseScenario(doc({ migration })))
    expect(opts({ breakTracker: true }).breakage).toBe('tracking-never-enabled')
    expect(opts({ viommu: true, hazards: ['drop-guest-invalidation'] }).breakage).toBe(
      'drop-guest-invalidation',
    )
    expect(opts({}).breakage).toBe('none')
  })

  it('refuses with one line naming the field', () => {
    const cases: [string, string][] = [
      [doc({ v: 2 }), 'ScenarioError: scenario version 2; this iommu-sim reads 1'],
      ['{', "ScenarioError: not JSON: Expected property name or '}' in JSON at position 1"],
      [
        doc({ machine: { vendor: 'ppc' } }),
        'ScenarioError: machine.vendor: Invalid option: expected one of "amd"|"intel"|"smmuv3"|"mock"',
      ],
      [
        doc({ migration: { guestMib: 1 } }),
        'ScenarioError: migration: Unrecognized key: "guestMib"',
      ],
      [doc({ migration: { iopte: '16k' } }), 'ScenarioError: migration.iopte 16k needs vendor amd'],
      [
        doc({ machine: { vendor: 'amd' }, migration: { viommu: true } }),
        'ScenarioError: migration.viommu needs vendor intel or smmuv3, not amd',
      ],
      [
        doc({ migration: { hazards: ['drop-guest-invalidation'] } }),
        'ScenarioError: migration.hazards drop-guest-invalidation needs migration.viommu',
      ],
      [
        doc({
          migration: { breakTracker: true, viommu: true, hazards: ['drop-guest-invalidation'] },
        }),
        'ScenarioError: migration.hazards: one at a time',
      ],
      [
        doc({ migration: { dimmMiB: 100 } }),
        'ScenarioError: migration.dimmMiB 100 must be even and divide migration.guestMiB 256',
      ],
      [
        doc({
          machine: { devices: [{ name: 'nic0', workload: { ringMiB: 8, ringOffsetMiB: 250 } }] },
        }),
        'ScenarioError: machine.devices.0.workload: the ring must be 4 KiB aligned inside guest RAM',
      ],
      [
        doc({ machine: { devices: [{ name: 'a' }, { name: 'a' }] } }),
        "ScenarioError: machine.devices.1.name: 'a' twice",
      ],
    ]
    for (const [text, message] of cases) expect(refusal(text)).toBe(message)
    expect(refusal('v: [', true)).toMatch(/^ScenarioError: not YAML: /)
  })

  it('the committed JSON Schema is the schema (iommu-sim schema > scenario.schema.json)', () => {
    expect(JSON.parse(read('scenario.schema.json'))).toEqual(scenarioJsonSchema())
    const s = scenarioJsonSchema() as { properties: Record<string, unknown>; required: string[] }
    expect(Object.keys(s.properties)).toEqual(
      expect.arrayContaining(['v', 'seed', 'machine', 'migration']),
    )
    expect(s.required).toEqual(['v', 'machine'])
  })

  it("the explorer's schema loads the examples (its own fields; ours are dropped)", () => {
    for (const f of ['scenarios/two-devices.json', 'scenarios/sweep-small.json']) {
      const state = parseState(read(f))
      expect(state.machine.vendor).toBe(JSON.parse(read(f)).machine.vendor)
      expect(state.migration.guestMiB).toBe(JSON.parse(read(f)).migration.guestMiB)
    }
  })
})

/**
 * Scenario files for `iommu-sim run` and `iommu-sim sweep`: a versioned JSON (or YAML)
 * document naming the machine (vendor, devices and each device's workload), the guest's
 * size and layout, the link, the round and downtime limits, a vIOMMU or not, and the hazards
 * to inject. Validated with zod; {@link scenarioJsonSchema} gives editors the JSON Schema.
 *
 * The document has the explorer's shape (`packages/explorer/src/model/scenario.ts`, version
 * 1: `v`, `seed`, `machine { vendor, options, guestMiB, devices[] }`, `migration { guestMiB,
 * iopte, linkMbps, maxRounds, downtimeMs, breakTracker }`) and adds the sim's own fields
 * (device workloads, `viommu`, `ideal`, `hazards`, ...), which the explorer's schema drops
 * when it reads one. The explorer's own fields (`commands`, `view`, a device's `pasidBits`)
 * are accepted and ignored here.
 *
 * @module
 */

import { parse as parseYamlText } from 'yaml'
import { z } from 'zod'
import {
  type Breakage,
  type DeviceConfig,
  type DeviceWorkload,
  defaultOptions,
  defaultWorkload,
  type MigrateOptions,
} from './migrate.ts'
import { IOMMU_MODELS, IOPTE_MODES, type IopteMode } from './vendors.ts'

const MIB = 2 ** 20

/** The version this build writes and reads (the explorer's). */
export const SCENARIO_VERSION = 1

/** The hazards a scenario can inject (one at a time). */
export const SCENARIO_HAZARDS = ['tracking-never-enabled', 'drop-guest-invalidation'] as const

const Mib = z
  .number()
  .min(0)
  .max(2 ** 20)

/** One device's workload; absent fields take the defaults for the guest's size. */
export const WorkloadSpec = z.strictObject({
  ringMiB: Mib.optional().describe('ring buffer size in MiB (0: no ring)'),
  ringOffsetMiB: Mib.optional().describe('where the ring starts in guest RAM, MiB'),
  ringWriteBytes: z.number().int().min(1).max(4096).optional().describe('bytes per ring write'),
  ringRate: z.number().min(0).max(1e8).optional().describe('ring writes per simulated second'),
  randomRate: z.number().min(0).max(1e8).optional().describe('random writes per second'),
  randomWriteBytes: z.number().int().min(1).max(4096).optional(),
  locality: z.number().min(0).max(1).optional().describe('share of random writes in the hot set'),
  hotMiB: Mib.optional().describe('hot set size in MiB'),
  hotOffsetMiB: Mib.optional().describe('where the hot set starts, MiB'),
})
export type WorkloadSpec = z.infer<typeof WorkloadSpec>

/** A device: the explorer's fields plus the sim's workload. */
export const DeviceSpec = z.strictObject({
  name: z
    .string()
    .min(1)
    .max(32)
    .regex(/^[\w.:-]+$/),
  /** The explorer's device fields (ignored by the sim). */
  pasidBits: z.number().int().min(0).max(20).optional(),
  dirtyTracking: z.boolean().optional(),
  ats: z.boolean().optional(),
  workload: WorkloadSpec.default({}),
})

/** The machine. */
export const MachineSpec = z.strictObject({
  vendor: z.enum(IOMMU_MODELS).describe('the IOMMU model'),
  /** The explorer's vendor options (ignored by the sim). */
  options: z.record(z.string(), z.union([z.boolean(), z.string()])).default({}),
  /** The explorer's guest RAM for its command panel (the sim uses `migration.guestMiB`). */
  guestMiB: z.number().int().min(1).max(1024).optional(),
  devices: z.array(DeviceSpec).min(1).max(8),
})

/** The migration: the explorer's migration settings plus the sim's. */
export const MigrationSpec = z.strictObject({
  guestMiB: z
    .number()
    .int()
    .min(128)
    .max(2 ** 20)
    .default(256)
    .describe('guest RAM in MiB'),
  dimmMiB: z
    .number()
    .int()
    .min(2)
    .max(2 ** 20)
    .optional()
    .describe('IOAS area size in MiB (default min(1024, guestMiB))'),
  iopte: z.enum(IOPTE_MODES.map((m) => m.name) as [IopteMode, ...IopteMode[]]).default('4k'),
  linkMbps: z.number().min(1).max(1e7).default(10_000).describe('link rate, Mbit/s'),
  maxRounds: z.number().int().min(1).max(10_000).default(30),
  downtimeMs: z.number().min(0).max(3_600_000).default(100),
  /** The explorer's switch: the same as the hazard `tracking-never-enabled`. */
  breakTracker: z.boolean().default(false),
  viommu: z.boolean().default(false).describe('a guest with a vIOMMU (intel, smmuv3)'),
  ideal: z.boolean().default(false).describe('fix the known 7.2 kernel bugs'),
  detector: z.boolean().default(true).describe("the IOMMU model's missing-invalidation detector"),
  hazards: z
    .array(z.enum(SCENARIO_HAZARDS))
    .max(1)
    .default([])
    .describe('what to break on purpose'),
  stepsPerRound: z.number().int().min(1).max(4096).default(32),
})

/** A scenario document. */
export const Scenario = z.strictObject({
  /** The JSON Schema the document follows (for editors). */
  $schema: z.string().optional(),
  v: z.literal(SCENARIO_VERSION),
  seed: z
    .number()
    .int()
    .min(0)
    .max(2 ** 32 - 1)
    .default(1),
  machine: MachineSpec,
  migration: MigrationSpec.default(MigrationSpec.parse({})),
  /** The explorer's command log and view (ignored by the sim). */
  commands: z.array(z.unknown()).optional(),
  view: z.unknown().optional(),
})
export type Scenario = z.infer<typeof Scenario>
/** A scenario as written, before defaults. */
export type ScenarioInput = z.input<typeof Scenario>

/** Why a scenario was refused: one line. */
export class ScenarioError extends Error {
  override readonly name = 'ScenarioError'
}

/** The JSON Schema of a scenario document, for editors (`"$schema"`). */
export function scenarioJsonSchema(): Record<string, unknown> {
  return {
    ...z.toJSONSchema(Scenario, { io: 'input' }),
    $id: 'https://iommu-model.invalid/sim/scenario.schema.json',
    title: 'iommu-sim scenario',
  }
}

/**
 * Parse a scenario: JSON, or YAML when `yaml` is true (a `.yaml`/`.yml` file).
 *
 * @throws ScenarioError - not JSON/YAML, another version, or a field out of its range
 */
export function parseScenario(text: string, yaml = false): Scenario {
  let doc: unknown
  try {
    doc = yaml ? parseYamlText(text) : JSON.parse(text)
  } catch (e) {
    throw new ScenarioError(`not ${yaml ? 'YAML' : 'JSON'}: ${(e as Error).message.split('\n')[0]}`)
  }
  const v = (doc as { v?: unknown } | null)?.v
  if (v !== SCENARIO_VERSION) {
    throw new ScenarioError(
      `scenario version ${String(v)}; this iommu-sim reads ${SCENARIO_VERSION}`,
    )
  }
  const r = Scenario.safeParse(doc)
  if (!r.success) {
    const first = r.error.issues[0]
    throw new ScenarioError(
      first ? `${first.path.join('.') || '(document)'}: ${first.message}` : 'invalid scenario',
    )
  }
  return r.data
}

/** A device's workload in bytes for a guest of `memoryBytes`. */
function workloadOf(w: WorkloadSpec, memoryBytes: number): DeviceWorkload {
  const d = defaultWorkload(memoryBytes)
  const mib = (x: number | undefined, dflt: number) =>
    x === undefined ? dflt : Math.round(x * MIB)
  return {
    ringBytes: mib(w.ringMiB, d.ringBytes),
    ringOffset: mib(w.ringOffsetMiB, d.ringOffset),
    ringWriteBytes: w.ringWriteBytes ?? d.ringWriteBytes,
    ringRate: w.ringRate ?? d.ringRate,
    randomRate: w.randomRate ?? d.randomRate,
    randomWriteBytes: w.randomWriteBytes ?? d.randomWriteBytes,
    locality: w.locality ?? d.locality,
    hotBytes: mib(w.hotMiB, d.hotBytes),
    hotOffset: mib(w.hotOffsetMiB, d.hotOffset),
  }
}

/**
 * The `migrate` options of a scenario, with the checks across fields.
 *
 * @throws ScenarioError - the first problem, as one line
 */
export function scenarioOptions(s: Scenario): MigrateOptions {
  const m = s.migration
  const memoryBytes = m.guestMiB * MIB
  const dimmBytes = (m.dimmMiB ?? Math.min(1024, m.guestMiB)) * MIB
  if (dimmBytes % (2 * MIB) !== 0 || memoryBytes % dimmBytes !== 0) {
    throw new ScenarioError(
      `migration.dimmMiB ${dimmBytes / MIB} must be even and divide migration.guestMiB ${m.guestMiB}`,
    )
  }
  const vendor = s.machine.vendor
  const mode = IOPTE_MODES.find((x) => x.name === m.iopte)
  if (mode !== undefined && !(mode.models as readonly string[]).includes(vendor)) {
    throw new ScenarioError(`migration.iopte ${m.iopte} needs vendor ${mode.models.join(', ')}`)
  }
  if (m.viommu && vendor !== 'intel' && vendor !== 'smmuv3') {
    throw new ScenarioError(`migration.viommu needs vendor intel or smmuv3, not ${vendor}`)
  }
  const hazards = [...m.hazards, ...(m.breakTracker ? ['tracking-never-enabled' as const] : [])]
  const breakage: Breakage = hazards[0] ?? 'none'
  if (new Set(hazards).size > 1) throw new ScenarioError('migration.hazards: one at a time')
  if (breakage === 'drop-guest-invalidation' && !m.viommu) {
    throw new ScenarioError('migration.hazards drop-guest-invalidation needs migration.viommu')
  }
  const names = new Set<string>()
  const devices: DeviceConfig[] = s.machine.devices.map((d, i) => {
    if (names.has(d.name)) throw new ScenarioError(`machine.devices.${i}.name: '${d.name}' twice`)
    names.add(d.name)
    const w = workloadOf(d.workload, memoryBytes)
    for (const [what, off, len] of [
      ['ring', w.ringOffset, w.ringBytes],
      ['hot set', w.hotOffset, w.hotBytes],
    ] as const) {
      if (off % 4096 !== 0 || len % 4096 !== 0 || off + len > memoryBytes) {
        throw new ScenarioError(
          `machine.devices.${i}.workload: the ${what} must be 4 KiB aligned inside guest RAM`,
        )
      }
    }
    return { name: d.name, workload: w }
  })
  const base = defaultOptions({ memoryBytes, dimmBytes })
  return {
    ...base,
    iommu: vendor,
    iopte: m.iopte,
    seed: s.seed,
    bandwidth: (m.linkMbps * 1e6) / 8,
    maxRounds: m.maxRounds,
    maxDowntime: m.downtimeMs / 1000,
    workload: (devices[0] as DeviceConfig).workload,
    devices,
    breakage,
    detector: m.detector,
    ideal: m.ideal,
    viommu: m.viommu,
    stepsPerRound: m.stepsPerRound,
  }
}

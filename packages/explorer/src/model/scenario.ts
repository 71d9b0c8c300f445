/**
 * The explorer's state as a small, versioned JSON document: which machine (vendor,
 * options, devices, guest memory), the seed, the commands issued in order, and the
 * migration settings. Replaying it rebuilds exactly the same machine, so the document is
 * both the permalink (`#s=` in the URL) and a scenario file a CLI can adopt.
 *
 * Addresses and lengths are hex strings (`"0x100000000"`), so a scenario reads like the
 * C it stands for and survives JSON without losing u64 precision.
 *
 * @module
 */

import { z } from 'zod'

/** The version this build writes and reads. */
export const SCENARIO_VERSION = 1

/** A u64 as a hex string. */
export const U64 = z
  .string()
  .regex(/^0[xX][0-9a-fA-F]{1,16}$/, 'a hex u64 like 0x1000')
  .transform((s) => s.toLowerCase())

const Index = z.number().int().min(0).max(63)

/** The vIOMMU types the panel offers (`IOMMU_VIOMMU_TYPE_*`). */
export const VIOMMU_TYPES = ['default', 'arm-smmuv3', 'selftest'] as const
/** One of {@link VIOMMU_TYPES}. */
export type ViommuType = (typeof VIOMMU_TYPES)[number]
const ObjId = z.number().int().min(0).max(0xffff_ffff)

/** A device of the machine (a PCI function behind the vendor's IOMMU unit). */
export const DeviceSpec = z.object({
  name: z
    .string()
    .min(1)
    .max(32)
    .regex(/^[\w.:-]+$/),
  pasidBits: z.number().int().min(0).max(20).default(0),
  dirtyTracking: z.boolean().default(true),
  ats: z.boolean().default(false),
})
export type DeviceSpec = z.infer<typeof DeviceSpec>

/** The machine. `options` are the vendor's ({@link VendorDescriptor.options}). */
export const MachineSpec = z.object({
  vendor: z.string().min(1).max(32),
  options: z.record(z.string(), z.union([z.boolean(), z.string()])).default({}),
  /** Guest RAM the VMM maps, in MiB. */
  guestMiB: z.number().int().min(1).max(1024),
  devices: z.array(DeviceSpec).min(1).max(8),
})
export type MachineSpec = z.infer<typeof MachineSpec>

/**
 * One command. `dev` is a device index in {@link MachineSpec.devices}; object IDs are the
 * ones earlier commands returned (replay returns the same IDs). `offset` is a byte offset
 * into guest RAM (the VMM's `user_va` is the guest base plus it).
 */
export const Command = z.discriminatedUnion('op', [
  z.object({ op: z.literal('IOAS_ALLOC') }),
  z.object({
    op: z.literal('IOAS_MAP'),
    ioas: ObjId,
    offset: U64,
    length: U64,
    iova: U64,
    /** IOMMU_IOAS_MAP_READABLE / WRITEABLE / FIXED_IOVA. */
    read: z.boolean().default(true),
    write: z.boolean().default(true),
    fixed: z.boolean().default(true),
  }),
  z.object({ op: z.literal('IOAS_UNMAP'), ioas: ObjId, iova: U64, length: U64 }),
  z.object({ op: z.literal('OPTION_HUGE_PAGES'), ioas: ObjId, enable: z.boolean() }),
  z.object({
    op: z.literal('HWPT_ALLOC'),
    dev: Index,
    pt: ObjId,
    dirtyTracking: z.boolean().default(false),
    nestParent: z.boolean().default(false),
  }),
  z.object({ op: z.literal('ATTACH'), dev: Index, pt: ObjId }),
  z.object({ op: z.literal('REPLACE'), dev: Index, pt: ObjId }),
  z.object({ op: z.literal('DETACH'), dev: Index }),
  z.object({ op: z.literal('SET_DIRTY_TRACKING'), hwpt: ObjId, enable: z.boolean() }),
  z.object({
    op: z.literal('GET_DIRTY_BITMAP'),
    hwpt: ObjId,
    iova: U64,
    length: U64,
    noClear: z.boolean().default(false),
  }),
  z.object({ op: z.literal('GET_HW_INFO'), dev: Index }),
  /** IOMMU_VIOMMU_ALLOC over a NEST_PARENT HWPT. */
  z.object({
    op: z.literal('VIOMMU_ALLOC'),
    dev: Index,
    hwpt: ObjId,
    type: z.enum(VIOMMU_TYPES).default('default'),
  }),
  /** IOMMU_VDEVICE_ALLOC: the device's ID in the guest (`virt_id`, e.g. a vSID or vRID). */
  z.object({ op: z.literal('VDEVICE_ALLOC'), viommu: ObjId, dev: Index, virtId: U64 }),
  z.object({ op: z.literal('DESTROY'), id: ObjId }),
  z.object({
    op: z.literal('DMA_WRITE'),
    dev: Index,
    iova: U64,
    length: z
      .number()
      .int()
      .min(1)
      .max(1 << 20),
  }),
  z.object({
    op: z.literal('DMA_READ'),
    dev: Index,
    iova: U64,
    length: z
      .number()
      .int()
      .min(1)
      .max(1 << 20),
  }),
  /** A vendor's fault-injection switch (drop an invalidation, ...). */
  z.object({ op: z.literal('HOOK'), name: z.string().min(1).max(32), on: z.boolean() }),
])
export type Command = z.infer<typeof Command>
/** A command as a form builds it, before defaults. */
export type CommandInput = z.input<typeof Command>

/** Settings of the migration view (the sim's `migrate` options it exposes). */
export const MigrationSpec = z.object({
  guestMiB: z.number().int().min(2).max(2048).default(256),
  iopte: z.enum(['4k', '2m', 'split']).default('4k'),
  /** Link rate in Mbit/s. */
  linkMbps: z.number().int().min(10).max(400_000).default(5000),
  maxRounds: z.number().int().min(1).max(100).default(12),
  /** Downtime budget in milliseconds. */
  downtimeMs: z.number().int().min(1).max(10_000).default(20),
  breakTracker: z.boolean().default(false),
})
export type MigrationSpec = z.infer<typeof MigrationSpec>

/** The whole explorer state. */
export const ExplorerState = z.object({
  v: z.literal(SCENARIO_VERSION),
  seed: z.number().int().min(0).max(0xffff_ffff).default(1),
  machine: MachineSpec,
  commands: z.array(Command).max(1000).default([]),
  migration: MigrationSpec.default(MigrationSpec.parse({})),
  /** What is on screen (optional: a permalink may point at a view). */
  view: z
    .object({
      tab: z.string().max(32).optional(),
      dev: Index.optional(),
      hwpt: ObjId.optional(),
      iova: U64.optional(),
    })
    .default({}),
})
export type ExplorerState = z.infer<typeof ExplorerState>
export type ExplorerStateInput = z.input<typeof ExplorerState>

/** The state a fresh page starts with: an AMD machine, two devices, 64 MiB of guest RAM. */
export function defaultState(vendor = 'amd'): ExplorerState {
  return ExplorerState.parse({
    v: SCENARIO_VERSION,
    machine: {
      vendor,
      guestMiB: 64,
      devices: [{ name: 'nic0' }, { name: 'nvme0' }],
    },
  })
}

/** Why a document was rejected. */
export class ScenarioError extends Error {
  override readonly name = 'ScenarioError'
}

/** Parse and validate a state document (JSON text or an object). @throws ScenarioError */
export function parseState(input: unknown): ExplorerState {
  let doc = input
  if (typeof input === 'string') {
    try {
      doc = JSON.parse(input)
    } catch (e) {
      throw new ScenarioError(`not JSON: ${(e as Error).message}`)
    }
  }
  const v = (doc as { v?: unknown } | null)?.v
  if (v !== SCENARIO_VERSION) {
    throw new ScenarioError(
      `scenario version ${String(v)}; this explorer reads ${SCENARIO_VERSION}`,
    )
  }
  const r = ExplorerState.safeParse(doc)
  if (!r.success) {
    const first = r.error.issues[0]
    throw new ScenarioError(
      `invalid scenario at ${first?.path.join('.') || '(root)'}: ${first?.message ?? 'unknown'}`,
    )
  }
  return r.data
}

/** The document as compact JSON. */
export function stateToJson(s: ExplorerState): string {
  return JSON.stringify(s)
}

function toBase64Url(bytes: Uint8Array): string {
  let bin = ''
  for (const b of bytes) bin += String.fromCharCode(b)
  return btoa(bin).replaceAll('+', '-').replaceAll('/', '_').replace(/=+$/, '')
}

function fromBase64Url(s: string): Uint8Array {
  const b64 = s.replaceAll('-', '+').replaceAll('_', '/')
  const bin = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4))
  return Uint8Array.from(bin, (c) => c.charCodeAt(0))
}

/** The URL fragment (`s=…`, base64url of the JSON) that carries a state. */
export function encodePermalink(s: ExplorerState): string {
  return `s=${toBase64Url(new TextEncoder().encode(stateToJson(s)))}`
}

/**
 * The state in a URL fragment (with or without the `#`), or null when there is none.
 *
 * @throws ScenarioError - the fragment has a state that does not parse
 */
export function decodePermalink(hash: string): ExplorerState | null {
  const params = new URLSearchParams(hash.startsWith('#') ? hash.slice(1) : hash)
  const s = params.get('s')
  if (s === null || s === '') return null
  let text: string
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(fromBase64Url(s))
  } catch {
    throw new ScenarioError('the permalink is not base64url JSON')
  }
  return parseState(text)
}

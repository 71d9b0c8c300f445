/**
 * The page's state transitions (a pure reducer over the scenario document) and the cache
 * that keeps a live {@link Session} in step with it: issuing a command runs just that
 * command; anything else (another machine, another seed, undo) replays from scratch.
 *
 * @module
 */

import { IOMMU_HWPT_ALLOC_NEST_PARENT } from '@iommu/iommufd'
import { hex } from '../decode/bitfield.ts'
import {
  Command,
  type CommandInput,
  defaultState,
  type ExplorerState,
  type MachineSpec,
  type MigrationSpec,
} from './scenario.ts'
import { replay, type Session } from './session.ts'

/** What the page can do to its state. */
export type Action =
  | { readonly type: 'load'; readonly state: ExplorerState }
  | { readonly type: 'build'; readonly machine: MachineSpec; readonly seed: number }
  | { readonly type: 'issue'; readonly command: Command }
  | { readonly type: 'issueMany'; readonly commands: readonly Command[] }
  | { readonly type: 'undo' }
  | { readonly type: 'clearCommands' }
  | { readonly type: 'setMigration'; readonly migration: MigrationSpec }
  | { readonly type: 'setView'; readonly view: ExplorerState['view'] }

/** The next state. */
export function reducer(s: ExplorerState, a: Action): ExplorerState {
  switch (a.type) {
    case 'load':
      return a.state
    case 'build':
      // A new machine starts with no commands: IDs and addresses would not carry over.
      return { ...s, machine: a.machine, seed: a.seed, commands: [], view: {} }
    case 'issue':
      return { ...s, commands: [...s.commands, a.command] }
    case 'issueMany':
      return { ...s, commands: [...s.commands, ...a.commands] }
    case 'undo':
      return s.commands.length === 0 ? s : { ...s, commands: s.commands.slice(0, -1) }
    case 'clearCommands':
      return { ...s, commands: [] }
    case 'setMigration':
      return { ...s, migration: a.migration }
    case 'setView':
      return { ...s, view: { ...s.view, ...a.view } }
  }
}

/**
 * Keeps one session matching the latest state. `sync` reuses the session when the machine
 * and seed are the same and the commands only grew; otherwise it replays.
 */
export class SessionCache {
  #session: Session | null = null
  #key = ''
  #commands: readonly Command[] = []
  /** How many sessions were built from scratch (for tests). */
  rebuilds = 0

  sync(state: ExplorerState): Session {
    const key = JSON.stringify([state.machine, state.seed])
    const prev = this.#commands
    const grew =
      this.#session !== null &&
      key === this.#key &&
      state.commands.length >= prev.length &&
      prev.every((c, i) => c === state.commands[i] || sameCommand(c, state.commands[i]))
    if (grew && this.#session !== null) {
      this.#session.runAll(state.commands)
    } else {
      this.#session = replay(state)
      this.#key = key
      this.rebuilds++
    }
    this.#commands = state.commands
    return this.#session as Session
  }
}

function sameCommand(a: Command, b: Command | undefined): boolean {
  return b !== undefined && JSON.stringify(a) === JSON.stringify(b)
}

/** Validate a command a form built. @returns the command or the first problem */
export function buildCommand(
  input: CommandInput,
): { ok: true; command: Command } | { ok: false; error: string } {
  const r = Command.safeParse(input)
  if (r.success) return { ok: true, command: r.data }
  const i = r.error.issues[0]
  return { ok: false, error: `${i?.path.join('.') || 'command'}: ${i?.message ?? 'invalid'}` }
}

/** The IOVA the page suggests for a first map (inside every vendor's aperture). */
export const DEFAULT_IOVA = 0x1000_0000n

/**
 * Suggested arguments for a command, from what the session holds now, with every field
 * present (the schema's defaults filled in) so that a form shows them all.
 */
export function suggest(s: Session, op: Command['op']): CommandInput {
  const raw = rawSuggestion(s, op)
  const r = Command.safeParse(raw)
  return r.success ? r.data : raw
}

function rawSuggestion(s: Session, op: Command['op']): CommandInput {
  const ioas = s.ioas[s.ioas.length - 1] ?? 1
  const lastHwpt = s.hwpts[s.hwpts.length - 1]
  const hwpt = s.devices[0]?.hwpt ?? lastHwpt?.id ?? 2
  const ranges = s.mapped.get(lastHwpt?.ioas ?? ioas) ?? s.mapped.get(ioas) ?? []
  const first = ranges[0]
  let end = 0n
  for (const r of ranges) if (r.iova + r.length > end) end = r.iova + r.length
  const mappedBytes = ranges.reduce((n, r) => n + r.length, 0n)
  switch (op) {
    case 'IOAS_ALLOC':
      return { op }
    case 'IOAS_MAP': {
      const length = 0x20_0000n
      const offset = mappedBytes + length <= BigInt(s.guestBytes) ? mappedBytes : 0n
      return {
        op,
        ioas,
        offset: hex(offset).replaceAll('_', ''),
        length: hex(length).replaceAll('_', ''),
        iova: hex(end === 0n ? DEFAULT_IOVA : end).replaceAll('_', ''),
      }
    }
    case 'IOAS_UNMAP':
      return {
        op,
        ioas,
        iova: hex(first?.iova ?? DEFAULT_IOVA).replaceAll('_', ''),
        length: hex(first?.length ?? 0x20_0000n).replaceAll('_', ''),
      }
    case 'OPTION_HUGE_PAGES':
      return { op, ioas, enable: false }
    case 'HWPT_ALLOC':
      return { op, dev: 0, pt: ioas, dirtyTracking: true }
    case 'ATTACH':
    case 'REPLACE': {
      const mine = s.hwpts.find((h) => !h.auto && s.devices[0]?.hwpt !== h.id)
      return { op, dev: 0, pt: mine?.id ?? ioas }
    }
    case 'DETACH':
      return { op, dev: 0 }
    case 'SET_DIRTY_TRACKING':
      return { op, hwpt, enable: true }
    case 'GET_DIRTY_BITMAP':
      return {
        op,
        hwpt,
        iova: hex(first?.iova ?? DEFAULT_IOVA).replaceAll('_', ''),
        length: hex(first?.length ?? 0x20_0000n).replaceAll('_', ''),
        noClear: false,
      }
    case 'GET_HW_INFO':
      return { op, dev: 0 }
    case 'VIOMMU_ALLOC': {
      const parent = s.hwpts.find((h) => h.flags & IOMMU_HWPT_ALLOC_NEST_PARENT)
      const type =
        s.vendor.id === 'smmuv3' ? 'arm-smmuv3' : s.vendor.id === 'mock' ? 'selftest' : 'default'
      return { op, dev: 0, hwpt: parent?.id ?? hwpt, type }
    }
    case 'VDEVICE_ALLOC':
      return { op, viommu: s.viommus[s.viommus.length - 1]?.id ?? 0, dev: 0, virtId: '0x1' }
    case 'DESTROY':
      return { op, id: lastHwpt?.id ?? ioas }
    case 'DMA_WRITE':
    case 'DMA_READ':
      return {
        op,
        dev: 0,
        iova: hex((first?.iova ?? DEFAULT_IOVA) + 0x1000n).replaceAll('_', ''),
        length: 64,
      }
    case 'HOOK':
      return { op, name: s.vendor.hooks[0]?.name ?? 'none', on: true }
  }
}

/**
 * The ten-second tour on a fresh machine with `devices` bound devices: allocate an IOAS,
 * keep its IOPTEs at 4 KiB, map 2 MiB of guest RAM, allocate a HWPT with dirty tracking for device 0 and attach it,
 * turn tracking on, let the device write, read back, and read the dirty bitmap. Object
 * IDs are predicted as iommufd allocates them (lowest free; the devices hold 1..n).
 */
export function demoCommands(devices: number, dirtyTracking = true): Command[] {
  const c = (x: CommandInput): Command => Command.parse(x)
  const iova = DEFAULT_IOVA
  const ioasId = devices + 1
  const hwptId = devices + 2
  const h = (v: bigint) => `0x${v.toString(16)}`
  return [
    c({ op: 'IOAS_ALLOC' }),
    // 4 KiB IOPTEs, so that dirty bits are per page (a 2 MiB IOPTE dirties 512 at once).
    c({ op: 'OPTION_HUGE_PAGES', ioas: ioasId, enable: false }),
    c({ op: 'IOAS_MAP', ioas: ioasId, offset: '0x0', length: '0x200000', iova: h(iova) }),
    c({ op: 'HWPT_ALLOC', dev: 0, pt: ioasId, dirtyTracking }),
    c({ op: 'ATTACH', dev: 0, pt: hwptId }),
    ...(dirtyTracking ? [c({ op: 'SET_DIRTY_TRACKING', hwpt: hwptId, enable: true })] : []),
    c({ op: 'DMA_WRITE', dev: 0, iova: h(iova + 0x1000n), length: 64 }),
    c({ op: 'DMA_WRITE', dev: 0, iova: h(iova + 0x5_0000n), length: 8192 }),
    c({ op: 'DMA_READ', dev: 0, iova: h(iova + 0x1000n), length: 16 }),
    ...(dirtyTracking
      ? [c({ op: 'GET_DIRTY_BITMAP', hwpt: hwptId, iova: h(iova), length: '0x200000' })]
      : []),
    // Dirty again after the read-and-clear: one D bit stays set in the table.
    c({ op: 'DMA_WRITE', dev: 0, iova: h(iova + 0x3000n), length: 256 }),
  ]
}

/** The page a fresh visitor sees: the default machine with the tour already run. */
export function initialState(): ExplorerState {
  const s = defaultState()
  return { ...s, commands: demoCommands(s.machine.devices.length) }
}

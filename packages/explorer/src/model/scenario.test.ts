/**
 * The scenario document: defaults, validation, and the permalink round trip.
 */

import { describe, expect, it } from 'vitest'
import { demoCommands, initialState } from './reducer.ts'
import {
  decodePermalink,
  defaultState,
  encodePermalink,
  parseState,
  SCENARIO_VERSION,
  ScenarioError,
  stateToJson,
} from './scenario.ts'

describe('scenario', () => {
  it('fills defaults', () => {
    const s = parseState({
      v: 1,
      machine: { vendor: 'mock', guestMiB: 4, devices: [{ name: 'd' }] },
      commands: [{ op: 'IOAS_MAP', ioas: 1, offset: '0x0', length: '0x1000', iova: '0X1000' }],
    })
    expect(s.seed).toBe(1)
    expect(s.machine.devices[0]).toEqual({
      name: 'd',
      pasidBits: 0,
      dirtyTracking: true,
      ats: false,
    })
    expect(s.commands[0]).toEqual({
      op: 'IOAS_MAP',
      ioas: 1,
      offset: '0x0',
      length: '0x1000',
      iova: '0x1000',
      read: true,
      write: true,
      fixed: true,
    })
    expect(s.migration).toEqual({
      guestMiB: 256,
      iopte: '4k',
      linkMbps: 5000,
      maxRounds: 12,
      downtimeMs: 20,
      breakTracker: false,
    })
  })

  it('rejects other versions, bad hex, unknown commands and out-of-range fields', () => {
    const base = defaultState()
    expect(() => parseState({ ...base, v: 2 })).toThrow(/version 2/)
    expect(() => parseState({ ...base, v: undefined })).toThrow(ScenarioError)
    expect(() =>
      parseState({
        ...base,
        commands: [{ op: 'IOAS_UNMAP', ioas: 1, iova: '4096', length: '0x1' }],
      }),
    ).toThrow(/commands.0.iova/)
    expect(() =>
      parseState({
        ...base,
        commands: [{ op: 'IOAS_UNMAP', ioas: 1, iova: '0x1_0000_0000_0000_0000', length: '0x1' }],
      }),
    ).toThrow(ScenarioError)
    expect(() => parseState({ ...base, commands: [{ op: 'FORMAT_DISK' }] })).toThrow(
      /commands.0.op/,
    )
    expect(() => parseState({ ...base, machine: { ...base.machine, devices: [] } })).toThrow(
      /machine.devices/,
    )
    expect(() => parseState({ ...base, seed: -1 })).toThrow(/seed/)
    expect(() => parseState('{not json')).toThrow(/not JSON/)
  })

  it('round-trips through the permalink, commands and all', () => {
    const s = {
      ...initialState(),
      seed: 0xdead_beef,
      view: { tab: 'device', dev: 1, hwpt: 4, iova: '0x10001000' },
    }
    const link = encodePermalink(s)
    expect(link).toMatch(/^s=[A-Za-z0-9_-]+$/)
    const back = decodePermalink(`#${link}`)
    expect(back).toEqual(s)
    expect(stateToJson(back as never)).toBe(stateToJson(s))
    expect(back?.commands).toEqual(demoCommands(2))
    expect(back?.v).toBe(SCENARIO_VERSION)
  })

  it('ignores a fragment without a state and rejects a damaged one', () => {
    expect(decodePermalink('')).toBeNull()
    expect(decodePermalink('#tab=x')).toBeNull()
    expect(() => decodePermalink('#s=%%%')).toThrow(ScenarioError)
    const link = encodePermalink(defaultState())
    expect(() => decodePermalink(link.slice(0, -7))).toThrow(ScenarioError)
  })
})

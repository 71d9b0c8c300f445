/**
 * The page's reducer, the session cache that follows it, and the command panel's form.
 */

import { describe, expect, it } from 'vitest'
import { FIELDS, formReducer, OPS, toHexU64 } from './form.ts'
import {
  buildCommand,
  demoCommands,
  initialState,
  reducer,
  SessionCache,
  suggest,
} from './reducer.ts'
import { Command, defaultState } from './scenario.ts'
import { replay } from './session.ts'

describe('reducer', () => {
  it('issues, undoes and clears commands without touching the machine', () => {
    const s0 = defaultState()
    const c = Command.parse({ op: 'IOAS_ALLOC' })
    const s1 = reducer(s0, { type: 'issue', command: c })
    expect(s1.commands).toEqual([c])
    expect(s1.machine).toBe(s0.machine)
    expect(s0.commands).toEqual([])
    expect(reducer(s1, { type: 'undo' }).commands).toEqual([])
    expect(reducer(s0, { type: 'undo' })).toBe(s0)
    const s2 = reducer(s1, { type: 'issueMany', commands: demoCommands(2) })
    expect(s2.commands).toHaveLength(1 + demoCommands(2).length)
    expect(reducer(s2, { type: 'clearCommands' }).commands).toEqual([])
  })

  it('a new machine starts with no commands and no view', () => {
    const s = { ...initialState(), view: { tab: 'caches' } }
    const m = { ...s.machine, vendor: 'mock' }
    const n = reducer(s, { type: 'build', machine: m, seed: 9 })
    expect(n.machine.vendor).toBe('mock')
    expect(n.seed).toBe(9)
    expect(n.commands).toEqual([])
    expect(n.view).toEqual({})
    expect(reducer(n, { type: 'setView', view: { tab: 'queues' } }).view).toEqual({ tab: 'queues' })
  })
})

describe('SessionCache', () => {
  it('runs only the new command when the list grew, and replays otherwise', () => {
    const cache = new SessionCache()
    let s = initialState()
    const a = cache.sync(s)
    expect(cache.rebuilds).toBe(1)
    const logged = a.log.length
    s = reducer(s, { type: 'issue', command: Command.parse({ op: 'IOAS_ALLOC' }) })
    const b = cache.sync(s)
    expect(b).toBe(a)
    expect(b.log.length).toBe(logged + 1)
    expect(cache.rebuilds).toBe(1)
    // An equal list built afresh (a permalink load) is still the same run.
    expect(cache.sync(JSON.parse(JSON.stringify(s)))).toBe(a)
    s = reducer(s, { type: 'undo' })
    const c = cache.sync(s)
    expect(c).not.toBe(a)
    expect(cache.rebuilds).toBe(2)
    expect(c.log.length).toBe(logged)
    expect(JSON.stringify(c.log)).toBe(JSON.stringify(a.log.slice(0, logged)))
  })
})

describe('command form', () => {
  it('has fields for every command, and every field is in the schema', () => {
    expect(OPS.map((o) => o.op).sort()).toEqual(Object.keys(FIELDS).sort())
    const s = replay(initialState())
    for (const { op } of OPS) {
      const input = suggest(s, op)
      const r = buildCommand(input)
      expect(r.ok, op).toBe(true)
      for (const f of FIELDS[op]) expect(f.key in input, `${op}.${f.key}`).toBe(true)
    }
  })

  it('suggests the objects and addresses the machine holds', () => {
    const s = replay(initialState())
    expect(suggest(s, 'IOAS_MAP')).toMatchObject({
      ioas: 3,
      offset: '0x200000',
      iova: '0x10200000',
      length: '0x200000',
    })
    expect(suggest(s, 'GET_DIRTY_BITMAP')).toMatchObject({ hwpt: 4, iova: '0x10000000' })
    expect(suggest(s, 'DMA_WRITE')).toMatchObject({ dev: 0, iova: '0x10001000' })
  })

  it('turns edits into a valid command, or says what is wrong', () => {
    let f = formReducer(
      { op: 'IOAS_ALLOC' },
      {
        type: 'op',
        suggestion: { op: 'DMA_WRITE', dev: 0, iova: '0x1000', length: 64 },
      },
    )
    f = formReducer(f, { type: 'field', key: 'iova', value: '2M' })
    f = formReducer(f, { type: 'field', key: 'length', value: '0x100' })
    f = formReducer(f, { type: 'field', key: 'dev', value: '1' })
    f = formReducer(f, { type: 'field', key: 'nonsense', value: 'x' })
    expect(f).toEqual({ op: 'DMA_WRITE', dev: 1, iova: '0x200000', length: 256 })
    expect(buildCommand(f)).toEqual({ ok: true, command: f })
    const bad = formReducer(f, { type: 'field', key: 'iova', value: 'wherever' })
    expect(buildCommand(bad)).toEqual({ ok: false, error: 'iova: a hex u64 like 0x1000' })
    const big = formReducer(f, { type: 'field', key: 'length', value: '99999999' })
    expect(buildCommand(big).ok).toBe(false)
  })

  it('reads sizes and decimals as u64 hex', () => {
    expect(toHexU64('4096')).toBe('0x1000')
    expect(toHexU64('4k')).toBe('0x1000')
    expect(toHexU64('2MiB')).toBe('0x200000')
    expect(toHexU64('1G')).toBe('0x40000000')
    expect(toHexU64('0x1000_0000')).toBe('0x10000000')
    expect(toHexU64('18446744073709551615')).toBe('0xffffffffffffffff')
    expect(toHexU64('oops')).toBe('oops')
  })
})

import { describe, expect, it } from 'vitest'
import { defaultOptions, type MigrateOptions, migrate, migration } from '../src/engine/index.ts'

const MIB = 2 ** 20

function small(o: Partial<MigrateOptions> = {}): MigrateOptions {
  const base = defaultOptions({ memoryBytes: 64 * MIB, dimmBytes: 32 * MIB })
  return {
    ...base,
    bandwidth: 1e9 / 8,
    workload: {
      ...base.workload,
      ringBytes: 2 * MIB,
      ringOffset: 4 * MIB,
      hotBytes: 8 * MIB,
      hotOffset: 16 * MIB,
      ringRate: 20_000,
      randomRate: 20_000,
    },
    ...o,
  }
}

describe('migration(): the run a round at a time', () => {
  it('yields every round with the pages it sent, and returns what migrate() reports', () => {
    const o = small({ seed: 3 })
    const run = migration(o)
    const steps: { round: number; stopAndCopy: boolean; sent: number[] }[] = []
    let r = run.next()
    while (!r.done) {
      // The page list is only valid until the next step: copy it.
      steps.push({
        round: r.value.report.round,
        stopAndCopy: r.value.report.stopAndCopy,
        sent: Array.from(r.value.sent),
      })
      expect(r.value.sent.length).toBe(r.value.report.dirtyPages)
      r = run.next()
    }
    const report = r.value
    const whole = migrate(o)
    expect(report.rounds.map((x) => x.dirtyPages)).toEqual(whole.rounds.map((x) => x.dirtyPages))
    expect(report.verifiedPages).toBe(whole.verifiedPages)
    expect(report.mismatchedPages).toBe(0)
    expect(steps.map((s) => s.round)).toEqual(report.rounds.map((x) => x.round))
    expect(steps.map((s) => s.stopAndCopy)).toEqual(report.rounds.map((x) => x.stopAndCopy))
    // Round 0 sends all of memory in order; later rounds send distinct pages of guest RAM.
    const pages = (64 * MIB) / 4096
    expect(steps[0]?.sent).toEqual(Array.from({ length: pages }, (_, i) => i))
    for (const s of steps.slice(1)) {
      expect(new Set(s.sent).size).toBe(s.sent.length)
      expect(s.sent.every((p) => p >= 0 && p < pages)).toBe(true)
    }
    // The ring the device fills is dirty in round 1.
    const ringFirst = (4 * MIB) / 4096
    expect(steps[1]?.sent).toContain(ringFirst)
  })

  it('with tracking broken, sends nothing after round 0 and fails verification', () => {
    const steps: number[] = []
    const run = migration(small({ breakage: 'tracking-never-enabled', maxRounds: 3 }))
    let r = run.next()
    while (!r.done) {
      steps.push(r.value.sent.length)
      r = run.next()
    }
    expect(steps).toEqual([(64 * MIB) / 4096, 0])
    expect(r.value.mismatchedPages).toBeGreaterThan(0)
  })
})

/**
 * The migration view's model: the sim's engine a round at a time, and the heatmap cells.
 */

import { migrate, verified } from '@iommu/sim/engine'
import { describe, expect, it } from 'vitest'
import { amdVendor } from '../vendors/amd.ts'
import { intelVendor } from '../vendors/intel.ts'
import { mockVendor } from '../vendors/mock.ts'
import { smmuv3Vendor } from '../vendors/smmuv3.ts'
import { vendorOptions } from '../vendors/types.ts'
import {
  autoPagesPerCell,
  cellColour,
  cellValues,
  heatGeometry,
  MigrationRun,
  migrateOptions,
  simIommu,
} from './migration.ts'
import { MigrationSpec } from './scenario.ts'

const spec = MigrationSpec.parse({ guestMiB: 32, maxRounds: 4 })

describe('MigrationRun', () => {
  it('steps through the sim’s rounds and ends with its report', () => {
    const opts = migrateOptions(spec, 'amd', 3)
    expect(opts.memoryBytes).toBe(32 * 2 ** 20)
    expect(opts.memoryBytes % opts.dimmBytes).toBe(0)
    expect(opts.bandwidth).toBe(5000e6 / 8)
    const run = new MigrationRun(opts)
    let steps = 0
    while (run.step()) steps++
    expect(run.done).toBe(true)
    expect(run.error).toBeNull()
    const whole = migrate(opts)
    expect(run.rounds.map((r) => r.report.dirtyPages)).toEqual(
      whole.rounds.map((r) => r.dirtyPages),
    )
    expect(steps).toBe(whole.rounds.length)
    expect(run.rounds.at(-1)?.report.stopAndCopy).toBe(true)
    expect(verified(run.report as never)).toBe(true)
    expect(run.verification()).toEqual({
      ok: true,
      line: 'verification: OK — destination equals source, 8,192 pages compared',
    })
    expect(run.totals().some((l) => l.startsWith('wall clock'))).toBe(false)
    // Each later round adds one to the pages it sent.
    const later = run.rounds.filter((r) => r.report.round > 0)
    const total = later.reduce((n, r) => n + r.sent.length, 0)
    expect(run.dirtyRounds.reduce((n, v) => n + v, 0)).toBe(total)
    expect(run.step()).toBe(false)
  })

  it('reports a broken tracker through the verification line', () => {
    const run = new MigrationRun(migrateOptions({ ...spec, breakTracker: true }, 'mock', 1))
    while (run.step()) {}
    expect(run.verification()?.ok).toBe(false)
    expect(run.verification()?.line).toMatch(/^verification: FAILED — \d+ of 8192 pages differ/)
  })

  it('runs the sim by model name where it has one, else over the vendor’s own unit', () => {
    expect(simIommu(amdVendor, {})).toBe('amd')
    expect(simIommu(mockVendor, {})).toBe('mock')
    const spec3 = simIommu(smmuv3Vendor, vendorOptions(smmuv3Vendor, {}))
    expect(typeof spec3).toBe('object')
    expect(typeof spec3 === 'object' && 'driver' in spec3 && spec3.driver.name).toBe('smmuv3')
  })

  it('migrates over VT-d through the vendor’s unit and verifies', () => {
    const run = new MigrationRun(
      migrateOptions(spec, simIommu(intelVendor, vendorOptions(intelVendor, {})), 2),
    )
    while (run.step()) {}
    expect(run.error).toBeNull()
    expect(run.verification()?.ok).toBe(true)
    expect(run.rounds.length).toBeGreaterThan(1)
  })
})

describe('heatmap cells', () => {
  it('sizes the map and folds pages into cells', () => {
    expect(heatGeometry(65536, 2)).toEqual({ pagesPerCell: 2, cols: 256, rows: 128, cells: 32768 })
    expect(autoPagesPerCell(65536)).toBe(2)
    expect(autoPagesPerCell(16384)).toBe(1)
    expect(autoPagesPerCell(2 ** 20)).toBe(32)
  })

  it('lights the share of each cell the round sent, and the rounds each page was dirty', () => {
    const run = new MigrationRun(migrateOptions(spec, 'amd', 3))
    run.step()
    run.step()
    const r1 = run.rounds[1]
    if (r1 === undefined) throw new Error('no round 1')
    const g = heatGeometry(run.pages, 4)
    const v = cellValues(run, g, 'round', 1)
    const sum = v.reduce((n, x) => n + x, 0)
    expect(sum * 4).toBeCloseTo(r1.sent.length, 3)
    const p = r1.sent[0] as number
    expect(v[Math.floor(p / 4)]).toBeGreaterThan(0)
    const all = cellValues(run, heatGeometry(run.pages, 1), 'round', 0)
    expect(all.every((x) => x === 1)).toBe(true)
    const heat = cellValues(run, heatGeometry(run.pages, 1), 'heat', 0)
    expect(heat[p]).toBe(1)
    expect(cellColour(0, 'round')).toEqual([232, 235, 240])
    expect(cellColour(1, 'round')).toEqual([230, 110, 20])
  })
})

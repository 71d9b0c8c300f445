import { describe, expect, it } from 'vitest'
import { IommuDirtyBitmap, IotlbGather } from './gather.ts'

describe('IotlbGather', () => {
  it('starts empty with the kernel init values', () => {
    const g = new IotlbGather()
    expect(g.empty).toBe(true)
    expect(g.start).toBe(0xffff_ffff_ffff_ffffn)
    expect(g.end).toBe(0n)
  })

  it('widens to cover every added range, exactly at the top of the 64-bit space', () => {
    const g = new IotlbGather()
    g.addRange(0x20_0000n, 0x1000n)
    g.addPages(0x100, 2, 12)
    expect([g.start, g.end]).toEqual([0x10_0000n, 0x20_0fffn])
    g.addPages(2 ** 52 - 1, 1, 12)
    expect(g.end).toBe(0xffff_ffff_ffff_ffffn)
  })

  it('tells disjoint ranges from overlapping or touching ones', () => {
    const g = new IotlbGather()
    expect(g.isDisjoint(0x1000n, 0x1000n)).toBe(false)
    g.addRange(0x4000n, 0x1000n)
    expect(g.isDisjoint(0x5000n, 0x1000n)).toBe(false)
    expect(g.isDisjoint(0x3000n, 0x1000n)).toBe(false)
    expect(g.isDisjoint(0x7000n, 0x1000n)).toBe(true)
  })
})

describe('IommuDirtyBitmap', () => {
  it('records into the bitmap and the gather', () => {
    const set: number[][] = []
    const g = new IotlbGather()
    const d = new IommuDirtyBitmap({ set: (p, c, s) => set.push([p, c, s]) }, g)
    d.record(0x200, 512, 12)
    expect(set).toEqual([[0x200, 512, 12]])
    expect(d.records).toBe(1)
    expect([g.start, g.end]).toEqual([0x20_0000n, 0x3f_ffffn])
  })

  it('works without a bitmap (clearing only) and without a gather', () => {
    const g = new IotlbGather()
    new IommuDirtyBitmap(null, g).record(1, 1, 11)
    expect(g.start).toBe(0x800n)
    expect(() => new IommuDirtyBitmap(null, null).record(1, 1, 12)).not.toThrow()
  })
})

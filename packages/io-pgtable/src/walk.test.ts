import { Prot } from '@iommu/core'
import { describe, expect, it } from 'vitest'
import { Access, HwAd, WalkFault } from './format.ts'
import { armLpae, IoPgtableQuirk } from './formats/arm-lpae.ts'
import { x86_64 } from './formats/x86-64.ts'
import { tableHarness } from './testing/helpers.ts'

describe('the hardware walker', () => {
  it('ARM S1: AF = 0 faults without hardware AF update and is set with it', () => {
    const h = tableHarness(armLpae, { stage: 1, ias: 48, oas: 48 })
    const pt = h.table
    pt.mapRange(0x1000n, 0x8_0000n, 0x1000n, Prot.READ | Prot.WRITE)
    const leaf = pt.pgtableWalk(0x1000n).at(-1) as { pa: bigint; pte: bigint }
    h.memory.write64(Number(leaf.pa), leaf.pte & ~0x400n)
    const walker = pt.walker()
    expect(walker.walk(pt.root.pfn, pt.root.level, 1, Access.READ, 0).fault).toBe(
      WalkFault.ACCESS_FLAG,
    )
    const r = walker.walk(pt.root.pfn, pt.root.level, 1, Access.READ, HwAd.ACCESSED)
    expect([r.fault, r.pagePfn, r.level, r.sizeLg2]).toEqual([WalkFault.NONE, 0x80, 0, 12])
    expect(h.memory.read64(Number(leaf.pa))).toBe(leaf.pte)
    expect(h.finish()).toBe(0)
  })

  it('ARM: an IOVA above ias is a RANGE fault; TTBR1 tables take the upper half only', () => {
    const h = tableHarness(armLpae, {
      stage: 1,
      ias: 39,
      oas: 48,
      quirks: IoPgtableQuirk.ARM_TTBR1,
    })
    const pt = h.table
    const top = (1n << 64n) - 0x1000n
    pt.mapRange(top, 0x8_0000n, 0x1000n, Prot.READ)
    const walker = pt.walker()
    const page = Number(top >> 12n)
    expect(walker.walk(pt.root.pfn, pt.root.level, page, Access.READ).pagePfn).toBe(0x80)
    expect(walker.walk(pt.root.pfn, pt.root.level, 1, Access.READ).fault).toBe(WalkFault.RANGE)
    expect(walker.walk(pt.root.pfn, pt.root.level, page, Access.WRITE).fault).toBe(
      WalkFault.PERMISSION,
    )
    expect(h.finish()).toBe(0)
  })

  it('ARM S2: S2AP read/write from HAP bits; a block where the granule allows none is a translation fault', () => {
    const h = tableHarness(armLpae, { stage: 2, ias: 40, oas: 40 })
    const pt = h.table
    pt.mapRange(0x20_0000n, 0x20_0000n, 0x20_0000n, Prot.WRITE)
    const walker = pt.walker()
    const r = walker.walk(pt.root.pfn, pt.root.level, 0x200, Access.WRITE)
    expect([r.fault, r.perm, r.sizeLg2]).toEqual([WalkFault.NONE, Access.WRITE, 21])
    expect(walker.walk(pt.root.pfn, pt.root.level, 0x200, Access.READ).fault).toBe(
      WalkFault.PERMISSION,
    )
    const leaf = pt.pgtableWalk(0x20_0000n).at(-1) as { pa: bigint; pte: bigint }
    // A level-3 entry with the block type is reserved: translation fault.
    pt.unmapRange(0x20_0000n, 0x20_0000n, h.gather)
    pt.mapRange(0x20_0000n, 0x20_1000n, 0x1000n, Prot.READ)
    const page = pt.pgtableWalk(0x20_0000n).at(-1) as { pa: bigint; pte: bigint }
    h.memory.write64(Number(page.pa), page.pte & ~2n)
    expect(walker.walk(pt.root.pfn, pt.root.level, 0x200, Access.READ).fault).toBe(
      WalkFault.NOT_PRESENT,
    )
    expect(leaf.pte & 3n).toBe(1n)
    expect(h.finish()).toBe(0)
  })

  it('x86-64: PS in a PML4 entry is reserved; a canonical upper IOVA walks with sign extension', () => {
    const h = tableHarness(x86_64, { topLevel: 3, hwMaxVaBits: 48, signExtend: true })
    const pt = h.table
    pt.mapRange(0xffff_ffff_fff0_0000n, 0x8_0000n, 0x1000n, Prot.READ | Prot.WRITE)
    const walker = pt.walker()
    const page = Number(0xffff_ffff_fff0_0000n >> 12n)
    expect(walker.walk(pt.root.pfn, 3, page, Access.WRITE).pagePfn).toBe(0x80)
    // Non-canonical: bit 47 clear, bits 63:48 set.
    expect(walker.walk(pt.root.pfn, 3, page - 2 ** 35, Access.READ).fault).toBe(WalkFault.RANGE)
    const pml4 = pt.pgtableWalk(0xffff_ffff_fff0_0000n)[0] as { pa: bigint; pte: bigint }
    h.memory.write64(Number(pml4.pa), pml4.pte | 0x80n)
    expect(walker.walk(pt.root.pfn, 3, page, Access.READ).fault).toBe(WalkFault.RESERVED)
    h.memory.write64(Number(pml4.pa), pml4.pte)
    expect(h.finish()).toBe(0)
  })

  it('ARM S1 with HD: a look (update = false) grants the write a DBM leaf allows but writes nothing', () => {
    const h = tableHarness(armLpae, { stage: 1, ias: 48, oas: 48, quirks: IoPgtableQuirk.ARM_HD })
    const pt = h.table
    pt.mapRange(0x1000n, 0x8_0000n, 0x1000n, Prot.READ | Prot.WRITE)
    const leaf = pt.pgtableWalk(0x1000n).at(-1) as { pa: bigint; pte: bigint }
    // Writable-clean: AP[2] set with DBM.
    h.memory.write64(Number(leaf.pa), leaf.pte | 0x80n)
    const walker = pt.walker()
    const ad = HwAd.ACCESSED | HwAd.DIRTY
    const look = walker.walk(pt.root.pfn, pt.root.level, 1, Access.WRITE, ad, false)
    expect([look.fault, look.perm, look.dirty]).toEqual([WalkFault.NONE, 3, false])
    expect(h.memory.read64(Number(leaf.pa))).toBe(leaf.pte | 0x80n)
    const write = walker.walk(pt.root.pfn, pt.root.level, 1, Access.WRITE, ad)
    expect([write.fault, write.dirty]).toEqual([WalkFault.NONE, true])
    expect(h.memory.read64(Number(leaf.pa))).toBe(leaf.pte)
    expect(h.finish()).toBe(0)
  })

  it('a nested walk reads every table through the translator and faults TABLE_FETCH when it refuses', () => {
    const h = tableHarness(armLpae, { stage: 1, ias: 48, oas: 48 })
    const pt = h.table
    pt.mapRange(0x1000n, 0x8_0000n, 0x1000n, Prot.READ)
    const walker = pt.walker()
    const seen: number[] = []
    const identity = (pfn: number) => {
      seen.push(pfn)
      return pfn
    }
    const r = walker.walk(pt.root.pfn, pt.root.level, 1, Access.READ, 0, true, identity)
    expect([r.fault, r.pagePfn]).toEqual([WalkFault.NONE, 0x80])
    expect(seen).toHaveLength(4)
    expect(seen[0]).toBe(pt.root.pfn)
    const third = seen[2] as number
    const refused = walker.walk(pt.root.pfn, pt.root.level, 1, Access.READ, 0, true, (pfn) =>
      pfn === third ? -1 : pfn,
    )
    expect([refused.fault, refused.level]).toEqual([WalkFault.TABLE_FETCH, 1])
    expect(h.finish()).toBe(0)
  })
})

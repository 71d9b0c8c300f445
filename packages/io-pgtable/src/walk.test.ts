import { FramePurpose, IotlbGather, Prot } from '@iommu/core'
import { describe, expect, it } from 'vitest'
import { Access, HwAd, WalkFault } from './format.ts'
import { amdv1 } from './formats/amdv1.ts'
import { armLpae, IoPgtableQuirk } from './formats/arm-lpae.ts'
import { x86_64 } from './formats/x86-64.ts'
import { PathRecords } from './path-records.ts'
import { tableHarness } from './testing/helpers.ts'
import { PATH_RECORD_INTS } from './walk.ts'

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

  it('records the entries a walk read; the record holds until any of them changes', () => {
    const h = tableHarness(amdv1, {})
    const pt = h.table
    pt.mapRange(0x4000_1000n, 0x8_0000n, 0x1000n, Prot.READ | Prot.WRITE)
    const walker = pt.walker()
    const mem = h.memory
    const ipfn = 0x4_0001
    const rec = new Int32Array(2 * PATH_RECORD_INTS).fill(-1)
    const at = PATH_RECORD_INTS
    walker.walk(pt.root.pfn, pt.root.level, ipfn, Access.WRITE, HwAd.ACCESSED | HwAd.DIRTY)
    expect(walker.recordPath(rec, at)).toBe(true)
    // One record per level walked, top first: frame, index, then the entry's two words
    // as memory holds them after the walk's A/D update.
    const path = pt.pgtableWalk(0x4000_1000n)
    expect(rec[at]).toBe(path.length)
    expect(rec[0]).toBe(-1)
    path.forEach((e, d) => {
      const o = at + 1 + 4 * d
      expect(rec[o]).toBe(Number(e.pa >> 12n))
      expect(rec[o + 1]).toBe(Number((e.pa & 0xfffn) >> 3n))
      expect(BigInt.asUintN(32, BigInt(rec[o + 2] as number))).toBe(e.pte & 0xffff_ffffn)
      expect(BigInt.asUintN(32, BigInt(rec[o + 3] as number))).toBe(e.pte >> 32n)
    })
    expect(walker.pathUnchanged(rec, at)).toBe(true)
    // Any level's entry changing breaks it, and putting the words back restores it.
    for (const e of path) {
      mem.write64(Number(e.pa), e.pte ^ (1n << 52n))
      expect(walker.pathUnchanged(rec, at)).toBe(false)
      mem.write64(Number(e.pa), e.pte)
      expect(walker.pathUnchanged(rec, at)).toBe(true)
    }
    // The top table pointing at a copy of the level below: the copy is not what was read.
    const top = path[0] as { pa: bigint; pte: bigint }
    const below = Number((path[1] as { pa: bigint }).pa >> 12n)
    const copy = mem.allocFrame(FramePurpose.PGTABLE)
    const words = new Uint8Array(4096)
    mem.readBytes(below * 4096, words)
    mem.writeBytes(copy * 4096, words)
    const moved = (top.pte & ~(0xff_ffff_ffffn << 12n)) | (BigInt(copy) << 12n)
    mem.write64(Number(top.pa), moved)
    expect(walker.walk(pt.root.pfn, pt.root.level, ipfn, Access.READ).pagePfn).toBe(0x80)
    expect(walker.pathUnchanged(rec, at)).toBe(false)
    mem.write64(Number(top.pa), top.pte)
    // A leaf table whose storage is given back reads as zeros: changed, and not given
    // storage by the check.
    const leafFrame = Number((path.at(-1) as { pa: bigint }).pa >> 12n)
    const zero = mem.allocFrame(FramePurpose.PGTABLE)
    const saved = new Uint8Array(4096)
    mem.readBytes(leafFrame * 4096, saved)
    mem.copyFrame(leafFrame, zero)
    expect(walker.pathUnchanged(rec, at)).toBe(false)
    expect(mem.isMaterialized(leafFrame)).toBe(false)
    mem.writeBytes(leafFrame * 4096, saved)
    expect(walker.pathUnchanged(rec, at)).toBe(true)
    // Nothing is recorded after a faulted or a nested walk.
    walker.walk(pt.root.pfn, pt.root.level, 0x123, Access.READ)
    expect(walker.recordPath(rec, at)).toBe(false)
    expect(walker.pathUnchanged(rec, at)).toBe(false)
    walker.walk(pt.root.pfn, pt.root.level, ipfn, Access.READ, 0, true, (pfn) => pfn)
    expect(walker.recordPath(rec, at)).toBe(false)
    mem.put(copy)
    mem.put(zero)
    expect(h.finish()).toBe(0)
  })

  it('PathRecords: one record per entry, for one IOVA page and one context, until refilled', () => {
    const h = tableHarness(amdv1, {})
    const pt = h.table
    pt.mapRange(0x4000_1000n, 0x8_0000n, 0x2000n, Prot.READ | Prot.WRITE)
    const walker = pt.walker()
    const records = new PathRecords<object>(4)
    const ctx = {}
    const other = {}
    const ipfn = 0x4_0001
    walker.walk(pt.root.pfn, pt.root.level, ipfn, Access.READ)
    records.save(2, walker, ipfn, ctx)
    expect(records.unchanged(2, walker, ipfn, ctx)).toBe(true)
    // Another entry, page or context has no record.
    expect(records.unchanged(1, walker, ipfn, ctx)).toBe(false)
    expect(records.unchanged(2, walker, ipfn + 1, ctx)).toBe(false)
    expect(records.unchanged(2, walker, ipfn, other)).toBe(false)
    // The leaf changes, and back: the record follows memory.
    const gather = new IotlbGather()
    pt.unmapRange(0x4000_1000n, 0x1000n, gather)
    expect(records.unchanged(2, walker, ipfn, ctx)).toBe(false)
    pt.mapRange(0x4000_1000n, 0x8_0000n, 0x1000n, Prot.READ | Prot.WRITE)
    expect(records.unchanged(2, walker, ipfn, ctx)).toBe(true)
    records.clear(2)
    expect(records.unchanged(2, walker, ipfn, ctx)).toBe(false)
    // A walk that cannot be recorded (a fault) leaves no record.
    records.save(3, walker, ipfn, ctx)
    walker.walk(pt.root.pfn, pt.root.level, 0x123, Access.READ)
    records.save(3, walker, 0x123, ctx)
    expect(records.unchanged(3, walker, 0x123, ctx)).toBe(false)
    expect(records.unchanged(3, walker, ipfn, ctx)).toBe(false)
    pt.unmapRange(0x4000_1000n, 0x2000n, gather)
    gather.releaseFreelist()
    expect(h.finish()).toBe(0)
  })
})

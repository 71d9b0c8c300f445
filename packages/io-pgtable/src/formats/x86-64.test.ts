import { IommuDirtyBitmap, type IommuError, Prot } from '@iommu/core'
import { describe, expect, it } from 'vitest'
import { Access, HwAd, WalkFault } from '../format.ts'
import { errnoOf, tableHarness } from '../testing/helpers.ts'
import { x86_64 } from './x86-64.ts'

const RW = Prot.READ | Prot.WRITE

function leafPte(
  cfg: Parameters<typeof x86_64.init>[0],
  iova: bigint,
  pa: bigint,
  size: bigint,
  prot: number,
) {
  const h = tableHarness(x86_64, cfg)
  h.table.mapRange(iova, pa, size, prot)
  const e = h.table.pgtableWalk(iova).at(-1) as { level: number; pte: bigint }
  expect(h.finish()).toBe(0)
  return e
}

const FS4 = { topLevel: 3, hwMaxVaBits: 48, signExtend: true }
const V2 = { topLevel: 3, hwMaxVaBits: 47 }

describe('§4.6 AMD v2 / x86-64 (generic_pt x86_64; also the Intel first-stage leaf)', () => {
  it('E1 4K R|W -> 0x80000: 0x0000000000080067 (P|RW|U|A|D)', () => {
    expect(leafPte(V2, 0x1000n, 0x8_0000n, 0x1000n, RW)).toEqual({
      level: 0,
      pte: 0x0000_0000_0008_0067n,
      pa: expect.any(BigInt),
    })
  })

  it('E2 4K R only, newest generic: 0x0000000000080025 (no D; old AMD v2 and the v7 posting: 0x65)', () => {
    expect(leafPte(V2, 0x1000n, 0x8_0000n, 0x1000n, Prot.READ).pte).toBe(0x0000_0000_0008_0025n)
  })

  it('E3 2M R|W -> 0x40000000: 0x00000000400000e7 (+PS)', () => {
    expect(leafPte(V2, 0x20_0000n, 0x4000_0000n, 0x20_0000n, RW)).toMatchObject({
      level: 1,
      pte: 0x0000_0000_4000_00e7n,
    })
  })

  it('E4 1G R|W -> 0x40000000 at level 2: 0x00000000400000e7', () => {
    expect(leafPte(V2, 0x4000_0000n, 0x4000_0000n, 0x4000_0000n, RW)).toMatchObject({
      level: 2,
      pte: 0x0000_0000_4000_00e7n,
    })
  })

  it('E5 table entry -> 0x123000: 0x0000000000123027 (P|RW|U|A)', () => {
    const p = x86_64.init(V2)
    const w = new Uint32Array(1024)
    x86_64.installTable(w, 0, 1, 0x123, p)
    expect((BigInt(w[1] as number) << 32n) | BigInt(w[0] as number)).toBe(0x0000_0000_0012_3027n)
  })

  it('E6 the Intel first-stage leaf has no XD in the newest kernel (old kernels: 0x8000000000080067)', () => {
    expect(leafPte(FS4, 0x1000n, 0x8_0000n, 0x1000n, RW | Prot.NOEXEC).pte).toBe(
      0x0000_0000_0008_0067n,
    )
  })

  it('sign extension: the upper canonical half maps, the non-canonical hole is ERANGE; the aperture is the lower half', () => {
    const h = tableHarness(x86_64, FS4)
    const upper = 0xffff_8000_0000_0000n
    h.table.mapRange(upper, 0x8_0000n, 0x1000n, RW)
    expect(h.table.iovaToPhys(upper + 0x10n)).toBe(0x8_0010n)
    // Upper-half index 256 of the PML4.
    expect(Number((h.table.pgtableWalk(upper)[0]?.pa ?? 0n) & 0xfffn) >> 3).toBe(256)
    let code: string | undefined
    try {
      h.table.mapRange(0x0000_8000_0000_0000n, 0n, 0x1000n, RW)
    } catch (e) {
      code = (e as IommuError).code
    }
    expect(code).toBe('ERANGE')
    expect(h.table.geometry).toEqual({
      apertureStart: 0n,
      apertureEnd: 0x7fff_ffff_ffffn,
      forceAperture: true,
    })
    expect(h.table.hwInfo()).toEqual({ gcr3Pt: BigInt(h.table.root.pfn) << 12n, levels: 4 })
    expect(h.finish()).toBe(0)
  })

  it('no dirty tracking: read_and_clear_dirty is EOPNOTSUPP', () => {
    const h = tableHarness(x86_64, V2)
    let code: string | undefined
    try {
      h.table.readAndClearDirty(0n, 0x1000n, 0, new IommuDirtyBitmap(null, null))
    } catch (e) {
      code = (e as IommuError).code
    }
    expect(code).toBe('EOPNOTSUPP')
    expect(h.finish()).toBe(0)
  })

  it('init: topLevel 2 is EOPNOTSUPP; a 4-level root cannot span 57 bits (EOPNOTSUPP); hwMaxVaBits 58 EINVAL', () => {
    const code = errnoOf
    expect(code(() => x86_64.init({ topLevel: 2 }))).toBe('EOPNOTSUPP')
    expect(code(() => x86_64.init({ topLevel: 3, hwMaxVaBits: 57 }))).toBe('EOPNOTSUPP')
    expect(code(() => x86_64.init({ topLevel: 4, hwMaxVaBits: 58 }))).toBe('EINVAL')
  })

  it('hardware walk: RW ANDed along the path, A on every entry and D on a written leaf', () => {
    const h = tableHarness(x86_64, V2)
    const pt = h.table
    pt.mapRange(0x20_0000n, 0x4000_0000n, 0x20_0000n, Prot.READ)
    const walker = pt.walker()
    expect(walker.walk(pt.root.pfn, 3, 0x200, Access.WRITE, 0).fault).toBe(WalkFault.PERMISSION)
    pt.unmapRange(0x20_0000n, 0x20_0000n, h.gather)
    pt.mapRange(0x20_0000n, 0x4000_0000n, 0x20_0000n, RW)
    const leaf = pt.pgtableWalk(0x20_0000n).at(-1) as { pa: bigint }
    // Clear A and D, as if software had aged the entry.
    h.memory.write64(Number(leaf.pa), 0x4000_0087n)
    const r = walker.walk(pt.root.pfn, 3, 0x201, Access.WRITE, HwAd.ACCESSED | HwAd.DIRTY)
    expect([r.fault, r.pagePfn, r.sizeLg2]).toEqual([WalkFault.NONE, 0x4_0001, 21])
    expect(h.memory.read64(Number(leaf.pa))).toBe(0x4000_00e7n)
    expect(h.finish()).toBe(0)
  })
})

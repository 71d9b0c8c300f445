import {
  IOMMU_DIRTY_NO_CLEAR,
  IommuDirtyBitmap,
  type IommuError,
  IotlbGather,
  Prot,
} from '@iommu/core'
import { describe, expect, it } from 'vitest'
import { Access, HwAd, WalkFault } from '../format.ts'
import { errnoOf, tableHarness } from '../testing/helpers.ts'
import { type ArmLpaeConfig, armLpae, IoPgtableQuirk } from './arm-lpae.ts'

const R = Prot.READ
const W = Prot.WRITE
const C = Prot.CACHE
const X = Prot.NOEXEC
const M = Prot.MMIO
const P = Prot.PRIV

const S1: ArmLpaeConfig = { stage: 1, ias: 48, oas: 48 }
const S2: ArmLpaeConfig = { stage: 2, ias: 48, oas: 48 }

function table(cfg: ArmLpaeConfig) {
  return tableHarness(armLpae, cfg)
}

/** The leaf (last entry) a walk for `iova` reads. */
function leaf(pt: ReturnType<typeof table>['table'], iova: bigint) {
  return pt.pgtableWalk(iova).at(-1) as { level: number; pte: bigint; pa: bigint }
}

const code = errnoOf

function recorder() {
  const records: [number, number][] = []
  const gather = new IotlbGather()
  const dirty = new IommuDirtyBitmap(
    {
      set: (pfn, count, shift) =>
        records.push([pfn * 2 ** (shift - 12), count * 2 ** (shift - 12)]),
    },
    gather,
  )
  return { records, gather, dirty }
}

describe('§4.1 ARM LPAE stage 1, 4K granule, ias = oas = 48', () => {
  const leaves: [string, number, bigint][] = [
    ['A1 R|W: nG|UNPRIV|SH_OS|AF + PAGE', R | W, 0x0000_0000_0008_0e43n],
    ['A2 R|W|C: AttrIndx 1, SH_IS', R | W | C, 0x0000_0000_0008_0f47n],
    ['A3 R: AP_RDONLY', R, 0x0000_0000_0008_0ec3n],
    ['A4 R|W|C|X: XN (bits 54:53)', R | W | C | X, 0x0060_0000_0008_0f47n],
    ['A5 R|W|M: AttrIndx 2, SH_OS', R | W | M, 0x0000_0000_0008_0e4bn],
    ['A6 R|W|P: no AP_UNPRIV', R | W | P, 0x0000_0000_0008_0e03n],
    [
      'W only is mapped read-write (prot_to_pte: RDONLY only for R without W)',
      W,
      0x0000_0000_0008_0e43n,
    ],
  ]
  for (const [name, prot, pte] of leaves) {
    it(`${name}: L3[1] = 0x${pte.toString(16).padStart(16, '0')}`, () => {
      const h = table(S1)
      h.table.mapRange(0x1000n, 0x8_0000n, 0x1000n, prot)
      const e = leaf(h.table, 0x1000n)
      expect(e.level).toBe(0)
      expect(e.pa & 0xfffn).toBe(8n)
      expect(e.pte).toBe(pte)
      expect(h.finish()).toBe(0)
    })
  }

  it('A7 the NS quirk sets NS in leaves (0x80e63) and NSTABLE in tables', () => {
    const h = table({ ...S1, quirks: IoPgtableQuirk.ARM_NS })
    h.table.mapRange(0x1000n, 0x8_0000n, 0x1000n, R | W)
    const walk = h.table.pgtableWalk(0x1000n)
    expect(walk.at(-1)?.pte).toBe(0x0000_0000_0008_0e63n)
    for (const t of walk.slice(0, -1)) expect(t.pte >> 63n).toBe(1n)
    expect(h.finish()).toBe(0)
  })

  it('A8 2M block at L2[1] = 0x40000f45 (BLOCK type 1); iova_to_phys(0x212345) = 0x40012345', () => {
    const h = table(S1)
    h.table.mapRange(0x20_0000n, 0x4000_0000n, 0x20_0000n, R | W | C)
    const e = leaf(h.table, 0x20_0000n)
    expect(e.level).toBe(1)
    expect(e.pa & 0xfffn).toBe(8n)
    expect(e.pte).toBe(0x0000_0000_4000_0f45n)
    expect(h.table.iovaToPhys(0x21_2345n)).toBe(0x4001_2345n)
    expect(h.table.iovaToPhys(0x40_0000n)).toBe(0n)
    expect(h.finish()).toBe(0)
  })

  it('A9 1G block at L1[1] = 0x80000f45', () => {
    const h = table(S1)
    h.table.mapRange(0x4000_0000n, 0x8000_0000n, 0x4000_0000n, R | W | C)
    const e = leaf(h.table, 0x4000_0000n)
    expect(e.level).toBe(2)
    expect(e.pa & 0xfffn).toBe(8n)
    expect(e.pte).toBe(0x0000_0000_8000_0f45n)
    expect(h.finish()).toBe(0)
  })

  it('A10 table descriptor for PA 0x12345000 = 0x12345003; non-coherent walker adds SW_SYNC (0x0080000012345003)', () => {
    for (const [coherentWalk, pte] of [
      [true, 0x0000_0000_1234_5003n],
      [false, 0x0080_0000_1234_5003n],
    ] as const) {
      const p = armLpae.init({ ...S1, coherentWalk })
      const w = new Uint32Array(1024)
      armLpae.installTable(w, 3, 1, 0x1_2345, p)
      expect((BigInt(w[7] as number) << 32n) | BigInt(w[6] as number)).toBe(pte)
      expect(armLpae.tablePfn(w, 3, 1, p)).toBe(0x1_2345)
    }
  })

  it('A10 the walk installs coherent table descriptors: PA | TABLE', () => {
    const h = table(S1)
    h.table.mapRange(0x1000n, 0x8_0000n, 0x1000n, R | W)
    const walk = h.table.pgtableWalk(0x1000n)
    for (let i = 0; i < walk.length - 1; i++) {
      const next = walk[i + 1] as { pa: bigint }
      expect((walk[i] as { pte: bigint }).pte).toBe((next.pa & ~0xfffn) | 3n)
    }
    expect(h.finish()).toBe(0)
  })

  it('A11 HD quirk: a writable leaf starts writable-dirty, DBM set (0x0008000000080f47)', () => {
    const h = table({ ...S1, quirks: IoPgtableQuirk.ARM_HD })
    h.table.mapRange(0x1000n, 0x8_0000n, 0x1000n, R | W | C)
    expect(leaf(h.table, 0x1000n).pte).toBe(0x0008_0000_0008_0f47n)
    expect(h.finish()).toBe(0)
  })

  it('A12-A14 read_and_clear_dirty records (0x1000, 4K) and sets AP[2]; a HW write clears it; NO_CLEAR leaves it', () => {
    const h = table({ ...S1, quirks: IoPgtableQuirk.ARM_HD })
    const pt = h.table
    pt.mapRange(0x1000n, 0x8_0000n, 0x1000n, R | W | C)
    // A14: NO_CLEAR records and leaves the PTE alone.
    let r = recorder()
    pt.readAndClearDirty(0x1000n, 0x1000n, IOMMU_DIRTY_NO_CLEAR, r.dirty)
    expect(r.records).toEqual([[1, 1]])
    expect(leaf(pt, 0x1000n).pte).toBe(0x0008_0000_0008_0f47n)
    // A12
    r = recorder()
    pt.readAndClearDirty(0x1000n, 0x1000n, 0, r.dirty)
    expect(r.records).toEqual([[1, 1]])
    expect(r.gather.start).toBe(0x1000n)
    expect(r.gather.end).toBe(0x1fffn)
    expect(leaf(pt, 0x1000n).pte).toBe(0x0008_0000_0008_0fc7n)
    r = recorder()
    pt.readAndClearDirty(0x1000n, 0x1000n, 0, r.dirty)
    expect(r.records).toEqual([])
    // A13: the SMMU clears AP[2] on a write (HTTU with CD.HD).
    const walk = pt
      .walker()
      .walk(pt.root.pfn, pt.root.level, 1, Access.WRITE, HwAd.ACCESSED | HwAd.DIRTY)
    expect(walk.fault).toBe(WalkFault.NONE)
    expect(leaf(pt, 0x1000n).pte).toBe(0x0008_0000_0008_0f47n)
    r = recorder()
    pt.readAndClearDirty(0x1000n, 0x1000n, 0, r.dirty)
    expect(r.records).toEqual([[1, 1]])
    expect(h.finish()).toBe(0)
  })

  it('A13 without CD.HD a write to a writable-clean leaf is a permission fault', () => {
    const h = table({ ...S1, quirks: IoPgtableQuirk.ARM_HD })
    const pt = h.table
    pt.mapRange(0x1000n, 0x8_0000n, 0x1000n, R | W | C)
    pt.readAndClearDirty(0x1000n, 0x1000n, 0, recorder().dirty)
    const walk = pt.walker().walk(pt.root.pfn, pt.root.level, 1, Access.WRITE, HwAd.ACCESSED)
    expect(walk.fault).toBe(WalkFault.PERMISSION)
    expect(leaf(pt, 0x1000n).pte).toBe(0x0008_0000_0008_0fc7n)
    expect(h.finish()).toBe(0)
  })

  it('A15 HD quirk with R only: 0x80ec3 (RDONLY, no DBM), never dirty, writes fault', () => {
    const h = table({ ...S1, quirks: IoPgtableQuirk.ARM_HD })
    const pt = h.table
    pt.mapRange(0x1000n, 0x8_0000n, 0x1000n, R)
    expect(leaf(pt, 0x1000n).pte).toBe(0x0000_0000_0008_0ec3n)
    const r = recorder()
    pt.readAndClearDirty(0x1000n, 0x1000n, 0, r.dirty)
    expect(r.records).toEqual([])
    const walk = pt
      .walker()
      .walk(pt.root.pfn, pt.root.level, 1, Access.WRITE, HwAd.ACCESSED | HwAd.DIRTY)
    expect(walk.fault).toBe(WalkFault.PERMISSION)
    expect(h.finish()).toBe(0)
  })

  it('index decomposition of 0x0000123456789000: L0 36, L1 209, L2 179, L3 393', () => {
    const h = table(S1)
    h.table.mapRange(0x0000_1234_5678_9000n, 0x8_0000n, 0x1000n, R | W)
    const idx = h.table
      .pgtableWalk(0x0000_1234_5678_9000n)
      .map((e) => Number((e.pa & 0xfffn) >> 3n))
    expect(idx).toEqual([36, 209, 179, 393])
    expect(h.finish()).toBe(0)
  })
})

describe('§4.2 ARM LPAE stage 1, 16K and 64K granules, 52-bit PA', () => {
  const cases: [string, ArmLpaeConfig, bigint, bigint, bigint, number, bigint][] = [
    [
      'B1 16K page, ias 48',
      { stage: 1, granule: 16384, ias: 48, oas: 48 },
      0x4000n,
      0x10_0000n,
      0x4000n,
      0,
      0x0000_0000_0010_0f47n,
    ],
    [
      'B2 16K granule, 32M block',
      { stage: 1, granule: 16384, ias: 48, oas: 48 },
      0x200_0000n,
      0x400_0000n,
      0x200_0000n,
      1,
      0x0000_0000_0400_0f45n,
    ],
    [
      'B3 64K page, ias 48',
      { stage: 1, granule: 65536, ias: 48, oas: 48 },
      0x1_0000n,
      0x3_0000n,
      0x1_0000n,
      0,
      0x0000_0000_0003_0f47n,
    ],
    [
      'B4 64K granule, 512M block',
      { stage: 1, granule: 65536, ias: 48, oas: 48 },
      0x2000_0000n,
      0x2000_0000n,
      0x2000_0000n,
      1,
      0x0000_0000_2000_0f45n,
    ],
    [
      'B5 64K, oas 52: PA[51:48] folded into bits 15:12',
      { stage: 1, granule: 65536, ias: 48, oas: 52 },
      0x1_0000n,
      0x000f_0000_0001_0000n,
      0x1_0000n,
      0,
      0x0000_0000_0001_ff47n,
    ],
  ]
  for (const [name, cfg, iova, pa, size, level, pte] of cases) {
    it(`${name}: idx 1 = 0x${pte.toString(16).padStart(16, '0')}`, () => {
      const h = table(cfg)
      h.table.mapRange(iova, pa, size, R | W | C)
      const e = leaf(h.table, iova)
      expect(e.level).toBe(level)
      expect(e.pa & 0xfffn).toBe(8n)
      expect(e.pte).toBe(pte)
      // Decode back, B5: (0x1f000 | 0x1f000 << 36) & GENMASK(51, 16).
      expect(h.table.iovaToPhys(iova + 0x123n)).toBe(pa + 0x123n)
      expect(h.finish()).toBe(0)
    })
  }

  it('B1 16K, ias 48: 4 levels, start level 0, 2-entry PGD', () => {
    const p = armLpae.init({ stage: 1, granule: 16384, ias: 48, oas: 48 })
    expect([p.startLevel, p.pgdBits]).toEqual([0, 1])
  })

  it('B3 64K, ias 48: 3 levels, start level 1, 64-entry PGD', () => {
    const p = armLpae.init({ stage: 1, granule: 65536, ias: 48, oas: 48 })
    expect([p.startLevel, p.pgdBits]).toEqual([1, 6])
  })

  it('B6 64K with oas 52: pgsize_bitmap = 64K | 512M | 4T', () => {
    const h = table({ stage: 1, granule: 65536, ias: 52, oas: 52 })
    expect(h.table.pgsizeBitmap).toBe((1n << 16n) | (1n << 29n) | (1n << 42n))
    // A 4T block at L1 (the architecture's level 1) with 52-bit PA.
    h.table.mapRange(1n << 42n, 0xf_0000_0000_0000n - (1n << 42n), 1n << 42n, R | W)
    expect(leaf(h.table, 1n << 42n).level).toBe(2)
    expect(h.table.iovaToPhys((1n << 43n) - 1n)).toBe(0xf_0000_0000_0000n - 1n)
    expect(h.finish()).toBe(0)
  })

  it('B6b 64K with oas <= 48 has no 4T block, from the shorthand and the explicit bitmap alike', () => {
    // arm_lpae_restrict_pgsizes adds 1 << 42 only when cfg->oas > 48.
    const all = (1n << 16n) | (1n << 29n) | (1n << 42n)
    for (const oas of [40, 44, 48]) {
      const short = armLpae.init({ stage: 1, granule: 65536, ias: 48, oas })
      const explicit = armLpae.init({ stage: 1, pgsizeBitmap: all, ias: 48, oas })
      expect(short.pgsizeBitmap).toBe((1n << 16n) | (1n << 29n))
      expect(explicit).toEqual(short)
    }
    for (const oas of [52, 56]) {
      const short = armLpae.init({ stage: 2, granule: 65536, ias: 52, oas })
      expect(short.pgsizeBitmap).toBe(all)
      expect(armLpae.init({ stage: 2, pgsizeBitmap: all, ias: 52, oas })).toEqual(short)
    }
    // The 4K and 16K shorthands equal their explicit bitmaps too.
    const b4k = (1n << 12n) | (1n << 21n) | (1n << 30n)
    const b16k = (1n << 14n) | (1n << 25n)
    expect(armLpae.init({ stage: 1, granule: 4096, ias: 48, oas: 48 })).toEqual(
      armLpae.init({ stage: 1, pgsizeBitmap: b4k, ias: 48, oas: 48 }),
    )
    expect(armLpae.init({ stage: 1, granule: 16384, ias: 48, oas: 48 })).toEqual(
      armLpae.init({ stage: 1, pgsizeBitmap: b16k, ias: 48, oas: 48 }),
    )
  })

  it('B7 the granule follows the CPU page: 4K|16K|2M|32M|1G from the SMMU gives 4K|2M|1G', () => {
    const bitmap = (1n << 12n) | (1n << 14n) | (1n << 21n) | (1n << 25n) | (1n << 30n)
    const h = table({ stage: 1, pgsizeBitmap: bitmap, ias: 48, oas: 48 })
    expect(h.table.pgsizeBitmap).toBe((1n << 12n) | (1n << 21n) | (1n << 30n))
    expect(h.finish()).toBe(0)
  })
})

describe('§4.3 ARM LPAE stage 2, 4K granule', () => {
  const leaves: [string, number, ArmLpaeConfig, bigint][] = [
    ['C1 R|W|C: HAP_R|W, MemAttr OIWB, SH_IS', R | W | C, S2, 0x0000_0000_0008_07ffn],
    ['C2 R|W: MemAttr NC, SH_OS', R | W, S2, 0x0000_0000_0008_06d7n],
    ['C3 R|C', R | C, S2, 0x0000_0000_0008_077fn],
    ['C4 R|W|M: MemAttr DEV', R | W | M, S2, 0x0000_0000_0008_06c7n],
    [
      'C5 R|W|C with S2FWB: MemAttr FWB_WB',
      R | W | C,
      { ...S2, quirks: IoPgtableQuirk.ARM_S2FWB },
      0x0000_0000_0008_07dbn,
    ],
    ['C6 R|W|C|X: XN', R | W | C | X, S2, 0x0060_0000_0008_07ffn],
  ]
  for (const [name, prot, cfg, pte] of leaves) {
    it(`${name} = 0x${pte.toString(16).padStart(16, '0')}`, () => {
      const h = table(cfg)
      h.table.mapRange(0x1000n, 0x8_0000n, 0x1000n, prot)
      expect(leaf(h.table, 0x1000n).pte).toBe(pte)
      expect(h.finish()).toBe(0)
    })
  }

  it('C7 2M block R|W|C = 0x400007fd', () => {
    const h = table(S2)
    h.table.mapRange(0x20_0000n, 0x4000_0000n, 0x20_0000n, R | W | C)
    expect(leaf(h.table, 0x20_0000n).pte).toBe(0x0000_0000_4000_07fdn)
    expect(h.finish()).toBe(0)
  })

  it('C8 read_and_clear_dirty on a stage-2 table is EINVAL (only ARM_64_LPAE_S1 tracks)', () => {
    const h = table(S2)
    h.table.mapRange(0x1000n, 0x8_0000n, 0x1000n, R | W)
    expect(code(() => h.table.readAndClearDirty(0x1000n, 0x1000n, 0, recorder().dirty))).toBe(
      'EINVAL',
    )
    expect(h.finish()).toBe(0)
  })
})

describe('§4.3 geometry vectors (TCR/VTCR)', () => {
  const vtcr: [string, ArmLpaeConfig, number, number, number, number, number, number][] = [
    // name, cfg, start level, PGD entries, PGD frames, SL0, PS, T0SZ
    [
      'G1 S2 4K 40/40: mandatory concat (2 tables), start 1',
      { stage: 2, ias: 40, oas: 40 },
      1,
      1024,
      2,
      1,
      2,
      24,
    ],
    [
      'G2 S2 4K ias 40 oas 48: no concat, start 0 (old kernels concatenated: SL0 1)',
      { stage: 2, ias: 40, oas: 48 },
      0,
      2,
      1,
      2,
      5,
      24,
    ],
    ['G3 S2 4K 42/42: 8 concatenated tables', { stage: 2, ias: 42, oas: 42 }, 1, 4096, 8, 1, 3, 22],
    [
      'G4 S2 16K 48/48: 2 concatenated tables',
      { stage: 2, granule: 16384, ias: 48, oas: 48 },
      1,
      4096,
      8,
      2,
      5,
      16,
    ],
    [
      'G5 S2 16K 40/40: 16 concatenated tables, start 2',
      { stage: 2, granule: 16384, ias: 40, oas: 40 },
      2,
      32768,
      64,
      1,
      2,
      24,
    ],
    [
      'G6 S2 64K 48/48: start 1, 64 entries, no concat',
      { stage: 2, granule: 65536, ias: 48, oas: 48 },
      1,
      64,
      1,
      2,
      5,
      16,
    ],
  ]
  for (const [name, cfg, start, entries, frames, sl, ps, tsz] of vtcr) {
    it(`${name}: SL0 ${sl}, PS ${ps}`, () => {
      const h = table(cfg)
      const p = h.table.params
      expect(p.startLevel).toBe(start)
      expect(2 ** p.pgdBits).toBe(entries)
      expect(h.pgtableFrames()).toBe(frames)
      expect(h.table.root.pfn % frames).toBe(0)
      const info = h.table.hwInfo() as { vttbr: bigint; vtcr: Record<string, number> }
      expect(info.vttbr).toBe(BigInt(h.table.root.pfn) << 12n)
      expect(info.vtcr).toMatchObject({ sl, ps, tsz, sh: 3, irgn: 1, orgn: 1 })
      // The last page of the input space (concatenated-PGD index corner case).
      const page = BigInt(cfg.granule ?? 4096)
      const last = (1n << BigInt(cfg.ias)) - page
      h.table.mapRange(last, page, page, R | W)
      expect(h.table.iovaToPhys(last + page - 1n)).toBe(2n * page - 1n)
      expect(h.finish()).toBe(0)
    })
  }

  it('G7 S1 4K 48/48 coherent: TCR tsz 16, tg 0, ips 5, sh IS, WBWA; MAIR 0xf404ff44', () => {
    const h = table(S1)
    const info = h.table.hwInfo() as { ttbr: bigint; tcr: Record<string, number>; mair: bigint }
    expect(info.tcr).toEqual({ tsz: 16, tg: 0, ips: 5, sh: 3, irgn: 1, orgn: 1 })
    expect(info.mair).toBe(0x0000_0000_f404_ff44n)
    expect(info.ttbr).toBe(BigInt(h.table.root.pfn) << 12n)
    expect(h.finish()).toBe(0)
  })

  it('TCR of a non-coherent walker: sh OS, irgn/orgn NC (OUTER_WBWA: orgn WBWA); TG1 encodings with TTBR1', () => {
    const nc = armLpae.hwInfo(0x100, 3, armLpae.init({ ...S1, coherentWalk: false })) as {
      tcr: object
    }
    expect(nc.tcr).toMatchObject({ sh: 2, irgn: 0, orgn: 0 })
    const wbwa = armLpae.init({ ...S1, coherentWalk: false, quirks: IoPgtableQuirk.ARM_OUTER_WBWA })
    expect((armLpae.hwInfo(0x100, 3, wbwa) as { tcr: object }).tcr).toMatchObject({ orgn: 1 })
    const tg1 = [4096, 16384, 65536].map(
      (granule) =>
        (
          armLpae.hwInfo(
            0x100,
            3,
            armLpae.init({ ...S1, granule: granule as 4096, quirks: IoPgtableQuirk.ARM_TTBR1 }),
          ) as {
            tcr: { tg: number }
          }
        ).tcr.tg,
    )
    expect(tg1).toEqual([2, 1, 3])
  })

  // §1.1.5 levels / start level / PGD entries (pre-concatenation), stage 1.
  const levels: [number, number, string][] = [
    [4096, 32, '3/1/4'],
    [4096, 36, '3/1/64'],
    [4096, 39, '3/1/512'],
    [4096, 40, '4/0/2'],
    [4096, 42, '4/0/8'],
    [4096, 44, '4/0/32'],
    [4096, 48, '4/0/512'],
    [16384, 32, '2/2/128'],
    [16384, 36, '2/2/2048'],
    [16384, 39, '3/1/8'],
    [16384, 40, '3/1/16'],
    [16384, 42, '3/1/64'],
    [16384, 44, '3/1/256'],
    [16384, 48, '4/0/2'],
    [65536, 32, '2/2/8'],
    [65536, 36, '2/2/128'],
    [65536, 39, '2/2/1024'],
    [65536, 40, '2/2/2048'],
    [65536, 42, '2/2/8192'],
    [65536, 44, '3/1/4'],
    [65536, 48, '3/1/64'],
    [65536, 52, '3/1/1024'],
  ]
  for (const [granule, ias, want] of levels) {
    it(`${granule / 1024}K ias ${ias}: levels/start/PGD entries ${want}`, () => {
      const p = armLpae.init({ stage: 1, granule: granule as 4096, ias, oas: 52 > ias ? 48 : 52 })
      expect(`${4 - p.startLevel}/${p.startLevel}/${2 ** p.pgdBits}`).toBe(want)
    })
  }
})

describe('§4.4 ARM semantic vectors (newest io-pgtable-arm)', () => {
  it('S1 map over a leaf is EEXIST (arm_lpae_init_pte: "we require an unmap first"), PTE and progress unchanged', () => {
    const h = table(S1)
    h.table.mapRange(0x1000n, 0x8_0000n, 0x1000n, R | W)
    let err: IommuError | undefined
    try {
      h.table.mapRange(0x1000n, 0x9_0000n, 0x1000n, R | W)
    } catch (e) {
      err = e as IommuError
    }
    expect(err?.code).toBe('EEXIST')
    expect(err?.progress).toBe(0n)
    expect(leaf(h.table, 0x1000n).pte).toBe(0x0000_0000_0008_0e43n)
    expect(h.finish()).toBe(0)
  })

  it('S2 unmap of 4K inside a 2M block returns 0 (split on unmap removed in v6.13/6.14) and keeps the block', () => {
    const h = table(S1)
    h.table.mapRange(0x20_0000n, 0x4000_0000n, 0x20_0000n, R | W | C)
    expect(h.table.unmapPages(0x20_0000n, 0x1000n, 1, h.gather)).toBe(0n)
    expect(h.table.unmapRange(0x20_0000n, 0x1000n, h.gather)).toBe(0n)
    expect(leaf(h.table, 0x20_0000n).pte).toBe(0x0000_0000_4000_0f45n)
    expect(h.gather.empty).toBe(true)
    expect(h.finish()).toBe(0)
  })

  it('S3 a 2M map over a table of 4K pages frees the table after a walk flush and installs the block', () => {
    const h = table(S1)
    h.table.mapRange(0x20_0000n, 0x1000_1000n, 0x20_0000n, R | W)
    expect(leaf(h.table, 0x3f_f000n).level).toBe(0)
    const frames = h.pgtableFrames()
    h.table.mapRange(0x20_0000n, 0x4000_0000n, 0x20_0000n, R | W | C)
    expect(h.syncs).toBe(1)
    expect(h.pgtableFrames()).toBe(frames - 1)
    expect(leaf(h.table, 0x3f_f000n).pte).toBe(0x0000_0000_4000_0f45n)
    expect(h.table.iovaToPhys(0x3f_f000n)).toBe(0x401f_f000n)
    expect(h.finish()).toBe(0)
  })

  it('S4 map_pages(4K x 1024) at 0x1ff000 maps only the last entry of the L3 table (arm_lpae_max_entries)', () => {
    const h = table(S1)
    expect(h.table.mapPages(0x1f_f000n, 0x1f_f000n, 0x1000n, 1024, R | W)).toBe(0x1000n)
    expect(h.table.iovaToPhys(0x20_0000n)).toBe(0n)
    // The core loops for the rest (mapRange does).
    expect(h.table.mapRange(0x20_0000n, 0x20_0000n, 0x3ff000n, R | W)).toBe(0x3ff000n)
    expect(h.finish()).toBe(0)
  })

  it('S5 unmap of an unmapped IOVA returns 0', () => {
    const h = table(S1)
    expect(h.table.unmapPages(0x1000n, 0x1000n, 1, h.gather)).toBe(0n)
    expect(h.finish()).toBe(0)
  })

  it('S6 unmap(0x200000, 2M) of a table of 4K pages clears it, flushes the walk, frees the subtree, returns 2M', () => {
    const h = table(S1)
    h.table.mapRange(0x20_0000n, 0x1000_1000n, 0x20_0000n, R | W)
    const frames = h.pgtableFrames()
    expect(h.table.unmapPages(0x20_0000n, 0x20_0000n, 1, h.gather)).toBe(0x20_0000n)
    expect(h.syncs).toBe(1)
    expect(h.pgtableFrames()).toBe(frames - 1)
    expect([h.gather.start, h.gather.end]).toEqual([0x20_0000n, 0x3f_ffffn])
    expect(h.table.iovaToPhys(0x20_0000n)).toBe(0n)
    expect(h.finish()).toBe(0)
  })

  it('S7 a map without READ or WRITE is EINVAL (older kernels: 0)', () => {
    const h = table(S1)
    expect(code(() => h.table.mapRange(0x1000n, 0x8_0000n, 0x1000n, C))).toBe('EINVAL')
    expect(h.finish()).toBe(0)
  })

  it('S8 a PA at or above 2^oas is ERANGE', () => {
    const h = table({ stage: 1, ias: 48, oas: 40 })
    expect(code(() => h.table.mapRange(0x1000n, 1n << 40n, 0x1000n, R | W))).toBe('ERANGE')
    expect(h.finish()).toBe(0)
  })

  it('S9 unmap returns 0x1000 and the L3 table stays allocated (io-pgtable-arm never frees on unmap)', () => {
    const h = table(S1)
    h.table.mapRange(0x1000n, 0x8_0000n, 0x1000n, R | W)
    const frames = h.pgtableFrames()
    expect(h.table.unmapPages(0x1000n, 0x1000n, 1, h.gather)).toBe(0x1000n)
    h.gather.releaseFreelist()
    expect(h.pgtableFrames()).toBe(frames)
    expect(h.finish()).toBe(0)
  })

  it('map_pages with a page size outside the bitmap is EINVAL; an IOVA above ias is ERANGE', () => {
    const h = table({ stage: 1, ias: 32, oas: 48 })
    expect(code(() => h.table.mapPages(0n, 0n, 0x2000n, 1, R | W))).toBe('EINVAL')
    expect(code(() => h.table.mapPages(1n << 32n, 0n, 0x1000n, 1, R | W))).toBe('ERANGE')
    // The core checks alignment to the smallest page first: EINVAL.
    expect(code(() => h.table.mapRange(0x800n, 0n, 0x1000n, R | W))).toBe('EINVAL')
    expect(h.finish()).toBe(0)
  })

  it('iova_to_phys masks the IOVA to ias like ARM_LPAE_LVL_IDX (an IOVA above ias aliases)', () => {
    const h = table({ stage: 1, ias: 32, oas: 48 })
    h.table.mapRange(0x1000n, 0x8_0000n, 0x1000n, R | W)
    expect(h.table.iovaToPhys((1n << 32n) + 0x1234n)).toBe(0x8_0234n)
    expect(h.finish()).toBe(0)
  })

  it('read_and_clear_dirty fails on a hole with EINVAL, after recording what came before it', () => {
    const h = table({ ...S1, quirks: IoPgtableQuirk.ARM_HD })
    h.table.mapRange(0x1000n, 0x8_0000n, 0x1000n, R | W)
    const r = recorder()
    expect(code(() => h.table.readAndClearDirty(0x1000n, 0x2000n, 0, r.dirty))).toBe('EINVAL')
    expect(r.records).toEqual([[1, 1]])
    expect(code(() => h.table.readAndClearDirty(0x1000n, 0n, 0, r.dirty))).toBe('EINVAL')
    expect(h.finish()).toBe(0)
  })

  it('allocation rules: quirks per stage, oas values, OUTER_WBWA with a coherent walk, concat limit', () => {
    expect(code(() => armLpae.init({ ...S2, quirks: IoPgtableQuirk.ARM_HD }))).toBe('EINVAL')
    expect(code(() => armLpae.init({ ...S1, quirks: IoPgtableQuirk.ARM_S2FWB }))).toBe('EINVAL')
    expect(code(() => armLpae.init({ ...S1, oas: 38 }))).toBe('EINVAL')
    expect(code(() => armLpae.init({ ...S1, quirks: IoPgtableQuirk.ARM_OUTER_WBWA }))).toBe(
      'EINVAL',
    )
    // ias/oas above the granule's maximum are clamped (48 bits below 64K).
    expect(armLpae.init({ stage: 1, ias: 52, oas: 52 }).ias).toBe(48)
    expect(code(() => armLpae.init({ stage: 1, pgsizeBitmap: 1n << 21n, ias: 48, oas: 48 }))).toBe(
      'EINVAL',
    )
  })
})

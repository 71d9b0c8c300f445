/**
 * The page-table decoders against the formats themselves: every field the format's own
 * constants name sits where the decoder says, and decoding entries the format wrote gives
 * back what was mapped (output address, permissions, size, contiguity, A/D).
 */

import { Prot } from '@iommu/core'
import {
  AMDV1_PTE,
  ARM_LPAE_PTE,
  amdv1,
  armLpae,
  VTDSS_PTE,
  vtdss,
  X86_64_PTE,
  x86_64,
} from '@iommu/io-pgtable'
import { tableHarness } from '@iommu/io-pgtable/testing'
import { describe, expect, it } from 'vitest'
import { decodeRow, readTable, tableSource, treeStats, walkRows } from '../model/pgtable.ts'
import { fieldValue, type Layout, layoutProblems } from './bitfield.ts'
import { AMDV1_PDE, AMDV1_PTE_LAYOUT, amdv1EncodedSizeLg2, pteLayout } from './pte.ts'

/** The mask a layout gives a field (bits of a 64-bit entry). */
function mask(layout: Layout, name: string): bigint {
  const f = layout.fields.find((x) => x.name === name)
  if (f === undefined) throw new Error(`${layout.name} has no ${name}`)
  return ((1n << BigInt(f.hi - f.lo + 1)) - 1n) << BigInt(f.lo)
}

/** A [lo, hi] word mask of the format constants as a 64-bit mask. */
const lo = (m: number) => BigInt(m >>> 0)
const hi = (m: number) => BigInt(m >>> 0) << 32n

describe('layouts', () => {
  it('every PTE layout covers 64 bits without overlaps', () => {
    for (const f of ['amdv1', 'vtdss', 'x86_64', 'arm-lpae']) {
      for (const kind of ['table', 'leaf'] as const) {
        for (const stage of [1, 2] as const) {
          const l = pteLayout(f, kind, stage)
          expect(l, f).not.toBeNull()
          expect(layoutProblems(l as Layout), `${f} ${kind}`).toEqual([])
        }
      }
    }
  })

  it('AMD v1 fields sit on the format’s own bits (AMDV1PT_FMT_*)', () => {
    expect(mask(AMDV1_PTE_LAYOUT, 'PR')).toBe(lo(AMDV1_PTE.PR))
    expect(mask(AMDV1_PTE_LAYOUT, 'A')).toBe(lo(AMDV1_PTE.A))
    expect(mask(AMDV1_PTE_LAYOUT, 'D')).toBe(lo(AMDV1_PTE.D))
    expect(mask(AMDV1_PTE_LAYOUT, 'NextLevel')).toBe(7n << BigInt(AMDV1_PTE.NL_SHIFT))
    expect(mask(AMDV1_PTE_LAYOUT, 'FC')).toBe(hi(AMDV1_PTE.FC_HI))
    expect(mask(AMDV1_PTE_LAYOUT, 'IR')).toBe(hi(AMDV1_PTE.IR_HI))
    expect(mask(AMDV1_PTE_LAYOUT, 'IW')).toBe(hi(AMDV1_PTE.IW_HI))
    expect(mask(AMDV1_PDE, 'IR')).toBe(hi(AMDV1_PTE.IR_HI))
  })

  it('VT-d, x86-64 and ARM fields sit on the formats’ own bits', () => {
    const vl = pteLayout('vtdss', 'leaf') as Layout
    expect(mask(vl, 'R')).toBe(lo(VTDSS_PTE.R))
    expect(mask(vl, 'W')).toBe(lo(VTDSS_PTE.W))
    expect(mask(vl, 'PS')).toBe(lo(VTDSS_PTE.PS))
    expect(mask(vl, 'A')).toBe(lo(VTDSS_PTE.A))
    expect(mask(vl, 'D')).toBe(lo(VTDSS_PTE.D))
    expect(mask(vl, 'SNP')).toBe(lo(VTDSS_PTE.SNP))
    const xl = pteLayout('x86_64', 'leaf') as Layout
    expect(mask(xl, 'P')).toBe(lo(X86_64_PTE.P))
    expect(mask(xl, 'R/W')).toBe(lo(X86_64_PTE.RW))
    expect(mask(xl, 'U/S')).toBe(lo(X86_64_PTE.U))
    expect(mask(xl, 'A')).toBe(lo(X86_64_PTE.A))
    expect(mask(xl, 'D')).toBe(lo(X86_64_PTE.D))
    expect(mask(xl, 'PS')).toBe(lo(X86_64_PTE.PS))
    expect(mask(xl, 'XD')).toBe(hi(X86_64_PTE.XD_HI))
    const a1 = pteLayout('arm-lpae', 'leaf', 1) as Layout
    const a2 = pteLayout('arm-lpae', 'leaf', 2) as Layout
    expect(mask(a1, 'AF')).toBe(lo(ARM_LPAE_PTE.AF))
    expect(mask(a1, 'nG')).toBe(lo(ARM_LPAE_PTE.NG))
    expect(mask(a1, 'NS')).toBe(lo(ARM_LPAE_PTE.NS))
    expect(mask(a1, 'AP')).toBe(lo(ARM_LPAE_PTE.AP_UNPRIV | ARM_LPAE_PTE.AP_RDONLY))
    expect(mask(a1, 'SH')).toBe(lo(ARM_LPAE_PTE.SH_IS))
    expect(mask(a1, 'DBM')).toBe(hi(ARM_LPAE_PTE.DBM_HI))
    expect(mask(a1, 'PXN') | mask(a1, 'UXN')).toBe(hi(ARM_LPAE_PTE.XN_HI))
    expect(mask(a1, 'SW_SYNC')).toBe(hi(ARM_LPAE_PTE.SW_SYNC_HI))
    expect(mask(a2, 'S2AP')).toBe(lo(ARM_LPAE_PTE.HAP_READ | ARM_LPAE_PTE.HAP_WRITE))
    expect(mask(pteLayout('arm-lpae', 'table') as Layout, 'NSTable')).toBe(
      hi(ARM_LPAE_PTE.NSTABLE_HI),
    )
  })
})

describe('AMD v1 entries the format wrote', () => {
  it('decodes 4 KiB leaves, the PDEs above them and the walk to a leaf', () => {
    const h = tableHarness(amdv1, { startingLevel: 2, hwMaxVaBits: 48, forceCoherence: true })
    h.table.map(0x1_0000, 0x4_2000, 1, Prot.READ | Prot.WRITE)
    h.table.map(0x1_0001, 0x4_3000, 1, Prot.READ)
    const src = tableSource(h.table)
    const path = walkRows(src, 0x1_0001n << 12n)
    expect(path.map((r) => [r.level, r.kind])).toEqual([
      [2, 'table'],
      [1, 'table'],
      [0, 'leaf'],
    ])
    const pde = decodeRow(src, path[0] as (typeof path)[number])
    expect(pde.layout).toBe(AMDV1_PDE)
    // A PDE names its child's 1-based level and grants both permissions.
    expect(fieldValue(pde, 'NextLevel')).toBe(2n)
    expect(fieldValue(pde, 'NextTableAddress')).toBe(BigInt(path[1]?.pa ?? 0) >> 12n)
    expect(fieldValue(pde, 'IR')).toBe(1n)
    expect(fieldValue(pde, 'IW')).toBe(1n)
    const leaf = decodeRow(src, path[2] as (typeof path)[number])
    expect(fieldValue(leaf, 'PR')).toBe(1n)
    expect(fieldValue(leaf, 'NextLevel')).toBe(0n)
    expect(fieldValue(leaf, 'PageAddress')).toBe(0x4_3000n)
    expect(fieldValue(leaf, 'IR')).toBe(1n)
    expect(fieldValue(leaf, 'IW')).toBe(0n)
    expect(fieldValue(leaf, 'FC')).toBe(1n)
    expect(fieldValue(leaf, 'D')).toBe(0n)
    // The leaf's raw entry is what the table holds at that IOVA.
    const walk = h.table.pgtableWalk(0x1_0001n << 12n)
    expect(path.map((r) => r.raw)).toEqual(walk.map((w) => w.pte))
    expect(path.map((r) => BigInt(r.pa))).toEqual(walk.map((w) => w.pa))
  })

  it('decodes a NextLevel = 7 contiguous leaf and its encoded size', () => {
    const h = tableHarness(amdv1, { startingLevel: 2, hwMaxVaBits: 48 })
    // 64 KiB: 16 replicated level-0 entries with the size in the address (spec Table 14).
    h.table.map(0x200, 0x8_0000, 16, Prot.READ | Prot.WRITE)
    const src = tableSource(h.table)
    const leaf = walkRows(src, 0x205n << 12n).at(-1)
    expect(leaf?.kind).toBe('leaf')
    expect(leaf?.replicas).toBe(16)
    expect(leaf?.sizeLg2).toBe(16)
    expect(leaf?.oaPfn).toBe(0x8_0000)
    expect(leaf?.replicaRaw).toHaveLength(16)
    const d = decodeRow(src, leaf as NonNullable<typeof leaf>)
    expect(fieldValue(d, 'NextLevel')).toBe(7n)
    expect(amdv1EncodedSizeLg2(leaf?.raw ?? 0n)).toBe(16)
    expect(d.fields.find((f) => f.name === 'PageAddress')?.meaning).toBe(
      'PA 0x8000_0000 (low bits encode 64 KiB)',
    )
    expect(treeStats(src).bySize.get(16)).toBe(1)
  })

  it('reads a 2 MiB leaf at level 1 and counts the tree', () => {
    const h = tableHarness(amdv1, { startingLevel: 2, hwMaxVaBits: 48 })
    h.table.map(0x400, 0x1_0000, 512, Prot.READ | Prot.WRITE)
    h.table.map(0x800, 0x2_0000, 3, Prot.READ)
    const src = tableSource(h.table)
    const s = treeStats(src)
    expect(s.bySize.get(21)).toBe(1)
    // Three pages become an 8 KiB contiguous leaf plus a 4 KiB one (every size is allowed).
    expect(s.bySize.get(13)).toBe(1)
    expect(s.bySize.get(12)).toBe(1)
    expect(s.tables).toBe(3)
    const l1 = readTable(src, walkRows(src, 0n)[0]?.childPfn ?? -1, 1, 0n)
    expect(l1.map((r) => [r.index, r.kind, r.sizeLg2])).toEqual([
      [2, 'leaf', 21],
      [4, 'table', 21],
    ])
  })
})

describe('the other formats', () => {
  it('VT-d second stage: R/W, PS on a 2 MiB leaf, the address', () => {
    const h = tableHarness(vtdss, { topLevel: 3 })
    h.table.map(0x400, 0x1_0000, 512, Prot.READ | Prot.WRITE)
    h.table.map(0x1000, 0x3_0001, 1, Prot.READ)
    const src = tableSource(h.table)
    const big = decodeRow(src, walkRows(src, 0x400n << 12n).at(-1) as never)
    expect(fieldValue(big, 'PS')).toBe(1n)
    expect(fieldValue(big, 'R')).toBe(1n)
    expect(fieldValue(big, 'W')).toBe(1n)
    expect(fieldValue(big, 'ADDR')).toBe(0x1_0000n)
    const small = decodeRow(src, walkRows(src, 0x1000n << 12n).at(-1) as never)
    expect(fieldValue(small, 'W')).toBe(0n)
    expect(fieldValue(small, 'ADDR')).toBe(0x3_0001n)
  })

  it('x86-64: present, writable, the address', () => {
    const h = tableHarness(x86_64, { topLevel: 3 })
    h.table.map(0x10, 0x777, 1, Prot.READ | Prot.WRITE)
    const src = tableSource(h.table)
    const d = decodeRow(src, walkRows(src, 0x10n << 12n).at(-1) as never)
    expect(fieldValue(d, 'P')).toBe(1n)
    expect(fieldValue(d, 'R/W')).toBe(1n)
    expect(fieldValue(d, 'ADDR')).toBe(0x777n)
  })

  it('ARM LPAE stage 1: a page at level 3, AF, read-only AP, the output address', () => {
    const h = tableHarness(armLpae, { stage: 1, ias: 48, oas: 48 })
    h.table.map(0x10, 0x999, 1, Prot.READ)
    const src = tableSource(h.table)
    const leaf = walkRows(src, 0x10n << 12n).at(-1)
    expect(leaf?.level).toBe(0)
    const d = decodeRow(src, leaf as never)
    expect(d.layout.name).toBe('ARM stage 1 block/page descriptor')
    expect(fieldValue(d, 'Valid')).toBe(1n)
    expect(fieldValue(d, 'Type')).toBe(1n)
    expect(fieldValue(d, 'AF')).toBe(1n)
    expect(fieldValue(d, 'AP') & 2n).toBe(2n)
    expect(fieldValue(d, 'OutputAddress')).toBe(0x999n)
  })

  it('ARM LPAE stage 2: S2AP read/write', () => {
    const h = tableHarness(armLpae, { stage: 2, ias: 40, oas: 40 })
    h.table.map(0x10, 0x999, 1, Prot.READ | Prot.WRITE)
    const src = tableSource(h.table)
    expect(src.stage).toBe(2)
    const d = decodeRow(src, walkRows(src, 0x10n << 12n).at(-1) as never)
    expect(fieldValue(d, 'S2AP')).toBe(3n)
  })
})

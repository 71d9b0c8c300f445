/**
 * The format conformance kit: a vitest suite a page-table format runs against itself, in
 * the spirit of the kernel's KUnit tests (`kunit_generic_pt.h`, `kunit_iommu_pt.h`,
 * `io-pgtable-arm-selftests.c`). Expectations that differ between the kernel's two
 * implementations (the format's `algorithm`) are asserted per implementation.
 *
 * @example
 * ```ts
 * import { describeFormatConformance } from '@iommu/io-pgtable/testing'
 * describeFormatConformance(amdv1, [{ startingLevel: 2 }, { startingLevel: 2, hwMaxVaBits: 32 }])
 * ```
 *
 * @module
 */

import {
  IOMMU_DIRTY_NO_CLEAR,
  IommuDirtyBitmap,
  type IommuError,
  IotlbGather,
  Prot,
} from '@iommu/core'
import type * as Vitest from 'vitest'
import {
  Access,
  type AnyPageTableFormat,
  EntryType,
  type FormatParams,
  HwAd,
  type PageTableFormat,
  WalkFault,
} from '../format.ts'
import type { PageTable } from '../page-table.ts'
import type { PageTableOptions } from '../table.ts'
import { countLeaves, errnoOf, leafTotal, type TableHarness, tableHarness } from './helpers.ts'
import { type PropertyOptions, propertyCase } from './property.ts'

// vitest is an optional peer: the helpers of this entry point work without it.
let vitest: typeof Vitest | null = null
try {
  vitest = await import('vitest')
} catch {
  vitest = null
}

function vt(): typeof Vitest {
  if (vitest === null) throw new Error('describeFormatConformance needs vitest (a peer dependency)')
  return vitest
}

/** One configuration to run the suite on. */
export interface FormatConfigCase<Cfg> {
  /** Title of the configuration's block. */
  readonly name: string
  /** The format configuration. */
  readonly cfg: Cfg
  /** Page-table options (hooks are the harness's unless given here). */
  readonly options?: PageTableOptions
}

/** Options of {@link describeFormatConformance}. */
export interface FormatConformanceOptions {
  /** Title of the suite (default: the format's name). */
  readonly name?: string
  /** The property test's effort, or false to leave it out. */
  readonly property?: PropertyOptions | false
}

const RW = Prot.READ | Prot.WRITE
const TEST_OA = 0x74a7_1445_dead_beefn

/** The errno a mapping conflict gives under the format's kernel implementation. */
export function conflictErrno(format: AnyPageTableFormat): 'EEXIST' | 'EADDRINUSE' {
  return format.algorithm === 'io-pgtable-arm' ? 'EEXIST' : 'EADDRINUSE'
}

function sizesOf(bitmap: bigint): bigint[] {
  const out: bigint[] = []
  for (let s = 0n; s < 64n; s++) if ((bitmap >> s) & 1n) out.push(1n << s)
  return out
}

function alignUp(x: bigint, a: bigint): bigint {
  return (x + a - 1n) & ~(a - 1n)
}

interface Env {
  readonly pt: PageTable
  readonly h: TableHarness<unknown>
  readonly params: FormatParams
  /** Sizes that fit comfortably in the input space (kunit's safe_pgsize_bitmap). */
  readonly sizes: bigint[]
  readonly smallest: bigint
  readonly oaMask: bigint
  readonly conflict: 'EEXIST' | 'EADDRINUSE'
  readonly arm: boolean
}

function env(format: AnyPageTableFormat, c: FormatConfigCase<unknown>): Env {
  const h = tableHarness(format, c.cfg, c.options ?? {}) as TableHarness<unknown>
  const pt = h.table as PageTable
  const g = pt.geometry
  const vaBits = (g.apertureEnd - g.apertureStart + 1n).toString(2).length - 1
  const safe = pt.pgsizeBitmap & ((1n << BigInt(Math.max(vaBits - 1, 0))) - 1n)
  const sizes = sizesOf(safe)
  return {
    pt,
    h,
    params: pt.params,
    sizes,
    smallest: sizes[0] ?? 4096n,
    oaMask: (1n << BigInt(pt.params.oaBits)) - 1n,
    conflict: conflictErrno(format),
    arm: format.algorithm === 'io-pgtable-arm',
  }
}

function oaFor(e: Env, size: bigint): bigint {
  return TEST_OA & e.oaMask & ~(size - 1n)
}

/** Run `body` on a fresh table; the table must give back every frame. */
function withTable(
  format: AnyPageTableFormat,
  c: FormatConfigCase<unknown>,
  body: (e: Env) => void,
): void {
  const { expect } = vt()
  const e = env(format, c)
  body(e)
  expect(e.h.finish(), 'page-table frames leaked').toBe(0)
}

/**
 * describeFormatConformance() - register the conformance suite of `format` for each
 * configuration: empty table; map / overlap / iova-to-phys at every page size; unmap and
 * remap; the last page of the input space; a larger IOPTE over emptied tables; unmap of a
 * part of a larger IOPTE; the page-size boundary and mixed-size cases; top growth;
 * entry encodings; the dirty round trip; the split/merge round trip; and a fast-check
 * property test against a reference map. Every case checks that the table's frames come
 * back.
 */
export function describeFormatConformance<Cfg, P extends FormatParams>(
  format: PageTableFormat<Cfg, P>,
  configs: readonly (Cfg | FormatConfigCase<Cfg>)[],
  options: FormatConformanceOptions = {},
): void {
  const { describe, it } = vt()
  const fmt = format as AnyPageTableFormat
  describe(options.name ?? `${format.name} format conformance`, () => {
    for (const raw of configs) {
      const c = (
        typeof raw === 'object' && raw !== null && 'cfg' in raw
          ? raw
          : {
              name: JSON.stringify(raw, (_k, v) =>
                typeof v === 'bigint' ? `0x${v.toString(16)}` : v,
              ),
              cfg: raw,
            }
      ) as FormatConfigCase<unknown>
      describe(c.name, () => {
        it('an empty table translates nothing', () => withTable(fmt, c, emptyTable))
        it('maps every page size once, refuses an overlap, translates', () =>
          withTable(fmt, c, mapEverySize))
        it('unmaps and remaps every page size', () => withTable(fmt, c, unmapRemap))
        it('maps and unmaps the last largest page of the input space', () =>
          withTable(fmt, c, lastPage))
        it('maps larger IOPTEs over emptied tables', () => withTable(fmt, c, tableToOa))
        it('unmap of a part of a larger IOPTE follows the kernel', () =>
          withTable(fmt, c, unmapSplit))
        it('chooses page sizes by PA alignment too (pgsize boundary, mixed)', () =>
          withTable(fmt, c, mixedSizes))
        it('grows the top on demand (dynamic top)', () => withTable(fmt, c, increaseLevel))
        it('encodes and decodes entries (OA, table, attributes, dirty)', () =>
          withTable(fmt, c, entryEncodings))
        it('level-0 accelerators agree with the per-entry functions', () =>
          withTable(fmt, c, accelerators))
        it('dirty round trip', () => withTable(fmt, c, dirtyRoundTrip))
        it('split/merge round trip keeps translations, attributes and dirty state', () =>
          withTable(fmt, c, splitMerge))
        const property = options.property
        if (property !== false) {
          it('random map/unmap/split/merge agree with a reference map', () =>
            propertyCase(fmt, c.cfg, c.options ?? {}, property ?? {}))
        }
      })
    }
  })
}

// ------------------------------------------------------------------ cases

function emptyTable(e: Env): void {
  const { expect } = vt()
  const start = e.pt.geometry.apertureStart
  for (const off of [42n, (1n << 30n) + 42n, (1n << 31n) + 42n]) {
    expect(e.pt.iovaToPhys(start + off)).toBe(0n)
  }
  expect(leafTotal(e.pt)).toBe(0)
  expect(e.pt.unmapRange(start, e.smallest, e.h.gather)).toBe(0n)
}

function mapEverySize(e: Env): void {
  const { expect } = vt()
  const pt = e.pt
  let va = pt.geometry.apertureStart + e.smallest * 256n
  const placed: [bigint, bigint][] = []
  for (const size of e.sizes) {
    va = alignUp(va, size)
    const pa = oaFor(e, size)
    expect(pt.mapRange(va, pa, size, RW | Prot.NOEXEC | Prot.CACHE)).toBe(size)
    // io-pgtable selftest: an overlapping map must fail, and leave the mapping alone.
    expect(errnoOf(() => pt.mapRange(va, (pa + size) & e.oaMask, size, RW | Prot.NOEXEC))).toBe(
      e.conflict,
    )
    expect(pt.iovaToPhys(va + 42n)).toBe(pa + 42n)
    expect(pt.iovaToPhys(va + size - 1n)).toBe(pa + size - 1n)
    placed.push([va, size])
    va += size
  }
  const census = countLeaves(pt)
  for (const size of e.sizes) expect(census.get(size.toString(2).length - 1)).toBe(1)
  expect(leafTotal(pt)).toBe(e.sizes.length)
  for (const [v, size] of placed) expect(pt.unmapRange(v, size, e.h.gather)).toBe(size)
  expect(leafTotal(pt)).toBe(0)
}

function unmapRemap(e: Env): void {
  const { expect } = vt()
  const pt = e.pt
  let va = pt.geometry.apertureStart
  for (const size of e.sizes) {
    va = alignUp(va, size)
    const pa = oaFor(e, size)
    pt.mapRange(va, pa, size, RW)
    expect(pt.unmapRange(va, size, e.h.gather)).toBe(size)
    expect(pt.iovaToPhys(va + 42n)).toBe(0n)
    // Remap the full block write-only.
    expect(pt.mapRange(va, pa, size, Prot.WRITE)).toBe(size)
    expect(pt.iovaToPhys(va + 42n)).toBe(pa + 42n)
    va += size
  }
}

function lastPage(e: Env): void {
  const { expect } = vt()
  const pt = e.pt
  const size = e.sizes[e.sizes.length - 1] as bigint
  const ends = [pt.geometry.apertureEnd]
  // With sign extension the upper half ends at the top of the 64-bit space.
  if (e.params.signExtend) ends.push((1n << 64n) - 1n)
  for (const end of ends) {
    const va = end + 1n - size
    const pa = oaFor(e, size)
    expect(pt.mapRange(va, pa, size, RW | Prot.NOEXEC | Prot.CACHE)).toBe(size)
    expect(pt.iovaToPhys(end)).toBe(pa + size - 1n)
    expect(pt.unmapRange(va, size, e.h.gather)).toBe(size)
    expect(pt.iovaToPhys(end)).toBe(0n)
  }
}

function tableToOa(e: Env): void {
  const { expect } = vt()
  const pt = e.pt
  // A block two levels up from the smallest page, at most (keeps the per-page unmaps few).
  const limit = e.smallest << BigInt(e.params.bitsPerLevel)
  const max = e.sizes.filter((s) => s <= limit).pop() as bigint
  const base = alignUp(pt.geometry.apertureStart + e.smallest * 256n, max)
  for (const len of e.sizes) {
    if (len > max) break
    // PA offset by one page of this size: every position stays aligned to exactly `len`.
    const pa = oaFor(e, max) + (len === max ? 0n : len)
    expect(pt.mapRange(base, pa, max, RW)).toBe(max)
    for (const off of [0n, max / 2n, max - e.smallest])
      expect(pt.iovaToPhys(base + off)).toBe(pa + off)
    const census = countLeaves(pt)
    expect([...census.keys()]).toEqual([len.toString(2).length - 1])
    expect(census.get(len.toString(2).length - 1)).toBe(Number(max / len))
    if (len === max) {
      expect(pt.unmapRange(base, max, e.h.gather)).toBe(max)
    } else {
      // Half at once, the rest one IOPTE at a time (leaves the emptied tables in place).
      expect(pt.unmapRange(base, max / 2n, e.h.gather)).toBe(max / 2n)
      for (let off = max / 2n; off < max; off += len)
        expect(pt.unmapRange(base + off, len, e.h.gather)).toBe(len)
    }
    expect(leafTotal(pt)).toBe(0)
  }
}

function unmapSplit(e: Env): void {
  const { expect } = vt()
  const pt = e.pt
  const va = pt.geometry.apertureStart
  let count = 0
  for (const base of e.sizes) {
    for (const next of e.sizes) {
      if (next <= base) continue
      const pa = oaFor(e, next)
      pt.mapRange(va, pa, next, RW)
      pt.mapRange(va + next, pa, next, RW)
      const n = pt.unmapRange(va, base, e.h.gather)
      if (e.arm) {
        // io-pgtable-arm no longer splits: a partial unmap of a block removes nothing.
        expect(n).toBe(0n)
        expect(pt.iovaToPhys(va)).toBe(pa)
        expect(pt.unmapRange(va, next, e.h.gather)).toBe(next)
      } else {
        // generic_pt removes the whole IOPTE and reports its size.
        expect(n).toBe(next)
        expect(pt.iovaToPhys(va)).toBe(0n)
      }
      // ... and goes no further.
      expect(pt.iovaToPhys(va + next)).toBe(pa)
      expect(pt.unmapRange(va + next, next, e.h.gather)).toBe(next)
      expect(leafTotal(pt)).toBe(0)
      count++
    }
  }
  expect(count).toBe((e.sizes.length * (e.sizes.length - 1)) / 2)
}

function mixedSizes(e: Env): void {
  const { expect } = vt()
  const pt = e.pt
  const g = pt.geometry
  // test_pgsize_boundary: a 4K-aligned PA limits the leaves to 4K whatever the IOVA.
  if (
    g.apertureStart === 0n &&
    g.apertureEnd >= 0xfef9_ffffn &&
    e.smallest === 4096n &&
    0x20_8b95_d000n <= e.oaMask
  ) {
    pt.mapRange(0xfef8_0000n, 0x20_8b95_d000n, 0x2_0000n, RW)
    expect(countLeaves(pt).get(12)).toBe(32)
    expect(pt.iovaToPhys(0xfef9_f123n)).toBe(0x20_8b97_c123n)
    expect(pt.unmapRange(0xfef8_0000n, 0x2_0000n, e.h.gather)).toBe(0x2_0000n)
  }
  // test_mixed: 14 × 2M, 3 × 1G, 3 × 2M in one range.
  const bitmap = pt.pgsizeBitmap & (((1n << 31n) - 1n) & ~((1n << 21n) - 1n))
  const start = 0x3fe400n << 12n
  const len = (0x4c0600n << 12n) - start
  if (
    bitmap === ((1n << 30n) | (1n << 21n)) &&
    g.apertureStart <= start &&
    g.apertureEnd >= start + len
  ) {
    expect(pt.mapRange(start, start, len, RW)).toBe(len)
    const census = countLeaves(pt)
    expect(census.get(21)).toBe(17)
    expect(census.get(30)).toBe(3)
    for (const off of [0n, len / 3n, len - 4096n])
      expect(pt.iovaToPhys(start + off)).toBe(start + off)
    expect(pt.unmapRange(start, len, e.h.gather)).toBe(len)
  }
}

function increaseLevel(e: Env): void {
  const { expect } = vt()
  const pt = e.pt
  if (!e.params.dynamicTop) {
    expect(e.h.tops).toEqual([])
    return
  }
  // Map just above what the root spans until the root is at its highest level.
  for (;;) {
    const { level } = pt.root
    const spanLg2 =
      e.params.granuleLg2 + e.params.bitsPerLevel * level + pt.format.numItemsLg2(level, e.params)
    if (spanLg2 >= e.params.vaBits || level === e.params.maxTopLevel) break
    const va = 1n << BigInt(spanLg2)
    pt.mapRange(va, 0n, e.smallest, RW)
    expect(pt.root.level).toBe(level + 1)
    expect(e.h.tops.at(-1)).toEqual([pt.root.pfn, level + 1])
    expect(pt.iovaToPhys(va + 1n)).toBe(1n)
  }
  // The root cannot grow past the input size.
  const beyond = e.params.vaBits >= 64 ? undefined : 1n << BigInt(e.params.vaBits)
  if (beyond !== undefined)
    expect(errnoOf(() => pt.mapRange(beyond, 0n, e.smallest, RW))).toBe('ERANGE')
}

function entryEncodings(e: Env): void {
  const { expect } = vt()
  const pt = e.pt
  const fmt = pt.format
  const p = e.params
  const w = new Uint32Array(1024)
  const maxPfn = 2 ** (p.oaBits - 12) - 1
  for (let level = 0; level <= p.maxTopLevel; level++) {
    const itemLg2 = p.granuleLg2 + p.bitsPerLevel * level
    if (level > 0) {
      // A table pointer reads back.
      w.fill(0xffff_ffff)
      // Tables are aligned to their size: one granule below the root.
      const tablePfn = 0x1234 * 2 ** (p.granuleLg2 - 12)
      fmt.installTable(w, 5, level, tablePfn, p)
      expect(fmt.loadEntry(w, 5, level, p)).toBe(EntryType.TABLE)
      expect(fmt.tablePfn(w, 5, level, p)).toBe(tablePfn)
    }
    const sizes = fmt.possibleSizes(level, p)
    for (let c = 0; c < 10; c++) {
      if ((sizes & (1 << c)) === 0 || c + itemLg2 > p.oaBits) continue
      const sizeLg2 = itemLg2 + c
      const n = 1 << c
      const align = 2 ** (sizeLg2 - 12)
      for (const oa of [
        0,
        maxPfn - (maxPfn % align),
        align,
        2 ** Math.max(0, p.oaBits - 13) - (2 ** Math.max(0, p.oaBits - 13) % align),
      ]) {
        for (const prot of [
          Prot.READ,
          Prot.WRITE,
          RW,
          RW | Prot.CACHE,
          RW | Prot.NOEXEC | Prot.PRIV,
          RW | Prot.MMIO,
        ]) {
          let attrs: ReturnType<typeof fmt.setProt>
          try {
            attrs = fmt.setProt(prot, p)
          } catch (err) {
            expect((err as IommuError).code).toBe('EINVAL')
            continue
          }
          w.fill(0)
          const at = n === 512 ? 0 : n
          fmt.installLeaves(w, at, 1, level, oa, sizeLg2, attrs, p)
          for (let k = at; k < at + n; k++) {
            expect(fmt.loadEntry(w, k, level, p)).toBe(EntryType.OA)
            expect(fmt.entryNumContigLg2(w, k, level, p)).toBe(c)
            expect(fmt.entryOaPfn(w, k, level, p)).toBe(oa)
          }
          // attrFromEntry gives back the descriptor bits (write-clean form).
          const back = fmt.attrFromEntry(w, at, level, p)
          const copy = new Uint32Array(1024)
          fmt.installLeaves(copy, at, 1, level, oa, sizeLg2, back, p)
          expect(fmt.attrFromEntry(copy, at, level, p)).toEqual(back)
          if (writesTracked(e) && (prot & Prot.WRITE) !== 0) {
            // A leaf installed from attrFromEntry is clean; dirtying any item dirties it.
            const dirty = fmt.isWriteDirty as NonNullable<typeof fmt.isWriteDirty>
            expect(dirty(copy, at, level, p)).toBe(false)
            if (level === 0) expect(fmt.skipCleanLeaves?.(copy, at, at + n, 0, p)).toBe(at + n)
            fmt.makeWriteDirty?.(copy, at + n - 1, level, p)
            expect(dirty(copy, at, level, p)).toBe(true)
            if (level === 0) expect(fmt.skipCleanLeaves?.(copy, at, at + n, 0, p)).toBe(at + n - 1)
            fmt.makeWriteClean?.(copy, at, level, p)
            expect(dirty(copy, at + n - 1, level, p)).toBe(false)
          }
        }
      }
    }
  }
}

/**
 * findEmpty and skipCleanLeaves against loops over loadEntry / isWriteDirty, on frames of
 * holes, non-zero holes, clean and dirty leaves.
 */
function accelerators(e: Env): void {
  const { expect } = vt()
  const fmt = e.pt.format
  const p = e.params
  let seed = 0x2545_f491
  const rnd = () => {
    seed ^= seed << 13
    seed ^= seed >>> 17
    seed ^= seed << 5
    return seed >>> 0
  }
  const attrs = fmt.setProt(RW, p)
  const tracked = writesTracked(e)
  for (let round = 0; round < 8; round++) {
    const w = new Uint32Array(1024)
    for (let i = 0; i < 512; i++) {
      const kind = rnd() % 4
      if (kind === 1 || kind === 2) {
        fmt.installLeaves(w, i, 1, 0, i * 2 ** (p.granuleLg2 - 12), p.granuleLg2, attrs, p)
        fmt.installLeaves(
          w,
          i,
          1,
          0,
          i * 2 ** (p.granuleLg2 - 12),
          p.granuleLg2,
          fmt.attrFromEntry(w, i, 0, p),
          p,
        )
        if (kind === 2 && tracked) fmt.makeWriteDirty?.(w, i, 0, p)
      } else if (kind === 3) {
        // A non-zero entry the format reads as a hole, if a few tries find one.
        for (let t = 0; t < 16; t++) {
          w[2 * i] = rnd()
          w[2 * i + 1] = rnd()
          if (fmt.loadEntry(w, i, 0, p) === EntryType.EMPTY) break
          w[2 * i] = 0
          w[2 * i + 1] = 0
        }
      }
    }
    for (let q = 0; q < 64; q++) {
      const a = rnd() % 513
      const b = a + (rnd() % (513 - a))
      let hole = a
      while (hole < b && fmt.loadEntry(w, hole, 0, p) !== EntryType.EMPTY) hole++
      expect(fmt.findEmpty(w, a, b, p)).toBe(hole)
      if (e.pt.dirtyTracking) {
        let stop = a
        while (
          stop < b &&
          fmt.loadEntry(w, stop, 0, p) === EntryType.OA &&
          fmt.isWriteDirty?.(w, stop, 0, p) === false
        )
          stop++
        expect(fmt.skipCleanLeaves?.(w, a, b, 0, p)).toBe(stop)
      }
    }
  }
}

/**
 * True when a writable leaf of this configuration can become write-dirty (ARM stage 1
 * only with the HD quirk, which gives writable leaves DBM).
 */
function writesTracked(e: Env): boolean {
  const pt = e.pt
  const fmt = pt.format
  const p = e.params
  if (!pt.dirtyTracking) return false
  const w = new Uint32Array(1024)
  fmt.installLeaves(w, 0, 1, 0, 1, p.granuleLg2, fmt.setProt(RW, p), p)
  const clean = fmt.attrFromEntry(w, 0, 0, p)
  fmt.installLeaves(w, 0, 1, 0, 1, p.granuleLg2, clean, p)
  fmt.makeWriteDirty?.(w, 0, 0, p)
  return fmt.isWriteDirty?.(w, 0, 0, p) === true
}

function dirtyRoundTrip(e: Env): void {
  const { expect } = vt()
  const pt = e.pt
  const base = pt.geometry.apertureStart
  if (!pt.dirtyTracking) {
    const code = errnoOf(() =>
      pt.readAndClearDirty(base, e.smallest, 0, new IommuDirtyBitmap(null, null)),
    )
    // generic_pt: no dirty functions; io-pgtable-arm: only stage 1 tracks.
    expect(code).toBe(e.arm ? 'EINVAL' : 'EOPNOTSUPP')
    return
  }
  const small = e.smallest
  const block = e.sizes.find((s) => s > small && s <= 1n << 30n) ?? small
  if (e.arm && e.params.upperVa) {
    // arm_lpae_read_and_clear_dirty checks the range against ias without TTBR1 handling.
    expect(
      errnoOf(() => pt.readAndClearDirty(base, small, 0, new IommuDirtyBitmap(null, null))),
    ).toBe('EINVAL')
    return
  }
  // [a, b): small pages (a skewed PA forces them); [b, b + block): one block. No hole:
  // io-pgtable-arm fails on holes.
  const a = alignUp(base + small * 16n, block)
  const b = a + block
  pt.mapRange(a, oaFor(e, block) + (block === small ? 0n : small), block, RW)
  pt.mapRange(b, oaFor(e, block), block, RW)
  const span = 2n * block
  const records: [number, number][] = []
  const sink = {
    set: (pfn: number, count: number, shift: number) =>
      records.push([pfn * 2 ** (shift - 12), count * 2 ** (shift - 12)]),
  }
  const read = (flags: number, mode: 'kernel' | 'ideal' = 'kernel') => {
    records.length = 0
    const g = new IotlbGather()
    pt.readAndClearDirty(a, span, flags, new IommuDirtyBitmap(sink, g, { mode }))
    return g
  }
  // What iommufd does on enable: clear everything (fresh ARM DBM leaves start dirty).
  read(0)
  expect(read(0).empty).toBe(true)
  expect(records).toEqual([])
  const walker = pt.walker()
  const write = (iova: bigint) => {
    const r = walker.walk(pt.root.pfn, pt.root.level, Number(iova >> 12n), Access.WRITE, HwAd.DIRTY)
    expect(r.fault).toBe(WalkFault.NONE)
  }
  const page = (iova: bigint) => Number(iova >> 12n)
  write(a)
  if (!writesTracked(e)) {
    // No hardware dirty management (ARM stage 1 without HD): writes leave no trace.
    read(0)
    expect(records).toEqual([])
    return
  }
  read(0)
  expect(records).toEqual([[page(a), Number(small >> 12n)]])
  read(0)
  expect(records).toEqual([])
  // generic_pt's record_dirty ends a contiguous leaf at its last index, used as an
  // exclusive end: a fully covered leaf is recorded one item short (the ideal record has
  // it whole).
  const leaf = pt.pgtableWalk(b).at(-1) as { level: number }
  const item = 1n << BigInt(e.params.granuleLg2 + e.params.bitsPerLevel * leaf.level)
  const recorded = !e.arm && block > item ? block - item : block
  // A write to the last page of the block dirties the whole IOPTE; NO_CLEAR keeps it.
  write(b + block - 4096n)
  for (let i = 0; i < 2; i++) {
    read(IOMMU_DIRTY_NO_CLEAR)
    expect(records).toEqual([[page(b), Number(recorded >> 12n)]])
  }
  read(IOMMU_DIRTY_NO_CLEAR, 'ideal')
  expect(records).toEqual([[page(b), Number(block >> 12n)]])
  const g = read(0)
  expect(records).toEqual([[page(b), Number(recorded >> 12n)]])
  expect(g.start).toBe(b)
  expect(g.end).toBe(b + recorded - 1n)
  read(0)
  expect(records).toEqual([])
  // Ideal records flush the whole IOPTE.
  write(b + block - 4096n)
  const gi = read(0, 'ideal')
  expect(records).toEqual([[page(b), Number(block >> 12n)]])
  expect(gi.end).toBe(b + block - 1n)
  expect(pt.unmapRange(a, span, e.h.gather)).toBe(span)
}

function splitMerge(e: Env): void {
  const { expect } = vt()
  const pt = e.pt
  const p = e.params
  const leafOf = (iova: bigint) => pt.pgtableWalk(iova).at(-1) as { level: number; pte: bigint }
  let va = pt.geometry.apertureStart
  const walker = pt.walker()
  for (const size of e.sizes) {
    if (size === e.smallest || size > 1n << 30n) continue
    va = alignUp(va, size)
    const pa = oaFor(e, size)
    pt.mapRange(va, pa, size, RW | Prot.CACHE)
    const tracked = writesTracked(e) && !(e.arm && e.params.upperVa)
    if (tracked)
      walker.walk(pt.root.pfn, pt.root.level, Number(va >> 12n) + 1, Access.WRITE, HwAd.DIRTY)
    const before = leafOf(va)
    const frames = e.h.pgtableFrames()
    const g = new IotlbGather()
    expect(pt.split(va + size / 2n, g)).toBe(size)
    expect(g.start).toBe(va)
    expect(g.end).toBe(va + size - 1n)
    for (const off of [0n, 4096n, size / 2n + 42n, size - 1n])
      expect(pt.iovaToPhys(va + off)).toBe(pa + off)
    const after = leafOf(va)
    const itemLg2 = p.granuleLg2 + p.bitsPerLevel * before.level
    const single = BigInt(itemLg2) === BigInt(size.toString(2).length - 1)
    expect(after.level).toBe(single ? before.level - 1 : before.level)
    if (tracked) {
      // Dirty state carries over: every piece is dirty.
      const seen: number[] = []
      pt.readAndClearDirty(
        va,
        size,
        IOMMU_DIRTY_NO_CLEAR,
        new IommuDirtyBitmap(
          { set: (_pfn, count, shift) => seen.push(count * 2 ** (shift - 12)) },
          null,
        ),
      )
      expect(seen.reduce((x, y) => x + y, 0)).toBe(Number(size >> 12n))
    }
    if (single) {
      const m = new IotlbGather()
      expect(pt.merge(va, size, m)).toBe(size)
      expect(leafOf(va)).toEqual(before)
      expect(m.start).toBe(va)
      m.releaseFreelist()
      expect(e.h.pgtableFrames()).toBe(frames)
      // Already a block: nothing to merge.
      expect(pt.merge(va, size, m)).toBe(0n)
    }
    expect(pt.unmapRange(va, size, e.h.gather)).toBe(size)
    va += size
  }
  expect(errnoOf(() => pt.split(pt.geometry.apertureStart, new IotlbGather()))).toBe('ENOENT')
}

import { describe, expect, it } from 'vitest'
import {
  Access,
  definePageTableFormat,
  EntryType,
  type FormatParams,
  type PageTableFormatSpec,
} from './format.ts'

/** A minimal one-level format: entries hold the page number at bits 51:12, bit 0 = present. */
function spec(
  extra: Partial<PageTableFormatSpec<null, FormatParams>> = {},
): PageTableFormatSpec<null, FormatParams> {
  return {
    name: 'toy',
    algorithm: 'generic-pt',
    init: () => ({
      granuleLg2: 12,
      bitsPerLevel: 9,
      topLevel: 1,
      maxTopLevel: 1,
      vaBits: 30,
      oaBits: 40,
      signExtend: false,
      dynamicTop: false,
      upperVa: false,
    }),
    possibleSizes: (level) => (level === 0 ? 1 : 0),
    loadEntry: (w, i, level) =>
      ((w[2 * i] as number) & 1) === 0
        ? EntryType.EMPTY
        : level === 0
          ? EntryType.OA
          : EntryType.TABLE,
    tablePfn: (w, i) => (w[2 * i] as number) >>> 12,
    entryOaPfn: (w, i) => (w[2 * i] as number) >>> 12,
    installLeaves(w, i, count, _level, oa, _size, attrs) {
      for (let k = 0; k < count; k++) w[2 * (i + k)] = ((oa + k) << 12) | attrs.lo | 1
    },
    installTable(w, i, _level, pfn) {
      w[2 * i] = (pfn << 12) | 1
    },
    setProt: () => ({ lo: 2, hi: 0 }),
    attrFromEntry: (w, i) => ({ lo: (w[2 * i] as number) & 2, hi: 0 }),
    hwLeafPerms: () => Access.READ,
    ...extra,
  }
}

const dirtyFns = {
  isWriteDirty: (w: Uint32Array, i: number) => ((w[2 * i] as number) & 4) !== 0,
  makeWriteClean: (w: Uint32Array, i: number) => {
    w[2 * i] = (w[2 * i] as number) & ~4
  },
  makeWriteDirty: (w: Uint32Array, i: number) => {
    w[2 * i] = (w[2 * i] as number) | 4
  },
}

describe('definePageTableFormat', () => {
  it('fills the pt_fmt_defaults.h defaults and freezes the format', () => {
    const f = definePageTableFormat(spec())
    const p = f.init(null)
    expect(Object.isFrozen(f)).toBe(true)
    expect(f.numItemsLg2(0, p)).toBe(9)
    const w = new Uint32Array(1024).fill(7)
    expect(f.entryNumContigLg2(w, 0, 0, p)).toBe(0)
    f.clearEntries(w, 3, 2, p)
    expect([...w.subarray(4, 12)]).toEqual([7, 7, 0, 0, 0, 0, 7, 7])
    f.clearEntries(w, 100, 64, p)
    expect(w.subarray(200, 328).every((x) => x === 0)).toBe(true)
    expect(f.findEmpty(w, 0, 10, p)).toBe(3)
    expect(f.hwNextLevel(w, 0, 3, p)).toBe(2)
    expect(f.hwTablePerms(w, 0, 1, p)).toBe(Access.READ | Access.WRITE)
    expect(f.hwEntryType).toBe(f.loadEntry)
    expect(f.hwInfo(0x123, 1, p)).toEqual({ root: 0x12_3000n, topLevel: 1 })
    // No dirty functions: no dirty tracking (read-and-clear-dirty is EOPNOTSUPP).
    expect(f.hasDirty).toBe(false)
    expect(f.dirtySupported(p)).toBe(false)
    expect(f.skipCleanLeaves).toBeUndefined()
  })

  it('derives skipCleanLeaves from the dirty pair', () => {
    const f = definePageTableFormat(spec(dirtyFns))
    const p = f.init(null)
    const w = new Uint32Array(1024)
    f.installLeaves(w, 0, 8, 0, 0x10, 12, { lo: 0, hi: 0 }, p)
    f.makeWriteDirty?.(w, 5, 0, p)
    expect(f.hasDirty).toBe(true)
    expect(f.dirtySupported(p)).toBe(true)
    expect(f.skipCleanLeaves?.(w, 0, 8, 0, p)).toBe(5)
    expect(f.skipCleanLeaves?.(w, 6, 20, 0, p)).toBe(8)
  })

  it('rejects half the dirty pair, and dirty extras without it', () => {
    expect(() => definePageTableFormat(spec({ isWriteDirty: dirtyFns.isWriteDirty }))).toThrow(
      /come as a pair/,
    )
    expect(() => definePageTableFormat(spec({ makeWriteClean: dirtyFns.makeWriteClean }))).toThrow(
      /come as a pair/,
    )
    expect(() => definePageTableFormat(spec({ makeWriteDirty: dirtyFns.makeWriteDirty }))).toThrow(
      /needs isWriteDirty/,
    )
    expect(() => definePageTableFormat(spec({ dirtySupported: () => true }))).toThrow(
      /needs isWriteDirty/,
    )
    expect(() =>
      definePageTableFormat(
        spec({ isWriteDirty: dirtyFns.isWriteDirty, makeWriteClean: dirtyFns.makeWriteClean }),
      ),
    ).toThrow(/makeWriteDirty/)
  })

  it('rejects a missing required function or an unknown algorithm (untyped plugins)', () => {
    const noLoad = { ...spec() } as Partial<PageTableFormatSpec<null, FormatParams>>
    delete noLoad.loadEntry
    expect(() => definePageTableFormat(noLoad as PageTableFormatSpec<null, FormatParams>)).toThrow(
      /loadEntry\(\) is required/,
    )
    expect(() =>
      definePageTableFormat(spec({ algorithm: 'io-pgtable-v7s' as 'generic-pt' })),
    ).toThrow(/unknown algorithm/)
  })
})

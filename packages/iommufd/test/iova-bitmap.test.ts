/**
 * `iova_bitmap_set` (7.2, `drivers/iommu/iommufd/iova_bitmap.c`) on records a driver
 * could hand it, beyond what the in-tree walks produce: window re-basing, records before
 * the bitmap, zero-length records, and the two records the kernel never returns from.
 */
import { describe, expect, it } from 'vitest'
import { expectErrno } from '../src/testing/index.ts'
import { PAGE, bitmapRig as rig } from './bitmap-rig.ts'

const MIB = 1024 * 1024

/** The 4 KiB page number of an IOVA. */
const pfn = (iova: bigint) => Number(iova / 4096n)

describe('iova_bitmap_set', () => {
  it('a record longer than the 512-page window goes on in a window re-based at its first unwritten bit', () => {
    // 2 MiB + 8 bytes of bitmap, 8 KiB per bit: one record of (16 Mi + 8) bits that starts
    // 4 KiB into its first bit and ends 4 KiB into its last (not page_size aligned).
    const base = 0x1_0000_0000n
    const nbits = 16 * MIB + 64
    const r = rig({ base, pageSize: 8192, nbits, mapped: 513 })
    const bits = 16 * MIB + 8
    r.dirty.record(pfn(base) + 1, 2 * bits - 2, 12)
    r.end()
    const got = r.proc.read(r.data, 2 * MIB + 8)
    expect(got.subarray(0, 2 * MIB + 1).every((b) => b === 0xff)).toBe(true)
    expect(Array.from(got.subarray(2 * MIB + 1))).toEqual([0, 0, 0, 0, 0, 0, 0])
    expect(r.log.entries).toEqual([])
    expect(r.m.memory.frameStats().pins).toBe(0)
  })

  it('a record that runs past the bitmap with an unaligned end, into an unmapped page: the kernel never returns', () => {
    // A 4096-byte bitmap (8 KiB per bit) alone in its mapping; a 12 KiB record over its last
    // bit and 4 KiB past it. The window from the last byte pins 1 of 2 pages; the rest of
    // the record is re-based one bit back, into the same window, forever.
    const base = 0x4000_0000n
    const r = rig({ base, pageSize: 8192, nbits: 32768, mapped: 1 })
    expectErrno('EDEADLK', () => r.dirty.record(pfn(base + 256n * BigInt(MIB)) - 2, 3, 12))
    r.end()
    expect(r.proc.read(r.data + 4095, 1)[0]).toBe(0x80)
    expect(r.log.entries.map((h) => h.kind)).toEqual(['bitmap-livelock'])
    expect(r.m.memory.frameStats().pins).toBe(0)
  })

  it('the same record with the next page mapped: one bit lands past the bitmap', () => {
    const base = 0x4000_0000n
    const r = rig({ base, pageSize: 8192, nbits: 32768, mapped: 2 })
    r.dirty.record(pfn(base + 256n * BigInt(MIB)) - 2, 3, 12)
    r.end()
    expect(Array.from(r.proc.read(r.data + 4095, 2))).toEqual([0x80, 0x01])
    expect(r.log.entries.map((h) => [h.kind, h.bits, h.bytesPast])).toEqual([['past-bitmap', 1, 1]])
  })

  it('a record that starts before the bitmap is dropped whole; its part inside is lost', () => {
    const base = 0x4000_0000n
    const r = rig({ base, pageSize: PAGE, nbits: 64, mapped: 1 })
    r.dirty.record(pfn(base) - 1, 3, 12)
    r.end()
    expect(r.proc.read(r.data, 8)).toEqual(new Uint8Array(8))
    const [h] = r.log.entries
    expect(h?.kind).toBe('record-outside-bitmap')
    expect(h?.lost.toArray()).toEqual([{ iova: base, length: 2n * 4096n }])
    // Ideal records are clipped to the bitmap instead.
    const i = rig({ base, pageSize: PAGE, nbits: 64, mapped: 1, mode: 'ideal' })
    i.dirty.record(pfn(base) - 1, 3, 12)
    i.end()
    expect(Array.from(i.proc.read(i.data, 2))).toEqual([0b11, 0])
    expect(i.log.entries).toEqual([])
  })

  it('zero-length records: nothing at an aligned IOVA inside the window; one stray bit mid-bit', () => {
    const base = 0x4000_0000n
    const r = rig({ base, pageSize: 8192, nbits: 64, mapped: 1 })
    r.dirty.record(pfn(base) + 2, 1, 12) // pins the window at byte 0: bit 1
    r.dirty.record(pfn(base) + 4, 0, 12) // IOVA of bit 2, aligned: last_bit = cur_bit - 1
    r.dirty.record(pfn(base) + 7, 0, 12) // 4 KiB into bit 3: last_bit = cur_bit
    r.end()
    expect(Array.from(r.proc.read(r.data, 2))).toEqual([0b1010, 0])
    expect(r.log.entries.map((h) => [h.kind, h.bits])).toEqual([['bitmap-fill', 1]])
  })

  it('a zero-length record at IOVA 0 sets every pinned bit, past the bitmap, and returns', () => {
    const r = rig({ base: 0n, pageSize: PAGE, nbits: 8, mapped: 2 })
    r.dirty.record(0, 0, 12)
    r.end()
    // (0 - 1 - 0) >> pgshift wraps: the whole pinned page; the next window would start
    // past the 1-byte bitmap.
    expect(r.proc.read(r.data, PAGE).every((b) => b === 0xff)).toBe(true)
    expect(r.proc.read(r.data + PAGE, PAGE)).toEqual(new Uint8Array(PAGE))
    expect(r.log.entries.map((h) => [h.kind, h.bits, h.bytesPast])).toEqual([
      ['past-bitmap', 32760, 4095],
      ['bitmap-fill', 32768, 0],
    ])
  })

  it('a zero-length record at the window start elsewhere: the pinned page filled, then the kernel loops', () => {
    const base = 0x4000_0000n
    const r = rig({ base, pageSize: PAGE, nbits: 8, offset: 100, mapped: 2 })
    expectErrno('EDEADLK', () => r.dirty.record(pfn(base), 0, 12))
    r.end()
    expect(r.proc.read(r.va, 100)).toEqual(new Uint8Array(100))
    expect(r.proc.read(r.data, PAGE - 100).every((b) => b === 0xff)).toBe(true)
    // npages = ceil(1 / 4096) + 1 (unaligned): both pages were pinned and filled.
    expect(r.proc.read(r.va + PAGE, PAGE).every((b) => b === 0xff)).toBe(true)
    expect(r.log.entries.map((h) => [h.kind, h.count])).toEqual([
      ['past-bitmap', 1],
      ['bitmap-fill', 1],
      ['bitmap-livelock', 1],
    ])
    expect(r.log.entries[0]?.bytesPast).toBe(2 * PAGE - 100 - 1)
  })
})

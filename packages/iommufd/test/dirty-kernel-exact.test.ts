/**
 * GET_DIRTY_BITMAP as Linux 7.2 does it, byte for byte, with the dirty-tracking hazard
 * detector's account of what it loses, and the ideal mode for comparison (reference
 * iommufd-uapi.md §4.3–4.4; the mock follows the 7.2 selftest mock's generic_pt walk,
 * `record_dirty`, and `iova_bitmap_set` in `drivers/iommu/iommufd/iova_bitmap.c`).
 */
import {
  createMachine,
  type DirtyHazard,
  type DirtyHazardKind,
  type DirtyRecords,
} from '@iommu/core'
import { MOCK_APERTURE_START, mockIommu } from '@iommu/core/testing'
import { describe, expect, it } from 'vitest'
import {
  type HwptPaging,
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_HWPT_GET_DIRTY_BITMAP,
  IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR,
  ObjType,
  openIommufd,
} from '../src/index.ts'
import {
  _testCmdSetDirtyTracking,
  _testIoctlIoasAlloc,
  expectErrno,
  PAGE_SIZE,
} from '../src/testing/index.ts'
import { hwptAlloc, ioasMap } from './helpers.ts'

const A = MOCK_APERTURE_START
const P = BigInt(PAGE_SIZE)
const MIB2 = 2 * 1024 * 1024

/** A dirty-tracking HWPT over `pages` 4 KiB pages at A (4 KiB or `huge` IOPTEs). */
function world(opts: { huge?: boolean; pages?: number; mode?: DirtyRecords } = {}) {
  const m = createMachine({
    iommus: [mockIommu({ ioPageSize: 4096, ...(opts.huge ? { hugePageSize: MIB2 } : {}) })],
    ...(opts.mode ? { dirtyRecords: opts.mode } : {}),
  })
  const proc = m.createProcess()
  const fd = openIommufd(m, proc)
  const ioas = _testIoctlIoasAlloc(fd)
  const pages = opts.pages ?? 64
  const buf = proc.mmap(pages * PAGE_SIZE, { populate: true })
  ioasMap(fd, ioas, buf, pages * PAGE_SIZE, A)
  const dev = m.addPciDevice()
  const idev = fd.bindDevice(dev)
  const hwpt = hwptAlloc(fd, idev.id, ioas, IOMMU_HWPT_ALLOC_DIRTY_TRACKING)
  idev.attach(hwpt)
  _testCmdSetDirtyTracking(fd, hwpt, true)
  const domain = (fd.ctx.get(hwpt, ObjType.HWPT_PAGING) as HwptPaging).domain
  const get = (o: { iova?: bigint; length?: bigint; data: bigint; flags?: number }) =>
    fd.ioctl(IOMMU_HWPT_GET_DIRTY_BITMAP, {
      size: 48,
      hwpt_id: hwpt,
      flags: o.flags ?? 0,
      iova: o.iova ?? A,
      length: o.length ?? BigInt(pages) * P,
      page_size: P,
      data: o.data,
    })
  const write = (page: number) => dev.dma.write(A + BigInt(page) * P, new Uint8Array([1]))
  /** Set bits (page numbers) of a whole-range read into a fresh bitmap. */
  const bits = (flags = 0) => {
    const bm = proc.mmap(PAGE_SIZE)
    get({ data: BigInt(bm), flags })
    const b = proc.read(bm, Math.ceil(pages / 8))
    proc.munmap(bm, PAGE_SIZE)
    const out: number[] = []
    for (let i = 0; i < pages; i++) if ((b[i >> 3] as number) & (1 << (i & 7))) out.push(i)
    return out
  }
  return { m, proc, fd, ioas, hwpt, domain, get, write, bits, log: m.dirtyHazards }
}

/** A hazard as plain data: kind, count, lost and missed ranges in pages from A. */
function summary(h: DirtyHazard) {
  const pages = (l: DirtyHazard['lost']) =>
    l.toArray().map((s) => [Number((s.iova - A) / P), Number(s.length / P)])
  return {
    kind: h.kind,
    count: h.count,
    lost: pages(h.lost),
    missed: pages(h.missed),
    bytesPast: h.bytesPast,
    bits: h.bits,
  }
}

const ones = (n: number) => new Uint8Array(n).fill(0xff)

/** An expected {@link summary}. */
function hz(
  kind: DirtyHazardKind,
  count: number,
  o: { lost?: number[][]; missed?: number[][]; bytesPast?: number; bits?: number } = {},
) {
  return {
    kind,
    count,
    lost: o.lost ?? [],
    missed: o.missed ?? [],
    bytesPast: o.bytesPast ?? 0,
    bits: o.bits ?? 0,
  }
}

describe('a request that starts inside a dirty 2 MiB IOPTE (generic_pt record_dirty)', () => {
  it('kernel: recorded from the request start with the IOPTE size, past the 3-byte bitmap', () => {
    const w = world({ huge: true, pages: 1024 })
    w.write(600)
    const bm = w.proc.mmap(PAGE_SIZE)
    w.get({ iova: A + 1000n * P, length: 24n * P, data: BigInt(bm) })
    // 512 bits from bit 0: bytes 0..63 of the pinned page; the bitmap is 3 bytes.
    const got = w.proc.read(bm, PAGE_SIZE)
    expect(got.subarray(0, 64)).toEqual(ones(64))
    expect(got.subarray(64)).toEqual(new Uint8Array(PAGE_SIZE - 64))
    expect(w.log.entries.map(summary)).toEqual([
      hz('record-past-iopte', 1),
      // The IOPTE was cleaned whole: pages 512..999 (outside the request) lost their dirt.
      hz('iopte-outside-query', 1, { lost: [[512, 488]] }),
      hz('past-bitmap', 1, { bytesPast: 61, bits: 488 }),
    ])
    const [past] = w.log.entries
    expect(past?.iopte).toEqual({ iova: A + 512n * P, length: BigInt(MIB2) })
    expect(past?.record).toEqual({ iova: A + 1000n * P, length: BigInt(MIB2) })
    expect(past?.hwptId).toBe(w.hwpt)
    expect(past?.domain).toBe(w.domain)
    expect([past?.iova, past?.length]).toEqual([A + 1000n * P, 24n * P])
    // Nothing is left to report: the dirt of pages 512..999 is gone.
    expect(w.bits()).toEqual([])
    expect(w.log.unreported(A + 600n * P)).toBe('lost')
  })

  it('ideal: clipped to the request, nothing past the bitmap; the outside part is still lost', () => {
    const w = world({ huge: true, pages: 1024, mode: 'ideal' })
    w.write(600)
    const bm = w.proc.mmap(PAGE_SIZE)
    w.get({ iova: A + 1000n * P, length: 24n * P, data: BigInt(bm) })
    const got = w.proc.read(bm, 8)
    expect(Array.from(got)).toEqual([0xff, 0xff, 0xff, 0, 0, 0, 0, 0])
    expect(w.log.entries.map(summary)).toEqual([
      hz('iopte-outside-query', 1, { lost: [[512, 488]] }),
    ])
  })
})

describe('a dirty IOPTE past the request end is recorded whole (iova_bitmap_set does not clip)', () => {
  it('the bits run past the 1-byte bitmap into the next pinned page', () => {
    const w = world({ huge: true, pages: 512 })
    w.write(5)
    const two = w.proc.mmap(2 * PAGE_SIZE)
    // 6 bytes before the page end: the window pins 1 + 1 pages (the offset adds one).
    const data = two + PAGE_SIZE - 6
    w.get({ length: 8n * P, data: BigInt(data) })
    expect(w.proc.read(two + PAGE_SIZE - 8, 2)).toEqual(new Uint8Array(2))
    // Bits 0..511 from `data`: 6 bytes in the first page, 58 in the second.
    expect(w.proc.read(data, 64)).toEqual(ones(64))
    expect(w.proc.read(data + 64, 8)).toEqual(new Uint8Array(8))
    expect(w.log.entries.map(summary)).toEqual([
      hz('iopte-outside-query', 1, { lost: [[8, 504]] }),
      hz('past-bitmap', 1, { bytesPast: 63, bits: 504 }),
    ])
  })

  it('with the second page unmapped the pin is partial: the bits stop at the page end', () => {
    const w = world({ huge: true, pages: 512 })
    w.write(5)
    const two = w.proc.mmap(2 * PAGE_SIZE)
    w.proc.munmap(two + PAGE_SIZE, PAGE_SIZE)
    const data = two + PAGE_SIZE - 6
    w.get({ length: 8n * P, data: BigInt(data) })
    expect(w.proc.read(data, 6)).toEqual(ones(6))
    expect(w.proc.read(two, PAGE_SIZE - 6)).toEqual(new Uint8Array(PAGE_SIZE - 6))
    expect(w.log.entries.map(summary)).toEqual([
      hz('iopte-outside-query', 1, { lost: [[8, 504]] }),
      hz('past-bitmap', 1, { bytesPast: 5, bits: 40 }),
    ])
  })
})

describe('a bitmap that cannot be pinned (iova_bitmap_set returns silently)', () => {
  it('data = 1 << 52: returns 0, every record is dropped, the IOPTEs are cleaned: lost', () => {
    const w = world()
    for (const p of [1, 9, 63]) w.write(p)
    w.get({ data: 1n << 52n })
    expect(w.bits()).toEqual([])
    expect(w.log.entries.map(summary)).toEqual([
      hz('bitmap-pin-failed', 3, {
        lost: [
          [1, 1],
          [9, 1],
          [63, 1],
        ],
      }),
    ])
    expect(w.log.lostBytes()).toBe(3n * P)
    expect(w.log.withLoss().length).toBe(1)
  })

  it('data = 1 << 52 with NO_CLEAR: the pages are missed, not lost; a good read reports them', () => {
    const w = world()
    for (const p of [1, 9]) w.write(p)
    w.get({ data: 1n << 52n, flags: IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR })
    const [h] = w.log.entries
    expect(h && summary(h)).toEqual(
      hz('bitmap-pin-failed', 2, {
        missed: [
          [1, 1],
          [9, 1],
        ],
      }),
    )
    expect(w.log.unreported(A + 9n * P)).toBe('missed')
    expect(w.bits()).toEqual([1, 9])
  })

  it('the second bitmap page unmapped: returns 0; the record landing there is lost', () => {
    const w = world()
    for (const p of [1, 40]) w.write(p)
    const two = w.proc.mmap(2 * PAGE_SIZE)
    w.proc.munmap(two + PAGE_SIZE, PAGE_SIZE)
    // 64 bits = 8 bytes: 4 in the mapped page, 4 in the unmapped one.
    const data = two + PAGE_SIZE - 4
    const mark = w.log.entries.length
    w.get({ data: BigInt(data) })
    expect(Array.from(w.proc.read(data, 4))).toEqual([0b10, 0, 0, 0])
    expect(w.bits()).toEqual([])
    expect(w.log.entries.map(summary)).toEqual([hz('bitmap-pin-failed', 1, { lost: [[40, 1]] })])
    // The oracle's question: was a written page reported, or named as lost?
    expect(w.log.unreported(A + 40n * P, mark)).toBe('lost')
    expect(w.log.unreported(A + 1n * P, mark)).toBe(null)
  })

  it('ideal: EFAULT before anything is cleaned; a good read then reports everything', () => {
    const w = world({ mode: 'ideal' })
    for (const p of [1, 40]) w.write(p)
    const pins = w.m.memory.frameStats().pins
    expectErrno('EFAULT', () => w.get({ data: 1n << 52n }))
    const two = w.proc.mmap(2 * PAGE_SIZE)
    w.proc.munmap(two + PAGE_SIZE, PAGE_SIZE)
    expectErrno('EFAULT', () => w.get({ data: BigInt(two + PAGE_SIZE - 4) }))
    expect(w.bits()).toEqual([1, 40])
    expect(w.log.entries).toEqual([])
    // Nothing stays pinned.
    expect(w.m.memory.frameStats().pins).toBe(pins)
  })
})

describe('the walk stops at the first IOVA without an area', () => {
  it('dirty IOPTEs after the hole are reported as missed (both modes)', () => {
    for (const mode of ['kernel', 'ideal'] as const) {
      const w = world({ pages: 16, mode })
      const other = w.proc.mmap(4 * PAGE_SIZE)
      ioasMap(w.fd, w.ioas, other, 4 * PAGE_SIZE, A + 20n * P)
      w.write(2)
      w.write(21)
      const bm = w.proc.mmap(PAGE_SIZE)
      w.get({ length: 32n * P, data: BigInt(bm) })
      expect(Array.from(w.proc.read(bm, 4))).toEqual([0b100, 0, 0, 0])
      expect(w.log.entries.map(summary)).toEqual([hz('walk-stopped', 1, { missed: [[21, 1]] })])
    }
  })
})

/**
 * Dirty-tracking rules beyond the selftest patterns: the check order of
 * GET_DIRTY_BITMAP, the walk that stops at the first hole, enabling clears stale state,
 * whole huge IOPTEs, bitmaps that fault, and bits set only (reference iommufd-uapi.md
 * §2.15–2.16, §4.2–4.4).
 */
import { createMachine } from '@iommu/core'
import { MOCK_APERTURE_START, mockIommu, mockMarkDirty } from '@iommu/core/testing'
import { describe, expect, it, vi } from 'vitest'
import {
  type HwptPaging,
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_HWPT_GET_DIRTY_BITMAP,
  IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR,
  IOMMU_HWPT_SET_DIRTY_TRACKING,
  IOMMU_OPTION,
  IOMMU_OPTION_HUGE_PAGES,
  IOMMU_OPTION_OP_SET,
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

/** An IOAS with `pages` 4 KiB pages at A, a device and a dirty HWPT over it (4 KiB IOPTEs). */
function world(opts: { hugePageSize?: number; pages?: number; map?: boolean } = {}) {
  const m = createMachine({
    iommus: [
      mockIommu({
        ioPageSize: 4096,
        ...(opts.hugePageSize ? { hugePageSize: opts.hugePageSize } : {}),
      }),
    ],
  })
  const proc = m.createProcess()
  const fd = openIommufd(m, proc)
  const ioas = _testIoctlIoasAlloc(fd)
  const pages = opts.pages ?? 64
  const buf = proc.mmap(pages * PAGE_SIZE, { populate: true })
  if (opts.map !== false) ioasMap(fd, ioas, buf, pages * PAGE_SIZE, A)
  const dev = m.addPciDevice()
  const idev = fd.bindDevice(dev)
  const hwpt = hwptAlloc(fd, idev.id, ioas, IOMMU_HWPT_ALLOC_DIRTY_TRACKING)
  idev.attach(hwpt)
  const domain = (fd.ctx.get(hwpt, ObjType.HWPT_PAGING) as HwptPaging).domain
  if (domain === null) throw new Error('no domain')
  const bitmap = proc.mmap(2 * PAGE_SIZE)
  const get = (
    o: Partial<{
      iova: bigint
      length: bigint
      page_size: bigint
      flags: number
      data: bigint
    }> = {},
  ) =>
    fd.ioctl(IOMMU_HWPT_GET_DIRTY_BITMAP, {
      size: 48,
      hwpt_id: hwpt,
      iova: A,
      length: BigInt(pages * PAGE_SIZE),
      page_size: BigInt(PAGE_SIZE),
      data: BigInt(bitmap),
      ...o,
    })
  const bits = (n = 8) => proc.read(bitmap, n)
  return { m, proc, fd, ioas, idev, dev, hwpt, domain, bitmap, buf, get, bits }
}

describe('GET_DIRTY_BITMAP rules (§2.16)', () => {
  it('check order: flags/reserved EOPNOTSUPP, ENOENT, EOVERFLOW, EINVAL alignment, EOPNOTSUPP', () => {
    const w = world()
    const plain = hwptAlloc(w.fd, w.idev.id, w.ioas, 0)
    const bad = (o: object) => w.fd.ioctl(IOMMU_HWPT_GET_DIRTY_BITMAP, { size: 48, ...o })
    expectErrno('EOPNOTSUPP', () => bad({ hwpt_id: 99, flags: 2 }))
    expectErrno('EOPNOTSUPP', () => bad({ hwpt_id: 99, __reserved: 1 }))
    expectErrno('ENOENT', () => bad({ hwpt_id: 99 }))
    expectErrno('ENOENT', () => bad({ hwpt_id: w.ioas, page_size: 4096n }))
    expectErrno('EOVERFLOW', () => bad({ hwpt_id: plain, iova: 2n ** 63n, length: 2n ** 63n + 1n }))
    // The IOAS alignment is 4 KiB (the mock's IO page): a 2 KiB-aligned range is EINVAL.
    expectErrno('EINVAL', () =>
      bad({ hwpt_id: plain, iova: A + 2048n, length: 4096n, page_size: 4096n }),
    )
    expectErrno('EINVAL', () => bad({ hwpt_id: plain, iova: A, length: 4096n, page_size: 0n }))
    expectErrno('EINVAL', () => bad({ hwpt_id: plain, iova: A, length: 4096n, page_size: 8192n }))
    // Only after the range checks: a HWPT without dirty tracking.
    expectErrno('EOPNOTSUPP', () =>
      bad({ hwpt_id: plain, iova: A, length: 4096n, page_size: 4096n }),
    )
    w.get()
  })

  it('SET_DIRTY_TRACKING: flags EOPNOTSUPP, __reserved not checked, non-dirty HWPT EOPNOTSUPP (§2.15)', () => {
    const w = world()
    const plain = hwptAlloc(w.fd, w.idev.id, w.ioas, 0)
    const set = (o: object) => w.fd.ioctl(IOMMU_HWPT_SET_DIRTY_TRACKING, { size: 16, ...o })
    expectErrno('EOPNOTSUPP', () => set({ hwpt_id: w.hwpt, flags: 2 }))
    set({ hwpt_id: w.hwpt, flags: 1, __reserved: 7 })
    expectErrno('ENOENT', () => set({ hwpt_id: w.ioas, flags: 1 }))
    expectErrno('EOPNOTSUPP', () => set({ hwpt_id: plain, flags: 1 }))
  })

  it('DMA writes with tracking off leave nothing; enabling clears stale dirty IOPTEs (§4.2)', () => {
    const w = world()
    w.dev.dma.write(A + 0x1000n, new Uint8Array([1]))
    _testCmdSetDirtyTracking(w.fd, w.hwpt, true)
    w.get()
    expect(w.bits()).toEqual(new Uint8Array(8))
    w.dev.dma.write(A + 0x1000n, new Uint8Array([1]))
    _testCmdSetDirtyTracking(w.fd, w.hwpt, false)
    // Disabling keeps the dirty IOPTEs; re-enabling clears them.
    w.get({ flags: IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR })
    expect(w.bits()[0]).toBe(0b10)
    w.proc.write(w.bitmap, new Uint8Array(8))
    _testCmdSetDirtyTracking(w.fd, w.hwpt, true)
    w.get()
    expect(w.bits()).toEqual(new Uint8Array(8))
  })

  it('the kernel only sets bits; NO_CLEAR reads twice; read-and-clear once (§4.3)', () => {
    const w = world()
    _testCmdSetDirtyTracking(w.fd, w.hwpt, true)
    w.proc.write(w.bitmap, new Uint8Array([0x80, 0, 0, 0, 0, 0, 0, 0]))
    w.dev.dma.write(A, new Uint8Array([1]))
    w.get({ flags: IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR })
    expect(w.bits()[0]).toBe(0x81)
    w.proc.write(w.bitmap, new Uint8Array(8))
    w.get()
    expect(w.bits()[0]).toBe(0x01)
    w.proc.write(w.bitmap, new Uint8Array(8))
    w.get()
    expect(w.bits()[0]).toBe(0)
  })

  it('the walk stops silently at the first hole: dirt after it is neither reported nor cleared (§4.3 quirk)', () => {
    const w = world({ pages: 16 })
    // A second area, 4 pages after the first one ends.
    const other = w.proc.mmap(4 * PAGE_SIZE)
    ioasMap(w.fd, w.ioas, other, 4 * PAGE_SIZE, A + BigInt(20 * PAGE_SIZE))
    _testCmdSetDirtyTracking(w.fd, w.hwpt, true)
    w.dev.dma.write(A + BigInt(2 * PAGE_SIZE), new Uint8Array([1]))
    w.dev.dma.write(A + BigInt(21 * PAGE_SIZE), new Uint8Array([1]))
    w.get({ length: BigInt(32 * PAGE_SIZE) })
    expect(Array.from(w.bits(4))).toEqual([0b100, 0, 0, 0])
    // A request starting in the hole reports nothing either.
    w.proc.write(w.bitmap, new Uint8Array(8))
    w.get({ iova: A + BigInt(16 * PAGE_SIZE), length: BigInt(8 * PAGE_SIZE) })
    expect(w.bits(1)[0]).toBe(0)
    // The dirty page behind the hole is still dirty when asked for directly.
    w.get({ iova: A + BigInt(20 * PAGE_SIZE), length: BigInt(4 * PAGE_SIZE) })
    expect(w.bits(1)[0]).toBe(0b10)
  })

  it('bits follow page_size; a bitmap at an odd address works; bits past the range stay (§4.3)', () => {
    const w = world()
    _testCmdSetDirtyTracking(w.fd, w.hwpt, true)
    for (const p of [0, 1, 9, 63]) w.dev.dma.write(A + BigInt(p * PAGE_SIZE), new Uint8Array([1]))
    // One bit per 8 KiB.
    w.get({ page_size: 8192n, flags: IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR })
    expect(Array.from(w.bits(4))).toEqual([0b10001, 0, 0, 0x80])
    // A bitmap 0xff1 bytes into its page.
    w.proc.write(w.bitmap, new Uint8Array(2 * PAGE_SIZE).fill(0))
    w.get({ data: BigInt(w.bitmap + 0xff1) })
    const b = w.proc.read(w.bitmap + 0xff1, 8)
    expect(new DataView(b.buffer).getBigUint64(0, true)).toBe(
      (1n << 0n) | (1n << 1n) | (1n << 9n) | (1n << 63n),
    )
  })

  it('a huge dirty IOPTE sets every bit it covers; a request inside it gets the kernel record (§4.3)', () => {
    const w = world({ hugePageSize: 2 * 1024 * 1024, pages: 1024 })
    _testCmdSetDirtyTracking(w.fd, w.hwpt, true)
    // One write in the second 2 MiB IOPTE dirties all of it.
    w.dev.dma.write(A + BigInt(600 * PAGE_SIZE), new Uint8Array([1]))
    const bm = w.proc.mmap(PAGE_SIZE)
    w.get({ data: BigInt(bm), flags: IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR })
    const bits = w.proc.read(bm, 128)
    expect(bits.subarray(0, 64)).toEqual(new Uint8Array(64))
    expect(bits.subarray(64, 128)).toEqual(new Uint8Array(64).fill(0xff))
    // A request that starts inside that IOPTE: generic_pt's record_dirty records it from
    // the request start with the IOPTE's size (512 bits), and iova_bitmap_set does not clip:
    // 64 bytes are set for a 3-byte bitmap.
    w.proc.write(bm, new Uint8Array(128))
    w.get({ iova: A + BigInt(1000 * PAGE_SIZE), length: BigInt(24 * PAGE_SIZE), data: BigInt(bm) })
    const got = w.proc.read(bm, 128)
    expect(got.subarray(0, 64)).toEqual(new Uint8Array(64).fill(0xff))
    expect(got.subarray(64)).toEqual(new Uint8Array(64))
  })

  it('HUGE_PAGES=0 maps PAGE_SIZE IOPTEs: one write dirties one page, not 2 MiB (§3.8)', () => {
    const m = createMachine({
      iommus: [mockIommu({ ioPageSize: 4096, hugePageSize: 2 * 1024 * 1024 })],
    })
    const proc = m.createProcess()
    const fd = openIommufd(m, proc)
    const ioas = _testIoctlIoasAlloc(fd)
    fd.ioctl(IOMMU_OPTION, {
      size: 24,
      option_id: IOMMU_OPTION_HUGE_PAGES,
      op: IOMMU_OPTION_OP_SET,
      object_id: ioas,
      val64: 0n,
    })
    const buf = proc.mmap(1024 * PAGE_SIZE, { populate: true })
    ioasMap(fd, ioas, buf, 1024 * PAGE_SIZE, A)
    const idev = fd.bindDevice(m.addPciDevice())
    const hwpt = hwptAlloc(fd, idev.id, ioas, IOMMU_HWPT_ALLOC_DIRTY_TRACKING)
    idev.attach(hwpt)
    _testCmdSetDirtyTracking(fd, hwpt, true)
    idev.dev.dma.write(A + BigInt(600 * PAGE_SIZE), new Uint8Array([1]))
    const bm = proc.mmap(PAGE_SIZE)
    fd.ioctl(IOMMU_HWPT_GET_DIRTY_BITMAP, {
      size: 48,
      hwpt_id: hwpt,
      iova: A,
      length: BigInt(1024 * PAGE_SIZE),
      page_size: BigInt(PAGE_SIZE),
      data: BigInt(bm),
    })
    const bits = proc.read(bm, 128)
    expect(bits.filter((b) => b !== 0).length).toBe(1)
    expect(bits[600 >> 3]).toBe(1 << (600 & 7))
  })

  it('a bitmap that cannot be pinned drops the bits but still clears: 0, as Linux 7.2 (§4.4)', () => {
    const w = world()
    _testCmdSetDirtyTracking(w.fd, w.hwpt, true)
    w.dev.dma.write(A, new Uint8Array([1]))
    w.get({ data: 0x10n })
    w.get()
    expect(w.bits(1)[0]).toBe(0)
    // A read-only bitmap cannot be pinned for writing either.
    const ro = w.proc.mmap(PAGE_SIZE, { prot: 1 })
    w.dev.dma.write(A, new Uint8Array([1]))
    w.get({ data: BigInt(ro) })
    expect(w.proc.read(ro, 1)[0]).toBe(0)
  })

  it('a huge unmapped range costs nothing and reports nothing (§4.3)', () => {
    const w = world({ map: false })
    _testCmdSetDirtyTracking(w.fd, w.hwpt, true)
    // Nothing is mapped: the walk never reaches the driver and pins no bitmap page.
    const ops = w.domain.dirtyOps
    if (ops === null) throw new Error('no dirty ops')
    const walk = vi.spyOn(ops, 'readAndClearDirty')
    const frames = w.m.memory.frameStats().allocated
    w.get({ iova: 0n, length: 1n << 60n, page_size: 4096n })
    expect(walk).not.toHaveBeenCalled()
    expect(w.m.memory.frameStats()).toMatchObject({ pins: 0, allocated: frames })
    walk.mockRestore()
  })

  it('mock IOMMU_TEST_OP_DIRTY marks only with tracking on (§6.6)', () => {
    const w = world()
    expect(() => mockMarkDirty(w.domain, A, 4096n)).toThrow(/EINVAL/)
  })
})

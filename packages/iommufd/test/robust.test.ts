/**
 * Inputs far outside what a VMM passes: a MAP whose length dwarfs the buffer behind it,
 * u64 addresses beyond 2^53, argument values that are no struct at all. Each fails with
 * the errno the kernel returns in the same place, and leaves nothing pinned or charged.
 */
import { createMachine, IommuCap, type Machine, type PciDevice, type Process } from '@iommu/core'
import {
  IOMMU_HW_QUEUE_TYPE_SELFTEST,
  IOMMU_VIOMMU_TYPE_SELFTEST,
  MOCK_APERTURE_START,
  mockIommu,
} from '@iommu/core/testing'
import { describe, expect, it } from 'vitest'
import {
  fdInstall,
  IOMMU_DESTROY,
  IOMMU_GET_HW_INFO,
  IOMMU_HW_QUEUE_ALLOC,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_ALLOC_PASID,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_ALLOW_IOVAS,
  IOMMU_IOAS_COPY,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_TEST_CMD,
  IOMMU_VIOMMU_ALLOC,
  type Ioas,
  type Iommufd,
  ObjType,
  openIommufd,
} from '../src/index.ts'
import {
  _testCmdMockDomain,
  _testCmdMockDomainFlags,
  _testCmdMockDomainReplace,
  _testIoctlIoasAlloc,
  expectErrno,
  PAGE_SIZE,
  runUapiFuzz,
} from '../src/testing/index.ts'
import { IOMMU_TEST_OP_PASID_ATTACH, MOCK_FLAGS_DEVICE_PASID } from '../src/uapi/index.ts'
import { errnoOf, hwptAlloc, ioasMap, ioasMapFile, RW } from './helpers.ts'

const ioasAlloc = _testIoctlIoasAlloc
const mockDomainReplace = _testCmdMockDomainReplace

/** A mock device on `ptId` (IOMMU_TEST_OP_MOCK_DOMAIN[_FLAGS]). */
function mockDomain(fd: Iommufd, ptId: number, flags?: number) {
  const r =
    flags === undefined ? _testCmdMockDomain(fd, ptId) : _testCmdMockDomainFlags(fd, ptId, flags)
  return { stdevId: r.stdev_id, hwptId: r.hwpt_id, idevId: r.idev_id }
}

const U64_MAX = 0xffff_ffff_ffff_ffffn
const HUGE = 1n << 52n
const BUF = 16 * PAGE_SIZE

/** A mock IOMMU whose domains translate every IOVA, so that a 2^52-byte map fits. */
function world(rlimitMemlock?: number): { m: Machine; proc: Process; fd: Iommufd; buf: number } {
  const m = createMachine({
    iommus: [mockIommu({ aperture: { start: MOCK_APERTURE_START, end: U64_MAX } })],
  })
  const proc = m.createProcess(rlimitMemlock === undefined ? {} : { rlimitMemlock })
  const fd = openIommufd(m, proc, { test: true })
  return { m, proc, fd, buf: proc.mmap(BUF) }
}

function nothingPinned(w: { m: Machine; proc: Process }): void {
  expect([w.m.memory.frameStats().pins, w.proc.mm.pinnedVm, w.proc.user.lockedVm]).toEqual([
    0, 0, 0,
  ])
}

describe('a MAP far longer than the memory behind it', () => {
  it('fails EFAULT where GUP meets the first unmapped page, with a domain attached', () => {
    // iopt_map_user_pages → iopt_area_fill_domains → pfn_reader_user_pin: pin_user_pages
    // pins the buffer, then returns -EFAULT at the first address past it.
    const w = world()
    const ioas = ioasAlloc(w.fd)
    mockDomain(w.fd, ioas)
    expectErrno('EFAULT', () => ioasMap(w.fd, ioas, w.buf, HUGE, HUGE))
    expectErrno('EFAULT', () => ioasMap(w.fd, ioas, w.buf, HUGE))
    nothingPinned(w)
    // GUP faulted the buffer in on the way.
    expect(w.proc.pageFrame(w.buf + BUF - PAGE_SIZE, false)).not.toBe(0)
    // The IOAS is still usable.
    expect(ioasMap(w.fd, ioas, w.buf, BUF, HUGE)).toBe(HUGE)
  })

  it('is EFAULT even under a memlock limit the length exceeds: accounting comes after pinning', () => {
    // pfn_reader_update_pinned (RLIMIT_MEMLOCK, ENOMEM) runs only once the whole area is
    // pinned; the hole is met first.
    const w = world(BUF)
    const ioas = ioasAlloc(w.fd)
    mockDomain(w.fd, ioas)
    expectErrno('EFAULT', () => ioasMap(w.fd, ioas, w.buf, HUGE, HUGE))
    nothingPinned(w)
  })

  it('maps without a domain (nothing is pinned) and fails EFAULT when a domain is filled', () => {
    const w = world()
    const ioas = ioasAlloc(w.fd)
    expect(ioasMap(w.fd, ioas, w.buf, HUGE, HUGE)).toBe(HUGE)
    // iopt_table_add_domain → iopt_fill_domain → iopt_area_fill_domain → the same pin.
    expectErrno('EFAULT', () => mockDomain(w.fd, ioas))
    nothingPinned(w)
    // A device on another IOAS: allocating a HWPT on this one, or moving it here, fills.
    const other = ioasAlloc(w.fd)
    const md = mockDomain(w.fd, other)
    expectErrno('EFAULT', () => hwptAlloc(w.fd, md.idevId, ioas, 0))
    expectErrno('EFAULT', () => mockDomainReplace(w.fd, md.stdevId, ioas))
    nothingPinned(w)
    w.fd.close()
    nothingPinned(w)
  })

  it('MAP_FILE past the end of the memfd fails EINVAL (the shmem read past EOF)', () => {
    const w = world()
    const memfd = w.proc.memfdCreate('guest')
    memfd.ftruncate(BUF)
    const mfd = fdInstall(w.proc, memfd)
    const ioas = ioasAlloc(w.fd)
    mockDomain(w.fd, ioas)
    expectErrno('EINVAL', () => ioasMapFile(w.fd, ioas, mfd, 0, Number(HUGE), HUGE))
    nothingPinned(w)
    // memfd_pin_folios allocated the file's pages up to its end.
    expect(w.proc.pageFrame(w.proc.mmap(BUF, { file: memfd }) + BUF - PAGE_SIZE, false)).not.toBe(0)
  })
})

describe('u64 values are exact', () => {
  it('COPY from 2^54 + 2 bytes into an area keeps the exact sub-page offset', () => {
    // Without a domain the IOAS alignment is 1 and nothing is pinned, so a 2^60-byte area
    // over a 64 KiB buffer is valid. COPY's automatic IOVA keeps the source's offset in
    // its page (iopt_alloc_iova: page_offset = (uptr + start_byte) % PAGE_SIZE), which a
    // byte offset rounded to a double (2^54 + 2 → 2^54) would lose.
    const w = world()
    const src = ioasAlloc(w.fd)
    const dst = ioasAlloc(w.fd)
    const iova = ioasMap(w.fd, src, w.buf + 1, 1n << 60n, HUGE)
    const cmd = {
      size: 40,
      flags: RW,
      dst_ioas_id: dst,
      src_ioas_id: src,
      length: BigInt(PAGE_SIZE),
      dst_iova: 0n,
      src_iova: iova + (1n << 54n) + 1n,
    }
    w.fd.ioctl(IOMMU_IOAS_COPY, cmd)
    expect(cmd.dst_iova % BigInt(PAGE_SIZE)).toBe(2n)
  })
})

describe('arguments that are no struct', () => {
  it('a user pointer that is no integer is EFAULT', () => {
    const w = world()
    for (const arg of [1.5, Number.NaN, Number.POSITIVE_INFINITY, -1, 2 ** 60]) {
      expect(errnoOf(() => w.fd.ioctl(IOMMU_IOAS_ALLOC, arg))).toBe('EFAULT')
    }
  })

  it('outputs into a frozen object are EFAULT, and the new object is gone', () => {
    const w = world()
    const cmd = Object.freeze({ size: 12, flags: 0, out_ioas_id: 0 })
    expectErrno('EFAULT', () => w.fd.ioctl(IOMMU_IOAS_ALLOC, cmd))
    // iommufd_ioas_alloc_ioctl aborts the IOAS when copy_to_user fails: id 1 is unused.
    expectErrno('ENOENT', () => w.fd.ioctl(IOMMU_DESTROY, { size: 8, id: 1 }))
    const map = Object.freeze({
      size: 40,
      flags: RW | IOMMU_IOAS_MAP_FIXED_IOVA,
      ioas_id: ioasAlloc(w.fd),
      user_va: BigInt(w.buf),
      length: BigInt(BUF),
      iova: MOCK_APERTURE_START,
    })
    // IOAS_MAP writes the IOVA back after mapping: the kernel keeps the mapping.
    expectErrno('EFAULT', () => w.fd.ioctl(IOMMU_IOAS_MAP, map))
    expectErrno('EEXIST', () => w.fd.ioctl(IOMMU_IOAS_MAP, { ...map }))
  })
})

describe('random ioctls on the mock IOMMU', () => {
  it('fail only with errno, leak nothing and lose no dirty page (seed 1)', () => {
    const r = runUapiFuzz(
      { name: 'mock', machine: () => createMachine({ iommus: [mockIommu()] }) },
      { seed: 1, ops: 5000, opsPerWorld: 250 },
    )
    expect(r.problems).toEqual([])
    expect(r.dirty.falseNegativesWellFormed).toBe(0)
    // The run reached what it checks: successes, many errnos, DMA, dirty pages.
    expect(r.succeeded).toBeGreaterThan(500)
    expect(Object.keys(r.errnos).length).toBeGreaterThan(12)
    expect(r.dmaWrites).toBeGreaterThan(100)
    expect(r.dirty.wellFormedReads).toBeGreaterThan(10)
    expect(r.dirty.expected).toBeGreaterThan(10)
    // Every miss was explained by the dirty-tracking hazard log: a bitmap page that could
    // not be pinned (lost), a walk stopped at a gap (missed, still dirty).
    expect(r.dirty.falseNegatives).toBe(0)
    expect(r.dirty.lostByKind).toEqual({ 'bitmap-pin-failed': 1 })
    expect(r.dirty.missedByKind).toEqual({ 'walk-stopped': 5 })
  })

  it('report every miss the hazard log does not explain, malformed reads too (detector off)', () => {
    const r = runUapiFuzz(
      {
        name: 'mock, no hazard detector',
        machine: () => {
          const m = createMachine({ iommus: [mockIommu()] })
          m.dirtyHazards.enabled = false
          return m
        },
      },
      { seed: 1, ops: 5000, opsPerWorld: 250 },
    )
    // The same six misses, now unexplained: each one a finding.
    expect([r.dirty.lost, r.dirty.missed, r.dirty.falseNegatives]).toEqual([0, 0, 6])
    expect(r.problems.map((p) => p.kind)).toEqual(Array(6).fill('dirty-false-negative'))
    expect(r.problems[0]?.detail).toMatch(
      /not in the bitmap, and the dirty hazard log does not list it/,
    )
  })
})

describe('arrays as long as the user says', () => {
  it('ALLOW_IOVAS checks ranges in array order: the first failure wins, the old list stays', () => {
    const w = world()
    const ioas = ioasAlloc(w.fd)
    // A whole number of pages, followed by a hole.
    const n = 20_480
    const arr = w.proc.mmap(n * 16 + PAGE_SIZE)
    w.proc.munmap(arr + n * 16, PAGE_SIZE)
    const put = (i: number, start: bigint, last: bigint) => {
      const b = new Uint8Array(16)
      const v = new DataView(b.buffer)
      v.setBigUint64(0, start, true)
      v.setBigUint64(8, last, true)
      w.proc.write(arr + i * 16, b)
    }
    // Descending disjoint ranges, so that sorting matters.
    for (let i = 0; i < n; i++) {
      const s = BigInt(n - i) << 24n
      put(i, s, s + 0xfffn)
    }
    const allow = (num: number, at = arr) =>
      errnoOf(() =>
        w.fd.ioctl(IOMMU_IOAS_ALLOW_IOVAS, {
          size: 24,
          ioas_id: ioas,
          num_iovas: num,
          allowed_iovas: BigInt(at),
        }),
      )
    expect(allow(n)).toBe('OK')
    const allowed = () => (w.fd.ctx.objects.get(ioas, ObjType.IOAS) as Ioas).iopt.allowed
    expect(allowed().length).toBe(n)
    expect(allowed()[0]?.start).toBe(1n << 24n)
    // Entry 15000 repeats entry 10 (EINVAL); past the end of the array is EFAULT; an empty
    // range at 12000 comes first.
    put(15_000, BigInt(n - 10) << 24n, (BigInt(n - 10) << 24n) + 1n)
    expect(allow(n + 1)).toBe('EINVAL')
    put(12_000, 5n, 5n)
    expect(allow(n)).toBe('EINVAL')
    expect(allow(11_000)).toBe('OK')
    expect(allowed().length).toBe(11_000)
    // The array runs off its mapping before any bad entry: EFAULT; the list stays.
    expect(allow(n, arr + (n - 100) * 16)).toBe('EFAULT')
    expect(allowed().length).toBe(11_000)
  })

  it('GET_HW_INFO clears a 4 GiB data_len only as far as the buffer goes: EFAULT', () => {
    const w = world()
    const md = mockDomain(w.fd, ioasAlloc(w.fd))
    const buf = w.proc.mmap(PAGE_SIZE)
    w.proc.write(buf, new Uint8Array(PAGE_SIZE).fill(0xaa))
    const info = {
      size: 32,
      dev_id: md.idevId,
      data_len: 0xffff_ffff,
      data_uptr: BigInt(buf),
    }
    expectErrno('EFAULT', () => w.fd.ioctl(IOMMU_GET_HW_INFO, info))
    // The 8-byte selftest info went out, then clear_user zeroed up to the fault.
    expect(w.proc.read(buf + 8, PAGE_SIZE - 8).every((b) => b === 0)).toBe(true)
  })
})

describe('a mock device destroyed with a PASID attached', () => {
  it('detaches every PASID and frees everything, on IOMMU_DESTROY and on close', () => {
    for (const how of ['destroy', 'close'] as const) {
      const w = world()
      const ioas = ioasAlloc(w.fd)
      ioasMap(w.fd, ioas, w.buf, BUF, MOCK_APERTURE_START)
      const md = mockDomain(w.fd, ioas, MOCK_FLAGS_DEVICE_PASID)
      const hwpt = hwptAlloc(w.fd, md.idevId, ioas, IOMMU_HWPT_ALLOC_PASID)
      // The RID must sit on a PASID-capable HWPT while a PASID is attached.
      mockDomainReplace(w.fd, md.stdevId, hwpt)
      w.fd.ioctl(IOMMU_TEST_CMD, {
        size: 72,
        op: IOMMU_TEST_OP_PASID_ATTACH,
        id: md.stdevId,
        pasid_attach: { pasid: 2, pt_id: hwpt },
      })
      if (how === 'destroy') w.fd.ioctl(IOMMU_DESTROY, { size: 8, id: md.stdevId })
      w.fd.close()
      expect(w.fd.ctx.released).toBe(true)
      expect(w.m.devices.length).toBe(0)
      nothingPinned(w)
    }
  })
})

describe('a driver that claims IOMMU_CAP_ENFORCE_CACHE_COHERENCY but cannot enforce it', () => {
  it('fails the new HWPT with EINVAL (iommufd_hwpt_paging_enforce_cc) and leaves nothing', () => {
    const w = world()
    const core = w.m.iommu
    const capable = core.deviceIommuCapable.bind(core)
    // The mock has no enforce_cache_coherency op: claiming the capability is the bug.
    Object.defineProperty(core, 'deviceIommuCapable', {
      value: (dev: PciDevice, cap: IommuCap) =>
        cap === IommuCap.ENFORCE_CACHE_COHERENCY || capable(dev, cap),
    })
    const ioas = ioasAlloc(w.fd)
    ioasMap(w.fd, ioas, w.buf, BUF, MOCK_APERTURE_START)
    const idev = w.fd.bindDevice(w.m.addPciDevice())
    expectErrno('EINVAL', () => hwptAlloc(w.fd, idev.id, ioas, 0))
    expectErrno('EINVAL', () => idev.attach(ioas))
    idev.unbind()
    w.fd.close()
    expect(w.fd.ctx.released).toBe(true)
    nothingPinned(w)
  })
})

describe('IOMMU_HW_QUEUE_ALLOC with a length far past anything mapped', () => {
  it('fails ENOMEM as kvzalloc of the page array does, sizing nothing', () => {
    const w = world()
    const ioas = ioasAlloc(w.fd)
    const iova = ioasMap(w.fd, ioas, w.buf, BUF, MOCK_APERTURE_START)
    const md = mockDomain(w.fd, ioas)
    const parent = hwptAlloc(w.fd, md.idevId, ioas, IOMMU_HWPT_ALLOC_NEST_PARENT)
    const viommu = {
      size: 40,
      type: IOMMU_VIOMMU_TYPE_SELFTEST,
      dev_id: md.idevId,
      hwpt_id: parent,
      out_viommu_id: 0,
    }
    w.fd.ioctl(IOMMU_VIOMMU_ALLOC, viommu)
    const queue = (length: bigint) => ({
      size: 40,
      viommu_id: viommu.out_viommu_id,
      type: IOMMU_HW_QUEUE_TYPE_SELFTEST,
      index: 0,
      nesting_parent_iova: iova,
      length,
    })
    // 2^52 bytes: 2^40 page pointers, past kvmalloc's INT_MAX.
    expectErrno('ENOMEM', () => w.fd.ioctl(IOMMU_HW_QUEUE_ALLOC, queue(1n << 52n)))
    // Below that limit the pin finds the range not mapped.
    expectErrno('ENOENT', () => w.fd.ioctl(IOMMU_HW_QUEUE_ALLOC, queue(1n << 36n)))
    w.fd.ioctl(IOMMU_HW_QUEUE_ALLOC, queue(BigInt(PAGE_SIZE)))
    w.fd.close()
    nothingPinned(w)
  })
})

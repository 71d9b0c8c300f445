/**
 * Port of `iommufd_fail_nth.c` (reference iommufd-uapi.md §7.2): each sequence runs again
 * and again with its k-th allocation point failing (frames, the mock driver's maps and
 * allocations, iommufd's objects, areas, pages, pins, charges, handles, lookups...), for
 * every k until a run completes. Each failing run must fail with an errno, and once the
 * context is closed and the process gone nothing may be left: no object, no pin, no
 * frame, no device.
 */
import {
  createMachine,
  isIommuError,
  MAP_SHARED,
  type Machine,
  PROT_READ,
  type Process,
} from '@iommu/core'
import { MOCK_APERTURE_START, mockIommu } from '@iommu/core/testing'
import { describe, expect, it } from 'vitest'
import {
  fdClose,
  fdInstall,
  IOMMU_DESTROY,
  IOMMU_GET_HW_INFO,
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_ALLOC_PASID,
  IOMMU_IOAS_ALLOW_IOVAS,
  IOMMU_IOAS_COPY,
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_TEST_CMD,
  type Iommufd,
  openIommufd,
} from '../src/index.ts'
import {
  _testCmdCreateAccess,
  _testCmdDestroyAccessPages,
  _testCmdGetDirtyBitmap,
  _testCmdHwptAlloc,
  _testCmdHwQueueAlloc,
  _testCmdMockDomain,
  _testCmdMockDomainFlags,
  _testCmdMockDomainReplace,
  _testCmdReadVevents,
  _testCmdSetDirtyTracking,
  _testCmdTriggerIopf,
  _testCmdTriggerVevents,
  _testCmdVdeviceAlloc,
  _testCmdVeventqAlloc,
  _testCmdViommuAlloc,
  _testCmdViommuInvalidate,
  _testIoctlDestroy,
  _testIoctlFaultAlloc,
  _testIoctlIoasAlloc,
  _testIoctlIoasUnmap,
  _testIoctlSetTempMemoryLimit,
  PAGE_SIZE,
} from '../src/testing/index.ts'
import {
  IOMMU_HW_QUEUE_TYPE_SELFTEST,
  IOMMU_HWPT_DATA_SELFTEST,
  IOMMU_HWPT_FAULT_ID_VALID,
  IOMMU_HWPT_SELFTEST_LAYOUT,
  IOMMU_TEST_IOTLB_DEFAULT,
  IOMMU_TEST_OP_ACCESS_RW,
  IOMMU_TEST_OP_PASID_ATTACH,
  IOMMU_TEST_OP_PASID_DETACH,
  IOMMU_TEST_OP_PASID_REPLACE,
  IOMMU_VEVENTQ_TYPE_SELFTEST,
  IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST,
  IOMMU_VIOMMU_SELFTEST_LAYOUT,
  IOMMU_VIOMMU_TYPE_SELFTEST,
  MOCK_ACCESS_RW_SLOW_PATH,
  MOCK_ACCESS_RW_WRITE,
  MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES,
  MOCK_FLAGS_DEVICE_PASID,
} from '../src/uapi/index.ts'
import { encodeStruct } from '../src/uapi/struct.ts'
import { accessPages, hwptAlloc, ioasMap, ioasMapFile, RW } from './helpers.ts'

/** The fail_nth selftest's global buffer: 2 MiB. */
const BUFFER_SIZE = 2 * 1024 * 1024

interface World {
  readonly m: Machine
  readonly proc: Process
  readonly fd: Iommufd
  readonly buffer: number
  readonly mfd: number
  /** Set by sequences that leave these open, for the teardown (as the C fixture's). */
  accessFd: number
  stdevId: number
  pasid: number
}

function world(): World {
  const m = createMachine({ iommus: [mockIommu()] })
  const proc = m.createProcess()
  const buffer = proc.mmap(BUFFER_SIZE)
  const memfd = proc.memfdCreate('buffer')
  memfd.ftruncate(BUFFER_SIZE)
  const mfd = fdInstall(proc, memfd)
  proc.mmap(BUFFER_SIZE, { file: memfd })
  const fd = openIommufd(m, proc, { test: true, cred: { CAP_IPC_LOCK: false } })
  return { m, proc, fd, buffer, mfd, accessFd: 0, stdevId: 0, pasid: 0 }
}

/**
 * `TEST_FAIL_NTH`: run `seq` with failure point k = 1, 2, ... until a run never reaches
 * its k-th point; check every run for a clean errno and no leaks.
 *
 * @returns the number of runs that failed
 */
function failNth(
  seq: (w: World, enable: () => void) => void,
  sites: Set<string> | null = null,
): number {
  let failures = 0
  for (let k = 1; k < 1000; k++) {
    const w = world()
    const enable = () => w.m.faults.arm(k)
    let error: unknown = null
    try {
      seq(w, enable)
    } catch (e) {
      error = e
    }
    const fired = w.m.faults.firedAt !== null
    if (w.m.faults.firedAt !== null) sites?.add(w.m.faults.firedAt)
    w.m.faults.disarm()
    if (error !== null) {
      // Only an injected failure may stop a sequence, and only with an errno.
      if (!isIommuError(error) || !fired) throw error
      failures++
    }
    // FIXTURE_TEARDOWN(basic_fail_nth): the access fd, a PASID left attached, the fd.
    if (w.accessFd) fdClose(w.proc, w.accessFd)
    if (w.pasid && w.stdevId) {
      w.fd.ioctl(IOMMU_TEST_CMD, {
        size: 72,
        op: IOMMU_TEST_OP_PASID_DETACH,
        id: w.stdevId,
        pasid_detach: { pasid: w.pasid },
      })
    }
    w.fd.close()
    const stats = w.m.memory.frameStats()
    expect({
      k,
      released: w.fd.ctx.released,
      objects: w.fd.ctx.objects.empty,
      pins: stats.pins,
    }).toEqual({
      k,
      released: true,
      objects: true,
      pins: 0,
    })
    expect(w.m.devices.length).toBe(0)
    // exit(): the memfd's fd closes and every mapping goes.
    fdClose(w.proc, w.mfd)
    w.proc.exit()
    expect(w.m.memory.frameStats().allocated).toBe(0)
    if (!fired) return failures
  }
  throw new Error('fail_nth: more than 1000 failure points')
}

describe('iommufd_fail_nth: every injected failure unwinds completely (§7.2)', () => {
  it('basic: IOAS_ALLOC, IOVA_RANGES, ALLOW_IOVAS, MAP, COPY, UNMAP', () => {
    const n = failNth((w, enable) => {
      enable()
      const ioas = _testIoctlIoasAlloc(w.fd)
      const ranges = w.proc.mmap(PAGE_SIZE)
      w.fd.ioctl(IOMMU_IOAS_IOVA_RANGES, {
        size: 32,
        ioas_id: ioas,
        num_iovas: 10,
        allowed_iovas: BigInt(ranges),
      })
      const r = new DataView(new ArrayBuffer(16))
      r.setBigUint64(0, 16n * 1024n, true)
      r.setBigUint64(8, BigInt(BUFFER_SIZE + 16 * 1024 * 600 - 1), true)
      w.proc.write(ranges, new Uint8Array(r.buffer))
      w.fd.ioctl(IOMMU_IOAS_ALLOW_IOVAS, {
        size: 24,
        ioas_id: ioas,
        num_iovas: 1,
        allowed_iovas: BigInt(ranges),
      })
      const iova = ioasMap(w.fd, ioas, w.buffer, BUFFER_SIZE)
      w.fd.ioctl(IOMMU_IOAS_COPY, {
        size: 40,
        flags: RW,
        dst_ioas_id: ioas,
        src_ioas_id: ioas,
        src_iova: iova,
        length: 160n,
      })
      _testIoctlIoasUnmap(w.fd, ioas, iova, BUFFER_SIZE)
      // The failure path of an unmap with nothing mapped.
      try {
        _testIoctlIoasUnmap(w.fd, ioas, iova, BUFFER_SIZE)
      } catch {}
    })
    expect(n).toBeGreaterThan(5)
  })

  for (const file of [false, true]) {
    it(`${file ? 'map_file_domain' : 'map_domain'}: domain fill paths`, () => {
      const n = failNth((w, enable) => {
        const ioas = _testIoctlIoasAlloc(w.fd)
        _testIoctlSetTempMemoryLimit(w.fd, 32)
        enable()
        const a = _testCmdMockDomain(w.fd, ioas)
        if (file) ioasMapFile(w.fd, ioas, w.mfd, 0, 262144)
        else ioasMap(w.fd, ioas, w.buffer, 262144)
        _testIoctlDestroy(w.fd, a.stdev_id)
        _testCmdMockDomain(w.fd, ioas)
      })
      expect(n).toBeGreaterThan(5)
    })
  }

  it('map_two_domains: fill of a second domain and unfill of both', () => {
    const n = failNth((w, enable) => {
      const ioas = _testIoctlIoasAlloc(w.fd)
      _testIoctlSetTempMemoryLimit(w.fd, 32)
      const a = _testCmdMockDomain(w.fd, ioas)
      enable()
      const b = _testCmdMockDomain(w.fd, ioas)
      ioasMap(w.fd, ioas, w.buffer, 262144)
      _testIoctlDestroy(w.fd, a.stdev_id)
      _testIoctlDestroy(w.fd, b.stdev_id)
      _testCmdMockDomain(w.fd, ioas)
      _testCmdMockDomain(w.fd, ioas)
    })
    expect(n).toBeGreaterThan(5)
  })

  it('access_rw: fast and slow paths', () => {
    const n = failNth((w, enable) => {
      const ioas = _testIoctlIoasAlloc(w.fd)
      _testIoctlSetTempMemoryLimit(w.fd, 32)
      const iova = ioasMap(w.fd, ioas, w.buffer, 262144)
      enable()
      w.accessFd = _testCmdCreateAccess(w.fd, ioas, 0)
      const tmp = w.proc.mmap(8 * PAGE_SIZE)
      for (const flags of [
        0,
        MOCK_ACCESS_RW_WRITE,
        MOCK_ACCESS_RW_SLOW_PATH,
        MOCK_ACCESS_RW_SLOW_PATH | MOCK_ACCESS_RW_WRITE,
      ]) {
        w.fd.ioctl(IOMMU_TEST_CMD, {
          size: 72,
          op: IOMMU_TEST_OP_ACCESS_RW,
          id: w.accessFd,
          access_rw: { iova, length: 64n, uptr: BigInt(tmp), flags },
        })
      }
      w.fd.ioctl(IOMMU_TEST_CMD, {
        size: 72,
        op: IOMMU_TEST_OP_ACCESS_RW,
        id: w.accessFd,
        access_rw: {
          iova,
          length: BigInt(8 * PAGE_SIZE),
          uptr: BigInt(tmp),
          flags: MOCK_ACCESS_RW_SLOW_PATH,
        },
      })
      fdClose(w.proc, w.accessFd)
      w.accessFd = 0
    })
    expect(n).toBeGreaterThan(2)
  })

  for (const withDomain of [false, true]) {
    it(`${withDomain ? 'access_pin_domain' : 'access_pin'}: pin and unpin through an access`, () => {
      const n = failNth((w, enable) => {
        const ioas = _testIoctlIoasAlloc(w.fd)
        _testIoctlSetTempMemoryLimit(w.fd, 32)
        const md = withDomain ? _testCmdMockDomain(w.fd, ioas) : null
        const iova = ioasMap(w.fd, ioas, w.buffer, BUFFER_SIZE)
        w.accessFd = _testCmdCreateAccess(w.fd, ioas, MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES)
        enable()
        const id = accessPages(w.fd, w.accessFd, iova, BUFFER_SIZE, w.buffer)
        _testCmdDestroyAccessPages(w.fd, w.accessFd, id)
        fdClose(w.proc, w.accessFd)
        w.accessFd = 0
        if (md !== null) _testIoctlDestroy(w.fd, md.stdev_id)
      })
      expect(n).toBeGreaterThan(1)
    })
  }

  it('device: bind, hw_info, HWPT alloc, replace, nest parent, vIOMMU, vDEVICE, HW queue, fault, vEVENTQ, PASID', () => {
    const n = failNth((w, enable) => {
      const ioas = _testIoctlIoasAlloc(w.fd)
      const ioas2 = _testIoctlIoasAlloc(w.fd)
      ioasMap(w.fd, ioas, w.buffer, PAGE_SIZE, MOCK_APERTURE_START)
      ioasMap(w.fd, ioas2, w.buffer, PAGE_SIZE, MOCK_APERTURE_START)
      enable()
      const md = _testCmdMockDomainFlags(w.fd, ioas, MOCK_FLAGS_DEVICE_PASID)
      w.stdevId = md.stdev_id
      const info = w.proc.mmap(PAGE_SIZE)
      w.fd.ioctl(IOMMU_GET_HW_INFO, {
        size: 40,
        dev_id: md.idev_id,
        data_len: 8,
        data_uptr: BigInt(info),
      })
      const h = hwptAlloc(w.fd, md.idev_id, ioas, IOMMU_HWPT_ALLOC_PASID)
      _testCmdMockDomainReplace(w.fd, md.stdev_id, ioas2)
      _testCmdMockDomainReplace(w.fd, md.stdev_id, h)
      const parent = hwptAlloc(
        w.fd,
        md.idev_id,
        ioas,
        IOMMU_HWPT_ALLOC_NEST_PARENT | IOMMU_HWPT_ALLOC_PASID,
      )
      const viommu = _testCmdViommuAlloc(
        w.fd,
        md.idev_id,
        parent,
        0,
        IOMMU_VIOMMU_TYPE_SELFTEST,
        null,
        0,
      )
      _testCmdVdeviceAlloc(w.fd, viommu, md.idev_id, 0)
      _testCmdHwQueueAlloc(
        w.fd,
        viommu,
        IOMMU_HW_QUEUE_TYPE_SELFTEST,
        0,
        MOCK_APERTURE_START,
        PAGE_SIZE,
      )
      const fault = _testIoctlFaultAlloc(w.fd)
      fdClose(w.proc, fault.fault_fd)
      const data = encodeStruct(IOMMU_HWPT_SELFTEST_LAYOUT, { iotlb: IOMMU_TEST_IOTLB_DEFAULT })
      _testCmdHwptAlloc(
        w.fd,
        md.idev_id,
        parent,
        fault.fault_id,
        IOMMU_HWPT_FAULT_ID_VALID,
        IOMMU_HWPT_DATA_SELFTEST,
        data,
        data.length,
      )
      const q = _testCmdVeventqAlloc(w.fd, viommu, IOMMU_VEVENTQ_TYPE_SELFTEST, 2)
      fdClose(w.proc, q.veventq_fd)
      const test = hwptAlloc(w.fd, md.idev_id, ioas, IOMMU_HWPT_ALLOC_PASID)
      w.pasid = 200
      const pasidCmd = (op: number, pt: number) => ({
        size: 72,
        op,
        id: md.stdev_id,
        pasid_attach: { pasid: 200, pt_id: pt },
      })
      try {
        w.fd.ioctl(IOMMU_TEST_CMD, pasidCmd(IOMMU_TEST_OP_PASID_ATTACH, parent))
      } catch (e) {
        w.pasid = 0
        throw e
      }
      w.fd.ioctl(IOMMU_TEST_CMD, pasidCmd(IOMMU_TEST_OP_PASID_REPLACE, test))
      w.fd.ioctl(IOMMU_TEST_CMD, {
        size: 72,
        op: IOMMU_TEST_OP_PASID_DETACH,
        id: md.stdev_id,
        pasid_detach: { pasid: 200 },
      })
      w.pasid = 0
    })
    expect(n).toBeGreaterThan(10)
  })

  it('vIOMMU data and mmap, vEVENT delivery, IOPF read and response, vIOMMU invalidation', () => {
    const sites = new Set<string>()
    const n = failNth((w, enable) => {
      const ioas = _testIoctlIoasAlloc(w.fd)
      const md = _testCmdMockDomain(w.fd, ioas)
      const parent = hwptAlloc(w.fd, md.idev_id, ioas, IOMMU_HWPT_ALLOC_NEST_PARENT)
      enable()
      // Every fd and mapping this sequence opens is closed on the way out, so that the
      // context can go with its own fd (as the process' exit would close them).
      const fds: number[] = []
      let map = 0
      try {
        const data = encodeStruct(IOMMU_VIOMMU_SELFTEST_LAYOUT, { in_data: 7 })
        const viommu = _testCmdViommuAlloc(
          w.fd,
          md.idev_id,
          parent,
          0,
          IOMMU_VIOMMU_TYPE_SELFTEST,
          data,
          data.length,
        )
        const dv = new DataView(data.buffer)
        map = w.fd.mmap(null, 2 * PAGE_SIZE, PROT_READ, MAP_SHARED, dv.getBigUint64(8, true))
        _testCmdVdeviceAlloc(w.fd, viommu, md.idev_id, 5)
        const fault = _testIoctlFaultAlloc(w.fd)
        fds.push(fault.fault_fd)
        const sel = encodeStruct(IOMMU_HWPT_SELFTEST_LAYOUT, { iotlb: IOMMU_TEST_IOTLB_DEFAULT })
        const nested = _testCmdHwptAlloc(
          w.fd,
          md.idev_id,
          viommu,
          fault.fault_id,
          IOMMU_HWPT_FAULT_ID_VALID,
          IOMMU_HWPT_DATA_SELFTEST,
          sel,
          sel.length,
        )
        const q = _testCmdVeventqAlloc(w.fd, viommu, IOMMU_VEVENTQ_TYPE_SELFTEST, 2)
        fds.push(q.veventq_fd)
        _testCmdMockDomainReplace(w.fd, md.stdev_id, nested)
        _testCmdTriggerVevents(w.fd, md.idev_id, 1)
        _testCmdReadVevents(w.fd, q.veventq_fd, 1, 5, { value: -1 })
        _testCmdTriggerIopf(w.fd, md.idev_id, 0x1, fault.fault_fd)
        const inv = new Uint8Array(12)
        new DataView(inv.buffer).setUint32(4, 5, true)
        _testCmdViommuInvalidate(w.fd, viommu, inv, IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST, 12, {
          value: 1,
        })
        _testCmdMockDomainReplace(w.fd, md.stdev_id, ioas)
      } finally {
        for (const f of fds) fdClose(w.proc, f)
        if (map) w.proc.munmap(map, 2 * PAGE_SIZE)
      }
    }, sites)
    expect(n).toBeGreaterThan(10)
    // Every allocation point of the vIOMMU family was made to fail once.
    for (const site of [
      'iommufd:object',
      'iommufd:mmap',
      'iommufd:eventq_file',
      'iommufd:vdev_slot',
      'iommufd:vevent',
      'iommufd:fault_cookie',
      'mock:nested',
      'mock:inv',
    ]) {
      expect(sites.has(site), site).toBe(true)
    }
  })

  it('dirty tracking: HWPT_ALLOC(DIRTY_TRACKING), SET_DIRTY_TRACKING, DMA, GET_DIRTY_BITMAP', () => {
    const n = failNth((w, enable) => {
      const ioas = _testIoctlIoasAlloc(w.fd)
      const md = _testCmdMockDomain(w.fd, ioas)
      ioasMap(w.fd, ioas, w.buffer, 262144, MOCK_APERTURE_START)
      enable()
      const h = hwptAlloc(w.fd, md.idev_id, ioas, IOMMU_HWPT_ALLOC_DIRTY_TRACKING)
      _testCmdMockDomainReplace(w.fd, md.stdev_id, h)
      _testCmdSetDirtyTracking(w.fd, h, true)
      const dev = w.m.devices[0]
      dev?.dma.write(MOCK_APERTURE_START + 0x3000n, new Uint8Array([1]))
      const bitmap = w.proc.mmap(PAGE_SIZE)
      // A bitmap page that cannot be pinned drops bits silently, as in the kernel.
      _testCmdGetDirtyBitmap(w.fd, h, 262144n, MOCK_APERTURE_START, 4096n, bitmap, 0)
      _testCmdMockDomainReplace(w.fd, md.stdev_id, ioas)
      w.fd.ioctl(IOMMU_DESTROY, { size: 8, id: h })
    })
    expect(n).toBeGreaterThan(5)
  })
})

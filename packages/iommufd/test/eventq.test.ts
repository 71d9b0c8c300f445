/**
 * The fault and vEVENTQ files, the iommufd mmap, and the vIOMMU object graph beyond the
 * selftests: every errno of eventq.c's fops and main.c's mmap, the lost-events marker of
 * §5.7 case by case, and the destruction rules of nesting-viommu.md §5.2.
 */
import {
  createMachine,
  IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE,
  type IommufdHwQueue,
  IommuPageResponseCode,
  iommufdHwQueueDepend,
  iommufdViommuFindDev,
  iommufdViommuGetVdevId,
  iommufdViommuReportEvent,
  iopfFault,
  MAP_PRIVATE,
  MAP_SHARED,
  PROT_EXEC,
  PROT_READ,
} from '@iommu/core'
import {
  IOMMU_HW_QUEUE_TYPE_SELFTEST,
  IOMMU_VEVENTQ_TYPE_SELFTEST,
  IOMMU_VIOMMU_TYPE_SELFTEST,
  type MockIommuUnit,
  mockIommu,
} from '@iommu/core/testing'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import {
  type FaultFile,
  fdClose,
  fdGet,
  fdPoll,
  fdRead,
  fdWrite,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_FAULT_ID_VALID,
  type IommufdHwQueueObj,
  type IommufdViommuObj,
  ObjType,
  openIommufd,
  POLLIN,
  POLLOUT,
  POLLRDNORM,
  type VeventqFile,
} from '../src/index.ts'
import {
  _testCmdHwptAlloc,
  _testCmdHwQueueAlloc,
  _testCmdMockDomain,
  _testCmdMockDomainReplace,
  _testCmdVdeviceAlloc,
  _testCmdVeventqAlloc,
  _testCmdViommuAlloc,
  _testIoctlDestroy,
  _testIoctlFaultAlloc,
  _testIoctlIoasAlloc,
  expectErrno,
  PAGE_SIZE,
} from '../src/testing/index.ts'
import {
  IOMMU_HWPT_DATA_SELFTEST,
  IOMMU_HWPT_SELFTEST_LAYOUT,
  IOMMU_TEST_IOTLB_DEFAULT,
} from '../src/uapi/index.ts'
import { encodeStruct } from '../src/uapi/struct.ts'
import { type Env, errnoOf, hwptAlloc, ioasMap, setup, teardown } from './helpers.ts'

const destroy = _testIoctlDestroy
const vdeviceAlloc = _testCmdVdeviceAlloc
const hwQueueAlloc = _testCmdHwQueueAlloc

/** User data already in the caller's memory. */
interface Udata {
  readonly type: number
  readonly len: number
  readonly uptr: bigint
}

/** A page of the caller's memory holding `bytes`. */
function userBytes(e: Env, bytes: Uint8Array): bigint {
  const va = e.proc.mmap(PAGE_SIZE)
  e.proc.write(va, bytes)
  return BigInt(va)
}

/** `struct iommu_hwpt_selftest data = { .iotlb = IOMMU_TEST_IOTLB_DEFAULT }` in memory. */
function selftestData(e: Env): Udata {
  const b = encodeStruct(IOMMU_HWPT_SELFTEST_LAYOUT, { iotlb: IOMMU_TEST_IOTLB_DEFAULT })
  return { type: IOMMU_HWPT_DATA_SELFTEST, len: b.length, uptr: userBytes(e, b) }
}

function faultAlloc(fd: Env['fd']): { faultId: number; faultFd: number } {
  const r = _testIoctlFaultAlloc(fd)
  return { faultId: r.fault_id, faultFd: r.fault_fd }
}

function hwptAllocIopf(
  fd: Env['fd'],
  devId: number,
  ptId: number,
  faultId: number,
  flags: number,
  data: Udata,
): number {
  return _testCmdHwptAlloc(fd, devId, ptId, faultId, flags, data.type, data.uptr, data.len)
}

function veventqAlloc(fd: Env['fd'], viommuId: number, type: number, depth: number) {
  const r = _testCmdVeventqAlloc(fd, viommuId, type, depth)
  return { id: r.veventq_id, fd: r.veventq_fd }
}

function viommuAlloc(
  fd: Env['fd'],
  devId: number,
  hwptId: number,
  type: number,
  data: { uptr: bigint; len: number } | null = null,
): number {
  return _testCmdViommuAlloc(fd, devId, hwptId, 0, type, data?.uptr ?? null, data?.len ?? 0)
}
const ioasAlloc = _testIoctlIoasAlloc
const mockDomainReplace = _testCmdMockDomainReplace
function mockDomain(fd: Env['fd'], ptId: number) {
  const r = _testCmdMockDomain(fd, ptId)
  return { stdevId: r.stdev_id, idevId: r.idev_id, hwptId: r.hwpt_id }
}

let env: Env
let ioasId = 0
let stdevId = 0
let devId = 0
let parentId = 0

beforeEach(() => {
  env = setup()
  ioasId = ioasAlloc(env.fd)
  const md = mockDomain(env.fd, ioasId)
  stdevId = md.stdevId
  devId = md.idevId
  parentId = hwptAlloc(env.fd, devId, ioasId, IOMMU_HWPT_ALLOC_NEST_PARENT)
})
afterEach(() => teardown(env))

const unit = () => env.m.units[0] as MockIommuUnit
const mockDev = () => env.m.devices[0] as NonNullable<(typeof env.m.devices)[0]>

/** A fault HWPT nested on the parent, with the mock device attached. */
function faultWorld() {
  const { faultId, faultFd } = faultAlloc(env.fd)
  const hwpt = hwptAllocIopf(
    env.fd,
    devId,
    parentId,
    faultId,
    IOMMU_HWPT_FAULT_ID_VALID,
    selftestData(env),
  )
  mockDomainReplace(env.fd, stdevId, hwpt)
  const report = (grpid: number, last = true, addr = 0x1000n) =>
    env.m.iommu.iommuReportDeviceFault(
      mockDev(),
      iopfFault({ grpid, addr, flags: last ? IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE : 0 }),
    )
  const file = fdGet(env.proc, faultFd) as FaultFile
  return { faultId, faultFd, hwpt, report, file }
}

describe('the fault fd (iommufd_fault_fops_*, §5.6)', () => {
  it('read: ESPIPE, whole groups only, EINVAL when the first group does not fit', () => {
    const w = faultWorld()
    const buf = env.proc.mmap(PAGE_SIZE)
    expect(fdRead(env.proc, w.faultFd, buf, 40)).toBe(0) // nothing pending, never blocks
    expect(fdPoll(env.proc, w.faultFd)).toBe(POLLOUT)
    expectErrno('ESPIPE', () => fdRead(env.proc, w.faultFd, buf, 39))
    expectErrno('ESPIPE', () => fdRead(env.proc, w.faultFd, buf, 40, 40))
    w.report(7, false, 0x1000n)
    w.report(7, true, 0x2000n) // a group of two
    w.report(8)
    expect(fdPoll(env.proc, w.faultFd)).toBe(POLLOUT | POLLIN | POLLRDNORM)
    expectErrno('EINVAL', () => fdRead(env.proc, w.faultFd, buf, 0))
    expectErrno('EINVAL', () => fdRead(env.proc, w.faultFd, buf, 40))
    // 120 bytes: group 7 (80) fits, group 8 (40) fits too.
    expect(fdRead(env.proc, w.faultFd, buf, 120)).toBe(120)
    const v = new DataView(env.proc.read(buf, 120).buffer)
    expect([v.getBigUint64(24, true), v.getBigUint64(64, true), v.getBigUint64(104, true)]).toEqual(
      [0x1000n, 0x2000n, 0x1000n],
    )
    // Both records of a group carry its cookie; cookies are lowest-free from 1.
    expect([v.getUint32(36, true), v.getUint32(76, true), v.getUint32(116, true)]).toEqual([
      1, 1, 2,
    ])
    expect(v.getUint32(12, true)).toBe(7)
    // A NULL buffer: EFAULT, and the group stays queued.
    w.report(9)
    expectErrno('EFAULT', () => fdRead(env.proc, w.faultFd, 0, 40))
    expect(w.file.readBytes(40).length).toBe(40)
  })

  it('write: ESPIPE, EINVAL codes and cookies, partial counts; responses reach the driver', () => {
    const w = faultWorld()
    w.report(3)
    w.report(4)
    const rd = w.file.readBytes(80)
    const cookies = [
      new DataView(rd.buffer).getUint32(36, true),
      new DataView(rd.buffer).getUint32(76, true),
    ]
    const resp = (pairs: [number, number][]) => {
      const b = new Uint8Array(8 * pairs.length)
      const v = new DataView(b.buffer)
      pairs.forEach(([c, code], i) => {
        v.setUint32(8 * i, c, true)
        v.setUint32(8 * i + 4, code, true)
      })
      return userBytes(env, b)
    }
    expectErrno('ESPIPE', () => fdWrite(env.proc, w.faultFd, resp([[1, 0]]), 7))
    expectErrno('EINVAL', () => fdWrite(env.proc, w.faultFd, resp([[cookies[0] as number, 2]]), 8))
    expectErrno('EINVAL', () => fdWrite(env.proc, w.faultFd, resp([[99, 0]]), 8))
    const before = unit().pageResponses.length
    // The second response is bad: the first is taken and its 8 bytes are counted.
    expect(
      fdWrite(
        env.proc,
        w.faultFd,
        resp([
          [cookies[0] as number, 0],
          [99, 0],
        ]),
        16,
      ),
    ).toBe(8)
    const invalid = new Uint8Array(8)
    new DataView(invalid.buffer).setUint32(0, cookies[1] as number, true)
    new DataView(invalid.buffer).setUint32(4, IommuPageResponseCode.INVALID, true)
    expect(w.file.writeBytes(invalid)).toBe(8)
    expect(
      unit()
        .pageResponses.slice(before)
        .map((r) => [r.response.grpid, r.response.code]),
    ).toEqual([
      [3, IommuPageResponseCode.SUCCESS],
      [4, IommuPageResponseCode.INVALID],
    ])
    // Answered: the cookie is gone.
    expectErrno('EINVAL', () => fdWrite(env.proc, w.faultFd, resp([[cookies[0] as number, 0]]), 8))
  })

  it('replace and detach answer INVALID what came through the old attachment', () => {
    const w = faultWorld()
    w.report(1) // unread
    w.report(2)
    w.file.readBytes(40) // group 1 read, unanswered; group 2 unread
    const before = unit().pageResponses.length
    mockDomainReplace(env.fd, stdevId, ioasId)
    expect(
      unit()
        .pageResponses.slice(before)
        .map((r) => [r.response.grpid, r.response.code]),
    ).toEqual([
      [2, IommuPageResponseCode.INVALID],
      [1, IommuPageResponseCode.INVALID],
    ])
    expect(w.file.readBytes(40).length).toBe(0)
  })

  it("a paging HWPT with FAULT_ID_VALID delivers the RID's faults too (§2.13)", () => {
    const { faultId, faultFd } = faultAlloc(env.fd)
    const cmd = {
      size: 48,
      flags: IOMMU_HWPT_FAULT_ID_VALID,
      dev_id: devId,
      pt_id: ioasId,
      fault_id: faultId,
      out_hwpt_id: 0,
    }
    env.fd.ioctl(IOMMU_HWPT_ALLOC, cmd)
    mockDomainReplace(env.fd, stdevId, cmd.out_hwpt_id)
    env.m.iommu.iommuReportDeviceFault(
      mockDev(),
      iopfFault({ grpid: 6, flags: IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE }),
    )
    const rec = (fdGet(env.proc, faultFd) as FaultFile).readBytes(40)
    expect(new DataView(rec.buffer).getUint32(12, true)).toBe(6)
    mockDomainReplace(env.fd, stdevId, ioasId)
    destroy(env.fd, cmd.out_hwpt_id)
    fdClose(env.proc, faultFd)
    destroy(env.fd, faultId)
  })

  it('the FAULT object: busy while its fd is open or a HWPT uses it; destroy answers the rest', () => {
    const w = faultWorld()
    w.report(5)
    expectErrno('EBUSY', () => destroy(env.fd, w.faultId))
    mockDomainReplace(env.fd, stdevId, ioasId) // answers group 5
    destroy(env.fd, w.hwpt)
    expectErrno('EBUSY', () => destroy(env.fd, w.faultId))
    fdClose(env.proc, w.faultFd)
    destroy(env.fd, w.faultId)
    expectErrno('EBADF', () => fdRead(env.proc, w.faultFd, 0, 40))
  })
})

describe('the vEVENTQ fd and iommufd_viommu_report_event (§5.7)', () => {
  function veventWorld(depth: number) {
    const viommuId = viommuAlloc(env.fd, devId, parentId, IOMMU_VIOMMU_TYPE_SELFTEST)
    const view = env.fd.ctx.get<IommufdViommuObj>(viommuId, ObjType.VIOMMU).view
    const q = veventqAlloc(env.fd, viommuId, IOMMU_VEVENTQ_TYPE_SELFTEST, depth)
    const file = fdGet(env.proc, q.fd) as VeventqFile
    const report = (x: number) => {
      const b = new Uint8Array(4)
      new DataView(b.buffer).setUint32(0, x, true)
      iommufdViommuReportEvent(view, IOMMU_VEVENTQ_TYPE_SELFTEST, b)
    }
    /** Read and decode: [flags, sequence, payload | null]. */
    const read = (count: number) => {
      const b = file.readBytes(count)
      const v = new DataView(b.buffer)
      const out: [number, number, number | null][] = []
      for (let o = 0; o < b.length; ) {
        const flags = v.getUint32(o, true)
        if (flags & 1) {
          out.push([flags, v.getUint32(o + 4, true), null])
          o += 8
        } else {
          out.push([flags, v.getUint32(o + 4, true), v.getUint32(o + 8, true)])
          o += 12
        }
      }
      return out
    }
    return { viommuId, view, q, report, read, file }
  }

  it('driver-facing report: EOPNOTSUPP without a queue of the type, EINVAL for no data', () => {
    const viommuId = viommuAlloc(env.fd, devId, parentId, IOMMU_VIOMMU_TYPE_SELFTEST)
    const view = env.fd.ctx.get<IommufdViommuObj>(viommuId, ObjType.VIOMMU).view
    expect(
      errnoOf(() => iommufdViommuReportEvent(view, IOMMU_VEVENTQ_TYPE_SELFTEST, new Uint8Array(4))),
    ).toBe('EOPNOTSUPP')
    expect(
      errnoOf(() => iommufdViommuReportEvent(view, IOMMU_VEVENTQ_TYPE_SELFTEST, new Uint8Array(0))),
    ).toBe('EINVAL')
  })

  it('a full queue re-sequences the single marker; it stays last and is read as a bare header', () => {
    const w = veventWorld(1)
    w.report(10)
    w.report(11) // lost: marker, seq 1
    w.report(12) // lost: marker re-queued, seq 2
    expect(w.read(64)).toEqual([
      [0, 0, 10],
      [1, 2, null],
    ])
    w.report(13)
    expect(w.read(64)).toEqual([[0, 3, 13]])
  })

  it('a freed slot lets the next event replace the marker silently: only a gap remains', () => {
    const w = veventWorld(2)
    w.report(1)
    w.report(2)
    w.report(3) // lost → marker seq 2
    expect(w.read(12)).toEqual([[0, 0, 1]])
    w.report(4) // the marker is last: it is removed, event 4 takes seq 3
    expect(w.read(64)).toEqual([
      [0, 1, 2],
      [0, 3, 4],
    ])
  })

  it('sequence numbers wrap at INT_MAX', () => {
    const w = veventWorld(4)
    const q = env.fd.ctx.get<{ sequence: number }>(w.q.id, ObjType.VEVENTQ)
    q.sequence = 0x7fff_ffff
    w.report(1)
    w.report(2)
    expect(w.read(64)).toEqual([
      [0, 0x7fff_ffff, 1],
      [0, 0, 2],
    ])
  })

  it('read errno: ESPIPE, EINVAL below a header or a whole event, EFAULT; no write op', () => {
    const w = veventWorld(4)
    const buf = env.proc.mmap(PAGE_SIZE)
    expectErrno('ESPIPE', () => fdRead(env.proc, w.q.fd, buf, 64, 8))
    expectErrno('EINVAL', () => fdRead(env.proc, w.q.fd, buf, 7))
    expect(fdRead(env.proc, w.q.fd, buf, 64)).toBe(0)
    expect(fdPoll(env.proc, w.q.fd)).toBe(0)
    w.report(5)
    expect(fdPoll(env.proc, w.q.fd)).toBe(POLLIN | POLLRDNORM)
    expectErrno('EINVAL', () => fdRead(env.proc, w.q.fd, buf, 11))
    expectErrno('EFAULT', () => fdRead(env.proc, w.q.fd, 0, 64))
    expect(fdRead(env.proc, w.q.fd, buf, 64)).toBe(12)
    expectErrno('EINVAL', () => fdWrite(env.proc, w.q.fd, buf, 8))
  })
})

describe('mmap on the iommufd fd (iommufd_fops_mmap, §5.5)', () => {
  it('EINVAL without MAP_SHARED, EPERM with PROT_EXEC, ENXIO elsewhere; munmap unblocks', () => {
    const raw = new Uint8Array(24)
    new DataView(raw.buffer).setUint32(0, 0x1234, true)
    const uptr = userBytes(env, raw)
    const viommuId = viommuAlloc(env.fd, devId, parentId, IOMMU_VIOMMU_TYPE_SELFTEST, {
      uptr,
      len: 24,
    })
    const offset = new DataView(env.proc.read(uptr, 24).buffer).getBigUint64(8, true)
    expect(offset).toBe(BigInt(PAGE_SIZE)) // the first page is never handed out
    const len = 2 * PAGE_SIZE
    expectErrno('EINVAL', () => env.fd.mmap(null, len, PROT_READ, MAP_PRIVATE, offset))
    expectErrno('EPERM', () => env.fd.mmap(null, len, PROT_READ | PROT_EXEC, MAP_SHARED, offset))
    expectErrno('EINVAL', () => env.fd.mmap(null, len, PROT_READ, MAP_SHARED, offset + 1n))
    expectErrno('ENXIO', () => env.fd.mmap(null, len, PROT_READ, MAP_SHARED, 0n))
    const a = env.fd.mmap(null, len, PROT_READ, MAP_SHARED, offset)
    const b = env.fd.mmap(null, len, PROT_READ, MAP_SHARED, offset)
    expect(new DataView(env.proc.read(b, 4).buffer).getUint32(0, true)).toBe(0x1234)
    expect(errnoOf(() => env.proc.pinUserPages(a, 1, false, new Int32Array(1)))).toBe('EFAULT')
    env.proc.munmap(a, len)
    expectErrno('EBUSY', () => destroy(env.fd, viommuId))
    env.proc.munmap(b, PAGE_SIZE) // a split: the rest still holds the vIOMMU
    expectErrno('EBUSY', () => destroy(env.fd, viommuId))
    env.proc.munmap(b + PAGE_SIZE, PAGE_SIZE)
    destroy(env.fd, viommuId)
    // The region went with its owner.
    expectErrno('ENXIO', () => env.fd.mmap(null, len, PROT_READ, MAP_SHARED, offset))
  })
})

describe('the vIOMMU object graph (nesting-viommu.md §5.2)', () => {
  it('EBUSY along every edge, and a clean teardown in the documented order', () => {
    const viommuId = viommuAlloc(env.fd, devId, parentId, IOMMU_VIOMMU_TYPE_SELFTEST)
    const vdevId = vdeviceAlloc(env.fd, viommuId, devId, 0x10)
    const q = veventqAlloc(env.fd, viommuId, IOMMU_VEVENTQ_TYPE_SELFTEST, 4)
    const nested = hwptAllocIopf(env.fd, devId, viommuId, 0, 0, selftestData(env))
    mockDomainReplace(env.fd, stdevId, nested)
    expectErrno('EBUSY', () => destroy(env.fd, parentId))
    expectErrno('EBUSY', () => destroy(env.fd, viommuId))
    expectErrno('EBUSY', () => destroy(env.fd, nested))
    expectErrno('EBUSY', () => destroy(env.fd, q.id))
    // Each vIOMMU holds its own virt_id space; a device has one vDEVICE in all.
    const viommu2 = viommuAlloc(env.fd, devId, parentId, IOMMU_VIOMMU_TYPE_SELFTEST)
    expectErrno('EEXIST', () => vdeviceAlloc(env.fd, viommu2, devId, 0x11))
    const other = mockDomain(env.fd, ioasId)
    expectErrno('EEXIST', () => vdeviceAlloc(env.fd, viommuId, other.idevId, 0x10))
    vdeviceAlloc(env.fd, viommu2, other.idevId, 0x10)
    // Teardown order: detach, vEVENTQ (fd, object), vDEVICE, nested HWPT, vIOMMU, parent.
    mockDomainReplace(env.fd, stdevId, ioasId)
    fdClose(env.proc, q.fd)
    destroy(env.fd, q.id)
    destroy(env.fd, vdevId)
    destroy(env.fd, nested)
    destroy(env.fd, viommuId)
    expectErrno('EBUSY', () => destroy(env.fd, parentId)) // viommu2 still holds it
  })

  it('a device behind another IOMMU: EINVAL for vDEVICE and for a nested HWPT on the vIOMMU', () => {
    const drv = mockIommu()
    const m = createMachine({ iommus: [drv, drv] })
    const proc = m.createProcess()
    const fd = openIommufd(m, proc)
    const d0 = fd.bindDevice(m.addPciDevice({ iommu: 0 }))
    const d1 = fd.bindDevice(m.addPciDevice({ iommu: 1 }))
    const ioas = ioasAlloc(fd)
    d0.attach(ioas)
    const parent = hwptAlloc(fd, d0.id, ioas, IOMMU_HWPT_ALLOC_NEST_PARENT)
    const viommuId = viommuAlloc(fd, d0.id, parent, IOMMU_VIOMMU_TYPE_SELFTEST)
    expectErrno('EINVAL', () => vdeviceAlloc(fd, viommuId, d1.id, 1))
    const data = new Uint8Array(8)
    const va = proc.mmap(PAGE_SIZE)
    proc.write(va, data)
    expectErrno('EINVAL', () =>
      hwptAllocIopf(fd, d1.id, viommuId, 0, 0, { type: 0xdead, len: 8, uptr: BigInt(va) }),
    )
    d0.detach()
    d0.unbind()
    d1.unbind()
    fd.close()
    expect(fd.ctx.released).toBe(true)
  })
})

describe('driver services (drivers/iommu/iommufd/driver.c)', () => {
  it('find_dev / get_vdev_id by virtual ID; hw_queue_depend refuses self and foreign queues', () => {
    const viommuId = viommuAlloc(env.fd, devId, parentId, IOMMU_VIOMMU_TYPE_SELFTEST)
    const view = env.fd.ctx.get<IommufdViommuObj>(viommuId, ObjType.VIOMMU).view
    expect(iommufdViommuFindDev(view, 0x77)).toBeNull()
    expect(errnoOf(() => iommufdViommuGetVdevId(view, mockDev()))).toBe('ENOENT')
    vdeviceAlloc(env.fd, viommuId, devId, 0x77)
    expect(iommufdViommuFindDev(view, 0x77)).toBe(mockDev())
    expect(iommufdViommuGetVdevId(view, mockDev())).toBe(0x77n)
    // Two queues on two vIOMMUs.
    const iova = ioasMap(env.fd, ioasId, env.buffer, PAGE_SIZE)
    const viommu2 = viommuAlloc(env.fd, devId, parentId, IOMMU_VIOMMU_TYPE_SELFTEST)
    const qa = hwQueueAlloc(env.fd, viommuId, IOMMU_HW_QUEUE_TYPE_SELFTEST, 0, iova, 64n)
    const qb = hwQueueAlloc(env.fd, viommu2, IOMMU_HW_QUEUE_TYPE_SELFTEST, 0, iova, 64n)
    const va = env.fd.ctx.get<IommufdHwQueueObj>(qa, ObjType.HW_QUEUE).view as IommufdHwQueue
    const vb = env.fd.ctx.get<IommufdHwQueueObj>(qb, ObjType.HW_QUEUE).view as IommufdHwQueue
    expect(va.baseAddr).toBe(iova)
    expect(errnoOf(() => iommufdHwQueueDepend(va, va))).toBe('EINVAL')
    expect(errnoOf(() => iommufdHwQueueDepend(va, vb))).toBe('EINVAL')
    destroy(env.fd, qa)
    destroy(env.fd, qb)
  })
})

describe('release (iommufd_fops_release with files and mappings)', () => {
  it('closing everything frees every object, pin and fd reference', () => {
    const e = setup()
    const ioas = ioasAlloc(e.fd)
    const md = mockDomain(e.fd, ioas)
    const parent = hwptAlloc(e.fd, md.idevId, ioas, IOMMU_HWPT_ALLOC_NEST_PARENT)
    const uptr = userBytes(e, new Uint8Array(24))
    const viommuId = viommuAlloc(e.fd, md.idevId, parent, IOMMU_VIOMMU_TYPE_SELFTEST, {
      uptr,
      len: 24,
    })
    const offset = new DataView(e.proc.read(uptr, 24).buffer).getBigUint64(8, true)
    const map = e.fd.mmap(null, 2 * PAGE_SIZE, PROT_READ, MAP_SHARED, offset)
    vdeviceAlloc(e.fd, viommuId, md.idevId, 1)
    const q = veventqAlloc(e.fd, viommuId, IOMMU_VEVENTQ_TYPE_SELFTEST, 4)
    const f = faultAlloc(e.fd)
    hwptAllocIopf(e.fd, md.idevId, viommuId, f.faultId, IOMMU_HWPT_FAULT_ID_VALID, selftestData(e))
    const kernelFrames = e.m.memory.frameStats().byPurpose.kernel
    expect(kernelFrames).toBeGreaterThanOrEqual(2)
    // The event fds and the mapping keep the context after its own fd is closed.
    e.fd.close()
    expect(e.fd.ctx.released).toBe(false)
    fdClose(e.proc, f.faultFd)
    fdClose(e.proc, q.fd)
    expect(e.fd.ctx.released).toBe(false) // the mapping holds the file too
    e.proc.munmap(map, 2 * PAGE_SIZE)
    expect(e.fd.ctx.released).toBe(true)
    expect(e.m.memory.frameStats().byPurpose.kernel).toBe(kernelFrames - 2)
    expect(e.m.memory.frameStats().pins).toBe(0)
    expect(e.m.devices.length).toBe(0)
  })
})

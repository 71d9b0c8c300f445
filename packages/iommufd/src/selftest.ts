/**
 * The test command (`selftest.c` of a `CONFIG_IOMMUFD_TEST` kernel): IOMMU_TEST_CMD with
 * the operations the kernel selftests use, over the mock driver of `@iommu/core/testing`
 * (reference iommufd-uapi.md §6.6). Only available on a context opened with
 * `{ test: true }`.
 *
 * @module
 */

import {
  FRAME_SIZE,
  IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE,
  IOMMU_FAULT_PAGE_REQUEST_PASID_VALID,
  IOMMU_NO_PASID,
  IommuError,
  iommufdViommuReportEvent,
  iopfFault,
  type PciDevice,
  type Process,
} from '@iommu/core'
import {
  IOMMU_VEVENTQ_TYPE_SELFTEST,
  MOCK_DEV_CACHE_ID_MAX,
  MOCK_NESTED_DOMAIN_IOTLB_ID_MAX,
  MOCK_PASID_WIDTH,
  type MockDev,
  MockDomain,
  MockIommuUnit,
  MockNestedDomain,
  mockMarkDirty,
} from '@iommu/core/testing/mock'
import {
  IOMMUFD_ACCESS_RW_SLOW_PATH,
  IOMMUFD_ACCESS_RW_WRITE,
  type IommufdAccess,
  iommufdAccessCreate,
} from './access.ts'
import type { IommufdCtx } from './ctx.ts'
import {
  getDevice,
  type IommufdDevice,
  iommufdDeviceAttach,
  iommufdDeviceBind,
  iommufdDeviceDetach,
  iommufdDeviceReplace,
  iommufdDeviceUnbind,
} from './device.ts'
import { type FdFile, fdAlloc, fdGet, fdSet, fdTake } from './fd-table.ts'
import { getHwptPaging, type Hwpt } from './hw-pagetable.ts'
import { ULONG_MAX } from './io-pagetable.ts'
import { getIoas } from './ioas.ts'
import { IommufdObject, ObjType } from './object.ts'
import {
  IOMMU_TEST_OP_ACCESS_PAGES,
  IOMMU_TEST_OP_ACCESS_REPLACE_IOAS,
  IOMMU_TEST_OP_ACCESS_RW,
  IOMMU_TEST_OP_ADD_RESERVED,
  IOMMU_TEST_OP_CREATE_ACCESS,
  IOMMU_TEST_OP_DESTROY_ACCESS_PAGES,
  IOMMU_TEST_OP_DEV_CHECK_CACHE,
  IOMMU_TEST_OP_DIRTY,
  IOMMU_TEST_OP_MD_CHECK_IOTLB,
  IOMMU_TEST_OP_MD_CHECK_MAP,
  IOMMU_TEST_OP_MD_CHECK_REFS,
  IOMMU_TEST_OP_MOCK_DOMAIN,
  IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS,
  IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE,
  IOMMU_TEST_OP_PASID_ATTACH,
  IOMMU_TEST_OP_PASID_CHECK_HWPT,
  IOMMU_TEST_OP_PASID_DETACH,
  IOMMU_TEST_OP_PASID_REPLACE,
  IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT,
  IOMMU_TEST_OP_TRIGGER_IOPF,
  IOMMU_TEST_OP_TRIGGER_VEVENT,
  MOCK_ACCESS_RW_SLOW_PATH,
  MOCK_ACCESS_RW_WRITE,
  MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES,
  MOCK_FLAGS_ACCESS_SYZ,
  MOCK_FLAGS_ACCESS_WRITE,
  MOCK_FLAGS_DEVICE_NO_DIRTY,
  MOCK_FLAGS_DEVICE_PASID,
} from './uapi/constants.ts'
import type { iommu_test_cmd_decoded } from './uapi/structs.ts'
import type { Ucmd } from './ucmd.ts'

const PAGE = BigInt(FRAME_SIZE)
/** ACCESS_PAGES/ACCESS_RW refuse more than this (a syzkaller guard). */
const ACCESS_MAX = 16n * 1024n * 1024n

/** `struct selftest_obj` (TYPE_IDEV): a mock device, its binding and its attachment. */
class SelftestObj extends IommufdObject {
  readonly type = ObjType.SELFTEST
  dev: PciDevice | null = null
  idev: IommufdDevice | null = null
  readonly #ctx: IommufdCtx

  constructor(ctx: IommufdCtx) {
    super()
    this.#ctx = ctx
  }

  /**
   * `iommufd_selftest_destroy`: detach, unbind and remove the mock device. The kernel
   * detaches only IOMMU_NO_PASID, so a PASID the test left attached makes
   * `iommufd_device_unbind` WARN and leaks the device object; the model detaches every
   * PASID first (as VFIO's unbind does) rather than reproduce that leak of test-only code.
   */
  destroy(): void {
    if (this.idev !== null) this.idev.unbind()
    if (this.dev !== null) this.#ctx.machine.removePciDevice(this.dev)
  }
}

/** `struct selftest_access`: an access owned by an fd, with its pin records. */
class SelftestAccess implements FdFile {
  access: IommufdAccess | null = null
  readonly items: { id: number; iova: bigint; length: bigint }[] = []
  nextId = 0

  /** The access' `unmap` op: drop every pin record intersecting the range. */
  unmap(iova: bigint, length: bigint): void {
    const last = iova + length - 1n
    for (let i = this.items.length - 1; i >= 0; i--) {
      const it = this.items[i] as { id: number; iova: bigint; length: bigint }
      if (iova > it.iova + it.length - 1n || last < it.iova) continue
      this.items.splice(i, 1)
      this.access?.unpinPages(it.iova, it.length)
    }
  }

  /** Closing the fd unpins everything and destroys the access. */
  release(): void {
    if (this.access === null) return
    this.unmap(0n, ULONG_MAX)
    this.access.release()
    this.access = null
  }
}

function getSelftestObj(ctx: IommufdCtx, id: number): SelftestObj {
  return ctx.get<SelftestObj>(id, ObjType.SELFTEST)
}

function getStaccess(proc: Process, fd: number): SelftestAccess {
  const f = fdGet(proc, fd)
  // A file that is not a test access: the kernel answers EBADFD.
  if (!(f instanceof SelftestAccess) || f.access === null) {
    throw new IommuError('EBADFD', `fd ${fd} is not a test access`)
  }
  return f
}

/** The mock unit test devices sit behind. @throws ENODEV */
function mockUnitIndex(ctx: IommufdCtx): number {
  const u = ctx.machine.units[ctx.test?.mockUnit ?? -1]
  if (!(u instanceof MockIommuUnit)) throw new IommuError('ENODEV', 'no mock IOMMU unit')
  return ctx.test?.mockUnit ?? 0
}

/** MOCK_DOMAIN / MOCK_DOMAIN_FLAGS: create, bind and attach a mock device. */
function testMockDomain(ucmd: Ucmd<iommu_test_cmd_decoded>): void {
  const { cmd, ctx } = ucmd
  const sobj = ctx.objects.alloc(new SelftestObj(ctx))
  let attached = false
  try {
    const flags = cmd.op === IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS ? cmd.mock_domain_flags.dev_flags : 0
    if (flags & ~(MOCK_FLAGS_DEVICE_NO_DIRTY | MOCK_FLAGS_DEVICE_PASID)) {
      throw new IommuError('EINVAL', `dev_flags 0x${flags.toString(16)}`)
    }
    if (ctx.machine.faults.shouldFail('iommufd:mock_dev'))
      throw new IommuError('ENOMEM', 'mock dev')
    sobj.dev = ctx.machine.addPciDevice({
      iommu: mockUnitIndex(ctx),
      dirtyTracking: !(flags & MOCK_FLAGS_DEVICE_NO_DIRTY),
      pasidBits: flags & MOCK_FLAGS_DEVICE_PASID ? MOCK_PASID_WIDTH : 0,
    })
    sobj.idev = iommufdDeviceBind(ctx, sobj.dev, true)
    const ptId = iommufdDeviceAttach(sobj.idev, IOMMU_NO_PASID, cmd.id)
    attached = true
    cmd.mock_domain.out_hwpt_id = ptId
    cmd.mock_domain.out_stdev_id = sobj.id
    cmd.mock_domain.out_idev_id = sobj.idev.id
    ucmd.respond(['mock_domain.out_stdev_id', 'mock_domain.out_hwpt_id', 'mock_domain.out_idev_id'])
  } catch (e) {
    if (sobj.idev !== null) {
      if (attached) iommufdDeviceDetach(sobj.idev, IOMMU_NO_PASID)
      iommufdDeviceUnbind(sobj.idev)
    }
    if (sobj.dev !== null) ctx.machine.removePciDevice(sobj.dev)
    ctx.objects.abort(sobj)
    throw e
  }
  ctx.objects.finalize(sobj)
}

/** `get_md_pagetable`: a HWPT_PAGING whose domain is the mock's. */
function getMockDomain(ctx: IommufdCtx, id: number): MockDomain {
  const d = getHwptPaging(ctx, id).domain
  if (!(d instanceof MockDomain)) throw new IommuError('EINVAL', `HWPT ${id} is not a mock domain`)
  return d
}

/** MD_CHECK_MAP: every mock page at `iova` maps the frame behind `uptr`. */
function testMdCheckMap(
  ctx: IommufdCtx,
  proc: Process,
  c: iommu_test_cmd_decoded['check_map'],
  id: number,
): void {
  const d = getMockDomain(ctx, id)
  const ps = BigInt(1 << d.pageShift)
  let { iova, length, uptr } = c
  if (iova % ps || length % ps || uptr % ps || uptr + length > ULONG_MAX) {
    throw new IommuError('EINVAL', 'check_map alignment')
  }
  const core = ctx.machine.iommu
  for (; length > 0n; length -= ps, iova += ps, uptr += ps) {
    const pfn = proc.pageFrame(uptr & ~(PAGE - 1n), true)
    const pa = core.iommuIovaToPhys(d, iova)
    if (pa !== BigInt(pfn) * PAGE + (uptr % PAGE)) {
      throw new IommuError('EINVAL', `IOVA 0x${iova.toString(16)} maps 0x${pa.toString(16)}`)
    }
  }
}

/** MD_CHECK_REFS: each page under `uptr` has exactly `refs` pins. */
function testMdCheckRefs(
  ctx: IommufdCtx,
  proc: Process,
  c: iommu_test_cmd_decoded['check_refs'],
): void {
  if (c.length % PAGE || c.uptr % PAGE || c.uptr + c.length > ULONG_MAX) {
    throw new IommuError('EINVAL', 'check_refs alignment')
  }
  const mem = ctx.machine.memory
  for (let va = c.uptr; va < c.uptr + c.length; va += PAGE) {
    const pfn = proc.pageFrame(va, true)
    if (mem.pinCount(pfn) !== c.refs) {
      throw new IommuError('EIO', `page 0x${va.toString(16)} has ${mem.pinCount(pfn)} pins`)
    }
  }
}

/** CREATE_ACCESS: an access behind a new fd, attached to an IOAS. */
function testCreateAccess(ucmd: Ucmd<iommu_test_cmd_decoded>): void {
  const { cmd, ctx, caller } = ucmd
  const flags = cmd.create_access.flags
  if (flags & ~MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES) throw new IommuError('EOPNOTSUPP', 'flags')
  const st = new SelftestAccess()
  const fd = fdAlloc(caller.proc)
  let access: IommufdAccess | null = null
  try {
    access = iommufdAccessCreate(ctx, {
      needsPinPages: (flags & MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES) !== 0,
      unmap: (iova, length) => st.unmap(iova, length),
    })
    access.attach(cmd.id)
    cmd.create_access.out_access_fd = fd
    ucmd.respond(['create_access.out_access_fd'])
  } catch (e) {
    access?.release()
    fdTake(caller.proc, fd)
    throw e
  }
  st.access = access
  fdSet(caller.proc, fd, st)
}

/** ACCESS_PAGES: pin through the access and check the pages against `uptr`. */
function testAccessPages(ucmd: Ucmd<iommu_test_cmd_decoded>): void {
  const { cmd, ctx, caller } = ucmd
  const c = cmd.access_pages
  if (c.length > ACCESS_MAX) throw new IommuError('ENOMEM', 'length above 16 MiB')
  if (c.flags & ~(MOCK_FLAGS_ACCESS_WRITE | MOCK_FLAGS_ACCESS_SYZ)) {
    throw new IommuError('EOPNOTSUPP', 'flags')
  }
  const st = getStaccess(caller.proc, cmd.id)
  const access = st.access as IommufdAccess
  if (!access.ops.needsPinPages) throw new IommuError('EOPNOTSUPP', 'access does not pin')
  const down = c.iova & ~(PAGE - 1n)
  const npages = Number((c.iova + c.length + PAGE - 1n - down) / PAGE)
  if (ctx.machine.faults.shouldFail('iommufd:test_pages')) throw new IommuError('ENOMEM', 'pages')
  const pfns = new Int32Array(npages)
  access.pinPages(c.iova, c.length, pfns, c.flags & MOCK_FLAGS_ACCESS_WRITE)
  try {
    if (c.uptr) {
      const base = c.uptr - (c.iova - down)
      for (let i = 0; i < npages; i++) {
        if (caller.proc.pageFrame(base + BigInt(i) * PAGE, true) !== pfns[i]) {
          throw new IommuError('EBADE', `page ${i} differs`)
        }
      }
    }
    if (ctx.machine.faults.shouldFail('iommufd:test_item')) throw new IommuError('ENOMEM', 'item')
    const id = st.nextId++
    st.items.push({ id, iova: c.iova, length: c.length })
    c.out_access_pages_id = id
    try {
      ucmd.respond(['access_pages.out_access_pages_id'])
    } catch (e) {
      st.items.pop()
      throw e
    }
  } catch (e) {
    access.unpinPages(c.iova, c.length)
    throw e
  }
}

/** ACCESS_RW: copy between the caller's buffer and the IOAS through the access. */
function testAccessRw(ucmd: Ucmd<iommu_test_cmd_decoded>): void {
  const { cmd, ctx, caller } = ucmd
  const c = cmd.access_rw
  if (c.length > ACCESS_MAX) throw new IommuError('ENOMEM', 'length above 16 MiB')
  if (c.flags & ~(MOCK_ACCESS_RW_WRITE | MOCK_ACCESS_RW_SLOW_PATH | MOCK_FLAGS_ACCESS_SYZ)) {
    throw new IommuError('EOPNOTSUPP', 'flags')
  }
  const st = getStaccess(caller.proc, cmd.id)
  if (ctx.machine.faults.shouldFail('iommufd:test_rw')) throw new IommuError('ENOMEM', 'buffer')
  const tmp = new Uint8Array(Number(c.length))
  const write = (c.flags & MOCK_ACCESS_RW_WRITE) !== 0
  if (write) caller.proc.readInto(c.uptr, tmp)
  let flags = write ? IOMMUFD_ACCESS_RW_WRITE : 0
  if (c.flags & MOCK_ACCESS_RW_SLOW_PATH) flags |= IOMMUFD_ACCESS_RW_SLOW_PATH
  ;(st.access as IommufdAccess).rw(c.iova, tmp, flags, caller.proc)
  if (!write) caller.proc.write(c.uptr, tmp)
}

/** DESTROY_ACCESS_PAGES: drop one pin record by id. */
function testDestroyAccessPages(ucmd: Ucmd<iommu_test_cmd_decoded>): void {
  const { cmd, caller } = ucmd
  const st = getStaccess(caller.proc, cmd.id)
  const i = st.items.findIndex((it) => it.id === cmd.destroy_access_pages.access_pages_id)
  const it = st.items[i]
  if (it === undefined) throw new IommuError('ENOENT', 'no such access pages id')
  st.items.splice(i, 1)
  st.access?.unpinPages(it.iova, it.length)
}

/** DIRTY: mark the IOPTE under each set bit of the user's bitmap dirty. */
function testDirty(ucmd: Ucmd<iommu_test_cmd_decoded>): void {
  const { cmd, ctx, caller } = ucmd
  const c = cmd.dirty
  if (!c.page_size || !c.length || c.iova % c.page_size || c.length % c.page_size || !c.uptr) {
    throw new IommuError('EINVAL', 'dirty arguments')
  }
  const max = c.length / c.page_size
  if (max > 16n * 1024n * 1024n * 8n) throw new IommuError('EOVERFLOW', 'too many bits')
  const d = getMockDomain(ctx, cmd.id)
  if (!d.dirtyTracking) throw new IommuError('EINVAL', 'dirty tracking is off')
  const n = Number(max)
  const bits = caller.proc.read(c.uptr, Math.ceil(n / 8))
  const ps = BigInt(1 << d.pageShift)
  let count = 0
  for (let i = 0; i < n; i++) {
    if (!((bits[i >>> 3] as number) & (1 << (i & 7)))) continue
    const iova = c.iova + BigInt(i) * c.page_size
    try {
      mockMarkDirty(d, iova - (iova % ps), ps)
    } catch {
      // set_dirty on an unmapped IOVA is ignored.
    }
    count++
  }
  c.out_nr_dirty = BigInt(count)
  ucmd.respond(['dirty.out_nr_dirty'])
}

/** `iommufd_get_hwpt`: a paging or nested HWPT (EINVAL for other objects). */
function getHwpt(ctx: IommufdCtx, id: number): Hwpt {
  const o = ctx.objects.get(id, ObjType.ANY)
  if (o.type !== ObjType.HWPT_PAGING && o.type !== ObjType.HWPT_NESTED) {
    throw new IommuError('EINVAL', `object ${id} is not a HWPT`)
  }
  return o as Hwpt
}

/** PASID_CHECK_HWPT: what the PASID is attached to (0 = nothing). */
function testPasidCheckHwpt(ctx: IommufdCtx, cmd: iommu_test_cmd_decoded): void {
  const sobj = getSelftestObj(ctx, cmd.id)
  const group = sobj.dev?.group
  let attached = null
  if (group) {
    try {
      attached = ctx.machine.iommu.iommuAttachHandleGet(group, cmd.pasid_check.pasid).domain
    } catch {
      attached = null
    }
  }
  if (!cmd.pasid_check.hwpt_id) {
    if (attached) throw new IommuError('EINVAL', 'PASID is attached')
    return
  }
  if (attached !== getHwpt(ctx, cmd.pasid_check.hwpt_id).domain) {
    throw new IommuError('EINVAL', 'PASID is attached elsewhere')
  }
}

/** The mock's per-device state of a bound mock device. @throws EINVAL - not a mock device */
function mockDevState(idev: IommufdDevice): MockDev {
  const unit = idev.dev.iommu?.unit ?? idev.dev.unit
  if (!(unit instanceof MockIommuUnit)) throw new IommuError('EINVAL', 'not a mock device')
  return unit.devState(idev.dev.rid)
}

/**
 * TRIGGER_IOPF: the mock reports one page request (LAST_PAGE, PASID_VALID for a non-zero
 * PASID) for the device. Always 0, whether or not a handler took it.
 */
function testTriggerIopf(ctx: IommufdCtx, c: iommu_test_cmd_decoded['trigger_iopf']): void {
  const idev = getDevice(ctx, c.dev_id)
  mockDevState(idev)
  const evt = iopfFault({
    flags:
      IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE |
      (c.pasid !== IOMMU_NO_PASID ? IOMMU_FAULT_PAGE_REQUEST_PASID_VALID : 0),
    addr: c.addr,
    pasid: c.pasid,
    grpid: c.grpid,
    perm: c.perm,
  })
  try {
    ctx.machine.iommu.iommuReportDeviceFault(idev.dev, evt)
  } catch {
    // iommu_report_device_fault's result is ignored by the test op.
  }
}

/** Dispatch one IOMMU_TEST_CMD operation (`iommufd_test`). */
export function iommufdTest(ucmd: Ucmd<iommu_test_cmd_decoded>): void {
  const { cmd, ctx, caller } = ucmd
  switch (cmd.op) {
    case IOMMU_TEST_OP_ADD_RESERVED: {
      const { start, length } = cmd.add_reserved
      if (!length) throw new IommuError('EINVAL', 'length 0')
      if (start + length - 1n > ULONG_MAX) throw new IommuError('EOVERFLOW', 'start + length')
      getIoas(ctx, cmd.id).iopt.reserveIova(start, start + length - 1n, null)
      return
    }
    case IOMMU_TEST_OP_MOCK_DOMAIN:
    case IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS:
      testMockDomain(ucmd)
      return
    case IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE: {
      const sobj = getSelftestObj(ctx, cmd.id)
      cmd.mock_domain_replace.pt_id = iommufdDeviceReplace(
        sobj.idev as IommufdDevice,
        IOMMU_NO_PASID,
        cmd.mock_domain_replace.pt_id,
      )
      ucmd.respond(['mock_domain_replace.pt_id'])
      return
    }
    case IOMMU_TEST_OP_MD_CHECK_MAP:
      testMdCheckMap(ctx, caller.proc, cmd.check_map, cmd.id)
      return
    case IOMMU_TEST_OP_MD_CHECK_REFS:
      testMdCheckRefs(ctx, caller.proc, cmd.check_refs)
      return
    case IOMMU_TEST_OP_MD_CHECK_IOTLB: {
      const hwpt = ctx.get<Hwpt>(cmd.id, ObjType.HWPT_NESTED)
      const d = hwpt.domain
      if (!(d instanceof MockNestedDomain))
        throw new IommuError('EINVAL', 'not a mock nested domain')
      const { id, iotlb } = cmd.check_iotlb
      if (id > MOCK_NESTED_DOMAIN_IOTLB_ID_MAX || d.iotlb[id] !== iotlb) {
        throw new IommuError('EINVAL', `iotlb[${id}] = ${d.iotlb[id]}`)
      }
      return
    }
    case IOMMU_TEST_OP_DEV_CHECK_CACHE: {
      const st = mockDevState(getDevice(ctx, cmd.id))
      const { id, cache } = cmd.check_dev_cache
      if (id > MOCK_DEV_CACHE_ID_MAX || st.cache[id] !== cache) {
        throw new IommuError('EINVAL', `cache[${id}] = 0x${st.cache[id]?.toString(16)}`)
      }
      return
    }
    case IOMMU_TEST_OP_TRIGGER_IOPF:
      testTriggerIopf(ctx, cmd.trigger_iopf)
      return
    case IOMMU_TEST_OP_TRIGGER_VEVENT: {
      const st = mockDevState(getDevice(ctx, cmd.trigger_vevent.dev_id))
      if (st.viommu === null || !st.vdevId) throw new IommuError('ENOENT', 'no vDEVICE in use')
      const ev = new Uint8Array(4)
      new DataView(ev.buffer).setUint32(0, Number(st.vdevId & 0xffff_ffffn), true)
      iommufdViommuReportEvent(st.viommu, IOMMU_VEVENTQ_TYPE_SELFTEST, ev)
      return
    }
    case IOMMU_TEST_OP_CREATE_ACCESS:
      testCreateAccess(ucmd)
      return
    case IOMMU_TEST_OP_ACCESS_REPLACE_IOAS:
      getStaccess(caller.proc, cmd.id).access?.replace(cmd.access_replace_ioas.ioas_id)
      return
    case IOMMU_TEST_OP_ACCESS_PAGES:
      testAccessPages(ucmd)
      return
    case IOMMU_TEST_OP_ACCESS_RW:
      testAccessRw(ucmd)
      return
    case IOMMU_TEST_OP_DESTROY_ACCESS_PAGES:
      testDestroyAccessPages(ucmd)
      return
    case IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT:
      // Must hold one batch element (sizeof(unsigned long) + sizeof(u32)).
      if (cmd.memory_limit.limit < 12) throw new IommuError('EINVAL', 'memory limit')
      if (ctx.test !== null) ctx.test.memoryLimit = cmd.memory_limit.limit
      return
    case IOMMU_TEST_OP_DIRTY:
      testDirty(ucmd)
      return
    case IOMMU_TEST_OP_PASID_ATTACH: {
      const sobj = getSelftestObj(ctx, cmd.id)
      const idev = sobj.idev as IommufdDevice
      const { pasid } = cmd.pasid_attach
      cmd.pasid_attach.pt_id = iommufdDeviceAttach(idev, pasid, cmd.pasid_attach.pt_id)
      try {
        ucmd.respond(['pasid_attach.pt_id'])
      } catch (e) {
        iommufdDeviceDetach(idev, pasid)
        throw e
      }
      return
    }
    case IOMMU_TEST_OP_PASID_REPLACE: {
      const sobj = getSelftestObj(ctx, cmd.id)
      // The kernel reads the pasid_attach member for replace too (same layout).
      const { pasid, pt_id } = cmd.pasid_attach
      cmd.pasid_attach.pt_id = iommufdDeviceReplace(sobj.idev as IommufdDevice, pasid, pt_id)
      ucmd.respond(['pasid_attach.pt_id'])
      return
    }
    case IOMMU_TEST_OP_PASID_DETACH: {
      const sobj = getSelftestObj(ctx, cmd.id)
      iommufdDeviceDetach(sobj.idev as IommufdDevice, cmd.pasid_detach.pasid)
      return
    }
    case IOMMU_TEST_OP_PASID_CHECK_HWPT:
      testPasidCheckHwpt(ctx, cmd)
      return
    default:
      // The DMABUF operations are not modelled.
      throw new IommuError('EOPNOTSUPP', `test op ${cmd.op}`)
  }
}

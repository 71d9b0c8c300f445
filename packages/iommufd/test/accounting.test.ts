/**
 * Pinned-page accounting: RLIMIT_MODE user vs mm, RLIMIT_MEMLOCK, COPY sharing the charge,
 * and the port of the selftest FIXTURE(change_process) (reference iommufd-uapi.md §3.9,
 * §2.21, §7.1).
 */
import { createMachine } from '@iommu/core'
import { MOCK_APERTURE_START, mockIommu } from '@iommu/core/testing'
import { describe, expect, it } from 'vitest'
import {
  fdInstall,
  IOMMU_IOAS_CHANGE_PROCESS,
  IOMMU_IOAS_COPY,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_OPTION,
  IOMMU_OPTION_OP_SET,
  IOMMU_OPTION_RLIMIT_MODE,
  openIommufd,
} from '../src/index.ts'
import {
  _testCmdCreateAccess,
  _testCmdDestroyAccessPages,
  _testCmdMockDomain,
  _testIoctlIoasAlloc,
  _testIoctlIoasUnmap,
  expectErrno,
  PAGE_SIZE,
} from '../src/testing/index.ts'
import { MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES } from '../src/uapi/index.ts'
import { accessPages, ioasMap, ioasMapFile, RW } from './helpers.ts'

function world(opts: { rlimitPages?: number; vfio?: boolean; ipcLock?: boolean } = {}) {
  const m = createMachine({ iommus: [mockIommu()] })
  const proc = m.createProcess(
    opts.rlimitPages === undefined ? {} : { rlimitMemlock: opts.rlimitPages * PAGE_SIZE },
  )
  const fd = openIommufd(m, proc, {
    test: true,
    vfio: opts.vfio ?? false,
    cred: { CAP_IPC_LOCK: opts.ipcLock ?? false, CAP_SYS_RESOURCE: true },
  })
  return { m, proc, fd }
}

describe('pinned-page accounting (§3.9)', () => {
  it('USER mode charges the user locked_vm and the mm pinned_vm; RLIMIT_MEMLOCK is ENOMEM', () => {
    const { m, proc, fd } = world({ rlimitPages: 8 })
    const ioas = _testIoctlIoasAlloc(fd)
    _testCmdMockDomain(fd, ioas)
    const buf = proc.mmap(16 * PAGE_SIZE)
    expectErrno('ENOMEM', () => ioasMap(fd, ioas, buf, 16 * PAGE_SIZE))
    expect([proc.user.lockedVm, proc.mm.pinnedVm, m.memory.frameStats().pins]).toEqual([0, 0, 0])
    const iova = ioasMap(fd, ioas, buf, 8 * PAGE_SIZE)
    expect([proc.user.lockedVm, proc.mm.lockedVm, proc.mm.pinnedVm]).toEqual([8, 0, 8])
    // COPY shares the pages: pinned and charged once.
    fd.ioctl(IOMMU_IOAS_COPY, {
      size: 40,
      flags: RW | IOMMU_IOAS_MAP_FIXED_IOVA,
      src_ioas_id: ioas,
      dst_ioas_id: ioas,
      src_iova: iova,
      dst_iova: iova + 0x100000n,
      length: BigInt(8 * PAGE_SIZE),
    })
    expect(proc.user.lockedVm).toBe(8)
    _testIoctlIoasUnmap(fd, ioas, iova, 8 * PAGE_SIZE)
    expect(proc.user.lockedVm).toBe(8)
    _testIoctlIoasUnmap(fd, ioas, iova + 0x100000n, 8 * PAGE_SIZE)
    expect([proc.user.lockedVm, proc.mm.pinnedVm, m.memory.frameStats().pins]).toEqual([0, 0, 0])
    fd.close()
  })

  it('/dev/vfio/vfio defaults to MM mode; RLIMIT_MODE=1 charges the mm locked_vm', () => {
    for (const how of ['vfio', 'option'] as const) {
      const { proc, fd } = world({ vfio: how === 'vfio' })
      if (how === 'option') {
        fd.ioctl(IOMMU_OPTION, {
          size: 24,
          option_id: IOMMU_OPTION_RLIMIT_MODE,
          op: IOMMU_OPTION_OP_SET,
          val64: 1n,
        })
      }
      const ioas = _testIoctlIoasAlloc(fd)
      _testCmdMockDomain(fd, ioas)
      const buf = proc.mmap(4 * PAGE_SIZE)
      ioasMap(fd, ioas, buf, 4 * PAGE_SIZE)
      expect([proc.user.lockedVm, proc.mm.lockedVm, proc.mm.pinnedVm]).toEqual([0, 4, 4])
      fd.close()
      expect([proc.mm.lockedVm, proc.mm.pinnedVm]).toEqual([0, 0])
    }
  })

  it('CAP_IPC_LOCK: nothing is charged to locked_vm, pinned_vm still counts', () => {
    const { proc, fd } = world({ ipcLock: true, rlimitPages: 1 })
    const ioas = _testIoctlIoasAlloc(fd)
    _testCmdMockDomain(fd, ioas)
    ioasMap(fd, ioas, proc.mmap(4 * PAGE_SIZE), 4 * PAGE_SIZE)
    expect([proc.user.lockedVm, proc.mm.lockedVm, proc.mm.pinnedVm]).toEqual([0, 0, 4])
    fd.close()
  })

  it('lazy pinning: no charge until a domain or an access pins; attach over the limit is ENOMEM', () => {
    const { m, proc, fd } = world({ rlimitPages: 4 })
    const ioas = _testIoctlIoasAlloc(fd)
    const buf = proc.mmap(8 * PAGE_SIZE)
    const iova = ioasMap(fd, ioas, buf, 8 * PAGE_SIZE, MOCK_APERTURE_START)
    expect(proc.mm.pinnedVm).toBe(0)
    const acc = _testCmdCreateAccess(fd, ioas, MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES)
    const id = accessPages(fd, acc, iova, 2 * PAGE_SIZE, buf)
    expect([proc.user.lockedVm, proc.mm.pinnedVm]).toEqual([2, 2])
    expectErrno('ENOMEM', () => _testCmdMockDomain(fd, ioas))
    expect([proc.user.lockedVm, m.memory.frameStats().pins, m.devices.length]).toEqual([2, 2, 0])
    _testCmdDestroyAccessPages(fd, acc, id)
    expect([proc.user.lockedVm, proc.mm.pinnedVm, m.memory.frameStats().pins]).toEqual([0, 0, 0])
  })
})

describe('FIXTURE(change_process) (§2.21)', () => {
  for (const accounting of ['account_none', 'account_user', 'account_mm'] as const) {
    it(`basic ${accounting}: EINVAL with a non-file map; the charge moves to the caller`, () => {
      const m = createMachine({ iommus: [mockIommu()] })
      const parent = m.createProcess()
      // drop_cap_ipc_lock; account_none keeps the default mode.
      const fd = openIommufd(m, parent, {
        test: true,
        cred: { CAP_IPC_LOCK: false, CAP_SYS_RESOURCE: true },
      })
      if (accounting !== 'account_none') {
        fd.ioctl(IOMMU_OPTION, {
          size: 24,
          option_id: IOMMU_OPTION_RLIMIT_MODE,
          op: IOMMU_OPTION_OP_SET,
          val64: accounting === 'account_mm' ? 1n : 0n,
        })
      }
      const ioas = _testIoctlIoasAlloc(fd)
      _testCmdMockDomain(fd, ioas)
      const cmd = { size: 8 }
      const buffer = parent.mmap(PAGE_SIZE)
      const iova = ioasMap(fd, ioas, buffer, PAGE_SIZE)
      expectErrno('EINVAL', () => fd.ioctl(IOMMU_IOAS_CHANGE_PROCESS, cmd))
      _testIoctlIoasUnmap(fd, ioas, iova, PAGE_SIZE)
      const memfd = parent.memfdCreate('buffer')
      memfd.ftruncate(PAGE_SIZE)
      const mfd = fdInstall(parent, memfd)
      ioasMapFile(fd, ioas, mfd, 0, PAGE_SIZE)
      fd.ioctl(IOMMU_IOAS_CHANGE_PROCESS, cmd)

      // fork(): the child runs as the same user with its own mm.
      const child = m.createProcess({ user: parent.user })
      const mmMode = accounting === 'account_mm'
      expect([
        parent.mm.pinnedVm,
        mmMode ? parent.mm.lockedVm : 1,
        child.mm.pinnedVm,
        child.mm.lockedVm,
      ]).toEqual([1, 1, 0, 0])
      fd.as(child).ioctl(IOMMU_IOAS_CHANGE_PROCESS, cmd)
      expect([parent.mm.pinnedVm, parent.mm.lockedVm, child.mm.pinnedVm]).toEqual([0, 0, 1])
      if (mmMode) expect(child.mm.lockedVm).toBe(1)
      fd.close()
      expect([child.mm.pinnedVm, child.mm.lockedVm, parent.user.lockedVm]).toEqual([0, 0, 0])
    })
  }
})

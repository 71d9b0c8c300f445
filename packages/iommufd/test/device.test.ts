/**
 * Devices the way VFIO cdev binds them: reserved regions and apertures entering the
 * IOAS, group rules, replace, unbind, and a context that outlives its fd while devices
 * are bound (reference iommufd-uapi.md §1.2, §1.4, §3.4–3.5).
 */
import { createMachine, ResvType } from '@iommu/core'
import { MOCK_APERTURE_LAST, MOCK_APERTURE_START, mockIommu } from '@iommu/core/testing'
import { describe, expect, it } from 'vitest'
import { IOMMU_IOAS_IOVA_RANGES, IOMMUFD_ACCESS_RW_WRITE, openIommufd } from '../src/index.ts'
import {
  _testIoctlDestroy,
  _testIoctlIoasAlloc,
  _testIoctlIoasUnmap,
  expectErrno,
  PAGE_SIZE,
} from '../src/testing/index.ts'
import { hwptAlloc, ioasMap } from './helpers.ts'

const MSI = { start: 0x0800_0000n, length: 0x10_0000n, prot: 0, type: ResvType.SW_MSI }

function world() {
  const m = createMachine({ iommus: [mockIommu({ deviceGroup: 'pci' })] })
  const proc = m.createProcess()
  const fd = openIommufd(m, proc)
  return { m, proc, fd }
}

function ranges(w: ReturnType<typeof world>, ioas: number): [bigint, bigint][] {
  const va = w.proc.mmap(PAGE_SIZE)
  const cmd = { size: 32, ioas_id: ioas, num_iovas: 16, allowed_iovas: BigInt(va) }
  w.fd.ioctl(IOMMU_IOAS_IOVA_RANGES, cmd)
  const v = new DataView(w.proc.read(va, 16 * cmd.num_iovas).buffer)
  return Array.from({ length: cmd.num_iovas }, (_, i) => [
    v.getBigUint64(16 * i, true),
    v.getBigUint64(16 * i + 8, true),
  ])
}

describe('devices, bind and attach (§1.4)', () => {
  it('attach narrows IOVA_RANGES to the aperture minus reserved regions; detach widens it (§3.4)', () => {
    const w = world()
    const ioas = _testIoctlIoasAlloc(w.fd)
    const dev = w.m.addPciDevice({ resvRegions: [MSI] })
    const idev = w.fd.bindDevice(dev)
    expect(ranges(w, ioas)).toEqual([[0n, 0xffff_ffff_ffff_ffffn]])
    const hwpt = idev.attach(ioas)
    expect(ranges(w, ioas)).toEqual([
      [MOCK_APERTURE_START, MSI.start - 1n],
      [MSI.start + MSI.length, MOCK_APERTURE_LAST],
    ])
    idev.detach()
    expectErrno('ENOENT', () => _testIoctlDestroy(w.fd, hwpt))
    expect(ranges(w, ioas)).toEqual([[0n, 0xffff_ffff_ffff_ffffn]])
    idev.unbind()
  })

  it('a mapping in a reserved region or outside the aperture makes attach EADDRINUSE (§3.5)', () => {
    const w = world()
    const ioas = _testIoctlIoasAlloc(w.fd)
    const buf = w.proc.mmap(PAGE_SIZE)
    ioasMap(w.fd, ioas, buf, PAGE_SIZE, MSI.start)
    const idev = w.fd.bindDevice(w.m.addPciDevice({ resvRegions: [MSI] }))
    expectErrno('EADDRINUSE', () => idev.attach(ioas))
    _testIoctlIoasUnmap(w.fd, ioas, MSI.start, PAGE_SIZE)
    ioasMap(w.fd, ioas, buf, PAGE_SIZE, 0x1000n)
    expectErrno('EADDRINUSE', () => idev.attach(ioas))
    _testIoctlIoasUnmap(w.fd, ioas, 0x1000n, PAGE_SIZE)
    idev.attach(ioas)
    // And a reserved IOVA cannot be mapped (EINVAL), nor one outside the aperture.
    expectErrno('EINVAL', () => ioasMap(w.fd, ioas, buf, PAGE_SIZE, MSI.start))
    expectErrno('EINVAL', () => ioasMap(w.fd, ioas, buf, PAGE_SIZE, 0x1000n))
    idev.unbind()
    expect(w.m.memory.frameStats().pins).toBe(0)
  })

  it('devices of one group share an attachment: a different HWPT is EINVAL (§1.4)', () => {
    const w = world()
    const ioas = _testIoctlIoasAlloc(w.fd)
    const a = w.fd.bindDevice(w.m.addPciDevice({ isolationGroup: 'bridge' }))
    const b = w.fd.bindDevice(w.m.addPciDevice({ isolationGroup: 'bridge' }))
    expect(a.dev.group).toBe(b.dev.group)
    const hwpt = a.attach(ioas)
    const other = hwptAlloc(w.fd, b.id, ioas, 0)
    expectErrno('EINVAL', () => b.attach(other))
    expect(b.attach(hwpt)).toBe(hwpt)
    // Attaching twice is EBUSY.
    expectErrno('EBUSY', () => b.attach(hwpt))
    a.unbind()
    b.unbind()
    _testIoctlDestroy(w.fd, other)
  })

  it('auto HWPTs are shared by compatible devices and go with the last one (§1.3)', () => {
    const w = world()
    const ioas = _testIoctlIoasAlloc(w.fd)
    const a = w.fd.bindDevice(w.m.addPciDevice())
    const b = w.fd.bindDevice(w.m.addPciDevice())
    const h = a.attach(ioas)
    expect(b.attach(ioas)).toBe(h)
    // A device without dirty tracking still shares the (non-dirty) automatic HWPT.
    const c = w.fd.bindDevice(w.m.addPciDevice({ dirtyTracking: false }))
    expect(c.attach(ioas)).toBe(h)
    a.detach()
    b.detach()
    expectErrno('EBUSY', () => _testIoctlDestroy(w.fd, ioas))
    c.detach()
    _testIoctlDestroy(w.fd, ioas)
    for (const d of [a, b, c]) d.unbind()
  })

  it('the context outlives its fd while a device is bound; unbind releases it (§1.1)', () => {
    const w = world()
    const ioas = _testIoctlIoasAlloc(w.fd)
    const buf = w.proc.mmap(4 * PAGE_SIZE)
    ioasMap(w.fd, ioas, buf, 4 * PAGE_SIZE, MOCK_APERTURE_START)
    const dev = w.m.addPciDevice()
    const idev = w.fd.bindDevice(dev)
    idev.attach(ioas)
    w.fd.close()
    expect(w.fd.ctx.released).toBe(false)
    dev.dma.write(MOCK_APERTURE_START, new Uint8Array([7]))
    expect(w.proc.read(buf, 1)[0]).toBe(7)
    idev.unbind()
    expect(w.fd.ctx.released).toBe(true)
    expect(w.m.memory.frameStats().pins).toBe(0)
    // The device went back to the kernel DMA API: it is not owned any more.
    expect(dev.group?.owner).toBe(null)
  })

  it('a second context cannot bind a device another context owns (EPERM) (§1.4)', () => {
    const w = world()
    const dev = w.m.addPciDevice()
    const idev = w.fd.bindDevice(dev)
    const other = openIommufd(w.m, w.proc)
    expectErrno('EPERM', () => other.bindDevice(dev))
    idev.unbind()
    other.bindDevice(dev).unbind()
  })

  it('an emulated device pins, copies and is told to unpin when user space unmaps (§3.11)', () => {
    const w = world()
    const ioas = _testIoctlIoasAlloc(w.fd)
    const buf = w.proc.mmap(4 * PAGE_SIZE)
    w.proc.write(buf + PAGE_SIZE, new TextEncoder().encode('ring'))
    ioasMap(w.fd, ioas, buf, 4 * PAGE_SIZE, 0x10_0000n)
    const unmaps: [bigint, bigint][] = []
    const pfns = new Int32Array(2)
    const acc = w.fd.createAccess({
      needsPinPages: true,
      unmap(iova, length) {
        unmaps.push([iova, length])
        if (iova <= 0x10_1000n && iova + length > 0x10_1000n)
          acc.unpinPages(0x10_1000n, BigInt(2 * PAGE_SIZE))
      },
    })
    acc.attach(ioas)
    acc.pinPages(0x10_1000n, BigInt(2 * PAGE_SIZE), pfns, IOMMUFD_ACCESS_RW_WRITE)
    expect(pfns[0]).toBe(w.proc.pageFrame(buf + PAGE_SIZE, false))
    expect(w.m.memory.pinCount(pfns[0] as number)).toBe(1)
    // A kernel thread (no caller mm) reads and writes through the pinned pages.
    const got = new Uint8Array(4)
    acc.rw(0x10_1000n, got)
    expect(new TextDecoder().decode(got)).toBe('ring')
    acc.rw(0x10_1002n, new Uint8Array([0x21]), IOMMUFD_ACCESS_RW_WRITE)
    expect(w.proc.read(buf + PAGE_SIZE + 2, 1)[0]).toBe(0x21)
    // Unmapping the range asks the access to let go, then succeeds.
    expect(_testIoctlIoasUnmap(w.fd, ioas, 0x10_0000n, 4 * PAGE_SIZE)).toBe(BigInt(4 * PAGE_SIZE))
    expect(unmaps).toEqual([[0x10_0000n, BigInt(4 * PAGE_SIZE)]])
    expect(w.m.memory.frameStats().pins).toBe(0)
    expectErrno('ENOENT', () => acc.pinPages(0x10_1000n, BigInt(PAGE_SIZE), pfns))
    acc.release()
    w.fd.close()
    expect(w.fd.ctx.released).toBe(true)
  })
})

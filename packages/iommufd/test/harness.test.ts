/**
 * The harness of `@iommu/iommufd/testing` itself: errno checks as C sees them, the
 * fixture lifecycle (fresh world, setup, body, teardown), the selftest globals, pointer
 * arguments, and the rule that runtime code never imports the harness.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { ERRNO } from '@iommu/core'
import { describe, expect, it } from 'vitest'
import * as testing from '../src/testing/index.ts'
import {
  _testCmdGetHwInfo,
  _testIoctlDestroy,
  _testIoctlIoasAlloc,
  BUFFER_SIZE,
  BUFFER_VA,
  buffer,
  checkRefs,
  currentSelf,
  E2BIG,
  EINVAL,
  ENOENT,
  expectErrno,
  type FixtureSelf,
  fixture,
  ioctlErrno,
  machine,
  mfd,
  mfd_buffer,
  openDevIommu,
  PAGE_SIZE,
  proc,
  SelftestAssertionError,
  SKIP,
  setupSizes,
  teardownIommufd,
  testCmdMockDomain,
  testIoctlDestroy,
  testIoctlIoasAlloc,
  testIoctlIoasMap,
  withUserPtr,
} from '../src/testing/index.ts'
import {
  encodeStruct,
  IOMMU_DESTROY,
  IOMMU_HW_INFO_SELFTEST_REGVAL,
  IOMMU_HW_INFO_TYPE_DEFAULT,
  IOMMU_IOAS_ALLOC,
  IOMMU_TEST_HW_INFO_LAYOUT,
} from '../src/uapi/index.ts'

describe('errno as C sees it', () => {
  it('ioctlErrno returns 0 or -errno; expectErrno takes it, a function, a number or a name', () => {
    setupSizes()
    const fd = openDevIommu()
    expect(ioctlErrno(fd, IOMMU_IOAS_ALLOC, { size: 12 })).toBe(0)
    expect(ioctlErrno(fd, IOMMU_DESTROY, { size: 8, id: 7 })).toBe(-2)
    expect(ioctlErrno(fd, IOMMU_DESTROY, { size: 7 })).toBe(-EINVAL)
    expectErrno(ENOENT, ioctlErrno(fd, IOMMU_DESTROY, { size: 8, id: 7 }))
    expectErrno('ENOENT', () => _testIoctlDestroy(fd, 7))
    expectErrno(E2BIG, () => fd.ioctl(IOMMU_DESTROY, { size: 9, id: 1, x: 1 } as { size: number }))
    // A function returning -errno, the C `return -errno` style.
    expectErrno(EINVAL, () => -22)
  })

  it('expectErrno fails on success and on another errno; other exceptions pass through', () => {
    setupSizes()
    const fd = openDevIommu()
    expect(() => expectErrno(ENOENT, () => _testIoctlIoasAlloc(fd))).toThrow(
      new SelftestAssertionError('expected ENOENT (2), the call succeeded'),
    )
    expect(() => expectErrno(ENOENT, ioctlErrno(fd, IOMMU_IOAS_ALLOC, { size: 12 }))).toThrow(
      /succeeded/,
    )
    expect(() => expectErrno(EINVAL, () => _testIoctlDestroy(fd, 99))).toThrow(
      'expected EINVAL (22), got ENOENT (2)',
    )
    expect(() =>
      expectErrno(EINVAL, () => {
        throw new TypeError('not an errno')
      }),
    ).toThrow(TypeError)
  })

  it('exports every user-visible errno of @iommu/core under its C name', () => {
    const exported = Object.fromEntries(
      Object.entries(testing).filter(([k, v]) => /^E[A-Z0-9]+$/.test(k) && typeof v === 'number'),
    )
    const { ENOIOCTLCMD: _kernelOnly, EPROBE_DEFER: _internal, ...visible } = ERRNO
    expect(exported).toEqual(visible)
  })

  it('the test_* helpers need a fixture; the _test* ones take the fd', () => {
    setupSizes()
    expect(() => testIoctlIoasAlloc()).toThrow(/self->fd/)
    expect(() => currentSelf()).toThrow(/fixture/)
    expect(_testIoctlIoasAlloc(openDevIommu())).toBe(1)
  })
})

describe('the selftest process (setup_sizes)', () => {
  it('buffer: 16 pages at a THP-aligned address, MAP_SHARED; mfd_buffer: a memfd mapping', () => {
    setupSizes()
    expect([buffer, BUFFER_SIZE, BUFFER_VA % (2 * 1024 * 1024)]).toEqual([BUFFER_VA, 16 * 4096, 0])
    proc.write(buffer + PAGE_SIZE, new Uint8Array([7]))
    expect(proc.read(buffer + PAGE_SIZE, 1)[0]).toBe(7)
    proc.write(mfd_buffer, new Uint8Array([9]))
    expect(mfd).toBeGreaterThanOrEqual(0)
    expect(machine.units).toHaveLength(1)
  })

  it('a pointer argument given as bytes is copied in and back out', () => {
    setupSizes()
    const fd = openDevIommu()
    const ioas = _testIoctlIoasAlloc(fd)
    const info = encodeStruct(IOMMU_TEST_HW_INFO_LAYOUT, {})
    // A mock device to ask about.
    const md = (() => {
      const cmd = { size: 72, op: 2, id: ioas, mock_domain: { out_idev_id: 0 } }
      fd.ioctl(0x3ba0, cmd)
      return cmd.mock_domain.out_idev_id
    })()
    const out = _testCmdGetHwInfo(fd, md, IOMMU_HW_INFO_TYPE_DEFAULT, info, info.length)
    expect(new DataView(info.buffer).getUint32(4, true)).toBe(IOMMU_HW_INFO_SELFTEST_REGVAL)
    expect(out.max_pasid).toBe(0)
    // The scratch mapping is gone afterwards.
    let seen = 0n
    withUserPtr(fd, new Uint8Array(8), (uptr) => {
      seen = uptr
    })
    expect(() => proc.read(seen, 1)).toThrow(/EFAULT/)
  })
})

interface Self extends FixtureSelf {
  ioas_id: number
  log: string[]
}
const events: string[] = []

fixture<Self, { readonly n: number }>(
  'harness_lifecycle',
  {
    setup(self, variant) {
      self.fd = openDevIommu()
      self.ioas_id = testIoctlIoasAlloc()
      self.log = [`setup ${variant.n}`]
      events.push(`setup ${variant.n} ${self.ioas_id}`)
      if (variant.n === 3) SKIP('variant three is skipped in setup')
    },
    teardown(self, variant) {
      events.push(`teardown ${variant.n}`)
      teardownIommufd(self.fd)
    },
    variants: { one: { n: 1 }, two: { n: 2 }, three: { n: 3 } },
  },
  (TEST_F) => {
    TEST_F('fresh_world', (self, variant) => {
      // Every test starts on a new machine: the IOAS is ID 1 again.
      expect(self.ioas_id).toBe(1)
      expect(self.log).toEqual([`setup ${variant.n}`])
      const iova = testIoctlIoasMap(buffer, PAGE_SIZE)
      expect(typeof iova).toBe('bigint')
      checkRefs(buffer, PAGE_SIZE, 0)
      testIoctlDestroy(self.ioas_id)
      const { stdev_id, hwpt_id } = testCmdMockDomain(testIoctlIoasAlloc())
      expect(hwpt_id).toBeGreaterThan(stdev_id)
    })

    TEST_F('ordering', (_self, variant) => {
      // Runs after fresh_world of the same variant: setup, teardown, setup.
      expect(events.slice(-3).map((e) => e.split(' ').slice(0, 2).join(' '))).toEqual([
        `setup ${variant.n}`,
        `teardown ${variant.n}`,
        `setup ${variant.n}`,
      ])
    })
  },
)

describe('the harness stays out of runtime code', () => {
  it('no module of src/ outside src/testing imports it', () => {
    const src = fileURLToPath(new URL('../src/', import.meta.url))
    const offenders: string[] = []
    const walk = (dir: string) => {
      for (const name of readdirSync(dir)) {
        const path = join(dir, name)
        if (statSync(path).isDirectory()) {
          if (name !== 'testing') walk(path)
        } else if (name.endsWith('.ts') && !name.includes('.test')) {
          if (/from '(\.\.?\/)+testing\//.test(readFileSync(path, 'utf8'))) offenders.push(path)
        }
      }
    }
    walk(src)
    expect(offenders).toEqual([])
  })
})

/**
 * Port of the selftest FIXTURE(iommufd) on the harness of `@iommu/iommufd/testing`: an
 * open context and nothing else (reference iommufd-uapi.md §7.1, §2.1–2.3, §2.11, §2.12).
 */
import { expect } from 'vitest'
import {
  _IO,
  IOMMU_DESTROY,
  IOMMU_OPTION,
  IOMMU_OPTION_HUGE_PAGES,
  IOMMU_OPTION_OP_GET,
  IOMMU_OPTION_OP_SET,
  IOMMU_OPTION_RLIMIT_MODE,
  IOMMU_VFIO_IOAS,
  IOMMUFD_CMD_BASE,
  IOMMUFD_TYPE,
  UAPI_STRUCTS,
} from '../src/index.ts'
import {
  _testIoctlDestroy,
  _testIoctlIoasAlloc,
  EFAULT,
  ENOENT,
  ENOTTY,
  expectErrno,
  type FixtureSelf,
  fixture,
  ioctlErrno,
  machine,
  openDevIommu,
  proc,
  teardownIommufd,
} from '../src/testing/index.ts'
import {
  IOMMU_GET_HW_INFO,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_INVALIDATE,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_ALLOW_IOVAS,
  IOMMU_IOAS_CHANGE_PROCESS,
  IOMMU_IOAS_COPY,
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FILE,
  IOMMU_IOAS_UNMAP,
  IOMMU_VDEVICE_ALLOC,
  IOMMU_VFIO_IOAS_CLEAR,
  IOMMU_VFIO_IOAS_GET,
  IOMMU_VFIO_IOAS_SET,
  IOMMU_VIOMMU_ALLOC,
} from '../src/uapi/index.ts'
import { errnoOf } from './helpers.ts'

/** The 16 ioctls of the selftest's `cmd_length`, by struct name. */
const CMD_LENGTH: readonly [string, number][] = [
  ['iommu_destroy', IOMMU_DESTROY],
  ['iommu_hw_info', IOMMU_GET_HW_INFO],
  ['iommu_hwpt_alloc', IOMMU_HWPT_ALLOC],
  ['iommu_hwpt_invalidate', IOMMU_HWPT_INVALIDATE],
  ['iommu_ioas_alloc', IOMMU_IOAS_ALLOC],
  ['iommu_ioas_iova_ranges', IOMMU_IOAS_IOVA_RANGES],
  ['iommu_ioas_allow_iovas', IOMMU_IOAS_ALLOW_IOVAS],
  ['iommu_ioas_map', IOMMU_IOAS_MAP],
  ['iommu_ioas_copy', IOMMU_IOAS_COPY],
  ['iommu_ioas_unmap', IOMMU_IOAS_UNMAP],
  ['iommu_option', IOMMU_OPTION],
  ['iommu_vfio_ioas', IOMMU_VFIO_IOAS],
  ['iommu_ioas_map_file', IOMMU_IOAS_MAP_FILE],
  ['iommu_viommu_alloc', IOMMU_VIOMMU_ALLOC],
  ['iommu_vdevice_alloc', IOMMU_VDEVICE_ALLOC],
  ['iommu_ioas_change_process', IOMMU_IOAS_CHANGE_PROCESS],
]

fixture<FixtureSelf>(
  'iommufd',
  {
    setup(self) {
      self.fd = openDevIommu()
    },
    teardown(self) {
      teardownIommufd(self.fd)
    },
  },
  (TEST_F) => {
    TEST_F('simple_close: open and close leak nothing (§1.2)', () => {
      expect(machine.memory.frameStats().pins).toBe(0)
    })

    TEST_F('cmd_fail', (self) => {
      const cmd = { size: 8, id: 0 }

      expectErrno(ENOENT, () => _testIoctlDestroy(self.fd, 0))
      expectErrno(EFAULT, ioctlErrno(self.fd, IOMMU_DESTROY, null))
      expectErrno(ENOTTY, ioctlErrno(self.fd, _IO(IOMMUFD_TYPE, IOMMUFD_CMD_BASE - 1), cmd))
    })

    TEST_F('cmd_fail: the errno carries syscall "ioctl" and the negative Linux number', (self) => {
      try {
        self.fd.ioctl(IOMMU_DESTROY, { size: 8, id: 0 })
        expect.fail('DESTROY(0) succeeded')
      } catch (e) {
        expect(e).toMatchObject({ code: 'ENOENT', errno: -2, syscall: 'ioctl' })
      }
    })

    for (const [name, cmd] of CMD_LENGTH) {
      TEST_F(
        `cmd_length ${name}: min-1 EINVAL, sizeof+1 non-zero E2BIG, zero tail like sizeof (§2.2)`,
        (self) => {
          const s = UAPI_STRUCTS[name]
          if (s === undefined) throw new Error(name)
          // struct { struct X cmd; u8 extra; } laid out in the process, as the C test does.
          const va = proc.mmap(4096)
          const setSize = (n: number) => {
            const b = new Uint8Array(4)
            new DataView(b.buffer).setUint32(0, n, true)
            proc.write(va, b)
          }
          setSize(s.minSize - 1)
          proc.write(va + s.sizeof, new Uint8Array([0xff]))
          expectErrno('EINVAL', () => self.fd.ioctl(cmd, BigInt(va)))
          setSize(s.sizeof + 1)
          expectErrno('E2BIG', () => self.fd.ioctl(cmd, BigInt(va)))
          setSize(s.sizeof)
          const rc = errnoOf(() => self.fd.ioctl(cmd, BigInt(va)))
          setSize(s.sizeof + 1)
          proc.write(va + s.sizeof, new Uint8Array([0]))
          expect(errnoOf(() => self.fd.ioctl(cmd, BigInt(va)))).toBe(rc)
        },
      )
    }

    TEST_F('cmd_length with argument objects: keys past the struct are the tail (§2.2)', (self) => {
      const s = UAPI_STRUCTS.iommu_ioas_map
      if (s === undefined) throw new Error('iommu_ioas_map')
      expectErrno('EINVAL', () => self.fd.ioctl(IOMMU_IOAS_MAP, { size: s.minSize - 1 }))
      const tail = { size: s.sizeof + 1, extra: 0xff } as { size: number }
      expectErrno('E2BIG', () => self.fd.ioctl(IOMMU_IOAS_MAP, tail))
      const rc = errnoOf(() => self.fd.ioctl(IOMMU_IOAS_MAP, { size: s.sizeof }))
      const zero = { size: s.sizeof + 1, extra: 0 } as { size: number }
      expect(errnoOf(() => self.fd.ioctl(IOMMU_IOAS_MAP, zero))).toBe(rc)
    })

    TEST_F(
      'cmd_ex_fail: DESTROY with a zero future u64 ENOENT, non-zero E2BIG, size 7 EINVAL (§2.3)',
      (self) => {
        const cmd = { size: 16, id: 0, future: 0n } as { size: number; id: number }
        expectErrno('ENOENT', () => self.fd.ioctl(IOMMU_DESTROY, cmd))
        const bad = { size: 16, id: 0, future: 1n } as { size: number; id: number }
        expectErrno('E2BIG', () => self.fd.ioctl(IOMMU_DESTROY, bad))
        bad.size = 8
        expectErrno('ENOENT', () => self.fd.ioctl(IOMMU_DESTROY, bad))
        bad.size = 7
        expectErrno('EINVAL', () => self.fd.ioctl(IOMMU_DESTROY, bad))
      },
    )

    TEST_F(
      'global_options: RLIMIT_MODE get/set (EINVAL for 2); HUGE_PAGES of object 0 ENOENT (§2.11)',
      (self) => {
        const cmd = {
          size: 24,
          option_id: IOMMU_OPTION_RLIMIT_MODE,
          op: IOMMU_OPTION_OP_GET,
          val64: 1n,
        }
        self.fd.ioctl(IOMMU_OPTION, cmd)
        expect(cmd.val64).toBe(0n)
        cmd.op = IOMMU_OPTION_OP_SET
        cmd.val64 = 1n
        self.fd.ioctl(IOMMU_OPTION, cmd)
        cmd.val64 = 2n
        expectErrno('EINVAL', () => self.fd.ioctl(IOMMU_OPTION, cmd))
        cmd.op = IOMMU_OPTION_OP_GET
        self.fd.ioctl(IOMMU_OPTION, cmd)
        expect(cmd.val64).toBe(1n)
        cmd.op = IOMMU_OPTION_OP_SET
        cmd.val64 = 0n
        self.fd.ioctl(IOMMU_OPTION, cmd)
        const huge = { ...cmd, op: IOMMU_OPTION_OP_GET, option_id: IOMMU_OPTION_HUGE_PAGES }
        expectErrno('ENOENT', () => self.fd.ioctl(IOMMU_OPTION, huge))
        huge.op = IOMMU_OPTION_OP_SET
        expectErrno('ENOENT', () => self.fd.ioctl(IOMMU_OPTION, huge))
      },
    )

    TEST_F(
      'global_options: RLIMIT_MODE SET needs CAP_SYS_RESOURCE (EPERM) and no objects (EBUSY)',
      (self) => {
        const cmd = {
          size: 24,
          option_id: IOMMU_OPTION_RLIMIT_MODE,
          op: IOMMU_OPTION_OP_SET,
          val64: 1n,
        }
        expectErrno('EPERM', () =>
          self.fd.as(proc, { CAP_SYS_RESOURCE: false }).ioctl(IOMMU_OPTION, cmd),
        )
        _testIoctlIoasAlloc(self.fd)
        expectErrno('EBUSY', () => self.fd.ioctl(IOMMU_OPTION, cmd))
      },
    )

    TEST_F(
      'vfio_ioas: GET ENODEV without compat IOAS, SET bad id ENOENT, SET/GET/CLEAR (§2.12)',
      (self) => {
        const cmd = { size: 12, op: IOMMU_VFIO_IOAS_GET, ioas_id: 0 }
        expectErrno('ENODEV', () => self.fd.ioctl(IOMMU_VFIO_IOAS, cmd))
        cmd.op = IOMMU_VFIO_IOAS_SET
        expectErrno('ENOENT', () => self.fd.ioctl(IOMMU_VFIO_IOAS, cmd))
        const id = _testIoctlIoasAlloc(self.fd)
        cmd.ioas_id = id
        self.fd.ioctl(IOMMU_VFIO_IOAS, cmd)
        cmd.op = IOMMU_VFIO_IOAS_GET
        cmd.ioas_id = 0
        self.fd.ioctl(IOMMU_VFIO_IOAS, cmd)
        expect(cmd.ioas_id).toBe(id)
        cmd.op = IOMMU_VFIO_IOAS_CLEAR
        self.fd.ioctl(IOMMU_VFIO_IOAS, cmd)
        cmd.op = IOMMU_VFIO_IOAS_GET
        expectErrno('ENODEV', () => self.fd.ioctl(IOMMU_VFIO_IOAS, cmd))
      },
    )
  },
)

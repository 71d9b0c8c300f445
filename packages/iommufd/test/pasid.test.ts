/**
 * Port of the selftest FIXTURE(iommufd_device_pasid), test pasid_attach, with its
 * fault-queue and vIOMMU steps (reference iommufd-uapi.md §1.4 PASID rules, §5.6, §7.1).
 */
import { IOMMU_HWPT_DATA_SELFTEST, IOMMU_VIOMMU_TYPE_SELFTEST } from '@iommu/core/testing'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import {
  fdClose,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_ALLOC_PASID,
  IOMMU_HWPT_FAULT_ID_VALID,
  IOMMU_TEST_CMD,
} from '../src/index.ts'
import {
  _testCmdHwptAlloc,
  _testCmdMockDomainFlags,
  _testCmdMockDomainReplace,
  _testCmdTriggerIopf,
  _testCmdViommuAlloc,
  _testIoctlDestroy,
  _testIoctlFaultAlloc,
  _testIoctlIoasAlloc,
  expectErrno,
  PAGE_SIZE,
} from '../src/testing/index.ts'
import {
  IOMMU_TEST_IOTLB_DEFAULT,
  IOMMU_TEST_OP_PASID_ATTACH,
  IOMMU_TEST_OP_PASID_CHECK_HWPT,
  IOMMU_TEST_OP_PASID_DETACH,
  IOMMU_TEST_OP_PASID_REPLACE,
  MOCK_FLAGS_DEVICE_PASID,
} from '../src/uapi/index.ts'
import { type Env, errnoOf, hwptAlloc, setup, teardown } from './helpers.ts'

for (const pasidCapable of [false, true]) {
  describe(`FIXTURE(iommufd_device_pasid) variant ${pasidCapable ? 'has_pasid' : 'no_pasid'}`, () => {
    let env: Env
    let ioasId = 0
    let stdevId = 0
    let deviceId = 0
    let noPasidStdevId = 0

    beforeEach(() => {
      env = setup()
      ioasId = _testIoctlIoasAlloc(env.fd)
      const md = _testCmdMockDomainFlags(env.fd, ioasId, MOCK_FLAGS_DEVICE_PASID)
      stdevId = md.stdev_id
      deviceId = md.idev_id
      if (!pasidCapable) noPasidStdevId = _testCmdMockDomainFlags(env.fd, ioasId, 0).stdev_id
    })
    afterEach(() => teardown(env))

    const pasidOp = (op: number, stdev: number, pasid: number, ptId: number) =>
      env.fd.ioctl(IOMMU_TEST_CMD, {
        size: 72,
        op,
        id: stdev,
        pasid_attach: { pasid, pt_id: ptId },
      })
    const attach = (pasid: number, pt: number, stdev = stdevId) =>
      pasidOp(IOMMU_TEST_OP_PASID_ATTACH, stdev, pasid, pt)
    const replace = (pasid: number, pt: number) =>
      pasidOp(IOMMU_TEST_OP_PASID_REPLACE, stdevId, pasid, pt)
    const detach = (pasid: number) =>
      env.fd.ioctl(IOMMU_TEST_CMD, {
        size: 72,
        op: IOMMU_TEST_OP_PASID_DETACH,
        id: stdevId,
        pasid_detach: { pasid },
      })
    const check = (pasid: number, hwpt: number) =>
      errnoOf(() =>
        env.fd.ioctl(IOMMU_TEST_CMD, {
          size: 72,
          op: IOMMU_TEST_OP_PASID_CHECK_HWPT,
          id: stdevId,
          pasid_check: { pasid, hwpt_id: hwpt },
        }),
      )

    it('pasid_attach: PASID-compat rules, EBUSY re-attach, replace rules, rollback (§1.4)', () => {
      const data = env.proc.mmap(PAGE_SIZE)
      const d = new DataView(new ArrayBuffer(8))
      d.setUint32(0, IOMMU_TEST_IOTLB_DEFAULT, true)
      env.proc.write(data, new Uint8Array(d.buffer))
      const sel = { type: IOMMU_HWPT_DATA_SELFTEST, len: 8, uptr: BigInt(data) }

      // Detaching a PASID that is not attached is a silent no-op.
      detach(100)
      const parent = hwptAlloc(env.fd, deviceId, ioasId, IOMMU_HWPT_ALLOC_NEST_PARENT)
      const nested = [
        hwptAlloc(env.fd, deviceId, parent, IOMMU_HWPT_ALLOC_PASID, sel),
        hwptAlloc(env.fd, deviceId, parent, IOMMU_HWPT_ALLOC_PASID, sel),
      ] as const
      // Fault related preparation.
      const { fault_id: faultId, fault_fd: faultFd } = _testIoctlFaultAlloc(env.fd)
      const iopfHwptId = _testCmdHwptAlloc(
        env.fd,
        deviceId,
        parent,
        faultId,
        IOMMU_HWPT_FAULT_ID_VALID | IOMMU_HWPT_ALLOC_PASID,
        IOMMU_HWPT_DATA_SELFTEST,
        data,
        8,
      )
      // A regular nested HWPT based on a vIOMMU.
      const viommuId = _testCmdViommuAlloc(
        env.fd,
        deviceId,
        parent,
        0,
        IOMMU_VIOMMU_TYPE_SELFTEST,
        null,
        0,
      )
      _testCmdHwptAlloc(
        env.fd,
        deviceId,
        viommuId,
        0,
        IOMMU_HWPT_ALLOC_PASID,
        IOMMU_HWPT_DATA_SELFTEST,
        data,
        8,
      )
      const s2 = hwptAlloc(env.fd, deviceId, ioasId, IOMMU_HWPT_ALLOC_PASID)

      // RID on a HWPT that is not PASID-compatible: PASID attach EINVAL.
      _testCmdMockDomainReplace(env.fd, stdevId, parent)
      expectErrno('EINVAL', () => attach(100, s2))
      // RID on a PASID-compatible HWPT: PASID attach works, and then the RID cannot go back.
      _testCmdMockDomainReplace(env.fd, stdevId, s2)
      attach(100, nested[0])
      expectErrno('EINVAL', () => _testCmdMockDomainReplace(env.fd, stdevId, parent))
      detach(100)
      expect(check(100, 0)).toBe('OK')

      if (!pasidCapable) {
        _testCmdMockDomainReplace(env.fd, noPasidStdevId, nested[0])
        _testCmdMockDomainReplace(env.fd, noPasidStdevId, ioasId)
        expectErrno('EINVAL', () => attach(100, parent, noPasidStdevId))
        expectErrno('EINVAL', () => attach(100, s2, noPasidStdevId))
      }
      expectErrno('EINVAL', () => attach(100, parent))
      expect(check(100, 0)).toBe('OK')
      // An IOAS cannot be attached to a PASID (its automatic HWPT is not PASID-capable).
      expectErrno('EINVAL', () => attach(100, ioasId))
      expect(check(100, 0)).toBe('OK')
      attach(100, s2)
      expect(check(100, s2)).toBe('OK')
      expectErrno('EBUSY', () => attach(100, nested[0]))
      detach(100)
      expect(check(100, 0)).toBe('OK')
      attach(100, nested[0])
      expect(check(100, nested[0])).toBe('OK')
      expectErrno('EBUSY', () => attach(100, nested[0]))
      detach(100)

      // Replace needs an attachment; a failed replace keeps the old HWPT.
      expectErrno('EINVAL', () => replace(200, s2))
      attach(200, s2)
      expect(check(200, s2)).toBe('OK')
      expectErrno('EINVAL', () => replace(200, ioasId))
      expect(check(200, s2)).toBe('OK')
      replace(200, nested[0])
      expect(check(200, nested[0])).toBe('OK')
      replace(200, nested[1])
      expect(check(200, nested[1])).toBe('OK')
      detach(200)

      // PASID 1024: the mock fails the second set_dev_pasid; the core rolls back.
      attach(1024, s2)
      expect(check(1024, s2)).toBe('OK')
      expectErrno('ENOMEM', () => replace(1024, nested[0]))
      expect(check(1024, s2)).toBe('OK')
      detach(1024)

      // An IOPF-capable HWPT on PASID 2048: the fault is delivered and answered.
      attach(2048, iopfHwptId)
      expect(check(2048, iopfHwptId)).toBe('OK')
      _testCmdTriggerIopf(env.fd, deviceId, 2048, faultFd)
      replace(2048, s2)
      expect(check(2048, s2)).toBe('OK')
      detach(2048)
      _testIoctlDestroy(env.fd, iopfHwptId)
      fdClose(env.proc, faultFd)
      _testIoctlDestroy(env.fd, faultId)

      _testCmdMockDomainReplace(env.fd, stdevId, ioasId)
    })
  })
}

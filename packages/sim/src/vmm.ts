/**
 * The few iommufd calls a VMM makes, with their structs filled as the kernel reads them:
 * shared by the migration (source side) and the vIOMMU guest's VMM (both sides).
 *
 * @module
 */

import type { Process } from '@iommu/core'
import {
  IOMMU_HWPT_ALLOC,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_OPTION,
  IOMMU_OPTION_HUGE_PAGES,
  IOMMU_OPTION_OP_SET,
  type Iommufd,
} from '@iommu/iommufd'

const PAGE = 4096

/**
 * IOMMU_IOAS_ALLOC; with `hugePages: false`, IOMMU_OPTION_HUGE_PAGES = 0 on it (4 KiB
 * IOPTEs).
 */
export function ioasAlloc(fd: Iommufd, hugePages: boolean): number {
  const alloc = { size: 12, flags: 0, out_ioas_id: 0 }
  fd.ioctl(IOMMU_IOAS_ALLOC, alloc)
  if (!hugePages) {
    fd.ioctl(IOMMU_OPTION, {
      size: 24,
      option_id: IOMMU_OPTION_HUGE_PAGES,
      op: IOMMU_OPTION_OP_SET,
      __reserved: 0,
      object_id: alloc.out_ioas_id,
      val64: 0n,
    })
  }
  return alloc.out_ioas_id
}

/** IOMMU_IOAS_MAP of `bytes` of the process at `va` to `iova`, read and write. */
export function ioasMap(fd: Iommufd, ioas: number, va: number, bytes: number, iova: number): void {
  fd.ioctl(IOMMU_IOAS_MAP, {
    size: 40,
    flags: IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
    ioas_id: ioas,
    __reserved: 0,
    user_va: BigInt(va),
    length: BigInt(bytes),
    iova: BigInt(iova),
  })
}

/** The VMM's user buffer for ioctl payloads: one page, reused. */
export class UserBuf {
  readonly va: number
  readonly proc: Process

  constructor(proc: Process) {
    this.proc = proc
    this.va = proc.mmap(PAGE)
  }

  /** Copy `bytes` (at most a page) into the buffer; its user pointer. */
  put(bytes: Uint8Array): bigint {
    this.proc.write(this.va, bytes)
    return BigInt(this.va)
  }
}

/**
 * IOMMU_HWPT_ALLOC on `ptId` (an IOAS, a nest parent or a vIOMMU) with optional driver
 * data (`data_type`, copied through `buf`).
 *
 * @returns the HWPT ID
 */
export function hwptAlloc(
  fd: Iommufd,
  devId: number,
  ptId: number,
  flags: number,
  data?: { type: number; bytes: Uint8Array; buf: UserBuf },
): number {
  const cmd = {
    size: 56,
    flags,
    dev_id: devId,
    pt_id: ptId,
    __reserved: 0,
    data_type: data?.type ?? 0,
    data_len: data?.bytes.length ?? 0,
    data_uptr: data ? data.buf.put(data.bytes) : 0n,
    fault_id: 0,
    out_hwpt_id: 0,
  }
  fd.ioctl(IOMMU_HWPT_ALLOC, cmd)
  return cmd.out_hwpt_id
}

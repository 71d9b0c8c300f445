/**
 * Opening iommufd for a simulated process, and the handle C-style code talks to:
 * `fd.ioctl(cmd, arg)` with the kernel's command numbers and struct fields.
 *
 * @module
 */

import {
  IommuError,
  MAP_SHARED,
  type Machine,
  PAGE_SIZE,
  type PciDevice,
  PROT_EXEC,
  PROT_READ,
  PROT_WRITE,
  type Process,
} from '@iommu/core'
import { MockIommuUnit } from '@iommu/core/testing/mock'
import { type IommufdAccess, type IommufdAccessOps, iommufdAccessCreate } from './access.ts'
import { type Caller, type Credentials, IommufdCtx, type IommufdMmap, UNPRIVILEGED } from './ctx.ts'
import { type IommufdDevice, iommufdDeviceBind } from './device.ts'
import { type FdFile, fdAlloc, fdClose, fdSet } from './fd-table.ts'
import { iommufdIoctl } from './ioctl.ts'
import type {
  IOMMU_DESTROY,
  IOMMU_FAULT_QUEUE_ALLOC,
  IOMMU_GET_HW_INFO,
  IOMMU_HW_QUEUE_ALLOC,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_GET_DIRTY_BITMAP,
  IOMMU_HWPT_INVALIDATE,
  IOMMU_HWPT_SET_DIRTY_TRACKING,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_ALLOW_IOVAS,
  IOMMU_IOAS_CHANGE_PROCESS,
  IOMMU_IOAS_COPY,
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FILE,
  IOMMU_IOAS_UNMAP,
  IOMMU_OPTION,
  IOMMU_TEST_CMD,
  IOMMU_VDEVICE_ALLOC,
  IOMMU_VEVENTQ_ALLOC,
  IOMMU_VFIO_IOAS,
  IOMMU_VIOMMU_ALLOC,
} from './uapi/constants.ts'
import type { CInit, CInt } from './uapi/struct.ts'
import type {
  iommu_destroy,
  iommu_fault_alloc,
  iommu_hw_info,
  iommu_hw_queue_alloc,
  iommu_hwpt_alloc,
  iommu_hwpt_get_dirty_bitmap,
  iommu_hwpt_invalidate,
  iommu_hwpt_set_dirty_tracking,
  iommu_ioas_alloc,
  iommu_ioas_allow_iovas,
  iommu_ioas_change_process,
  iommu_ioas_copy,
  iommu_ioas_iova_ranges,
  iommu_ioas_map,
  iommu_ioas_map_file,
  iommu_ioas_unmap,
  iommu_option,
  iommu_test_cmd,
  iommu_vdevice_alloc,
  iommu_veventq_alloc,
  iommu_vfio_ioas,
  iommu_viommu_alloc,
} from './uapi/structs.ts'

/** The argument struct of each command. */
export interface IoctlArgs {
  [IOMMU_DESTROY]: iommu_destroy
  [IOMMU_IOAS_ALLOC]: iommu_ioas_alloc
  [IOMMU_IOAS_ALLOW_IOVAS]: iommu_ioas_allow_iovas
  [IOMMU_IOAS_COPY]: iommu_ioas_copy
  [IOMMU_IOAS_IOVA_RANGES]: iommu_ioas_iova_ranges
  [IOMMU_IOAS_MAP]: iommu_ioas_map
  [IOMMU_IOAS_UNMAP]: iommu_ioas_unmap
  [IOMMU_OPTION]: iommu_option
  [IOMMU_VFIO_IOAS]: iommu_vfio_ioas
  [IOMMU_HWPT_ALLOC]: iommu_hwpt_alloc
  [IOMMU_GET_HW_INFO]: iommu_hw_info
  [IOMMU_HWPT_SET_DIRTY_TRACKING]: iommu_hwpt_set_dirty_tracking
  [IOMMU_HWPT_GET_DIRTY_BITMAP]: iommu_hwpt_get_dirty_bitmap
  [IOMMU_HWPT_INVALIDATE]: iommu_hwpt_invalidate
  [IOMMU_FAULT_QUEUE_ALLOC]: iommu_fault_alloc
  [IOMMU_IOAS_MAP_FILE]: iommu_ioas_map_file
  [IOMMU_VIOMMU_ALLOC]: iommu_viommu_alloc
  [IOMMU_VDEVICE_ALLOC]: iommu_vdevice_alloc
  [IOMMU_IOAS_CHANGE_PROCESS]: iommu_ioas_change_process
  [IOMMU_VEVENTQ_ALLOC]: iommu_veventq_alloc
  [IOMMU_HW_QUEUE_ALLOC]: iommu_hw_queue_alloc
  [IOMMU_TEST_CMD]: iommu_test_cmd
}

/**
 * An argument object as a C designated initializer writes it: `size` and any fields, the
 * rest reading as zero. Every integer field takes a `number` or a `bigint` and keeps what
 * C would keep in it (`-1` in a `__u32` is 0xffffffff). Outputs are written back into it
 * with the kernel's type for the field: `bigint` for `__u64`, `number` otherwise,
 * whatever the field held before.
 */
export type IoctlArg<S> = { size: CInt } & CInit<Omit<S, 'size'>>

/** Options of {@link openIommufd}. */
export interface OpenIommufdOptions {
  /**
   * Offer IOMMU_TEST_CMD (`CONFIG_IOMMUFD_TEST`). `true` puts its mock devices behind the
   * machine's first mock IOMMU unit; `{ mockUnit }` names the unit. Off by default.
   */
  readonly test?: boolean | { readonly mockUnit?: number }
  /** Open `/dev/vfio/vfio` instead of `/dev/iommu`: accounting defaults to the mm. */
  readonly vfio?: boolean
  /** The opener's capabilities (default: none). */
  readonly cred?: Partial<Credentials>
}

function firstMockUnit(machine: Machine): number {
  const i = machine.units.findIndex((u) => u instanceof MockIommuUnit)
  return Math.max(i, 0)
}

/** An open iommufd file of a process. */
export class Iommufd implements FdFile {
  /** The context (`struct iommufd_ctx`); kernel-internal API for VFIO-like callers. */
  readonly ctx: IommufdCtx
  /** The fd number in the opener's fd table. */
  readonly fd: number
  /** Whom ioctls on this handle run for. */
  readonly caller: Caller
  readonly #owner: boolean

  constructor(ctx: IommufdCtx, fd: number, caller: Caller, owner: boolean) {
    this.ctx = ctx
    this.fd = fd
    this.caller = caller
    this.#owner = owner
  }

  /**
   * `ioctl(fd, cmd, arg)`. `arg` is an argument object (fields named as in the kernel
   * struct, u64 as bigint; outputs are written back into it, also on the errors where
   * the kernel writes back) or the address of the struct in the caller's memory.
   *
   * @returns 0
   * @throws IommuError - `syscall: 'ioctl'`, the kernel's errno
   */
  ioctl<C extends keyof IoctlArgs>(cmd: C, arg: IoctlArg<IoctlArgs[C]> | bigint | number | null): 0
  ioctl<C extends number>(cmd: C extends keyof IoctlArgs ? never : C, arg: unknown): 0
  ioctl(cmd: number, arg: unknown): 0 {
    return iommufdIoctl(this.ctx, this.caller, cmd, arg)
  }

  /**
   * The same open file used by another process (an inherited fd after `fork`), or with
   * other credentials. Closing it does nothing; close the original.
   */
  as(proc: Process, cred: Partial<Credentials> = {}): Iommufd {
    return new Iommufd(this.ctx, this.fd, { proc, cred: { ...this.caller.cred, ...cred } }, false)
  }

  /** `close(fd)`. Bound devices and accesses keep the context until they go. */
  close(): void {
    if (this.#owner) fdClose(this.caller.proc, this.fd)
  }

  /** The fd table's release: the last reference tears the context down. */
  release(): void {
    this.ctx.fdClosed = true
    if (this.ctx.refs === 0) this.ctx.release()
  }

  /**
   * `mmap(addr, length, prot, flags, fd, offset)` on the iommufd file
   * (`iommufd_fops_mmap`): map an MMIO region a driver registered (a vIOMMU's page, at the
   * offset the driver reported through the vIOMMU data). While mapped, the owning object
   * cannot be destroyed (EBUSY); `proc.munmap` releases it.
   *
   * @param addr - a fixed address, or null to let the kernel choose
   * @returns the address of the mapping in the caller's process
   * @throws IommuError with `syscall: 'mmap'`: EINVAL - offset not page aligned, length 0,
   *   or not MAP_SHARED; EPERM - PROT_EXEC; ENXIO - not exactly a registered region
   */
  mmap(
    addr: number | null,
    length: number,
    prot: number,
    flags: number,
    offset: bigint | number,
  ): number {
    return iommufdFopsMmap(this.ctx, this.caller.proc, addr, length, prot, flags, BigInt(offset))
  }

  /**
   * Bind a device as VFIO_DEVICE_BIND_IOMMUFD does (`iommufd_device_bind`); `dev_id` is
   * its `id`. Attach with `attach(pt_id)`, `unbind()` when done.
   */
  bindDevice(dev: PciDevice): IommufdDevice {
    return iommufdDeviceBind(this.ctx, dev)
  }

  /** Create an in-kernel access for an emulated device (`iommufd_access_create`). */
  createAccess(ops: IommufdAccessOps): IommufdAccess {
    return iommufdAccessCreate(this.ctx, ops)
  }
}

/** `iommufd_fops_mmap` (with the syscall's own checks of length and offset first). */
function iommufdFopsMmap(
  ctx: IommufdCtx,
  proc: Process,
  addr: number | null,
  length: number,
  prot: number,
  flags: number,
  offset: bigint,
): number {
  const fail = (code: 'EINVAL' | 'EPERM' | 'ENXIO', why: string): never => {
    throw new IommuError(code, why, { syscall: 'mmap' })
  }
  // mmap(2) itself: a zero length or an unaligned offset never reach the driver.
  if (!Number.isSafeInteger(length) || length <= 0) fail('EINVAL', 'length')
  if (offset < 0n || offset % BigInt(PAGE_SIZE) !== 0n) fail('EINVAL', 'offset not page aligned')
  const size = Math.ceil(length / PAGE_SIZE) * PAGE_SIZE
  if (!(flags & MAP_SHARED)) fail('EINVAL', 'not MAP_SHARED')
  if (prot & PROT_EXEC) fail('EPERM', 'PROT_EXEC')
  const immap = ctx.findMmap(offset)
  if (immap === undefined || immap.owner.users === 0) fail('ENXIO', 'no region at this offset')
  const m = immap as IommufdMmap
  // Only the exact region may be mapped, not a part of it.
  if (m.offset !== offset || m.length !== size) fail('ENXIO', 'not the exact region')
  // The mapping holds the file (so the context) and the region's owner.
  m.owner.users++
  ctx.refGet()
  try {
    return proc.mmap(size, {
      prot: prot & (PROT_READ | PROT_WRITE),
      ...(addr === null ? {} : { addr }),
      pfnmap: {
        pfn: m.pfn,
        ops: {
          open: () => {
            m.owner.users++
            ctx.refGet()
          },
          close: () => {
            m.owner.users--
            ctx.refPut()
          },
        },
      },
    })
  } catch (e) {
    m.owner.users--
    ctx.refPut()
    throw e
  }
}

/**
 * Open `/dev/iommu` in `proc` (`iommufd_fops_open`).
 *
 * @example
 * ```ts
 * const m = createMachine({ iommus: [mockIommu()] })
 * const proc = m.createProcess()
 * const fd = openIommufd(m, proc)
 * const alloc = { size: 12, flags: 0, out_ioas_id: 0 }
 * fd.ioctl(IOMMU_IOAS_ALLOC, alloc) // alloc.out_ioas_id === 1
 * ```
 */
export function openIommufd(
  machine: Machine,
  proc: Process,
  options: OpenIommufdOptions = {},
): Iommufd {
  const t = options.test
  const test =
    t === undefined || t === false
      ? null
      : {
          memoryLimit: 65536,
          mockUnit: (typeof t === 'object' ? t.mockUnit : undefined) ?? firstMockUnit(machine),
        }
  const ctx = new IommufdCtx(machine, { vfio: options.vfio ?? false, test })
  const caller: Caller = { proc, cred: { ...UNPRIVILEGED, ...options.cred } }
  const fd = fdAlloc(proc)
  const handle = new Iommufd(ctx, fd, caller, true)
  fdSet(proc, fd, handle)
  return handle
}

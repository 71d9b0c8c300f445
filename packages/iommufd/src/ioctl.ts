/**
 * The ioctl dispatcher (`iommufd_fops_ioctl`) and its table (`iommufd_ioctl_ops[]`): the
 * command number picks a slot, the first u32 of the argument is the caller's `size`,
 * `size` below the struct's first version is EINVAL, non-zero bytes past the kernel's
 * struct are E2BIG, an unknown command is ENOTTY (reference iommufd-uapi.md §2.1–2.2).
 *
 * @module
 */

import { type Errno, IommuError } from '@iommu/core'
import type { Caller, IommufdCtx } from './ctx.ts'
import { iommufdGetHwInfo } from './device.ts'
import { iommufdFaultAlloc, iommufdVeventqAlloc } from './eventq.ts'
import {
  iommufdHwptAlloc,
  iommufdHwptGetDirtyBitmap,
  iommufdHwptInvalidate,
  iommufdHwptSetDirtyTracking,
} from './hw-pagetable.ts'
import {
  iommufdIoasAllocIoctl,
  iommufdIoasAllowIovas,
  iommufdIoasChangeProcess,
  iommufdIoasCopy,
  iommufdIoasIovaRanges,
  iommufdIoasMap,
  iommufdIoasMapFile,
  iommufdIoasUnmap,
  iommufdOption,
  iommufdVfioIoas,
} from './ioas.ts'
import { iommufdTest } from './selftest.ts'
import {
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
  IOMMUFD_CMD_BASE,
} from './uapi/constants.ts'
import {
  bytesToObject,
  cInt,
  fieldAt,
  parseStruct,
  type StructLayout,
  storeField,
  valueAt,
  writeField,
} from './uapi/struct.ts'
import {
  IOMMU_DESTROY_LAYOUT,
  IOMMU_FAULT_ALLOC_LAYOUT,
  IOMMU_HW_INFO_LAYOUT,
  IOMMU_HW_QUEUE_ALLOC_LAYOUT,
  IOMMU_HWPT_ALLOC_LAYOUT,
  IOMMU_HWPT_GET_DIRTY_BITMAP_LAYOUT,
  IOMMU_HWPT_INVALIDATE_LAYOUT,
  IOMMU_HWPT_SET_DIRTY_TRACKING_LAYOUT,
  IOMMU_IOAS_ALLOC_LAYOUT,
  IOMMU_IOAS_ALLOW_IOVAS_LAYOUT,
  IOMMU_IOAS_CHANGE_PROCESS_LAYOUT,
  IOMMU_IOAS_COPY_LAYOUT,
  IOMMU_IOAS_IOVA_RANGES_LAYOUT,
  IOMMU_IOAS_MAP_FILE_LAYOUT,
  IOMMU_IOAS_MAP_LAYOUT,
  IOMMU_IOAS_UNMAP_LAYOUT,
  IOMMU_OPTION_LAYOUT,
  IOMMU_TEST_CMD_LAYOUT,
  IOMMU_VDEVICE_ALLOC_LAYOUT,
  IOMMU_VEVENTQ_ALLOC_LAYOUT,
  IOMMU_VFIO_IOAS_LAYOUT,
  IOMMU_VIOMMU_ALLOC_LAYOUT,
} from './uapi/structs.ts'
import type { Ucmd } from './ucmd.ts'
import { iommufdHwQueueAlloc, iommufdVdeviceAlloc, iommufdViommuAlloc } from './viommu.ts'

/** One slot of the table (`struct iommufd_ioctl_op`). */
interface IoctlOp {
  readonly name: string
  readonly cmd: number
  readonly layout: StructLayout<unknown>
  /** Fields a plain `respond()` writes back into an argument object. */
  readonly out: readonly string[]
  readonly execute: (ucmd: Ucmd<never>) => void
}

function op<T>(
  name: string,
  cmd: number,
  layout: StructLayout<T>,
  out: readonly string[],
  execute: (ucmd: Ucmd<T>) => void,
): IoctlOp {
  return {
    name,
    cmd,
    layout: layout as StructLayout<unknown>,
    out,
    execute: execute as IoctlOp['execute'],
  }
}

function iommufdDestroy(ucmd: Ucmd<{ id: number }>): void {
  ucmd.ctx.objects.destroy(ucmd.cmd.id)
}

const OPS: readonly IoctlOp[] = [
  op('IOMMU_DESTROY', IOMMU_DESTROY, IOMMU_DESTROY_LAYOUT, [], iommufdDestroy),
  op(
    'IOMMU_IOAS_ALLOC',
    IOMMU_IOAS_ALLOC,
    IOMMU_IOAS_ALLOC_LAYOUT,
    ['out_ioas_id'],
    iommufdIoasAllocIoctl,
  ),
  op(
    'IOMMU_IOAS_ALLOW_IOVAS',
    IOMMU_IOAS_ALLOW_IOVAS,
    IOMMU_IOAS_ALLOW_IOVAS_LAYOUT,
    [],
    iommufdIoasAllowIovas,
  ),
  op('IOMMU_IOAS_COPY', IOMMU_IOAS_COPY, IOMMU_IOAS_COPY_LAYOUT, ['dst_iova'], iommufdIoasCopy),
  op(
    'IOMMU_IOAS_IOVA_RANGES',
    IOMMU_IOAS_IOVA_RANGES,
    IOMMU_IOAS_IOVA_RANGES_LAYOUT,
    ['num_iovas', 'out_iova_alignment'],
    iommufdIoasIovaRanges,
  ),
  op('IOMMU_IOAS_MAP', IOMMU_IOAS_MAP, IOMMU_IOAS_MAP_LAYOUT, ['iova'], iommufdIoasMap),
  op('IOMMU_IOAS_UNMAP', IOMMU_IOAS_UNMAP, IOMMU_IOAS_UNMAP_LAYOUT, ['length'], iommufdIoasUnmap),
  op('IOMMU_OPTION', IOMMU_OPTION, IOMMU_OPTION_LAYOUT, ['val64'], iommufdOption),
  op('IOMMU_VFIO_IOAS', IOMMU_VFIO_IOAS, IOMMU_VFIO_IOAS_LAYOUT, ['ioas_id'], iommufdVfioIoas),
  op(
    'IOMMU_HWPT_ALLOC',
    IOMMU_HWPT_ALLOC,
    IOMMU_HWPT_ALLOC_LAYOUT,
    ['out_hwpt_id'],
    iommufdHwptAlloc,
  ),
  op(
    'IOMMU_GET_HW_INFO',
    IOMMU_GET_HW_INFO,
    IOMMU_HW_INFO_LAYOUT,
    ['data_len', 'out_data_type', 'out_max_pasid_log2', 'out_capabilities'],
    iommufdGetHwInfo,
  ),
  op(
    'IOMMU_HWPT_SET_DIRTY_TRACKING',
    IOMMU_HWPT_SET_DIRTY_TRACKING,
    IOMMU_HWPT_SET_DIRTY_TRACKING_LAYOUT,
    [],
    iommufdHwptSetDirtyTracking,
  ),
  op(
    'IOMMU_HWPT_GET_DIRTY_BITMAP',
    IOMMU_HWPT_GET_DIRTY_BITMAP,
    IOMMU_HWPT_GET_DIRTY_BITMAP_LAYOUT,
    [],
    iommufdHwptGetDirtyBitmap,
  ),
  op(
    'IOMMU_HWPT_INVALIDATE',
    IOMMU_HWPT_INVALIDATE,
    IOMMU_HWPT_INVALIDATE_LAYOUT,
    ['entry_num'],
    iommufdHwptInvalidate,
  ),
  op(
    'IOMMU_FAULT_QUEUE_ALLOC',
    IOMMU_FAULT_QUEUE_ALLOC,
    IOMMU_FAULT_ALLOC_LAYOUT,
    ['out_fault_id', 'out_fault_fd'],
    iommufdFaultAlloc,
  ),
  op(
    'IOMMU_IOAS_MAP_FILE',
    IOMMU_IOAS_MAP_FILE,
    IOMMU_IOAS_MAP_FILE_LAYOUT,
    ['iova'],
    iommufdIoasMapFile,
  ),
  op(
    'IOMMU_VIOMMU_ALLOC',
    IOMMU_VIOMMU_ALLOC,
    IOMMU_VIOMMU_ALLOC_LAYOUT,
    ['out_viommu_id'],
    iommufdViommuAlloc,
  ),
  op(
    'IOMMU_VDEVICE_ALLOC',
    IOMMU_VDEVICE_ALLOC,
    IOMMU_VDEVICE_ALLOC_LAYOUT,
    ['out_vdevice_id'],
    iommufdVdeviceAlloc,
  ),
  op(
    'IOMMU_IOAS_CHANGE_PROCESS',
    IOMMU_IOAS_CHANGE_PROCESS,
    IOMMU_IOAS_CHANGE_PROCESS_LAYOUT,
    [],
    iommufdIoasChangeProcess,
  ),
  op(
    'IOMMU_VEVENTQ_ALLOC',
    IOMMU_VEVENTQ_ALLOC,
    IOMMU_VEVENTQ_ALLOC_LAYOUT,
    ['out_veventq_id', 'out_veventq_fd'],
    iommufdVeventqAlloc,
  ),
  op(
    'IOMMU_HW_QUEUE_ALLOC',
    IOMMU_HW_QUEUE_ALLOC,
    IOMMU_HW_QUEUE_ALLOC_LAYOUT,
    ['out_hw_queue_id'],
    iommufdHwQueueAlloc,
  ),
]
const TEST_OP = op('IOMMU_TEST_CMD', IOMMU_TEST_CMD, IOMMU_TEST_CMD_LAYOUT, [], iommufdTest)

const BY_NR = new Map<number, IoctlOp>(OPS.map((o) => [o.cmd & 0xff, o]))
/** Slots of the table without and with the test command (`ARRAY_SIZE`). */
const TABLE_SIZE = (IOMMU_HW_QUEUE_ALLOC & 0xff) - IOMMUFD_CMD_BASE + 1
const TEST_TABLE_SIZE = (IOMMU_TEST_CMD & 0xff) - IOMMUFD_CMD_BASE + 1

/** The detail of an `IommuError`'s message (the part in parentheses). */
function detailOf(e: IommuError): string {
  return /\((.*)\)$/s.exec(e.message)?.[1] ?? ''
}

function fail(code: Errno, where: string, detail: string, cause?: unknown): never {
  throw new IommuError(code, `${where}: ${detail}`, { syscall: 'ioctl', cause })
}

/** The 4-byte `size` at a user address. */
function readSize(caller: Caller, addr: bigint): number {
  const b = caller.proc.read(addr, 4)
  return new DataView(b.buffer, b.byteOffset, 4).getUint32(0, true)
}

/** `check_zeroed_user`: bytes past the kernel struct must be zero (E2BIG). */
function checkZeroedUser(caller: Caller, addr: bigint, n: number): void {
  for (let done = 0; done < n; ) {
    const chunk = Math.min(4096, n - done)
    if (caller.proc.read(addr + BigInt(done), chunk).some((b) => b !== 0)) {
      throw new IommuError('E2BIG', 'non-zero bytes past the kernel struct')
    }
    done += chunk
  }
}

function isUserPointer(arg: unknown): arg is bigint | number | null | undefined {
  return arg === null || arg === undefined || typeof arg === 'bigint' || typeof arg === 'number'
}

/**
 * Run one ioctl for `caller` (`iommufd_fops_ioctl`). `arg` is either an object with the
 * struct's fields or a user address (bigint/number) of the struct in the caller's memory.
 *
 * @returns 0
 * @throws IommuError with `syscall: 'ioctl'` and the kernel's errno
 */
export function iommufdIoctl(ctx: IommufdCtx, caller: Caller, cmd: number, arg: unknown): 0 {
  const nr = cmd & 0xff
  const slots = ctx.test === null ? TABLE_SIZE : TEST_TABLE_SIZE
  // Below the base or past the table: the VFIO compat handler, which knows none here.
  if (nr < IOMMUFD_CMD_BASE || nr - IOMMUFD_CMD_BASE >= slots) {
    fail('ENOTTY', 'ioctl', `unknown command 0x${(cmd >>> 0).toString(16)}`)
  }
  const o = nr === (IOMMU_TEST_CMD & 0xff) ? TEST_OP : BY_NR.get(nr)
  const where = o?.name ?? 'ioctl'
  try {
    if (isUserPointer(arg)) {
      if (arg === null || arg === undefined) throw new IommuError('EFAULT', 'NULL argument')
      // A number that is no integer address (1.5, NaN, 2^60) points nowhere mapped.
      if (typeof arg === 'number' && !Number.isSafeInteger(arg)) {
        throw new IommuError('EFAULT', `bad user address ${arg}`)
      }
      return runFromMemory(ctx, caller, cmd, o, BigInt(arg))
    }
    return runFromObject(ctx, caller, cmd, o, arg as Record<string, unknown>)
  } catch (e) {
    if (!(e instanceof IommuError)) throw e
    if (e.syscall === 'ioctl') throw e
    return fail(e.code, where, detailOf(e), e)
  }
}

/** The slot of `cmd`: ENOTTY when the table has none or its number differs. */
function checkSlot(cmd: number, o: IoctlOp | undefined): IoctlOp {
  if (o === undefined || o.cmd !== cmd >>> 0) {
    throw new IommuError('ENOTTY', `unknown command 0x${(cmd >>> 0).toString(16)}`)
  }
  return o
}

/** `size` below the struct's first version is EINVAL. */
function checkSize(o: IoctlOp, size: number): void {
  if (size < o.layout.minSize) throw new IommuError('EINVAL', `size ${size} < ${o.layout.minSize}`)
}

function runFromObject(
  ctx: IommufdCtx,
  caller: Caller,
  cmd: number,
  slot: IoctlOp | undefined,
  arg: Record<string, unknown>,
): 0 {
  const o = checkSlot(cmd, slot)
  // `size` is a __u32 like any other field: C's conversion, EINVAL if not an integer.
  const size = cInt('u32', arg.size ?? 0, `${o.layout.name}.size`) as number
  checkSize(o, size)
  const decoded = parseStruct(o.layout, arg, size) as object
  const ucmd: Ucmd<never> = {
    ctx,
    caller,
    cmd: decoded as never,
    respond(fields) {
      try {
        for (const f of fields ?? o.out) storeField(o.layout, arg, f, valueAt(decoded, f), size)
      } catch (e) {
        // A frozen or read-only argument object: copy_to_user fails (EFAULT).
        if (e instanceof TypeError) throw new IommuError('EFAULT', 'argument is read-only')
        throw e
      }
    },
  }
  o.execute(ucmd)
  return 0
}

function runFromMemory(
  ctx: IommufdCtx,
  caller: Caller,
  cmd: number,
  slot: IoctlOp | undefined,
  addr: bigint,
): 0 {
  const o = checkSlot(cmd, slot)
  const size = readSize(caller, addr)
  checkSize(o, size)
  const layout = o.layout
  const buf = new Uint8Array(layout.sizeof)
  buf.set(caller.proc.read(addr, Math.min(size, layout.sizeof)))
  if (size > layout.sizeof)
    checkZeroedUser(caller, addr + BigInt(layout.sizeof), size - layout.sizeof)
  const raw = bytesToObject(layout, buf)
  raw.size = size
  const decoded = parseStruct(layout, raw, size) as object
  const view = new DataView(buf.buffer)
  const ucmd: Ucmd<never> = {
    ctx,
    caller,
    cmd: decoded as never,
    respond(fields) {
      const list = fields ?? layout.fields.map((f) => f.name)
      for (const path of list) writeField(view, fieldAt(layout, path), valueAt(decoded, path))
      if (fields === undefined) {
        caller.proc.write(addr, buf.subarray(0, Math.min(size, layout.sizeof)))
        return
      }
      for (const path of fields) {
        const f = fieldAt(layout, path)
        const n = Math.max(0, Math.min(f.bytes, size - f.off))
        if (n > 0) caller.proc.write(addr + BigInt(f.off), buf.subarray(f.off, f.off + n))
      }
    },
  }
  o.execute(ucmd)
  return 0
}

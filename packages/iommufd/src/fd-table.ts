/**
 * File descriptors of simulated processes. The core's `Process` has no fd table, but the
 * uAPI names files by number (`IOMMU_IOAS_MAP_FILE.fd`, the test command's access fds),
 * so iommufd keeps one per process: numbers are lowest-free from 3, like `open(2)`.
 *
 * @module
 */

import { IommuError, Memfd, type Process } from '@iommu/core'

/** `poll` bits (`EPOLLIN`, `EPOLLOUT`, `EPOLLRDNORM`). */
export const POLLIN = 0x001
export const POLLOUT = 0x004
export const POLLRDNORM = 0x040

/**
 * Where a `read`/`write` copies to or from: the caller's memory for the syscalls, or a
 * byte array for the convenience methods. Both throw EFAULT past what is there.
 */
export interface UserBuffer {
  /** `copy_to_user(buf + offset, src)`. */
  copyTo(offset: number, src: Uint8Array): void
  /** `copy_from_user(dst, buf + offset, length)`. */
  copyFrom(offset: number, length: number): Uint8Array
}

/** The user buffer at `addr` in `proc` (what `read(2)`/`write(2)` pass to fops). */
export function userBuffer(proc: Process, addr: bigint | number): UserBuffer {
  const base = BigInt(addr)
  return {
    copyTo(offset, src) {
      if (base === 0n) throw new IommuError('EFAULT', 'NULL buffer')
      proc.write(base + BigInt(offset), src)
    },
    copyFrom(offset, length) {
      if (base === 0n) throw new IommuError('EFAULT', 'NULL buffer')
      return proc.read(base + BigInt(offset), length)
    },
  }
}

/** A byte array as a user buffer (the convenience path). */
export function bytesBuffer(bytes: Uint8Array): UserBuffer {
  return {
    copyTo(offset, src) {
      if (offset + src.length > bytes.length) throw new IommuError('EFAULT', 'past the buffer')
      bytes.set(src, offset)
    },
    copyFrom(offset, length) {
      if (offset + length > bytes.length) throw new IommuError('EFAULT', 'past the buffer')
      return bytes.slice(offset, offset + length)
    },
  }
}

/**
 * A file that can sit in an fd table; `release` runs when its fd is closed. The optional
 * ops are its `file_operations`: absent `read`/`write` answer EINVAL, as the VFS does.
 */
export interface FdFile {
  release(): void
  /** `read` at file position `pos` (non-zero: ESPIPE for the iommufd files). */
  read?(buf: UserBuffer, count: number, pos?: number): number
  write?(buf: UserBuffer, count: number, pos?: number): number
  /** `poll`: the ready bits. */
  poll?(): number
}

const tables = new WeakMap<Process, Map<number, FdFile | Memfd>>()

function tableOf(proc: Process): Map<number, FdFile | Memfd> {
  let t = tables.get(proc)
  if (t === undefined) {
    t = new Map()
    tables.set(proc, t)
  }
  return t
}

const RESERVED: FdFile = { release() {} }

/** Reserve the lowest free fd (`get_unused_fd_flags`); fill it with {@link fdSet}. */
export function fdAlloc(proc: Process): number {
  const t = tableOf(proc)
  let fd = 3
  while (t.has(fd)) fd++
  t.set(fd, RESERVED)
  return fd
}

/** Put a file behind a reserved fd (`fd_install`). */
export function fdSet(proc: Process, fd: number, file: FdFile | Memfd): void {
  tableOf(proc).set(fd, file)
}

/**
 * Install a file (a memfd, an iommufd, an access) in the process and return its fd.
 *
 * @example
 * ```ts
 * const mfd = proc.memfdCreate('guest-ram')
 * const fd = fdInstall(proc, mfd) // for IOMMU_IOAS_MAP_FILE.fd
 * ```
 */
export function fdInstall(proc: Process, file: FdFile | Memfd): number {
  const fd = fdAlloc(proc)
  fdSet(proc, fd, file)
  return fd
}

/** The file behind `fd`, or undefined (`fget` failing: EBADF for the caller). */
export function fdGet(proc: Process, fd: number): FdFile | Memfd | undefined {
  const f = tables.get(proc)?.get(fd)
  return f === RESERVED ? undefined : f
}

/**
 * Close `fd` (`close(2)`): a memfd is closed, other files are released.
 *
 * @throws EBADF - no such fd
 */
export function fdClose(proc: Process, fd: number): void {
  const t = tables.get(proc)
  const file = t?.get(fd)
  if (t === undefined || file === undefined) throw new IommuError('EBADF', `fd ${fd}`)
  t.delete(fd)
  if (file instanceof Memfd) file.close()
  else file.release()
}

/** Remove `fd` without releasing its file (undo an install on an error path). */
export function fdTake(proc: Process, fd: number): FdFile | Memfd | undefined {
  const t = tables.get(proc)
  const file = t?.get(fd)
  t?.delete(fd)
  return file
}

function fileOf(proc: Process, fd: number): FdFile {
  const f = fdGet(proc, fd)
  if (f === undefined) throw new IommuError('EBADF', `fd ${fd}`)
  if (f instanceof Memfd) throw new IommuError('EINVAL', `fd ${fd} is a memfd`)
  return f
}

/**
 * `read(fd, buf, count)` in `proc` (`pread` when `pos` is given). Never blocks.
 *
 * @returns bytes read (0: nothing to read)
 * @throws IommuError with `syscall: 'read'`: EBADF; EINVAL - the file has no read op; the
 *   file's errno (ESPIPE, EINVAL, EFAULT, ...)
 */
export function fdRead(
  proc: Process,
  fd: number,
  buf: bigint | number,
  count: number,
  pos = 0,
): number {
  return sys('read', () => {
    const f = fileOf(proc, fd)
    if (!f.read) throw new IommuError('EINVAL', 'no read op')
    return f.read(userBuffer(proc, buf), count, pos)
  })
}

/**
 * `write(fd, buf, count)` in `proc` (`pwrite` when `pos` is given).
 *
 * @returns bytes written (a partial count when a later record fails)
 * @throws IommuError with `syscall: 'write'`: EBADF; EINVAL - no write op; the file's errno
 */
export function fdWrite(
  proc: Process,
  fd: number,
  buf: bigint | number,
  count: number,
  pos = 0,
): number {
  return sys('write', () => {
    const f = fileOf(proc, fd)
    if (!f.write) throw new IommuError('EINVAL', 'no write op')
    return f.write(userBuffer(proc, buf), count, pos)
  })
}

/**
 * `poll` of one fd: the ready bits (`POLLIN | POLLRDNORM` when a read would find
 * something, `POLLOUT` for writable files). A file without a poll op is always ready
 * for both, as the VFS's default.
 *
 * @throws EBADF
 */
export function fdPoll(proc: Process, fd: number): number {
  return sys('poll', () => {
    const f = fileOf(proc, fd)
    return f.poll ? f.poll() : POLLIN | POLLOUT | POLLRDNORM
  })
}

function sys<T>(syscall: string, fn: () => T): T {
  try {
    return fn()
  } catch (e) {
    if (e instanceof IommuError && e.syscall === undefined) {
      throw new IommuError(e.code, /\((.*)\)$/s.exec(e.message)?.[1], { syscall, cause: e })
    }
    throw e
  }
}

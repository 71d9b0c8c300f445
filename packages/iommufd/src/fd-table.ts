/**
 * File descriptors of simulated processes. The core's `Process` has no fd table, but the
 * uAPI names files by number (`IOMMU_IOAS_MAP_FILE.fd`, the test command's access fds),
 * so iommufd keeps one per process: numbers are lowest-free from 3, like `open(2)`.
 *
 * @module
 */

import { IommuError, Memfd, type Process } from '@iommu/core'

/** A file that can sit in an fd table; `release` runs when its fd is closed. */
export interface FdFile {
  release(): void
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

/**
 * Linux errno values and the one error class every layer of the model throws.
 *
 * Names are the contract: code compares `err.code === 'EINVAL'`. Numbers are the Linux
 * (asm-generic) values and only matter at the uAPI edge, where `err.errno` carries the
 * negative value a syscall would return, following Node's system-error convention
 * (`code`, `errno`, `syscall`).
 *
 * @module
 */

/** Linux errno numbers (include/uapi/asm-generic/errno-base.h and errno.h). */
export const ERRNO = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EIO: 5,
  ENXIO: 6,
  E2BIG: 7,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  EXDEV: 18,
  ENODEV: 19,
  EINVAL: 22,
  ENOTTY: 25,
  EFBIG: 27,
  ENOSPC: 28,
  ESPIPE: 29,
  ERANGE: 34,
  EDEADLK: 35,
  ENOSYS: 38,
  EBADE: 52,
  ENOLINK: 67,
  EBADMSG: 74,
  EOVERFLOW: 75,
  EBADFD: 77,
  EMSGSIZE: 90,
  EOPNOTSUPP: 95,
  EADDRINUSE: 98,
  ETIMEDOUT: 110,
  /** Kernel-internal: never reaches user space (the ioctl layer turns it into ENOTTY). */
  ENOIOCTLCMD: 515,
  /** Kernel-internal: probe must be retried later. */
  EPROBE_DEFER: 517,
} as const

/** An errno name, e.g. `'EINVAL'`. */
export type Errno = keyof typeof ERRNO

/** strerror() texts, lower-cased as Node prints them. */
const DESCRIPTION: { readonly [K in Errno]: string } = {
  EPERM: 'operation not permitted',
  ENOENT: 'no such file or directory',
  ESRCH: 'no such process',
  EINTR: 'interrupted system call',
  EIO: 'i/o error',
  ENXIO: 'no such device or address',
  E2BIG: 'argument list too long',
  EBADF: 'bad file descriptor',
  EAGAIN: 'resource temporarily unavailable',
  ENOMEM: 'not enough memory',
  EACCES: 'permission denied',
  EFAULT: 'bad address',
  EBUSY: 'resource busy or locked',
  EEXIST: 'file already exists',
  EXDEV: 'cross-device link not permitted',
  ENODEV: 'no such device',
  EINVAL: 'invalid argument',
  ENOTTY: 'inappropriate ioctl for device',
  EFBIG: 'file too large',
  ENOSPC: 'no space left on device',
  ESPIPE: 'invalid seek',
  ERANGE: 'result too large',
  EDEADLK: 'resource deadlock avoided',
  ENOSYS: 'function not implemented',
  EBADE: 'invalid exchange',
  ENOLINK: 'link has been severed',
  EBADMSG: 'bad message',
  EOVERFLOW: 'value too large for defined data type',
  EBADFD: 'file descriptor in bad state',
  EMSGSIZE: 'message too long',
  EOPNOTSUPP: 'operation not supported on socket',
  EADDRINUSE: 'address already in use',
  ETIMEDOUT: 'connection timed out',
  ENOIOCTLCMD: 'no ioctl command',
  EPROBE_DEFER: 'probe deferral',
}

/** Options of {@link IommuError} beyond the standard `cause`. */
export interface IommuErrorOptions extends ErrorOptions {
  /** The system call the error is reported from, e.g. `'ioctl'`. */
  readonly syscall?: string
  /**
   * Bytes completed before the failure, for the operations that report partial progress
   * alongside an error (`map_pages`' `*mapped` out-parameter).
   */
  readonly progress?: bigint
}

/**
 * The error thrown for every errno-style failure, shaped like Node's system errors:
 * `code` is the errno name, `errno` the negative Linux number, `syscall` where it applies.
 *
 * @example
 * ```ts
 * try { fd.ioctl(IOMMU_IOAS_MAP, arg) } catch (e) {
 *   if (e instanceof IommuError && e.code === 'EEXIST') { ... }   // e.errno === -17
 * }
 * ```
 */
export class IommuError extends Error {
  override readonly name = 'IommuError'
  /** The errno name, e.g. `'EINVAL'`. */
  readonly code: Errno
  /** The negative Linux errno, e.g. `-22` for EINVAL. */
  readonly errno: number
  /** The system call the error came from, when there is one (`'ioctl'`). */
  readonly syscall: string | undefined
  /** Bytes completed before the failure, where the operation reports partial progress. */
  readonly progress: bigint | undefined

  constructor(code: Errno, detail?: string, options: IommuErrorOptions = {}) {
    const where = options.syscall === undefined ? '' : `, ${options.syscall}`
    super(`${code}: ${DESCRIPTION[code]}${where}${detail ? ` (${detail})` : ''}`, options)
    this.code = code
    this.errno = -ERRNO[code]
    this.syscall = options.syscall
    this.progress = options.progress
  }
}

/** True when `e` is an {@link IommuError}, optionally with the given code. */
export function isIommuError(e: unknown, code?: Errno): e is IommuError {
  return e instanceof IommuError && (code === undefined || e.code === code)
}

/**
 * Normalize anything a driver threw into an {@link IommuError}. Values that are not an
 * `IommuError` become `fallback`, the errno the kernel substitutes for that operation
 * (for `attach_dev`, "others are treated as ENODEV").
 */
export function toIommuError(cause: unknown, fallback: Errno = 'ENODEV'): IommuError {
  if (cause instanceof IommuError) return cause
  return new IommuError(fallback, 'unexpected driver error', { cause })
}

/** Shorthand for `throw new IommuError(code, detail)`, usable in expressions. */
export function fail(code: Errno, detail?: string): never {
  throw new IommuError(code, detail)
}

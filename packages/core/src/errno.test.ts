import { describe, expect, it } from 'vitest'
import { ERRNO, IommuError, isIommuError, toIommuError } from './errno.ts'

describe('IommuError', () => {
  it('follows the Node system-error convention with Linux errno numbers', () => {
    const e = new IommuError('EINVAL', 'bad flags', { syscall: 'ioctl' })
    expect(e).toBeInstanceOf(Error)
    expect(e.code).toBe('EINVAL')
    expect(e.errno).toBe(-22)
    expect(e.syscall).toBe('ioctl')
    expect(e.name).toBe('IommuError')
    expect(e.message).toBe('EINVAL: invalid argument, ioctl (bad flags)')
  })

  it('uses the asm-generic errno values', () => {
    expect(ERRNO).toMatchObject({
      EPERM: 1,
      ENOENT: 2,
      E2BIG: 7,
      ENOMEM: 12,
      EFAULT: 14,
      EBUSY: 16,
      EEXIST: 17,
      ENODEV: 19,
      EINVAL: 22,
      ENOTTY: 25,
      ENOSPC: 28,
      EOVERFLOW: 75,
      EMSGSIZE: 90,
      EOPNOTSUPP: 95,
      EADDRINUSE: 98,
    })
    expect(new IommuError('EOPNOTSUPP').errno).toBe(-95)
  })

  it('carries the partial progress of map_pages', () => {
    expect(new IommuError('ENOMEM', undefined, { progress: 8192n }).progress).toBe(8192n)
  })

  it('normalizes foreign throws to the per-op fallback (attach_dev: others are ENODEV)', () => {
    const cause = new TypeError('boom')
    const e = toIommuError(cause)
    expect(e.code).toBe('ENODEV')
    expect(e.cause).toBe(cause)
    const same = new IommuError('EBUSY')
    expect(toIommuError(same)).toBe(same)
    expect(isIommuError(same, 'EBUSY')).toBe(true)
    expect(isIommuError(same, 'EINVAL')).toBe(false)
  })
})

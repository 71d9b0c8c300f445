/**
 * The kselftest harness of `tools/testing/selftests/iommu` in TypeScript: errno checks
 * (`EXPECT_ERRNO`, `ioctl()` returning `-errno`), fixtures (`FIXTURE`, `FIXTURE_VARIANT`,
 * `FIXTURE_SETUP`/`TEARDOWN`, `TEST_F`, `SKIP`) over vitest, and the world every selftest
 * process starts with (`setup_sizes()` of `iommufd.c`: the global `buffer` and
 * `mfd_buffer`).
 *
 * Each test runs on a fresh simulated machine with a mock IOMMU and a fresh process (the
 * C harness forks a child per test; the model gives it a whole machine). The globals
 * below are reassigned for every test; import them as live bindings.
 *
 * @module
 */

import {
  createMachine,
  ERRNO,
  type Errno,
  isIommuError,
  type Machine,
  type MachineOptions,
  PROT_READ,
  PROT_WRITE,
  type Process,
  type ProcessOptions,
} from '@iommu/core'
import { mockIommu } from '@iommu/core/testing/mock'
import type * as Vitest from 'vitest'
import { fdInstall } from '../fd-table.ts'
import { type Iommufd, type OpenIommufdOptions, openIommufd } from '../iommufd.ts'

// vitest is an optional peer: everything but fixture() works without it.
let vitest: typeof Vitest | null = null
try {
  vitest = await import('vitest')
} catch {
  vitest = null
}

// ------------------------------------------------------------------ errno

/** Linux errno numbers under their C names, for `expectErrno(EINVAL, ...)`. */
export const {
  EPERM,
  ENOENT,
  ESRCH,
  EINTR,
  EIO,
  ENXIO,
  E2BIG,
  EBADF,
  EAGAIN,
  ENOMEM,
  EACCES,
  EFAULT,
  EBUSY,
  EEXIST,
  EXDEV,
  ENODEV,
  EINVAL,
  ENOTTY,
  EFBIG,
  ENOSPC,
  ESPIPE,
  ERANGE,
  EDEADLK,
  ENOSYS,
  EBADE,
  ENOLINK,
  EBADMSG,
  EOVERFLOW,
  EBADFD,
  EMSGSIZE,
  EOPNOTSUPP,
  EADDRINUSE,
  ETIMEDOUT,
} = ERRNO

/** A failed check of the harness (`ASSERT_*` of the C helpers). */
export class SelftestAssertionError extends Error {
  override readonly name = 'AssertionError'
}

/** Throw a {@link SelftestAssertionError} unless `actual === expected`. */
export function assertEq(expected: unknown, actual: unknown, what: string): void {
  if (expected !== actual) {
    throw new SelftestAssertionError(`${what}: expected ${show(expected)}, got ${show(actual)}`)
  }
}

function show(v: unknown): string {
  return typeof v === 'bigint' ? `${v}n` : String(v)
}

function errnoName(n: number): string {
  const hit = Object.entries(ERRNO).find(([, v]) => v === n)
  return hit === undefined ? String(n) : `${hit[0]} (${n})`
}

/**
 * `ioctl(fd, cmd, arg)` as C sees its result: 0, or the negative errno (`-EINVAL` is
 * -22) where C gets -1 with `errno` set. Outputs are written back into `arg` as by
 * `fd.ioctl`. Only an `IommuError` becomes a number; anything else propagates.
 */
export function ioctlErrno(fd: Iommufd, cmd: number, arg: unknown): number {
  try {
    return fd.ioctl(cmd as never, arg as never)
  } catch (e) {
    if (isIommuError(e)) return e.errno
    throw e
  }
}

/**
 * `EXPECT_ERRNO(expected, cmd)`: the call fails with exactly `expected`. `cmd` is a
 * function (a `_test*` helper or `fd.ioctl`, which throw the `IommuError`, or anything
 * returning `-errno`) or the result of {@link ioctlErrno}. `expected` is the errno's
 * number (`EINVAL`) or name (`'EINVAL'`).
 *
 * @throws SelftestAssertionError - the call succeeded or failed with another errno
 */
export function expectErrno(expected: Errno | number, cmd: (() => unknown) | number): void {
  const want = typeof expected === 'number' ? expected : ERRNO[expected]
  let got: number
  if (typeof cmd === 'number') {
    got = -cmd
  } else {
    try {
      const r = cmd()
      got = typeof r === 'number' && r < 0 ? -r : 0
    } catch (e) {
      if (!isIommuError(e)) throw e
      got = -e.errno
    }
  }
  if (got === 0) throw new SelftestAssertionError(`expected ${errnoName(want)}, the call succeeded`)
  if (got !== want) {
    throw new SelftestAssertionError(`expected ${errnoName(want)}, got ${errnoName(got)}`)
  }
}

// ------------------------------------------------------------------ the selftest process

/** `sysconf(_SC_PAGE_SIZE)` of the simulated machine. */
export const PAGE_SIZE = 4096
/** `hpage_pmd_size`: the THP size. */
export const HUGEPAGE_SIZE = 2 * 1024 * 1024
/** The global buffer's size: 16 pages. */
export const BUFFER_SIZE = 16 * PAGE_SIZE
/** Where the global buffer sits: THP aligned, as the C `posix_memalign(HUGEPAGE_SIZE)`. */
export const BUFFER_VA = 0x4000_0000

/** The machine of the running test: the kernel with its mock IOMMU. */
export let machine: Machine
/** The selftest process of the running test. */
export let proc: Process
/** `buffer`: 16 pages, THP aligned, `MAP_SHARED | MAP_ANONYMOUS` (a shmem file, as Linux backs it). */
export let buffer: number
/** `mfd_buffer`: a 16-page memfd mapped `MAP_SHARED`. */
export let mfd_buffer: number
/** `mfd`: the memfd behind {@link mfd_buffer}, in the process' fd table. */
export let mfd: number

/** Options of {@link setupSizes}: the machine and the process a test runs on. */
export interface SetupSizesOptions {
  /** Machine options; `iommus` defaults to one mock IOMMU (`mockIommu()`). */
  readonly machine?: MachineOptions
  /** Options of the selftest process (its user, RLIMIT_MEMLOCK). */
  readonly process?: ProcessOptions
}

/**
 * `setup_sizes()`, the constructor of `iommufd.c`: a fresh machine and process with the
 * global `buffer` and `mfd_buffer`. {@link fixture} calls it before every test; call it
 * yourself to use the globals outside a fixture.
 */
export function setupSizes(options: SetupSizesOptions = {}): void {
  machine = createMachine({ iommus: [mockIommu()], ...options.machine })
  proc = machine.createProcess(options.process)
  const shmem = proc.memfdCreate('dev/zero')
  shmem.ftruncate(BUFFER_SIZE)
  buffer = proc.mmap(BUFFER_SIZE, { addr: BUFFER_VA, file: shmem })
  const m = memfdMmap(BUFFER_SIZE, PROT_READ | PROT_WRITE)
  mfd_buffer = m.buf
  mfd = m.mfd
}

/**
 * `memfd_mmap(length, prot, MAP_SHARED, &mfd)`: a memfd of `length` bytes installed in
 * the process' fd table and mapped shared.
 *
 * @returns the mapping (`buf`) and the fd (`mfd`)
 */
export function memfdMmap(length: number, prot: number): { buf: number; mfd: number } {
  const file = proc.memfdCreate('buffer')
  file.ftruncate(length)
  const fd = fdInstall(proc, file)
  return { buf: proc.mmap(length, { file, prot }), mfd: fd }
}

/**
 * `open("/dev/iommu", O_RDWR)` in the selftest process of a `CONFIG_IOMMUFD_TEST` kernel:
 * IOMMU_TEST_CMD available, and the caller is root (CAP_SYS_RESOURCE, CAP_IPC_LOCK) as
 * the selftests run. `options` override.
 */
export function openDevIommu(options: OpenIommufdOptions = {}): Iommufd {
  return openIommufd(machine, proc, {
    test: true,
    cred: { CAP_SYS_RESOURCE: true, CAP_IPC_LOCK: true },
    ...options,
  })
}

// ------------------------------------------------------------------ fixtures

/** What every fixture has: `int fd` (the open iommufd the `test_*` helpers use). */
export interface FixtureSelf {
  fd: Iommufd
}

/** `FIXTURE_VARIANT_ADD`s, `FIXTURE_SETUP`, `FIXTURE_TEARDOWN` of a fixture. */
export interface FixtureOptions<S, V> {
  /** The variants in `FIXTURE_VARIANT_ADD` order, by name; none: the fixture's tests run once. */
  readonly variants?: Readonly<Record<string, V>>
  /** `FIXTURE_SETUP`; `self` starts empty (set what the C struct holds). */
  readonly setup?: (self: S, variant: V) => void
  /** `FIXTURE_TEARDOWN`: runs after a test whose setup completed, failed or not. */
  readonly teardown?: (self: S, variant: V) => void
  /** The machine and process each test gets (see {@link setupSizes}). */
  readonly world?: SetupSizesOptions
}

/** `TEST_F(fixture, name) { ... }`. */
export type TestF<S, V> = (name: string, body: (self: S, variant: V) => void) => void

interface Running {
  readonly self: object
  readonly ctx: Vitest.TestContext
}
let running: Running | null = null

/**
 * The `self` of the running `TEST_F`, which the `test_*` helpers use as the C macros use
 * `self->fd` and `self->ioas_id`.
 *
 * @throws Error - no fixture test is running (call the `_test*` function with an fd)
 */
export function currentSelf(): FixtureSelf & Record<string, unknown> {
  const s = running?.self as (FixtureSelf & Record<string, unknown>) | undefined
  if (s === undefined || s.fd === undefined) {
    throw new Error('the test_* helpers use self->fd: call them in a fixture whose setup opens it')
  }
  return s
}

/** `SKIP(return, reason)`: end the running test as skipped. */
export function SKIP(reason: string): never {
  if (running === null) throw new Error(`SKIP outside a fixture test: ${reason}`)
  running.ctx.skip(reason)
  throw new Error('unreachable: the test context did not skip')
}

/**
 * A kselftest fixture over vitest: for each variant, a `describe('<fixture>.<variant>')`
 * holding the `TEST_F`s that `tests` declares, each run as the C harness runs it: a
 * fresh world ({@link setupSizes}), `setup(self, variant)`, the body, then `teardown` (if
 * setup completed, even when the body failed; the body's failure is the one reported).
 *
 * @example
 * ```ts
 * fixture<Self, Variant>('iommufd_dirty_tracking', { variants, setup, teardown }, (TEST_F) => {
 *   TEST_F('set_dirty_tracking', (self) => { ... })
 * })
 * ```
 */
export function fixture<S extends FixtureSelf, V = Record<string, never>>(
  name: string,
  options: FixtureOptions<S, V>,
  tests: (TEST_F: TestF<S, V>) => void,
): void {
  const vt = vitest
  if (vt === null) throw new Error('fixture() needs vitest (an optional peer dependency)')
  const variants: [string | null, V][] =
    options.variants === undefined ? [[null, {} as V]] : Object.entries(options.variants)
  for (const [variantName, variant] of variants) {
    vt.describe(variantName === null ? name : `${name}.${variantName}`, () => {
      tests((testName, body) => {
        vt.test(testName, (ctx) => runTest(ctx, options, variant, body))
      })
    })
  }
}

function runTest<S extends FixtureSelf, V>(
  ctx: Vitest.TestContext,
  options: FixtureOptions<S, V>,
  variant: V,
  body: (self: S, variant: V) => void,
): void {
  setupSizes(options.world)
  const self = {} as S
  running = { self, ctx }
  let setupDone = false
  let failure: { error: unknown } | null = null
  try {
    options.setup?.(self, variant)
    setupDone = true
    body(self, variant)
  } catch (error) {
    failure = { error }
  }
  try {
    if (setupDone) options.teardown?.(self, variant)
  } catch (error) {
    failure ??= { error }
  } finally {
    running = null
  }
  if (failure !== null) throw failure.error
}

/**
 * @iommu/iommufd/testing — the iommufd kselftest harness in TypeScript, for porting
 * `tools/testing/selftests/iommu` onto the model one line for one line: fixtures over
 * vitest (`fixture`, `TEST_F`, `SKIP`), errno checks (`expectErrno`, `ioctlErrno`), the
 * selftest process' globals (`buffer`, `mfd_buffer`, `mfd`), and the helpers of
 * `iommufd_utils.h` in camelCase with the C argument order (`testIoctlIoasAlloc`,
 * `testCmdMockDomain`, `_testCmdHwptAlloc`, ...).
 *
 * Also the uAPI robustness kit: `runUapiFuzz`, a seeded random-ioctl fuzzer that any IOMMU
 * driver (in-tree or plugin) runs against itself.
 *
 * Test code only: nothing in the package's runtime imports it. vitest is an optional
 * peer dependency, needed by `fixture()` alone.
 *
 * @module
 */

export {
  runUapiFuzz,
  type UapiFuzzOptions,
  type UapiFuzzProblem,
  type UapiFuzzReport,
  type UapiFuzzTarget,
} from './fuzz.ts'
export {
  assertEq,
  BUFFER_SIZE,
  BUFFER_VA,
  buffer,
  currentSelf,
  E2BIG,
  EACCES,
  EADDRINUSE,
  EAGAIN,
  EBADE,
  EBADF,
  EBADFD,
  EBADMSG,
  EBUSY,
  EDEADLK,
  EEXIST,
  EFAULT,
  EFBIG,
  EINTR,
  EINVAL,
  EIO,
  EMSGSIZE,
  ENODEV,
  ENOENT,
  ENOLINK,
  ENOMEM,
  ENOSPC,
  ENOSYS,
  ENOTTY,
  ENXIO,
  EOPNOTSUPP,
  EOVERFLOW,
  EPERM,
  ERANGE,
  ESPIPE,
  ESRCH,
  ETIMEDOUT,
  EXDEV,
  expectErrno,
  type FixtureOptions,
  type FixtureSelf,
  fixture,
  HUGEPAGE_SIZE,
  ioctlErrno,
  machine,
  memfdMmap,
  mfd,
  mfd_buffer,
  openDevIommu,
  PAGE_SIZE,
  proc,
  SelftestAssertionError,
  type SetupSizesOptions,
  SKIP,
  setupSizes,
  type TestF,
} from './harness.ts'
/** The fuzzer's seeded PRNG, for tests that need a reproducible sequence. */
export { Rng } from './rng.ts'
export * from './utils.ts'

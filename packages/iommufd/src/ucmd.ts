/**
 * `struct iommufd_ucmd`: one ioctl in flight — the context, the caller, the decoded
 * argument and the way back to the caller's copy of it.
 *
 * @module
 */

import type { Caller, IommufdCtx } from './ctx.ts'

/** An ioctl being executed. */
export interface Ucmd<T> {
  readonly ctx: IommufdCtx
  readonly caller: Caller
  /** The decoded argument; handlers write their outputs into it. */
  readonly cmd: T
  /**
   * Copy the argument back to the caller (`iommufd_ucmd_respond`): the first `size` bytes
   * of the struct, or only `fields` when given (IOMMU_OPTION writes only `val64`).
   *
   * @throws EFAULT - the caller's memory cannot be written
   */
  respond(fields?: readonly string[]): void
}

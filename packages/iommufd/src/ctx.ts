/**
 * `struct iommufd_ctx`: what one open of `/dev/iommu` owns — the object table, the
 * per-IOMMU-group bookkeeping, the pinned-page accounting mode and the VFIO compat IOAS
 * (reference iommufd-uapi.md §1.1).
 *
 * @module
 */

import { IommuError, type IommuGroup, type Machine, PAGE_SIZE, type Process } from '@iommu/core'
import { type IommufdObject, ObjectTable, type ObjType } from './object.ts'
import { AccountMode } from './pages.ts'

/** The caller's capabilities that iommufd checks. */
export interface Credentials {
  /** Pinned pages of this caller are not charged (`IOPT_PAGES_ACCOUNT_NONE`). */
  readonly CAP_IPC_LOCK: boolean
  /** May change IOMMU_OPTION_RLIMIT_MODE. */
  readonly CAP_SYS_RESOURCE: boolean
}

/** An unprivileged VMM: accounting applies, RLIMIT_MODE cannot be changed. */
export const UNPRIVILEGED: Credentials = { CAP_IPC_LOCK: false, CAP_SYS_RESOURCE: false }

/** Whom an ioctl runs for: the calling process (`current`) and its credentials. */
export interface Caller {
  readonly proc: Process
  readonly cred: Credentials
}

/** Per-context state of the test command (`CONFIG_IOMMUFD_TEST`). */
export interface TestState {
  /** `iommufd_test_memory_limit` (SET_TEMP_MEMORY_LIMIT); only validated. */
  memoryLimit: number
  /** Index of the IOMMU unit mock devices are created behind. */
  readonly mockUnit: number
}

/** `struct iommufd_mmap`: an MMIO range a driver offers through mmap on the iommufd fd. */
export interface IommufdMmap {
  /** The object that owns it (a vIOMMU): mapped, it cannot be destroyed. */
  readonly owner: IommufdObject
  /** First physical frame. */
  readonly pfn: number
  readonly length: number
  /** The mmap offset user space passes (`vm_pgoff << PAGE_SHIFT`). */
  readonly offset: bigint
}

/** `struct iommufd_ctx`. */
export class IommufdCtx {
  readonly machine: Machine
  readonly objects: ObjectTable
  /** `ictx->groups`: iommufd's per-group state (`struct iommufd_group`). */
  readonly groups: Map<IommuGroup, unknown> = new Map()
  accountMode: AccountMode
  /** `ictx->vfio_ioas`: the IOAS of the VFIO compat ioctls. */
  vfioIoas: { readonly id: number } | null = null
  /** Test command state, or null when the test command is not available. */
  readonly test: TestState | null
  /** References that keep the context alive besides its fd (bound devices, accesses). */
  refs = 0
  /** The fd was closed; the context goes when the last reference does. */
  fdClosed = false
  /** Torn down. */
  released = false

  constructor(machine: Machine, options: { vfio: boolean; test: TestState | null }) {
    this.machine = machine
    this.objects = new ObjectTable(machine.faults)
    // /dev/vfio/vfio defaults to VFIO's per-mm accounting.
    this.accountMode = options.vfio ? AccountMode.MM : AccountMode.USER
    this.test = options.test
  }

  /** Typed lookup (`iommufd_get_object` + `container_of`). @throws ENOENT */
  get<T>(id: number, type: ObjType): T {
    return this.objects.get(id, type) as T
  }

  /** `iommufd_ctx_get`: a bound device or access keeps the context alive. */
  refGet(): void {
    this.refs++
  }

  /** `iommufd_ctx_put`: the last reference after the fd was closed releases the context. */
  refPut(): void {
    this.refs--
    if (this.refs === 0 && this.fdClosed) this.release()
  }

  /** `iommufd_fops_release`: destroy every object, unpinning everything. */
  release(): void {
    if (this.released) return
    this.released = true
    this.objects.destroyAll()
    // Tombstones left by force-destroyed vDEVICEs go with the table.
    this.objects.clear()
  }

  /** `ictx->mt_mmap`: mmap offsets drivers registered, sorted by offset. */
  readonly mmaps: IommufdMmap[] = []

  /**
   * `_iommufd_alloc_mmap`: find the lowest free offset range of `length` bytes from
   * PAGE_SIZE on (the first page is skipped so that 0 is never an answer).
   *
   * @throws EINVAL - length 0 or not page aligned; ENOMEM (injected); ENOSPC
   */
  allocMmap(owner: IommufdObject, pfn: number, length: number): bigint {
    if (!Number.isSafeInteger(length) || length <= 0 || length % PAGE_SIZE !== 0) {
      throw new IommuError('EINVAL', `mmap length ${length}`)
    }
    if (this.machine.faults.shouldFail('iommufd:mmap')) throw new IommuError('ENOMEM', 'immap')
    let start = BigInt(PAGE_SIZE)
    let i = 0
    for (; i < this.mmaps.length; i++) {
      const m = this.mmaps[i] as IommufdMmap
      if (start + BigInt(length) <= m.offset) break
      start = m.offset + BigInt(m.length)
    }
    if (start + BigInt(length) - 1n > 0xffff_ffff_ffff_ffffn) {
      throw new IommuError('ENOSPC', 'no mmap offset left')
    }
    this.mmaps.splice(i, 0, { owner, pfn, length, offset: start })
    return start
  }

  /** `_iommufd_destroy_mmap`. */
  destroyMmap(owner: IommufdObject, offset: bigint): void {
    const i = this.mmaps.findIndex((m) => m.offset === offset)
    if (i < 0 || this.mmaps[i]?.owner !== owner) throw new Error('iommufd_destroy_mmap: bad offset')
    this.mmaps.splice(i, 1)
  }

  /** `mtree_load`: the region containing byte `offset`, if any. */
  findMmap(offset: bigint): IommufdMmap | undefined {
    return this.mmaps.find((m) => m.offset <= offset && offset < m.offset + BigInt(m.length))
  }
}

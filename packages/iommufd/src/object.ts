/**
 * The object table of an iommufd context (`iommufd_ctx->objects`): IDs lowest-free from 1,
 * two-phase creation (reserve, then finalize or abort), `users` reference counts and the
 * DESTROY rule (reference iommufd-uapi.md §1.1–1.2).
 *
 * @module
 */

import { type FaultInjector, IommuError } from '@iommu/core'

/** `enum iommufd_object_type` (kernel-internal numbering, not uAPI). */
export const ObjType = {
  ANY: 0,
  DEVICE: 1,
  HWPT_PAGING: 2,
  HWPT_NESTED: 3,
  IOAS: 4,
  ACCESS: 5,
  FAULT: 6,
  VIOMMU: 7,
  VDEVICE: 8,
  VEVENTQ: 9,
  HW_QUEUE: 10,
  SELFTEST: 11,
} as const
/** One of {@link ObjType}. */
export type ObjType = (typeof ObjType)[keyof typeof ObjType]

/** `struct iommufd_object`: the common part of every object. */
export abstract class IommufdObject {
  abstract readonly type: ObjType
  /** The ID user space sees; 0 until reserved. */
  id = 0
  /**
   * `users`: 1 for the table's own reference, plus one per dependent (HWPT on IOAS,
   * attachment, binding driver, ...). DESTROY needs it to be exactly 1.
   */
  users = 1

  /** Release what the object holds (the type's `destroy` op). */
  abstract destroy(): void

  /** Undo a creation that was never finalized (`abort` op); `destroy` by default. */
  abort(): void {
    this.destroy()
  }
}

/** An ID that is reserved but not yet published (the kernel's `XA_ZERO_ENTRY`). */
const RESERVED = 'reserved'

/** The ID → object table (`ictx->objects`, an ALLOC1 xarray limited to 31 bits). */
export class ObjectTable {
  readonly #slots: (IommufdObject | typeof RESERVED | undefined)[] = [undefined]
  readonly #faults: FaultInjector

  constructor(faults: FaultInjector) {
    this.#faults = faults
  }

  /**
   * Reserve the lowest free ID for `obj` (`_iommufd_object_alloc`); lookups do not see it
   * until {@link finalize}.
   *
   * @throws ENOMEM - allocation failure (or injected); EBUSY - no ID left below 2^31
   */
  alloc<T extends IommufdObject>(obj: T): T {
    if (this.#faults.shouldFail('iommufd:object')) throw new IommuError('ENOMEM', 'object')
    let id = 1
    while (id < this.#slots.length && this.#slots[id] !== undefined) id++
    if (id > 0x7fff_ffff) throw new IommuError('EBUSY', 'no free object ID')
    this.#slots[id] = RESERVED
    obj.id = id
    return obj
  }

  /** Publish a reserved object (`iommufd_object_finalize`). */
  finalize(obj: IommufdObject): void {
    if (this.#slots[obj.id] !== RESERVED) throw new Error(`object ${obj.id} is not reserved`)
    this.#slots[obj.id] = obj
  }

  /** Release a reserved ID without destroying (`iommufd_object_abort`). */
  abort(obj: IommufdObject): void {
    if (this.#slots[obj.id] !== RESERVED) throw new Error(`object ${obj.id} is not reserved`)
    this.#release(obj.id)
  }

  /** `iommufd_object_abort_and_destroy`. */
  abortAndDestroy(obj: IommufdObject): void {
    obj.abort()
    this.abort(obj)
  }

  #release(id: number): void {
    this.#slots[id] = undefined
    while (this.#slots.length > 1 && this.#slots[this.#slots.length - 1] === undefined) {
      this.#slots.pop()
    }
  }

  /**
   * Look an object up (`iommufd_get_object`). A reserved, missing or wrong-typed ID is
   * ENOENT.
   */
  get(id: number, type: ObjType): IommufdObject {
    if (this.#faults.shouldFail('iommufd:get_object')) {
      throw new IommuError('ENOENT', 'injected lookup failure')
    }
    const o = this.#slots[id]
    if (o === undefined || o === RESERVED || (type !== ObjType.ANY && o.type !== type)) {
      throw new IommuError(
        'ENOENT',
        `no object ${id}${type === ObjType.ANY ? '' : ` of type ${type}`}`,
      )
    }
    return o
  }

  /**
   * IOMMU_DESTROY (`iommufd_object_remove` without a caller reference): only an object
   * nothing else references can go.
   *
   * @throws ENOENT - no such (published) object; EBUSY - `users != 1`
   */
  destroy(id: number): void {
    const o = this.#slots[id]
    if (o === undefined || o === RESERVED) throw new IommuError('ENOENT', `no object ${id}`)
    if (o.users !== 1) throw new IommuError('EBUSY', `object ${id} has ${o.users - 1} users`)
    this.#remove(o)
  }

  #remove(o: IommufdObject, tombstone = false): void {
    o.users = 0
    // A tombstone keeps the ID reserved (ENOENT, never reused) until the fd closes.
    if (tombstone) this.#slots[o.id] = RESERVED
    else this.#release(o.id)
    o.destroy()
  }

  /**
   * Destroy an object the kernel force-removes while user space still has its ID
   * (`iommufd_object_tombstone_user`): the ID stays reserved until the context goes.
   * The caller holds a reference that is dropped here.
   */
  tombstoneUser(obj: IommufdObject): void {
    obj.users--
    if (obj.users !== 1 || this.#slots[obj.id] !== obj) {
      throw new Error(`iommufd_object_tombstone_user: object ${obj.id} still has users`)
    }
    this.#remove(obj, true)
  }

  /**
   * Take a reference on a published object (`iommufd_try_inc_users`).
   *
   * @returns false when the object is not (or no longer) in the table
   */
  tryIncUsers(obj: IommufdObject): boolean {
    if (this.#slots[obj.id] !== obj) return false
    obj.users++
    return true
  }

  /** Forget every ID, tombstones included (`xa_destroy` at release). */
  clear(): void {
    this.#slots.length = 1
  }

  /**
   * Drop the caller's reference and destroy the object if only the table holds it now
   * (`iommufd_object_put_and_try_destroy`).
   *
   * @returns true when the object was destroyed
   */
  putAndTryDestroy(obj: IommufdObject): boolean {
    obj.users--
    if (obj.users !== 1 || this.#slots[obj.id] !== obj) return false
    this.#remove(obj)
    return true
  }

  /**
   * Destroy an object the kernel holds a reference on (`iommufd_object_destroy_user`):
   * the binding driver or access owner going away. It is a caller bug if something else
   * still uses it.
   */
  destroyUser(obj: IommufdObject): void {
    if (!this.putAndTryDestroy(obj)) {
      throw new Error(`iommufd_object_destroy_user: object ${obj.id} still has users`)
    }
  }

  /** True when no ID is in use. */
  get empty(): boolean {
    return this.#slots.length === 1
  }

  /** Published objects in ID order. */
  *objects(): Iterable<IommufdObject> {
    for (const o of this.#slots) if (o !== undefined && o !== RESERVED) yield o
  }

  /**
   * Tear everything down as closing the fd does (`iommufd_fops_release`): destroy every
   * object with `users == 1`, leaf first, until the table is empty.
   */
  destroyAll(): void {
    for (;;) {
      let destroyed = 0
      let any = false
      for (const o of [...this.objects()]) {
        any = true
        if (o.users !== 1 || this.#slots[o.id] !== o) continue
        this.#remove(o)
        destroyed++
      }
      if (!any) return
      if (destroyed === 0) throw new Error('iommufd release: objects reference each other')
    }
  }
}

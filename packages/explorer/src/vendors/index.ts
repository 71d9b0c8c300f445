/**
 * The vendors the explorer offers. Adding one is a file in this folder and a line here.
 *
 * @module
 */

import { amdVendor } from './amd.ts'
import { intelVendor } from './intel.ts'
import { mockVendor } from './mock.ts'
import { smmuv3Vendor } from './smmuv3.ts'
import type { VendorDescriptor } from './types.ts'

/** Every vendor, in the order the machine builder lists them. */
export const VENDORS: readonly VendorDescriptor[] = [
  amdVendor,
  intelVendor,
  smmuv3Vendor,
  mockVendor,
]

/** The vendor with this ID. @throws Error for an unknown ID */
export function vendorById(id: string): VendorDescriptor {
  const v = VENDORS.find((x) => x.id === id)
  if (v === undefined)
    throw new Error(`unknown vendor '${id}' (have ${VENDORS.map((x) => x.id).join(', ')})`)
  return v
}

export type * from './types.ts'

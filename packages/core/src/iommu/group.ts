/**
 * IOMMU groups (`struct iommu_group`): the smallest sets of devices the IOMMU can isolate
 * from each other. A group has one current RID domain shared by all its devices, a
 * default and a blocking domain, a PASID array and a DMA owner.
 *
 * @module
 */

import type { IommuDomain } from '../domain.ts'
import type { PciDevice } from '../machine/pci.ts'

/** A device's membership of its group (`struct group_device`). */
export interface GroupDevice {
  readonly dev: PciDevice
  /** Parked on the blocking domain for a PCI reset (`pci_dev_reset_iommu_prepare`). */
  blocked: boolean
  /** Nesting depth of reset preparation. */
  resetDepth: number
}

/**
 * The handle a caller attaches with (`struct iommu_attach_handle`); iommufd extends it.
 * The core stores the attached domain in it.
 */
export interface AttachHandle {
  domain: IommuDomain | null
}

/** An entry of the PASID array: the domain, and the caller's handle if it gave one. */
export interface PasidEntry {
  readonly domain: IommuDomain
  readonly handle: AttachHandle | null
}

let nextGroupId = 0

/** An IOMMU group. Its fields are managed by the IOMMU core. */
export class IommuGroup {
  /** Group number, unique in the process (like /sys/kernel/iommu_groups/N). */
  readonly id: number = nextGroupId++
  /** Optional name set by the driver. */
  name: string | null = null
  /** Member devices in probe order. */
  readonly devices: GroupDevice[] = []
  /** The current RID domain of every device in the group. */
  domain: IommuDomain | null = null
  /** The domain the kernel DMA API uses. */
  defaultDomain: IommuDomain | null = null
  /** The domain that blocks all DMA (detach target while owned). */
  blockingDomain: IommuDomain | null = null
  /**
   * PASID → attachment. A value of `null` is a reservation: visible to the core's
   * insertion checks, invisible as an attachment.
   */
  readonly pasidArray: Map<number, PasidEntry | null> = new Map()
  /** The DMA owner cookie (VFIO/iommufd), or null for the kernel DMA API. */
  owner: unknown = null
  /** Number of claims of the owner (DMA API users when there is no owner). */
  ownerCnt = 0
  /** Devices of the group in PCI reset recovery. */
  recoveryCnt = 0
  /** Driver-private data (`iommu_group_set_iommudata`). */
  iommuData: unknown = null

  /** The first device of the group (`iommu_group_first_dev`). */
  get firstDev(): PciDevice {
    const d = this.devices[0]
    if (d === undefined) throw new Error(`iommu group ${this.id} has no devices`)
    return d.dev
  }

  /** The domain attached to `pasid`, or null. */
  pasidDomain(pasid: number): IommuDomain | null {
    return this.pasidArray.get(pasid)?.domain ?? null
  }

  /** True when some PASID (including a reservation) is in the array. */
  get hasPasidEntries(): boolean {
    return this.pasidArray.size > 0
  }
}

/**
 * PCI functions of the simulated machine: identity (segment/bus/devfn, RID, StreamID),
 * PASID/ATS/PRI capabilities, the IOMMU unit they sit behind, and their DMA engine.
 *
 * @module
 */

import type { IommuResvRegion } from '../domain.ts'
import type { IommuUnit } from '../driver.ts'
import type { IommuGroup } from '../iommu/group.ts'
import type { IommuFaultParam } from '../iommu/iopf.ts'
import { DmaEngine } from './dma.ts'
import type { PhysicalMemory } from './memory.ts'

/** How a device is described when it is added to a machine. */
export interface PciDeviceOptions {
  /** `'SSSS:BB:DD.F'` or `'BB:DD.F'`; a free slot on bus 1 by default. */
  readonly bdf?: string
  /** Display name; the BDF by default. */
  readonly name?: string
  /** Index of the IOMMU unit the device sits behind (default 0); null for none. */
  readonly iommu?: number | null
  /** Stream ID for SMMUv3-style IOMMUs; the RID by default. */
  readonly streamId?: number
  /** PASID capability width in bits (0 = no PASID capability; at most 20). */
  readonly pasidBits?: number
  /** Address Translation Services capability. */
  readonly ats?: boolean
  /** Page Request Interface capability. */
  readonly pri?: boolean
  /**
   * Whether the device's path through its IOMMU supports dirty tracking (the selftest
   * mock's `MOCK_FLAGS_DEVICE_NO_DIRTY` is `false` here). Default true.
   */
  readonly dirtyTracking?: boolean
  /** Marked untrusted (external-facing port): forces a DMA default domain. */
  readonly untrusted?: boolean
  /**
   * Devices with the same label cannot be isolated from each other (no ACS, or behind a
   * PCIe-to-PCI bridge) and end up in one IOMMU group.
   */
  readonly isolationGroup?: string
  /** Reserved regions firmware declares for the device (RMRR, IVMD, IORT RMR). */
  readonly resvRegions?: readonly IommuResvRegion[]
  /** Driver-specific extras (e.g. the selftest mock's device flags). */
  readonly data?: Readonly<Record<string, unknown>>
}

/** The core's per-device IOMMU state (`struct dev_iommu` plus `dev->iommu_group`). */
export interface DevIommu {
  /** The unit serving the device (returned by `probeDevice`). */
  unit: IommuUnit
  /** The device's group. */
  group: IommuGroup | null
  /** PASIDs the device can use: min(PCI PASID width, unit's max). 0 = none. */
  maxPasids: number
  /** The default-domain attach is deferred until first use. */
  attachDeferred: boolean
  /** The device has IOMMU_RESV_DIRECT regions that must stay 1:1. */
  requireDirect: boolean
  /** Driver-private per-device data (`dev_iommu_priv`). */
  priv: unknown
  /** The device's IOPF state while it is on a driver's `IopfQueue` (`fault_param`). */
  faultParam?: IommuFaultParam | null
}

/** Parse a BDF string into segment/bus/device/function. */
export function parseBdf(bdf: string): {
  segment: number
  bus: number
  device: number
  fn: number
} {
  const m = /^(?:([0-9a-fA-F]{1,4}):)?([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})\.([0-7])$/.exec(bdf)
  if (m === null) throw new RangeError(`bad BDF '${bdf}'`)
  const device = Number.parseInt(m[3] as string, 16)
  if (device > 31) throw new RangeError(`bad BDF '${bdf}': device > 0x1f`)
  return {
    segment: m[1] === undefined ? 0 : Number.parseInt(m[1], 16),
    bus: Number.parseInt(m[2] as string, 16),
    device,
    fn: Number.parseInt(m[4] as string, 10),
  }
}

/** A PCI function of the machine. */
export class PciDevice {
  /** Display name. */
  readonly name: string
  /** `SSSS:BB:DD.F`. */
  readonly bdf: string
  readonly segment: number
  readonly bus: number
  /** device << 3 | function. */
  readonly devfn: number
  /** Requester ID: bus << 8 | devfn. */
  readonly rid: number
  /** Stream ID seen by an SMMUv3. */
  readonly streamId: number
  /** PASID capability width (0 = none). */
  readonly pasidBits: number
  readonly ats: boolean
  readonly pri: boolean
  /** Whether the IOMMU path of this device supports dirty tracking. */
  readonly dirtyTracking: boolean
  readonly untrusted: boolean
  /** Devices sharing this label share an IOMMU group. */
  readonly isolationGroup: string | null
  /** Firmware-declared reserved regions. */
  readonly resvRegions: readonly IommuResvRegion[]
  /** Driver-specific extras. */
  readonly data: Readonly<Record<string, unknown>>
  /** The unit the device sits behind (placement), or null. */
  readonly unit: IommuUnit | null
  /** The device's DMA engine: all its memory accesses. */
  readonly dma: DmaEngine
  /** Set by the IOMMU core at probe; null when the device has no IOMMU. */
  iommu: DevIommu | null = null

  constructor(memory: PhysicalMemory, unit: IommuUnit | null, bdf: string, o: PciDeviceOptions) {
    const p = parseBdf(bdf)
    if (o.pasidBits !== undefined && (o.pasidBits < 0 || o.pasidBits > 20)) {
      throw new RangeError(`PASID width ${o.pasidBits} outside 0..20`)
    }
    this.segment = p.segment
    this.bus = p.bus
    this.devfn = (p.device << 3) | p.fn
    this.rid = (p.bus << 8) | this.devfn
    this.bdf = `${hex(p.segment, 4)}:${hex(p.bus, 2)}:${hex(p.device, 2)}.${p.fn}`
    this.name = o.name ?? this.bdf
    this.streamId = o.streamId ?? this.rid
    this.pasidBits = o.pasidBits ?? 0
    this.ats = o.ats ?? false
    this.pri = o.pri ?? false
    this.dirtyTracking = o.dirtyTracking ?? true
    this.untrusted = o.untrusted ?? false
    this.isolationGroup = o.isolationGroup ?? null
    this.resvRegions = o.resvRegions ?? []
    this.data = o.data ?? {}
    this.unit = unit
    this.dma = new DmaEngine(memory, unit, this.rid, this.streamId)
  }

  /** Number of PASIDs of the PCI capability (`pci_max_pasids`), 0 without one. */
  get pciMaxPasids(): number {
    return this.pasidBits === 0 ? 0 : 2 ** this.pasidBits
  }

  /** The device's IOMMU group, if probed. */
  get group(): IommuGroup | null {
    return this.iommu?.group ?? null
  }
}

function hex(v: number, width: number): string {
  return v.toString(16).padStart(width, '0')
}

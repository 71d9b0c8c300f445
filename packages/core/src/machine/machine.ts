/**
 * The simulated machine: RAM, IOMMU units built by their drivers, PCI devices behind
 * them, processes, and the IOMMU core that ties devices to domains.
 *
 * @module
 */

import { DirtyHazardLog, type DirtyRecords } from '../dirty-hazards.ts'
import { bindUnit, type Driver, DriverRegistry, type IommuUnit } from '../driver.ts'
import { IommuError } from '../errno.ts'
import { IommuCore } from '../iommu/core.ts'
import { FaultInjector } from './fault-inject.ts'
import { PhysicalMemory, type StorageSource } from './memory.ts'
import { PciDevice, type PciDeviceOptions } from './pci.ts'
import { Process, type ProcessOptions } from './process.ts'

/** One IOMMU unit to build: its driver and the unit's hardware configuration. */
export interface IommuSpec {
  readonly driver: Driver
  /** Passed to the driver's `createUnit` as `ctx.config`. */
  readonly config?: unknown
}

/** Options of {@link createMachine}. */
export interface MachineOptions {
  /** RAM size in bytes (default 1 TiB of address space; only touched frames cost). */
  readonly memorySize?: number
  /** IOMMU units, in order; each entry's driver is registered once. */
  readonly iommus?: readonly (Driver | IommuSpec)[]
  /** `iommu.passthrough` / `iommu.strict`: the default domain type (default DMA). */
  readonly defaultDomainType?: number
  /** Fault injection shared by every allocation point of the machine. */
  readonly faults?: FaultInjector
  /**
   * How dirty reads record dirty IOPTEs: `'kernel'` (default) exactly as Linux 7.2, with
   * its losses and its writes past the user's bitmap; `'ideal'` each IOPTE ∩ the query,
   * contiguous leaves whole, nothing past the bitmap, EFAULT before anything is cleaned
   * when the bitmap cannot be pinned. See `DirtyHazardKind`.
   */
  readonly dirtyRecords?: DirtyRecords
  /**
   * Where RAM's bulk data buffers come from (see `StorageSource`): e.g. buffers a worker
   * thread has faulted in ahead. Changes no result, only where the host's page faults land.
   */
  readonly storage?: StorageSource
}

/** A simulated machine. Build one with {@link createMachine}. */
export class Machine {
  /** Physical memory and the frame allocator. */
  readonly memory: PhysicalMemory
  /** Fail-nth fault injection for every allocation point on this machine. */
  readonly faults: FaultInjector
  /** The drivers registered with this machine. */
  readonly registry: DriverRegistry = new DriverRegistry()
  /** The IOMMU core. */
  readonly iommu: IommuCore
  /** IOMMU units, by index. */
  readonly units: IommuUnit[] = []
  /** PCI devices, in the order they were added. */
  readonly devices: PciDevice[] = []
  /**
   * How dirty reads record ({@link MachineOptions.dirtyRecords}); may be changed between
   * reads.
   */
  dirtyRecords: DirtyRecords
  /** The dirty-tracking hazard detector: every read where the kernel's result differs from the ideal. */
  readonly dirtyHazards: DirtyHazardLog = new DirtyHazardLog()
  #nextSlot = 0

  constructor(options: MachineOptions = {}) {
    this.faults = options.faults ?? new FaultInjector()
    this.dirtyRecords = options.dirtyRecords ?? 'kernel'
    this.memory = new PhysicalMemory({
      ...(options.memorySize === undefined ? {} : { size: options.memorySize }),
      faults: this.faults,
      ...(options.storage === undefined ? {} : { storage: options.storage }),
    })
    this.iommu = new IommuCore(
      options.defaultDomainType === undefined
        ? {}
        : { defaultDomainType: options.defaultDomainType },
    )
    for (const spec of options.iommus ?? []) this.addIommu(spec)
  }

  /**
   * Register the driver (if not yet), build one more unit of it with its `createUnit`,
   * and bind the unit to the driver: the returned unit's `driver` is `driver` itself
   * (the machine records which driver created each unit; see {@link IommuUnit}).
   *
   * @throws EINVAL - not a valid driver, or `createUnit` returned something that cannot be
   *   bound (frozen, another driver's, or a unit already in the machine); EEXIST - another
   *   driver has the same name
   */
  addIommu(spec: Driver | IommuSpec): IommuUnit {
    const { driver, config } = 'kind' in spec ? { driver: spec, config: undefined } : spec
    this.registry.register(driver)
    const hw = driver.createUnit({ machine: this, index: this.units.length, config })
    if (this.units.includes(hw as IommuUnit)) {
      throw new IommuError('EINVAL', `${driver.name}: createUnit returned an existing unit`)
    }
    const unit = bindUnit(hw, driver)
    this.units.push(unit)
    return unit
  }

  /**
   * Add a PCI function behind an IOMMU unit and probe it onto the unit's driver (the
   * bus notifier's `iommu_probe_device`). If the probe fails the device is not added.
   *
   * @throws RangeError - bad BDF or unit index; the driver's probe errors
   */
  addPciDevice(options: PciDeviceOptions = {}): PciDevice {
    const index = options.iommu === undefined ? 0 : options.iommu
    let unit: IommuUnit | null = null
    if (index !== null) {
      unit = this.units[index] ?? null
      if (unit === null) throw new RangeError(`no IOMMU unit ${index}`)
    }
    const bdf = options.bdf ?? this.#freeBdf()
    const dev = new PciDevice(this.memory, unit, bdf, options)
    if (this.devices.some((d) => d.bdf === dev.bdf)) throw new RangeError(`BDF ${dev.bdf} in use`)
    if (unit !== null) this.iommu.probeDevice(dev)
    this.devices.push(dev)
    return dev
  }

  /** Remove a device (hot-unplug): release it from the IOMMU core. */
  removePciDevice(dev: PciDevice): void {
    const i = this.devices.indexOf(dev)
    if (i < 0) return
    this.iommu.releaseDevice(dev)
    this.devices.splice(i, 1)
  }

  /** Start a process with its own address space. */
  createProcess(options: ProcessOptions = {}): Process {
    return new Process(this.memory, options)
  }

  #freeBdf(): string {
    for (;;) {
      const slot = this.#nextSlot++
      const bus = 1 + Math.floor(slot / 32)
      const bdf = `0000:${bus.toString(16).padStart(2, '0')}:${(slot % 32).toString(16).padStart(2, '0')}.0`
      if (!this.devices.some((d) => d.bdf === bdf)) return bdf
    }
  }
}

/**
 * Build a machine.
 *
 * @example
 * ```ts
 * const m = createMachine({ iommus: [mockIommu()] })
 * const dev = m.addPciDevice({ pasidBits: 20 })
 * ```
 */
export function createMachine(options: MachineOptions = {}): Machine {
  return new Machine(options)
}

/**
 * @iommu/core — the contracts of the Linux IOMMU model (domains, ops, capabilities,
 * errno), the simulated machine (memory, processes, PCI devices, DMA) and the IOMMU core.
 *
 * @module
 */

export {
  DomainFeature,
  DomainType,
  domainTypeName,
  HwInfoType,
  HwptAllocFlags,
  HwptDataType,
  IOMMU_DIRTY_NO_CLEAR,
  IOMMU_FIRST_GLOBAL_PASID,
  IOMMU_NO_PASID,
  IOMMU_PASID_INVALID,
  IommuCap,
  PAGE_SHIFT,
  PAGE_SIZE,
  Prot,
  ResvType,
} from './constants.ts'
export {
  copyStructFromUser,
  copyStructFromUserArray,
  type DirtyOps,
  type DomainInit,
  type DomainOps,
  type Geometry,
  IommuDomain,
  type IommuResvRegion,
  type UserData,
  type UserDataArray,
} from './domain.ts'
export {
  type DomainOpsFor,
  DRIVER_API_VERSION,
  type Driver,
  type DriverCapabilities,
  DriverRegistry,
  type DriverSpec,
  defineDriver,
  type HwInfo,
  type IommufdViommu,
  type IommuOps,
  type IommuOpsFor,
  type IommuUnit,
  type IopfFault,
  type NestingOps,
  type PageResponse,
  type UnitContext,
  type ViommuOps,
  validateDriver,
} from './driver.ts'
export {
  ERRNO,
  type Errno,
  fail,
  IommuError,
  type IommuErrorOptions,
  isIommuError,
  toIommuError,
} from './errno.ts'
export {
  type DirtyBitmapSink,
  type FrameReleaser,
  GATHER_UNIT,
  GATHER_UNIT_SHIFT,
  IommuDirtyBitmap,
  IotlbGather,
} from './gather.ts'
export { IommuCore, type IommuCoreOptions } from './iommu/core.ts'
export { type AttachHandle, type GroupDevice, IommuGroup, type PasidEntry } from './iommu/group.ts'
export {
  DmaEngine,
  DmaFault,
  type DmaFaultReason,
  type DmaOptions,
  type DmaStats,
  DmaTransaction,
} from './machine/dma.ts'
export { FaultInjector } from './machine/fault-inject.ts'
export { createMachine, type IommuSpec, Machine, type MachineOptions } from './machine/machine.ts'
export {
  FRAME_SHIFT,
  FRAME_SIZE,
  FramePurpose,
  type FrameStats,
  isZero,
  PhysicalMemory,
  type PhysicalMemoryOptions,
  PIN_BIAS,
} from './machine/memory.ts'
export {
  type DevIommu,
  PciDevice,
  type PciDeviceOptions,
  parseBdf,
} from './machine/pci.ts'
export {
  Memfd,
  Mm,
  type MmapOptions,
  PROT_READ,
  PROT_WRITE,
  Process,
  type ProcessOptions,
  UserStruct,
} from './machine/process.ts'

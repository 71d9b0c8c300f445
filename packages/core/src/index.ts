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
  DIRTY_HAZARD_KINDS,
  DirtyHazard,
  type DirtyHazardKind,
  DirtyHazardLog,
  DirtyHazardTracker,
  type DirtyReadInfo,
  type DirtyRecords,
  HAZARD_UNIT_SHIFT,
  INHERENT_DIRTY_HAZARDS,
  IovaRangeList,
  type IovaSpan,
} from './dirty-hazards.ts'
export {
  copyStructFromFullUserArray,
  copyStructFromUser,
  copyStructFromUserArray,
  copyStructToUser,
  type DirtyOps,
  type DomainInit,
  type DomainOps,
  type Geometry,
  IommuDomain,
  type IommuResvRegion,
  MAP_SMALL,
  SYNC_MAP_NOOP,
  type UserData,
  type UserDataArray,
} from './domain.ts'
export {
  type DomainAllocNestedOp,
  type DomainOpsFor,
  DRIVER_API_VERSION,
  type Driver,
  type DriverCapabilities,
  DriverRegistry,
  type DriverSpec,
  defineDriver,
  type HwInfo,
  type IommuHardware,
  type IommuOps,
  type IommuOpsFor,
  type IommuUnit,
  type NestingOps,
  type UnitContext,
  type ViommuAllocOps,
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
  type IommuDirtyBitmapOptions,
  IotlbGather,
} from './gather.ts'
export { IommuCore, type IommuCoreOptions } from './iommu/core.ts'
export { type AttachHandle, type GroupDevice, IommuGroup, type PasidEntry } from './iommu/group.ts'
export {
  IOMMU_FAULT_PAGE_REQ,
  IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE,
  IOMMU_FAULT_PAGE_REQUEST_PASID_VALID,
  IOMMU_FAULT_PAGE_RESPONSE_NEEDS_PASID,
  IOMMU_FAULT_PERM_EXEC,
  IOMMU_FAULT_PERM_PRIV,
  IOMMU_FAULT_PERM_READ,
  IOMMU_FAULT_PERM_WRITE,
  type IommuFault,
  type IommuFaultPageRequest,
  IommuFaultParam,
  IommuPageResponseCode,
  type IopfFault,
  IopfGroup,
  IopfQueue,
  iopfFault,
  iopfFreeGroup,
  iopfGroupDequeue,
  iopfGroupResponse,
  type PageResponse,
} from './iommu/iopf.ts'
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
  type FrameMetadataBytes,
  FramePurpose,
  type FrameStats,
  isZero,
  PhysicalMemory,
  type PhysicalMemoryOptions,
  PIN_BIAS,
  type StorageSource,
} from './machine/memory.ts'
export {
  type DevIommu,
  PciDevice,
  type PciDeviceOptions,
  parseBdf,
} from './machine/pci.ts'
export { PfnArray } from './machine/pfn-array.ts'
export {
  MAP_PRIVATE,
  MAP_SHARED,
  Memfd,
  Mm,
  type MmapOptions,
  PROT_EXEC,
  PROT_READ,
  PROT_WRITE,
  Process,
  type ProcessOptions,
  UserStruct,
  type VmOps,
} from './machine/process.ts'
export {
  type DriverDataStruct,
  defineUserStruct,
  type UserField,
  type UserFieldType,
  type UserStructValue,
} from './user-struct.ts'
export {
  type HwQueueCoreHooks,
  type IommufdHwQueue,
  type IommufdVdevice,
  type IommufdViommu,
  iommufdHwQueueDepend,
  iommufdHwQueueUndepend,
  iommufdVdeviceToDevice,
  iommufdViommuAllocMmap,
  iommufdViommuDestroyMmap,
  iommufdViommuFindDev,
  iommufdViommuGetVdevId,
  iommufdViommuReportEvent,
  type ViommuCoreHooks,
  type ViommuOps,
} from './viommu.ts'

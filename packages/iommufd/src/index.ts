/**
 * @iommu/iommufd — the iommufd object model and uAPI of the Linux IOMMU model: open a
 * context for a simulated process and issue ioctls with the kernel's command numbers,
 * struct fields and errno.
 *
 * The constants and argument structs are also available, alone, from
 * `@iommu/iommufd/uapi`.
 *
 * @module
 */

export {
  IOMMUFD_ACCESS_RW_KTHREAD,
  IOMMUFD_ACCESS_RW_SLOW_PATH,
  IOMMUFD_ACCESS_RW_WRITE,
  IommufdAccess,
  type IommufdAccessOps,
} from './access.ts'
export { type Caller, type Credentials, IommufdCtx, UNPRIVILEGED } from './ctx.ts'
export { IommufdDevice } from './device.ts'
export {
  FaultFile,
  IOMMU_HWPT_PAGE_RESPONSE_SIZE,
  IOMMU_HWPT_PGFAULT_SIZE,
  IOMMUFD_VEVENT_HEADER_SIZE,
  IommufdFault,
  IommufdVeventq,
  VEVENTQ_MAX_DEPTH,
  VeventqFile,
} from './eventq.ts'
export {
  bytesBuffer,
  type FdFile,
  fdClose,
  fdGet,
  fdInstall,
  fdPoll,
  fdRead,
  fdWrite,
  POLLIN,
  POLLOUT,
  POLLRDNORM,
  type UserBuffer,
  userBuffer,
} from './fd-table.ts'
export { HwptNested, HwptPaging } from './hw-pagetable.ts'
export { IoptArea } from './io-pagetable.ts'
export { Ioas } from './ioas.ts'
export {
  type IoctlArg,
  type IoctlArgs,
  Iommufd,
  type OpenIommufdOptions,
  openIommufd,
} from './iommufd.ts'
export { IovaBitmap } from './iova-bitmap.ts'
export { IommufdObject, ObjType } from './object.ts'
export { AccountMode, IoptPages } from './pages.ts'
export {
  _IO,
  _IOMMU_TEST_CMD,
  IOMMU_DESTROY,
  IOMMU_FAULT_QUEUE_ALLOC,
  IOMMU_GET_HW_INFO,
  IOMMU_HW_CAP_DIRTY_TRACKING,
  IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED,
  IOMMU_HW_CAP_PCI_PASID_EXEC,
  IOMMU_HW_CAP_PCI_PASID_PRIV,
  IOMMU_HW_INFO_FLAG_INPUT_TYPE,
  IOMMU_HW_INFO_TYPE_DEFAULT,
  IOMMU_HW_INFO_TYPE_NONE,
  IOMMU_HW_QUEUE_ALLOC,
  IOMMU_HW_QUEUE_TYPE_DEFAULT,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_ALLOC_PASID,
  IOMMU_HWPT_DATA_NONE,
  IOMMU_HWPT_DIRTY_TRACKING_ENABLE,
  IOMMU_HWPT_FAULT_ID_VALID,
  IOMMU_HWPT_GET_DIRTY_BITMAP,
  IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR,
  IOMMU_HWPT_INVALIDATE,
  IOMMU_HWPT_SET_DIRTY_TRACKING,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_ALLOW_IOVAS,
  IOMMU_IOAS_CHANGE_PROCESS,
  IOMMU_IOAS_COPY,
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FILE,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_IOAS_UNMAP,
  IOMMU_OPTION,
  IOMMU_OPTION_HUGE_PAGES,
  IOMMU_OPTION_OP_GET,
  IOMMU_OPTION_OP_SET,
  IOMMU_OPTION_RLIMIT_MODE,
  IOMMU_PGFAULT_FLAGS_LAST_PAGE,
  IOMMU_PGFAULT_FLAGS_PASID_VALID,
  IOMMU_PGFAULT_PERM_READ,
  IOMMU_PGFAULT_PERM_WRITE,
  IOMMU_TEST_CMD,
  IOMMU_VDEVICE_ALLOC,
  IOMMU_VEVENTQ_ALLOC,
  IOMMU_VEVENTQ_FLAG_LOST_EVENTS,
  IOMMU_VEVENTQ_TYPE_DEFAULT,
  IOMMU_VFIO_IOAS,
  IOMMU_VIOMMU_ALLOC,
  IOMMU_VIOMMU_TYPE_DEFAULT,
  IOMMUFD_CMD_BASE,
  IOMMUFD_PAGE_RESP_INVALID,
  IOMMUFD_PAGE_RESP_SUCCESS,
  IOMMUFD_TYPE,
} from './uapi/constants.ts'
export { UAPI_STRUCTS, type UapiStruct } from './uapi/sizes.ts'
export type {
  iommu_destroy,
  iommu_hw_info,
  iommu_hwpt_alloc,
  iommu_hwpt_get_dirty_bitmap,
  iommu_hwpt_set_dirty_tracking,
  iommu_ioas_alloc,
  iommu_ioas_allow_iovas,
  iommu_ioas_copy,
  iommu_ioas_iova_ranges,
  iommu_ioas_map,
  iommu_ioas_map_file,
  iommu_ioas_unmap,
  iommu_iova_range,
  iommu_option,
  iommu_test_cmd,
  iommu_vdevice_alloc,
  iommu_veventq_alloc,
  iommu_viommu_alloc,
  iommufd_vevent_header,
} from './uapi/structs.ts'
export { IommufdHwQueueObj, IommufdVdeviceObj, IommufdViommuObj } from './viommu.ts'

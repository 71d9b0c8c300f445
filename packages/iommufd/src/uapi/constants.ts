/**
 * The iommufd uAPI constants with the kernel's names and values
 * (`include/uapi/linux/iommufd.h`, and `iommufd_test.h` for the test command).
 *
 * Every command is `_IO(';', nr)`: no size or direction bits, so the number is
 * `0x3b00 | nr` (reference iommufd-uapi.md §2.1, appendix A).
 *
 * @module
 */

/** `IOMMUFD_TYPE`, the ioctl type character `';'`. */
export const IOMMUFD_TYPE = 0x3b
/** `IOMMUFD_CMD_BASE`: the first command number. */
export const IOMMUFD_CMD_BASE = 0x80

/** `_IO(type, nr)`: an ioctl number without size or direction bits. */
export function _IO(type: number, nr: number): number {
  return ((type & 0xff) << 8) | (nr & 0xff)
}

export const IOMMU_DESTROY = 0x3b80
export const IOMMU_IOAS_ALLOC = 0x3b81
export const IOMMU_IOAS_ALLOW_IOVAS = 0x3b82
export const IOMMU_IOAS_COPY = 0x3b83
export const IOMMU_IOAS_IOVA_RANGES = 0x3b84
export const IOMMU_IOAS_MAP = 0x3b85
export const IOMMU_IOAS_UNMAP = 0x3b86
export const IOMMU_OPTION = 0x3b87
export const IOMMU_VFIO_IOAS = 0x3b88
export const IOMMU_HWPT_ALLOC = 0x3b89
export const IOMMU_GET_HW_INFO = 0x3b8a
export const IOMMU_HWPT_SET_DIRTY_TRACKING = 0x3b8b
export const IOMMU_HWPT_GET_DIRTY_BITMAP = 0x3b8c
export const IOMMU_HWPT_INVALIDATE = 0x3b8d
export const IOMMU_FAULT_QUEUE_ALLOC = 0x3b8e
export const IOMMU_IOAS_MAP_FILE = 0x3b8f
export const IOMMU_VIOMMU_ALLOC = 0x3b90
export const IOMMU_VDEVICE_ALLOC = 0x3b91
export const IOMMU_IOAS_CHANGE_PROCESS = 0x3b92
export const IOMMU_VEVENTQ_ALLOC = 0x3b93
export const IOMMU_HW_QUEUE_ALLOC = 0x3b94
/** `IOMMU_TEST_CMD` (`_IO(';', 0x80 + 32)`): only on a context opened in test mode. */
export const IOMMU_TEST_CMD = 0x3ba0

// enum iommufd_ioas_map_flags
export const IOMMU_IOAS_MAP_FIXED_IOVA = 1 << 0
export const IOMMU_IOAS_MAP_WRITEABLE = 1 << 1
export const IOMMU_IOAS_MAP_READABLE = 1 << 2

// enum iommufd_option, enum iommufd_option_ops
export const IOMMU_OPTION_RLIMIT_MODE = 0
export const IOMMU_OPTION_HUGE_PAGES = 1
export const IOMMU_OPTION_OP_SET = 0
export const IOMMU_OPTION_OP_GET = 1

// enum iommufd_vfio_ioas_op
export const IOMMU_VFIO_IOAS_GET = 0
export const IOMMU_VFIO_IOAS_SET = 1
export const IOMMU_VFIO_IOAS_CLEAR = 2

// enum iommufd_hwpt_alloc_flags
export const IOMMU_HWPT_ALLOC_NEST_PARENT = 1 << 0
export const IOMMU_HWPT_ALLOC_DIRTY_TRACKING = 1 << 1
export const IOMMU_HWPT_FAULT_ID_VALID = 1 << 2
export const IOMMU_HWPT_ALLOC_PASID = 1 << 3

// enum iommu_hwpt_data_type
export const IOMMU_HWPT_DATA_NONE = 0
export const IOMMU_HWPT_DATA_VTD_S1 = 1
export const IOMMU_HWPT_DATA_ARM_SMMUV3 = 2
export const IOMMU_HWPT_DATA_AMD_GUEST = 3

// enum iommu_hw_info_type
export const IOMMU_HW_INFO_TYPE_NONE = 0
export const IOMMU_HW_INFO_TYPE_DEFAULT = 0
export const IOMMU_HW_INFO_TYPE_INTEL_VTD = 1
export const IOMMU_HW_INFO_TYPE_ARM_SMMUV3 = 2
export const IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV = 3
export const IOMMU_HW_INFO_TYPE_AMD = 4

// enum iommufd_hw_capabilities, enum iommufd_hw_info_flags
export const IOMMU_HW_CAP_DIRTY_TRACKING = 1 << 0
export const IOMMU_HW_CAP_PCI_PASID_EXEC = 1 << 1
export const IOMMU_HW_CAP_PCI_PASID_PRIV = 1 << 2
export const IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED = 1 << 3
export const IOMMU_HW_INFO_FLAG_INPUT_TYPE = 1 << 0

// dirty tracking
export const IOMMU_HWPT_DIRTY_TRACKING_ENABLE = 1
export const IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR = 1

// enum iommu_hwpt_invalidate_data_type
export const IOMMU_HWPT_INVALIDATE_DATA_VTD_S1 = 0
export const IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3 = 1

// vIOMMU, vEVENTQ, HW queue types
export const IOMMU_VIOMMU_TYPE_DEFAULT = 0
export const IOMMU_VIOMMU_TYPE_ARM_SMMUV3 = 1
export const IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV = 2
export const IOMMU_VEVENTQ_TYPE_DEFAULT = 0
export const IOMMU_VEVENTQ_TYPE_ARM_SMMUV3 = 1
export const IOMMU_VEVENTQ_TYPE_TEGRA241_CMDQV = 2
export const IOMMU_VEVENTQ_FLAG_LOST_EVENTS = 1
export const IOMMU_HW_QUEUE_TYPE_DEFAULT = 0
export const IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV = 1

// ---------------------------------------------------------------- iommufd_test.h

// The IOMMU_TEST_CMD operations
export const IOMMU_TEST_OP_ADD_RESERVED = 1
export const IOMMU_TEST_OP_MOCK_DOMAIN = 2
export const IOMMU_TEST_OP_MD_CHECK_MAP = 3
export const IOMMU_TEST_OP_MD_CHECK_REFS = 4
export const IOMMU_TEST_OP_CREATE_ACCESS = 5
export const IOMMU_TEST_OP_DESTROY_ACCESS_PAGES = 6
export const IOMMU_TEST_OP_ACCESS_PAGES = 7
export const IOMMU_TEST_OP_ACCESS_RW = 8
export const IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT = 9
export const IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE = 10
export const IOMMU_TEST_OP_ACCESS_REPLACE_IOAS = 11
export const IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS = 12
export const IOMMU_TEST_OP_DIRTY = 13
export const IOMMU_TEST_OP_MD_CHECK_IOTLB = 14
export const IOMMU_TEST_OP_TRIGGER_IOPF = 15
export const IOMMU_TEST_OP_DEV_CHECK_CACHE = 16
export const IOMMU_TEST_OP_TRIGGER_VEVENT = 17
export const IOMMU_TEST_OP_PASID_ATTACH = 18
export const IOMMU_TEST_OP_PASID_REPLACE = 19
export const IOMMU_TEST_OP_PASID_DETACH = 20
export const IOMMU_TEST_OP_PASID_CHECK_HWPT = 21
export const IOMMU_TEST_OP_DMABUF_GET = 22
export const IOMMU_TEST_OP_DMABUF_REVOKE = 23

/** `_IOMMU_TEST_CMD(op)`: the selftest spelling; every op shares one ioctl number. */
export function _IOMMU_TEST_CMD(_op: number): typeof IOMMU_TEST_CMD {
  return IOMMU_TEST_CMD
}

// Flags of the test operations
export const MOCK_FLAGS_ACCESS_WRITE = 1 << 0
export const MOCK_FLAGS_ACCESS_SYZ = 1 << 16
export const MOCK_ACCESS_RW_WRITE = 1 << 0
export const MOCK_ACCESS_RW_SLOW_PATH = 1 << 2
export const MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES = 1 << 0
export const MOCK_FLAGS_DEVICE_NO_DIRTY = 1 << 0
export const MOCK_FLAGS_DEVICE_PASID = 1 << 2
/** `MOCK_DEV_CACHE_ID_MAX` / `MOCK_DEV_CACHE_NUM`. */
export const MOCK_DEV_CACHE_ID_MAX = 3
export const MOCK_DEV_CACHE_NUM = 4
/** `IOMMU_TEST_DEV_CACHE_DEFAULT`: initial value of a mock device's cache words. */
export const IOMMU_TEST_DEV_CACHE_DEFAULT = 0xbaddad
/** `IOMMU_TEST_IOTLB_DEFAULT`: the iotlb value the selftests give nested HWPTs. */
export const IOMMU_TEST_IOTLB_DEFAULT = 0xbadbeef
/** `IOMMU_HWPT_INVALIDATE_DATA_SELFTEST_INVALID`: a data type the mock rejects. */
export const IOMMU_HWPT_INVALIDATE_DATA_SELFTEST_INVALID = 0xdadbeef

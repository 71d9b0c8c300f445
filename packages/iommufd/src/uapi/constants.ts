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

// enum { IOMMUFD_CMD_* }: the command slots
export const IOMMUFD_CMD_DESTROY = IOMMUFD_CMD_BASE
export const IOMMUFD_CMD_IOAS_ALLOC = 0x81
export const IOMMUFD_CMD_IOAS_ALLOW_IOVAS = 0x82
export const IOMMUFD_CMD_IOAS_COPY = 0x83
export const IOMMUFD_CMD_IOAS_IOVA_RANGES = 0x84
export const IOMMUFD_CMD_IOAS_MAP = 0x85
export const IOMMUFD_CMD_IOAS_UNMAP = 0x86
export const IOMMUFD_CMD_OPTION = 0x87
export const IOMMUFD_CMD_VFIO_IOAS = 0x88
export const IOMMUFD_CMD_HWPT_ALLOC = 0x89
export const IOMMUFD_CMD_GET_HW_INFO = 0x8a
export const IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING = 0x8b
export const IOMMUFD_CMD_HWPT_GET_DIRTY_BITMAP = 0x8c
export const IOMMUFD_CMD_HWPT_INVALIDATE = 0x8d
export const IOMMUFD_CMD_FAULT_QUEUE_ALLOC = 0x8e
export const IOMMUFD_CMD_IOAS_MAP_FILE = 0x8f
export const IOMMUFD_CMD_VIOMMU_ALLOC = 0x90
export const IOMMUFD_CMD_VDEVICE_ALLOC = 0x91
export const IOMMUFD_CMD_IOAS_CHANGE_PROCESS = 0x92
export const IOMMUFD_CMD_VEVENTQ_ALLOC = 0x93
export const IOMMUFD_CMD_HW_QUEUE_ALLOC = 0x94

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

// enum iommu_hwpt_vtd_s1_flags
export const IOMMU_VTD_S1_SRE = 1 << 0
export const IOMMU_VTD_S1_EAFE = 1 << 1
export const IOMMU_VTD_S1_WPE = 1 << 2

// enum iommu_hwpt_data_type
export const IOMMU_HWPT_DATA_NONE = 0
export const IOMMU_HWPT_DATA_VTD_S1 = 1
export const IOMMU_HWPT_DATA_ARM_SMMUV3 = 2
export const IOMMU_HWPT_DATA_AMD_GUEST = 3

// enum iommu_hw_info_vtd_flags
export const IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17 = 1 << 0

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

// enum iommufd_hwpt_set_dirty_tracking_flags, enum iommufd_hwpt_get_dirty_bitmap_flags
export const IOMMU_HWPT_DIRTY_TRACKING_ENABLE = 1
export const IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR = 1

// enum iommu_hwpt_invalidate_data_type
export const IOMMU_HWPT_INVALIDATE_DATA_VTD_S1 = 0
export const IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3 = 1

// enum iommu_hwpt_vtd_s1_invalidate_flags
export const IOMMU_VTD_INV_FLAGS_LEAF = 1 << 0

// enum iommu_hwpt_pgfault_flags, enum iommu_hwpt_pgfault_perm
export const IOMMU_PGFAULT_FLAGS_PASID_VALID = 1 << 0
export const IOMMU_PGFAULT_FLAGS_LAST_PAGE = 1 << 1
export const IOMMU_PGFAULT_PERM_READ = 1 << 0
export const IOMMU_PGFAULT_PERM_WRITE = 1 << 1
export const IOMMU_PGFAULT_PERM_EXEC = 1 << 2
export const IOMMU_PGFAULT_PERM_PRIV = 1 << 3

// enum iommufd_page_response_code
export const IOMMUFD_PAGE_RESP_SUCCESS = 0
export const IOMMUFD_PAGE_RESP_INVALID = 1

// enum iommu_viommu_type
export const IOMMU_VIOMMU_TYPE_DEFAULT = 0
export const IOMMU_VIOMMU_TYPE_ARM_SMMUV3 = 1
export const IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV = 2

// enum iommu_veventq_flag, enum iommu_veventq_type
export const IOMMU_VEVENTQ_FLAG_LOST_EVENTS = 1 << 0
export const IOMMU_VEVENTQ_TYPE_DEFAULT = 0
export const IOMMU_VEVENTQ_TYPE_ARM_SMMUV3 = 1
export const IOMMU_VEVENTQ_TYPE_TEGRA241_CMDQV = 2

// enum iommu_hw_queue_type
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

// The `pagetable_type` of struct iommu_hwpt_selftest
export const MOCK_IOMMUPT_DEFAULT = 0
export const MOCK_IOMMUPT_HUGE = 1

// The mock domain's geometry (for MOCK_IOMMUPT_DEFAULT); plain numbers like the C enum,
// so they also fit the u64 fields that take them (`.iova = MOCK_APERTURE_START`).
export const MOCK_APERTURE_START = 1 << 24
export const MOCK_APERTURE_LAST = 2 ** 31 - 1
export const MOCK_PAGE_SIZE = 2048
export const MOCK_HUGE_PAGE_SIZE = 512 * MOCK_PAGE_SIZE

// Flags of the test operations
export const MOCK_FLAGS_ACCESS_WRITE = 1 << 0
export const MOCK_FLAGS_ACCESS_SYZ = 1 << 16
export const MOCK_ACCESS_RW_WRITE = 1 << 0
export const MOCK_ACCESS_RW_SLOW_PATH = 1 << 2
export const MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES = 1 << 0
export const MOCK_FLAGS_DEVICE_NO_DIRTY = 1 << 0
export const MOCK_FLAGS_DEVICE_PASID = 1 << 2
/** `MOCK_NESTED_DOMAIN_IOTLB_ID_MAX` / `MOCK_NESTED_DOMAIN_IOTLB_NUM`. */
export const MOCK_NESTED_DOMAIN_IOTLB_ID_MAX = 3
export const MOCK_NESTED_DOMAIN_IOTLB_NUM = 4
/** `MOCK_DEV_CACHE_ID_MAX` / `MOCK_DEV_CACHE_NUM`. */
export const MOCK_DEV_CACHE_ID_MAX = 3
export const MOCK_DEV_CACHE_NUM = 4
/** `IOMMU_TEST_PASID_RESERVED`: the PASID of the mock's special replace failure. */
export const IOMMU_TEST_PASID_RESERVED = 1024
/** `MOCK_PASID_WIDTH`: PASID bits of a `MOCK_FLAGS_DEVICE_PASID` device. */
export const MOCK_PASID_WIDTH = 20

/** `IOMMU_HW_INFO_TYPE_SELFTEST`, with `struct iommu_test_hw_info`. */
export const IOMMU_HW_INFO_TYPE_SELFTEST = 0xfeedbeef
/** `IOMMU_HW_INFO_SELFTEST_REGVAL`: the mock's `test_reg`. */
export const IOMMU_HW_INFO_SELFTEST_REGVAL = 0xdeadbeef
/** `IOMMU_HWPT_DATA_SELFTEST`, with `struct iommu_hwpt_selftest`. */
export const IOMMU_HWPT_DATA_SELFTEST = 0xdead
/** `IOMMU_TEST_IOTLB_DEFAULT`: the iotlb value the selftests give nested HWPTs. */
export const IOMMU_TEST_IOTLB_DEFAULT = 0xbadbeef
/** `IOMMU_TEST_DEV_CACHE_DEFAULT`: initial value of a mock device's cache words. */
export const IOMMU_TEST_DEV_CACHE_DEFAULT = 0xbaddad
/** `IOMMU_HWPT_INVALIDATE_DATA_SELFTEST`, with `struct iommu_hwpt_invalidate_selftest`. */
export const IOMMU_HWPT_INVALIDATE_DATA_SELFTEST = 0xdeadbeef
/** `IOMMU_HWPT_INVALIDATE_DATA_SELFTEST_INVALID`: a data type the mock rejects. */
export const IOMMU_HWPT_INVALIDATE_DATA_SELFTEST_INVALID = 0xdadbeef
/** `IOMMU_TEST_INVALIDATE_FLAG_ALL`: invalidate every IOTLB/cache entry. */
export const IOMMU_TEST_INVALIDATE_FLAG_ALL = 1 << 0
/** `IOMMU_VIOMMU_TYPE_SELFTEST`, with `struct iommu_viommu_selftest`. */
export const IOMMU_VIOMMU_TYPE_SELFTEST = 0xdeadbeef
/** `IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST`, with `struct iommu_viommu_invalidate_selftest`. */
export const IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST = 0xdeadbeef
/** `IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST_INVALID`: a data type the mock vIOMMU rejects. */
export const IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST_INVALID = 0xdadbeef
/** `IOMMU_VEVENTQ_TYPE_SELFTEST`, with `struct iommu_viommu_event_selftest`. */
export const IOMMU_VEVENTQ_TYPE_SELFTEST = 0xbeefbeef
/** `IOMMU_HW_QUEUE_TYPE_SELFTEST`. */
export const IOMMU_HW_QUEUE_TYPE_SELFTEST = 0xdeadbeef
/** `IOMMU_TEST_HW_QUEUE_MAX`: HW queues a mock vIOMMU offers. */
export const IOMMU_TEST_HW_QUEUE_MAX = 2

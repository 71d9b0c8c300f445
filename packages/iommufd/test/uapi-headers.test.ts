/**
 * The uAPI tables against the Linux 7.2 headers: every constant of
 * `include/uapi/linux/iommufd.h` and `drivers/iommu/iommufd/iommufd_test.h` with its value,
 * and every struct of both with `sizeof`, its first version's size and each field's
 * offset and size.
 *
 * The kernel source is not part of this repository, so the tables are literal. They were
 * checked against the 7.2 headers when written, by compiling a C program that includes
 * both headers and prints each constant, `sizeof` and `offsetof` (all 156 constants and
 * 44 structs agreed; the minimum sizes are the members the kernel names in `IOCTL_OP` and
 * `iommu_copy_struct_*_user`). Re-check them the same way when moving to a newer kernel.
 */
import { HwInfoType, HwptAllocFlags, HwptDataType, IOMMU_DIRTY_NO_CLEAR } from '@iommu/core'
import * as mock from '@iommu/core/testing'
import { describe, expect, it } from 'vitest'
import * as uapi from '../src/uapi/index.ts'

/** `include/uapi/linux/iommufd.h`, in header order. */
const IOMMUFD_H: readonly (readonly [string, number])[] = [
  ['IOMMUFD_TYPE', 0x3b], // ';'
  ['IOMMUFD_CMD_BASE', 0x80],
  ['IOMMUFD_CMD_DESTROY', 0x80],
  ['IOMMUFD_CMD_IOAS_ALLOC', 0x81],
  ['IOMMUFD_CMD_IOAS_ALLOW_IOVAS', 0x82],
  ['IOMMUFD_CMD_IOAS_COPY', 0x83],
  ['IOMMUFD_CMD_IOAS_IOVA_RANGES', 0x84],
  ['IOMMUFD_CMD_IOAS_MAP', 0x85],
  ['IOMMUFD_CMD_IOAS_UNMAP', 0x86],
  ['IOMMUFD_CMD_OPTION', 0x87],
  ['IOMMUFD_CMD_VFIO_IOAS', 0x88],
  ['IOMMUFD_CMD_HWPT_ALLOC', 0x89],
  ['IOMMUFD_CMD_GET_HW_INFO', 0x8a],
  ['IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING', 0x8b],
  ['IOMMUFD_CMD_HWPT_GET_DIRTY_BITMAP', 0x8c],
  ['IOMMUFD_CMD_HWPT_INVALIDATE', 0x8d],
  ['IOMMUFD_CMD_FAULT_QUEUE_ALLOC', 0x8e],
  ['IOMMUFD_CMD_IOAS_MAP_FILE', 0x8f],
  ['IOMMUFD_CMD_VIOMMU_ALLOC', 0x90],
  ['IOMMUFD_CMD_VDEVICE_ALLOC', 0x91],
  ['IOMMUFD_CMD_IOAS_CHANGE_PROCESS', 0x92],
  ['IOMMUFD_CMD_VEVENTQ_ALLOC', 0x93],
  ['IOMMUFD_CMD_HW_QUEUE_ALLOC', 0x94],
  ['IOMMU_DESTROY', 0x3b80],
  ['IOMMU_IOAS_ALLOC', 0x3b81],
  ['IOMMU_IOAS_IOVA_RANGES', 0x3b84],
  ['IOMMU_IOAS_ALLOW_IOVAS', 0x3b82],
  ['IOMMU_IOAS_MAP_FIXED_IOVA', 1],
  ['IOMMU_IOAS_MAP_WRITEABLE', 2],
  ['IOMMU_IOAS_MAP_READABLE', 4],
  ['IOMMU_IOAS_MAP', 0x3b85],
  ['IOMMU_IOAS_MAP_FILE', 0x3b8f],
  ['IOMMU_IOAS_COPY', 0x3b83],
  ['IOMMU_IOAS_UNMAP', 0x3b86],
  ['IOMMU_OPTION_RLIMIT_MODE', 0],
  ['IOMMU_OPTION_HUGE_PAGES', 1],
  ['IOMMU_OPTION_OP_SET', 0],
  ['IOMMU_OPTION_OP_GET', 1],
  ['IOMMU_OPTION', 0x3b87],
  ['IOMMU_VFIO_IOAS_GET', 0],
  ['IOMMU_VFIO_IOAS_SET', 1],
  ['IOMMU_VFIO_IOAS_CLEAR', 2],
  ['IOMMU_VFIO_IOAS', 0x3b88],
  ['IOMMU_HWPT_ALLOC_NEST_PARENT', 1],
  ['IOMMU_HWPT_ALLOC_DIRTY_TRACKING', 2],
  ['IOMMU_HWPT_FAULT_ID_VALID', 4],
  ['IOMMU_HWPT_ALLOC_PASID', 8],
  ['IOMMU_VTD_S1_SRE', 1],
  ['IOMMU_VTD_S1_EAFE', 2],
  ['IOMMU_VTD_S1_WPE', 4],
  ['IOMMU_HWPT_DATA_NONE', 0],
  ['IOMMU_HWPT_DATA_VTD_S1', 1],
  ['IOMMU_HWPT_DATA_ARM_SMMUV3', 2],
  ['IOMMU_HWPT_DATA_AMD_GUEST', 3],
  ['IOMMU_HWPT_ALLOC', 0x3b89],
  ['IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17', 1],
  ['IOMMU_HW_INFO_TYPE_NONE', 0],
  ['IOMMU_HW_INFO_TYPE_DEFAULT', 0],
  ['IOMMU_HW_INFO_TYPE_INTEL_VTD', 1],
  ['IOMMU_HW_INFO_TYPE_ARM_SMMUV3', 2],
  ['IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV', 3],
  ['IOMMU_HW_INFO_TYPE_AMD', 4],
  ['IOMMU_HW_CAP_DIRTY_TRACKING', 1],
  ['IOMMU_HW_CAP_PCI_PASID_EXEC', 2],
  ['IOMMU_HW_CAP_PCI_PASID_PRIV', 4],
  ['IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED', 8],
  ['IOMMU_HW_INFO_FLAG_INPUT_TYPE', 1],
  ['IOMMU_GET_HW_INFO', 0x3b8a],
  ['IOMMU_HWPT_DIRTY_TRACKING_ENABLE', 1],
  ['IOMMU_HWPT_SET_DIRTY_TRACKING', 0x3b8b],
  ['IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR', 1],
  ['IOMMU_HWPT_GET_DIRTY_BITMAP', 0x3b8c],
  ['IOMMU_HWPT_INVALIDATE_DATA_VTD_S1', 0],
  ['IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3', 1],
  ['IOMMU_VTD_INV_FLAGS_LEAF', 1],
  ['IOMMU_HWPT_INVALIDATE', 0x3b8d],
  ['IOMMU_PGFAULT_FLAGS_PASID_VALID', 1],
  ['IOMMU_PGFAULT_FLAGS_LAST_PAGE', 2],
  ['IOMMU_PGFAULT_PERM_READ', 1],
  ['IOMMU_PGFAULT_PERM_WRITE', 2],
  ['IOMMU_PGFAULT_PERM_EXEC', 4],
  ['IOMMU_PGFAULT_PERM_PRIV', 8],
  ['IOMMUFD_PAGE_RESP_SUCCESS', 0],
  ['IOMMUFD_PAGE_RESP_INVALID', 1],
  ['IOMMU_FAULT_QUEUE_ALLOC', 0x3b8e],
  ['IOMMU_VIOMMU_TYPE_DEFAULT', 0],
  ['IOMMU_VIOMMU_TYPE_ARM_SMMUV3', 1],
  ['IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV', 2],
  ['IOMMU_VIOMMU_ALLOC', 0x3b90],
  ['IOMMU_VDEVICE_ALLOC', 0x3b91],
  ['IOMMU_IOAS_CHANGE_PROCESS', 0x3b92],
  ['IOMMU_VEVENTQ_FLAG_LOST_EVENTS', 1],
  ['IOMMU_VEVENTQ_TYPE_DEFAULT', 0],
  ['IOMMU_VEVENTQ_TYPE_ARM_SMMUV3', 1],
  ['IOMMU_VEVENTQ_TYPE_TEGRA241_CMDQV', 2],
  ['IOMMU_VEVENTQ_ALLOC', 0x3b93],
  ['IOMMU_HW_QUEUE_TYPE_DEFAULT', 0],
  ['IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV', 1],
  ['IOMMU_HW_QUEUE_ALLOC', 0x3b94],
]

/** `drivers/iommu/iommufd/iommufd_test.h`, in header order. */
const IOMMUFD_TEST_H: readonly (readonly [string, number])[] = [
  ['IOMMU_TEST_OP_ADD_RESERVED', 1],
  ['IOMMU_TEST_OP_MOCK_DOMAIN', 2],
  ['IOMMU_TEST_OP_MD_CHECK_MAP', 3],
  ['IOMMU_TEST_OP_MD_CHECK_REFS', 4],
  ['IOMMU_TEST_OP_CREATE_ACCESS', 5],
  ['IOMMU_TEST_OP_DESTROY_ACCESS_PAGES', 6],
  ['IOMMU_TEST_OP_ACCESS_PAGES', 7],
  ['IOMMU_TEST_OP_ACCESS_RW', 8],
  ['IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT', 9],
  ['IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE', 10],
  ['IOMMU_TEST_OP_ACCESS_REPLACE_IOAS', 11],
  ['IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS', 12],
  ['IOMMU_TEST_OP_DIRTY', 13],
  ['IOMMU_TEST_OP_MD_CHECK_IOTLB', 14],
  ['IOMMU_TEST_OP_TRIGGER_IOPF', 15],
  ['IOMMU_TEST_OP_DEV_CHECK_CACHE', 16],
  ['IOMMU_TEST_OP_TRIGGER_VEVENT', 17],
  ['IOMMU_TEST_OP_PASID_ATTACH', 18],
  ['IOMMU_TEST_OP_PASID_REPLACE', 19],
  ['IOMMU_TEST_OP_PASID_DETACH', 20],
  ['IOMMU_TEST_OP_PASID_CHECK_HWPT', 21],
  ['IOMMU_TEST_OP_DMABUF_GET', 22],
  ['IOMMU_TEST_OP_DMABUF_REVOKE', 23],
  ['MOCK_IOMMUPT_DEFAULT', 0],
  ['MOCK_IOMMUPT_HUGE', 1],
  ['MOCK_APERTURE_START', 0x1000000],
  ['MOCK_APERTURE_LAST', 0x7fffffff],
  ['MOCK_PAGE_SIZE', 0x800],
  ['MOCK_HUGE_PAGE_SIZE', 0x100000],
  ['MOCK_FLAGS_ACCESS_WRITE', 1],
  ['MOCK_FLAGS_ACCESS_SYZ', 0x10000],
  ['MOCK_ACCESS_RW_WRITE', 1],
  ['MOCK_ACCESS_RW_SLOW_PATH', 4],
  ['MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES', 1],
  ['MOCK_FLAGS_DEVICE_NO_DIRTY', 1],
  ['MOCK_FLAGS_DEVICE_PASID', 4],
  ['MOCK_NESTED_DOMAIN_IOTLB_ID_MAX', 3],
  ['MOCK_NESTED_DOMAIN_IOTLB_NUM', 4],
  ['MOCK_DEV_CACHE_ID_MAX', 3],
  ['MOCK_DEV_CACHE_NUM', 4],
  ['IOMMU_TEST_PASID_RESERVED', 0x400],
  ['IOMMU_TEST_CMD', 0x3ba0],
  ['MOCK_PASID_WIDTH', 20],
  ['IOMMU_HW_INFO_TYPE_SELFTEST', 0xfeedbeef],
  ['IOMMU_HW_INFO_SELFTEST_REGVAL', 0xdeadbeef],
  ['IOMMU_HWPT_DATA_SELFTEST', 0xdead],
  ['IOMMU_TEST_IOTLB_DEFAULT', 0xbadbeef],
  ['IOMMU_TEST_DEV_CACHE_DEFAULT', 0xbaddad],
  ['IOMMU_HWPT_INVALIDATE_DATA_SELFTEST', 0xdeadbeef],
  ['IOMMU_HWPT_INVALIDATE_DATA_SELFTEST_INVALID', 0xdadbeef],
  ['IOMMU_TEST_INVALIDATE_FLAG_ALL', 1],
  ['IOMMU_VIOMMU_TYPE_SELFTEST', 0xdeadbeef],
  ['IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST', 0xdeadbeef],
  ['IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST_INVALID', 0xdadbeef],
  ['IOMMU_VEVENTQ_TYPE_SELFTEST', 0xbeefbeef],
  ['IOMMU_HW_QUEUE_TYPE_SELFTEST', 0xdeadbeef],
  ['IOMMU_TEST_HW_QUEUE_MAX', 2],
]

/** `[sizeof, first-version size, { field: [offsetof, sizeof] }]`; union members as `member.field`. */
const STRUCTS: Record<
  string,
  readonly [number, number, Record<string, readonly [number, number]>]
> = {
  iommufd_vevent_header: [8, 8, { flags: [0, 4], sequence: [4, 4] }],
  iommu_destroy: [8, 8, { size: [0, 4], id: [4, 4] }],
  iommu_fault_alloc: [
    16,
    16,
    { size: [0, 4], flags: [4, 4], out_fault_id: [8, 4], out_fault_fd: [12, 4] },
  ],
  iommu_hwpt_alloc: [
    48,
    24,
    {
      size: [0, 4],
      flags: [4, 4],
      dev_id: [8, 4],
      pt_id: [12, 4],
      out_hwpt_id: [16, 4],
      __reserved: [20, 4],
      data_type: [24, 4],
      data_len: [28, 4],
      data_uptr: [32, 8],
      fault_id: [40, 4],
      __reserved2: [44, 4],
    },
  ],
  iommu_hwpt_amd_guest: [32, 32, { dte: [0, 32] }],
  iommu_hwpt_arm_smmuv3: [16, 16, { ste: [0, 16] }],
  iommu_hwpt_get_dirty_bitmap: [
    48,
    48,
    {
      size: [0, 4],
      hwpt_id: [4, 4],
      flags: [8, 4],
      __reserved: [12, 4],
      iova: [16, 8],
      length: [24, 8],
      page_size: [32, 8],
      data: [40, 8],
    },
  ],
  iommu_hwpt_invalidate: [
    32,
    32,
    {
      size: [0, 4],
      hwpt_id: [4, 4],
      data_uptr: [8, 8],
      data_type: [16, 4],
      entry_len: [20, 4],
      entry_num: [24, 4],
      __reserved: [28, 4],
    },
  ],
  iommu_hwpt_invalidate_selftest: [8, 8, { flags: [0, 4], iotlb_id: [4, 4] }],
  iommu_hwpt_page_response: [8, 8, { cookie: [0, 4], code: [4, 4] }],
  iommu_hwpt_pgfault: [
    40,
    40,
    {
      flags: [0, 4],
      dev_id: [4, 4],
      pasid: [8, 4],
      grpid: [12, 4],
      perm: [16, 4],
      __reserved: [20, 4],
      addr: [24, 8],
      length: [32, 4],
      cookie: [36, 4],
    },
  ],
  iommu_hwpt_selftest: [8, 4, { iotlb: [0, 4], pagetable_type: [4, 4] }],
  iommu_hwpt_set_dirty_tracking: [
    16,
    16,
    { size: [0, 4], flags: [4, 4], hwpt_id: [8, 4], __reserved: [12, 4] },
  ],
  iommu_hwpt_vtd_s1_invalidate: [
    24,
    24,
    { addr: [0, 8], npages: [8, 8], flags: [16, 4], __reserved: [20, 4] },
  ],
  iommu_hwpt_vtd_s1: [
    24,
    24,
    { flags: [0, 8], pgtbl_addr: [8, 8], addr_width: [16, 4], __reserved: [20, 4] },
  ],
  iommu_hw_info_amd: [16, 16, { efr: [0, 8], efr2: [8, 8] }],
  iommu_hw_info_arm_smmuv3: [
    40,
    40,
    { flags: [0, 4], __reserved: [4, 4], idr: [8, 24], iidr: [32, 4], aidr: [36, 4] },
  ],
  iommu_hw_info: [
    40,
    32,
    {
      size: [0, 4],
      flags: [4, 4],
      dev_id: [8, 4],
      data_len: [12, 4],
      data_uptr: [16, 8],
      in_data_type: [24, 4],
      out_data_type: [24, 4],
      out_max_pasid_log2: [28, 1],
      __reserved: [29, 3],
      out_capabilities: [32, 8],
    },
  ],
  iommu_hw_info_tegra241_cmdqv: [
    8,
    8,
    { flags: [0, 4], version: [4, 1], log2vcmdqs: [5, 1], log2vsids: [6, 1], __reserved: [7, 1] },
  ],
  iommu_hw_info_vtd: [
    24,
    24,
    { flags: [0, 4], __reserved: [4, 4], cap_reg: [8, 8], ecap_reg: [16, 8] },
  ],
  iommu_hw_queue_alloc: [
    40,
    40,
    {
      size: [0, 4],
      flags: [4, 4],
      viommu_id: [8, 4],
      type: [12, 4],
      index: [16, 4],
      out_hw_queue_id: [20, 4],
      nesting_parent_iova: [24, 8],
      length: [32, 8],
    },
  ],
  iommu_ioas_alloc: [12, 12, { size: [0, 4], flags: [4, 4], out_ioas_id: [8, 4] }],
  iommu_ioas_allow_iovas: [
    24,
    24,
    {
      size: [0, 4],
      ioas_id: [4, 4],
      num_iovas: [8, 4],
      __reserved: [12, 4],
      allowed_iovas: [16, 8],
    },
  ],
  iommu_ioas_change_process: [8, 8, { size: [0, 4], __reserved: [4, 4] }],
  iommu_ioas_copy: [
    40,
    40,
    {
      size: [0, 4],
      flags: [4, 4],
      dst_ioas_id: [8, 4],
      src_ioas_id: [12, 4],
      length: [16, 8],
      dst_iova: [24, 8],
      src_iova: [32, 8],
    },
  ],
  iommu_ioas_iova_ranges: [
    32,
    32,
    {
      size: [0, 4],
      ioas_id: [4, 4],
      num_iovas: [8, 4],
      __reserved: [12, 4],
      allowed_iovas: [16, 8],
      out_iova_alignment: [24, 8],
    },
  ],
  iommu_ioas_map_file: [
    40,
    40,
    {
      size: [0, 4],
      flags: [4, 4],
      ioas_id: [8, 4],
      fd: [12, 4],
      start: [16, 8],
      length: [24, 8],
      iova: [32, 8],
    },
  ],
  iommu_ioas_map: [
    40,
    40,
    {
      size: [0, 4],
      flags: [4, 4],
      ioas_id: [8, 4],
      __reserved: [12, 4],
      user_va: [16, 8],
      length: [24, 8],
      iova: [32, 8],
    },
  ],
  iommu_ioas_unmap: [24, 24, { size: [0, 4], ioas_id: [4, 4], iova: [8, 8], length: [16, 8] }],
  iommu_iova_range: [16, 16, { start: [0, 8], last: [8, 8] }],
  iommu_option: [
    24,
    24,
    {
      size: [0, 4],
      option_id: [4, 4],
      op: [8, 2],
      __reserved: [10, 2],
      object_id: [12, 4],
      val64: [16, 8],
    },
  ],
  iommu_test_cmd: [
    72,
    68,
    {
      size: [0, 4],
      op: [4, 4],
      id: [8, 4],
      __reserved: [12, 4],
      last: [64, 4],
      'add_reserved.start': [16, 8],
      'add_reserved.length': [24, 8],
      'mock_domain.out_stdev_id': [16, 4],
      'mock_domain.out_hwpt_id': [20, 4],
      'mock_domain.out_idev_id': [24, 4],
      'mock_domain_flags.out_stdev_id': [16, 4],
      'mock_domain_flags.out_hwpt_id': [20, 4],
      'mock_domain_flags.out_idev_id': [24, 4],
      'mock_domain_flags.dev_flags': [28, 4],
      'mock_domain_replace.pt_id': [16, 4],
      'check_map.iova': [16, 8],
      'check_map.length': [24, 8],
      'check_map.uptr': [32, 8],
      'check_refs.length': [16, 8],
      'check_refs.uptr': [24, 8],
      'check_refs.refs': [32, 4],
      'create_access.out_access_fd': [16, 4],
      'create_access.flags': [20, 4],
      'destroy_access_pages.access_pages_id': [16, 4],
      'access_pages.flags': [16, 4],
      'access_pages.out_access_pages_id': [20, 4],
      'access_pages.iova': [24, 8],
      'access_pages.length': [32, 8],
      'access_pages.uptr': [40, 8],
      'access_rw.iova': [16, 8],
      'access_rw.length': [24, 8],
      'access_rw.uptr': [32, 8],
      'access_rw.flags': [40, 4],
      'memory_limit.limit': [16, 4],
      'access_replace_ioas.ioas_id': [16, 4],
      'dirty.flags': [16, 4],
      'dirty.iova': [24, 8],
      'dirty.length': [32, 8],
      'dirty.page_size': [40, 8],
      'dirty.uptr': [48, 8],
      'dirty.out_nr_dirty': [56, 8],
      'check_iotlb.id': [16, 4],
      'check_iotlb.iotlb': [20, 4],
      'trigger_iopf.dev_id': [16, 4],
      'trigger_iopf.pasid': [20, 4],
      'trigger_iopf.grpid': [24, 4],
      'trigger_iopf.perm': [28, 4],
      'trigger_iopf.addr': [32, 8],
      'check_dev_cache.id': [16, 4],
      'check_dev_cache.cache': [20, 4],
      'trigger_vevent.dev_id': [16, 4],
      'pasid_attach.pasid': [16, 4],
      'pasid_attach.pt_id': [20, 4],
      'pasid_replace.pasid': [16, 4],
      'pasid_replace.pt_id': [20, 4],
      'pasid_detach.pasid': [16, 4],
      'pasid_check.pasid': [16, 4],
      'pasid_check.hwpt_id': [20, 4],
      'dmabuf_get.length': [16, 4],
      'dmabuf_get.open_flags': [20, 4],
      'dmabuf_revoke.dmabuf_fd': [16, 4],
      'dmabuf_revoke.revoked': [20, 4],
    },
  ],
  iommu_test_hw_info: [8, 8, { flags: [0, 4], test_reg: [4, 4] }],
  iommu_vdevice_alloc: [
    24,
    24,
    { size: [0, 4], viommu_id: [4, 4], dev_id: [8, 4], out_vdevice_id: [12, 4], virt_id: [16, 8] },
  ],
  iommu_veventq_alloc: [
    32,
    28,
    {
      size: [0, 4],
      flags: [4, 4],
      viommu_id: [8, 4],
      type: [12, 4],
      veventq_depth: [16, 4],
      out_veventq_id: [20, 4],
      out_veventq_fd: [24, 4],
      __reserved: [28, 4],
    },
  ],
  iommu_vevent_arm_smmuv3: [32, 32, { evt: [0, 32] }],
  iommu_vevent_tegra241_cmdqv: [16, 16, { lvcmdq_err_map: [0, 16] }],
  iommu_vfio_ioas: [12, 12, { size: [0, 4], ioas_id: [4, 4], op: [8, 2], __reserved: [10, 2] }],
  iommu_viommu_alloc: [
    40,
    24,
    {
      size: [0, 4],
      flags: [4, 4],
      type: [8, 4],
      dev_id: [12, 4],
      hwpt_id: [16, 4],
      out_viommu_id: [20, 4],
      data_len: [24, 4],
      __reserved: [28, 4],
      data_uptr: [32, 8],
    },
  ],
  iommu_viommu_arm_smmuv3_invalidate: [16, 16, { cmd: [0, 16] }],
  iommu_viommu_event_selftest: [4, 4, { virt_id: [0, 4] }],
  iommu_viommu_invalidate_selftest: [12, 12, { flags: [0, 4], vdev_id: [4, 4], cache_id: [8, 4] }],
  iommu_viommu_selftest: [
    24,
    8,
    { in_data: [0, 4], out_data: [4, 4], out_mmap_offset: [8, 8], out_mmap_length: [16, 8] },
  ],
  iommu_viommu_tegra241_cmdqv: [
    16,
    16,
    { out_vintf_mmap_offset: [0, 8], out_vintf_mmap_length: [8, 8] },
  ],
}

describe('@iommu/iommufd/uapi against the 7.2 headers', () => {
  it('exports every constant of iommufd.h and iommufd_test.h with its value, and no other number', () => {
    const expected = Object.fromEntries([...IOMMUFD_H, ...IOMMUFD_TEST_H])
    const exported = Object.fromEntries(
      Object.entries(uapi).filter(([, v]) => typeof v === 'number'),
    )
    expect(exported).toEqual(expected)
    expect(IOMMUFD_H.length + IOMMUFD_TEST_H.length).toBe(156)
  })

  it('lays every struct out as the C compiler does', () => {
    const got: Record<string, unknown> = {}
    for (const v of Object.values(uapi)) {
      if (typeof v !== 'object' || v === null || !('fields' in v)) continue
      const l = v as uapi.StructLayout<unknown>
      const fields: Record<string, [number, number]> = {}
      for (const f of l.fields) fields[f.name] = [f.off, f.bytes]
      for (const m of l.members)
        for (const f of m.fields) fields[`${m.name}.${f.name}`] = [f.off, f.bytes]
      got[l.name] = [l.sizeof, l.minSize, fields]
    }
    expect(got).toEqual(STRUCTS)
    expect(Object.keys(STRUCTS)).toHaveLength(44)
    for (const [name, [sizeof, minSize, fields]] of Object.entries(STRUCTS)) {
      expect(uapi.UAPI_STRUCTS[name]).toEqual({
        sizeof,
        minSize,
        offsetof: Object.fromEntries(Object.entries(fields).map(([k, [off]]) => [k, off])),
      })
    }
  })

  it('agrees with the driver-facing constants of @iommu/core and its mock driver', () => {
    expect(HwInfoType).toEqual({
      NONE: uapi.IOMMU_HW_INFO_TYPE_NONE,
      DEFAULT: uapi.IOMMU_HW_INFO_TYPE_DEFAULT,
      INTEL_VTD: uapi.IOMMU_HW_INFO_TYPE_INTEL_VTD,
      ARM_SMMUV3: uapi.IOMMU_HW_INFO_TYPE_ARM_SMMUV3,
      TEGRA241_CMDQV: uapi.IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV,
      AMD: uapi.IOMMU_HW_INFO_TYPE_AMD,
    })
    expect(HwptDataType).toEqual({
      NONE: uapi.IOMMU_HWPT_DATA_NONE,
      VTD_S1: uapi.IOMMU_HWPT_DATA_VTD_S1,
      ARM_SMMUV3: uapi.IOMMU_HWPT_DATA_ARM_SMMUV3,
      AMD_GUEST: uapi.IOMMU_HWPT_DATA_AMD_GUEST,
    })
    expect(HwptAllocFlags).toEqual({
      NEST_PARENT: uapi.IOMMU_HWPT_ALLOC_NEST_PARENT,
      DIRTY_TRACKING: uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
      FAULT_ID_VALID: uapi.IOMMU_HWPT_FAULT_ID_VALID,
      PASID: uapi.IOMMU_HWPT_ALLOC_PASID,
    })
    expect(IOMMU_DIRTY_NO_CLEAR).toBe(uapi.IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR)
    // The mock keeps the aperture as bigint for its page table; same values.
    expect([mock.MOCK_APERTURE_START, mock.MOCK_APERTURE_LAST]).toEqual([
      BigInt(uapi.MOCK_APERTURE_START),
      BigInt(uapi.MOCK_APERTURE_LAST),
    ])
    expect(mock.MockPagetableType.DEFAULT).toBe(uapi.MOCK_IOMMUPT_DEFAULT)
    expect(mock.MockPagetableType.HUGE).toBe(uapi.MOCK_IOMMUPT_HUGE)
    expect([
      mock.MOCK_PAGE_SIZE,
      mock.MOCK_HUGE_PAGE_SIZE,
      mock.MOCK_PASID_WIDTH,
      mock.IOMMU_HW_INFO_TYPE_SELFTEST,
      mock.IOMMU_HW_INFO_SELFTEST_REGVAL,
      mock.IOMMU_HWPT_DATA_SELFTEST,
      mock.IOMMU_HWPT_INVALIDATE_DATA_SELFTEST,
      mock.IOMMU_TEST_INVALIDATE_FLAG_ALL,
      mock.MOCK_NESTED_DOMAIN_IOTLB_ID_MAX,
      mock.MOCK_NESTED_DOMAIN_IOTLB_NUM,
      mock.IOMMU_TEST_PASID_RESERVED,
    ]).toEqual([
      uapi.MOCK_PAGE_SIZE,
      uapi.MOCK_HUGE_PAGE_SIZE,
      uapi.MOCK_PASID_WIDTH,
      uapi.IOMMU_HW_INFO_TYPE_SELFTEST,
      uapi.IOMMU_HW_INFO_SELFTEST_REGVAL,
      uapi.IOMMU_HWPT_DATA_SELFTEST,
      uapi.IOMMU_HWPT_INVALIDATE_DATA_SELFTEST,
      uapi.IOMMU_TEST_INVALIDATE_FLAG_ALL,
      uapi.MOCK_NESTED_DOMAIN_IOTLB_ID_MAX,
      uapi.MOCK_NESTED_DOMAIN_IOTLB_NUM,
      uapi.IOMMU_TEST_PASID_RESERVED,
    ])
  })

  it('builds the command numbers as _IO(IOMMUFD_TYPE, IOMMUFD_CMD_*)', () => {
    expect(uapi._IO(uapi.IOMMUFD_TYPE, uapi.IOMMUFD_CMD_IOAS_MAP)).toBe(uapi.IOMMU_IOAS_MAP)
    expect(uapi._IO(uapi.IOMMUFD_TYPE, uapi.IOMMUFD_CMD_BASE + 32)).toBe(uapi.IOMMU_TEST_CMD)
    expect(uapi._IOMMU_TEST_CMD(uapi.IOMMU_TEST_OP_DIRTY)).toBe(uapi.IOMMU_TEST_CMD)
  })
})

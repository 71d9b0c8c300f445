/**
 * The uAPI structs, field for field as `include/uapi/linux/iommufd.h` declares them (and
 * `iommufd_test.h` for the test command). The TypeScript types carry the kernel's struct
 * names so that ported C reads the same: `const cmd: iommu_ioas_map = { size: 40, ... }`.
 *
 * @module
 */

import { defineStruct, type StructLayout } from './struct.ts'

/** The decoded shape of a layout. */
export type ShapeOf<L> = L extends StructLayout<infer T> ? T : never

export const IOMMU_DESTROY_LAYOUT = defineStruct(
  'iommu_destroy',
  [
    ['size', 'u32'],
    ['id', 'u32'],
  ],
  'id',
)
export const IOMMU_IOAS_ALLOC_LAYOUT = defineStruct(
  'iommu_ioas_alloc',
  [
    ['size', 'u32'],
    ['flags', 'u32'],
    ['out_ioas_id', 'u32'],
  ],
  'out_ioas_id',
)
export const IOMMU_IOVA_RANGE_LAYOUT = defineStruct(
  'iommu_iova_range',
  [
    ['start', 'u64'],
    ['last', 'u64'],
  ],
  'last',
)
export const IOMMU_IOAS_IOVA_RANGES_LAYOUT = defineStruct(
  'iommu_ioas_iova_ranges',
  [
    ['size', 'u32'],
    ['ioas_id', 'u32'],
    ['num_iovas', 'u32'],
    ['__reserved', 'u32'],
    ['allowed_iovas', 'u64'],
    ['out_iova_alignment', 'u64'],
  ],
  'out_iova_alignment',
)
export const IOMMU_IOAS_ALLOW_IOVAS_LAYOUT = defineStruct(
  'iommu_ioas_allow_iovas',
  [
    ['size', 'u32'],
    ['ioas_id', 'u32'],
    ['num_iovas', 'u32'],
    ['__reserved', 'u32'],
    ['allowed_iovas', 'u64'],
  ],
  'allowed_iovas',
)
export const IOMMU_IOAS_MAP_LAYOUT = defineStruct(
  'iommu_ioas_map',
  [
    ['size', 'u32'],
    ['flags', 'u32'],
    ['ioas_id', 'u32'],
    ['__reserved', 'u32'],
    ['user_va', 'u64'],
    ['length', 'u64'],
    ['iova', 'u64'],
  ],
  'iova',
)
export const IOMMU_IOAS_MAP_FILE_LAYOUT = defineStruct(
  'iommu_ioas_map_file',
  [
    ['size', 'u32'],
    ['flags', 'u32'],
    ['ioas_id', 'u32'],
    ['fd', 's32'],
    ['start', 'u64'],
    ['length', 'u64'],
    ['iova', 'u64'],
  ],
  'iova',
)
export const IOMMU_IOAS_COPY_LAYOUT = defineStruct(
  'iommu_ioas_copy',
  [
    ['size', 'u32'],
    ['flags', 'u32'],
    ['dst_ioas_id', 'u32'],
    ['src_ioas_id', 'u32'],
    ['length', 'u64'],
    ['dst_iova', 'u64'],
    ['src_iova', 'u64'],
  ],
  'src_iova',
)
export const IOMMU_IOAS_UNMAP_LAYOUT = defineStruct(
  'iommu_ioas_unmap',
  [
    ['size', 'u32'],
    ['ioas_id', 'u32'],
    ['iova', 'u64'],
    ['length', 'u64'],
  ],
  'length',
)
export const IOMMU_OPTION_LAYOUT = defineStruct(
  'iommu_option',
  [
    ['size', 'u32'],
    ['option_id', 'u32'],
    ['op', 'u16'],
    ['__reserved', 'u16'],
    ['object_id', 'u32'],
    ['val64', 'u64'],
  ],
  'val64',
)
export const IOMMU_VFIO_IOAS_LAYOUT = defineStruct(
  'iommu_vfio_ioas',
  [
    ['size', 'u32'],
    ['ioas_id', 'u32'],
    ['op', 'u16'],
    ['__reserved', 'u16'],
  ],
  '__reserved',
)
export const IOMMU_HWPT_ALLOC_LAYOUT = defineStruct(
  'iommu_hwpt_alloc',
  [
    ['size', 'u32'],
    ['flags', 'u32'],
    ['dev_id', 'u32'],
    ['pt_id', 'u32'],
    ['out_hwpt_id', 'u32'],
    ['__reserved', 'u32'],
    ['data_type', 'u32'],
    ['data_len', 'u32'],
    ['data_uptr', 'u64'],
    ['fault_id', 'u32'],
    ['__reserved2', 'u32'],
  ],
  '__reserved',
)
export const IOMMU_HW_INFO_LAYOUT = defineStruct(
  'iommu_hw_info',
  [
    ['size', 'u32'],
    ['flags', 'u32'],
    ['dev_id', 'u32'],
    ['data_len', 'u32'],
    ['data_uptr', 'u64'],
    ['in_data_type', 'u32'],
    ['out_data_type', 'u32', 'in_data_type'],
    ['out_max_pasid_log2', 'u8'],
    ['__reserved', 'u8x3'],
    ['out_capabilities', 'u64'],
  ],
  '__reserved',
)
export const IOMMU_HWPT_SET_DIRTY_TRACKING_LAYOUT = defineStruct(
  'iommu_hwpt_set_dirty_tracking',
  [
    ['size', 'u32'],
    ['flags', 'u32'],
    ['hwpt_id', 'u32'],
    ['__reserved', 'u32'],
  ],
  '__reserved',
)
export const IOMMU_HWPT_GET_DIRTY_BITMAP_LAYOUT = defineStruct(
  'iommu_hwpt_get_dirty_bitmap',
  [
    ['size', 'u32'],
    ['hwpt_id', 'u32'],
    ['flags', 'u32'],
    ['__reserved', 'u32'],
    ['iova', 'u64'],
    ['length', 'u64'],
    ['page_size', 'u64'],
    ['data', 'u64'],
  ],
  'data',
)
export const IOMMU_HWPT_INVALIDATE_LAYOUT = defineStruct(
  'iommu_hwpt_invalidate',
  [
    ['size', 'u32'],
    ['hwpt_id', 'u32'],
    ['data_uptr', 'u64'],
    ['data_type', 'u32'],
    ['entry_len', 'u32'],
    ['entry_num', 'u32'],
    ['__reserved', 'u32'],
  ],
  '__reserved',
)
export const IOMMU_FAULT_ALLOC_LAYOUT = defineStruct(
  'iommu_fault_alloc',
  [
    ['size', 'u32'],
    ['flags', 'u32'],
    ['out_fault_id', 'u32'],
    ['out_fault_fd', 'u32'],
  ],
  'out_fault_fd',
)
export const IOMMU_VIOMMU_ALLOC_LAYOUT = defineStruct(
  'iommu_viommu_alloc',
  [
    ['size', 'u32'],
    ['flags', 'u32'],
    ['type', 'u32'],
    ['dev_id', 'u32'],
    ['hwpt_id', 'u32'],
    ['out_viommu_id', 'u32'],
    ['data_len', 'u32'],
    ['__reserved', 'u32'],
    ['data_uptr', 'u64'],
  ],
  'out_viommu_id',
)
export const IOMMU_VDEVICE_ALLOC_LAYOUT = defineStruct(
  'iommu_vdevice_alloc',
  [
    ['size', 'u32'],
    ['viommu_id', 'u32'],
    ['dev_id', 'u32'],
    ['out_vdevice_id', 'u32'],
    ['virt_id', 'u64'],
  ],
  'virt_id',
)
export const IOMMU_IOAS_CHANGE_PROCESS_LAYOUT = defineStruct(
  'iommu_ioas_change_process',
  [
    ['size', 'u32'],
    ['__reserved', 'u32'],
  ],
  '__reserved',
)
export const IOMMU_VEVENTQ_ALLOC_LAYOUT = defineStruct(
  'iommu_veventq_alloc',
  [
    ['size', 'u32'],
    ['flags', 'u32'],
    ['viommu_id', 'u32'],
    ['type', 'u32'],
    ['veventq_depth', 'u32'],
    ['out_veventq_id', 'u32'],
    ['out_veventq_fd', 'u32'],
    ['__reserved', 'u32'],
  ],
  'out_veventq_fd',
)
export const IOMMU_HW_QUEUE_ALLOC_LAYOUT = defineStruct(
  'iommu_hw_queue_alloc',
  [
    ['size', 'u32'],
    ['flags', 'u32'],
    ['viommu_id', 'u32'],
    ['type', 'u32'],
    ['index', 'u32'],
    ['out_hw_queue_id', 'u32'],
    ['nesting_parent_iova', 'u64'],
    ['length', 'u64'],
  ],
  'length',
)

// ------------------------------------------------ structs passed by pointer (iommufd.h)
// Driver data (`data_uptr` of HWPT_ALLOC, GET_HW_INFO, HWPT_INVALIDATE, VIOMMU_ALLOC),
// fault-queue records (`read`/`write` of the fault fd) and vEVENTQ records. `last` is the
// member the kernel's `iommu_copy_struct_*_user` call names as the first version's end.

/** `struct iommu_hwpt_vtd_s1` (`IOMMU_HWPT_DATA_VTD_S1`). */
export const IOMMU_HWPT_VTD_S1_LAYOUT = defineStruct(
  'iommu_hwpt_vtd_s1',
  [
    ['flags', 'u64'],
    ['pgtbl_addr', 'u64'],
    ['addr_width', 'u32'],
    ['__reserved', 'u32'],
  ],
  '__reserved',
)
/** `struct iommu_hwpt_arm_smmuv3` (`IOMMU_HWPT_DATA_ARM_SMMUV3`): `__aligned_le64 ste[2]`. */
export const IOMMU_HWPT_ARM_SMMUV3_LAYOUT = defineStruct(
  'iommu_hwpt_arm_smmuv3',
  [['ste', 'u64x2']],
  'ste',
)
/** `struct iommu_hwpt_amd_guest` (`IOMMU_HWPT_DATA_AMD_GUEST`). */
export const IOMMU_HWPT_AMD_GUEST_LAYOUT = defineStruct(
  'iommu_hwpt_amd_guest',
  [['dte', 'u64x4']],
  'dte',
)
/** `struct iommu_hw_info_vtd` (`IOMMU_HW_INFO_TYPE_INTEL_VTD`). */
export const IOMMU_HW_INFO_VTD_LAYOUT = defineStruct(
  'iommu_hw_info_vtd',
  [
    ['flags', 'u32'],
    ['__reserved', 'u32'],
    ['cap_reg', 'u64'],
    ['ecap_reg', 'u64'],
  ],
  'ecap_reg',
)
/** `struct iommu_hw_info_arm_smmuv3` (`IOMMU_HW_INFO_TYPE_ARM_SMMUV3`). */
export const IOMMU_HW_INFO_ARM_SMMUV3_LAYOUT = defineStruct(
  'iommu_hw_info_arm_smmuv3',
  [
    ['flags', 'u32'],
    ['__reserved', 'u32'],
    ['idr', 'u32x6'],
    ['iidr', 'u32'],
    ['aidr', 'u32'],
  ],
  'aidr',
)
/** `struct iommu_hw_info_tegra241_cmdqv` (`IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV`). */
export const IOMMU_HW_INFO_TEGRA241_CMDQV_LAYOUT = defineStruct(
  'iommu_hw_info_tegra241_cmdqv',
  [
    ['flags', 'u32'],
    ['version', 'u8'],
    ['log2vcmdqs', 'u8'],
    ['log2vsids', 'u8'],
    ['__reserved', 'u8'],
  ],
  '__reserved',
)
/** `struct iommu_hw_info_amd` (`IOMMU_HW_INFO_TYPE_AMD`). */
export const IOMMU_HW_INFO_AMD_LAYOUT = defineStruct(
  'iommu_hw_info_amd',
  [
    ['efr', 'u64'],
    ['efr2', 'u64'],
  ],
  'efr2',
)
/** `struct iommu_hwpt_vtd_s1_invalidate` (`IOMMU_HWPT_INVALIDATE_DATA_VTD_S1` entries). */
export const IOMMU_HWPT_VTD_S1_INVALIDATE_LAYOUT = defineStruct(
  'iommu_hwpt_vtd_s1_invalidate',
  [
    ['addr', 'u64'],
    ['npages', 'u64'],
    ['flags', 'u32'],
    ['__reserved', 'u32'],
  ],
  '__reserved',
)
/** `struct iommu_viommu_arm_smmuv3_invalidate` (`IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3`). */
export const IOMMU_VIOMMU_ARM_SMMUV3_INVALIDATE_LAYOUT = defineStruct(
  'iommu_viommu_arm_smmuv3_invalidate',
  [['cmd', 'u64x2']],
  'cmd',
)
/** `struct iommu_hwpt_pgfault`: one fault record read from a fault queue's fd. */
export const IOMMU_HWPT_PGFAULT_LAYOUT = defineStruct(
  'iommu_hwpt_pgfault',
  [
    ['flags', 'u32'],
    ['dev_id', 'u32'],
    ['pasid', 'u32'],
    ['grpid', 'u32'],
    ['perm', 'u32'],
    ['__reserved', 'u32'],
    ['addr', 'u64'],
    ['length', 'u32'],
    ['cookie', 'u32'],
  ],
  'cookie',
)
/** `struct iommu_hwpt_page_response`: one response written to a fault queue's fd. */
export const IOMMU_HWPT_PAGE_RESPONSE_LAYOUT = defineStruct(
  'iommu_hwpt_page_response',
  [
    ['cookie', 'u32'],
    ['code', 'u32'],
  ],
  'code',
)
/** `struct iommu_viommu_tegra241_cmdqv` (`IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV` data). */
export const IOMMU_VIOMMU_TEGRA241_CMDQV_LAYOUT = defineStruct(
  'iommu_viommu_tegra241_cmdqv',
  [
    ['out_vintf_mmap_offset', 'u64'],
    ['out_vintf_mmap_length', 'u64'],
  ],
  'out_vintf_mmap_length',
)
/** `struct iommufd_vevent_header`: precedes each record read from a vEVENTQ fd. */
export const IOMMUFD_VEVENT_HEADER_LAYOUT = defineStruct(
  'iommufd_vevent_header',
  [
    ['flags', 'u32'],
    ['sequence', 'u32'],
  ],
  'sequence',
)
/** `struct iommu_vevent_arm_smmuv3` (`IOMMU_VEVENTQ_TYPE_ARM_SMMUV3` records). */
export const IOMMU_VEVENT_ARM_SMMUV3_LAYOUT = defineStruct(
  'iommu_vevent_arm_smmuv3',
  [['evt', 'u64x4']],
  'evt',
)
/** `struct iommu_vevent_tegra241_cmdqv` (`IOMMU_VEVENTQ_TYPE_TEGRA241_CMDQV` records). */
export const IOMMU_VEVENT_TEGRA241_CMDQV_LAYOUT = defineStruct(
  'iommu_vevent_tegra241_cmdqv',
  [['lvcmdq_err_map', 'u64x2']],
  'lvcmdq_err_map',
)

/** `struct iommu_test_cmd`: a header, a union with one member per operation, `last`. */
export const IOMMU_TEST_CMD_LAYOUT: StructLayout<iommu_test_cmd_decoded> = defineStruct(
  'iommu_test_cmd',
  [
    ['size', 'u32'],
    ['op', 'u32'],
    ['id', 'u32'],
    ['__reserved', 'u32'],
  ],
  'last',
  [
    [
      'add_reserved',
      [
        ['start', 'u64'],
        ['length', 'u64'],
      ],
    ],
    [
      'mock_domain',
      [
        ['out_stdev_id', 'u32'],
        ['out_hwpt_id', 'u32'],
        ['out_idev_id', 'u32'],
      ],
    ],
    [
      'mock_domain_flags',
      [
        ['out_stdev_id', 'u32'],
        ['out_hwpt_id', 'u32'],
        ['out_idev_id', 'u32'],
        ['dev_flags', 'u32'],
      ],
    ],
    ['mock_domain_replace', [['pt_id', 'u32']]],
    [
      'check_map',
      [
        ['iova', 'u64'],
        ['length', 'u64'],
        ['uptr', 'u64'],
      ],
    ],
    [
      'check_refs',
      [
        ['length', 'u64'],
        ['uptr', 'u64'],
        ['refs', 'u32'],
      ],
    ],
    [
      'create_access',
      [
        ['out_access_fd', 'u32'],
        ['flags', 'u32'],
      ],
    ],
    ['destroy_access_pages', [['access_pages_id', 'u32']]],
    [
      'access_pages',
      [
        ['flags', 'u32'],
        ['out_access_pages_id', 'u32'],
        ['iova', 'u64'],
        ['length', 'u64'],
        ['uptr', 'u64'],
      ],
    ],
    [
      'access_rw',
      [
        ['iova', 'u64'],
        ['length', 'u64'],
        ['uptr', 'u64'],
        ['flags', 'u32'],
      ],
    ],
    ['memory_limit', [['limit', 'u32']]],
    ['access_replace_ioas', [['ioas_id', 'u32']]],
    [
      'dirty',
      [
        ['flags', 'u32'],
        ['iova', 'u64'],
        ['length', 'u64'],
        ['page_size', 'u64'],
        ['uptr', 'u64'],
        ['out_nr_dirty', 'u64'],
      ],
    ],
    [
      'check_iotlb',
      [
        ['id', 'u32'],
        ['iotlb', 'u32'],
      ],
    ],
    [
      'trigger_iopf',
      [
        ['dev_id', 'u32'],
        ['pasid', 'u32'],
        ['grpid', 'u32'],
        ['perm', 'u32'],
        ['addr', 'u64'],
      ],
    ],
    [
      'check_dev_cache',
      [
        ['id', 'u32'],
        ['cache', 'u32'],
      ],
    ],
    ['trigger_vevent', [['dev_id', 'u32']]],
    [
      'pasid_attach',
      [
        ['pasid', 'u32'],
        ['pt_id', 'u32'],
      ],
    ],
    [
      'pasid_replace',
      [
        ['pasid', 'u32'],
        ['pt_id', 'u32'],
      ],
    ],
    ['pasid_detach', [['pasid', 'u32']]],
    [
      'pasid_check',
      [
        ['pasid', 'u32'],
        ['hwpt_id', 'u32'],
      ],
    ],
    [
      'dmabuf_get',
      [
        ['length', 'u32'],
        ['open_flags', 'u32'],
      ],
    ],
    [
      'dmabuf_revoke',
      [
        ['dmabuf_fd', 's32'],
        ['revoked', 'u32'],
      ],
    ],
  ],
  [['last', 'u32']],
) as StructLayout<unknown> as StructLayout<iommu_test_cmd_decoded>

/** `struct iommu_hwpt_selftest` (driver data of `IOMMU_HWPT_DATA_SELFTEST`). */
export const IOMMU_HWPT_SELFTEST_LAYOUT = defineStruct(
  'iommu_hwpt_selftest',
  [
    ['iotlb', 'u32'],
    ['pagetable_type', 'u32'],
  ],
  'iotlb',
)
/** `struct iommu_hwpt_invalidate_selftest`. */
export const IOMMU_HWPT_INVALIDATE_SELFTEST_LAYOUT = defineStruct(
  'iommu_hwpt_invalidate_selftest',
  [
    ['flags', 'u32'],
    ['iotlb_id', 'u32'],
  ],
  'iotlb_id',
)
/** `struct iommu_test_hw_info` (what the mock's `hw_info` returns). */
export const IOMMU_TEST_HW_INFO_LAYOUT = defineStruct(
  'iommu_test_hw_info',
  [
    ['flags', 'u32'],
    ['test_reg', 'u32'],
  ],
  'test_reg',
)

/** `struct iommu_viommu_selftest` (`IOMMU_VIOMMU_TYPE_SELFTEST` data). */
export const IOMMU_VIOMMU_SELFTEST_LAYOUT = defineStruct(
  'iommu_viommu_selftest',
  [
    ['in_data', 'u32'],
    ['out_data', 'u32'],
    ['out_mmap_offset', 'u64'],
    ['out_mmap_length', 'u64'],
  ],
  'out_data',
)
/** `struct iommu_viommu_invalidate_selftest` (`IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST`). */
export const IOMMU_VIOMMU_INVALIDATE_SELFTEST_LAYOUT = defineStruct(
  'iommu_viommu_invalidate_selftest',
  [
    ['flags', 'u32'],
    ['vdev_id', 'u32'],
    ['cache_id', 'u32'],
  ],
  'cache_id',
)
/** `struct iommu_viommu_event_selftest` (`IOMMU_VEVENTQ_TYPE_SELFTEST` records). */
export const IOMMU_VIOMMU_EVENT_SELFTEST_LAYOUT = defineStruct(
  'iommu_viommu_event_selftest',
  [['virt_id', 'u32']],
  'virt_id',
)

export type iommu_destroy = ShapeOf<typeof IOMMU_DESTROY_LAYOUT>
export type iommu_ioas_alloc = ShapeOf<typeof IOMMU_IOAS_ALLOC_LAYOUT>
export type iommu_iova_range = ShapeOf<typeof IOMMU_IOVA_RANGE_LAYOUT>
export type iommu_ioas_iova_ranges = ShapeOf<typeof IOMMU_IOAS_IOVA_RANGES_LAYOUT>
export type iommu_ioas_allow_iovas = ShapeOf<typeof IOMMU_IOAS_ALLOW_IOVAS_LAYOUT>
export type iommu_ioas_map = ShapeOf<typeof IOMMU_IOAS_MAP_LAYOUT>
export type iommu_ioas_map_file = ShapeOf<typeof IOMMU_IOAS_MAP_FILE_LAYOUT>
export type iommu_ioas_copy = ShapeOf<typeof IOMMU_IOAS_COPY_LAYOUT>
export type iommu_ioas_unmap = ShapeOf<typeof IOMMU_IOAS_UNMAP_LAYOUT>
export type iommu_option = ShapeOf<typeof IOMMU_OPTION_LAYOUT>
export type iommu_vfio_ioas = ShapeOf<typeof IOMMU_VFIO_IOAS_LAYOUT>
export type iommu_hwpt_alloc = ShapeOf<typeof IOMMU_HWPT_ALLOC_LAYOUT>
export type iommu_hw_info = ShapeOf<typeof IOMMU_HW_INFO_LAYOUT>
export type iommu_hwpt_set_dirty_tracking = ShapeOf<typeof IOMMU_HWPT_SET_DIRTY_TRACKING_LAYOUT>
export type iommu_hwpt_get_dirty_bitmap = ShapeOf<typeof IOMMU_HWPT_GET_DIRTY_BITMAP_LAYOUT>
export type iommu_hwpt_invalidate = ShapeOf<typeof IOMMU_HWPT_INVALIDATE_LAYOUT>
export type iommu_fault_alloc = ShapeOf<typeof IOMMU_FAULT_ALLOC_LAYOUT>
export type iommu_viommu_alloc = ShapeOf<typeof IOMMU_VIOMMU_ALLOC_LAYOUT>
export type iommu_vdevice_alloc = ShapeOf<typeof IOMMU_VDEVICE_ALLOC_LAYOUT>
export type iommu_ioas_change_process = ShapeOf<typeof IOMMU_IOAS_CHANGE_PROCESS_LAYOUT>
export type iommu_veventq_alloc = ShapeOf<typeof IOMMU_VEVENTQ_ALLOC_LAYOUT>
export type iommu_hw_queue_alloc = ShapeOf<typeof IOMMU_HW_QUEUE_ALLOC_LAYOUT>
export type iommu_hwpt_vtd_s1 = ShapeOf<typeof IOMMU_HWPT_VTD_S1_LAYOUT>
export type iommu_hwpt_arm_smmuv3 = ShapeOf<typeof IOMMU_HWPT_ARM_SMMUV3_LAYOUT>
export type iommu_hwpt_amd_guest = ShapeOf<typeof IOMMU_HWPT_AMD_GUEST_LAYOUT>
export type iommu_hw_info_vtd = ShapeOf<typeof IOMMU_HW_INFO_VTD_LAYOUT>
export type iommu_hw_info_arm_smmuv3 = ShapeOf<typeof IOMMU_HW_INFO_ARM_SMMUV3_LAYOUT>
export type iommu_hw_info_tegra241_cmdqv = ShapeOf<typeof IOMMU_HW_INFO_TEGRA241_CMDQV_LAYOUT>
export type iommu_hw_info_amd = ShapeOf<typeof IOMMU_HW_INFO_AMD_LAYOUT>
export type iommu_hwpt_vtd_s1_invalidate = ShapeOf<typeof IOMMU_HWPT_VTD_S1_INVALIDATE_LAYOUT>
export type iommu_viommu_arm_smmuv3_invalidate = ShapeOf<
  typeof IOMMU_VIOMMU_ARM_SMMUV3_INVALIDATE_LAYOUT
>
export type iommu_hwpt_pgfault = ShapeOf<typeof IOMMU_HWPT_PGFAULT_LAYOUT>
export type iommu_hwpt_page_response = ShapeOf<typeof IOMMU_HWPT_PAGE_RESPONSE_LAYOUT>
export type iommu_viommu_tegra241_cmdqv = ShapeOf<typeof IOMMU_VIOMMU_TEGRA241_CMDQV_LAYOUT>
export type iommufd_vevent_header = ShapeOf<typeof IOMMUFD_VEVENT_HEADER_LAYOUT>
export type iommu_vevent_arm_smmuv3 = ShapeOf<typeof IOMMU_VEVENT_ARM_SMMUV3_LAYOUT>
export type iommu_vevent_tegra241_cmdqv = ShapeOf<typeof IOMMU_VEVENT_TEGRA241_CMDQV_LAYOUT>
export type iommu_viommu_selftest = ShapeOf<typeof IOMMU_VIOMMU_SELFTEST_LAYOUT>
export type iommu_viommu_invalidate_selftest = ShapeOf<
  typeof IOMMU_VIOMMU_INVALIDATE_SELFTEST_LAYOUT
>
export type iommu_viommu_event_selftest = ShapeOf<typeof IOMMU_VIOMMU_EVENT_SELFTEST_LAYOUT>
export type iommu_hwpt_selftest = ShapeOf<typeof IOMMU_HWPT_SELFTEST_LAYOUT>
export type iommu_hwpt_invalidate_selftest = ShapeOf<typeof IOMMU_HWPT_INVALIDATE_SELFTEST_LAYOUT>
export type iommu_test_hw_info = ShapeOf<typeof IOMMU_TEST_HW_INFO_LAYOUT>

type U64 = bigint
/** `struct iommu_test_cmd` as a handler sees it: every union member decoded. */
export interface iommu_test_cmd_decoded {
  size: number
  op: number
  id: number
  __reserved: number
  add_reserved: { start: U64; length: U64 }
  mock_domain: { out_stdev_id: number; out_hwpt_id: number; out_idev_id: number }
  mock_domain_flags: {
    out_stdev_id: number
    out_hwpt_id: number
    out_idev_id: number
    dev_flags: number
  }
  mock_domain_replace: { pt_id: number }
  check_map: { iova: U64; length: U64; uptr: U64 }
  check_refs: { length: U64; uptr: U64; refs: number }
  create_access: { out_access_fd: number; flags: number }
  destroy_access_pages: { access_pages_id: number }
  access_pages: { flags: number; out_access_pages_id: number; iova: U64; length: U64; uptr: U64 }
  access_rw: { iova: U64; length: U64; uptr: U64; flags: number }
  memory_limit: { limit: number }
  access_replace_ioas: { ioas_id: number }
  dirty: { flags: number; iova: U64; length: U64; page_size: U64; uptr: U64; out_nr_dirty: U64 }
  check_iotlb: { id: number; iotlb: number }
  trigger_iopf: { dev_id: number; pasid: number; grpid: number; perm: number; addr: U64 }
  check_dev_cache: { id: number; cache: number }
  trigger_vevent: { dev_id: number }
  pasid_attach: { pasid: number; pt_id: number }
  pasid_replace: { pasid: number; pt_id: number }
  pasid_detach: { pasid: number }
  pasid_check: { pasid: number; hwpt_id: number }
  dmabuf_get: { length: number; open_flags: number }
  dmabuf_revoke: { dmabuf_fd: number; revoked: number }
  last: number
}

type Members = Omit<iommu_test_cmd_decoded, 'size' | 'op' | 'id' | '__reserved' | 'last'>
/** `struct iommu_test_cmd` as a caller writes it: set the member of the operation. */
export type iommu_test_cmd = Pick<
  iommu_test_cmd_decoded,
  'size' | 'op' | 'id' | '__reserved' | 'last'
> & {
  [K in keyof Members]: Partial<Members[K]>
}

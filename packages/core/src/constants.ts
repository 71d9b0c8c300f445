/**
 * Constants of the kernel's IOMMU API (include/linux/iommu.h and the parts of
 * include/uapi/linux/iommufd.h that drivers see), with the kernel's values.
 *
 * They are `as const` objects rather than TS enums so that the values are plain numbers
 * (bit-for-bit the kernel's) and the code stays erasable.
 *
 * @module
 */

/** Domain feature bits (`__IOMMU_DOMAIN_*`) from which the domain types are built. */
export const DomainFeature = {
  /** Supports map/unmap. */
  PAGING: 1 << 0,
  /** Used by the kernel DMA API. */
  DMA_API: 1 << 1,
  /** Identity (pass-through) translation. */
  PT: 1 << 2,
  /** The DMA API uses a flush queue. */
  DMA_FQ: 1 << 3,
  /** Shared process address space. */
  SVA: 1 << 4,
  /** Legacy platform domain. */
  PLATFORM: 1 << 5,
  /** User-managed stage-1 nested on a stage-2 parent. */
  NESTED: 1 << 6,
} as const

/** Domain types (`IOMMU_DOMAIN_*`), with the kernel's values. */
export const DomainType = {
  BLOCKED: 0,
  IDENTITY: DomainFeature.PT,
  UNMANAGED: DomainFeature.PAGING,
  DMA: DomainFeature.PAGING | DomainFeature.DMA_API,
  DMA_FQ: DomainFeature.PAGING | DomainFeature.DMA_API | DomainFeature.DMA_FQ,
  SVA: DomainFeature.SVA,
  PLATFORM: DomainFeature.PLATFORM,
  NESTED: DomainFeature.NESTED,
} as const
/** One of the {@link DomainType} values. */
export type DomainType = (typeof DomainType)[keyof typeof DomainType]

/** Printable name of a domain type, as the kernel's `iommu_domain_type_str`. */
export function domainTypeName(type: number): string {
  switch (type) {
    case DomainType.BLOCKED:
      return 'Blocked'
    case DomainType.IDENTITY:
      return 'Passthrough'
    case DomainType.UNMANAGED:
      return 'Unmanaged'
    case DomainType.DMA:
      return 'Translated'
    case DomainType.DMA_FQ:
      return 'Translated (FQ)'
    case DomainType.SVA:
      return 'SVA'
    case DomainType.PLATFORM:
      return 'Platform'
    case DomainType.NESTED:
      return 'Nested'
    default:
      return 'Unknown'
  }
}

/** Mapping protection flags (`IOMMU_READ` ...). */
export const Prot = {
  READ: 1 << 0,
  WRITE: 1 << 1,
  /** DMA cache coherency. */
  CACHE: 1 << 2,
  NOEXEC: 1 << 3,
  /** e.g. MSI doorbells. */
  MMIO: 1 << 4,
  PRIV: 1 << 5,
} as const

/** `enum iommu_cap`, queried per device with `capable(dev, cap)`. */
export const IommuCap = {
  /** IOMMU_CACHE mappings are coherent. */
  CACHE_COHERENCY: 0,
  /** IOMMU_NOEXEC is honoured. */
  NOEXEC: 1,
  /** Firmware used the IOMMU for pre-boot DMA protection. */
  PRE_BOOT_PROTECTION: 2,
  /** `enforceCacheCoherency()` will work for this device. */
  ENFORCE_CACHE_COHERENCY: 3,
  /** Unmap does not flush, so the DMA flush queue is useful. */
  DEFERRED_FLUSH: 4,
  /** Hardware dirty-bit tracking. */
  DIRTY_TRACKING: 5,
  /** ATS is supported and may be enabled for this device. */
  PCI_ATS_SUPPORTED: 6,
} as const
/** One of the {@link IommuCap} values. */
export type IommuCap = (typeof IommuCap)[keyof typeof IommuCap]

/**
 * Paging-domain allocation flags (`enum iommufd_hwpt_alloc_flags`), passed to
 * `domainAllocPagingFlags`.
 */
export const HwptAllocFlags = {
  /** The domain may be the stage-2 parent of nested domains. */
  NEST_PARENT: 1 << 0,
  /** The domain carries dirty ops (hardware dirty tracking). */
  DIRTY_TRACKING: 1 << 1,
  /** iommufd-only (a fault queue id is valid); stripped before the driver sees flags. */
  FAULT_ID_VALID: 1 << 2,
  /** The domain can be attached to a PASID. */
  PASID: 1 << 3,
} as const

/** `read_and_clear_dirty` flag: report dirty IOPTEs without clearing them. */
export const IOMMU_DIRTY_NO_CLEAR = 1 << 0

/** The PASID used for DMA without a PASID (the RID's translation). */
export const IOMMU_NO_PASID = 0
/** First PASID the global allocator hands out. */
export const IOMMU_FIRST_GLOBAL_PASID = 1
/** Returned by the global PASID allocator on failure (`-1U`). */
export const IOMMU_PASID_INVALID = 0xffff_ffff

/** Reserved region types (`enum iommu_resv_type`). */
export const ResvType = {
  /** Must be mapped 1:1 at all times; makes the device `requireDirect`. */
  DIRECT: 0,
  /** Advertised 1:1 but may be dropped for device assignment. */
  DIRECT_RELAXABLE: 1,
  /** Never map this or give it to a device. */
  RESERVED: 2,
  /** Hardware MSI window (untranslated). */
  MSI: 3,
  /** Software-managed MSI translation window. */
  SW_MSI: 4,
} as const
/** One of the {@link ResvType} values. */
export type ResvType = (typeof ResvType)[keyof typeof ResvType]

/** `enum iommu_hw_info_type`: what `hwInfo` returns (uAPI values). */
export const HwInfoType = {
  NONE: 0,
  /** Input only: the caller has no preference. Same value as NONE. */
  DEFAULT: 0,
  INTEL_VTD: 1,
  ARM_SMMUV3: 2,
  TEGRA241_CMDQV: 3,
  AMD: 4,
} as const

/** `enum iommu_hwpt_data_type`: user data accompanying a domain allocation (uAPI values). */
export const HwptDataType = {
  NONE: 0,
  VTD_S1: 1,
  ARM_SMMUV3: 2,
  AMD_GUEST: 3,
} as const

/** The CPU page size of the simulated machine (x86-64 / arm64 4K). */
export const PAGE_SIZE = 4096
/** log2 of {@link PAGE_SIZE}. */
export const PAGE_SHIFT = 12

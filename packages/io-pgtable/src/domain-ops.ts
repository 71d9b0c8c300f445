/**
 * The ops a driver domain gets from its `PageTable`: the analogue of the kernel's
 * `IOMMU_PT_DOMAIN_OPS(fmt)` and `IOMMU_PT_DIRTY_OPS(fmt)`. A driver spreads them into its
 * `DomainOps` and `DirtyOps` and writes only the hardware hooks.
 *
 * @module
 */

import { type DirtyOps, type DomainOps, type IommuDomain, MAP_SMALL } from '@iommu/core'
import type { AnyPageTableFormat } from './format.ts'
import type { AnyPageTable } from './page-table.ts'

/** The page-table members of `DomainOps` (`map_range`/`unmap_range` only under generic_pt). */
export type PageTableDomainOps<D extends IommuDomain> = Required<
  Pick<DomainOps<D>, 'mapPages' | 'unmapPages' | 'iovaToPhys' | typeof MAP_SMALL>
> &
  Pick<DomainOps<D>, 'mapRange' | 'unmapRange'>

/** How the ops find a domain's page table. */
export type TableOf<D extends IommuDomain> = (domain: D) => AnyPageTable

/**
 * pageTableDomainOps() - `mapPages`, `unmapPages`, `iovaToPhys`, the model's
 * `[MAP_SMALL]` fast path (runs of one-page maps written a table at a time, for iommufd
 * with large pages disabled) and, for a `'generic-pt'`
 * format, `mapRange`/`unmapRange` (so the core hands whole ranges to the page table, as
 * `iommu_map` does for an iommupt domain). An `'io-pgtable-arm'` format gets no range ops:
 * the core then checks alignment and splits with `iommu_pgsize`, as for io-pgtable domains.
 *
 * @param format - the format of every table `table` returns
 * @param table - the domain's page table
 */
export function pageTableDomainOps<D extends IommuDomain>(
  format: AnyPageTableFormat,
  table: TableOf<D>,
): PageTableDomainOps<D> {
  const ops: PageTableDomainOps<D> = {
    mapPages: (domain, iova, paddr, pgsize, pgcount, prot) =>
      table(domain).mapPages(iova, paddr, pgsize, pgcount, prot),
    unmapPages: (domain, iova, pgsize, pgcount, gather) =>
      table(domain).unmapPages(iova, pgsize, pgcount, gather),
    iovaToPhys: (domain, iova) => table(domain).iovaToPhys(iova),
    [MAP_SMALL]: (domain, iova, paddr, size, prot) =>
      table(domain).mapSmall(iova, paddr, size, prot),
  }
  if (format.algorithm === 'generic-pt') {
    ops.mapRange = (domain, iova, paddr, size, prot) =>
      table(domain).mapRange(iova, paddr, size, prot)
    ops.unmapRange = (domain, iova, size, gather) => table(domain).unmapRange(iova, size, gather)
  }
  return ops
}

/**
 * pageTableDirtyOps() - `readAndClearDirty` from the domain's page table. The driver adds
 * `setDirtyTracking` (its hardware knob: DTE.HAD, PASID SSADE, ...) and any policy of its
 * own (AMD and VT-d refuse a bitmap while tracking is off: EINVAL).
 */
export function pageTableDirtyOps<D extends IommuDomain>(
  table: TableOf<D>,
): Pick<DirtyOps<D>, 'readAndClearDirty'> {
  return {
    readAndClearDirty: (domain, iova, size, flags, dirty) =>
      table(domain).readAndClearDirty(iova, size, flags, dirty),
  }
}

/**
 * The IOMMU vendors the simulator knows by name, side by side: how each is built for a run
 * (driver options, the unit's hardware configuration), which dirty path its driver uses,
 * which IOPTE policies its page table allows, and a small uniform view of its hardware
 * counters and of its missing-invalidation detector. The drivers are used as they are: the
 * adapters only read what each unit already exposes (`stats`, its TLB's `stats`,
 * `staleUses`).
 *
 * @module
 */

import type { Driver, IommuDomain, IommuSpec, IommuUnit } from '@iommu/core'
import { mockIommu } from '@iommu/core/testing/mock'
import { AmdIommuHw, amd } from '@iommu/driver-amd'
import { Cap, DEFAULT_CAP, intel, VtdIommuHw } from '@iommu/driver-intel'
import { SmmuV3Hw, smmuv3 } from '@iommu/driver-smmuv3'
import { PageTable } from '@iommu/io-pgtable'

const MIB = 2 ** 20

/** The IOMMU models the simulator has by name. */
export const IOMMU_MODELS = ['amd', 'intel', 'smmuv3', 'mock'] as const
/** One of {@link IOMMU_MODELS}. */
export type IommuModel = (typeof IOMMU_MODELS)[number]

/** Whether `name` is one of {@link IOMMU_MODELS}. */
export function isIommuModel(name: string): name is IommuModel {
  return (IOMMU_MODELS as readonly string[]).includes(name)
}

/**
 * The IOPTE size policies: a name for `--iopte`, its help, and the named IOMMU models it
 * runs on (a policy that resizes IOPTEs needs a page-table driver; contiguous leaves are
 * AMD v1's NextLevel 7). One line per policy.
 */
export const IOPTE_MODES = [
  { name: '4k', help: '4 KiB IOPTEs (huge pages off in the IOAS)', models: IOMMU_MODELS },
  { name: '2m', help: '2 MiB IOPTEs where memory allows', models: IOMMU_MODELS },
  {
    name: 'split',
    help: '2 MiB mapped, split to 4 KiB while tracking, merged after',
    models: ['amd', 'intel', 'smmuv3'],
  },
  { name: '16k', help: 'AMD v1 contiguous leaves: 4 x 4 KiB items (NextLevel 7)', models: ['amd'] },
  {
    name: '64k',
    help: 'AMD v1 contiguous leaves: 16 x 4 KiB items (NextLevel 7)',
    models: ['amd'],
  },
] as const satisfies readonly {
  readonly name: string
  readonly help: string
  readonly models: readonly IommuModel[]
}[]
/** IOPTE size policy: one of {@link IOPTE_MODES}. */
export type IopteMode = (typeof IOPTE_MODES)[number]['name']
/** The modes that map AMD v1 contiguous leaves (NextLevel 7) of 4 KiB items. */
export const CONTIGUOUS_IOPTE_MODES: readonly IopteMode[] = ['16k', '64k']

/** A unit's counters, the same fields for every vendor. */
export interface HwStats {
  /** Translations the unit performed (every DMA page). */
  readonly translations: number
  /** Page-table walks (IOTLB misses that went to memory). */
  readonly walks: number
  readonly iotlbHits: number
  readonly iotlbMisses: number
  /** Commands or descriptors the driver issued to the invalidation queue, waits and syncs included. */
  readonly queueCommands: number
  /** What {@link queueCommands} counts on this vendor. */
  readonly queueCommandsAre: string
}

/** One missing invalidation, as a vendor's detector words it. */
export interface StaleUse {
  /** The cache that held the stale entry. */
  readonly cache: string
  /** The command or descriptor that would have dropped it. */
  readonly missing: string
  readonly what: string
  /** The DMA's IOVA and direction. */
  readonly iova: bigint
  readonly write: boolean
}

/** What the simulator knows of one vendor. */
export interface Vendor {
  readonly model: IommuModel
  /** The hardware's name. */
  readonly label: string
  /** Where the dirty bits live and who sets them. */
  readonly dirtyPath: string
  /** The same for the stage-2 (nest parent) table of a vIOMMU guest. */
  readonly nestedDirtyPath: string
  /** The units' counters, or null when the unit keeps none. */
  stats(unit: IommuUnit): HwStats | null
  /** Uses of stale cache entries the unit's detector recorded. */
  staleUses(unit: IommuUnit): readonly StaleUse[]
}

/** Options that choose how a named vendor is built. */
export interface VendorBuild {
  readonly iopte: IopteMode
  /** Run the unit's missing-invalidation detector on every cache hit. */
  readonly detector: boolean
  /** Fix the known 7.2 kernel bugs of the vendor (SMMUv3: the flush after a dirty clear). */
  readonly ideal: boolean
}

const UNIT_CLASSES = { amd: AmdIommuHw, intel: VtdIommuHw, smmuv3: SmmuV3Hw } as const

function hwStats(
  s: { translations: number; walks: number },
  tlb: { hits: number; misses: number },
  queueCommands: number,
  queueCommandsAre: string,
): HwStats {
  return {
    translations: s.translations,
    walks: s.walks,
    iotlbHits: tlb.hits,
    iotlbMisses: tlb.misses,
    queueCommands,
    queueCommandsAre,
  }
}

/** A detector's record, in the common shape. */
function staleUse(s: StaleUse): StaleUse {
  return { cache: s.cache, missing: s.missing, what: s.what, iova: s.iova, write: s.write }
}

/** Every named vendor. */
export const VENDORS: Readonly<Record<IommuModel, Vendor>> = {
  amd: {
    model: 'amd',
    label: 'AMD-Vi',
    dirtyPath: 'AMD v1 IOPTE D bit (bit 6), set by the IOMMU with DTE.HAD',
    nestedDirtyPath: 'none (the AMD vIOMMU of 7.2 is not modelled yet)',
    stats: (u) =>
      u instanceof AmdIommuHw
        ? hwStats(u.stats, u.iotlb.stats, u.stats.commands, 'command-buffer entries')
        : null,
    staleUses: (u) => (u instanceof AmdIommuHw ? u.staleUses : []),
  },
  intel: {
    model: 'intel',
    label: 'Intel VT-d',
    dirtyPath: 'VT-d second-stage D bit (bit 9), set by the IOMMU with PASID-entry SSADE',
    nestedDirtyPath: 'VT-d second-stage D bit of the nest parent (SSADE in the nested PASID entry)',
    stats: (u) =>
      u instanceof VtdIommuHw
        ? hwStats(u.stats, u.iotlb.stats, u.stats.descriptors, 'queued-invalidation descriptors')
        : null,
    staleUses: (u) => (u instanceof VtdIommuHw ? u.staleUses.map(staleUse) : []),
  },
  smmuv3: {
    model: 'smmuv3',
    label: 'ARM SMMUv3',
    dirtyPath:
      'SMMUv3 stage-1 HTTU with DBM: the SMMU clears AP[2] of a writable-clean leaf (CD.HD)',
    nestedDirtyPath: 'unavailable on nest parent (7.2 SMMUv3)',
    stats: (u) =>
      u instanceof SmmuV3Hw
        ? hwStats(u.stats, u.tlb.stats, u.stats.commands, 'command-queue entries')
        : null,
    staleUses: (u) => (u instanceof SmmuV3Hw ? u.staleUses.map(staleUse) : []),
  },
  mock: {
    model: 'mock',
    label: 'iommufd selftest mock',
    dirtyPath: 'the mock IOPTE dirty bit, set by the mock on every write',
    nestedDirtyPath: 'the mock parent IOPTE dirty bit',
    stats: () => null,
    staleUses: () => [],
  },
}

/**
 * The machine's IOMMU entry for a named model.
 *
 * VT-d with `2m`/`split`: a unit whose CAP.SLLPS has 2 MiB only, so that the second stage
 * maps 2 MiB leaves (a VMM asking for 2M mappings) rather than 1 GiB ones.
 */
export function buildVendor(model: IommuModel, o: VendorBuild): Driver | IommuSpec {
  const detectStale = o.detector
  switch (model) {
    case 'amd': {
      if (o.iopte === '16k' || o.iopte === '64k') {
        // 4 KiB items and one contiguous size: NextLevel=7 leaves of 4 or 16 replicas.
        const pg = 0x1000n | (o.iopte === '16k' ? 0x4000n : 0x1_0000n)
        return { driver: amd({ pgsizeBitmap: pg }), config: { detectStale } }
      }
      // 4 KiB and 2 MiB IOPTEs only, as a VMM asking for 2M mappings expects.
      const driver = amd(o.iopte === '4k' ? {} : { pgsizeBitmap: 0x1000n | 0x20_0000n })
      return { driver, config: { detectStale } }
    }
    case 'intel': {
      const sllps2m = (DEFAULT_CAP & ~(0xfn << Cap.SLLPS_SHIFT)) | (1n << Cap.SLLPS_SHIFT)
      return {
        driver: intel(),
        config: o.iopte === '4k' ? { detectStale } : { detectStale, cap: sllps2m },
      }
    }
    case 'smmuv3':
      return {
        driver: smmuv3(o.ideal ? { flushAfterDirtyClear: true } : {}),
        config: { detectStale },
      }
    case 'mock':
      return o.iopte === '4k'
        ? mockIommu({ ioPageSize: 4096, aperture: { start: 0n, end: 2n ** 48n - 1n } })
        : mockIommu({
            ioPageSize: 4096,
            hugePageSize: 2 * MIB,
            aperture: { start: 0n, end: 2n ** 48n - 1n },
          })
  }
}

/** The named vendor whose hardware `unit` is, or null (a plugin's unit, the mock's). */
export function vendorOfUnit(unit: IommuUnit | undefined): Vendor | null {
  for (const [name, cls] of Object.entries(UNIT_CLASSES)) {
    if (unit instanceof cls) return VENDORS[name as keyof typeof UNIT_CLASSES]
  }
  return null
}

/**
 * The page table behind a paging domain, for the IOPTE size operations (split / merge):
 * `pt` (AMD, SMMUv3, plugins made with `@iommu/io-pgtable`) or VT-d's second stage `sspt`.
 */
export function pageTableOf(domain: IommuDomain): PageTable | null {
  for (const key of ['pt', 'sspt']) {
    const pt = (domain as unknown as Record<string, unknown>)[key]
    if (pt instanceof PageTable) return pt
  }
  return null
}

/** One line per kind of missing invalidation, with how often it happened. */
export interface StaleSummary {
  readonly missing: string
  readonly cache: string
  /** DMA uses of stale entries. */
  readonly uses: number
  /** Of them, writes. */
  readonly writes: number
  /** Distinct 4 KiB IOVA pages. */
  readonly pages: number
  /** The first one, as the detector words it. */
  readonly example: string
  /** The kernel's reason, where it is a known 7.2 bug; else null. */
  readonly cause: string | null
}

/**
 * Why 7.2 sends no TLBI after a clearing dirty read on SMMUv3 (drivers/iommu/arm/arm-smmu-v3):
 * the dirty bitmap's gather has no page size.
 */
export const SMMUV3_DIRTY_CLEAR_CAUSE =
  'Linux 7.2: arm_smmu_iotlb_sync() returns when gather->pgsize == 0, and the gather of ' +
  'IOMMU_HWPT_GET_DIRTY_BITMAP (iommu_dirty_bitmap_record) never sets one, so the clear sends ' +
  'no TLBI; writes through TLB entries still holding the leaf writable-dirty are not logged'

/**
 * Summarize stale uses per missing command. `dirtyClears` tells whether the run cleared
 * dirty bits by reading the bitmap (where SMMUv3's missing TLBI_NH_VA is the kernel bug).
 */
export function summarizeStale(
  vendor: Vendor | null,
  uses: readonly StaleUse[],
  dirtyClears: boolean,
): StaleSummary[] {
  const by = new Map<string, StaleUse[]>()
  for (const u of uses) {
    const k = `${u.missing}\0${u.cache}`
    const list = by.get(k) ?? []
    list.push(u)
    by.set(k, list)
  }
  const out: StaleSummary[] = []
  for (const list of by.values()) {
    const first = list[0] as StaleUse
    const pages = new Set(list.map((u) => u.iova >> 12n))
    const knownBug =
      vendor?.model === 'smmuv3' &&
      dirtyClears &&
      first.missing === 'TLBI_NH_VA' &&
      first.cache === 'tlb' &&
      /dirty/i.test(first.what)
    out.push({
      missing: first.missing,
      cache: first.cache,
      uses: list.length,
      writes: list.filter((u) => u.write).length,
      pages: pages.size,
      example: `${first.write ? 'write' : 'read'} at IOVA 0x${first.iova.toString(16)}: ${first.what}`,
      cause: knownBug ? SMMUV3_DIRTY_CLEAR_CAUSE : null,
    })
  }
  return out
}

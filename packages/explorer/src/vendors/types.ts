/**
 * The explorer's vendor plug-in point. One small descriptor per IOMMU model says how to
 * build a unit, where a device's entry is and how to decode it, what the unit caches and
 * queues, and what its detectors found. Everything else (machine builder, command panel,
 * page-table tree, migration) is shared.
 *
 * To add a vendor: write `vendors/<name>.ts` exporting a {@link VendorDescriptor} and list
 * it in `vendors/index.ts`.
 *
 * @module
 */

import type { Driver, IommuDomain, IommuSpec, IommuUnit, Machine, PciDevice } from '@iommu/core'
import type { Decoded } from '../decode/bitfield.ts'
import type { TableSource } from '../model/pgtable.ts'

/** A vendor option shown in the machine builder (stored in the scenario). */
export interface VendorOption {
  readonly key: string
  readonly label: string
  /** A checkbox (boolean) or a list of choices (string). */
  readonly kind: 'boolean' | 'choice'
  readonly choices?: readonly string[]
  readonly default: boolean | string
  readonly help?: string
}

/** Option values after defaults. */
export type VendorOptions = Readonly<Record<string, boolean | string>>

/** One decoded structure for a structure panel. */
export interface StructView {
  readonly decoded: Decoded
  /** A line under the title (where it lives, who wrote it). */
  readonly note?: string
  /** Set when the structure differs from what the hardware cached. */
  readonly warning?: string
}

/** A row of a cache or queue listing; selecting it shows `decoded`. */
export interface ListRow {
  readonly cells: readonly string[]
  readonly decoded?: Decoded
  /** How to tint the row. */
  readonly tone?: 'stale' | 'fault' | 'dim' | 'pending'
}

/** A cache or queue, as a table. */
export interface ListView {
  readonly title: string
  readonly ref?: string
  /** A summary line (pointers, counters). */
  readonly note?: string
  readonly columns: readonly string[]
  readonly rows: readonly ListRow[]
  /** Shown when there are no rows. */
  readonly empty: string
}

/** One finding of a detector. */
export interface Finding {
  readonly severity: 'error' | 'warning' | 'info'
  readonly text: string
  /** Named details (device, IOVA, missing command, ...). */
  readonly detail: Readonly<Record<string, string>>
}

/** A detector's report. */
export interface DetectorReport {
  readonly title: string
  /** What it checks, in one sentence. */
  readonly about: string
  readonly findings: readonly Finding[]
  /** Whether the detector is running. */
  readonly enabled: boolean
}

/** A vendor's fault-injection switch (a test hook of its driver). */
export interface VendorHook {
  readonly name: string
  readonly label: string
  set(driver: Driver, on: boolean): void
}

/** A driver whose domains are not tables in memory (the selftest mock) lists its IOPTEs. */
export interface DomainEntriesView {
  readonly title: string
  readonly ref?: string
  readonly columns: readonly string[]
  readonly rows: readonly ListRow[]
  readonly empty: string
}

/** What a descriptor gets to look at. */
export interface VendorContext {
  readonly machine: Machine
  readonly unit: IommuUnit
}

/** An IOVA range the VMM mapped (from the IOAS), for views that scan by range. */
export interface MappedRange {
  readonly iova: bigint
  readonly length: bigint
}

/** An IOMMU model the explorer can show. */
export interface VendorDescriptor {
  /** Stable ID stored in scenarios (`'amd'`). */
  readonly id: string
  /** Display name (`'AMD-Vi'`). */
  readonly label: string
  /**
   * Whether dirty tracking is a per-device property (the selftest mock's
   * `MOCK_FLAGS_DEVICE_NO_DIRTY`): the machine builder then offers a checkbox per device.
   * On hardware it is the unit's (AMD EFR.HDSup, VT-d ECAP.SSADS, SMMUv3 IDR0.HTTU): one of
   * the vendor's {@link options}.
   */
  readonly deviceDirtyTracking: boolean
  /** One line on what is modelled. */
  readonly about: string
  readonly options: readonly VendorOption[]
  /** The `createMachine` entry for one unit with these options. */
  createIommu(options: VendorOptions): IommuSpec
  /** What a device's entry is called (`'DTE'`, `'Context / PASID entry'`, `'STE / CD'`). */
  readonly deviceEntryName: string
  /** The device's entry (and what hangs off it), decoded, read from memory. */
  deviceEntries(ctx: VendorContext, dev: PciDevice): StructView[]
  /** Unit registers worth decoding (base addresses, control, features). */
  registers(ctx: VendorContext): StructView[]
  /** Translation and configuration caches, with their tags. */
  caches(ctx: VendorContext): ListView[]
  /** Command and event queues, with decoded records. */
  queues(ctx: VendorContext): ListView[]
  /**
   * The vendor's own detectors (e.g. AMD's missing-invalidation detector); the session adds
   * the machine's dirty-tracking hazard detector for every vendor.
   */
  detectors(ctx: VendorContext): DetectorReport[]
  /** The domain's IO page table in memory, or null (identity, blocked, mock). */
  pageTable(domain: IommuDomain): TableSource | null
  /** For drivers without in-memory tables: the domain's IOPTEs over the mapped ranges. */
  domainEntries?(domain: IommuDomain, ranges: readonly MappedRange[]): DomainEntriesView
  /** Fault-injection switches (issued as `HOOK` commands, so permalinks replay them). */
  readonly hooks: readonly VendorHook[]
  /**
   * The `@iommu/sim` model name for the migration view (`'amd'`, `'mock'`); null runs the sim
   * over this descriptor's own unit (`createIommu`), which it takes as any driver.
   */
  readonly simModel: string | null
}

/** Fill in option defaults. */
export function vendorOptions(v: VendorDescriptor, given: VendorOptions): VendorOptions {
  const out: Record<string, boolean | string> = {}
  for (const o of v.options) {
    const g = given[o.key]
    const ok =
      o.kind === 'boolean'
        ? typeof g === 'boolean'
        : typeof g === 'string' && (o.choices ?? []).includes(g)
    out[o.key] = ok ? (g as boolean | string) : o.default
  }
  return out
}

/**
 * The command panel's form: which fields each command has, and a reducer from edits to a
 * command input that {@link buildCommand} validates. Pure, so it is tested without a DOM.
 *
 * @module
 */

import type { Command, CommandInput } from './scenario.ts'

/** How a field is edited. */
export type FieldKind = 'u64' | 'int' | 'bool' | 'dev' | 'id' | 'hook' | 'viommuType'

/** One field of a command form. */
export interface FieldDef {
  readonly key: string
  readonly label: string
  readonly kind: FieldKind
}

/** The commands of the panel, grouped, with the uAPI (or VFIO / DMA) name shown. */
export const OPS: readonly {
  readonly op: Command['op']
  readonly label: string
  readonly group: string
}[] = [
  { op: 'IOAS_ALLOC', label: 'IOMMU_IOAS_ALLOC', group: 'IOAS' },
  { op: 'IOAS_MAP', label: 'IOMMU_IOAS_MAP', group: 'IOAS' },
  { op: 'IOAS_UNMAP', label: 'IOMMU_IOAS_UNMAP', group: 'IOAS' },
  { op: 'OPTION_HUGE_PAGES', label: 'IOMMU_OPTION (HUGE_PAGES)', group: 'IOAS' },
  { op: 'HWPT_ALLOC', label: 'IOMMU_HWPT_ALLOC', group: 'HWPT' },
  { op: 'GET_HW_INFO', label: 'IOMMU_GET_HW_INFO', group: 'HWPT' },
  { op: 'DESTROY', label: 'IOMMU_DESTROY', group: 'HWPT' },
  { op: 'ATTACH', label: 'VFIO_DEVICE_ATTACH_IOMMUFD_PT', group: 'Device' },
  { op: 'REPLACE', label: 'VFIO_DEVICE_ATTACH_IOMMUFD_PT (replace)', group: 'Device' },
  { op: 'DETACH', label: 'VFIO_DEVICE_DETACH_IOMMUFD_PT', group: 'Device' },
  { op: 'SET_DIRTY_TRACKING', label: 'IOMMU_HWPT_SET_DIRTY_TRACKING', group: 'Dirty tracking' },
  { op: 'GET_DIRTY_BITMAP', label: 'IOMMU_HWPT_GET_DIRTY_BITMAP', group: 'Dirty tracking' },
  { op: 'VIOMMU_ALLOC', label: 'IOMMU_VIOMMU_ALLOC', group: 'vIOMMU' },
  { op: 'VDEVICE_ALLOC', label: 'IOMMU_VDEVICE_ALLOC', group: 'vIOMMU' },
  { op: 'DMA_WRITE', label: 'DMA write', group: 'DMA' },
  { op: 'DMA_READ', label: 'DMA read', group: 'DMA' },
  { op: 'HOOK', label: 'Driver fault injection', group: 'Fault injection' },
]

const ioas: FieldDef = { key: 'ioas', label: 'ioas_id', kind: 'id' }
const dev: FieldDef = { key: 'dev', label: 'device', kind: 'dev' }
const iova: FieldDef = { key: 'iova', label: 'iova', kind: 'u64' }
const length: FieldDef = { key: 'length', label: 'length', kind: 'u64' }

/** The fields of each command, in the order the form shows them. */
export const FIELDS: Readonly<Record<Command['op'], readonly FieldDef[]>> = {
  IOAS_ALLOC: [],
  IOAS_MAP: [
    ioas,
    { key: 'offset', label: 'user_va = guest +', kind: 'u64' },
    length,
    iova,
    { key: 'read', label: 'READABLE', kind: 'bool' },
    { key: 'write', label: 'WRITEABLE', kind: 'bool' },
    { key: 'fixed', label: 'FIXED_IOVA', kind: 'bool' },
  ],
  IOAS_UNMAP: [ioas, iova, length],
  OPTION_HUGE_PAGES: [ioas, { key: 'enable', label: 'val64 = 1 (allow huge)', kind: 'bool' }],
  HWPT_ALLOC: [
    dev,
    { key: 'pt', label: 'pt_id', kind: 'id' },
    { key: 'dirtyTracking', label: 'DIRTY_TRACKING', kind: 'bool' },
    { key: 'nestParent', label: 'NEST_PARENT', kind: 'bool' },
  ],
  GET_HW_INFO: [dev],
  DESTROY: [{ key: 'id', label: 'id', kind: 'id' }],
  ATTACH: [dev, { key: 'pt', label: 'pt_id', kind: 'id' }],
  REPLACE: [dev, { key: 'pt', label: 'pt_id', kind: 'id' }],
  DETACH: [dev],
  SET_DIRTY_TRACKING: [
    { key: 'hwpt', label: 'hwpt_id', kind: 'id' },
    { key: 'enable', label: 'ENABLE', kind: 'bool' },
  ],
  GET_DIRTY_BITMAP: [
    { key: 'hwpt', label: 'hwpt_id', kind: 'id' },
    iova,
    length,
    { key: 'noClear', label: 'NO_CLEAR', kind: 'bool' },
  ],
  VIOMMU_ALLOC: [
    dev,
    { key: 'hwpt', label: 'hwpt_id (nest parent)', kind: 'id' },
    { key: 'type', label: 'type', kind: 'viommuType' },
  ],
  VDEVICE_ALLOC: [
    { key: 'viommu', label: 'viommu_id', kind: 'id' },
    dev,
    { key: 'virtId', label: 'virt_id', kind: 'u64' },
  ],
  DMA_WRITE: [dev, iova, { key: 'length', label: 'bytes', kind: 'int' }],
  DMA_READ: [dev, iova, { key: 'length', label: 'bytes', kind: 'int' }],
  HOOK: [
    { key: 'name', label: 'hook', kind: 'hook' },
    { key: 'on', label: 'on', kind: 'bool' },
  ],
}

const SUFFIX: Readonly<Record<string, bigint>> = { k: 10n, m: 20n, g: 30n, t: 40n }

/**
 * A u64 as the scenario stores it (`0x…`): hex stays hex, decimal and sizes with a
 * K/M/G/T suffix (`2M`, `4k`) are converted; anything else is returned as typed, for the
 * validation to reject.
 */
export function toHexU64(text: string): string {
  const t = text.trim().toLowerCase().replaceAll('_', '')
  const m = /^(\d+)([kmgt])i?b?$/.exec(t)
  if (m !== null)
    return `0x${(BigInt(m[1] as string) << (SUFFIX[m[2] as string] as bigint)).toString(16)}`
  if (/^\d+$/.test(t)) return `0x${BigInt(t).toString(16)}`
  return t
}

/** An edit of the form. */
export type FormAction =
  | { readonly type: 'op'; readonly suggestion: CommandInput }
  | { readonly type: 'field'; readonly key: string; readonly value: string | boolean }

/**
 * The form after an edit. Text inputs stay text while typed (so `0x` can be typed); ID,
 * device and byte fields become numbers when they parse as one.
 */
export function formReducer(form: CommandInput, a: FormAction): CommandInput {
  if (a.type === 'op') return a.suggestion
  const def = FIELDS[form.op].find((f) => f.key === a.key)
  if (def === undefined) return form
  let value: unknown = a.value
  if (
    typeof a.value === 'string' &&
    (def.kind === 'int' || def.kind === 'id' || def.kind === 'dev')
  ) {
    const t = a.value.trim()
    const n = /^0x[0-9a-f]+$/i.test(t)
      ? Number.parseInt(t, 16)
      : /^\d+$/.test(t)
        ? Number(t)
        : Number.NaN
    value = Number.isNaN(n) ? a.value : n
  }
  if (typeof a.value === 'string' && def.kind === 'u64') value = toHexU64(a.value)
  return { ...form, [a.key]: value } as CommandInput
}

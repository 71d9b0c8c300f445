/**
 * `sizeof` and the minimum accepted `size` of every ioctl struct, for callers that lay
 * structs out in process memory (`fd.ioctl(cmd, address)`) or test the size rules.
 *
 * @module
 */

import type { StructLayout } from './struct.ts'
import * as S from './structs.ts'

/** The size facts of one uAPI struct. */
export interface UapiStruct {
  /** `sizeof(struct)`. */
  readonly sizeof: number
  /** `offsetofend` of the last field of the first version: smaller sizes are EINVAL. */
  readonly minSize: number
  /** Field byte offsets, by name (`offsetof`). */
  readonly offsetof: Readonly<Record<string, number>>
}

function facts(l: StructLayout<unknown>): UapiStruct {
  const offsetof: Record<string, number> = {}
  for (const f of l.fields) offsetof[f.name] = f.off
  for (const m of l.members) for (const f of m.fields) offsetof[`${m.name}.${f.name}`] = f.off
  return { sizeof: l.sizeof, minSize: l.minSize, offsetof }
}

/** Size facts by kernel struct name (`UAPI_STRUCTS.iommu_ioas_map.sizeof === 40`). */
export const UAPI_STRUCTS: Readonly<Record<string, UapiStruct>> = Object.fromEntries(
  Object.values(S as Record<string, unknown>)
    .filter((v): v is StructLayout<unknown> => typeof v === 'object' && v !== null && 'sizeof' in v)
    .map((l) => [l.name, facts(l)]),
)

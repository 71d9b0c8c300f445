/**
 * Typed driver data: a driver declares the uAPI struct it takes (`struct
 * iommu_hwpt_vtd_s1`, `struct iommu_hwpt_arm_smmuv3`, an invalidation entry ...) once, with
 * the type tag and its first version's last member, and decodes user data with the kernel's
 * size rules (`iommu_copy_struct_from_user`, `..._from_user_array`,
 * `..._from_full_user_array`, `iommu_copy_struct_to_user`).
 *
 * Fields are laid out in order with C's natural alignment (each field aligned to its own
 * size, the struct to its largest member), little-endian, as in
 * `include/uapi/linux/iommufd.h`.
 *
 * @example
 * ```ts
 * const HWPT_VTD_S1 = defineUserStruct({
 *   name: 'iommu_hwpt_vtd_s1',
 *   type: HwptDataType.VTD_S1,
 *   fields: [['flags', 'u64'], ['pgtbl_addr', 'u64'], ['addr_width', 'u32'], ['__reserved', 'u32']],
 *   minLast: '__reserved',
 * })
 * const s1 = HWPT_VTD_S1.fromUser(data) // { flags: bigint, pgtbl_addr: bigint, ... }
 * ```
 *
 * @module
 */

import {
  copyStructFromFullUserArray,
  copyStructFromUser,
  copyStructFromUserArray,
  copyStructToUser,
  type UserData,
  type UserDataArray,
} from './domain.ts'

/** A field's C type. */
export type UserFieldType = 'u8' | 'u16' | 'u32' | 'u64'

/** One field: `[name, type]` or `[name, type, count]` for an array (`__le64 ste[2]`). */
export type UserField =
  | readonly [name: string, type: UserFieldType]
  | readonly [name: string, type: UserFieldType, count: number]

type Scalar<T extends UserFieldType> = T extends 'u64' ? bigint : number
type FieldValue<F> = F extends readonly [string, infer T extends UserFieldType, number]
  ? Scalar<T>[]
  : F extends readonly [string, infer T extends UserFieldType]
    ? Scalar<T>
    : never

/** The decoded value of a struct declared with `fields`. */
export type UserStructValue<Fs extends readonly UserField[]> = {
  -readonly [F in Fs[number] as F[0]]: FieldValue<F>
}

/** A declared driver struct. */
export interface DriverDataStruct<T> {
  readonly name: string
  /** The `IOMMU_*_DATA_*` / `*_INVALIDATE_DATA_*` / `IOMMU_VIOMMU_TYPE_*` tag. */
  readonly type: number
  /** `sizeof` the struct. */
  readonly sizeof: number
  /** `offsetofend` of the first version's last member. */
  readonly minLen: number
  /** Field offsets. */
  readonly offsets: Readonly<Record<keyof T & string, number>>
  /** Decode `sizeof` bytes. */
  decode(bytes: DataView, offset?: number): T
  /** Encode a value (fields left out are zero). */
  encode(value: Partial<T>): Uint8Array
  /** `iommu_copy_struct_from_user`. @throws EINVAL, EFAULT */
  fromUser(data: UserData | null): T
  /** `iommu_copy_struct_from_user_array` (entry `index`). @throws EINVAL, EFAULT */
  fromUserArray(array: UserDataArray, index: number): T
  /** `iommu_copy_struct_from_full_user_array`. @throws EINVAL, E2BIG, EFAULT */
  fromFullUserArray(array: UserDataArray): T[]
  /** `iommu_copy_struct_to_user`. @throws EINVAL, EFAULT */
  toUser(data: UserData | null, value: Partial<T>): void
}

const SIZE: Record<UserFieldType, number> = { u8: 1, u16: 2, u32: 4, u64: 8 }

/**
 * Declare a driver data struct; see the module example.
 *
 * @param spec.minLast - the last member of the struct's first version (`min_last`)
 */
export function defineUserStruct<const Fs extends readonly UserField[]>(spec: {
  readonly name: string
  readonly type: number
  readonly fields: Fs
  readonly minLast: Fs[number][0]
}): DriverDataStruct<UserStructValue<Fs>> {
  type T = UserStructValue<Fs>
  const layout: { name: string; type: UserFieldType; count: number; off: number }[] = []
  let off = 0
  let align = 1
  for (const f of spec.fields) {
    const size = SIZE[f[1]]
    off = Math.ceil(off / size) * size
    align = Math.max(align, size)
    const count = f.length === 3 ? f[2] : 0
    layout.push({ name: f[0], type: f[1], count, off })
    off += size * Math.max(count, 1)
  }
  const sizeof = Math.ceil(off / align) * align
  const last = layout.find((f) => f.name === spec.minLast)
  if (last === undefined) throw new Error(`${spec.name}: no member ${spec.minLast}`)
  const minLen = last.off + SIZE[last.type] * Math.max(last.count, 1)
  const offsets = Object.fromEntries(layout.map((f) => [f.name, f.off])) as Record<
    keyof T & string,
    number
  >

  const get = (v: DataView, at: number, t: UserFieldType): number | bigint => {
    switch (t) {
      case 'u8':
        return v.getUint8(at)
      case 'u16':
        return v.getUint16(at, true)
      case 'u32':
        return v.getUint32(at, true)
      default:
        return v.getBigUint64(at, true)
    }
  }
  const set = (v: DataView, at: number, t: UserFieldType, x: unknown): void => {
    switch (t) {
      case 'u8':
        v.setUint8(at, Number(x ?? 0))
        return
      case 'u16':
        v.setUint16(at, Number(x ?? 0), true)
        return
      case 'u32':
        v.setUint32(at, Number(x ?? 0), true)
        return
      default:
        v.setBigUint64(at, BigInt((x as bigint | number | undefined) ?? 0n), true)
    }
  }

  const decode = (v: DataView, base = 0): T => {
    const out: Record<string, unknown> = {}
    for (const f of layout) {
      const size = SIZE[f.type]
      if (f.count) {
        const arr: (number | bigint)[] = []
        for (let i = 0; i < f.count; i++) arr.push(get(v, base + f.off + i * size, f.type))
        out[f.name] = arr
      } else out[f.name] = get(v, base + f.off, f.type)
    }
    return out as T
  }
  const encode = (value: Partial<T>): Uint8Array => {
    const buf = new Uint8Array(sizeof)
    const v = new DataView(buf.buffer)
    const rec = value as Record<string, unknown>
    for (const f of layout) {
      const x = rec[f.name]
      if (f.count) {
        const arr = (x ?? []) as unknown[]
        for (let i = 0; i < f.count; i++) set(v, f.off + i * SIZE[f.type], f.type, arr[i])
      } else set(v, f.off, f.type, x)
    }
    return buf
  }
  return {
    name: spec.name,
    type: spec.type,
    sizeof,
    minLen,
    offsets,
    decode,
    encode,
    fromUser: (data) => decode(copyStructFromUser(data, spec.type, sizeof, minLen)),
    fromUserArray: (array, index) =>
      decode(copyStructFromUserArray(array, spec.type, index, sizeof, minLen)),
    fromFullUserArray: (array) => {
      const v = copyStructFromFullUserArray(array, spec.type, sizeof)
      const out: T[] = []
      for (let i = 0; i < array.entryNum; i++) out.push(decode(v, i * sizeof))
      return out
    },
    toUser: (data, value) => copyStructToUser(data, spec.type, encode(value), minLen),
  }
}

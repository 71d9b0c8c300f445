/**
 * Kernel struct layouts, C integer conversion, and the one place where user arguments are
 * validated.
 *
 * A layout lists a uAPI struct's fields with the kernel's names and C types; offsets,
 * `sizeof` and the minimum size (`offsetofend` of the last field of the struct's first
 * version) follow from the C layout rules, so the table mirrors `IOCTL_OP(..., last)` of
 * `main.c`. Arguments arrive in one of two shapes:
 *
 * - an object whose keys are the struct's field names, missing fields reading as zero like
 *   a C designated initializer; keys that are not fields stand for bytes past the kernel
 *   struct (the "tail");
 * - the raw bytes of the struct read from the calling process.
 *
 * Values in an object are converted as C converts an integer assigned to the field
 * ({@link cInt}); both shapes then become the struct's bytes, of which the kernel sees
 * the first `size` (the rest zero), and are decoded from there, so union members alias
 * as in C. Every failure maps to an errno in {@link uapiErrno} (reference
 * iommufd-uapi.md §2.1, monorepo-anchors.md §3.6).
 *
 * @module
 */

import { type Errno, IommuError } from '@iommu/core'
import { z } from 'zod'

/** The C type of a scalar field. */
export type ScalarKind = 'u8' | 'u16' | 'u32' | 's32' | 'u64'

/**
 * The C type of a field: a scalar, or an array written `<scalar>x<count>` (`u8x3` is
 * `__u8 __reserved[3]`, `u32x6` is `__u32 idr[6]`, `u64x2` is `__aligned_le64 ste[2]`;
 * the model is little-endian, so `le64` is `u64`).
 */
export type FieldKind = ScalarKind | `${ScalarKind}x${number}`

/** `[name, kind]`, or `[name, kind, other]` for a union member sharing `other`'s offset. */
export type FieldSpec = readonly [name: string, kind: FieldKind, sameAs?: string]

type KindValue<K extends FieldKind> = K extends 'u64'
  ? bigint
  : K extends `u64x${number}`
    ? readonly bigint[]
    : K extends `${ScalarKind}x${number}`
      ? readonly number[]
      : number

/** The TypeScript shape of a struct given its field specs: what the kernel reads. */
export type StructValue<F extends readonly FieldSpec[]> = {
  -readonly [E in F[number] as E[0]]: KindValue<E[1]>
}

/** An integer as C code writes it: a `number` or a `bigint`, whatever the field's width. */
export type CInt = number | bigint

type CValue<V> = V extends number | bigint
  ? CInt
  : V extends readonly unknown[]
    ? ArrayLike<CInt>
    : V extends object
      ? CInit<V>
      : V

/**
 * A struct as a C designated initializer writes it: every field optional (zero when
 * left out), integers as `number` or `bigint` in any field, arrays as any array-like of
 * integers, union members likewise.
 */
export type CInit<T> = { [K in keyof T]?: CValue<T[K]> }

/** One field of a layout. */
export interface Field {
  readonly name: string
  readonly kind: FieldKind
  /** The element type (the field's own type for a scalar). */
  readonly elem: ScalarKind
  /** Elements: 1 for a scalar. */
  readonly count: number
  /** Whether the field is an array (`count` may still be 1). */
  readonly array: boolean
  /** Byte offset in the struct. */
  readonly off: number
  /** Size in bytes. */
  readonly bytes: number
}

/** A union of sub-structs at one offset (`iommu_test_cmd`'s per-operation members). */
export interface UnionMember {
  readonly name: string
  readonly fields: readonly Field[]
}

/** A uAPI struct: field table, `sizeof`, and the size of its first version. */
export interface StructLayout<T> {
  readonly name: string
  /** `sizeof(struct)`. */
  readonly sizeof: number
  /** `offsetofend(struct, last)`: below it the ioctl fails EINVAL. */
  readonly minSize: number
  readonly fields: readonly Field[]
  readonly members: readonly UnionMember[]
  /** Phantom: the decoded shape. */
  readonly _shape?: T
}

const SCALAR_BYTES: Record<ScalarKind, number> = { u8: 1, u16: 2, u32: 4, s32: 4, u64: 8 }

/** Split a kind into element type and count (`'u64x2'` → u64, 2). */
function parseKind(kind: FieldKind): { elem: ScalarKind; count: number; array: boolean } {
  const m = /^(u8|u16|u32|s32|u64)(?:x([1-9][0-9]*))?$/.exec(kind)
  if (m === null) throw new Error(`layout: unknown field kind ${kind}`)
  const elem = m[1] as ScalarKind
  return m[2] === undefined
    ? { elem, count: 1, array: false }
    : { elem, count: Number(m[2]), array: true }
}

function alignUp(v: number, a: number): number {
  return Math.ceil(v / a) * a
}

/** Lay fields out from `start` with C alignment; returns the fields and the end offset. */
function place(specs: readonly FieldSpec[], start: number): { fields: Field[]; end: number } {
  const fields: Field[] = []
  let off = start
  for (const [name, kind, sameAs] of specs) {
    const k = parseKind(kind)
    const bytes = SCALAR_BYTES[k.elem] * k.count
    if (sameAs !== undefined) {
      const other = fields.find((f) => f.name === sameAs)
      if (other === undefined) throw new Error(`layout: ${name} aliases unknown ${sameAs}`)
      fields.push({ name, kind, ...k, off: other.off, bytes })
      continue
    }
    off = alignUp(off, SCALAR_BYTES[k.elem])
    fields.push({ name, kind, ...k, off, bytes })
    off += bytes
  }
  return { fields, end: off }
}

function maxAlign(specs: readonly FieldSpec[]): number {
  return Math.max(1, ...specs.map(([, k]) => SCALAR_BYTES[parseKind(k).elem]))
}

/**
 * Define a struct layout.
 *
 * @param fields - in declaration order
 * @param last - the last field of the struct's first version (its end is the min size)
 * @param union - per-member field lists of an anonymous union placed after `fields` and
 *   before `tail`
 * @param tail - fields after the union
 */
export function defineStruct<const F extends readonly FieldSpec[]>(
  name: string,
  fields: F,
  last: string,
  union: readonly (readonly [string, readonly FieldSpec[]])[] = [],
  tail: readonly FieldSpec[] = [],
): StructLayout<StructValue<F>> {
  const head = place(fields, 0)
  let all = head.fields
  let end = head.end
  let align = maxAlign(fields)
  const members: UnionMember[] = []
  if (union.length > 0) {
    const ua = Math.max(...union.map(([, f]) => maxAlign(f)))
    const base = alignUp(end, ua)
    let size = 0
    for (const [m, specs] of union) {
      const p = place(specs, base)
      members.push({ name: m, fields: p.fields })
      size = Math.max(size, p.end - base)
    }
    end = base + alignUp(size, ua)
    align = Math.max(align, ua)
  }
  if (tail.length > 0) {
    const t = place(tail, end)
    all = [...all, ...t.fields]
    end = t.end
    align = Math.max(align, maxAlign(tail))
  }
  const lastField = all.find((f) => f.name === last)
  if (lastField === undefined) throw new Error(`layout ${name}: no field ${last}`)
  return {
    name,
    sizeof: alignUp(end, align),
    minSize: lastField.off + lastField.bytes,
    fields: all,
    members,
  }
}

// ------------------------------------------------------------------ C integer conversion

/** Why a value is not an integer C could assign (the `IommuError` message says it). */
class NotAnInteger {
  readonly reason: string
  constructor(reason: string) {
    this.reason = reason
  }
}

function describe(v: unknown): string {
  if (v === null) return 'null'
  if (Array.isArray(v)) return 'an array'
  if (typeof v === 'string') return `the string ${JSON.stringify(v).slice(0, 40)}`
  if (typeof v === 'number' || typeof v === 'bigint') return String(v)
  return typeof v === 'object' ? 'an object' : `a ${typeof v}`
}

/**
 * Convert `v` as C converts an integer assigned to a field of type `elem`: the value
 * modulo 2^width, read back as that type (two's complement). `-1` in a `__u32` is
 * 0xffffffff, `-1n` in a `__u64` is U64_MAX, `0x1_0000_0001` in a `__u32` is 1, `-1` in
 * an `__s32` stays -1. A boolean is C's `_Bool`: 1 or 0.
 *
 * Not integers: non-integral, NaN or infinite numbers; numbers beyond 2^53 (a `number`
 * there is not an exact integer: pass a `bigint`); strings, objects, null, symbols.
 *
 * @returns the value in the kernel's type for the field: `bigint` for u64, `number`
 *   otherwise
 */
function cScalar(elem: ScalarKind, v: unknown): number | bigint | NotAnInteger {
  let x = v
  if (typeof x === 'boolean') x = x ? 1 : 0
  if (typeof x === 'number') {
    if (!Number.isInteger(x)) return new NotAnInteger(`${x} is not an integer`)
    if (!Number.isSafeInteger(x)) {
      return new NotAnInteger(`${x} is beyond 2^53, not an exact integer (pass a bigint)`)
    }
    switch (elem) {
      case 'u8':
        return x & 0xff
      case 'u16':
        return x & 0xffff
      case 'u32':
        return x >>> 0
      case 's32':
        return x | 0
      case 'u64':
        return x >= 0 ? BigInt(x) : BigInt.asUintN(64, BigInt(x))
    }
  }
  if (typeof x === 'bigint') {
    switch (elem) {
      case 'u8':
        return Number(BigInt.asUintN(8, x))
      case 'u16':
        return Number(BigInt.asUintN(16, x))
      case 'u32':
        return Number(BigInt.asUintN(32, x))
      case 's32':
        return Number(BigInt.asIntN(32, x))
      case 'u64':
        return BigInt.asUintN(64, x)
    }
  }
  return new NotAnInteger(`${describe(v)} is not an integer`)
}

function isArrayLike(v: unknown): v is ArrayLike<unknown> {
  return Array.isArray(v) || (ArrayBuffer.isView(v) && !(v instanceof DataView))
}

/** Convert a field's value (scalar or array) as C would; arrays shorter than the field are zero-padded. */
function cField(f: Field, v: unknown): number | bigint | (number | bigint)[] | NotAnInteger {
  if (!f.array) return cScalar(f.elem, v)
  if (!isArrayLike(v)) {
    return new NotAnInteger(`${describe(v)} is not an array of ${f.count} ${f.elem}`)
  }
  if (v.length > f.count) {
    return new NotAnInteger(`${v.length} elements for an array of ${f.count}`)
  }
  const zero = f.elem === 'u64' ? 0n : 0
  const out: (number | bigint)[] = []
  for (let i = 0; i < f.count; i++) {
    const e = i < v.length ? cScalar(f.elem, v[i]) : zero
    if (e instanceof NotAnInteger) return new NotAnInteger(`[${i}]: ${e.reason}`)
    out.push(e)
  }
  return out
}

/**
 * Convert `v` as C converts an integer assigned to a field of C type `kind` (see
 * {@link ScalarKind}); the result has the kernel's type for the field (`bigint` for u64).
 *
 * @throws IommuError EINVAL - `v` is not an integer C could assign (a fraction, NaN, a
 *   number beyond 2^53, a string, an object...); the message names `what`
 */
export function cInt(
  kind: FieldKind,
  v: unknown,
  what: string = kind,
): number | bigint | (number | bigint)[] {
  const k = parseKind(kind)
  const r = cField({ name: what, kind, ...k, off: 0, bytes: 0 }, v)
  if (r instanceof NotAnInteger) throw new IommuError('EINVAL', `${what}: ${r.reason}`)
  return r
}

// ------------------------------------------------------------------ bytes

/** Read a field at `base + f.off` (little-endian). */
function readAt(view: DataView, base: number, f: Field): number | bigint | (number | bigint)[] {
  if (!f.array) return readScalar(view, base + f.off, f.elem)
  const n = SCALAR_BYTES[f.elem]
  const out: (number | bigint)[] = []
  for (let i = 0; i < f.count; i++) out.push(readScalar(view, base + f.off + i * n, f.elem))
  return out
}

function readScalar(view: DataView, at: number, elem: ScalarKind): number | bigint {
  switch (elem) {
    case 'u8':
      return view.getUint8(at)
    case 'u16':
      return view.getUint16(at, true)
    case 'u32':
      return view.getUint32(at, true)
    case 's32':
      return view.getInt32(at, true)
    case 'u64':
      return view.getBigUint64(at, true)
  }
}

/** Store an already converted value (see {@link cInt}) at `base + f.off`. */
function writeAt(view: DataView, base: number, f: Field, v: unknown): void {
  if (!f.array) {
    writeScalar(view, base + f.off, f.elem, v)
    return
  }
  const a = v as readonly unknown[]
  const n = SCALAR_BYTES[f.elem]
  for (let i = 0; i < f.count; i++) writeScalar(view, base + f.off + i * n, f.elem, a[i])
}

function writeScalar(view: DataView, at: number, elem: ScalarKind, v: unknown): void {
  switch (elem) {
    case 'u8':
      view.setUint8(at, Number(v ?? 0))
      return
    case 'u16':
      view.setUint16(at, Number(v ?? 0), true)
      return
    case 'u32':
      view.setUint32(at, Number(v ?? 0), true)
      return
    case 's32':
      view.setInt32(at, Number(v ?? 0), true)
      return
    case 'u64':
      view.setBigUint64(
        at,
        BigInt.asUintN(64, BigInt((v as bigint | number | undefined) ?? 0)),
        true,
      )
  }
}

/** Store a value of the kernel's type into a struct buffer (`copy_to_user` of a field). */
export function writeField(view: DataView, f: Field, v: unknown): void {
  writeAt(view, 0, f, v)
}

/** Decode every field (and union member) of a struct image at `base`. */
function decodeAt(
  layout: StructLayout<unknown>,
  view: DataView,
  base: number,
): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const f of layout.fields) out[f.name] = readAt(view, base, f)
  for (const m of layout.members) {
    const o: Record<string, unknown> = {}
    for (const f of m.fields) o[f.name] = readAt(view, base, f)
    out[m.name] = o
  }
  return out
}

/** Decode a `sizeof`-byte struct buffer into the object shape {@link parseStruct} takes. */
export function bytesToObject(
  layout: StructLayout<unknown>,
  buf: Uint8Array,
): Record<string, unknown> {
  return decodeAt(layout, new DataView(buf.buffer, buf.byteOffset, buf.byteLength), 0)
}

// ------------------------------------------------------------------ validation

/** True when a tail value stands for at least one non-zero byte. */
function isNonZero(v: unknown): boolean {
  if (v === undefined || v === null || v === false || v === 0 || v === 0n || v === '') return false
  if (v instanceof Uint8Array) return v.some((b) => b !== 0)
  if (Array.isArray(v)) return v.some(isNonZero)
  if (typeof v === 'object') return Object.values(v).some(isNonZero)
  return true
}

function isStruct(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

const schemas = new WeakMap<StructLayout<unknown>, z.ZodType>()

/**
 * The zod schema of a layout: an object whose keys past the kernel struct are zero when
 * `size > sizeof` (E2BIG otherwise, as `copy_struct_from_user`), whose fields hold what C
 * can assign (converted by {@link cField}; EINVAL naming the field otherwise) and whose
 * union members are objects. Its output has the converted fields only.
 */
function schemaOf(layout: StructLayout<unknown>): z.ZodType {
  let s = schemas.get(layout)
  if (s !== undefined) return s
  s = z.looseObject({}, { error: 'is not a struct (an object)' }).transform((obj, ctx) => {
    const issues: Issue[] = []
    const out = convertStruct(layout, obj as Record<string, unknown>, issues)
    for (const [path, message, errno] of issues) {
      ctx.addIssue({ code: 'custom', path, message, params: { errno } })
    }
    return out
  })
  schemas.set(layout, s)
  return s
}

type Issue = readonly [path: string[], message: string, errno: Errno]

const knownKeys = new WeakMap<StructLayout<unknown>, ReadonlySet<string>>()

/** The fields (and union members) of `src` converted as C would; what fails goes to `issues`. */
function convertStruct(
  layout: StructLayout<unknown>,
  src: Record<string, unknown>,
  issues: Issue[],
): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  convertFields(layout.fields, src, out, null, issues)
  const size = out.size
  if (typeof size === 'number' && size > layout.sizeof) {
    let known = knownKeys.get(layout)
    if (known === undefined) {
      known = new Set([...layout.fields, ...layout.members].map((f) => f.name))
      knownKeys.set(layout, known)
    }
    for (const k of Object.keys(src)) {
      if (!known.has(k) && isNonZero(src[k])) {
        // copy_struct_from_user: bytes past the kernel struct must be zero.
        issues.unshift([[k], 'non-zero bytes past the kernel struct', 'E2BIG'])
      }
    }
  }
  for (const m of layout.members) {
    const given = src[m.name]
    if (given === undefined) continue
    if (!isStruct(given)) {
      issues.push([[m.name], 'is not a struct (an object)', 'EINVAL'])
      continue
    }
    const o: Record<string, unknown> = {}
    convertFields(m.fields, given, o, m.name, issues)
    out[m.name] = o
  }
  return out
}

function convertFields(
  fields: readonly Field[],
  from: Record<string, unknown>,
  into: Record<string, unknown>,
  member: string | null,
  issues: Issue[],
): void {
  for (const f of fields) {
    const v = from[f.name]
    if (v === undefined) continue
    const r = cField(f, v)
    if (r instanceof NotAnInteger) {
      issues.push([member === null ? [f.name] : [member, f.name], r.reason, 'EINVAL'])
    } else {
      into[f.name] = r
    }
  }
}

/**
 * The errno of a failed validation, the one mapping of the uAPI boundary: a non-zero
 * tail is E2BIG (`copy_struct_from_user`); a value that is not an integer is EINVAL.
 */
export function uapiErrno(issues: readonly z.core.$ZodIssue[]): Errno {
  for (const i of issues) {
    const errno = (i as { params?: { errno?: Errno } }).params?.errno
    if (errno !== undefined) return errno
  }
  return 'EINVAL'
}

/** The message of a failed validation: the struct, the field and why. */
function issueMessage(layout: StructLayout<unknown>, issues: readonly z.core.$ZodIssue[]): string {
  const i = issues[0]
  if (i === undefined) return layout.name
  const path = i.path.map(String).join('.')
  return `${layout.name}${path === '' ? '' : `.${path}`}: ${i.message}`
}

/**
 * Validate an object as C code would have written the struct: convert every field,
 * and fail on what is not an integer or on a non-zero tail.
 */
function convert(layout: StructLayout<unknown>, raw: object): Record<string, unknown> {
  const r = schemaOf(layout).safeParse(raw)
  if (!r.success) {
    throw new IommuError(uapiErrno(r.error.issues), issueMessage(layout, r.error.issues), {
      cause: r.error,
    })
  }
  return r.data as Record<string, unknown>
}

/**
 * Lay the fields the caller set into a struct image, in declaration order: a later union
 * member overwrites an earlier one, as in C, except that a top-level alias
 * (`out_data_type`) never overwrites the input it shares bytes with (`in_data_type`).
 */
function writeImage(
  layout: StructLayout<unknown>,
  src: Record<string, unknown>,
  view: DataView,
  base: number,
): void {
  layout.fields.forEach((f, i) => {
    if (src[f.name] === undefined) return
    const shadowed = layout.fields.some(
      (g, j) => j < i && g.off === f.off && src[g.name] !== undefined,
    )
    if (!shadowed) writeAt(view, base, f, src[f.name])
  })
  for (const m of layout.members) {
    const given = src[m.name] as Record<string, unknown> | undefined
    if (given === undefined) continue
    for (const f of m.fields) if (given[f.name] !== undefined) writeAt(view, base, f, given[f.name])
  }
}

const plain = new WeakMap<StructLayout<unknown>, boolean>()

/** A struct without unions: every field has bytes of its own. */
function isPlain(l: StructLayout<unknown>): boolean {
  let p = plain.get(l)
  if (p === undefined) {
    p = l.members.length === 0 && new Set(l.fields.map((f) => f.off)).size === l.fields.length
    plain.set(l, p)
  }
  return p
}

function zeroOf(f: Field): number | bigint | (number | bigint)[] {
  const z0 = f.elem === 'u64' ? 0n : 0
  return f.array ? new Array<number | bigint>(f.count).fill(z0) : z0
}

/**
 * Validate an argument object and return the struct the handler sees: every field
 * present, bytes at and beyond `size` zero (the kernel zero-fills what the user did not
 * pass), union members aliasing as in C.
 *
 * @throws E2BIG - `size > sizeof` and a key that is not a field is non-zero; EINVAL - a
 *   field holds something that is not an integer (the message names the field)
 */
export function parseStruct<T>(layout: StructLayout<T>, raw: object, size: number): T {
  const l = layout as StructLayout<unknown>
  const src = convert(l, raw)
  if (size >= l.sizeof && isPlain(l)) {
    // No union and nothing cut by `size`: the converted values are what the bytes hold.
    for (const f of l.fields) src[f.name] ??= zeroOf(f)
    src.size = size
    return src as T
  }
  const img = new Uint8Array(l.sizeof)
  const view = new DataView(img.buffer)
  writeImage(l, src, view, 0)
  if (size < l.sizeof) img.fill(0, size)
  const out = decodeAt(l, view, 0)
  out.size = size
  return out as T
}

// ------------------------------------------------------------------ encode / decode

/**
 * The bytes of a struct as C code fills it (`struct x v = { ... }`): `sizeof` bytes,
 * fields converted as C converts integers, left-out fields zero. For driver data and
 * other structs passed by pointer (`data_uptr`), written into the process with
 * `proc.write(addr, bytes)`.
 *
 * @throws IommuError EINVAL - a key that is not a field of the struct, or a value that is
 *   not an integer (the message names the field)
 */
export function encodeStruct<T>(layout: StructLayout<T>, value: CInit<T>): Uint8Array {
  return encodeStructArray(layout, [value])
}

/** The bytes of `struct x v[n]` (entries `sizeof` apart), e.g. an invalidation array. */
export function encodeStructArray<T>(
  layout: StructLayout<T>,
  values: readonly CInit<T>[],
): Uint8Array {
  const l = layout as StructLayout<unknown>
  const known = new Set([...l.fields.map((f) => f.name), ...l.members.map((m) => m.name)])
  const img = new Uint8Array(l.sizeof * values.length)
  const view = new DataView(img.buffer)
  values.forEach((v, i) => {
    for (const k of Object.keys(v)) {
      if (!known.has(k)) throw new IommuError('EINVAL', `${l.name} has no field ${k}`)
    }
    writeImage(l, convert(l, v), view, i * l.sizeof)
  })
  return img
}

/**
 * Read a struct from bytes (`struct x *p = buf + offset`); bytes missing at the end of
 * `bytes` read as zero. Fields have the kernel's types: u64 as `bigint`, others `number`.
 */
export function decodeStruct<T>(layout: StructLayout<T>, bytes: Uint8Array, offset = 0): T {
  const l = layout as StructLayout<unknown>
  const img = new Uint8Array(l.sizeof)
  img.set(bytes.subarray(offset, offset + l.sizeof))
  return decodeAt(l, new DataView(img.buffer), 0) as T
}

/** Read `count` structs laid out `sizeof` apart (`struct x v[count]`). */
export function decodeStructArray<T>(
  layout: StructLayout<T>,
  bytes: Uint8Array,
  count: number,
): T[] {
  return Array.from({ length: count }, (_, i) => decodeStruct(layout, bytes, i * layout.sizeof))
}

// ------------------------------------------------------------------ paths and write-back

/** Resolve `'field'` or `'member.field'` to its field definition. */
export function fieldAt(layout: StructLayout<unknown>, path: string): Field {
  const dot = path.indexOf('.')
  const list =
    dot < 0
      ? layout.fields
      : (layout.members.find((m) => m.name === path.slice(0, dot))?.fields ?? [])
  const name = dot < 0 ? path : path.slice(dot + 1)
  const f = list.find((x) => x.name === name)
  if (f === undefined) throw new Error(`${layout.name}: no field ${path}`)
  return f
}

/** Read `'field'` or `'member.field'` of a decoded struct. */
export function valueAt(cmd: object, path: string): unknown {
  const dot = path.indexOf('.')
  const c = cmd as Record<string, unknown>
  if (dot < 0) return c[path]
  return (c[path.slice(0, dot)] as Record<string, unknown> | undefined)?.[path.slice(dot + 1)]
}

/** The covered part of a field when the user passed only `size` bytes. */
function covered(f: Field, size: number): number {
  return Math.max(0, Math.min(f.bytes, size - f.off))
}

/**
 * Write a field back into the user's argument object as `copy_to_user` of the first
 * `size` bytes would: not at all when the field lies beyond `size`, only its low bytes
 * when `size` cuts it. The value has the kernel's type (u64 `bigint`, others `number`)
 * whatever the caller had put there. Union aliases get the value under both names.
 */
export function storeField(
  layout: StructLayout<unknown>,
  raw: Record<string, unknown>,
  path: string,
  value: unknown,
  size: number,
): void {
  const f = fieldAt(layout, path)
  const n = covered(f, size)
  if (n === 0) return
  const dot = path.indexOf('.')
  if (dot < 0) {
    // A top-level union alias (`in_data_type`/`out_data_type`) gets the value too.
    for (const g of layout.fields)
      if (g.off === f.off && g.kind === f.kind) mergeInto(raw, g, value, n)
    return
  }
  // In a union, every member the caller passed sees the bytes; the named one is created.
  const named = path.slice(0, dot)
  for (const m of layout.members) {
    let target = raw[m.name]
    if (m.name === named && (typeof target !== 'object' || target === null)) {
      target = {}
      raw[m.name] = target
    }
    if (typeof target !== 'object' || target === null) continue
    for (const g of m.fields) {
      if (g.off === f.off && g.kind === f.kind)
        mergeInto(target as Record<string, unknown>, g, value, n)
    }
  }
}

/** Store `value` under `f.name`: only its low `n` bytes over the old value when the caller's size cuts it. */
function mergeInto(target: Record<string, unknown>, f: Field, value: unknown, n: number): void {
  if (n >= f.bytes) {
    target[f.name] = value
    return
  }
  const at = { ...f, off: 0 }
  const old = cField(f, target[f.name])
  const buf = new DataView(new ArrayBuffer(f.bytes))
  if (!(old instanceof NotAnInteger)) writeAt(buf, 0, at, old)
  const fresh = new DataView(new ArrayBuffer(f.bytes))
  writeAt(fresh, 0, at, value)
  for (let i = 0; i < n; i++) buf.setUint8(i, fresh.getUint8(i))
  target[f.name] = readAt(buf, 0, at)
}

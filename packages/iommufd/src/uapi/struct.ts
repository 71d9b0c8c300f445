/**
 * Kernel struct layouts and the one place where user arguments are validated.
 *
 * A layout lists a uAPI struct's fields with the kernel's names and C types; offsets,
 * `sizeof` and the minimum size (`offsetofend` of the last field of the struct's first
 * version) follow from the C layout rules, so the table below mirrors `IOCTL_OP(...,
 * last)` of `main.c`. Arguments arrive in one of two shapes:
 *
 * - an object whose keys are the struct's field names (u64 as `bigint`, smaller as
 *   `number`), missing fields reading as zero like a C designated initializer; keys that
 *   are not fields stand for bytes past the kernel struct (the "tail");
 * - the raw bytes of the struct read from the calling process.
 *
 * Both go through the same module-private zod schema; every failure maps to an errno in
 * {@link uapiErrno} (reference iommufd-uapi.md §2.1, monorepo-anchors.md §3.6).
 *
 * @module
 */

import { type Errno, IommuError } from '@iommu/core'
import { z } from 'zod'

/** The C type of a field. `u8x3` is `__u8 __reserved[3]`. */
export type FieldKind = 'u8' | 'u16' | 'u32' | 's32' | 'u64' | 'u8x3'

/** `[name, kind]`, or `[name, kind, other]` for a union member sharing `other`'s offset. */
export type FieldSpec = readonly [name: string, kind: FieldKind, sameAs?: string]

type KindValue<K extends FieldKind> = K extends 'u64'
  ? bigint
  : K extends 'u8x3'
    ? readonly number[]
    : number

/** The TypeScript shape of a struct given its field specs. */
export type StructValue<F extends readonly FieldSpec[]> = {
  -readonly [E in F[number] as E[0]]: KindValue<E[1]>
}

/** One field of a layout. */
export interface Field {
  readonly name: string
  readonly kind: FieldKind
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

const KIND_BYTES: Record<FieldKind, number> = { u8: 1, u16: 2, u32: 4, s32: 4, u64: 8, u8x3: 3 }
const KIND_ALIGN: Record<FieldKind, number> = { u8: 1, u16: 2, u32: 4, s32: 4, u64: 8, u8x3: 1 }
const U64_MAX = 0xffff_ffff_ffff_ffffn

function alignUp(v: number, a: number): number {
  return Math.ceil(v / a) * a
}

/** Lay fields out from `start` with C alignment; returns the fields and the end offset. */
function place(specs: readonly FieldSpec[], start: number): { fields: Field[]; end: number } {
  const fields: Field[] = []
  let off = start
  for (const [name, kind, sameAs] of specs) {
    const bytes = KIND_BYTES[kind]
    if (sameAs !== undefined) {
      const other = fields.find((f) => f.name === sameAs)
      if (other === undefined) throw new Error(`layout: ${name} aliases unknown ${sameAs}`)
      fields.push({ name, kind, off: other.off, bytes })
      continue
    }
    off = alignUp(off, KIND_ALIGN[kind])
    fields.push({ name, kind, off, bytes })
    off += bytes
  }
  return { fields, end: off }
}

function maxAlign(specs: readonly FieldSpec[]): number {
  return Math.max(1, ...specs.map(([, k]) => KIND_ALIGN[k]))
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

// ------------------------------------------------------------------ validation

const u8 = z.number().int().min(0).max(0xff)
const KIND_SCHEMA: Record<FieldKind, z.ZodType> = {
  u8,
  u16: z.number().int().min(0).max(0xffff),
  u32: z.number().int().min(0).max(0xffff_ffff),
  s32: z.number().int().min(-0x8000_0000).max(0x7fff_ffff),
  u64: z.bigint().min(0n).max(U64_MAX),
  u8x3: z.array(u8).max(3),
}

/** True when a tail value stands for at least one non-zero byte. */
function isNonZero(v: unknown): boolean {
  if (v === undefined || v === null || v === false || v === 0 || v === 0n || v === '') return false
  if (v instanceof Uint8Array) return v.some((b) => b !== 0)
  if (Array.isArray(v)) return v.some(isNonZero)
  if (typeof v === 'object') return Object.values(v).some(isNonZero)
  return true
}

const schemas = new WeakMap<StructLayout<unknown>, z.ZodType>()

function fieldsShape(fields: readonly Field[]): Record<string, z.ZodType> {
  const shape: Record<string, z.ZodType> = {}
  for (const f of fields) shape[f.name] = KIND_SCHEMA[f.kind].optional()
  return shape
}

/** The zod schema of a layout: typed fields, and a zero tail when `size > sizeof`. */
function schemaOf(layout: StructLayout<unknown>): z.ZodType {
  let s = schemas.get(layout)
  if (s !== undefined) return s
  const shape = fieldsShape(layout.fields)
  for (const m of layout.members) shape[m.name] = z.looseObject(fieldsShape(m.fields)).optional()
  const known = new Set(Object.keys(shape))
  s = z.looseObject(shape).superRefine((obj, ctx) => {
    const size = (obj as { size?: unknown }).size
    if (typeof size !== 'number' || size <= layout.sizeof) return
    for (const [k, v] of Object.entries(obj)) {
      if (!known.has(k) && isNonZero(v)) {
        // copy_struct_from_user: bytes past the kernel struct must be zero.
        ctx.addIssue({ code: 'custom', path: [k], message: 'E2BIG', params: { errno: 'E2BIG' } })
      }
    }
  })
  schemas.set(layout, s)
  return s
}

/**
 * The errno of a failed validation, the one mapping of the uAPI boundary: a non-zero
 * tail is E2BIG (`copy_struct_from_user`); a value the C type cannot hold is EINVAL.
 */
export function uapiErrno(issues: readonly z.core.$ZodIssue[]): Errno {
  for (const i of issues) {
    const errno = (i as { params?: { errno?: Errno } }).params?.errno
    if (errno !== undefined) return errno
  }
  return 'EINVAL'
}

/** The covered part of a field when the user passed only `size` bytes. */
function covered(f: Field, size: number): number {
  return Math.max(0, Math.min(f.bytes, size - f.off))
}

function truncate(f: Field, v: unknown, n: number): number | bigint | number[] {
  if (f.kind === 'u8x3') {
    const a = (v as readonly number[] | undefined) ?? []
    return [0, 1, 2].map((i) => (i < n ? (a[i] ?? 0) : 0))
  }
  if (f.kind === 'u64') {
    const b = (v as bigint | undefined) ?? 0n
    return n >= 8 ? b : b & ((1n << BigInt(8 * n)) - 1n)
  }
  const x = (v as number | undefined) ?? 0
  if (n >= f.bytes) return x
  // Only the low bytes were given (little-endian); s32 is read back unsigned-truncated.
  return (x >>> 0) & (2 ** (8 * n) - 1)
}

function decodeFields(fields: readonly Field[], src: Record<string, unknown>, size: number) {
  const out: Record<string, unknown> = {}
  for (const f of fields) out[f.name] = truncate(f, src[f.name], covered(f, size))
  // A union alias (`in_data_type`/`out_data_type`) reads the value the user set.
  for (const f of fields) {
    const twin = fields.find((g) => g !== f && g.off === f.off)
    if (twin !== undefined && src[f.name] === undefined && src[twin.name] !== undefined) {
      out[f.name] = out[twin.name]
    }
  }
  return out
}

/**
 * Validate an argument object and return the struct the handler sees: every field
 * present, values beyond `size` zero (the kernel zero-fills what the user did not pass).
 *
 * @throws E2BIG - `size > sizeof` and a key that is not a field is non-zero; EINVAL - a
 *   field holds a value its C type cannot hold
 */
export function parseStruct<T>(layout: StructLayout<T>, raw: object, size: number): T {
  const r = schemaOf(layout as StructLayout<unknown>).safeParse(raw)
  if (!r.success) {
    throw new IommuError(
      uapiErrno(r.error.issues),
      `${layout.name}: ${r.error.issues[0]?.message}`,
      {
        cause: r.error,
      },
    )
  }
  const src = r.data as Record<string, unknown>
  const out = decodeFields(layout.fields, src, size)
  if (layout.members.length > 0) {
    // The members of a union share bytes: lay what the caller set into one image and
    // read every member back from it, as C would.
    const img = new DataView(new ArrayBuffer(layout.sizeof))
    for (const m of layout.members) {
      const given = src[m.name] as Record<string, unknown> | undefined
      if (given === undefined) continue
      for (const f of m.fields) if (given[f.name] !== undefined) writeField(img, f, given[f.name])
    }
    for (const m of layout.members) {
      const o: Record<string, unknown> = {}
      for (const f of m.fields) o[f.name] = truncate(f, readField(img, f), covered(f, size))
      out[m.name] = o
    }
  }
  out.size = size
  return out as T
}

// ------------------------------------------------------------------ paths and bytes

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

/**
 * Write a field back into the user's argument object as `copy_to_user` of the first
 * `size` bytes would: not at all when the field lies beyond `size`, only its low bytes
 * when `size` cuts it. Union aliases get the value under both names.
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

/** Store `value` under `f.name`, only its low `n` bytes when the caller's size cuts it. */
function mergeInto(target: Record<string, unknown>, f: Field, value: unknown, n: number): void {
  if (n >= f.bytes) {
    target[f.name] = value
  } else if (f.kind === 'u64') {
    const mask = (1n << BigInt(8 * n)) - 1n
    const old = typeof target[f.name] === 'bigint' ? (target[f.name] as bigint) : 0n
    target[f.name] = (old & ~mask) | ((value as bigint) & mask)
  } else {
    const mod = 2 ** (8 * n)
    const old = typeof target[f.name] === 'number' ? (target[f.name] as number) : 0
    target[f.name] = (old - (old % mod) + ((value as number) % mod)) >>> 0
  }
}

/** Little-endian accessors on a struct buffer. */
function readField(view: DataView, f: Field): number | bigint | number[] {
  switch (f.kind) {
    case 'u8':
      return view.getUint8(f.off)
    case 'u16':
      return view.getUint16(f.off, true)
    case 'u32':
      return view.getUint32(f.off, true)
    case 's32':
      return view.getInt32(f.off, true)
    case 'u64':
      return view.getBigUint64(f.off, true)
    case 'u8x3':
      return [view.getUint8(f.off), view.getUint8(f.off + 1), view.getUint8(f.off + 2)]
  }
}

/** Store a value into a struct buffer. */
export function writeField(view: DataView, f: Field, v: unknown): void {
  switch (f.kind) {
    case 'u8':
      view.setUint8(f.off, v as number)
      return
    case 'u16':
      view.setUint16(f.off, v as number, true)
      return
    case 'u32':
      view.setUint32(f.off, v as number, true)
      return
    case 's32':
      view.setInt32(f.off, v as number, true)
      return
    case 'u64':
      view.setBigUint64(f.off, v as bigint, true)
      return
    case 'u8x3': {
      const a = v as readonly number[]
      for (let i = 0; i < 3; i++) view.setUint8(f.off + i, a[i] ?? 0)
    }
  }
}

/** Decode a `sizeof`-byte struct buffer into the object shape {@link parseStruct} takes. */
export function bytesToObject(
  layout: StructLayout<unknown>,
  buf: Uint8Array,
): Record<string, unknown> {
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength)
  const out: Record<string, unknown> = {}
  for (const f of layout.fields) out[f.name] = readField(view, f)
  for (const m of layout.members) {
    const o: Record<string, unknown> = {}
    for (const f of m.fields) o[f.name] = readField(view, f)
    out[m.name] = o
  }
  return out
}

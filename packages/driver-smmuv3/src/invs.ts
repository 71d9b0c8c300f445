/**
 * Per-domain invalidation arrays (`struct arm_smmu_invs`, 7.x): what every invalidation of
 * a domain must reach — its ASID or VMID on each SMMU, the nested stage-1 clear of a nest
 * parent, and the ATCs of its ATS masters — kept sorted and reference counted as masters
 * attach and detach. `invsMerge` adds a master's entries, `invsUnref` drops them in place
 * (a no-fail path, leaving zero-user "trash" between live entries and trimming it at the
 * end), and `invsPurge` rebuilds without trash.
 *
 * @module
 */

/** `enum arm_smmu_inv_type`; the order is also the order commands are sent in. */
export const InvType = {
  S1_ASID: 0,
  S2_VMID: 1,
  S2_VMID_S1_CLEAR: 2,
  ATS: 3,
  ATS_FULL: 4,
} as const

/** One invalidation target (`struct arm_smmu_inv`). */
export interface Inv {
  /** Index of the SMMU instance (the kernel compares the pointers). */
  smmu: number
  type: number
  /** Opcode for a ranged invalidation, and for "everything". */
  sizeOpcode: number
  nsizeOpcode: number
  /** ASID, VMID or StreamID. */
  id: number
  /** SubstreamID of an ATS entry. */
  ssid: number
  /** log2 of the leaf page size for range invalidation (FEAT_RANGE_INV), else 0. */
  pgsize: number
  /** 0 marks trash. */
  users: number
}

/** An invalidation array (`struct arm_smmu_invs`). */
export interface Invs {
  readonly inv: Inv[]
  numInvs: number
  numTrashes: number
  hasAts: boolean
}

/** An empty target with the given fields. */
export function inv(fields: Partial<Inv> & Pick<Inv, 'type' | 'id'>): Inv {
  return {
    smmu: 0,
    sizeOpcode: 0,
    nsizeOpcode: 0,
    ssid: 0,
    pgsize: 0,
    users: 0,
    ...fields,
  }
}

/** An array of `entries` (`arm_smmu_invs_alloc` plus the entries). */
export function invsOf(entries: Inv[]): Invs {
  return { inv: entries, numInvs: entries.length, numTrashes: 0, hasAts: entries.some(isAts) }
}

/** Whether an entry invalidates an ATC. */
export function isAts(i: Inv): boolean {
  return i.type === InvType.ATS || i.type === InvType.ATS_FULL
}

/** `arm_smmu_inv_cmp`: by SMMU, type, id, then SubstreamID for ATS entries. */
export function invCmp(l: Inv, r: Inv): number {
  if (l.smmu !== r.smmu) return l.smmu < r.smmu ? -1 : 1
  if (l.type !== r.type) return l.type < r.type ? -1 : 1
  if (l.id !== r.id) return l.id < r.id ? -1 : 1
  if (isAts(l) && l.ssid !== r.ssid) return l.ssid < r.ssid ? -1 : 1
  return 0
}

/** The index of the first non-trash entry at or after `next` (`num_invs` at the end). */
export function invsNext(invs: Invs, next: number): number {
  let i = next
  while (i < invs.numInvs && (invs.inv[i] as Inv).users === 0) i++
  return i
}

/**
 * Walk two sorted arrays together (`arm_smmu_invs_for_each_cmp`): `l` skipping its trash,
 * `r` entry by entry; `visit(cmp, i, j)` sees cmp < 0 for an entry only in `l`, 0 for a
 * match, > 0 for an entry only in `r`.
 */
function forEachCmp(l: Invs, r: Invs, visit: (cmp: number, i: number, j: number) => void): void {
  const step = (nextL: number, nextR: number): [number, number, number] => {
    const i = invsNext(l, nextL)
    const j = nextR
    if (i >= l.numInvs) return [1, i, j]
    if (j >= r.numInvs) return [-1, i, j]
    return [invCmp(l.inv[i] as Inv, r.inv[j] as Inv), i, j]
  }
  let [cmp, i, j] = step(0, 0)
  while (i < l.numInvs || j < r.numInvs) {
    visit(cmp, i, j)
    ;[cmp, i, j] = step(i + (cmp <= 0 ? 1 : 0), j + (cmp >= 0 ? 1 : 0))
  }
}

/**
 * invsMerge() - a new sorted array with `toMerge`'s entries added: a match gains a user,
 * a new entry starts with one; trash in `invs` is dropped.
 */
export function invsMerge(invs: Invs, toMerge: Invs): Invs {
  const out: Inv[] = []
  forEachCmp(invs, toMerge, (cmp, i, j) => {
    if (cmp < 0) out.push({ ...(invs.inv[i] as Inv) })
    else if (cmp === 0) {
      const e = { ...(invs.inv[i] as Inv) }
      e.users++
      out.push(e)
    } else out.push({ ...(toMerge.inv[j] as Inv), users: 1 })
  })
  return invsOf(out)
}

/**
 * invsUnref() - drop one user of each entry of `toUnref` in place. Entries reaching zero
 * become trash (and `toUnref`'s copy says so with users = 0, users = 1 otherwise); trash at
 * the end is trimmed, trash in between stays until {@link invsPurge} or the next merge.
 */
export function invsUnref(invs: Invs, toUnref: Invs): void {
  let keep = 0
  forEachCmp(invs, toUnref, (cmp, i, j) => {
    if (cmp < 0) keep = i + 1
    else if (cmp === 0) {
      const e = invs.inv[i] as Inv
      const users = e.users - 1
      if (users < 0) return
      e.users = users
      if (users > 0) {
        ;(toUnref.inv[j] as Inv).users = 1
        keep = i + 1
        return
      }
      ;(toUnref.inv[j] as Inv).users = 0
      invs.numTrashes++
    }
    // cmp > 0: not in the array (a kernel WARN); nothing to do.
  })
  invs.numTrashes -= invs.numInvs - keep
  invs.numInvs = keep
}

/**
 * invsPurge() - a new array without the trash, or null when there is none (or nothing at
 * all).
 */
export function invsPurge(invs: Invs): Invs | null {
  if (invs.numInvs < invs.numTrashes) return null
  if (invs.numInvs === 0 || invs.numTrashes === 0) return null
  const out: Inv[] = []
  for (let i = invsNext(invs, 0); i < invs.numInvs; i = invsNext(invs, i + 1)) {
    out.push({ ...(invs.inv[i] as Inv) })
  }
  return invsOf(out)
}

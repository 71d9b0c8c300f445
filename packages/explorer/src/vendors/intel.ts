/**
 * Intel VT-d (scalable mode) in the explorer: the root, context, PASID directory and PASID
 * table entries of a device (walked from RTADDR in memory, as the hardware walks them), the
 * registers, the IOTLB, paging-structure cache, device TLB, context and PASID caches, the
 * invalidation queue, fault records and page requests, and the missing-invalidation
 * detector.
 *
 * @module
 */

import type { IommuDomain, PciDevice } from '@iommu/core'
import {
  DEFAULT_ECAP,
  Ecap,
  Fr,
  Iqa,
  intel,
  intelFaultLog,
  intelTestHooks,
  Reg,
  Rtaddr,
  TlbKind,
  type TranslationCache,
  VtdDomain,
  VtdIommuHw,
} from '@iommu/driver-intel'
import { decodeStruct, hex, sizeShort } from '../decode/bitfield.ts'
import {
  decodeVtd,
  decodeVtdDescriptor,
  VTD_CONTEXT_ENTRY,
  VTD_ECAP,
  VTD_GSTS,
  VTD_IQA,
  VTD_PASID_DIR_ENTRY,
  VTD_PASID_ENTRY,
  VTD_ROOT_ENTRY,
  VTD_RTADDR,
  vtdDescriptorName,
} from '../decode/intel.ts'
import { tableSource } from '../model/pgtable.ts'
import type { ListRow, ListView, StructView, VendorContext, VendorDescriptor } from './types.ts'

const RING_ROWS = 64
const ADDR = 0xffff_ffff_ffff_f000n

function hw(ctx: VendorContext): VtdIommuHw {
  if (!(ctx.unit instanceof VtdIommuHw)) throw new Error(`${ctx.unit.name} is not VT-d`)
  return ctx.unit
}

function qwords(unit: VtdIommuHw, pa: number, n: number): bigint[] {
  return Array.from({ length: n }, (_, i) => unit.memory.read64(pa + 8 * i))
}

function fromRaw(raw: Uint32Array, from: number, n: number): bigint[] {
  return Array.from(
    { length: n },
    (_, i) => (BigInt(raw[from + 2 * i + 1] ?? 0) << 32n) | BigInt(raw[from + 2 * i] ?? 0),
  )
}

/** Where the hardware finds a device's entries, walked from RTADDR in memory. */
export interface VtdEntries {
  readonly rootPa: number
  readonly root: bigint[]
  readonly ctxPa: number | null
  readonly ctx: bigint[] | null
  readonly pasid: number
  readonly dirPa: number | null
  readonly dir: bigint[] | null
  readonly pePa: number | null
  readonly pe: bigint[] | null
}

/** Walk root → context → PASID directory → PASID entry for `sid` and `pasid` (default RID_PASID). */
export function vtdEntries(unit: VtdIommuHw, sid: number, pasid?: number): VtdEntries {
  const rta = Number(unit.readMmio(Reg.RTADDR) & Rtaddr.ADDR_MASK)
  const bus = sid >> 8
  const devfn = sid & 0xff
  const rootPa = rta + bus * 16
  const root = qwords(unit, rootPa, 2)
  const rootQ = (devfn < 128 ? root[0] : root[1]) as bigint
  const none = { ctxPa: null, ctx: null, dirPa: null, dir: null, pePa: null, pe: null }
  if ((rootQ & 1n) === 0n) return { rootPa, root, pasid: pasid ?? 0, ...none }
  const ctxPa = Number(rootQ & ADDR) + (devfn & 0x7f) * 32
  const ctx = qwords(unit, ctxPa, 4)
  const c0 = ctx[0] as bigint
  const p = pasid ?? Number((ctx[1] as bigint) & 0xf_ffffn)
  if ((c0 & 1n) === 0n) {
    return { rootPa, root, ctxPa, ctx, pasid: p, dirPa: null, dir: null, pePa: null, pe: null }
  }
  const dirPa = Number(c0 & ADDR) + (p >> 6) * 8
  const dir = qwords(unit, dirPa, 1)
  if (((dir[0] as bigint) & 1n) === 0n) {
    return { rootPa, root, ctxPa, ctx, pasid: p, dirPa, dir, pePa: null, pe: null }
  }
  const pePa = Number((dir[0] as bigint) & ADDR) + (p & 63) * 64
  return { rootPa, root, ctxPa, ctx, pasid: p, dirPa, dir, pePa, pe: qwords(unit, pePa, 8) }
}

const FAULT_NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(Fr).map(([k, v]) => [v, k]),
)
const KIND_NAMES: Record<number, string> = {
  [TlbKind.FS]: 'FS',
  [TlbKind.SS]: 'SS',
  [TlbKind.NESTED]: 'nested',
}

function tlbView(title: string, ref: string, c: TranslationCache, tagName: string): ListView {
  const s = c.stats
  return {
    title,
    ref,
    note: `hits ${s.hits}, misses ${s.misses}, fills ${s.fills}, evictions ${s.evictions}, invalidated ${s.invalidated}`,
    columns: ['set.way', tagName, 'PASID', 'kind', 'IOVA', 'size', 'PA', 'perm', 'D cached'],
    rows: c.validEntries().map((i) => ({
      cells: [
        `${Math.floor(i / c.ways)}.${i % c.ways}`,
        String(c.tag(i)),
        c.pasid(i) < 0 ? '—' : String(c.pasid(i)),
        KIND_NAMES[c.kind(i)] ?? String(c.kind(i)),
        hex(BigInt(c.vpn(i)) << 12n),
        sizeShort(c.sizeLg2(i)),
        hex(BigInt(c.pa[i] as number) << 12n),
        `${(c.perm[i] as number) & 1 ? 'R' : '-'}${(c.perm[i] as number) & 2 ? 'W' : '-'}`,
        c.dirty[i] ? 'yes' : 'no',
      ],
    })),
    empty: 'No valid entries.',
  }
}

/** The VT-d descriptor. */
export const intelVendor: VendorDescriptor = {
  id: 'intel',
  label: 'Intel VT-d',
  deviceDirtyTracking: false,
  about:
    'VT-d scalable mode: root/context/PASID tables, second-stage (and first-stage) tables, IOTLB, PSC, context and PASID caches, queued invalidation, SSADE dirty tracking',
  options: [
    {
      key: 'ssads',
      label: 'Dirty tracking (ECAP.SSADS: second-stage A/D)',
      kind: 'boolean',
      default: true,
      help: 'Without it HWPT_ALLOC with DIRTY_TRACKING is EOPNOTSUPP',
    },
    { key: 'detectStale', label: 'Missing-invalidation detector', kind: 'boolean', default: true },
    {
      key: 'superpageOff',
      label: 'intel_iommu=sp_off (4 KiB only)',
      kind: 'boolean',
      default: false,
    },
  ],
  createIommu(o) {
    const ecap = o.ssads === false ? DEFAULT_ECAP & ~Ecap.SSADS : DEFAULT_ECAP
    return {
      driver: intel(o.superpageOff === true ? { superpageOff: true } : {}),
      config: { ecap, detectStale: o.detectStale !== false },
    }
  },
  deviceEntryName: 'root / context / PASID entry',
  deviceEntries(ctx, dev: PciDevice): StructView[] {
    const unit = hw(ctx)
    const sid = dev.rid
    const e = vtdEntries(unit, sid)
    const cachedCtx = unit.cachedContexts().find((c) => c.sid === sid)
    const cachedPe = unit.cachedPasidEntries().find((c) => c.sid === sid && c.pasid === e.pasid)
    const out: StructView[] = [
      {
        decoded: decodeVtd(
          `Root entry of bus ${hex(sid >> 8, 2)}`,
          VTD_ROOT_ENTRY,
          e.root,
          e.rootPa,
        ),
        note: `RTADDR + bus × 16; devfn ${hex(sid & 0xff, 2)} uses the ${(sid & 0xff) < 128 ? 'lower' : 'upper'} context table`,
      },
    ]
    if (e.ctx !== null && e.ctxPa !== null) {
      const cw = cachedCtx ? fromRaw(cachedCtx.raw, 2, 4) : null
      const stale = cw?.some((w, i) => w !== e.ctx?.[i]) === true
      out.push({
        decoded: decodeVtd(
          `Context entry of ${dev.name} (SID ${hex(sid, 4)})`,
          VTD_CONTEXT_ENTRY,
          e.ctx,
          e.ctxPa,
        ),
        note: `${cachedCtx ? 'in the context cache' : 'not cached'}`,
        ...(stale
          ? {
              warning:
                'The context cache holds an older copy: a context-cache invalidation is missing',
            }
          : {}),
      })
    }
    if (e.dir !== null && e.dirPa !== null) {
      out.push({
        decoded: decodeVtd(
          `PASID directory entry ${e.pasid >> 6}`,
          VTD_PASID_DIR_ENTRY,
          e.dir,
          e.dirPa,
        ),
        note: `PASIDDIRPTR + (PASID ${e.pasid} >> 6) × 8`,
      })
    }
    if (e.pe !== null && e.pePa !== null) {
      const pw = cachedPe ? fromRaw(cachedPe.raw, 2, 8) : null
      const stale = pw?.some((w, i) => w !== e.pe?.[i]) === true
      out.push({
        decoded: decodeVtd(
          `PASID table entry of PASID ${e.pasid} (RID_PASID)`,
          VTD_PASID_ENTRY,
          e.pe,
          e.pePa,
        ),
        note: `${cachedPe ? `in the PASID cache (DID ${cachedPe.did})` : 'not cached'}`,
        ...(stale
          ? {
              warning: 'The PASID cache holds an older copy: a PASID-cache invalidation is missing',
            }
          : {}),
      })
    }
    return out
  },
  registers(ctx) {
    const unit = hw(ctx)
    const reg = (title: string, layout: typeof VTD_GSTS, off: number): StructView => ({
      decoded: decodeStruct(title, layout, [unit.readMmio(off)]),
      note: `MMIO offset ${hex(off, 4)}`,
    })
    return [
      reg('Global Status', VTD_GSTS, Reg.GSTS),
      reg('Root Table Address', VTD_RTADDR, Reg.RTADDR),
      reg('Invalidation Queue Address', VTD_IQA, Reg.IQA),
      reg('Extended Capability', VTD_ECAP, Reg.ECAP),
    ]
  },
  caches(ctx) {
    const unit = hw(ctx)
    const contexts: ListView = {
      title: 'Context cache',
      ref: 'tagged by source ID; dropped by context-cache invalidations',
      note: `context fetches ${unit.stats.contextFetches}`,
      columns: ['SID', 'P', 'RID_PASID', 'matches memory'],
      rows: unit.cachedContexts().map((c) => {
        const words = fromRaw(c.raw, 2, 4)
        const now = vtdEntries(unit, c.sid).ctx
        const same = now !== null && words.every((w, i) => w === now[i])
        return {
          cells: [
            hex(c.sid, 4),
            String((words[0] as bigint) & 1n),
            String((words[1] as bigint) & 0xf_ffffn),
            same ? 'yes' : 'NO — stale',
          ],
          decoded: decodeVtd(
            `Cached context entry of SID ${hex(c.sid, 4)}`,
            VTD_CONTEXT_ENTRY,
            words,
            null,
          ),
          ...(same ? {} : { tone: 'stale' as const }),
        }
      }),
      empty: 'No cached context entries.',
    }
    const pasids: ListView = {
      title: 'PASID cache',
      ref: 'tagged by source ID and PASID (DID recorded); dropped by PASID-cache invalidations',
      note: `PASID-entry fetches ${unit.stats.pasidFetches}`,
      columns: ['SID', 'PASID', 'DID', 'matches memory'],
      rows: unit.cachedPasidEntries().map((c) => {
        const words = fromRaw(c.raw, 2, 8)
        const now = vtdEntries(unit, c.sid, c.pasid).pe
        const same = now !== null && words.every((w, i) => w === now[i])
        return {
          cells: [hex(c.sid, 4), String(c.pasid), String(c.did), same ? 'yes' : 'NO — stale'],
          decoded: decodeVtd(
            `Cached PASID entry ${c.pasid} of SID ${hex(c.sid, 4)}`,
            VTD_PASID_ENTRY,
            words,
            null,
          ),
          ...(same ? {} : { tone: 'stale' as const }),
        }
      }),
      empty: 'No cached PASID entries.',
    }
    return [
      tlbView('IOTLB', 'tagged by DID, PASID and kind', unit.iotlb, 'DID'),
      tlbView('Paging-structure cache', 'last-level tables per 2 MiB region', unit.psc, 'DID'),
      tlbView('Device TLB', 'ATS translations of the unit’s devices', unit.devtlb, 'SID'),
      contexts,
      pasids,
    ]
  },
  queues(ctx) {
    const unit = hw(ctx)
    const iqa = unit.readMmio(Reg.IQA)
    const base = Number(iqa & Iqa.ADDR_MASK)
    const step = iqa & Iqa.DW ? 32 : 16
    const size = 4096 * 2 ** Number(iqa & Iqa.QS_MASK)
    const entries = size / step
    const iqh = Number(unit.readMmio(Reg.IQH)) / step
    const iqt = Number(unit.readMmio(Reg.IQT)) / step
    const rows: ListRow[] = []
    const pending = (iqt - iqh + entries) % entries
    for (let k = 1; k <= Math.min(RING_ROWS, entries); k++) {
      const slot = (iqt - k + entries) % entries
      const pa = base + slot * step
      const w = qwords(unit, pa, step / 8)
      if (w.every((x) => x === 0n)) break
      const d = decodeVtdDescriptor(`Descriptor slot ${slot}`, w, pa)
      rows.push({
        cells: [
          String(slot),
          vtdDescriptorName(w),
          d.fields
            .filter((f) => f.name !== 'Type' && !f.reserved && f.value !== 0n)
            .map((f) => (f.hi === f.lo ? f.name : `${f.name}=${f.meaning || hex(f.value)}`))
            .join(' · '),
          k <= pending ? 'pending' : 'done',
        ],
        decoded: d,
        ...(k <= pending ? { tone: 'pending' as const } : {}),
      })
    }
    const dev = ctx.machine.devices.find((x) => x.iommu?.unit === unit)
    const faultRow = (
      f: { reason: number; sid: number; pasid: number | null; addr: bigint; read: boolean },
      state: string,
    ): ListRow => ({
      cells: [
        hex(f.reason, 2),
        FAULT_NAMES[f.reason] ?? '?',
        hex(f.sid, 4),
        f.pasid === null ? '—' : String(f.pasid),
        hex(f.addr),
        f.read ? 'read' : 'write',
        state,
      ],
      tone: 'fault',
    })
    const faults: ListView = {
      title: 'Fault records',
      ref: 'VT-d spec §7.1; fault-recording registers and the driver’s fault handler',
      note: `${unit.stats.faults} faults recorded, ${unit.stats.faultsDropped} dropped`,
      columns: ['reason', 'name', 'SID', 'PASID', 'address', 'access', 'state'],
      rows: [
        ...unit.pendingFaults().map((f) => faultRow(f, 'pending')),
        ...(dev ? intelFaultLog(dev) : []).map((f) => faultRow(f, 'read by the driver')),
      ],
      empty: 'No faults.',
    }
    const prq: ListView = {
      title: 'Page request queue',
      ref: 'VT-d spec §7.5',
      columns: ['RID', 'PASID', 'address', 'access', 'PRG index', 'last'],
      rows: unit.pendingPageRequests().map((r) => ({
        cells: [
          hex(r.rid, 4),
          r.pasidPresent ? String(r.pasid) : '—',
          hex(r.addr),
          `${r.read ? 'R' : ''}${r.write ? 'W' : ''}`,
          String(r.prgIndex),
          r.lpig ? 'yes' : 'no',
        ],
      })),
      empty: 'No pending page requests.',
    }
    return [
      {
        title: 'Invalidation queue',
        ref: 'VT-d spec §6.5.2; newest first',
        note: `base ${hex(base)}, ${entries} × ${step * 8}-bit descriptors, IQH ${iqh}, IQT ${iqt}; ${unit.stats.descriptors} executed`,
        columns: ['slot', 'descriptor', 'operands', 'state'],
        rows,
        empty: 'No descriptors written.',
      },
      faults,
      prq,
    ]
  },
  detectors(ctx) {
    const unit = hw(ctx)
    return [
      {
        title: 'Missing-invalidation detector',
        about:
          'On every context-cache, PASID-cache, IOTLB, paging-structure or device-TLB hit the model compares the cached entry with memory; a DMA about to use a stale entry is recorded (and still uses it).',
        enabled: unit.detectStale,
        findings: unit.staleUses.map((u) => ({
          severity: 'error' as const,
          text: u.what,
          detail: {
            cache: u.cache,
            missing: u.missing,
            SID: hex(u.sid, 4),
            DID: String(u.did),
            PASID: String(u.pasid),
            IOVA: hex(u.iova),
            access: u.write ? 'write' : 'read',
          },
        })),
      },
    ]
  },
  pageTable(domain: IommuDomain) {
    if (!(domain instanceof VtdDomain)) return null
    const pt = domain.sspt ?? domain.fspt
    return pt === null ? null : tableSource(pt)
  },
  hooks: [
    {
      name: 'skipIotlbFlush',
      label: 'Drop IOTLB / PASID-IOTLB invalidations',
      set: (driver, on) => {
        intelTestHooks(driver).skipIotlbFlush = on
      },
    },
    {
      name: 'skipDevtlbFlush',
      label: 'Drop device-TLB invalidations',
      set: (driver, on) => {
        intelTestHooks(driver).skipDevtlbFlush = on
      },
    },
    {
      name: 'skipPasidCacheFlush',
      label: 'Drop the PASID-cache invalidation',
      set: (driver, on) => {
        intelTestHooks(driver).skipPasidCacheFlush = on
      },
    },
  ],
  simModel: null,
}

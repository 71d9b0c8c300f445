/**
 * ARM SMMUv3 in the explorer: a device's STE (found through the stream table in memory,
 * linear or two-level) and its CD 0, the registers, the TLB and ATC with their tags and the
 * configuration cache state, the command and event queues with decoded records, and the
 * missing-invalidation detector.
 *
 * @module
 */

import type { PciDevice } from '@iommu/core'
import {
  DEFAULT_IDR0,
  Idr0,
  Mmio,
  SmmuV3Hw,
  smmuv3,
  smmuv3TestHooks,
  type Tlb,
  TlbKind,
} from '@iommu/driver-smmuv3'
import { decodeStruct, hex, sizeShort } from '../decode/bitfield.ts'
import {
  decodeSmmuCommand,
  SMMU_CD,
  SMMU_CR0,
  SMMU_EVENT,
  SMMU_STE,
  SMMU_STRTAB_BASE,
  SMMU_STRTAB_BASE_CFG,
  smmuCommandName,
  smmuEventName,
  smmuQueueBase,
} from '../decode/smmuv3.ts'
import { pageTableOf, tableSource } from '../model/pgtable.ts'
import type { ListRow, ListView, StructView, VendorContext, VendorDescriptor } from './types.ts'

const RING_ROWS = 64
const ADDR_51_6 = 0x000f_ffff_ffff_ffc0n
const ADDR_51_12 = 0x000f_ffff_ffff_f000n

function hw(ctx: VendorContext): SmmuV3Hw {
  if (!(ctx.unit instanceof SmmuV3Hw)) throw new Error(`${ctx.unit.name} is not an SMMUv3`)
  return ctx.unit
}

function qwords(unit: SmmuV3Hw, pa: number, n: number): bigint[] {
  return Array.from({ length: n }, (_, i) => unit.memory.read64(pa + 8 * i))
}

/** Physical address of the STE of `sid` (linear or two-level stream table), or null. */
export function stePa(unit: SmmuV3Hw, sid: number): number | null {
  const base = Number(unit.readReg64(Mmio.STRTAB_BASE) & ADDR_51_6)
  const cfg = unit.readReg(Mmio.STRTAB_BASE_CFG)
  if (((cfg >>> 16) & 3) === 0) return base + sid * 64
  const split = (cfg >>> 6) & 0x1f
  const l1 = unit.memory.read64(base + Math.floor(sid / 2 ** split) * 8)
  if ((l1 & 0x1fn) === 0n) return null
  return Number(l1 & ADDR_51_6) + (sid % 2 ** split) * 64
}

/** Physical address of CD `ssid` behind an STE, or null. */
export function cdPa(unit: SmmuV3Hw, ste: readonly bigint[], ssid: number): number | null {
  const q0 = ste[0] ?? 0n
  const ptr = Number(q0 & ADDR_51_6)
  const fmt = Number((q0 >> 4n) & 3n)
  if (fmt === 0) return ptr + ssid * 64
  const split = fmt === 1 ? 6 : 10
  const l1 = unit.memory.read64(ptr + Math.floor(ssid / 2 ** split) * 8)
  if ((l1 & 1n) === 0n) return null
  return Number(l1 & ADDR_51_12) + (ssid % 2 ** split) * 64
}

interface Ring {
  readonly base: number
  readonly entries: number
  readonly prod: number
  readonly cons: number
}

function ring(unit: SmmuV3Hw, baseReg: number, prodReg: number, consReg: number): Ring {
  const b = unit.readReg64(baseReg)
  const shift = Number(b & 0x1fn)
  const entries = 2 ** shift
  const mask = (2 << shift) - 1
  return {
    base: Number(b & 0x000f_ffff_ffff_ffe0n),
    entries,
    prod: unit.readReg(prodReg) & mask,
    cons: unit.readReg(consReg) & mask,
  }
}

function ringRows(
  unit: SmmuV3Hw,
  r: Ring,
  size: number,
  describe: (w: bigint[], slot: number, pa: number, pending: boolean) => ListRow,
): ListRow[] {
  const rows: ListRow[] = []
  const idx = (p: number) => p % r.entries
  const pending = (r.prod - r.cons + 2 * r.entries) % (2 * r.entries)
  for (let k = 1; k <= Math.min(RING_ROWS, r.entries); k++) {
    const slot = (idx(r.prod) - k + r.entries) % r.entries
    const pa = r.base + slot * size
    const w = qwords(unit, pa, size / 8)
    if (w.every((x) => x === 0n)) break
    rows.push(describe(w, slot, pa, k <= pending))
  }
  return rows
}

const KIND_NAMES: Record<number, string> = {
  [TlbKind.S1]: 'S1',
  [TlbKind.S2]: 'S2',
  [TlbKind.S12]: 'S1+S2',
}

function tlbView(
  title: string,
  ref: string,
  t: Tlb,
  tag: (v: number) => string,
  tagName: string,
): ListView {
  const s = t.stats
  return {
    title,
    ref,
    note: `hits ${s.hits}, misses ${s.misses}, fills ${s.fills}, evictions ${s.evictions}, invalidated ${s.invalidated}`,
    columns: ['set.way', tagName, 'kind', 'input', 'size', 'PA', 'perm', 'D cached'],
    rows: t.validEntries().map((i) => ({
      cells: [
        `${Math.floor(i / t.ways)}.${i % t.ways}`,
        tag(t.tag(i)),
        KIND_NAMES[t.kind(i)] ?? String(t.kind(i)),
        hex(BigInt(t.vpn(i)) << 12n),
        sizeShort(t.sizeLg2(i)),
        hex(BigInt(t.pa[i] as number) << 12n),
        `${(t.perm[i] as number) & 1 ? 'R' : '-'}${(t.perm[i] as number) & 2 ? 'W' : '-'}`,
        t.dirty[i] ? 'yes' : 'no',
      ],
    })),
    empty: 'No valid entries.',
  }
}

/** The SMMUv3 descriptor. */
export const smmuv3Vendor: VendorDescriptor = {
  id: 'smmuv3',
  label: 'ARM SMMUv3',
  deviceDirtyTracking: false,
  about:
    'SMMUv3: stream table, STE and CD, ARM LPAE stage 1/2 tables, TLB and ATC, command/event queues, HTTU dirty tracking',
  options: [
    {
      key: 'httu',
      label: 'Dirty tracking (IDR0.HTTU = access + dirty)',
      kind: 'boolean',
      default: true,
      help: 'Without hardware dirty updates HWPT_ALLOC with DIRTY_TRACKING is EOPNOTSUPP',
    },
    { key: 'detectStale', label: 'Missing-invalidation detector', kind: 'boolean', default: true },
    {
      key: 'flushAfterDirtyClear',
      label: 'Flush the TLB after a dirty clear (7.2 does not)',
      kind: 'boolean',
      default: false,
    },
  ],
  createIommu(o) {
    const idr0 = o.httu === false ? DEFAULT_IDR0 & ~(3 << Idr0.HTTU_SHIFT) : DEFAULT_IDR0
    return {
      driver: smmuv3(o.flushAfterDirtyClear === true ? { flushAfterDirtyClear: true } : {}),
      config: { idr0, detectStale: o.detectStale !== false },
    }
  },
  deviceEntryName: 'STE / CD',
  deviceEntries(ctx, dev: PciDevice): StructView[] {
    const unit = hw(ctx)
    const sid = dev.streamId
    const pa = stePa(unit, sid)
    if (pa === null) return []
    const ste = qwords(unit, pa, 8)
    const out: StructView[] = [
      {
        decoded: decodeStruct(`STE of ${dev.name} (StreamID ${hex(sid, 4)})`, SMMU_STE, ste, pa),
        note: `${unit.steCached(sid) ? 'in the configuration cache' : 'not cached'}`,
      },
    ]
    const cfg = Number(((ste[0] ?? 0n) >> 1n) & 7n)
    if ((ste[0] ?? 0n) & 1n && (cfg === 5 || cfg === 7)) {
      const c = cdPa(unit, ste, 0)
      if (c !== null) {
        out.push({
          decoded: decodeStruct('CD 0 (SubstreamID 0)', SMMU_CD, qwords(unit, c, 8), c),
          note: `${unit.cdCached(sid, 0) ? 'in the configuration cache' : 'not cached'}`,
        })
      }
    }
    return out
  },
  registers(ctx) {
    const unit = hw(ctx)
    return [
      { decoded: decodeStruct('CR0', SMMU_CR0, [BigInt(unit.readReg(Mmio.CR0))]) },
      {
        decoded: decodeStruct('STRTAB_BASE', SMMU_STRTAB_BASE, [unit.readReg64(Mmio.STRTAB_BASE)]),
      },
      {
        decoded: decodeStruct('STRTAB_BASE_CFG', SMMU_STRTAB_BASE_CFG, [
          BigInt(unit.readReg(Mmio.STRTAB_BASE_CFG)),
        ]),
      },
      {
        decoded: decodeStruct('CMDQ_BASE', smmuQueueBase('SMMU_CMDQ_BASE', Mmio.CMDQ_BASE), [
          unit.readReg64(Mmio.CMDQ_BASE),
        ]),
      },
      {
        decoded: decodeStruct('EVTQ_BASE', smmuQueueBase('SMMU_EVTQ_BASE', Mmio.EVTQ_BASE), [
          unit.readReg64(Mmio.EVTQ_BASE),
        ]),
      },
    ]
  },
  caches(ctx) {
    const unit = hw(ctx)
    const config: ListView = {
      title: 'Configuration cache',
      ref: 'STEs and CDs; dropped by CFGI_STE / CFGI_CD / CFGI_ALL',
      columns: ['device', 'StreamID', 'STE cached', 'CD 0 cached'],
      rows: ctx.machine.devices
        .filter((d) => d.iommu?.unit === unit)
        .map((d) => ({
          cells: [
            d.name,
            hex(d.streamId, 4),
            unit.steCached(d.streamId) ? 'yes' : 'no',
            unit.cdCached(d.streamId, 0) ? 'yes' : 'no',
          ],
        })),
      empty: 'No devices.',
    }
    return [
      tlbView(
        'TLB',
        'tagged by VMID and ASID, kind and size',
        unit.tlb,
        (t) => `VMID ${t >>> 16}, ASID ${t & 0xffff}`,
        'tag',
      ),
      tlbView(
        'ATC',
        'the ATS endpoints’ translation caches, tagged by StreamID',
        unit.atc,
        (t) => hex(t, 4),
        'StreamID',
      ),
      config,
    ]
  },
  queues(ctx) {
    const unit = hw(ctx)
    const cmdq = ring(unit, Mmio.CMDQ_BASE, Mmio.CMDQ_PROD, Mmio.CMDQ_CONS)
    const evtq = ring(unit, Mmio.EVTQ_BASE, Mmio.EVTQ_PROD, Mmio.EVTQ_CONS)
    return [
      {
        title: 'Command queue',
        ref: 'IHI 0070 §4; newest first',
        note: `base ${hex(cmdq.base)}, ${cmdq.entries} entries, PROD ${hex(cmdq.prod)}, CONS ${hex(cmdq.cons)}`,
        columns: ['slot', 'command', 'operands', 'state'],
        rows: ringRows(unit, cmdq, 16, (w, slot, pa, pending) => {
          const d = decodeSmmuCommand(`Command slot ${slot}`, w, pa)
          return {
            cells: [
              String(slot),
              smmuCommandName(w, pa),
              d.fields
                .filter((f) => f.name !== 'Opcode' && !f.reserved && f.value !== 0n)
                .map((f) => (f.hi === f.lo ? f.name : `${f.name}=${f.meaning || hex(f.value)}`))
                .join(' · '),
              pending ? 'pending' : 'done',
            ],
            decoded: d,
            ...(pending ? { tone: 'pending' as const } : {}),
          }
        }),
        empty: 'No commands written.',
      },
      {
        title: 'Event queue',
        ref: 'IHI 0070 §7.3; newest first',
        note: `base ${hex(evtq.base)}, ${evtq.entries} entries, PROD ${hex(evtq.prod)}, CONS ${hex(evtq.cons)}`,
        columns: ['slot', 'event', 'StreamID', 'input address', 'state'],
        rows: ringRows(unit, evtq, 32, (w, slot, pa, pending) => ({
          cells: [
            String(slot),
            smmuEventName(w),
            hex(Number(((w[0] as bigint) >> 32n) & 0xffff_ffffn), 4),
            hex(w[2] as bigint),
            pending ? 'pending' : 'read by the driver',
          ],
          decoded: decodeStruct(`Event slot ${slot}`, SMMU_EVENT, w, pa),
          tone: 'fault',
        })),
        empty: 'No events: no DMA has faulted.',
      },
    ]
  },
  detectors(ctx) {
    const unit = hw(ctx)
    return [
      {
        title: 'Missing-invalidation detector',
        about:
          'On every STE, CD, TLB or ATC hit the model compares the cached entry with memory; a DMA about to use a stale entry is recorded (and still uses it).',
        enabled: unit.detectStale,
        findings: unit.staleUses.map((u) => ({
          severity: 'error' as const,
          text: u.what,
          detail: {
            cache: u.cache,
            missing: u.missing,
            StreamID: hex(u.sid, 4),
            SSID: String(u.ssid),
            VMID: String(u.vmid),
            ASID: String(u.asid),
            IOVA: hex(u.iova),
            access: u.write ? 'write' : 'read',
          },
        })),
      },
    ]
  },
  pageTable(domain) {
    const pt = pageTableOf(domain)
    return pt === null ? null : tableSource(pt)
  },
  hooks: [
    {
      name: 'skipIotlbSync',
      label: 'Drop the TLBIs of iotlb_sync',
      set: (driver, on) => {
        smmuv3TestHooks(driver).skipIotlbSync = on
      },
    },
    {
      name: 'skipCfgiSte',
      label: 'Drop CFGI_STE',
      set: (driver, on) => {
        smmuv3TestHooks(driver).skipCfgiSte = on
      },
    },
    {
      name: 'skipCfgiCd',
      label: 'Drop CFGI_CD',
      set: (driver, on) => {
        smmuv3TestHooks(driver).skipCfgiCd = on
      },
    },
  ],
  simModel: null,
}

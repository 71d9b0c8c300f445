/**
 * AMD-Vi in the explorer: the DTE, the registers, the IOTLB and DTE cache, the command
 * buffer and event log (all read from memory and MMIO, as a debugger on the real machine
 * would), and the missing-invalidation detector.
 *
 * @module
 */

import type { PciDevice } from '@iommu/core'
import {
  AmdIommuHw,
  amd,
  amdTestHooks,
  DEFAULT_EFR,
  Dte,
  Efr,
  Mmio,
  NO_PASID,
} from '@iommu/driver-amd'
import {
  AMD_CONTROL,
  AMD_DEV_TABLE_BASE,
  AMD_EFR,
  AMD_EVENT,
  AMD_STATUS,
  amdCommandName,
  amdEventName,
  decodeAmdCommand,
  decodeDte,
  ringBaseLayout,
  wordsOf32,
} from '../decode/amd.ts'
import { decodeStruct, hex } from '../decode/bitfield.ts'
import { pageTableOf, tableSource } from '../model/pgtable.ts'
import type { ListRow, ListView, StructView, VendorContext, VendorDescriptor } from './types.ts'

/** How many ring entries the queue views show (newest first). */
const RING_ROWS = 64

function hw(ctx: VendorContext): AmdIommuHw {
  if (!(ctx.unit instanceof AmdIommuHw)) throw new Error(`${ctx.unit.name} is not AMD-Vi`)
  return ctx.unit
}

/** Physical address of a device's DTE (Device Table Base + DeviceID × 32). */
export function dteAddress(unit: AmdIommuHw, devid: number): number {
  const base = Number(unit.readMmio(Mmio.DEV_TABLE) & 0x000f_ffff_ffff_f000n)
  return base + devid * Dte.SIZE
}

/** The four 64-bit words of a device's DTE, from memory. */
export function readDteWords(unit: AmdIommuHw, devid: number): bigint[] {
  const pa = dteAddress(unit, devid)
  return [0, 1, 2, 3].map((i) => unit.memory.read64(pa + 8 * i))
}

function rawToWords(raw: Uint32Array): bigint[] {
  const out: bigint[] = []
  for (let i = 0; i < 8; i += 2) {
    out.push((BigInt(raw[i + 1] as number) << 32n) | BigInt(raw[i] as number))
  }
  return out
}

interface Ring {
  readonly base: number
  readonly entries: number
  readonly head: number
  readonly tail: number
}

function ring(unit: AmdIommuHw, baseReg: number, headReg: number, tailReg: number): Ring {
  const reg = unit.readMmio(baseReg)
  return {
    base: Number(reg & 0x000f_ffff_ffff_f000n),
    entries: 2 ** Number((reg >> 56n) & 0xfn),
    head: Number(unit.readMmio(headReg) & 0x7fff0n) / 16,
    tail: Number(unit.readMmio(tailReg) & 0x7fff0n) / 16,
  }
}

function record(unit: AmdIommuHw, r: Ring, slot: number): bigint[] {
  const pa = r.base + slot * 16
  const m = unit.memory
  return wordsOf32(m.read32(pa), m.read32(pa + 4), m.read32(pa + 8), m.read32(pa + 12))
}

/** Ring slots newest first, from tail - 1 back, skipping never-written (zero) records. */
function ringRows(
  unit: AmdIommuHw,
  r: Ring,
  describe: (w: bigint[], slot: number, pa: number, pending: boolean) => ListRow,
): ListRow[] {
  const rows: ListRow[] = []
  const pendingCount = (r.tail - r.head + r.entries) % r.entries
  for (let k = 1; k <= Math.min(RING_ROWS, r.entries); k++) {
    const slot = (r.tail - k + r.entries) % r.entries
    const w = record(unit, r, slot)
    if (w[0] === 0n && w[1] === 0n) break
    rows.push(describe(w, slot, r.base + slot * 16, k <= pendingCount))
  }
  return rows
}

function permName(p: number): string {
  return `${p & 1 ? 'R' : '-'}${p & 2 ? 'W' : '-'}`
}

/** The AMD-Vi descriptor. */
export const amdVendor: VendorDescriptor = {
  id: 'amd',
  label: 'AMD-Vi',
  deviceDirtyTracking: false,
  about:
    'AMD IOMMU v1 host tables, DTE, IOTLB + DTE cache, command buffer, event log, HAD dirty tracking',
  options: [
    {
      key: 'hdsup',
      label: 'Dirty tracking (EFR.HDSup: hardware dirty bits)',
      kind: 'boolean',
      default: true,
      help: 'Without it HWPT_ALLOC with DIRTY_TRACKING is EOPNOTSUPP',
    },
    {
      key: 'detectStale',
      label: 'Missing-invalidation detector',
      kind: 'boolean',
      default: true,
    },
    {
      key: 'pgsize',
      label: 'IOPTE sizes',
      kind: 'choice',
      choices: ['all', '4k+2m', '4k'],
      default: 'all',
      help: 'amd_iommu_pgsize_bitmap: every size the v1 table has, or a narrower set',
    },
  ],
  createIommu(o) {
    const pgsize = o.pgsize === '4k' ? 0x1000n : o.pgsize === '4k+2m' ? 0x1000n | 0x20_0000n : null
    const efr = o.hdsup === false ? DEFAULT_EFR & ~Efr.HDSUP : DEFAULT_EFR
    return {
      driver: amd(pgsize === null ? {} : { pgsizeBitmap: pgsize }),
      config: { efr, detectStale: o.detectStale !== false },
    }
  },
  deviceEntryName: 'DTE',
  deviceEntries(ctx, dev: PciDevice): StructView[] {
    const unit = hw(ctx)
    const pa = dteAddress(unit, dev.rid)
    const words = readDteWords(unit, dev.rid)
    const cached = unit.cachedDtes().find((c) => c.devid === dev.rid)
    let warning: string | undefined
    if (cached !== undefined) {
      const cw = rawToWords(cached.raw)
      const diff = cw.findIndex((w, i) => w !== words[i])
      if (diff >= 0) {
        warning = `The DTE cache holds an older copy (word ${diff}: cached ${hex(cw[diff] as bigint)}, memory ${hex(words[diff] as bigint)}): INVALIDATE_DEVTAB_ENTRY is missing`
      }
    }
    const view: StructView = {
      decoded: decodeDte(`DTE of ${dev.name} (DeviceID ${hex(dev.rid, 4)})`, words, pa),
      note: `Device table entry ${dev.rid} at PA ${hex(pa)}; ${cached === undefined ? 'not cached' : 'cached by the IOMMU'}`,
      ...(warning === undefined ? {} : { warning }),
    }
    return [view]
  },
  registers(ctx): StructView[] {
    const unit = hw(ctx)
    const reg = (title: string, layout: typeof AMD_EFR, off: number): StructView => ({
      decoded: decodeStruct(title, layout, [unit.readMmio(off)]),
      note: `MMIO offset ${hex(off, 4)}`,
    })
    return [
      reg('Device Table Base', AMD_DEV_TABLE_BASE, Mmio.DEV_TABLE),
      reg(
        'Command Buffer Base',
        ringBaseLayout('Command Buffer Base Address Register', 'AMD IOMMU spec §3.4.2'),
        Mmio.CMD_BUF,
      ),
      reg(
        'Event Log Base',
        ringBaseLayout('Event Log Base Address Register', 'AMD IOMMU spec §3.4.4'),
        Mmio.EVT_BUF,
      ),
      reg('Control', AMD_CONTROL, Mmio.CONTROL),
      reg('Status', AMD_STATUS, Mmio.STATUS),
      reg('Extended Features', AMD_EFR, Mmio.EXT_FEATURES),
    ]
  },
  caches(ctx): ListView[] {
    const unit = hw(ctx)
    const tlb = unit.iotlb
    const s = tlb.stats
    const iotlb: ListView = {
      title: 'IOTLB',
      ref: `${tlb.sets} sets × ${tlb.ways} ways, tagged by DomainID, PASID, IOVA page and size`,
      note: `hits ${s.hits}, misses ${s.misses}, fills ${s.fills}, evictions ${s.evictions}, invalidated ${s.invalidated}`,
      columns: ['set.way', 'DomainID', 'PASID', 'IOVA', 'size', 'PA', 'perm', 'D cached'],
      rows: tlb.validEntries().map((i) => {
        const size = tlb.sizeLg2(i)
        const pasid = tlb.pasid(i)
        return {
          cells: [
            `${Math.floor(i / tlb.ways)}.${i % tlb.ways}`,
            String(tlb.domid(i)),
            pasid === NO_PASID ? '—' : String(pasid),
            hex(BigInt(tlb.vpn(i)) << 12n),
            size >= 30
              ? `${2 ** (size - 30)}G`
              : size >= 20
                ? `${2 ** (size - 20)}M`
                : `${2 ** (size - 10)}K`,
            hex(BigInt(tlb.pa[i] as number) << 12n),
            permName(tlb.perm[i] as number),
            tlb.dirty[i] ? 'yes' : 'no',
          ],
        }
      }),
      empty: 'No valid entries: nothing translated since the last invalidation.',
    }
    const dtes = unit.cachedDtes()
    const dteCache: ListView = {
      title: 'DTE cache',
      ref: 'tagged by DeviceID; dropped by INVALIDATE_DEVTAB_ENTRY / INVALIDATE_IOMMU_ALL',
      note: `DTE fetches ${unit.stats.dteFetches}`,
      columns: ['DeviceID', 'DomainID', 'matches memory'],
      rows: dtes.map((c) => {
        const words = rawToWords(c.raw)
        const now = readDteWords(unit, c.devid)
        const same = words.every((w, i) => w === now[i])
        return {
          cells: [hex(c.devid, 4), String(c.domid), same ? 'yes' : 'NO — stale'],
          decoded: decodeDte(`Cached DTE of DeviceID ${hex(c.devid, 4)}`, words, null),
          ...(same ? {} : { tone: 'stale' as const }),
        }
      }),
      empty: 'No cached DTEs.',
    }
    return [iotlb, dteCache]
  },
  queues(ctx): ListView[] {
    const unit = hw(ctx)
    const cmd = ring(unit, Mmio.CMD_BUF, Mmio.CMD_HEAD, Mmio.CMD_TAIL)
    const evt = ring(unit, Mmio.EVT_BUF, Mmio.EVT_HEAD, Mmio.EVT_TAIL)
    const commands: ListView = {
      title: 'Command buffer',
      ref: 'AMD IOMMU spec §2.4; newest first',
      note: `base ${hex(cmd.base)}, ${cmd.entries} entries, head ${cmd.head}, tail ${cmd.tail}; ${unit.stats.commands} executed`,
      columns: ['slot', 'command', 'operands', 'state'],
      rows: ringRows(unit, cmd, (w, slot, pa, pending) => {
        const d = decodeAmdCommand(`Command slot ${slot}`, w, pa)
        const ops = d.fields
          .filter((f) => f.name !== 'Opcode' && !f.reserved && f.value !== 0n)
          .map((f) => (f.hi === f.lo ? f.name : `${f.name}=${f.meaning || hex(f.value)}`))
          .join(' · ')
        return {
          cells: [String(slot), amdCommandName(w), ops, pending ? 'pending' : 'done'],
          decoded: d,
          ...(pending ? { tone: 'pending' as const } : {}),
        }
      }),
      empty: 'No commands written.',
    }
    const events: ListView = {
      title: 'Event log',
      ref: 'AMD IOMMU spec §2.5; newest first',
      note: `base ${hex(evt.base)}, ${evt.entries} entries, head ${evt.head}, tail ${evt.tail}; ${unit.stats.events} logged, ${unit.stats.eventsDropped} dropped`,
      columns: ['slot', 'event', 'DeviceID', 'address', 'state'],
      rows: ringRows(unit, evt, (w, slot, pa, pending) => ({
        cells: [
          String(slot),
          amdEventName(w),
          hex(Number((w[0] as bigint) & 0xffffn), 4),
          hex(w[1] as bigint),
          pending ? 'pending' : 'read by the driver',
        ],
        decoded: decodeStruct(`Event slot ${slot}`, AMD_EVENT, w, pa),
        tone: 'fault',
      })),
      empty: 'No events: no DMA has faulted.',
    }
    return [commands, events]
  },
  detectors(ctx) {
    const unit = hw(ctx)
    return [
      {
        title: 'Missing-invalidation detector',
        about:
          'On every DTE-cache or IOTLB hit the model compares the cached entry with memory; a DMA about to use a stale entry is recorded (and still uses it, as the hardware would).',
        enabled: unit.detectStale,
        findings: unit.staleUses.map((u) => ({
          severity: 'error' as const,
          text: u.what,
          detail: {
            cache: u.cache === 'dte' ? 'DTE cache' : 'IOTLB',
            missing: u.missing,
            DeviceID: hex(u.devid, 4),
            DomainID: String(u.domid),
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
      label: 'Drop INVALIDATE_IOMMU_PAGES (iotlb_sync)',
      set: (driver, on) => {
        amdTestHooks(driver).skipIotlbSync = on
      },
    },
    {
      name: 'skipDteFlush',
      label: 'Drop INVALIDATE_DEVTAB_ENTRY',
      set: (driver, on) => {
        amdTestHooks(driver).skipDteFlush = on
      },
    },
  ],
  simModel: 'amd',
}

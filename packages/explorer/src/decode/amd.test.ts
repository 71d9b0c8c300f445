/**
 * The AMD-Vi decoders against the AMD model: field positions against `driver-amd`'s own
 * constants, and decoding what the driver and the hardware model wrote (DTEs, commands,
 * event records, registers) back into what they set.
 */

import { DmaFault } from '@iommu/core'
import {
  AmdDomain,
  type AmdIommuHw,
  DEFAULT_EFR,
  Dte,
  decodeEvent,
  decodeInvRange,
  Efr,
  Event,
  EventFlag,
  Mmio,
} from '@iommu/driver-amd'
import { describe, expect, it } from 'vitest'
import { demoCommands } from '../model/reducer.ts'
import { parseState } from '../model/scenario.ts'
import { replay } from '../model/session.ts'
import { amdVendor, readDteWords } from '../vendors/amd.ts'
import {
  AMD_CONTROL,
  AMD_DEV_TABLE_BASE,
  AMD_DTE,
  AMD_EFR,
  AMD_EVENT,
  AMD_STATUS,
  decodeAmdCommand,
  decodeDte,
  wordsOf32,
} from './amd.ts'
import { bits, fieldValue, hex, type Layout, layoutProblems, sizeName } from './bitfield.ts'

function maskOf(layout: Layout, name: string, word = 0): bigint {
  const f = layout.fields.find((x) => x.name === name)
  if (f === undefined) throw new Error(`no ${name}`)
  return ((1n << BigInt(f.hi - f.lo + 1)) - 1n) << BigInt(f.lo - 64 * word)
}

/** A demo machine (AMD, dirty tracking on, two DMA writes) and its pieces. */
function demo(options: Record<string, boolean | string> = {}) {
  const state = parseState({
    v: 1,
    machine: { vendor: 'amd', options, guestMiB: 8, devices: [{ name: 'nic' }, { name: 'ssd' }] },
  })
  const s = replay({ ...state, commands: demoCommands(2) })
  const unit = s.vendorContext.unit as AmdIommuHw
  return { s, unit, ctx: s.vendorContext }
}

describe('layouts', () => {
  it('cover their structures without overlaps', () => {
    for (const l of [AMD_DTE, AMD_EVENT, AMD_CONTROL, AMD_STATUS, AMD_EFR, AMD_DEV_TABLE_BASE]) {
      expect(layoutProblems(l), l.name).toEqual([])
    }
    for (const op of [1, 2, 3, 4, 8]) {
      const d = decodeAmdCommand('x', [BigInt(op) << 60n, 0n], 0)
      expect(layoutProblems(d.layout), d.layout.name).toEqual([])
    }
  })

  it('put the DTE fields where driver-amd’s Dte constants are', () => {
    expect(maskOf(AMD_DTE, 'V')).toBe(Dte.V)
    expect(maskOf(AMD_DTE, 'TV')).toBe(Dte.TV)
    expect(maskOf(AMD_DTE, 'HAD')).toBe(Dte.HAD)
    expect(maskOf(AMD_DTE, 'Mode')).toBe(Dte.MODE_MASK)
    expect(maskOf(AMD_DTE, 'HostPageTableRootPtr')).toBe(Dte.HOST_TRP_MASK)
    expect(maskOf(AMD_DTE, 'PPR')).toBe(Dte.PPR)
    expect(maskOf(AMD_DTE, 'GIoV')).toBe(Dte.GIOV)
    expect(maskOf(AMD_DTE, 'GV')).toBe(Dte.GV)
    expect(maskOf(AMD_DTE, 'GLX')).toBe(3n << Dte.GLX_SHIFT)
    expect(maskOf(AMD_DTE, 'IR')).toBe(Dte.IR)
    expect(maskOf(AMD_DTE, 'IW')).toBe(Dte.IW)
    expect(maskOf(AMD_DTE, 'DomainID', 1)).toBe(Dte.DOMID_MASK)
    expect(maskOf(AMD_DTE, 'I', 1)).toBe(Dte.IOTLB)
  })

  it('put the EFR fields where driver-amd’s Efr constants are', () => {
    expect(maskOf(AMD_EFR, 'PPRSup')).toBe(Efr.PPR)
    expect(maskOf(AMD_EFR, 'GTSup')).toBe(Efr.GT)
    expect(maskOf(AMD_EFR, 'HATS')).toBe(3n << Efr.HATS_SHIFT)
    expect(maskOf(AMD_EFR, 'PASmax')).toBe(0x1fn << Efr.PASMAX_SHIFT)
    expect(maskOf(AMD_EFR, 'GIoSup')).toBe(Efr.GIOSUP)
    expect(maskOf(AMD_EFR, 'HASup')).toBe(Efr.HASUP)
    expect(maskOf(AMD_EFR, 'HDSup')).toBe(Efr.HDSUP)
  })
})

describe('what the driver and the hardware wrote', () => {
  it('the DTE of an attached device: valid, translating through the domain’s table', () => {
    const { s, unit } = demo()
    const dev = s.devices[0]?.dev
    const domain = dev?.group?.domain
    if (!(domain instanceof AmdDomain) || domain.pt === null || dev === undefined) {
      throw new Error('device 0 is not on an AMD paging domain')
    }
    const d = decodeDte('dte', readDteWords(unit, dev.rid), null)
    expect(fieldValue(d, 'V')).toBe(1n)
    expect(fieldValue(d, 'TV')).toBe(1n)
    expect(fieldValue(d, 'Mode')).toBe(BigInt(domain.pt.root.level + 1))
    expect(fieldValue(d, 'HostPageTableRootPtr')).toBe(BigInt(domain.pt.root.pfn))
    expect(fieldValue(d, 'DomainID')).toBe(BigInt(domain.id))
    expect(fieldValue(d, 'IR')).toBe(1n)
    expect(fieldValue(d, 'IW')).toBe(1n)
    // SET_DIRTY_TRACKING enabled it: DTE.HAD = 11b.
    expect(fieldValue(d, 'HAD')).toBe(3n)
    expect(d.fields.find((f) => f.name === 'Mode')?.meaning).toBe('3-level table (39-bit IOVA)')
  })

  it('the DTE of a device never attached: V = 1, TV = 0 (DMA blocked)', () => {
    const { s, unit } = demo()
    const d = decodeDte('dte', readDteWords(unit, s.devices[1]?.dev.rid ?? -1), null)
    expect(fieldValue(d, 'V')).toBe(1n)
    expect(fieldValue(d, 'TV')).toBe(0n)
    expect(fieldValue(d, 'Mode')).toBe(0n)
  })

  it('the vendor view decodes the same DTE, at Device Table Base + DeviceID × 32', () => {
    const { s, unit, ctx } = demo()
    const dev = s.devices[0]?.dev
    if (dev === undefined) throw new Error('no device')
    const [view] = amdVendor.deviceEntries(ctx, dev)
    expect(view?.warning).toBeUndefined()
    expect(view?.decoded.words).toEqual(readDteWords(unit, dev.rid))
    const base = Number(unit.readMmio(Mmio.DEV_TABLE) & 0x000f_ffff_ffff_f000n)
    expect(view?.decoded.address).toBe(base + dev.rid * Dte.SIZE)
  })

  it('the commands in the ring: opcodes, DeviceIDs, DomainIDs and ranges', () => {
    const { s, unit } = demo()
    const dev = s.devices[0]?.dev
    const domain = dev?.group?.domain as AmdDomain
    const reg = unit.readMmio(Mmio.CMD_BUF)
    const base = Number(reg & 0x000f_ffff_ffff_f000n)
    const tail = Number(unit.readMmio(Mmio.CMD_TAIL)) / 16
    const m = unit.memory
    let devtab = 0
    let pages = 0
    for (let slot = 0; slot < tail; slot++) {
      const pa = base + slot * 16
      const w = [0, 4, 8, 12].map((o) => m.read32(pa + o)) as [number, number, number, number]
      const d = decodeAmdCommand('c', wordsOf32(...w), pa)
      expect(fieldValue(d, 'Opcode')).toBe(BigInt(w[1] >>> 28))
      if (d.layout.name === 'INVALIDATE_DEVTAB_ENTRY') {
        expect(Number(fieldValue(d, 'DeviceID'))).toBe(w[0] & 0xffff)
        if (fieldValue(d, 'DeviceID') === BigInt(dev?.rid ?? -1)) devtab++
      }
      if (
        d.layout.name === 'INVALIDATE_IOMMU_PAGES' &&
        fieldValue(d, 'DomainID') === BigInt(domain.id)
      ) {
        pages++
        // The decoded range is the hardware model's own decoding of the address.
        const addr = (BigInt(w[3] >>> 0) << 32n) | BigInt((w[2] & ~0xfff) >>> 0)
        const [first, count] = decodeInvRange(addr, (w[2] & 1) !== 0)
        const meaning = d.fields.find((f) => f.name === 'Address')?.meaning ?? ''
        if (count === 2 ** 52) expect(meaning).toBe('every page')
        else expect(meaning).toBe(`${sizeName(Math.log2(count) + 12)} at ${hex(first * 4096)}`)
      }
    }
    expect(devtab).toBeGreaterThan(0)
    expect(pages).toBeGreaterThan(0)
  })

  it('an IO_PAGE_FAULT record decodes as driver-amd’s decodeEvent reads it', () => {
    const { s, unit, ctx } = demo()
    const dev = s.devices[0]?.dev
    expect(() => dev?.dma.write(0xdead_0000n, new Uint8Array(4))).toThrow(DmaFault)
    const [events] = amdVendor.queues(ctx).slice(1)
    const row = events?.rows[0]
    const d = row?.decoded
    if (d === undefined) throw new Error('no event row')
    const w = d.words
    const lo = (v: bigint) => Number(v & 0xffff_ffffn)
    const ref = decodeEvent(
      lo(w[0] as bigint),
      lo((w[0] as bigint) >> 32n),
      lo(w[1] as bigint),
      lo((w[1] as bigint) >> 32n),
    )
    expect(ref.code).toBe(Event.IO_PAGE_FAULT)
    expect(fieldValue(d, 'EventCode')).toBe(BigInt(ref.code))
    expect(fieldValue(d, 'DeviceID')).toBe(BigInt(dev?.rid ?? -1))
    expect(fieldValue(d, 'DeviceID')).toBe(BigInt(ref.devid))
    expect(fieldValue(d, 'Address')).toBe(0xdead_0000n)
    expect(fieldValue(d, 'Flags')).toBe(BigInt(ref.flags))
    expect(Number(fieldValue(d, 'Flags')) & EventFlag.RW).toBe(EventFlag.RW)
    expect(d.fields.find((f) => f.name === 'EventCode')?.meaning).toBe('IO_PAGE_FAULT')
    expect(bits(w, 47, 32)).toBe(BigInt(ref.pasidOrDomid & 0xffff))
    expect(unit.stats.events).toBe(1)
  })

  it('the EFR register decodes HDSup as configured', () => {
    const on = demo()
    const off = demo({ hdsup: false })
    const efr = (u: AmdIommuHw) =>
      amdVendor
        .registers({ machine: on.ctx.machine, unit: u })
        .find((r) => r.decoded.layout === AMD_EFR)
    expect(fieldValue(efr(on.unit)?.decoded as never, 'HDSup')).toBe(1n)
    expect(fieldValue(efr(off.unit)?.decoded as never, 'HDSup')).toBe(0n)
    expect(efr(on.unit)?.decoded.words[0]).toBe(DEFAULT_EFR)
    // Without HDSup the dirty-tracking HWPT is refused with the kernel's errno.
    const alloc = off.s.log.find((e) => e.call === 'IOMMU_HWPT_ALLOC')
    expect(alloc?.error?.code).toBe('EOPNOTSUPP')
    expect(alloc?.error?.errno).toBe(-95)
  })
})

/**
 * The VT-d and SMMUv3 decoders against their models: field positions against
 * `driver-intel`'s and `driver-smmuv3`'s own constants, and decoding the context / PASID
 * entries, STEs, CDs, descriptors, commands and event records the drivers and hardware
 * models wrote back into what they set.
 */

import { DmaFault } from '@iommu/core'
import { Ctx, Ecap, Iwd, Pe, Pgtt, Qi, VtdDomain, type VtdIommuHw } from '@iommu/driver-intel'
import {
  Cd,
  Cmd,
  decodeEvent,
  Evt,
  EvtId,
  Op,
  SmmuDomain,
  type SmmuV3Hw,
  Ste,
  smmuv3CdTable,
  Vtcr,
} from '@iommu/driver-smmuv3'
import { describe, expect, it } from 'vitest'
import { demoCommands } from '../model/reducer.ts'
import { parseState } from '../model/scenario.ts'
import { replay } from '../model/session.ts'
import { intelVendor, vtdEntries } from '../vendors/intel.ts'
import { cdPa, smmuv3Vendor, stePa } from '../vendors/smmuv3.ts'
import { fieldValue, hex, type Layout, layoutProblems } from './bitfield.ts'
import {
  decodeVtdDescriptor,
  VTD_CONTEXT_ENTRY,
  VTD_ECAP,
  VTD_GSTS,
  VTD_IQA,
  VTD_PASID_DIR_ENTRY,
  VTD_PASID_ENTRY,
  VTD_ROOT_ENTRY,
  VTD_RTADDR,
} from './intel.ts'
import {
  decodeSmmuCommand,
  SMMU_CD,
  SMMU_CR0,
  SMMU_EVENT,
  SMMU_STE,
  SMMU_STRTAB_BASE,
  SMMU_STRTAB_BASE_CFG,
  smmuQueueBase,
} from './smmuv3.ts'

/** The mask a layout gives a field, shifted down by `qword` 64-bit words. */
function mask(layout: Layout, name: string, qword = 0): bigint {
  const f = layout.fields.find((x) => x.name === name)
  if (f === undefined) throw new Error(`${layout.name} has no ${name}`)
  return ((1n << BigInt(f.hi - f.lo + 1)) - 1n) << BigInt(f.lo - 64 * qword)
}

function demo(vendor: string) {
  const state = parseState({
    v: 1,
    machine: { vendor, guestMiB: 8, devices: [{ name: 'nic' }, { name: 'ssd' }] },
  })
  return replay({ ...state, commands: demoCommands(2) })
}

describe('VT-d layouts', () => {
  it('cover their structures without overlaps', () => {
    for (const l of [
      VTD_ROOT_ENTRY,
      VTD_CONTEXT_ENTRY,
      VTD_PASID_DIR_ENTRY,
      VTD_PASID_ENTRY,
      VTD_GSTS,
      VTD_RTADDR,
      VTD_IQA,
      VTD_ECAP,
    ]) {
      expect(layoutProblems(l), l.name).toEqual([])
    }
    for (const t of [Qi.CC, Qi.IOTLB, Qi.IWD, Qi.EIOTLB, Qi.PC]) {
      const d = decodeVtdDescriptor('x', [BigInt(t), 0n, 0n, 0n], 0)
      expect(layoutProblems(d.layout), d.layout.name).toEqual([])
    }
  })

  it('put the fields where driver-intel’s constants are', () => {
    expect(mask(VTD_CONTEXT_ENTRY, 'P')).toBe(Ctx.P)
    expect(mask(VTD_CONTEXT_ENTRY, 'FPD')).toBe(Ctx.FPD)
    expect(mask(VTD_CONTEXT_ENTRY, 'DTE')).toBe(Ctx.DTE)
    expect(mask(VTD_CONTEXT_ENTRY, 'PASIDE')).toBe(Ctx.PASIDE)
    expect(mask(VTD_CONTEXT_ENTRY, 'PRE')).toBe(Ctx.PRE)
    expect(mask(VTD_CONTEXT_ENTRY, 'PDTS')).toBe(7n << Ctx.PDTS_SHIFT)
    expect(mask(VTD_CONTEXT_ENTRY, 'PASIDDIRPTR')).toBe(Ctx.DIR_MASK)
    expect(mask(VTD_CONTEXT_ENTRY, 'RID_PASID', 1)).toBe(Ctx.RID_PASID_MASK)
    expect(mask(VTD_PASID_ENTRY, 'P')).toBe(Pe.P)
    expect(mask(VTD_PASID_ENTRY, 'FPD')).toBe(Pe.FPD)
    expect(mask(VTD_PASID_ENTRY, 'AW')).toBe(Pe.AW_MASK)
    expect(mask(VTD_PASID_ENTRY, 'PGTT')).toBe(Pe.PGTT_MASK)
    expect(mask(VTD_PASID_ENTRY, 'SSADE')).toBe(Pe.SSADE)
    expect(mask(VTD_PASID_ENTRY, 'SSPTPTR')).toBe(Pe.SSPTPTR_MASK)
    expect(mask(VTD_PASID_ENTRY, 'DID', 1)).toBe(Pe.DID_MASK)
    expect(mask(VTD_PASID_ENTRY, 'PWSNP', 1)).toBe(Pe.PWSNP)
    expect(mask(VTD_PASID_ENTRY, 'PGSNP', 1)).toBe(Pe.PGSNP)
    expect(mask(VTD_PASID_ENTRY, 'SRE', 2)).toBe(Pe.SRE)
    expect(mask(VTD_PASID_ENTRY, 'ERE', 2)).toBe(Pe.ERE)
    expect(mask(VTD_PASID_ENTRY, 'FSPM', 2)).toBe(Pe.FSPM_MASK)
    expect(mask(VTD_PASID_ENTRY, 'WPE', 2)).toBe(Pe.WPE)
    expect(mask(VTD_PASID_ENTRY, 'EAFE', 2)).toBe(Pe.EAFE)
    expect(mask(VTD_PASID_ENTRY, 'FSPTPTR', 2)).toBe(Pe.FSPTPTR_MASK)
    const iwd = decodeVtdDescriptor('x', [BigInt(Qi.IWD), 0n, 0n, 0n], 0).layout
    expect(mask(iwd, 'IF')).toBe(Iwd.IF)
    expect(mask(iwd, 'SW')).toBe(Iwd.SW)
    expect(mask(iwd, 'FN')).toBe(Iwd.FN)
    expect(mask(iwd, 'PD')).toBe(Iwd.PD)
    expect(mask(VTD_ECAP, 'SSADS')).toBe(Ecap.SSADS)
    expect(mask(VTD_ECAP, 'SMTS')).toBe(Ecap.SMTS)
    expect(mask(VTD_ECAP, 'PASID')).toBe(Ecap.PASID)
    expect(mask(VTD_ECAP, 'NEST')).toBe(Ecap.NEST)
  })
})

describe('what the VT-d driver wrote', () => {
  it('the context and PASID entries of an attached device point at the domain’s table', () => {
    const s = demo('intel')
    const unit = s.vendorContext.unit as VtdIommuHw
    const dev = s.devices[0]?.dev
    const domain = dev?.group?.domain
    if (!(domain instanceof VtdDomain) || domain.sspt === null || dev === undefined) {
      throw new Error('device 0 is not on a second-stage VT-d domain')
    }
    const views = intelVendor.deviceEntries(s.vendorContext, dev)
    expect(views.map((v) => v.decoded.layout)).toEqual([
      VTD_ROOT_ENTRY,
      VTD_CONTEXT_ENTRY,
      VTD_PASID_DIR_ENTRY,
      VTD_PASID_ENTRY,
    ])
    const [root, ctx, dir, pe] = views.map((v) => v.decoded) as [never, never, never, never]
    const e = vtdEntries(unit, dev.rid)
    expect(fieldValue(root, 'LP')).toBe(1n)
    expect(fieldValue(ctx, 'P')).toBe(1n)
    expect(BigInt(e.dirPa ?? -1) >> 12n).toBe(fieldValue(ctx, 'PASIDDIRPTR'))
    expect(fieldValue(dir, 'P')).toBe(1n)
    expect(fieldValue(pe, 'P')).toBe(1n)
    expect(fieldValue(pe, 'PGTT')).toBe(BigInt(Pgtt.SS))
    expect(fieldValue(pe, 'SSPTPTR')).toBe(BigInt(domain.sspt.root.pfn))
    // AW is the table's levels minus 2 (3 levels: 1, 4 levels: 2).
    expect(fieldValue(pe, 'AW')).toBe(BigInt(domain.sspt.root.level - 1))
    const [tag] = domain.iommus.values()
    expect(fieldValue(pe, 'DID')).toBe(BigInt(tag?.did ?? -1))
    // SET_DIRTY_TRACKING turned SSADE on.
    expect(fieldValue(pe, 'SSADE')).toBe(1n)
    expect(views[3]?.note).toBe(`in the PASID cache (DID ${fieldValue(pe, 'DID')})`)
  })

  it('the invalidation queue holds the driver’s descriptors, each decoded by type', () => {
    const s = demo('intel')
    const [iq] = intelVendor.queues(s.vendorContext)
    const names = new Set(iq?.rows.map((r) => r.cells[1]))
    expect(names.has('Invalidation wait')).toBe(true)
    expect(names.has('IOTLB invalidate') || names.has('PASID-based IOTLB invalidate')).toBe(true)
    for (const r of iq?.rows ?? []) {
      expect(Number(fieldValue(r.decoded as never, 'Type'))).toBeGreaterThan(0)
    }
  })

  it('a faulting DMA appears among the fault records with its reason', () => {
    const s = demo('intel')
    expect(() => s.devices[0]?.dev.dma.read(0xdead_0000n, 4)).toThrow(DmaFault)
    const faults = intelVendor.queues(s.vendorContext)[1]
    expect(faults?.rows.map((r) => [r.cells[2], r.cells[4], r.cells[5]])).toEqual([
      ['0x0100', '0xdead_0000', 'read'],
    ])
  })
})

describe('SMMUv3 layouts', () => {
  it('cover their structures without overlaps', () => {
    for (const l of [
      SMMU_STE,
      SMMU_CD,
      SMMU_EVENT,
      SMMU_CR0,
      SMMU_STRTAB_BASE,
      SMMU_STRTAB_BASE_CFG,
      smmuQueueBase('q', 0x90),
    ]) {
      expect(layoutProblems(l), l.name).toEqual([])
    }
    for (const op of Object.values(Op)) {
      const d = decodeSmmuCommand('x', [BigInt(op), 0n], 0)
      expect(layoutProblems(d.layout), d.layout.name).toEqual([])
    }
  })

  it('put the STE, CD, command and event fields where driver-smmuv3’s constants are', () => {
    expect(mask(SMMU_STE, 'V')).toBe(Ste.Q0_V)
    expect(mask(SMMU_STE, 'Config')).toBe(Ste.Q0_CFG)
    expect(mask(SMMU_STE, 'S1Fmt')).toBe(Ste.Q0_S1FMT)
    expect(mask(SMMU_STE, 'S1ContextPtr')).toBe(Ste.Q0_S1CTXPTR)
    expect(mask(SMMU_STE, 'S1CDMax')).toBe(Ste.Q0_S1CDMAX)
    expect(mask(SMMU_STE, 'S1DSS', 1)).toBe(Ste.Q1_S1DSS)
    expect(mask(SMMU_STE, 'S1CIR', 1)).toBe(Ste.Q1_S1CIR)
    expect(mask(SMMU_STE, 'S1COR', 1)).toBe(Ste.Q1_S1COR)
    expect(mask(SMMU_STE, 'S1CSH', 1)).toBe(Ste.Q1_S1CSH)
    expect(mask(SMMU_STE, 'MEV', 1)).toBe(Ste.Q1_MEV)
    expect(mask(SMMU_STE, 'S2FWB', 1)).toBe(Ste.Q1_S2FWB)
    expect(mask(SMMU_STE, 'S1STALLD', 1)).toBe(Ste.Q1_S1STALLD)
    expect(mask(SMMU_STE, 'EATS', 1)).toBe(Ste.Q1_EATS)
    expect(mask(SMMU_STE, 'STRW', 1)).toBe(Ste.Q1_STRW)
    expect(mask(SMMU_STE, 'SHCFG', 1)).toBe(Ste.Q1_SHCFG)
    expect(mask(SMMU_STE, 'S2VMID', 2)).toBe(Ste.Q2_S2VMID)
    const vtcr = ['S2T0SZ', 'S2SL0', 'S2IR0', 'S2OR0', 'S2SH0', 'S2TG', 'S2PS'] as const
    for (const f of vtcr) expect(mask(SMMU_STE, f, 2) >> 32n, f).toBe(Vtcr[f])
    expect(vtcr.reduce((m, f) => m | mask(SMMU_STE, f, 2), 0n)).toBe(Ste.Q2_VTCR)
    expect(mask(SMMU_STE, 'S2AA64', 2)).toBe(Ste.Q2_S2AA64)
    expect(mask(SMMU_STE, 'S2PTW', 2)).toBe(Ste.Q2_S2PTW)
    expect(mask(SMMU_STE, 'S2HD', 2)).toBe(Ste.Q2_S2HD)
    expect(mask(SMMU_STE, 'S2HA', 2)).toBe(Ste.Q2_S2HA)
    expect(mask(SMMU_STE, 'S2R', 2)).toBe(Ste.Q2_S2R)
    expect(mask(SMMU_STE, 'S2TTB', 3)).toBe(Ste.Q3_S2TTB)
    for (const [f, m] of [
      ['T0SZ', Cd.Q0_T0SZ],
      ['TG0', Cd.Q0_TG0],
      ['IR0', Cd.Q0_IRGN0],
      ['OR0', Cd.Q0_ORGN0],
      ['SH0', Cd.Q0_SH0],
      ['EPD0', Cd.Q0_EPD0],
      ['EPD1', Cd.Q0_EPD1],
      ['V', Cd.Q0_V],
      ['IPS', Cd.Q0_IPS],
      ['AA64', Cd.Q0_AA64],
      ['HD', Cd.Q0_HD],
      ['HA', Cd.Q0_HA],
      ['R', Cd.Q0_R],
      ['A', Cd.Q0_A],
      ['ASET', Cd.Q0_ASET],
      ['ASID', Cd.Q0_ASID],
    ] as const) {
      expect(mask(SMMU_CD, f), f).toBe(m)
    }
    expect(mask(SMMU_CD, 'HAFT', 1)).toBe(Cd.Q1_HAFT)
    expect(mask(SMMU_CD, 'TTB0', 1)).toBe(Cd.Q1_TTB0)
    const tlbi = decodeSmmuCommand('x', [BigInt(Op.TLBI_NH_VA), 0n], 0).layout
    expect(mask(tlbi, 'NUM')).toBe(Cmd.TLBI_D0_NUM)
    expect(mask(tlbi, 'SCALE')).toBe(Cmd.TLBI_D0_SCALE)
    expect(mask(tlbi, 'VMID')).toBe(Cmd.TLBI_D0_VMID)
    expect(mask(tlbi, 'ASID')).toBe(Cmd.TLBI_D0_ASID)
    expect(mask(tlbi, 'Leaf', 1)).toBe(Cmd.TLBI_D1_LEAF)
    expect(mask(tlbi, 'TTL', 1)).toBe(Cmd.TLBI_D1_TTL)
    expect(mask(tlbi, 'TG', 1)).toBe(Cmd.TLBI_D1_TG)
    expect(mask(tlbi, 'Address', 1)).toBe(Cmd.TLBI_D1_VA)
    const ipa = decodeSmmuCommand('x', [BigInt(Op.TLBI_S2_IPA), 0n], 0).layout
    expect(mask(ipa, 'Address', 1)).toBe(Cmd.TLBI_D1_IPA)
    const cfgi = decodeSmmuCommand('x', [BigInt(Op.CFGI_CD), 0n], 0).layout
    expect(mask(cfgi, 'SubstreamID')).toBe(Cmd.CFGI_D0_SSID)
    expect(mask(cfgi, 'StreamID')).toBe(Cmd.CFGI_D0_SID)
    expect(mask(cfgi, 'SSV')).toBe(Cmd.D0_SSV)
    const sync = decodeSmmuCommand('x', [BigInt(Op.CMD_SYNC), 0n], 0).layout
    expect(mask(sync, 'CS')).toBe(Cmd.SYNC_D0_CS)
    expect(mask(sync, 'MSH')).toBe(Cmd.SYNC_D0_MSH)
    expect(mask(sync, 'MSIAttr')).toBe(Cmd.SYNC_D0_MSIATTR)
    expect(mask(sync, 'MSIData')).toBe(Cmd.SYNC_D0_MSIDATA)
    expect(mask(sync, 'MSIAddress', 1)).toBe(Cmd.SYNC_D1_MSIADDR)
    const atc = decodeSmmuCommand('x', [BigInt(Op.ATC_INV), 0n], 0).layout
    expect(mask(atc, 'G')).toBe(Cmd.ATC_D0_GLOBAL)
    expect(mask(atc, 'Size', 1)).toBe(Cmd.ATC_D1_SIZE)
    expect(mask(atc, 'Address', 1)).toBe(Cmd.ATC_D1_ADDR)
    const pri = decodeSmmuCommand('x', [BigInt(Op.PRI_RESP), 0n], 0).layout
    expect(mask(pri, 'PRGI', 1)).toBe(Cmd.PRI_D1_GRPID)
    expect(mask(pri, 'Resp', 1)).toBe(Cmd.PRI_D1_RESP)
    expect(mask(SMMU_EVENT, 'EventID')).toBe(Evt.D0_ID)
    expect(mask(SMMU_EVENT, 'SSV')).toBe(Evt.D0_SSV)
    expect(mask(SMMU_EVENT, 'SubstreamID')).toBe(Evt.D0_SSID)
    expect(mask(SMMU_EVENT, 'StreamID')).toBe(Evt.D0_SID)
    expect(mask(SMMU_EVENT, 'STAG', 1)).toBe(Evt.D1_STAG)
    expect(mask(SMMU_EVENT, 'Stall', 1)).toBe(Evt.D1_STALL)
    expect(mask(SMMU_EVENT, 'PnU', 1)).toBe(Evt.D1_PNU)
    expect(mask(SMMU_EVENT, 'InD', 1)).toBe(Evt.D1_IND)
    expect(mask(SMMU_EVENT, 'RnW', 1)).toBe(Evt.D1_RNW)
    expect(mask(SMMU_EVENT, 'S2', 1)).toBe(Evt.D1_S2)
    expect(mask(SMMU_EVENT, 'CLASS', 1)).toBe(Evt.D1_CLASS)
    expect(mask(SMMU_EVENT, 'TT_RnW', 1)).toBe(Evt.D1_TT_READ)
    expect(mask(SMMU_EVENT, 'FetchAddr / IPA', 3)).toBe(Evt.D3_FETCH_ADDR)
  })
})

describe('what the SMMUv3 driver wrote', () => {
  it('the STE and CD 0 of an attached device point at the domain’s table', () => {
    const s = demo('smmuv3')
    const unit = s.vendorContext.unit as SmmuV3Hw
    const dev = s.devices[0]?.dev
    const domain = dev?.group?.domain
    if (!(domain instanceof SmmuDomain) || domain.pt === null || dev === undefined) {
      throw new Error('device 0 is not on an SMMUv3 paging domain')
    }
    const views = smmuv3Vendor.deviceEntries(s.vendorContext, dev)
    const [ste, cd] = views.map((v) => v.decoded)
    if (ste === undefined || cd === undefined) throw new Error('no STE or CD')
    expect(ste.address).toBe(stePa(unit, dev.streamId))
    expect(fieldValue(ste, 'V')).toBe(1n)
    expect(fieldValue(ste, 'Config')).toBe(5n)
    const table = smmuv3CdTable(dev)
    expect(fieldValue(ste, 'S1ContextPtr')).toBe(BigInt(table.pa) >> 6n)
    expect(fieldValue(ste, 'S1Fmt')).toBe(BigInt(table.s1fmt))
    expect(cd.address).toBe(cdPa(unit, ste.words, 0))
    expect(fieldValue(cd, 'V')).toBe(1n)
    expect(fieldValue(cd, 'ASID')).toBe(BigInt(domain.asid))
    expect(fieldValue(cd, 'TTB0')).toBe(BigInt(domain.pt.root.pfn) << 8n)
    expect(fieldValue(cd, 'AA64')).toBe(1n)
    // A dirty-tracking domain's CD has hardware dirty updates on.
    expect(fieldValue(cd, 'HD')).toBe(1n)
    expect(views.map((v) => v.note)).toEqual([
      'in the configuration cache',
      'in the configuration cache',
    ])
  })

  it('the command queue has the driver’s CFGI_STE and CMD_SYNCs, completed ones recognised', () => {
    const s = demo('smmuv3')
    const [cmdq] = smmuv3Vendor.queues(s.vendorContext)
    const names = cmdq?.rows.map((r) => r.cells[1]) ?? []
    expect(names).toContain('CMD_CFGI_STE')
    expect(names).toContain('CMD_SYNC (completed)')
    expect(names.some((n) => n?.startsWith('opcode'))).toBe(false)
    const cfgi = cmdq?.rows.find((r) => r.cells[1] === 'CMD_CFGI_STE')
    expect(fieldValue(cfgi?.decoded as never, 'StreamID')).toBe(
      BigInt(s.devices[0]?.dev.streamId ?? -1),
    )
  })

  it('an F_TRANSLATION record decodes as driver-smmuv3’s decodeEvent reads it', () => {
    const s = demo('smmuv3')
    const dev = s.devices[0]?.dev
    expect(() => dev?.dma.write(0xdead_0000n, new Uint8Array(4))).toThrow(DmaFault)
    const evtq = smmuv3Vendor.queues(s.vendorContext)[1]
    const d = evtq?.rows[0]?.decoded
    if (d === undefined) throw new Error('no event')
    const ref = decodeEvent(d.words as [bigint, bigint, bigint, bigint])
    expect(ref.id).toBe(EvtId.F_TRANSLATION)
    expect(fieldValue(d, 'EventID')).toBe(BigInt(ref.id))
    expect(fieldValue(d, 'StreamID')).toBe(BigInt(dev?.streamId ?? -1))
    expect(fieldValue(d, 'InputAddr')).toBe(0xdead_0000n)
    expect(fieldValue(d, 'RnW')).toBe(ref.read ? 1n : 0n)
    expect(d.fields.find((f) => f.name === 'EventID')?.meaning).toBe('F_TRANSLATION')
    expect(evtq?.rows[0]?.cells[3]).toBe(hex(0xdead_0000n))
  })
})

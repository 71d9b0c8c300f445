/**
 * The SMMUv3 hardware model on its own, programmed by hand through MMIO and memory as
 * software would: the command queue (CMD_SYNC completion, CERROR_ILL and its recovery), the
 * stream table (linear and two-level), STE and CD decoding with their C_BAD_* records, CD
 * tables (linear, both two-level formats, S1CDMax, S1DSS), the configuration caches and the
 * commands that drop them, TLB invalidation by VA, ASID, VMID and range, the event queue and
 * its overflow, HTTU, the nested walk (guest CD table and stage-1 tables at IPAs behind a
 * stage 2), the PRI queue, and the ATS endpoint's ATC.
 */
import {
  createMachine,
  DmaFault,
  FramePurpose,
  IotlbGather,
  type Machine,
  PciDevice,
  Prot,
} from '@iommu/core'
import {
  type ArmLpaeConfig,
  type ArmLpaeParams,
  armLpae,
  IoPgtableQuirk,
  PageTable,
} from '@iommu/io-pgtable'
import { describe, expect, it } from 'vitest'
import {
  CmdqErr,
  type Command,
  Cr0,
  cmdAtcInv,
  cmdCfgiAll,
  cmdCfgiCd,
  cmdCfgiSte,
  cmdOp,
  cmdSync,
  cmdTlbi,
  DEFAULT_IDR0,
  type Entry,
  EvtClass,
  EvtId,
  Feat,
  fieldPrep,
  Gbpa,
  Gerror,
  Idr0,
  IrqCtrl,
  Mmio,
  makeAbortSte,
  makeBypassSte,
  makeCdtableSte,
  makeNestedDomainSte,
  makeS1Cd,
  makeS2DomainSte,
  Op,
  Queue,
  S1Dss,
  S1Fmt,
  SmmuV3Hw,
  type SmmuV3HwConfig,
  Ste,
  SyncCs,
  smmuv3,
  smmuv3PriLog,
  TlbKind,
  writeCommand,
} from '../src/index.ts'
import { buildGuestS1 } from './helpers.ts'

const FEATURES = Feat.ATTR_TYPES_OVR
const MASTER = { stallEnabled: false }

interface Bare {
  m: Machine
  hw: SmmuV3Hw
  dev: PciDevice
  strtab: number
  cmdq: number
  evtq: number
  /** Next free command slot. */
  prod: number
}

/** A unit the test programs by hand: linear stream table of 256 STEs, queues, SMMUEN. */
function bare(config: SmmuV3HwConfig = {}, evtqShift = 7): Bare {
  const m = createMachine({ iommus: [smmuv3()] })
  const hw = new SmmuV3Hw(m, 'bare', config)
  const strtab = m.memory.allocFrames(4, FramePurpose.IOMMU_HW, 4) * 4096
  const cmdq = m.memory.allocFrame(FramePurpose.IOMMU_HW) * 4096
  const evtq = m.memory.allocFrame(FramePurpose.IOMMU_HW) * 4096
  for (let sid = 0; sid < 256; sid++) writeEntry(m, strtab + sid * 64, makeAbortSte())
  hw.writeReg64(Mmio.STRTAB_BASE, BigInt(strtab))
  hw.writeReg(Mmio.STRTAB_BASE_CFG, 8)
  hw.writeReg64(Mmio.CMDQ_BASE, BigInt(cmdq) | 8n)
  hw.writeReg64(Mmio.EVTQ_BASE, BigInt(evtq) | BigInt(evtqShift))
  hw.writeReg(Mmio.CR0, Cr0.CMDQEN | Cr0.EVTQEN | Cr0.SMMUEN)
  const dev = new PciDevice(m.memory, hw, '00:02.0', {})
  return { m, hw, dev, strtab, cmdq, evtq, prod: 0 }
}

function writeEntry(m: Machine, pa: number, e: Entry): void {
  for (let i = 0; i < 8; i++) m.memory.write64(pa + 8 * i, e[i] as bigint)
}

/** Queue commands and publish PROD. */
function submit(t: Bare, ...cmds: Command[]): void {
  for (const c of cmds) {
    writeCommand(t.m.memory, t.cmdq + (t.prod & 0xff) * 16, c)
    t.prod = (t.prod + 1) & 0x1ff
  }
  t.hw.writeReg(Mmio.CMDQ_PROD, t.prod)
}

function steAt(t: Bare, sid: number): number {
  return t.strtab + sid * 64
}

/** A stage-1 table (4K granule, 48-bit) with `pages` mapped at `iova` to fresh frames. */
function s1Table(
  m: Machine,
  iova: bigint,
  pages: number,
  quirks = 0,
): { pt: PageTable<ArmLpaeConfig, ArmLpaeParams>; pa: number } {
  const pt = new PageTable(m.memory, armLpae, { stage: 1, ias: 48, oas: 48, quirks })
  const pa = m.memory.allocFrames(pages, FramePurpose.KERNEL) * 4096
  pt.mapRange(iova, BigInt(pa), BigInt(pages * 4096), Prot.READ | Prot.WRITE)
  return { pt, pa }
}

function s1Cd(pt: PageTable<ArmLpaeConfig, ArmLpaeParams>, asid: number, hd = false): Entry {
  const info = pt.hwInfo() as unknown as Parameters<typeof makeS1Cd>[1]
  return makeS1Cd(MASTER, { ...info, hd }, asid)
}

/** An S1-translate STE over a linear table of 2^cdmax CDs at `cdPa`. */
function cdtableSte(
  cdPa: number,
  s1fmt: number = S1Fmt.LINEAR,
  cdmax = 0,
  s1dss: number = S1Dss.SSID0,
): Entry {
  return makeCdtableSte(
    FEATURES,
    MASTER,
    { dma: BigInt(cdPa), s1fmt, s1cdmax: cdmax },
    false,
    s1dss,
  )
}

function events(t: Bare) {
  return t.hw.pendingEvents()
}

describe('the command queue', () => {
  it('CMD_SYNC signals completion by an MSI write of MSIDATA, or by SEV', () => {
    const t = bare()
    const flag = t.m.memory.allocFrame(FramePurpose.KERNEL) * 4096
    t.m.memory.write32(flag, 0xffff_ffff)
    const sync = cmdSync(SyncCs.IRQ, BigInt(flag))
    sync[0] |= 0x1234n << 32n
    submit(t, sync, cmdSync(SyncCs.SEV, 0n))
    expect(t.m.memory.read32(flag)).toBe(0x1234)
    expect(t.hw.stats.sev).toBe(1)
    expect(t.hw.readReg(Mmio.CMDQ_CONS)).toBe(2)
    expect(t.hw.commandCounts[Op.CMD_SYNC]).toBe(2)
  })

  it('stops at an illegal command with CERROR_ILL in CONS and GERROR.CMDQ_ERR, and resumes on ack', () => {
    const t = bare()
    const flag = t.m.memory.allocFrame(FramePurpose.KERNEL) * 4096
    t.m.memory.write32(flag, 1)
    submit(t, cmdCfgiAll(), cmdOp(0x7f), cmdSync(SyncCs.IRQ, BigInt(flag)))
    const cons = t.hw.readReg(Mmio.CMDQ_CONS)
    expect((cons & Queue.CONS_ERR_MASK) >>> Queue.CONS_ERR_SHIFT).toBe(CmdqErr.ILL)
    expect(cons & 0x1ff).toBe(1)
    expect(t.hw.readReg(Mmio.GERROR) & Gerror.CMDQ_ERR).toBe(Gerror.CMDQ_ERR)
    expect(t.m.memory.read32(flag)).toBe(1)
    // Software replaces the command with a CMD_SYNC and acknowledges through GERRORN.
    writeCommand(t.m.memory, t.cmdq + 16, cmdSync(SyncCs.NONE, 0n))
    t.hw.writeReg(Mmio.GERRORN, t.hw.readReg(Mmio.GERROR))
    expect(t.hw.readReg(Mmio.CMDQ_CONS)).toBe(3)
    expect(t.m.memory.read32(flag)).toBe(0)
  })

  it('rejects stage-2 invalidations on a stage-1-only SMMU, and EL2 ones without HYP', () => {
    const t = bare({ idr0: DEFAULT_IDR0 & ~(Idr0.S2P | Idr0.HYP) })
    submit(t, cmdTlbi(Op.TLBI_S12_VMALL, 0, 1))
    expect((t.hw.readReg(Mmio.CMDQ_CONS) >>> Queue.CONS_ERR_SHIFT) & 0x7f).toBe(CmdqErr.ILL)
    const u = bare({ idr0: DEFAULT_IDR0 & ~Idr0.HYP })
    submit(u, cmdOp(Op.TLBI_EL2_ALL))
    expect((u.hw.readReg(Mmio.CMDQ_CONS) >>> Queue.CONS_ERR_SHIFT) & 0x7f).toBe(CmdqErr.ILL)
  })
})

describe('the stream table and STEs', () => {
  it('bypasses, aborts silently, and records C_BAD_STE for an invalid or reserved STE', () => {
    const t = bare()
    t.m.memory.writeBytes(0x20_0000, new Uint8Array([42]))
    writeEntry(t.m, steAt(t, t.dev.streamId), makeBypassSte(FEATURES))
    expect(t.dev.dma.read(0x20_0000, 1)[0]).toBe(42)
    // Cached: a new STE takes effect only after CFGI_STE.
    writeEntry(t.m, steAt(t, t.dev.streamId), makeAbortSte())
    expect(t.dev.dma.read(0x20_0000, 1)[0]).toBe(42)
    expect(t.hw.staleUses[0]).toMatchObject({ cache: 'ste', missing: 'CFGI_STE' })
    submit(t, cmdCfgiSte(t.dev.streamId, true))
    expect(() => t.dev.dma.read(0x20_0000, 1)).toThrow(
      expect.objectContaining({ reason: 'blocked' }),
    )
    expect(events(t)).toEqual([])
    const reserved = makeAbortSte()
    reserved[0] = Ste.Q0_V | fieldPrep(Ste.Q0_CFG, 2)
    writeEntry(t.m, steAt(t, t.dev.streamId), reserved)
    submit(t, cmdCfgiSte(t.dev.streamId, true))
    expect(() => t.dev.dma.read(0x1000, 1)).toThrow(
      expect.objectContaining({ reason: 'bad-entry' }),
    )
    writeEntry(t.m, steAt(t, t.dev.streamId), [0n, 0n, 0n, 0n, 0n, 0n, 0n, 0n])
    submit(t, cmdCfgiSte(t.dev.streamId, true))
    expect(() => t.dev.dma.read(0x1000, 1)).toThrow(DmaFault)
    expect(events(t).map((e) => [e.id, e.sid])).toEqual([
      [EvtId.C_BAD_STE, t.dev.streamId],
      [EvtId.C_BAD_STE, t.dev.streamId],
    ])
  })

  it('records C_BAD_STREAMID beyond the table and for a two-level descriptor with SPAN = 0', () => {
    const t = bare()
    const far = new PciDevice(t.m.memory, t.hw, '01:00.0', {})
    expect(() => far.dma.read(0, 1)).toThrow(expect.objectContaining({ reason: 'bad-entry' }))
    expect(events(t)[0]).toMatchObject({ id: EvtId.C_BAD_STREAMID, sid: 0x100 })
    // A two-level table: SPLIT 8, 2^16 StreamIDs, L1 descriptor of bus 1 only.
    const l1 = t.m.memory.allocFrame(FramePurpose.IOMMU_HW) * 4096
    const l2 = t.m.memory.allocFrames(4, FramePurpose.IOMMU_HW, 4) * 4096
    t.m.memory.write64(l1 + 8, BigInt(l2) | 9n)
    writeEntry(t.m, l2, makeBypassSte(FEATURES))
    t.hw.writeReg(Mmio.CR0, Cr0.CMDQEN | Cr0.EVTQEN)
    t.hw.writeReg64(Mmio.STRTAB_BASE, BigInt(l1))
    t.hw.writeReg(Mmio.STRTAB_BASE_CFG, (1 << 16) | (8 << 6) | 16)
    t.hw.writeReg(Mmio.CR0, Cr0.CMDQEN | Cr0.EVTQEN | Cr0.SMMUEN)
    t.m.memory.writeBytes(0x30_0000, new Uint8Array([7]))
    expect(far.dma.read(0x30_0000, 1)[0]).toBe(7)
    expect(() => t.dev.dma.read(0x30_0000, 1)).toThrow(DmaFault)
    expect(events(t)[1]).toMatchObject({ id: EvtId.C_BAD_STREAMID, sid: t.dev.streamId })
  })

  it('follows GBPA while the SMMU is disabled', () => {
    const t = bare()
    t.hw.writeReg(Mmio.CR0, Cr0.CMDQEN)
    t.m.memory.writeBytes(0x20_0000, new Uint8Array([5]))
    expect(t.dev.dma.read(0x20_0000, 1)[0]).toBe(5)
    t.hw.writeReg(Mmio.GBPA, Gbpa.ABORT)
    expect(t.dev.dma.read(0x20_0000, 1)[0]).toBe(5)
    t.hw.writeReg(Mmio.GBPA, Gbpa.ABORT | Gbpa.UPDATE)
    expect(t.hw.readReg(Mmio.GBPA)).toBe(Gbpa.ABORT)
    expect(() => t.dev.dma.read(0x20_0000, 1)).toThrow(
      expect.objectContaining({ reason: 'blocked' }),
    )
  })
})

describe('context descriptors and stage 1', () => {
  it('translates through CD 0 of a linear table; C_BAD_CD for an invalid CD; CFGI_CD drops it', () => {
    const t = bare()
    const { pt, pa } = s1Table(t.m, 0x40_0000n, 2)
    const cdTable = t.m.memory.allocFrame(FramePurpose.IOMMU_HW) * 4096
    writeEntry(t.m, steAt(t, t.dev.streamId), cdtableSte(cdTable))
    expect(() => t.dev.dma.read(0x40_0000, 1)).toThrow(
      expect.objectContaining({ reason: 'bad-entry' }),
    )
    expect(events(t)[0]).toMatchObject({ id: EvtId.C_BAD_CD, sid: t.dev.streamId })
    writeEntry(t.m, cdTable, s1Cd(pt, 5))
    // The invalid CD is cached until CFGI_CD.
    expect(() => t.dev.dma.read(0x40_0000, 1)).toThrow(DmaFault)
    submit(t, cmdCfgiCd(t.dev.streamId, 0, true))
    t.m.memory.writeBytes(pa + 4096 + 3, new Uint8Array([9]))
    expect(t.dev.dma.read(0x40_1003, 1)[0]).toBe(9)
    expect(t.hw.tlb.size).toBe(1)
    expect(t.hw.cdCached(t.dev.streamId, 0)).toBe(true)
    // CFGI_STE also drops the stream's CDs.
    submit(t, cmdCfgiSte(t.dev.streamId, true))
    expect(t.hw.cdCached(t.dev.streamId, 0)).toBe(false)
  })

  it('selects CDs by SubstreamID in both two-level formats; S1DSS decides for traffic without one', () => {
    for (const [fmt, perL2] of [
      [S1Fmt.L2_64K, 1024],
      [S1Fmt.L2_4K, 64],
    ] as const) {
      const t = bare()
      const a = s1Table(t.m, 0x40_0000n, 1)
      const b = s1Table(t.m, 0x40_0000n, 1)
      t.m.memory.writeBytes(a.pa, new Uint8Array([0xa]))
      t.m.memory.writeBytes(b.pa, new Uint8Array([0xb]))
      const l1 = t.m.memory.allocFrame(FramePurpose.IOMMU_HW) * 4096
      const l2pages = (perL2 * 64) / 4096
      const l2a = t.m.memory.allocFrames(l2pages, FramePurpose.IOMMU_HW, l2pages) * 4096
      const l2b = t.m.memory.allocFrames(l2pages, FramePurpose.IOMMU_HW, l2pages) * 4096
      t.m.memory.write64(l1, BigInt(l2a) | 1n)
      t.m.memory.write64(l1 + 8, BigInt(l2b) | 1n)
      writeEntry(t.m, l2a, s1Cd(a.pt, 1))
      // SubstreamID perL2 + 3: the second level-2 table, entry 3.
      writeEntry(t.m, l2b + 3 * 64, s1Cd(b.pt, 2))
      writeEntry(t.m, steAt(t, t.dev.streamId), cdtableSte(l1, fmt, 12, S1Dss.SSID0))
      expect(t.dev.dma.read(0x40_0000, 1)[0]).toBe(0xa)
      expect(t.dev.dma.read(0x40_0000, 1, { pasid: perL2 + 3 })[0]).toBe(0xb)
      // A SubstreamID whose level-1 descriptor is invalid; one beyond S1CDMax.
      expect(() => t.dev.dma.read(0x40_0000, 1, { pasid: 3 * perL2 })).toThrow(DmaFault)
      expect(() => t.dev.dma.read(0x40_0000, 1, { pasid: 4096 })).toThrow(DmaFault)
      expect(events(t).map((e) => [e.id, e.ssv, e.ssid])).toEqual([
        [EvtId.C_BAD_SUBSTREAMID, true, 3 * perL2],
        [EvtId.C_BAD_SUBSTREAMID, true, 4096],
      ])
      // S1DSS: terminate records F_STREAM_DISABLED; bypass skips stage 1.
      writeEntry(t.m, steAt(t, t.dev.streamId), cdtableSte(l1, fmt, 12, S1Dss.TERMINATE))
      submit(t, cmdCfgiSte(t.dev.streamId, true))
      expect(() => t.dev.dma.read(0x40_0000, 1)).toThrow(
        expect.objectContaining({ reason: 'blocked' }),
      )
      expect(events(t)[2]?.id).toBe(EvtId.F_STREAM_DISABLED)
      writeEntry(t.m, steAt(t, t.dev.streamId), cdtableSte(l1, fmt, 12, S1Dss.BYPASS))
      submit(t, cmdCfgiSte(t.dev.streamId, true))
      t.m.memory.writeBytes(0x40_0000, new Uint8Array([0xc]))
      expect(t.dev.dma.read(0x40_0000, 1)[0]).toBe(0xc)
      expect(t.dev.dma.read(0x40_0000, 1, { pasid: perL2 + 3 })[0]).toBe(0xb)
    }
  })

  it('records C_BAD_SUBSTREAMID for a PASID on a stream without substreams', () => {
    const t = bare()
    writeEntry(t.m, steAt(t, t.dev.streamId), makeBypassSte(FEATURES))
    expect(() => t.dev.dma.read(0, 1, { pasid: 1 })).toThrow(DmaFault)
    expect(events(t)[0]).toMatchObject({ id: EvtId.C_BAD_SUBSTREAMID, ssv: true, ssid: 1 })
  })

  it('records F_ACCESS for AF = 0 without HA, and sets AF and dirty state with HA/HD', () => {
    const t = bare()
    const { pt } = s1Table(t.m, 0x40_0000n, 1, IoPgtableQuirk.ARM_HD)
    const leaf = pt.pgtableWalk(0x40_0000n).at(-1) as { pa: bigint; pte: bigint }
    // Writable-clean, AF = 0.
    t.m.memory.write64(Number(leaf.pa), (leaf.pte | 0x80n) & ~0x400n)
    const cdTable = t.m.memory.allocFrame(FramePurpose.IOMMU_HW) * 4096
    writeEntry(t.m, cdTable, s1Cd(pt, 3))
    writeEntry(t.m, steAt(t, t.dev.streamId), cdtableSte(cdTable))
    expect(() => t.dev.dma.read(0x40_0000, 1)).toThrow(DmaFault)
    expect(events(t)[0]).toMatchObject({ id: EvtId.F_ACCESS, read: true })
    writeEntry(t.m, cdTable, s1Cd(pt, 3, true))
    submit(t, cmdCfgiCd(t.dev.streamId, 0, true))
    t.dev.dma.read(0x40_0000, 1)
    // AF set, still writable-clean.
    expect(t.m.memory.read64(Number(leaf.pa)) & 0x480n).toBe(0x480n)
    t.dev.dma.write(0x40_0000, new Uint8Array([1]))
    expect(t.m.memory.read64(Number(leaf.pa)) & 0x480n).toBe(0x400n)
  })

  it('invalidates by VA, by range (RIL), by ASID, and everything', () => {
    const t = bare()
    const { pt } = s1Table(t.m, 0x40_0000n, 64)
    const cdTable = t.m.memory.allocFrame(FramePurpose.IOMMU_HW) * 4096
    writeEntry(t.m, cdTable, s1Cd(pt, 5))
    writeEntry(t.m, steAt(t, t.dev.streamId), cdtableSte(cdTable))
    const touch = () => {
      for (let p = 0; p < 64; p++) t.dev.dma.read(0x40_0000 + p * 4096, 1)
    }
    touch()
    expect(t.hw.tlb.size).toBe(64)
    const va = cmdTlbi(Op.TLBI_NH_VA, 5, 0)
    va[1] = 0x40_3000n | 1n
    submit(t, va)
    expect(t.hw.tlb.size).toBe(63)
    // Range: TG 4K (1), SCALE 1, NUM 3: (3 + 1) × 2^1 pages from 0x408000.
    const r = cmdTlbi(Op.TLBI_NH_VA, 5, 0)
    r[0] |= (3n << 12n) | (1n << 20n)
    r[1] = 0x40_8000n | (1n << 10n) | 1n
    submit(t, r)
    expect(t.hw.tlb.size).toBe(55)
    submit(t, cmdTlbi(Op.TLBI_NH_ASID, 6, 0))
    expect(t.hw.tlb.size).toBe(55)
    submit(t, cmdTlbi(Op.TLBI_NH_ASID, 5, 0))
    expect(t.hw.tlb.size).toBe(0)
    touch()
    submit(t, cmdOp(Op.TLBI_NSNH_ALL))
    expect(t.hw.tlb.size).toBe(0)
  })
})

describe('the event queue', () => {
  it('fills, then toggles EVTQ_PROD.OVFLG and drops records until software catches up', () => {
    const t = bare({}, 2)
    writeEntry(t.m, steAt(t, t.dev.streamId), [0n, 0n, 0n, 0n, 0n, 0n, 0n, 0n])
    for (let i = 0; i < 6; i++) expect(() => t.dev.dma.read(i * 4096, 1)).toThrow(DmaFault)
    expect(events(t)).toHaveLength(4)
    const prod = t.hw.readReg(Mmio.EVTQ_PROD)
    expect(prod >>> 31).toBe(1)
    expect(t.hw.stats.eventsDropped).toBe(2)
    // Consume everything and acknowledge the overflow.
    t.hw.writeReg(Mmio.EVTQ_CONS, prod)
    expect(events(t)).toEqual([])
    expect(() => t.dev.dma.read(0, 1)).toThrow(DmaFault)
    expect(events(t)).toHaveLength(1)
    expect(t.hw.readReg(Mmio.EVTQ_PROD) >>> 31).toBe(1)
  })

  it('raises the event interrupt only when IRQ_CTRL enables it', () => {
    const t = bare()
    let irqs = 0
    t.hw.connectIrq('evtq', () => irqs++)
    writeEntry(t.m, steAt(t, t.dev.streamId), [0n, 0n, 0n, 0n, 0n, 0n, 0n, 0n])
    expect(() => t.dev.dma.read(0, 1)).toThrow(DmaFault)
    expect(irqs).toBe(0)
    t.hw.writeReg(Mmio.IRQ_CTRL, IrqCtrl.EVTQ_IRQEN)
    expect(t.hw.readReg(Mmio.IRQ_CTRLACK)).toBe(IrqCtrl.EVTQ_IRQEN)
    expect(() => t.dev.dma.read(0, 1)).toThrow(DmaFault)
    expect(irqs).toBe(1)
  })
})

/**
 * A nested stream: guest RAM is IPA [G, G + 64 KiB) mapped by a stage 2 to host frames;
 * the guest's stage-1 tables and CD table live in it at IPAs, written by hand.
 */
function nested() {
  const t = bare()
  const G = 0x4000_0000
  const s2 = new PageTable(t.m.memory, armLpae, { stage: 2, ias: 40, oas: 48 })
  const host = t.m.memory.allocFrames(16, FramePurpose.USER) * 4096
  s2.mapRange(BigInt(G), BigInt(host), 16n * 4096n, Prot.READ | Prot.WRITE)
  const hostOf = (ipa: number) => host + (ipa - G)
  const guest = buildGuestS1((ipa, v) => t.m.memory.write64(hostOf(ipa), v), G)
  t.m.memory.writeBytes(hostOf(guest.dataIpa), new Uint8Array([0x5e]))
  // Physical STE: Config = S1+S2 with S1ContextPtr an IPA, VMID 9 (as the vSMMU builds it).
  const info = s2.hwInfo() as unknown as Parameters<typeof makeS2DomainSte>[2]
  const s2Ste = makeS2DomainSte(FEATURES, MASTER, { ...info, s2fwb: false }, 9, false)
  const vste = makeCdtableSte(
    FEATURES,
    MASTER,
    { dma: BigInt(guest.cdTable), s1fmt: 0, s1cdmax: 0 },
    false,
    0,
  )
  writeEntry(
    t.m,
    steAt(t, t.dev.streamId),
    makeNestedDomainSte([vste[0] as bigint, vste[1] as bigint], s2Ste),
  )
  return { t, s2, G, host, hostOf, VA: guest.VA, guest }
}

describe('nested translation (Config = S1+S2)', () => {
  it('walks the guest CD table and stage-1 tables through the stage 2', () => {
    const n = nested()
    expect(n.t.dev.dma.read(n.VA, 1)[0]).toBe(0x5e)
    n.t.dev.dma.write(n.VA + 1, new Uint8Array([0x77]))
    const back = new Uint8Array(1)
    n.t.m.memory.readBytes(n.hostOf(n.G + 0x5001), back)
    expect(back[0]).toBe(0x77)
    // One combined entry, tagged with the VMID and the guest's ASID.
    const e = n.t.hw.tlb.validEntries()[0] as number
    expect([n.t.hw.tlb.kind(e), n.t.hw.tlb.tag(e)]).toEqual([TlbKind.S12, (9 << 16) | 77])
    expect(n.t.hw.staleUses).toEqual([])
  })

  it('records a guest-stage fault with S2 = 0 and the input address', () => {
    const n = nested()
    expect(() => n.t.dev.dma.read(0x5000_0000, 4)).toThrow(
      expect.objectContaining({ reason: 'translation' }),
    )
    expect(events(n.t)[0]).toMatchObject({
      id: EvtId.F_TRANSLATION,
      sid: n.t.dev.streamId,
      s2: false,
      class: EvtClass.IN,
      read: true,
      addr: 0x5000_0000n,
    })
  })

  it('records stage-2 faults with S2 = 1, CLASS and the IPA: output, table fetch, CD fetch', () => {
    const n = nested()
    // The stage-1 output IPA is not mapped by the stage 2.
    expect(() => n.t.dev.dma.read(n.VA + 0x1000, 1)).toThrow(DmaFault)
    expect(events(n.t)[0]).toMatchObject({
      id: EvtId.F_TRANSLATION,
      s2: true,
      class: EvtClass.IN,
      addr: BigInt(n.VA + 0x1000),
      ipa: BigInt(n.G + 0x10_0000),
    })
    // Take the last-level table page away from the stage 2: the walk's fetch faults.
    n.s2.unmapRange(BigInt(n.G + 0x3000), 0x1000n, new IotlbGather())
    submit(n.t, cmdTlbi(Op.TLBI_S12_VMALL, 0, 9))
    expect(() => n.t.dev.dma.read(n.VA, 1)).toThrow(DmaFault)
    expect(events(n.t)[1]).toMatchObject({
      id: EvtId.F_TRANSLATION,
      s2: true,
      class: EvtClass.TT,
      ipa: BigInt(n.G + 0x3000),
    })
    // And the CD page: the CD fetch faults (after CFGI_STE drops the cached CD).
    n.s2.unmapRange(BigInt(n.G + 0x4000), 0x1000n, new IotlbGather())
    submit(n.t, cmdCfgiSte(n.t.dev.streamId, true))
    expect(() => n.t.dev.dma.read(n.VA, 1)).toThrow(DmaFault)
    expect(events(n.t)[2]).toMatchObject({
      id: EvtId.F_TRANSLATION,
      s2: true,
      class: EvtClass.CD,
      ipa: BigInt(n.G + 0x4000),
    })
  })

  it('keeps combined entries on TLBI_S2_IPA: the detector wants TLBI_NH_ALL, which drops them', () => {
    const n = nested()
    expect(n.t.dev.dma.read(n.VA, 1)[0]).toBe(0x5e)
    // Move the data page's IPA to another host frame.
    const other = n.t.m.memory.allocFrame(FramePurpose.USER) * 4096
    n.t.m.memory.writeBytes(other, new Uint8Array([0x0e]))
    const leaf = n.s2.pgtableWalk(BigInt(n.G + 0x5000)).at(-1) as { pa: bigint; pte: bigint }
    n.t.m.memory.write64(Number(leaf.pa), (leaf.pte & ~0xffff_ffff_f000n) | BigInt(other))
    const ipa = cmdTlbi(Op.TLBI_S2_IPA, 0, 9)
    ipa[1] = BigInt(n.G + 0x5000) | 1n
    submit(n.t, ipa)
    expect(n.t.dev.dma.read(n.VA, 1)[0]).toBe(0x5e)
    expect(n.t.hw.staleUses[0]).toMatchObject({
      cache: 'tlb',
      missing: 'TLBI_NH_ALL',
      vmid: 9,
      asid: 77,
    })
    submit(n.t, cmdTlbi(Op.TLBI_NH_ALL, 0, 9))
    expect(n.t.dev.dma.read(n.VA, 1)[0]).toBe(0x0e)
  })
})

describe('PRI and ATS', () => {
  it('queues page requests; the driver denies the last request of each group', () => {
    const m = createMachine({ iommus: [smmuv3()] })
    const dev = m.addPciDevice({ pri: true, pasidBits: 8 })
    const hw = m.units[0] as SmmuV3Hw
    hw.pageRequest(dev.streamId, { pasid: 3, addr: 0x1234_5000n, read: true, grpid: 7 })
    hw.pageRequest(dev.streamId, {
      pasid: 3,
      addr: 0x1234_6000n,
      write: true,
      last: true,
      grpid: 7,
    })
    expect(
      smmuv3PriLog(dev).map((r) => [r.ssid, r.addr, r.read, r.write, r.last, r.grpid]),
    ).toEqual([
      [3, 0x1234_5000n, true, false, false, 7],
      [3, 0x1234_6000n, false, true, true, 7],
    ])
    expect(hw.priResponses).toEqual([{ sid: dev.streamId, ssid: 3, ssv: true, grpid: 7, resp: 0 }])
  })

  it('serves an ATS endpoint from its ATC until ATC_INV, which the detector wants after a change', () => {
    const t = bare()
    const { pt, pa } = s1Table(t.m, 0x40_0000n, 1)
    t.m.memory.writeBytes(pa, new Uint8Array([1]))
    const cdTable = t.m.memory.allocFrame(FramePurpose.IOMMU_HW) * 4096
    writeEntry(t.m, cdTable, s1Cd(pt, 5))
    const ste = cdtableSte(cdTable)
    ste[1] = (ste[1] as bigint) | (1n << 28n) // EATS = 1
    writeEntry(t.m, steAt(t, t.dev.streamId), ste)
    t.hw.writeReg(Mmio.CR0, Cr0.CMDQEN | Cr0.EVTQEN | Cr0.SMMUEN | Cr0.ATSCHK)
    t.hw.setAts(t.dev.streamId, true)
    expect(t.dev.dma.read(0x40_0000, 1)[0]).toBe(1)
    expect(t.hw.atc.size).toBe(1)
    // Unmap with the TLB flushed but no ATC_INV: the endpoint still translates.
    pt.unmapRange(0x40_0000n, 0x1000n, new IotlbGather())
    const va = cmdTlbi(Op.TLBI_NH_VA, 5, 0)
    va[1] = 0x40_0000n | 1n
    submit(t, va)
    expect(t.dev.dma.read(0x40_0000, 1)[0]).toBe(1)
    expect(t.hw.staleUses[0]).toMatchObject({ cache: 'atc', missing: 'ATC_INV' })
    submit(t, cmdAtcInv(t.dev.streamId, 0, 0x40_0000n, 0))
    expect(() => t.dev.dma.read(0x40_0000, 1)).toThrow(DmaFault)
  })
})

describe('ATS writes', () => {
  it('lets writes use the ATC without HD, and sends them back to the SMMU while the leaf is clean with HD', () => {
    for (const hd of [false, true]) {
      const t = bare()
      const { pt } = s1Table(t.m, 0x40_0000n, 1, hd ? IoPgtableQuirk.ARM_HD : 0)
      if (hd) {
        const leaf = pt.pgtableWalk(0x40_0000n).at(-1) as { pa: bigint; pte: bigint }
        t.m.memory.write64(Number(leaf.pa), leaf.pte | 0x80n)
      }
      const cdTable = t.m.memory.allocFrame(FramePurpose.IOMMU_HW) * 4096
      writeEntry(t.m, cdTable, s1Cd(pt, 5, hd))
      const ste = cdtableSte(cdTable)
      ste[1] = (ste[1] as bigint) | (1n << 28n)
      writeEntry(t.m, steAt(t, t.dev.streamId), ste)
      t.hw.setAts(t.dev.streamId, true)
      t.dev.dma.read(0x40_0000, 1)
      const hits = t.hw.stats.atcHits
      t.dev.dma.write(0x40_0000, new Uint8Array([1]))
      t.dev.dma.write(0x40_0000, new Uint8Array([2]))
      // Without HD both writes hit the ATC; with HD the first goes to the SMMU to set dirty.
      expect(t.hw.stats.atcHits - hits).toBe(hd ? 1 : 2)
      expect(t.hw.staleUses).toEqual([])
    }
  })
})

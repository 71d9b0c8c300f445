/**
 * The AMD-Vi hardware model on its own: command formats and effects, DTE decoding, the
 * event log, and the IOTLB's bounds — driven through MMIO and memory as software would.
 */
import { createMachine, DmaFault, FramePurpose, type Machine, PciDevice } from '@iommu/core'
import { describe, expect, it } from 'vitest'
import { LEN_SHIFT } from '../src/hw/regs.ts'
import {
  AmdIommuHw,
  amd,
  Cmd,
  CmdFlag,
  Control,
  Dte,
  decodeInvRange,
  Event,
  Iotlb,
  Mmio,
  Status,
} from '../src/index.ts'

describe('INVALIDATE_*_PAGES address encoding (spec Table 14)', () => {
  it('decodes S = 0 as one 4 KiB page', () => {
    expect(decodeInvRange(0x1234_5000n, false)).toEqual([0x12345, 1])
  })
  it('decodes the size from the lowest clear bit at or above 12', () => {
    // 8 KiB: bit 12 clear. 16 KiB: bit 12 set, bit 13 clear. 2 MiB: bits 12..19 set, 20 clear.
    expect(decodeInvRange(0x4000_0000n, true)).toEqual([0x40000, 2])
    expect(decodeInvRange(0x4000_1000n, true)).toEqual([0x40000, 4])
    expect(decodeInvRange(0x4000_0000n | 0xf_f000n, true)).toEqual([0x40000, 512])
  })
  it('decodes the "all pages" address', () => {
    expect(decodeInvRange(0x7fff_ffff_ffff_f000n, true)).toEqual([0, 2 ** 52])
  })
})

/** A bare unit the test programs by hand, without the driver. */
function bare(bdf = '00:02.0'): {
  m: Machine
  hw: AmdIommuHw
  dev: PciDevice
  devtab: number
  cmd: number
  evt: number
} {
  const m = createMachine({ iommus: [amd()] })
  const hw = new AmdIommuHw(m, 'bare', {
    walk(_root, _mode, _pfn, _access, _ad, _update, out) {
      out.fault = 1
      out.faultLevel = 0
    },
  })
  const devtab = m.memory.allocFrames(16, FramePurpose.IOMMU_HW) * 4096
  const cmd = m.memory.allocFrames(2, FramePurpose.IOMMU_HW, 2) * 4096
  const evt = m.memory.allocFrame(FramePurpose.IOMMU_HW) * 4096
  hw.writeMmio(Mmio.DEV_TABLE, BigInt(devtab) | 15n)
  hw.writeMmio(Mmio.CMD_BUF, BigInt(cmd) | (9n << LEN_SHIFT))
  // A 4-entry event log (EventLen = 2) to exercise overflow.
  hw.writeMmio(Mmio.EVT_BUF, BigInt(evt) | (2n << LEN_SHIFT))
  hw.writeMmio(
    Mmio.CONTROL,
    (1n << BigInt(Control.IOMMU_EN)) |
      (1n << BigInt(Control.CMDBUF_EN)) |
      (1n << BigInt(Control.EVT_LOG_EN)),
  )
  const dev = new PciDevice(m.memory, hw, bdf, {})
  return { m, hw, dev, devtab, cmd, evt }
}

function command(
  t: ReturnType<typeof bare>,
  slot: number,
  w: [number, number, number, number],
): void {
  const pa = t.cmd + slot * 16
  for (let i = 0; i < 4; i++) t.m.memory.write32(pa + 4 * i, w[i] as number)
  t.hw.writeMmio(Mmio.CMD_TAIL, BigInt((slot + 1) * 16))
}

describe('AMD-Vi hardware model', () => {
  it('passes DMA through untranslated when DTE.V = 0 and blocks it when V = 1, TV = 0', () => {
    const t = bare()
    t.m.memory.writeBytes(0x20_0000, new Uint8Array([42]))
    expect(t.dev.dma.read(0x20_0000, 1)[0]).toBe(42)
    t.m.memory.write32(t.devtab + t.dev.rid * 32, Number(Dte.V))
    command(t, 0, [t.dev.rid, Cmd.INVALIDATE_DEVTAB_ENTRY << 28, 0, 0])
    expect(() => t.dev.dma.read(0x20_0000, 1)).toThrow(
      expect.objectContaining({ reason: 'blocked' }),
    )
  })

  it('keeps using a cached DTE until INVALIDATE_DEVTAB_ENTRY, and the detector notices', () => {
    const t = bare()
    const dte = t.devtab + t.dev.rid * 32
    t.m.memory.write32(dte, Number(Dte.V))
    expect(() => t.dev.dma.read(0x1000, 1)).toThrow(DmaFault)
    t.m.memory.write32(dte, 0)
    // Stale: the cached DTE still blocks.
    expect(() => t.dev.dma.read(0x1000, 1)).toThrow(DmaFault)
    expect(t.hw.staleUses[0]).toMatchObject({ cache: 'dte', missing: 'INVALIDATE_DEVTAB_ENTRY' })
    command(t, 0, [t.dev.rid, Cmd.INVALIDATE_DEVTAB_ENTRY << 28, 0, 0])
    expect(t.dev.dma.read(0x1000, 1)).toHaveLength(1)
    expect(t.hw.stats.dteFetches).toBe(2)
  })

  it('notices a change in any of the eight DTE words, in any frame of the table', () => {
    // 00:02.0 is in the table's first frame, 01:02.2 (DeviceID 0x112) in its third.
    for (const bdf of ['00:02.0', '01:02.2']) {
      for (let i = 0; i < 8; i++) {
        const t = bare(bdf)
        const dte = t.devtab + t.dev.rid * 32
        t.m.memory.write32(dte, Number(Dte.V))
        // The same DTE one frame down must not stand in for this one.
        if (t.dev.rid >= 128) t.m.memory.write32(dte - 4096, Number(Dte.V))
        expect(() => t.dev.dma.read(0x1000, 1)).toThrow(DmaFault)
        expect(() => t.dev.dma.read(0x1000, 1)).toThrow(DmaFault)
        expect(t.hw.staleUses).toEqual([])
        t.m.memory.write32(dte + 4 * i, t.m.memory.read32(dte + 4 * i) ^ 0x100)
        expect(() => t.dev.dma.read(0x1000, 1)).toThrow(DmaFault)
        expect(t.hw.staleUses).toHaveLength(1)
        expect(t.hw.staleUses[0]?.what).toContain(`DTE word ${i} cached`)
        expect(t.hw.staleUses[0]?.devid).toBe(t.dev.rid)
      }
    }
  })

  it('logs ILLEGAL_DEV_TABLE_ENTRY for a DTE with the reserved Mode 7', () => {
    const t = bare()
    t.m.memory.write64(
      t.devtab + t.dev.rid * 32,
      Dte.V | Dte.TV | (7n << Dte.MODE_SHIFT) | (0x123n << 12n),
    )
    expect(() => t.dev.dma.write(0x5000, new Uint8Array(4))).toThrow(
      expect.objectContaining({ reason: 'bad-entry' }),
    )
    expect(t.hw.pendingEvents()[0]).toMatchObject({
      code: Event.ILLEGAL_DEV_TABLE_ENTRY,
      devid: t.dev.rid,
      address: 0x5000n,
    })
  })

  it('COMPLETION_WAIT stores its data and raises ComWaitInt when asked', () => {
    const t = bare()
    const sem = t.m.memory.allocFrame(FramePurpose.KERNEL) * 4096
    command(t, 0, [
      sem | CmdFlag.COMPL_WAIT_STORE | CmdFlag.COMPL_WAIT_INT,
      Cmd.COMPLETION_WAIT << 28,
      0xcafe_f00d,
      0x1234,
    ])
    expect(t.m.memory.read64(sem)).toBe(0x1234_cafe_f00dn)
    expect(t.hw.readMmio(Mmio.STATUS) & Status.COM_WAIT_INT).toBe(Status.COM_WAIT_INT)
    expect(t.hw.readMmio(Mmio.CMD_HEAD)).toBe(16n)
  })

  it('halts the command processor on an illegal command and logs it', () => {
    const t = bare()
    command(t, 0, [0, 0xf << 28, 0, 0])
    expect(t.hw.pendingEvents()[0]).toMatchObject({
      code: Event.ILLEGAL_COMMAND_ERROR,
      address: BigInt(t.cmd),
    })
    expect(t.hw.readMmio(Mmio.STATUS) & Status.CMDBUF_RUN).toBe(0n)
    expect(t.hw.readMmio(Mmio.CMD_HEAD)).toBe(0n)
  })

  it('sets EventOverflow and drops records when the event log is full', () => {
    const t = bare()
    t.m.memory.write32(t.devtab + t.dev.rid * 32, Number(Dte.V))
    for (let i = 0; i < 5; i++) expect(() => t.dev.dma.read(0x1000 * i, 1)).toThrow(DmaFault)
    // Four entries hold three records (head == tail means empty).
    expect(t.hw.pendingEvents()).toHaveLength(3)
    expect(t.hw.readMmio(Mmio.STATUS) & Status.EVT_OVERFLOW).toBe(Status.EVT_OVERFLOW)
    expect(t.hw.stats.eventsDropped).toBe(2)
  })
})

describe('IOTLB', () => {
  it('is bounded and evicts round-robin within a set', () => {
    const tlb = new Iotlb(8, 2)
    for (let i = 0; i < 100; i++) tlb.fill(1, -1, i, 12, 1000 + i, 3, false)
    expect(tlb.size).toBeLessThanOrEqual(8)
    expect(tlb.stats.evictions).toBe(100 - tlb.size)
  })

  it('finds a page inside a cached large leaf and drops it by range and domain', () => {
    const tlb = new Iotlb()
    const e = tlb.fill(7, -1, 512, 21, 0x40000, 3, true)
    expect(tlb.lookup(7, -1, 700)).toBe(e)
    expect(tlb.lookup(8, -1, 700)).toBe(-1)
    expect(tlb.invalidateRange(7, -1, 1000, 1)).toBe(1)
    expect(tlb.lookup(7, -1, 700)).toBe(-1)
  })
})

/**
 * A hand-programmed VT-d unit for hardware-level tests: no Linux driver, only the
 * structures and registers the specification describes, written by the test.
 */
import { createMachine, DmaTransaction, FramePurpose, type Machine } from '@iommu/core'
import {
  Ctx,
  Gcmd,
  Iqa,
  Iwd,
  QI_DESC_SIZE,
  Qi,
  Reg,
  Rtaddr,
  VtdIommuHw,
  type VtdIommuHwConfig,
} from '../src/index.ts'

export interface ContextOptions {
  readonly dte?: boolean
  readonly paside?: boolean
  readonly pre?: boolean
  readonly fpd?: boolean
  /** PASID directory entries = 2^(pdts + 7). Default 0. */
  readonly pdts?: number
}

/** One unit with a root table, an invalidation queue and translation on. */
export class HwRig {
  readonly m: Machine
  readonly hw: VtdIommuHw
  readonly root: number
  readonly queue: number
  readonly status: number
  tail = 0
  gcmd = 0
  readonly txn = new DmaTransaction()

  constructor(config: VtdIommuHwConfig = {}) {
    this.m = createMachine()
    const mem = this.m.memory
    this.hw = new VtdIommuHw(this.m, 'dmar-test', config)
    this.root = mem.allocFrame(FramePurpose.IOMMU_HW) * 4096
    this.queue = mem.allocFrames(2, FramePurpose.IOMMU_HW, 2) * 4096
    this.status = mem.allocFrame(FramePurpose.IOMMU_HW) * 4096
    this.hw.writeMmio(Reg.IQT, 0n)
    this.hw.writeMmio(Reg.IQA, BigInt(this.queue) | Iqa.DW | 1n)
    this.command(Gcmd.QIE)
    this.hw.writeMmio(Reg.RTADDR, BigInt(this.root) | Rtaddr.SMT)
    this.hw.writeMmio(Reg.GCMD, BigInt((this.gcmd | Gcmd.SRTP) >>> 0))
    this.command(Gcmd.TE)
  }

  /** Turn on one persistent GCMD bit, as software must: one command per write. */
  command(bit: number): void {
    this.gcmd |= bit
    this.hw.writeMmio(Reg.GCMD, BigInt(this.gcmd >>> 0))
  }

  frame(): number {
    return this.m.memory.allocFrame(FramePurpose.KERNEL) * 4096
  }

  /** Write the root entry and scalable-mode context entry of `sid`; returns the PASID dir. */
  context(sid: number, o: ContextOptions = {}): number {
    const mem = this.m.memory
    const bus = sid >> 8
    const devfn = sid & 0xff
    const rootPa = this.root + bus * 16 + (devfn >= 0x80 ? 8 : 0)
    let table = Number(mem.read64(rootPa) & ~0xfffn)
    if (table === 0) {
      table = this.frame()
      mem.write64(rootPa, BigInt(table) | 1n)
    }
    const dir = this.frame()
    const ctx = table + (devfn & 0x7f) * 32
    mem.write64(ctx + 8, 0n)
    mem.write64(
      ctx,
      BigInt(dir) |
        (BigInt(o.pdts ?? 0) << Ctx.PDTS_SHIFT) |
        (o.dte ? Ctx.DTE : 0n) |
        (o.paside ? Ctx.PASIDE : 0n) |
        (o.pre ? Ctx.PRE : 0n) |
        (o.fpd ? Ctx.FPD : 0n) |
        Ctx.P,
    )
    return dir
  }

  /** The address of the PASID entry of `pasid` under directory `dir` (allocating its table). */
  pasidEntry(dir: number, pasid: number): number {
    const mem = this.m.memory
    const pde = dir + (pasid >> 6) * 8
    let table = Number(mem.read64(pde) & ~0xfffn)
    if (table === 0) {
      table = this.frame()
      mem.write64(pde, BigInt(table) | 1n)
    }
    return table + (pasid & 63) * 64
  }

  /** Write a PASID entry's qwords (val0 last). */
  setPasid(dir: number, pasid: number, v: readonly bigint[]): number {
    const pa = this.pasidEntry(dir, pasid)
    const mem = this.m.memory
    for (let k = 7; k >= 1; k--) mem.write64(pa + 8 * k, v[k] ?? 0n)
    mem.write64(pa, v[0] ?? 0n)
    return pa
  }

  /**
   * Queue descriptors and a status-writing wait descriptor, move the tail.
   *
   * @returns whether the wait descriptor completed (false when the queue stopped)
   */
  submit(descs: readonly (readonly [bigint, bigint])[]): boolean {
    const mem = this.m.memory
    const put = (q0: bigint, q1: bigint) => {
      const pa = this.queue + this.tail
      mem.write64(pa, q0)
      mem.write64(pa + 8, q1)
      mem.write64(pa + 16, 0n)
      mem.write64(pa + 24, 0n)
      this.tail = (this.tail + QI_DESC_SIZE) % 8192
    }
    mem.write32(this.status, 1)
    for (const [q0, q1] of descs) put(q0, q1)
    put((2n << 32n) | Iwd.SW | BigInt(Qi.IWD), BigInt(this.status))
    this.hw.writeMmio(Reg.IQT, BigInt(this.tail))
    return mem.read32(this.status) === 2
  }

  /** Translate one access the way a device's DMA does; returns the physical address or null. */
  dma(sid: number, iova: bigint, write: boolean, pasid?: number): number | null {
    const t = this.txn
    t.rid = sid
    t.sid = sid
    t.hasPasid = pasid !== undefined
    t.pasid = pasid ?? 0
    t.iovaPfn = Number(iova >> 12n)
    t.offset = Number(iova & 0xfffn)
    t.write = write
    t.fault = null
    t.faultLevel = -1
    return this.hw.translate(t) ? t.pa : null
  }
}

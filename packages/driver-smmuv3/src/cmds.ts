/**
 * The driver's command builders (`arm_smmu_make_cmd_*`, `arm_smmu_atc_inv_to_cmd`): a
 * command is two qwords. Commands are built per invalidation, not per page, so `bigint` is
 * fine here.
 *
 * @module
 */

import { ATC_INV_SIZE_ALL, Cmd, fieldPrep, Op, Sh } from './hw/regs.ts'

/** A 16-byte command: dw0, dw1. */
export type Command = [bigint, bigint]

const U64 = (1n << 64n) - 1n
/** `ARM_SMMU_MEMATTR_OIWB`. */
const MEMATTR_OIWB = 0xf

/** A command with only its opcode. */
export function cmdOp(op: number): Command {
  return [fieldPrep(Cmd.D0_OP, op), 0n]
}

/** CFGI_ALL: CFGI_STE_RANGE with RANGE = 31. */
export function cmdCfgiAll(): Command {
  const c = cmdOp(Op.CFGI_ALL)
  c[1] |= fieldPrep(Cmd.CFGI_D1_RANGE, 31)
  return c
}

export function cmdPrefetchCfg(sid: number): Command {
  const c = cmdOp(Op.PREFETCH_CFG)
  c[0] |= fieldPrep(Cmd.PREFETCH_D0_SID, sid)
  return c
}

export function cmdCfgiSte(sid: number, leaf: boolean): Command {
  const c = cmdOp(Op.CFGI_STE)
  c[0] |= fieldPrep(Cmd.CFGI_D0_SID, sid)
  c[1] |= fieldPrep(Cmd.CFGI_D1_LEAF, leaf ? 1 : 0)
  return c
}

export function cmdCfgiCd(sid: number, ssid: number, leaf: boolean): Command {
  const c = cmdOp(Op.CFGI_CD)
  c[0] |= fieldPrep(Cmd.CFGI_D0_SID, sid) | fieldPrep(Cmd.CFGI_D0_SSID, ssid)
  c[1] |= fieldPrep(Cmd.CFGI_D1_LEAF, leaf ? 1 : 0)
  return c
}

export function cmdResume(sid: number, stag: number, resp: number): Command {
  const c = cmdOp(Op.RESUME)
  c[0] |= fieldPrep(Cmd.RESUME_D0_SID, sid) | fieldPrep(Cmd.RESUME_D0_RESP, resp)
  c[1] |= fieldPrep(Cmd.RESUME_D1_STAG, stag)
  return c
}

export function cmdPriResp(
  sid: number,
  ssid: number,
  ssv: boolean,
  grpid: number,
  resp: number,
): Command {
  const c = cmdOp(Op.PRI_RESP)
  c[0] |=
    fieldPrep(Cmd.D0_SSV, ssv ? 1 : 0) |
    fieldPrep(Cmd.PRI_D0_SID, sid) |
    fieldPrep(Cmd.PRI_D0_SSID, ssid)
  c[1] |= fieldPrep(Cmd.PRI_D1_GRPID, grpid) | fieldPrep(Cmd.PRI_D1_RESP, resp)
  return c
}

/** ATC_INV: SSV when `ssid` is not 0 (IOMMU_NO_PASID). */
export function cmdAtcInv(sid: number, ssid: number, addr: bigint, size: number): Command {
  const c = cmdOp(Op.ATC_INV)
  c[0] |=
    fieldPrep(Cmd.D0_SSV, ssid !== 0 ? 1 : 0) |
    fieldPrep(Cmd.ATC_D0_SSID, ssid) |
    fieldPrep(Cmd.ATC_D0_SID, sid)
  c[1] |= fieldPrep(Cmd.ATC_D1_SIZE, size) | (addr & Cmd.ATC_D1_ADDR)
  return c
}

export function cmdAtcInvAll(sid: number, ssid: number): Command {
  return cmdAtcInv(sid, ssid, 0n, ATC_INV_SIZE_ALL)
}

/** CMD_SYNC with completion signal `cs`, inner-shareable write-back MSI attributes. */
export function cmdSync(cs: number, msiAddr: bigint): Command {
  const c = cmdOp(Op.CMD_SYNC)
  c[0] |=
    fieldPrep(Cmd.SYNC_D0_CS, cs) |
    fieldPrep(Cmd.SYNC_D0_MSH, Sh.ISH) |
    fieldPrep(Cmd.SYNC_D0_MSIATTR, MEMATTR_OIWB)
  c[1] |= msiAddr & Cmd.SYNC_D1_MSIADDR
  return c
}

/** A TLBI with its opcode, ASID and VMID (the ranged fields are filled per command). */
export function cmdTlbi(op: number, asid: number, vmid: number): Command {
  const c = cmdOp(op)
  c[0] |= fieldPrep(Cmd.TLBI_D0_ASID, asid) | fieldPrep(Cmd.TLBI_D0_VMID, vmid)
  return c
}

/** `fls_long`: the 1-based index of the highest set bit, 0 for 0. */
function fls(x: bigint): number {
  return x === 0n ? 0 : x.toString(2).length
}

/**
 * arm_smmu_atc_inv_to_cmd() - one ATC_INV covering [iova, iova + size): the smallest
 * aligned power-of-two number of 4 KiB pages holding the range (SIZE = log2 of it); a size
 * of 0 means everything (SIZE 52).
 */
export function atcInvToCmd(sid: number, ssid: number, iova: bigint, size: bigint): Command {
  let pageStart = iova >> 12n
  const pageEnd = ((iova + size - 1n) & U64) >> 12n
  const log2Span = fls(pageStart ^ pageEnd)
  pageStart &= ~((1n << BigInt(log2Span)) - 1n)
  return cmdAtcInv(sid, ssid, pageStart << 12n, log2Span)
}

/** Write a command at `pa`. */
export function writeCommand(
  mem: { write64(pa: number, v: bigint): void },
  pa: number,
  c: Command,
): void {
  mem.write64(pa, c[0])
  mem.write64(pa + 8, c[1])
}

/**
 * Test helpers: a guest's stage-1 world written by hand at IPAs, and a command trace.
 *
 * A guest's stage-1 world, written by hand at IPAs: four 4 KiB-granule tables, a CD table of
 * one CD, and data pages, all inside guest RAM `[G, G + 32 pages)`. `put(ipa, value)` writes
 * guest memory (through whatever stage 2 backs it).
 */
import { type Entry, makeS1Cd, OP_NAMES, type SmmuV3Hw } from '../src/index.ts'

/** Run `fn` and return the commands the SMMU executed meanwhile, by name with their qwords. */
export function traceCommands(
  unit: SmmuV3Hw,
  fn: () => void,
): { op: string; dw0: bigint; dw1: bigint }[] {
  unit.commandTrace.length = 0
  unit.traceCommands = true
  try {
    fn()
  } finally {
    unit.traceCommands = false
  }
  return unit.commandTrace.map((c) => ({
    op: OP_NAMES[c.op] ?? `0x${c.op.toString(16)}`,
    dw0: c.dw0,
    dw1: c.dw1,
  }))
}

/** The guest's layout (IPAs). */
export interface GuestS1 {
  /** Guest RAM base. */
  readonly G: number
  /** A VA mapped to the data page at `dataIpa`. */
  readonly VA: number
  readonly dataIpa: number
  /** The VA one page up, mapped to an IPA outside guest RAM. */
  readonly strayIpa: number
  /** The tables, level 0 to 3, and the CD table. */
  readonly tables: readonly [number, number, number, number]
  readonly cdTable: number
  readonly asid: number
  /** Write CD 0 again with another ASID (what a guest does before CFGI_CD). */
  setAsid(asid: number): void
  /** Point the level-3 entry of `va` (a page inside the level-3 table of `VA`) at `ipa`. */
  setLeaf(va: number, ipa: number): void
}

const PAGE_ATTRS = 0xf43n // page, AF, SH inner, AttrIndx 1, nG

/** Build the guest's tables and CD 0 (ASID `asid`, TTB0 = G, S = `stall`) in guest RAM at `G`. */
export function buildGuestS1(
  put: (ipa: number, v: bigint) => void,
  G: number,
  asid = 77,
  stall = false,
): GuestS1 {
  const VA = 0x1234_5000
  const idx = (lvl: number) => Math.floor(VA / 2 ** (12 + 9 * (3 - lvl))) % 512
  const tables = [G, G + 0x1000, G + 0x2000, G + 0x3000] as const
  for (let l = 0; l < 3; l++)
    put((tables[l] as number) + idx(l) * 8, BigInt(tables[l + 1] as number) | 3n)
  const dataIpa = G + 0x5000
  const strayIpa = G + 0x10_0000
  put(tables[3] + idx(3) * 8, BigInt(dataIpa) | PAGE_ATTRS)
  put(tables[3] + (idx(3) + 1) * 8, BigInt(strayIpa) | PAGE_ATTRS)
  const cdTable = G + 0x4000
  const writeCd = (a: number) => {
    const cd: Entry = makeS1Cd(
      // CD.S: the guest asks for stalls (an SMMU whose IDR0.STALL_MODEL allows them).
      { stallEnabled: stall },
      {
        ttbr: BigInt(G),
        tcr: { tsz: 16, tg: 0, irgn: 1, orgn: 1, sh: 3, ips: 5 },
        mair: 0xf404ff44n,
        hd: false,
      },
      a,
    )
    for (let i = 0; i < 8; i++) put(cdTable + 8 * i, cd[i] as bigint)
  }
  writeCd(asid)
  const setLeaf = (va: number, ipa: number) => {
    const i = Math.floor(va / 4096) % 512
    put(tables[3] + i * 8, BigInt(ipa) | PAGE_ATTRS)
  }
  return { G, VA, dataIpa, strayIpa, tables, cdTable, asid, setAsid: writeCd, setLeaf }
}

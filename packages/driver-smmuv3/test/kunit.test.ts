/**
 * The KUnit suite `arm-smmu-v3-kunit-test` (drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3-test.c,
 * 25 cases in 7.2), in its order and with its names: each STE/CD transition goes through
 * the driver's entry writer with a writer whose sync counts syncs, notes when qword 0 is
 * all-zero at a sync (not hitless), and otherwise checks that the entry, in the bits its
 * current configuration uses (less the update-safe bits), equals the initial or the target
 * entry. Then the invalidation-array merge/unref/purge sequence.
 */
import { describe, expect, it } from 'vitest'
import {
  arrayStore,
  type CdTableRef,
  type Entry,
  type EntryWriterOps,
  emptyEntry,
  Feat,
  fieldPrep,
  getCdUsed,
  getSteUpdateSafe,
  getSteUsed,
  type Inv,
  type Invs,
  InvType,
  inv,
  invsMerge,
  invsOf,
  invsPurge,
  invsUnref,
  makeAbortSte,
  makeBypassSte,
  makeCdtableSte,
  makeS1Cd,
  makeS2DomainSte,
  makeSvaCd,
  S1Dss,
  S1Fmt,
  Ste,
  SteCfg,
  writeEntry,
} from '../src/index.ts'

/** The suite's SMMU: stalls and attribute-type override, nothing else. */
const FEATURES = Feat.STALLS | Feat.ATTR_TYPES_OVR

const TEST_ATS = 1 << 0
const TEST_STALL = 1 << 1
const TEST_NESTED = 1 << 2

const bypassSte = makeBypassSte(FEATURES)
const abortSte = makeAbortSte()
const FAKE_CDTAB_DMA = 0xf0f0f0f0f0f0n

function differsInUsedBits(
  entry: readonly bigint[],
  used: readonly bigint[],
  target: readonly bigint[],
  safe: readonly bigint[],
): boolean {
  for (let i = 0; i < 8; i++) {
    const u = (used[i] as bigint) & ~(safe[i] as bigint)
    if (((entry[i] as bigint) & u) !== ((target[i] as bigint) & u)) return true
  }
  return false
}

/** The test writer: counts syncs and checks every intermediate entry. */
function expectTransition(
  kind: 'ste' | 'cd',
  cur: Entry,
  target: Entry,
  syncsExpected: number,
  hitless: boolean,
): void {
  const entry = [...cur]
  let syncs = 0
  let invalidWritten = false
  const ops: EntryWriterOps = {
    getUsed: kind === 'ste' ? getSteUsed : getCdUsed,
    ...(kind === 'ste' ? { getUpdateSafe: getSteUpdateSafe } : {}),
    sync() {
      syncs++
      if (entry[0] === 0n) {
        invalidWritten = true
        return
      }
      const used = ops.getUsed(entry)
      const safeInit = ops.getUpdateSafe ? ops.getUpdateSafe(entry, cur) : emptyEntry()
      const safeTarget = ops.getUpdateSafe ? ops.getUpdateSafe(entry, target) : emptyEntry()
      expect(
        differsInUsedBits(entry, used, cur, safeInit) &&
          differsInUsedBits(entry, used, target, safeTarget),
      ).toBe(false)
    },
  }
  writeEntry(ops, arrayStore(entry), target)
  expect(invalidWritten).toBe(!hitless)
  expect(syncs).toBe(syncsExpected)
  expect(entry).toEqual(target)
}

const steHitless = (cur: Entry, target: Entry, n: number) =>
  expectTransition('ste', cur, target, n, true)
const steNonHitless = (cur: Entry, target: Entry, n: number) =>
  expectTransition('ste', cur, target, n, false)
const cdHitless = (cur: Entry, target: Entry, n: number) =>
  expectTransition('cd', cur, target, n, true)
const cdNonHitless = (cur: Entry, target: Entry, n: number) =>
  expectTransition('cd', cur, target, n, false)

function makeS2Ste(feat: number): Entry {
  return makeS2DomainSte(
    FEATURES,
    { stallEnabled: (feat & TEST_STALL) !== 0 },
    {
      vttbr: 0xdaedbeefdeadbeefn,
      vtcr: { ps: 1, tg: 2, sh: 3, orgn: 1, irgn: 2, sl: 3, tsz: 4 },
      s2fwb: false,
    },
    0,
    (feat & TEST_ATS) !== 0,
  )
}

function makeCdtableSteFor(s1dss: number, dma: bigint, feat: number): Entry {
  const cdTable: CdTableRef = { dma, s1cdmax: 0xff & 0x1f, s1fmt: S1Fmt.L2_64K }
  const ste = makeCdtableSte(
    FEATURES,
    { stallEnabled: (feat & TEST_STALL) !== 0 },
    cdTable,
    (feat & TEST_ATS) !== 0,
    s1dss,
  )
  if (feat & TEST_NESTED) {
    const s2 = makeS2Ste(feat & ~TEST_NESTED)
    ste[0] = (ste[0] as bigint) | fieldPrep(Ste.Q0_CFG, SteCfg.NESTED)
    ste[1] = (ste[1] as bigint) | Ste.Q1_MEV
    for (let i = 2; i < 8; i++) ste[i] = s2[i] as bigint
  }
  return ste
}

function makeS1CdFor(asid: number): Entry {
  return makeS1Cd(
    { stallEnabled: false },
    {
      ttbr: 0xdaedbeefdeadbeefn,
      tcr: { ips: 1, tg: 2, sh: 3, orgn: 1, irgn: 2, tsz: 4 },
      mair: 0x0abcdef012345678n,
      hd: false,
    },
    asid,
  )
}

const CPU = { parange: 5, vaBits: 48, tg: 0, mair: 0x0000_0000_f404_ff44n }

function makeSvaCdFor(asid: number): Entry {
  return makeSvaCd(FEATURES, { stallEnabled: false }, { pgd: 0xdaedbeefdeadbeefn }, asid, CPU)
}

function makeSvaReleaseCdFor(asid: number): Entry {
  return makeSvaCd(FEATURES, { stallEnabled: false }, null, asid, CPU)
}

describe('the builders under the suite fixture give the reference entries', () => {
  it('abort, bypass, CD-table, S2, nested and S1 CD qwords', () => {
    expect(abortSte.slice(0, 2)).toEqual([0x1n, 0n])
    expect(bypassSte.slice(0, 2)).toEqual([0x9n, 0x0000100000000000n])
    const cdt = makeCdtableSteFor(S1Dss.SSID0, FAKE_CDTAB_DMA, TEST_ATS)
    expect(cdt.slice(0, 2)).toEqual([0xf800f0f0f0f0f0ebn, 0x00000000180000d6n])
    expect(makeCdtableSteFor(S1Dss.BYPASS, 0x4b4b4b4b4bn, TEST_ATS).slice(0, 2)).toEqual([
      0xf800004b4b4b4b6bn,
      0x00001000180000d5n,
    ])
    expect(makeS2Ste(TEST_ATS).slice(0, 4)).toEqual([
      0xdn,
      0x0000100010000000n,
      0x0449b6c400000000n,
      0x000dbeefdeadbee0n,
    ])
    expect(makeS2Ste(TEST_STALL)[2]).toBe(0x0649b6c400000000n)
    expect(
      makeCdtableSteFor(S1Dss.BYPASS, FAKE_CDTAB_DMA, TEST_ATS | TEST_NESTED).slice(0, 4),
    ).toEqual([0xf800f0f0f0f0f0efn, 0x00001000180800d5n, 0x0449b6c400000000n, 0x000dbeefdeadbee0n])
    expect(makeS1CdFor(1997).slice(0, 4)).toEqual([
      0x07cde201c0003684n,
      0x000dbeefdeadbee0n,
      0n,
      0x0abcdef012345678n,
    ])
    expect(makeS1CdFor(778)[0]).toBe(0x030ae201c0003684n)
  })

  it('used-bit masks of bypass, CD-table, S2 and nested STEs', () => {
    expect(getSteUsed(bypassSte).slice(0, 4)).toEqual([0xfn, 0x0000300000000000n, 0n, 0n])
    expect(
      getSteUsed(makeCdtableSteFor(S1Dss.SSID0, FAKE_CDTAB_DMA, TEST_ATS)).slice(0, 4),
    ).toEqual([0xf80fffffffffffffn, 0x00000000f80800ffn, 0xffffn, 0n])
    expect(getSteUsed(makeCdtableSteFor(S1Dss.BYPASS, FAKE_CDTAB_DMA, TEST_ATS))[1]).toBe(
      0x00003000f80800ffn,
    )
    expect(getSteUsed(makeS2Ste(TEST_ATS)).slice(0, 4)).toEqual([
      0xfn,
      0x0000300032080000n,
      0x065fffff0000ffffn,
      0x000ffffffffffff0n,
    ])
    expect(
      getSteUsed(makeCdtableSteFor(S1Dss.BYPASS, FAKE_CDTAB_DMA, TEST_ATS | TEST_NESTED)).slice(
        0,
        4,
      ),
    ).toEqual([0xf80fffffffffffffn, 0x00003000fa0800ffn, 0x065fffff0000ffffn, 0x000ffffffffffff0n])
  })
})

describe('arm-smmu-v3-kunit-test', () => {
  it('arm_smmu_v3_write_ste_test_bypass_to_abort', () => {
    steHitless(bypassSte, abortSte, 2)
  })

  it('arm_smmu_v3_write_ste_test_abort_to_bypass', () => {
    steHitless(abortSte, bypassSte, 2)
  })

  it('arm_smmu_v3_write_ste_test_cdtable_to_abort', () => {
    steHitless(makeCdtableSteFor(S1Dss.SSID0, FAKE_CDTAB_DMA, TEST_ATS), abortSte, 2)
  })

  it('arm_smmu_v3_write_ste_test_abort_to_cdtable', () => {
    steHitless(abortSte, makeCdtableSteFor(S1Dss.SSID0, FAKE_CDTAB_DMA, TEST_ATS), 2)
  })

  it('arm_smmu_v3_write_ste_test_cdtable_to_bypass', () => {
    steHitless(makeCdtableSteFor(S1Dss.SSID0, FAKE_CDTAB_DMA, TEST_ATS), bypassSte, 3)
  })

  it('arm_smmu_v3_write_ste_test_bypass_to_cdtable', () => {
    steHitless(bypassSte, makeCdtableSteFor(S1Dss.SSID0, FAKE_CDTAB_DMA, TEST_ATS), 3)
  })

  it('arm_smmu_v3_write_ste_test_cdtable_s1dss_change', () => {
    const ste = makeCdtableSteFor(S1Dss.SSID0, FAKE_CDTAB_DMA, TEST_ATS)
    const s1dssBypass = makeCdtableSteFor(S1Dss.BYPASS, FAKE_CDTAB_DMA, TEST_ATS)
    // Flipping S1DSS changes qword 1 only: one write.
    steHitless(ste, s1dssBypass, 1)
    steHitless(s1dssBypass, ste, 1)
  })

  it('arm_smmu_v3_write_ste_test_s1dssbypass_to_stebypass', () => {
    steHitless(makeCdtableSteFor(S1Dss.BYPASS, FAKE_CDTAB_DMA, TEST_ATS), bypassSte, 2)
  })

  it('arm_smmu_v3_write_ste_test_stebypass_to_s1dssbypass', () => {
    steHitless(bypassSte, makeCdtableSteFor(S1Dss.BYPASS, FAKE_CDTAB_DMA, TEST_ATS), 2)
  })

  it('arm_smmu_v3_write_ste_test_s2_to_abort', () => {
    steHitless(makeS2Ste(TEST_ATS), abortSte, 2)
  })

  it('arm_smmu_v3_write_ste_test_abort_to_s2', () => {
    steHitless(abortSte, makeS2Ste(TEST_ATS), 2)
  })

  it('arm_smmu_v3_write_ste_test_s2_to_bypass', () => {
    steHitless(makeS2Ste(TEST_ATS), bypassSte, 2)
  })

  it('arm_smmu_v3_write_ste_test_bypass_to_s2', () => {
    steHitless(bypassSte, makeS2Ste(TEST_ATS), 2)
  })

  it('arm_smmu_v3_write_ste_test_s1_to_s2', () => {
    steHitless(makeCdtableSteFor(S1Dss.SSID0, FAKE_CDTAB_DMA, TEST_ATS), makeS2Ste(TEST_ATS), 3)
  })

  it('arm_smmu_v3_write_ste_test_s2_to_s1', () => {
    steHitless(makeS2Ste(TEST_ATS), makeCdtableSteFor(S1Dss.SSID0, FAKE_CDTAB_DMA, TEST_ATS), 3)
  })

  it('arm_smmu_v3_write_ste_test_non_hitless', () => {
    // Changing the CD table pointer and S1DSS at once: two qwords, a breaking update.
    steNonHitless(
      makeCdtableSteFor(S1Dss.SSID0, FAKE_CDTAB_DMA, TEST_ATS),
      makeCdtableSteFor(S1Dss.BYPASS, 0x4b4b4b4b4bn, TEST_ATS),
      3,
    )
  })

  it('arm_smmu_v3_write_cd_test_s1_clear', () => {
    const cd = emptyEntry()
    const cd2 = makeS1CdFor(1997)
    cdNonHitless(cd, cd2, 2)
    cdNonHitless(cd2, cd, 2)
  })

  it('arm_smmu_v3_write_cd_test_s1_change_asid', () => {
    const cd = makeS1CdFor(778)
    const cd2 = makeS1CdFor(1997)
    cdHitless(cd, cd2, 1)
    cdHitless(cd2, cd, 1)
  })

  it('arm_smmu_v3_write_ste_test_s1_to_s2_stall', () => {
    steHitless(makeCdtableSteFor(S1Dss.SSID0, FAKE_CDTAB_DMA, TEST_STALL), makeS2Ste(TEST_STALL), 3)
  })

  it('arm_smmu_v3_write_ste_test_s2_to_s1_stall', () => {
    steHitless(makeS2Ste(TEST_STALL), makeCdtableSteFor(S1Dss.SSID0, FAKE_CDTAB_DMA, TEST_STALL), 3)
  })

  it('arm_smmu_v3_write_ste_test_nested_s1dssbypass_to_s1bypass', () => {
    // An extra sync clears the bits S2 ignores: EATS and MEV.
    steHitless(
      makeCdtableSteFor(S1Dss.BYPASS, FAKE_CDTAB_DMA, TEST_ATS | TEST_NESTED),
      makeS2Ste(0),
      3,
    )
  })

  it('arm_smmu_v3_write_ste_test_nested_s1bypass_to_s1dssbypass', () => {
    steHitless(
      makeS2Ste(0),
      makeCdtableSteFor(S1Dss.BYPASS, FAKE_CDTAB_DMA, TEST_ATS | TEST_NESTED),
      2,
    )
  })

  it('arm_smmu_v3_write_cd_test_sva_clear', () => {
    const cd = emptyEntry()
    const cd2 = makeSvaCdFor(1997)
    cdNonHitless(cd, cd2, 2)
    cdNonHitless(cd2, cd, 2)
  })

  it('arm_smmu_v3_write_cd_test_sva_release', () => {
    const cd = makeSvaCdFor(1997)
    const cd2 = makeSvaReleaseCdFor(1997)
    cdHitless(cd, cd2, 2)
    cdHitless(cd2, cd, 2)
  })

  it('arm_smmu_v3_invs_test', () => {
    const S2 = InvType.S2_VMID
    const CLEAR = InvType.S2_VMID_S1_CLEAR
    const ATS = InvType.ATS
    const arr = (entries: [number, number, number?][]): Invs =>
      invsOf(entries.map(([type, id, ssid]) => inv({ type, id, ssid: ssid ?? 0 })))
    const invs1 = arr([
      [S2, 1],
      [CLEAR, 1],
      [ATS, 3],
    ])
    const invs2 = arr([
      [S2, 1],
      [ATS, 4],
      [ATS, 5],
    ])
    const invs3 = arr([
      [S2, 1],
      [ATS, 5],
      [ATS, 6],
    ])
    const invs4 = arr([
      [ATS, 10, 1],
      [ATS, 10, 3],
      [ATS, 12, 1],
    ])
    const invs5 = arr([
      [ATS, 10, 2],
      [ATS, 10, 3],
      [ATS, 12, 2],
    ])
    const verify = (
      invs: Invs,
      num: number,
      trashes: number,
      ids: number[],
      users: number[],
      ssids: number[],
    ) => {
      expect(invs.numInvs).toBe(num)
      expect(invs.numTrashes).toBe(trashes)
      const live = invs.inv.slice(0, num) as Inv[]
      expect(live.map((i) => i.id)).toEqual(ids)
      expect(live.map((i) => i.users)).toEqual(users)
      expect(live.map((i) => i.ssid)).toEqual(ssids)
    }
    let a = invsOf([])
    expect(a.numInvs).toBe(0)
    // Test1: merge invs1 into a new array.
    let b = invsMerge(a, invs1)
    verify(b, 3, 0, [1, 1, 3], [1, 1, 1], [0, 0, 0])
    // Test2: merge invs2.
    a = invsMerge(b, invs2)
    verify(a, 5, 0, [1, 1, 3, 4, 5], [2, 1, 1, 1, 1], [0, 0, 0, 0, 0])
    // Test3: unref invs2 in place: 4 and 5 become trailing trash and are trimmed.
    invsUnref(a, invs2)
    verify(a, 3, 0, [1, 1, 3], [1, 1, 1], [0, 0, 0])
    // Test4: merge invs3.
    b = invsMerge(a, invs3)
    verify(b, 5, 0, [1, 1, 3, 5, 6], [2, 1, 1, 1, 1], [0, 0, 0, 0, 0])
    // Test5: unref invs1: trash in between stays.
    invsUnref(b, invs1)
    verify(b, 5, 2, [1, 1, 3, 5, 6], [1, 0, 0, 1, 1], [0, 0, 0, 0, 0])
    // Test6: purge.
    a = invsPurge(b) as Invs
    verify(a, 3, 0, [1, 5, 6], [1, 1, 1], [0, 0, 0])
    // Test7: unref invs3: everything is trailing trash.
    invsUnref(a, invs3)
    expect(a.numInvs).toBe(0)
    expect(a.numTrashes).toBe(0)
    // Test8: merge invs4.
    b = invsMerge(a, invs4)
    verify(b, 3, 0, [10, 10, 12], [1, 1, 1], [1, 3, 1])
    // Test9: merge invs5.
    a = invsMerge(b, invs5)
    verify(a, 5, 0, [10, 10, 10, 12, 12], [1, 1, 2, 1, 1], [1, 2, 3, 1, 2])
    // Test10: unref invs5.
    invsUnref(a, invs5)
    verify(a, 4, 1, [10, 10, 10, 12], [1, 0, 1, 1], [1, 2, 3, 1])
    // Test11: purge.
    b = invsPurge(a) as Invs
    verify(b, 3, 0, [10, 10, 12], [1, 1, 1], [1, 3, 1])
  })
})

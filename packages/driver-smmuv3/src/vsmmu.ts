/**
 * The pure parts of the vSMMU (`arm-smmu-v3-iommufd.c`): the uAPI values it speaks, the
 * check of a guest's vSTE (`arm_smmu_validate_vste`), the physical STE built from it, and
 * the conversion of a guest's raw invalidation command (`arm_vsmmu_convert_user_cmd`).
 *
 * @module
 */

import { IommuError } from '@iommu/core'
import type { Command } from './cmds.ts'
import { type Entry, makeAbortSte } from './entries.ts'
import {
  Cmd,
  Eats,
  fieldGet,
  fieldPrep,
  Op,
  STE_0_NESTING_ALLOWED,
  STE_1_NESTING_ALLOWED,
  Ste,
  SteCfg,
} from './hw/regs.ts'

/** `IOMMU_VIOMMU_TYPE_ARM_SMMUV3` (uAPI). */
export const IOMMU_VIOMMU_TYPE_ARM_SMMUV3 = 1
/** `IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3`: entries are `{ le64 cmd[2] }`. */
export const IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3 = 1
/** `IOMMU_VEVENTQ_TYPE_ARM_SMMUV3`: records are `{ le64 evt[4] }`. */
export const IOMMU_VEVENTQ_TYPE_ARM_SMMUV3 = 1

const U64 = (1n << 64n) - 1n

/**
 * arm_smmu_validate_vste(): a vSTE with V = 0 becomes all-zero (an abort); otherwise only
 * the nesting-allowed bits, Config abort/bypass/S1 and EATS 0/1 are accepted (EIO, reserved
 * for invalid STE data). EATS is taken out; with Config = S1 it says whether the guest
 * wants ATS.
 *
 * @throws EIO
 */
export function validateVste(ste: readonly [bigint, bigint]): {
  ste: [bigint, bigint]
  enableAts: boolean
} {
  if (!(ste[0] & Ste.Q0_V)) return { ste: [0n, 0n], enableAts: false }
  if (ste[0] & ~STE_0_NESTING_ALLOWED & U64 || ste[1] & ~STE_1_NESTING_ALLOWED & U64) {
    throw new IommuError('EIO', 'vSTE sets bits user space may not set')
  }
  const cfg = fieldGet(Ste.Q0_CFG, ste[0])
  if (cfg !== SteCfg.ABORT && cfg !== SteCfg.BYPASS && cfg !== SteCfg.S1_TRANS) {
    throw new IommuError('EIO', `vSTE Config ${cfg}`)
  }
  const eats = fieldGet(Ste.Q1_EATS, ste[1])
  if (eats !== Eats.ABT && eats !== Eats.TRANS) throw new IommuError('EIO', `vSTE EATS ${eats}`)
  return {
    ste: [ste[0], ste[1] & ~Ste.Q1_EATS & U64],
    enableAts: cfg === SteCfg.S1_TRANS && eats === Eats.TRANS,
  }
}

/**
 * arm_smmu_make_nested_domain_ste(): the physical STE for a vSTE on the parent's stage 2
 * (`s2Ste`, built with the kernel's ATS decision). A V = 0 vSTE and Config = abort give an
 * abort STE; bypass gives the plain stage-2 STE; stage 1 gives Config = nested with the
 * guest's S1ContextPtr/S1Fmt/S1CDMax/S1DSS/cacheability and MEV (merged events against a
 * guest flooding the event queue).
 */
export function makeNestedDomainSte(vste: readonly [bigint, bigint], s2Ste: Entry): Entry {
  let cfg = fieldGet(Ste.Q0_CFG, vste[0])
  if (!(vste[0] & Ste.Q0_V)) cfg = SteCfg.ABORT
  switch (cfg) {
    case SteCfg.S1_TRANS: {
      const e = [...s2Ste]
      e[0] = Ste.Q0_V | fieldPrep(Ste.Q0_CFG, SteCfg.NESTED) | (vste[0] & ~Ste.Q0_CFG & U64)
      e[1] = (e[1] as bigint) | vste[1] | Ste.Q1_MEV
      return e
    }
    case SteCfg.BYPASS:
      return s2Ste
    default:
      return makeAbortSte()
  }
}

/**
 * arm_vsmmu_convert_user_cmd(): a guest command made safe for the physical queue.
 * TLBI_NSNH_ALL becomes TLBI_NH_ALL of the vIOMMU's VMID; the NH TLBIs get that VMID;
 * ATC_INV, CFGI_CD and CFGI_CD_ALL get the physical StreamID of their vSID; anything else
 * (and an unknown vSID) is EIO.
 *
 * @param vsidToSid - the physical StreamID of a vSID's device, or null
 * @throws EIO
 */
export function convertUserCmd(
  cmd: Command,
  vmid: number,
  vsidToSid: (vsid: number) => number | null,
): Command {
  const [d0, d1] = cmd
  switch (fieldGet(Cmd.D0_OP, d0)) {
    case Op.TLBI_NSNH_ALL:
      return [BigInt(Op.TLBI_NH_ALL) | fieldPrep(Cmd.TLBI_D0_VMID, vmid), 0n]
    case Op.TLBI_NH_VA:
    case Op.TLBI_NH_VAA:
    case Op.TLBI_NH_ALL:
    case Op.TLBI_NH_ASID:
      return [(d0 & ~Cmd.TLBI_D0_VMID & U64) | fieldPrep(Cmd.TLBI_D0_VMID, vmid), d1]
    case Op.ATC_INV:
    case Op.CFGI_CD:
    case Op.CFGI_CD_ALL: {
      const sid = vsidToSid(fieldGet(Cmd.CFGI_D0_SID, d0))
      if (sid === null) throw new IommuError('EIO', 'unknown vSID')
      return [(d0 & ~Cmd.CFGI_D0_SID & U64) | fieldPrep(Cmd.CFGI_D0_SID, sid), d1]
    }
    default:
      throw new IommuError('EIO', `command 0x${fieldGet(Cmd.D0_OP, d0).toString(16)} not allowed`)
  }
}

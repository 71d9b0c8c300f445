import { amdv1 } from './formats/amdv1.ts'
import { type ArmLpaeConfig, armLpae, IoPgtableQuirk } from './formats/arm-lpae.ts'
import { vtdss } from './formats/vtdss.ts'
import { x86_64 } from './formats/x86-64.ts'
import { describeFormatConformance } from './testing/index.ts'

// The io-pgtable-arm selftest matrix: both stages, three granules, ias <= oas.
const SIZES = [32, 36, 40, 42, 44, 48]
const arm: { name: string; cfg: ArmLpaeConfig }[] = []
for (const stage of [1, 2] as const) {
  for (const granule of [4096, 16384, 65536] as const) {
    for (const oas of SIZES) {
      for (const ias of SIZES) {
        if (ias <= oas)
          arm.push({
            name: `S${stage} ${granule / 1024}K ias ${ias} oas ${oas}`,
            cfg: { stage, granule, ias, oas },
          })
      }
    }
  }
}
arm.push(
  {
    name: 'S1 64K ias 52 oas 52 (52-bit PA, 4T blocks)',
    cfg: { stage: 1, granule: 65536, ias: 52, oas: 52 },
  },
  { name: 'S2 64K ias 48 oas 52', cfg: { stage: 2, granule: 65536, ias: 48, oas: 52 } },
  { name: 'S1 4K HD', cfg: { stage: 1, ias: 48, oas: 48, quirks: IoPgtableQuirk.ARM_HD } },
  {
    name: 'S1 16K HD',
    cfg: { stage: 1, granule: 16384, ias: 48, oas: 48, quirks: IoPgtableQuirk.ARM_HD },
  },
  {
    name: 'S1 64K HD 52-bit',
    cfg: { stage: 1, granule: 65536, ias: 52, oas: 52, quirks: IoPgtableQuirk.ARM_HD },
  },
  { name: 'S1 4K NS', cfg: { stage: 1, ias: 48, oas: 48, quirks: IoPgtableQuirk.ARM_NS } },
  { name: 'S1 4K TTBR1', cfg: { stage: 1, ias: 48, oas: 48, quirks: IoPgtableQuirk.ARM_TTBR1 } },
  { name: 'S1 4K non-coherent walk', cfg: { stage: 1, ias: 48, oas: 48, coherentWalk: false } },
  { name: 'S2 4K S2FWB', cfg: { stage: 2, ias: 48, oas: 48, quirks: IoPgtableQuirk.ARM_S2FWB } },
)
describeFormatConformance(armLpae, arm, { property: { runs: 6, commands: 12 } })

describeFormatConformance(amdv1, [
  { name: 'starting level 1 (2 levels)', cfg: { startingLevel: 1 } },
  { name: 'starting level 2 (the driver)', cfg: { startingLevel: 2 } },
  { name: 'starting level 3', cfg: { startingLevel: 3 } },
  { name: 'starting level 4', cfg: { startingLevel: 4 } },
  { name: 'starting level 5 (6 levels)', cfg: { startingLevel: 5 } },
  { name: '32-bit VA (kunit cfg 1)', cfg: { startingLevel: 2, hwMaxVaBits: 32 } },
  { name: 'HATS 4 levels (48-bit)', cfg: { startingLevel: 2, hwMaxVaBits: 48 } },
  { name: 'HATS 5 levels (57-bit)', cfg: { startingLevel: 2, hwMaxVaBits: 57 } },
  { name: 'no FORCE_COHERENCE', cfg: { startingLevel: 2, forceCoherence: false } },
])

describeFormatConformance(x86_64, [
  {
    name: 'Intel FS 4-level, sign-extended 48-bit',
    cfg: { topLevel: 3, hwMaxVaBits: 48, signExtend: true },
  },
  {
    name: 'Intel FS 5-level, sign-extended 57-bit',
    cfg: { topLevel: 4, hwMaxVaBits: 57, signExtend: true },
  },
  { name: 'AMD v2 4-level, 47-bit', cfg: { topLevel: 3, hwMaxVaBits: 47 } },
  { name: 'AMD v2 5-level, 56-bit', cfg: { topLevel: 4, hwMaxVaBits: 56 } },
])

describeFormatConformance(vtdss, [
  { name: '3 levels (39-bit)', cfg: { topLevel: 2, hwMaxVaBits: 39 } },
  { name: '4 levels (48-bit)', cfg: { topLevel: 3, hwMaxVaBits: 48 } },
  { name: '5 levels (57-bit)', cfg: { topLevel: 4, hwMaxVaBits: 57 } },
  { name: 'FORCE_COHERENCE', cfg: { topLevel: 3, forceCoherence: true } },
  { name: 'FORCE_WRITEABLE (nest parent)', cfg: { topLevel: 3, forceWriteable: true } },
  {
    name: 'no 1G superpages',
    cfg: { topLevel: 3 },
    options: { pgsizeBitmap: (1n << 12n) | (1n << 21n) },
  },
])

/**
 * `pnpm fuzz`: the uAPI fuzzer of `@iommu/iommufd/testing` at scale, over the selftest
 * mock and the AMD, VT-d and SMMUv3 models (CI runs a few thousand operations of the mock
 * and AMD; this is the long run).
 *
 *   pnpm fuzz --ops 1000000 --seed 7            # 1 M operations on each model
 *   pnpm fuzz --iommu amd,smmuv3 --ops 200000 --seed 3
 *
 * `smmuv3` is Linux 7.2's driver, which does not invalidate the TLB after a clearing dirty
 * read: the writes it loses are explained by the SMMU model's missing-invalidation
 * detector (`staleUses`); `smmuv3-flush` runs it with `flushAfterDirtyClear`.
 *
 * Prints the figures of each run and every finding: exceptions that are not an
 * `IommuError` with a Linux errno, leaks (pins, charges, frames left after a world is torn
 * down), and dirty pages a device wrote that a GET_DIRTY_BITMAP did not return while
 * neither the dirty-tracking hazard log nor the hardware's detector explains it. Exits 1
 * on any finding, else 0.
 */

import { parseArgs } from 'node:util'
import { createMachine, type Machine } from '@iommu/core'
import { mockIommu } from '@iommu/core/testing'
import { AmdIommuHw, amd } from '@iommu/driver-amd'
import { intel, VtdIommuHw } from '@iommu/driver-intel'
import { SmmuV3Hw, smmuv3 } from '@iommu/driver-smmuv3'
import { runUapiFuzz, type UapiFuzzReport, type UapiFuzzTarget } from '@iommu/iommufd/testing'

/** The hardware detector of unit 0, when it is a `T`. */
function staleUsesOf<T extends { staleUses: readonly { write: boolean }[] }>(
  cls: abstract new (...args: never[]) => T,
): (m: Machine) => readonly { write: boolean }[] {
  return (m) => {
    const unit = m.units[0]
    return unit instanceof cls ? unit.staleUses : []
  }
}

const TARGETS: Record<string, UapiFuzzTarget> = {
  mock: { name: 'mock', machine: () => createMachine({ iommus: [mockIommu()] }) },
  amd: {
    name: 'amd',
    machine: () => createMachine({ iommus: [amd()] }),
    staleUses: staleUsesOf(AmdIommuHw),
  },
  intel: {
    name: 'intel',
    machine: () => createMachine({ iommus: [intel()] }),
    staleUses: staleUsesOf(VtdIommuHw),
  },
  smmuv3: {
    name: 'smmuv3',
    machine: () => createMachine({ iommus: [smmuv3()] }),
    staleUses: staleUsesOf(SmmuV3Hw),
  },
  'smmuv3-flush': {
    name: 'smmuv3-flush',
    machine: () => createMachine({ iommus: [smmuv3({ flushAfterDirtyClear: true })] }),
    staleUses: staleUsesOf(SmmuV3Hw),
  },
}
const ALL = ['mock', 'amd', 'intel', 'smmuv3']

function usage(message: string): never {
  process.stderr.write(
    `fuzz: ${message}\nusage: pnpm fuzz [--ops N] [--seed N] [--iommu all|NAME[,NAME...]]\n` +
      `  NAME: ${Object.keys(TARGETS).join(', ')}; all = ${ALL.join(', ')} (default)\n`,
  )
  process.exit(2)
}

function integer(name: string, v: string | undefined, fallback: number): number {
  if (v === undefined) return fallback
  const n = Number(v)
  if (!Number.isSafeInteger(n) || n < 0) usage(`--${name} must be a non-negative integer: '${v}'`)
  return n
}

function byKind(by: Record<string, number>): string {
  const list = Object.entries(by).sort((a, b) => b[1] - a[1])
  return list.length ? ` (${list.map(([k, v]) => `${k} ${v}`).join(', ')})` : ''
}

function summary(r: UapiFuzzReport, seconds: number): string {
  const errnos = Object.entries(r.errnos)
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => `${k} ${v}`)
    .join(', ')
  const d = r.dirty
  const kinds = new Map<string, number>()
  for (const p of r.problems) kinds.set(p.kind, (kinds.get(p.kind) ?? 0) + 1)
  return [
    `${r.target}: ${r.ops.toLocaleString('en')} operations in ${r.worlds} worlds, seed ${r.seed}, ${seconds.toFixed(0)} s`,
    `  ioctls ${r.ioctls.toLocaleString('en')}: ${r.succeeded.toLocaleString('en')} returned 0; errno: ${errnos}`,
    `  DMA writes ${r.dmaWrites.toLocaleString('en')} (faults ${r.dmaFaults.toLocaleString('en')}), injected allocation failures ${r.injected}`,
    `  dirty reads ${d.reads} (${d.wellFormedReads} well-formed), units expected ${d.expected}, ` +
      `false negatives ${d.falseNegatives} (${d.falseNegativesWellFormed} in well-formed reads)`,
    `  lost by the kernel ${d.lost}${byKind(d.lostByKind)}; missed (still dirty) ${d.missed}${byKind(d.missedByKind)}`,
    `  writes the IOMMU did not log ${d.unlogged} (stale translations used: ${d.staleUses})`,
    `  findings: ${kinds.size ? [...kinds].map(([k, v]) => `${k} ${v}`).join(', ') : 'none'}`,
  ].join('\n')
}

function main(): number {
  let values: Record<string, string | undefined>
  try {
    values = parseArgs({
      args: process.argv.slice(2).filter((a) => a !== '--'),
      strict: true,
      options: { ops: { type: 'string' }, seed: { type: 'string' }, iommu: { type: 'string' } },
    }).values
  } catch (e) {
    usage((e as Error).message)
  }
  const ops = integer('ops', values.ops, 1_000_000)
  const seed = integer('seed', values.seed, 1)
  const which = values.iommu ?? 'all'
  const names = which === 'all' ? ALL : which.split(',')
  for (const n of names) if (!Object.hasOwn(TARGETS, n)) usage(`unknown --iommu '${n}'`)
  let fail = false
  for (const name of names) {
    const t0 = performance.now()
    const r = runUapiFuzz(TARGETS[name] as UapiFuzzTarget, {
      seed,
      ops,
      maxProblems: 200,
      onProgress: (n) => {
        if (n % 100_000 === 0)
          process.stderr.write(`  ${name}: ${n.toLocaleString('en')} operations\n`)
      },
    })
    process.stdout.write(`${summary(r, (performance.now() - t0) / 1000)}\n`)
    for (const p of r.problems) {
      process.stdout.write(`  [${p.kind}] world ${p.world} op ${p.op}: ${p.what.slice(0, 300)}\n`)
      process.stdout.write(`    ${p.detail.split('\n').slice(0, 4).join('\n    ')}\n`)
    }
    // Every finding is a bug of the model (or a kernel loss no detector reports).
    fail ||= r.problems.length > 0
  }
  return fail ? 1 : 0
}

process.exitCode = main()

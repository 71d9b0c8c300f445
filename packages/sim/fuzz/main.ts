/**
 * `pnpm fuzz`: the uAPI fuzzer of `@iommu/iommufd/testing` at scale, over the mock and the
 * AMD models (CI runs a few thousand operations of each; this is the long run).
 *
 *   pnpm fuzz --ops 1000000 --seed 7            # 1 M operations on each model
 *   pnpm fuzz --iommu amd --ops 200000 --seed 3
 *
 * Prints the figures of each run and every finding: exceptions that are not an
 * `IommuError` with a Linux errno, leaks (pins, charges, frames left after a world is torn
 * down), and dirty pages a device wrote that a GET_DIRTY_BITMAP did not return. Exits 1 on
 * any finding, else 0.
 */

import { parseArgs } from 'node:util'
import { createMachine } from '@iommu/core'
import { mockIommu } from '@iommu/core/testing'
import { amd } from '@iommu/driver-amd'
import { runUapiFuzz, type UapiFuzzReport, type UapiFuzzTarget } from '@iommu/iommufd/testing'

const TARGETS: Record<string, UapiFuzzTarget> = {
  mock: { name: 'mock', machine: () => createMachine({ iommus: [mockIommu()] }) },
  amd: { name: 'amd', machine: () => createMachine({ iommus: [amd()] }) },
}

function usage(message: string): never {
  process.stderr.write(
    `fuzz: ${message}\nusage: pnpm fuzz [--ops N] [--seed N] [--iommu mock|amd|both]\n`,
  )
  process.exit(2)
}

function integer(name: string, v: string | undefined, fallback: number): number {
  if (v === undefined) return fallback
  const n = Number(v)
  if (!Number.isSafeInteger(n) || n < 0) usage(`--${name} must be a non-negative integer: '${v}'`)
  return n
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
    `  dirty reads ${d.reads} (${d.wellFormedReads} well-formed), pages expected ${d.expected}, lost by the kernel ${d.lost}, ` +
      `false negatives ${d.falseNegatives} (${d.falseNegativesWellFormed} in well-formed reads)`,
    ...d.samples.map((x) => `  sample miss: ${x.slice(0, 400)}`),
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
  const which = values.iommu ?? 'both'
  const names = which === 'both' ? ['mock', 'amd'] : [which]
  if (!names.every((n) => n in TARGETS)) usage(`--iommu must be mock, amd or both: '${which}'`)
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
    // Misses in malformed reads are sampled, not findings, until the dirty-tracking hazard
    // detector tells the kernel's own losses apart; every finding is a bug of the model.
    fail ||= r.problems.length > 0
  }
  return fail ? 1 : 0
}

process.exitCode = main()

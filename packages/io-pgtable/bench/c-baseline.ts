/**
 * The optional C baseline of the dirty scan (`dirty-scan.c`): built with the machine's C
 * compiler (`cc`, else `gcc`) into a temporary directory when the benchmark starts, and
 * run next to the TypeScript scan of the same format in the same run. Where there is no
 * compiler the step is skipped with a note. Benchmarks only: never in CI, nothing is
 * downloaded.
 *
 * @module
 */

import { execFileSync } from 'node:child_process'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

/** The C scan's figures for one format: M PTE/s with 1/stride dirty and with none dirty. */
export interface CScan {
  readonly dirty: number
  readonly clean: number
  readonly records: number
}

/**
 * Build `dirty-scan.c` with `-O2`.
 *
 * @returns the binary's path and the compiler, or null (with the reason) when there is no
 *   C compiler or it fails
 */
export function buildCBaseline(): { path: string; compiler: string } | { skipped: string } {
  const src = join(dirname(fileURLToPath(import.meta.url)), 'dirty-scan.c')
  const out = join(mkdtempSync(join(tmpdir(), 'iommu-c-scan-')), 'dirty-scan')
  for (const cc of ['cc', 'gcc']) {
    try {
      execFileSync(cc, ['-O2', '-o', out, src], { stdio: ['ignore', 'ignore', 'pipe'] })
      return { path: out, compiler: cc }
    } catch (e) {
      if ((e as { code?: string }).code === 'ENOENT') continue
      return { skipped: `${cc} failed: ${String((e as { stderr?: Buffer }).stderr ?? e).trim()}` }
    }
  }
  return { skipped: 'no C compiler (cc or gcc) on this machine' }
}

/**
 * Run the C scan of `format` (`amdv1`, `vtdss`, `arm-s1`) with every `stride`-th leaf dirty,
 * `reps` repetitions, medians.
 */
export function runCScan(binary: string, format: string, reps = 5, stride = 100): CScan {
  const args = [format, String(reps), String(stride)]
  const line = execFileSync(binary, args, { encoding: 'utf8' }).trim()
  const [, dirty, clean, records] = line.split(/\s+/)
  return { dirty: Number(dirty), clean: Number(clean), records: Number(records) }
}

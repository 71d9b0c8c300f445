/**
 * End to end, as a third-party author meets the project: pack core, io-pgtable, iommufd
 * and this generator with `pnpm pack` (after building them), generate a driver package
 * from the packed generator into a temporary folder, `npm install` the packed tarballs
 * there (third-party packages such as vitest and typescript come from the registry), and
 * run the generated package's tests, typecheck and build. Every package tarball must ship
 * its README.
 *
 * Everything it downloads or writes stays in the temporary folder (npm's cache included)
 * except the packages' own `dist/` (their build output). It needs the npm registry and
 * takes one to two minutes on a 2-core machine (it prints its phases' durations); its
 * processes run at the lowest CPU priority so that the other tests keep theirs.
 */
import { spawn } from 'node:child_process'
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs'
import { createRequire } from 'node:module'
import { setPriority, tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { gunzipSync } from 'node:zlib'
import { afterAll, describe, expect, it } from 'vitest'

const ROOT = resolve(import.meta.dirname, '../../..')
/** Every package of the workspace: each tarball must ship its README. */
const PACKAGES = readdirSync(join(ROOT, 'packages')).filter((p) =>
  existsSync(join(ROOT, 'packages', p, 'package.json')),
)
/** The packages the generated driver installs, and the generator itself: built first. */
const BUILT = ['core', 'io-pgtable', 'iommufd', 'create-driver']
const BUDGET_MS = 15 * 60_000

const pkgDir = (p: string) => join(ROOT, 'packages', p)

const tmp = mkdtempSync(join(tmpdir(), 'iommu-packed-'))
afterAll(() => rmSync(tmp, { recursive: true, force: true }))

interface Run {
  readonly code: number | null
  readonly out: string
}

/** An environment without the package manager's and vitest's variables. */
function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(npm_|pnpm_|PNPM_|VITEST|TEST$|NODE_OPTIONS$|NODE_ENV$|TURBO_)/i.test(k)) continue
    env[k] = v
  }
  return { ...env, ...extra }
}

function run(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv): Promise<Run> {
  return new Promise((done) => {
    const child = spawn(cmd, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] })
    // Lowest CPU priority (inherited by what it starts): the other packages' tests run at
    // the same time under turbo and keep the CPU first.
    try {
      if (child.pid !== undefined) setPriority(child.pid, 19)
    } catch {
      // Not permitted on this system: run at normal priority.
    }
    let out = ''
    child.stdout.on('data', (b: Buffer) => {
      out += b.toString()
    })
    child.stderr.on('data', (b: Buffer) => {
      out += b.toString()
    })
    child.on('error', (e) => done({ code: -1, out: `${out}\n${e.message}` }))
    child.on('close', (code) => done({ code, out }))
  })
}

async function mustRun(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv) {
  const r = await run(cmd, args, cwd, env)
  expect(r.code, `${cmd} ${args.join(' ')} in ${cwd} failed:\n${r.out.slice(-6000)}`).toBe(0)
  return r.out
}

/** pnpm, as the one running this test (`npm_execpath`) or from PATH. */
function pnpm(): [string, string[]] {
  const exec = process.env.npm_execpath
  if (exec !== undefined && /pnpm/.test(exec)) {
    return exec.endsWith('.js') || exec.endsWith('.cjs') ? [process.execPath, [exec]] : [exec, []]
  }
  return ['pnpm', []]
}

/** Entry names of a .tgz (ustar headers). */
function tarEntries(file: string): string[] {
  const tar = gunzipSync(readFileSync(file))
  const names: string[] = []
  for (let off = 0; off + 512 <= tar.length; ) {
    const header = tar.subarray(off, off + 512)
    if (header.every((b) => b === 0)) break
    const field = (a: number, b: number) =>
      header.subarray(a, b).toString('utf8').replace(/\0.*$/s, '')
    const prefix = field(345, 500)
    names.push(prefix ? `${prefix}/${field(0, 100)}` : field(0, 100))
    const size = Number.parseInt(field(124, 136).trim() || '0', 8)
    off += 512 + Math.ceil(size / 512) * 512
  }
  return names
}

describe('a driver package generated from the packed tarballs', () => {
  it(
    'builds, passes both kits and drives the toy through iommufd',
    async () => {
      const phases: string[] = []
      let t0 = performance.now()
      const phase = (name: string) => {
        const t = performance.now()
        phases.push(`${name} ${((t - t0) / 1000).toFixed(1)} s`)
        t0 = t
      }
      const tarballs = join(tmp, 'tarballs')
      mkdirSync(tarballs)
      const env = cleanEnv({
        npm_config_cache: join(tmp, 'npm-cache'),
        npm_config_update_notifier: 'false',
        npm_config_fund: 'false',
        npm_config_audit: 'false',
        CI: '1',
        NO_COLOR: '1',
      })
      // Build what gets installed (dist/ is what the tarballs carry), one at a time.
      const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc')
      for (const p of BUILT) {
        // A fresh dist/: nothing stale from deleted sources goes into the tarball.
        rmSync(join(pkgDir(p), 'dist'), { recursive: true, force: true })
        await mustRun(process.execPath, [tsc, '-p', 'tsconfig.build.json'], pkgDir(p), env)
      }
      phase('build')
      // pnpm pack rewrites workspace:^ ranges into real ones, as publishing does.
      const [pnpmCmd, pnpmArgs] = pnpm()
      await Promise.all(
        PACKAGES.map((p) =>
          mustRun(pnpmCmd, [...pnpmArgs, 'pack', '--pack-destination', tarballs], pkgDir(p), env),
        ),
      )
      const tgz = (name: string): string => {
        const f = readdirSync(tarballs).find((x) => x.startsWith(`iommu-${name}-`))
        if (f === undefined) throw new Error(`no tarball for ${name}`)
        return join(tarballs, f)
      }
      for (const p of PACKAGES) {
        const entries = tarEntries(tgz(p))
        expect(entries, `${p} ships its README`).toContain('package/README.md')
        expect(entries).toContain('package/package.json')
        if (BUILT.includes(p)) expect(entries).toContain('package/dist/index.js')
      }
      expect(tarEntries(tgz('create-driver'))).toContain('package/template/src/driver.ts')

      phase('pack')
      // npm init @iommu/driver my-driver, from the packed generator.
      await mustRun(
        'npm',
        [
          'exec',
          '--yes',
          `--package=${tgz('create-driver')}`,
          '--',
          'create-iommu-driver',
          'my-driver',
        ],
        tmp,
        env,
      )
      const dir = join(tmp, 'my-driver')
      phase('generate')
      // Install our packages from the tarballs (never from the registry), the rest from it.
      const pkgPath = join(dir, 'package.json')
      const pkg = JSON.parse(readFileSync(pkgPath, 'utf8'))
      const local: Record<string, string> = {
        '@iommu/core': `file:${tgz('core')}`,
        '@iommu/io-pgtable': `file:${tgz('io-pgtable')}`,
        '@iommu/iommufd': `file:${tgz('iommufd')}`,
      }
      pkg.devDependencies = { ...pkg.devDependencies, ...local }
      pkg.overrides = Object.fromEntries(Object.keys(local).map((n) => [n, `$${n}`]))
      writeFileSync(pkgPath, JSON.stringify(pkg, null, 2))
      await mustRun('npm', ['install', '--no-audit', '--no-fund'], dir, env)
      const lock = JSON.parse(readFileSync(join(dir, 'package-lock.json'), 'utf8'))
      for (const n of Object.keys(local)) {
        expect(lock.packages[`node_modules/${n}`]?.resolved, n).toMatch(/^file:/)
      }
      phase('npm install')
      const tests = await mustRun('npm', ['test', '--', '--reporter=verbose'], dir, env)
      for (const title of [
        'IOMMU driver conformance: toy',
        'faults every DMA on the blocked domain, whatever was attached before',
        'can be bound by iommufd',
        'the toy driver configuration',
        'binds a device, attaches it to an IOAS and moves data both ways by DMA',
      ]) {
        expect(tests, title).toContain(title)
      }
      expect(tests).toMatch(/Test Files\s+4 passed \(4\)/)
      expect(tests).not.toMatch(/\bfailed\b/)
      phase('npm test')
      await Promise.all([
        mustRun('npm', ['run', 'typecheck'], dir, env),
        mustRun('npm', ['run', 'build'], dir, env),
      ])
      phase('typecheck and build')
      const built = await mustRun(
        process.execPath,
        [
          '--input-type=module',
          '-e',
          "import { toy } from 'my-driver'; import { createMachine } from '@iommu/core'; " +
            'console.log(createMachine({ iommus: [toy()] }).units[0].driver.name)',
        ],
        dir,
        env,
      )
      expect(built.trim()).toBe('toy')
      phase('import the built package')
      // Phase durations for the CI log (figures, not assertions).
      process.stdout.write(`packed driver test: ${phases.join(', ')}\n`)
    },
    BUDGET_MS,
  )
})

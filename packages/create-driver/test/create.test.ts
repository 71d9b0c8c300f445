import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { createDriverPackage, main, TEMPLATE_DIR } from '../src/index.ts'

const tmp = mkdtempSync(join(tmpdir(), 'create-iommu-driver-'))
afterAll(() => rmSync(tmp, { recursive: true, force: true }))

function quiet<T>(fn: () => T): { value: T; out: string; err: string } {
  const w = process.stdout.write
  const e = process.stderr.write
  let out = ''
  let err = ''
  process.stdout.write = ((s: string) => {
    out += s
    return true
  }) as typeof process.stdout.write
  process.stderr.write = ((s: string) => {
    err += s
    return true
  }) as typeof process.stderr.write
  try {
    return { value: fn(), out, err }
  } finally {
    process.stdout.write = w
    process.stderr.write = e
  }
}

describe('create-iommu-driver', () => {
  it('writes the template with the package named after the directory', () => {
    const { dir, files } = createDriverPackage({ dir: join(tmp, 'my-iommu') })
    expect(files).toEqual([
      '.gitignore',
      'README.md',
      'package.json',
      'src/driver.ts',
      'src/hw/toy-iommu.ts',
      'src/index.ts',
      'test/conformance.test.ts',
      'test/format.test.ts',
      'test/hw.test.ts',
      'test/iommufd.test.ts',
      'tsconfig.build.json',
      'tsconfig.json',
      'vitest.config.ts',
    ])
    const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'))
    expect(pkg.name).toBe('my-iommu')
    expect(readFileSync(join(dir, 'README.md'), 'utf8')).toMatch(/^# my-iommu\n/)
    expect(readFileSync(join(dir, 'src/driver.ts'), 'utf8')).toBe(
      readFileSync(join(TEMPLATE_DIR, 'src/driver.ts'), 'utf8'),
    )
  })

  it('takes a scoped name, and refuses a bad name or a non-empty directory', () => {
    const { dir } = createDriverPackage({ dir: join(tmp, 'x'), packageName: '@acme/iommu-x' })
    expect(JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')).name).toBe('@acme/iommu-x')
    expect(() => createDriverPackage({ dir: join(tmp, 'Bad Name') })).toThrow(/not a valid/)
    mkdirSync(join(tmp, 'full'))
    writeFileSync(join(tmp, 'full', 'keep'), '')
    expect(() => createDriverPackage({ dir: join(tmp, 'full') })).toThrow(/not empty/)
  })

  it('exits 0 and prints the next steps, 1 on a used directory, 2 on bad arguments', () => {
    const ok = quiet(() => main([join(tmp, 'cli-driver')]))
    expect(ok.value).toBe(0)
    expect(ok.out).toMatch(/npm install\n {2}npm test && npm run typecheck && npm run build/)
    expect(quiet(() => main([join(tmp, 'full')])).value).toBe(1)
    expect(quiet(() => main([])).value).toBe(2)
    expect(quiet(() => main(['a', 'b'])).value).toBe(2)
    expect(quiet(() => main(['--bogus', 'a'])).value).toBe(2)
    expect(quiet(() => main(['--help'])).value).toBe(0)
  })

  it('pins the @iommu packages to ranges the workspace versions satisfy', () => {
    const pkg = JSON.parse(readFileSync(join(TEMPLATE_DIR, '_package.json'), 'utf8'))
    const ranges = { ...pkg.peerDependencies, ...pkg.devDependencies } as Record<string, string>
    for (const [name, dir] of [
      ['@iommu/core', 'core'],
      ['@iommu/io-pgtable', 'io-pgtable'],
      ['@iommu/iommufd', 'iommufd'],
    ] as const) {
      const version: string = JSON.parse(
        readFileSync(new URL(`../../${dir}/package.json`, import.meta.url), 'utf8'),
      ).version
      const range = ranges[name] ?? ''
      // ^X.Y.Z: same major, not older.
      const [maj, min, pat] = range.replace(/^\^/, '').split('.').map(Number)
      const [vMaj, vMin, vPat] = version.split('.').map(Number)
      expect(range.startsWith('^'), `${name} range ${range}`).toBe(true)
      expect(vMaj, `${name} ${version} vs ${range}`).toBe(maj)
      expect(
        (vMin as number) * 1e6 + (vPat as number) >= (min as number) * 1e6 + (pat as number),
      ).toBe(true)
    }
  })
})

/**
 * The driver-package generator: copy the template (a working toy IOMMU driver with its
 * tests) into a new directory and name the package.
 *
 * @module
 */

import {
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  writeFileSync,
} from 'node:fs'
import { basename, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

/** The template directory shipped with this package. */
export const TEMPLATE_DIR: string = fileURLToPath(new URL('../template', import.meta.url))

/** The template's package name, replaced by the new package's. */
const TEMPLATE_NAME = 'iommu-driver-toy'

/** Options of {@link createDriverPackage}. */
export interface CreateDriverOptions {
  /** Where to create the package: a directory that does not exist or is empty. */
  readonly dir: string
  /** The npm package name (default: the directory's name). */
  readonly packageName?: string
}

/** A valid npm package name (scoped or not). */
export function isPackageName(name: string): boolean {
  return /^(?:@[a-z0-9-~][a-z0-9-._~]*\/)?[a-z0-9-~][a-z0-9-._~]*$/.test(name) && name.length <= 214
}

/**
 * Create a driver package from the template.
 *
 * @returns the directory and the files written (relative paths, sorted)
 * @throws Error - the directory is not empty, or the package name is invalid
 */
export function createDriverPackage(o: CreateDriverOptions): { dir: string; files: string[] } {
  const dir = resolve(o.dir)
  const name = o.packageName ?? basename(dir)
  if (!isPackageName(name)) throw new Error(`'${name}' is not a valid npm package name`)
  if (existsSync(dir) && readdirSync(dir).length > 0) throw new Error(`${dir} is not empty`)
  mkdirSync(dir, { recursive: true })
  cpSync(TEMPLATE_DIR, dir, {
    recursive: true,
    filter: (src) => !/[\\/](node_modules|dist)([\\/]|$)/.test(relative(TEMPLATE_DIR, src)),
  })
  // npm drops .gitignore from published packages, and a package.json inside a package is
  // taken for a nested package: the template ships them as `gitignore` and `_package.json`.
  renameSync(join(dir, 'gitignore'), join(dir, '.gitignore'))
  renameSync(join(dir, '_package.json'), join(dir, 'package.json'))
  const pkgPath = join(dir, 'package.json')
  const pkg = JSON.parse(readFileSync(pkgPath, 'utf8')) as Record<string, unknown>
  pkg.name = name
  writeFileSync(pkgPath, `${JSON.stringify(pkg, null, 2)}\n`)
  const readme = join(dir, 'README.md')
  writeFileSync(readme, readFileSync(readme, 'utf8').replaceAll(TEMPLATE_NAME, name))
  return { dir, files: listFiles(dir) }
}

function listFiles(dir: string, base = dir): string[] {
  const out: string[] = []
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name)
    if (e.isDirectory()) out.push(...listFiles(p, base))
    else out.push(relative(base, p).split('\\').join('/'))
  }
  return out.sort()
}

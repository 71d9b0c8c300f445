/**
 * `create-iommu-driver <directory> [--name <package>]`: what `npm init @iommu/driver`
 * runs. Exits 0 on success, 1 when the directory cannot be used, 2 on bad arguments.
 *
 * @module
 */

import { parseArgs } from 'node:util'
import { createDriverPackage } from './create.ts'

const USAGE = `Usage: create-iommu-driver <directory> [--name <package-name>]

Create an IOMMU driver plugin package for the Linux IOMMU model: a toy IOMMU (hardware
model and driver, page tables from @iommu/io-pgtable) with the driver conformance kit,
the page-table format kit and an iommufd test, ready to build and test.

Options:
  --name NAME   npm package name (default: the directory's name)
  -h, --help    this text
`

/** Run the generator; returns the exit code. */
export function main(argv: string[]): number {
  let parsed: ReturnType<typeof parse>
  try {
    parsed = parse(argv)
  } catch (e) {
    process.stderr.write(`create-iommu-driver: ${(e as Error).message}\n\n${USAGE}`)
    return 2
  }
  if (parsed.help) {
    process.stdout.write(USAGE)
    return 0
  }
  let out: ReturnType<typeof createDriverPackage>
  try {
    out = createDriverPackage({
      dir: parsed.dir,
      ...(parsed.name === undefined ? {} : { packageName: parsed.name }),
    })
  } catch (e) {
    process.stderr.write(`create-iommu-driver: ${(e as Error).message}\n`)
    return 1
  }
  process.stdout.write(
    `Created ${out.dir} (${out.files.length} files). Next:\n\n` +
      `  cd ${out.dir}\n  npm install\n  npm test && npm run typecheck && npm run build\n\n` +
      'Then rename the toy and make it your hardware: README.md walks through every part.\n',
  )
  return 0
}

function parse(argv: string[]): { dir: string; name: string | undefined; help: boolean } {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: { name: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
  })
  if (values.help) return { dir: '', name: undefined, help: true }
  if (positionals.length !== 1) throw new Error('expected exactly one directory')
  return { dir: positionals[0] as string, name: values.name, help: false }
}

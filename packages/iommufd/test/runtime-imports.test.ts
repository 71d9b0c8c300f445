/**
 * What the run-time entries load: opening iommufd (test mode included) reaches the mock
 * driver through `@iommu/core/testing/mock`, never the driver conformance kit (which
 * needs vitest) nor any test framework. Checked in a child Node process whose module resolution is
 * recorded (this process already has vitest loaded).
 */
import { spawnSync } from 'node:child_process'
import { createRequire } from 'node:module'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { describe, expect, it } from 'vitest'

/** This package's directory: bare specifiers resolve from its dependencies. */
const PKG = fileURLToPath(new URL('..', import.meta.url))
/** tsx, a root dev dependency, to load the TypeScript sources. */
const TSX = pathToFileURL(
  createRequire(new URL('../../../package.json', import.meta.url)).resolve('tsx'),
).href

/** A resolve hook that reports every resolved URL to the main thread. */
const HOOKS = `
let port
export function initialize(data) { port = data.port }
export async function resolve(specifier, context, next) {
  const r = await next(specifier, context)
  port.postMessage(r.url)
  return r
}`

/** The module URLs resolved while `code` (an ES module body) runs in this package. */
function resolvedBy(code: string): string[] {
  const script = `
import { register } from 'node:module'
import { MessageChannel } from 'node:worker_threads'
const urls = []
const { port1, port2 } = new MessageChannel()
port1.on('message', (u) => urls.push(u))
port1.unref()
register('data:text/javascript,' + encodeURIComponent(${JSON.stringify(HOOKS)}), {
  data: { port: port2 },
  transferList: [port2],
})
${code}
// Let the hook thread's last messages arrive.
await new Promise((r) => setTimeout(r, 50))
process.stdout.write(JSON.stringify(urls))
`
  const r = spawnSync(
    process.execPath,
    ['--conditions=@iommu/source', '--import', TSX, '--input-type=module', '-e', script],
    { cwd: PKG, encoding: 'utf8' },
  )
  if (r.status !== 0) throw new Error(`child failed (${r.status}): ${r.stderr}`)
  return JSON.parse(r.stdout) as string[]
}

const framework = (u: string) => /\/node_modules\/(\.pnpm\/)?(vitest|fast-check)[@/]/.test(u)

describe('run-time imports', () => {
  it('iommufd in test mode reaches the mock without the conformance kit or vitest', () => {
    const urls = resolvedBy(`
const { createMachine } = await import('@iommu/core')
const { mockIommu } = await import('@iommu/core/testing/mock')
const { openIommufd } = await import('@iommu/iommufd')
const m = createMachine({ iommus: [mockIommu()] })
openIommufd(m, m.createProcess(), { test: true })
`)
    expect(urls.some((u) => u.endsWith('/core/src/testing/mock-iommu.ts'))).toBe(true)
    expect(urls.filter((u) => u.endsWith('/testing/conformance.ts'))).toEqual([])
    expect(urls.filter(framework)).toEqual([])
  })
})

/**
 * The explorer's build. The workspace packages are compiled from their TypeScript sources
 * (the `@iommu/source` condition), so `pnpm explore` needs no prior build.
 *
 * The static build is one self-contained `dist/index.html` (script and styles inlined):
 * any web server hosts it and it also opens from a `file://` URL, where browsers refuse to
 * load module scripts from separate files.
 *
 * @module
 */

import { builtinModules } from 'node:module'
import { defaultClientConditions, defineConfig, type Plugin } from 'vite'

const NODE_BUILTINS = new Set([...builtinModules, ...builtinModules.map((m) => `node:${m}`)])

/**
 * The browser bundle must not reach a Node built-in: a second guard, behind the Biome rule
 * on the packages' sources, over everything the page actually imports.
 */
function noNodeBuiltins(): Plugin {
  return {
    name: 'iommu:no-node-builtins',
    enforce: 'pre',
    resolveId(id, importer) {
      if (NODE_BUILTINS.has(id)) {
        this.error(
          `${importer ?? '?'} imports the Node built-in '${id}': runtime code reachable from the explorer must be browser-safe`,
        )
      }
      return null
    },
  }
}

/**
 * Nothing the page imports may reach a test framework (vitest, fast-check): the testing
 * entries the explorer uses (`@iommu/core/testing/mock`) load none, and the build fails
 * if one comes back.
 */
function noTestPeers(): Plugin {
  return {
    name: 'iommu:no-test-peers',
    enforce: 'pre',
    resolveId(id, importer) {
      if (id === 'vitest' || id.startsWith('vitest/') || id === 'fast-check') {
        this.error(`${importer ?? '?'} imports '${id}': test frameworks stay out of the page`)
      }
      return null
    },
  }
}

/** Inline the entry chunk and the CSS into index.html (build only). */
function singleFile(): Plugin {
  return {
    name: 'iommu:single-file',
    apply: 'build',
    enforce: 'post',
    generateBundle(_options, bundle) {
      const html = bundle['index.html']
      if (html === undefined || html.type !== 'asset') return
      let text = String(html.source)
      for (const [name, out] of Object.entries(bundle)) {
        if (out.type === 'chunk' && out.isEntry) {
          // `</script` inside the code would end the element: escape it.
          const code = out.code.replaceAll('</script', '<\\/script')
          text = text.replace(
            new RegExp(`<script type="module" crossorigin src="[^"]*${escapeRe(name)}"></script>`),
            () => `<script type="module">${code}</script>`,
          )
          delete bundle[name]
        } else if (out.type === 'asset' && name.endsWith('.css')) {
          text = text.replace(
            new RegExp(`<link rel="stylesheet" crossorigin href="[^"]*${escapeRe(name)}">`),
            () => `<style>${String(out.source)}</style>`,
          )
          delete bundle[name]
        }
      }
      if (/<script[^>]+src=|<link[^>]+stylesheet/.test(text)) {
        this.error('single-file: an asset was left outside index.html')
      }
      html.source = text
    },
  }
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
}

export default defineConfig({
  base: './',
  plugins: [noNodeBuiltins(), noTestPeers(), singleFile()],
  resolve: {
    conditions: ['@iommu/source', ...defaultClientConditions],
  },
  oxc: {
    jsx: { runtime: 'automatic', importSource: 'preact' },
  },
  build: {
    target: 'es2022',
    outDir: 'dist',
    emptyOutDir: true,
    assetsInlineLimit: Number.MAX_SAFE_INTEGER,
    modulePreload: false,
    cssCodeSplit: false,
    chunkSizeWarningLimit: 4096,
    rolldownOptions: {
      output: { codeSplitting: false },
    },
  },
  server: { host: '127.0.0.1', port: 5173 },
  preview: { host: '127.0.0.1', port: 4173 },
})

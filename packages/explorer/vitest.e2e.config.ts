/**
 * The end-to-end suite: headless Chromium (playwright-core, the machine's own browser)
 * against the static build. Run by `pnpm test:e2e` after `vite build`; not part of
 * `pnpm test`, which stays browser-free.
 */
import { defineConfig } from 'vitest/config'

export default defineConfig({
  resolve: { conditions: ['@iommu/source'] },
  ssr: { resolve: { conditions: ['@iommu/source'] } },
  test: {
    include: ['e2e/**/*.e2e.ts'],
    // A browser start and a short migration on a loaded 2-core machine; only catches hangs.
    testTimeout: 180_000,
    hookTimeout: 180_000,
    fileParallelism: false,
  },
})

/**
 * The vitest project settings every package shares. Tests assert values, never wall time:
 * the per-test budget is far above what any test needs on a loaded 2-core machine, so it
 * only catches a hang; a test that is slow by design sets its own budget.
 */
import { defineProject } from 'vitest/config'

export const TEST_BUDGET_MS = 120_000

/** @param extraInclude - test globs beyond `src/` and `test/` (e.g. a template's tests) */
export function iommuProject(
  extraInclude: readonly string[] = [],
): ReturnType<typeof defineProject> {
  return defineProject({
    resolve: { conditions: ['@iommu/source'] },
    ssr: { resolve: { conditions: ['@iommu/source'] } },
    test: {
      include: ['src/**/*.test.ts', 'test/**/*.test.ts', ...extraInclude],
      typecheck: { enabled: true, include: ['src/**/*.test-d.ts'], tsconfig: './tsconfig.json' },
      testTimeout: TEST_BUDGET_MS,
      hookTimeout: TEST_BUDGET_MS,
    },
  })
}

import { defineProject } from 'vitest/config'

export default defineProject({
  resolve: { conditions: ['@iommu/source'] },
  ssr: { resolve: { conditions: ['@iommu/source'] } },
  test: {
    include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
    typecheck: { enabled: true, include: ['src/**/*.test-d.ts'], tsconfig: './tsconfig.json' },
  },
})

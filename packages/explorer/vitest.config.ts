import { iommuProject } from '../../tooling/vitest/project.ts'

// Unit tests only (Node, no browser); the end-to-end suite has vitest.e2e.config.ts.
export default iommuProject()

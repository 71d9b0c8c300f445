import { iommuProject } from '../../tooling/vitest/project.ts'

// The template's own tests run here too, on the workspace's sources: every pnpm test
// checks that the driver a new package starts from passes both kits and iommufd.
export default iommuProject(['template/test/**/*.test.ts'])

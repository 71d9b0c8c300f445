import { iommuProject } from '../../tooling/vitest/project.ts'

export default iommuProject()

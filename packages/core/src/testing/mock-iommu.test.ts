import { describeDriverConformance } from './conformance.ts'
import { mockIommu } from './mock-iommu.ts'

describeDriverConformance(() => mockIommu())
describeDriverConformance(() => mockIommu({ ioPageSize: 4096, hugePageSize: 2 * 1024 * 1024 }), {
  name: 'mock with 4 KiB pages and 2 MiB huge pages',
})

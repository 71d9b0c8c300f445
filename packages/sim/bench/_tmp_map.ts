import { createMachine } from '@iommu/core'
import { amd } from '@iommu/driver-amd'
import { IOMMU_HWPT_ALLOC, IOMMU_HWPT_ALLOC_DIRTY_TRACKING, IOMMU_IOAS_ALLOC, IOMMU_IOAS_MAP, IOMMU_IOAS_MAP_FIXED_IOVA, IOMMU_IOAS_MAP_READABLE, IOMMU_IOAS_MAP_WRITEABLE, IOMMU_OPTION, IOMMU_OPTION_HUGE_PAGES, IOMMU_OPTION_OP_SET, openIommufd } from '@iommu/iommufd'
const GIB = 2 ** 30
const bytes = Number(process.argv[2] ?? 64) * GIB
const m = createMachine({ memorySize: 2 ** 38, iommus: [{ driver: amd(), config: { detectStale: false } }] })
const vmm = m.createProcess()
const fd = openIommufd(m, vmm)
const alloc = { size: 12, flags: 0, out_ioas_id: 0 }
fd.ioctl(IOMMU_IOAS_ALLOC, alloc)
fd.ioctl(IOMMU_OPTION, { size: 24, option_id: IOMMU_OPTION_HUGE_PAGES, op: IOMMU_OPTION_OP_SET, object_id: alloc.out_ioas_id, val64: 0n })
const guest = vmm.mmap(bytes)
const c0 = process.cpuUsage(); const t0 = performance.now()
fd.ioctl(IOMMU_IOAS_MAP, { size: 40, flags: IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE, ioas_id: alloc.out_ioas_id, user_va: BigInt(guest), length: BigInt(bytes), iova: 0x1_0000_0000n })
const dev = m.addPciDevice()
const idev = fd.bindDevice(dev)
const hwpt = { size: 48, flags: IOMMU_HWPT_ALLOC_DIRTY_TRACKING, dev_id: idev.id, pt_id: alloc.out_ioas_id, out_hwpt_id: 0 }
fd.ioctl(IOMMU_HWPT_ALLOC, hwpt)
const c = process.cpuUsage(c0)
const ms = performance.now() - t0
console.log(`map+alloc ${bytes / GIB} GiB: ${ms.toFixed(0)} ms wall, ${((c.user + c.system) / 1000).toFixed(0)} ms cpu, ${(bytes / 4096 / ms / 1000).toFixed(2)} M pages/s; rss ${(process.memoryUsage().rss / GIB).toFixed(2)} GiB ab ${(process.memoryUsage().arrayBuffers / 2**20).toFixed(0)} MiB`)

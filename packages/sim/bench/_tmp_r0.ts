import { createMachine } from '@iommu/core'
import { amd } from '@iommu/driver-amd'
import {
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_HWPT_DIRTY_TRACKING_ENABLE,
  IOMMU_HWPT_SET_DIRTY_TRACKING,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_OPTION,
  IOMMU_OPTION_HUGE_PAGES,
  IOMMU_OPTION_OP_SET,
  openIommufd,
} from '@iommu/iommufd'
import { defaultOptions } from '../src/migrate.ts'
import { stampBytes, Workload } from '../src/workload.ts'

const GIB = 2 ** 30
const bytes = Number(process.argv[2] ?? 16) * GIB
const o = defaultOptions({ memoryBytes: bytes })
const m = createMachine({
  memorySize: 2 ** 38,
  iommus: [{ driver: amd(), config: { detectStale: true } }],
})
const vmm = m.createProcess()
const fd = openIommufd(m, vmm)
const alloc = { size: 12, flags: 0, out_ioas_id: 0 }
fd.ioctl(IOMMU_IOAS_ALLOC, alloc)
fd.ioctl(IOMMU_OPTION, {
  size: 24,
  option_id: IOMMU_OPTION_HUGE_PAGES,
  op: IOMMU_OPTION_OP_SET,
  object_id: alloc.out_ioas_id,
  val64: 0n,
})
const dev = m.addPciDevice()
const idev = fd.bindDevice(dev)
const hwpt = {
  size: 48,
  flags: IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  dev_id: idev.id,
  pt_id: alloc.out_ioas_id,
  out_hwpt_id: 0,
}
fd.ioctl(IOMMU_HWPT_ALLOC, hwpt)
idev.attach(hwpt.out_hwpt_id)
const guest = vmm.mmap(bytes)
const IOVA = 0x1_0000_0000
fd.ioctl(IOMMU_IOAS_MAP, {
  size: 40,
  flags: IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
  ioas_id: alloc.out_ioas_id,
  user_va: BigInt(guest),
  length: BigInt(bytes),
  iova: BigInt(IOVA),
})
fd.ioctl(IOMMU_HWPT_SET_DIRTY_TRACKING, {
  size: 16,
  flags: IOMMU_HWPT_DIRTY_TRACKING_ENABLE,
  hwpt_id: hwpt.out_hwpt_id,
})
const wl = new Workload({ ...o.workload, memoryBytes: bytes, seed: 1 })
const buf = new Uint8Array(4096)
const seconds = bytes / o.bandwidth
let n = 0
const c0 = process.cpuUsage()
const t0 = performance.now()
for (let s = 0; s < 32; s++)
  wl.run(seconds / 32, (w) => {
    dev.dma.write(IOVA + w.offset, stampBytes(buf, w.length, w.stamp, w.offset))
    n++
  })
const c = process.cpuUsage(c0)
console.log(
  `${n} writes: ${(((performance.now() - t0) * 1e6) / n).toFixed(0)} ns wall, ${(((c.user + c.system) * 1e3) / n).toFixed(0)} ns cpu per write`,
)

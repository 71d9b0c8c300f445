import { migration, defaultOptions } from '../src/migrate.ts'
// Drive a migration setup but time only DMA writes: reuse the engine's rig through a 4 GiB run's workload.
import { createMachine } from '@iommu/core'
import { amd } from '@iommu/driver-amd'
import { IOMMU_HWPT_ALLOC, IOMMU_HWPT_ALLOC_DIRTY_TRACKING, IOMMU_HWPT_DIRTY_TRACKING_ENABLE, IOMMU_HWPT_SET_DIRTY_TRACKING, IOMMU_IOAS_ALLOC, IOMMU_IOAS_MAP, IOMMU_IOAS_MAP_FIXED_IOVA, IOMMU_IOAS_MAP_READABLE, IOMMU_IOAS_MAP_WRITEABLE, IOMMU_OPTION, IOMMU_OPTION_HUGE_PAGES, IOMMU_OPTION_OP_SET, openIommufd } from '@iommu/iommufd'
void migration; void defaultOptions
const GIB = 2 ** 30
const bytes = 16 * GIB
const detect = process.argv[2] !== 'nodetect'
const m = createMachine({ memorySize: 2 ** 36, iommus: [{ driver: amd(), config: { detectStale: detect } }] })
const vmm = m.createProcess()
const fd = openIommufd(m, vmm)
const alloc = { size: 12, flags: 0, out_ioas_id: 0 }
fd.ioctl(IOMMU_IOAS_ALLOC, alloc)
fd.ioctl(IOMMU_OPTION, { size: 24, option_id: IOMMU_OPTION_HUGE_PAGES, op: IOMMU_OPTION_OP_SET, object_id: alloc.out_ioas_id, val64: 0n })
const guest = vmm.mmap(bytes)
const IOVA = 0x1_0000_0000
fd.ioctl(IOMMU_IOAS_MAP, { size: 40, flags: IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE, ioas_id: alloc.out_ioas_id, user_va: BigInt(guest), length: BigInt(bytes), iova: BigInt(IOVA) })
const dev = m.addPciDevice()
const idev = fd.bindDevice(dev)
const hwpt = { size: 48, flags: IOMMU_HWPT_ALLOC_DIRTY_TRACKING, dev_id: idev.id, pt_id: alloc.out_ioas_id, out_hwpt_id: 0 }
fd.ioctl(IOMMU_HWPT_ALLOC, hwpt)
idev.attach(hwpt.out_hwpt_id)
fd.ioctl(IOMMU_HWPT_SET_DIRTY_TRACKING, { size: 16, flags: IOMMU_HWPT_DIRTY_TRACKING_ENABLE, hwpt_id: hwpt.out_hwpt_id })
const pages = bytes / 4096
const buf = new Uint8Array(4096).fill(7)
let x = 12345
const rnd = () => { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; return (x >>> 0) % pages }
function t(label: string, n: number, fn: (i: number) => void) {
  const c0 = process.cpuUsage(); const t0 = performance.now()
  for (let i = 0; i < n; i++) fn(i)
  const c = process.cpuUsage(c0)
  console.log(label.padEnd(40), ((performance.now() - t0) * 1e6 / n).toFixed(0).padStart(6), 'ns wall', (((c.user + c.system) * 1e3) / n).toFixed(0).padStart(6), 'ns cpu')
}
const small = buf.subarray(0, 512)
t('random 512B first touch', 200000, () => dev.dma.write(IOVA + rnd() * 4096 + 64, small))
x = 12345
t('random 512B again (same pages)', 200000, () => dev.dma.write(IOVA + rnd() * 4096 + 64, small))
t('ring 2K sequential (64 MiB ring) 1st', 32768, (i) => dev.dma.write(IOVA + (i % 32768) * 2048, buf.subarray(0, 2048)))
t('ring 2K sequential again', 200000, (i) => dev.dma.write(IOVA + (i % 32768) * 2048, buf.subarray(0, 2048)))
t('4K write steady (hot 16 MiB)', 200000, (i) => dev.dma.write(IOVA + (i % 4096) * 4096, buf))
t('4K read steady (hot 16 MiB)', 200000, (i) => dev.dma.readInto(IOVA + (i % 4096) * 4096, buf))
t('random 4K read', 200000, () => dev.dma.readInto(IOVA + rnd() * 4096, buf))

// Preloaded (`node --import`) into the migrations the benchmark runs as child processes,
// in this tree or in a baseline checkout: at exit, write the process's CPU time and peak
// RSS to the file named by IOMMU_BENCH_USAGE.
import { writeFileSync } from 'node:fs'

const file = process.env.IOMMU_BENCH_USAGE
if (file) {
  process.on('exit', () => {
    const c = process.cpuUsage()
    writeFileSync(
      file,
      JSON.stringify({ user: c.user, system: c.system, maxRSS: process.resourceUsage().maxRSS }),
    )
  })
}

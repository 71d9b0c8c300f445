// Preloaded (`node --import`) into the migrations the benchmark runs as child processes,
// in this tree or in a baseline checkout: at exit, write the process's CPU time and peak
// RSS to the file named by IOMMU_BENCH_USAGE.
import { readFileSync, writeFileSync } from 'node:fs'

/**
 * Peak RSS in KiB: the address space's high-water mark (`VmHWM`) where Linux gives it.
 * Not `getrusage`'s `ru_maxrss`: a child spawned by vfork + exec (libuv) inherits the
 * parent's high-water mark in it, so every migration would report at least the bench
 * process's own peak.
 */
function peakRssKiB() {
  try {
    const m = /^VmHWM:\s+(\d+) kB$/m.exec(readFileSync('/proc/self/status', 'utf8'))
    if (m) return Number(m[1])
  } catch {
    // Not Linux: getrusage's figure.
  }
  return process.resourceUsage().maxRSS
}

const file = process.env.IOMMU_BENCH_USAGE
if (file) {
  process.on('exit', () => {
    const c = process.cpuUsage()
    writeFileSync(file, JSON.stringify({ user: c.user, system: c.system, maxRSS: peakRssKiB() }))
  })
}

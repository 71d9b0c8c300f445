/**
 * The selftest mock IOMMU (`@iommu/core/testing/mock`) in the explorer. Its "hardware" is a
 * RID → domain table and its IOPTEs are per-IO-page flags, not tables in memory, so the
 * explorer lists the domain's IOPTEs over the mapped ranges instead of a tree.
 *
 * @module
 */

import type { IommuDomain } from '@iommu/core'
import { MockDomain, mockIommu } from '@iommu/core/testing/mock'
import { decodeStruct, flag, hex, type Layout } from '../decode/bitfield.ts'
import type { DomainEntriesView, ListRow, MappedRange, VendorDescriptor } from './types.ts'

/**
 * The mock's per-IO-page flags (`MockDomain.flagsAt`), as the mock sets them: PRESENT on
 * every mapped page, READ/WRITE from the prot, START/LAST on the first/last page of each
 * map call (iommufd may only unmap whole maps), HUGE on pages of a huge IOPTE, DIRTY when
 * a DMA wrote through the IOPTE while tracking was on.
 */
export const MOCK_IOPTE: Layout = {
  name: 'mock IOPTE flags',
  ref: '@iommu/core/testing mock-iommu (selftest mock_domain)',
  bits: 64,
  fields: [
    { name: 'PRESENT', hi: 0, lo: 0, meaning: flag('mapped') },
    { name: 'READ', hi: 1, lo: 1, meaning: flag('IOMMU_READ') },
    { name: 'WRITE', hi: 2, lo: 2, meaning: flag('IOMMU_WRITE') },
    { name: 'DIRTY', hi: 3, lo: 3, meaning: flag('written while tracking') },
    { name: 'START', hi: 4, lo: 4, meaning: flag('first page of a map call') },
    { name: 'LAST', hi: 5, lo: 5, meaning: flag('last page of a map call') },
    { name: 'HUGE', hi: 6, lo: 6, meaning: flag('part of a huge IOPTE') },
    { name: 'Unused', hi: 63, lo: 7, reserved: true },
  ],
}

/** At most this many runs are listed. */
const MAX_RUNS = 2048

function flagNames(f: number): string {
  const names = ['P', 'R', 'W', 'D', 'S', 'L', 'H']
  return names.map((n, i) => (f & (1 << i) ? n : '·')).join('')
}

/** The mock's IOPTEs over `ranges`, folded into runs of equal flags and contiguous PA. */
export function mockDomainEntries(
  domain: MockDomain,
  ranges: readonly MappedRange[],
): DomainEntriesView {
  const shift = domain.pageShift
  const page = 2 ** shift
  const rows: ListRow[] = []
  let truncated = false
  for (const r of ranges) {
    const first = Number(r.iova / BigInt(page))
    const last = Number((r.iova + r.length - 1n) / BigInt(page))
    let i = first
    while (i <= last) {
      const f = domain.flagsAt(i)
      if (f === 0) {
        i++
        continue
      }
      const pa = domain.paAt(i)
      let n = 1
      // START/LAST differ at the ends of a run: compare without them.
      const core = f & ~(16 | 32)
      while (
        i + n <= last &&
        (domain.flagsAt(i + n) & ~(16 | 32)) === core &&
        domain.paAt(i + n) === pa + n &&
        !(domain.flagsAt(i + n) & 16)
      ) {
        n++
      }
      if (rows.length === MAX_RUNS) {
        truncated = true
        break
      }
      rows.push({
        cells: [
          hex(BigInt(i) * BigInt(page)),
          String(n),
          hex(BigInt(pa) * BigInt(page)),
          flagNames(f),
        ],
        decoded: decodeStruct(`IOPTE of IO page ${hex(i)}`, MOCK_IOPTE, [BigInt(f)]),
        ...(f & 8 ? { tone: 'pending' as const } : {}),
      })
      i += n
    }
  }
  return {
    title: `Mock IOPTEs (${page >= 1024 ? `${page / 1024} KiB` : `${page} B`} IO pages)`,
    ref: 'flags P R W D S(tart) L(ast) H(uge); runs of equal flags and contiguous PA',
    columns: ['IOVA', 'IO pages', 'PA', 'flags'],
    rows,
    empty: truncated ? '' : 'Nothing mapped in this domain.',
  }
}

/** The selftest mock descriptor. */
export const mockVendor: VendorDescriptor = {
  id: 'mock',
  label: 'Selftest mock',
  deviceDirtyTracking: true,
  about:
    'The kernel selftest’s mock IOMMU: configurable IO page size, injected dirty bits, no tables in memory',
  options: [
    {
      key: 'pageSize',
      label: 'IO page size',
      kind: 'choice',
      choices: ['2k', '4k'],
      default: '4k',
      help: 'The kernel mock uses 2 KiB (MOCK_IO_PAGE_SIZE)',
    },
    { key: 'huge', label: 'Huge IOPTEs (2 MiB)', kind: 'boolean', default: false },
  ],
  createIommu(o) {
    return {
      driver: mockIommu({
        ioPageSize: o.pageSize === '2k' ? 2048 : 4096,
        ...(o.huge === true ? { hugePageSize: 2 * 1024 * 1024 } : {}),
        aperture: { start: 0n, end: 2n ** 48n - 1n },
      }),
    }
  },
  deviceEntryName: 'RID → domain',
  deviceEntries: () => [],
  registers: () => [],
  caches: () => [],
  queues: () => [],
  detectors: () => [],
  pageTable: () => null,
  domainEntries(domain: IommuDomain, ranges) {
    if (!(domain instanceof MockDomain)) {
      return {
        title: 'Mock IOPTEs',
        columns: [],
        rows: [],
        empty: 'This domain has no IOPTEs (blocked or identity).',
      }
    }
    return mockDomainEntries(domain, ranges)
  },
  hooks: [],
  simModel: 'mock',
}

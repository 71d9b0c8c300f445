/**
 * Sessions: real uAPI calls with the kernel's errno, deterministic replay, DMA data, and
 * the vendor views and detectors over what the calls did.
 */

import { describe, expect, it } from 'vitest'
import { amdVendor } from '../vendors/amd.ts'
import { mockVendor } from '../vendors/mock.ts'
import { demoCommands } from './reducer.ts'
import {
  type Command,
  type CommandInput,
  Command as CommandSchema,
  parseState,
  type ViommuType,
} from './scenario.ts'
import { dmaPattern, replay, Session } from './session.ts'

const cmd = (c: CommandInput): Command => CommandSchema.parse(c)

function machine(vendor: string, options: Record<string, boolean | string> = {}) {
  return parseState({
    v: 1,
    seed: 7,
    machine: { vendor, options, guestMiB: 8, devices: [{ name: 'nic' }, { name: 'ssd' }] },
  })
}

function session(vendor: string, commands: Command[] = demoCommands(2)) {
  return replay({ ...machine(vendor), commands })
}

describe('replay', () => {
  it('is deterministic: the same scenario gives the same log, IDs and addresses', () => {
    const a = session('amd')
    const b = session('amd')
    expect(JSON.stringify(a.log)).toBe(JSON.stringify(b.log))
    expect(a.hwpts).toEqual(b.hwpts)
  })

  it('runs the demo without an error and reads the pages the device wrote', () => {
    for (const vendor of ['amd', 'mock']) {
      const s = session(vendor)
      expect(
        s.log.filter((e) => e.error !== null).map((e) => e.call),
        vendor,
      ).toEqual([])
      const bitmap = s.log.find((e) => e.call === 'IOMMU_HWPT_GET_DIRTY_BITMAP')
      expect(bitmap?.result).toBe('3 dirty pages: 0x1000_1000, 0x1005_0000..0x1005_1fff')
      expect(s.ioas).toEqual([3])
      expect(s.hwpts.map((h) => [h.id, h.ioas, h.auto])).toEqual([[4, 3, false]])
      expect(s.devices[0]?.hwpt).toBe(4)
    }
  })

  it('logs ioctls with the kernel struct’s fields and the outputs written back', () => {
    const s = session('amd')
    const alloc = s.log.find((e) => e.call === 'IOMMU_HWPT_ALLOC')
    expect(alloc?.nr).toBe(0x3b89)
    expect(alloc?.struct).toBe('iommu_hwpt_alloc')
    expect(alloc?.args.map(([k]) => k)).toEqual([
      'size',
      'flags',
      'dev_id',
      'pt_id',
      'out_hwpt_id',
      '__reserved',
      'data_type',
      'data_len',
      'data_uptr',
    ])
    expect(Object.fromEntries(alloc?.args ?? [])).toMatchObject({
      size: '48',
      flags: 'DIRTY_TRACKING',
      dev_id: '1',
      pt_id: '3',
      out_hwpt_id: '4',
    })
    expect(alloc?.outputs).toEqual(['out_hwpt_id'])
  })
})

describe('errno', () => {
  const base = demoCommands(2)
  const run = (vendor: string, extra: CommandInput[], options = {}) => {
    const s = replay({ ...machine(vendor, options), commands: [...base, ...extra.map(cmd)] })
    return s.log.slice(-extra.length)
  }

  it('is the kernel’s for each failing call', () => {
    const [overlap, notIoas, noObj, noDirty, destroyBusy] = run('amd', [
      { op: 'IOAS_MAP', ioas: 3, offset: '0x0', length: '0x1000', iova: '0x10000000' },
      { op: 'HWPT_ALLOC', dev: 1, pt: 1 },
      { op: 'ATTACH', dev: 1, pt: 99 },
      { op: 'HWPT_ALLOC', dev: 1, pt: 3 },
      { op: 'DESTROY', id: 3 },
    ])
    expect([overlap?.error?.code, overlap?.error?.errno]).toEqual(['EEXIST', -17])
    expect([notIoas?.error?.code, notIoas?.error?.errno]).toEqual(['EINVAL', -22])
    expect([noObj?.error?.code, noObj?.error?.errno]).toEqual(['ENOENT', -2])
    expect(noDirty?.error).toBeNull()
    expect([destroyBusy?.error?.code, destroyBusy?.error?.errno]).toEqual(['EBUSY', -16])
    const [track] = run('amd', [
      { op: 'HWPT_ALLOC', dev: 1, pt: 3 },
      { op: 'SET_DIRTY_TRACKING', hwpt: 5, enable: true },
    ]).slice(1)
    // A HWPT allocated without DIRTY_TRACKING has no dirty_ops.
    expect([track?.error?.code, track?.error?.errno]).toEqual(['EOPNOTSUPP', -95])
  })

  it('reports a DMA to an unmapped IOVA as a translation fault, and a bad hook as EINVAL', () => {
    const [dma] = run('amd', [{ op: 'DMA_READ', dev: 0, iova: '0x20000000', length: 4 }])
    expect(dma?.error?.code).toBe('DMA fault: translation')
    const [hook] = run('mock', [{ op: 'HOOK', name: 'skipIotlbSync', on: true }])
    expect([hook?.error?.code, hook?.error?.errno]).toEqual(['EINVAL', -22])
  })
})

describe('DMA and views', () => {
  it('a DMA write lands in guest memory with the seed’s pattern', () => {
    const s = session('amd')
    const i = s.spec.devices.length
    expect(i).toBe(2)
    // Demo command 7 wrote 64 bytes at guest offset 0x1000.
    const idx = demoCommands(2).findIndex((c) => c.op === 'DMA_WRITE')
    const data = new Uint8Array(64)
    s.vmm.readInto(s.guestVa + 0x1000, data)
    expect(data).toEqual(dmaPattern(7, idx, 64))
    expect(dmaPattern(7, idx, 64)).not.toEqual(dmaPattern(8, idx, 64))
  })

  it('the mock lists its IOPTEs with the dirty flag where the device wrote last', () => {
    const s = session('mock')
    const view = mockVendor.domainEntries?.(s.hwptDomain(4) as never, s.hwptRanges(4))
    const dirty = view?.rows.filter((r) => r.cells[3]?.includes('D')) ?? []
    // Only the write after the read-and-clear is still dirty.
    expect(dirty.map((r) => r.cells.slice(0, 2))).toEqual([['0x1000_3000', '1']])
    const pages = (view?.rows ?? []).reduce((n, r) => n + Number(r.cells[1]), 0)
    expect(pages).toBe(512)
  })

  it('the missing-invalidation detector catches a dropped IOTLB flush', () => {
    const s = replay({
      ...machine('amd'),
      commands: [
        ...demoCommands(2),
        cmd({ op: 'DMA_READ', dev: 0, iova: '0x10007000', length: 8 }),
        cmd({ op: 'HOOK', name: 'skipIotlbSync', on: true }),
        cmd({ op: 'IOAS_UNMAP', ioas: 3, iova: '0x10000000', length: '0x200000' }),
        cmd({ op: 'DMA_READ', dev: 0, iova: '0x10007000', length: 8 }),
      ],
    })
    // The read after the unmap still translates: the IOTLB kept the entry.
    expect(s.log.at(-1)?.error).toBeNull()
    const [report] = amdVendor.detectors(s.vendorContext)
    expect(report?.findings).toHaveLength(1)
    expect(report?.findings[0]?.detail).toMatchObject({
      cache: 'IOTLB',
      missing: 'INVALIDATE_IOMMU_PAGES',
      IOVA: '0x1000_7000',
      access: 'read',
    })
  })

  it('the dirty-tracking hazard detector shows 7.2’s short record of a 16 KiB contiguous leaf', () => {
    const s = replay({
      ...machine('amd'),
      commands: [
        cmd({ op: 'IOAS_ALLOC' }),
        // 16 KiB at a 16 KiB-aligned IOVA: one AMD v1 contiguous leaf (NextLevel 7).
        cmd({ op: 'IOAS_MAP', ioas: 3, offset: '0x0', length: '0x4000', iova: '0x10000000' }),
        cmd({ op: 'HWPT_ALLOC', dev: 0, pt: 3, dirtyTracking: true }),
        cmd({ op: 'ATTACH', dev: 0, pt: 4 }),
        cmd({ op: 'SET_DIRTY_TRACKING', hwpt: 4, enable: true }),
        cmd({ op: 'DMA_WRITE', dev: 0, iova: '0x10000000', length: 64 }),
        cmd({ op: 'GET_DIRTY_BITMAP', hwpt: 4, iova: '0x10000000', length: '0x4000' }),
      ],
    })
    // record_dirty reports the leaf one item short: the last 4 KiB is cleaned unreported.
    expect(s.log.at(-1)?.result).toBe('3 dirty pages: 0x1000_0000..0x1000_2fff')
    const reports = s.detectors()
    expect(reports.map((r) => r.title)).toEqual([
      'Missing-invalidation detector',
      'Dirty-tracking hazard detector',
    ])
    const hazards = reports[1]
    expect(hazards?.enabled).toBe(true)
    expect(hazards?.findings).toHaveLength(1)
    expect(hazards?.findings[0]?.severity).toBe('error')
    expect(hazards?.findings[0]?.detail).toEqual({
      kind: 'record-short',
      read: '#1 (read and clear, kernel records)',
      HWPT: '4',
      query: '[0x1000_0000, +16 KiB), page_size 4 KiB',
      count: '1',
      lost: '4 KiB: [0x1000_3000, +4 KiB)',
      IOPTE: '[0x1000_0000, +16 KiB)',
      recorded: '[0x1000_0000, +12 KiB)',
    })
  })

  it('takes dirty tracking from the unit on hardware, from the device on the mock', () => {
    const spec = (vendor: string, options: Record<string, boolean | string>) =>
      parseState({
        v: 1,
        seed: 7,
        machine: { vendor, options, guestMiB: 8, devices: [{ name: 'nic', dirtyTracking: false }] },
      })
    const alloc = (vendor: string, options: Record<string, boolean | string> = {}) =>
      replay({
        ...spec(vendor, options),
        commands: [
          cmd({ op: 'IOAS_ALLOC' }),
          cmd({ op: 'HWPT_ALLOC', dev: 0, pt: 2, dirtyTracking: true }),
        ],
      }).log.at(-1)?.result
    // The device's flag means nothing on hardware: the unit tracks.
    expect([alloc('amd'), alloc('intel'), alloc('smmuv3')]).toEqual([
      'hwpt_id 3',
      'hwpt_id 3',
      'hwpt_id 3',
    ])
    // The unit's capability off: EOPNOTSUPP.
    expect([
      alloc('amd', { hdsup: false }),
      alloc('intel', { ssads: false }),
      alloc('smmuv3', { httu: false }),
    ]).toEqual(['EOPNOTSUPP (-95)', 'EOPNOTSUPP (-95)', 'EOPNOTSUPP (-95)'])
    // The mock device without dirty tracking (MOCK_FLAGS_DEVICE_NO_DIRTY).
    expect(alloc('mock')).toBe('EOPNOTSUPP (-95)')
  })

  it('allocates a vIOMMU and a vDEVICE over a nest parent where the driver has one', () => {
    const viommu = (vendor: string, type: ViommuType) =>
      replay({
        ...machine(vendor),
        commands: [
          cmd({ op: 'IOAS_ALLOC' }),
          cmd({ op: 'HWPT_ALLOC', dev: 0, pt: 3, nestParent: true }),
          cmd({ op: 'VIOMMU_ALLOC', dev: 0, hwpt: 4, type }),
          cmd({ op: 'VDEVICE_ALLOC', viommu: 5, dev: 0, virtId: '0x10' }),
          cmd({ op: 'DESTROY', id: 5 }),
        ],
      })
    const s = viommu('smmuv3', 'arm-smmuv3')
    expect(s.log.slice(-4).map((e) => [e.call, e.result])).toEqual([
      ['IOMMU_HWPT_ALLOC', 'hwpt_id 4'],
      ['IOMMU_VIOMMU_ALLOC', 'viommu_id 5'],
      ['IOMMU_VDEVICE_ALLOC', 'vdevice_id 6'],
      // The vDEVICE holds the vIOMMU.
      ['IOMMU_DESTROY', 'EBUSY (-16)'],
    ])
    expect(s.viommus).toEqual([{ id: 5, dev: 0, hwpt: 4 }])
    expect(viommu('mock', 'selftest').log.at(-2)?.result).toBe('vdevice_id 6')
    // VT-d has no vIOMMU of the default type (7.2): EOPNOTSUPP.
    const vtd = viommu('intel', 'default').log.find((e) => e.call === 'IOMMU_VIOMMU_ALLOC')
    expect([vtd?.error?.code, vtd?.error?.errno]).toEqual(['EOPNOTSUPP', -95])
  })

  it('keeps the IOAS and HWPT lists in step with destroy and auto HWPTs', () => {
    const s = new Session(machine('amd').machine, 1)
    s.run(cmd({ op: 'IOAS_ALLOC' }))
    s.run(cmd({ op: 'ATTACH', dev: 1, pt: 3 }))
    expect(s.hwpts.map((h) => [h.id, h.auto])).toEqual([[4, true]])
    s.run(cmd({ op: 'DETACH', dev: 1 }))
    // The automatic HWPT goes with its last attachment.
    expect(s.hwpts).toEqual([])
    s.run(cmd({ op: 'DESTROY', id: 3 }))
    expect(s.ioas).toEqual([])
    expect(s.commandsRun).toBe(4)
  })
})

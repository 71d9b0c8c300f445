import { describe, expect, it } from 'vitest'
import { FramePurpose, PhysicalMemory } from './memory.ts'
import { PROT_READ, Process } from './process.ts'

function setup() {
  const mem = new PhysicalMemory({ size: 2 ** 34 })
  return { mem, proc: new Process(mem) }
}

describe('Process address spaces', () => {
  it('reads zeros from untouched memory without allocating, and populates on write', () => {
    const { mem, proc } = setup()
    const va = proc.mmap(3 * 4096, { hugepage: false })
    expect(proc.read(va + 100, 8)).toEqual(new Uint8Array(8))
    expect(mem.frameStats().allocated).toBe(0)
    proc.write(va + 4090, new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]))
    expect(mem.frameStats().byPurpose.user).toBe(2)
    expect(proc.read(va + 4090, 8)).toEqual(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]))
  })

  it('EFAULT outside mappings and for writes to read-only mappings', () => {
    const { proc } = setup()
    const ro = proc.mmap(4096, { prot: PROT_READ })
    expect(() => proc.write(ro, new Uint8Array(1))).toThrow(
      expect.objectContaining({ code: 'EFAULT' }),
    )
    expect(() => proc.read(0x1000, 1)).toThrow(expect.objectContaining({ code: 'EFAULT' }))
    const pfns = new Int32Array(1)
    expect(() => proc.pinUserPages(ro, 1, true, pfns)).toThrow(
      expect.objectContaining({ code: 'EFAULT' }),
    )
    proc.pinUserPages(ro, 1, false, pfns)
  })

  it('backs whole aligned 2 MiB blocks with contiguous 2 MiB-aligned frames (THP)', () => {
    const { proc } = setup()
    const va = proc.mmap(4 * 1024 * 1024)
    expect(va % (2 * 1024 * 1024)).toBe(0)
    const pfns = new Int32Array(1024)
    proc.pinUserPages(va, 1024, true, pfns)
    expect((pfns[0] as number) % 512).toBe(0)
    for (let i = 1; i < 512; i++) expect(pfns[i]).toBe((pfns[0] as number) + i)
    expect((pfns[512] as number) % 512).toBe(0)
  })

  it('munmap splits mappings and drops unpinned pages; pins outlive the mapping', () => {
    const { mem, proc } = setup()
    const va = proc.mmap(4 * 4096, { hugepage: false, populate: true })
    const pfns = new Int32Array(1)
    proc.pinUserPages(va + 4096, 1, true, pfns)
    proc.munmap(va + 4096, 2 * 4096)
    expect(mem.frameStats().allocated).toBe(3)
    expect(proc.isMapped(va, 4096)).toBe(true)
    expect(proc.isMapped(va + 4096, 4096)).toBe(false)
    expect(proc.isMapped(va + 3 * 4096, 4096)).toBe(true)
    proc.unpinPages(pfns, 1)
    expect(mem.frameStats().allocated).toBe(2)
    proc.exit()
    expect(mem.frameStats().allocated).toBe(0)
  })

  it('pins nothing when part of the range is unmapped', () => {
    const { mem, proc } = setup()
    const va = proc.mmap(2 * 4096, { hugepage: false })
    const pfns = new Int32Array(3)
    expect(() => proc.pinUserPages(va, 3, true, pfns)).toThrow(
      expect.objectContaining({ code: 'EFAULT' }),
    )
    expect(mem.frameStats().pins).toBe(0)
  })

  it('shares memfd pages between mappings and frees them after close and unmap', () => {
    const { mem, proc } = setup()
    const fd = proc.memfdCreate('guest-ram')
    fd.ftruncate(2 * 4096)
    const a = proc.mmap(2 * 4096, { file: fd })
    const b = proc.mmap(4096, { file: fd, offset: 4096 })
    proc.write(a + 4096, new Uint8Array([7, 7]))
    expect(proc.read(b, 2)).toEqual(new Uint8Array([7, 7]))
    expect(fd.page(1, false)).toBe(proc.pageFrame(b, false))
    fd.close()
    proc.munmap(a, 2 * 4096)
    expect(mem.frameStats().byPurpose.user).toBe(1)
    proc.munmap(b, 4096)
    expect(mem.frameStats().byPurpose.user).toBe(0)
    expect(FramePurpose.USER).toBe(1)
  })

  it('EEXIST for a fixed address over a mapping', () => {
    const { proc } = setup()
    const va = proc.mmap(8192)
    expect(() => proc.mmap(4096, { addr: va + 4096 })).toThrow(
      expect.objectContaining({ code: 'EEXIST' }),
    )
  })
})

describe('device mappings (io_remap_pfn_range)', () => {
  it('map given frames, cannot be pinned, and run vm close per piece', () => {
    const mem = new PhysicalMemory()
    const proc = new Process(mem)
    const pfn = mem.allocFrames(2, FramePurpose.KERNEL)
    mem.writeBytes(pfn * 4096, new Uint8Array([0xef, 0xbe]))
    let open = 1
    const va = proc.mmap(8192, {
      pfnmap: {
        pfn,
        ops: {
          open: () => {
            open++
          },
          close: () => {
            open--
          },
        },
      },
    })
    expect([...proc.read(va, 2)]).toEqual([0xef, 0xbe])
    expect(proc.pageFrame(va + 4096, false)).toBe(pfn + 1)
    expect(() => proc.pinUserPages(va, 1, false, new Int32Array(1))).toThrow(/EFAULT/)
    proc.munmap(va, 4096) // splits: the remaining piece opens, the original closes
    expect(open).toBe(1)
    proc.munmap(va + 4096, 4096)
    expect(open).toBe(0)
    // The frames stay the driver's.
    expect(mem.isAllocated(pfn)).toBe(true)
  })
})

describe('Process.pageFrames', () => {
  it('reads the frames behind a range without pinning, populating on request', () => {
    const { mem, proc } = setup()
    const va = proc.mmap(4 * 4096, { hugepage: false })
    proc.write(va + 4096, new Uint8Array([1]))
    const out = new Int32Array(4)
    proc.pageFrames(va, 4, false, out)
    expect(out[0]).toBe(0)
    expect(out[1]).toBe(proc.pageFrame(va + 4096, false))
    expect(mem.frameStats().pins).toBe(0)
    proc.pageFrames(va, 4, true, out)
    expect([...out].every((p) => p > 0)).toBe(true)
    expect(() => proc.pageFrames(va, 5, false, new Int32Array(5))).toThrow(
      expect.objectContaining({ code: 'EFAULT' }),
    )
  })
})

describe('sizes a process cannot have', () => {
  const code = (fn: () => unknown) => {
    try {
      fn()
      return 'OK'
    } catch (e) {
      return (e as { code?: string }).code ?? String(e)
    }
  }

  it('a read longer than the mapping is EFAULT before any buffer is sized by it', () => {
    const { proc } = setup()
    const va = proc.mmap(4096)
    expect(code(() => proc.read(va, 2 ** 40))).toBe('EFAULT')
    expect(code(() => proc.read(va, 2 ** 52))).toBe('EFAULT')
    for (const n of [-1, 1.5, Number.NaN]) expect(code(() => proc.read(va, n))).toBe('EINVAL')
  })

  it('a mapping or file the host cannot index is ENOMEM; bad offsets and fixed addresses fail', () => {
    const { proc } = setup()
    // One PFN slot per page: 2^34 slots do not fit a typed array.
    expect(code(() => proc.mmap(2 ** 46))).toBe('ENOMEM')
    expect(code(() => proc.memfdCreate('big').ftruncate(2 ** 52))).toBe('ENOMEM')
    expect(code(() => proc.mmap(4096, { addr: -4096 }))).toBe('ENOMEM')
    expect(code(() => proc.mmap(4096, { addr: 0x7fff_ffff_f000 }))).toBe('ENOMEM')
    expect(code(() => proc.mmap(4096, { addr: 1.5 }))).toBe('EINVAL')
    const f = proc.memfdCreate('f')
    f.ftruncate(4096)
    expect(code(() => proc.mmap(4096, { file: f, offset: -4096 }))).toBe('EINVAL')
    expect(code(() => proc.munmap(proc.mmap(4096), Number.NaN))).toBe('EINVAL')
  })

  it('pinning more pages than the output array holds is EINVAL, not a short pin', () => {
    const { mem, proc } = setup()
    const va = proc.mmap(8 * 4096)
    expect(code(() => proc.pinUserPages(va, 8, true, new Int32Array(4)))).toBe('EINVAL')
    expect(code(() => proc.pinUserPages(va, Number.NaN, true, new Int32Array(4)))).toBe('EINVAL')
    expect(code(() => proc.pageFrames(va, 2, false, new Int32Array(4), 3))).toBe('EINVAL')
    expect(mem.frameStats().pins).toBe(0)
  })
})

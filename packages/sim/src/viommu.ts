/**
 * A guest with a vIOMMU, for `migrate --viommu`: the VMM's side (a NEST_PARENT HWPT whose
 * stage 2 is guest RAM, a vIOMMU and a vDEVICE per device where the driver has them, nested
 * HWPTs from what the guest wrote, the guest's invalidations forwarded with
 * IOMMU_HWPT_INVALIDATE, guest-stage faults read back) and a small guest IOMMU driver that
 * writes its own structures into guest RAM:
 *
 * - SMMUv3 (nesting reference §2.1–2.5): a linear stream table with one STE per device
 *   (Config = S1 translate), a CD table of one CD (ASID 1, TTB0, 48-bit VA, HA/HD off, AF
 *   set in every descriptor) and ARM LPAE stage-1 tables (4 KiB granule). The VMM reads the
 *   vSTE from guest memory as its vSMMU would on the guest's CFGI_STE and installs it with
 *   IOMMU_HWPT_ALLOC on the vIOMMU; the guest's TLBI_NH_ASID goes through
 *   IOMMU_HWPT_INVALIDATE on the vIOMMU (the kernel writes the VMID).
 * - VT-d (§3.1–3.4): a scalable-mode root table, one context entry per device, a PASID
 *   directory and a PASID table whose RID_PASID entry has PGTT = first stage and FSPTPTR at
 *   the guest's x86-64 4-level table. The VMM reads that entry as its virtual VT-d would and
 *   allocates a nested HWPT (`iommu_hwpt_vtd_s1`) per device; the guest's PASID-based IOTLB
 *   invalidation goes through IOMMU_HWPT_INVALIDATE on the nested HWPT. 7.2's VT-d has no
 *   vIOMMU object.
 *
 * The guest's tables are written with `@iommu/io-pgtable`'s format encoders, entry by entry,
 * into guest pages (table pointers are guest-physical): they live in guest RAM, the guest
 * CPU's writes to them are logged as KVM's dirty log would log them, and they migrate with
 * the rest of RAM. The devices DMA to guest IOVAs: a linear window over guest RAM (1 GiB and
 * 2 MiB leaves) and, per device, a ring window of 4 KiB leaves that the guest moves between
 * two IOVA windows once a round; a descriptor fetch still in flight to the old window after
 * the guest unmapped it faults at the guest stage.
 *
 * @module
 */

import {
  DmaFault,
  IommuError,
  type Machine,
  type PciDevice,
  type PfnArray,
  type Process,
  Prot,
} from '@iommu/core'
import { IOMMU_HWPT_INVALIDATE_DATA_VTD_S1, intelFaultLog, Pe, Pgtt } from '@iommu/driver-intel'
import { cmdTlbi, fieldPrep, makeS1Cd, Op, Ste, SteCfg } from '@iommu/driver-smmuv3'
import {
  type Attrs,
  armLpae,
  EntryType,
  type FormatParams,
  type PageTableFormat,
  x86_64,
} from '@iommu/io-pgtable'
import {
  fdPoll,
  fdRead,
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_INVALIDATE,
  IOMMU_VDEVICE_ALLOC,
  IOMMU_VEVENTQ_ALLOC,
  IOMMU_VIOMMU_ALLOC,
  type Iommufd,
  type IommufdDevice,
  openIommufd,
  POLLIN,
} from '@iommu/iommufd'
import {
  IOMMU_HWPT_DATA_ARM_SMMUV3,
  IOMMU_HWPT_DATA_VTD_S1,
  IOMMU_VEVENTQ_TYPE_ARM_SMMUV3,
  IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3,
  IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
} from '@iommu/iommufd/uapi'
import { hwptAlloc, ioasAlloc, ioasMap, UserBuf } from './vmm.ts'
import { stampBytes } from './workload.ts'

const PAGE = 4096
const MIB = 2 ** 20
const GIB = 2 ** 30
/** The guest IOVA of guest RAM offset 0 in the linear window. */
export const GUEST_LINEAR_IOVA = 0x40_0000_0000
/** The first ring window; device `i`'s slot `s` is at `+ i·8 GiB + s·4 GiB`. */
export const GUEST_RING_IOVA = 0x80_0000_0000
/** Bytes of one `iommufd_vevent_header` + `iommu_vevent_arm_smmuv3` record. */
const VEVENT_BYTES = 40
/** The guest's ASID for its one stage-1 domain. */
const GUEST_ASID = 1
/** The guest's domain ID in its PASID entries. */
const GUEST_DID = 1
/** The status record a device writes to the first page of its ring every step. */
const STATUS_BYTES = 64

/** What the report says of a vIOMMU run. */
export interface ViommuReport {
  /** The vIOMMU objects the VMM made. */
  readonly kind: string
  readonly parentTracksDirty: boolean
  /** What IOMMU_HWPT_ALLOC of a NEST_PARENT | DIRTY_TRACKING parent answered, or null. */
  readonly parentDirtyErrno: string | null
  /** The guest structures and their format. */
  readonly guestFormat: string
  /** Guest pages holding the guest's IOMMU structures (tables, CD/stream or context/PASID tables). */
  readonly guestTablePages: number
  readonly ringMoves: number
  /** Invalidations the guest issued (each one IOMMU_HWPT_INVALIDATE when forwarded). */
  readonly guestInvalidations: number
  readonly invalidationsDropped: boolean
  readonly invalidationPath: string
  /** DMA faults the devices saw on guest IOVAs the guest had unmapped. */
  readonly faults: number
  /** Fault records the VMM read (vEVENTQ) or the host driver logged. */
  readonly faultsReported: number
  readonly faultPath: string
  readonly destination: {
    /** What the destination VMM rebuilt. */
    readonly rebuilt: string
    /** Guest IOVA pages written by the destination devices and checked. */
    readonly probes: number
    /** Of them, the ones whose write did not land in the guest page the guest mapped. */
    readonly mismatches: number
  }
}

/** One device as the guest sees it. */
export interface GuestDevice {
  readonly dev: PciDevice
  readonly idev: IommufdDevice
  /** Its workload's ring, in guest RAM offsets. */
  readonly ring: { readonly ringOffset: number; readonly ringBytes: number }
}

/** What {@link GuestIommu.create} needs from the VMM. */
export interface GuestSetup {
  readonly model: 'intel' | 'smmuv3'
  readonly m: Machine
  readonly vmm: Process
  readonly fd: Iommufd
  readonly ioas: number
  readonly devices: readonly GuestDevice[]
  /** The VMM's mapping of guest RAM. */
  readonly guestVa: number
  readonly memoryBytes: number
  /** Guest-physical address (IOAS IOVA) of a guest RAM offset. */
  readonly gpa: (offset: number) => number
  /** The VMM drops the guest's invalidations (a broken VMM, for tests). */
  readonly dropInvalidations: boolean
  readonly seed: number
}

/** Where the destination runs. */
export interface DestinationSetup {
  readonly dest: Process
  readonly destVa: number
  readonly dstPfns: PfnArray
  readonly dimms: readonly {
    readonly offset: number
    readonly iova: number
    readonly bytes: number
  }[]
  readonly iopte4k: boolean
}

/** Guest RAM as the guest CPU writes it: through the VMM's mapping, logged page by page. */
class GuestRam {
  /**
   * Pages the guest CPU wrote since the last harvest (KVM's dirty log): a bit per guest
   * page, laid out as the uAPI dirty bitmap.
   */
  readonly cpuDirty: Uint8Array
  readonly #buf = new Uint8Array(8)
  readonly #dv = new DataView(this.#buf.buffer)

  readonly proc: Process
  readonly va: number

  constructor(proc: Process, va: number, pages: number) {
    this.proc = proc
    this.va = va
    this.cpuDirty = new Uint8Array(Math.ceil(pages / 8))
  }

  read64(off: number): bigint {
    this.proc.readInto(this.va + off, this.#buf)
    return this.#dv.getBigUint64(0, true)
  }

  write64(off: number, v: bigint): void {
    this.#dv.setBigUint64(0, BigInt.asUintN(64, v), true)
    this.proc.write(this.va + off, this.#buf)
    this.#logged(Math.floor(off / PAGE))
  }

  zeroPage(off: number): void {
    this.proc.write(this.va + off, new Uint8Array(PAGE))
    this.#logged(off / PAGE)
  }

  #logged(p: number): void {
    this.cpuDirty[p >>> 3] = (this.cpuDirty[p >>> 3] as number) | (1 << (p & 7))
  }
}

/**
 * A guest's IO page table in guest RAM, written entry by entry with a format's encoders.
 * Table pages come from the guest's own allocator; every table pointer is guest-physical.
 */
class GuestPageTable<P extends FormatParams> {
  readonly rootOff: number
  /** Pages the table uses (root included). */
  pages = 1
  readonly #words = new Uint32Array(1024)
  readonly #attrs: Attrs
  readonly format: PageTableFormat<unknown, P>
  readonly params: P
  readonly ram: GuestRam
  readonly alloc: () => number
  readonly gpa: (off: number) => number
  readonly offOf: (gpa: number) => number
  readonly topLevel: number

  constructor(
    format: PageTableFormat<unknown, P>,
    params: P,
    ram: GuestRam,
    alloc: () => number,
    gpa: (off: number) => number,
    offOf: (gpa: number) => number,
    topLevel: number,
  ) {
    this.format = format
    this.params = params
    this.ram = ram
    this.alloc = alloc
    this.gpa = gpa
    this.offOf = offOf
    this.topLevel = topLevel
    this.rootOff = alloc()
    this.#attrs = format.setProt(Prot.READ | Prot.WRITE, params)
  }

  /** Load entry `i` of the table at `off` into the scratch frame. */
  #load(off: number, i: number): void {
    const v = this.ram.read64(off + 8 * i)
    this.#words[2 * i] = Number(v & 0xffff_ffffn)
    this.#words[2 * i + 1] = Number(v >> 32n)
  }

  #store(off: number, i: number): void {
    const lo = BigInt(this.#words[2 * i] as number)
    const hi = BigInt(this.#words[2 * i + 1] as number)
    this.ram.write64(off + 8 * i, lo | (hi << 32n))
  }

  /** The table at `level` holding `iova`, made if `make`; its guest RAM offset or -1. */
  #tableFor(iova: number, level: number, make: boolean): number {
    let off = this.rootOff
    for (let l = this.topLevel; l > level; l--) {
      const i = Math.floor(iova / 2 ** (12 + 9 * l)) % 512
      this.#load(off, i)
      const t = this.format.loadEntry(this.#words, i, l, this.params)
      if (t === EntryType.TABLE) {
        off = this.offOf(this.format.tablePfn(this.#words, i, l, this.params) * PAGE)
        continue
      }
      if (t !== EntryType.EMPTY) throw new IommuError('EEXIST', 'guest table: a leaf is in the way')
      if (!make) return -1
      const next = this.alloc()
      this.pages++
      this.format.installTable(this.#words, i, l, this.gpa(next) / PAGE, this.params)
      this.#store(off, i)
      off = next
    }
    return off
  }

  /** Map `bytes` of `iova` to `gpa` with leaves of `2^sizeLg2` (12, 21 or 30). */
  map(iova: number, gpa: number, bytes: number, sizeLg2: number): void {
    const level = (sizeLg2 - 12) / 9
    const size = 2 ** sizeLg2
    for (let done = 0; done < bytes; ) {
      const at = iova + done
      const table = this.#tableFor(at, level, true)
      const i = Math.floor(at / size) % 512
      const n = Math.min(512 - i, (bytes - done) / size)
      for (let k = 0; k < n; k++) this.#load(table, i + k)
      this.format.installLeaves(
        this.#words,
        i,
        n,
        level,
        (gpa + done) / PAGE,
        sizeLg2,
        this.#attrs,
        this.params,
      )
      for (let k = 0; k < n; k++) this.#store(table, i + k)
      done += n * size
    }
  }

  /** Clear the leaves of `2^sizeLg2` bytes mapping `bytes` of `iova` (tables stay). */
  unmap(iova: number, bytes: number, sizeLg2: number): void {
    const level = (sizeLg2 - 12) / 9
    const size = 2 ** sizeLg2
    for (let done = 0; done < bytes; ) {
      const at = iova + done
      const table = this.#tableFor(at, level, false)
      const i = Math.floor(at / size) % 512
      const n = Math.min(512 - i, (bytes - done) / size)
      if (table >= 0) for (let k = 0; k < n; k++) this.ram.write64(table + 8 * (i + k), 0n)
      done += n * size
    }
  }
}

function le64(...v: bigint[]): Uint8Array {
  const b = new Uint8Array(8 * v.length)
  const dv = new DataView(b.buffer)
  for (const [i, x] of v.entries()) dv.setBigUint64(8 * i, BigInt.asUintN(64, x), true)
  return b
}

/** Vendor-specific VMM state of one side (source or destination). */
interface VmmSide {
  readonly fd: Iommufd
  readonly buf: UserBuf
  readonly parent: number
  /** SMMUv3: the vIOMMU and its vEVENTQ fd; VT-d: 0 / -1. */
  readonly viommu: number
  readonly veventqFd: number
  /** Per device: the nested HWPT. */
  readonly nested: number[]
}

/** The guest IOMMU driver and the VMM's vIOMMU of one run. */
export class GuestIommu {
  readonly parentHwpt: number
  readonly parentTracksDirty: boolean
  readonly parentDirtyErrno: string | null
  /** Guest RAM from here to the end holds the guest's IOMMU structures (no device DMA). */
  readonly reservedOffset: number
  readonly #s: GuestSetup
  readonly #ram: GuestRam
  readonly #pt: GuestPageTable<FormatParams>
  readonly #src: VmmSide
  /** Guest-physical address of the stream table (SMMUv3) or root table (VT-d): a register. */
  readonly #structGpa: number
  #structPages = 0
  #nextFree: number
  /** Per device: the ring window slot in use (0 / 1). */
  readonly #slot: number[]
  #ringMoves = 0
  #invalidations = 0
  #faults = 0
  #faultsReported = 0
  readonly #faultLog0: number
  #statusStamp = 0
  readonly #status = new Uint8Array(PAGE)
  /** A ring descriptor the device fetches. */
  readonly #descriptor = new Uint8Array(16)

  private constructor(s: GuestSetup) {
    this.#s = s
    const pages = s.memoryBytes / PAGE
    this.#ram = new GuestRam(s.vmm, s.guestVa, pages)
    // The guest kernel's pages: the tables of the linear window (1 GiB / 2 MiB leaves), of
    // two ring windows per device (4 KiB leaves), and the vendor's structures.
    let need = 16 + Math.ceil(s.memoryBytes / GIB) * 2
    for (const d of s.devices) need += 2 * (Math.ceil(d.ring.ringBytes / (2 * MIB)) + 3)
    const reserved = Math.ceil((need * PAGE) / (2 * MIB)) * 2 * MIB
    this.reservedOffset = s.memoryBytes - reserved
    if (this.reservedOffset <= 0) {
      throw new IommuError('EINVAL', 'guest RAM too small for the guest IOMMU structures')
    }
    for (const d of s.devices) {
      if (d.ring.ringOffset + d.ring.ringBytes > this.reservedOffset) {
        throw new IommuError('EINVAL', "a device ring overlaps the guest's IOMMU structures")
      }
    }
    this.#nextFree = this.reservedOffset
    this.#slot = s.devices.map(() => 0)
    this.#faultLog0 = s.model === 'intel' ? faultLogLength(s.devices) : 0

    // The stage 2: a nest parent, with dirty tracking where the driver allows it.
    const buf = new UserBuf(s.vmm)
    const dev0 = (s.devices[0] as GuestDevice).idev.id
    let parent: number
    let errno: string | null = null
    try {
      parent = hwptAlloc(
        s.fd,
        dev0,
        s.ioas,
        IOMMU_HWPT_ALLOC_NEST_PARENT | IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
      )
    } catch (e) {
      // 7.2 SMMUv3: a nest parent cannot track dirty pages (EOPNOTSUPP).
      if (!(e instanceof IommuError)) throw e
      errno = e.code
      parent = hwptAlloc(s.fd, dev0, s.ioas, IOMMU_HWPT_ALLOC_NEST_PARENT)
    }
    this.parentHwpt = parent
    this.parentTracksDirty = errno === null
    this.parentDirtyErrno = errno

    // The guest driver: its page table and the linear window over its RAM.
    const offOf = (gpa: number) => this.#offsetOfGpa(gpa)
    if (s.model === 'smmuv3') {
      const params = armLpae.init({ stage: 1, granule: 4096, ias: 48, oas: 48 })
      this.#pt = new GuestPageTable(
        armLpae as unknown as PageTableFormat<unknown, FormatParams>,
        params,
        this.#ram,
        () => this.#alloc(),
        s.gpa,
        offOf,
        3,
      )
    } else {
      const params = x86_64.init({ topLevel: 3, hwMaxVaBits: 48, signExtend: true })
      this.#pt = new GuestPageTable(
        x86_64 as unknown as PageTableFormat<unknown, FormatParams>,
        params,
        this.#ram,
        () => this.#alloc(),
        s.gpa,
        offOf,
        3,
      )
    }
    this.#mapLinear()
    for (const [i, d] of s.devices.entries()) {
      if (d.ring.ringBytes > 0) {
        this.#pt.map(this.#ringIova(i, 0), s.gpa(d.ring.ringOffset), d.ring.ringBytes, 12)
      }
    }
    this.#structGpa =
      s.model === 'smmuv3' ? this.#writeSmmuStructures() : this.#writeVtdStructures()
    this.#src = this.#vmmSide(s.fd, buf, parent, s.devices, this.#ram)
  }

  /** Set up the guest and the VMM's vIOMMU on the source. */
  static create(s: GuestSetup): GuestIommu {
    return new GuestIommu(s)
  }

  #alloc(): number {
    const off = this.#nextFree
    if (off + PAGE > this.#s.memoryBytes) throw new IommuError('ENOMEM', 'guest kernel pages')
    this.#nextFree += PAGE
    this.#ram.zeroPage(off)
    return off
  }

  /** Guest RAM offset of a guest-physical address (the inverse of `gpa`). */
  #offsetOfGpa(gpa: number): number {
    // DIMMs are laid out in order; find the one by probing its first page.
    const s = this.#s
    let lo = 0
    let hi = s.memoryBytes / PAGE - 1
    // gpa() is monotonic in the offset: binary search on pages.
    while (lo < hi) {
      const mid = Math.ceil((lo + hi) / 2)
      if (s.gpa(mid * PAGE) <= gpa) lo = mid
      else hi = mid - 1
    }
    const off = lo * PAGE + (gpa - s.gpa(lo * PAGE))
    if (gpa - s.gpa(lo * PAGE) >= PAGE) throw new IommuError('EFAULT', 'GPA outside guest RAM')
    return off
  }

  #ringIova(dev: number, slot: number): number {
    return GUEST_RING_IOVA + dev * 8 * GIB + slot * 4 * GIB
  }

  /** The linear window: guest RAM below the reserved pages, 1 GiB leaves where they fit. */
  #mapLinear(): void {
    const s = this.#s
    for (let off = 0; off < this.reservedOffset; ) {
      const g = s.gpa(off)
      const big =
        off % GIB === 0 &&
        g % GIB === 0 &&
        off + GIB <= this.reservedOffset &&
        s.gpa(off + GIB - PAGE) === g + GIB - PAGE
      const size = big ? GIB : 2 * MIB
      this.#pt.map(GUEST_LINEAR_IOVA + off, g, size, big ? 30 : 21)
      off += size
    }
  }

  /** SMMUv3: CD table (one CD) and a linear stream table, one vSTE per device. */
  #writeSmmuStructures(): number {
    const s = this.#s
    const cdTable = this.#alloc()
    const root = s.gpa(this.#pt.rootOff)
    const cd = makeS1Cd(
      { stallEnabled: false },
      {
        ttbr: BigInt(root),
        // 48-bit VA (T0SZ 16), 4 KiB granule, WBWA inner shareable, 48-bit IPA.
        tcr: { tsz: 16, tg: 0, irgn: 1, orgn: 1, sh: 3, ips: 5 },
        mair: 0xf404ff44n,
        hd: false,
      },
      GUEST_ASID,
    )
    for (let i = 0; i < 8; i++) this.#ram.write64(cdTable + 8 * i, cd[i] as bigint)
    const strtab = this.#alloc()
    for (const [i] of s.devices.entries()) {
      const ste = strtab + vsidOf(i) * 64
      this.#ram.write64(
        ste,
        Ste.Q0_V |
          fieldPrep(Ste.Q0_CFG, SteCfg.S1_TRANS) |
          (BigInt(s.gpa(cdTable)) & Ste.Q0_S1CTXPTR),
      )
      this.#ram.write64(
        ste + 8,
        fieldPrep(Ste.Q1_S1CIR, 1) | fieldPrep(Ste.Q1_S1COR, 1) | fieldPrep(Ste.Q1_S1CSH, 3),
      )
    }
    this.#structPages += 2
    return s.gpa(strtab)
  }

  /** VT-d: root table → context entries → PASID directory → PASID table (RID_PASID entry). */
  #writeVtdStructures(): number {
    const s = this.#s
    const rootTable = this.#alloc()
    const ctxTable = this.#alloc()
    const dir = this.#alloc()
    const pasidTable = this.#alloc()
    this.#structPages += 4
    // Root entry of bus 0: the lower context table (devfn 0..127), present.
    this.#ram.write64(rootTable, BigInt(s.gpa(ctxTable)) | 1n)
    for (const [i] of s.devices.entries()) {
      // Scalable-mode context entry: PASID directory of 2^7 entries (PDTS 0), RID_PASID 0.
      this.#ram.write64(ctxTable + devfnOf(i) * 32, BigInt(s.gpa(dir)) | 1n)
    }
    this.#ram.write64(dir, BigInt(s.gpa(pasidTable)) | 1n)
    // PASID 0: first-stage translation (PGTT 1) with the guest's DID, 4-level (FSPM 0).
    this.#ram.write64(pasidTable, Pe.P | (BigInt(Pgtt.FS) << Pe.PGTT_SHIFT))
    this.#ram.write64(pasidTable + 8, BigInt(GUEST_DID))
    this.#ram.write64(pasidTable + 16, BigInt(s.gpa(this.#pt.rootOff)) & Pe.FSPTPTR_MASK)
    return s.gpa(rootTable)
  }

  /**
   * The VMM's vIOMMU of one side: the guest's structures read from `ram` (source or
   * destination), one nested HWPT per device, attached. SMMUv3: vIOMMU, vDEVICEs, vEVENTQ.
   */
  #vmmSide(
    fd: Iommufd,
    buf: UserBuf,
    parent: number,
    devices: readonly { idev: IommufdDevice }[],
    ram: GuestRam,
  ): VmmSide {
    const s = this.#s
    const read = (gpa: number) => ram.read64(this.#offsetOfGpa(gpa))
    const nested: number[] = []
    if (s.model === 'smmuv3') {
      const dev0 = (devices[0] as { idev: IommufdDevice }).idev.id
      const v = {
        size: 40,
        flags: 0,
        type: IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
        dev_id: dev0,
        hwpt_id: parent,
        out_viommu_id: 0,
      }
      fd.ioctl(IOMMU_VIOMMU_ALLOC, v)
      const q = {
        size: 32,
        flags: 0,
        viommu_id: v.out_viommu_id,
        type: IOMMU_VEVENTQ_TYPE_ARM_SMMUV3,
        veventq_depth: 256,
        out_veventq_id: 0,
        out_veventq_fd: 0,
      }
      fd.ioctl(IOMMU_VEVENTQ_ALLOC, q)
      for (const [i, d] of devices.entries()) {
        fd.ioctl(IOMMU_VDEVICE_ALLOC, {
          size: 24,
          viommu_id: v.out_viommu_id,
          dev_id: d.idev.id,
          virt_id: BigInt(vsidOf(i)),
          out_vdevice_id: 0,
        })
        // The guest's CFGI_STE: the vSMMU reads the vSTE from the guest's stream table.
        const ste = this.#structGpa + vsidOf(i) * 64
        const bytes = le64(read(ste), read(ste + 8))
        const h = hwptAlloc(fd, d.idev.id, v.out_viommu_id, 0, {
          type: IOMMU_HWPT_DATA_ARM_SMMUV3,
          bytes,
          buf,
        })
        d.idev.replace(h)
        nested.push(h)
      }
      return { fd, buf, parent, viommu: v.out_viommu_id, veventqFd: q.out_veventq_fd, nested }
    }
    for (const [i, d] of devices.entries()) {
      // The virtual VT-d walks the guest's root/context/PASID tables for the device's RID.
      const ctxTable = Number(read(this.#structGpa) & ~0xfffn)
      const dir = Number(read(ctxTable + devfnOf(i) * 32) & ~0xfffn)
      const table = Number(read(dir) & ~0xfffn)
      const pe0 = read(table)
      if ((pe0 & Pe.P) === 0n || (pe0 & Pe.PGTT_MASK) >> Pe.PGTT_SHIFT !== BigInt(Pgtt.FS)) {
        throw new IommuError('EINVAL', 'guest PASID entry: not a present first-stage entry')
      }
      const pgtbl = read(table + 16) & Pe.FSPTPTR_MASK
      const data = new Uint8Array(24)
      const dv = new DataView(data.buffer)
      dv.setBigUint64(0, 0n, true)
      dv.setBigUint64(8, pgtbl, true)
      dv.setUint32(16, 48, true)
      const h = hwptAlloc(fd, d.idev.id, parent, 0, {
        type: IOMMU_HWPT_DATA_VTD_S1,
        bytes: data,
        buf,
      })
      d.idev.replace(h)
      nested.push(h)
    }
    return { fd, buf, parent, viommu: 0, veventqFd: -1, nested }
  }

  /** The IOVA device `dev` uses for guest RAM offset `offset`. */
  iova(dev: number, offset: number): number {
    const r = (this.#s.devices[dev] as GuestDevice).ring
    if (offset >= r.ringOffset && offset < r.ringOffset + r.ringBytes) {
      return this.#ringIova(dev, this.#slot[dev] as number) + (offset - r.ringOffset)
    }
    return GUEST_LINEAR_IOVA + offset
  }

  /** Every device writes its status record at the head of its ring (hot in the IOTLB). */
  deviceStatus(): void {
    for (const [i, d] of this.#s.devices.entries()) {
      if (d.ring.ringBytes === 0) continue
      const data = stampBytes(this.#status, STATUS_BYTES, ++this.#statusStamp, d.ring.ringOffset)
      d.dev.dma.write(this.#ringIova(i, this.#slot[i] as number), data)
    }
  }

  /**
   * The guest moves every ring to its other IOVA window: the device fetches the old ring's
   * head descriptor, the guest maps the new window, points the device at it, unmaps the
   * old one and invalidates (forwarded by the VMM unless it drops it). The device's
   * descriptor fetch still in flight to the old window then faults — or, when the
   * invalidation was dropped, goes through the stale IOTLB entry.
   */
  moveRings(): void {
    const s = this.#s
    for (const [i, d] of s.devices.entries()) {
      if (d.ring.ringBytes === 0) continue
      const old = this.#ringIova(i, this.#slot[i] as number)
      // The device fetches the old ring's head descriptor just before the guest switches it.
      d.dev.dma.readInto(old, this.#descriptor)
      const slot = 1 - (this.#slot[i] as number)
      this.#pt.map(this.#ringIova(i, slot), s.gpa(d.ring.ringOffset), d.ring.ringBytes, 12)
      this.#slot[i] = slot
      this.#pt.unmap(old, d.ring.ringBytes, 12)
      this.#invalidate(old, d.ring.ringBytes)
      this.#ringMoves++
      try {
        d.dev.dma.readInto(old, this.#descriptor)
      } catch (e) {
        if (!(e instanceof DmaFault)) throw e
        this.#faults++
      }
    }
    this.#collectFaults()
  }

  /** The guest's invalidation of `bytes` at `iova`, as the VMM forwards it. */
  #invalidate(iova: number, bytes: number): void {
    this.#invalidations++
    if (this.#s.dropInvalidations) return
    const src = this.#src
    if (this.#s.model === 'smmuv3') {
      // The guest's TLBI_NH_ASID (its VMID field is the guest's; the kernel writes the VMID).
      const cmd = cmdTlbi(Op.TLBI_NH_ASID, GUEST_ASID, 0)
      src.fd.ioctl(IOMMU_HWPT_INVALIDATE, {
        size: 32,
        hwpt_id: src.viommu,
        data_uptr: src.buf.put(le64(cmd[0], cmd[1])),
        data_type: IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3,
        entry_len: 16,
        entry_num: 1,
        __reserved: 0,
      })
      return
    }
    // The guest's PASID-based IOTLB invalidation of the range, to every nested HWPT.
    const e = new Uint8Array(24)
    const dv = new DataView(e.buffer)
    dv.setBigUint64(0, BigInt(iova), true)
    dv.setBigUint64(8, BigInt(bytes / PAGE), true)
    for (const h of src.nested) {
      src.fd.ioctl(IOMMU_HWPT_INVALIDATE, {
        size: 32,
        hwpt_id: h,
        data_uptr: src.buf.put(e),
        data_type: IOMMU_HWPT_INVALIDATE_DATA_VTD_S1,
        entry_len: 24,
        entry_num: 1,
        __reserved: 0,
      })
    }
  }

  /** Read the vEVENTQ (SMMUv3) or count the host driver's fault records (VT-d). */
  #collectFaults(): void {
    const s = this.#s
    if (s.model === 'intel') {
      this.#faultsReported = faultLogLength(s.devices) - this.#faultLog0
      return
    }
    const src = this.#src
    while (fdPoll(s.vmm, src.veventqFd) & POLLIN) {
      const n = fdRead(s.vmm, src.veventqFd, src.buf.va, PAGE)
      if (n <= 0) break
      this.#faultsReported += Math.floor(n / VEVENT_BYTES)
    }
  }

  /**
   * OR the guest CPU's dirty log into `bitmap` (bit per guest page) and clear the log when
   * `clear`.
   */
  harvestCpuDirty(bitmap: Uint8Array, clear: boolean): void {
    const log = this.#ram.cpuDirty
    for (let i = 0; i < log.length; i++) {
      const b = log[i] as number
      if (b !== 0) bitmap[i] = (bitmap[i] as number) | b
    }
    if (clear) log.fill(0)
  }

  /**
   * After stop-and-copy: the destination VMM rebuilds the vIOMMU from the migrated guest
   * (a new nest parent over destination RAM, vIOMMU, vDEVICEs, nested HWPTs from the guest's
   * structures as found in destination memory), and its devices write a probe to guest IOVA
   * pages; each must land in the guest page the guest mapped.
   */
  finish(d: DestinationSetup): ViommuReport {
    const s = this.#s
    this.#collectFaults()
    const fd = openIommufd(s.m, d.dest)
    const ioas = ioasAlloc(fd, !d.iopte4k)
    const devices = s.devices.map((g) => {
      const dev = s.m.addPciDevice({ name: `${g.dev.name}@dst`, pasidBits: 20 })
      const idev = fd.bindDevice(dev)
      idev.attach(ioas)
      return { dev, idev }
    })
    for (const dm of d.dimms) ioasMap(fd, ioas, d.destVa + dm.offset, dm.bytes, dm.iova)
    const buf = new UserBuf(d.dest)
    const parent = hwptAlloc(
      fd,
      (devices[0] as { idev: IommufdDevice }).idev.id,
      ioas,
      IOMMU_HWPT_ALLOC_NEST_PARENT,
    )
    const destRam = new GuestRam(d.dest, d.destVa, 0)
    this.#vmmSide(fd, buf, parent, devices, destRam)

    // Probe: every ring page, and the linear window with a stride (at most 16 Ki probes).
    let probes = 0
    let mismatches = 0
    const probe = new Uint8Array(16)
    const back = new Uint8Array(16)
    const check = (dev: PciDevice, iova: number, offset: number) => {
      stampBytes(this.#status, 16, 0x5eed_0000 + probes, offset)
      probe.set(this.#status.subarray(0, 16))
      probes++
      try {
        dev.dma.write(iova, probe)
      } catch (e) {
        if (!(e instanceof DmaFault)) throw e
        mismatches++
        return
      }
      d.dest.readInto(d.destVa + offset, back)
      if (back.some((b, k) => b !== probe[k])) mismatches++
    }
    for (const [i, g] of devices.entries()) {
      const ring = (s.devices[i] as GuestDevice).ring
      for (let off = 0; off < ring.ringBytes; off += PAGE) {
        check(g.dev, this.#ringIova(i, this.#slot[i] as number) + off, ring.ringOffset + off)
      }
      const pages = this.reservedOffset / PAGE
      const stride = Math.max(1, Math.ceil(pages / 16384))
      for (let p = 0; p < pages; p += stride) check(g.dev, GUEST_LINEAR_IOVA + p * PAGE, p * PAGE)
    }
    fd.close()
    const smmu = s.model === 'smmuv3'
    return {
      kind: smmu
        ? 'vSMMU: IOMMU_VIOMMU_TYPE_ARM_SMMUV3 on the nest parent, a vDEVICE per device (vSID), a vEVENTQ, a nested HWPT per vSTE'
        : 'VT-d: a nested HWPT (IOMMU_HWPT_DATA_VTD_S1) per device on the nest parent (7.2 VT-d has no vIOMMU object)',
      parentTracksDirty: this.parentTracksDirty,
      parentDirtyErrno: this.parentDirtyErrno,
      guestFormat: smmu
        ? 'ARM LPAE stage 1, 4 KiB granule; CD table; linear stream table'
        : 'x86-64 4-level first stage; root, context, PASID directory and PASID tables',
      guestTablePages: this.#pt.pages + this.#structPages,
      ringMoves: this.#ringMoves,
      guestInvalidations: this.#invalidations,
      invalidationsDropped: s.dropInvalidations,
      invalidationPath: smmu
        ? 'IOMMU_HWPT_INVALIDATE on the vIOMMU: raw TLBI_NH_ASID'
        : 'IOMMU_HWPT_INVALIDATE on the nested HWPTs: iommu_hwpt_vtd_s1_invalidate',
      faults: this.#faults,
      faultsReported: this.#faultsReported,
      faultPath: smmu
        ? 'the vEVENTQ (F_TRANSLATION records with the vSID)'
        : "the host's DMAR fault log (7.2 forwards no VT-d DMA fault to user space without IOPF)",
      destination: {
        rebuilt: smmu
          ? 'new nest parent, vIOMMU, vDEVICEs, nested HWPTs from the vSTEs in destination memory'
          : 'new nest parent, nested HWPTs from the guest PASID entries in destination memory',
        probes,
        mismatches,
      },
    }
  }
}

/** The guest's vSID of device `i`. */
function vsidOf(i: number): number {
  return 8 + i
}

/** The guest's devfn of device `i` (00:0{i+1}.0). */
function devfnOf(i: number): number {
  return (i + 1) << 3
}

function faultLogLength(devices: readonly GuestDevice[]): number {
  // Every device of the VM sits behind the one unit: its log counts once.
  const d = devices[0]
  return d === undefined ? 0 : intelFaultLog(d.dev).length
}

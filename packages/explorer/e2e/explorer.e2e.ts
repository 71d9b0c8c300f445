/**
 * The explorer in a real browser, against the model computed here in Node through the
 * same packages: build an AMD machine from the page, map, attach, DMA, and compare the
 * PTE and DTE the page decodes with what the model holds; reload the permalink from a
 * web server and from file://; run a short migration and check the verification line, the
 * rounds and the heatmap against the sim's own run of the same options. Screenshots at 1280×800 go to test-results/.
 */

import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { createMachine } from '@iommu/core'
import { AmdDomain, amd, amdUnitOf, DEFAULT_EFR, Dte, Mmio } from '@iommu/driver-amd'
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
import { migration } from '@iommu/sim/engine'
import type { BrowserContext, Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { hex, hex64 } from '../src/decode/bitfield.ts'
import { toHexU64 } from '../src/model/form.ts'
import { MigrationRun, migrateOptions, simIommu } from '../src/model/migration.ts'
import { decodePermalink, MigrationSpec } from '../src/model/scenario.ts'
import { smmuv3Vendor } from '../src/vendors/smmuv3.ts'
import { vendorOptions } from '../src/vendors/types.ts'
import { DIST_DIR, launch, RESULTS_DIR, serve } from './harness.ts'

const GUEST_MIB = 16
const IOVA = 0x1000_0000n
const DMA_IOVA = 0x1004_2000n

let server: Awaited<ReturnType<typeof serve>>
let browser: Awaited<ReturnType<typeof launch>>
let context: BrowserContext
const pageErrors: string[] = []

beforeAll(async () => {
  mkdirSync(RESULTS_DIR, { recursive: true })
  server = await serve(DIST_DIR)
  browser = await launch()
  context = browser.context
})

afterAll(async () => {
  await browser?.close()
  await server?.close()
})

async function open(url: string): Promise<Page> {
  const page = await context.newPage()
  page.on('pageerror', (e) => pageErrors.push(e.message))
  await page.goto(url)
  await page.waitForSelector('[data-testid=machine-summary]')
  return page
}

async function issue(page: Page, op: string, fields: Record<string, string | boolean> = {}) {
  const before = await page.locator('.log li').count()
  await page.selectOption('select[name=op]', op)
  for (const [k, v] of Object.entries(fields)) {
    const input = page.locator(`.command-panel [name=${k}]`)
    if (typeof v === 'boolean') await input.setChecked(v)
    else if ((await input.evaluate((e) => e.tagName)) === 'SELECT') await input.selectOption(v)
    else {
      await input.fill(v)
      // The call's form must hold exactly what was typed before it is issued.
      // (sizes are shown back in hex: '16k' becomes '0x4000').
      const got = await input.inputValue()
      if (got !== v && toHexU64(got) !== toHexU64(v)) {
        throw new Error(`field ${k}: typed '${v}', the form holds '${got}'`)
      }
    }
  }
  await page.click('button[name=issue]')
  await page.waitForFunction((n) => document.querySelectorAll('.log li').length > n, before)
  const last = page.locator('.log li').last()
  return { ok: (await last.getAttribute('class')) === 'ok', text: (await last.textContent()) ?? '' }
}

/** Field name → value cell text of the structure card in `scope`. */
async function fields(page: Page, scope: string): Promise<Record<string, string>> {
  return page.$$eval(`${scope} tr[data-field]`, (rows) =>
    Object.fromEntries(
      rows.map((r) => [
        r.getAttribute('data-field') as string,
        (r.querySelector('.fvalue')?.textContent ?? '').trim(),
      ]),
    ),
  )
}

/** The same machine and calls, done directly on the packages: the expected values. */
function model() {
  const m = createMachine({
    iommus: [{ driver: amd(), config: { efr: DEFAULT_EFR, detectStale: true } }],
  })
  const vmm = m.createProcess()
  const fd = openIommufd(m, vmm)
  const guest = vmm.mmap(GUEST_MIB * 1024 * 1024)
  const devs = ['nic0', 'nvme0'].map((name) => m.addPciDevice({ name }))
  const idevs = devs.map((d) => fd.bindDevice(d))
  const alloc = { size: 12, flags: 0, out_ioas_id: 0 }
  fd.ioctl(IOMMU_IOAS_ALLOC, alloc)
  fd.ioctl(IOMMU_OPTION, {
    size: 24,
    option_id: IOMMU_OPTION_HUGE_PAGES,
    op: IOMMU_OPTION_OP_SET,
    object_id: alloc.out_ioas_id,
    val64: 0n,
  })
  fd.ioctl(IOMMU_IOAS_MAP, {
    size: 40,
    flags: IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
    ioas_id: alloc.out_ioas_id,
    user_va: BigInt(guest),
    length: 0x20_0000n,
    iova: IOVA,
  })
  const hwpt = {
    size: 48,
    flags: IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
    dev_id: idevs[0]?.id ?? 0,
    pt_id: alloc.out_ioas_id,
    out_hwpt_id: 0,
  }
  fd.ioctl(IOMMU_HWPT_ALLOC, hwpt)
  idevs[0]?.attach(hwpt.out_hwpt_id)
  fd.ioctl(IOMMU_HWPT_SET_DIRTY_TRACKING, {
    size: 16,
    flags: IOMMU_HWPT_DIRTY_TRACKING_ENABLE,
    hwpt_id: hwpt.out_hwpt_id,
  })
  const dev = devs[0]
  if (dev === undefined) throw new Error('no device')
  dev.dma.write(DMA_IOVA, new Uint8Array(100))
  const domain = dev.group?.domain
  if (!(domain instanceof AmdDomain) || domain.pt === null) throw new Error('no AMD domain')
  const unit = amdUnitOf(dev)
  const base = Number(unit.readMmio(Mmio.DEV_TABLE) & 0x000f_ffff_ffff_f000n)
  const dte = [0, 1, 2, 3].map((i) => unit.memory.read64(base + dev.rid * Dte.SIZE + 8 * i))
  const pte = domain.pt.pgtableWalk(DMA_IOVA).at(-1)
  if (pte === undefined) throw new Error('no PTE')
  return { ids: { ioas: alloc.out_ioas_id, hwpt: hwpt.out_hwpt_id }, domain, dte, pte }
}

describe('explorer in Chromium', () => {
  const expected = model()
  let permalink = ''

  it('builds an AMD machine, maps, attaches, DMAs, and decodes the PTE and DTE as the model has them', async () => {
    const page = await open(server.url)
    // A fresh machine from the builder.
    await page.click('button[name=edit-machine]')
    await page.selectOption('select[name=vendor]', 'amd')
    await page.fill('input[name=guestMiB]', String(GUEST_MIB))
    await page.fill('input[name=seed]', '5')
    await page.click('button[name=build]')
    await expect
      .poll(() => page.textContent('[data-testid=machine-summary]'))
      .toContain(`AMD-Vi · ${GUEST_MIB} MiB guest · nic0, nvme0 · seed 5 · 0 commands`)

    const calls = [
      await issue(page, 'IOAS_ALLOC'),
      await issue(page, 'OPTION_HUGE_PAGES', { ioas: String(expected.ids.ioas), enable: false }),
      await issue(page, 'IOAS_MAP', {
        ioas: String(expected.ids.ioas),
        offset: '0x0',
        length: '2M',
        iova: hex(IOVA).replaceAll('_', ''),
      }),
      await issue(page, 'HWPT_ALLOC', {
        dev: '0',
        pt: String(expected.ids.ioas),
        dirtyTracking: true,
      }),
      await issue(page, 'ATTACH', { dev: '0', pt: String(expected.ids.hwpt) }),
      await issue(page, 'SET_DIRTY_TRACKING', { hwpt: String(expected.ids.hwpt), enable: true }),
      await issue(page, 'DMA_WRITE', {
        dev: '0',
        iova: `0x${DMA_IOVA.toString(16)}`,
        length: '100',
      }),
    ]
    expect(calls.filter((c) => !c.ok)).toEqual([])
    expect(calls[3]?.text).toContain(`hwpt_id ${expected.ids.hwpt}`)

    // A failing call shows the kernel's errno.
    const bad = await issue(page, 'ATTACH', { dev: '1', pt: '99' })
    expect(bad.ok).toBe(false)
    expect(bad.text).toContain('ENOENT (-2)')

    // The PTE: walk the DMA's IOVA and decode the leaf.
    await page.click('[data-tab=pagetable]')
    await page.fill('input[name=walk-iova]', `0x${DMA_IOVA.toString(16)}`)
    await page.click('.walk button[type=submit]')
    const leafRow = page.locator(`.pt-row.selected[data-iova="0x${DMA_IOVA.toString(16)}"]`)
    await expect.poll(() => leafRow.count()).toBe(1)
    expect(await leafRow.locator('.chip.d-on').count()).toBe(1)
    const card = '.pt-right .struct'
    expect((await page.textContent(`${card} .word-hex`))?.trim()).toBe(hex64(expected.pte.pte))
    expect((await page.textContent(`${card} .struct-ref`)) ?? '').toContain(
      `PA ${hex(expected.pte.pa)}`,
    )
    const pte = expected.pte.pte
    expect(await fields(page, card)).toMatchObject({
      PR: '1',
      A: String((pte >> 5n) & 1n),
      D: '1',
      NextLevel: '0x0',
      PageAddress: hex((pte >> 12n) & 0xff_ffff_ffffn),
      FC: '1',
      IR: '1',
      IW: '1',
    })
    await page.screenshot({ path: join(RESULTS_DIR, 'explorer-pagetable.png') })

    // The DTE.
    await page.click('[data-tab=device]')
    const words = await page.$$eval('.device-view .struct .word-hex', (e) =>
      e.map((x) => (x.textContent ?? '').trim()),
    )
    expect(words).toEqual(expected.dte.map(hex64))
    const root = expected.domain.pt?.root
    await page.click('.device-view .struct button.link')
    expect(await fields(page, '.device-view')).toMatchObject({
      V: '1',
      TV: '1',
      HAD: '0x3',
      Mode: hex((root?.level ?? 0) + 1),
      HostPageTableRootPtr: hex(root?.pfn ?? 0),
      IR: '1',
      IW: '1',
      DomainID: hex(expected.domain.id),
    })
    await page.screenshot({ path: join(RESULTS_DIR, 'explorer-dte.png') })

    permalink = page.url()
    const state = decodePermalink(new URL(permalink).hash)
    expect(state?.commands).toHaveLength(8)
    expect(state?.seed).toBe(5)
    await page.close()
  })

  it('replays the permalink to the same machine, from a web server and from file://', async () => {
    const hash = new URL(permalink).hash
    for (const base of [server.url, pathToFileURL(join(DIST_DIR, 'index.html')).href]) {
      const page = await open(`${base}${hash}`)
      await page.click('[data-tab=device]')
      const words = await page.$$eval('.device-view .struct .word-hex', (e) =>
        e.map((x) => (x.textContent ?? '').trim()),
      )
      expect(words, base).toEqual(expected.dte.map(hex64))
      expect(await page.locator('.log li.failed').count(), base).toBe(1)
      await page.close()
    }
  })

  it('runs a short migration: the verification line, the rounds and the heatmap match the sim', async () => {
    const spec = MigrationSpec.parse({ guestMiB: 64 })
    // The same run in Node, through the sim's own engine: the pages each round sent.
    const sent: number[][] = []
    const dirtyPages: number[] = []
    const run = migration(migrateOptions(spec, 'amd', 1))
    for (let r = run.next(); !r.done; r = run.next()) {
      sent.push(Array.from(r.value.sent))
      dirtyPages.push(r.value.report.dirtyPages)
    }
    expect(sent.length).toBeGreaterThan(2)

    const page = await open(server.url)
    await page.click('[data-tab=migration]')
    await page.fill('input[name=mig-guest]', '64')
    await page.press('input[name=mig-guest]', 'Enter')
    await page.click('button[name=mig-play]')
    const verdict = page.locator('[data-testid=verification]')
    await verdict.waitFor({ timeout: 120_000 })
    expect(await verdict.textContent()).toBe(
      'verification: OK — destination equals source, 16,384 pages compared',
    )
    expect(await verdict.getAttribute('class')).toBe('verify ok')
    const shown = await page.$$eval('.rounds-table tbody tr td:nth-child(2)', (c) =>
      c.map((x) => Number((x.textContent ?? '').replaceAll(',', ''))),
    )
    expect(shown).toEqual(dirtyPages)

    // Round 1 on the map, one page per cell: exactly the pages the sim sent are lit.
    await page.click('.rounds-table tbody tr:nth-child(2)')
    await page.selectOption('select[name=mig-ppc]', '1')
    const canvas = page.locator('[data-testid=heatmap]')
    await expect.poll(() => canvas.getAttribute('data-round')).toBe('1')
    const lit = await canvas.evaluate((c: HTMLCanvasElement) => {
      const ctx = c.getContext('2d') as CanvasRenderingContext2D
      const d = ctx.getImageData(0, 0, c.width, c.height).data
      const out: number[] = []
      for (let i = 0; i < c.width * c.height; i++) {
        // Grey (232, 235, 240) is "not sent".
        if (!(d[4 * i] === 232 && d[4 * i + 1] === 235 && d[4 * i + 2] === 240)) out.push(i)
      }
      return out
    })
    const round1 = [...(sent[1] ?? [])].sort((a, b) => a - b)
    expect(round1.length).toBeGreaterThan(0)
    expect(lit).toEqual(round1)
    await page.screenshot({ path: join(RESULTS_DIR, 'explorer-migration.png') })
    await page.close()
  })

  it('shows each vendor’s structures: VT-d context/PASID entries, SMMUv3 STE/CD, the mock’s IOPTEs', async () => {
    const cases = [
      {
        vendor: 'intel',
        cards: [
          'VT-d scalable-mode root entry',
          'VT-d scalable-mode context entry',
          'VT-d scalable-mode PASID directory entry',
          'VT-d scalable-mode PASID table entry',
        ],
        format: 'vtdss',
      },
      { vendor: 'smmuv3', cards: ['SMMUv3 STE', 'SMMUv3 CD'], format: 'arm-lpae' },
      { vendor: 'mock', cards: [], format: null },
    ]
    for (const c of cases) {
      const page = await open(server.url)
      await page.click('button[name=edit-machine]')
      await page.selectOption('select[name=vendor]', c.vendor)
      await page.click('button[name=build]')
      await page.click('button[name=demo]')
      await expect.poll(() => page.locator('.log li').count()).toBeGreaterThan(10)
      expect(await page.locator('.log li.failed').count(), c.vendor).toBe(0)
      if (c.format !== null) {
        expect(await page.textContent('[data-testid=pt-summary]'), c.vendor).toContain(c.format)
      } else {
        expect(
          await page.locator('.list[data-list^="Mock IOPTEs"] tbody tr').count(),
        ).toBeGreaterThan(0)
      }
      await page.click('[data-tab=device]')
      const layouts = await page.$$eval('.device-view .struct', (e) =>
        e.map((x) => x.getAttribute('data-layout')),
      )
      expect(layouts, c.vendor).toEqual(c.cards)
      await page.screenshot({ path: join(RESULTS_DIR, `explorer-${c.vendor}-device.png`) })
      await page.click('[data-tab=queues]')
      await page.screenshot({ path: join(RESULTS_DIR, `explorer-${c.vendor}-queues.png`) })
      await page.close()
    }
  })

  it('migrates over SMMUv3 through its own unit and shows 7.2’s lost dirty pages as the sim does', async () => {
    // The same run in Node: SMMUv3 as the machine builder makes it, the kernel's behaviour.
    const run = new MigrationRun(
      migrateOptions(
        MigrationSpec.parse({ guestMiB: 64 }),
        simIommu(smmuv3Vendor, vendorOptions(smmuv3Vendor, {})),
        1,
      ),
    )
    while (run.step()) {}
    const expected = run.verification()
    expect(expected?.ok).toBe(false)
    const page = await open(server.url)
    await page.click('button[name=edit-machine]')
    await page.selectOption('select[name=vendor]', 'smmuv3')
    await page.click('button[name=build]')
    await page.click('[data-tab=migration]')
    await page.fill('input[name=mig-guest]', '64')
    await page.press('input[name=mig-guest]', 'Enter')
    await page.click('button[name=mig-play]')
    const verdict = page.locator('[data-testid=verification]')
    await verdict.waitFor({ timeout: 120_000 })
    expect(await verdict.textContent()).toBe(expected?.line)
    expect(await verdict.getAttribute('class')).toBe('verify fail')
    await page.screenshot({ path: join(RESULTS_DIR, 'explorer-smmuv3-migration.png') })
    await page.close()
  })

  it('lists the dirty-tracking hazard of a 16 KiB contiguous AMD leaf in the Detectors tab', async () => {
    const page = await open(server.url)
    await page.click('button[name=edit-machine]')
    await page.selectOption('select[name=vendor]', 'amd')
    // Dirty tracking is the unit's on AMD (EFR.HDSup), not a device checkbox.
    expect(await page.locator('input[name=dev-0-dirty]').count()).toBe(0)
    await page.screenshot({ path: join(RESULTS_DIR, 'explorer-amd-builder.png') })
    await page.click('button[name=build]')
    const calls = [
      await issue(page, 'IOAS_ALLOC'),
      await issue(page, 'IOAS_MAP', {
        ioas: '3',
        offset: '0x0',
        length: '16k',
        iova: '0x10000000',
      }),
      await issue(page, 'HWPT_ALLOC', { dev: '0', pt: '3', dirtyTracking: true }),
      await issue(page, 'ATTACH', { dev: '0', pt: '4' }),
      await issue(page, 'SET_DIRTY_TRACKING', { hwpt: '4', enable: true }),
      await issue(page, 'DMA_WRITE', { dev: '0', iova: '0x10000000', length: '64' }),
      await issue(page, 'GET_DIRTY_BITMAP', { hwpt: '4', iova: '0x10000000', length: '16k' }),
    ]
    expect(calls.filter((c) => !c.ok)).toEqual([])
    // 7.2 records the 16 KiB leaf one item short.
    expect(calls.at(-1)?.text).toContain('3 dirty pages: 0x1000_0000..0x1000_2fff')
    expect((await page.textContent('[data-tab=detectors] .badge'))?.trim()).toBe('1')
    await page.click('[data-tab=detectors]')
    const section = page.locator('.detector[data-detector="Dirty-tracking hazard detector"]')
    expect(await section.locator('.chip.bad').textContent()).toBe('1 finding')
    const detail = await section
      .locator('.findings li .detail span')
      .evaluateAll((spans) =>
        Object.fromEntries(
          spans.map((s) => [
            s.querySelector('b')?.textContent ?? '',
            (s.textContent ?? '').replace(s.querySelector('b')?.textContent ?? '', '').trim(),
          ]),
        ),
      )
    expect(detail).toMatchObject({
      kind: 'record-short',
      HWPT: '4',
      query: '[0x1000_0000, +16 KiB), page_size 4 KiB',
      lost: '4 KiB: [0x1000_3000, +4 KiB)',
      IOPTE: '[0x1000_0000, +16 KiB)',
      recorded: '[0x1000_0000, +12 KiB)',
    })
    expect(await section.locator('.findings li.error').count()).toBe(1)
    await page.screenshot({ path: join(RESULTS_DIR, 'explorer-dirty-hazards.png') })
    // The selftest mock keeps its per-device flag (MOCK_FLAGS_DEVICE_NO_DIRTY).
    await page.click('button[name=edit-machine]')
    await page.selectOption('select[name=vendor]', 'mock')
    expect(await page.locator('input[name=dev-0-dirty]').count()).toBe(1)
    await page.screenshot({ path: join(RESULTS_DIR, 'explorer-mock-builder.png') })
    await page.close()
  })

  it('raised no page errors', () => {
    expect(pageErrors).toEqual([])
  })
})

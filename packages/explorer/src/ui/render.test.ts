/**
 * Components rendered to HTML in Node (no browser): the page with the demo machine, and a
 * decoded structure card.
 */

import { h } from 'preact'
import { renderToString } from 'preact-render-to-string'
import { describe, expect, it } from 'vitest'
import { decodeDte } from '../decode/amd.ts'
import { App } from './App.tsx'
import { StructCard } from './StructCard.tsx'

describe('components', () => {
  it('the page renders the demo machine, its call log and the page-table tree', () => {
    const html = renderToString(h(App, {}))
    expect(html).toContain('IOMMU explorer')
    expect(html).toContain('AMD-Vi · 64 MiB guest · nic0, nvme0 · seed 1 · 11 commands')
    expect(html).toContain('IOMMU_HWPT_GET_DIRTY_BITMAP')
    expect(html).toContain('3 dirty pages: 0x1000_1000, 0x1005_0000..0x1005_1fff')
    expect(html).toContain('root level 2')
    expect(html).toMatch(/data-iova="0x10003000"/)
  })

  it('a structure card shows each word, each field’s bits, value and kernel name', () => {
    const d = decodeDte('DTE of x', [0x6000_0000_0010_7783n, 4n, 0n, 0n], 0x20_2000)
    const html = renderToString(h(StructCard, { decoded: d }))
    expect(html).toContain('0x6000_0000_0010_7783')
    expect(html).toContain('0x0000_0000_0000_0004')
    expect(html).toContain('HostPageTableRootPtr')
    expect(html).toContain('[51:12]')
    expect(html).toContain('PA 0x10_7000')
    expect(html).toContain('DTE_HOST_TRP')
    expect(html).toContain('PA 0x20_2000')
    // 256 bits in the strip.
    expect(html.match(/class="bit[ "]/g)).toHaveLength(256)
  })
})

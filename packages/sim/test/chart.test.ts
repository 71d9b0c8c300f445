import { Resvg } from '@resvg/resvg-js'
import { describe, expect, it } from 'vitest'
import { type MigrationReport, type RoundReport, toSvg, wantsLogScale } from '../src/index.ts'

const GIB = 2 ** 30
const BANDWIDTH = 10e9 / 8

/** A report with the given pages per round (the last one is the stop-and-copy). */
function report(pages: readonly number[], o: Partial<MigrationReport> = {}): MigrationReport {
  const rounds: RoundReport[] = pages.map((p, i) => ({
    round: i,
    stopAndCopy: i === pages.length - 1,
    dirtyPages: p,
    bytesSent: p * 4096,
    simSeconds: (p * 4096) / BANDWIDTH,
    dmaWrites: 0,
    wallMs: 0,
    bitmapMs: 0,
  }))
  const sent = pages.reduce((a, b) => a + b, 0) * 4096
  return {
    config: {
      iommu: 'amd',
      memoryBytes: 4 * GIB,
      dimmBytes: GIB,
      iopte: '4k',
      seed: 1,
      bandwidth: BANDWIDTH,
      maxRounds: 30,
      maxDowntime: 0.1,
      workload: {},
      unplugRound: null,
      breakage: 'none',
      detector: true,
      dirtyRecords: 'kernel',
      devices: ['passthrough-nic'],
      ideal: false,
      viommu: false,
    },
    vendor: {
      name: 'AMD-Vi',
      dirtyPath: 'AMD v1 IOPTE D bit (bit 6), set by the IOMMU with DTE.HAD',
    },
    thresholdPages: Math.floor((BANDWIDTH * 0.1) / 4096),
    rounds,
    converged: true,
    downtimeSeconds: rounds.at(-1)?.simSeconds ?? 0,
    totalSimSeconds: sent / BANDWIDTH,
    totalBytesSent: sent,
    totalDmaWrites: 0,
    deviceWrites: [0],
    verifiedPages: 4 * 262_144,
    mismatchedPages: 0,
    firstMismatches: [],
    unplug: null,
    dirtyHazards: [],
    lostPages: 0,
    staleTranslations: [],
    hw: null,
    viommu: null,
    wallSeconds: 1,
    speedup: 1,
    peakRssBytes: 0,
    ...o,
  }
}

/** The texts of elements with `class`. */
function texts(svg: string, cls: string): string[] {
  const re = new RegExp(`<text [^>]*class="${cls}"[^>]*>([^<]*)</text>`, 'g')
  return [...svg.matchAll(re)].map((m) => (m[1] as string).replace(/&amp;/g, '&'))
}

interface Box {
  readonly s: string
  readonly x0: number
  readonly x1: number
  readonly y0: number
  readonly y1: number
}

/** Approximate boxes of the horizontal texts (DejaVu Sans advance ≈ 0.62 em). */
function textBoxes(svg: string): Box[] {
  const out: Box[] = []
  for (const m of svg.matchAll(/<text ([^>]*)>([^<]*)<\/text>/g)) {
    const attrs = m[1] as string
    if (attrs.includes('rotate(')) continue
    const num = (name: string) => Number((new RegExp(`${name}="([^"]+)"`).exec(attrs) ?? [])[1])
    const x = num('x')
    const y = num('y')
    const size = num('font-size')
    const s = (m[2] as string).replace(/&amp;/g, '&')
    const w = s.length * size * 0.62
    const anchor = /text-anchor="(\w+)"/.exec(attrs)?.[1] ?? 'start'
    const x0 = anchor === 'middle' ? x - w / 2 : anchor === 'end' ? x - w : x
    out.push({ s, x0, x1: x0 + w, y0: y - size * 0.8, y1: y + size * 0.2 })
  }
  return out
}

function overlaps(svg: string): string[] {
  const b = textBoxes(svg)
  const out: string[] = []
  for (let i = 0; i < b.length; i++) {
    for (let j = i + 1; j < b.length; j++) {
      const p = b[i] as Box
      const q = b[j] as Box
      if (p.x0 < q.x1 && q.x0 < p.x1 && p.y0 < q.y1 && q.y0 < p.y1) out.push(`${p.s} / ${q.s}`)
    }
  }
  return out
}

/** Render with resvg; the count of pixels of each colour asked for. */
function render(svg: string, colours: readonly string[]): { width: number; counts: number[] } {
  const img = new Resvg(svg).render()
  const px = img.pixels
  const want = colours.map((c) => [1, 3, 5].map((k) => Number.parseInt(c.slice(k, k + 2), 16)))
  const counts = colours.map(() => 0)
  for (let i = 0; i < px.length; i += 4) {
    want.forEach((w, k) => {
      if (px[i] === w[0] && px[i + 1] === w[1] && px[i + 2] === w[2])
        counts[k] = (counts[k] ?? 0) + 1
    })
  }
  return { width: img.width, counts }
}

describe('the --svg figure', () => {
  const spread = report([1_048_576, 61_000, 9_800, 2_100, 500])
  const svg = toSvg(spread)

  it('has a title with the run parameters, the outcome and a legend', () => {
    expect(texts(svg, 'title')).toEqual(['Pre-copy live migration'])
    expect(texts(svg, 'params')).toEqual([
      '4 GiB guest · amd IOMMU · 4k IOPTEs · 10 Gbit/s link · seed 1',
    ])
    expect(texts(svg, 'outcome')).toEqual([
      'converged after 4 pre-copy rounds · downtime 1.64 ms (budget 100 ms) · 4.28 GiB sent in 3.68 s · destination verified',
    ])
    expect(texts(svg, 'legend-entry')).toEqual([
      'round 0: all of guest memory',
      'pre-copy round: pages dirtied during the round before',
      'stop-and-copy: the rest, VM paused (downtime)',
      'downtime budget: what the link sends in 100 ms (30,517 pages)',
    ])
    expect(svg).not.toContain('S&amp;C')
  })

  it('uses log scales for 1,048,576 → 500 pages, with decade ticks and units', () => {
    expect(wantsLogScale(spread.rounds.map((x) => x.dirtyPages))).toBe(true)
    expect([...svg.matchAll(/data-scale="(\w+)"/g)].map((m) => m[1])).toEqual(['log', 'log'])
    expect(texts(svg, 'tick')).toEqual([
      '100',
      '1,000',
      '10,000',
      '100,000',
      '1,000,000',
      '1 MiB',
      '10 MiB',
      '100 MiB',
      '1 GiB',
      '10 GiB',
    ])
    expect(svg).toContain('>dirty pages (4 KiB)</text>')
    expect(svg).toContain('>bytes sent over the link</text>')
    expect(svg).toContain('>Dirty pages per round (log scale)</text>')
  })

  it('writes every value on its bar and names the stop-and-copy round', () => {
    expect(texts(svg, 'value')).toEqual([
      '1,048,576',
      '61,000',
      '9,800',
      '2,100',
      '500',
      '4 GiB',
      '238 MiB',
      '38.3 MiB',
      '8.2 MiB',
      '1.95 MiB',
    ])
    expect(texts(svg, 'round')).toEqual([
      ...['0', '1', '2', '3', 'stop-and-copy'],
      ...['0', '1', '2', '3', 'stop-and-copy'],
    ])
    expect(svg.match(/<rect class="bar"/g)).toHaveLength(10)
  })

  it('draws the downtime budget as a line at the pages that fit in the downtime', () => {
    const lines = [...svg.matchAll(/<line class="budget" [^>]*y1="([\d.]+)" [^>]*y2="([\d.]+)"/g)]
    expect(lines).toHaveLength(2)
    for (const l of lines) expect(l[1]).toBe(l[2])
    expect(texts(svg, 'budget-label')).toEqual([
      'downtime budget',
      '30,517 pages',
      'downtime budget',
      '119 MiB',
    ])
    // On the log axis, 30,517 sits between the 10,000 and 100,000 ticks at log10 spacing.
    const tickY = (label: string) =>
      Number(
        new RegExp(`<text x="[\\d.]+" y="([\\d.]+)"[^>]*class="tick">${label}</text>`).exec(
          svg,
        )?.[1],
      ) - 4
    const y10k = tickY('10,000')
    const y100k = tickY('100,000')
    const y = Number(lines[0]?.[1])
    expect((y10k - y) / (y10k - y100k)).toBeCloseTo(Math.log10(30_517 / 10_000), 2)
  })

  it('uses a linear scale when the rounds stay within an order of magnitude', () => {
    const flat = toSvg(report([131_072, 125_440, 122_368, 121_856], { converged: false }))
    expect([...flat.matchAll(/data-scale="(\w+)"/g)].map((m) => m[1])).toEqual(['linear', 'linear'])
    expect(texts(flat, 'tick').slice(0, 4)).toEqual(['0', '50,000', '100,000', '150,000'])
    expect(texts(flat, 'outcome')[0]).toMatch(/^did not converge in 3 pre-copy rounds/)
  })

  it('keeps its texts apart, with 5 rounds, 31 rounds and a zero-page round', () => {
    const many = Array.from({ length: 31 }, (_, i) => (i === 0 ? 131_072 : 120_000 + i * 97))
    for (const s of [svg, toSvg(report(many)), toSvg(report([32_768, 0]))]) {
      expect(textBoxes(s).length).toBeGreaterThan(20)
      expect(overlaps(s)).toEqual([])
    }
  })

  it('renders with resvg: the figure’s size, and pixels of every bar colour and the line', () => {
    const { width, counts } = render(svg, ['#8c8c8c', '#3474b4', '#c8372d', '#e08214'])
    expect(width).toBe(960)
    for (const c of counts) expect(c).toBeGreaterThan(100)
  })
})

/**
 * The `--svg` figure of a migration: a title with the run's parameters and outcome, a
 * legend, and two panels sharing the rounds — dirty pages per round and bytes sent per
 * round — with labelled axes, ticks with units, values on the bars, and the downtime budget
 * (what fits in the allowed downtime) as a line. A logarithmic y scale is chosen when the
 * bars span two orders of magnitude or more (round 0 copies all of memory, later rounds a
 * small part of it), so that the late rounds stay readable.
 *
 * Hand-written SVG 1.1, self-contained (no script, no external font or style), so that
 * browsers, editors and rasterizers such as resvg render it the same.
 *
 * @module
 */

import { type MigrationReport, type RoundReport, verified } from './report.ts'

const W = 960
const LEFT = 104
const RIGHT = 128
const PLOT_W = W - LEFT - RIGHT
const FONT = "DejaVu Sans, 'Liberation Sans', Arial, Helvetica, sans-serif"
/** Approximate advance of one character, as a fraction of the font size (DejaVu Sans). */
const CHAR_W = 0.62

const COLOUR = {
  full: '#8c8c8c',
  precopy: '#3474b4',
  stop: '#c8372d',
  budget: '#e08214',
  axis: '#333333',
  grid: '#e3e3e3',
  text: '#222222',
  muted: '#555555',
} as const

/** A y scale: value → pixel, and its ticks. */
interface Scale {
  readonly log: boolean
  /** The value at the bottom of the axis (a bar grows from here). */
  readonly base: number
  y(v: number): number
  readonly ticks: readonly { readonly v: number; readonly label: string }[]
  /** Unlabelled minor ticks (log scale: 2..9 of each decade). */
  readonly minor: readonly number[]
}

/** What one panel plots. */
interface Panel {
  readonly title: string
  readonly axis: string
  readonly top: number
  readonly height: number
  readonly values: readonly number[]
  /** The downtime budget in the panel's unit. */
  readonly budget: number
  /** Its label, two short lines right of the plot. */
  readonly budgetLabel: readonly [string, string]
  /** Tick label and bar value formats. */
  readonly tick: (v: number) => string
  readonly exact: (v: number) => string
  readonly compact: (v: number) => string
  /** Log ticks: the values of one "decade" step (pages: 10^k; bytes: 1, 10, 100 × 1024^u). */
  readonly logTicks: (lo: number, hi: number) => number[]
  /** The unit linear ticks step in (pages: 1; bytes: the largest binary unit under max). */
  readonly linearUnit: (max: number) => number
  /** The smallest top of the y axis (default 1: one page, one byte). */
  readonly floor?: number
}

function esc(s: string): string {
  return s
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
}

/** Estimated width of `s` at `size` px. */
function textWidth(s: string, size: number): number {
  return s.length * size * CHAR_W
}

function text(
  x: number,
  y: number,
  s: string,
  o: {
    size?: number
    anchor?: 'start' | 'middle' | 'end'
    weight?: 'bold'
    fill?: string
    rotate?: number
    halo?: boolean
    cls?: string
  } = {},
): string {
  const attrs = [
    `x="${x.toFixed(1)}"`,
    `y="${y.toFixed(1)}"`,
    `font-size="${o.size ?? 12}"`,
    `fill="${o.fill ?? COLOUR.text}"`,
  ]
  if (o.anchor && o.anchor !== 'start') attrs.push(`text-anchor="${o.anchor}"`)
  if (o.weight) attrs.push(`font-weight="${o.weight}"`)
  if (o.rotate) attrs.push(`transform="rotate(${o.rotate} ${x.toFixed(1)} ${y.toFixed(1)})"`)
  // A white outline under the glyphs keeps a label readable over lines and bars.
  if (o.halo) {
    attrs.push('stroke="#ffffff" stroke-width="3" stroke-linejoin="round" paint-order="stroke"')
  }
  if (o.cls) attrs.push(`class="${o.cls}"`)
  return `<text ${attrs.join(' ')}>${esc(s)}</text>`
}

const pagesExact = (v: number): string => Math.round(v).toLocaleString('en-US')

/** 3 significant digits with k / M. */
function pagesCompact(v: number): string {
  if (v < 10_000) return pagesExact(v)
  if (v < 1e6) return `${(v / 1e3).toPrecision(3)}k`
  return `${(v / 1e6).toPrecision(3)}M`
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'] as const

/** Binary size with up to 3 significant digits. */
function bytes(v: number): string {
  let u = 0
  let x = v
  while (x >= 1024 && u < UNITS.length - 1) {
    x /= 1024
    u++
  }
  const digits = x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2)
  return `${Number(digits)} ${UNITS[u]}`
}

/** The binary unit linear byte ticks step in. */
function byteUnit(max: number): number {
  return 1024 ** Math.max(0, Math.floor(Math.log2(Math.max(1, max)) / 10))
}

/** The tick and label formats of a panel in bytes. */
const BYTES_AXIS = {
  tick: (v: number) => bytes(v),
  exact: (v: number) => bytes(v),
  compact: (v: number) => bytes(v),
  logTicks: (lo: number, hi: number) => byteTicks(lo, hi),
  linearUnit: (max: number) => byteUnit(max),
} as const

/** Decade ticks 10^k covering [lo, hi]. */
function decades(lo: number, hi: number): number[] {
  const out: number[] = []
  for (let k = Math.floor(Math.log10(lo)); 10 ** k <= hi * 1.0001; k++) out.push(10 ** k)
  return out
}

/** Byte ticks 1, 10, 100 × 1024^u covering [lo, hi]. */
function byteTicks(lo: number, hi: number): number[] {
  const out: number[] = []
  for (let u = 0; u < UNITS.length; u++) {
    for (const m of [1, 10, 100]) {
      const v = m * 1024 ** u
      if (v >= lo / 1.0001 && v <= hi * 1.0001) out.push(v)
    }
  }
  return out
}

/** A 1-2-5 step giving about `n` ticks up to `max`. */
function niceStep(max: number, n: number): number {
  const raw = max / n
  const p = 10 ** Math.floor(Math.log10(raw))
  const f = raw / p
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p
}

/**
 * Use a log scale when the positive values span an order of magnitude or more: on a
 * linear scale the later rounds would be flat next to round 0.
 */
export function wantsLogScale(values: readonly number[]): boolean {
  const pos = values.filter((v) => v > 0)
  if (pos.length < 2) return false
  return Math.max(...pos) / Math.min(...pos) >= 10
}

/**
 * The y scale of a panel; `headroom` pixels stay free above the tallest bar for its value
 * label.
 */
function scaleFor(p: Panel, log: boolean, headroom: number): Scale {
  const bottom = p.top + p.height
  const pos = p.values.filter((v) => v > 0)
  const max = Math.max(p.floor ?? 1, ...p.values, p.budget)
  const room = p.height / Math.max(1, p.height - headroom)
  if (log) {
    // From the decade below the smallest bar (or the budget) to the tallest bar plus room.
    const lowest = Math.min(...pos, p.budget > 0 ? p.budget : Number.POSITIVE_INFINITY)
    const lo = 10 ** Math.floor(Math.log10(lowest))
    const hi = lo * (max / lo) ** room
    const span = Math.log10(hi) - Math.log10(lo)
    const y = (v: number) =>
      bottom - ((Math.log10(Math.max(v, lo)) - Math.log10(lo)) / span) * p.height
    const ticks = p.logTicks(lo, hi)
    // Minor ticks: 2..9 times each major tick, below the next one.
    const minor: number[] = []
    for (let i = 0; i < ticks.length; i++) {
      const t = ticks[i] as number
      const next = ticks[i + 1] ?? hi
      for (let m = 2; m <= 9 && m * t < next; m++) minor.push(m * t)
    }
    return { log: true, base: lo, y, ticks: ticks.map((v) => ({ v, label: p.tick(v) })), minor }
  }
  const unit = p.linearUnit(max)
  const step = niceStep((max * room) / unit, 5) * unit
  const hi = Math.ceil((max * room) / step) * step
  const ticks: { v: number; label: string }[] = []
  for (let v = 0; v <= hi * 1.0001; v += step) ticks.push({ v, label: p.tick(v) })
  return { log: false, base: 0, y: (v: number) => bottom - (v / hi) * p.height, ticks, minor: [] }
}

function roundLabel(x: RoundReport): string {
  return x.stopAndCopy ? 'stop-and-copy' : String(x.round)
}

function colourOf(x: RoundReport): string {
  return x.stopAndCopy ? COLOUR.stop : x.round === 0 ? COLOUR.full : COLOUR.precopy
}

/** One bar slot of a panel: its label under the axis and its colour. */
interface Bar {
  readonly label: string
  readonly colour: string
  /** Labelled even when labels are thinned out (the stop-and-copy round). */
  readonly always?: boolean
}

function roundBars(rounds: readonly RoundReport[]): Bar[] {
  return rounds.map((x) => ({ label: roundLabel(x), colour: colourOf(x), always: x.stopAndCopy }))
}

/** How a bar's value is written above it: exact, compact, or compact turned upright. */
function valueLabels(p: Panel, bw: number): { text: string; upright: boolean }[] {
  const fit = (t: string) => textWidth(t, 11) <= bw - 4
  const all = p.values.map((v) => ({ exact: p.exact(v), compact: p.compact(v) }))
  // One style for the whole panel, so that the labels read alike.
  if (all.every((l) => fit(l.exact))) return all.map((l) => ({ text: l.exact, upright: false }))
  if (all.every((l) => fit(l.compact))) {
    return all.map((l) => ({ text: l.compact, upright: false }))
  }
  return all.map((l) => ({ text: l.compact, upright: true }))
}

/** Width of a bar slot. */
function slotWidth(bars: readonly Bar[]): number {
  return PLOT_W / Math.max(1, bars.length)
}

/** Every `labelEvery`-th bar is labelled (and those marked `always`). */
function labelEvery(bars: readonly Bar[]): number {
  return Math.max(1, Math.ceil(24 / slotWidth(bars)))
}

/** Whether labels that do not fit their slot are slanted, and the room labels take. */
function labelRoom(bars: readonly Bar[]): { slanted: boolean; height: number } {
  const every = labelEvery(bars)
  const wide = bars
    .filter((b, i) => b.always || i % every === 0)
    .map((b) => textWidth(b.label, 11))
    .filter((w) => w > slotWidth(bars) - 2)
  // A label slanted by 35° reaches down sin(35°) of its length.
  return wide.length
    ? { slanted: true, height: 18 + Math.max(...wide) * 0.574 }
    : { slanted: false, height: 24 }
}

function drawPanel(p: Panel, bars: readonly Bar[], out: string[]): void {
  const bw = slotWidth(bars)
  const labels = valueLabels(p, bw)
  const upright = labels.some((l) => l.upright)
  const headroom = upright ? Math.max(...labels.map((l) => textWidth(l.text, 10))) + 12 : 20
  const s = scaleFor(p, wantsLogScale(p.values), headroom)
  const bottom = p.top + p.height
  const slanted = labelRoom(bars).slanted
  const barW = Math.min(bw * 0.7, 90)
  out.push(`<g class="panel" data-scale="${s.log ? 'log' : 'linear'}">`)
  out.push(
    text(LEFT, p.top - 12, `${p.title}${s.log ? ' (log scale)' : ''}`, {
      size: 14,
      weight: 'bold',
    }),
  )
  // Grid and y ticks.
  for (const v of s.minor) {
    const y = s.y(v)
    if (y < p.top - 0.5) continue
    out.push(
      `<line x1="${LEFT - 3}" y1="${y.toFixed(1)}" x2="${LEFT}" y2="${y.toFixed(1)}" stroke="${COLOUR.axis}"/>`,
    )
  }
  for (const t of s.ticks) {
    const y = s.y(t.v)
    out.push(
      `<line x1="${LEFT}" y1="${y.toFixed(1)}" x2="${LEFT + PLOT_W}" y2="${y.toFixed(1)}" stroke="${COLOUR.grid}"/>`,
      `<line x1="${LEFT - 6}" y1="${y.toFixed(1)}" x2="${LEFT}" y2="${y.toFixed(1)}" stroke="${COLOUR.axis}"/>`,
      text(LEFT - 9, y + 4, t.label, { size: 11, anchor: 'end', cls: 'tick' }),
    )
  }
  out.push(text(22, p.top + p.height / 2, p.axis, { size: 12, anchor: 'middle', rotate: -90 }))
  // Bars, their values, and the labels under them.
  const every = labelEvery(bars)
  bars.forEach((x, i) => {
    const v = p.values[i] as number
    const cx = LEFT + (i + 0.5) * bw
    const y = v > 0 ? s.y(v) : bottom
    const h = bottom - y
    out.push(
      `<rect class="bar" x="${(cx - barW / 2).toFixed(1)}" y="${y.toFixed(1)}" width="${barW.toFixed(1)}" height="${h.toFixed(1)}" fill="${x.colour}"><title>${esc(`${x.label}: ${p.exact(v)}`)}</title></rect>`,
    )
    const label = labels[i] as { text: string; upright: boolean }
    out.push(
      label.upright
        ? text(cx + 4, y - 5, label.text, { size: 10, rotate: -90, halo: true, cls: 'value' })
        : text(cx, y - 5, label.text, { size: 11, anchor: 'middle', halo: true, cls: 'value' }),
    )
    if (!x.always && i % every !== 0) return
    const fits = textWidth(x.label, 11) <= bw - 2
    out.push(
      !slanted || fits
        ? text(cx, bottom + 16, x.label, { size: 11, anchor: 'middle', cls: 'round' })
        : text(cx + 4, bottom + 12, x.label, {
            size: 11,
            anchor: 'end',
            rotate: -35,
            cls: 'round',
          }),
    )
  })
  // The downtime budget: the rest is sent during downtime once it is under this line.
  if (p.budget > 0 && (!s.log || p.budget >= s.base)) {
    const y = s.y(p.budget)
    out.push(
      `<line class="budget" x1="${LEFT}" y1="${y.toFixed(1)}" x2="${LEFT + PLOT_W + 6}" y2="${y.toFixed(1)}" stroke="${COLOUR.budget}" stroke-width="2" stroke-dasharray="7 4"/>`,
      // Right of the plot, where no bar or value label can be.
      text(LEFT + PLOT_W + 10, y - 2, p.budgetLabel[0], {
        size: 11,
        fill: COLOUR.budget,
        cls: 'budget-label',
      }),
      text(LEFT + PLOT_W + 10, y + 11, p.budgetLabel[1], {
        size: 11,
        fill: COLOUR.budget,
        cls: 'budget-label',
      }),
    )
  }
  // Axes last, over the bars.
  out.push(
    `<line x1="${LEFT}" y1="${p.top}" x2="${LEFT}" y2="${bottom}" stroke="${COLOUR.axis}"/>`,
    `<line x1="${LEFT}" y1="${bottom}" x2="${LEFT + PLOT_W}" y2="${bottom}" stroke="${COLOUR.axis}"/>`,
    '</g>',
  )
}

function seconds(s: number): string {
  if (s === 0) return '0'
  if (s < 1e-3) return `${(s * 1e6).toFixed(0)} µs`
  if (s < 1) return `${Number((s * 1e3).toPrecision(3))} ms`
  return `${s.toFixed(2)} s`
}

/** Legend entries laid out left to right, wrapping; returns the last row's baseline. */
function legend(top: number, budgetTime: string, budgetPages: string, out: string[]): number {
  const items: { label: string; swatch: string }[] = [
    { label: 'round 0: all of guest memory', swatch: COLOUR.full },
    { label: 'pre-copy round: pages dirtied during the round before', swatch: COLOUR.precopy },
    { label: 'stop-and-copy: the rest, VM paused (downtime)', swatch: COLOUR.stop },
    {
      label: `downtime budget: what the link sends in ${budgetTime} (${budgetPages} pages)`,
      swatch: 'line',
    },
  ]
  let x = LEFT
  let y = top
  out.push('<g class="legend">')
  for (const it of items) {
    const w = 22 + textWidth(it.label, 12) + 18
    if (x + w > W - RIGHT && x > LEFT) {
      x = LEFT
      y += 20
    }
    out.push(
      it.swatch === 'line'
        ? `<line x1="${x}" y1="${y - 4}" x2="${x + 16}" y2="${y - 4}" stroke="${COLOUR.budget}" stroke-width="2" stroke-dasharray="5 3"/>`
        : `<rect x="${x}" y="${y - 11}" width="16" height="12" fill="${it.swatch}"/>`,
      text(x + 22, y, it.label, { size: 12, cls: 'legend-entry' }),
    )
    x += w
  }
  out.push('</g>')
  return y
}

/** The hazards a run met, one short phrase each (empty when none). */
export function hazardPhrases(r: MigrationReport): string[] {
  const out = r.dirtyHazards.map(
    (h) => `${h.kind} ×${h.count}${h.lostPages ? ` (${pagesExact(h.lostPages)} pages lost)` : ''}`,
  )
  for (const t of r.staleTranslations) {
    out.push(`${pagesExact(t.uses)} stale ${t.cache} uses: missing ${t.missing}`)
  }
  return out
}

/** The vendor, its dirty path, and the hazards: the lines under a figure's title. */
function vendorLines(r: MigrationReport): { text: string; bad: boolean }[] {
  const hazards = hazardPhrases(r)
  const cause = r.staleTranslations.find((t) => t.cause !== null)?.cause
  const lines = [
    { text: `${r.vendor.name} · dirty tracking: ${r.vendor.dirtyPath}`, bad: false },
    {
      text: `hazards: ${hazards.length ? hazards.join('; ') : 'none'}`,
      bad: hazards.length > 0,
    },
  ]
  if (cause)
    lines.push({
      text: cause.replace(/^Linux 7.2: /, '7.2: ').split(', so ')[0] ?? cause,
      bad: true,
    })
  return lines
}

/**
 * The figure (`--svg`): dirty pages per round and bytes sent per round.
 *
 * @param title - the figure's title
 */
export function migrationChart(r: MigrationReport, title = 'Pre-copy live migration'): string {
  const c = r.config
  const rounds = r.rounds
  const pre = rounds.filter((x) => !x.stopAndCopy).length
  const gbit = Number(((c.bandwidth * 8) / 1e9).toPrecision(3))
  const params =
    `${bytes(c.memoryBytes)} guest · ${c.iommu} IOMMU · ${c.iopte} IOPTEs · ` +
    `${gbit} Gbit/s link · seed ${c.seed}`
  const ok = verified(r)
  const rounds1 = `${pre} pre-copy round${pre === 1 ? '' : 's'}`
  const outcome =
    `${r.converged ? `converged after ${rounds1}` : `did not converge in ${rounds1} (the limit)`}` +
    ` · downtime ${seconds(r.downtimeSeconds)} (budget ${seconds(c.maxDowntime)})` +
    ` · ${bytes(r.totalBytesSent)} sent in ${seconds(r.totalSimSeconds)}` +
    ` · ${ok ? 'destination verified' : `VERIFICATION FAILED: ${pagesExact(r.mismatchedPages)} pages differ`}`
  const head: string[] = [
    text(LEFT, 30, title, { size: 18, weight: 'bold', cls: 'title' }),
    text(LEFT, 52, params, { size: 13, cls: 'params' }),
    text(LEFT, 71, outcome, { size: 12, fill: ok ? COLOUR.muted : COLOUR.stop, cls: 'outcome' }),
  ]
  let y = 71
  for (const line of vendorLines(r)) {
    y += 17
    head.push(
      text(LEFT, y, line.text, {
        size: 12,
        fill: line.bad ? COLOUR.stop : COLOUR.muted,
        cls: 'vendor',
      }),
    )
  }
  const budgetTime = seconds(c.maxDowntime)
  const legendBottom = legend(y + 25, budgetTime, pagesExact(r.thresholdPages), head)
  return figure({
    title: `${title}: ${params}`,
    head,
    top: legendBottom,
    bars: roundBars(rounds),
    panels: [
      {
        title: 'Dirty pages per round',
        axis: 'dirty pages (4 KiB)',
        height: 300,
        values: rounds.map((x) => x.dirtyPages),
        budget: r.thresholdPages,
        budgetLabel: ['downtime budget', `${pagesExact(r.thresholdPages)} pages`],
        tick: pagesExact,
        exact: pagesExact,
        compact: pagesCompact,
        logTicks: decades,
        linearUnit: () => 1,
      },
      {
        title: 'Bytes sent per round',
        axis: 'bytes sent over the link',
        height: 200,
        values: rounds.map((x) => x.bytesSent),
        budget: r.thresholdPages * 4096,
        budgetLabel: ['downtime budget', bytes(r.thresholdPages * 4096)],
        ...BYTES_AXIS,
      },
    ],
    xTitle: 'pre-copy round (the last bar: stop-and-copy)',
  })
}

/**
 * A whole figure: the head (title, lines, legend, ending at `top`), the panels stacked below
 * it over the same bars, the x-axis title, and the SVG around them.
 */
function figure(f: {
  readonly title: string
  readonly head: readonly string[]
  readonly top: number
  readonly bars: readonly Bar[]
  readonly panels: readonly Omit<Panel, 'top'>[]
  readonly xTitle: string
}): string {
  const below = labelRoom(f.bars).height
  const body: string[] = []
  let top = f.top + 44
  for (const p of f.panels) {
    drawPanel({ ...p, top }, f.bars, body)
    top += p.height + below + 44
  }
  const xTitle = top - 44 + 18
  const H = xTitle + 16
  body.push(text(LEFT + PLOT_W / 2, xTitle, f.xTitle, { size: 12, anchor: 'middle' }))
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="${FONT}">`,
    `<title>${esc(f.title)}</title>`,
    `<rect width="${W}" height="${H}" fill="#ffffff"/>`,
    ...f.head,
    ...body,
    '</svg>',
    '',
  ].join('\n')
}

/** A figure comparing runs side by side (`compare`, `sweep`). */
export interface ComparisonFigure {
  readonly title: string
  /** Lines under the title (parameters, vendors' dirty paths, hazards). */
  readonly lines: readonly { readonly text: string; readonly bad?: boolean }[]
  /** One bar per run, labelled; `failed` when its verification failed. */
  readonly runs: readonly { readonly label: string; readonly failed: boolean }[]
  /** Per run: downtime in seconds and bytes sent in total. */
  readonly downtime: readonly number[]
  readonly sent: readonly number[]
  /** The allowed downtime in seconds (a line on the downtime panel), or 0. */
  readonly budgetSeconds: number
  /** What the runs differ in, under the x axis. */
  readonly xTitle: string
}

/**
 * Downtime and total bytes sent of several runs, one bar each (red for a run whose
 * verification failed), with the downtime budget: the figure of `compare` and `sweep`.
 * Same style, scales and rules as {@link migrationChart}.
 */
export function comparisonChart(f: ComparisonFigure): string {
  const head: string[] = [text(LEFT, 30, f.title, { size: 18, weight: 'bold', cls: 'title' })]
  let y = 32
  for (const line of f.lines) {
    y += 19
    head.push(
      text(LEFT, y, line.text, {
        size: 12,
        fill: line.bad ? COLOUR.stop : COLOUR.muted,
        cls: 'params',
      }),
    )
  }
  // Legend.
  const ly = y + 28
  let x = LEFT
  head.push('<g class="legend">')
  for (const [label, colour] of [
    ['destination verified', COLOUR.precopy],
    ['verification failed', COLOUR.stop],
  ] as const) {
    head.push(
      `<rect x="${x}" y="${ly - 11}" width="16" height="12" fill="${colour}"/>`,
      text(x + 22, ly, label, { size: 12, cls: 'legend-entry' }),
    )
    x += 22 + textWidth(label, 12) + 18
  }
  if (f.budgetSeconds > 0) {
    const label = `downtime budget (${seconds(f.budgetSeconds)})`
    head.push(
      `<line x1="${x}" y1="${ly - 4}" x2="${x + 16}" y2="${ly - 4}" stroke="${COLOUR.budget}" stroke-width="2" stroke-dasharray="5 3"/>`,
      text(x + 22, ly, label, { size: 12, cls: 'legend-entry' }),
    )
  }
  head.push('</g>')
  return figure({
    title: f.title,
    head,
    top: ly,
    bars: f.runs.map((r) => ({ label: r.label, colour: r.failed ? COLOUR.stop : COLOUR.precopy })),
    panels: [
      {
        title: 'Downtime (stop-and-copy)',
        axis: 'simulated seconds',
        height: 240,
        values: f.downtime,
        budget: f.budgetSeconds,
        budgetLabel: ['downtime budget', seconds(f.budgetSeconds)],
        tick: seconds,
        exact: seconds,
        compact: seconds,
        logTicks: decades,
        linearUnit: () => 1e-6,
        floor: 1e-6,
      },
      {
        title: 'Data sent in total',
        axis: 'bytes sent over the link',
        height: 240,
        values: f.sent,
        budget: 0,
        budgetLabel: ['', ''],
        ...BYTES_AXIS,
      },
    ],
    xTitle: f.xTitle,
  })
}

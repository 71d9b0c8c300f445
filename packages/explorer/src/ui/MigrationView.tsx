/**
 * The migration view: the sim's pre-copy migration run a round at a time (play, pause,
 * step), a heatmap of guest memory coloured by what each round sent, a per-round chart of
 * dirty pages and bytes sent (uPlot), the rounds table and the final verification line.
 *
 * @module
 */

import { useEffect, useRef, useState } from 'preact/hooks'
import uPlot from 'uplot'
import 'uplot/dist/uPlot.min.css'
import { hex } from '../decode/bitfield.ts'
import {
  autoPagesPerCell,
  cellColour,
  cellValues,
  type HeatMode,
  heatGeometry,
  MigrationRun,
  migrateOptions,
  simIommu,
} from '../model/migration.ts'
import { MigrationSpec } from '../model/scenario.ts'
import type { VendorDescriptor, VendorOptions } from '../vendors/types.ts'

interface Props {
  readonly vendor: VendorDescriptor
  /** The machine's vendor options: the migration's unit is built with them. */
  readonly options: VendorOptions
  readonly seed: number
  readonly spec: MigrationSpec
  readonly onSpec: (m: MigrationSpec) => void
}

/** Pause between rounds while playing, so that each round is seen. */
const PLAY_DELAY_MS = 350
const GUEST_IOVA = 0x1_0000_0000

function fmtBytes(n: number): string {
  if (n >= 2 ** 30) return `${(n / 2 ** 30).toFixed(2)} GiB`
  if (n >= 2 ** 20) return `${(n / 2 ** 20).toFixed(1)} MiB`
  return `${(n / 1024).toFixed(0)} KiB`
}

function Heatmap({
  run,
  round,
  mode,
  ppc,
}: {
  run: MigrationRun
  round: number
  mode: HeatMode
  ppc: number
}) {
  const canvas = useRef<HTMLCanvasElement>(null)
  const [hover, setHover] = useState<string>('')
  const g = heatGeometry(run.pages, ppc)
  const r = run.rounds[round]
  useEffect(() => {
    const c = canvas.current
    const ctx = c?.getContext('2d')
    if (!c || !ctx) return
    const values = cellValues(run, g, mode, round)
    const img = ctx.createImageData(g.cols, g.rows)
    const kind =
      mode === 'heat'
        ? 'heat'
        : r?.report.stopAndCopy
          ? 'final'
          : r?.report.round === 0
            ? 'initial'
            : 'round'
    for (let i = 0; i < g.cols * g.rows; i++) {
      const [cr, cg, cb] = i < g.cells ? cellColour(values[i] as number, kind) : [255, 255, 255]
      img.data[4 * i] = cr
      img.data[4 * i + 1] = cg
      img.data[4 * i + 2] = cb
      img.data[4 * i + 3] = 255
    }
    // Pages the verification found different (the report keeps the first 16): black.
    for (const off of run.report?.firstMismatches ?? []) {
      const c = Math.floor(off / 4096 / ppc)
      if (c < g.cells) img.data.set([0, 0, 0, 255], 4 * c)
    }
    ctx.putImageData(img, 0, 0)
  })
  const scale = Math.max(1, Math.min(4, Math.floor(560 / g.cols)))
  return (
    <div class="heatmap-box">
      <div class="sub">
        Guest memory: {run.pages.toLocaleString('en-US')} pages, {ppc} page{ppc === 1 ? '' : 's'}{' '}
        per cell, {g.cols} cells per row (IOVA {hex(GUEST_IOVA)} + …)
      </div>
      <canvas
        ref={canvas}
        width={g.cols}
        height={g.rows}
        data-testid="heatmap"
        data-cols={g.cols}
        data-pages-per-cell={ppc}
        data-round={round}
        data-mode={mode}
        style={{ width: `${g.cols * scale}px`, height: `${g.rows * scale}px` }}
        onPointerMove={(e) => {
          const rect = (e.target as HTMLCanvasElement).getBoundingClientRect()
          const x = Math.floor(((e.clientX - rect.left) / rect.width) * g.cols)
          const y = Math.floor(((e.clientY - rect.top) / rect.height) * g.rows)
          const first = (y * g.cols + x) * ppc
          if (first >= run.pages) return setHover('')
          const dirty = run.dirtyRounds[first] ?? 0
          setHover(
            `page ${first}${ppc > 1 ? `..${first + ppc - 1}` : ''} · IOVA ${hex(GUEST_IOVA + first * 4096)} · dirty in ${dirty} later round${dirty === 1 ? '' : 's'}`,
          )
        }}
        onPointerLeave={() => setHover('')}
      />
      <div class="legend">
        {mode === 'round' ? (
          <>
            <span>
              <i style={{ background: 'rgb(60,110,200)' }} />
              round 0 (everything)
            </span>
            <span>
              <i style={{ background: 'rgb(230,110,20)' }} />
              sent this round (dirty in the bitmap)
            </span>
            <span>
              <i style={{ background: 'rgb(200,40,40)' }} />
              stop-and-copy
            </span>
            <span>
              <i style={{ background: 'rgb(232,235,240)' }} />
              not sent
            </span>
            {run.report?.firstMismatches.length ? (
              <span>
                <i style={{ background: '#000' }} />
                differs at the end (first {run.report.firstMismatches.length})
              </span>
            ) : null}
          </>
        ) : (
          <span>
            <i style={{ background: 'rgb(150,30,120)' }} />
            darker: dirty in more rounds after round 0
          </span>
        )}
        <span class="hover">{hover}</span>
      </div>
    </div>
  )
}

function Chart({
  run,
  round,
  onRound,
}: {
  run: MigrationRun
  round: number
  onRound: (i: number) => void
}) {
  const box = useRef<HTMLDivElement>(null)
  const plot = useRef<uPlot | null>(null)
  const n = run.rounds.length
  useEffect(() => {
    const el = box.current
    if (!el) return
    const xs = run.rounds.map((_, i) => i)
    const data: uPlot.AlignedData = [
      xs,
      run.rounds.map((r) => r.report.dirtyPages),
      run.rounds.map((r) => r.report.bytesSent / 2 ** 20),
    ]
    plot.current?.destroy()
    plot.current = new uPlot(
      {
        width: 360,
        height: 200,
        legend: { show: false },
        cursor: { drag: { x: false, y: false } },
        scales: { x: { time: false }, pages: { auto: true }, mib: { auto: true } },
        axes: [
          {
            label: 'round',
            space: 18,
            incrs: [1, 2, 5, 10],
            values: (_u, ticks) =>
              ticks.map((t) =>
                Number.isInteger(t) ? (run.rounds[t]?.report.stopAndCopy ? 'S&C' : String(t)) : '',
              ),
          },
          { scale: 'pages', label: 'dirty pages', size: 66 },
          { scale: 'mib', label: 'MiB sent', side: 1, size: 48, grid: { show: false } },
        ],
        series: [
          { label: 'round' },
          {
            label: 'dirty pages',
            scale: 'pages',
            stroke: '#e0701a',
            width: 2,
            points: { show: true, size: 6 },
          },
          {
            label: 'MiB sent',
            scale: 'mib',
            stroke: '#3c6ec8',
            width: 1.5,
            dash: [4, 3],
            points: { show: true, size: 4 },
          },
        ],
        hooks: {
          setCursor: [
            (u) => {
              const i = u.cursor.idx
              if (
                i !== null &&
                i !== undefined &&
                u.cursor.left !== undefined &&
                u.cursor.left >= 0
              ) {
                el.dataset.cursor = String(i)
              }
            },
          ],
        },
      },
      data,
      el,
    )
    const onClick = () => {
      const i = Number(el.dataset.cursor)
      if (Number.isInteger(i)) onRound(i)
    }
    el.addEventListener('click', onClick)
    return () => el.removeEventListener('click', onClick)
  }, [run, n])
  useEffect(() => () => plot.current?.destroy(), [])
  return (
    <div class="chart-box">
      <div class="sub">
        Per round: <span class="swatch-line" style={{ background: '#e0701a' }} /> dirty pages ·{' '}
        <span class="swatch-line dashed" /> MiB sent. Click a round to map it (round {round} shown).
      </div>
      <div ref={box} data-testid="migration-chart" />
    </div>
  )
}

export function MigrationView({ vendor, options, seed, spec, onSpec }: Props) {
  const [run, setRun] = useState<MigrationRun | null>(null)
  const [round, setRound] = useState(0)
  const [playing, setPlaying] = useState(false)
  const [busy, setBusy] = useState(false)
  const [mode, setMode] = useState<HeatMode>('round')
  const [ppcChoice, setPpcChoice] = useState(0)
  const [, redraw] = useState(0)
  const timer = useRef<ReturnType<typeof setTimeout> | null>(null)

  const model = vendor.simModel ?? vendor.id

  const start = (): MigrationRun => {
    const r = new MigrationRun(migrateOptions(spec, simIommu(vendor, options), seed))
    setRun(r)
    setRound(0)
    return r
  }

  /** Run one round, after letting the page paint "running". */
  const stepOnce = (r: MigrationRun, then?: (more: boolean) => void) => {
    setBusy(true)
    setTimeout(() => {
      const more = r.step()
      setBusy(false)
      setRound(Math.max(0, r.rounds.length - 1))
      redraw((x) => x + 1)
      then?.(more && !r.done)
    }, 0)
  }

  useEffect(() => {
    if (!playing || run === null) return
    let live = true
    const tick = () => {
      stepOnce(run, (more) => {
        if (!live) return
        if (more) timer.current = setTimeout(tick, PLAY_DELAY_MS)
        else setPlaying(false)
      })
    }
    tick()
    return () => {
      live = false
      if (timer.current) clearTimeout(timer.current)
    }
  }, [playing, run])

  // A new machine or new settings abandon the run.
  useEffect(() => {
    setPlaying(false)
    setRun(null)
  }, [model, seed, JSON.stringify(spec), JSON.stringify(options)])

  const set = (patch: Partial<MigrationSpec>) => {
    const r = MigrationSpec.safeParse({ ...spec, ...patch })
    if (r.success) onSpec(r.data)
  }

  const ppc = ppcChoice || (run ? autoPagesPerCell(run.pages) : 1)
  const verdict = run?.verification()
  const cur = run?.rounds[round]
  return (
    <div class="mig" data-testid="migration">
      <div class="mig-controls">
        <label>
          guest MiB
          <input
            type="number"
            name="mig-guest"
            min={2}
            max={2048}
            step={2}
            value={spec.guestMiB}
            onChange={(e) => set({ guestMiB: Number((e.target as HTMLInputElement).value) })}
          />
        </label>
        <label>
          IOPTE
          <select
            name="mig-iopte"
            value={spec.iopte}
            onChange={(e) =>
              set({ iopte: (e.target as HTMLSelectElement).value as MigrationSpec['iopte'] })
            }
          >
            <option value="4k">4k</option>
            <option value="2m">2m</option>
            <option value="split">split</option>
          </select>
        </label>
        <label>
          link Mbit/s
          <input
            type="number"
            name="mig-link"
            min={10}
            value={spec.linkMbps}
            onChange={(e) => set({ linkMbps: Number((e.target as HTMLInputElement).value) })}
          />
        </label>
        <label>
          max rounds
          <input
            type="number"
            name="mig-rounds"
            min={1}
            max={100}
            value={spec.maxRounds}
            onChange={(e) => set({ maxRounds: Number((e.target as HTMLInputElement).value) })}
          />
        </label>
        <label>
          downtime ms
          <input
            type="number"
            name="mig-downtime"
            min={1}
            value={spec.downtimeMs}
            onChange={(e) => set({ downtimeMs: Number((e.target as HTMLInputElement).value) })}
          />
        </label>
        <label title="Never enable dirty tracking: the verification must catch it">
          <input
            type="checkbox"
            name="mig-break"
            checked={spec.breakTracker}
            onChange={(e) => set({ breakTracker: (e.target as HTMLInputElement).checked })}
          />
          break tracker
        </label>
        <span class="spacer" />
        <button
          type="button"
          class="primary"
          name="mig-play"
          disabled={playing || busy || run?.done === true}
          onClick={() => {
            if (run === null) start()
            setPlaying(true)
          }}
        >
          {run === null ? 'Run' : 'Play'}
        </button>
        <button
          type="button"
          name="mig-pause"
          disabled={!playing}
          onClick={() => setPlaying(false)}
        >
          Pause
        </button>
        <button
          type="button"
          name="mig-step"
          disabled={playing || busy || run?.done === true}
          onClick={() => {
            const r = run ?? start()
            if (r) stepOnce(r)
          }}
        >
          Step
        </button>
        <button
          type="button"
          name="mig-reset"
          disabled={run === null || busy}
          onClick={() => {
            setPlaying(false)
            setRun(null)
          }}
        >
          Reset
        </button>
      </div>
      {run === null ? (
        <div class="empty">
          Pre-copy live migration of a {spec.guestMiB} MiB guest on {vendor.label} with a
          passthrough NIC writing from seed {seed}: the sim’s own engine (
          <code>iommu-sim migrate</code>), run here a round at a time. Press Run or Step.
        </div>
      ) : (
        <>
          <div class="mig-status" data-testid="migration-status">
            {run.error
              ? `error: ${run.error}`
              : busy
                ? `running round ${run.rounds.length}…`
                : run.done
                  ? `done: ${run.rounds.length - 1} pre-copy rounds + stop-and-copy`
                  : `${run.rounds.length} round${run.rounds.length === 1 ? '' : 's'} done`}
            {cur ? (
              <>
                {' '}
                · showing {cur.report.stopAndCopy ? 'stop-and-copy' : `round ${cur.report.round}`}:{' '}
                {cur.report.dirtyPages.toLocaleString('en-US')} pages,{' '}
                {fmtBytes(cur.report.bytesSent)}, {cur.report.dmaWrites.toLocaleString('en-US')} DMA
                writes during the round
              </>
            ) : null}
          </div>
          {verdict ? (
            <div class={`verify ${verdict.ok ? 'ok' : 'fail'}`} data-testid="verification">
              {verdict.line}
            </div>
          ) : null}
          <div class="mig-main">
            <div>
              <div class="mig-view-controls">
                <label>
                  round{' '}
                  <input
                    type="range"
                    name="mig-round"
                    min={0}
                    max={Math.max(0, run.rounds.length - 1)}
                    value={round}
                    onInput={(e) => setRound(Number((e.target as HTMLInputElement).value))}
                  />
                </label>
                <label>
                  colour{' '}
                  <select
                    name="mig-mode"
                    value={mode}
                    onChange={(e) => setMode((e.target as HTMLSelectElement).value as HeatMode)}
                  >
                    <option value="round">pages sent in the round</option>
                    <option value="heat">rounds each page was dirty</option>
                  </select>
                </label>
                <label>
                  zoom{' '}
                  <select
                    name="mig-ppc"
                    value={String(ppc)}
                    onChange={(e) => setPpcChoice(Number((e.target as HTMLSelectElement).value))}
                  >
                    {[1, 2, 4, 8, 16, 64, 512].map((p) => (
                      <option key={p} value={String(p)}>
                        {p === 1 ? '1 page' : p === 512 ? '512 pages (2 MiB)' : `${p} pages`} per
                        cell
                      </option>
                    ))}
                  </select>
                </label>
              </div>
              <Heatmap run={run} round={round} mode={mode} ppc={ppc} />
            </div>
            <div>
              <Chart run={run} round={round} onRound={setRound} />
              <div class="table-wrap">
                <table class="grid rounds-table">
                  <thead>
                    <tr>
                      <th>round</th>
                      <th>dirty pages</th>
                      <th>sent</th>
                      <th>sim time</th>
                      <th>DMA writes</th>
                    </tr>
                  </thead>
                  <tbody>
                    {run.rounds.map((r, i) => (
                      <tr
                        key={i}
                        class={`clickable${i === round ? ' selected' : ''}`}
                        onClick={() => setRound(i)}
                      >
                        <td class="mono">{r.report.stopAndCopy ? 'stop&copy' : r.report.round}</td>
                        <td class="mono">{r.report.dirtyPages.toLocaleString('en-US')}</td>
                        <td class="mono">{fmtBytes(r.report.bytesSent)}</td>
                        <td class="mono">{(r.report.simSeconds * 1000).toFixed(1)} ms</td>
                        <td class="mono">{r.report.dmaWrites.toLocaleString('en-US')}</td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              </div>
              {run.report ? (
                <pre class="totals" data-testid="totals">
                  {run.totals().join('\n')}
                </pre>
              ) : null}
            </div>
          </div>
        </>
      )}
    </div>
  )
}

/**
 * The explorer page: machine builder, command panel and call log on the left; the
 * structure views and the migration on the right. The whole state is the scenario
 * document, mirrored into the URL fragment so the address bar is always a permalink.
 *
 * @module
 */

import { useEffect, useMemo, useReducer, useRef, useState } from 'preact/hooks'
import { demoCommands, initialState, reducer, SessionCache } from '../model/reducer.ts'
import {
  decodePermalink,
  type ExplorerState,
  encodePermalink,
  ScenarioError,
  stateToJson,
} from '../model/scenario.ts'
import { CallLog } from './CallLog.tsx'
import { CommandPanel } from './CommandPanel.tsx'
import { MachinePanel } from './MachinePanel.tsx'
import { MigrationView } from './MigrationView.tsx'
import { PageTableView } from './PageTableView.tsx'
import { DetectorsView, DeviceView, ListsView, RegistersView } from './Views.tsx'

const TABS = [
  ['pagetable', 'IO page table'],
  ['device', 'Device entry'],
  ['caches', 'Caches'],
  ['queues', 'Queues'],
  ['registers', 'Registers'],
  ['detectors', 'Detectors'],
  ['migration', 'Migration'],
] as const
type Tab = (typeof TABS)[number][0]

function loadInitial(): { state: ExplorerState; error: string | null } {
  try {
    const s = decodePermalink(globalThis.location?.hash ?? '')
    if (s !== null) return { state: s, error: null }
  } catch (e) {
    if (e instanceof ScenarioError) return { state: initialState(), error: e.message }
    throw e
  }
  return { state: initialState(), error: null }
}

export function App() {
  const boot = useMemo(loadInitial, [])
  const [state, dispatch] = useReducer(reducer, boot.state)
  const [banner, setBanner] = useState<string | null>(boot.error)
  const cache = useRef(new SessionCache())
  const session = cache.current.sync(state)
  const version = cache.current.rebuilds * 1_000_000 + session.log.length
  const tab: Tab = (TABS.find(([t]) => t === state.view.tab)?.[0] ?? 'pagetable') as Tab

  useEffect(() => {
    const hash = `#${encodePermalink(state)}`
    if (globalThis.location.hash !== hash) globalThis.history.replaceState(null, '', hash)
  }, [state])

  const copyLink = async () => {
    try {
      await navigator.clipboard.writeText(globalThis.location.href)
      setBanner('Permalink copied: it replays this machine and every command.')
    } catch {
      setBanner('The address bar holds the permalink (copying needs clipboard access).')
    }
  }
  const download = () => {
    const blob = new Blob([JSON.stringify(JSON.parse(stateToJson(state)), null, 2)], {
      type: 'application/json',
    })
    const a = document.createElement('a')
    a.href = URL.createObjectURL(blob)
    a.download = `iommu-scenario-${state.machine.vendor}-seed${state.seed}.json`
    a.click()
    URL.revokeObjectURL(a.href)
  }

  const ctx = session.vendorContext
  const hwptIds = session.hwpts.map((h) => h.id)
  const hwpt =
    state.view.hwpt !== undefined && hwptIds.includes(state.view.hwpt)
      ? state.view.hwpt
      : (session.devices.find((d) => d.hwpt !== null)?.hwpt ?? hwptIds[0] ?? null)
  const domain = hwpt === null ? null : session.hwptDomain(hwpt)
  const src = domain === null ? null : session.vendor.pageTable(domain)
  const ranges = hwpt === null ? [] : session.hwptRanges(hwpt)
  const focus = state.view.iova !== undefined ? BigInt(state.view.iova) : (ranges[0]?.iova ?? null)
  const failed = session.log.filter((e) => e.error !== null).length
  const detectors = session.detectors()
  const findings = detectors.reduce((n, r) => n + r.findings.length, 0)

  return (
    <div class="app">
      <header>
        <h1>IOMMU explorer</h1>
        <span class="machine-sum" data-testid="machine-summary">
          {session.vendor.label} · {session.spec.guestMiB} MiB guest ·{' '}
          {session.devices.map((d) => d.name).join(', ')} · seed {session.seed} ·{' '}
          {state.commands.length} commands
          {failed ? <span class="bad"> · {failed} failed</span> : null}
        </span>
        <span class="spacer" />
        <button
          type="button"
          onClick={() => dispatch({ type: 'undo' })}
          disabled={!state.commands.length}
        >
          Undo
        </button>
        <button type="button" onClick={() => dispatch({ type: 'clearCommands' })}>
          Clear commands
        </button>
        <button type="button" onClick={download}>
          Scenario JSON
        </button>
        <button type="button" class="primary" onClick={copyLink}>
          Copy permalink
        </button>
      </header>
      {banner ? (
        <button type="button" class="banner" onClick={() => setBanner(null)}>
          {banner} <span class="dim">(click to dismiss)</span>
        </button>
      ) : null}
      <main>
        <aside>
          <MachinePanel
            machine={state.machine}
            seed={state.seed}
            onBuild={(machine, seed) => dispatch({ type: 'build', machine, seed })}
            onDemo={() =>
              dispatch({
                type: 'load',
                state: { ...state, commands: demoCommands(state.machine.devices.length), view: {} },
              })
            }
          />
          <CommandPanel
            session={session}
            version={version}
            onIssue={(command) => dispatch({ type: 'issue', command })}
          />
          <CallLog log={session.log} />
        </aside>
        <section class="views">
          <div class="tabs" role="tablist">
            {TABS.map(([t, label]) => (
              <button
                type="button"
                role="tab"
                key={t}
                aria-selected={t === tab}
                class={t === tab ? 'active' : ''}
                data-tab={t}
                onClick={() => dispatch({ type: 'setView', view: { tab: t } })}
              >
                {label}
                {t === 'detectors' && findings > 0 ? <span class="badge">{findings}</span> : null}
              </button>
            ))}
          </div>
          <div class="tab-body" data-testid={`tab-${tab}`}>
            {tab === 'pagetable' ? (
              <>
                <div class="chips">
                  {session.hwpts.map((h) => (
                    <button
                      type="button"
                      key={h.id}
                      class={`chip-btn${h.id === hwpt ? ' active' : ''}`}
                      onClick={() => dispatch({ type: 'setView', view: { hwpt: h.id } })}
                    >
                      HWPT {h.id}
                      <span class="dim">
                        {' '}
                        IOAS {h.ioas}
                        {h.auto ? ', auto' : ''}
                        {h.flags & 2 ? ', dirty tracking' : ''}
                      </span>
                    </button>
                  ))}
                </div>
                {hwpt === null ? (
                  <div class="empty">
                    No HWPT yet: allocate one (IOMMU_HWPT_ALLOC) or attach a device to an IOAS.
                  </div>
                ) : src !== null ? (
                  <PageTableView key={hwpt} src={src} version={version} focusIova={focus} />
                ) : domain !== null && session.vendor.domainEntries ? (
                  <ListsView
                    views={[
                      {
                        ...session.vendor.domainEntries(domain, ranges),
                      },
                    ]}
                    empty=""
                  />
                ) : (
                  <div class="empty">This HWPT has no IO page table in memory.</div>
                )}
              </>
            ) : tab === 'device' ? (
              <DeviceView
                session={session}
                dev={state.view.dev ?? 0}
                onDev={(i) => dispatch({ type: 'setView', view: { dev: i } })}
              />
            ) : tab === 'caches' ? (
              <ListsView
                views={session.vendor.caches(ctx)}
                empty={`${session.vendor.label} models no caches.`}
              />
            ) : tab === 'queues' ? (
              <ListsView
                views={session.vendor.queues(ctx)}
                empty={`${session.vendor.label} models no queues.`}
              />
            ) : tab === 'registers' ? (
              <RegistersView session={session} />
            ) : tab === 'detectors' ? (
              <DetectorsView reports={detectors} />
            ) : (
              <MigrationView
                vendor={session.vendor}
                options={session.options}
                seed={state.seed}
                spec={state.migration}
                onSpec={(migration) => dispatch({ type: 'setMigration', migration })}
              />
            )}
          </div>
        </section>
      </main>
    </div>
  )
}

/**
 * The structure tabs other than the page-table tree: a device's entry, the unit's
 * registers, caches and queues, and the detectors' reports.
 *
 * @module
 */

import { domainTypeName } from '@iommu/core'
import type { Session } from '../model/session.ts'
import type { DetectorReport } from '../vendors/types.ts'
import { ListTable } from './ListTable.tsx'
import { StructCard } from './StructCard.tsx'

export function DeviceView({
  session,
  dev,
  onDev,
}: {
  session: Session
  dev: number
  onDev: (i: number) => void
}) {
  const d = session.devices[dev] ?? session.devices[0]
  if (d === undefined) return null
  const entries = session.vendor.deviceEntries(session.vendorContext, d.dev)
  const domain = d.dev.group?.domain ?? null
  return (
    <div class="device-view">
      <div class="chips">
        {session.devices.map((x, i) => (
          <button
            type="button"
            key={x.name}
            class={`chip-btn${x === d ? ' active' : ''}`}
            onClick={() => onDev(i)}
          >
            {x.name} <span class="dim">{x.dev.bdf}</span>
          </button>
        ))}
      </div>
      <div class="summary">
        {d.name}: RID {d.dev.rid.toString(16).padStart(4, '0')}, dev_id {d.idev.id}, group{' '}
        {d.dev.group?.id ?? '—'}; domain {domain === null ? 'none' : domainTypeName(domain.type)}
        {d.hwpt !== null ? ` (HWPT ${d.hwpt}${d.pt !== d.hwpt ? ` for IOAS ${d.pt}` : ''})` : ''}
      </div>
      {entries.length === 0 ? (
        <div class="empty">
          {session.vendor.label} keeps no {session.vendor.deviceEntryName} in memory for this
          device.
        </div>
      ) : (
        entries.map((e) => (
          <StructCard
            key={e.decoded.title}
            decoded={e.decoded}
            note={e.note}
            warning={e.warning}
            compact
          />
        ))
      )}
    </div>
  )
}

export function RegistersView({ session }: { session: Session }) {
  const regs = session.vendor.registers(session.vendorContext)
  if (regs.length === 0) {
    return <div class="empty">{session.vendor.label} has no registers in the model.</div>
  }
  return (
    <div class="regs">
      {regs.map((r) => (
        <StructCard key={r.decoded.title} decoded={r.decoded} note={r.note} compact />
      ))}
    </div>
  )
}

export function ListsView({
  views,
  empty,
}: {
  views: ReturnType<Session['vendor']['caches']>
  empty: string
}) {
  if (views.length === 0) return <div class="empty">{empty}</div>
  return (
    <div class="lists">
      {views.map((v) => (
        <ListTable key={v.title} view={v} />
      ))}
    </div>
  )
}

export function DetectorsView({ reports }: { reports: readonly DetectorReport[] }) {
  if (reports.length === 0) return <div class="empty">No detectors for this IOMMU model.</div>
  return (
    <div class="detectors">
      {reports.map((r) => (
        <section key={r.title} class="detector" data-detector={r.title}>
          <h3>
            {r.title}{' '}
            <span class={`chip ${r.enabled ? 'on' : 'off'}`}>{r.enabled ? 'running' : 'off'}</span>{' '}
            <span class={`chip ${r.findings.length ? 'bad' : 'good'}`}>
              {r.findings.length} finding{r.findings.length === 1 ? '' : 's'}
            </span>
          </h3>
          <div class="note">{r.about}</div>
          {r.findings.length === 0 ? (
            <div class="empty">Nothing found.</div>
          ) : (
            <ol class="findings">
              {r.findings.map((f, i) => (
                <li key={i} class={f.severity}>
                  <div>{f.text}</div>
                  <div class="detail">
                    {Object.entries(f.detail).map(([k, v]) => (
                      <span key={k}>
                        <b>{k}</b> {v}
                      </span>
                    ))}
                  </div>
                </li>
              ))}
            </ol>
          )}
        </section>
      ))}
    </div>
  )
}

/**
 * The command panel: pick a uAPI call (or a DMA), edit its arguments (suggested from what
 * the machine holds now) and issue it. Every issued command becomes part of the scenario.
 *
 * @module
 */

import { useLayoutEffect, useReducer, useRef, useState } from 'preact/hooks'
import { FIELDS, formReducer, OPS } from '../model/form.ts'
import { buildCommand, suggest } from '../model/reducer.ts'
import { type Command, VIOMMU_TYPES } from '../model/scenario.ts'
import type { Session } from '../model/session.ts'

interface Props {
  readonly session: Session
  readonly version: number
  readonly onIssue: (c: Command) => void
}

export function CommandPanel({ session, version, onIssue }: Props) {
  const [op, setOp] = useState<Command['op']>('IOAS_MAP')
  const [form, dispatch] = useReducer(formReducer, suggest(session, op))
  const [error, setError] = useState<string | null>(null)
  const opNow = useRef(op)
  opNow.current = op
  // A new machine or an issued command changes what is worth suggesting: before the page is
  // painted (a layout effect), so nothing typed afterwards is replaced.
  useLayoutEffect(() => {
    dispatch({ type: 'op', suggestion: suggest(session, opNow.current) })
  }, [session, version])
  // A new call gets its suggestion in the same render as its fields, so a value typed right
  // after choosing the call is never replaced by a late suggestion.
  const chooseOp = (next: Command['op']) => {
    setOp(next)
    dispatch({ type: 'op', suggestion: suggest(session, next) })
  }

  const issue = (e: Event) => {
    e.preventDefault()
    const r = buildCommand(form)
    if (!r.ok) {
      setError(r.error)
      return
    }
    setError(null)
    onIssue(r.command)
  }

  const groups = [...new Set(OPS.map((o) => o.group))]
  const values = form as Record<string, unknown>
  return (
    <form class="panel command-panel" onSubmit={issue} data-testid="command-panel">
      <h2>Command</h2>
      <label class="row">
        <span>call</span>
        <select
          name="op"
          value={op}
          onChange={(e) => chooseOp((e.target as HTMLSelectElement).value as Command['op'])}
        >
          {groups.map((g) => (
            <optgroup key={g} label={g}>
              {OPS.filter((o) => o.group === g).map((o) => (
                <option key={o.op} value={o.op}>
                  {o.label}
                </option>
              ))}
            </optgroup>
          ))}
        </select>
      </label>
      {FIELDS[op].map((f) => {
        const v = values[f.key]
        const set = (value: string | boolean) => dispatch({ type: 'field', key: f.key, value })
        if (f.kind === 'bool') {
          return (
            <label class="row check" key={f.key}>
              <input
                type="checkbox"
                name={f.key}
                checked={v === true}
                onChange={(e) => set((e.target as HTMLInputElement).checked)}
              />
              <span>{f.label}</span>
            </label>
          )
        }
        if (f.kind === 'dev') {
          return (
            <label class="row" key={f.key}>
              <span>{f.label}</span>
              <select
                name={f.key}
                value={String(v)}
                onChange={(e) => set((e.target as HTMLSelectElement).value)}
              >
                {session.devices.map((d, i) => (
                  <option key={d.name} value={String(i)}>
                    {d.name} (dev_id {d.idev.id}, {d.dev.bdf})
                  </option>
                ))}
              </select>
            </label>
          )
        }
        if (f.kind === 'viommuType') {
          return (
            <label class="row" key={f.key}>
              <span>{f.label}</span>
              <select
                name={f.key}
                value={String(v)}
                onChange={(e) => set((e.target as HTMLSelectElement).value)}
              >
                {VIOMMU_TYPES.map((t) => (
                  <option key={t} value={t}>
                    IOMMU_VIOMMU_TYPE_{t.toUpperCase().replace('-', '_')}
                  </option>
                ))}
              </select>
            </label>
          )
        }
        if (f.kind === 'hook') {
          return (
            <label class="row" key={f.key}>
              <span>{f.label}</span>
              <select
                name={f.key}
                value={String(v)}
                onChange={(e) => set((e.target as HTMLSelectElement).value)}
              >
                {session.vendor.hooks.map((h) => (
                  <option key={h.name} value={h.name}>
                    {h.label}
                  </option>
                ))}
              </select>
            </label>
          )
        }
        return (
          <label class="row" key={f.key}>
            <span>{f.label}</span>
            <input
              name={f.key}
              class="mono"
              value={v === undefined ? '' : String(v)}
              onInput={(e) => set((e.target as HTMLInputElement).value)}
              spellcheck={false}
              autocomplete="off"
            />
          </label>
        )
      })}
      {op === 'HOOK' && session.vendor.hooks.length === 0 ? (
        <div class="note">{session.vendor.label} has no fault-injection hooks.</div>
      ) : null}
      {error ? <div class="form-error">{error}</div> : null}
      <div class="row buttons">
        <button type="submit" class="primary" name="issue">
          Issue
        </button>
        <span class="note">
          IDs: IOAS {session.ioas.join(', ') || '—'} · HWPT{' '}
          {session.hwpts.map((h) => h.id).join(', ') || '—'}
          {session.viommus.length ? ` · vIOMMU ${session.viommus.map((x) => x.id).join(', ')}` : ''}
        </span>
      </div>
    </form>
  )
}

/**
 * A cache or queue listing (a vendor's {@link ListView}): a table of rows; selecting a row
 * with a decoded record shows it bit by bit below.
 *
 * @module
 */

import { useState } from 'preact/hooks'
import type { ListView } from '../vendors/types.ts'
import { StructCard } from './StructCard.tsx'

/** How many rows are rendered before "show more". */
const PAGE_ROWS = 200

export function ListTable({ view }: { view: ListView }) {
  const [selected, setSelected] = useState(-1)
  const [limit, setLimit] = useState(PAGE_ROWS)
  const sel = view.rows[selected]
  return (
    <section class="list" data-list={view.title}>
      <h3>
        {view.title}
        {view.ref ? <span class="ref"> · {view.ref}</span> : null}
      </h3>
      {view.note ? <div class="note">{view.note}</div> : null}
      {view.rows.length === 0 ? (
        <div class="empty">{view.empty}</div>
      ) : (
        <div class="table-wrap">
          <table class="grid">
            <thead>
              <tr>
                {view.columns.map((c) => (
                  <th key={c}>{c}</th>
                ))}
              </tr>
            </thead>
            <tbody>
              {view.rows.slice(0, limit).map((r, i) => (
                <tr
                  key={i}
                  class={`${r.tone ?? ''}${i === selected ? ' selected' : ''}${r.decoded ? ' clickable' : ''}`}
                  onClick={() => setSelected(i === selected ? -1 : i)}
                >
                  {r.cells.map((c, j) => (
                    <td key={j} class="mono">
                      {c}
                    </td>
                  ))}
                </tr>
              ))}
            </tbody>
          </table>
          {view.rows.length > limit ? (
            <button type="button" class="link" onClick={() => setLimit(limit + PAGE_ROWS)}>
              show {Math.min(PAGE_ROWS, view.rows.length - limit)} more of {view.rows.length}
            </button>
          ) : null}
        </div>
      )}
      {sel?.decoded ? <StructCard decoded={sel.decoded} compact /> : null}
    </section>
  )
}

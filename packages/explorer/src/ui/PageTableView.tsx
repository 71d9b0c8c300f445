/**
 * The IO page table of a HWPT as a tree, level by level: table entries expand to their
 * child table, leaves show their size, output address, permissions and A/D bits, and
 * contiguous (replicated) leaves are one row. Selecting an entry decodes it bit by bit.
 *
 * @module
 */

import { useMemo, useState } from 'preact/hooks'
import { hex, sizeName, sizeShort } from '../decode/bitfield.ts'
import {
  decodeRow,
  itemLg2,
  type PtRow,
  readTable,
  type TableSource,
  treeStats,
  walkRows,
} from '../model/pgtable.ts'
import { StructCard } from './StructCard.tsx'

interface Props {
  readonly src: TableSource
  /** Re-render key: changes whenever the model may have changed. */
  readonly version: number
  /** IOVA to open the tree at. */
  readonly focusIova: bigint | null
}

function rowKey(r: PtRow): string {
  return `${r.level}:${r.iova.toString(16)}`
}

/** A run of similar leaves is folded when it is longer than this. */
const FOLD = 6

function similar(a: PtRow, b: PtRow): boolean {
  return (
    a.kind === 'leaf' &&
    b.kind === 'leaf' &&
    a.replicas === b.replicas &&
    a.dirty === b.dirty &&
    a.accessed === b.accessed &&
    b.oaPfn - a.oaPfn === 2 ** (a.sizeLg2 - 12) &&
    // Same bits apart from the output address.
    (a.raw & ~0x000f_ffff_ffff_f000n) === (b.raw & ~0x000f_ffff_ffff_f000n)
  )
}

type Item = { row: PtRow } | { fold: PtRow[] }

function foldRows(rows: readonly PtRow[]): Item[] {
  const out: Item[] = []
  let i = 0
  while (i < rows.length) {
    let j = i + 1
    while (j < rows.length && similar(rows[j - 1] as PtRow, rows[j] as PtRow)) j++
    const run = rows.slice(i, j)
    if (run.length > FOLD) {
      out.push(
        { row: run[0] as PtRow },
        { fold: run.slice(1, -1) },
        { row: run[run.length - 1] as PtRow },
      )
    } else for (const r of run) out.push({ row: r })
    i = j
  }
  return out
}

function Flags({ r }: { r: PtRow }) {
  return (
    <span class="pt-flags">
      {r.accessed === null ? null : <span class={`chip ${r.accessed ? 'a-on' : 'off'}`}>A</span>}
      {r.dirty === null ? null : <span class={`chip ${r.dirty ? 'd-on' : 'off'}`}>D</span>}
    </span>
  )
}

/**
 * The walk the hardware does to reach an entry: each level's entry from the root, with
 * the index bits of the IOVA that chose it.
 */
function WalkPath({
  src,
  row,
  onSelect,
}: {
  src: TableSource
  row: PtRow
  onSelect: (r: PtRow) => void
}) {
  const path = walkRows(src, row.iova)
  const leaf = path[path.length - 1]
  return (
    <div class="walk-path">
      <div class="sub">
        Walk of IOVA {hex(row.iova)}: {path.length} entr{path.length === 1 ? 'y' : 'ies'} read
        {leaf?.kind === 'leaf'
          ? `, translates to PA ${hex(leaf.oaPfn * 4096)} (${sizeName(leaf.sizeLg2)} page)`
          : ''}
      </div>
      <div class="table-wrap">
        <table class="grid">
          <thead>
            <tr>
              <th>level</th>
              <th>index</th>
              <th>entry PA</th>
              <th>entry</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {path.map((r) => (
              <tr
                key={rowKey(r)}
                class={`clickable${r === row || rowKey(r) === rowKey(row) ? ' selected' : ''}`}
                onClick={() => onSelect(r)}
              >
                <td class="mono">{r.level}</td>
                <td class="mono">{r.index}</td>
                <td class="mono">{hex(r.pa)}</td>
                <td class="mono">{hex(r.raw, 16)}</td>
                <td>
                  {r.kind === 'table' ? 'table' : r.kind === 'leaf' ? sizeShort(r.sizeLg2) : '!'}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </div>
  )
}

export function PageTableView({ src, version, focusIova }: Props) {
  const initialOpen = useMemo(() => {
    const open = new Set<string>()
    if (focusIova !== null) for (const r of walkRows(src, focusIova)) open.add(rowKey(r))
    return open
  }, [src.rootPfn, focusIova])
  const [open, setOpen] = useState<Set<string>>(initialOpen)
  const [openFolds, setOpenFolds] = useState<Set<string>>(new Set())
  const [selected, setSelected] = useState<string | null>(null)
  const [walkInput, setWalkInput] = useState(
    focusIova === null ? '' : `0x${focusIova.toString(16)}`,
  )
  const stats = useMemo(() => treeStats(src), [src.rootPfn, src.rootLevel, version])
  const rowsByKey = new Map<string, PtRow>()

  const toggle = (k: string) => {
    const n = new Set(open)
    if (n.has(k)) n.delete(k)
    else n.add(k)
    setOpen(n)
  }

  const walk = () => {
    let iova: bigint
    try {
      iova = BigInt(walkInput.trim())
    } catch {
      return
    }
    const path = walkRows(src, iova)
    const n = new Set(open)
    for (const r of path) n.add(rowKey(r))
    setOpen(n)
    const last = path[path.length - 1]
    if (last !== undefined) setSelected(rowKey(last))
  }

  const renderTable = (pfn: number, level: number, base: bigint, depth: number) => {
    const rows = readTable(src, pfn, level, base)
    const items = foldRows(rows)
    return (
      <div class="pt-table" style={{ marginLeft: depth === 0 ? 0 : 14 }}>
        <div class="pt-table-head">
          level {level} table at PA {hex(pfn * 4096)} · {rows.length} present · items of{' '}
          {sizeName(itemLg2(src.params, level))}
        </div>
        {items.map((it) => {
          if ('fold' in it) {
            const fk = `${level}:${base.toString(16)}:${it.fold[0]?.index}`
            const holdsSelected = it.fold.some((r) => rowKey(r) === selected)
            if (!openFolds.has(fk) && !holdsSelected) {
              const a = it.fold[0] as PtRow
              const z = it.fold[it.fold.length - 1] as PtRow
              return (
                <button
                  type="button"
                  key={fk}
                  class="pt-fold"
                  onClick={() => setOpenFolds(new Set([...openFolds, fk]))}
                >
                  ⋯ {it.fold.length} more like these: entries {a.index}..{z.index + z.replicas - 1},
                  IOVA {hex(a.iova)}.., PA {hex(a.oaPfn * 4096)}..
                </button>
              )
            }
            return it.fold.map((r) => renderRow(r, depth))
          }
          return renderRow(it.row, depth)
        })}
      </div>
    )
  }

  const renderRow = (r: PtRow, depth: number) => {
    const k = rowKey(r)
    rowsByKey.set(k, r)
    const isOpen = open.has(k)
    return (
      <div key={k}>
        <div
          class={`pt-row ${r.kind}${selected === k ? ' selected' : ''}`}
          role="treeitem"
          tabIndex={0}
          aria-selected={selected === k}
          aria-level={depth + 1}
          {...(r.kind === 'table' ? { 'aria-expanded': isOpen } : {})}
          data-iova={`0x${r.iova.toString(16)}`}
          data-level={r.level}
          onClick={() => setSelected(k)}
          onKeyDown={(e) => {
            if (e.key === 'Enter' || e.key === ' ') {
              e.preventDefault()
              setSelected(k)
            } else if (r.kind === 'table' && (e.key === 'ArrowRight' || e.key === 'ArrowLeft')) {
              if ((e.key === 'ArrowRight') !== isOpen) toggle(k)
            }
          }}
        >
          {r.kind === 'table' ? (
            <button
              type="button"
              class="twisty"
              aria-label={isOpen ? 'collapse' : 'expand'}
              onClick={(e) => {
                e.stopPropagation()
                toggle(k)
              }}
            >
              {isOpen ? '▾' : '▸'}
            </button>
          ) : (
            <span class="twisty" />
          )}
          <span class="pt-idx">
            [{r.index}
            {r.replicas > 1 ? `..${r.index + r.replicas - 1}` : ''}]
          </span>
          <span class="pt-iova">{hex(r.iova)}</span>
          <code class="pt-raw">{hex(r.raw, 16).slice(2)}</code>
          {r.kind === 'table' ? (
            <span class="pt-what">
              <span class="dim">table</span> {hex(r.childPfn * 4096)}
            </span>
          ) : r.kind === 'leaf' ? (
            <span class="pt-what">
              <span class="size">{sizeShort(r.sizeLg2)}</span>
              {r.replicas > 1 ? <span class="chip contig">×{r.replicas}</span> : null}{' '}
              {hex(r.oaPfn * 4096)}
            </span>
          ) : (
            <span class="pt-what bad">reserved encoding</span>
          )}
          <Flags r={r} />
        </div>
        {r.kind === 'table' && isOpen
          ? renderTable(r.childPfn, r.level - 1, r.iova, depth + 1)
          : null}
      </div>
    )
  }

  const tree = renderTable(src.rootPfn, src.rootLevel, 0n, 0)
  const sel = selected === null ? undefined : rowsByKey.get(selected)
  const sizes = [...stats.bySize.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([lg2, n]) => `${n} × ${sizeName(lg2)}`)
    .join(', ')
  return (
    <div class="pt-view">
      <div class="pt-left">
        <div class="summary" data-testid="pt-summary">
          <b>{src.format.name}</b> · root level {src.rootLevel} at PA {hex(src.rootPfn * 4096)} ·{' '}
          {stats.tables} tables · {stats.leaves} leaves{sizes ? ` (${sizes})` : ''} ·{' '}
          <span class="a-on-text">{stats.accessedLeaves} accessed</span> ·{' '}
          <span class="d-on-text">{stats.dirtyLeaves} dirty</span>
        </div>
        <form
          class="walk"
          onSubmit={(e) => {
            e.preventDefault()
            walk()
          }}
        >
          <label>
            Walk IOVA{' '}
            <input
              name="walk-iova"
              value={walkInput}
              onInput={(e) => setWalkInput((e.target as HTMLInputElement).value)}
              placeholder="0x10001000"
            />
          </label>
          <button type="submit">Walk</button>
        </form>
        <div class="pt-tree" role="tree" aria-label="IO page table">
          <div class="pt-cols">
            <span>[index]</span>
            <span>IOVA</span>
            <span>entry (hex)</span>
            <span>maps</span>
          </div>
          {tree}
        </div>
      </div>
      <div class="pt-right">
        {sel === undefined ? (
          <div class="hint">Select an entry to decode it bit by bit.</div>
        ) : (
          <>
            <StructCard decoded={decodeRow(src, sel)} />
            <WalkPath src={src} row={sel} onSelect={(r) => setSelected(rowKey(r))} />
            {sel.replicas > 1 ? (
              <div class="replicas">
                <div class="sub">Replicas (the hardware may set D in any of them)</div>
                {sel.replicaRaw.map((v, i) => (
                  <code key={i}>
                    [{sel.index + i}] {hex(v, 16)}
                  </code>
                ))}
              </div>
            ) : null}
          </>
        )}
      </div>
    </div>
  )
}

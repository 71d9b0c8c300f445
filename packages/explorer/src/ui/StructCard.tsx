/**
 * One decoded structure: the raw 64-bit words, a strip of their bits coloured by field,
 * and the field table (name, bit range, value, meaning with the kernel's macro). Hovering a field
 * lights its bits, hovering a bit lights its field.
 *
 * @module
 */

import { useState } from 'preact/hooks'
import { bitRange, type Decoded, hex, hex64 } from '../decode/bitfield.ts'

/** Field colours, cycled (reserved bits stay grey). */
const HUES = [210, 140, 30, 280, 0, 180, 60, 320, 100, 250]

interface Props {
  readonly decoded: Decoded
  readonly note?: string | undefined
  readonly warning?: string | undefined
  /** Hide fields whose value is zero (flags off), except the first few. */
  readonly compact?: boolean
}

function fieldIndexAt(d: Decoded, bit: number): number {
  return d.fields.findIndex((f) => bit >= f.lo && bit <= f.hi)
}

export function StructCard({ decoded: d, note, warning, compact = false }: Props) {
  const [hot, setHot] = useState(-1)
  const [showZero, setShowZero] = useState(!compact)
  const words = d.layout.bits / 64
  const rows = showZero ? d.fields : d.fields.filter((f) => f.value !== 0n)
  const zero = showZero ? [] : d.fields.filter((f) => f.value === 0n)
  return (
    <div class="struct" data-layout={d.layout.name}>
      <div class="struct-head">
        <span class="struct-title">{d.title}</span>
        <span class="struct-ref">
          {d.layout.name} · {d.layout.ref}
          {d.address !== null ? ` · PA ${hex(d.address)}` : ''}
        </span>
      </div>
      {note ? <div class="struct-note">{note}</div> : null}
      {warning ? <div class="struct-warning">{warning}</div> : null}
      <div class="words">
        {Array.from({ length: words }, (_, w) => {
          const value = d.words[w] ?? 0n
          return (
            <div class="word" key={w}>
              <span class="word-name">{words > 1 ? `[${w * 64 + 63}:${w * 64}]` : '[63:0]'}</span>
              <code class="word-hex" data-word={w}>
                {hex64(value)}
              </code>
              <span
                class="bits"
                role="img"
                aria-label={`bits ${w * 64 + 63} to ${w * 64}`}
                onPointerMove={(e) => {
                  const fi = (e.target as HTMLElement).dataset.fi
                  if (fi !== undefined) setHot(Number(fi))
                }}
                onPointerLeave={() => setHot(-1)}
              >
                {Array.from({ length: 64 }, (_, k) => {
                  const bit = w * 64 + 63 - k
                  const fi = fieldIndexAt(d, bit)
                  const f = fi >= 0 ? d.fields[fi] : undefined
                  const on = ((value >> BigInt(63 - k)) & 1n) === 1n
                  const hue = HUES[fi % HUES.length] ?? 0
                  const lit = hot >= 0 && fi === hot
                  const bg =
                    f === undefined || f.reserved
                      ? on
                        ? '#6a7383'
                        : undefined
                      : `hsl(${hue} ${on ? '60% 38%' : lit ? '70% 72%' : '60% 86%'})`
                  return (
                    <span
                      key={k}
                      class={`bit${on ? ' on' : ''}${lit ? ' hot' : ''}${k % 8 === 7 ? ' gap' : ''}`}
                      style={bg ? { background: bg } : undefined}
                      title={`bit ${bit} = ${on ? 1 : 0}${f ? ` · ${f.name}` : ''}`}
                      data-fi={fi}
                    />
                  )
                })}
              </span>
            </div>
          )
        })}
      </div>
      <table class="fields">
        <thead>
          <tr>
            <th>Field</th>
            <th>Bits</th>
            <th>Value</th>
            <th>Meaning</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((f) => {
            const fi = d.fields.indexOf(f)
            const hue = HUES[fi % HUES.length] ?? 0
            return (
              <tr
                key={`${f.name}-${f.lo}`}
                class={`${f.reserved ? 'reserved' : ''}${hot >= 0 && fi === hot ? ' hot' : ''}${f.value === 0n ? ' zero' : ''}`}
                data-field={f.name}
                onMouseEnter={() => setHot(fi)}
                onMouseLeave={() => setHot(-1)}
              >
                <td class="fname">
                  <span class="swatch" style={{ background: `hsl(${hue} 70% 70%)` }} />
                  {f.name}
                </td>
                <td class="mono">{bitRange(f.hi, f.lo)}</td>
                <td class="mono fvalue">{f.hi === f.lo ? String(f.value) : hex(f.value)}</td>
                <td class="meaning">
                  {f.meaning}
                  {f.kernel ? <span class="mono kernel">{f.kernel}</span> : null}
                </td>
              </tr>
            )
          })}
          {zero.length ? (
            <tr class="zero-row">
              <td colSpan={4}>
                <span class="dim">zero: </span>
                {zero.map((f) => f.name).join(' · ')}
              </td>
            </tr>
          ) : null}
        </tbody>
      </table>
      {compact && (zero.length > 0 || showZero) ? (
        <button type="button" class="link" onClick={() => setShowZero(!showZero)}>
          {showZero ? 'hide zero fields' : `show all ${d.fields.length} fields`}
        </button>
      ) : null}
    </div>
  )
}

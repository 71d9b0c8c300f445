/**
 * The call log: every call the machine saw, with its arguments as the kernel struct names
 * them, the fields written back, and the errno (or DMA fault) when it failed.
 *
 * @module
 */

import { useEffect, useRef } from 'preact/hooks'
import { hex } from '../decode/bitfield.ts'
import type { LogEntry } from '../model/session.ts'

export function CallLog({ log }: { log: readonly LogEntry[] }) {
  const end = useRef<HTMLDivElement>(null)
  useEffect(() => {
    end.current?.scrollIntoView({ block: 'end' })
  }, [log.length])
  return (
    <div class="panel call-log" data-testid="call-log">
      <h2>Calls</h2>
      <ol class="log">
        {log.map((e) => (
          <li key={e.seq} class={e.error ? 'failed' : 'ok'} data-call={e.call} data-seq={e.seq}>
            <div class="log-head">
              <span class="seq">{e.command >= 0 ? `#${e.command}` : 'setup'}</span>
              <span class="call">{e.call}</span>
              {e.nr !== null ? <span class="nr">{hex(e.nr, 4)}</span> : null}
              {e.struct ? <span class="struct-name">struct {e.struct}</span> : null}
            </div>
            {e.args.length ? (
              <div class="args">
                {e.args.map(([k, v]) => (
                  <span key={k} class={`arg${e.outputs.includes(k) ? ' out' : ''}`}>
                    <span class="k">.{k}</span>=<span class="v">{v}</span>
                  </span>
                ))}
              </div>
            ) : null}
            <div class="result">
              {e.error ? (
                <>
                  <b class="errno" data-errno={e.error.errno}>
                    {e.error.errno !== 0 ? `${e.error.code} (${e.error.errno})` : e.error.code}
                  </b>{' '}
                  <span class="msg">{e.error.message}</span>
                </>
              ) : (
                <>
                  {e.nr !== null ? <span class="ret">= 0 </span> : null}
                  {e.result}
                </>
              )}
            </div>
          </li>
        ))}
      </ol>
      <div ref={end} />
    </div>
  )
}

/**
 * The machine builder: vendor and its options, guest RAM, devices, seed. Building replaces
 * the machine (and starts an empty command list).
 *
 * @module
 */

import { useEffect, useState } from 'preact/hooks'
import { type DeviceSpec, MachineSpec } from '../model/scenario.ts'
import { VENDORS, vendorById } from '../vendors/index.ts'
import { vendorOptions } from '../vendors/types.ts'

interface Props {
  readonly machine: MachineSpec
  readonly seed: number
  readonly onBuild: (m: MachineSpec, seed: number) => void
  readonly onDemo: () => void
}

export function MachinePanel({ machine, seed, onBuild, onDemo }: Props) {
  const [draft, setDraft] = useState<MachineSpec>(machine)
  const [draftSeed, setDraftSeed] = useState(String(seed))
  const [error, setError] = useState<string | null>(null)
  const [open, setOpen] = useState(false)
  useEffect(() => {
    setDraft(machine)
    setDraftSeed(String(seed))
  }, [machine, seed])
  const vendor = vendorById(draft.vendor)
  const opts = vendorOptions(vendor, draft.options)
  const setDev = (i: number, d: Partial<DeviceSpec>) =>
    setDraft({
      ...draft,
      devices: draft.devices.map((x, j) => (j === i ? { ...x, ...d } : x)),
    })

  const build = (e: Event) => {
    e.preventDefault()
    const r = MachineSpec.safeParse({ ...draft, options: opts })
    const s = Number(draftSeed)
    if (!r.success) {
      setError(`${r.error.issues[0]?.path.join('.')}: ${r.error.issues[0]?.message}`)
      return
    }
    if (!Number.isInteger(s) || s < 0 || s > 0xffff_ffff) {
      setError('seed: an integer in 0..2^32-1')
      return
    }
    setError(null)
    setOpen(false)
    onBuild(r.data, s)
  }

  if (!open) {
    return (
      <div class="panel machine-panel closed" data-testid="machine-panel">
        <h2>Machine</h2>
        <div class="row">
          <span class="machine-line">
            {vendorById(machine.vendor).label}, {machine.guestMiB} MiB guest,{' '}
            {machine.devices.length} device{machine.devices.length === 1 ? '' : 's'}, seed {seed}
          </span>
        </div>
        <div class="row buttons">
          <button type="button" name="edit-machine" onClick={() => setOpen(true)}>
            New machine…
          </button>
          <button
            type="button"
            name="demo"
            onClick={onDemo}
            title="IOAS, map, HWPT with dirty tracking, attach, DMA, dirty bitmap"
          >
            Run demo
          </button>
        </div>
      </div>
    )
  }

  return (
    <form class="panel machine-panel" onSubmit={build} data-testid="machine-panel">
      <h2>Machine</h2>
      <label class="row">
        <span>IOMMU</span>
        <select
          name="vendor"
          value={draft.vendor}
          onChange={(e) =>
            setDraft({ ...draft, vendor: (e.target as HTMLSelectElement).value, options: {} })
          }
        >
          {VENDORS.map((v) => (
            <option key={v.id} value={v.id}>
              {v.label}
            </option>
          ))}
        </select>
      </label>
      <div class="note">{vendor.about}</div>
      {vendor.options.map((o) =>
        o.kind === 'boolean' ? (
          <label class="row check" key={o.key} title={o.help}>
            <input
              type="checkbox"
              name={`opt-${o.key}`}
              checked={opts[o.key] === true}
              onChange={(e) =>
                setDraft({
                  ...draft,
                  options: { ...opts, [o.key]: (e.target as HTMLInputElement).checked },
                })
              }
            />
            <span>{o.label}</span>
          </label>
        ) : (
          <label class="row" key={o.key} title={o.help}>
            <span>{o.label}</span>
            <select
              name={`opt-${o.key}`}
              value={String(opts[o.key])}
              onChange={(e) =>
                setDraft({
                  ...draft,
                  options: { ...opts, [o.key]: (e.target as HTMLSelectElement).value },
                })
              }
            >
              {(o.choices ?? []).map((c) => (
                <option key={c} value={c}>
                  {c}
                </option>
              ))}
            </select>
          </label>
        ),
      )}
      <label class="row">
        <span>guest RAM (MiB)</span>
        <input
          name="guestMiB"
          type="number"
          min={1}
          max={1024}
          value={draft.guestMiB}
          onInput={(e) =>
            setDraft({ ...draft, guestMiB: Number((e.target as HTMLInputElement).value) })
          }
        />
      </label>
      <label class="row">
        <span>seed</span>
        <input
          name="seed"
          value={draftSeed}
          onInput={(e) => setDraftSeed((e.target as HTMLInputElement).value)}
        />
      </label>
      <div class="devices">
        {draft.devices.map((d, i) => (
          <div class="device-row" key={i}>
            <input
              class="mono"
              name={`dev-${i}-name`}
              value={d.name}
              onInput={(e) => setDev(i, { name: (e.target as HTMLInputElement).value })}
              aria-label="device name"
            />
            <label title="PASID capability width (bits)">
              PASID
              <input
                type="number"
                min={0}
                max={20}
                value={d.pasidBits}
                onInput={(e) =>
                  setDev(i, { pasidBits: Number((e.target as HTMLInputElement).value) })
                }
              />
            </label>
            {vendor.deviceDirtyTracking ? (
              <label title="The mock device tracks dirty pages (else MOCK_FLAGS_DEVICE_NO_DIRTY)">
                <input
                  type="checkbox"
                  name={`dev-${i}-dirty`}
                  checked={d.dirtyTracking}
                  onChange={(e) =>
                    setDev(i, { dirtyTracking: (e.target as HTMLInputElement).checked })
                  }
                />
                dirty
              </label>
            ) : null}
            <button
              type="button"
              class="icon"
              title="remove"
              disabled={draft.devices.length === 1}
              onClick={() =>
                setDraft({ ...draft, devices: draft.devices.filter((_, j) => j !== i) })
              }
            >
              ×
            </button>
          </div>
        ))}
        <button
          type="button"
          class="link"
          disabled={draft.devices.length >= 8}
          onClick={() =>
            setDraft({
              ...draft,
              devices: [
                ...draft.devices,
                {
                  name: `dev${draft.devices.length}`,
                  pasidBits: 0,
                  dirtyTracking: true,
                  ats: false,
                },
              ],
            })
          }
        >
          + device
        </button>
      </div>
      {error ? <div class="form-error">{error}</div> : null}
      <div class="row buttons">
        <button type="submit" class="primary" name="build">
          Build machine
        </button>
        <button type="button" name="cancel" onClick={() => setOpen(false)}>
          Cancel
        </button>
      </div>
    </form>
  )
}

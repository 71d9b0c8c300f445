import type { MigrationSpec } from '../model/scenario.ts'
import type { VendorDescriptor } from '../vendors/types.ts'

export function MigrationView(_p: {
  vendor: VendorDescriptor
  seed: number
  spec: MigrationSpec
  onSpec: (m: MigrationSpec) => void
}) {
  return <div class="empty">Migration view: not wired yet.</div>
}

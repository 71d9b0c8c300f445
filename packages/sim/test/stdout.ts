/** Test helper: run the in-process CLI with stdout captured. */
import { main } from '../src/index.ts'

/** `main(args)` with its stdout collected: the exit status and the text. */
export function runMain(args: string[]): { code: number | Promise<number>; stdout: string } {
  const out: string[] = []
  const write = process.stdout.write
  process.stdout.write = ((s: string) => {
    out.push(s)
    return true
  }) as typeof process.stdout.write
  try {
    return { code: main(args), stdout: out.join('') }
  } finally {
    process.stdout.write = write
  }
}

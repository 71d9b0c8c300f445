/**
 * Code excerpts in the READMEs, kept equal to real, compiled and tested source files.
 *
 * In Markdown, a fenced `ts` block right after `<!-- excerpt: PATH#REGION -->` must equal
 * the lines between `// #region REGION` and `// #endregion REGION` of PATH (relative to
 * the repository root), with their common indentation removed. The test in
 * `packages/create-driver/test/readme-excerpts.test.ts` checks it; `pnpm docs:excerpts`
 * rewrites the blocks from the sources.
 *
 * @module
 */

import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

/** One excerpt block of a README. */
export interface Excerpt {
  /** The README, relative to the root. */
  readonly readme: string
  /** 1-based line of the marker. */
  readonly line: number
  readonly file: string
  readonly region: string
  /** What the README holds. */
  readonly actual: string
  /** What the source holds. */
  readonly expected: string
}

const MARKER = /^<!-- excerpt: ([^#\s]+)#([\w-]+) -->$/

/** The lines of `region` in `text`, dedented. @throws Error - no such region */
export function regionOf(text: string, region: string, file = 'source'): string {
  const lines = text.split('\n')
  const start = lines.findIndex((l) => l.trim() === `// #region ${region}`)
  const end = lines.findIndex((l, i) => i > start && l.trim() === `// #endregion ${region}`)
  if (start < 0 || end < 0) throw new Error(`${file}: no region '${region}'`)
  const body = lines.slice(start + 1, end)
  const indent = Math.min(
    ...body.filter((l) => l.trim() !== '').map((l) => (/^ */.exec(l) as RegExpExecArray)[0].length),
  )
  return body.map((l) => l.slice(indent)).join('\n')
}

/** Every excerpt of a README, with what it should hold. */
export function excerptsOf(root: string, readme: string): Excerpt[] {
  const lines = readFileSync(join(root, readme), 'utf8').split('\n')
  const out: Excerpt[] = []
  lines.forEach((l, i) => {
    const m = MARKER.exec(l.trim())
    if (m === null) return
    const [, file, region] = m as unknown as [string, string, string]
    if (lines[i + 1] !== '```ts') throw new Error(`${readme}:${i + 1}: no \`\`\`ts block follows`)
    const close = lines.indexOf('```', i + 2)
    if (close < 0) throw new Error(`${readme}:${i + 1}: unterminated block`)
    out.push({
      readme,
      line: i + 1,
      file,
      region,
      actual: lines.slice(i + 2, close).join('\n'),
      expected: regionOf(readFileSync(join(root, file), 'utf8'), region, file),
    })
  })
  return out
}

/** Lines (1-based) of `ts` fences that are not excerpts. */
export function looseCodeBlocks(root: string, readme: string): number[] {
  const lines = readFileSync(join(root, readme), 'utf8').split('\n')
  const out: number[] = []
  lines.forEach((l, i) => {
    if (l === '```ts' && !MARKER.test((lines[i - 1] ?? '').trim())) out.push(i + 1)
  })
  return out
}

/** Rewrite every excerpt of the READMEs from the sources; returns those that changed. */
export function syncExcerpts(root: string, readmes: readonly string[]): Excerpt[] {
  const changed: Excerpt[] = []
  for (const readme of readmes) {
    const ex = excerptsOf(root, readme).filter((e) => e.actual !== e.expected)
    if (ex.length === 0) continue
    const lines = readFileSync(join(root, readme), 'utf8').split('\n')
    // From the bottom up, so earlier line numbers stay valid.
    for (const e of [...ex].reverse()) {
      const close = lines.indexOf('```', e.line + 1)
      lines.splice(e.line + 1, close - e.line - 1, ...e.expected.split('\n'))
    }
    writeFileSync(join(root, readme), lines.join('\n'))
    changed.push(...ex)
  }
  return changed
}

/** Names exported by a package entry point (`export { a, type B } from`, `export function c`). */
export function entryExports(text: string): Set<string> {
  const out = new Set<string>()
  for (const m of text.matchAll(/export\s+(?:type\s+)?\{([^}]*)\}/g)) {
    for (const part of (m[1] as string).split(',')) {
      const name = part
        .trim()
        .replace(/^type\s+/, '')
        .split(/\s+as\s+/)
        .pop()
        ?.trim()
      if (name) out.add(name)
    }
  }
  for (const m of text.matchAll(
    /export\s+(?:declare\s+)?(?:function|const|class|interface|type|enum)\s+(\w+)/g,
  )) {
    out.add(m[1] as string)
  }
  return out
}

/** Backticked identifiers of a Markdown text (`name`, `name()`, `Name.member`: the first part). */
export function mentionedNames(markdown: string): Set<string> {
  const out = new Set<string>()
  for (const m of markdown.matchAll(/`([A-Za-z_$][\w$]*)(?:\.[\w$]+)*(?:\(\))?`/g)) {
    out.add(m[1] as string)
  }
  return out
}

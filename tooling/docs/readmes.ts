/** The READMEs whose code blocks are excerpts of real files (relative to the root). */
export const README_WITH_EXCERPTS = ['README.md', 'packages/core/README.md'] as const

/** READMEs in which every `ts` block must be an excerpt. */
export const README_ONLY_EXCERPTS = ['packages/core/README.md'] as const

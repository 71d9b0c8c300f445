export * from './entries.ts'
export { Ste } from './hw/regs.ts'

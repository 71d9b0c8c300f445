/**
 * Entry point of the explorer page.
 *
 * @module
 */

import { render } from 'preact'
import { App } from './ui/App.tsx'
import './ui/styles.css'

const root = document.getElementById('app')
if (root === null) throw new Error('no #app element')
render(<App />, root)

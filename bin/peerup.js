#!/usr/bin/env node
// Development entry: runs the TypeScript sources directly (Node 24 strips the types).
// `npm run build` bundles this same entry into the single executable dist/peerup.
import { main } from '../src/main.ts'

main()

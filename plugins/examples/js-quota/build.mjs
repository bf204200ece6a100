// Builds the component: node build.mjs OUT.wasm
// The contract is the repository's wit/ directory, world `plugin`.
import { componentize } from '@bytecodealliance/componentize-js';
import { writeFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2];
if (!out) {
  console.error('usage: node build.mjs OUT.wasm');
  process.exit(2);
}

const started = Date.now();
const { component } = await componentize({
  sourcePath: resolve(here, 'src/plugin.js'),
  witPath: resolve(here, '../../../wit'),
  worldName: 'plugin',
  // No wasi:http (the host links it only for a plugin granted http_allow)
  // and no fetch-event; stdio, clocks (Date.now) and random stay.
  disableFeatures: ['http', 'fetch-event'],
});
await writeFile(out, component);
console.error(`built ${out}: ${component.length} bytes in ${((Date.now() - started) / 1000).toFixed(1)} s`);

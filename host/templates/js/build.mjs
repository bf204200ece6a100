// Builds src/plugin.js into a WebAssembly component: node build.mjs OUT.wasm
import { componentize } from '@bytecodealliance/componentize-js';
import { readFile, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

const here = (path) => fileURLToPath(new URL(path, import.meta.url));
const out = process.argv[2] ?? '{{name}}.wasm';
const { component } = await componentize(await readFile(here('src/plugin.js'), 'utf8'), {
  witPath: here('wit'),
  worldName: 'plugin',
  // Without these the component would import wasi:http, which wasftp
  // refuses unless the operator grants the plugin an origin.
  disableFeatures: ['http', 'fetch-event'],
});
await writeFile(out, component);
console.log(`built ${out} (${component.length} bytes)`);

// Validate AsyncAPI documents with the official parser (@asyncapi/parser, pinned in
// package.json): the document's schema, its $refs, the payload and header schemas, and that each
// example matches its message. Exit 1 on any error (and on warnings with --strict), printing
// each diagnostic with its path.
//   node scripts/asyncapi-validate.mjs [--strict] docs/asyncapi.yaml ...
import { readFile } from 'node:fs/promises';
import { Parser } from '@asyncapi/parser';

const SEVERITY = ['error', 'warning', 'info', 'hint'];
const args = process.argv.slice(2);
const strict = args.includes('--strict');
const files = args.filter((arg) => arg !== '--strict');
if (files.length === 0) {
  console.error('usage: asyncapi-validate.mjs [--strict] FILE...');
  process.exit(2);
}
const parser = new Parser();
let failed = false;
for (const file of files) {
  const { document, diagnostics } = await parser.parse(await readFile(file, 'utf8'), { source: file });
  const shown = diagnostics.filter((d) => d.severity <= 1);
  for (const d of shown) {
    console.log(`${file}: ${SEVERITY[d.severity]} ${d.code}: ${d.message} at /${d.path.join('/')}`);
  }
  const bad = document === undefined || shown.some((d) => d.severity === 0 || strict);
  failed ||= bad;
  console.log(`${file}: ${bad ? 'INVALID' : 'valid'} AsyncAPI ${document ? document.version() : ''}`);
}
process.exit(failed ? 1 : 0);

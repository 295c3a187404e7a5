#!/usr/bin/env node
// Compiles PaymentApp.sol, the nitro-protocol package's Token.sol and test/BadToken.sol with the
// pinned solc-js (see package.json / package-lock.json) and writes Hardhat-style artifacts
//   { contractName, abi, bytecode, deployedBytecode }   (bytecode fields 0x-hex)
// as PaymentApp.json, Token.json and BadToken.json into $NITRO_ARTIFACTS_DIR (default
// <repo>/target/nitro-artifacts, where scripts/fetch-nitro-artifacts.sh puts the adjudicator).
//
// Then it checks keccak256(PaymentApp's runtime code) against PaymentApp.runtime-hash and exits
// non-zero on a mismatch, writing no artifact: a different compiler, setting or source (ours or
// one imported from node_modules; they are all in the metadata hash the compiler appends) gives
// other code, and the Rust client only joins channels whose app has the pinned runtime hash.
// `--write-hash` rewrites PaymentApp.runtime-hash instead (after changing the contract on purpose;
// then update PAYMENT_APP_RUNTIME_HASH in payment-channel/src/app.rs too).
//
// Usage: node contracts/build.mjs [--write-hash]     (after `npm ci --prefix contracts`)
// Reproducible: source unit names are relative to this directory (`PaymentApp.sol`,
// `test/BadToken.sol`, `@statechannels/...` for node_modules), never a path of this machine.

import { readFileSync, writeFileSync, mkdirSync, renameSync, existsSync } from 'node:fs';
import { dirname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import solc from 'solc';
import jsSha3 from 'js-sha3';

const SOLC_VERSION = '0.8.17+commit.8df45f5f.Emscripten.clang';
const SETTINGS = {
  optimizer: { enabled: true, runs: 200 },
  evmVersion: 'london',
  metadata: { bytecodeHash: 'ipfs' },
  outputSelection: {
    '*': {
      '*': [
        'abi',
        'evm.bytecode.object',
        'evm.bytecode.linkReferences',
        'evm.deployedBytecode.object',
        'evm.deployedBytecode.linkReferences',
        'evm.deployedBytecode.immutableReferences',
      ],
    },
  },
};
// artifact file name (without .json) -> [source unit name, contract name, file to read]
const here = dirname(fileURLToPath(import.meta.url));
const nodeModules = join(here, 'node_modules');
const CONTRACTS = {
  PaymentApp: ['PaymentApp.sol', 'PaymentApp', join(here, 'PaymentApp.sol')],
  Token: [
    '@statechannels/nitro-protocol/contracts/Token.sol',
    'Token',
    join(nodeModules, '@statechannels/nitro-protocol/contracts/Token.sol'),
  ],
  BadToken: ['test/BadToken.sol', 'BadToken', join(here, 'test', 'BadToken.sol')],
};
const HASH_FILE = join(here, 'PaymentApp.runtime-hash');

const writeHash = process.argv.includes('--write-hash');
const unknown = process.argv.slice(2).filter((a) => a !== '--write-hash');
if (unknown.length > 0) fail(`unknown argument(s) ${unknown.join(' ')}; usage: build.mjs [--write-hash]`);
const outDir = resolve(process.env.NITRO_ARTIFACTS_DIR || join(here, '..', 'target', 'nitro-artifacts'));

function fail(message) {
  console.error(`build.mjs: ${message}`);
  process.exit(1);
}

if (solc.version() !== SOLC_VERSION) {
  fail(`solc-js is ${solc.version()}, expected ${SOLC_VERSION}; run \`npm ci --prefix contracts\``);
}

// Imports: `@scope/pkg/...` and `pkg/...` from node_modules, anything else relative to this
// directory. Source unit names stay as written, so they are the same on every machine.
function findImports(name) {
  if (name.startsWith('/') || name.split('/').includes('..')) {
    return { error: `refusing import ${name}: not a relative source unit name` };
  }
  const candidates = name.startsWith('@')
    ? [join(nodeModules, name)]
    : [join(here, name), join(nodeModules, name)];
  for (const file of candidates) {
    if (!file.startsWith(here + sep)) continue;
    if (existsSync(file)) return { contents: readFileSync(file, 'utf8') };
  }
  return { error: `import ${name} not found in ${here} or its node_modules` };
}

const sources = {};
for (const [unit, , file] of Object.values(CONTRACTS)) sources[unit] = { content: readFileSync(file, 'utf8') };
const input = { language: 'Solidity', sources, settings: SETTINGS };
const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));

let errors = 0;
for (const e of output.errors ?? []) {
  console.error(e.formattedMessage ?? e.message);
  if (e.severity === 'error') errors += 1;
}
if (errors > 0) fail(`${errors} compiler error(s)`);

const hex = (object) => `0x${object}`;
const artifacts = {};
for (const [file, [unit, name]] of Object.entries(CONTRACTS)) {
  const c = output.contracts?.[unit]?.[name];
  if (!c) fail(`no contract ${name} in ${unit}`);
  const linkRefs = { ...c.evm.bytecode.linkReferences, ...c.evm.deployedBytecode.linkReferences };
  if (Object.keys(linkRefs).length > 0) fail(`${name} needs linked libraries: ${Object.keys(linkRefs)}`);
  if (!c.evm.bytecode.object || !c.evm.deployedBytecode.object) fail(`${name} compiled to empty code`);
  artifacts[file] = {
    contractName: name,
    abi: c.abi,
    bytecode: hex(c.evm.bytecode.object),
    deployedBytecode: hex(c.evm.deployedBytecode.object),
  };
}

// PaymentApp's runtime code must be exactly what `eth_getCode` returns once deployed, so that a
// joiner can compare hashes: no immutables (they are filled in at deployment).
const app = output.contracts[CONTRACTS.PaymentApp[0]].PaymentApp;
if (Object.keys(app.evm.deployedBytecode.immutableReferences ?? {}).length > 0) {
  fail('PaymentApp has immutables: its deployed code would differ from deployedBytecode');
}
const runtime = Buffer.from(app.evm.deployedBytecode.object, 'hex');
const runtimeHash = `0x${jsSha3.keccak256(runtime)}`;

for (const [file, a] of Object.entries(artifacts)) {
  const initSize = (a.bytecode.length - 2) / 2;
  const runtimeSize = (a.deployedBytecode.length - 2) / 2;
  console.log(`${file}: ${initSize} bytes creation code, ${runtimeSize} bytes runtime code`);
}
console.log(`PaymentApp runtime hash (keccak256 of the runtime code): ${runtimeHash}`);

if (writeHash) {
  writeIfChanged(HASH_FILE, `${runtimeHash}\n`);
  console.log(`wrote ${HASH_FILE}; update PAYMENT_APP_RUNTIME_HASH in payment-channel/src/app.rs to match`);
} else {
  const pinned = existsSync(HASH_FILE) ? readFileSync(HASH_FILE, 'utf8').trim() : '(missing)';
  if (pinned.toLowerCase() !== runtimeHash) {
    fail(
      `PaymentApp runtime hash mismatch: ${HASH_FILE} pins ${pinned}, this build gives ${runtimeHash}.\n` +
        '  The compiler, a setting or a source (PaymentApp.sol or an import) differs from the pinned build;\n' +
        '  no artifact was written. If you changed the contract on purpose, run\n' +
        '  `node contracts/build.mjs --write-hash` and update PAYMENT_APP_RUNTIME_HASH in payment-channel/src/app.rs.',
    );
  }
}

mkdirSync(outDir, { recursive: true });
for (const [file, a] of Object.entries(artifacts)) {
  const path = join(outDir, `${file}.json`);
  const status = writeIfChanged(path, `${JSON.stringify(a, null, 2)}\n`) ? 'wrote' : 'unchanged';
  console.log(`${status} ${path}`);
}

// Writes `text` to `path` unless it already holds it (keeps mtimes of an unchanged build);
// through a temporary name and a rename, so a reader never sees half a file.
function writeIfChanged(path, text) {
  if (existsSync(path) && readFileSync(path, 'utf8') === text) return false;
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, text);
  renameSync(tmp, path);
  return true;
}

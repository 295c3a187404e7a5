#!/usr/bin/env node
// Checks that PaymentApp's code on a chain hashes to contracts/PaymentApp.runtime-hash.
//
//   node contracts/check-deployed.mjs RPC_URL ADDRESS   checks the code already at ADDRESS
//   node contracts/check-deployed.mjs RPC_URL           deploys PaymentApp.json from the node's
//                                                       first unlocked account (a dev chain such
//                                                       as anvil) and checks the code it gets
//
// Reads PaymentApp.json from $NITRO_ARTIFACTS_DIR (default <repo>/target/nitro-artifacts; run
// scripts/build-contracts.sh first). JSON-RPC over fetch; js-sha3 for keccak256.

import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import jsSha3 from 'js-sha3';

const here = dirname(fileURLToPath(import.meta.url));
const [url, address] = process.argv.slice(2);
if (!url) {
  console.error('usage: check-deployed.mjs RPC_URL [ADDRESS]');
  process.exit(2);
}
const pinned = readFileSync(join(here, 'PaymentApp.runtime-hash'), 'utf8').trim();

let id = 0;
async function rpc(method, params) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ jsonrpc: '2.0', id: ++id, method, params }),
  });
  const body = await res.json();
  if (body.error) throw new Error(`${method}: ${JSON.stringify(body.error)}`);
  return body.result;
}

let at = address;
if (!at) {
  const dir = resolve(process.env.NITRO_ARTIFACTS_DIR || join(here, '..', 'target', 'nitro-artifacts'));
  const { bytecode } = JSON.parse(readFileSync(join(dir, 'PaymentApp.json'), 'utf8'));
  const [from] = await rpc('eth_accounts', []);
  const tx = await rpc('eth_sendTransaction', [{ from, data: bytecode, gas: '0x2dc6c0' }]);
  let receipt = null;
  for (let i = 0; i < 100 && !receipt; i++) {
    receipt = await rpc('eth_getTransactionReceipt', [tx]);
    if (!receipt) await new Promise((r) => setTimeout(r, 100));
  }
  if (!receipt || receipt.status !== '0x1') throw new Error(`deployment ${tx} failed: ${JSON.stringify(receipt)}`);
  at = receipt.contractAddress;
  console.log(`deployed PaymentApp at ${at} (gas ${parseInt(receipt.gasUsed, 16)})`);
}
const code = await rpc('eth_getCode', [at, 'latest']);
const got = `0x${jsSha3.keccak256(Buffer.from(code.slice(2), 'hex'))}`;
console.log(`code at ${at}: ${(code.length - 2) / 2} bytes, keccak256 ${got}`);
if (got !== pinned.toLowerCase()) {
  console.error(`MISMATCH: PaymentApp.runtime-hash pins ${pinned}`);
  process.exit(1);
}
console.log('matches PaymentApp.runtime-hash');

#!/usr/bin/env node
// web3torrent's per-payment cost, on this machine, with the library it used (ethers v5).
//
// One web3torrent payment is two Nitro G1 states (docs: the project's shared/reference/web3torrent.md
// §3.5, §4.3, §5.2): the payer's payment state at an odd turn (payer balance - x, beneficiary
// + x), then the beneficiary's accept state at turn + 1 (same outcome). For each state the mover
// hashes it (G1 `hashState`: channelId, appPartHash, outcomeHash, then the State tuple) and
// signs the eth_sign digest of the hash (`signingKey.signDigest(hashMessage(arrayify(h)))`); the
// other side hashes the received state again and recovers the signer (`recoverAddress`), which
// must be the mover. Per payment: 4 state hashes, 2 signDigest, 2 recoverAddress.
//
// The wallet's own overheads (xstate machines, the iframe postMessage hop, store writes, JSON)
// are NOT counted: this is a lower bound of what web3torrent spent per payment.
//
// Usage: npm install && node payment.js [--seconds 5] [--out result.json]

'use strict';
const { ethers } = require('ethers');
const { defaultAbiCoder: abi, keccak256, hashMessage, arrayify, splitSignature, joinSignature,
  recoverAddress, SigningKey, computeAddress, hexZeroPad } = ethers.utils;
const { BigNumber } = ethers;

const args = process.argv.slice(2);
const arg = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
const SECONDS = Number(arg('--seconds', '5'));
const OUT = arg('--out', null);

const beneficiaryKey = new SigningKey('0x' + '22'.repeat(32));
const payerKey = new SigningKey('0x' + '11'.repeat(32));
const beneficiary = computeAddress(beneficiaryKey.publicKey);
const payer = computeAddress(payerKey.publicKey);
const ETH_ASSET_HOLDER = '0x8e409FB551fC96f5129cb41e7194e8F8CB9df0a0';
const SINGLE_ASSET_PAYMENTS = '0x5cb071f46fb06333f33dcae7aaf8c2606d7a078d';

// G1 (§5.2): participants in Index order, beneficiary = 0, payer = 1.
const channel = { chainId: 5, participants: [beneficiary, payer], channelNonce: 7 };

function channelId(ch) {
  return keccak256(abi.encode(['uint256', 'address[]', 'uint256'],
    [ch.chainId, ch.participants, ch.channelNonce]));
}

function encodeOutcome(balances) {
  const allocation = abi.encode(['tuple(bytes32 destination, uint256 amount)[]'],
    [[{ destination: hexZeroPad(beneficiary, 32), amount: balances[0] },
      { destination: hexZeroPad(payer, 32), amount: balances[1] }]]);
  const content = abi.encode(['tuple(uint8 assetOutcomeType, bytes allocationOrGuarantee)'],
    [{ assetOutcomeType: 0, allocationOrGuarantee: allocation }]);
  return abi.encode(['tuple(address assetHolderAddress, bytes outcomeContent)[]'],
    [[{ assetHolderAddress: ETH_ASSET_HOLDER, outcomeContent: content }]]);
}

function hashState(s) {
  const appPartHash = keccak256(abi.encode(['uint256', 'address', 'bytes'],
    [s.challengeDuration, s.appDefinition, s.appData]));
  const outcomeHash = keccak256(abi.encode(['bytes'], [encodeOutcome(s.balances)]));
  return keccak256(abi.encode(
    ['tuple(uint256 turnNum, bool isFinal, bytes32 channelId, bytes32 appPartHash, bytes32 outcomeHash)'],
    [{ turnNum: s.turnNum, isFinal: s.isFinal, channelId: channelId(s.channel), appPartHash, outcomeHash }]));
}

function signState(s, key) {
  return joinSignature(splitSignature(key.signDigest(hashMessage(arrayify(hashState(s))))));
}

function checkState(s, sig, expected) {
  const signer = recoverAddress(hashMessage(arrayify(hashState(s))), sig);
  if (signer !== expected) throw new Error('bad signature');
}

const deposit = BigNumber.from(10).pow(30);
let state = {
  channel, turnNum: 4, isFinal: false, challengeDuration: 300,
  appDefinition: SINGLE_ASSET_PAYMENTS, appData: '0x', balances: [BigNumber.from(0), deposit],
};

// One payment of `x` wei: payment state (payer), accept state (beneficiary).
function payOnce(x) {
  const pay = { ...state, turnNum: state.turnNum + 1,
    balances: [state.balances[0].add(x), state.balances[1].sub(x)] };
  const paySig = signState(pay, payerKey);
  checkState(pay, paySig, payer);
  const accept = { ...pay, turnNum: pay.turnNum + 1 };
  const acceptSig = signState(accept, beneficiaryKey);
  checkState(accept, acceptSig, beneficiary);
  state = accept;
}

// Components, for the record.
const h = hashState(state);
const digest = hashMessage(arrayify(h));
const sig = joinSignature(payerKey.signDigest(digest));
const parts = {
  hash_state: () => hashState(state),
  sign_digest: () => payerKey.signDigest(digest),
  recover_address: () => recoverAddress(digest, sig),
  whole_payment: () => payOnce(16384),
};

// Median of per-call times over batches of ~50 ms, for `seconds` (after 1 s of warm-up).
function measure(fn, seconds) {
  const warmEnd = Date.now() + 1000;
  let n = 0;
  while (Date.now() < warmEnd) { fn(); n++; }
  const batch = Math.max(1, Math.round(n / 20));
  const samples = [];
  const end = Date.now() + seconds * 1000;
  while (Date.now() < end || samples.length < 10) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < batch; i++) fn();
    samples.push(Number(process.hrtime.bigint() - t0) / batch);
  }
  samples.sort((a, b) => a - b);
  return { median_ns: samples[samples.length >> 1], min_ns: samples[0],
    max_ns: samples[samples.length - 1], samples: samples.length, batch };
}

const result = {
  what: 'web3torrent per-payment cost: 2 G1 states, each hashed by both sides, signed by the mover, recovered by the other',
  node: process.version, ethers: ethers.version, when: new Date().toISOString(), results: {},
};
for (const [name, fn] of Object.entries(parts)) {
  result.results[name] = measure(fn, name === 'whole_payment' ? SECONDS : SECONDS / 2);
  const r = result.results[name];
  console.error(`${name.padEnd(16)} median ${(r.median_ns / 1e6).toFixed(3)} ms (${r.samples} samples of ${r.batch})`);
}
const json = JSON.stringify(result, null, 2);
if (OUT) require('fs').writeFileSync(OUT, json + '\n');
console.log(json);

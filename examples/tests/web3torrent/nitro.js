// Helpers a JavaScript peer uses on the JSON it receives: EIP-55 checksums and channel ids,
// written from the Nitro encodings (no statechannels code). Pure JS: js-sha3 for keccak-256.
'use strict'
const { keccak256 } = require('js-sha3')

// EIP-55: the hex digits of the address, upper case where keccak256(lower-case hex) has a
// nibble >= 8.
function checksum (address) {
  const hex = address.toLowerCase().replace(/^0x/, '')
  if (!/^[0-9a-f]{40}$/.test(hex)) throw new Error('not an address: ' + address)
  const hash = keccak256(hex)
  let out = '0x'
  for (let i = 0; i < 40; i++) out += parseInt(hash[i], 16) >= 8 ? hex[i].toUpperCase() : hex[i]
  return out
}

// One 32-byte ABI word (hex, no prefix) of a non-negative integer given as a BigInt.
function word (n) {
  if (typeof n !== 'bigint' || n < 0n || n >= (1n << 256n)) throw new Error('bad uint: ' + n)
  return n.toString(16).padStart(64, '0')
}

function addressWord (a) {
  return word(BigInt('0x' + a.toLowerCase().replace(/^0x/, '')))
}

// An integer as a JSON peer gets it: a decimal string is exact; a JSON number is exact only up
// to 2^53 - 1 (JSON.parse has already rounded it otherwise).
function uint (v) {
  if (typeof v === 'string' && /^(0|[1-9][0-9]*)$/.test(v)) return BigInt(v)
  if (typeof v === 'number' && Number.isInteger(v) && v >= 0) return BigInt(v)
  throw new Error('not an unsigned integer: ' + JSON.stringify(v))
}

// Nitro v2 (go-nitro): keccak256(abi.encode(address[] participants, uint256 channelNonce,
// address appDefinition, uint48 challengeDuration)).
function channelIdV2 (fixed) {
  const head = [
    word(4n * 32n), // offset of the dynamic participants array
    word(uint(fixed.channelNonce)),
    addressWord(fixed.appDefinition),
    word(uint(fixed.challengeDuration))
  ]
  const tail = [word(BigInt(fixed.participants.length))].concat(fixed.participants.map(addressWord))
  return '0x' + keccak256(Buffer.from(head.concat(tail).join(''), 'hex'))
}

// Nitro v1 (what web3torrent's wallet used): keccak256(abi.encode(uint256 chainId,
// address[] participants, uint256 channelNonce)).
function channelIdV1 (chainId, participants, nonce) {
  const head = [word(BigInt(chainId)), word(3n * 32n), word(BigInt(nonce))]
  const tail = [word(BigInt(participants.length))].concat(participants.map(addressWord))
  return '0x' + keccak256(Buffer.from(head.concat(tail).join(''), 'hex'))
}

module.exports = { checksum, channelIdV2, channelIdV1, uint }

// `node nitro.js '<envelope json>'`: prints the channel id of a proposal's fixed part, computed
// from the values JSON.parse gives.
if (require.main === module) {
  const envelope = JSON.parse(process.argv[2])
  const fixed = envelope.data.p.f
  console.log(JSON.stringify({
    channelId: channelIdV2(fixed),
    nonceType: typeof fixed.channelNonce,
    recipient: envelope.recipient,
    sender: envelope.sender
  }))
}

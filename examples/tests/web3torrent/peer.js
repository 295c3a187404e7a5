// A peer that follows web3torrent's observable paid-streaming rules (reference: web3torrent.md
// §1.3 and §3 of the project's notes), written from those rules on bittorrent-protocol@3 and
// bencode@2.0.1, the versions web3torrent pinned. It cannot pay: web3torrent's wallet spoke
// Nitro v1, so where the original would hand a notice to its wallet this peer records it.
//
//   node peer.js '<json options>'
//   options: {mode: "leech"|"seed", infoHash, pieces, pieceLength, account, outcome,
//             peer: "127.0.0.1:port" (leech), quietMs, maxMs}
//
// Prints one JSON line per event; every extension payload in and out with its exact bytes
// (`raw`, latin1). Exits after `quietMs` without a paid-streaming message once its work is done,
// or after `maxMs`.
'use strict'
const net = require('net')
const crypto = require('crypto')
const Protocol = require('bittorrent-protocol')
const bencode = require('bencode')
const { checksum, channelIdV2, channelIdV1 } = require('./nitro.js')

const opts = JSON.parse(process.argv[2])
const BLOCK_LENGTH = 1 << 14
const PEER_TRUST = 5
const EXT = 'paidStreamingExtension'

function log (event, fields) {
  process.stdout.write(JSON.stringify(Object.assign({ event }, fields)) + '\n')
}

let finished = false
function finish (reason) {
  if (finished) return
  finished = true
  log('exit', { reason })
  process.exit(0)
}
setTimeout(() => finish('max time'), opts.maxMs || 20000)

let quietTimer = null
let workDone = false
function activity () {
  if (quietTimer) clearTimeout(quietTimer)
  if (workDone) quietTimer = setTimeout(() => finish('quiet'), opts.quietMs || 2000)
}

function setupWire (socket) {
  const wire = new Protocol()
  socket.pipe(wire).pipe(socket)
  socket.on('error', (err) => log('socket_error', { error: err.message }))
  socket.on('close', () => { log('closed', {}); finish('closed') })

  // The paid-streaming extension as a bittorrent-protocol extension.
  function PSE (w) {
    this.wire = w
    this.pseAccount = checksum(opts.account) // the wallet's signing address, EIP-55
    this.peerAccount = undefined
    this.isBeingChoked = false
    this.leechingChannelId = undefined
    this.seedingChannelId = undefined
    w.extendedHandshake.pseAccount = this.pseAccount
    w.extendedHandshake.outcomeAddress = checksum(opts.outcome)
  }
  PSE.prototype.name = EXT
  PSE.prototype.onExtendedHandshake = function (handshake) {
    // Values arrive as Buffers (no decode encoding): toString() as the original does.
    const m = {}
    for (const k of Object.keys(handshake.m || {})) m[k] = handshake.m[k]
    this.peerAccount = handshake.pseAccount && handshake.pseAccount.toString()
    log('extended_handshake', {
      keys: Object.keys(handshake).sort(),
      m,
      pseAccount: this.peerAccount,
      outcomeAddress: handshake.outcomeAddress && handshake.outcomeAddress.toString()
    })
    if (opts.mode === 'leech') {
      wire.interested()
      requestMore()
    }
  }
  PSE.prototype.send = function (command, data) {
    if (!this.peerAccount) { log('warning', { text: 'This client will block all non-web3torrent leechers' }); return }
    const payload = bencode.encode({ msg_type: 0, command, data })
    log('send', { command, raw: payload.toString('latin1') })
    this.wire.extended(EXT, payload)
  }
  PSE.prototype.ack = function () { this.send('ack', {}) }
  PSE.prototype.onMessage = function (buffer) {
    const raw = buffer.toString('latin1')
    let decoded
    try {
      decoded = bencode.decode(buffer, undefined, undefined, 'utf8')
    } catch (err) {
      log('recv', { raw, error: 'undecodable: ' + err.message })
      return
    }
    const { command } = decoded
    let { data } = decoded
    activity()
    switch (command) {
      case 'ack':
        log('recv', { command, raw })
        return
      case 'start':
        log('recv', { command, raw })
        this.isBeingChoked = false
        break
      case 'stop':
        log('recv', { command, raw, data, wasBlocked: this.isBeingChoked })
        this.leechingChannelId = data
        if (this.isBeingChoked) { this.ack(); return }
        this.isBeingChoked = true
        break
      case 'permanent-stop':
        log('recv', { command, raw })
        this.isBeingChoked = true
        break
      case 'message': {
        data = JSON.parse(data.message)
        const accepted = data.recipient === this.pseAccount // a plain string comparison
        log('recv', { command, raw, accepted, recipient: data.recipient, sender: data.sender })
        if (!accepted) return
        break
      }
      default:
        log('recv', { command, raw })
    }
    this.ack()
    onNotice(command, data)
  }
  wire.use(PSE)
  const pse = wire[EXT]

  // Leecher: the notices web3torrent's client acts on (§3.4).
  function onNotice (command, data) {
    if (command === 'stop') {
      // makePayment: min(outstanding requests, PEER_TRUST) blocks. The wallet would sign a
      // Nitro v1 state here; this peer cannot pay our Nitro v2 channel, so it records the intent.
      const blocks = Math.min(wire.requests.length, PEER_TRUST)
      log('payment', { channelId: pse.leechingChannelId, amount: blocks * BLOCK_LENGTH })
    } else if (command === 'start') {
      requestMore()
    } else if (command === 'message') {
      // pushMessage to the wallet. A proposal of ours: the channel id recomputed from JSON.parse.
      if (data.data && data.data.p && data.data.p.f) {
        log('proposal', { channelId: channelIdV2(data.data.p.f), nonceType: typeof data.data.p.f.channelNonce })
      }
    }
  }

  let requested = 0
  function requestMore () {
    // Two blocks of piece 0, as webtorrent pipelines them, once unchoked.
    if (wire.peerChoking || requested > 0) return
    for (let i = 0; i < 2; i++) {
      const offset = i * BLOCK_LENGTH
      requested++
      log('request', { index: 0, offset, length: BLOCK_LENGTH })
      wire.request(0, offset, BLOCK_LENGTH, (err) => { if (err) log('request_error', { error: err.message }) })
    }
  }

  wire.on('handshake', (infoHash, peerId, extensions) => {
    log('handshake', { infoHash, extended: extensions.extended })
    if (opts.mode === 'seed') wire.handshake(opts.infoHash, crypto.randomBytes(20))
  })
  wire.on('unchoke', () => { log('unchoke', {}); if (pse.peerAccount) requestMore() })
  wire.on('choke', () => log('choke', {}))
  wire.on('piece', (index, offset, buffer) => {
    log('piece', { index, offset, length: buffer.length })
    activity()
  })
  wire.on('interested', () => {
    log('interested', {})
    wire.unchoke()
  })

  // Seeder: per-request pricing (§3.2). Nothing is served without a channel and a payment.
  let buffer = 0
  wire.on('request', (index, offset, length) => {
    log('peer_request', { index, offset, length })
    activity()
    if (!pse.seedingChannelId) {
      createPaymentChannel()
      blockPeer() // response(false): never answered
    } else if (length > buffer) {
      blockPeer()
    }
  })
  function createPaymentChannel () {
    // The wallet's CreateChannel (Nitro v1: participants [beneficiary = us, payer = them]),
    // sent to the payer as a client-api-schema message.
    const participants = [pse.pseAccount, pse.peerAccount]
    const nonce = 1 + Math.floor(Math.random() * 1000)
    const chainId = '0x539'
    pse.seedingChannelId = channelIdV1(chainId, participants, nonce)
    const message = {
      recipient: pse.peerAccount,
      sender: pse.pseAccount,
      data: {
        signedStates: [{
          chainId,
          participants: participants.map((a, i) => ({ participantId: a, signingAddress: a, destination: checksum(i === 0 ? opts.outcome : a) })),
          channelNonce: nonce,
          appDefinition: checksum('0x' + '4'.repeat(40)),
          challengeDuration: 300,
          outcome: [{ assetHolderAddress: checksum('0x' + '5'.repeat(40)), allocationItems: [] }],
          turnNum: 0,
          appData: '0x' + '0'.repeat(64),
          isFinal: false,
          channelId: pse.seedingChannelId,
          signatures: ['0x' + crypto.randomBytes(65).toString('hex')]
        }],
        objectives: [{ type: 'OpenChannel', participants: [], data: { targetChannelId: pse.seedingChannelId, fundingStrategy: 'Direct' } }]
      }
    }
    pse.send('message', { message: JSON.stringify(message) })
    if (opts.lowerCaseCopy) {
      // The same message to our account written in lower case (case-insensitive receipt).
      pse.send('message', { message: JSON.stringify(Object.assign({}, message, { recipient: pse.peerAccount.toLowerCase() })) })
    }
  }
  function blockPeer () {
    pse.send('stop', pse.seedingChannelId)
    workDone = true
    activity()
  }

  wire.on('bitfield', () => log('bitfield', {}))
  wire.on('extended', (ext) => { if (ext === 'handshake') activity() })
  return wire
}

if (opts.mode === 'leech') {
  const [host, port] = opts.peer.split(':')
  const socket = net.connect(Number(port), host, () => {
    const wire = setupWire(socket)
    wire.handshake(opts.infoHash, crypto.randomBytes(20))
    // Done once a STOP and a proposal came; then wait quietly for anything served.
    const check = setInterval(() => {
      if (wire[EXT].leechingChannelId) { workDone = true; activity(); clearInterval(check) }
    }, 50)
  })
  socket.on('error', (err) => { log('socket_error', { error: err.message }); finish('connect failed') })
} else {
  const server = net.createServer((socket) => {
    const wire = setupWire(socket)
    wire.on('handshake', () => {
      const bits = Buffer.alloc(Math.ceil(opts.pieces / 8))
      for (let i = 0; i < opts.pieces; i++) bits[i >> 3] |= 0x80 >> (i & 7)
      wire.bitfield(bits)
    })
  })
  server.listen(0, '127.0.0.1', () => log('listening', { port: server.address().port }))
}

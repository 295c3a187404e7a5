// A stock BitTorrent peer for examples/tests/webtorrent.rs: webtorrent 1.9 (npm) in Node, over
// plain TCP only: no DHT, no trackers, no local service discovery, no WebRTC, no uTP.
//
//   node peer.js download FILE.torrent DIR HOST:PORT SECONDS
//       downloads into DIR from the one peer HOST:PORT; stops when done or after SECONDS.
//   node peer.js seed FILE OUT.torrent
//       seeds FILE (webtorrent makes the .torrent, written to OUT.torrent, without trackers);
//       runs until killed.
//
// Prints JSON lines on stdout: {"event":"listening","port"}, {"event":"wire","addr"},
// {"event":"block","index","offset","length","sha1"} for every block received,
// {"event":"choke"|"unchoke"|"reject",...}, {"event":"uploaded","bytes"} (seeding: the total, when
// it changed), {"event":"done"} and {"event":"exit","reason","downloaded","blocks","rejects",
// "choked"}. Needs NODE_PATH to hold webtorrent (scripts/install-webtorrent.sh).
'use strict'

const crypto = require('crypto')
const fs = require('fs')
const WebTorrent = require('webtorrent')

function out (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

function fail (message) {
  out({ event: 'error', message })
  process.exit(2)
}

const client = new WebTorrent({
  dht: false,
  tracker: false,
  lsd: false,
  utp: false,
  webSeeds: false
})
client.on('error', err => fail(String(err && err.message ? err.message : err)))

const [mode, ...args] = process.argv.slice(2)

if (mode === 'download') {
  const [torrentFile, dir, peer, seconds] = args
  if (!torrentFile || !dir || !peer || !seconds) fail('usage: download FILE.torrent DIR HOST:PORT SECONDS')
  let blocks = 0
  let downloaded = 0
  let rejects = 0
  let choked = true
  let finished = false
  const finish = reason => {
    if (finished) return
    finished = true
    out({ event: 'exit', reason, downloaded, blocks, rejects, choked })
    client.destroy(() => process.exit(0))
  }
  const torrent = client.add(fs.readFileSync(torrentFile), { path: dir, announce: [] })
  torrent.on('error', err => fail(String(err.message || err)))
  torrent.on('wire', (wire, addr) => {
    out({ event: 'wire', addr })
    wire.on('piece', (index, offset, buffer) => {
      blocks += 1
      downloaded += buffer.length
      const sha1 = crypto.createHash('sha1').update(buffer).digest('hex')
      out({ event: 'block', index, offset, length: buffer.length, sha1 })
    })
    wire.on('choke', () => {
      choked = true
      out({ event: 'choke' })
    })
    wire.on('unchoke', () => {
      choked = false
      out({ event: 'unchoke' })
    })
    wire.on('reject', (index, offset, length) => {
      rejects += 1
      out({ event: 'reject', index, offset, length })
    })
  })
  torrent.on('ready', () => torrent.addPeer(peer))
  torrent.on('done', () => {
    out({ event: 'done' })
    finish('done')
  })
  setTimeout(() => finish('timeout'), Number(seconds) * 1000)
} else if (mode === 'seed') {
  const [file, outTorrent] = args
  if (!file || !outTorrent) fail('usage: seed FILE OUT.torrent')
  client.seed(file, { announceList: [] }, torrent => {
    fs.writeFileSync(outTorrent, torrent.torrentFile)
    let reported = 0
    torrent.on('wire', (wire, addr) => out({ event: 'wire', addr }))
    setInterval(() => {
      if (torrent.uploaded !== reported) out({ event: 'uploaded', bytes: torrent.uploaded })
      reported = torrent.uploaded
    }, 500)
    out({ event: 'listening', port: client.address().port, info_hash: torrent.infoHash })
  })
} else {
  fail('usage: peer.js download|seed ...')
}

// Control program for WebTorrent's bittorrent-dht in the mldht interop lab.
//
// Runs any number of DHT instances in one Node.js process, driven by line-delimited JSON
// on stdin; every command gets exactly one JSON line back on stdout:
//
//   {"id": 1, "cmd": "start", "name": "w1", "address": "198.18.11.1", "port": 0,
//    "bootstrap": ["198.18.1.1:6881"], "host": "198.18.11.1", "timeoutMs": 10000}
//   -> {"id": 1, "ok": true, "nodeId": "<hex>", "address": "...", "port": 40001,
//       "readyMs": 12.3, "ready": true}
//
// Commands (all take "name" except quit):
//   start     address, port, bootstrap (list of "ip:port", REQUIRED: an empty list means
//             no bootstrap at all; the public routers are never used), host (optional:
//             the address announced for this node itself), nodeId (optional hex),
//             timeoutMs (how long to wait for the bootstrap to end)
//   announce  infohash (hex), port (0: implied port), timeoutMs -> {ms, nodes}
//   lookup    infohash (hex), timeoutMs -> {peers: [{host, port, firstMs, from}], ms,
//             firstPeerMs, visited}; `from` lists where each peer came from: "local"
//             (the node's own store) or the "ip:port" of each node whose reply held it
//   table     -> {nodes: [{id, host, port}]}
//   addNode   host, port, nodeId (optional hex: without it the node is pinged first),
//             waitMs (optional: wait up to this long for the node to enter the table)
//   put       BEP 44. value (UTF-8 string); seed (64 hex digits: a mutable item signed with
//             the ed25519 key of that seed; without it, immutable), salt (UTF-8), seq, cas,
//             timeoutMs -> {target, nodes (puts answered), publicKey}
//   get       target (40 hex), salt (UTF-8, mutable items), timeoutMs
//             -> {found, value (UTF-8), seq, publicKey}
//   items     -> {items: {targetHex: {value, seq, publicKey}}} (what this node stores)
//   stats     -> {queries: {method: count}, queriesFrom: {"ip:port": {method: count}},
//                 announced: [{infohash, host, port, fromHost, fromPort}], warnings: [...]}
//   destroy   -> {}
//   quit      destroys everything and exits.
//
// Errors are answered as {"id": ..., "ok": false, "error": "..."}; nothing waits forever:
// every asynchronous command has a timeout (timeoutMs, default 10 s).

import DHT from 'bittorrent-dht'
import crypto from 'crypto'
import readline from 'readline'

const nodes = new Map()
const DEFAULT_TIMEOUT_MS = 10000
const MAX_WARNINGS = 50

function send (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

function hexBuffer (value, what) {
  if (typeof value !== 'string' || !/^[0-9a-fA-F]{40}$/.test(value)) {
    throw new Error(`${what} must be 40 hex digits`)
  }
  return Buffer.from(value, 'hex')
}

function parseAddress (spec) {
  if (typeof spec !== 'string') throw new Error(`bad address ${JSON.stringify(spec)}`)
  const colon = spec.lastIndexOf(':')
  const host = spec.slice(0, colon)
  const port = Number(spec.slice(colon + 1))
  if (colon <= 0 || !Number.isInteger(port) || port <= 0 || port > 65535) {
    throw new Error(`bad address ${spec} (want ip:port)`)
  }
  return { host, port }
}

function getNode (name) {
  const entry = nodes.get(name)
  if (!entry) throw new Error(`no DHT named ${JSON.stringify(name)}`)
  return entry
}

function since (start) {
  return Math.round(Number(process.hrtime.bigint() - start) / 1e4) / 100 // ms, 2 decimals
}

function withTimeout (ms, what, run) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms)
    run(value => { clearTimeout(timer); resolve(value) },
      err => { clearTimeout(timer); reject(err) })
  })
}

// ed25519 from Node's own crypto (bittorrent-dht takes sign/verify functions): a seed and
// a raw public key are wrapped in the fixed DER prefixes of PKCS#8 and SPKI.
const PKCS8_ED25519 = Buffer.from('302e020100300506032b657004220420', 'hex')
const SPKI_ED25519 = Buffer.from('302a300506032b6570032100', 'hex')

function privateKeyOf (seedHex) {
  if (typeof seedHex !== 'string' || !/^[0-9a-fA-F]{64}$/.test(seedHex)) {
    throw new Error('seed must be 64 hex digits')
  }
  return crypto.createPrivateKey({
    key: Buffer.concat([PKCS8_ED25519, Buffer.from(seedHex, 'hex')]), format: 'der', type: 'pkcs8'
  })
}

function rawPublicKey (privateKey) {
  const jwk = crypto.createPublicKey(privateKey).export({ format: 'jwk' })
  return Buffer.from(jwk.x, 'base64url')
}

function verify (signature, message, publicKey) {
  try {
    const key = crypto.createPublicKey({
      key: Buffer.concat([SPKI_ED25519, Buffer.from(publicKey)]), format: 'der', type: 'spki'
    })
    return crypto.verify(null, Buffer.from(message), key, Buffer.from(signature))
  } catch (err) {
    return false
  }
}

function tableOf (dht) {
  return dht.nodes.toArray().map(n => ({
    id: Buffer.from(n.id).toString('hex'), host: n.host, port: n.port
  }))
}

async function start (cmd) {
  if (typeof cmd.name !== 'string' || !cmd.name) throw new Error('start needs a name')
  if (nodes.has(cmd.name)) throw new Error(`DHT ${cmd.name} already started`)
  if (!Array.isArray(cmd.bootstrap)) {
    // Never let bittorrent-dht fall back on its public routers.
    throw new Error('start needs an explicit bootstrap list (may be empty)')
  }
  if (typeof cmd.address !== 'string') throw new Error('start needs an address to bind')
  const bootstrap = cmd.bootstrap.map(parseAddress)
  const opts = { bootstrap: bootstrap.length ? bootstrap : false, verify }
  if (cmd.host) opts.host = cmd.host
  if (cmd.nodeId) opts.nodeId = hexBuffer(cmd.nodeId, 'nodeId')
  const dht = new DHT(opts)
  const entry = {
    dht,
    queries: {},
    queriesFrom: {},
    announced: [],
    warnings: [],
    errors: []
  }
  nodes.set(cmd.name, entry)
  const record = (list, err) => {
    if (list.length < MAX_WARNINGS) list.push(String(err && err.message ? err.message : err))
  }
  dht.on('warning', err => record(entry.warnings, err))
  dht.on('error', err => record(entry.errors, err))
  dht._rpc.on('query', (query, peer) => {
    const method = query && query.q ? Buffer.from(query.q).toString() : '?'
    entry.queries[method] = (entry.queries[method] || 0) + 1
    const from = `${peer.address}:${peer.port}`
    const counts = entry.queriesFrom[from] || (entry.queriesFrom[from] = {})
    counts[method] = (counts[method] || 0) + 1
  })
  dht.on('announce', (peer, infoHash, from) => {
    if (entry.announced.length < 1000) {
      entry.announced.push({
        infohash: Buffer.from(infoHash).toString('hex'),
        host: peer.host,
        port: peer.port,
        fromHost: from && from.host,
        fromPort: from && from.port
      })
    }
  })
  const started = process.hrtime.bigint()
  const timeoutMs = cmd.timeoutMs || DEFAULT_TIMEOUT_MS
  // listen() in the same tick as the constructor: the bootstrap find_node (sent on the
  // next tick) then leaves from the bound address, never from an automatic 0.0.0.0 bind.
  const listening = withTimeout(timeoutMs, 'listen', (resolve, reject) => {
    dht.once('listening', resolve)
    dht.once('error', reject)
    // k-rpc-socket reports bind failures other than EACCES/EADDRINUSE as warnings.
    dht.once('warning', err => { if (!dht.listening) reject(err) })
  })
  const ready = withTimeout(timeoutMs, 'bootstrap', resolve => {
    if (dht.ready) resolve()
    else dht.once('ready', resolve)
  })
  dht.listen(cmd.port || 0, cmd.address)
  try {
    await listening
  } catch (err) {
    nodes.delete(cmd.name)
    dht.destroy()
    throw err
  }
  let isReady = true
  let readyError = null
  try {
    await ready
  } catch (err) {
    isReady = false
    readyError = err.message
  }
  const address = dht.address()
  return {
    nodeId: Buffer.from(dht.nodeId).toString('hex'),
    address: address.address,
    port: address.port,
    ready: isReady,
    readyError,
    readyMs: since(started),
    table: tableOf(dht)
  }
}

async function announce (cmd) {
  const { dht } = getNode(cmd.name)
  const infoHash = hexBuffer(cmd.infohash, 'infohash')
  const port = cmd.port || 0
  const started = process.hrtime.bigint()
  const timeoutMs = cmd.timeoutMs || DEFAULT_TIMEOUT_MS
  const nodesReached = await withTimeout(timeoutMs, 'announce', (resolve, reject) => {
    dht.announce(infoHash, port, (err, n) => err ? reject(err) : resolve(n))
  })
  return { ms: since(started), nodes: nodesReached }
}

async function lookup (cmd) {
  const { dht } = getNode(cmd.name)
  const infoHash = hexBuffer(cmd.infohash, 'infohash')
  const timeoutMs = cmd.timeoutMs || DEFAULT_TIMEOUT_MS
  const peers = []
  const seen = new Map()
  let firstPeerMs = null
  const started = process.hrtime.bigint()
  const onPeer = (peer, hash, from) => {
    if (!Buffer.from(hash).equals(infoHash)) return
    const key = `${peer.host}:${peer.port}`
    // 'local': from this node's own peer store; otherwise the node whose reply held it.
    const source = from ? `${from.address || from.host}:${from.port}` : 'local'
    let entry = seen.get(key)
    if (!entry) {
      entry = { host: peer.host, port: peer.port, firstMs: since(started), from: [] }
      seen.set(key, entry)
      peers.push(entry)
      if (firstPeerMs === null) firstPeerMs = entry.firstMs
    }
    if (!entry.from.includes(source)) entry.from.push(source)
  }
  dht.on('peer', onPeer)
  let abort = null
  try {
    const visited = await withTimeout(timeoutMs, 'lookup', (resolve, reject) => {
      abort = dht.lookup(infoHash, (err, n) => err ? reject(err) : resolve(n))
    })
    return { peers, ms: since(started), firstPeerMs, visited }
  } finally {
    if (abort) abort()
    // 'peer' events of the local store are emitted on the next tick: let them through.
    setImmediate(() => dht.removeListener('peer', onPeer))
  }
}

async function put (cmd) {
  const { dht } = getNode(cmd.name)
  if (typeof cmd.value !== 'string') throw new Error('put needs a value (string)')
  const opts = { v: Buffer.from(cmd.value) }
  let publicKey = null
  if (cmd.seed) {
    const privateKey = privateKeyOf(cmd.seed)
    publicKey = rawPublicKey(privateKey)
    opts.k = publicKey
    opts.seq = cmd.seq === undefined ? 1 : cmd.seq
    opts.sign = buf => crypto.sign(null, buf, privateKey)
    if (cmd.salt) opts.salt = Buffer.from(cmd.salt)
    if (cmd.cas !== undefined) opts.cas = cmd.cas
  }
  const started = process.hrtime.bigint()
  const result = await withTimeout(cmd.timeoutMs || DEFAULT_TIMEOUT_MS, 'put', (resolve, reject) => {
    dht.put(opts, (err, target, n) => err ? reject(err) : resolve({ target, n }))
  })
  return {
    target: Buffer.from(result.target).toString('hex'),
    nodes: result.n,
    publicKey: publicKey && publicKey.toString('hex'),
    ms: since(started)
  }
}

async function get (cmd) {
  const { dht } = getNode(cmd.name)
  const target = hexBuffer(cmd.target, 'target')
  const opts = { cache: false }
  if (cmd.salt) opts.salt = Buffer.from(cmd.salt)
  const started = process.hrtime.bigint()
  const found = await withTimeout(cmd.timeoutMs || DEFAULT_TIMEOUT_MS, 'get', (resolve, reject) => {
    dht.get(target, opts, (err, res) => err ? reject(err) : resolve(res))
  })
  if (!found) return { found: false, ms: since(started) }
  return {
    found: true,
    value: Buffer.from(found.v).toString(),
    seq: found.seq === undefined ? null : found.seq,
    publicKey: found.k ? Buffer.from(found.k).toString('hex') : null,
    ms: since(started)
  }
}

function items (cmd) {
  const { dht } = getNode(cmd.name)
  const stored = {}
  for (const key of Object.keys(dht._values.cache)) {
    const value = dht._values.cache[key].value
    stored[key] = {
      value: Buffer.from(value.v).toString(),
      seq: value.seq === undefined ? null : value.seq,
      publicKey: value.k ? Buffer.from(value.k).toString('hex') : null
    }
  }
  return { items: stored }
}

async function addNode (cmd) {
  const { dht } = getNode(cmd.name)
  const node = { host: cmd.host, port: cmd.port }
  if (typeof node.host !== 'string' || !Number.isInteger(node.port)) {
    throw new Error('addNode needs host and port')
  }
  if (cmd.nodeId) node.id = hexBuffer(cmd.nodeId, 'nodeId')
  dht.addNode(node)
  const waitMs = cmd.waitMs || 0
  const started = process.hrtime.bigint()
  const inTable = () => tableOf(dht).some(n => n.host === node.host && n.port === node.port)
  while (!inTable() && since(started) < waitMs) {
    await new Promise(resolve => setTimeout(resolve, 20))
  }
  return { added: inTable(), ms: since(started) }
}

function stats (cmd) {
  const entry = getNode(cmd.name)
  return {
    queries: entry.queries,
    queriesFrom: entry.queriesFrom,
    announced: entry.announced,
    warnings: entry.warnings,
    errors: entry.errors
  }
}

function destroy (name) {
  const entry = nodes.get(name)
  if (!entry) return Promise.resolve()
  nodes.delete(name)
  return withTimeout(2000, 'destroy', resolve => entry.dht.destroy(resolve)).catch(() => {})
}

async function quit () {
  await Promise.all([...nodes.keys()].map(destroy))
  return {}
}

const handlers = {
  start,
  announce,
  lookup,
  table: cmd => ({ nodes: tableOf(getNode(cmd.name).dht) }),
  addNode,
  put,
  get,
  items,
  stats,
  destroy: async cmd => { getNode(cmd.name); await destroy(cmd.name); return {} },
  quit
}

async function handle (line) {
  let cmd
  try {
    cmd = JSON.parse(line)
  } catch (err) {
    return send({ id: null, ok: false, error: `bad JSON: ${err.message}` })
  }
  const id = cmd && cmd.id !== undefined ? cmd.id : null
  const handler = cmd && handlers[cmd.cmd]
  if (!handler) return send({ id, ok: false, error: `unknown command ${JSON.stringify(cmd && cmd.cmd)}` })
  try {
    const result = await handler(cmd)
    send({ id, ok: true, ...result })
  } catch (err) {
    send({ id, ok: false, error: err && err.message ? err.message : String(err) })
  }
  if (cmd.cmd === 'quit') process.exit(0)
}

process.on('uncaughtException', err => {
  send({ id: null, ok: false, event: 'uncaughtException', error: String(err && err.stack) })
})
process.on('unhandledRejection', err => {
  send({ id: null, ok: false, event: 'unhandledRejection', error: String(err && err.stack) })
})

const input = readline.createInterface({ input: process.stdin, terminal: false })
input.on('line', line => { if (line.trim()) handle(line) })
input.on('close', () => {
  // The controller went away: clean up and leave (bounded).
  setTimeout(() => process.exit(0), 3000).unref()
  quit().then(() => process.exit(0))
})
send({ id: null, ok: true, event: 'hello', pid: process.pid, node: process.version })

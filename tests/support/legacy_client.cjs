#!/usr/bin/env node
// Drives npm-registry-client, npm 1.x's own registry library (the CouchDB-era API, issue 22),
// for the end-to-end tests (tests/support/legacy_client.rs). One JSON command, on argv[2] or
// stdin:
//
//   { "client": "0.2" | "0.4",           which pinned version (LEGACY_CLIENT_02_DIR / _04_DIR),
//     "client_dir": "/path",             or the module directory itself,
//     "registry": "http://127.0.0.1:PORT/",
//     "cache": "/tmp/...",               the client's cache directory (it requires one),
//     "auth": { "mode": "none" | "basic" | "cookie",
//               "username": "alice", "password": "...", "email": "a@example.com",
//               "always_auth": true | false },
//     "op": "adduser" | "get" | "publish" | "tag" | "star" | "stars" | "deprecate"
//           | "unpublish" | "upload" | "request" | "bugs",
//     "args": { ... } }
//
// The credentials become the configuration npm 1.x gave the client (npmconf): `username`,
// `_password`, `_auth` (base64 of `username:password`) and `email`. What the client does with them
// is its own business: 0.2.x logs in with a CouchDB session (couch-login: `POST /_session`, then
// `Cookie: AuthSession=...`) unless `always-auth` is set, when it sends Basic on every request;
// 0.4.x has no session and sends Basic on writes (on every request with `always-auth`). So:
//   mode "cookie": `_auth` without `always-auth` (0.2.x only; 0.4.x sends Basic anyway),
//   mode "basic":  `_auth` with `always-auth` for 0.2.x (its only way to Basic), and for 0.4.x
//                  `always-auth` as `auth.always_auth` says (default: true, so that its reads
//                  carry the credentials too, as a private registry needs),
//   mode "none":   no credentials.
//
// The operation's arguments are the README's, by name:
//   adduser   { username, password, email }             (the credentials' by default)
//   get       { uri, timeout?, nofollow?, staleOk? }
//   publish   { data: package.json, tarball: path, npm?: true }
//             with npm (default), as npm 1.x's publish did before it called the client: sets
//             `_npmUser`, `_npmVersion`, and (its cache did) `dist.shasum` of the tarball
//   tag       { project, version, tag }
//   star      { package, starred }
//   stars     { username }
//   deprecate { name, version, message }
//   unpublish { name, version? }
//   upload    { where, file, etag?, nofollow? }
//   request   { method, where, what?, etag?, nofollow? }
//   bugs      { name }
//
// Prints one JSON object on stdout:
//   { "ok": bool,
//     "error": null | { "message", "code", "pkgid", "version" },   what the callback got
//     "status": HTTP status of the last response the callback saw (or null),
//     "data": the parsed body the callback got (or null),
//     "session": 0.2.x's CouchDB session ({ AuthSession, path, expires, ... }) or null,
//     "http": ["PUT http://...", "201 http://...", ...],   the client's own request log
//     "log": [...] }                                       everything else it logged
// and exits 0 whatever the operation's outcome: the tests decide what is expected.
'use strict'

const fs = require('fs')
const os = require('os')
const path = require('path')
const crypto = require('crypto')

function readCommand () {
  if (process.argv[2]) return JSON.parse(process.argv[2])
  return JSON.parse(fs.readFileSync(0, 'utf8'))
}

function clientDir (cmd) {
  if (cmd.client_dir) return cmd.client_dir
  const key = { '0.2': 'LEGACY_CLIENT_02_DIR', '0.4': 'LEGACY_CLIENT_04_DIR' }[cmd.client]
  if (!key) throw new Error('unknown client ' + JSON.stringify(cmd.client) + ': "0.2" or "0.4"')
  const dir = process.env[key]
  if (!dir) throw new Error(key + ' is not set: `source tests/tools.sh` installs the clients')
  return dir
}

// A logger with npmlog's methods that keeps what the client logs.
function collectingLog (http, other) {
  const log = {}
  for (const level of ['error', 'warn', 'info', 'verbose', 'silly']) {
    log[level] = function () {
      other.push(level + ' ' + Array.prototype.map.call(arguments, show).join(' '))
    }
  }
  log.http = function (a, b) { http.push(a + ' ' + b) }
  log.pause = log.resume = function () {}
  return log
}

function show (v) {
  if (typeof v === 'string') return v
  try { return JSON.stringify(v) } catch (e) { return String(v) }
}

function configure (cmd, log) {
  const auth = cmd.auth || { mode: 'none' }
  const conf = {
    registry: cmd.registry,
    cache: cmd.cache || fs.mkdtempSync(path.join(os.tmpdir(), 'legacy-client-cache-')),
    log: log,
    // A failed request is not retried after 10 s, 60 s: the retry library's timeouts, which
    // the client defaults with `||` (so 0 would not do), are made 1 ms, and the count 1.
    'fetch-retries': 1,
    'fetch-retry-factor': 1,
    'fetch-retry-mintimeout': 1,
    'fetch-retry-maxtimeout': 1
  }
  if (auth.email) conf.email = auth.email
  if (auth.mode === 'basic' || auth.mode === 'cookie') {
    conf.username = auth.username
    conf._password = auth.password
    conf._auth = Buffer.from(auth.username + ':' + auth.password).toString('base64')
  } else if (auth.mode !== 'none' && auth.mode !== undefined) {
    throw new Error('unknown auth mode ' + JSON.stringify(auth.mode))
  }
  if (auth.mode === 'basic') {
    conf['always-auth'] = cmd.client === '0.2' ? true : auth.always_auth !== false
  } else if (auth.always_auth !== undefined) {
    conf['always-auth'] = auth.always_auth
  }
  if (cmd.tag) conf.tag = cmd.tag
  return conf
}

function run (client, cmd, conf, done) {
  const a = cmd.args || {}
  const auth = cmd.auth || {}
  switch (cmd.op) {
    case 'adduser':
      return client.adduser(a.username || auth.username, a.password || auth.password,
        a.email || auth.email, done)
    case 'get': {
      const args = [a.uri]
      if (a.timeout !== undefined || a.nofollow !== undefined || a.staleOk !== undefined) {
        args.push(a.timeout === undefined ? -1 : a.timeout, !!a.nofollow, !!a.staleOk)
      }
      return client.get.apply(client, args.concat([done]))
    }
    case 'publish': {
      const data = JSON.parse(JSON.stringify(a.data))
      if (a.npm !== false) {
        // What npm 1.x's publish and cache did to the manifest before the client saw it.
        data._npmUser = { name: conf.username, email: conf.email }
        data._npmVersion = cmd.client === '0.2' ? '1.3.17' : '1.4.28'
        data.dist = data.dist || {}
        data.dist.shasum = crypto.createHash('sha1').update(fs.readFileSync(a.tarball))
          .digest('hex')
      }
      return client.publish(data, a.tarball, done)
    }
    case 'tag':
      return client.tag(a.project, a.version, a.tag, done)
    case 'star':
      return client.star(a.package, a.starred !== false, done)
    case 'stars':
      return client.stars(a.username || auth.username, done)
    case 'deprecate':
      return client.deprecate(a.name, a.version, a.message, done)
    case 'unpublish':
      if (a.version) return client.unpublish(a.name, a.version, done)
      return client.unpublish(a.name, done)
    case 'upload':
      return client.upload(a.where, a.file, a.etag || null, !!a.nofollow, done)
    case 'request': {
      let what = a.what === undefined ? null : a.what
      if (a.what_file) what = fs.createReadStream(a.what_file)
      return client.request(a.method, a.where, what, a.etag || null, !!a.nofollow, done)
    }
    case 'bugs':
      return client.bugs(a.name, done)
    default:
      throw new Error('unknown op ' + JSON.stringify(cmd.op))
  }
}

function errorJson (er) {
  if (!er) return null
  // The client calls back with a bare string for an error status with an empty body.
  if (typeof er === 'string') return { message: er, code: null }
  return {
    message: er.message || String(er),
    code: er.code || null,
    pkgid: er.pkgid || null,
    version: er.version || null
  }
}

function main () {
  let printed = false
  const http = []
  const other = []
  function print (result) {
    if (printed) return
    printed = true
    result.http = http
    result.log = other
    process.stdout.write(JSON.stringify(result) + '\n')
  }
  // The client may throw asynchronously (couch-login does, on a login answer without an
  // AuthSession cookie): reported as the operation's error.
  process.on('uncaughtException', function (e) {
    print({ ok: false, error: { message: 'uncaught: ' + (e.stack || e), code: 'EUNCAUGHT' } })
    process.exit(0)
  })
  process.on('exit', function () {
    if (!printed) {
      print({ ok: false, error: { message: 'the client never called back', code: 'ENOCALLBACK' } })
    }
  })
  let cmd
  try {
    cmd = readCommand()
    const RegClient = require(clientDir(cmd))
    const conf = configure(cmd, collectingLog(http, other))
    const client = new RegClient(conf)
    run(client, cmd, conf, function (er, data, raw, res) {
      let parsed = data === undefined ? null : data
      let status = res && res.statusCode !== undefined ? res.statusCode : null
      // A failed couch-login calls back with the login's response where the data goes.
      if (parsed && parsed.statusCode !== undefined && parsed.headers && parsed.request) {
        status = parsed.statusCode
        parsed = parsed.body === undefined ? null : parsed.body
      }
      if (Buffer.isBuffer(parsed)) parsed = parsed.toString()
      const token = client.couchLogin && client.couchLogin.token
      print({
        ok: !er,
        error: errorJson(er),
        status: status,
        data: parsed,
        // 0.2.x's CouchDB session after the operation: the AuthSession cookie's value and the
        // attributes couch-login parsed from Set-Cookie (null when it never logged in).
        session: token && token.AuthSession ? token : null
      })
    })
  } catch (e) {
    print({ ok: false, error: { message: 'driver: ' + (e.stack || e), code: 'EDRIVER' } })
  }
}

main()

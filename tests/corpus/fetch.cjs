// Fetches every package of the pinned corpus (package-lock.json beside this file) with the pinned
// npm's `npm pack`, checks each tarball against the lock's integrity, and keeps them in
// <dir>/tarballs as <name with / as +>-<version>.tgz. Idempotent: a complete directory whose
// lock digest matches is left alone. Usage: node fetch.cjs <npm bin> <dir>
'use strict'
const { execFileSync } = require('node:child_process')
const crypto = require('node:crypto')
const fs = require('node:fs')
const path = require('node:path')

const [npm, dir] = process.argv.slice(2)
const lockText = fs.readFileSync(path.join(__dirname, 'package-lock.json'))
const lockDigest = crypto.createHash('sha256').update(lockText).digest('hex')
const done = path.join(dir, '.complete')
if (fs.existsSync(done) && fs.readFileSync(done, 'utf8').trim() === lockDigest) process.exit(0)

const lock = JSON.parse(lockText)
const wanted = new Map()
for (const [where, entry] of Object.entries(lock.packages)) {
  if (!where || entry.link) continue
  const name = entry.name || where.slice(where.lastIndexOf('node_modules/') + 'node_modules/'.length)
  wanted.set(`${name}@${entry.version}`, { name, version: entry.version, integrity: entry.integrity })
}
const tarballs = path.join(dir, 'tarballs')
fs.mkdirSync(tarballs, { recursive: true })
const fileOf = (p) => path.join(tarballs, `${p.name.replace('/', '+')}-${p.version}.tgz`)
const matches = (bytes, sri) => {
  const [algo, digest] = sri.split('-', 2)
  return crypto.createHash(algo).update(bytes).digest('base64') === sri.slice(algo.length + 1) && digest
}
const missing = [...wanted.values()].filter((p) => !fs.existsSync(fileOf(p)))
const scratch = path.join(dir, 'pack-tmp')
for (let i = 0; i < missing.length; i += 40) {
  const batch = missing.slice(i, i + 40)
  fs.rmSync(scratch, { recursive: true, force: true })
  fs.mkdirSync(scratch)
  process.stderr.write(`tests/corpus: npm pack ${i + batch.length} of ${missing.length}\n`)
  const out = execFileSync(npm, ['pack', '--json', '--loglevel=error', '--cache', path.join(dir, 'npm-cache'),
    '--pack-destination', scratch, ...batch.map((p) => `${p.name}@${p.version}`)],
  { cwd: scratch, maxBuffer: 64 << 20 })
  for (const item of JSON.parse(out)) {
    const p = wanted.get(`${item.name}@${item.version}`)
    const bytes = fs.readFileSync(path.join(scratch, item.filename))
    if (!p || !matches(bytes, p.integrity)) {
      throw new Error(`npm pack ${item.name}@${item.version}: not the lock's tarball`)
    }
    fs.writeFileSync(fileOf(p), bytes)
  }
}
fs.rmSync(scratch, { recursive: true, force: true })
for (const p of wanted.values()) {
  if (!matches(fs.readFileSync(fileOf(p)), p.integrity)) throw new Error(`${fileOf(p)}: integrity differs`)
}
fs.writeFileSync(done, lockDigest + '\n')

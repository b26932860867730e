// Verifies registry signatures with npm's own code: the keys fetched as `npm audit signatures`
// fetches them when Sigstore's TUF repository cannot be reached (lib/utils/verify-signatures.js:
// GET /-/npm/v1/keys through npm-registry-fetch, each key given a PEM), handed to pacote as npm
// hands them (`//host/path/:_keys`), and pacote.manifest with verifySignatures.
// Usage: node verify_signatures.cjs <npm package dir> <registry url> <cache dir> <mode> <spec>...
// mode: "as-served" | "wrong-key" (each key's bytes replaced by another key's) |
//       "expired" (every key expired in 2000) | "no-keys".
// Prints one JSON line: {"verified": [spec...], "failed": [{spec, code, message}]}.
'use strict'
const path = require('node:path')
const crypto = require('node:crypto')
const [npmDir, registry, cache, mode, ...specs] = process.argv.slice(2)
const req = (m) => require(path.join(npmDir, 'node_modules', m))
const pacote = req('pacote')
const npmFetch = req('npm-registry-fetch')

async function main () {
  let { keys } = await npmFetch.json('/-/npm/v1/keys', { registry, cache })
  keys = keys.map((key) => ({
    ...key,
    pemkey: `-----BEGIN PUBLIC KEY-----\n${key.key}\n-----END PUBLIC KEY-----`,
  }))
  if (mode === 'wrong-key') {
    const other = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey
      .export({ type: 'spki', format: 'der' }).toString('base64')
    keys = keys.map((k) => ({ ...k, pemkey: `-----BEGIN PUBLIC KEY-----\n${other}\n-----END PUBLIC KEY-----` }))
  } else if (mode === 'expired') {
    keys = keys.map((k) => ({ ...k, expires: '2000-01-01T00:00:00.000Z' }))
  } else if (mode === 'no-keys') {
    keys = []
  }
  // npm's own key for the option (buildRegistryConfig): host and path as configured.
  const { host, pathname } = new URL(registry)
  const regKey = `//${host}${pathname}`
  const verified = []
  const failed = []
  for (const spec of specs) {
    try {
      const mani = await pacote.manifest(spec, {
        registry,
        cache,
        fullMetadata: true,
        verifySignatures: true,
        [`${regKey}:_keys`]: keys,
      })
      if (!mani._signatures || !mani._signatures.length) throw Object.assign(new Error('no signatures'), { code: 'ENOSIGNATURES' })
      verified.push(spec)
    } catch (e) {
      failed.push({ spec, code: e.code, message: e.message })
    }
  }
  process.stdout.write(JSON.stringify({ verified, failed }) + '\n')
}
main().catch((e) => { console.error(e); process.exit(1) })

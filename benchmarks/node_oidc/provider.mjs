// node-oidc-provider set up as the peer in benchmarks/token_endpoint.py and
// benchmarks/verify_endpoint.py.
//
// One confidential client that may only use client_credentials. By default every access token
// is an RFC 9068 JWT signed with ES256 for a single resource server, as Echo Identity's are.
// With BENCH_ACCESS_TOKEN_FORMAT=opaque the tokens are opaque instead (kept in the adapter) and
// the introspection endpoint (RFC 7662) is on: node-oidc-provider refuses to introspect JWT
// access tokens, so that is the only way to introspect at all. A client may introspect only its
// own tokens, the rule Echo's /introspect applies to a client-credentials token.
// The provider keeps its default in-memory adapter and listens on loopback over plain http; the
// token endpoint needs no https or `proxy` setting for that. Node resolves `oidc-provider` from
// the folder this file is in, so the benchmark copies it next to a temporary `npm install`.
//
//   NODE_ENV=production BENCH_ISSUER=https://bench.example.test BENCH_PORT=9100 \
//   BENCH_CLIENT_ID=bench BENCH_CLIENT_SECRET=... [BENCH_CLUSTER=2 BENCH_JWK_FILE=key.json] \
//   [BENCH_ACCESS_TOKEN_FORMAT=jwt|opaque] node provider.mjs
import cluster from 'node:cluster';
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';

import Provider from 'oidc-provider';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};

const issuer = env('BENCH_ISSUER');
const port = Number(env('BENCH_PORT'));
const processes = Number(process.env.BENCH_CLUSTER || '1');
const resource = 'https://api.example';
const tokenFormat = process.env.BENCH_ACCESS_TOKEN_FORMAT || 'jwt';
if (!['jwt', 'opaque'].includes(tokenFormat)) {
  throw new Error(`BENCH_ACCESS_TOKEN_FORMAT must be jwt or opaque, not ${tokenFormat}`);
}
const opaque = tokenFormat === 'opaque';

// Every cluster worker signs with the same key: the primary writes it, the workers read it.
function signingJwk() {
  if (process.env.BENCH_JWK_FILE && cluster.isWorker) {
    return JSON.parse(readFileSync(process.env.BENCH_JWK_FILE, 'utf8'));
  }
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'bench-es256', alg: 'ES256', use: 'sig' };
  if (process.env.BENCH_JWK_FILE) writeFileSync(process.env.BENCH_JWK_FILE, JSON.stringify(jwk), { mode: 0o600 });
  return jwk;
}

function serve(jwk) {
  const provider = new Provider(issuer, {
    clients: [{
      client_id: env('BENCH_CLIENT_ID'),
      client_secret: env('BENCH_CLIENT_SECRET'),
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
      // Only an EC key is configured, so the (unused) ID token algorithm must be one it can sign.
      id_token_signed_response_alg: 'ES256',
    }],
    jwks: { keys: [jwk] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: {
        enabled: opaque,
        allowedPolicy: async (ctx, client, token) => token.clientId === client.clientId,
      },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => resource,
        useGrantedResource: async () => true,
        getResourceServerInfo: async () => ({
          scope: 'api:read',
          audience: resource,
          accessTokenTTL: 600,
          accessTokenFormat: tokenFormat,
          ...(opaque ? {} : { jwt: { sign: { alg: 'ES256' } } }),
        }),
      },
    },
    ttl: { ClientCredentials: 600 },
  });
  provider.listen(port, '127.0.0.1');
}

if (processes > 1 && cluster.isPrimary) {
  signingJwk();
  for (let i = 0; i < processes; i += 1) cluster.fork();
  cluster.on('exit', (worker, code) => {
    console.error(`worker ${worker.process.pid} exited with ${code}`);
    process.exit(1);
  });
} else {
  serve(signingJwk());
}

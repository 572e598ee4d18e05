// A real OpenID Connect provider (npm `oidc-provider`, a certified
// implementation) for ajar's SSO tests. It listens on 127.0.0.1 on a port the
// OS chooses and prints `listening http://127.0.0.1:PORT` once ready.
//
// Accounts: any login name signs in (the provider's development login form,
// password ignored); `email` is NAME@example.com, `email_verified` is true
// except for the accounts in SILENT (whose ID tokens carry no
// email_verified claim at all), and `groups` come from the GROUPS table
// below (`mallory` is in a provider group called `admins`). Clients:
//   - `ajar` (confidential): authorization code + PKCE, device flow, refresh;
//     redirect URI http://127.0.0.1/sso/callback on any port (a native
//     client, RFC 8252), which is the ajar server under test.
//   - `ci` and `ci-short` (confidential): client credentials, issuing JWT
//     access tokens for the resource indicator asked for (default
//     `urn:ajar`), `ci-short` with a 1 s lifetime, carrying `groups: ["ci"]`
//     and `acct` (the client id);
//   - `ci-admins`: the same, its tokens carrying `groups: ["ci", "admins"]`;
//   - `adam`, `bob` and `ci-twin`: the same, with `acct` = `adam`, `bob`
//     and `ci` (a second account claiming ci's name).
//
// POST /__test/rotate replaces the signing key with a fresh one (the old key
// disappears from the JWKS), as an identity provider's key rotation does.
// POST /__test/groups with {"account": NAME, "groups": [...]} changes an
// account's groups from its next sign-in on, as an administrator does at
// the identity provider.

import { createServer } from 'node:http';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import Provider from 'oidc-provider';

const GROUPS = {
  carol: ['idp-dev', 'staff'],
  dave: ['idp-sre', 'staff'],
  erin: ['staff'],
  mallory: ['admins', 'idp-dev'],
  frank: ['idp-dev'],
};
const SILENT = new Set(['grace']);

// The `acct` claim of client-credentials tokens: the client id, except for
// `ci-twin`, which claims to be `ci`.
const ACCOUNT_CLAIM = { 'ci-twin': 'ci' };

function newKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), use: 'sig', alg: 'RS256' };
}

function build(issuer, key) {
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: 'ajar',
        client_secret: 'ajar-test-secret',
        application_type: 'native',
        redirect_uris: ['http://127.0.0.1/sso/callback'],
        grant_types: ['authorization_code', 'urn:ietf:params:oauth:grant-type:device_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
      {
        client_id: 'ci',
        client_secret: 'ci-test-secret',
        grant_types: ['client_credentials'],
        redirect_uris: [],
        response_types: [],
      },
      {
        client_id: 'ci-short',
        client_secret: 'ci-test-secret',
        grant_types: ['client_credentials'],
        redirect_uris: [],
        response_types: [],
      },
      // More machines: ci-admins (in the provider's `admins` group), and
      // those whose `acct` claim names someone else: local users of the
      // ajar under test, and a second account claiming `ci`'s name.
      ...['ci-admins', 'adam', 'bob', 'ci-twin'].map((client_id) => ({
        client_id,
        client_secret: 'ci-test-secret',
        grant_types: ['client_credentials'],
        redirect_uris: [],
        response_types: [],
      })),
    ],
    jwks: { keys: [key] },
    // Profile claims (email, groups) in the ID token itself, as ajar reads them.
    conformIdTokenClaims: false,
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      groups: ['groups'],
    },
    scopes: ['openid', 'email', 'groups', 'offline_access'],
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: true },
      deviceFlow: { enabled: true },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => 'urn:ajar',
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resource, client) => ({
          scope: 'api',
          audience: resource,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        }),
      },
    },
    extraTokenClaims: (ctx, token) => {
      if (token.kind !== 'ClientCredentials') return undefined;
      const groups = token.clientId === 'ci-admins' ? ['ci', 'admins'] : ['ci'];
      return { groups, acct: ACCOUNT_CLAIM[token.clientId] ?? token.clientId };
    },
    findAccount: (ctx, id) => ({
      accountId: id,
      claims: () => ({
        sub: id,
        email: `${id}@example.com`,
        ...(SILENT.has(id) ? {} : { email_verified: true }),
        groups: GROUPS[id] ?? [],
      }),
    }),
    ttl: {
      IdToken: 600,
      AccessToken: 600,
      ClientCredentials: (ctx, token, client) => (client.clientId === 'ci-short' ? 1 : 600),
      DeviceCode: 600,
      Interaction: 600,
    },
  });
  // The issuer is plain http on loopback: tell the provider not to insist on
  // TLS-only cookies.
  provider.proxy = false;
  return provider;
}

let current;
const server = createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/__test/rotate') {
    current = build(current.issuer, newKey());
    res.writeHead(204).end();
    return;
  }
  if (req.method === 'POST' && req.url === '/__test/groups') {
    let body = '';
    req.on('data', (chunk) => { body += chunk; });
    req.on('end', () => {
      const { account, groups } = JSON.parse(body);
      GROUPS[account] = groups;
      res.writeHead(204).end();
    });
    return;
  }
  current.callback()(req, res);
});

server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  current = build(`http://127.0.0.1:${port}`, newKey());
  console.log(`listening http://127.0.0.1:${port}`);
});

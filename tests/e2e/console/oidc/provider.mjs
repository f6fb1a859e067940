// A real OpenID Connect provider for the console's single sign-on test: panva's certified
// oidc-provider, configured from the environment by tests/e2e/conftest.py (oidc_provider).
//
//   node provider.mjs [port]
//
// OIDC_PORT            port on 127.0.0.1 (or the first argument); the issuer is http://127.0.0.1:<port>
// OIDC_CLIENT_ID       the console's client id (confidential: client_secret_basic/post)
// OIDC_CLIENT_SECRET   its secret
// OIDC_REDIRECT_URIS   its redirect URIs, comma-separated (<console>/signin/callback)
// OIDC_JWK             the signing key: a private RSA JWK (JSON, with kid); the platform trusts its public half
// OIDC_RESOURCE        the API's resource indicator: access tokens for it are RS256 JWTs with aud = it
// OIDC_ACCOUNTS        JSON {login: {name, office, roles: [...]}}: who may sign in
//
// Sign-in uses the provider's own development pages (devInteractions: a login form, then a
// consent page); a login that is not in OIDC_ACCOUNTS cannot finish. Authorization code flow
// only, PKCE (S256) required. Access tokens for OIDC_RESOURCE carry sub, exp, iss, aud, and
// the API contract's claims office, roles and name.
import Provider, { errors } from 'oidc-provider';
import { randomBytes } from 'node:crypto';

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`provider.mjs: ${name} is required`);
    process.exit(2);
  }
  return value;
}

const port = Number(process.argv[2] || process.env.OIDC_PORT);
if (!Number.isInteger(port) || port <= 0) {
  console.error('provider.mjs: give the port as the first argument or OIDC_PORT');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;
// key_ops (e.g. ["sign"] from a private JWK) would be published with the key and make clients
// refuse to verify with it: the JWKS says use: sig instead.
const { key_ops: _keyOps, ...jwk } = JSON.parse(required('OIDC_JWK'));
const resource = required('OIDC_RESOURCE');
const accounts = JSON.parse(required('OIDC_ACCOUNTS'));
const RESOURCE_SCOPE = 'crm';

function account(id) {
  return Object.prototype.hasOwnProperty.call(accounts, id) ? accounts[id] : undefined;
}

const configuration = {
  clients: [{
    client_id: required('OIDC_CLIENT_ID'),
    client_secret: required('OIDC_CLIENT_SECRET'),
    redirect_uris: required('OIDC_REDIRECT_URIS').split(',').map((u) => u.trim()).filter(Boolean),
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  jwks: { keys: [{ ...jwk, use: 'sig', alg: 'RS256' }] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  ttl: {
    AccessToken: 3600, AuthorizationCode: 60, IdToken: 3600, Interaction: 600, Session: 3600, Grant: 3600,
  },
  claims: { openid: ['sub'], profile: ['name'] },
  scopes: ['openid', 'profile', RESOURCE_SCOPE],
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: (ctx, client, oneOf) => oneOf ?? undefined,
      useGrantedResource: () => false, // the client names the resource at the token endpoint too
      getResourceServerInfo: (ctx, indicator) => {
        if (indicator !== resource) throw new errors.InvalidTarget();
        return {
          scope: RESOURCE_SCOPE,
          audience: resource,
          accessTokenTTL: 3600,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  async findAccount(ctx, id) {
    const found = account(id);
    if (!found) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, name: found.name };
      },
    };
  },
  async extraTokenClaims(ctx, token) {
    if (token.kind !== 'AccessToken' || !token.accountId) return undefined;
    const found = account(token.accountId);
    if (!found) return undefined;
    return { office: found.office, roles: [...found.roles], name: found.name };
  },
  renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = `<!doctype html><title>Error</title><h1>oops! something went wrong</h1><pre>${
      String(out.error).replace(/[<>&"]/g, '')}: ${String(out.error_description || '').replace(/[<>&"]/g, '')}</pre>`;
  },
};

const provider = new Provider(issuer, configuration);
provider.on('server_error', (ctx, err) => console.error('server_error', err));
const server = provider.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${issuer}`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}

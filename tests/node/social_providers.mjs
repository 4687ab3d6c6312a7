// Providers to sign in with, for the black-box tests (tests/src/social.rs):
//   - panva's oidc-provider (an OpenID-certified implementation) with one confidential client,
//     whose interactions (login and consent) complete by themselves as the current account;
//   - a GitHub-shaped OAuth2 server: /login/oauth/authorize, /login/oauth/access_token,
//     /api/user and /api/user/emails, with GitHub's shapes (errors as 200 + {"error"}).
//
//   CLIENT_ID=… CLIENT_SECRET=… REDIRECT_URIS='["http://…/callback", …]' node tests/node/social_providers.mjs
//
// Prints one line, {"issuer": "http://127.0.0.1:P1", "github": "http://127.0.0.1:P2"}, once both
// listen; exits when stdin closes. Test controls (JSON bodies, answered 204):
//   POST {issuer}/test/account  {"sub","email","email_verified","preferred_username","name"}: the next logins
//   POST {issuer}/test/tamper   {"mode"}: spoils the next ID token (nonce, audience, issuer, expired, none, signature)
//   POST {github}/test/account  {"id","login","name","emails":[{"email","primary","verified","visibility"}]}
import crypto from 'node:crypto';
import http from 'node:http';
import { CompactSign, exportJWK, generateKeyPair } from 'jose';
import Provider from 'oidc-provider';

const clientId = process.env.CLIENT_ID;
const clientSecret = process.env.CLIENT_SECRET;
const redirectUris = JSON.parse(process.env.REDIRECT_URIS || '[]');
if (!clientId || !clientSecret || !redirectUris.length) {
  console.error('set CLIENT_ID, CLIENT_SECRET and REDIRECT_URIS');
  process.exit(2);
}

const listen = (server) => new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server.address().port)));
const readJson = (req) => new Promise((resolve, reject) => {
  let body = '';
  req.on('data', (chunk) => { body += chunk; });
  req.on('end', () => { try { resolve(body ? JSON.parse(body) : {}); } catch (error) { reject(error); } });
});
const readForm = (req) => new Promise((resolve) => {
  let body = '';
  req.on('data', (chunk) => { body += chunk; });
  req.on('end', () => resolve(new URLSearchParams(body)));
});
const send = (res, status, body, headers = {}) => {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(body === undefined ? '' : JSON.stringify(body));
};
const b64url = (value) => Buffer.from(value).toString('base64url');

// === The OpenID provider ===

const oidcServer = http.createServer();
const oidcPort = await listen(oidcServer);
const issuer = `http://127.0.0.1:${oidcPort}`;

const { privateKey } = await generateKeyPair('RS256', { extractable: true });
const signingJwk = { ...(await exportJWK(privateKey)), kid: 'test-key-1', alg: 'RS256', use: 'sig' };

let current = { sub: 'alice-sub', email: 'alice@example.com', email_verified: true, preferred_username: 'alice', name: 'Alice Example' };
const accounts = new Map([[current.sub, current]]);
let tamper = null;
let userinfoTamper = null;

const provider = new Provider(issuer, {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    redirect_uris: redirectUris,
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: 'RS256',
  }],
  jwks: { keys: [signingJwk] },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['preferred_username', 'name'] },
  // The scopes' claims in the ID token itself, not only at userinfo.
  conformIdTokenClaims: false,
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  features: { devInteractions: { enabled: false } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  findAccount: async (ctx, sub) => {
    const account = accounts.get(sub);
    if (!account) return undefined;
    return { accountId: sub, claims: async () => ({ ...account, sub }) };
  },
});

// The token endpoint's ID token, spoiled once when asked (and the UserInfo answer after it).
provider.use(async (ctx, next) => {
  await next();
  if (userinfoTamper && ctx.path === '/me' && ctx.body && ctx.body.sub) {
    userinfoTamper = null;
    ctx.body = { ...ctx.body, sub: 'someone-else' };
    return;
  }
  if (!tamper || ctx.method !== 'POST' || ctx.path !== '/token' || !ctx.body || !ctx.body.id_token) return;
  const mode = tamper;
  tamper = null;
  const [, payloadPart] = ctx.body.id_token.split('.');
  const claims = JSON.parse(Buffer.from(payloadPart, 'base64url').toString());
  const now = Math.floor(Date.now() / 1000);
  let key = privateKey;
  switch (mode) {
    case 'nonce': claims.nonce = 'not-the-nonce'; break;
    case 'audience': claims.aud = 'someone-else'; break;
    case 'issuer': claims.iss = 'http://evil.example'; break;
    case 'expired': claims.iat = now - 7200; claims.exp = now - 3600; break;
    case 'signature': key = (await generateKeyPair('RS256')).privateKey; break;
    case 'none': break;
    // A provider that puts the scopes' claims only at UserInfo (OpenID Connect Core §5.4).
    case 'no-email': delete claims.email; delete claims.email_verified; break;
    // The same, and its UserInfo answers about somebody else.
    case 'no-email-foreign-userinfo': delete claims.email; delete claims.email_verified; userinfoTamper = 'foreign'; break;
    default: console.error(`unknown tamper mode ${mode}`); return;
  }
  const payload = JSON.stringify(claims);
  ctx.body = {
    ...ctx.body,
    id_token: mode === 'none'
      ? `${b64url(JSON.stringify({ alg: 'none', typ: 'JWT' }))}.${b64url(payload)}.`
      : await new CompactSign(new TextEncoder().encode(payload)).setProtectedHeader({ alg: 'RS256', kid: signingJwk.kid }).sign(key),
  };
});

// Login and consent, scripted: whoever `current` is, granted everything asked for.
async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session } = details;
  const result = {};
  let accountId = session && session.accountId;
  if (prompt.name === 'login' || !accountId) {
    accounts.set(current.sub, current);
    accountId = current.sub;
    result.login = { accountId };
  }
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId, clientId: params.client_id });
  grant.addOIDCScope(String(params.scope || 'openid'));
  const missing = (prompt.details && prompt.details.missingOIDCClaims) || [];
  if (missing.length) grant.addOIDCClaims(missing);
  result.consent = { grantId: await grant.save() };
  await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
}

const oidcCallback = provider.callback();
oidcServer.on('request', async (req, res) => {
  try {
    const url = new URL(req.url, issuer);
    if (req.method === 'POST' && url.pathname === '/test/account') {
      current = await readJson(req);
      accounts.set(current.sub, current);
      return send(res, 204);
    }
    if (req.method === 'POST' && url.pathname === '/test/tamper') {
      tamper = (await readJson(req)).mode;
      return send(res, 204);
    }
    if (url.pathname.startsWith('/interaction/')) return await interaction(req, res);
    return oidcCallback(req, res);
  } catch (error) {
    console.error(error);
    if (!res.headersSent) send(res, 500, { error: String(error) });
  }
});

// === The GitHub-shaped server ===

const githubServer = http.createServer();
const githubPort = await listen(githubServer);
const github = `http://127.0.0.1:${githubPort}`;
let githubAccount = {
  id: 1234, login: 'octocat', name: 'The Octocat',
  emails: [{ email: 'octocat@example.com', primary: true, verified: true, visibility: 'public' }],
};
const codes = new Map();   // code -> { redirectUri, challenge, account, expires }
const tokens = new Map();  // access token -> account
const codeError = { error: 'bad_verification_code', error_description: 'The code passed is incorrect or expired.', error_uri: 'https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/#bad-verification-code' };

githubServer.on('request', async (req, res) => {
  try {
    const url = new URL(req.url, github);
    if (req.method === 'POST' && url.pathname === '/test/account') {
      githubAccount = await readJson(req);
      return send(res, 204);
    }
    if (req.method === 'GET' && url.pathname === '/login/oauth/authorize') {
      const redirectUri = url.searchParams.get('redirect_uri');
      if (url.searchParams.get('client_id') !== clientId || !redirectUris.includes(redirectUri)) {
        return send(res, 400, { error: 'redirect_uri_mismatch' });
      }
      // Stricter than GitHub (where PKCE is optional): a sign-in without an S256 challenge is
      // refused, so that a client that stopped sending one fails the tests.
      const challenge = url.searchParams.get('code_challenge');
      if (!challenge || url.searchParams.get('code_challenge_method') !== 'S256') {
        return send(res, 400, { error: 'invalid_request', error_description: 'PKCE S256 is required here.' });
      }
      const code = crypto.randomBytes(10).toString('hex');
      codes.set(code, { redirectUri, challenge, account: githubAccount, expires: Date.now() + 600_000 });
      const back = new URL(redirectUri);
      back.searchParams.set('code', code);
      if (url.searchParams.has('state')) back.searchParams.set('state', url.searchParams.get('state'));
      res.writeHead(302, { location: back.toString() });
      return res.end();
    }
    if (req.method === 'POST' && url.pathname === '/login/oauth/access_token') {
      const form = await readForm(req);
      let [id, secret] = [form.get('client_id'), form.get('client_secret')];
      const basic = (req.headers.authorization || '').match(/^Basic (.+)$/i);
      if (basic) [id, secret] = Buffer.from(basic[1], 'base64').toString().split(':').map(decodeURIComponent);
      if (id !== clientId || secret !== clientSecret) {
        return send(res, 200, { error: 'incorrect_client_credentials', error_description: 'The client_id and/or client_secret passed are incorrect.' });
      }
      const entry = codes.get(form.get('code'));
      codes.delete(form.get('code'));
      const verifier = form.get('code_verifier');
      const pkceOk = !entry
        || (verifier && crypto.createHash('sha256').update(verifier).digest('base64url') === entry.challenge);
      if (!entry || entry.expires < Date.now() || (form.get('redirect_uri') && form.get('redirect_uri') !== entry.redirectUri) || !pkceOk) {
        return send(res, 200, codeError);
      }
      const token = `gho_${crypto.randomBytes(18).toString('hex')}`;
      tokens.set(token, entry.account);
      return send(res, 200, { access_token: token, token_type: 'bearer', scope: 'read:user,user:email' });
    }
    if (req.method === 'GET' && (url.pathname === '/api/user' || url.pathname === '/api/user/emails')) {
      if (!req.headers['user-agent']) return send(res, 403, { message: 'Request forbidden by administrative rules. Please make sure your request has a User-Agent header.' });
      const auth = (req.headers.authorization || '').match(/^(?:Bearer|token) (.+)$/i);
      const account = auth && tokens.get(auth[1]);
      if (!account) return send(res, 401, { message: 'Bad credentials' });
      if (url.pathname === '/api/user') return send(res, 200, { id: account.id, login: account.login, name: account.name, email: null });
      return send(res, 200, account.emails);
    }
    return send(res, 404, { message: 'Not Found' });
  } catch (error) {
    console.error(error);
    if (!res.headersSent) send(res, 500, { message: String(error) });
  }
});

console.log(JSON.stringify({ issuer, github }));
process.stdin.on('end', () => process.exit(0));
process.stdin.on('close', () => process.exit(0));
process.stdin.resume();
process.on('SIGTERM', () => process.exit(0));

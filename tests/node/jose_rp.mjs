// A relying party as users run one with jose: createRemoteJWKSet caching the JWK set for its
// max-age, and (cooldownDuration) not re-fetching it sooner on an unknown kid, so a key that
// was not published one cache lifetime before it signed fails as "kid not found"
// (ERR_JWKS_NO_MATCHING_KEY). It takes fresh access tokens from the facade (GraphQL
// `refreshToken`) for a while and prints a JSON summary.
//
// argv: facade URL, refresh token, seconds to run, max-age (s), interval (s), issuer.
import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';

const [facade, firstRefresh, seconds, maxAge, interval, issuer] = process.argv.slice(2);
const ageMs = Number(maxAge) * 1000;
const jwks = createRemoteJWKSet(new URL(`${facade}/.well-known/jwks.json`), {
  cacheMaxAge: ageMs,
  cooldownDuration: ageMs,
});

async function refreshed(token) {
  const response = await fetch(`${facade}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      query: 'mutation($t: String!) { refreshToken(refreshToken: $t) { token refreshToken } }',
      variables: { t: token },
    }),
  });
  const { data } = await response.json();
  return [data.refreshToken.token, data.refreshToken.refreshToken];
}

let refresh = firstRefresh;
let tokens = 0;
const kids = [];
const kidNotFound = [];
const failures = [];
const deadline = Date.now() + Number(seconds) * 1000;
while (Date.now() < deadline) {
  let access;
  [access, refresh] = await refreshed(refresh);
  tokens += 1;
  const { kid } = decodeProtectedHeader(access);
  if (!kids.includes(kid)) kids.push(kid);
  try {
    await jwtVerify(access, jwks, { issuer, audience: 'identity' });
  } catch (error) {
    if (error.code === 'ERR_JWKS_NO_MATCHING_KEY') kidNotFound.push(kid);
    else failures.push(`${kid}: ${error.code ?? error.message}`);
  }
  await new Promise((resolve) => setTimeout(resolve, Number(interval) * 1000));
}
console.log(JSON.stringify({ tokens, kids, kid_not_found: kidNotFound, failures }));

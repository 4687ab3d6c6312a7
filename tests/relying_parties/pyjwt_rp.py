"""A relying party as users run one with PyJWT: PyJWKClient caching the JWK set for its
max-age. It takes fresh access tokens from the facade (GraphQL `refreshToken`) for a while and
verifies each with the set it has cached. Prints a JSON summary: tokens, kids seen, and every
token whose kid was not in the cached set ("kid not found") or that did not verify.

argv: facade URL, refresh token, seconds to run, max-age (s), interval (s), issuer.
"""
import json, sys, time, urllib.request

import jwt

facade, refresh, seconds, max_age, interval, issuer = (
    sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), sys.argv[6])
client = jwt.PyJWKClient(f"{facade}/.well-known/jwks.json", cache_jwk_set=True, lifespan=max_age)
fetches = 0
original_fetch = client.fetch_data
def counted_fetch():
    global fetches
    fetches += 1
    return original_fetch()
client.fetch_data = counted_fetch

def refreshed(token):
    body = json.dumps({"query": "mutation($t: String!) { refreshToken(refreshToken: $t) { token refreshToken } }",
                       "variables": {"t": token}}).encode()
    request = urllib.request.Request(f"{facade}/graphql", body, {"Content-Type": "application/json"})
    data = json.load(urllib.request.urlopen(request, timeout=10))["data"]["refreshToken"]
    return data["token"], data["refreshToken"]

tokens, kids, not_found, failures = 0, [], [], []
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    access, refresh = refreshed(refresh)
    tokens += 1
    kid = jwt.get_unverified_header(access)["kid"]
    if kid not in kids:
        kids.append(kid)
    cached = client.get_jwk_set()  # the cached set while younger than max-age
    key = next((k for k in cached.keys if k.key_id == kid), None)
    if key is None:
        not_found.append(kid)
    else:
        try:
            jwt.decode(access, key.key, algorithms=[key.algorithm_name], audience="identity",
                       issuer=issuer, options={"require": ["exp", "iss", "aud", "sub"]})
        except Exception as error:  # noqa: BLE001 -- reported, not hidden
            failures.append(f"{kid}: {error}")
    time.sleep(interval)
print(json.dumps({"tokens": tokens, "kids": kids, "kid_not_found": not_found, "failures": failures, "fetches": fetches}))

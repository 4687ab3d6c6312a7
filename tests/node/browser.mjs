// Drives the facade's demo page (/) in headless Chromium: cookie login, what JavaScript can
// and cannot see of the cookies, the session list, cross-site request forgery attempts from
// another site (all must fail), and logout.
//
//   node tests/node/browser.mjs http://127.0.0.1:PORT <username> <password>
//
// The user must exist. On success prints one JSON line:
//   {"ok": true, "sessionid": "...", "userId": "...", "checks": [...]}
// On any failed check prints the reason to stderr and exits 1.
import http from 'node:http';
import { chromium } from 'playwright-core';

const TIMEOUT = 15_000;
const [base, username, password] = process.argv.slice(2);
if (!base || !username || !password) {
  console.error('usage: node browser.mjs http://host:port <username> <password>');
  process.exit(2);
}

const checks = [];
function check(name, condition, detail = '') {
  if (!condition) throw new Error(`check "${name}" failed${detail ? `: ${detail}` : ''}`);
  checks.push(name);
}

// For calls that take no timeout option of their own.
function within(promise, what, ms = TIMEOUT) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// A same-origin GraphQL POST from inside the page, CSRF token read from document.cookie.
async function graphql(page, query) {
  const { status, text } = await within(
    page.evaluate(async ({ query, ms }) => {
      const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]*)/);
      const response = await fetch('/graphql', {
        method: 'POST',
        credentials: 'same-origin',
        headers: { 'Content-Type': 'application/json', 'X-CSRFToken': match ? decodeURIComponent(match[1]) : '' },
        body: JSON.stringify({ query }),
        signal: AbortSignal.timeout(ms),
      });
      return { status: response.status, text: await response.text() };
    }, { query, ms: TIMEOUT - 1000 }),
    `POST /graphql ${query}`,
  );
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(`POST /graphql ${query}: HTTP ${status}, not JSON: ${text.slice(0, 300)}`);
  }
}

async function textOf(page, selector) {
  return page.textContent(selector, { timeout: TIMEOUT });
}

// Waits until #whoami reads `expected`; on timeout says what the page showed instead.
async function waitForWhoami(page, expected, step) {
  try {
    await page.waitForFunction((want) => document.getElementById('whoami')?.textContent === want, expected, {
      timeout: TIMEOUT,
    });
  } catch (error) {
    const shown = await page.textContent('#whoami', { timeout: 1000 }).catch(() => '?');
    const status = await page.textContent('#status', { timeout: 1000 }).catch(() => '?');
    throw new Error(`${step}: #whoami is ${JSON.stringify(shown)}, not ${JSON.stringify(expected)}; `
      + `#status: ${JSON.stringify(status)} (${error.message.split('\n')[0]})`);
  }
}

// The attacker's pages. `/` fires forms (into iframes) and fetches at the facade for each
// mutation in turn, then sets the title to "done"; `/top/<key>` POSTs one mutation as a
// text/plain form in the main frame (a top-level navigation).
function attackerPage(body) {
  return `<!doctype html><html><head><meta charset="utf-8"><title>attacking</title></head>
<body><h1>Nothing to see here</h1><script>${body}</script></body></html>`;
}

const ATTACK_SCRIPT = `
const { target, mutations } = CONFIG;
const results = [];
function formWith(enctype, fields) {
  const form = document.createElement('form');
  form.method = 'POST';
  form.action = target;
  form.enctype = enctype;
  for (const [name, value] of fields) {
    const input = document.createElement('input');
    input.type = 'hidden';
    input.name = name;
    input.value = value;
    form.append(input);
  }
  document.body.append(form);
  return form;
}
async function viaFrame(label, enctype, fields) {
  const frame = document.createElement('iframe');
  frame.name = 'frame-' + label;
  document.body.append(frame);
  const loaded = new Promise((resolve) => {
    const timer = setTimeout(() => resolve('no load event in 3 s'), 3000);
    frame.addEventListener('load', () => { clearTimeout(timer); resolve('frame loaded'); }, { once: true });
  });
  const form = formWith(enctype, fields);
  form.target = frame.name;
  form.submit();
  results.push({ label, outcome: await loaded });
}
async function viaFetch(label, init) {
  try {
    const response = await fetch(target, { ...init, signal: AbortSignal.timeout(5000) });
    results.push({ label, outcome: 'resolved: ' + response.type + ' ' + response.status });
  } catch (error) {
    results.push({ label, outcome: 'rejected: ' + error.name + ': ' + error.message });
  }
}
(async () => {
  for (const [key, query] of Object.entries(mutations)) {
    const body = JSON.stringify({ query });
    await Promise.all([
      viaFrame(key + '-a-text-plain-form', 'text/plain', [['{"query":' + JSON.stringify(query) + ',"x":"', '"}']]),
      viaFrame(key + '-b-urlencoded-form', 'application/x-www-form-urlencoded', [['query', query]]),
      viaFetch(key + '-c-no-cors-fetch', { method: 'POST', mode: 'no-cors', credentials: 'include', headers: { 'Content-Type': 'text/plain' }, body }),
      viaFetch(key + '-d-cors-fetch', { method: 'POST', credentials: 'include', headers: { 'Content-Type': 'application/json' }, body }),
    ]);
  }
  await new Promise((resolve) => setTimeout(resolve, 500));
  window.attackResults = results;
  document.title = 'done';
})();
`;

const TOP_SCRIPT = `
const { target, query } = CONFIG;
window.addEventListener('load', () => setTimeout(() => {
  const form = document.createElement('form');
  form.method = 'POST';
  form.action = target;
  form.enctype = 'text/plain';
  const input = document.createElement('input');
  input.type = 'hidden';
  input.name = '{"query":' + JSON.stringify(query) + ',"x":"';
  input.value = '"}';
  form.append(input);
  document.body.append(form);
  form.submit();
}, 0));
`;

// JSON for inside a <script>: no "</script>" can end it early.
const scriptJson = (value) => JSON.stringify(value).replace(/</g, '\\u003c');

function startAttacker(mutations) {
  const target = `${base}/graphql`;
  const server = http.createServer((request, response) => {
    const path = new URL(request.url, 'http://attacker').pathname;
    let script = null;
    if (path === '/') script = `const CONFIG = ${scriptJson({ target, mutations })};${ATTACK_SCRIPT}`;
    const top = path.match(/^\/top\/(\w+)$/);
    if (top && mutations[top[1]]) script = `const CONFIG = ${scriptJson({ target, query: mutations[top[1]] })};${TOP_SCRIPT}`;
    if (script === null) {
      response.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found');
      return;
    }
    response.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
    response.end(attackerPage(script));
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

async function run(browser, state) {
  const context = await within(browser.newContext(), 'new browser context');
  context.setDefaultTimeout(TIMEOUT);
  const page = await within(context.newPage(), 'new page');

  // 1. The page loads anonymous.
  await page.goto(`${base}/`, { timeout: TIMEOUT });
  await page.waitForSelector('body[data-ready="true"]', { state: 'attached', timeout: TIMEOUT });
  const initial = await textOf(page, '#whoami');
  check('anonymous-on-load', initial === 'anonymous', `#whoami is ${JSON.stringify(initial)}`);

  // 2. Log in through the form.
  await page.fill('#username', username, { timeout: TIMEOUT });
  await page.fill('#password', password, { timeout: TIMEOUT });
  await page.click('#login', { timeout: TIMEOUT });
  await waitForWhoami(page, username, 'after login');
  checks.push('login-shows-username');

  // 3. JavaScript sees the CSRF cookie, never the session cookie.
  const jsCookies = await within(page.evaluate(() => document.cookie), 'read document.cookie');
  check('document-cookie-has-csrftoken', jsCookies.includes('csrftoken='), `document.cookie: ${jsCookies}`);
  check('document-cookie-hides-sessionid', !jsCookies.includes('sessionid'), `document.cookie: ${jsCookies}`);
  const shownCookies = await textOf(page, '#cookies');
  check('cookies-element-hides-sessionid', !shownCookies.includes('sessionid'), `#cookies: ${shownCookies}`);

  // 4. The cookie attributes, as the browser stored them.
  const cookies = await within(context.cookies(base), 'read context cookies');
  const session = cookies.find((c) => c.name === 'sessionid');
  const csrf = cookies.find((c) => c.name === 'csrftoken');
  const describe = JSON.stringify(cookies.map(({ name, httpOnly, sameSite, path }) => ({ name, httpOnly, sameSite, path })));
  check('sessionid-cookie-set', session && session.value !== '', describe);
  check('sessionid-httponly', session.httpOnly === true, describe);
  check('sessionid-samesite-lax', session.sameSite === 'Lax', describe);
  check('sessionid-path-root', session.path === '/', describe);
  check('csrftoken-not-httponly', csrf && csrf.httpOnly === false, describe);
  state.sessionid = session.value;

  // 5. The session list marks this browser's session.
  await page.waitForSelector('#sessions li', { state: 'attached', timeout: TIMEOUT });
  const items = await page.locator('#sessions li').count();
  const current = await page.locator('#sessions li[data-current="true"]').count();
  check('sessions-listed', items >= 1, `${items} items`);
  check('one-current-session', current === 1, `${current} of ${items} items have data-current="true"`);

  // 6. Who we are, by id and email.
  const me = await graphql(page, '{ whoami { id email } }');
  check('whoami-id-email', !me.errors && me.data?.whoami?.id && typeof me.data.whoami.email === 'string', JSON.stringify(me));
  const { id: userId, email } = me.data.whoami;
  state.userId = String(userId);

  // 7. Another site tries to change the email and to log us out. It even knows the password,
  // so an email change that went through would mail a confirmation link to its address (the
  // Rust test looks for one).
  const mutations = {
    update: `mutation { requestEmailChange(newEmail: "attacker@evil.test", password: ${JSON.stringify(password)}) { success } }`,
    logout: 'mutation { logout { success } }',
  };
  state.attacker = await within(startAttacker(mutations), 'start the attacker server');
  const baseHost = new URL(base).hostname;
  const attackerHost = baseHost === 'localhost' ? '127.0.0.1' : 'localhost';
  const attacker = `http://${attackerHost}:${state.attacker.address().port}`;
  const evil = await within(context.newPage(), 'new attacker page');
  await evil.goto(`${attacker}/`, { timeout: TIMEOUT });
  await evil.waitForFunction(() => document.title === 'done', null, { timeout: TIMEOUT });
  const results = await within(evil.evaluate(() => window.attackResults), 'read the attack results');
  const corsFetches = results.filter((r) => r.label.endsWith('-d-cors-fetch'));
  check('cross-site-cors-fetch-rejected', corsFetches.length === 2 && corsFetches.every((r) => r.outcome.startsWith('rejected')),
    JSON.stringify(results));
  // The logout one last. Waits for the facade's answer (whether the browser shows it or not).
  for (const key of ['update', 'logout']) {
    const sent = evil.waitForEvent('request', {
      predicate: (request) => request.url() === `${base}/graphql` && request.method() === 'POST' && request.isNavigationRequest(),
      timeout: TIMEOUT,
    });
    sent.catch(() => {}); // handled below; keeps a failed goto from leaving it unhandled
    // The page submits its form as soon as it loads, which may interrupt this navigation
    // before it commits: that is the attack going ahead, not a failure.
    await evil.goto(`${attacker}/top/${key}`, { timeout: TIMEOUT, waitUntil: 'commit' }).catch((error) => {
      if (!String(error).includes('interrupted by another navigation')) throw error;
    });
    const request = await sent;
    const answer = await within(request.response(), `the answer to the top-level ${key} POST`);
    check(`cross-site-top-level-${key}-post-sent`, answer !== null, `${key}: ${request.failure()?.errorText}`);
  }
  await within(evil.close(), 'close the attacker page');
  await within(page.bringToFront(), 'back to the demo page');

  const after = await graphql(page, '{ whoami { email } }');
  check('session-alive-after-attack', !after.errors && after.data?.whoami, JSON.stringify(after));
  check('email-unchanged-after-attack', after.data.whoami.email === email,
    `email ${JSON.stringify(after.data.whoami.email)}, was ${JSON.stringify(email)}`);

  // 8. Log out.
  await page.click('#logout', { timeout: TIMEOUT });
  await waitForWhoami(page, 'anonymous', 'after logout');
  checks.push('logout-shows-anonymous');
  const left = await within(context.cookies(base), 'read context cookies after logout');
  const stale = left.find((c) => c.name === 'sessionid');
  const expired = (c) => c.value === '' || (c.expires > 0 && c.expires * 1000 < Date.now());
  check('sessionid-cookie-cleared', !stale || expired(stale), JSON.stringify(stale));
  const anonymous = await graphql(page, '{ whoami { id } }');
  const code = anonymous.errors?.[0]?.extensions?.code;
  check('unauthenticated-after-logout', code === 'UNAUTHENTICATED', JSON.stringify(anonymous));
}

const state = { sessionid: null, userId: null, attacker: null };
let browser = null;
let failed = false;
try {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox'],
    timeout: TIMEOUT,
  });
  await run(browser, state);
} catch (error) {
  failed = true;
  console.error(`browser test failed: ${error.message}`);
  if (checks.length) console.error(`checks passed before: ${checks.join(', ')}`);
} finally {
  if (browser) await within(browser.close(), 'close the browser').catch((error) => console.error(error.message));
  if (state.attacker) {
    state.attacker.closeAllConnections();
    state.attacker.close();
  }
}
if (failed) process.exit(1);
console.log(JSON.stringify({ ok: true, sessionid: state.sessionid, userId: state.userId, checks }));
process.exit(0);

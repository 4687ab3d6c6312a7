// Drives the facade's tools and pages in headless Chromium, with the network to anything but
// the facade cut off:
//   swagger   Swagger UI's "Try it out": GET /api/csrf, POST /api/login with the token in
//             X-CSRFToken, GET /api/me
//   graphiql  GraphiQL renders from the facade's own assets and, logged in by cookie, runs a
//             mutation (its X-CSRFToken read from the cookie)
//   account   the account page: sessions by device and browser, "this device", revoking one
//             session, then every other
//
//   node tests/node/pages.mjs <swagger|graphiql|account> http://127.0.0.1:PORT <user> <password> <screenshot dir>
//
// On success prints one JSON line {"ok": true, "checks": [...], ...}; on a failed check the
// reason on stderr, exit 1. Screenshots go to the directory given.
import { TIMEOUT, checker, launch, offline, within } from './common.mjs';

const [scenario, base, username, password, shots] = process.argv.slice(2);
if (!scenario || !base || !username || !password || !shots) {
  console.error('usage: node pages.mjs <swagger|graphiql|account> http://host:port <user> <password> <screenshot dir>');
  process.exit(2);
}
const { passed, check } = checker();

// The JSON Swagger UI shows as the live response of an operation.
async function swaggerResponse(block) {
  const status = block.locator('.live-responses-table .response .response-col_status').first();
  await status.waitFor({ timeout: TIMEOUT });
  const body = await block.locator('.live-responses-table .response-col_description pre').first().textContent({ timeout: TIMEOUT });
  return { status: (await status.textContent()).trim(), body: JSON.parse(body) };
}

async function tryItOut(page, method, path, fill = async () => {}) {
  const block = page.locator(`.opblock-${method}`, { has: page.locator(`.opblock-summary-path[data-path="${path}"]`) });
  await block.locator('.opblock-summary').click({ timeout: TIMEOUT });
  await block.locator('button.try-out__btn').click({ timeout: TIMEOUT });
  await fill(block);
  await block.locator('button.execute').click({ timeout: TIMEOUT });
  return swaggerResponse(block);
}

async function swagger(context) {
  const page = await context.newPage();
  await page.goto(`${base}/api/docs/`, { timeout: TIMEOUT });
  await page.locator('.opblock').first().waitFor({ timeout: TIMEOUT });
  check('swagger-renders', (await page.locator('.opblock').count()) >= 4);

  const csrf = await tryItOut(page, 'get', '/csrf');
  check('swagger-csrf-200', csrf.status === '200', JSON.stringify(csrf));
  const token = csrf.body.csrfToken;
  check('swagger-csrf-shows-token', typeof token === 'string' && token.length === 43, JSON.stringify(csrf.body));

  const login = await tryItOut(page, 'post', '/login', async (block) => {
    await block.locator('tr[data-param-name="X-CSRFToken"] input').fill(token, { timeout: TIMEOUT });
    await block.locator('textarea.body-param__text').fill(JSON.stringify({ username, password }), { timeout: TIMEOUT });
  });
  check('swagger-login-200', login.status === '200', JSON.stringify(login));
  check('swagger-login-success', login.body.detail === 'success', JSON.stringify(login.body));

  const me = await tryItOut(page, 'get', '/me');
  check('swagger-me-200', me.status === '200', JSON.stringify(me));
  check('swagger-me-is-user', me.body.username === username, JSON.stringify(me.body));
  await page.locator('.opblock-post', { has: page.locator('.opblock-summary-path[data-path="/login"]') })
    .screenshot({ path: `${shots}/swagger-login.png`, timeout: TIMEOUT });
  return { me: me.body.username };
}

// Logs the browser in the way a front end does: /api/csrf, then /api/login with the token.
async function cookieLogin(page) {
  return within(
    page.evaluate(async ({ username, password }) => {
      const { csrfToken } = await (await fetch('/api/csrf', { credentials: 'same-origin' })).json();
      const response = await fetch('/api/login', {
        method: 'POST',
        credentials: 'same-origin',
        headers: { 'Content-Type': 'application/json', 'X-CSRFToken': csrfToken },
        body: JSON.stringify({ username, password }),
      });
      return { status: response.status, body: await response.json() };
    }, { username, password }),
    'cookie login',
  );
}

// Types `query` into GraphiQL's editor, runs it, and returns the JSON GraphiQL shows.
async function runInGraphiql(page, query) {
  await page.evaluate((text) => {
    document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror.setValue(text);
  }, query);
  await page.locator('.graphiql-execute-button').click({ timeout: TIMEOUT });
  const result = page.locator('.graphiql-response .CodeMirror');
  let text = '';
  const deadline = Date.now() + TIMEOUT;
  while (Date.now() < deadline) {
    text = await result.evaluate((node) => node.CodeMirror.getValue());
    if (text.trim().startsWith('{')) {
      try {
        return JSON.parse(text);
      } catch {
        // still streaming in
      }
    }
    await page.waitForTimeout(100);
  }
  throw new Error(`GraphiQL showed no result for ${query}: ${text}`);
}

async function graphiql(context) {
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (error) => errors.push(error.message));
  page.on('console', (message) => message.type() === 'error' && errors.push(message.text()));
  await page.goto(`${base}/`, { timeout: TIMEOUT });
  const login = await cookieLogin(page);
  check('graphiql-cookie-login', login.status === 200, JSON.stringify(login));

  errors.length = 0; // the demo page's own anonymous /api/me (401) is not GraphiQL's
  await page.goto(`${base}/graphql`, { timeout: TIMEOUT });
  await page.locator('.graphiql-container .graphiql-query-editor .CodeMirror').waitFor({ timeout: TIMEOUT });
  check('graphiql-renders-offline', true);
  const who = await runInGraphiql(page, '{ whoami { id username } }');
  check('graphiql-query-as-cookie-user', who.data?.whoami?.username === username, JSON.stringify(who));
  const email = `graphiql-${Date.now()}@example.com`;
  // An email change: the service mails a link to the new address (the Rust test reads it).
  const changed = await runInGraphiql(
    page,
    `mutation { requestEmailChange(newEmail: "${email}", password: ${JSON.stringify(password)}) { success errors } }`,
  );
  check('graphiql-mutation-with-csrf', changed.data?.requestEmailChange?.success === true, JSON.stringify(changed));
  check('graphiql-no-page-errors', errors.length === 0, errors.join(' | '));
  await page.screenshot({ path: `${shots}/graphiql.png` });
  return { email };
}

const AGENTS = {
  desktop: 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36',
  phone: 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1',
  laptop: 'Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0',
};

async function meStatus(page) {
  return within(page.evaluate(async () => (await fetch('/api/me', { credentials: 'same-origin' })).status), 'GET /api/me');
}

async function sessionRows(page, count) {
  await page.waitForFunction((n) => document.querySelectorAll("#sessions li.session").length === n, count, { timeout: TIMEOUT })
    .catch(async (error) => { throw new Error(`${error.message.split("\n")[0]}; status: ${await page.textContent("#status")}; rows: ${await page.locator("#sessions li").count()}`); });
  return page.locator('#sessions li.session').evaluateAll((items) => items.map((item) => ({
    current: item.dataset.current === 'true',
    text: item.innerText,
    revoke: Boolean(item.querySelector('button.revoke')),
  })));
}

async function account(context, browser) {
  // Two other devices sign in first.
  const devices = {};
  for (const name of ['phone', 'laptop']) {
    const other = await browser.newContext({ userAgent: AGENTS[name] });
    // What the other devices' pages try to reach outside the facade is reported with the rest.
    const outside = await offline(other, base);
    blockedElsewhere.push(outside);
    const page = await other.newPage();
    await page.goto(`${base}/`, { timeout: TIMEOUT });
    const login = await cookieLogin(page);
    check(`account-${name}-signs-in`, login.status === 200, JSON.stringify(login));
    devices[name] = page;
  }
  const page = await context.newPage();
  await page.goto(`${base}/`, { timeout: TIMEOUT });
  await page.waitForSelector('body[data-ready="true"]', { state: 'attached', timeout: TIMEOUT });
  await page.fill('#username', username);
  await page.fill('#password', password);
  await page.click('#login');
  let rows = await sessionRows(page, 3);
  const current = rows.filter((row) => row.current);
  check('account-one-this-device', current.length === 1 && current[0].text.includes('This device'), JSON.stringify(rows));
  check('account-this-device-reads-as-chrome-on-linux', /Chrome 156 on Linux/.test(current[0].text), current[0].text);
  check('account-this-device-has-no-revoke', !current[0].revoke, JSON.stringify(current[0]));
  const phone = rows.find((row) => row.text.includes('iPhone'));
  check('account-phone-reads-as-safari-on-iphone', phone && /Safari[^\n]* on iPhone/.test(phone.text) && phone.text.includes('phone'), JSON.stringify(rows));
  const laptop = rows.find((row) => row.text.includes('Firefox'));
  check('account-laptop-reads-as-firefox-on-windows', laptop && /Firefox 128 on Windows/.test(laptop.text), JSON.stringify(rows));
  check('account-shows-address-and-time', rows.every((row) => row.text.includes('127.0.0.1') && row.text.includes('signed in')), JSON.stringify(rows));
  await page.locator('main').screenshot({ path: `${shots}/account.png` });

  // Revoke the phone: it is signed out at once.
  await page.locator('#sessions li.session', { hasText: 'iPhone' }).locator('button.revoke').click();
  rows = await sessionRows(page, 2);
  check('account-phone-gone-from-list', !rows.some((row) => row.text.includes('iPhone')), JSON.stringify(rows));
  check('account-phone-signed-out', (await meStatus(devices.phone)) === 401);
  check('account-laptop-still-in', (await meStatus(devices.laptop)) === 200);

  // Everywhere else: the laptop too; this device stays.
  await page.click('#revoke-others');
  rows = await sessionRows(page, 1);
  check('account-only-this-device-left', rows[0].current, JSON.stringify(rows));
  check('account-laptop-signed-out', (await meStatus(devices.laptop)) === 401);
  check('account-this-device-still-in', (await meStatus(page)) === 200);
  const status = await page.textContent('#status');
  check('account-says-what-it-did', status.includes('Signed out everywhere else (1 session)'), status);
  await page.locator('main').screenshot({ path: `${shots}/account-after.png` });
  return { rows };
}

const scenarios = { swagger, graphiql, account };
let browser = null;
let failed = false;
let details = {};
let blocked = [];
const blockedElsewhere = [];
try {
  if (!scenarios[scenario]) throw new Error(`unknown scenario ${scenario}`);
  browser = await launch();
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, userAgent: AGENTS.desktop });
  blocked = await offline(context, base);
  details = await scenarios[scenario](context, browser);
} catch (error) {
  failed = true;
  console.error(`${scenario} failed: ${error.message}`);
  if (passed.length) console.error(`checks passed before: ${passed.join(', ')}`);
} finally {
  if (browser) await within(browser.close(), 'close the browser').catch((error) => console.error(error.message));
}
if (failed) process.exit(1);
blocked = blocked.concat(...blockedElsewhere);
console.log(JSON.stringify({ ok: true, checks: passed, blocked, ...details }));
process.exit(0);

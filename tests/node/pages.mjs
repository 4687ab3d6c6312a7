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
  const id = who.data.whoami.id;
  const changed = await runInGraphiql(page, `mutation { updateUser(id: "${id}", input: { email: "${email}" }) { email } }`);
  check('graphiql-mutation-with-csrf', changed.data?.updateUser?.email === email, JSON.stringify(changed));
  check('graphiql-no-page-errors', errors.length === 0, errors.join(' | '));
  await page.screenshot({ path: `${shots}/graphiql.png` });
  return { email };
}

const scenarios = { swagger, graphiql };
let browser = null;
let failed = false;
let details = {};
let blocked = [];
try {
  if (!scenarios[scenario]) throw new Error(`unknown scenario ${scenario}`);
  browser = await launch();
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
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
console.log(JSON.stringify({ ok: true, checks: passed, blocked, ...details }));
process.exit(0);

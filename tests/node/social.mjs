// Signs in from the account page's "Sign in with …" button in headless Chromium: the facade
// redirects to the OpenID provider (tests/node/social_providers.mjs), whose login completes by
// itself, which redirects back to the facade's callback, which sets the session cookie and
// returns to the page — where whoami names the provider's user.
//
//   node tests/node/social.mjs http://127.0.0.1:PORT <provider name> <expected username> <screenshot dir>
//
// On success prints one JSON line {"ok": true, "checks": [...], "whoami": ...}; on a failed
// check the reason on stderr, exit 1.
import { TIMEOUT, checker, launch } from './common.mjs';

const [base, provider, expected, shots] = process.argv.slice(2);
if (!base || !provider || !expected || !shots) {
  console.error('usage: node social.mjs http://host:port <provider> <username> <screenshot dir>');
  process.exit(2);
}
const { passed, check } = checker();

const browser = await launch();
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(base, { timeout: TIMEOUT });
  await page.waitForSelector('body[data-ready="true"]', { timeout: TIMEOUT });
  check('anonymous at first', (await page.textContent('#whoami')) === 'anonymous');
  const button = page.locator(`#social-${provider}`);
  await button.waitFor({ state: 'visible', timeout: TIMEOUT });
  check('the provider has a button', (await button.textContent()).startsWith('Sign in with'));
  // One navigation: the facade, the provider, the callback, back to the page (a new document).
  await Promise.all([page.waitForEvent('load', { timeout: TIMEOUT }), button.click({ timeout: TIMEOUT })]);
  check('back on the page', page.url() === `${base}/`, page.url());
  await page.waitForSelector('body[data-ready="true"]', { timeout: TIMEOUT });
  await page.waitForFunction(
    (name) => document.getElementById('whoami').textContent === name,
    expected,
    { timeout: TIMEOUT },
  );
  const whoami = await page.textContent('#whoami');
  check('signed in as the provider user', whoami === expected, whoami);
  const cookies = await context.cookies(base);
  const session = cookies.find((cookie) => cookie.name === 'sessionid');
  check('the session cookie is HttpOnly', Boolean(session && session.httpOnly));
  check('the binding cookie is gone', !cookies.some((cookie) => cookie.name === 'social_binding' && cookie.value));
  await page.waitForSelector('#identities li', { timeout: TIMEOUT });
  const identity = await page.textContent('#identities li');
  check('the linked account is listed', identity.startsWith(`${provider}:`), identity);
  await page.screenshot({ path: `${shots}/social-signed-in.png`, fullPage: true });
  console.log(JSON.stringify({ ok: true, checks: passed, whoami }));
} catch (error) {
  console.error(error.stack || String(error));
  process.exitCode = 1;
} finally {
  await browser.close();
}

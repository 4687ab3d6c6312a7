// Drives the password reset by mail in headless Chromium, with the network to anything but
// the facade cut off, in two steps around the mail (which the Rust test reads from its SMTP
// server in between):
//   forgot  on the demo page (/), "Forgot password?": the form sends a reset link to <email>
//   reset   opens <link> (the mail's reset link), sets <new password> twice, follows the page's
//           "Log in" link to the demo page and logs in as <username> with the new password
//
//   node tests/node/accounts.mjs forgot http://127.0.0.1:PORT <email> <screenshot dir>
//   node tests/node/accounts.mjs reset http://127.0.0.1:PORT <link> <username> <new password> <screenshot dir>
//
// On success prints one JSON line {"ok": true, "checks": [...], ...}; on a failed check the
// reason on stderr, exit 1. Screenshots go to the directory given.
import { TIMEOUT, checker, launch, offline, within } from './common.mjs';

const [scenario, base, ...rest] = process.argv.slice(2);
const usage = {
  forgot: 'forgot http://host:port <email> <screenshot dir>',
  reset: 'reset http://host:port <link> <username> <new password> <screenshot dir>',
};
if (!usage[scenario] || !base || rest.length !== (scenario === 'forgot' ? 2 : 4)) {
  console.error(`usage: node accounts.mjs ${usage.forgot}\n       node accounts.mjs ${usage.reset}`);
  process.exit(2);
}
const { passed, check } = checker();

// Waits until `selector` shows a text other than those in `passing` (empty, "Sending…");
// on timeout says what it showed instead.
async function settledText(page, selector, passing, step) {
  try {
    await page.waitForFunction(
      ([selector, passing]) => {
        const node = document.querySelector(selector);
        return node !== null && !passing.includes(node.textContent);
      },
      [selector, passing],
      { timeout: TIMEOUT },
    );
  } catch (error) {
    const shown = await page.textContent(selector, { timeout: 1000 }).catch(() => '?');
    throw new Error(`${step}: ${selector} shows ${JSON.stringify(shown)} (${error.message.split('\n')[0]})`);
  }
  return page.textContent(selector, { timeout: TIMEOUT });
}

async function demoPage(context) {
  const page = await context.newPage();
  await page.goto(`${base}/`, { timeout: TIMEOUT });
  await page.waitForSelector('body[data-ready="true"]', { state: 'attached', timeout: TIMEOUT });
  return page;
}

async function forgot(context, [email, shots]) {
  const page = await demoPage(context);
  check('forgot-form-hidden-at-first', await page.locator('#forgot-form').isHidden());
  await page.click('#forgot-link', { timeout: TIMEOUT });
  await page.locator('#forgot-form').waitFor({ state: 'visible', timeout: TIMEOUT });
  check('forgot-link-opens-the-form', true);
  await page.fill('#forgot-email', email, { timeout: TIMEOUT });
  await page.click('#forgot-submit', { timeout: TIMEOUT });
  const result = await settledText(page, '#forgot-result', ['', 'Sending…'], 'after submit');
  const failed = await page.locator('#forgot-result.error').count();
  check('forgot-sent', failed === 0, result);
  await page.screenshot({ path: `${shots}/forgot-password.png` });
  return { result };
}

async function reset(context, [link, username, newPassword, shots]) {
  check('link-leads-to-the-facade', link.startsWith(`${base}/account/reset-password?`), link);
  const page = await context.newPage();
  await page.goto(link, { timeout: TIMEOUT });
  await page.waitForSelector('#reset-submit:not([disabled])', { timeout: TIMEOUT });
  check('reset-page-ready', true);
  await page.fill('#new-password1', newPassword, { timeout: TIMEOUT });
  await page.fill('#new-password2', newPassword, { timeout: TIMEOUT });
  await page.click('#reset-submit', { timeout: TIMEOUT });
  try {
    await page.waitForSelector('#reset-result[data-outcome="success"]', { state: 'attached', timeout: TIMEOUT });
  } catch (error) {
    const shown = await page.textContent('#reset-result', { timeout: 1000 }).catch(() => '?');
    throw new Error(`the reset did not succeed: #reset-result shows ${JSON.stringify(shown)} (${error.message.split('\n')[0]})`);
  }
  const result = await page.textContent('#reset-result', { timeout: TIMEOUT });
  check('reset-says-done', result.length > 0, result);
  await page.screenshot({ path: `${shots}/reset-password.png` });

  // The page's "Log in" link leads to the demo page, where the new password works.
  await page.click('#reset-result a.login-link', { timeout: TIMEOUT });
  await page.waitForSelector('body[data-ready="true"]', { state: 'attached', timeout: TIMEOUT });
  check('login-link-leads-to-the-demo-page', new URL(page.url()).pathname === '/', page.url());
  await page.fill('#username', username, { timeout: TIMEOUT });
  await page.fill('#password', newPassword, { timeout: TIMEOUT });
  await page.click('#login', { timeout: TIMEOUT });
  const whoami = await settledText(page, '#whoami', ['anonymous', '…'], 'after login');
  check('logged-in-with-the-new-password', whoami === username, `#whoami: ${whoami}`);
  return { result, whoami };
}

const scenarios = { forgot, reset };
let browser = null;
let failed = false;
let details = {};
let blocked = [];
try {
  browser = await launch();
  const context = await within(browser.newContext({ viewport: { width: 1280, height: 900 } }), 'new browser context');
  context.setDefaultTimeout(TIMEOUT);
  blocked = await offline(context, base);
  details = await scenarios[scenario](context, rest);
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

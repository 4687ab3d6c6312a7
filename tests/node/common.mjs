// What the browser scripts share: launching Debian's Chromium through playwright-core,
// checks that name what failed, and a timeout for calls that take none.
import { chromium } from 'playwright-core';

export const TIMEOUT = 15_000;

export function checker() {
  const passed = [];
  const check = (name, condition, detail = '') => {
    if (!condition) throw new Error(`check "${name}" failed${detail ? `: ${detail}` : ''}`);
    passed.push(name);
  };
  return { passed, check };
}

// For calls that take no timeout option of their own.
export function within(promise, what, ms = TIMEOUT) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox'],
    timeout: TIMEOUT,
  });
}

// Lets the page reach `base` only: every request elsewhere (a CDN, the internet) is aborted
// and noted, as on a network with no way out.
export async function offline(context, base) {
  const blocked = [];
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (url.startsWith(base) || url.startsWith('data:') || url.startsWith('blob:')) return route.continue();
    blocked.push(url);
    return route.abort('internetdisconnected');
  });
  return blocked;
}

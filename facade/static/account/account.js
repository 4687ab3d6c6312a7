// The pages the facade's mail links open (/account/verify-email, /account/confirm-email,
// /account/reset-password). Opening a page changes nothing: mail scanners fetch links. Only a
// click posts the link's key or token to the REST route (after GET /api/csrf, as every
// anonymous account route needs X-CSRFToken), then shows the outcome: on success a link to
// the account page to log in, on failure the error's detail.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(window.location.search);

  // Read fresh before each request: a login elsewhere rotates it.
  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]*)/);
    return match ? decodeURIComponent(match[1]) : '';
  }

  // A same-origin JSON POST with the CSRF token. GET /api/csrf first: it sets the cookie, or
  // keeps a good one. Resolves to { response, data }.
  async function post(path, body) {
    const csrf = await fetch('/api/csrf', { credentials: 'same-origin' });
    if (!csrf.ok) return { response: csrf, data: await csrf.json().catch(() => null) };
    const response = await fetch(path, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', 'X-CSRFToken': csrfToken() },
      body: JSON.stringify(body),
    });
    return { response, data: await response.json().catch(() => null) };
  }

  // What a refused link means, after the detail that says it. (The verification route
  // answers a dead link as dj-rest-auth does: 404 `Not found.`)
  const LINK_REFUSALS = {
    'Expired token.': 'This link has expired: ask for a new one.',
    'Invalid token.': 'This link was used already, replaced by a newer one, or is unknown.',
    'Not found.': 'This link was used already, replaced by a newer one, has expired, or is unknown.',
  };

  // The `detail` of an error response (plus Retry-After when throttled).
  function detailOf({ response, data }) {
    let text = data && data.detail ? String(data.detail) : `HTTP ${response.status} ${response.statusText}`;
    if (LINK_REFUSALS[text]) text += ` ${LINK_REFUSALS[text]}`;
    const retry = response.headers.get('Retry-After');
    if (response.status === 429 && retry) text += ` (retry after ${retry} s)`;
    return text;
  }

  // outcome: 'pending', 'success' (with a link to log in) or 'error'.
  function show(result, outcome, text) {
    result.dataset.outcome = outcome;
    result.replaceChildren(document.createTextNode(text));
    if (outcome === 'success') {
      const login = document.createElement('a');
      login.href = '/';
      login.className = 'login-link';
      login.textContent = 'Log in';
      result.append(' ', login);
    }
  }

  // A page with one button that posts the link's `key` to `path`.
  function confirmPage(path, done) {
    const button = $('confirm-submit');
    const result = $('confirm-result');
    const key = params.get('key');
    if (!key) {
      show(result, 'error', 'This link is incomplete: it has no key. Open the link from the e-mail again.');
      return;
    }
    button.disabled = false;
    button.addEventListener('click', async () => {
      button.disabled = true;
      show(result, 'pending', 'Working…');
      try {
        const answer = await post(path, { key });
        if (answer.response.ok) {
          show(result, 'success', done);
          return;
        }
        show(result, 'error', detailOf(answer));
      } catch (error) {
        show(result, 'error', `Network error: ${error.message}`);
      }
      button.disabled = false;
    });
  }

  function resetPage() {
    const form = $('reset-form');
    const button = $('reset-submit');
    const result = $('reset-result');
    const uid = params.get('uid') || '';
    const token = params.get('token');
    if (!token) {
      show(result, 'error', 'This link is incomplete: it has no token. Open the link from the e-mail again.');
      return;
    }
    button.disabled = false;
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      button.disabled = true;
      show(result, 'pending', 'Working…');
      try {
        const answer = await post('/api/password/reset/confirm/', {
          uid,
          token,
          new_password1: $('new-password1').value,
          new_password2: $('new-password2').value,
        });
        if (answer.response.ok) {
          form.reset();
          form.hidden = true;
          show(result, 'success', `${answer.data.detail} You were signed out everywhere.`);
          return;
        }
        show(result, 'error', detailOf(answer));
      } catch (error) {
        show(result, 'error', `Network error: ${error.message}`);
      }
      button.disabled = false;
    });
  }

  switch (document.body.dataset.page) {
    case 'verify-email':
      confirmPage('/api/registration/verify-email/', 'Your e-mail address is verified.');
      break;
    case 'confirm-email':
      confirmPage('/api/email/change/confirm/', 'Your account now uses this e-mail address.');
      break;
    case 'reset-password':
      resetPage();
      break;
    default:
      break;
  }
  document.body.dataset.ready = 'true';
})();

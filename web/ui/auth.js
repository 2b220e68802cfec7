// auth.js — the sign-in screen: log in or create an account (then log in),
// with the API's errors in words. Resolves the caller's `onSignedIn` with
// the login answer {token, user_id, expires_at} and the username.

import * as api from './api.js';
import { $ } from './dom.js';

const USERNAME_RE = /^[A-Za-z0-9_.-]{3,32}$/;
const utf8 = new TextEncoder();
let mode = 'login';

export function initAuth(onSignedIn) {
  const form = $('#auth-form');
  for (const tab of document.querySelectorAll('.auth-tab')) {
    tab.addEventListener('click', () => setMode(tab.dataset.mode));
  }
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const username = form.elements.username.value.trim();
    const password = form.elements.password.value;
    const confirm = form.elements.confirm.value;
    const problem = check(username, password, confirm);
    if (problem) return showError(problem.text, problem.field);
    showError(null);
    const submit = $('#auth-submit');
    submit.disabled = true;
    form.classList.add('busy');
    try {
      if (mode === 'register') await api.register(username, password);
      const session = await api.login(username, password);
      form.elements.password.value = '';
      form.elements.confirm.value = '';
      await onSignedIn(session, username);
    } catch (err) {
      showError(api.describeError(err, mode === 'register' ? {} : { invalid_field: 'Wrong username or password.' }));
    } finally {
      submit.disabled = false;
      form.classList.remove('busy');
    }
  });
}

function check(username, password, confirm) {
  if (!username) return { text: 'Enter your username.', field: 'username' };
  if (mode === 'register') {
    if (!USERNAME_RE.test(username)) {
      return { text: 'A username has 3 to 32 characters: letters, digits, “_”, “.” and “-”.', field: 'username' };
    }
    const len = utf8.encode(password).length;
    if (len < 8) return { text: 'Choose a password of at least 8 characters.', field: 'password' };
    if (len > 256) return { text: 'That password is too long (at most 256 bytes).', field: 'password' };
    if (password !== confirm) return { text: 'The two passwords do not match.', field: 'confirm' };
  } else if (!password) return { text: 'Enter your password.', field: 'password' };
  return null;
}

function setMode(m) {
  mode = m === 'register' ? 'register' : 'login';
  const form = $('#auth-form');
  for (const tab of document.querySelectorAll('.auth-tab')) {
    const on = tab.dataset.mode === mode;
    tab.classList.toggle('active', on);
    tab.setAttribute('aria-selected', String(on));
  }
  $('#confirm-field').hidden = mode !== 'register';
  $('#auth-submit').textContent = mode === 'register' ? 'Create account' : 'Log in';
  form.elements.password.autocomplete = mode === 'register' ? 'new-password' : 'current-password';
  $('#auth-hint').textContent =
    mode === 'register' ? '3–32 characters: letters, digits, _ . - · password of 8+ characters' : '';
  showError(null);
}

/** Shows (or with null clears) the error under the form; focuses the field at fault. */
export function showError(text, field) {
  const el = $('#auth-error');
  el.textContent = text ?? '';
  el.hidden = !text;
  const form = $('#auth-form');
  for (const name of ['username', 'password', 'confirm']) form.elements[name].removeAttribute('aria-invalid');
  if (field) {
    form.elements[field].setAttribute('aria-invalid', 'true');
    form.elements[field].focus();
  }
}

export function showAuth(message) {
  $('#boot').hidden = true;
  $('#app').hidden = true;
  $('#auth').hidden = false;
  setMode('login');
  if (message) showError(message);
  const form = $('#auth-form');
  (form.elements.username.value ? form.elements.password : form.elements.username).focus();
}

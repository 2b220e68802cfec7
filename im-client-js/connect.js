// connect.js — getting an ImClient connected and keeping it so.
//
// * run: load the cursors, run the reconnect loop, finish with its reason;
// * the reconnect loop: connect, run the connection, then react to how it
//   ended (close code classes: same node / via dispatcher / stop), with
//   exponential backoff, re-login after 4000 (and, if asked, 4001);
// * one attempt within the connect timeout: login (`POST /api/v1/login`),
//   the dispatcher lookup, the handshake (connection.js) with the fallback
//   from protocol 2 to 1 on 4003, and the token probe (`GET /api/v1/me`).
//
// Functions of the client: they read and set its connection state (token,
// device, backoff, stop signal) and call its `_runConnection`,
// `_disconnected`, `_emit` and `_finish`. ImClient calls `run` once.

import { closeCodeName, closeReaction, Reaction } from './backoff.js';
import { AttemptError, handshake, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION } from './connection.js';
import { SyncState } from './sync-state.js';

/** What `client._stopSignal` rejects with, and an aborted attempt throws, once close() is called. */
export const STOPPED = Symbol('stopped');

/** The client's whole run, from `start()` to the `stopped` event. */
export async function run(client) {
  let reason = null;
  try {
    const cursors = (await client._store.load()) ?? {};
    // Checked against the user of the first `hello` (ImClient._checkCursorOwner).
    client._loadedCursors = cursors;
    client._sync = new SyncState(cursors);
  } catch (e) {
    reason = { kind: 'cursor_store', message: String(e?.message ?? e) };
  }
  if (!reason) {
    try {
      reason = await reconnectLoop(client);
    } catch (e) {
      reason = { kind: 'internal', message: String(e?.stack ?? e) };
    }
  }
  await client._finish(reason);
}

/** Runs `p`, or throws STOPPED as soon as close() is called. */
function raceStop(client, p) {
  return Promise.race([p, client._stopSignal.promise]);
}

/**
 * A backoff sleep; close() cancels its timer (the race ends the wait), and
 * `client._wake()` (reconnectNow) ends it at once. It is set up before the
 * `reconnecting` event goes out, so a listener of that event can already
 * cut it short.
 */
function sleep(client, ms) {
  return new Promise((resolve) => {
    const wake = () => {
      clearTimeout(client._sleepTimer);
      client._sleepTimer = null;
      if (client._wake === wake) client._wake = null;
      resolve();
    };
    client._wake = wake;
    client._sleepTimer = setTimeout(wake, ms);
  });
}

/** Connects, runs the connection, and reconnects as the close code says, until something terminal happens. */
async function reconnectLoop(client) {
  let sameUrl = null; // the next attempt reuses this URL ("same node"); null: resolve
  let relogged = false;
  for (;;) {
    if (client._stopRequest) return client._stopRequest;
    const freshToken = client._token === null;
    let conn = null;
    try {
      const url = sameUrl;
      sameUrl = null; // if this attempt fails, the next goes through the dispatcher
      const pending = attempt(client, url);
      // A connection that completes after close() was called is closed at once.
      pending.then((c) => client._stopRequest && c.ws.close(1000, 'client stopped'), () => {});
      conn = await raceStop(client, pending);
    } catch (err) {
      if (err === STOPPED || client._stopRequest) return client._stopRequest;
      if (!(err instanceof AttemptError)) throw err;
      if (err.kind === 'stop') return err.reason;
      if (err.kind === 'token') {
        // A password client logs in again once; a fixed token is dead.
        if (client._auth.username !== undefined && !freshToken && !relogged) {
          relogged = true;
          client._token = null;
          continue;
        }
        return err.reason;
      }
      client._log.debug('connection attempt failed:', err.message);
    }
    if (conn) {
      relogged = false;
      const ended = await client._runConnection(conn);
      client._disconnected();
      for (const [conv, user] of client._typingIn.clear()) client._emit({ type: 'typing', conv, user, typing: false });
      if (ended.kind === 'stop') return ended.reason;
      client._log.info('disconnected', ended.code, ended.reason);
      client._emit({ type: 'disconnected', code: ended.code ?? null, reason: ended.reason });
      const reaction = ended.code == null ? Reaction.DISPATCHER : closeReaction(ended.code);
      if (reaction === Reaction.STOP) {
        const relogin =
          client._auth.username !== undefined &&
          (ended.code === 4000 || (ended.code === 4001 && client._opts.reloginOnRevoked));
        if (!relogin) {
          return { kind: 'closed', code: ended.code, name: closeCodeName(ended.code), reason: ended.reason };
        }
        client._token = null;
      } else if (reaction === Reaction.SAME_NODE) {
        sameUrl = conn.url;
      }
    }
    // The attempt after the wait counts as `next.attempt` whether it comes
    // when the timer fires or sooner (reconnectNow): the backoff is not
    // reset here, so a failed early attempt waits the next, longer delay.
    const next = client._backoff.next();
    if (!next) return { kind: 'too_many_attempts', attempts: client._opts.reconnect?.maxAttempts ?? 0 };
    const wait = sleep(client, next.delayMs);
    client._emit({ type: 'reconnecting', attempt: next.attempt, delayMs: next.delayMs });
    try {
      await raceStop(client, wait);
    } catch {
      return client._stopRequest;
    } finally {
      client._wake = null;
    }
  }
}

/**
 * One connection attempt: logs in if needed, asks the dispatcher if needed,
 * opens the socket and waits for `hello`, within the connect timeout.
 * Resolves with `{ws, url, token, hello}`; fails with an AttemptError.
 */
async function attempt(client, sameUrl) {
  const ac = new AbortController();
  client._attemptAbort = ac;
  const limit = client._opts.connectTimeoutMs;
  const timer = setTimeout(
    () => ac.abort(new AttemptError('retry', null, `no hello within the connect timeout (${limit} ms)`)),
    limit,
  );
  try {
    const token = client._token ?? client._auth.token ?? (await login(client, ac.signal));
    const url = sameUrl ?? (client._endpoint.dispatcher ? await dispatch(client, ac.signal) : client._endpoint.url);
    // The newest protocol version first; a server that refuses it with
    // 4003 (an older server) is asked for the next older one.
    for (let version = PROTOCOL_VERSION; ; version--) {
      try {
        const { ws, hello } = await handshake({
          WebSocket: client._WebSocket,
          url,
          device: client._device,
          token,
          version,
          tokenInQuery: client._opts.tokenInQuery,
          tokenRefused: () => tokenRefused(client, token, ac.signal),
          signal: ac.signal,
        });
        return { ws, url, token, hello };
      } catch (e) {
        if (e instanceof AttemptError && e.kind === 'stop' && e.reason?.code === 4003 && version > MIN_PROTOCOL_VERSION) {
          client._log.info(`server does not speak protocol ${version}; asking for ${version - 1}`);
          continue;
        }
        throw e;
      }
    }
  } catch (e) {
    if (ac.signal.aborted) throw ac.signal.reason;
    throw e;
  } finally {
    clearTimeout(timer);
    if (client._attemptAbort === ac) client._attemptAbort = null;
  }
}

/** Logs in with the configured username and password; resolves with the token. */
async function login(client, signal) {
  if (!client._fetch) throw new AttemptError('stop', { kind: 'login_failed', message: 'no fetch available' });
  let resp;
  try {
    resp = await client._fetch(`${client._apiBase}/api/v1/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ username: client._auth.username, password: client._auth.password }),
      signal,
    });
  } catch (e) {
    throw new AttemptError('retry', null, `login unreachable: ${e?.message ?? e}`);
  }
  if (resp.status === 200) {
    try {
      const body = await resp.json();
      if (typeof body?.token === 'string' && body.token) return body.token;
    } catch {
      // fall through
    }
    throw new AttemptError('retry', null, 'login answer unreadable');
  }
  if ([400, 401, 403, 404].includes(resp.status)) {
    throw new AttemptError('stop', { kind: 'login_failed', message: `login refused with HTTP ${resp.status}` });
  }
  throw new AttemptError('retry', null, `login answered HTTP ${resp.status}`);
}

/** Asks the dispatcher which node to connect to; resolves with its `ws(s)://` URL. */
async function dispatch(client, signal) {
  if (!client._fetch) throw new AttemptError('stop', { kind: 'internal', message: 'no fetch available for the dispatcher' });
  let body;
  try {
    const resp = await client._fetch(client._endpoint.url, { method: 'GET', signal });
    if (!resp.ok) throw new Error(`dispatcher answered HTTP ${resp.status}`);
    body = await resp.json();
  } catch (e) {
    throw new AttemptError('retry', null, `dispatcher failed: ${e?.message ?? e}`);
  }
  const url = body?.url;
  if (typeof url !== 'string' || !/^wss?:\/\//i.test(url)) {
    throw new AttemptError('retry', null, `dispatcher gave a bad URL ${JSON.stringify(url)}`);
  }
  return url;
}

/**
 * Browsers hide the HTTP status of a refused WebSocket handshake (a 401
 * looks like any network failure, close 1006). After a failed handshake the
 * client therefore asks the business API whether the token still works:
 * `GET /api/v1/me` answering 401 means the token was refused.
 */
async function tokenRefused(client, token, signal) {
  if (!client._opts.probeTokenOnFailure || !client._fetch) return false;
  try {
    const resp = await client._fetch(`${client._apiBase}/api/v1/me`, {
      headers: { authorization: `Bearer ${token}` },
      signal,
    });
    return resp.status === 401;
  } catch {
    return false;
  }
}

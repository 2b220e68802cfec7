// im-server.js — a real im-server process for the tests that need one
// (im-client-js/live-test, web/browser-test): a free loopback port, start
// (waiting for /healthz), stop. The binary comes from IM_SERVER_BIN
// (default: target/debug/im-server of this repository).

import { spawn } from 'node:child_process';
import { createServer } from 'node:net';

export const BIN = process.env.IM_SERVER_BIN ?? new URL('../../target/debug/im-server', import.meta.url).pathname;

/** A loopback port free at the time of asking. */
export async function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/**
 * Starts im-server on `127.0.0.1:port` with `storage` arguments (e.g.
 * `['--memory']` or `['--data-dir', dir]`); resolves once /healthz answers,
 * within `waitMs`.
 */
export async function startServer(port, storage, waitMs = 15_000) {
  const child = spawn(BIN, ['--listen', `127.0.0.1:${port}`, ...storage], {
    stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, IM_LOG: process.env.IM_LOG ?? 'warn' },
  });
  const deadline = Date.now() + waitMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`im-server exited with ${child.exitCode}`);
    try {
      if ((await fetch(`http://127.0.0.1:${port}/healthz`)).ok) return child;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`im-server did not come up within ${waitMs} ms`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Stops the process — SIGINT, the immediate graceful shutdown (SIGTERM
 * would drain over the drain window) — and waits for it to exit; after
 * `waitMs` it is killed.
 */
export async function stopServer(child, waitMs = 10_000) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGINT');
  const timer = setTimeout(() => child.kill('SIGKILL'), waitMs);
  await exited;
  clearTimeout(timer);
}

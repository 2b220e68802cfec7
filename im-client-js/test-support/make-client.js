// An ImClient wired to a FakeServer (fake-server.js) with fast reconnects
// and ticks, recording every event it emits.
import { ImClient, MemoryCursorStore } from '../im-client.js';
import { silentLogger } from './fake-server.js';

/** Reconnect delays short enough for tests. */
export const fast = { initialDelayMs: 5, maxDelayMs: 20, multiplier: 2, jitter: 0 };

/** A client of `server` (options in `extra` override the defaults) and the array its events go to. */
export function makeClient(server, extra = {}) {
  const events = [];
  const client = new ImClient({
    url: 'http://disp.test/dispatch',
    token: 'tok',
    device: 'laptop-1',
    WebSocket: server.WebSocket,
    fetch: server.fetch,
    cursorStore: new MemoryCursorStore(),
    reconnect: fast,
    tickMs: 20,
    logger: silentLogger,
    ...extra,
  });
  client.on('*', (e) => events.push(e));
  return { client, events };
}

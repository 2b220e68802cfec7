// cursor-store.js — where a device keeps its cur_max_message_id cursors
// between runs (protocol §8.1). A store has three methods, each may return a
// value or a Promise:
//
//   load()            -> {conv: id, ...}   every stored cursor ({} for a fresh device)
//   save(conv, id)                         the app has every message of conv up to id
//   flush()                                make every saved cursor durable
//
// The client calls `save` each time a message is handed to the app (keep it
// cheap: memory), and `flush` at quiet moments (after a sync run, every tick
// while messages flow, at a disconnect and when it stops). A crash between
// the two loses only cursor progress, never a message: the next sync fetches
// again what the app was last known to have.

/** Cursors in memory only: a new process starts from nothing. */
export class MemoryCursorStore {
  constructor(cursors = {}) {
    this._cursors = { ...cursors };
  }
  load() {
    return { ...this._cursors };
  }
  save(conv, id) {
    this._cursors[conv] = id;
  }
  flush() {}
}

/**
 * Cursors in a Web Storage object (`localStorage`) under one key, as JSON.
 * `save` updates memory; `flush` writes the key when something changed.
 */
export class WebStorageCursorStore {
  /**
   * @param {Storage} storage e.g. `localStorage`
   * @param {string} [key]
   */
  constructor(storage, key = 'im-client:cursors') {
    this._storage = storage;
    this._key = key;
    this._cursors = null;
    this._dirty = false;
  }
  load() {
    let parsed = {};
    try {
      const raw = this._storage.getItem(this._key);
      if (raw) parsed = JSON.parse(raw);
    } catch {
      parsed = {}; // a torn or foreign value: start over (sync fetches again)
    }
    this._cursors = {};
    for (const [conv, id] of Object.entries(parsed ?? {})) {
      if (Number.isSafeInteger(id) && id >= 0) this._cursors[conv] = id;
    }
    return { ...this._cursors };
  }
  save(conv, id) {
    if (this._cursors === null) this.load();
    this._cursors[conv] = id;
    this._dirty = true;
  }
  flush() {
    if (!this._dirty || this._cursors === null) return;
    this._storage.setItem(this._key, JSON.stringify(this._cursors));
    this._dirty = false;
  }
}

/**
 * Cursors in IndexedDB (database `dbName`, one object store, one record per
 * conversation). `save` updates memory; `flush` writes the changed records
 * in one transaction. Browser only; NOT covered by the Node test suite.
 */
export class IndexedDBCursorStore {
  constructor(dbName = 'im-client', storeName = 'cursors', idb = globalThis.indexedDB) {
    this._dbName = dbName;
    this._storeName = storeName;
    this._idb = idb;
    this._db = null;
    this._changed = new Map();
  }
  _open() {
    if (this._db) return Promise.resolve(this._db);
    return new Promise((resolve, reject) => {
      const req = this._idb.open(this._dbName, 1);
      req.onupgradeneeded = () => req.result.createObjectStore(this._storeName);
      req.onsuccess = () => resolve((this._db = req.result));
      req.onerror = () => reject(req.error);
    });
  }
  async load() {
    const db = await this._open();
    return new Promise((resolve, reject) => {
      const out = {};
      const tx = db.transaction(this._storeName, 'readonly');
      const cursorReq = tx.objectStore(this._storeName).openCursor();
      cursorReq.onsuccess = () => {
        const c = cursorReq.result;
        if (!c) return;
        if (Number.isSafeInteger(c.value)) out[c.key] = c.value;
        c.continue();
      };
      tx.oncomplete = () => resolve(out);
      tx.onerror = () => reject(tx.error);
    });
  }
  save(conv, id) {
    this._changed.set(conv, id);
  }
  async flush() {
    if (this._changed.size === 0) return;
    const batch = this._changed;
    this._changed = new Map();
    const db = await this._open();
    await new Promise((resolve, reject) => {
      const tx = db.transaction(this._storeName, 'readwrite');
      const store = tx.objectStore(this._storeName);
      for (const [conv, id] of batch) store.put(id, conv);
      tx.oncomplete = () => resolve();
      tx.onerror = () => {
        // Put them back (unless newer ones came meanwhile) for the next flush.
        for (const [conv, id] of batch) if (!this._changed.has(conv)) this._changed.set(conv, id);
        reject(tx.error);
      };
    });
  }
}

/** The default store: `localStorage` when present (key per device), else memory. */
export function defaultCursorStore(device) {
  try {
    const ls = globalThis.localStorage;
    if (ls && typeof ls.getItem === 'function') {
      return new WebStorageCursorStore(ls, `im-client:cursors:${device ?? 'default'}`);
    }
  } catch {
    // localStorage access can throw (privacy modes, opaque origins)
  }
  return new MemoryCursorStore();
}

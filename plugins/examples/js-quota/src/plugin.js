// js-quota: an in-memory file store with per-tenant quotas, for scratch and
// drop-box space. A wasftp storage plugin (wit/storage.wit, world `plugin`)
// built with componentize-js.
//
// How componentize-js 0.23 maps the contract (see README.md):
// - the exported interface `backend` is the object exported as `backend`:
//   its functions in camelCase (`openSession`, `abortOrphan`), its resources
//   as classes (`Session`, `Reader`, `Writer`) whose methods are called on
//   their prototype; a returned resource must be an instance of that class;
// - `result<T, E>`: the return value is ok; a returned `{ tag: 'err', val }`
//   (or `{ tag: 'ok', val }`) is taken as the result itself; a thrown (or
//   rejected) value is the error: its own `payload` property if it has one,
//   else the value itself. A plain Error is no valid error value, so its
//   lowering fails and the instance traps (losing the tenant's files);
//   hence `guard` below;
// - variants `{ tag: 'not-found' }` / `{ tag: 'io', val: 'text' }`, enums
//   as strings, records with camelCase fields, u64 as BigInt (a Number is
//   accepted on the way out), u32 as Number, option as undefined or the
//   value, list<u8> as Uint8Array;
// - a host's drop of a resource calls its `[Symbol.dispose]()`
//   (`Symbol.for('dispose')` where the engine has no Symbol.dispose).
//
// Top-level code runs once, when the component is built (Wizer snapshots
// the initialised engine), so nothing here may read the clock or config.

import { log } from 'wasftp:storage/log@0.2.0';

import { TAGS, invalidInput, noSpace, permissionDenied, unsupported } from './errors.js';
import { free, isOutOfMemory, MAX_SIZE } from './content.js';
import { largestQuota, parseConfig, quotaFor } from './config.js';
import { Store } from './store.js';

const NAME = 'js-quota';
const VERSION = '0.1.0';
const CHUNK = 256 * 1024;
const DISPOSE = Symbol.dispose || Symbol.for('dispose');

const store = new Store();
let config = parseConfig([]);
// The tenant this instance serves (scope tenant: one instance per tenant),
// known from its first session.
let tenant;

function say(level, message) {
  try {
    log(level, message);
  } catch {
    // Logging must never be what fails a call.
  }
}

// The error to answer for anything a call threw: a StorageError's payload
// as it is; an allocation the engine could not make, no-space (the instance
// stays usable); anything else, a bug, `io` with its text and a log line,
// rather than a trap that would lose every file of the tenant.
function failure(what, e) {
  const payload = e !== null && typeof e === 'object' ? e.payload : undefined;
  if (payload !== undefined && TAGS.has(payload.tag)) return payload;
  if (isOutOfMemory(e)) {
    say('warn', `${NAME}: ${what}: out of memory, answered no-space`);
    return { tag: 'no-space' };
  }
  let text;
  try {
    text = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
    say('error', `${NAME}: ${what} failed unexpectedly: ${e instanceof Error ? e.stack || text : text}`);
  } catch {
    text = 'unknown error';
  }
  return { tag: 'io', val: `${NAME}: internal error in ${what}: ${text}`.slice(0, 512) };
}

// Runs one call of a function returning `result<_, error>`.
function guard(what, body) {
  try {
    return body();
  } catch (e) {
    return { tag: 'err', val: failure(what, e) };
  }
}

// A u64 from the host as a Number: past 2^53 it can only be "too big".
const toNumber = (big) => (big <= BigInt(MAX_SIZE) ? Number(big) : Infinity);
const toNumberOpt = (big) => (big === undefined ? undefined : toNumber(big));

class Session {
  constructor(context) {
    this.user = context.user;
    this.tenant = context.tenant;
  }

  listDir(path, cursor, limit) {
    return guard('list-dir', () => store.listDir(path, cursor, limit));
  }

  fileInfo(path) {
    return guard('file-info', () => store.fileInfo(path));
  }

  // No symlinks here: nothing to not follow.
  linkInfo(path) {
    return guard('link-info', () => store.fileInfo(path));
  }

  openRead(path, version) {
    return guard('open-read', () => {
      const { pages, info } = store.openRead(path, version);
      return new Reader(pages, info);
    });
  }

  beginWrite(path, options) {
    return guard('begin-write', () => new Writer(store.beginWrite(path, options)));
  }

  makeDir(path, permissions) {
    return guard('make-dir', () => store.makeDir(path, permissions));
  }

  removeDir(path) {
    return guard('remove-dir', () => store.removeDir(path));
  }

  removeFile(path) {
    return guard('remove-file', () => store.removeFile(path));
  }

  rename(src, dst, overwrite) {
    return guard('rename', () => store.rename(src, dst, overwrite));
  }

  copyFile(src, dst, overwrite) {
    return guard('copy-file', () => store.copyFile(src, dst, overwrite));
  }

  setInfo(path, attrs) {
    return guard('set-info', () =>
      store.setInfo(path, {
        size: toNumberOpt(attrs.size),
        permissions: attrs.permissions,
        accessed: toNumberOpt(attrs.accessed),
        modified: toNumberOpt(attrs.modified),
      }),
    );
  }

  readLink(_path) {
    return { tag: 'err', val: unsupported().payload };
  }

  makeLink(_target, _path) {
    return { tag: 'err', val: unsupported().payload };
  }

  hardLink(_src, _dst) {
    return { tag: 'err', val: unsupported().payload };
  }

  space(path) {
    return guard('space', () => store.space(path));
  }
}

// One pinned version: the pages it opened, whatever happens to the file.
class Reader {
  constructor(pages, info) {
    this.pages = pages;
    this.snapshot = info;
  }

  info() {
    return this.snapshot;
  }

  read(offset, len) {
    return guard('read', () => {
      if (this.pages === null) throw invalidInput('reader already closed');
      // At most the rest of one page, a view of it: nothing is allocated.
      return this.pages.read(toNumber(offset), len);
    });
  }

  // The host dropped the reader: the version it pinned may go.
  [DISPOSE]() {
    if (this.pages !== null) this.pages.release();
    this.pages = null;
  }
}

class Writer {
  constructor(pending) {
    this.pending = pending;
  }

  #open() {
    if (!this.pending.open) throw invalidInput('writer already finished or aborted');
    return this.pending;
  }

  // `data` is this call's own copy (the bindings make one per call): the
  // store keeps it as a page or frees it at once, refused or not.
  writeChunk(offset, data) {
    return guard('write-chunk', () => {
      let pending;
      try {
        pending = this.#open();
      } catch (e) {
        free(data);
        throw e;
      }
      store.writeChunk(pending, toNumber(offset), data);
    });
  }

  setSize(size) {
    return guard('set-size', () => {
      const pending = this.#open();
      const n = toNumber(size);
      if (!(n <= MAX_SIZE)) throw noSpace();
      store.setPendingSize(pending, n);
    });
  }

  finish() {
    return guard('finish', () => store.commit(this.#open()));
  }

  abort() {
    try {
      if (this.pending.open) store.abort(this.pending);
    } catch (e) {
      failure('abort', e);
    }
  }

  // Nothing outside the instance is ever left behind.
  recoveryToken() {
    return undefined;
  }

  // Dropped without finish or abort (a lost connection): leaves nothing.
  [DISPOSE]() {
    this.abort();
  }
}

function applyQuota(forTenant) {
  const q = quotaFor(config, forTenant);
  store.setQuota(q.bytes, q.files);
  return q;
}

const MiB = 1024 * 1024;
const showBytes = (n) => (n >= MiB && n % MiB === 0 ? `${n / MiB} MiB` : `${n} bytes`);

export const backend = {
  init(pairs) {
    try {
      config = parseConfig(pairs);
    } catch (e) {
      return { tag: 'err', val: typeof e === 'string' ? e : `${NAME}: ${e}` };
    }
    const q = applyQuota(undefined);
    const overrides = config.tenantBytes.size + config.tenantFiles.size;
    say('info', `${NAME} ${VERSION}: quota ${showBytes(q.bytes)} (${q.source}) and ${q.files} files and directories per tenant` +
      (overrides > 0 ? `; ${overrides} per-tenant override(s)` : ''));
    if (q.clamped) {
      say('warn', `${NAME}: the quota is lowered to ${showBytes(q.bytes)}, what the memory cap of ${showBytes(config.memoryLimit)} leaves for files`);
    }
    if (q.bytes === 0) say('warn', `${NAME}: a byte quota of 0: every write will be refused (no-space)`);
    return undefined;
  },

  describe() {
    return {
      name: NAME,
      version: VERSION,
      scope: 'tenant',
      randomWrite: true,
      append: true,
      atomicRename: true,
      setInfo: true,
      symlinks: false,
      hardLinks: false,
      readChunk: CHUNK,
      writeChunk: CHUNK,
      durableSync: false,
      maxFileSize: BigInt(largestQuota(config)),
      copy: true,
      abortOrphans: false,
    };
  },

  // Nothing outlives the instance: nothing to tidy.
  maintain() {
    return undefined;
  },

  // Not declared (abort-orphans false): never called.
  abortOrphan(_token) {
    return { tag: 'err', val: unsupported().payload };
  },

  openSession(context) {
    return guard('open-session', () => {
      if (tenant === undefined) {
        tenant = context.tenant;
        const q = applyQuota(tenant);
        say('info', `${NAME}: tenant ${JSON.stringify(tenant)}: quota ${showBytes(q.bytes)} (${q.source}), ${q.files} files and directories`);
        if (q.clamped) say('warn', `${NAME}: tenant ${JSON.stringify(tenant)}: quota lowered to ${showBytes(q.bytes)} by the memory cap`);
      } else if (context.tenant !== tenant) {
        // One instance per tenant is the host's promise; were it broken,
        // this tenant must not see the other's files.
        say('warn', `${NAME}: a session for tenant ${JSON.stringify(context.tenant)} on the instance of ${JSON.stringify(tenant)}: refused`);
        throw permissionDenied();
      }
      say('debug', `${NAME}: session for ${context.user}@${context.tenant}`);
      return new Session(context);
    });
  },

  Session,
  Reader,
  Writer,
};

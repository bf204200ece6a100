// {{name}}: a wasftp storage plugin. As written by `wasftp plugin new`, it
// serves a small read-only tree from memory and refuses every write; put
// your own storage behind the same calls. wit/storage.wit is the contract;
// wasftp's docs/plugins.md is the guide.
import { log } from 'wasftp:storage/log@0.2.0';

// An error is thrown as an object whose `payload` is one of the contract's
// error cases: { tag: 'not-found' }, or { tag: 'io', val: 'why' } for the
// cases that carry text. Anything else thrown traps the instance.
class StorageError extends Error {
  constructor(tag, val) {
    super(val === undefined ? tag : `${tag}: ${val}`);
    this.payload = val === undefined ? { tag } : { tag, val };
  }
}
const fail = (tag, val) => { throw new StorageError(tag, val); };

const encoder = new TextEncoder();

// The files this skeleton serves: path -> content.
const FILES = new Map([
  ['/hello.txt', encoder.encode('Hello from {{name}}.\n')],
  ['/docs/readme.txt', encoder.encode('Replace this tree with your own storage.\n')],
]);

// When the files were made (seconds since the epoch; u64 is a BigInt).
const MODIFIED = 1700000000n;

// A version that changes whenever the content does (FNV-1a).
function versionOf(bytes) {
  let hash = 0x811c9dc5;
  for (const b of bytes) hash = Math.imul(hash ^ b, 0x01000193) >>> 0;
  return hash.toString(16).padStart(8, '0');
}

function isDir(path) {
  const prefix = path === '/' ? '/' : `${path}/`;
  return [...FILES.keys()].some((file) => file.startsWith(prefix));
}

function describePath(path) {
  const content = FILES.get(path);
  if (content) {
    return { kind: 'file', size: BigInt(content.length), permissions: 0o444, modified: MODIFIED, accessed: MODIFIED, version: versionOf(content) };
  }
  if (isDir(path)) {
    return { kind: 'directory', size: 0n, permissions: 0o555, modified: MODIFIED, accessed: MODIFIED, version: undefined };
  }
  fail('not-found');
}

class Reader {
  constructor(content, info) {
    this.content = content;
    this.atOpen = info;
  }
  info() {
    return this.atOpen;
  }
  read(offset, len) {
    const start = Number(offset > BigInt(this.content.length) ? BigInt(this.content.length) : offset);
    return this.content.subarray(start, start + len);
  }
}

// Never made: every write is refused before a writer exists.
class Writer {
  writeChunk(offset, data) { fail('permission-denied'); }
  setSize(size) { fail('permission-denied'); }
  finish() { fail('permission-denied'); }
  abort() {}
  recoveryToken() { return undefined; }
}

class Session {
  listDir(path, cursor, limit) {
    if (describePath(path).kind !== 'directory') fail('not-a-directory');
    const prefix = path === '/' ? '/' : `${path}/`;
    const names = [...new Set([...FILES.keys()].filter((f) => f.startsWith(prefix)).map((f) => f.slice(prefix.length).split('/')[0]))].sort();
    // The cursor is the last name of the previous page.
    const start = cursor === undefined ? 0 : names.filter((n) => n <= cursor).length;
    const page = names.slice(start, start + Math.max(limit, 1));
    const more = start + page.length < names.length;
    return {
      entries: page.map((name) => ({ name, info: describePath(prefix + name) })),
      nextCursor: more ? page[page.length - 1] : undefined,
    };
  }
  fileInfo(path) { return describePath(path); }
  linkInfo(path) { return describePath(path); }
  openRead(path, version) {
    const info = describePath(path);
    if (info.kind === 'directory') fail('is-a-directory');
    if (version !== undefined && version !== info.version) fail('conflict');
    return new Reader(FILES.get(path), info);
  }
  beginWrite(path, options) { fail('permission-denied'); }
  makeDir(path, permissions) { fail('permission-denied'); }
  removeDir(path) { fail('permission-denied'); }
  removeFile(path) { fail('permission-denied'); }
  rename(src, dst, overwrite) { fail('permission-denied'); }
  copyFile(src, dst, overwrite) { fail('permission-denied'); }
  setInfo(path, attrs) { fail('permission-denied'); }
  readLink(path) { fail('unsupported'); }
  makeLink(target, path) { fail('permission-denied'); }
  hardLink(src, dst) { fail('permission-denied'); }
  space(path) { fail('unsupported'); }
}

export const backend = {
  init(config) {
    // Keys starting with `wasftp.` come from the host: accept them.
    for (const [key] of config) {
      if (!key.startsWith('wasftp.')) throw { payload: `unknown config key ${key}: this plugin takes none` };
    }
    log('info', '{{name}} ready');
  },
  describe() {
    return {
      name: '{{name}}',
      version: '0.1.0',
      // Nothing is kept in the instance: the host may run several.
      scope: 'stateless',
      randomWrite: false,
      append: false,
      atomicRename: false,
      setInfo: false,
      symlinks: false,
      hardLinks: false,
      readChunk: 256 * 1024,
      writeChunk: 256 * 1024,
      durableSync: false,
      maxFileSize: undefined,
      copy: false,
      abortOrphans: false,
    };
  },
  maintain() {},
  abortOrphan(token) {},
  openSession(context) { return new Session(); },
  Session,
  Reader,
  Writer,
};

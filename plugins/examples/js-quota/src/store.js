// The file tree of one tenant, in memory, with its quotas. Independent of the
// component bindings (plugin.js adapts it), so it runs under plain Node too:
// `node --test test/`.
//
// Semantics follow the bundled Rust memory plugin (plugins/memory/fs): the
// same error for each case, content visible only at commit, readers pinned
// to the version they opened.

import {
  alreadyExists, conflict, invalidInput, isADirectory, noSpace, notADirectory,
  notEmpty, notFound, permissionDenied, unsupported,
} from './errors.js';
import { Budget, MAX_SIZE, Pages } from './content.js';

export const DEFAULT_FILE_PERMS = 0o644;
export const DEFAULT_DIR_PERMS = 0o755;
export const MAX_LIST_LIMIT = 1000;
// NAME_MAX: the host's bound on a name, in requests and listings alike.
export const MAX_NAME_BYTES = 255;
// What a tree entry costs besides its name (the node object, its map slot,
// engine overhead), over-estimated so many empty files are bounded too.
export const ENTRY_COST = 256;
export const BLOCK_SIZE = 4096;

// Whole seconds since the epoch (wasi:clocks, through Date).
export const now = () => Math.floor(Date.now() / 1000);

// A version no content of this instance had before.
let generation = 0;
const nextVersion = () => `g${++generation}`;

function utf8Length(s) {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

// Code point order, which is UTF-8 byte order: the order `ls` and the Rust
// plugin give. (Plain `<` compares UTF-16 units, which puts U+E000..U+FFFF
// after astral characters.)
export function compareNames(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) {
      const xs = x >= 0xd800 && x <= 0xdfff;
      const ys = y >= 0xd800 && y <= 0xdfff;
      if (xs !== ys) return xs ? 1 : -1;
      return x - y;
    }
  }
  return a.length - b.length;
}

// The segments of a contract path: absolute, normalised (the host sends
// nothing else; anything else is invalid-input rather than a guess).
function segments(path) {
  if (typeof path !== 'string' || path[0] !== '/') throw invalidInput('path must be absolute');
  if (path.includes('\0')) throw invalidInput('path contains NUL');
  const out = [];
  for (const seg of path.split('/')) {
    if (seg === '' || seg === '.') continue;
    if (seg === '..') throw invalidInput("path contains '..'");
    out.push(seg);
  }
  return out;
}

const same = (a, b) => a.length === b.length && a.every((s, i) => s === b[i]);
// Whether `inner` is strictly below `outer`.
const below = (inner, outer) => inner.length > outer.length && outer.every((s, i) => s === inner[i]);

function checkName(name) {
  if (utf8Length(name) > MAX_NAME_BYTES) throw invalidInput(`name longer than ${MAX_NAME_BYTES} bytes`);
}

const entryCost = (name) => ENTRY_COST + 2 * name.length;

class Node {
  constructor(kind, perms) {
    const t = now();
    this.kind = kind; // 'file' | 'directory'
    this.perms = perms & 0o7777;
    this.mtime = t;
    this.atime = t;
    // What this entry's name and node are charged (content apart).
    this.charge = 0;
    if (kind === 'file') {
      this.content = null; // Pages
      this.version = nextVersion();
    } else {
      this.children = new Map();
      // The names in order, while unchanged.
      this.sorted = null;
    }
  }

  get isDir() {
    return this.kind === 'directory';
  }

  // The contract's file-info: u64 fields as BigInt, option as undefined.
  info() {
    const file = this.kind === 'file';
    return {
      kind: this.kind,
      size: BigInt(file ? this.content.size : 0),
      permissions: this.perms,
      modified: BigInt(this.mtime),
      accessed: BigInt(this.atime),
      version: file ? this.version : undefined,
    };
  }

  names() {
    if (this.sorted === null) this.sorted = [...this.children.keys()].sort(compareNames);
    return this.sorted;
  }

  put(name, node) {
    if (!this.children.has(name)) this.sorted = null;
    this.children.set(name, node);
  }

  take(name) {
    const node = this.children.get(name);
    this.children.delete(name);
    this.sorted = null;
    return node;
  }
}

// An upload in progress: private until commit.
class Pending {
  constructor(segs, options, pages, perms) {
    this.segs = segs;
    this.options = options;
    // The full new content; or, appending without truncate, the bytes to
    // add to whatever the file holds at commit.
    this.pages = pages;
    this.perms = perms;
    this.open = true;
  }

  get appendsToCurrent() {
    return this.options.append && !this.options.truncate;
  }
}

export class Store {
  constructor() {
    this.budget = new Budget();
    this.maxEntries = Infinity;
    // Files and directories, the root apart.
    this.entries = 0;
    this.root = new Node('directory', DEFAULT_DIR_PERMS);
  }

  // The quotas: bytes (content, entries, uploads in progress, versions
  // readers pin) and entries (files and directories). A quota below what is
  // held refuses growth and keeps every file.
  setQuota(bytes, entries) {
    this.budget.limit = bytes;
    this.maxEntries = entries;
  }

  // --- lookups ---

  #lookup(segs) {
    let node = this.root;
    for (const seg of segs) {
      if (!node.isDir) throw notADirectory();
      node = node.children.get(seg);
      if (node === undefined) throw notFound();
    }
    return node;
  }

  // The node, or undefined when it does not exist (a missing parent
  // included); a file in the way is still not-a-directory.
  #find(segs) {
    try {
      return this.#lookup(segs);
    } catch (e) {
      if (e.payload?.tag === 'not-found') return undefined;
      throw e;
    }
  }

  #dir(segs) {
    const node = this.#lookup(segs);
    if (!node.isDir) throw notADirectory();
    return node;
  }

  // Reserves a new entry: one more against the entry quota, and its cost.
  #newEntry(name) {
    checkName(name);
    if (this.entries >= this.maxEntries) throw noSpace();
    const cost = entryCost(name);
    this.budget.take(cost);
    this.entries++;
    return cost;
  }

  // Gives back what a node removed from the tree held.
  #forget(node) {
    this.budget.give(node.charge);
    this.entries--;
    if (node.kind === 'file') node.content.release();
  }

  // --- reading ---

  fileInfo(path) {
    return this.#lookup(segments(path)).info();
  }

  listDir(path, cursor, limit) {
    const node = this.#lookup(segments(path));
    if (!node.isDir) throw notADirectory();
    const max = Math.min(Math.max(limit, 1), MAX_LIST_LIMIT);
    const names = node.names();
    let start = 0;
    if (cursor !== undefined) {
      // The first name after the cursor (which may have gone meanwhile).
      let lo = 0;
      let hi = names.length;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (compareNames(names[mid], cursor) <= 0) lo = mid + 1;
        else hi = mid;
      }
      start = lo;
    }
    const end = Math.min(names.length, start + max);
    const entries = [];
    for (let i = start; i < end; i++) {
      entries.push({ name: names[i], info: node.children.get(names[i]).info() });
    }
    const nextCursor = end < names.length && entries.length > 0 ? names[end - 1] : undefined;
    return { entries, nextCursor };
  }

  // Pins the current content, which must be `version` when one is given.
  openRead(path, version) {
    const node = this.#lookup(segments(path));
    if (node.isDir) throw isADirectory();
    if (version !== undefined && version !== node.version) throw conflict();
    node.atime = now();
    return { pages: node.content.share(), info: node.info() };
  }

  space(path) {
    this.#lookup(segments(path));
    const { limit, held } = this.budget;
    const unlimited = limit === Infinity;
    const total = unlimited ? held + 2 ** 40 : Math.max(limit, held);
    const free = unlimited ? 2 ** 40 : Math.max(0, limit - held);
    const files = this.maxEntries === Infinity ? this.entries + 2 ** 32 : Math.max(this.maxEntries, this.entries);
    return {
      totalBytes: BigInt(total),
      freeBytes: BigInt(free),
      availableBytes: BigInt(free),
      totalFiles: BigInt(files),
      freeFiles: BigInt(files - this.entries),
      blockSize: BLOCK_SIZE,
    };
  }

  // --- directories and names ---

  makeDir(path, permissions) {
    const segs = segments(path);
    if (segs.length === 0) throw alreadyExists();
    const name = segs[segs.length - 1];
    const parent = this.#dir(segs.slice(0, -1));
    if (parent.children.has(name)) throw alreadyExists();
    const charge = this.#newEntry(name);
    const node = new Node('directory', permissions ?? DEFAULT_DIR_PERMS);
    node.charge = charge;
    parent.put(name, node);
    parent.mtime = now();
  }

  removeDir(path) {
    const segs = segments(path);
    if (segs.length === 0) throw permissionDenied();
    const name = segs[segs.length - 1];
    const parent = this.#dir(segs.slice(0, -1));
    const node = parent.children.get(name);
    if (node === undefined) throw notFound();
    if (!node.isDir) throw notADirectory();
    if (node.children.size > 0) throw notEmpty();
    this.#forget(parent.take(name));
    parent.mtime = now();
  }

  removeFile(path) {
    const segs = segments(path);
    if (segs.length === 0) throw isADirectory();
    const name = segs[segs.length - 1];
    const parent = this.#dir(segs.slice(0, -1));
    const node = parent.children.get(name);
    if (node === undefined) throw notFound();
    if (node.isDir) throw isADirectory();
    // Readers that pinned its content keep it (and its charge) until closed.
    this.#forget(parent.take(name));
    parent.mtime = now();
  }

  // Whether `dst` may be replaced by a node of kind `srcIsDir`; the node
  // it would replace, or undefined.
  #replaceable(dst, srcIsDir, overwrite) {
    const node = this.#find(dst);
    if (node === undefined) return undefined;
    if (!overwrite) throw alreadyExists();
    if (node.isDir && !srcIsDir) throw isADirectory();
    if (!node.isDir && srcIsDir) throw notADirectory();
    if (node.isDir && node.children.size > 0) throw notEmpty();
    return node;
  }

  // Atomic: every check comes before the first change.
  rename(src, dst, overwrite) {
    const from = segments(src);
    const to = segments(dst);
    const node = this.#lookup(from);
    if (same(from, to)) return;
    if (from.length === 0) throw invalidInput('cannot rename the root directory');
    if (to.length === 0) throw overwrite ? permissionDenied() : alreadyExists();
    if (node.isDir && below(to, from)) throw invalidInput('cannot move a directory into itself');
    const dstName = to[to.length - 1];
    const dstParent = this.#dir(to.slice(0, -1));
    const replaced = this.#replaceable(to, node.isDir, overwrite);
    checkName(dstName);
    // The entry's cost follows its new name: the last step that can fail.
    const charge = entryCost(dstName);
    this.budget.take(charge - node.charge);
    node.charge = charge;

    const srcParent = this.#dir(from.slice(0, -1));
    srcParent.take(from[from.length - 1]);
    if (replaced !== undefined) this.#forget(dstParent.take(dstName));
    dstParent.put(dstName, node);
    const t = now();
    srcParent.mtime = t;
    dstParent.mtime = t;
  }

  // A server-side copy: the new file shares the content until one of them
  // changes (then only the changed pages are copied, and charged).
  copyFile(src, dst, overwrite) {
    const from = segments(src);
    const to = segments(dst);
    const node = this.#lookup(from);
    if (node.isDir) throw isADirectory();
    if (same(from, to)) return;
    if (to.length === 0) throw overwrite ? isADirectory() : alreadyExists();
    const dstName = to[to.length - 1];
    const dstParent = this.#dir(to.slice(0, -1));
    const replaced = this.#replaceable(to, false, overwrite);
    checkName(dstName);
    let charge;
    if (replaced === undefined) {
      charge = this.#newEntry(dstName);
    } else {
      // The copy takes over the replaced file's entry (same name, same cost).
      charge = replaced.charge;
      replaced.charge = 0;
      this.#forget(dstParent.take(dstName));
      this.entries++;
    }
    const copy = new Node('file', node.perms);
    copy.charge = charge;
    copy.content = node.content.share();
    dstParent.put(dstName, copy);
    dstParent.mtime = now();
  }

  // A size change is charged before anything changes: no-space leaves the
  // file as it was. Explicit times win over the size change's mtime.
  setInfo(path, attrs) {
    const node = this.#lookup(segments(path));
    if (attrs.size !== undefined) {
      if (node.isDir) throw isADirectory();
      if (attrs.size !== node.content.size) {
        if (!(attrs.size <= MAX_SIZE)) throw noSpace();
        // The current pages may be a reader's too: change a copy.
        const next = node.content.share();
        try {
          next.resize(attrs.size);
        } catch (e) {
          next.release();
          throw e;
        }
        node.content.release();
        node.content = next;
        node.mtime = now();
        node.version = nextVersion();
      }
    }
    if (attrs.permissions !== undefined) node.perms = attrs.permissions & 0o7777;
    if (attrs.accessed !== undefined) node.atime = attrs.accessed;
    if (attrs.modified !== undefined) node.mtime = attrs.modified;
  }

  // --- uploads ---

  beginWrite(path, options) {
    const segs = segments(path);
    if (segs.length === 0) throw isADirectory();
    const existing = this.#find(segs);
    let pages;
    if (existing !== undefined) {
      if (existing.isDir) throw isADirectory();
      if (options.exclusive) throw alreadyExists();
      // Starts from this version; its pages are copied when first changed.
      pages = options.truncate || options.append ? new Pages(this.budget) : existing.content.share();
    } else {
      if (!options.create) throw notFound();
      // The parent must exist now (and again at commit).
      this.#dir(segs.slice(0, -1));
      checkName(segs[segs.length - 1]);
      // Refused now rather than after the whole upload.
      if (this.entries >= this.maxEntries) throw noSpace();
      pages = new Pages(this.budget);
    }
    const perms = (options.permissions ?? DEFAULT_FILE_PERMS) & 0o7777;
    return new Pending(segs, options, pages, perms);
  }

  // `data` is consumed: kept as a page or freed (see Pages.writeAt).
  writeChunk(pending, offset, data) {
    // Appended bytes follow the ones gathered so far, whatever the offset.
    pending.pages.writeAt(pending.options.append ? pending.pages.size : offset, data, true);
  }

  // An upload that appends to the file at commit holds only what it adds,
  // not the file: it cannot be resized.
  setPendingSize(pending, size) {
    if (pending.appendsToCurrent) throw unsupported();
    pending.pages.resize(size);
  }

  // Makes the upload visible; its file-info. The upload is over, whatever
  // the outcome.
  commit(pending) {
    pending.open = false;
    try {
      return this.#commit(pending);
    } finally {
      // Moved into the tree on success (then empty), dropped otherwise.
      if (pending.pages !== null) pending.pages.release();
      pending.pages = null;
    }
  }

  #commit(pending) {
    const { segs, options } = pending;
    const name = segs[segs.length - 1];
    const parent = this.#dir(segs.slice(0, -1));
    const node = parent.children.get(name);
    const t = now();
    if (node !== undefined) {
      if (node.isDir) throw isADirectory();
      if (options.exclusive) throw alreadyExists();
      let next;
      if (pending.appendsToCurrent) {
        // Onto the content as it is now, whoever changed it meanwhile.
        next = node.content.share();
        try {
          next.appendFrom(pending.pages);
        } catch (e) {
          next.release();
          throw e;
        }
      } else {
        next = pending.pages;
        pending.pages = null;
      }
      next.compact();
      node.content.release();
      node.content = next;
      node.mtime = t;
      node.version = nextVersion();
      return node.info();
    }
    if (!options.create) throw notFound();
    // Spare capacity goes back before the entry is charged.
    pending.pages.compact();
    const charge = this.#newEntry(name);
    const file = new Node('file', pending.perms);
    file.charge = charge;
    file.content = pending.pages;
    pending.pages = null;
    parent.put(name, file);
    parent.mtime = t;
    return file.info();
  }

  abort(pending) {
    pending.open = false;
    if (pending.pages !== null) pending.pages.release();
    pending.pages = null;
  }
}

// The store and its quotas under plain Node: node --test test/
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { Store, ENTRY_COST } from '../src/store.js';
import { PAGE, Pages, Budget } from '../src/content.js';
import { parseBytes, parseConfig, quotaFor, largestQuota } from '../src/config.js';

const W = { create: true, truncate: true, exclusive: false, append: false, permissions: undefined };
const bytes = (s) => new TextEncoder().encode(s);
const text = (b) => new TextDecoder().decode(b);
const tag = (f) => {
  try {
    f();
  } catch (e) {
    return e.payload?.tag ?? `not a storage error: ${e}`;
  }
  return 'ok';
};

function put(s, path, data, opts = W) {
  const w = s.beginWrite(path, opts);
  s.writeChunk(w, 0, typeof data === 'string' ? bytes(data) : data);
  return s.commit(w);
}
/// The whole content, read as the host reads it (a read may be short).
function readAll(pages) {
  const parts = [];
  let at = 0;
  for (;;) {
    const piece = pages.read(at, 1 << 20);
    if (piece.length === 0) break;
    parts.push(piece.slice());
    at += piece.length;
  }
  const out = new Uint8Array(at);
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}
function get(s, path) {
  const { pages } = s.openRead(path);
  const out = readAll(pages);
  pages.release();
  return out;
}

test('files, directories and their errors', () => {
  const s = new Store();
  assert.equal(tag(() => s.fileInfo('/nope')), 'not-found');
  assert.equal(tag(() => s.listDir('/nope', undefined, 10)), 'not-found');
  assert.equal(tag(() => s.openRead('/nope')), 'not-found');
  s.makeDir('/d');
  assert.equal(tag(() => s.makeDir('/d')), 'already-exists');
  assert.equal(tag(() => s.makeDir('/x/y')), 'not-found');
  const info = put(s, '/d/f', 'hello');
  assert.equal(info.size, 5n);
  assert.equal(info.kind, 'file');
  assert.match(info.version, /^g\d+$/);
  assert.equal(text(get(s, '/d/f')), 'hello');
  assert.equal(tag(() => s.listDir('/d/f', undefined, 10)), 'not-a-directory');
  assert.equal(tag(() => s.fileInfo('/d/f/x')), 'not-a-directory');
  assert.equal(tag(() => s.removeDir('/d/f')), 'not-a-directory');
  assert.equal(tag(() => s.removeFile('/d')), 'is-a-directory');
  assert.equal(tag(() => s.openRead('/d')), 'is-a-directory');
  assert.equal(tag(() => s.removeDir('/d')), 'not-empty');
  assert.equal(tag(() => s.removeDir('/')), 'permission-denied');
  assert.equal(tag(() => s.beginWrite('/d', W)), 'is-a-directory');
  assert.equal(tag(() => s.beginWrite('/nope/f', W)), 'not-found');
  assert.equal(tag(() => s.beginWrite('/d/f/g', W)), 'not-a-directory');
  assert.equal(tag(() => s.beginWrite('/new', { ...W, create: false })), 'not-found');
  assert.equal(tag(() => s.fileInfo('relative')), 'invalid-input');
  assert.equal(tag(() => s.makeDir('/' + 'x'.repeat(256))), 'invalid-input');
  s.removeFile('/d/f');
  s.removeDir('/d');
  assert.equal(s.entries, 0);
  assert.equal(s.budget.held, 0);
});

test('listing pages in order, never more than the limit', () => {
  const s = new Store();
  const names = [];
  for (let i = 0; i < 11; i++) names.push(`f${String(i).padStart(2, '0')}`);
  for (const n of [...names].reverse()) put(s, `/${n}`, n);
  s.makeDir('/sub');
  const seen = [];
  let cursor;
  for (;;) {
    const page = s.listDir('/', cursor, 3);
    assert.ok(page.entries.length <= 3);
    seen.push(...page.entries.map((e) => e.name));
    cursor = page.nextCursor;
    if (cursor === undefined) break;
  }
  assert.deepEqual(seen, [...names, 'sub']);
  const all = s.listDir('/', undefined, 1000);
  assert.equal(all.nextCursor, undefined);
  assert.equal(all.entries.find((e) => e.name === 'sub').info.kind, 'directory');
  assert.equal(all.entries.find((e) => e.name === 'f03').info.size, 3n);
  // A cursor whose entry went away still pages on.
  s.removeFile('/f05');
  assert.equal(s.listDir('/', 'f05', 1).entries[0].name, 'f06');
});

test('uploads: invisible until commit, exclusive at finish, abort leaves nothing', () => {
  const s = new Store();
  const w = s.beginWrite('/p', W);
  s.writeChunk(w, 0, bytes('abc'));
  assert.equal(tag(() => s.fileInfo('/p')), 'not-found');
  s.commit(w);
  assert.equal(text(get(s, '/p')), 'abc');

  const x = s.beginWrite('/race', { ...W, exclusive: true });
  s.writeChunk(x, 0, bytes('late'));
  put(s, '/race', 'first');
  assert.equal(tag(() => s.commit(x)), 'already-exists');
  assert.equal(text(get(s, '/race')), 'first');
  assert.equal(tag(() => s.beginWrite('/race', { ...W, exclusive: true })), 'already-exists');

  const held = s.budget.held;
  const a = s.beginWrite('/aborted', W);
  s.writeChunk(a, 0, new Uint8Array(100000));
  assert.ok(s.budget.held > held, 'a pending upload counts');
  s.abort(a);
  assert.equal(s.budget.held, held);
  assert.equal(tag(() => s.fileInfo('/aborted')), 'not-found');
});

test('random writes, gaps of zeros, append, set-size', () => {
  const s = new Store();
  const w = s.beginWrite('/r', W);
  s.writeChunk(w, 6, bytes('world'));
  s.writeChunk(w, 0, bytes('hello '));
  s.commit(w);
  assert.equal(text(get(s, '/r')), 'hello world');

  const g = s.beginWrite('/gap', W);
  s.writeChunk(g, 3 * PAGE + 5, bytes('x'));
  s.writeChunk(g, 1, bytes('y'));
  s.commit(g);
  const gap = get(s, '/gap');
  assert.equal(gap.length, 3 * PAGE + 6);
  assert.equal(gap[1], 'y'.charCodeAt(0));
  assert.equal(gap[3 * PAGE + 5], 'x'.charCodeAt(0));
  assert.equal(gap.reduce((n, b) => n + (b !== 0), 0), 2);

  const ap = s.beginWrite('/r', { ...W, truncate: false, append: true });
  s.writeChunk(ap, 0, bytes('!'));
  s.writeChunk(ap, 0, bytes('?'));
  assert.equal(tag(() => s.setPendingSize(ap, 1)), 'unsupported');
  s.commit(ap);
  assert.equal(text(get(s, '/r')), 'hello world!?');

  // Keeping the content, then cut and extended: the cut bytes come back as zeros.
  const k = s.beginWrite('/r', { ...W, truncate: false });
  s.setPendingSize(k, 2);
  s.setPendingSize(k, 4);
  s.writeChunk(k, 4, bytes('!'));
  s.commit(k);
  assert.deepEqual([...get(s, '/r')], [104, 101, 0, 0, 33]);
});

test('readers keep their version; pinned versions that changed are conflict', () => {
  const s = new Store();
  const v1 = put(s, '/v', 'one').version;
  const { pages } = s.openRead('/v');
  put(s, '/v', 'two, longer');
  assert.equal(text(readAll(pages)), 'one');
  assert.equal(tag(() => s.openRead('/v', v1)), 'conflict');
  const v2 = s.fileInfo('/v').version;
  assert.notEqual(v1, v2);
  s.openRead('/v', v2).pages.release();
  // A keeping write changes only a copy of the page the reader holds.
  const r = s.openRead('/v').pages;
  const k = s.beginWrite('/v', { ...W, truncate: false });
  s.writeChunk(k, 0, bytes('T'));
  s.commit(k);
  assert.equal(text(readAll(r)), 'two, longer');
  assert.equal(text(get(s, '/v')), 'Two, longer');
  s.removeFile('/v');
  assert.equal(text(r.read(0, 3)), 'two');
  r.release();
  pages.release();
  assert.equal(s.budget.held, 0);
});

test('rename and copy', () => {
  const s = new Store();
  put(s, '/a', 'a');
  s.rename('/a', '/b', false);
  assert.equal(tag(() => s.fileInfo('/a')), 'not-found');
  put(s, '/other', 'other');
  assert.equal(tag(() => s.rename('/other', '/b', false)), 'already-exists');
  s.rename('/other', '/b', true);
  assert.equal(text(get(s, '/b')), 'other');
  s.makeDir('/d');
  s.makeDir('/d/e');
  assert.equal(tag(() => s.rename('/d', '/d/e/f', false)), 'invalid-input');
  assert.equal(tag(() => s.rename('/b', '/d', true)), 'is-a-directory');
  assert.equal(tag(() => s.rename('/d', '/b', true)), 'not-a-directory');
  assert.equal(tag(() => s.rename('/nope', '/x', true)), 'not-found');
  assert.equal(tag(() => s.rename('/b', '/nope/x', true)), 'not-found');
  assert.equal(tag(() => s.rename('/d/e', '/', true)), 'permission-denied');
  put(s, '/d/e/f', 'f');
  s.rename('/d', '/moved', false);
  assert.equal(text(get(s, '/moved/e/f')), 'f');
  s.makeDir('/empty');
  assert.equal(tag(() => s.rename('/empty', '/moved', true)), 'not-empty');

  s.copyFile('/b', '/c', false);
  assert.equal(text(get(s, '/c')), 'other');
  assert.equal(tag(() => s.copyFile('/b', '/c', false)), 'already-exists');
  assert.equal(tag(() => s.copyFile('/moved', '/x', false)), 'is-a-directory');
  const entries = s.entries;
  put(s, '/big', new Uint8Array(3 * PAGE));
  const held = s.budget.held;
  s.copyFile('/big', '/c', true);
  assert.equal(s.entries, entries + 1, 'the copy replaced /c');
  assert.equal(s.budget.held, held, 'the copy shares the pages (and /c shared its own with /b)');
  const k = s.beginWrite('/c', { ...W, truncate: false });
  s.writeChunk(k, 0, bytes('z'));
  s.commit(k);
  assert.equal(get(s, '/big')[0], 0);
  assert.equal(get(s, '/c')[0], 'z'.charCodeAt(0));
});

test('set-info: times, permissions, size', () => {
  const s = new Store();
  put(s, '/f', 'hello');
  s.setInfo('/f', { accessed: 1e9, modified: 1e9 });
  const info = s.fileInfo('/f');
  assert.equal(info.modified, 1000000000n);
  s.setInfo('/f', { permissions: 0o100640 });
  assert.equal(s.fileInfo('/f').permissions, 0o640);
  const v = s.fileInfo('/f').version;
  s.setInfo('/f', { size: 2 });
  assert.equal(text(get(s, '/f')), 'he');
  assert.notEqual(s.fileInfo('/f').version, v);
  s.setInfo('/f', { size: 4 });
  assert.deepEqual([...get(s, '/f')], [104, 101, 0, 0]);
  s.makeDir('/d');
  assert.equal(tag(() => s.setInfo('/d', { size: 0 })), 'is-a-directory');
});

test('quotas: bytes, entries, no-space leaves things as they were', () => {
  const s = new Store();
  s.setQuota(10 * PAGE, 3);
  const w = s.beginWrite('/f', W);
  s.writeChunk(w, 0, new Uint8Array(8 * PAGE));
  assert.equal(tag(() => s.writeChunk(w, 8 * PAGE, new Uint8Array(3 * PAGE))), 'no-space');
  assert.equal(w.pages.size, 8 * PAGE, 'the refused chunk changed nothing');
  assert.equal(tag(() => s.setPendingSize(w, 20 * PAGE)), 'no-space');
  assert.equal(tag(() => s.writeChunk(w, 2 ** 60, bytes('x'))), 'no-space');
  s.commit(w);
  s.makeDir('/a');
  s.makeDir('/b');
  assert.equal(tag(() => s.makeDir('/c')), 'no-space');
  assert.equal(tag(() => s.beginWrite('/c', W)), 'no-space');
  assert.equal(tag(() => s.copyFile('/f', '/c', false)), 'no-space');
  assert.equal(tag(() => s.setInfo('/f', { size: 11 * PAGE })), 'no-space');
  assert.equal(s.fileInfo('/f').size, BigInt(8 * PAGE));
  const sp = s.space('/');
  assert.equal(sp.totalBytes, BigInt(10 * PAGE));
  assert.equal(sp.freeBytes, BigInt(10 * PAGE - s.budget.held));
  assert.equal(sp.totalFiles, 3n);
  assert.equal(sp.freeFiles, 0n);
  s.removeFile('/f');
  assert.equal(s.budget.held, 2 * (ENTRY_COST + 2));
});

test('a write far past the quota is refused at once, without a page walk', () => {
  const s = new Store();
  s.setQuota(1 << 30, 10);
  const w = s.beginWrite('/f', W);
  // Near the largest size a u64 Number keeps exactly: 2^53 / PAGE pages to walk.
  const started = Date.now();
  assert.equal(tag(() => s.writeChunk(w, 2 ** 52, bytes('x'))), 'no-space');
  assert.equal(tag(() => s.setPendingSize(w, 2 ** 52)), 'no-space');
  assert.ok(Date.now() - started < 1000, `took ${Date.now() - started} ms`);
  assert.equal(w.pages.size, 0);
});

test('growth into room a page already holds is not refused as new bytes', () => {
  const s = new Store();
  // Little more than the file: the room doubling left in its last page is
  // already charged, so writing into it costs nothing more.
  s.setQuota(384 * 1024 + 1024, 10);
  const w = s.beginWrite('/f', W);
  for (let at = 0; at < 384 * 1024; at += 32 * 1024) s.writeChunk(w, at, new Uint8Array(32 * 1024));
  s.commit(w);
  assert.equal(s.fileInfo('/f').size, BigInt(384 * 1024));
});

test('small sequential writes fill the quota exactly', () => {
  const s = new Store();
  const quota = 3 * PAGE + 1000 + ENTRY_COST + 2;
  s.setQuota(quota, 10);
  const w = s.beginWrite('/f', W);
  const total = 3 * PAGE + 1000;
  for (let at = 0; at < total; at += 100) s.writeChunk(w, at, new Uint8Array(Math.min(100, total - at)));
  s.commit(w);
  assert.equal(s.budget.held, quota);
});

test('config', () => {
  assert.equal(parseBytes('1024'), 1024);
  assert.equal(parseBytes('64K'), 65536);
  assert.equal(parseBytes('10MiB'), 10 * 2 ** 20);
  assert.equal(parseBytes('2gb'), 2 * 2 ** 30);
  assert.equal(parseBytes('lots'), undefined);
  assert.equal(parseBytes(''), undefined);
  assert.equal(parseBytes('-1'), undefined);
  const cfg = parseConfig([
    ['quota-bytes', '10M'], ['quota-files.acme', '5'], ['quota-bytes.acme', '1000'],
    ['wasftp.memory-limit-bytes', String(256 * 2 ** 20)], ['wasftp.future', 'x'],
  ]);
  assert.deepEqual(quotaFor(cfg, 'acme'), { bytes: 1000, files: 5, source: 'quota-bytes.acme', clamped: false, ceiling: 192 * 2 ** 20 });
  assert.equal(quotaFor(cfg, 'other').bytes, 10 * 2 ** 20);
  assert.equal(quotaFor(cfg, 'other').files, 10000);
  assert.equal(quotaFor(parseConfig([['wasftp.memory-limit-bytes', '268435456']]), 'x').bytes, 128 * 2 ** 20);
  assert.equal(quotaFor(parseConfig([]), 'x').bytes, 64 * 2 ** 20);
  const big = quotaFor(parseConfig([['quota-bytes', '1G'], ['wasftp.memory-limit-bytes', '268435456']]), 'x');
  assert.deepEqual([big.bytes, big.clamped], [192 * 2 ** 20, true]);
  assert.equal(largestQuota(parseConfig([['quota-bytes', '1M'], ['quota-bytes.big', '5M']])), 5 * 2 ** 20);
  assert.equal(largestQuota(parseConfig([['quota-bytes.big', '1G'], ['wasftp.memory-limit-bytes', '268435456']])), 2 ** 30);
  assert.equal(largestQuota(parseConfig([['wasftp.memory-limit-bytes', '268435456']])), 128 * 2 ** 20);
  const refused = (pairs) => {
    try {
      parseConfig(pairs);
    } catch (e) {
      return e;
    }
    return 'accepted';
  };
  assert.match(refused([['colour', 'blue']]), /unknown config key `colour`/);
  assert.match(refused([['quota-bytes', 'lots']]), /quota-bytes/);
  assert.match(refused([['quota-files.acme', '1.5']]), /quota-files\.acme/);
  assert.match(refused([['quota-bytes.', '1']]), /no tenant/);
  assert.match(refused([['wasftp.memory-limit-bytes', 'big']]), /wasftp\.memory-limit-bytes/);
});

test('sequential chunks become pages without a copy; appends move pages', () => {
  const s = new Store();
  const w = s.beginWrite('/seq', W);
  const chunks = [new Uint8Array(PAGE).fill(1), new Uint8Array(PAGE).fill(2), new Uint8Array(10).fill(3)];
  const [a, b] = chunks;
  chunks.forEach((c, i) => s.writeChunk(w, i * PAGE, c));
  assert.equal(w.pages.pages[0].buf, a, 'the first chunk is the first page');
  assert.equal(w.pages.pages[1].buf, b);
  s.commit(w);
  assert.equal(s.budget.held, 2 * PAGE + 10 + ENTRY_COST + 2 * 3);
  const r = s.openRead('/seq').pages;
  assert.equal(r.read(PAGE - 2, 100).length, 2, 'a read stops at the end of its page');
  assert.deepEqual([...r.read(2 * PAGE, 100)], new Array(10).fill(3));
  r.release();

  put(s, '/aligned', new Uint8Array(PAGE).fill(4));
  const ap = s.beginWrite('/aligned', { ...W, truncate: false, append: true });
  s.writeChunk(ap, 0, new Uint8Array(PAGE).fill(5));
  const moved = ap.pages.pages[0];
  s.commit(ap);
  const { pages } = s.openRead('/aligned');
  assert.equal(pages.pages[1], moved, 'appended on a page boundary: the page moved');
  assert.equal(readAll(pages).length, 2 * PAGE);
  pages.release();
});

test('a refused chunk is freed, and freed pages give their memory back', { skip: typeof ArrayBuffer.prototype.transfer !== 'function' && 'needs ArrayBuffer.prototype.transfer (node --harmony-rab-gsab-transfer)' }, () => {
  const s = new Store();
  s.setQuota(PAGE, 10);
  const w = s.beginWrite('/f', W);
  const big = new Uint8Array(2 * PAGE);
  assert.equal(tag(() => s.writeChunk(w, 0, big)), 'no-space');
  assert.equal(big.buffer.byteLength, 0, 'detached: its bytes are freed');
  const small = new Uint8Array(100);
  s.writeChunk(w, 0, small);
  assert.equal(small.buffer.byteLength, 0, 'copied, then freed');
  s.commit(w);
  const page = s.openRead('/f').pages;
  s.removeFile('/f');
  const buf = page.pages[0].buf;
  page.release();
  assert.equal(buf.buffer.byteLength, 0, 'the last holder freed the page');
  assert.equal(s.budget.held, 0);
});

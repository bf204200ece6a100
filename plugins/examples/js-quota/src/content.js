// File content in pages, charged to a byte budget before it is allocated,
// and freed explicitly when its last holder lets go.
//
// Content is a list of pages of at most PAGE bytes (the plugin's chunk
// size), so a growing upload never copies what it already holds (a
// contiguous buffer would need its old and its new copy at once to grow) and
// a random write only touches the pages it covers. A sequential upload's
// chunks become pages as they are, without a copy.
//
// Pages are shared, copy-on-write, between whoever holds the same bytes: a
// file and the readers that opened it, a file and its copies, a file and an
// upload that started from it. A page is changed in place only by its sole
// holder (`refs === 1`); anyone else copies it first. Every page's capacity
// is charged to the Budget once, however many hold it, and given back when
// its last holder lets go. Growth is checked against the budget before
// anything is allocated, so a write that does not fit is `no-space` and
// leaves the content as it was.
//
// Memory is given back at once, not left to the garbage collector: under
// componentize-js, SpiderMonkey does not collect dead ArrayBuffers before an
// allocation fails, and a failed allocation inside the bindings (copying a
// call's arguments in) aborts the instance. So a page whose last holder
// lets go, and a chunk that was copied rather than adopted, are detached
// with `buffer.transfer(0)`, which frees their bytes there and then; growth
// and shrinking use `transfer(n)` (a realloc). The budget therefore follows
// what the engine really holds.
//
// Invariant: the bytes of a page past its holder's size are zero, so growing
// a file (set-size, a write past the end) needs no zero-filling.

import { noSpace } from './errors.js';

export const PAGE = 256 * 1024;
// Sizes and offsets are Numbers; nothing past this (2^53 - 1) is exact.
export const MAX_SIZE = Number.MAX_SAFE_INTEGER;
const EMPTY = new Uint8Array(0);

// The bytes one instance may hold: content, tree entries, pending uploads,
// versions pinned by readers.
export class Budget {
  constructor(limit = Infinity) {
    this.limit = limit;
    this.held = 0;
  }

  get available() {
    return Math.max(0, this.limit - this.held);
  }

  fits(bytes) {
    return bytes <= 0 || this.held + bytes <= this.limit;
  }

  // Reserves `bytes`, or throws no-space and reserves nothing.
  take(bytes) {
    if (!this.fits(bytes)) throw noSpace();
    this.held += bytes;
  }

  give(bytes) {
    this.held -= bytes;
  }
}

// A failed allocation inside the JS engine (the instance's memory cap):
// SpiderMonkey throws the string "out of memory" (catchable where our own
// code allocates). A RangeError is a length no engine could allocate.
export function isOutOfMemory(e) {
  if (e === 'out of memory') return true;
  if (e instanceof RangeError) return /array length|allocation|memory/i.test(e.message);
  const text = e !== null && typeof e === 'object' && typeof e.message === 'string' ? e.message : '';
  return /out of memory/i.test(text);
}

// Where the engine has ArrayBuffer.prototype.transfer (SpiderMonkey does;
// Node 20 only with --harmony-rab-gsab-transfer).
const TRANSFER = typeof ArrayBuffer.prototype.transfer === 'function';

// Whether `bytes` is the whole of its ArrayBuffer (so it can be adopted
// as a page, or freed, without touching anything else).
export function ownsBuffer(bytes) {
  return bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength;
}

// Frees a buffer's bytes now (it is detached: any view of it becomes
// empty). Only for buffers nothing else uses.
export function free(bytes) {
  if (TRANSFER && bytes.byteLength > 0 && ownsBuffer(bytes)) bytes.buffer.transfer(0);
}

// `new Uint8Array(n)`, or no-space when the engine cannot allocate it.
function allocate(n) {
  try {
    return new Uint8Array(n);
  } catch (e) {
    if (isOutOfMemory(e)) throw noSpace();
    throw e;
  }
}

// `bytes` with room for exactly `n` (its bytes kept, the rest zero): a
// realloc where the engine can, else a copy; the old buffer is used up.
function reallocate(bytes, n) {
  if (TRANSFER && ownsBuffer(bytes)) {
    try {
      return new Uint8Array(bytes.buffer.transfer(n));
    } catch (e) {
      if (isOutOfMemory(e)) throw noSpace();
      throw e;
    }
  }
  const out = allocate(n);
  out.set(n < bytes.length ? bytes.subarray(0, n) : bytes);
  return out;
}

// Capacity for a page that needs `need` bytes and has `cap`: doubling (so
// small sequential writes copy a page a bounded number of times), never
// past a page.
function grown(cap, need) {
  return Math.min(PAGE, Math.max(need, cap * 2));
}

export class Pages {
  constructor(budget) {
    this.budget = budget;
    // `{ buf: Uint8Array, refs: number }`, each buf the whole of its own
    // ArrayBuffer; `buf.length` is the capacity.
    this.pages = [];
    this.size = 0;
  }

  // A second holder of the same bytes, for free until one of them changes.
  share() {
    const copy = new Pages(this.budget);
    copy.pages = this.pages.slice();
    for (const page of copy.pages) page.refs++;
    copy.size = this.size;
    return copy;
  }

  // Lets go of every page; what no one else holds is freed.
  release() {
    for (const page of this.pages) drop(this.budget, page);
    this.pages = [];
    this.size = 0;
  }

  // Bytes of page `i` within this content's size.
  #used(i) {
    return Math.max(0, Math.min(PAGE, this.size - i * PAGE));
  }

  // Makes the pages over [from, end) this holder's own, each with room for
  // its part of [0, end). The budget is checked for all of it first; then
  // each page is replaced by an equal one (same bytes, more room), so
  // whatever happens the content reads the same. `exact` asks for no spare
  // capacity.
  #prepare(from, end, exact = false) {
    if (end <= from) return;
    // Growth past the budget is refused before any page is planned: a
    // write far out must not cost a loop over every page up to it.
    // (Bytes of pages not made yet: a lower bound on the cost, as room
    // already charged to made pages costs nothing more.)
    if (end - Math.min(this.pages.length * PAGE, end) > this.budget.available) throw noSpace();
    const first = Math.floor(from / PAGE);
    const last = Math.floor((end - 1) / PAGE);
    const plan = [];
    let cost = 0;
    for (let i = first; i <= last; i++) {
      const need = Math.max(Math.min(PAGE, end - i * PAGE), this.#used(i));
      const page = this.pages[i];
      if (page === undefined || page.refs > 1) {
        plan.push({ i, cap: need });
        cost += need;
      } else if (page.buf.length < need) {
        const cap = exact ? need : grown(page.buf.length, need);
        plan.push({ i, cap });
        cost += cap - page.buf.length;
      }
    }
    if (!this.budget.fits(cost)) {
      // Without the spare capacity it may still fit.
      if (!exact) return this.#prepare(from, end, true);
      throw noSpace();
    }
    for (const { i, cap } of plan) {
      const old = this.pages[i];
      if (old === undefined) {
        // Pages are made in order, so no hole is ever left.
        const buf = allocate(cap);
        this.budget.take(cap);
        this.pages[i] = { buf, refs: 1 };
      } else if (old.refs > 1) {
        const buf = allocate(cap);
        buf.set(old.buf.subarray(0, Math.min(this.#used(i), cap)));
        this.budget.take(cap);
        old.refs--;
        this.pages[i] = { buf, refs: 1 };
      } else {
        const before = old.buf.length;
        old.buf = reallocate(old.buf, cap);
        this.budget.take(cap - before);
      }
    }
  }

  // Writes `data` at `offset`, zero-filling any gap before it. With
  // `consume`, `data` is this call's own (a chunk the bindings copied in):
  // it becomes a page as it is when it is one whole aligned page, and is
  // freed otherwise once copied. Either way the caller must not use it
  // again.
  writeAt(offset, data, consume = false) {
    const len = data.length;
    let kept = false;
    try {
      if (len === 0) return;
      const end = offset + len;
      if (!(end <= MAX_SIZE)) throw noSpace();
      if (consume && len === PAGE && offset % PAGE === 0 && offset <= this.size && ownsBuffer(data)) {
        this.#adopt(offset / PAGE, data);
        kept = true;
        return;
      }
      this.#prepare(Math.min(offset, this.size), end);
      let pos = offset;
      let done = 0;
      while (done < len) {
        const i = Math.floor(pos / PAGE);
        const at = pos - i * PAGE;
        const n = Math.min(PAGE - at, len - done);
        this.pages[i].buf.set(done === 0 && n === len ? data : data.subarray(done, done + n), at);
        pos += n;
        done += n;
      }
      if (end > this.size) this.size = end;
    } finally {
      // Refused or copied, the chunk is garbage: freed now.
      if (consume && !kept) free(data);
    }
  }

  // Page `i` becomes `data` (a whole page, the caller's to give).
  #adopt(i, data) {
    const old = this.pages[i];
    const cost = old === undefined || old.refs > 1 ? PAGE : PAGE - old.buf.length;
    this.budget.take(cost);
    if (old !== undefined) {
      if (old.refs > 1) {
        old.refs--;
      } else {
        // Already netted out of `cost`.
        free(old.buf);
        old.refs = 0;
      }
    }
    this.pages[i] = { buf: data, refs: 1 };
    this.size = Math.max(this.size, (i + 1) * PAGE);
  }

  // Cuts, or extends with zeros, to exactly `size` bytes.
  resize(size) {
    if (!(size <= MAX_SIZE)) throw noSpace();
    if (size === this.size) return;
    if (size > this.size) {
      this.#prepare(this.size, size);
      this.size = size;
      return;
    }
    const keep = Math.ceil(size / PAGE);
    const tail = size - (keep - 1) * PAGE; // bytes kept in the last page
    let replacement = null;
    const last = keep > 0 ? this.pages[keep - 1] : undefined;
    if (last !== undefined && tail < PAGE && last.refs > 1) {
      // Shared: its bytes past the cut stay someone else's; copy the rest.
      this.budget.take(tail);
      try {
        replacement = allocate(tail);
      } catch (e) {
        this.budget.give(tail);
        throw e;
      }
      replacement.set(last.buf.subarray(0, tail));
    }
    for (let i = keep; i < this.pages.length; i++) drop(this.budget, this.pages[i]);
    this.pages.length = keep;
    if (replacement !== null) {
      last.refs--;
      this.pages[keep - 1] = { buf: replacement, refs: 1 };
    } else if (last !== undefined && tail < PAGE) {
      last.buf.fill(0, tail);
    }
    this.size = size;
  }

  // Appends everything `other` holds. On a page boundary its pages move
  // over as they are (and `other` is left empty); otherwise they are copied.
  appendFrom(other) {
    if (this.size % PAGE === 0 && this.pages.length === this.size / PAGE) {
      this.pages.push(...other.pages);
      this.size += other.size;
      other.pages = [];
      other.size = 0;
      return;
    }
    for (let i = 0; i < other.pages.length; i++) {
      const n = Math.max(0, Math.min(PAGE, other.size - i * PAGE));
      if (n > 0) this.writeAt(this.size, other.pages[i].buf.subarray(0, n));
    }
  }

  // Up to `len` bytes at `offset`, never past the end of the page there
  // (a read may return less than asked; the host asks again): a view of
  // the page, so a read allocates nothing (the bindings copy it out at
  // once, before anything can change the page). Empty at or past the end.
  read(offset, len) {
    if (!(offset < this.size) || len <= 0) return EMPTY;
    const i = Math.floor(offset / PAGE);
    const start = offset - i * PAGE;
    const end = Math.min(this.#used(i), start + len);
    return this.pages[i].buf.subarray(start, end);
  }

  // Gives back the last page's spare capacity (committed content keeps
  // none), when the engine can shrink it in place or find room for a copy.
  compact() {
    const i = this.pages.length - 1;
    if (i < 0) return;
    const page = this.pages[i];
    const used = this.#used(i);
    if (page.refs !== 1 || page.buf.length <= used) return;
    const before = page.buf.length;
    try {
      page.buf = reallocate(page.buf, used);
    } catch {
      return;
    }
    this.budget.give(before - used);
  }
}

// One holder fewer: the last one frees the page.
function drop(budget, page) {
  if (--page.refs === 0) {
    budget.give(page.buf.length);
    free(page.buf);
    page.buf = EMPTY;
  }
}

// The `init` configuration: keys and values are strings. Unknown keys are
// refused (a typo would otherwise silently leave a quota at its default),
// except the host's reserved `wasftp.*` keys, which are accepted and, but
// for the memory cap, ignored.

const MiB = 1024 * 1024;

export const MEMORY_LIMIT_KEY = 'wasftp.memory-limit-bytes';
const RESERVED_PREFIX = 'wasftp.';
// Without a memory cap from the host (an older host): the byte quota.
export const FALLBACK_QUOTA_BYTES = 64 * MiB;
export const DEFAULT_QUOTA_FILES = 10000;

// What the instance keeps beside file content: the JS engine's own heap
// (a few MiB), one call's buffers (a write chunk copied in, a read copied
// out), garbage not collected yet, and allocator fragmentation. An explicit
// quota is lowered to the cap minus this, so a full quota can never run the
// engine out of memory (an abort there would trap and lose every file).
export function headroom(memoryLimit) {
  return Math.max(Math.floor(memoryLimit / 4), 32 * MiB);
}

// `1234`, `64K`, `10M`, `2G`, `1T`: binary multiples, with an optional `B`
// or `iB` (as the bundled plugins read sizes). Undefined when not one.
export function parseBytes(text) {
  const m = /^\s*(\d+)\s*([KMGT]?)(I?B)?\s*$/i.exec(text);
  if (m === null) return undefined;
  if (m[3] !== undefined && m[2] === '' && m[3].toUpperCase() === 'IB') return undefined;
  const mult = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 }[m[2].toUpperCase()];
  const n = Number(m[1]) * mult;
  return Number.isSafeInteger(n) ? n : undefined;
}

function parseCount(text) {
  if (!/^\s*\d+\s*$/.test(text)) return undefined;
  const n = Number(text);
  return Number.isSafeInteger(n) ? n : undefined;
}

const KNOWN = 'quota-bytes, quota-files, quota-bytes.TENANT, quota-files.TENANT';

// The configuration, or throws a message naming the key at fault.
export function parseConfig(pairs) {
  const cfg = {
    memoryLimit: undefined,
    quotaBytes: undefined,
    quotaFiles: undefined,
    tenantBytes: new Map(),
    tenantFiles: new Map(),
  };
  const seen = new Set();
  const bytes = (key, value) => {
    const n = parseBytes(value);
    if (n === undefined) {
      throw `config key \`${key}\`: not a byte size: ${JSON.stringify(value)} (e.g. 1048576, 512K, 64M, 2GiB)`;
    }
    return n;
  };
  const count = (key, value) => {
    const n = parseCount(value);
    if (n === undefined) throw `config key \`${key}\`: not a number of files: ${JSON.stringify(value)}`;
    return n;
  };
  const tenantOf = (key, prefix) => {
    const tenant = key.slice(prefix.length);
    if (tenant === '') throw `config key \`${key}\`: no tenant after \`${prefix}\``;
    return tenant;
  };
  for (const [key, value] of pairs) {
    if (key === MEMORY_LIMIT_KEY) {
      const n = parseCount(value);
      if (n === undefined) throw `config key \`${key}\`: not a byte count: ${JSON.stringify(value)}`;
      cfg.memoryLimit = n;
      continue;
    }
    if (key.startsWith(RESERVED_PREFIX)) continue; // the host's; not ours to judge
    if (seen.has(key)) throw `config key \`${key}\` is given twice`;
    seen.add(key);
    if (key === 'quota-bytes') cfg.quotaBytes = bytes(key, value);
    else if (key === 'quota-files') cfg.quotaFiles = count(key, value);
    else if (key.startsWith('quota-bytes.')) cfg.tenantBytes.set(tenantOf(key, 'quota-bytes.'), bytes(key, value));
    else if (key.startsWith('quota-files.')) cfg.tenantFiles.set(tenantOf(key, 'quota-files.'), count(key, value));
    else throw `unknown config key \`${key}\` (js-quota knows ${KNOWN}, and the host's wasftp.*)`;
  }
  return cfg;
}

// The quotas in force for `tenant` (undefined: no session yet, the
// plugin-wide values) and how they were decided, for the log.
export function quotaFor(cfg, tenant) {
  const ceiling = cfg.memoryLimit === undefined ? Infinity : Math.max(0, cfg.memoryLimit - headroom(cfg.memoryLimit));
  let bytes;
  let source;
  if (tenant !== undefined && cfg.tenantBytes.has(tenant)) {
    bytes = cfg.tenantBytes.get(tenant);
    source = `quota-bytes.${tenant}`;
  } else if (cfg.quotaBytes !== undefined) {
    bytes = cfg.quotaBytes;
    source = 'quota-bytes';
  } else if (cfg.memoryLimit !== undefined) {
    bytes = Math.floor(cfg.memoryLimit / 2);
    source = `half of ${MEMORY_LIMIT_KEY}`;
  } else {
    bytes = FALLBACK_QUOTA_BYTES;
    source = 'default, no memory cap given';
  }
  const clamped = bytes > ceiling;
  if (clamped) bytes = ceiling;
  const files = tenant !== undefined && cfg.tenantFiles.has(tenant)
    ? cfg.tenantFiles.get(tenant)
    : cfg.quotaFiles ?? DEFAULT_QUOTA_FILES;
  return { bytes, files, source, clamped, ceiling };
}

// The largest byte quota any tenant can get from this configuration: what
// describe() declares as max-file-size. The host reads the capabilities
// once, from an instance that serves no tenant and has the plugin-wide
// memory cap, so explicit quotas count as written (a tenant may have a
// larger cap of its own); where an instance lowers one, no-space says so.
export function largestQuota(cfg) {
  let max = cfg.quotaBytes ?? quotaFor(cfg, undefined).bytes;
  for (const bytes of cfg.tenantBytes.values()) max = Math.max(max, bytes);
  return max;
}

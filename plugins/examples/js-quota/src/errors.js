// The contract's `error` variant, as componentize-js lowers it: an object
// `{ tag }`, or `{ tag, val }` for the cases that carry a string
// (`invalid-input`, `io`).
//
// What the bindings do with an exception thrown from a function returning
// `result<T, E>`: a value with an own `payload` property is lowered as that
// payload (the `ComponentError` convention); any other value is lowered as
// it is, so a plain Error (a bug, a TypeError) fails to lower and traps the
// instance, which for a tenant-scoped plugin loses every file of the tenant.
// So everything here throws a `StorageError`, and plugin.js turns whatever
// else might escape into an error value (see `guard`).

export class StorageError extends Error {
  constructor(tag, val) {
    super(val === undefined ? tag : `${tag}: ${val}`);
    this.payload = val === undefined ? { tag } : { tag, val };
  }
}

export const notFound = () => new StorageError('not-found');
export const permissionDenied = () => new StorageError('permission-denied');
export const alreadyExists = () => new StorageError('already-exists');
export const notEmpty = () => new StorageError('not-empty');
export const notADirectory = () => new StorageError('not-a-directory');
export const isADirectory = () => new StorageError('is-a-directory');
export const invalidInput = (why) => new StorageError('invalid-input', String(why));
export const unsupported = () => new StorageError('unsupported');
export const noSpace = () => new StorageError('no-space');
export const conflict = () => new StorageError('conflict');
export const io = (why) => new StorageError('io', String(why));

// The error cases, to recognise a payload that can be lowered.
export const TAGS = new Set([
  'not-found', 'permission-denied', 'already-exists', 'not-empty',
  'not-a-directory', 'is-a-directory', 'invalid-input', 'unsupported',
  'no-space', 'conflict', 'io',
]);

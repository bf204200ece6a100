"""python-tree: a read-only, versioned release tree for wasftp, seeded from
the plugin's config. This module adapts `tree` (plain Python) to the
bindings componentize-py generates from wit/storage.wit; see README.md.

Conventions of those bindings (componentize-py 0.25.1), as used here:
- the exported interface `backend` is the class `Backend` of this module
  (a subclass of `wit_world.exports.Backend`); a new `Backend()` may be
  made for each call (0.25.1 does), so the instance's state lives in the
  module (`TREE`);
- its resources are any classes subclassing `wit_world.exports.backend.Session`
  / `.Reader`, returned as plain objects (their names are free);
- success is returning the value (not `Ok(value)`); an error is raised:
  `raise Err(types.Error_NotFound())`, or `raise Err("text")` for init's
  `result<_, string>`. Any other exception traps the instance;
- records are the dataclasses of `wit_world.imports.types`, enums their
  `Enum` members (`types.FileKind.FILE`; an int traps), `option<T>` is `T`
  or `None`, integers are `int` (out of range, or negative for unsigned,
  traps), `list<u8>` is exactly `bytes` (a bytearray or memoryview traps).
"""


import wit_world
from componentize_py_types import Err
from wit_world.exports import backend
from wit_world.imports import log, types

import tree

NAME = "python-tree"
VERSION = "0.1.0"
READ_CHUNK = 256 * 1024
# Nothing is ever written; the host wants a size all the same (4 KiB to 8 MiB).
WRITE_CHUNK = 64 * 1024
# The most one read returns (short reads are fine): a bound on the copy.
MAX_READ = 1 << 20

# The tree, made once per instance by init. Module state is the instance's
# state; the bindings may make a new `Backend` object for each call.
TREE = None

_KINDS = {
    "file": types.FileKind.FILE,
    "directory": types.FileKind.DIRECTORY,
    "symlink": types.FileKind.SYMLINK,
}


def _info(node):
    return types.FileInfo(
        kind=_KINDS[node.kind],
        size=node.size,
        permissions=node.mode,
        modified=node.mtime,
        accessed=node.mtime,
        version=node.version,
    )


def _error(e):
    """The WIT error for a failed lookup."""
    if isinstance(e, tree.NotFound):
        return types.Error_NotFound()
    if isinstance(e, tree.NotADirectory):
        return types.Error_NotADirectory()
    if isinstance(e, tree.IsADirectory):
        return types.Error_IsADirectory()
    if isinstance(e, tree.Conflict):
        return types.Error_Conflict()
    if isinstance(e, tree.NotALink):
        return types.Error_InvalidInput("not a symbolic link")
    return types.Error_InvalidInput(str(e) or type(e).__name__)


def _lookup(call, *args):
    """`call(*args)` on the tree, its failure raised as the WIT error."""
    if TREE is None:
        raise Err(types.Error_Io("python-tree: init has not run"))
    try:
        return call(TREE, *args)
    except tree.TreeError as e:
        raise Err(_error(e)) from None


def _read_only():
    raise Err(types.Error_PermissionDenied())


# The modification time of a release without `released-at`.
UNDATED = 0


class Backend(wit_world.exports.Backend):
    def init(self, config):
        global TREE
        try:
            # Undated releases get the epoch: every instance must agree, and
            # each starts at its own time.
            TREE = tree.parse(config, now=UNDATED)
        except tree.ConfigError as e:
            raise Err(f"{NAME}: {e}") from None
        except MemoryError:
            raise Err(
                f"{NAME}: the tree does not fit in the instance's memory; "
                "raise memory_limit_mib, or publish fewer bytes"
            ) from None
        log.log(log.Level.INFO, TREE.summary())

    def describe(self):
        return types.Capabilities(
            name=NAME,
            version=VERSION,
            # Nothing but the config is kept: any number of instances agree.
            scope=types.InstanceScope.STATELESS,
            random_write=False,
            append=False,
            atomic_rename=False,
            set_info=False,
            symlinks=True,  # /latest
            hard_links=False,
            read_chunk=READ_CHUNK,
            write_chunk=WRITE_CHUNK,
            durable_sync=False,
            max_file_size=None,
            copy=False,
            abort_orphans=False,
        )

    def maintain(self):
        return None  # nothing to tidy

    def abort_orphan(self, token):
        # Never called (abort-orphans is false); no upload of ours can be
        # left behind, so there is nothing to abort and that is ok.
        return None

    def open_session(self, context):
        log.log(log.Level.DEBUG, f"{NAME}: session for {context.user}@{context.tenant}")
        return TreeSession()


class TreeSession(backend.Session):
    def list_dir(self, path, cursor, limit):
        page, next_cursor = _lookup(tree.Tree.list_dir, path, cursor, limit)
        entries = [types.DirEntry(name=name, info=_info(node)) for name, node in page]
        return types.DirPage(entries=entries, next_cursor=next_cursor)

    def file_info(self, path):
        return _info(_lookup(tree.Tree.lookup, path))

    def link_info(self, path):
        return _info(_lookup(tree.Tree.lookup, path, False))

    def open_read(self, path, version):
        node = _lookup(tree.Tree.open_read, path, version)
        return TreeReader(node.data, _info(node))

    def read_link(self, path):
        return _lookup(tree.Tree.read_link, path)

    def space(self, path):
        _lookup(tree.Tree.lookup, path)
        block = 512
        used = -(-TREE.total_bytes // block) * block
        # Honest for a read-only tree: all of it is used, none is free.
        return types.SpaceInfo(
            total_bytes=used,
            free_bytes=0,
            available_bytes=0,
            total_files=TREE.total_files,
            free_files=0,
            block_size=block,
        )

    # Every write is refused: the tree is what the config says.
    def begin_write(self, path, options):
        _read_only()

    def make_dir(self, path, permissions):
        _read_only()

    def remove_dir(self, path):
        _read_only()

    def remove_file(self, path):
        _read_only()

    def rename(self, src, dst, overwrite):
        _read_only()

    def copy_file(self, src, dst, overwrite):
        _read_only()

    def set_info(self, path, attrs):
        _read_only()

    def make_link(self, target, path):
        _read_only()

    def hard_link(self, src, dst):
        _read_only()


class TreeReader(backend.Reader):
    """A file's content: immutable, so the version opened is the only one."""

    def __init__(self, data, info):
        self._data = data
        self._info = info

    def info(self):
        return self._info

    def read(self, offset, length):
        if offset >= len(self._data):
            return b""
        return self._data[offset:offset + min(length, MAX_READ)]

"""{{name}}: a wasftp storage plugin. As written by `wasftp plugin new`, it
serves a small read-only tree from memory and refuses every write; put your
own storage behind the same calls. `wit/storage.wit` is the contract;
wasftp's docs/plugins.md is the guide."""

import hashlib
from typing import List, Optional, Tuple

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import backend
from wit_world.imports import log, types

# The files this skeleton serves: path -> content.
FILES = {
    "/hello.txt": b"Hello from {{name}}.\n",
    "/docs/readme.txt": b"Replace this tree with your own storage.\n",
}

# When the files were made (seconds since the epoch).
MODIFIED = 1_700_000_000


def fail(error):
    """Errors are raised: Err(<one of the contract's error cases>)."""
    raise Err(error)


def is_dir(path: str) -> bool:
    prefix = "/" if path == "/" else path + "/"
    return any(file.startswith(prefix) for file in FILES)


def describe_path(path: str) -> types.FileInfo:
    if path in FILES:
        content = FILES[path]
        version = hashlib.sha256(content).hexdigest()[:16]
        return types.FileInfo(types.FileKind.FILE, len(content), 0o444, MODIFIED, MODIFIED, version)
    if is_dir(path):
        return types.FileInfo(types.FileKind.DIRECTORY, 0, 0o555, MODIFIED, MODIFIED, None)
    fail(types.Error_NotFound())


class Backend(exports.Backend):
    def init(self, config: List[Tuple[str, str]]) -> None:
        # Keys starting with `wasftp.` come from the host: accept them.
        for key, _ in config:
            if not key.startswith("wasftp."):
                raise Err(f"unknown config key {key!r}: this plugin takes none")
        log.log(log.Level.INFO, "{{name}} ready")

    def describe(self) -> types.Capabilities:
        return types.Capabilities(
            name="{{name}}",
            version="0.1.0",
            # Nothing is kept in the instance: the host may run several.
            scope=types.InstanceScope.STATELESS,
            random_write=False,
            append=False,
            atomic_rename=False,
            set_info=False,
            symlinks=False,
            hard_links=False,
            read_chunk=256 * 1024,
            write_chunk=256 * 1024,
            durable_sync=False,
            max_file_size=None,
            copy=False,
            abort_orphans=False,
        )

    def maintain(self) -> None:
        pass

    def abort_orphan(self, token: str) -> None:
        pass

    def open_session(self, context: types.SessionContext) -> backend.Session:
        return TreeSession()


class TreeSession(backend.Session):
    def list_dir(self, path: str, cursor: Optional[str], limit: int) -> types.DirPage:
        if describe_path(path).kind != types.FileKind.DIRECTORY:
            fail(types.Error_NotADirectory())
        prefix = "/" if path == "/" else path + "/"
        names = sorted({file[len(prefix):].split("/")[0] for file in FILES if file.startswith(prefix)})
        # The cursor is the last name of the previous page.
        start = 0 if cursor is None else len([n for n in names if n <= cursor])
        page = names[start:start + max(limit, 1)]
        more = start + len(page) < len(names)
        entries = [types.DirEntry(name, describe_path(prefix + name)) for name in page]
        return types.DirPage(entries, page[-1] if more else None)

    def file_info(self, path: str) -> types.FileInfo:
        return describe_path(path)

    def link_info(self, path: str) -> types.FileInfo:
        return describe_path(path)

    def open_read(self, path: str, version: Optional[str]) -> backend.Reader:
        info = describe_path(path)
        if info.kind == types.FileKind.DIRECTORY:
            fail(types.Error_IsADirectory())
        if version is not None and version != info.version:
            fail(types.Error_Conflict())
        return TreeReader(FILES[path], info)

    def begin_write(self, path: str, options: types.WriteOptions) -> backend.Writer:
        fail(types.Error_PermissionDenied())

    def make_dir(self, path: str, permissions: Optional[int]) -> None:
        fail(types.Error_PermissionDenied())

    def remove_dir(self, path: str) -> None:
        fail(types.Error_PermissionDenied())

    def remove_file(self, path: str) -> None:
        fail(types.Error_PermissionDenied())

    def rename(self, src: str, dst: str, overwrite: bool) -> None:
        fail(types.Error_PermissionDenied())

    def copy_file(self, src: str, dst: str, overwrite: bool) -> None:
        fail(types.Error_PermissionDenied())

    def set_info(self, path: str, attrs: types.SetAttrs) -> None:
        fail(types.Error_PermissionDenied())

    def read_link(self, path: str) -> str:
        fail(types.Error_Unsupported())

    def make_link(self, target: str, path: str) -> None:
        fail(types.Error_PermissionDenied())

    def hard_link(self, src: str, dst: str) -> None:
        fail(types.Error_PermissionDenied())

    def space(self, path: str) -> types.SpaceInfo:
        fail(types.Error_Unsupported())


class TreeReader(backend.Reader):
    def __init__(self, content: bytes, info: types.FileInfo):
        self.content = content
        self.at_open = info

    def info(self) -> types.FileInfo:
        return self.at_open

    def read(self, offset: int, len: int) -> bytes:
        return self.content[offset:offset + len]

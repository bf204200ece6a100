"""The release tree in plain Python: the config parsed into an immutable
tree, and path lookups in it. Nothing here knows the WIT bindings, so it runs
(and is tested, see tests/) under an ordinary CPython as well.

The served namespace:

    /                    the releases, and `latest`
    /<release>/...       each release's files; directories are implied
    /latest              a symlink to the newest release (see `version_key`)
"""

import base64
import binascii
import bisect
import hashlib

RESERVED_PREFIX = "wasftp."
RELEASED_AT_PREFIX = "released-at:"
BASE64_PREFIX = "base64:"
LATEST = "latest"

FILE_MODE = 0o444
DIR_MODE = 0o555
# A symlink's own mode means nothing on POSIX; 0o777 is what `ls -l` shows
# for one everywhere (lrwxrwxrwx).
LINK_MODE = 0o777

MAX_RELEASE_LEN = 64
MAX_NAME_LEN = 255  # bytes; the host leaves longer names out of listings
MAX_PATH_LEN = 4096  # bytes
# The host refuses a page of more entries than this, whatever limit it asked
# for (host/src/plugin/validate.rs MAX_PAGE_ENTRIES).
MAX_PAGE = 1024

_RELEASE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-")
_DIGITS = "0123456789"
_BASE64_SPACE = str.maketrans("", "", " \t\r\n")


# ---------------------------------------------------------------- errors

class ConfigError(Exception):
    """A config key init refuses; the message names the key."""


class TreeError(Exception):
    """A lookup that failed; app.py maps each subclass to a WIT error."""


class NotFound(TreeError):
    pass


class NotADirectory(TreeError):
    pass


class IsADirectory(TreeError):
    pass


class NotALink(TreeError):
    pass


class Conflict(TreeError):
    pass


class BadPath(TreeError):
    pass


# ---------------------------------------------------------------- nodes

class File:
    __slots__ = ("data", "mtime", "version")

    kind = "file"

    def __init__(self, data, mtime, version):
        self.data = data
        self.mtime = mtime
        self.version = version

    @property
    def size(self):
        return len(self.data)

    mode = FILE_MODE


class Dir:
    __slots__ = ("children", "names", "mtime")

    kind = "directory"
    mode = DIR_MODE
    size = 0
    version = None

    def __init__(self, mtime):
        self.children = {}
        self.names = []  # sorted, filled in by `_seal`
        self.mtime = mtime


class Link:
    """`/latest`: `target` is what read-link answers, `dir` what it follows to."""

    __slots__ = ("target", "dir", "mtime")

    kind = "symlink"
    mode = LINK_MODE
    version = None

    def __init__(self, target, dir, mtime):
        self.target = target
        self.dir = dir
        self.mtime = mtime

    @property
    def size(self):
        return len(self.target.encode())


# ---------------------------------------------------------------- ordering

def version_key(release):
    """How releases compare: a leading `v` before a digit is ignored; the
    name is split on dots; each part compares by its leading number (a part
    without one counts as -1), then by what follows the number: nothing
    ranks above a suffix starting with `-` or `~` (a pre-release: 2.0-rc1
    comes before 2.0) and below any other suffix (2.0a comes after 2.0),
    suffixes of the same rank compare as text. A shorter name that is a
    prefix of a longer one comes first (1.0 before 1.0.1); names that still
    tie compare as text, so the order is total."""
    name = release
    if len(name) > 1 and name[0] in "vV" and name[1] in _DIGITS:
        name = name[1:]
    parts = []
    for part in name.split("."):
        digits = 0
        while digits < len(part) and part[digits] in _DIGITS:
            digits += 1
        number = int(part[:digits]) if digits else -1
        rest = part[digits:]
        if not rest:
            rank = 1
        elif rest[0] in "-~":
            rank = 0
        else:
            rank = 2
        parts.append((number, rank, rest))
    return (tuple(parts), release)


# ---------------------------------------------------------------- config

def _shown(text, most=120):
    return text if len(text) <= most else text[: most - 3] + "..."


def _check_release(key, release):
    if not release:
        raise ConfigError(f"config key `{_shown(key)}`: the release name before `:` is empty")
    if release == LATEST:
        raise ConfigError(f"config key `{_shown(key)}`: `latest` is the name of the link to the newest release, not a release")
    if release in (".", ".."):
        raise ConfigError(f"config key `{_shown(key)}`: `{release}` is not a release name")
    if len(release) > MAX_RELEASE_LEN or not set(release) <= _RELEASE_CHARS:
        raise ConfigError(
            f"config key `{_shown(key)}`: a release name is 1 to {MAX_RELEASE_LEN} of the characters "
            "A-Z a-z 0-9 . _ + - (like 1.0 or 2.1.0-rc1)"
        )


def _check_path(key, path):
    """The segments of a file's path inside its release."""
    if not path.startswith("/"):
        raise ConfigError(f"config key `{_shown(key)}`: the path after `:` must start with `/` (like 1.0:/README.txt)")
    if path == "/":
        raise ConfigError(f"config key `{_shown(key)}`: `/` is the release's directory, not a file")
    if len(path.encode()) > MAX_PATH_LEN:
        raise ConfigError(f"config key `{_shown(key)}`: the path is longer than {MAX_PATH_LEN} bytes")
    segments = path[1:].split("/")
    for segment in segments:
        if segment == "":
            raise ConfigError(f"config key `{_shown(key)}`: the path has an empty segment (`//`, or a trailing `/`)")
        if segment in (".", ".."):
            raise ConfigError(f"config key `{_shown(key)}`: the path has a `{segment}` segment")
        if "\0" in segment:
            raise ConfigError(f"config key `{_shown(key)}`: the path has a NUL")
        if len(segment.encode()) > MAX_NAME_LEN:
            raise ConfigError(f"config key `{_shown(key)}`: a name in the path is longer than {MAX_NAME_LEN} bytes")
    return segments


def _decode(key, value):
    if not value.startswith(BASE64_PREFIX):
        return value.encode("utf-8")
    text = value[len(BASE64_PREFIX):].translate(_BASE64_SPACE)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ConfigError(f"config key `{_shown(key)}`: the value after `base64:` is not base64 ({e})") from None


def _parse_time(key, value):
    text = value.strip()
    if not text or not all(c in _DIGITS for c in text) or int(text) >= 1 << 64:
        raise ConfigError(
            f"config key `{_shown(key)}` = `{_shown(value, 40)}`: expected Unix seconds, a whole number like 1735689600"
        )
    return int(text)


class Release:
    __slots__ = ("name", "dir", "files", "bytes", "mtime", "dated")

    def __init__(self, name, mtime, dated):
        self.name = name
        self.mtime = mtime
        self.dated = dated  # whether released-at gave its time
        self.dir = Dir(mtime)
        self.files = 0
        self.bytes = 0


def parse(config, now):
    """The tree `config` (a list of key/value pairs) describes; `now` is the
    time of releases without `released-at`. Raises ConfigError."""
    seen = set()
    files = {}  # release -> [(key, segments, data)]
    times = {}  # release -> (key, seconds)
    for key, value in config:
        if key in seen:
            raise ConfigError(f"config key `{_shown(key)}` is given twice")
        seen.add(key)
        if key.startswith(RESERVED_PREFIX):
            continue  # the host's; none of them concerns this plugin
        if key.startswith(RELEASED_AT_PREFIX):
            release = key[len(RELEASED_AT_PREFIX):]
            _check_release(key, release)
            times[release] = (key, _parse_time(key, value))
            continue
        release, colon, path = key.partition(":")
        if not colon:
            raise ConfigError(
                f"unknown config key `{_shown(key)}`: expected `<release>:/<path>` (a file) "
                "or `released-at:<release>`"
            )
        _check_release(key, release)
        segments = _check_path(key, path)
        files.setdefault(release, []).append((key, segments, _decode(key, value)))
    for release, (key, _) in times.items():
        if release not in files:
            raise ConfigError(f"config key `{_shown(key)}`: no file is published in release `{release}`")

    releases = {}
    for name, entries in files.items():
        dated = name in times
        release = Release(name, times[name][1] if dated else now, dated)
        made_by = {}  # path inside the release -> the key that made it
        for key, segments, data in entries:
            _insert(release, made_by, key, segments, data)
        releases[name] = release
    return Tree(releases, now)


def _insert(release, made_by, key, segments, data):
    node = release.dir
    for depth, name in enumerate(segments[:-1]):
        child = node.children.get(name)
        here = "/" + "/".join(segments[: depth + 1])
        if child is None:
            child = node.children[name] = Dir(release.mtime)
            made_by[here] = key
        elif not isinstance(child, Dir):
            raise ConfigError(
                f"config key `{_shown(key)}`: {release.name}:{_shown(here)} is a file "
                f"(config key `{_shown(made_by[here])}`) and cannot also be a directory"
            )
        node = child
    name = segments[-1]
    here = "/" + "/".join(segments)
    if name in node.children:
        # The same path twice is the same key twice, refused above: this is a directory.
        raise ConfigError(
            f"config key `{_shown(key)}`: {release.name}:{_shown(here)} is a directory "
            f"(made by config key `{_shown(made_by[here])}`) and cannot also be a file"
        )
    digest = hashlib.sha256(data).hexdigest()[:16]
    node.children[name] = File(data, release.mtime, f"{release.name}-{digest}")
    made_by[here] = key
    release.files += 1
    release.bytes += len(data)


def _seal(node):
    node.names = sorted(node.children)
    for child in node.children.values():
        if isinstance(child, Dir):
            _seal(child)


# ---------------------------------------------------------------- the tree

def _count(n, what):
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


class Tree:
    def __init__(self, releases, now):
        # Newest first.
        self.releases = sorted(releases.values(), key=lambda r: version_key(r.name), reverse=True)
        self.newest = self.releases[0] if self.releases else None
        self.root = Dir(max((r.mtime for r in self.releases), default=now))
        for release in self.releases:
            self.root.children[release.name] = release.dir
        if self.newest is not None:
            # Absolute: the host reads a link's target as a path in the
            # plugin's namespace (a relative one is refused to the client).
            self.root.children[LATEST] = Link("/" + self.newest.name, self.newest.dir, self.newest.mtime)
        _seal(self.root)
        self.total_files = sum(r.files for r in self.releases)
        self.total_bytes = sum(r.bytes for r in self.releases)

    def summary(self, most=20):
        if not self.releases:
            return "python-tree: no release is configured; the tree is empty"
        shown = []
        for release in self.releases[:most]:
            when = f"released-at {release.mtime}" if release.dated else "no released-at: dated at init"
            shown.append(f"{release.name} ({_count(release.files, 'file')}, {_count(release.bytes, 'byte')}, {when})")
        more = len(self.releases) - most
        tail = f" and {more} more" if more > 0 else ""
        return (
            f"python-tree: {_count(len(self.releases), 'release')}, newest first: {', '.join(shown)}{tail}; "
            f"/latest -> {self.newest.name}"
        )

    def lookup(self, path, follow=True):
        """The node at `path`; a final `/latest` is followed when `follow`,
        one further up always is."""
        if not path.startswith("/"):
            raise BadPath(f"not an absolute path: {_shown(path)}")
        node = self.root
        if path == "/":
            return node
        for name in path[1:].split("/"):
            if isinstance(node, Link):
                node = node.dir
            if not isinstance(node, Dir):
                raise NotADirectory()
            node = node.children.get(name)
            if node is None:
                raise NotFound()
        if follow and isinstance(node, Link):
            node = node.dir
        return node

    def list_dir(self, path, cursor, limit):
        """One page: [(name, node)] of the names after `cursor`, and the
        next cursor (the last name given) or None on the last page. A link
        in the page is itself, not what it points to (as lstat)."""
        node = self.lookup(path)
        if not isinstance(node, Dir):
            raise NotADirectory()
        names = node.names
        start = 0 if cursor is None else bisect.bisect_right(names, cursor)
        # A page is never empty while names remain (the host refuses an
        # empty page with a cursor): a limit of 0 gives one entry.
        count = min(max(limit, 1), MAX_PAGE)
        page = names[start:start + count]
        next_cursor = page[-1] if start + count < len(names) else None
        return [(name, node.children[name]) for name in page], next_cursor

    def open_read(self, path, version):
        node = self.lookup(path)
        if isinstance(node, Dir):
            raise IsADirectory()
        if version is not None and version != node.version:
            raise Conflict()
        return node

    def read_link(self, path):
        node = self.lookup(path, follow=False)
        if not isinstance(node, Link):
            raise NotALink()
        return node.target

"""app.py against the Python bindings componentize-py generates, under an
ordinary CPython: what each export returns or raises, in WIT terms. Needs
componentize-py 0.25.1 on PATH (the bindings are generated into a temporary
directory); skipped without it.
    python3 -m unittest discover -s tests     (from plugins/examples/python-tree)
"""

import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
PLUGIN = os.path.join(HERE, "..")
WIT = os.path.join(PLUGIN, "..", "..", "..", "wit")

CONFIG = [
    ("1.0:/README.txt", "hello"),
    ("1.1:/README.txt", "hello again"),
    ("1.1:/bin/tool.sh", "#!/bin/sh\n"),
    ("released-at:1.0", "1700000000"),
    ("wasftp.memory-limit-bytes", "268435456"),
]


@unittest.skipIf(shutil.which("componentize-py") is None, "componentize-py is not installed")
class AppTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.bindings = tempfile.mkdtemp(prefix="python-tree-bindings-")
        subprocess.run(
            ["componentize-py", "-q", "-d", WIT, "-w", "plugin", "bindings", cls.bindings],
            check=True,
        )
        sys.path[:0] = [cls.bindings, PLUGIN]
        log = importlib.import_module("wit_world.imports.log")
        cls.logged = []
        # The generated import is a stub outside a component.
        log.log = lambda level, message: cls.logged.append((level, message))
        cls.types = importlib.import_module("wit_world.imports.types")
        cls.Err = importlib.import_module("componentize_py_types").Err
        cls.app = importlib.import_module("app")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.bindings, ignore_errors=True)

    def setUp(self):
        self.backend = self.app.Backend()
        self.backend.init(CONFIG)
        self.session = self.backend.open_session(self.types.SessionContext(user="u", tenant="t", attributes=[]))

    def error(self, call, *args):
        with self.assertRaises(self.Err) as raised:
            call(*args)
        return raised.exception.value

    def test_init_logs_the_releases_and_refuses_bad_keys(self):
        self.assertTrue(any("/latest -> 1.1" in message for _, message in self.logged))
        message = self.error(self.backend.init, [("1.0:/a/../b", "x")])
        self.assertIsInstance(message, str)
        self.assertIn("`1.0:/a/../b`", message)

    def test_describe(self):
        caps = self.backend.describe()
        self.assertEqual((caps.name, caps.scope), ("python-tree", self.types.InstanceScope.STATELESS))
        self.assertTrue(caps.symlinks)
        self.assertFalse(any([caps.random_write, caps.append, caps.atomic_rename, caps.set_info,
                              caps.hard_links, caps.copy, caps.durable_sync, caps.abort_orphans]))
        self.assertIsNone(caps.max_file_size)

    def test_infos(self):
        t = self.types
        info = self.session.file_info("/latest/README.txt")
        self.assertEqual((info.kind, info.size, info.permissions), (t.FileKind.FILE, 11, 0o444))
        self.assertTrue(info.version.startswith("1.1-"))
        self.assertEqual(self.session.file_info("/latest").kind, t.FileKind.DIRECTORY)
        self.assertEqual(self.session.link_info("/latest").kind, t.FileKind.SYMLINK)
        self.assertEqual(self.session.file_info("/1.0").permissions, 0o555)
        self.assertEqual(self.session.file_info("/1.0").modified, 1700000000)
        self.assertEqual(self.session.read_link("/latest"), "/1.1")

    def test_listing(self):
        t = self.types
        page = self.session.list_dir("/", None, 2)
        self.assertEqual([e.name for e in page.entries], ["1.0", "1.1"])
        self.assertEqual(page.next_cursor, "1.1")
        page = self.session.list_dir("/", page.next_cursor, 2)
        self.assertEqual([(e.name, e.info.kind) for e in page.entries], [("latest", t.FileKind.SYMLINK)])
        self.assertIsNone(page.next_cursor)
        names = [e.name for e in self.session.list_dir("/latest", None, 10).entries]
        self.assertEqual(names, ["README.txt", "bin"])

    def test_reads(self):
        reader = self.session.open_read("/1.0/README.txt", None)
        self.assertEqual(reader.info().size, 5)
        self.assertEqual(reader.read(1, 3), b"ell")
        self.assertEqual(reader.read(3, 100), b"lo")
        self.assertEqual(reader.read(5, 10), b"")
        self.assertEqual(reader.read(1 << 63, 10), b"")
        version = reader.info().version
        self.assertEqual(self.session.open_read("/1.0/README.txt", version).read(0, 5), b"hello")

    def test_errors(self):
        t, s = self.types, self.session
        self.assertIsInstance(self.error(s.file_info, "/2.0"), t.Error_NotFound)
        self.assertIsInstance(self.error(s.open_read, "/2.0/x", None), t.Error_NotFound)
        self.assertIsInstance(self.error(s.list_dir, "/nope", None, 10), t.Error_NotFound)
        self.assertIsInstance(self.error(s.list_dir, "/1.0/README.txt", None, 10), t.Error_NotADirectory)
        self.assertIsInstance(self.error(s.file_info, "/1.0/README.txt/x"), t.Error_NotADirectory)
        self.assertIsInstance(self.error(s.open_read, "/1.1/bin", None), t.Error_IsADirectory)
        self.assertIsInstance(self.error(s.open_read, "/1.1/README.txt", "1.1-0000000000000000"), t.Error_Conflict)
        self.assertIsInstance(self.error(s.read_link, "/1.0"), t.Error_InvalidInput)

    def test_writes_are_refused(self):
        t, s = self.types, self.session
        options = t.WriteOptions(create=True, truncate=True, exclusive=False, append=False, permissions=None)
        attrs = t.SetAttrs(size=None, permissions=0o600, accessed=None, modified=None)
        for call, args in [
            (s.begin_write, ("/1.0/new", options)),
            (s.make_dir, ("/2.0", None)),
            (s.remove_dir, ("/1.1/bin",)),
            (s.remove_file, ("/1.0/README.txt",)),
            (s.rename, ("/1.0", "/2.0", False)),
            (s.copy_file, ("/1.0/README.txt", "/1.0/copy", False)),
            (s.set_info, ("/1.0/README.txt", attrs)),
            (s.make_link, ("/1.0", "/stable")),
            (s.hard_link, ("/1.0/README.txt", "/1.0/again")),
        ]:
            with self.subTest(call=call.__name__):
                self.assertIsInstance(self.error(call, *args), t.Error_PermissionDenied)

    def test_space(self):
        space = self.session.space("/")
        self.assertEqual((space.free_bytes, space.available_bytes, space.total_files), (0, 0, 3))
        self.assertIsInstance(self.error(self.session.space, "/missing"), self.types.Error_NotFound)


if __name__ == "__main__":
    unittest.main()

"""The tree's logic under an ordinary CPython (3.9 or later), no WebAssembly:
    python3 -m unittest discover -s tests     (from plugins/examples/python-tree)
"""

import base64
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import tree  # noqa: E402

NOW = 1_800_000_000

CONFIG = [
    ("1.0:/README.txt", "hello"),
    ("1.0:/docs/guide.txt", "guide 1.0"),
    ("1.1:/README.txt", "hello again"),
    ("1.1:/bin/tool.sh", "#!/bin/sh\necho tool\n"),
    ("1.1:/logo.bin", "base64:" + base64.b64encode(bytes(range(256))).decode()),
    ("released-at:1.0", "1700000000"),
    ("wasftp.memory-limit-bytes", "268435456"),
    ("wasftp.something-new", "whatever"),
]


def parsed(config=CONFIG):
    return tree.parse(config, now=NOW)


def refused(config):
    try:
        tree.parse(config, now=NOW)
    except tree.ConfigError as e:
        return str(e)
    raise AssertionError(f"{config!r} was accepted")


class ConfigTests(unittest.TestCase):
    def test_releases_files_and_times(self):
        t = parsed()
        self.assertEqual([r.name for r in t.releases], ["1.1", "1.0"])
        self.assertEqual(t.lookup("/1.0/README.txt").data, b"hello")
        self.assertEqual(t.lookup("/1.0/README.txt").mtime, 1700000000)
        self.assertEqual(t.lookup("/1.1/README.txt").mtime, NOW, "no released-at: the time at init")
        self.assertEqual(t.lookup("/1.1/logo.bin").data, bytes(range(256)))
        self.assertEqual(t.total_files, 5)
        self.assertEqual(t.root.mtime, NOW)

    def test_base64_may_be_wrapped(self):
        t = parsed([("1:/a", "base64:aGVs\n bG8=\n")])
        self.assertEqual(t.lookup("/1/a").data, b"hello")

    def test_an_empty_config_is_an_empty_tree(self):
        t = parsed([("wasftp.memory-limit-bytes", "1")])
        self.assertEqual(t.root.names, [])
        self.assertIn("empty", t.summary())

    def test_refusals_name_the_key(self):
        cases = [
            ("1.0:/a/../b", "`..` segment"),
            ("1.0:/a/./b", "`.` segment"),
            ("1.0:/a//b", "empty segment"),
            ("1.0:/a/", "empty segment"),
            ("1.0:a", "must start with `/`"),
            ("1.0:/", "not a file"),
            (":/a", "release name before `:` is empty"),
            ("latest:/a", "link to the newest"),
            ("..:/a", "not a release name"),
            ("1 0:/a", "release name is"),
            ("r/1:/a", "release name is"),
            ("1.0:/" + "x" * 256, "longer than 255"),
            ("nonsense", "unknown config key"),
        ]
        for key, why in cases:
            with self.subTest(key=key):
                message = refused([(key, "x")])
                self.assertIn(key[:100], message)
                self.assertIn(why, message)

    def test_bad_base64(self):
        message = refused([("1.0:/logo.bin", "base64:not base64!")])
        self.assertIn("`1.0:/logo.bin`", message)
        self.assertIn("not base64", message)

    def test_a_file_and_a_directory_at_once(self):
        for config in ([("1:/a", "x"), ("1:/a/b", "y")], [("1:/a/b", "y"), ("1:/a", "x")]):
            with self.subTest(config=config):
                message = refused(config)
                self.assertIn("`1:/a`", message)
                self.assertIn("`1:/a/b`", message)
        # The same path in two releases is no conflict.
        parsed([("1:/a", "x"), ("2:/a/b", "y")])

    def test_released_at(self):
        self.assertIn("Unix seconds", refused([("1:/a", "x"), ("released-at:1", "yesterday")]))
        self.assertIn("Unix seconds", refused([("1:/a", "x"), ("released-at:1", "-5")]))
        self.assertIn("no file is published", refused([("1:/a", "x"), ("released-at:2", "5")]))
        self.assertIn("release name", refused([("released-at:", "5")]))

    def test_a_key_twice(self):
        self.assertIn("given twice", refused([("1:/a", "x"), ("1:/a", "y")]))


class OrderTests(unittest.TestCase):
    def newest(self, *names):
        return parsed([(f"{name}:/f", name) for name in names]).newest.name

    def test_numeric_parts_compare_numerically(self):
        self.assertEqual(self.newest("1.9", "1.10", "1.2"), "1.10")
        self.assertEqual(self.newest("2", "10"), "10")
        self.assertEqual(self.newest("1.0", "1.0.1"), "1.0.1")

    def test_pre_releases_come_before_the_release(self):
        self.assertEqual(self.newest("2.0", "2.0-rc1"), "2.0")
        self.assertEqual(self.newest("2.0-rc1", "1.9"), "2.0-rc1")
        self.assertEqual(self.newest("2.0-rc1", "2.0-rc2"), "2.0-rc2")
        self.assertEqual(self.newest("2.0", "2.0a"), "2.0a")

    def test_a_leading_v_is_ignored(self):
        self.assertEqual(self.newest("v1.10", "1.9"), "v1.10")

    def test_ties_are_broken_by_name(self):
        self.assertEqual(self.newest("1.0", "1.00"), self.newest("1.00", "1.0"))


class LookupTests(unittest.TestCase):
    def setUp(self):
        self.t = parsed()

    def test_root_and_latest(self):
        names, cursor = self.t.list_dir("/", None, 100)
        self.assertEqual([n for n, _ in names], ["1.0", "1.1", "latest"])
        self.assertIsNone(cursor)
        self.assertEqual(dict(names)["latest"].kind, "symlink")
        self.assertIs(self.t.lookup("/latest"), self.t.lookup("/1.1"))
        self.assertEqual(self.t.lookup("/latest", follow=False).kind, "symlink")
        self.assertIs(self.t.lookup("/latest/README.txt"), self.t.lookup("/1.1/README.txt"))
        self.assertIs(self.t.lookup("/latest/bin/tool.sh", follow=False), self.t.lookup("/1.1/bin/tool.sh"))
        self.assertEqual(self.t.read_link("/latest"), "/1.1")

    def test_errors(self):
        with self.assertRaises(tree.NotFound):
            self.t.lookup("/2.0")
        with self.assertRaises(tree.NotFound):
            self.t.lookup("/1.0/missing/deeper")
        with self.assertRaises(tree.NotADirectory):
            self.t.lookup("/1.0/README.txt/x")
        with self.assertRaises(tree.NotADirectory):
            self.t.list_dir("/1.0/README.txt", None, 10)
        with self.assertRaises(tree.IsADirectory):
            self.t.open_read("/1.0/docs", None)
        with self.assertRaises(tree.IsADirectory):
            self.t.open_read("/latest", None)
        with self.assertRaises(tree.NotALink):
            self.t.read_link("/1.0/README.txt")
        with self.assertRaises(tree.NotALink):
            self.t.read_link("/")
        with self.assertRaises(tree.NotFound):
            self.t.read_link("/nothing")
        with self.assertRaises(tree.BadPath):
            self.t.lookup("relative")

    def test_versions(self):
        node = self.t.lookup("/1.1/README.txt")
        self.assertRegex(node.version, r"^1\.1-[0-9a-f]{16}$")
        self.assertIs(self.t.open_read("/latest/README.txt", node.version), node)
        with self.assertRaises(tree.Conflict):
            self.t.open_read("/1.1/README.txt", self.t.lookup("/1.0/README.txt").version)
        self.assertIsNone(self.t.lookup("/1.1").version)

    def test_paging(self):
        t = parsed([(f"1:/d/f{i:02}", str(i)) for i in range(11)])
        seen, cursor, pages = [], None, 0
        while True:
            page, cursor = t.list_dir("/1/d", cursor, 3)
            self.assertLessEqual(len(page), 3)
            self.assertTrue(page, "never an empty page")
            seen += [name for name, _ in page]
            pages += 1
            if cursor is None:
                break
        self.assertEqual(seen, [f"f{i:02}" for i in range(11)])
        self.assertEqual(pages, 4)
        page, cursor = t.list_dir("/1/d", None, 11)
        self.assertEqual((len(page), cursor), (11, None))
        page, cursor = t.list_dir("/1/d", None, 0)
        self.assertEqual((len(page), cursor), (1, "f00"))


if __name__ == "__main__":
    unittest.main()

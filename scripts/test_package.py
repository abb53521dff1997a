"""Checks that scripts/package.py's check fails for the reasons it claims, on canned `readelf`
output (so no bad binary is needed), and that its zips keep bootstrap executable.

    python3 -m unittest discover -s scripts -p 'test_*.py'
"""
import os
import stat
import sys
import tempfile
import unittest
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import package  # noqa: E402

# Shaped like `readelf -V --wide` on libonnxruntime.so.1.31.1 from the PyPI wheel.
VERSIONS = """
Version needs section '.gnu.version_r' contains 3 entries:
  000000: Version: 1  File: libgcc_s.so.1  Cnt: 2
  0x0010:   Name: GCC_3.0  Flags: none  Version: 36
  0x0020:   Name: GCC_4.3.0  Flags: none  Version: 32
  0x0060: Version: 1  File: libstdc++.so.6  Cnt: 2
  0x0070:   Name: GLIBCXX_3.4.22  Flags: none  Version: 31
  0x0080:   Name: CXXABI_1.3.9  Flags: none  Version: 30
  0x00c0: Version: 1  File: libc.so.6  Cnt: 3
  0x00d0:   Name: GLIBC_2.28  Flags: none  Version: 29
  0x00e0:   Name: GLIBC_2.2.5  Flags: none  Version: 10
  0x00f0:   Name: GLIBC_2.17  Flags: none  Version: 9
"""

DYNAMIC = """
 0x0000000000000001 (NEEDED)             Shared library: [libstdc++.so.6]
 0x0000000000000001 (NEEDED)             Shared library: [libc.so.6]
 0x000000000000000e (SONAME)             Library soname: [libonnxruntime.so.1]
"""


class Parsing(unittest.TestCase):
    def test_the_newest_version_of_each_family_is_found(self):
        self.assertEqual(
            package.required_versions(VERSIONS),
            {"GCC": (4, 3, 0), "GLIBCXX": (3, 4, 22), "CXXABI": (1, 3, 9), "GLIBC": (2, 28)},
        )

    def test_versions_compare_numerically_not_as_text(self):
        text = "Name: GLIBC_2.9  Flags: none\n  Name: GLIBC_2.14  Flags: none\n"
        self.assertEqual(package.required_versions(text), {"GLIBC": (2, 14)})

    def test_needed_libraries_are_read_but_not_the_soname(self):
        self.assertEqual(package.needed_libraries(DYNAMIC), ["libstdc++.so.6", "libc.so.6"])


class Verdicts(unittest.TestCase):
    def test_the_wheel_library_passes(self):
        versions = package.required_versions(VERSIONS)
        needed = package.needed_libraries(DYNAMIC)
        self.assertEqual(package.problems("lib", versions, needed, set()), [])

    def test_a_glibc_newer_than_al2023_fails(self):
        found = package.problems("bootstrap", {"GLIBC": (2, 35)}, [], set())
        self.assertEqual(len(found), 1)
        self.assertIn("GLIBC_2.35; AL2023 provides GLIBC_2.34", found[0])
        self.assertEqual(package.problems("bootstrap", {"GLIBC": (2, 34)}, [], set()), [])

    def test_a_libstdcxx_newer_than_gcc_11_fails(self):
        found = package.problems("lib", {"GLIBCXX": (3, 4, 30)}, [], set())
        self.assertIn("GLIBCXX_3.4.30", found[0])

    def test_a_library_outside_the_package_and_base_image_fails_unless_shipped(self):
        found = package.problems("bootstrap", {}, ["libssl.so.3", "libc.so.6"], set())
        self.assertEqual(len(found), 1)
        self.assertIn("libssl.so.3, which is neither in the package", found[0])
        self.assertEqual(package.problems("bootstrap", {}, ["libssl.so.3"], {"libssl.so.3"}), [])


class Zips(unittest.TestCase):
    def test_zips_keep_modes_and_flatten_to_the_root(self):
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "artifacts"
            src.mkdir()
            (src / "bootstrap").write_bytes(b"#!/bin/sh\n")
            os.chmod(src / "bootstrap", 0o755)
            (src / "data.txt").write_text("x")
            out = Path(tmp) / "dist" / "f.zip"
            package.make_zip(src, out)
            with zipfile.ZipFile(out) as z:
                modes = {i.filename: stat.S_IMODE(i.external_attr >> 16) for i in z.infolist()}
            self.assertEqual(modes["bootstrap"], 0o755)
            self.assertEqual(set(modes), {"bootstrap", "data.txt"})
            # A zip whose bootstrap is there and executable, with no ELF files, passes.
            report, found = package.check(out)
            self.assertEqual(found, [])

    def test_a_package_without_an_executable_bootstrap_fails(self):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            self.assertIn("no bootstrap at the package root", package.check_dir(root)[1])
            (root / "bootstrap").write_bytes(b"x")
            os.chmod(root / "bootstrap", 0o644)
            self.assertIn("bootstrap is not executable", package.check_dir(root)[1])


if __name__ == "__main__":
    unittest.main()

"""Checks that scripts/package.py's check fails for the reasons it claims: the verdicts on given
facts, and the ELF reading on small real programs that zig (the Lambda build's own compiler,
from the venv) builds for x86-64 Linux against glibc 2.28. Also that its zips keep bootstrap
executable.

    .venv/bin/python3 -m unittest discover -s scripts -p 'test_*.py'    # make check-package
"""
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import unittest
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import package  # noqa: E402

# What `read_elf` finds in libonnxruntime.so.1.31.1 from the PyPI wheel.
WHEEL_LIBRARY = package.Elf(
    machine="EM_X86_64",
    bits=64,
    executable=False,
    needed=["libstdc++.so.6", "libc.so.6"],
    versions={"GCC": (4, 3, 0), "GLIBCXX": (3, 4, 22), "CXXABI": (1, 3, 9), "GLIBC": (2, 28)},
)


def elf(**facts):
    """An x86-64 executable needing nothing, with `facts` changed."""
    return package.Elf(**{"machine": "EM_X86_64", "bits": 64, "executable": True, **facts})


class Versions(unittest.TestCase):
    def test_the_newest_version_of_each_family_is_found(self):
        names = ["GCC_3.0", "GCC_4.3.0", "GLIBCXX_3.4.22", "CXXABI_1.3.9", "GLIBC_2.28",
                 "GLIBC_2.2.5", "GLIBC_2.17", "GLIBC_PRIVATE", "OPENSSL_3.0.0"]
        self.assertEqual(
            package.newest_versions(names),
            {"GCC": (4, 3, 0), "GLIBCXX": (3, 4, 22), "CXXABI": (1, 3, 9), "GLIBC": (2, 28)},
        )

    def test_versions_compare_numerically_not_as_text(self):
        self.assertEqual(package.newest_versions(["GLIBC_2.9", "GLIBC_2.14"]), {"GLIBC": (2, 14)})

    def test_the_glibc_limit_can_only_be_tightened(self):
        self.assertEqual(package.limits("2.28")["GLIBC"][0], (2, 28))
        self.assertEqual(package.limits()["GLIBC"][0], (2, 34))
        with self.assertRaises(ValueError):
            package.limits("2.35")


class Verdicts(unittest.TestCase):
    def test_the_wheel_library_passes_even_with_the_build_targets_glibc(self):
        self.assertEqual(package.problems("lib", WHEEL_LIBRARY, set()), [])
        self.assertEqual(package.problems("lib", WHEEL_LIBRARY, set(), package.limits("2.28")), [])

    def test_a_glibc_newer_than_al2023_fails(self):
        found = package.problems("bootstrap", elf(versions={"GLIBC": (2, 35)}), set())
        self.assertEqual(found, [
            "bootstrap needs GLIBC_2.35; allowed up to GLIBC_2.34 (AL2023 provides that)"
        ])
        self.assertEqual(package.problems("bootstrap", elf(versions={"GLIBC": (2, 34)}), set()), [])

    def test_a_glibc_newer_than_the_build_targets_fails_though_al2023_has_it(self):
        # What a native build on Debian 12 gives: fine for AL2023, but not the zig build.
        found = package.problems(
            "bootstrap", elf(versions={"GLIBC": (2, 34)}), set(), package.limits("2.28")
        )
        self.assertEqual(len(found), 1)
        self.assertIn(
            "needs GLIBC_2.34; allowed up to GLIBC_2.28 (the Lambda build targets it", found[0]
        )

    def test_a_libstdcxx_newer_than_gcc_11_fails(self):
        found = package.problems("lib", elf(versions={"GLIBCXX": (3, 4, 30)}), set())
        self.assertEqual(len(found), 1)
        self.assertIn("GLIBCXX_3.4.30", found[0])

    def test_a_library_outside_the_package_and_base_image_fails_unless_shipped(self):
        needs_ssl = elf(needed=["libssl.so.3", "libc.so.6"])
        found = package.problems("bootstrap", needs_ssl, set())
        self.assertEqual(len(found), 1)
        self.assertIn("libssl.so.3, which is neither in the package", found[0])
        self.assertEqual(package.problems("bootstrap", needs_ssl, {"libssl.so.3"}), [])

    def test_another_machine_fails(self):
        found = package.problems("bootstrap", elf(machine="EM_AARCH64"), set())
        self.assertEqual(
            found, ["bootstrap is built for EM_AARCH64 (64-bit); the function runs on x86-64"]
        )


def zig_cc(out, source, *args):
    """Compiles C `source` to `out` with the venv's zig, for x86-64 Linux with glibc 2.28."""
    src = Path(out).with_suffix(".c")
    src.write_text(source)
    subprocess.run(
        [sys.executable, "-m", "ziglang", "cc", "-target", "x86_64-linux-gnu.2.28", "-o", str(out),
         str(src), *args],
        check=True,
    )
    src.unlink()


class RealElfFiles(unittest.TestCase):
    """`read_elf` on programs zig builds here: the reading must find what the check judges, or
    a broken reader would pass every package."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.dir = Path(cls.tmp.name)
        # reallocarray came with glibc 2.26; puts has been there since 2.2.5.
        zig_cc(cls.dir / "reallocates", "#include <stdlib.h>\n"
               "int main(void) { free(reallocarray(NULL, 4, 4)); return 0; }\n")
        zig_cc(cls.dir / "libextra.so", "int extra(void) { return 1; }\n",
               "-shared", "-fPIC", "-Wl,-soname,libextra.so")
        zig_cc(cls.dir / "uses_extra", "int extra(void);\nint main(void) { return extra(); }\n",
               f"-L{cls.dir}", "-lextra")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def package_of(self, *names):
        """A fresh package directory holding copies of the built `names` (first as bootstrap)."""
        root = Path(tempfile.mkdtemp(dir=self.dir))
        shutil.copy(self.dir / names[0], root / "bootstrap")
        for name in names[1:]:
            shutil.copy(self.dir / name, root / name)
        return root

    def test_needed_libraries_and_the_newest_glibc_are_read(self):
        found = package.read_elf(self.dir / "reallocates")
        self.assertEqual(found.machine, "EM_X86_64")
        self.assertTrue(found.executable)
        self.assertEqual(found.needed, ["libc.so.6"])
        self.assertEqual(found.versions, {"GLIBC": (2, 26)})
        self.assertFalse(package.read_elf(self.dir / "libextra.so").executable)

    def test_a_program_needing_a_newer_glibc_than_allowed_fails(self):
        root = self.package_of("reallocates")
        self.assertEqual(package.check_dir(root, package.limits("2.28"))[1], [])
        found = package.check_dir(root, package.limits("2.25"))[1]
        self.assertEqual(found, [
            "bootstrap needs GLIBC_2.26; allowed up to GLIBC_2.25 (the Lambda build targets it; "
            "AL2023 has 2.34)"
        ])

    def test_a_library_the_package_lacks_fails_and_passes_once_shipped(self):
        found = package.check_dir(self.package_of("uses_extra"))[1]
        self.assertEqual(found, [
            "bootstrap needs libextra.so, which is neither in the package nor in AL2023's base image"
        ])
        self.assertEqual(package.check_dir(self.package_of("uses_extra", "libextra.so"))[1], [])

    def test_a_program_for_another_machine_fails(self):
        root = self.package_of("reallocates")
        with open(root / "bootstrap", "r+b") as f:
            f.seek(18)  # e_machine, little-endian
            f.write((183).to_bytes(2, "little"))  # EM_AARCH64
        self.assertEqual(package.check_dir(root)[1], [
            "bootstrap is built for EM_AARCH64 (64-bit); the function runs on x86-64"
        ])

    def test_a_library_as_bootstrap_fails(self):
        found = package.check_dir(self.package_of("libextra.so"))[1]
        self.assertEqual(len(found), 1)
        self.assertIn("bootstrap is not a Linux executable", found[0])


class Zips(unittest.TestCase):
    def test_zips_keep_modes_and_flatten_to_the_root(self):
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "artifacts"
            (src / "sub").mkdir(parents=True)
            (src / "bootstrap").write_bytes(b"#!/bin/sh\n")
            os.chmod(src / "bootstrap", 0o755)
            (src / "sub" / "data.txt").write_text("x")
            os.chmod(src / "sub" / "data.txt", 0o644)
            out = Path(tmp) / "dist" / "f.zip"
            package.make_zip(src, out)
            with zipfile.ZipFile(out) as z:
                modes = {i.filename: stat.S_IMODE(i.external_attr >> 16) for i in z.infolist()}
            self.assertEqual(modes, {"bootstrap": 0o755, "sub/data.txt": 0o644})
            package.extract(out, Path(tmp) / "unpacked")
            unpacked = os.stat(Path(tmp) / "unpacked" / "bootstrap")
            self.assertEqual(stat.S_IMODE(unpacked.st_mode), 0o755)

    def test_a_package_without_an_executable_linux_bootstrap_fails(self):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            self.assertIn("no bootstrap at the package root", package.check_dir(root)[1])
            (root / "bootstrap").write_bytes(b"x")
            os.chmod(root / "bootstrap", 0o644)
            self.assertIn("bootstrap is not executable", package.check_dir(root)[1])
            # Executable, but not an ELF program: what a build on macOS (Mach-O) would give.
            (root / "bootstrap").write_bytes(b"\xcf\xfa\xed\xfe" + bytes(60))
            os.chmod(root / "bootstrap", 0o755)
            found = package.check_dir(root)[1]
            self.assertEqual(len(found), 1)
            self.assertIn("bootstrap is not a Linux executable", found[0])


if __name__ == "__main__":
    unittest.main()

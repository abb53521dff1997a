#!/usr/bin/env python3
"""The deployable zip and the check that it runs on Lambda's provided.al2023 (Amazon Linux 2023).

    python3 scripts/package.py zip DIR OUT.zip    # DIR's files at the zip root, modes kept
    python3 scripts/package.py unzip ZIP DIR      # as Lambda unpacks it, modes kept
    python3 scripts/package.py check PATH         # PATH: a zip or a directory of artifacts

`check` reads every ELF file with binutils' `readelf` and fails when one
  - needs a symbol version newer than AL2023 provides (glibc 2.34, libstdc++ of GCC 11), or
  - needs a shared library that is neither in the package nor in AL2023's base image,
and when `bootstrap` is missing or not executable. Only the Python standard library and binutils
are used: no `zip` command needed.
"""
import os
import re
import stat
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

# Newest symbol versions AL2023 is guaranteed to provide: glibc 2.34, and GCC 11's runtime
# (libstdc++ GLIBCXX_3.4.29 / CXXABI_1.3.13, libgcc_s GCC_11.0). AL2023 has since moved its
# libstdc++ to a newer GCC, but AL2023 as released is the floor we promise.
MAX_VERSIONS = {
    "GLIBC": (2, 34),
    "GLIBCXX": (3, 4, 29),
    "CXXABI": (1, 3, 13),
    "GCC": (11, 0),
}

# Shared libraries provided.al2023 (the AL2023 minimal image) has in /lib64: glibc's own, and
# the GCC runtime (libgcc, libstdc++, which its package manager needs). Anything else must ship.
BASE_IMAGE_LIBRARIES = {
    "ld-linux-x86-64.so.2",
    "libc.so.6",
    "libm.so.6",
    "libdl.so.2",
    "libpthread.so.0",
    "librt.so.1",
    "libutil.so.1",
    "libresolv.so.2",
    "libgcc_s.so.1",
    "libstdc++.so.6",
}

# Lambda's limits for a zip deployment package.
MAX_ZIP_BYTES = 50 * 1024 * 1024
MAX_UNZIPPED_BYTES = 250 * 1024 * 1024

VERSION_NEED = re.compile(r"Name:\s+(GLIBC|GLIBCXX|CXXABI|GCC)_([0-9][0-9.]*)\b")
NEEDED = re.compile(r"\(NEEDED\)\s+Shared library:\s+\[([^\]]+)\]")


def version_tuple(text):
    return tuple(int(part) for part in text.split(".") if part)


def required_versions(readelf_versions):
    """{"GLIBC": (2, 34), …}: the newest version of each family in `readelf -V` output."""
    newest = {}
    for family, version in VERSION_NEED.findall(readelf_versions):
        v = version_tuple(version)
        if v > newest.get(family, ()):
            newest[family] = v
    return newest


def needed_libraries(readelf_dynamic):
    """The NEEDED entries of `readelf -d` output."""
    return NEEDED.findall(readelf_dynamic)


def problems(name, versions, needed, shipped):
    """Why `name` would not load on provided.al2023 (empty when it would)."""
    found = []
    for family, version in sorted(versions.items()):
        limit = MAX_VERSIONS[family]
        if version > limit:
            found.append(
                f"{name} needs {family}_{'.'.join(map(str, version))}; "
                f"AL2023 provides {family}_{'.'.join(map(str, limit))}"
            )
    for library in needed:
        if library not in BASE_IMAGE_LIBRARIES and library not in shipped:
            found.append(
                f"{name} needs {library}, which is neither in the package nor in AL2023's base image"
            )
    return found


def readelf(flag, path):
    return subprocess.run(
        ["readelf", flag, "--wide", str(path)], check=True, capture_output=True, text=True
    ).stdout


def is_elf(path):
    with open(path, "rb") as f:
        return f.read(4) == b"\x7fELF"


def check_dir(root):
    """Checks unpacked artifacts; returns (report lines, problems)."""
    root = Path(root)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    shipped = {p.name for p in files}
    report, found = [], []
    bootstrap = root / "bootstrap"
    if not bootstrap.is_file():
        found.append("no bootstrap at the package root")
    elif not os.stat(bootstrap).st_mode & stat.S_IXUSR:
        found.append("bootstrap is not executable")
    for path in files:
        if not is_elf(path):
            continue
        versions = required_versions(readelf("-V", path))
        needed = needed_libraries(readelf("-d", path))
        newest = ", ".join(
            f"{family}_{'.'.join(map(str, v))}" for family, v in sorted(versions.items())
        )
        report.append(
            f"{path.relative_to(root)}: {path.stat().st_size / 1e6:.1f} MB; "
            f"needs {', '.join(needed) or 'no shared libraries'}; newest versions {newest or 'none'}"
        )
        found += problems(str(path.relative_to(root)), versions, needed, shipped)
    unzipped = sum(p.stat().st_size for p in files)
    report.append(f"unzipped: {unzipped / 1e6:.1f} MB (Lambda's limit: 250 MB)")
    if unzipped > MAX_UNZIPPED_BYTES:
        found.append(f"unzipped size {unzipped} bytes is over Lambda's {MAX_UNZIPPED_BYTES}")
    return report, found


def extract(zip_path, into):
    """Unpacks like Lambda does: Unix modes kept (Python's zipfile drops them)."""
    with zipfile.ZipFile(zip_path) as z:
        for info in z.infolist():
            z.extract(info, into)
            mode = info.external_attr >> 16
            if mode:
                os.chmod(Path(into) / info.filename, stat.S_IMODE(mode))


def check(path):
    path = Path(path)
    if path.is_dir():
        return check_dir(path)
    size = path.stat().st_size
    with tempfile.TemporaryDirectory() as tmp:
        extract(path, tmp)
        report, found = check_dir(tmp)
    report.insert(0, f"{path.name}: {size / 1e6:.1f} MB zipped (Lambda's direct-upload limit: 50 MB)")
    if size > MAX_ZIP_BYTES:
        found.append(f"zip size {size} bytes is over Lambda's direct-upload limit {MAX_ZIP_BYTES}")
    return report, found


def make_zip(source, out):
    """Every file of `source` at the zip root (relative paths), with its Unix mode."""
    source, out = Path(source), Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(str(path.relative_to(source)), date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = (stat.S_IFREG | stat.S_IMODE(path.stat().st_mode)) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(path, "rb") as f:
                z.writestr(info, f.read())
    tmp.replace(out)


def main(argv):
    if len(argv) == 3 and argv[0] == "zip":
        make_zip(argv[1], argv[2])
        print(f"wrote {argv[2]} ({Path(argv[2]).stat().st_size / 1e6:.1f} MB)")
        return 0
    if len(argv) == 3 and argv[0] == "unzip":
        extract(argv[1], argv[2])
        return 0
    if len(argv) == 2 and argv[0] == "check":
        report, found = check(argv[1])
        for line in report:
            print(line)
        if found:
            for line in found:
                print(f"FAIL: {line}", file=sys.stderr)
            return 1
        print("OK: runs on provided.al2023 (glibc <= 2.34, only base-image libraries outside the package)")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/env python3
"""The deployable zip and the check that it runs on Lambda's provided.al2023 (Amazon Linux 2023).

    package.py zip DIR OUT.zip                # DIR's files at the zip root, modes kept
    package.py unzip ZIP DIR                  # as Lambda unpacks it, modes kept
    package.py check [--glibc 2.28] PATH      # PATH: a zip or a directory of artifacts

`check` reads every ELF file (with pyelftools, so it works on any host: macOS has no readelf)
and fails when
  - `bootstrap` is missing, not executable, or not an x86-64 Linux executable (a build for the
    host, e.g. a macOS binary, is not one),
  - an ELF file is built for another machine than x86-64 (template.yaml: Architectures x86_64),
  - one needs a symbol version newer than AL2023 provides (glibc 2.34, libstdc++ of GCC 11), or
    newer than `--glibc` (the glibc the Lambda build targets: a newer need means the binary did
    not come from that build),
  - one needs a shared library that is neither in the package nor in AL2023's base image,
  - the package is over Lambda's size limits.
"""
import argparse
import os
import re
import stat
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
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

VERSION_NAME = re.compile(r"^(GLIBC|GLIBCXX|CXXABI|GCC)_([0-9][0-9.]*)$")


@dataclass
class Elf:
    """What decides whether an ELF file loads on provided.al2023."""

    machine: str  # pyelftools' e_machine name: "EM_X86_64", "EM_AARCH64", …
    bits: int
    executable: bool  # ET_EXEC, or ET_DYN with an interpreter (a position-independent program)
    needed: list = field(default_factory=list)  # DT_NEEDED library names
    versions: dict = field(default_factory=dict)  # {"GLIBC": (2, 28), …}: newest per family


def version_tuple(text):
    return tuple(int(part) for part in text.split(".") if part)


def dotted(version):
    return ".".join(map(str, version))


def newest_versions(names):
    """{"GLIBC": (2, 34), …}: the newest version of each family among needed version names.
    Names of other families (a shipped library's own, GLIBC_PRIVATE) are not limited here."""
    newest = {}
    for name in names:
        match = VERSION_NAME.match(name)
        if match:
            family, version = match[1], version_tuple(match[2])
            if version > newest.get(family, ()):
                newest[family] = version
    return newest


def read_elf(path):
    """The ELF facts of `path`, or None when it is not an ELF file."""
    # Imported here so that `zip` and `unzip` need nothing outside the standard library.
    from elftools.elf.dynamic import DynamicSection
    from elftools.elf.elffile import ELFFile
    from elftools.elf.gnuversions import GNUVerNeedSection

    with open(path, "rb") as f:
        if f.read(4) != b"\x7fELF":
            return None
        f.seek(0)
        elf = ELFFile(f)
        needed, names = [], []
        for section in elf.iter_sections():
            if isinstance(section, DynamicSection):
                needed += [tag.needed for tag in section.iter_tags("DT_NEEDED")]
            elif isinstance(section, GNUVerNeedSection):
                for _, auxiliaries in section.iter_versions():
                    names += [aux.name for aux in auxiliaries]
        has_interpreter = any(s["p_type"] == "PT_INTERP" for s in elf.iter_segments())
        return Elf(
            machine=elf["e_machine"],
            bits=elf.elfclass,
            executable=elf["e_type"] == "ET_EXEC" or has_interpreter,
            needed=needed,
            versions=newest_versions(names),
        )


def limits(glibc=None):
    """{family: (newest allowed version, why)}; `glibc` ("2.28") tightens AL2023's glibc."""
    found = {family: (v, "AL2023 provides that") for family, v in MAX_VERSIONS.items()}
    al2023 = dotted(MAX_VERSIONS["GLIBC"])
    if glibc is not None:
        target = version_tuple(glibc)
        if target > MAX_VERSIONS["GLIBC"]:
            raise ValueError(f"--glibc {glibc} is newer than AL2023's {al2023}")
        found["GLIBC"] = (target, f"the Lambda build targets it; AL2023 has {al2023}")
    return found


def problems(name, elf, shipped, allowed=None):
    """Why ELF file `name` would not load on provided.al2023 (empty when it would)."""
    allowed = allowed or limits()
    if elf.machine != "EM_X86_64" or elf.bits != 64:
        return [f"{name} is built for {elf.machine} ({elf.bits}-bit); the function runs on x86-64"]
    found = []
    for family, version in sorted(elf.versions.items()):
        limit, why = allowed[family]
        if version > limit:
            found.append(
                f"{name} needs {family}_{dotted(version)}; "
                f"allowed up to {family}_{dotted(limit)} ({why})"
            )
    for library in elf.needed:
        if library not in BASE_IMAGE_LIBRARIES and library not in shipped:
            found.append(
                f"{name} needs {library}, "
                "which is neither in the package nor in AL2023's base image"
            )
    return found


def check_dir(root, allowed=None):
    """Checks unpacked artifacts; returns (report lines, problems)."""
    root = Path(root)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    shipped = {p.name for p in files}
    report, found = [], []
    elves = {path: read_elf(path) for path in files}
    bootstrap = root / "bootstrap"
    if not bootstrap.is_file():
        found.append("no bootstrap at the package root")
    elif not os.stat(bootstrap).st_mode & stat.S_IXUSR:
        found.append("bootstrap is not executable")
    elif elves[bootstrap] is None or not elves[bootstrap].executable:
        found.append(
            "bootstrap is not a Linux executable (ELF program): a build for this host (e.g. a "
            "macOS binary) does not run on Lambda; build it with `make lambda`"
        )
    for path, elf in elves.items():
        if elf is None:
            continue
        newest = ", ".join(f"{family}_{dotted(v)}" for family, v in sorted(elf.versions.items()))
        report.append(
            f"{path.relative_to(root)}: {path.stat().st_size / 1e6:.1f} MB; "
            f"needs {', '.join(elf.needed) or 'no shared libraries'}; "
            f"newest versions {newest or 'none'}"
        )
        found += problems(str(path.relative_to(root)), elf, shipped, allowed)
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


def check(path, allowed=None):
    path = Path(path)
    if path.is_dir():
        return check_dir(path, allowed)
    size = path.stat().st_size
    with tempfile.TemporaryDirectory() as tmp:
        extract(path, tmp)
        report, found = check_dir(tmp, allowed)
    report.insert(
        0, f"{path.name}: {size / 1e6:.1f} MB zipped (Lambda's direct-upload limit: 50 MB)"
    )
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    zip_command = commands.add_parser("zip", help="DIR's files at the zip root, modes kept")
    zip_command.add_argument("source")
    zip_command.add_argument("out")
    unzip_command = commands.add_parser("unzip", help="as Lambda unpacks it, modes kept")
    unzip_command.add_argument("zip")
    unzip_command.add_argument("into")
    check_command = commands.add_parser("check", help="a zip or a directory of artifacts")
    check_command.add_argument(
        "--glibc", help="newest glibc allowed, e.g. 2.28 (default: AL2023's 2.34)"
    )
    check_command.add_argument("path")
    args = parser.parse_args(argv)

    if args.command == "zip":
        make_zip(args.source, args.out)
        print(f"wrote {args.out} ({Path(args.out).stat().st_size / 1e6:.1f} MB)")
        return 0
    if args.command == "unzip":
        extract(args.zip, args.into)
        return 0
    try:
        allowed = limits(args.glibc)
    except ValueError as error:
        parser.error(str(error))
    report, found = check(args.path, allowed)
    for line in report:
        print(line)
    if found:
        for line in found:
            print(f"FAIL: {line}", file=sys.stderr)
        return 1
    glibc = dotted(allowed["GLIBC"][0])
    print(
        f"OK: runs on provided.al2023 (x86-64, glibc <= {glibc}, "
        "only base-image libraries outside the package)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

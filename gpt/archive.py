"""Zip archives in and out, safely: uploads of corpora and checkpoints, downloads of checkpoints.

`safe_extract` checks the whole archive before it writes anything, and refuses, naming the entry:
- entries that would land outside the target (`../x`, absolute paths, links);
- two entries with the same name, or a file and a folder with the same name (one would silently replace the other);
- names longer than 255 characters per part or nested deeper than 32 folders (the disk would refuse them);
- encrypted entries and compression methods Python cannot read;
- members whose data is corrupt (bad CRC, broken deflate stream): those are found while extracting, and everything
  written so far is removed.
It stops at a total uncompressed size and a file count, so a zip bomb cannot fill the disk; a `Budget` shared by
several archives makes the size a total across all of them.
"""

from __future__ import annotations

import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from gpt.errors import UserInputError

MAX_PART = 255  # characters in one file or folder name (most file systems' limit)
MAX_DEPTH = 32  # folders an entry may be nested in
READABLE = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}


@dataclass
class Budget:
    """Bytes that may still be written, shared by every archive of one upload."""

    max_bytes: int
    used: int = 0

    def take(self, n: int, archive: str) -> None:
        self.used += n
        if self.used > self.max_bytes:
            raise UserInputError(
                f"{archive} expands past the {self.max_bytes / 1e6:.0f} MB limit (all archives of this upload "
                "together); upload less text"
            )


def _entry_name(info: zipfile.ZipInfo, archive: str) -> PurePosixPath:
    name = PurePosixPath(info.filename.replace("\\", "/"))
    shown = info.filename[:80]
    if name.is_absolute() or ".." in name.parts or stat.S_ISLNK(info.external_attr >> 16) or "\x00" in info.filename:
        raise UserInputError(f"{archive} has an unsafe entry {shown!r}; nothing was extracted")
    if any(len(part) > MAX_PART for part in name.parts) or len(name.parts) > MAX_DEPTH + 1:
        raise UserInputError(
            f"{archive} has an entry with a name too long or nested too deep ({shown!r}…); nothing was extracted"
        )
    if info.flag_bits & 0x1:
        raise UserInputError(f"{archive}: the entry {shown!r} is encrypted; upload an archive without a password")
    if info.compress_type not in READABLE:
        raise UserInputError(
            f"{archive}: the entry {shown!r} uses a compression method this server cannot read "
            f"(method {info.compress_type}); re-create the zip with ordinary (deflate) compression"
        )
    return name


def check_entries(zf: zipfile.ZipFile, archive: str, max_files: int) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """The archive's files with their safe relative names; raise UserInputError on anything unsafe or ambiguous."""
    entries = [(i, _entry_name(i, archive)) for i in zf.infolist()]
    files = [(i, n) for i, n in entries if not i.is_dir()]
    if len(files) > max_files:
        raise UserInputError(f"{archive} has {len(files)} files; at most {max_files} are allowed")
    seen: set[str] = set()
    for _, name in files:
        key = name.as_posix().casefold()  # case-insensitive disks would merge "A.txt" and "a.txt" too
        if key in seen:
            raise UserInputError(f"{archive} has two entries named {name.as_posix()[:80]!r}; keep one of them")
        seen.add(key)
    folders = {p.as_posix().casefold() for _, n in entries for p in n.parents if p.parts}
    for _, name in files:
        if name.as_posix().casefold() in folders:
            raise UserInputError(f"{archive} has {name.as_posix()[:80]!r} both as a file and as a folder")
    return files


def safe_extract(archive: str | Path, dest: str | Path, max_bytes: int | Budget, max_files: int = 1000) -> list[Path]:
    """Extract regular files of `archive` under `dest`; raise UserInputError on anything unsafe, corrupt or too big.

    `max_bytes`: a cap for this archive, or a `Budget` shared with other archives of the same upload."""
    dest = Path(dest).resolve()
    budget = max_bytes if isinstance(max_bytes, Budget) else Budget(max_bytes)
    label = Path(archive).name[:80]
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise UserInputError(f"{label} is not a valid zip archive ({e})") from None
    written: list[Path] = []
    with zf:
        files = check_entries(zf, label, max_files)
        try:
            for info, name in files:
                target = dest.joinpath(*name.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                written.append(target)
                with zf.open(info) as src, open(target, "wb") as out:
                    # Count real bytes as they come out: the sizes in the header can lie.
                    while block := src.read(1 << 20):
                        budget.take(len(block), label)
                        out.write(block)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, OSError) as e:
            _remove(written)
            what = "is corrupt" if not isinstance(e, OSError) else "could not be written"
            raise UserInputError(f"{label}: the entry {info.filename[:80]!r} {what} ({type(e).__name__})") from None
        except UserInputError:
            _remove(written)
            raise
    return written


def _remove(files: list[Path]) -> None:
    for f in files:
        f.unlink(missing_ok=True)


def zip_dir(src: str | Path, archive: str | Path, replace: dict[str, bytes] | None = None) -> Path:
    """Write the files of `src` (one level, as a checkpoint is) into a zip under a top folder named like `src`;
    a file named in `replace` is written with those bytes instead of its own."""
    src, archive = Path(src), Path(archive)
    archive.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(src.iterdir()):
            if replace and f.name in replace:
                zf.writestr(f"{src.name}/{f.name}", replace[f.name])
            elif f.is_file():
                zf.write(f, f"{src.name}/{f.name}")
    return archive

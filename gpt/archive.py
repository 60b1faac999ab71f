"""Zip archives in and out, safely: uploads of corpora and checkpoints, downloads of checkpoints.

`safe_extract` refuses entries that would land outside the target (`../x`, absolute paths, links), and
stops at a total uncompressed size and a file count, so a zip bomb cannot fill the disk.
"""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path, PurePosixPath

from gpt.errors import UserInputError


def safe_extract(archive: str | Path, dest: str | Path, max_bytes: int, max_files: int = 1000) -> list[Path]:
    """Extract regular files of `archive` under `dest`; raise UserInputError on anything unsafe or too big."""
    dest = Path(dest).resolve()
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as e:
        raise UserInputError(f"{Path(archive).name} is not a valid zip archive ({e})") from None
    written: list[Path] = []
    total = 0
    with zf:
        entries = [i for i in zf.infolist() if not i.is_dir()]
        if len(entries) > max_files:
            raise UserInputError(f"{Path(archive).name} has {len(entries)} files; at most {max_files} are allowed")
        for info in entries:
            name = PurePosixPath(info.filename.replace("\\", "/"))
            mode = info.external_attr >> 16
            if name.is_absolute() or ".." in name.parts or stat.S_ISLNK(mode):
                raise UserInputError(
                    f"{Path(archive).name} has an unsafe entry {info.filename!r}; nothing was extracted"
                )
            target = (dest / name).resolve()
            if dest not in target.parents:
                raise UserInputError(
                    f"{Path(archive).name} has an unsafe entry {info.filename!r}; nothing was extracted"
                )
        for info in entries:
            target = dest / PurePosixPath(info.filename.replace("\\", "/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                # Count real bytes as they come out: the sizes in the header can lie.
                while block := src.read(1 << 20):
                    total += len(block)
                    if total > max_bytes:
                        out.close()
                        for f in [*written, target]:
                            f.unlink(missing_ok=True)
                        raise UserInputError(
                            f"{Path(archive).name} expands past the {max_bytes / 1e6:.0f} MB limit; upload less text"
                        )
                    out.write(block)
            written.append(target)
    return written


def zip_dir(src: str | Path, archive: str | Path) -> Path:
    """Write the files of `src` (one level, as a checkpoint is) into a zip under a top folder named like `src`."""
    src, archive = Path(src), Path(archive)
    archive.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(src.iterdir()):
            if f.is_file():
                zf.write(f, f"{src.name}/{f.name}")
    return archive

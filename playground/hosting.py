"""Many strangers, one server: whose runs are whose, the names visitors see instead of paths, the storage quota.

Locally (`python app.py`) there is one user, who sees the whole runs directory. With `GPT_PLAYGROUND_PRIVATE` on
(the default when `SPACE_ID` is set) each visitor has a home folder, `users/<owner>/`, and sees only it plus the
shared folders: `pretrained/` (GPT-2 imports) and `published/` (what the server's owner puts there). The owner is
the Hugging Face account of a signed-in visitor (their runs survive the visit), else the browser session.

Checkpoints travel between the page and the server as *names* relative to what the visitor sees ("run-…/latest",
"pretrained/gpt2"): a name never reveals a server path, and every name that comes back is resolved here and
refused unless it is the visitor's own or shared. Handlers get the visitor from Gradio's injected request:

    def handler(..., request: gr.Request, profile: gr.OAuthProfile | None) -> ...:
        me = visitor(request, profile)
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import gradio as gr

from gpt import checkpoint as ckpt
from gpt.errors import UserInputError
from gpt.paths import cache_dir
from playground import jobs
from playground.inputs import text
from playground.settings import LIMITS, PRIVATE, runs_root

SHARED = ("pretrained", "published")  # folders of the runs directory every visitor sees
USERS = "users"
MAX_NAME = 300  # characters: a checkpoint name is a few short path parts


@dataclass(frozen=True)
class Visitor:
    """Who is asking; `owner` None is the local single user, who sees everything under the runs directory."""

    owner: str | None

    @property
    def home(self) -> Path:
        """Where this visitor's runs and uploads go."""
        root = runs_root()
        return root if self.owner is None else root / USERS / self.owner

    def name(self, path: str | Path) -> str:
        """What the page shows for a checkpoint or run directory: its path relative to what this visitor sees."""
        p, root = Path(path).resolve(), runs_root()
        base = root if self.owner is None or not p.is_relative_to(self.home) else self.home
        return p.relative_to(base).as_posix() if p.is_relative_to(base) else p.name

    def resolve(self, name: str | None) -> Path:
        """The directory a name stands for; refused unless it is this visitor's own or shared."""
        name = text(name, "checkpoint name", MAX_NAME)
        if not name:
            raise UserInputError("choose a checkpoint first (train one in the Train tab, or upload one)")
        if "\x00" in name:
            raise UserInputError("that is not a checkpoint name; pick one from the list")
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if not parts or parts[0] == "/" or ".." in parts or re.match(r"^[A-Za-z]:", parts[0]):
            raise UserInputError(f"{name!r} is not one of your checkpoints; pick one from the list")
        root = runs_root()
        base = root if self.owner is None or parts[0] in SHARED else self.home
        path = base.joinpath(*parts)
        # Links could point anywhere: what counts is where the path really is.
        real = path.resolve()
        if not real.is_relative_to(base.resolve()) or not real.is_dir():
            raise UserInputError(f"{name!r} is not one of your checkpoints; pick one from the list")
        return path

    def roots(self) -> list[Path]:
        """The folders this visitor sees: the whole runs directory locally; else their home and the shared ones."""
        return [self.home] if self.owner is None else [self.home, *(runs_root() / s for s in SHARED)]

    def runs(self) -> list[str]:
        """Names of the runs this visitor may compare (those with a metrics log, training ones included), newest
        first."""
        logs = [f for root in self.roots() if root.is_dir() for f in root.glob("**/metrics.jsonl")]
        return [self.name(f.parent) for f in sorted(logs, key=lambda f: f.stat().st_mtime, reverse=True)]

    def checkpoints(self) -> list[dict[str, Any]]:
        """The complete checkpoints this visitor may use, newest first, each with its `name`."""
        rows = [r for root in self.roots() if root.is_dir() for r in ckpt.list_checkpoints(root)]
        for r in rows:
            r["name"] = self.name(r["path"])
        return sorted(rows, key=lambda r: r["time"], reverse=True)


def visitor(request: gr.Request | None, profile: gr.OAuthProfile | None = None) -> Visitor:
    """The visitor behind a request: their Hugging Face account when signed in, else their browser session."""
    if not PRIVATE:
        return Visitor(None)
    if profile is not None and getattr(profile, "username", None):
        key = f"hf:{profile.username}"
    elif request is not None and request.session_hash:
        key = f"session:{request.session_hash}"
    else:
        raise UserInputError("this server keeps each visitor's work private, and this request has no session")
    # A hash, not the name itself: folder names stay short and safe whatever a username or session id holds.
    return Visitor(hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()[:20])


def scrub_paths(message: str) -> str:
    """A message as a visitor on a shared server may see it: no server paths (runs, cache, temporary files)."""
    if not PRIVATE:
        return message
    for base in {str(runs_root()), str(cache_dir().resolve()), str(Path(tempfile.gettempdir()).resolve())}:
        message = re.sub(re.escape(base) + r"(/users/[0-9a-f]+)?/?", "", message)
    return message


# ---- the storage quota ----------------------------------------------------------------------------------------


def run_dirs(root: Path) -> list[Path]:
    """The units the quota counts and removes: each run directory, uploaded checkpoint and pretrained import."""
    units = set()
    for cfg in root.glob("**/" + ckpt.CONFIG):
        d = cfg.parent
        if any(part.startswith(".") for part in d.relative_to(root).parts):
            continue
        units.add(d.parent if d.name in ("latest", "best") else d)
    return sorted(units)


def _size(d: Path) -> int:
    return sum(f.stat().st_size for f in d.rglob("*") if f.is_file() and not f.is_symlink())


def _age(d: Path) -> float:
    return max((f.stat().st_mtime for f in d.rglob("*") if f.is_file()), default=d.stat().st_mtime)


def enforce_quota(protected: Iterable[Path] = (), max_runs: int | None = None, max_mb: int | None = None) -> list[Path]:
    """Remove the oldest runs while there are more than `max_runs` or they take more than `max_mb` (0: no cap);
    never one that trains or waits in line, nor one in `protected`. Returns what was removed."""
    max_runs = LIMITS.max_runs if max_runs is None else max_runs
    max_mb = LIMITS.max_disk_mb if max_mb is None else max_mb
    if not max_runs and not max_mb:
        return []
    root = runs_root()
    keep = {Path(p).resolve() for p in [*protected, *jobs.in_use()]}
    units = sorted(((_age(d), d, _size(d)) for d in run_dirs(root)), key=lambda u: u[0])
    count, total = len(units), sum(size for *_, size in units)
    removed = []
    for _, d, size in units:
        over = (max_runs and count > max_runs) or (max_mb and total > max_mb * 1_000_000)
        if not over:
            break
        if d.resolve() in keep or any(k.is_relative_to(d.resolve()) for k in keep):
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
        count, total = count - 1, total - size
    for home in (root / USERS).glob("*"):  # empty homes of visitors whose runs are all gone
        if home.is_dir() and not any(home.iterdir()):
            home.rmdir()
    return removed

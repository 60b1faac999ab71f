"""Many strangers, one server: whose runs are whose, the names visitors see instead of paths, the storage quota.

Locally (`python app.py`) there is one user, who sees the whole runs directory. With `GPT_PLAYGROUND_PRIVATE` on
(the default when `SPACE_ID` is set) each visitor has a home folder, `users/<owner>/`, and sees only it plus the
shared folders: `pretrained/` (GPT-2 imports) and `published/` (what the server's owner puts there). The owner is
the Hugging Face account of a signed-in visitor (their runs follow them to any device), else their browser: a
random secret of 256 bits kept in the browser's localStorage (`gr.BrowserState`), which the page sends once when it
loads (`bind_browser`), so a reload, a second tab or a laptop opened again finds the same runs. The secret is never
put in a URL, a log or a folder name (only a hash of it is used). A client that sends none (an API script) is its
session, as before.

Checkpoints travel between the page and the server as *names* relative to what the visitor sees ("run-…/latest",
"pretrained/gpt2"): a name never reveals a server path, and every name that comes back is resolved here and
refused unless it is the visitor's own or shared. Handlers get the visitor from Gradio's injected request:

    def handler(..., request: gr.Request, profile: gr.OAuthProfile | None) -> ...:
        me = visitor(request, profile)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import gradio as gr

from gpt import checkpoint as ckpt
from gpt.errors import UserInputError
from gpt.paths import cache_dir
from playground import jobs
from playground.inputs import text
from playground.settings import LIMITS, PRIVATE, runs_root, scrub_paths

__all__ = ["scrub_paths"]  # re-exported: the tabs import it from here

SHARED = ("pretrained", "published")  # folders of the runs directory every visitor sees
USERS = "users"
MAX_NAME = 300  # characters: a checkpoint name is a few short path parts


@dataclass(frozen=True)
class Visitor:
    """Who is asking; `owner` None is the local single user, who sees everything under the runs directory."""

    owner: str | None
    # Who they are for the queue and for finding their work again after a reload: a hash of their account, browser
    # secret or session, also locally (where `owner` is None because one user sees everything).
    key: str = field(default="", compare=False)

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


# ---- who is asking ------------------------------------------------------------------------------------------

SECRET = re.compile(r"^[A-Za-z0-9_-]{43}$")  # secrets.token_urlsafe(32): 256 random bits
MAX_BOUND = 50_000  # page sessions remembered (oldest forgotten first); a forgotten one is bound again at its next load
_bound: OrderedDict[str, str] = OrderedDict()  # Gradio session -> the key of the browser that opened it
_bound_lock = threading.Lock()


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()[:20]


def bind_browser(secret: Any, request: gr.Request | None) -> str:
    """The page loaded: its session belongs to the browser holding `secret` (a new one when it has none or sends
    something else). Returns the secret for the browser to keep."""
    if not isinstance(secret, str) or not SECRET.match(secret):
        secret = secrets.token_urlsafe(32)
    session = getattr(request, "session_hash", None)
    if session:
        with _bound_lock:
            _bound[session] = _hash(f"browser:{secret}")
            _bound.move_to_end(session)
            while len(_bound) > MAX_BOUND:
                _bound.popitem(last=False)
    return secret


def browser_state_secret() -> str:
    """The key Gradio's BrowserState encrypts the browser's value with: kept in the runs directory, so that browsers
    are still recognised after the server restarts (a new key each start would make every browser a stranger)."""
    path = runs_root() / ".browser-state-key"
    try:
        key = path.read_text().strip()
        if len(key) >= 32:
            return key
    except OSError:
        pass
    key = secrets.token_urlsafe(32)
    try:
        path.write_text(key)
        path.chmod(0o600)
    except OSError:
        pass  # a read-only disk: browsers are recognised until the server restarts
    return key


def unbind(request: gr.Request | None) -> None:
    """The page closed (or forgot its browser): its session no longer stands for the browser."""
    session = getattr(request, "session_hash", None)
    with _bound_lock:
        _bound.pop(session or "", None)


def visitor(request: gr.Request | None, profile: gr.OAuthProfile | None = None) -> Visitor:
    """The visitor behind a request: their Hugging Face account when signed in, else their browser (once the page
    has bound its session), else their session."""
    session = getattr(request, "session_hash", None)
    if profile is not None and getattr(profile, "username", None):
        key = _hash(f"hf:{profile.username}")
    elif session and session in _bound:
        key = _bound[session]
    elif session:
        key = _hash(f"session:{session}")
    elif PRIVATE:
        raise UserInputError("this server keeps each visitor's work private, and this request has no session")
    else:
        key = "local"
    # A hash, not the name itself: folder names stay short and safe whatever a username or secret holds.
    return Visitor(key if PRIVATE else None, key=key)


def client_address(request: gr.Request | None) -> str:
    """The address a request came from. On a Space, behind its proxy, the last X-Forwarded-For hop is what the
    proxy saw (earlier hops are whatever the client wrote)."""
    if request is None:
        return ""
    forwarded = (request.headers.get("x-forwarded-for") or "") if os.environ.get("SPACE_ID") else ""
    hop = forwarded.split(",")[-1].strip()
    return hop or (request.client.host if request.client else "")


# ---- heavy requests: served in turn, a fair share each --------------------------------------------------------


class FairGate:
    """Requests that run the model (generate, inspect, explain) run `slots` at a time; the others wait in turn, round
    robin: the next to run is the waiting request whose address has the fewest running and was served longest ago,
    then likewise for its visitor, then the earliest. So a classroom behind one address (a school's router, a
    Space's shared IP) is served request by request beside everyone else, a client that makes up sessions cannot
    starve other addresses, and one visitor's second request waits behind the others' first.
    A visitor may have `per_visitor` requests running or waiting (more would only wait behind their own) and an
    address `per_address` (0: no cap); past that a request is refused with a message instead of waiting."""

    def __init__(self, slots: int, per_visitor: int, per_address: int) -> None:
        self.slots, self.per_visitor, self.per_address = slots, per_visitor, per_address
        self._cond = threading.Condition()
        self._running: dict[str, int] = {}  # "v:<visitor key>" / "a:<address>" -> requests of theirs running
        self._holding: dict[str, int] = {}  # the same keys -> running or waiting
        self._waiting: list[tuple[str, str, int]] = []  # (visitor key, address key, ticket), in arrival order
        self._served: dict[str, int] = {}  # the same keys, while they hold a place -> when they last got a slot
        self._tickets = 0
        self._admitted = 0
        self._busy = 0

    def _rank(self, w: tuple[str, str, int]) -> tuple[int, ...]:
        v, a, ticket = w
        return self._running.get(a, 0), self._served.get(a, 0), self._running.get(v, 0), self._served.get(v, 0), ticket

    @contextmanager
    def place(self, visitor: str, address: str = "", on_wait: Callable[[int], None] | None = None) -> Iterator[None]:
        """Hold a place while the request runs. `on_wait(ahead)` is called once if it has to wait first."""
        me = (f"v:{visitor}", f"a:{address}" if address else "", 0)
        keys = [k for k in me[:2] if k]
        with self._cond:
            if self.per_visitor and self._holding.get(me[0], 0) >= self.per_visitor:
                raise UserInputError(
                    f"you already have {self.per_visitor} requests running or waiting (generating or inspecting); "
                    "wait for one to finish"
                )
            if address and self.per_address and self._holding.get(me[1], 0) >= self.per_address:
                raise UserInputError(
                    f"your address already has {self.per_address} requests running or waiting; try again in a moment"
                )
            self._tickets += 1
            me = (me[0], me[1], self._tickets)
            self._waiting.append(me)
            for k in keys:
                self._holding[k] = self._holding.get(k, 0) + 1
            told = False
            try:
                while self._busy >= self.slots or min(self._waiting, key=self._rank) != me:
                    if not told and on_wait is not None:
                        told = True
                        ahead = sum(self._rank(w) < self._rank(me) for w in self._waiting)
                        self._cond.release()  # (a toast goes out over the network: not while holding the lock)
                        try:
                            on_wait(ahead)
                        finally:
                            self._cond.acquire()
                        continue
                    self._cond.wait()
            except BaseException:
                self._leave(me, keys, running=False)
                raise
            self._waiting.remove(me)
            self._busy += 1
            self._admitted += 1
            for k in keys:
                self._running[k] = self._running.get(k, 0) + 1
                self._served[k] = self._admitted
            self._cond.notify_all()  # a slot may still be free: the next in turn takes it
        try:
            yield
        finally:
            with self._cond:
                self._busy -= 1
                for k in keys:
                    self._running[k] -= 1
                    if not self._running[k]:
                        del self._running[k]
                self._leave(me, keys, running=True)

    def _leave(self, me: tuple[str, str, int], keys: list[str], running: bool) -> None:
        if not running:
            self._waiting.remove(me)
        for k in keys:
            self._holding[k] -= 1
            if not self._holding[k]:
                del self._holding[k]
                self._served.pop(k, None)
        self._cond.notify_all()

    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)


GATE = FairGate(LIMITS.model_slots, LIMITS.max_heavy_per_visitor, LIMITS.max_model_per_address)


def _tell_wait(ahead: int) -> None:
    gr.Info(f"In line for the model: {ahead} request{'s' * (ahead != 1)} ahead of yours; yours starts by itself.")


@contextmanager
def heavy_slot(me: Visitor, request: gr.Request | None) -> Iterator[None]:
    """Hold a place in `GATE` for a request that runs the model, telling the visitor when theirs has to wait."""
    address = client_address(request) if PRIVATE else ""
    with GATE.place(me.key, address, _tell_wait if request is not None else None):
        yield


# ---- what a visitor was doing, so that a reload finds it again ---------------------------------------------------


def _record(me: Visitor) -> Path:
    return cache_dir() / "visitors" / f"{me.key}.json"


def remember(me: Visitor, **values: str | None) -> None:
    """Keep `values` (the data set, the run) for this visitor's next page load."""
    if not me.key:
        return
    path = _record(me)
    record = {**recall(me), **values}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)
    except OSError:
        pass  # a reload will not find it again; nothing else depends on it


def recall(me: Visitor) -> dict[str, Any]:
    try:
        record = json.loads(_record(me).read_text()[:10_000])
    except (OSError, ValueError):
        return {}
    if not isinstance(record, dict):
        return {}
    return {k: v for k, v in record.items() if isinstance(k, str) and isinstance(v, str)}


def forget(me: Visitor) -> None:
    """ "Forget me": this visitor's home (runs, uploads, data sets) and record go. Only on a shared server: locally
    the home is the whole runs directory."""
    if me.owner is not None:
        shutil.rmtree(me.home, ignore_errors=True)
    _record(me).unlink(missing_ok=True)


# ---- the storage quota ----------------------------------------------------------------------------------------
#
# What a visitor keeps on the disk (their runs, uploaded checkpoints and prepared data sets) counts against their own
# share; past it, their own oldest items go. Past the server's total, the oldest items of anyone go. Never removed:
# what trains or waits in line, and what it will read (its data set, the checkpoint it resumes or fine-tunes), the
# caller's `protected` items, and what the server's owner published.


@dataclass(frozen=True)
class Unit:
    """One item the quota counts and removes whole."""

    path: Path
    owner: str | None  # the visitor whose share it is in; None for shared imports (pretrained/)
    kind: str  # "run" (a run, an upload, an import) or "data" (a prepared data set)
    size: int
    age: float  # the newest file's time


def _size(d: Path) -> int:
    if d.is_file():
        return d.stat().st_size
    return sum(f.stat().st_size for f in d.rglob("*") if f.is_file() and not f.is_symlink())


def _age(d: Path) -> float:
    if d.is_file():
        return d.stat().st_mtime
    return max((f.stat().st_mtime for f in d.rglob("*") if f.is_file()), default=d.stat().st_mtime)


def _remove(path: Path) -> None:
    if path.is_file():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def units(root: Path) -> list[Unit]:
    """Everything the quota counts under the runs directory, oldest first: runs (and uploads, imports), data sets,
    and the BPE tokenizers trained for a visitor (each a file; a data set carries its own copy in its meta.json, so
    one can go on its own: preparing that corpus again trains it again)."""
    found: dict[Path, tuple[str | None, str]] = {}
    for marker, kind in ((ckpt.CONFIG, "run"), ("meta.json", "data")):
        for f in root.glob("**/" + marker):
            rel = f.parent.relative_to(root).parts
            if not rel or rel[0] == "published" or any(p.startswith(".") for p in rel):
                continue
            owner = rel[1] if rel[0] == USERS and len(rel) > 2 else None
            if kind == "data" and not (owner and len(rel) == 4 and rel[2] == "data"):
                continue  # a data set is users/<owner>/data/<key>; a meta.json anywhere else is not one
            d = f.parent.parent if kind == "run" and f.parent.name in ("latest", "best") else f.parent
            found.setdefault(d, (owner, kind))
    for f in root.glob(f"{USERS}/*/data/tokenizers/*.json"):
        found.setdefault(f, (f.parent.parent.parent.name, "data"))
    out = []
    for d, (owner, kind) in found.items():
        try:
            out.append(Unit(d, owner, kind, _size(d), _age(d)))
        except OSError:  # removed meanwhile
            continue
    return sorted(out, key=lambda u: u.age)


def enforce_quota(
    me: Visitor | None = None,
    protected: Iterable[Path] = (),
    max_runs: int | None = None,
    max_mb: int | None = None,
    user_runs: int | None = None,
    user_mb: int | None = None,
) -> list[Path]:
    """Make room: first within `me`'s share (at most `user_runs` runs and `user_mb` MB of theirs, their oldest
    first), then within the server's total (`max_runs` runs, `max_mb` MB; from whoever keeps the most of what is
    over, their oldest first: see `evict`). 0 is no cap. Returns what was removed."""
    caps = (
        LIMITS.max_runs if max_runs is None else max_runs,
        LIMITS.max_disk_mb if max_mb is None else max_mb,
        LIMITS.max_user_runs if user_runs is None else user_runs,
        LIMITS.max_user_mb if user_mb is None else user_mb,
    )
    if not any(caps):
        return []
    max_runs, max_mb, user_runs, user_mb = caps
    root = runs_root()
    keep = {Path(p).resolve() for p in [*protected, *jobs.in_use()]}
    everything = units(root)
    removed: list[Path] = []

    def over(pool: list[Unit], runs_cap: float, mb_cap: float) -> bool:
        live = [u for u in pool if u.path not in removed]
        return bool((runs_cap and sum(u.kind == "run" for u in live) > runs_cap)
                    or (mb_cap and sum(u.size for u in live) > mb_cap * 1_000_000))  # fmt: skip

    def removable(u: Unit) -> bool:
        real = u.path.resolve()
        return u.path not in removed and real not in keep and not any(k.is_relative_to(real) for k in keep)

    def evict(pool: list[Unit], runs_cap: float, mb_cap: float) -> None:
        """While the pool is over a cap: the oldest removable item of whoever keeps the most of what is over (runs
        when the count is, bytes otherwise), the newest arrival first between equals, the server's own (pretrained
        imports) last. A visitor filling the disk loses their own things before anyone else does, and one within
        their share never loses anything because of what others did."""
        while over(pool, runs_cap, mb_cap):
            candidates = [u for u in pool if removable(u)]
            if not candidates:
                return  # all that is left is in use: over the cap until it ends
            live = [u for u in pool if u.path not in removed]
            by_count = bool(runs_cap) and sum(u.kind == "run" for u in live) > runs_cap
            held: dict[str | None, int] = {}
            arrived: dict[str | None, float] = {}
            for u in live:
                held[u.owner] = held.get(u.owner, 0) + ((u.kind == "run") if by_count else u.size)
                arrived[u.owner] = min(arrived.get(u.owner, u.age), u.age)
            u = min(candidates, key=lambda u: (u.owner is None, -held[u.owner], -arrived[u.owner], u.age))
            _remove(u.path)
            removed.append(u.path)

    if me is not None and me.owner is not None and (user_runs or user_mb):
        evict([u for u in everything if u.owner == me.owner], user_runs, user_mb)
    if max_runs or max_mb:
        evict(everything, max_runs, max_mb)
    for home in (root / USERS).glob("*"):  # empty homes of visitors whose runs are all gone
        for d in (home / "data" / "tokenizers", home / "data", home / "uploaded", home):
            try:
                if d.is_dir() and not any(d.iterdir()):
                    d.rmdir()
            except OSError:
                pass
    return removed


def usage(me: Visitor) -> tuple[int, int]:
    """(runs, bytes) this visitor keeps on the server."""
    mine = [u for u in units(runs_root()) if me.owner is not None and u.owner == me.owner]
    return sum(u.kind == "run" for u in mine), sum(u.size for u in mine)

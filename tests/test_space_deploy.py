"""The app deployed the way a Hugging Face Space (gradio SDK) deploys it, then used through its API.

A Space installs `requirements.txt` alone, into a fresh environment, from an empty directory, before the repository
is copied; then it copies the repository and runs `python app.py` as a non-root user (uid 1000) with
GRADIO_SERVER_NAME=0.0.0.0, GRADIO_SERVER_PORT, SYSTEM=spaces and SPACE_ID set, behind a proxy that reaches the app
on a non-loopback address. This test does each of those steps on this machine, then prepares, trains and generates.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from gradio_client import Client

from tests.app_helpers import SAMPLE, poll_until, step_of, stop_app, wait_until_serving

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
SPACE_UID = 1000  # the user a Space runs the app as
# start from, preset, layers, heads, embd, context, dropout, batch, lr, schedule, warmup, steps, eval, sample, seed
SHORT_RUN = ["", "custom", 1, 2, 32, 32, 0.0, 8, 3e-3, "cosine", 5, 40, 20, 0, 1]


def _committed_tree(dest: Path) -> None:
    """The repository as it would be pushed to the Space: tracked files, with uncommitted edits if any."""
    ref = subprocess.run(["git", "stash", "create"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    archive = subprocess.run(["git", "archive", ref or "HEAD"], cwd=ROOT, capture_output=True, check=True).stdout
    tmp = dest.parent / "tree.tar"
    tmp.write_bytes(archive)
    with tarfile.open(tmp) as tf:
        tf.extractall(dest, filter="data")
    tmp.unlink()


def _space_python() -> str:
    """A Python 3.11 the app's user can run: this one, unless it lives where only root can read (pyenv under
    /root); then the system's, as on a Space."""
    if os.geteuid() != 0 or not Path(sys.executable).resolve().is_relative_to("/root"):
        return sys.executable
    system = shutil.which("python3.11", path="/usr/local/bin:/usr/bin")
    if system is None:
        pytest.skip("no Python 3.11 outside /root for the app's non-root user")
    return system


def _non_loopback_ip() -> str | None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only asks which interface would be used
            ip = s.getsockname()[0]
    except OSError:
        return None
    return None if ip.startswith("127.") else str(ip)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


def _chown_tree(path: Path, uid: int) -> None:
    for p in [path, *path.rglob("*")]:
        os.lchown(p, uid, uid)


@pytest.fixture(scope="module")
def space() -> Iterator[dict[str, str]]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs the git repository (the Space gets the committed tree)")
    base = Path(tempfile.mkdtemp(prefix="space-"))
    base.chmod(0o755)  # the app user must reach the environment installed below
    try:
        # 1. the build: requirements.txt alone, from an empty directory, into a fresh environment
        (base / "empty").mkdir()
        (base / "reqs").mkdir()
        shutil.copy(ROOT / "requirements.txt", base / "reqs" / "requirements.txt")
        subprocess.run([_space_python(), "-m", "venv", str(base / "venv")], check=True)
        t0 = time.time()
        build = subprocess.run(
            [str(base / "venv" / "bin" / "pip"), "install", "-q", "-r", str(base / "reqs" / "requirements.txt")],
            cwd=base / "empty",
            capture_output=True,
            text=True,
        )
        assert build.returncode == 0, build.stderr[-3000:]
        build_s = time.time() - t0

        # 2. the repository copied into a fresh directory owned by the app's user; its home and /data likewise
        app, home, data = base / "app", base / "home", base / "data"
        for d in (app, home, data):
            d.mkdir()
        _committed_tree(app)
        as_root = os.geteuid() == 0
        if as_root:
            for d in (app, home, data):
                _chown_tree(d, SPACE_UID)

        # 3. the run: python app.py as that user, with the Space's environment and nothing of ours
        port = _free_port()
        env = {
            "PATH": f"{base / 'venv' / 'bin'}:/usr/bin:/bin",
            "HOME": str(home),
            "GRADIO_SERVER_NAME": "0.0.0.0",
            "GRADIO_SERVER_PORT": str(port),
            "SYSTEM": "spaces",
            "SPACE_ID": "tester/gpt-playground",
            "GRADIO_ANALYTICS_ENABLED": "False",
            "GRADIO_HEARTBEAT_INTERVAL": "1",
            "GPT_PLAYGROUND_PERSISTENT": str(data),  # stands in for /data
        }
        log = open(base / "app.log", "w")  # noqa: SIM115 - closed below
        t0 = time.time()
        proc = subprocess.Popen(
            [str(base / "venv" / "bin" / "python"), "app.py"],
            cwd=app,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            user=SPACE_UID if as_root else None,
            group=SPACE_UID if as_root else None,
            extra_groups=[] if as_root else None,
        )
        host = _non_loopback_ip() or "127.0.0.1"
        url = f"http://{host}:{port}/"
        wait_until_serving(url, proc, base / "app.log", timeout=180)
        start_s = time.time() - t0
        print(f"\nSpace build {build_s:.0f} s, app start {start_s:.1f} s, reached on {url}")
        yield {"url": url, "data": str(data), "log": str(base / "app.log"), "host": host, "as_root": str(as_root)}
        stop_app(proc)
        log.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_space_build_run_prepare_train_generate(space: dict[str, str]) -> None:
    c = Client(space["url"], verbose=False)
    stats = c.predict(SAMPLE, [], "", "char", 0.1, api_name="/prepare_data")[0]
    assert "characters" in stats
    status = c.predict(*SHORT_RUN, api_name="/start_training")
    assert "Training started" in status and "/" + "tmp" not in status  # a run name, not a server path
    done = poll_until(c, lambda r: r[4] == "completed", timeout=240)
    assert step_of(done) == SHORT_RUN[11]
    table, dropdown = c.predict(api_name="/list_checkpoints")
    names = [n for _, n in dropdown["choices"]]
    assert any(n.endswith("latest") for n in names) and not any(n.startswith("/") for n in names)
    text = c.predict(dropdown["value"], "ROMEO:", 0.8, 40, 1.0, 1.0, 0.0, 30, 1, 0.0, 0.0, "", api_name="/generate")[1]
    assert len(text) > 0
    # runs are kept on the persistent disk, and they are private to their visitor
    assert list(Path(space["data"]).glob("gpt-playground/runs/users/*/run-*/latest/config.json"))
    stranger = Client(space["url"], verbose=False)
    assert stranger.predict(api_name="/list_checkpoints")[1]["choices"] == []
    if space["as_root"] == "True":
        owners = {p.stat().st_uid for p in Path(space["data"]).rglob("*")}
        assert owners == {SPACE_UID}  # everything was written by the app's non-root user
    assert space["host"] != "127.0.0.1" or _non_loopback_ip() is None

"""The app deployed the way a Hugging Face Space (gradio SDK) deploys it, then used through its API.

A Space installs `requirements.txt` alone, into a fresh environment, from an empty directory, before the repository
is copied; then it copies the repository and runs `python app.py` as a non-root user (uid 1000) with
GRADIO_SERVER_NAME=0.0.0.0, GRADIO_SERVER_PORT, SYSTEM=spaces and SPACE_ID set, behind a proxy that reaches the app
on a non-loopback address. This test does each of those steps on this machine, then checks that everything the
product imports is declared (installed in that environment), and uses every feature a visitor reaches through the
API: each tokenizer (a trained BPE too), both recipes, generation and branching, inspection, download and upload,
export to Hugging Face, import of a model from the Hugging Face cache, and Compare.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gradio_client import Client, handle_file

from tests.app_helpers import GPT2_SWITCHES, SAMPLE, plot_data, poll_until, step_of, stop_app, wait_until_serving
from tests.conftest import SHAKESPEARE, crashes_in

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
SPACE_UID = 1000  # the user a Space runs the app as
# start from, preset, layers, heads, embd, context, dropout, batch, lr, schedule, warmup, steps, eval, sample, seed
SHORT_RUN = ["", "custom", 1, 2, 32, 32, 0.0, 8, 3e-3, "cosine", 5, 40, 20, 0, 1]
HUB_MODEL = "tester/tiny-gpt2"  # put in the app user's Hugging Face cache: the Space imports it offline


def _committed_tree(dest: Path) -> None:
    """The repository as it would be pushed to the Space: tracked files, with uncommitted edits if any."""
    ref = subprocess.run(["git", "stash", "create"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    archive = subprocess.run(["git", "archive", ref or "HEAD"], cwd=ROOT, capture_output=True, check=True).stdout
    tmp = dest.parent / "tree.tar"
    tmp.write_bytes(archive)
    with tarfile.open(tmp) as tf:
        tf.extractall(dest, filter="data")
    tmp.unlink()


def _space_venv(base: Path) -> Path:
    """The Space's build: `pip install -r requirements.txt` alone, from an empty directory, into a fresh virtual
    environment, byte-compiled as pip does by default (a Space's build does too). Made once per requirements.txt
    and Python and kept in /var/tmp (readable by the app's user), since nothing but that file goes into it: a
    minute and a half of installing saved on each later run. A build that did not finish is made again."""
    python = _space_python()
    version = subprocess.run([python, "-c", "import sys; print(sys.version)"], capture_output=True, text=True).stdout
    key = hashlib.sha256((ROOT / "requirements.txt").read_bytes() + version.encode()).hexdigest()[:16]
    venv = Path(os.environ.get("GPT_PLAYGROUND_SPACE_VENVS", "/var/tmp")) / f"gpt-playground-space-venv-{key}"
    if (venv / "built").is_file():
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    (base / "empty").mkdir()
    (base / "reqs").mkdir()
    shutil.copy(ROOT / "requirements.txt", base / "reqs" / "requirements.txt")
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    build = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "-r", str(base / "reqs" / "requirements.txt")],
                           cwd=base / "empty", capture_output=True, text=True)  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    venv.chmod(0o755)  # the app's user reaches it
    (venv / "built").write_text(key)
    return venv


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


def _hub_model_in_cache(hub: Path, name: str) -> None:
    """A small random GPT-2 laid out as huggingface_hub caches a download (models--owner--name/snapshots/REV)."""
    import torch
    import transformers

    torch.manual_seed(0)
    snapshot = hub / f"models--{name.replace('/', '--')}" / "snapshots" / ("0" * 40)
    cfg = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=32, n_positions=64, vocab_size=50257)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(snapshot)


@pytest.fixture(scope="module")
def space() -> Iterator[dict[str, str]]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs the git repository (the Space gets the committed tree)")
    base = Path(tempfile.mkdtemp(prefix="space-"))
    base.chmod(0o755)  # the app user must reach the environment installed below
    try:
        # 1. the build: requirements.txt alone, from an empty directory, into a fresh environment (kept between
        # runs for the same requirements.txt and Python: see _space_venv)
        t0 = time.time()
        venv = _space_venv(base)
        build_s = time.time() - t0

        # 2. the repository copied into a fresh directory owned by the app's user; its home and /data likewise
        # (a Space's container has a /tmp of its own: here, one the app's user owns, as other tests' apps, run as
        # root, leave theirs in this machine's /tmp, Gradio's upload cache among them)
        app, home, data, tmp = base / "app", base / "home", base / "data", base / "tmp"
        for d in (app, home, data, tmp):
            d.mkdir()
        _committed_tree(app)
        _hub_model_in_cache(home / ".cache" / "huggingface" / "hub", HUB_MODEL)
        as_root = os.geteuid() == 0
        if as_root:
            for d in (app, home, data, tmp):
                _chown_tree(d, SPACE_UID)

        # 3. the run: python app.py as that user, with the Space's environment and nothing of ours
        port = _free_port()
        env = {
            "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
            "HOME": str(home),
            "GRADIO_SERVER_NAME": "0.0.0.0",
            "GRADIO_SERVER_PORT": str(port),
            "SYSTEM": "spaces",
            "SPACE_ID": "tester/gpt-playground",
            "GRADIO_ANALYTICS_ENABLED": "False",
            "GRADIO_HEARTBEAT_INTERVAL": "1",
            "GPT_PLAYGROUND_PERSISTENT": str(data),  # stands in for /data
            "HF_HUB_OFFLINE": "1",  # (this machine reaches no hub: the model to import is in the cache)
            "TMPDIR": str(tmp),
            "GRADIO_TEMP_DIR": str(tmp / "gradio"),
        }
        log = open(base / "app.log", "w")  # noqa: SIM115 - closed below
        t0 = time.time()
        proc = subprocess.Popen(
            [str(venv / "bin" / "python"), "app.py"],
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
        yield {"url": url, "data": str(data), "log": str(base / "app.log"), "host": host, "as_root": str(as_root),
               "python": str(venv / "bin" / "python"), "app": str(app)}  # fmt: skip
        stop_app(proc)
        log.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)


# Run by the Space's own Python from the copied repository: every third-party package any module of ours imports
# (at its top or inside a function) must import there, and so must every module of ours.
IMPORTS_CHECK = r"""
import ast, importlib, pathlib, sys
files = [*pathlib.Path("gpt").glob("*.py"), *pathlib.Path("playground").glob("*.py"), pathlib.Path("app.py")]
names = set()
for f in files:
    for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
ours = [".".join(f.with_suffix("").parts) for f in files]
missing = []
for name in sorted(names - set(sys.stdlib_module_names) - {"gpt", "playground", "app"}) + ours:
    try:
        importlib.import_module(name)
    except ImportError as e:
        missing.append(f"{name}: {e}")
print(len(names), "packages;", "; ".join(missing) or "none missing")
"""


def test_everything_the_product_imports_is_declared(space: dict[str, str]) -> None:
    r = subprocess.run([space["python"], "-c", IMPORTS_CHECK], cwd=space["app"], capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "HOME": space["app"]}, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().endswith("none missing"), r.stdout  # names what requirements.txt lacks


def _train(c: Client, run: list[Any], switches: list[Any] | None = None) -> str:
    """Start a short run (the modern recipe's switches unless given), wait for it to complete; its run name."""
    status = c.predict(*run, *(switches or []), api_name="/start_training")
    assert "Training started" in status and "/" + "tmp" not in status, status  # a run name, not a server path
    done = poll_until(c, lambda r: r[4] == "completed", timeout=240)  # (the poll follows the visitor's newest run)
    assert step_of(done) == run[11]
    return status.split("`")[1]


def test_a_visitor_uses_every_feature(space: dict[str, str], tmp_path: Path) -> None:
    try:
        _use_every_feature(space)
    except Exception as e:  # what the server logged is what says why (the client only gets the error's class)
        raise AssertionError(f"{e}\n--- the app's log:\n{Path(space['log']).read_text()[-4000:]}") from e


def _use_every_feature(space: dict[str, str]) -> None:
    c = Client(space["url"], verbose=False)
    stats = c.predict(SAMPLE, [], "", "char", 0.1, api_name="/prepare_data")[0]
    assert "characters" in stats
    for tokenizer in ("byte", "gpt2"):
        stats = c.predict("Paste text", [], SHAKESPEARE * 30, tokenizer, 0.1, api_name="/prepare_data")[0]
        assert f"{tokenizer} tokenizer" in stats or "characters" in stats, stats

    # a BPE trained on the visitor's text, what it learned shown; the modern recipe (the form's switches) on it
    stats, _, merges, compared, *_ = c.predict(
        "Paste text", [], SHAKESPEARE * 30, "bpe", 0.1, 300, " Romeo", api_name="/prepare_data"
    )
    assert "bpe tokenizer" in stats and "Longest tokens" in merges and "this BPE (300)" in compared
    modern = _train(c, SHORT_RUN)
    # GPT-2's recipe (2019) on the built-in corpus, char by char: the model Hugging Face's GPT-2 takes
    c.predict(SAMPLE, [], "", "char", 0.1, api_name="/prepare_data")
    old = _train(c, SHORT_RUN, GPT2_SWITCHES)

    table, dropdown = c.predict(api_name="/list_checkpoints")
    names = [n for _, n in dropdown["choices"]]
    assert any(n.endswith("latest") for n in names) and not any(n.startswith("/") for n in names)
    ckpt = f"{old}/latest"
    settings = [0.8, 40, 1.0, 1.0, 0.0, 30, 1, 0.0, 0.0, ""]
    pieces, text, *_ = c.predict(ckpt, "ROMEO:", *settings, api_name="/generate")
    assert len(text) > 0
    branched = c.predict(ckpt, "ROMEO:", 3, 1, *settings, api_name="/branch")[1]
    assert branched != text and branched.startswith("".join(p["token"] for p in pieces[1:4]))
    assert c.predict(f"{modern}/latest", "Romeo", *settings, api_name="/generate")[1]

    attention, *_ = c.predict(ckpt, "ROMEO:\nBut soft", 1, 1, "", api_name="/inspect")
    assert plot_data(attention)
    scores, note = c.predict(ckpt, api_name="/head_scores")
    assert len(plot_data(scores)) == 3 and "In-context learning" in note

    # download, upload; export to Hugging Face's format; a model from the Hugging Face cache; Compare
    zpath = c.predict(ckpt, api_name="/download_checkpoint")
    msg, *_ = c.predict(handle_file(zpath), api_name="/upload_checkpoint")
    assert "Imported checkpoint" in msg
    zpath, said = c.predict(ckpt, api_name="/export_hf")
    assert "Exported as" in said
    with zipfile.ZipFile(zpath) as zf:
        exported = {Path(n).name for n in zf.namelist()}
        assert {"config.json", "model.safetensors"} <= exported
        assert json.loads(zf.read(next(n for n in zf.namelist() if n.endswith("config.json"))))["n_layer"] == 1
    message, imported = c.predict(HUB_MODEL, api_name="/import_pretrained")
    assert "Loaded" in message
    assert c.predict(imported["value"], "Hello", 0.0, 0, 1.0, 1.0, 0.0, 5, 1, 0.0, 0.0, "", api_name="/generate")[1]
    fig, summary, *_ = c.predict([modern, old], "step", "bits per byte", api_name="/compare")
    assert [t["name"] for t in plot_data(fig)] == [f"{n} {part}" for n in (modern, old) for part in ("train", "val")]

    # runs are kept on the persistent disk, and they are private to their visitor
    assert list(Path(space["data"]).glob("gpt-playground/runs/users/*/run-*/latest/config.json"))
    stranger = Client(space["url"], verbose=False)  # (imported models are everyone's: converted once, shared)
    assert [n for _, n in stranger.predict(api_name="/list_checkpoints")[1]["choices"]] == [imported["value"]]
    if space["as_root"] == "True":
        owners = {p.stat().st_uid for p in Path(space["data"]).rglob("*")}
        assert owners == {SPACE_UID}  # everything was written by the app's non-root user
    assert space["host"] != "127.0.0.1" or _non_loopback_ip() is None
    assert not crashes_in(Path(space["log"]).read_text())

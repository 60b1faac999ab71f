"""Shared fixtures: an isolated cache directory, tiny configurations, the launched app; the suite's thread policy."""

from __future__ import annotations

import os
import re
from pathlib import Path

# The thread policy, set once, before torch is imported: one OpenMP thread in this process and in every process a
# test starts (they inherit the environment: the app, its training runs, the CLI, the benchmarks). The suite runs a
# few processes at once on two cores, and OpenMP's threads spin-wait for each other when a core is taken: a tiny
# training step measured 62 ms with two threads under load, 2.7 ms with one. A test that is about threads sets its own.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest  # noqa: E402 - after the environment above
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

SHAKESPEARE = """ROMEO:
But, soft! what light through yonder window breaks?
It is the east, and Juliet is the sun.
Arise, fair sun, and kill the envious moon,
Who is already sick and pale with grief,
That thou her maid art far more fair than she.

JULIET:
O Romeo, Romeo! wherefore art thou Romeo?
Deny thy father and refuse thy name;
Or, if thou wilt not, be but sworn my love,
And I'll no longer be a Capulet.
"""


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests never touch the user's cache; the sample corpus is built once per session."""
    os.environ["GPT_PLAYGROUND_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture
def corpus_file(tmp_path: Path) -> Path:
    p = tmp_path / "corpus.txt"
    p.write_text(SHAKESPEARE * 20, encoding="utf-8")
    return p


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AppURL(str):
    """The app's address, with the server's process id (for memory readings) and its runs directory."""

    pid: int = 0
    runs: Path = Path()
    log: Path = Path()


@pytest.fixture(scope="session")
def app_url(tmp_path_factory: pytest.TempPathFactory):
    """The real app (`python app.py`) launched on 127.0.0.1 in a subprocess, with its own runs directory."""
    yield from launch_app(tmp_path_factory)


def launch_app(tmp_path_factory: pytest.TempPathFactory, **env: str):
    """Launch `python app.py` with `env` added; yield its URL; stop it and check its log for crashes."""
    import subprocess
    import sys

    from tests.app_helpers import stop_app, wait_until_serving

    root = Path(__file__).resolve().parent.parent
    port = _free_port()
    runs = tmp_path_factory.mktemp("runs")
    log = open(tmp_path_factory.mktemp("applog") / "app.log", "w")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(
        [sys.executable, "app.py", "--port", str(port), "--runs-dir", str(runs)],
        cwd=root,
        # A closed client is noticed within a second (Gradio's default heartbeat is 15 s).
        env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_HEARTBEAT_INTERVAL": "1", **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = AppURL(f"http://127.0.0.1:{port}/")
    url.pid, url.runs, url.log = proc.pid, runs, Path(log.name)
    wait_until_serving(url, proc, Path(log.name), timeout=120)
    yield url
    stop_app(proc)
    log.close()
    assert not crashes_in(Path(log.name).read_text())


def crashes_in(log: str) -> list[str]:
    """Tracebacks in the app's log that pass through our code (gpt/, playground/, app.py): a handler crashed, or
    met something it did not foresee (user_errors logs those). Gradio's own refusals of malformed API input
    (wrong types, too few values) are tracebacks through Gradio only, and the caller got their message."""
    blocks = re.split(r"\n(?=Traceback \(most recent call last\))", log)
    ours = re.compile(r'File ".*(/playground/|/gpt/|/app\.py)')
    return [b[-800:] for b in blocks if b.startswith("Traceback") and ours.search(b)]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (scripts/test.sh runs `-n 2 --dist loadgroup`: most tests wait on a launched app, a
    training child or a browser, and two workers keep both cores busy), a module's tests stay on one worker: they
    share its module fixtures (an app, a trained run). The benchmarks' smokes, each a process of its own, spread."""
    for item in items:
        module = item.nodeid.split("::")[0]
        if not module.endswith("test_bench_smoke.py"):
            item.add_marker(pytest.mark.xdist_group(module))
    # The longest modules first (a module's minutes, measured with --durations): the workers hand out modules in
    # this order, and a long one handed out last keeps one worker busy alone at the end while the other idles.
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(Path(item.nodeid.split("::")[0]).stem, len(rank)))


LONGEST_FIRST = ["test_browser", "test_health", "test_hosting", "test_browser_shared", "test_browser_health",
                 "test_space_deploy", "test_ddp", "test_cli", "test_load", "test_estimate", "test_interop",
                 "test_circuits", "test_browser_tasks", "test_notebook", "test_fuzz", "test_crash", "test_app_api",
                 "test_tasks_app", "test_browser_inspect", "test_hostile_cli"]  # fmt: skip

"""Every endpoint of the app, fed generated values of every type and edge: no internal error, ever.

The endpoints and their parameters come from the app's own API description (what any client can discover). For
each one, Hypothesis draws argument lists that mix plausible values (the parameter's example, its type's values)
with hostile ones: None, empty, NaN, ±Infinity, huge and negative numbers, wrong types, lone surrogates, very long
strings, server paths. They are sent as hand-made JSON (as any HTTP client may), so nothing is filtered on the way.
Each answer must be a result, or an error that carries a message which is not the generic "Something went wrong"
(that one means a handler met a case nobody foresaw); at the end the server still answers, and its log holds no
traceback through our code (checked by `launch_app`). Bounded: a fixed number of examples per endpoint.

Where the time went (about 80 ms of the server's CPU a request, two cores shared): Gradio builds a whole session
(every component's config) for each new session, and by default re-summarizes all past events with pandas after
every event (`GRADIO_ANALYTICS_CACHE_FREQUENCY`, for its monitoring page only). So the app here summarizes rarely,
each endpoint's calls share a session (a fresh one every `SESSION_CALLS` calls, so fresh state is still met), and the
endpoints are called side by side (each endpoint's own calls in order): the same values reach the same handlers.
"""

from __future__ import annotations

import json
import math
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from gradio_client import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.app_helpers import raw_call, raw_event
from tests.conftest import launch_app

pytestmark = pytest.mark.slow
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))  # per endpoint
SESSION_CALLS = 10  # calls of one endpoint (events of one handler) that share a Gradio session, the first fresh
WORKERS = 3  # endpoints (handlers) called at once: a request mostly waits (on the network, the queue, a core)
slowest: dict[str, float] = {}  # seconds, per endpoint
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
EDGE: list[Any] = [
    None, "", " ", 0, -1, 1, 1.5, 2**64, -(2**64), 1e308, math.nan, math.inf, -math.inf, True, [], {}, [None],
    {"a": 1}, "\ud800", "x\udfffy", "x" * 20_000, "../../../etc/passwd", "/etc/passwd", "a\x00b", "ROMEO:", "gpt2",
    "char", "byte", "custom", "tiny", "Paste text", "Upload files", "Shakespeare (built-in)", "run-1/latest",
    "pretrained/gpt2", "1e309", "nan", "-0", [["a", 1]],
    {"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}},
]  # fmt: skip


def _values(param: dict[str, Any]) -> st.SearchStrategy[Any]:
    typ = str(param.get("python_type", {}).get("type", ""))
    plausible: list[st.SearchStrategy[Any]] = [st.sampled_from(EDGE)]
    if "example_input" in param:
        plausible.append(st.just(param["example_input"]))
    if param.get("parameter_has_default"):
        plausible.append(st.just(param.get("parameter_default")))
    if "float" in typ or "int" in typ:
        plausible.append(st.floats(allow_nan=True, allow_infinity=True))
        plausible.append(st.integers(-(2**70), 2**70))
    if "str" in typ or "Literal" in typ:
        plausible.append(st.text(max_size=40))
    return st.one_of(plausible)


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory):
    # small caps: whatever the fuzzer manages to start stays small
    yield from launch_app(
        tmp_path_factory,
        GPT_PLAYGROUND_MAX_STEPS="30",
        GPT_PLAYGROUND_MAX_PARAMS="300000",
        GPT_PLAYGROUND_MAX_NEW_TOKENS="20",
        GPT_PLAYGROUND_MAX_UPLOAD_MB="2",
        # Gradio's monitoring summary of every past event, recomputed with pandas after each event by default: a cost
        # that grows with the events served (tens of ms a request here), for a page no test reads
        GRADIO_ANALYTICS_CACHE_FREQUENCY="1000000",
    )


def _examples(calls: st.SearchStrategy[Any]) -> list[tuple[Any, ...]]:
    """The argument lists Hypothesis draws (derandomized: the same every run), drawn before any is sent so that
    endpoints can be called side by side. The draws never depended on the answers: a failure was collected, not
    raised in Hypothesis (which would shrink), and is reported with its arguments."""
    drawn: list[tuple[Any, ...]] = []

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(args=calls)
    def draw(args: tuple[Any, ...]) -> None:
        drawn.append(args)

    draw()
    return drawn


def _probe(url: str, name: str, examples: list[tuple[Any, ...]], counts: dict[str, Any], failures: list[str]) -> None:
    for i, args in enumerate(examples):
        counts[name] = counts.get(name, 0) + 1
        t0 = time.time()
        try:
            kind, out = raw_call(url, name, list(args), session=f"fuzz{name}-{i // SESSION_CALLS}")
        except Exception as e:  # no answer (a hang, a dropped connection, an unknown event): say to what
            raise AssertionError(f"{name}{json.dumps(list(args), default=str)[:300]}: {e!r}") from e
        slowest[name] = max(slowest.get(name, 0.0), time.time() - t0)
        if kind == "error" and (not out or "Something went wrong" in str(out)):
            failures.append(f"{name}{json.dumps(list(args), default=str)[:300]} -> {out!r}")


def test_every_endpoint_answers_every_value_with_a_result_or_a_message(fuzz_app: str) -> None:
    api = Client(fuzz_app, verbose=False).view_api(return_format="dict", print_info=False)
    endpoints = {name: info["parameters"] for name, info in api["named_endpoints"].items()}
    assert {"/prepare_data", "/start_training", "/generate", "/inspect", "/upload_checkpoint"} <= set(endpoints)
    failures: list[str] = []
    counts: dict[str, int] = {}

    with ThreadPoolExecutor(WORKERS) as pool:  # each endpoint's calls go out while the next one's are drawn
        sent = [pool.submit(_probe, fuzz_app, name, _examples(st.tuples(*(_values(p) for p in params)) if params
                                                              else st.just(())), counts, failures)
                for name, params in sorted(endpoints.items())]  # fmt: skip
        for done in sent:
            done.result()  # an exception in a worker fails the test

    ARTIFACTS.mkdir(exist_ok=True)
    report = {"endpoints": len(counts), "cases": sum(counts.values()), "per_endpoint": counts, "slowest_s": slowest,
              "failures": failures}  # fmt: skip
    (ARTIFACTS / "fuzz.json").write_text(json.dumps(report, indent=2))
    assert not failures, "\n".join(failures[:20])
    assert urllib.request.urlopen(fuzz_app, timeout=10).status == 200  # still serving
    assert sum(counts.values()) >= EXAMPLES * len(endpoints) // 2


EVENT_DATA: list[Any] = [None, {}, {"index": "x"}, {"index": [1, "a"]}, {"index": -5}, {"index": 10**9},
                         {"row_value": 5}, {"row_value": ["x" * 500]}, {"value": {"a": 1}}, {"selected": "yes"},
                         "not a dict", [1, 2], {"index": 3, "value": None, "row_value": [None]}]  # fmt: skip


def test_every_handler_the_page_calls_checks_its_event_data(fuzz_app: str) -> None:
    """The handlers no API lists (the page's own: selections, chained steps, lambdas) are reachable too, by their
    index, with made-up data and event data: each answers with a result or a message, never a crash (the app's
    log is checked for tracebacks through our code when it stops)."""
    import random

    config = json.loads(urllib.request.urlopen(f"{fuzz_app}config", timeout=10).read())
    rng = random.Random(0)
    failures: list[str] = []
    deps = [(d["id"], len(d["inputs"])) for d in config["dependencies"] if d.get("backend_fn", True)]
    assert len(deps) > 40
    events: dict[int, list[tuple[list[Any], Any]]] = {}  # drawn first (the same values as ever), then sent
    for fn_index, n_inputs in deps:
        for _ in range(int(os.environ.get("FUZZ_EVENTS", "4"))):
            data = [rng.choice(EDGE) for _ in range(n_inputs)]
            events.setdefault(fn_index, []).append((data, rng.choice(EVENT_DATA)))
            rng.randrange(10**9)  # (what named each event's session once: the draws after it stay the same)

    def send(fn_index: int) -> None:
        for i, (data, event_data) in enumerate(events[fn_index]):
            answer = raw_event(fuzz_app, fn_index, data, event_data, f"fuzz-fn{fn_index}-{i // SESSION_CALLS}")
            if "Something went wrong" in answer:
                failures.append(f"fn {fn_index}: {json.dumps(data, default=str)[:200]} -> {answer[:200]}")

    with ThreadPoolExecutor(WORKERS) as pool:
        for done in [pool.submit(send, fn_index) for fn_index in events]:
            done.result()
    assert not failures, "\n".join(failures[:20])
    assert urllib.request.urlopen(fuzz_app, timeout=10).status == 200

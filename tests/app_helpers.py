"""Helpers for tests that drive the launched app through gradio_client."""

from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
from gradio_client import Client

SAMPLE = "Shakespeare (built-in)"
# start from, preset, layers, heads, embd, context, dropout, batch, lr, schedule, warmup, steps, eval, sample, seed
TRAIN = ["", "custom", 2, 2, 64, 32, 0.0, 8, 3e-3, "cosine", 20, 20000, 50, 100, 1]
# The recipe switches after them (left out, they are the form's: the modern recipe's): positions, norm, activation,
# QK-norm, tied head, zero-init, biases, optimizer, Muon's rate, the final rate. GPT-2's (2019):
GPT2_SWITCHES = ["learned", "layernorm", "gelu", False, True, False, True, "adamw", 0.02, 1e-4]


def poll_until(client: Client, predicate, timeout: float = 120) -> tuple[Any, ...]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = client.predict(api_name="/poll")
        if isinstance(r[0], str) and predicate(r):
            return r
        time.sleep(0.5)
    raise AssertionError(f"condition not reached in {timeout}s; last poll: {r}")


def plot_data(plot: dict[str, Any] | str) -> list[dict[str, Any]]:
    """The traces of a Plotly figure as the browser gets it, with binary-encoded arrays decoded to lists: a gr.Plot's
    value, or a live chart's (a client that says it holds nothing gets the whole figure)."""
    if isinstance(plot, str):
        update = json.loads(plot)
        assert update["kind"] == "full", update["kind"]
        return update["figure"]["data"]
    return [{k: _decode(v) for k, v in trace.items()} for trace in json.loads(plot["plot"])["data"]]


def _decode(v: Any) -> Any:
    if isinstance(v, dict) and "bdata" in v:
        arr = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
        shape = [int(n) for n in str(v.get("shape", len(arr))).split(",")]
        return arr.reshape(shape).tolist()
    return v


def step_of(r: tuple[Any, ...]) -> int:
    return int(re.search(r"step ([\d,]+) / ", r[0]).group(1).replace(",", ""))


def raw_call(
    url: str, api_name: str, data: list[Any], timeout: float = 120, session: str | None = None
) -> tuple[str, Any]:
    """Call an endpoint with hand-made JSON, as any HTTP client may (gradio_client refuses to send some values:
    lone surrogates, NaN), in `session` (None: a new one, as Gradio makes for a call without one). Returns
    ("complete", outputs) or ("error", message); any other answer raises."""
    import urllib.error
    import urllib.request

    base = f"{url.rstrip('/')}/gradio_api/call/{api_name.lstrip('/')}"
    sent: dict[str, Any] = {"data": data} if session is None else {"data": data, "session_hash": session}
    body = json.dumps(sent).encode()  # ASCII-escaped: a lone surrogate travels as \ud800, NaN as NaN
    req = urllib.request.Request(base, data=body, headers={"Content-Type": "application/json"})
    try:
        event_id = json.loads(urllib.request.urlopen(req, timeout=timeout).read())["event_id"]
    except urllib.error.HTTPError as e:  # refused before it was queued (the request itself is malformed)
        return "error", f"HTTP {e.code}: {e.read()[:300].decode(errors='replace')}"
    stream = urllib.request.urlopen(f"{base}/{event_id}", timeout=timeout).read().decode()
    events = re.findall(r"event: (\w+)\ndata: (.*)", stream)
    kind, payload = events[-1]
    if kind == "complete":
        return "complete", json.loads(payload)
    if kind == "error":
        message = json.loads(payload)
        return "error", message.get("error") if isinstance(message, dict) else message
    raise AssertionError(f"unexpected answer from {api_name}: {stream[:300]}")


def wait_until_serving(url: str, proc: Any, log: Path, timeout: float) -> None:
    """Wait for the launched app (`proc`) to answer at `url`; if it exits or never answers, fail with its log."""
    import urllib.request

    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise AssertionError(f"the app did not come up on {url}: {log.read_text()[-3000:]}") from None
            time.sleep(0.5)


def stop_app(proc: Any) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except Exception:  # noqa: BLE001 - it did not stop in time
        proc.kill()


def raw_event(url: str, fn_index: int, data: list[Any], event_data: Any, session: str, timeout: float = 60) -> str:
    """Trigger one of the app's dependencies by its index, as the page does (listed in the API or not), with
    hand-made data and event data. Returns "complete", or the error message, or "refused" (Gradio would not take
    the request). The session's stream is read to its end: the session's next event then finds no stream of the
    last one still open (one that notices its reader gone clears the session's events)."""
    import urllib.error
    import urllib.request

    base = url.rstrip("/") + "/gradio_api"
    body = json.dumps({"data": data, "fn_index": fn_index, "session_hash": session, "event_data": event_data,
                       "trigger_id": None}).encode()  # fmt: skip
    req = urllib.request.Request(f"{base}/queue/join", data=body, headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=timeout).read()
    except urllib.error.HTTPError:
        return "refused"
    answer = "closed"
    with urllib.request.urlopen(f"{base}/queue/data?session_hash={session}", timeout=timeout) as stream:
        for line in stream:
            if not line.startswith(b"data:"):
                continue
            msg = json.loads(line[5:])
            if msg.get("msg") == "process_completed" and answer == "closed":
                out = msg.get("output") or {}
                answer = "complete" if msg.get("success") else str(out.get("error") or out)
            elif msg.get("msg") == "unexpected_error" and answer == "closed":
                answer = str(msg.get("message", "closed"))
            if msg.get("msg") in ("close_stream", "unexpected_error"):
                break
    return answer

"""Many strangers, one server: each visitor's runs are theirs alone, Start over the slots waits in a fair queue,
the storage quota never removes a run in use, and pretrained models are checked against the caps before download.

The API tests launch the app as a public Space runs it (private mode, one training slot) and drive it with several
gradio_client sessions, each a different visitor.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from tests.app_helpers import SAMPLE, TRAIN, poll_until, step_of
from tests.conftest import SHAKESPEARE, launch_app

# start from, preset, layers, heads, embd, context, dropout, batch, lr, schedule, warmup, steps, eval, sample, seed
SHORT = ["", "custom", 1, 2, 32, 32, 0.0, 8, 3e-3, "cosine", 5, 40, 20, 0, 1]
LONG = [*SHORT[:11], 20_000, *SHORT[12:]]
GEN = [0.8, 40, 1.0, 1.0, 0.0, 10, 1, 0.0, 0.0, ""]


@pytest.fixture(scope="module")
def shared_app(tmp_path_factory: pytest.TempPathFactory):
    yield from launch_app(
        tmp_path_factory, GPT_PLAYGROUND_PRIVATE="1", GPT_PLAYGROUND_MAX_JOBS="1", GPT_PLAYGROUND_MAX_QUEUE="3",
        GPT_PLAYGROUND_QUEUE_LAPSE_S="20", GPT_PLAYGROUND_MAX_QUEUE_PER_ADDRESS="3",
    )  # fmt: skip


def visitor(url: str) -> Client:
    c = Client(url, verbose=False)
    c.predict("Paste text", [], SHAKESPEARE * 30, "char", 0.1, api_name="/prepare_data")
    return c


def names(c: Client) -> list[str]:
    return [n for _, n in c.predict(api_name="/list_checkpoints")[1]["choices"]]


def refused(call: Any, match: str = "not one of your checkpoints") -> None:
    with pytest.raises(AppError, match=match):
        call()


@pytest.mark.slow
def test_each_visitor_sees_and_uses_only_their_own_runs(shared_app: Any) -> None:
    runs: Path = shared_app.runs
    alice, bob = visitor(shared_app), visitor(shared_app)
    status = alice.predict(*SHORT, api_name="/start_training")
    assert "Training started" in status and str(runs) not in status
    done = poll_until(alice, lambda r: r[4] == "completed")
    assert str(runs) not in done[0]  # no server path in the progress box either
    (mine,) = [n for n in names(alice) if n.endswith("latest")]
    assert not mine.startswith("/") and "users" not in mine
    assert alice.predict(mine, "ROMEO:", *GEN, api_name="/generate")[1]
    # a 1-layer model inspects (its layer slider has nothing to choose)
    layer = alice.predict(mine, "ROMEO:", 1, 1, "", api_name="/inspect")[6]
    assert layer["interactive"] is False and layer["value"] == 1
    # a second run of the same session gets its own progress and charts (the poll does not stay on the first)
    second = alice.predict(*SHORT, api_name="/start_training").split("`")[1]
    assert second != mine.split("/")[0]
    poll_until(alice, lambda r: second in r[0] and r[4] == "completed")

    # Bob neither sees Alice's run nor reaches it by name, by server path or by climbing out of his folder
    assert names(bob) == []
    (real,) = runs.glob(f"users/*/{mine}")
    for name in (
        mine,
        str(real),
        f"../{real.parent.parent.name}/{mine}",
        f"../../users/{real.parent.parent.name}/{mine}",
    ):
        refused(lambda n=name: bob.predict(n, "ROMEO:", *GEN, api_name="/generate"))
        refused(lambda n=name: bob.predict(n, "ROMEO:", 1, 1, "", api_name="/inspect"))
        refused(lambda n=name: bob.predict(n, "", api_name="/embeddings"))
        refused(lambda n=name: bob.predict(n, api_name="/download_checkpoint"))
        refused(lambda n=name: bob.predict(n, api_name="/export_hf"))
        refused(lambda n=name: bob.predict(n, *SHORT[1:], api_name="/start_training"))
    for path in (real / "config.json", real / "model.safetensors"):  # nor through Gradio's file route
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"{shared_app}gradio_api/file={path}", timeout=10)
    refused(lambda: bob.predict(api_name="/stop_training"), "no training run of yours")
    refused(lambda: bob.predict(500, api_name="/resume_training"), "nothing to resume")
    refused(lambda: bob.predict(str(runs), api_name="/import_pretrained"), "Hub only")
    assert names(bob) == []

    # what the server's owner publishes, everyone sees and uses
    shutil.copytree(real, runs / "published" / "demo")
    assert "published/demo" in names(bob)
    assert bob.predict("published/demo", "ROMEO:", *GEN, api_name="/generate")[1]
    # and Alice still has hers, downloadable
    assert Path(alice.predict(mine, api_name="/download_checkpoint")).stat().st_size > 0


@pytest.mark.slow
def test_start_over_the_slots_waits_in_a_fair_queue(shared_app: Any) -> None:
    url = str(shared_app)
    first, b, c, d, e = (visitor(url) for _ in range(5))
    assert "Training started" in first.predict(*TRAIN, api_name="/start_training")
    poll_until(first, lambda r: step_of(r) >= 1)

    assert "In line" in b.predict(*SHORT, api_name="/start_training")
    assert "In line" in c.predict(*LONG, api_name="/start_training")
    r = b.predict(api_name="/poll")
    assert r[4] == "queued" and "position 1 of 2" in r[0] and "should end in about" in r[0]
    assert "position 2 of 2" in c.predict(api_name="/poll")[0]
    refused(lambda: c.predict(*SHORT, api_name="/start_training"), "waiting")  # one waiting run per visitor

    assert "left the queue" in b.predict(api_name="/leave_queue")  # Leave
    assert "position 1 of 1" in c.predict(api_name="/poll")[0]
    assert "In line" in d.predict(*SHORT, api_name="/start_training")
    assert "In line" in e.predict(*SHORT, api_name="/start_training")
    refused(lambda: visitor(url).predict(*SHORT, api_name="/start_training"), "Busy|address")  # full (3)
    d.close()  # a closed page stops asking: its place lapses (the others keep theirs: their pages ask)
    poll_until(e, lambda r: c.predict(api_name="/poll") and "position 2 of 2" in r[0], timeout=60)

    first.predict(api_name="/stop_training")  # the slot frees up: the first in line starts, the others move up
    poll_until(first, lambda r: e.predict(api_name="/poll") and r[4] == "stopped")
    poll_until(c, lambda r: e.predict(api_name="/poll") and r[4] == "running", timeout=60)
    assert "position 1 of 1" in e.predict(api_name="/poll")[0]
    c.predict(api_name="/stop_training")
    poll_until(e, lambda r: r[4] == "completed", timeout=120)  # ... and runs when c's run is over


@pytest.mark.slow
def test_variations_of_a_built_in_corpus_are_the_visitors_own(shared_app: Any) -> None:
    """The shared cache holds a built-in corpus at the form's defaults only: a visitor's other splits (0.1001,
    0.1002, ...: 12 MB each) land in their own home, where their share counts them and the quota can evict them."""
    runs: Path = shared_app.runs
    c = Client(shared_app, verbose=False)
    before = set(runs.glob("users/*/data/*/meta.json"))
    c.predict(SAMPLE, [], "", "char", 0.1, api_name="/prepare_data")
    assert set(runs.glob("users/*/data/*/meta.json")) == before  # the default: prepared once, for everyone
    for fraction in (0.11, 0.12):
        c.predict(SAMPLE, [], "", "char", fraction, api_name="/prepare_data")
    assert len(set(runs.glob("users/*/data/*/meta.json")) - before) == 2


# ---- in-process: the quota and the pretrained caps -----------------------------------------------------------


def _fake_run(root: Path, rel: str, age_s: float, size: int = 1000) -> Path:
    d = root / rel / "latest"
    d.mkdir(parents=True)
    (d / "config.json").write_text("{}")
    (d / "model.safetensors").write_bytes(b"\0" * size)
    t = time.time() - age_s
    for f in d.iterdir():
        os.utime(f, (t, t))
    return root / rel


def test_quota_removes_the_oldest_runs_never_one_in_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from playground.hosting import enforce_quota

    monkeypatch.setenv("GPT_PLAYGROUND_RUNS", str(tmp_path))
    training = _fake_run(tmp_path, "users/aaa/run-1", age_s=500)  # the oldest, but training
    queued = _fake_run(tmp_path, "users/bbb/run-2", age_s=400)
    old = _fake_run(tmp_path, "users/ccc/run-3", age_s=300)
    pretrained = _fake_run(tmp_path, "pretrained/gpt2", age_s=200)
    new = _fake_run(tmp_path, "users/aaa/run-5", age_s=100)
    removed = enforce_quota(protected=[training, queued], max_runs=3, max_mb=0)
    assert removed == [new, old]  # aaa keeps the most (two runs): their free one first, then the oldest
    assert training.is_dir() and queued.is_dir() and pretrained.is_dir() and not (tmp_path / "users" / "ccc").exists()
    # by disk: against a 1 MB cap the unprotected one goes, the protected stay even if still over
    big = _fake_run(tmp_path, "users/ddd/run-6", age_s=50, size=1_000_000)
    assert enforce_quota(protected=[training, queued, big], max_runs=0, max_mb=1) == [pretrained]
    assert enforce_quota(protected=[], max_runs=0, max_mb=0, user_runs=0, user_mb=0) == []  # no quota: none goes


def _fake_data(root: Path, owner: str, key: str, age_s: float, size: int = 1000) -> Path:
    d = root / "users" / owner / "data" / key
    d.mkdir(parents=True)
    (d / "meta.json").write_text("{}")
    (d / "train.bin").write_bytes(b"\0" * size)
    t = time.time() - age_s
    for f in d.iterdir():
        os.utime(f, (t, t))
    return d


def test_each_visitor_has_a_share_and_loses_their_own_oldest_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One visitor's uploads cannot delete another's run or the owner's published model; data sets count; what a
    queued run will read (its source checkpoint, its data) stays."""
    from playground.hosting import Visitor, enforce_quota, usage

    monkeypatch.setenv("GPT_PLAYGROUND_RUNS", str(tmp_path))
    published = _fake_run(tmp_path, "published/demo", age_s=9000)  # the oldest of all, and never counted
    bobs_run = _fake_run(tmp_path, "users/bob/run-1", age_s=5000)
    bobs_data = _fake_data(tmp_path, "bob", "k1", age_s=4000)
    source = _fake_run(tmp_path, "users/carol/run-src", age_s=6000)  # a queued fine-tune of carol's reads it
    mallory = Visitor("mallory", key="mallory")
    uploads = [_fake_run(tmp_path, f"users/mallory/uploaded/u{i}", age_s=3000 - i * 100) for i in range(8)]
    malloys_data = _fake_data(tmp_path, "mallory", "k2", age_s=100, size=5000)
    removed = enforce_quota(mallory, protected=[malloys_data, source], max_runs=0, max_mb=0, user_runs=3, user_mb=0)
    assert set(removed) == set(uploads[:5])  # within her share of 3: her own 5 oldest went, nobody else's
    assert bobs_run.is_dir() and bobs_data.is_dir() and published.is_dir() and source.is_dir()
    assert usage(mallory) == (3, 3 * 1002 + 5002)  # 3 uploads and her data set, config files included
    # past the server's total, whoever keeps the most loses their oldest first: mallory, not bob
    assert enforce_quota(None, protected=[source], max_runs=4, max_mb=0, user_runs=0, user_mb=0) == [uploads[5]]
    assert bobs_run.is_dir() and source.is_dir() and published.is_dir()
    # data sets count against the share by size, the oldest first
    old_data = _fake_data(tmp_path, "mallory", "k0", age_s=7000, size=5000)
    assert enforce_quota(mallory, max_runs=0, max_mb=0, user_runs=0, user_mb=0.011) == [old_data]
    assert published.is_dir()


def test_others_uploads_never_cost_a_visitor_within_their_share(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe's case: over the server's run count, two visitors' many small uploads must not delete a third's one
    (larger) run: whoever keeps the most runs pays; between equals the newest arrival, the server's own last."""
    from playground.hosting import enforce_quota

    monkeypatch.setenv("GPT_PLAYGROUND_RUNS", str(tmp_path))
    hers = _fake_run(tmp_path, "users/alice/run-1", age_s=5000, size=300_000)
    pretrained = _fake_run(tmp_path, "pretrained/gpt2", age_s=100)
    others = [_fake_run(tmp_path, f"users/{who}/uploaded/u{i}", age_s=4000 - 10 * i, size=64_000)
              for who in ("bob", "eve") for i in range(3)]  # fmt: skip
    removed = enforce_quota(None, max_runs=4, max_mb=0, user_runs=0, user_mb=0)
    assert hers.is_dir() and pretrained.is_dir() and len(removed) == 4 and set(removed) <= set(others)
    # by bytes, whoever keeps the most bytes pays: a visitor over a fair share of the disk
    big = _fake_run(tmp_path, "users/mallory/run-9", age_s=10, size=900_000)
    assert enforce_quota(None, max_runs=0, max_mb=1.2, user_runs=0, user_mb=0) == [big]
    assert hers.is_dir()
    # equals: the newest arrival pays before those who came first
    carol = _fake_run(tmp_path, "users/carol/run-2", age_s=1, size=1000)
    assert enforce_quota(None, max_runs=4, max_mb=0, user_runs=0, user_mb=0) == [carol]


def test_a_visitors_trained_tokenizers_count_and_go_first_when_oldest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four BPE preparations leave four tokenizer files beside the data sets: they count in the visitor's usage and
    go, oldest first, when the visitor is over their share (a data set keeps its own copy of its tokenizer)."""
    from playground.hosting import Visitor, enforce_quota, usage

    monkeypatch.setenv("GPT_PLAYGROUND_RUNS", str(tmp_path))
    me = Visitor("mallory", key="mallory")
    data = _fake_data(tmp_path, "mallory", "k1", age_s=10, size=1000)
    tokenizers = tmp_path / "users" / "mallory" / "data" / "tokenizers"
    tokenizers.mkdir()
    files = []
    for i in range(4):
        f = tokenizers / f"t{i}.json"
        f.write_bytes(b"{}" + b" " * 199_998)
        os.utime(f, (time.time() - 1000 + i, time.time() - 1000 + i))
        files.append(f)
    assert usage(me) == (0, 4 * 200_000 + 1002)
    removed = enforce_quota(me, max_runs=0, max_mb=0, user_runs=0, user_mb=0.5)
    assert removed == files[:2] and data.is_dir() and not files[0].exists() and files[3].exists()
    assert usage(me) == (0, 2 * 200_000 + 1002)


def _hf_dir(tmp_path: Path, **cfg: int) -> Path:
    d = tmp_path / "hf"
    d.mkdir(exist_ok=True)
    base = {"model_type": "gpt2", "vocab_size": 50257, "n_positions": 1024, "n_layer": 2, "n_head": 2, "n_embd": 64}
    (d / "config.json").write_text(json.dumps(base | cfg))
    (d / "model.safetensors").write_bytes(b"not weights: reading them would fail differently")
    return d


def test_pretrained_over_the_caps_is_refused_before_its_weights(tmp_path: Path) -> None:
    from gpt.errors import UserInputError
    from gpt.interop import from_hf
    from playground.common import check_model_size

    xl = _hf_dir(tmp_path, n_layer=48, n_head=25, n_embd=1600)  # gpt2-xl's shape, 1.5B parameters
    with pytest.raises(UserInputError, match=r"1\d\d\d\.\dM parameters; the limit here is 30M"):
        from_hf(xl, tmp_path / "out", check_model_size)
    long = _hf_dir(tmp_path, n_positions=4096, n_embd=32)
    with pytest.raises(UserInputError, match="context 4096 asked; the limit here is 1024"):
        from_hf(long, tmp_path / "out", check_model_size)
    (xl / "config.json").write_bytes(b" " * (2 << 20))  # an endless config is not read to its end
    with pytest.raises(UserInputError, match="larger than"):
        from_hf(xl, tmp_path / "out", check_model_size)
    assert not (tmp_path / "out").exists()


def test_hub_download_fetches_weights_only_within_the_caps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    from gpt.errors import UserInputError
    from gpt.interop import fetch_hf
    from playground.common import check_model_size

    asked: list[str] = []
    (tmp_path / "big").mkdir()
    (tmp_path / "small").mkdir()
    hub = {"big/model": _hf_dir(tmp_path / "big", n_layer=48, n_head=25, n_embd=1600),
           "small/model": _hf_dir(tmp_path / "small")}  # fmt: skip

    def hf_hub_download(name: str, filename: str, **_: Any) -> str:
        asked.append(f"{name}:{filename}")
        return str(hub[name] / filename)

    def snapshot_download(name: str, **_: Any) -> str:
        asked.append(f"{name}:weights")
        return str(hub[name])

    monkeypatch.setattr("gpt.interop._hub_reachable", lambda: None)  # a fake Hub, reachable offline
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    with pytest.raises(UserInputError, match="parameters; the limit"):
        fetch_hf("big/model", check_model_size)
    assert asked == ["big/model:config.json"]  # the weights were never asked for
    assert fetch_hf("small/model", check_model_size) == hub["small/model"]
    assert asked[1:] == ["small/model:config.json", "small/model:weights"]
    with pytest.raises(UserInputError, match="not a Hugging Face model name"):
        fetch_hf("x" * 5000, check_model_size)


def test_a_signed_in_visitor_keeps_their_runs_across_sessions(monkeypatch: pytest.MonkeyPatch) -> None:
    import gradio as gr

    from playground import hosting

    monkeypatch.setattr(hosting, "PRIVATE", True)

    class Request:  # what Gradio hands a handler: each browser session has its own hash
        def __init__(self, session: str) -> None:
            self.session_hash = session

    ada = gr.OAuthProfile({"preferred_username": "ada", "name": "Ada", "profile": "", "picture": ""})
    monday, tuesday = hosting.visitor(Request("s1"), ada), hosting.visitor(Request("s2"), ada)  # type: ignore[arg-type]
    assert monday.owner == tuesday.owner  # signed in: the same home on every visit
    anonymous = [hosting.visitor(Request(s), None).owner for s in ("s1", "s2")]  # type: ignore[arg-type]
    assert anonymous[0] != anonymous[1] and monday.owner not in anonymous  # sessions apart, and apart from accounts


@pytest.mark.slow
def test_hostile_round_three_through_the_api(shared_app: Any) -> None:
    """Two Starts at once make one run; a downloaded checkpoint and a failed run's message hold no server path;
    one visitor's most expensive legal requests leave a bystander's short one answered within seconds."""
    import concurrent.futures
    import zipfile

    runs: Path = shared_app.runs
    alice, bob = visitor(shared_app), visitor(shared_app)
    # two Starts sent at once from one session: one run, and Stop stops it
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        calls = [pool.submit(alice.predict, *LONG, api_name="/start_training") for _ in range(2)]
        outcomes = []
        for f in calls:
            try:
                outcomes.append(f.result())
            except AppError as e:
                outcomes.append(f"refused: {e}")
    assert sum("Training started" in o for o in outcomes) == 1, outcomes
    assert sum("still training or waiting" in o for o in outcomes) == 1, outcomes
    assert "Stopping" in alice.predict(api_name="/stop_training")
    poll_until(alice, lambda r: r[4] == "stopped")
    (mine,) = [n for n in names(alice) if n.endswith("latest")]

    # the download's config.json: no data_dir, no server path anywhere in it
    with zipfile.ZipFile(alice.predict(mine, api_name="/download_checkpoint")) as zf:
        (config,) = [n for n in zf.namelist() if n.endswith("config.json")]
        text = zf.read(config).decode()
    assert "data_dir" not in text and str(runs) not in text and '"/' not in text

    # the most expensive legal requests: many long generations at once from one visitor
    gen_long = [0.8, 0, 1.0, 1.0, 0.0, 1000, 1, 0.0, 0.0, ""]
    bobs = "published/demo" if "published/demo" in names(bob) else mine_of(bob)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        heavy = [pool.submit(alice.predict, mine, "ROMEO:", *gen_long, api_name="/generate") for _ in range(8)]
        time.sleep(1.0)
        t0 = time.time()
        assert bob.predict(bobs, "ROMEO:", *[0.8, 40, 1.0, 1.0, 0.0, 30, 1, 0.0, 0.0, ""], api_name="/generate")[1]
        bystander = time.time() - t0
        refusals = 0
        for f in heavy:
            try:
                f.result(timeout=300)
            except AppError as e:
                refusals += "requests running" in str(e)
    assert refusals >= 8 - 2 - 1  # at most 2 at once per visitor (a finished one frees a place)
    # she holds both model slots with two of her 1,000-token generations: the bystander waits for one of them to end
    # (about 5 s on a quiet machine, 10 s and more on a loaded one), never behind all eight
    assert bystander < 30, f"a bystander's 30-token request took {bystander:.1f} s"
    print(f"bystander's 30-token request under load: {bystander:.2f} s")


@pytest.mark.slow
def test_thirty_visitors_behind_one_address_each_generate(shared_app: Any) -> None:
    """A classroom: thirty visitors from one address (here 127.0.0.1) generate at once; each is served in turn."""
    import concurrent.futures

    model = "published/demo"  # what the teacher put on the server for the class
    if model not in names(Client(shared_app, verbose=False)):
        (real,) = shared_app.runs.glob(f"users/*/{mine_of(visitor(shared_app))}")
        shutil.copytree(real, shared_app.runs / model)
    with concurrent.futures.ThreadPoolExecutor(30) as pool:
        pupils = list(pool.map(lambda _: Client(shared_app, verbose=False), range(30)))
        texts = list(pool.map(lambda c: c.predict(model, "ROMEO:", *GEN, api_name="/generate")[1], pupils))
    assert all(t for t in texts), texts


def mine_of(c: Client) -> str:
    """A checkpoint of this visitor's own, trained for the purpose."""
    existing = [n for n in names(c) if n.endswith("latest")]
    if existing:
        return existing[0]
    c.predict(*SHORT, api_name="/start_training")
    poll_until(c, lambda r: r[4] == "completed")
    return [n for n in names(c) if n.endswith("latest")][0]


@pytest.mark.slow
def test_a_space_with_sign_in_starts_and_offers_it(tmp_path_factory: pytest.TempPathFactory) -> None:
    """`hf_oauth: true` gives the Space these variables; the app must start (gradio[oauth] installed) and show it."""
    env = {"SPACE_ID": "tester/gpt-playground", "SYSTEM": "spaces", "OAUTH_CLIENT_ID": "id", "OAUTH_SCOPES": "openid",
           "OAUTH_CLIENT_SECRET": "secret", "OPENID_PROVIDER_URL": "https://huggingface.co"}  # fmt: skip
    for url in launch_app(tmp_path_factory, **env):
        config = json.loads(urllib.request.urlopen(f"{url}config", timeout=10).read())
        buttons = [c["props"].get("value") for c in config["components"] if c.get("type") == "button"]
        assert "Sign in to keep your runs" in buttons


def test_a_browser_keeps_its_visitor_across_reloads_and_tabs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The page sends its browser's secret when it loads: every session of that browser is the same visitor; a
    session that sent none (an API client), or another browser, is someone else."""
    import threading

    from playground import hosting, settings
    from playground.jobs import Job

    monkeypatch.setattr(hosting, "PRIVATE", True)

    class Request:
        def __init__(self, session: str) -> None:
            self.session_hash, self.headers, self.client = session, {}, None

    secret = hosting.bind_browser(None, Request("tab-1"))  # type: ignore[arg-type]
    assert hosting.SECRET.match(secret) and len(secret) * 6 >= 256  # a fresh 256-bit secret for a new browser
    assert hosting.bind_browser(secret, Request("tab-2")) == secret  # type: ignore[arg-type]  # a reload, a 2nd tab
    one, two = (hosting.visitor(Request(s)) for s in ("tab-1", "tab-2"))  # type: ignore[arg-type]
    assert one == two and one.key == two.key and secret not in (one.owner or "")
    other = hosting.bind_browser("not a secret", Request("elsewhere"))  # type: ignore[arg-type]
    assert other != secret and hosting.visitor(Request("elsewhere")) != one  # type: ignore[arg-type]
    assert hosting.visitor(Request("api-client")) != one  # type: ignore[arg-type]  # sent no secret
    hosting.unbind(Request("tab-2"))  # type: ignore[arg-type]  # that page closed
    assert hosting.visitor(Request("tab-2")) != one  # type: ignore[arg-type]

    # a run's message is scrubbed where it is made: no server path reaches any view of it
    monkeypatch.setattr(settings, "PRIVATE", True)
    job = Job.__new__(Job)
    job._lock, job._answered, job.version, job.status = threading.Lock(), threading.Event(), 0, ""
    where = f"{settings.runs_root()}/users/4bcb1234/run-1/latest"
    job._finish("error", f"the checkpoint at {where} uses the char tokenizer; see /srv/app/gpt/data.py")
    assert "run-1/latest" in job.message and settings.runs_root().as_posix() not in job.message
    assert "/srv/app" not in job.message


@pytest.mark.slow
def test_one_visitors_uploads_never_evict_anothers_run_or_the_owners_published_model(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The probe's case: a visitor's many small checkpoint uploads deleted another visitor's finished run and the
    owner's published model. Now they cost only their own oldest uploads."""
    for url in launch_app(tmp_path_factory, GPT_PLAYGROUND_PRIVATE="1", GPT_PLAYGROUND_MAX_USER_RUNS="2",
                          GPT_PLAYGROUND_MAX_RUNS="4", GPT_PLAYGROUND_MAX_DISK_MB="0"):  # fmt: skip
        runs: Path = url.runs  # type: ignore[attr-defined]
        alice, mallory = visitor(url), visitor(url)
        alice.predict(*SHORT, api_name="/start_training")
        poll_until(alice, lambda r: r[4] == "completed")
        (hers,) = [n for n in names(alice) if n.endswith("latest")]
        (real,) = runs.glob(f"users/*/{hers}")
        shutil.copytree(real, runs / "published" / "demo")
        zipped = alice.predict(hers, api_name="/download_checkpoint")
        for _ in range(6):
            assert "Imported checkpoint" in mallory.predict(_file(zipped), api_name="/upload_checkpoint")[0]
        assert hers in names(alice) and "published/demo" in names(alice)  # untouched
        own = [n for n in names(mallory) if n.startswith("uploaded/")]
        assert len(own) == 2  # her share: her two newest uploads
        assert (runs / "published" / "demo" / "config.json").is_file()


def _file(path: str) -> Any:
    from gradio_client import handle_file

    return handle_file(path)


def test_heavy_requests_have_a_few_places_per_visitor(monkeypatch: pytest.MonkeyPatch) -> None:
    from gpt.errors import UserInputError
    from playground import hosting

    class Request:
        def __init__(self) -> None:
            self.session_hash, self.headers, self.client = "s", {}, type("C", (), {"host": "10.1.1.1"})()

    for private in (False, True):  # locally there is no address to count; on a shared server there is
        monkeypatch.setattr(hosting, "PRIVATE", private)
        me = hosting.Visitor(None, key="k")
        with hosting.heavy_slot(me, None), hosting.heavy_slot(me, None):
            with pytest.raises(UserInputError, match="2 requests running or waiting"):
                with hosting.heavy_slot(me, Request()):  # type: ignore[arg-type]
                    pass
        with hosting.heavy_slot(me, None):  # the places came back
            pass


def _served_in_turn(gate: Any, requests: list[tuple[str, str]], hold: str = "first") -> list[str]:
    """Start `hold` (which takes the gate's only slot), then `requests` (visitor, address) one after another, each
    in its own thread waiting its turn; then let them run. Returns the order they ran in (visitor names)."""
    import threading

    ran: list[str] = []
    release = threading.Event()
    waiting = threading.Semaphore(0)

    def one(v: str, a: str) -> None:
        with gate.place(v, a, lambda ahead: waiting.release()):
            if v == hold:
                release.wait(10)
            ran.append(v)

    first = threading.Thread(target=one, args=(hold, "elsewhere"))
    first.start()
    while gate.waiting() or not gate._busy:  # (the first is running)
        time.sleep(0.001)
    threads = []
    for v, a in requests:
        threads.append(threading.Thread(target=one, args=(v, a)))
        threads[-1].start()
        assert waiting.acquire(timeout=10)  # it is waiting (and was told so) before the next arrives
    release.set()
    for t in [first, *threads]:
        t.join(10)
    return ran[1:]


def test_a_classroom_behind_one_address_is_served_in_turn_not_refused() -> None:
    from gpt.errors import UserInputError
    from playground.hosting import FairGate

    # thirty visitors of one school, one request each, while the model is busy: all wait and all are served
    gate = FairGate(slots=1, per_visitor=2, per_address=48)
    pupils = [(f"pupil{i}", "school") for i in range(30)]
    assert sorted(_served_in_turn(gate, pupils)) == sorted(v for v, _ in pupils)
    # a request from another address does not wait behind the whole class: it is next once it arrives
    gate = FairGate(slots=1, per_visitor=2, per_address=48)
    order = _served_in_turn(gate, [*pupils[:10], ("visitor", "home"), *pupils[10:20]])
    assert order[:3] == ["pupil0", "visitor", "pupil1"], order
    # one visitor's second request waits behind everyone's first
    gate = FairGate(slots=1, per_visitor=2, per_address=48)
    order = _served_in_turn(gate, [("greedy", "a"), ("greedy", "a"), ("calm", "b")])
    assert order == ["greedy", "calm", "greedy"], order
    # past their share a visitor is refused at once, and an address past its (large) share too
    gate = FairGate(slots=2, per_visitor=1, per_address=2)
    with gate.place("v1", "x"), gate.place("v2", "x"):
        with pytest.raises(UserInputError, match="1 requests running or waiting"):
            with gate.place("v1", "y"):
                pass
        with pytest.raises(UserInputError, match="your address"):
            with gate.place("v3", "x"):
                pass

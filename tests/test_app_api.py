"""The web app through its API (gradio_client), against the real app launched on 127.0.0.1."""

from __future__ import annotations

import html
import json
import math
import re
import zipfile
from pathlib import Path
from typing import Any

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from gpt.checkpoint import load as ckpt_load
from gpt.config import SampleConfig, load_config
from gpt.events import read_metrics
from gpt.generate import generate
from gpt.health import diagnose
from gpt.interop import HF_CLASS, hf_target
from playground.charts import best_head
from tests.app_helpers import GPT2_SWITCHES, SAMPLE, TRAIN, plot_data, poll_until, step_of
from tests.conftest import SHAKESPEARE


@pytest.fixture(scope="module")
def trained(app_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One session: paste a corpus, fail a bad upload, train, watch, stop, resume, stop again."""
    c = Client(app_url, verbose=False)
    stats, tokens, *_ = c.predict(PASTE_SOURCE, [], SHAKESPEARE * 30, "char", 0.1, api_name="/prepare_data")
    bad = tmp_path_factory.mktemp("bad") / "photo.txt"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00binary")
    with pytest.raises(AppError, match="not a text file"):
        c.predict("Upload files", [handle_file(str(bad))], "", "char", 0.1, api_name="/prepare_data")

    status = c.predict(*TRAIN, api_name="/start_training")
    assert "Training started" in status
    first = poll_until(c, lambda r: step_of(r) >= 20)
    later = poll_until(c, lambda r: step_of(r) >= step_of(first) + 60)
    c.predict(api_name="/stop_training")
    stopped = poll_until(c, lambda r: r[4] == "stopped")
    return {"client": c, "stats": stats, "tokens": tokens, "first": first, "later": later, "stopped": stopped,
            "run": status.split("`")[1]}  # fmt: skip


PASTE_SOURCE = "Paste text"


def test_prepare_shows_statistics_and_token_view(trained: dict[str, Any], app_url: str) -> None:
    assert "characters" in trained["stats"] and "chars / token" in trained["stats"]
    assert trained["tokens"].count('class="tok"') == 300 and 'title="id ' in trained["tokens"]
    c = Client(app_url, verbose=False)
    stats = c.predict(SAMPLE, [], "", "gpt2", 0.1, api_name="/prepare_data")[0]
    chars, tokens = (int(v.replace(",", "")) for v in stats.split("\n")[-1].split("|")[1:3])
    assert chars > 4_000_000 and 3 < chars / tokens < 4.5  # GPT-2 BPE on English: ~3.5 characters per token


def test_training_runs_loss_falls_and_stops(trained: dict[str, Any]) -> None:
    first, later, stopped = trained["first"], trained["later"], trained["stopped"]
    assert step_of(later) > step_of(first)
    loss_first = plot_data(first[1])[0]["y"]
    loss_later = plot_data(later[1])[0]["y"]
    assert len(loss_later) > len(loss_first)  # the chart gains points while training
    assert sum(loss_later[-3:]) / 3 < sum(loss_first[:2]) / 2  # and the loss falls
    assert "Training stopped at step" in stopped[0] and "completed" not in stopped[0]
    lr, tps = plot_data(later[2])
    assert len(lr["y"]) == len(loss_later) and min(tps["y"]) > 0


def test_second_session_waits_in_line_while_training(trained: dict[str, Any], app_url: str) -> None:
    c = trained["client"]
    stop_step = step_of(trained["stopped"])
    status = c.predict(stop_step + 300, api_name="/resume_training")
    assert f"Resumed from step {stop_step}" in status
    other = Client(app_url, verbose=False)
    assert "In line" in other.predict(*TRAIN, api_name="/start_training")
    waiting = other.predict(api_name="/poll")
    assert "position 1 of 1" in waiting[0] and waiting[4] == "queued"
    assert "left the queue" in other.predict(api_name="/leave_queue")
    r = poll_until(c, lambda r: step_of(r) > stop_step + 20)
    assert len(plot_data(r[1])[0]["y"]) > len(plot_data(trained["stopped"][1])[0]["y"])  # one continued series
    c.predict(api_name="/stop_training")
    poll_until(c, lambda r: r[4] == "stopped")


def latest_checkpoint(c: Client) -> str:
    table, dropdown = c.predict(api_name="/list_checkpoints")
    paths = [p for _, p in dropdown["choices"] if p.endswith("latest")]
    assert paths, table
    return paths[0]


def _settings(**kw: Any) -> list[Any]:
    s = {"temperature": 0.8, "top_k": 40, "top_p": 1.0, "rep": 1.0, "min_p": 0.0, "n": 40, "seed": 7,
         "presence": 0.0, "frequency": 0.0, "stop": ""}  # fmt: skip
    s.update(kw)
    return list(s.values())


def gen(c: Client, ckpt: str, **kw: Any) -> str:
    return c.predict(ckpt, "ROMEO:", *_settings(**kw), api_name="/generate")[1]


def _a_prompt_the_penalty_changes(app_url: Any, ckpt: str) -> tuple[str, str]:
    """A prompt whose greedy continuation (40 tokens) a repetition penalty of 2 changes, and that continuation, from
    the library on the checkpoint's own files."""
    (path,) = [p for p in app_url.runs.rglob(ckpt.split("/")[0]) if (p / "latest").is_dir()]
    loaded = ckpt_load(path / "latest")
    for prompt in ("ROMEO:", "JULIET:", "O Romeo", "Arise, fair", "the the the the", "And I", "Deny"):
        cfgs = [SampleConfig(max_new_tokens=40, temperature=0.0, seed=7, repetition_penalty=r) for r in (1.0, 2.0)]
        plain, penalised = (generate(loaded.model, loaded.tokenizer, prompt, cfg) for cfg in cfgs)
        if plain != penalised:
            return prompt, penalised
    raise AssertionError("a repetition penalty of 2 changed no prompt's greedy text")


def test_generate_with_each_setting(trained: dict[str, Any], app_url: Any) -> None:
    c = trained["client"]
    ckpt = latest_checkpoint(c)
    base = gen(c, ckpt)
    assert len(base) > 20 and gen(c, ckpt) == base  # same seed, same text
    assert gen(c, ckpt, seed=8) != base
    greedy = gen(c, ckpt, temperature=0.0)
    assert gen(c, ckpt, temperature=0.0, seed=99) == greedy
    assert gen(c, ckpt, top_k=1, temperature=1.5) == greedy
    assert gen(c, ckpt, top_p=0.05, temperature=1.5) == greedy  # a nucleus of one token is greedy
    assert gen(c, ckpt, min_p=1.0, temperature=1.5, top_k=0) == greedy  # only the top token passes
    # the repetition penalty reaches the sampler: on a prompt where it changes this model's greedy text (a model
    # that has learned its corpus by heart may keep to it under any penalty), the app writes what the library does
    prompt, penalised = _a_prompt_the_penalty_changes(app_url, ckpt)
    assert c.predict(ckpt, prompt, *_settings(rep=2.0, temperature=0.0), api_name="/generate")[1] == penalised
    assert len(gen(c, ckpt, n=5)) <= 5
    assert "\n" not in gen(c, ckpt, stop="\n")
    with pytest.raises(AppError, match="greater than maximum"):
        gen(c, ckpt, top_p=1.5)
    with pytest.raises(AppError, match="never saw"):
        c.predict(ckpt, "ROMEO: 日本", 0.8, 40, 1.0, 1.0, 0.0, 10, 1, 0.0, 0.0, "", api_name="/generate")


def test_branch_from_an_alternative_and_back(trained: dict[str, Any]) -> None:
    """Pick another token at step 4 and continue from it; the original comes back."""
    c = trained["client"]
    ckpt = latest_checkpoint(c)
    settings = [0.8, 40, 1.0, 1.0, 0.0, 30, 7, 0.0, 0.0, ""]
    pieces, plain, *_ = c.predict(ckpt, "ROMEO:", *settings, api_name="/generate")
    tokens = [p["token"] for p in pieces[1:]]  # (the first piece is the prompt)
    assert "".join(tokens) == plain
    branched_pieces, branched, *_ = c.predict(ckpt, "ROMEO:", 3, 1, *settings, api_name="/branch")
    b = [(p["token"], p["class_or_confidence"]) for p in branched_pieces[1:]]
    assert [t for t, _ in b[:3]] == tokens[:3]  # the prefix, as it was
    assert b[3][1] == "↳ your choice" and b[3][0] != tokens[3]  # the chosen alternative, marked
    assert branched.startswith("".join(tokens[:3]) + b[3][0]) and branched != plain
    assert c.predict("ROMEO:", api_name="/back_to_original")[1] == plain
    again = c.predict(ckpt, "ROMEO:", 3, 1, *settings, api_name="/branch")[1]
    assert again == branched  # from the original again, with the same seed: the same branch
    assert c.predict("ROMEO:", api_name="/back_to_original")[1] == plain
    with pytest.raises(Exception, match="choose one of the alternatives"):
        c.predict(ckpt, "ROMEO:", 3, 99, *settings, api_name="/branch")


def test_inspect_attention_rows_sum_to_one(trained: dict[str, Any]) -> None:
    c = trained["client"]
    ckpt = latest_checkpoint(c)
    prompt = "ROMEO:\nBut soft"
    attention, grid, next_tok, lens, params, emb, layer, head, recipe = c.predict(
        ckpt, prompt, 2, 1, "", api_name="/inspect"
    )
    assert "rope positions · rmsnorm · swiglu · qk-norm · untied head" in recipe  # the defaults: the modern recipe
    z = plot_data(attention)[0]["z"]
    assert len(z) == len(prompt) and all(len(row) == len(prompt) for row in z)
    assert all(abs(sum(row) - 1) < 1e-4 for row in z)
    assert all(z[i][j] == 0 for i in range(len(z)) for j in range(i + 1, len(z)))  # causal
    assert len(plot_data(grid)) == 2  # two heads
    bars = plot_data(next_tok)[0]
    assert len(bars["x"]) == 20 and 0.5 < sum(bars["x"]) <= 1.0001
    assert len(plot_data(lens)[0]["z"]) == 3  # embeddings + 2 layers
    assert sum(row[1] for row in params["data"]) > 0
    assert {"token embedding", "output head"} <= {row[0] for row in params["data"]}  # untied: two of them
    assert len(plot_data(emb)[0]["x"]) == 45  # the whole (small) vocabulary by default
    emb = c.predict(ckpt, "ROMEO", api_name="/embeddings")
    assert len(plot_data(emb)[0]["x"]) == len(set("ROMEO"))


def test_checkpoint_download_and_upload_round_trip(trained: dict[str, Any], tmp_path: Path) -> None:
    c = trained["client"]
    ckpt = latest_checkpoint(c)
    zpath = c.predict(ckpt, api_name="/download_checkpoint")
    with zipfile.ZipFile(zpath) as zf:
        assert {Path(n).name for n in zf.namelist()} == {"config.json", "model.safetensors", "trainer.pt"}
    msg, table, dropdown = c.predict(handle_file(zpath), api_name="/upload_checkpoint")
    assert "Imported checkpoint" in msg and any("uploaded" in p for _, p in dropdown["choices"])
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../../escape.txt", "x")
    with pytest.raises(AppError, match="unsafe entry"):
        c.predict(handle_file(str(evil)), api_name="/upload_checkpoint")
    notours = tmp_path / "notours.zip"
    with zipfile.ZipFile(notours, "w") as zf:
        zf.writestr("ck/config.json", json.dumps({"hello": 1}))
        zf.writestr("ck/model.safetensors", b"junk")
    with pytest.raises(AppError, match="not a GPT Playground checkpoint"):
        c.predict(handle_file(str(notours)), api_name="/upload_checkpoint")


def test_pretrained_gpt2_load_generate_fine_tune_and_export(
    trained: dict[str, Any], app_url: str, tmp_path: Path
) -> None:
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    hf_cfg = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=64, n_positions=64, vocab_size=50257)
    transformers.GPT2LMHeadModel(hf_cfg).save_pretrained(tmp_path / "my-gpt2")

    c = Client(app_url, verbose=False)
    with pytest.raises(AppError, match="not available"):
        c.predict("surely-not-cached-model", api_name="/import_pretrained")
    message, dropdown = c.predict(str(tmp_path / "my-gpt2"), api_name="/import_pretrained")
    assert "Loaded" in message and dropdown["value"].endswith("my-gpt2")
    text = c.predict(dropdown["value"], "Hello", 0.0, 0, 1.0, 1.0, 0.0, 10, 1, 0.0, 0.0, "", api_name="/generate")[1]
    assert text  # random weights: any text, decoded by GPT-2 BPE

    # the session with char-level data is told to use the model's tokenizer
    with pytest.raises(AppError, match="uses the gpt2 tokenizer"):
        trained["client"].predict(dropdown["value"], *TRAIN[1:], api_name="/start_training")
    # a session with no data: the built-in corpus is tokenized with GPT-2 BPE for it
    status = c.predict(dropdown["value"], *TRAIN[1:], api_name="/start_training")
    assert "Fine-tuning" in status
    poll_until(c, lambda r: step_of(r) >= 10)
    c.predict(api_name="/stop_training")
    poll_until(c, lambda r: r[4] == "stopped")

    ckpts = [
        p for _, p in c.predict(api_name="/list_checkpoints")[1]["choices"] if "run-" in p and p.endswith("latest")
    ]
    zpath, said = c.predict(ckpts[0], api_name="/export_hf")
    assert "`GPT2LMHeadModel`" in said and "Context limit: 64 tokens" in said  # learned positions end there
    assert "The checkpoint you fine-tune exports" in c.predict(dropdown["value"], *TRAIN[1:], api_name="/export_note")
    with zipfile.ZipFile(zpath) as zf:
        zf.extractall(tmp_path / "exported")
    (hf_dir,) = (tmp_path / "exported").iterdir()
    model = transformers.GPT2LMHeadModel.from_pretrained(hf_dir)
    assert model.config.n_layer == 2
    assert transformers.AutoTokenizer.from_pretrained(hf_dir)("Hello world")["input_ids"] == [15496, 995]


def test_sampling_explainer_follows_the_settings(trained: dict[str, Any]) -> None:
    c = trained["client"]
    ckpt = latest_checkpoint(c)
    gen(c, ckpt, n=10)  # a generation of this session: the explainer reads its steps
    settings = {"temperature": 1.0, "top_k": 3, "top_p": 1.0, "rep": 1.0, "min_p": 0.0, "n": 10, "seed": 7,
                "presence": 0.0, "frequency": 0.0, "stop": ""}  # fmt: skip
    fig = c.predict(ckpt, "ROMEO:", 2, *settings.values(), api_name="/explain")
    model, shaped, final = plot_data(fig)[:3]
    assert sum(p > 0 for p in final["y"]) == 3 and abs(sum(final["y"]) - 1) < 1e-4  # top-k 3: three tokens left
    assert shaped["y"] == pytest.approx(model["y"], abs=1e-6)  # temperature 1, no penalties: the model's own
    assert "Step 3" in json.loads(fig["plot"])["layout"]["title"]["text"]
    greedy = plot_data(c.predict(ckpt, "ROMEO:", 0, *{**settings, "temperature": 0.0}.values(), api_name="/explain"))
    assert sorted(greedy[2]["y"])[-1] == 1.0 and sum(greedy[2]["y"]) == 1.0  # greedy: all on one token


def test_compare_overlays_runs_and_lists_what_differs(trained: dict[str, Any]) -> None:
    c = trained["client"]
    # a second, short run of this session, with GPT-2's recipe (the first one trains the modern recipe: the defaults)
    status = c.predict(*TRAIN[:11], 40, *TRAIN[12:], *GPT2_SWITCHES, api_name="/start_training")
    poll_until(c, lambda r: r[4] == "completed")
    names = [trained["run"], status.split("`")[1]]
    fig, summary, diff, _, circuits = c.predict(names, "tokens seen", "loss per token", api_name="/compare")
    traces = plot_data(fig)
    assert len(traces) == 4  # train and val of each
    heads = plot_data(circuits)  # beside it, each run's best induction and previous-token head
    assert [t["name"] for t in heads] == [f"{n} {score}" for n in names for score in ("induction", "previous token")]
    assert heads[2]["x"][0] == 0 and len(heads[2]["x"]) == 2  # the second run's, scored at step 0 and at its end
    assert all(x % 256 == 0 for x in traces[0]["x"])  # tokens seen: steps x 8 x 32
    assert [row[0] for row in summary["data"]] == names and all(row[1] > 0 for row in summary["data"])
    differ = {r[0]: r[1:] for r in diff["data"]}
    assert "train.max_steps" in differ  # the settings that differ between them, the recipe's switches among them
    assert sorted(differ["model.pos"]) == ["learned", "rope"] and sorted(differ["train.optimizer"]) == ["adamw", "muon"]
    assert "model.n_layer" not in differ
    # The modern run (the default recipe) leaves the app in a format transformers loads; GPT-2's says its context
    assert differ["model.pos"] == ["rope", "learned"]
    modern, old = (f"{n}/latest" for n in names)
    zpath, said = c.predict(modern, api_name="/export_hf")
    with zipfile.ZipFile(zpath) as zf:
        hf_cfg = json.loads(zf.read(next(n for n in zf.namelist() if n.endswith("config.json"))))
    assert hf_cfg["architectures"] == [DEFAULT_CLASS] and f"`{DEFAULT_CLASS}`" in said and "Context" not in said
    zpath, said = c.predict(old, api_name="/export_hf")
    assert "`GPT2LMHeadModel`" in said and "Context limit: 32 tokens" in said and "IndexError" in said
    with zipfile.ZipFile(zpath) as zf:
        assert any(n.endswith("model.safetensors") for n in zf.namelist())
        assert "Context limit: 32 tokens" in zf.read(next(n for n in zf.namelist() if n.endswith("README.md"))).decode()
    with pytest.raises(AppError, match="not one of your checkpoints"):
        c.predict(["../../etc"], "step", "loss per token", api_name="/compare")


DEFAULT_CLASS = HF_CLASS[hf_target(load_config("configs/tiny.yaml").model)]
# The recipe switches with ReLU² and QK-norm together, which no Hugging Face format has (as GPT2_SWITCHES' order)
STUCK_SWITCHES = ["rope", "rmsnorm", "relu2", True, False, True, False, "muon", 0.02, 1e-4]


def test_the_train_tab_says_which_switches_keep_a_model_from_export(trained: dict[str, Any], tmp_path: Path) -> None:
    """Before training, the sentence under the switches; after it, a refused export's reason where the download
    would have been (not only in a toast), the last download kept."""
    from gpt import checkpoint as ckpt
    from gpt.archive import zip_dir
    from gpt.config import Config, ModelConfig
    from gpt.model import GPT
    from gpt.tokenizer import CharTokenizer

    c = trained["client"]
    said = c.predict(*TRAIN, api_name="/export_note")  # the switches left out: the form's, the default recipe's
    assert said.startswith("✅") and f"`{DEFAULT_CLASS}`" in said
    said = c.predict(*TRAIN, *GPT2_SWITCHES, api_name="/export_note")
    assert "`GPT2LMHeadModel`" in said and "stops at 32 tokens" in said
    said = c.predict(*TRAIN, *STUCK_SWITCHES, api_name="/export_note")
    assert said.startswith("⚠️") and "model.activation=relu2 with model.qk_norm=true" in said

    mc = ModelConfig(vocab_size=8, block_size=16, n_layer=1, n_head=2, n_embd=16, pos="rope", norm="rmsnorm",
                     activation="relu2", qk_norm=True, bias=False)  # fmt: skip
    ckpt.save(tmp_path / "stuck" / "latest", GPT(mc), Config(model=mc), CharTokenizer("abcdefgh"), step=1)
    msg, *_ = c.predict(handle_file(str(zip_dir(tmp_path / "stuck" / "latest", tmp_path / "stuck.zip"))),
                                 api_name="/upload_checkpoint")  # fmt: skip
    name = msg.split("`")[1]
    kept, said = c.predict(name, api_name="/export_hf")
    assert said.startswith("⚠️ **Not exported:**") and "model.activation=relu2 with model.qk_norm=true" in said
    assert not isinstance(kept, str)  # no new file: the download shown before stays


def test_bpe_tokenizer_trained_shown_and_trained_on(trained: dict[str, Any], app_url: str) -> None:
    """A visitor trains a BPE on the built-in corpus, sees what it learned, merges a word, trains and generates;
    Compare puts the run beside a char run in bits per byte."""
    c = Client(app_url, verbose=False)
    stats, tokens, merges, compared, views, steps = c.predict(  # (and the section shown: not in the API)
        SAMPLE, [], "", "bpe", 0.1, 512, " nothing", api_name="/prepare_data"
    )
    assert "bpe tokenizer" in stats and "of 512" in stats
    assert merges.count("<tr>") == 21 and "␣t" in merges and "Longest tokens" in merges  # 20 merges and a header
    rows = {r.split("</td>")[0].removeprefix("<td>"): r for r in compared.split("<tr>")[2:]}
    assert set(rows) >= {"this BPE (512)", "char", "byte", "GPT-2 (50,257)"}, rows.keys()
    assert views.count('class="token-view"') == 4 and "tokens" in views
    assert steps.count("<div>") >= 3 and "merge 1" in steps  # " nothing": bytes, merges, the final tokens
    assert "<code class='tok'>" in c.predict(" wherefore", api_name="/merge_steps")
    with pytest.raises(AppError, match="32768"):
        c.predict(SAMPLE, [], "", "bpe", 0.1, 10**9, "", api_name="/prepare_data")

    status = c.predict(*TRAIN, api_name="/start_training")
    assert "Training started" in status
    # the Train tab's line, after the first evaluation (step 50): the val loss with its bits per byte
    r = poll_until(c, lambda r: "bits/byte" in r[0])
    assert re.search(r"loss [\d.]+ · val [\d.]+ \([\d.]+ bits/byte\)", r[0]), r[0]
    c.predict(api_name="/stop_training")
    poll_until(c, lambda r: r[4] == "stopped")
    assert len(gen(c, latest_checkpoint(c), n=10)) > 0

    # Compare offers bits per byte, and draws this BPE run beside the char run on it
    params = c.view_api(print_info=False, return_format="dict")["named_endpoints"]["/compare"]["parameters"]
    (y_axis,) = [p for p in params if "bits per byte" in json.dumps(p)]
    assert "loss per token" in json.dumps(y_axis)  # the two choices
    names = [trained["run"], status.split("`")[1]]  # the char run (ASCII text: a byte a token) and this one
    per_token = plot_data(c.predict(names, "step", "loss per token", api_name="/compare")[0])
    per_byte, summary = c.predict(names, "step", "bits per byte", api_name="/compare")[:2]
    per_byte = plot_data(per_byte)
    assert [t["name"] for t in per_byte] == [f"{n} {part}" for n in names for part in ("train", "val")]
    (char_val, char_bpb), (bpe_val, bpe_bpb) = ((per_token[i]["y"], per_byte[i]["y"]) for i in (1, 3))
    assert char_bpb == pytest.approx([v / math.log(2) for v in char_val], rel=1e-5)
    bytes_per_token = bpe_val[-1] / math.log(2) / bpe_bpb[-1]
    assert 1.5 < bytes_per_token < 4  # a 512-token BPE on Shakespeare: a few characters a token
    rows = {row[0]: row for row in summary["data"]}
    assert summary["headers"][4] == "val bits/byte" and rows[names[1]][4] == pytest.approx(bpe_bpb[-1], abs=1e-3)


# /poll's outputs after the status (r[4]): the timer, the status line, the Training health and Circuits views
HEALTH, CIRCUITS, HEALTH_NOTE, CIRCUITS_NOTE = 7, 8, 9, 10


def test_the_training_health_and_circuits_views_fill_as_a_run_trains(app_url: str) -> None:
    """After a short run the Train tab's Training health view has a line per parameter group and per layer and says
    in words what the run's own log says; the Circuits view has each layer's best heads, scored at each evaluation."""
    c = Client(app_url, verbose=False)
    status = c.predict(*TRAIN[:11], 100, *TRAIN[12:], api_name="/start_training")
    shown: dict[int, Any] = {}

    def completed(r: tuple[Any, ...]) -> bool:
        shown.update({i: r[i] for i in (HEALTH, CIRCUITS, HEALTH_NOTE, CIRCUITS_NOTE) if isinstance(r[i], str)})
        return r[4] == "completed"  # (a poll sends a note only when it changed, a chart only when it grew)

    poll_until(c, completed, timeout=300)
    log = read_metrics(app_url.runs / status.split("`")[1] / "metrics.jsonl")
    assert log.health_steps == [25, 50, 75, 100] and log.circuit_steps == [0, 50, 100]

    health = plot_data(shown[HEALTH])
    groups = log.health_groups[0]
    assert groups[0] == "embedding" and "layer 2 MLP" in groups
    assert [t["name"] for t in health if t.get("showlegend") is not False] == groups  # the legend: the groups
    assert len(health) == 2 * len(groups) + 2 * 2  # ratio and gradient norm per group; dead units, entropy per layer
    for g, trace in enumerate(health[: len(groups)]):
        assert trace["x"] == log.health_steps
        assert trace["y"] == pytest.approx([r[g] for r in log.update_ratio]) and -6 < trace["y"][-1] < 0
    assert all(v > 0 for t in health[len(groups) : 2 * len(groups)] for v in t["y"])  # gradient norms (log axis)
    note = shown[HEALTH_NOTE]
    assert "✓ Init: the loss at step 0 is" in note and "close to ln(" in note
    problems = diagnose(log.health())  # the latest reading, as the log has it
    said = [html.escape(p) for p in problems] or ["all readings in their healthy range"]
    assert all(f"At step 100: {line}" in note for line in said), note

    circuits = {t["name"]: t for t in plot_data(shown[CIRCUITS])}
    assert list(circuits) == ["layer 1 induction", "layer 2 induction", "layer 1 previous token",
                              "layer 2 previous token", "in-context"]  # fmt: skip
    assert circuits["layer 2 induction"]["x"] == [0, 50, 100]
    assert circuits["layer 2 induction"]["y"] == pytest.approx([max(grid[1]) for grid in log.induction])
    assert circuits["in-context"]["y"] == pytest.approx(log.in_context)
    layer, head, score = best_head(log.induction[-1])
    assert f"At step 100: best induction head L{layer + 1}H{head + 1} {score:.2f}" in shown[CIRCUITS_NOTE]


def test_compare_samples_each_run_with_the_same_prompt_and_seed(trained: dict[str, Any]) -> None:
    c = trained["client"]
    # this session's training runs (an imported pretrained model may be listed too: it has no "latest")
    runs = sorted(
        {n.split("/")[0] for _, n in c.predict(api_name="/list_checkpoints")[1]["choices"] if n.startswith("run-")}
    )
    assert len(runs) >= 2  # (the compare test above trained a second run)
    table = c.predict(runs[:2], "ROMEO:", 7, api_name="/compare_samples")
    assert [r[0] for r in table["data"]] == runs[:2]
    assert all(r[1].startswith("ROMEO:") and len(r[1]) > len("ROMEO:") + 20 for r in table["data"])
    assert c.predict(runs[:2], "ROMEO:", 7, api_name="/compare_samples")["data"] == table["data"]  # the same seed
    with pytest.raises(AppError, match="pick one to"):
        c.predict([], "ROMEO:", 7, api_name="/compare_samples")
    with pytest.raises(AppError, match="not one of your checkpoints"):
        c.predict(["../../etc"], "ROMEO:", 7, api_name="/compare_samples")

"""Hostile input to the command-line tools (issue 20, part 6): every failure is exit code 2 and ONE line on stderr
starting with "error:", never a traceback, a crash (a signal) or a hang (each run has a timeout).

The cases that could crash or hang the interpreter if the code regressed run the real CLI in a subprocess with a
timeout, as a user would: named pipes and devices, the alias bomb, the crafted trainer states that once ended in a
segfault, bytes on the command line that are not UTF-8. The others run `cli.main` in this process (`inproc`, see
tests.test_cli.run_in_process: the same exit code and output, without a subprocess's seconds of imports). The crafted
trainer states are also checked through the trainer's resume path, and the catch-all error path through the
console-script functions.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from gpt import checkpoint as ckpt
from gpt import cli
from gpt.config import Config
from gpt.data import load_prepared
from gpt.errors import UserInputError
from gpt.tokenizer import ByteTokenizer
from gpt.trainer import Trainer
from tests.conftest import SHAKESPEARE
from tests.test_cli import Run, run_in_process, script

ROOT = Path(__file__).resolve().parent.parent
TINY = ["model.n_layer=1", "model.n_embd=16", "model.n_head=2", "model.block_size=16", "train.batch_size=2",
        "train.eval_iters=1", "train.sample_interval=0", "train.tensorboard=false"]  # fmt: skip
TIMEOUT = 60  # seconds: a hang fails the test instead of the suite


def run_cli(*args: str | bytes, cwd: Path, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("GPT_DEBUG", None)
    r = subprocess.run([sys.executable, "-m", "gpt.cli", *args], cwd=cwd, env=env, capture_output=True, timeout=timeout)
    return subprocess.CompletedProcess(r.args, r.returncode, r.stdout.decode(errors="replace"),
                                       r.stderr.decode(errors="replace"))  # fmt: skip


@pytest.fixture
def inproc(world: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> Run:
    """`python -m gpt.cli ARGS` in this process, in the world folder (tests.test_cli.run_in_process): for the cases
    that cannot crash or hang the interpreter on a regression, a subprocess's seconds of imports saved."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return run_in_process(list(args), world, monkeypatch, capfd)

    return run


def one_error(r: subprocess.CompletedProcess[str], *needles: str) -> str:
    """The run failed the way the CLI promises: code 2, one `error:` line naming the problem, no traceback."""
    assert r.returncode == 2, f"exit code {r.returncode} (a negative one is a signal): {r.stderr[-2000:]}"
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a corpus, its prepared char data set (data/) and a 2-step run (run/) that holds trainer.pt."""
    w = tmp_path_factory.mktemp("hostile-cli")
    (w / "corpus.txt").write_text(SHAKESPEARE * 20, encoding="utf-8")
    # in this process (test_cli runs the commands as processes): what they print is only shown if they fail
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        mp.chdir(w)
        mp.delenv("GPT_DEBUG", raising=False)
        threads = torch.get_num_threads()
        # GPT-2's recipe: it exports to Hugging Face GPT-2, and its trainer.pt is AdamW's (the crafted states below)
        codes = [cli.main(["prepare", "corpus.txt", "--tokenizer", "char", "--out", "data"]),
                 cli.main(["train", "--config", "tiny-2019", "--data", "data", "--out", "run", "train.max_steps=2",
                           *TINY])]  # fmt: skip
        torch.set_num_threads(threads)
    assert codes == [0, 0], out.getvalue()[-3000:]
    assert (w / "run/latest/trainer.pt").is_file()
    (w / "a_file").write_text("not a folder")
    return w


# ----- output onto a file, or somewhere unwritable ---------------------------------------------------------------


@pytest.mark.parametrize(
    "command,out",
    [("prepare", "a_file"), ("prepare", "a_file/sub"), ("prepare", "/proc/no-such-dir"), ("train", "a_file"),
     ("train", "/proc/no-such-dir"), ("to-hf", "a_file"), ("to-hf", "/proc/no-such-dir")],
)  # fmt: skip
def test_out_onto_a_file_or_an_unwritable_place(inproc: Run, world: Path, command: str, out: str) -> None:
    args = {
        "prepare": ["prepare", "corpus.txt", "--out", out],
        "train": ["train", "--data", "data", "--out", out, "train.max_steps=2", *TINY],
        "to-hf": ["convert", "to-hf", "run", out],
    }[command]
    one_error(inproc(*args), repr(out))
    assert (world / "a_file").read_text() == "not a folder"  # nothing was written over it


def test_from_hf_never_replaces_a_file_or_a_folder_that_is_not_a_checkpoint(inproc: Run, world: Path) -> None:
    r = inproc("convert", "to-hf", "run", "hf")
    assert r.returncode == 0, r.stderr
    one_error(inproc("convert", "from-hf", "hf", "a_file"), "is a file")
    one_error(inproc("convert", "from-hf", "hf", "hf"), "not a checkpoint")  # would delete its source
    assert (world / "hf/config.json").is_file() and (world / "a_file").is_file()


# ----- configs: depth, size, aliases, types ---------------------------------------------------------------------

LOL = '"lol"'
BILLION_LAUGHS = f"a: &a [{','.join([LOL] * 9)}]\n" + "".join(
    f"{name}: &{name} [{','.join(['*' + prev] * 9)}]\n" for prev, name in zip("abcdefgh", "bcdefghi", strict=True)
)  # 9**9 "lol"s from 342 bytes, when aliases are expanded


@pytest.mark.parametrize(
    "name,text,needle",
    [
        ("deep_flow", "train:\n  lr: " + "[" * 5000 + "]" * 5000 + "\n", "deeper than"),
        ("deep_mapping", "train: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n", "deeper than"),
        ("deep_block", "".join(" " * i + "-\n" for i in range(1000)), "deeper than"),
        ("alias_bomb", BILLION_LAUGHS, "alias"),
        ("anchor", "train: &t\n  lr: 0.1\n", "anchor"),
        ("huge", "train:\n  lr: 0.1\n" + "#" * (2 << 20) + "\n", "larger than"),
        ("not_utf8", "train:\n  device: caf\xe9\n", "not valid YAML"),
        ("list_not_mapping", "- 1\n- 2\n", "mapping"),
        ("int_keys", "1: a\nb: c\n", "unknown config section"),
        ("nested_value", "train:\n  lr: [[1]]\n", "train.lr"),
        ("mapping_value", "train:\n  device: {a: 1}\n", "train.device"),
        ("nested_list_setting", "sample:\n  stop: [a, [b]]\n", "sample.stop"),
        ("huge_number", "train:\n  max_steps: " + "9" * 4000 + "\n", "train.max_steps"),
        ("too_many_digits", "train:\n  max_steps: " + "9" * 5000 + "\n", "cannot be read"),
        ("bad_date", "train:\n  lr: 2024-02-30\n", "cannot be read"),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 30 else "",  # PYTEST_CURRENT_TEST must fit in the environment
)
def test_hostile_config_files_are_refused_fast(inproc: Run, world: Path, name: str, text: str, needle: str) -> None:
    assert len(BILLION_LAUGHS) < 400  # the 378-byte bomb of the report, give or take
    f = world / f"{name}.yaml"
    f.write_bytes(text.encode("latin-1" if name == "not_utf8" else "utf-8"))
    # The bomb would be gigabytes if it were expanded: in a process of its own. Too deep, PyYAML's composer (Python
    # code) would raise a RecursionError, which the process survives: in this one.
    if name == "alias_bomb":
        r = run_cli("train", "--config", str(f), cwd=world, timeout=30)
    else:
        r = inproc("train", "--config", str(f))
    assert len(one_error(r, needle)) < 600


@pytest.mark.parametrize(
    "override,needle",
    [
        ("train.lr=" + "[" * 3000 + "]" * 3000, "deeper than"),
        ("train.lr=" + "{a: " * 3000 + "1" + "}" * 3000, "deeper than"),
        ("train." + ".".join(["a"] * 3000) + "=1", "unknown setting"),
        ("train.lr=" + "9" * 5000, "train.lr"),
        ("sample.stop=&x a", "anchor"),
        ("sample.stop=[a, *x]", "alias"),
        ("sample.stop=[a, [b]]", "sample.stop"),
        ("train.device={a: 1}", "train.device"),
        ("x" * 5000, "section.key=value"),
    ],
    ids=["deep_list", "deep_map", "dotted_key", "huge_number", "anchor", "alias", "nested_list", "map", "no_equals"],
)
def test_hostile_overrides_are_refused_in_one_short_line(inproc: Run, override: str, needle: str) -> None:
    assert len(one_error(inproc("train", "--data", "data", override), needle)) < 600


# ----- devices this machine does not have --------------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize(
    "args",
    [
        ["train", "--data", "data", "train.device=cuda:1"],
        ["train", "--data", "data", "train.device=cuda"],
        ["generate", "--checkpoint", "run", "--device", "cuda", "--prompt", "ROMEO:"],
        ["generate", "--checkpoint", "run", "--device", "cuda:0", "--prompt", "JULIET:"],
    ],
)
def test_cuda_on_a_machine_without_cuda(inproc: Run, args: list[str]) -> None:
    one_error(inproc(*args), "no usable CUDA GPU")


@pytest.mark.parametrize("device", ["foo", "cuda:x", "meta", "cpu:0:0"])
def test_a_device_that_is_not_one(inproc: Run, device: str) -> None:
    one_error(inproc("generate", "--checkpoint", "run", "--device", device, "--prompt", "x"), "not a device")


# ----- prepared data sets --------------------------------------------------------------------------------------


def _copy_data(world: Path, name: str) -> Path:
    d = world / name
    d.mkdir()
    for f in ("train.bin", "val.bin", "meta.json"):
        (d / f).write_bytes((world / "data" / f).read_bytes())
    return d


def _edit_meta(d: Path, **fields: Any) -> None:
    meta = json.loads((d / "meta.json").read_text())
    (d / "meta.json").write_text(json.dumps({**meta, **fields}))


def test_token_ids_past_the_vocabulary_are_refused_at_load(inproc: Run, world: Path) -> None:
    d = _copy_data(world, "data_bad_ids")
    ids = np.fromfile(d / "train.bin", dtype=np.uint16)
    ids[len(ids) // 2] = 60000
    ids.tofile(d / "train.bin")
    one_error(inproc("train", "--data", str(d), "train.max_steps=2", *TINY), "token id 60,000")
    with pytest.raises(UserInputError, match="token id 60,000"):
        load_prepared(d)


@pytest.mark.parametrize(
    "name,damage",
    [
        ("meta_list", lambda d: (d / "meta.json").write_text("[1, 2]")),
        ("meta_counts", lambda d: _edit_meta(d, train_tokens=1)),
        ("meta_vocab", lambda d: _edit_meta(d, vocab_size=10**6)),
        ("meta_tokenizer", lambda d: _edit_meta(d, tokenizer=[1])),
        ("meta_dtype", lambda d: _edit_meta(d, dtype="float64")),
        ("meta_fifo", lambda d: ((d / "meta.json").unlink(), os.mkfifo(d / "meta.json"))),
        ("train_fifo", lambda d: ((d / "train.bin").unlink(), os.mkfifo(d / "train.bin"))),
        ("odd_size", lambda d: (d / "val.bin").write_bytes(b"\x00\x00\x00")),
    ],
)
def test_broken_data_sets_are_refused(inproc: Run, world: Path, name: str, damage: Callable[[Path], Any]) -> None:
    d = _copy_data(world, f"data_{name}")
    damage(d)
    args = ["train", "--data", str(d), "train.max_steps=2", *TINY]
    r = run_cli(*args, cwd=world, timeout=30) if "fifo" in name else inproc(*args)  # a pipe could hang: a process
    one_error(r, "not a prepared data set")


# ----- input folders with pseudo files, pipes, devices -------------------------------------------------------------


def test_input_folder_links_to_proc_pipes_and_devices_are_skipped(inproc: Run, world: Path) -> None:
    folder = world / "corpus_dir"
    folder.mkdir()
    (folder / "real.txt").write_text(SHAKESPEARE * 5, encoding="utf-8")
    (folder / "mem.txt").symlink_to("/proc/self/mem")
    (folder / "zero.txt").symlink_to("/dev/zero")
    (folder / "dangling.txt").symlink_to(world / "nowhere")
    os.mkfifo(folder / "pipe.txt")
    r = run_cli("prepare", str(folder), "--tokenizer", "char", "--out", "data_folder", cwd=world)
    assert r.returncode == 0, r.stderr
    assert "prepared 1 file(s)" in r.stdout
    for special in ("mem.txt", "zero.txt", "pipe.txt"):  # named directly: refused
        args = ["prepare", str(folder / special), "--out", "o"]
        # a pipe or /dev/zero, read, would hang: in a process, with a timeout (/proc/self/mem fails its first read)
        r = inproc(*args) if special == "mem.txt" else run_cli(*args, cwd=world, timeout=30)
        one_error(r, "not a regular file")


# ----- Hugging Face directories --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_dir(world: Path) -> Path:
    r = script("gpt-convert", "to-hf", "run", "hf_export", cwd=world)  # the console script, as a user runs it
    assert r.returncode == 0, r.stderr
    assert (world / "hf_export" / "gpt_playground_tokenizer.json").is_file()  # a char model: our tokenizer file
    return world / "hf_export"


def _copy_hf(src: Path, name: str) -> Path:
    d = src.parent / name
    d.mkdir()
    for f in src.iterdir():
        (d / f.name).write_bytes(f.read_bytes())
    return d


@pytest.mark.parametrize(
    "name,content,needle",
    [
        ("truncated", '{"type": "char", "chars": ', "not valid JSON"),
        ("not_object", "[1, 2]", "not a JSON object"),
        ("unknown", '{"type": "sentencepiece"}', "unknown tokenizer"),
        ("deep", "[" * 100_000, "not valid JSON"),
        ("binary", "\x00\xff\xfe", "not valid JSON"),
        ("fifo", None, "not a regular file"),
    ],
)
def test_broken_tokenizer_file(inproc: Run, hf_dir: Path, name: str, content: str | None, needle: str) -> None:
    d = _copy_hf(hf_dir, f"hf_tok_{name}")
    f = d / "gpt_playground_tokenizer.json"
    f.unlink()
    if content is None:
        os.mkfifo(f)
    else:
        f.write_bytes(content.encode("utf-8", "surrogateescape"))
    args = ["convert", "from-hf", str(d), str(d.parent / f"ours_{name}")]
    # (deep: json's RecursionError, from a bounded read)
    r = run_cli(*args, cwd=d.parent, timeout=30) if name == "fifo" else inproc(*args)
    one_error(r, needle)


@pytest.mark.parametrize("name", ["config.json", "model.safetensors"])
def test_from_hf_with_a_named_pipe_does_not_hang(hf_dir: Path, name: str) -> None:
    d = _copy_hf(hf_dir, f"hf_fifo_{name}")
    (d / name).unlink()
    os.mkfifo(d / name)
    one_error(run_cli("convert", "from-hf", str(d), str(d.parent / f"ours_fifo_{name}"), cwd=d.parent, timeout=30))


def test_from_hf_config_too_large(inproc: Run, hf_dir: Path) -> None:
    d = _copy_hf(hf_dir, "hf_big")
    (d / "config.json").write_text(" " * (2 << 20) + "{}")
    one_error(inproc("convert", "from-hf", str(d), str(d.parent / "ours_big")), "larger than")


def test_checkpoint_weights_as_a_named_pipe_do_not_hang(world: Path) -> None:
    d = world / "ckpt_fifo"
    d.mkdir()
    for f in (world / "run/latest").iterdir():
        (d / f.name).write_bytes(f.read_bytes())
    (d / "model.safetensors").unlink()
    os.mkfifo(d / "model.safetensors")
    one_error(run_cli("generate", "--checkpoint", str(d), "--prompt", "x", cwd=world, timeout=30), "not a regular file")


# ----- prompts that are not UTF-8 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--prompt", "--stop"])
def test_invalid_utf8_on_the_command_line(inproc: Run, world: Path, flag: str) -> None:
    args: list[str | bytes] = ["generate", "--checkpoint", "run", "--max-new-tokens", "5"]
    args += [b"--prompt", b"ROMEO"] if flag == "--stop" else []
    if flag == "--prompt":  # the bytes on a real command line
        r = run_cli(*args, flag.encode(), b"RO\xffMEO", cwd=world)
    else:  # as Python's startup hands them to the program: undecodable bytes as lone surrogates
        r = inproc(*(os.fsdecode(a) for a in args), flag, os.fsdecode(b"RO\xffMEO"))
    one_error(r, f"{flag} is not valid UTF-8", "0xff")


def test_byte_tokenizer_refuses_text_that_has_no_utf8() -> None:
    prompt = os.fsdecode(b"ab\xff")  # how a bad byte on the command line reaches Python
    with pytest.raises(UserInputError, match="not valid UTF-8"):
        ByteTokenizer().encode(prompt)
    with pytest.raises(UserInputError, match="not valid UTF-8"):
        ByteTokenizer().encode_arrays([prompt])
    assert ByteTokenizer().encode("ab") == [97, 98]


# ----- crafted trainer.pt -------------------------------------------------------------------------------------------


def _craft(world: Path, name: str, change: Callable[[dict[str, Any]], Any]) -> Path:
    """A copy of the 2-step run whose trainer.pt is changed by `change` (plain tensors and dicts: it still passes
    torch.load(weights_only=True))."""
    d = world / f"crafted_{name}"
    (d / "latest").mkdir(parents=True)
    for f in (world / "run/latest").iterdir():
        (d / "latest" / f.name).write_bytes(f.read_bytes())
    state = torch.load(d / "latest/trainer.pt", weights_only=True)
    change(state)
    torch.save(state, d / "latest/trainer.pt")
    torch.load(d / "latest/trainer.pt", weights_only=True)  # still "safe" to load
    return d


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(state: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        node: Any = state
        for key in parents:
            node = node[int(key) if key.isdigit() else key]
        node[int(last) if last.isdigit() else last] = value(node[int(last) if last.isdigit() else last])

    return change


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def change(state: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        node: Any = state
        for key in parents:
            node = node[int(key) if key.isdigit() else key]
        del node[int(last) if last.isdigit() else last]

    return change


def _rng_position(t: torch.Tensor) -> torch.Tensor:
    raw = bytearray(t.numpy().tobytes())
    struct.pack_into("<i", raw, 8, 624)  # 624 draws left from position 624: reads past the twister's array
    struct.pack_into("<Q", raw, 16, 624)
    return torch.frombuffer(raw, dtype=torch.uint8).clone()


CRAFTED: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "exp_avg_shape": (_set("optimizer/state/3/exp_avg", lambda t: torch.zeros(2)), "parameter 3 (exp_avg)"),
    "exp_avg_sq_bigger": (
        _set("optimizer/state/0/exp_avg_sq", lambda t: torch.zeros(t.shape[0] + 1, t.shape[1])),
        "parameter 0 (exp_avg_sq)",
    ),  # fmt: skip
    "exp_avg_stride_0": (_set("optimizer/state/1/exp_avg", lambda t: torch.zeros(1).expand(*t.shape)), "dense"),
    "exp_avg_dtype": (_set("optimizer/state/2/exp_avg", lambda t: t.double()), "float64"),
    "exp_avg_int": (_set("optimizer/state/2/exp_avg", lambda t: t.long()), "int64"),
    "exp_avg_not_tensor": (_set("optimizer/state/2/exp_avg", lambda t: t.tolist()), "a list"),
    "exp_avg_nan": (_set("optimizer/state/2/exp_avg", lambda t: t.fill_(float("nan"))), "NaN"),
    "exp_avg_sq_negative": (_set("optimizer/state/2/exp_avg_sq", lambda t: t - 1), "negative"),
    "exp_avg_missing": (_delete("optimizer/state/4/exp_avg"), "parameter 4 has"),
    "step_vector": (_set("optimizer/state/0/step", lambda t: torch.zeros(3)), "scalar"),
    "step_not_tensor": (_set("optimizer/state/0/step", lambda t: 2), "scalar"),
    "step_negative": (_set("optimizer/state/0/step", lambda t: torch.tensor(-5.0)), "step is -5"),
    "state_unknown_param": (_set("optimizer/state", lambda s: {**s, 999: s[0]}), "parameter 999"),
    "state_not_dict": (_set("optimizer/state", lambda s: list(s.values())), "per-parameter state"),
    "groups_fewer": (_set("optimizer/param_groups", lambda g: g[:1]), "1 parameter groups, expected 2"),
    "groups_more": (_set("optimizer/param_groups", lambda g: g + g[:1]), "3 parameter groups, expected 2"),
    "group_params_count": (_set("optimizer/param_groups/0/params", lambda p: p[:-1]), "group 0 lists other"),
    "group_params_swapped": (_set("optimizer/param_groups/0/params", lambda p: p[::-1]), "group 0 lists other"),
    "group_amsgrad": (_set("optimizer/param_groups/1/amsgrad", lambda v: True), "amsgrad"),
    "group_betas": (_set("optimizer/param_groups/1/betas", lambda v: "ab"), "betas"),
    "group_lr_nan": (_set("optimizer/param_groups/0/lr", lambda v: float("nan")), "lr"),
    "group_missing_key": (_delete("optimizer/param_groups/0/eps"), "other settings"),
    "optimizer_missing": (_delete("optimizer"), "no optimizer"),
    "optimizer_not_dict": (_set("optimizer", lambda o: torch.zeros(3)), "optimizer state is a float32 tensor"),
    "no_torch_rng": (_delete("torch_rng"), "no torch_rng"),
    "torch_rng_size": (_set("torch_rng", lambda t: t[:100].clone()), "torch_rng"),
    "torch_rng_dtype": (_set("torch_rng", lambda t: t.float()), "torch_rng"),
    "torch_rng_position": (_set("torch_rng", _rng_position), "not a valid generator state"),
    "data_rng_position": (_set("batches/generator", _rng_position), "data generator"),
    "data_rng_zeros": (_set("batches/generator", lambda t: torch.zeros_like(t)), "data generator"),
    "data_cursor": (_set("batches/cursor", lambda c: -1), "cursor"),
    "data_cursor_float": (_set("batches/cursor", lambda c: 1.5), "cursor"),
    "batches_missing_key": (_delete("batches/cursor"), "data position"),
    "step_string": (_set("step", lambda s: "2"), "step is '2'"),
    "step_huge": (_set("step", lambda s: 2**70), "step is"),
    "best_val_string": (_set("best_val", lambda v: "low"), "best_val"),
    "scaler_junk": (_set("scaler", lambda s: {"scale": -1.0}), "grad scaler"),
    "scaler_tensor": (_set("scaler", lambda s: torch.ones(3)), "grad scaler"),
    "cuda_rng_float": (_set("cuda_rng", lambda t: torch.zeros(4)), "cuda_rng"),
    "not_a_dict": (lambda s: s.clear(), "no step"),
}


def test_crafted_trainer_pt_with_a_wrong_optimizer_shape_does_not_crash_the_resume(world: Path) -> None:
    """The report's case: fused AdamW wrote past a too-small exp_avg (signal 11). Now refused before torch sees it."""
    for name in ("exp_avg_shape", "exp_avg_stride_0"):
        change, needle = CRAFTED[name]
        d = _craft(world, f"cli_{name}", change)
        r = run_cli("train", "--resume", str(d), "train.max_steps=4", cwd=world, timeout=120)
        assert r.returncode != -11, "segfault"
        line = one_error(r, "trainer.pt does not fit this model", needle)
        if name == "exp_avg_shape":
            assert "shape (2,)" in line and "expected a float32 tensor of shape (16, 16)" in line


@pytest.mark.parametrize("name", ["optimizer_missing", "torch_rng_position"])
def test_crafted_trainer_pt_variants_through_the_cli(inproc: Run, world: Path, name: str) -> None:
    change, needle = CRAFTED[name]
    d = _craft(world, f"cli_{name}", change)
    args = ["train", "--resume", str(d), "train.max_steps=4"]
    # a generator state past its array, if it were loaded, could crash: in a process of its own
    r = run_cli(*args, cwd=world, timeout=120) if name == "torch_rng_position" else inproc(*args)
    one_error(r, needle)


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_crafted_trainer_states_are_refused_before_they_are_loaded(world: Path, name: str) -> None:
    change, needle = CRAFTED[name]
    d = _craft(world, name, change)
    cfg = Config.from_dict(ckpt.read_meta(d)["config"])
    cfg.train.max_steps = 4
    with pytest.raises(UserInputError, match="trainer.pt does not fit this model") as e:
        Trainer(cfg, load_prepared(world / "data"), d, resume=d)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_an_untouched_trainer_state_still_resumes(world: Path) -> None:
    d = _craft(world, "untouched", lambda s: None)
    cfg = Config.from_dict(ckpt.read_meta(d)["config"])
    cfg.train.max_steps = 3
    trainer = Trainer(cfg, load_prepared(world / "data"), d, resume=d)
    assert trainer.step == 2 and trainer.run().step == 3
    state = copy.deepcopy(ckpt.load_trainer_state(d))
    ckpt.check_trainer_state(state, trainer.optimizers, trainer.scaler, trainer.device)  # what it saved fits too


# ----- argparse, and the one error path for everything else ------------------------------------------------------


@pytest.mark.parametrize(
    "args,needle",
    [
        (["train", "--bogus"], "unrecognized arguments"),
        (["generate"], "--checkpoint"),
        (["generate", "--checkpoint", "run", "--top-k", "many"], "invalid int value"),
        (["prepare", "corpus.txt", "--tokenizer", "sentencepiece", "--out", "o"], "invalid choice"),
        (["nothing"], "unknown command"),
        ([], "no command given"),
    ],
)
def test_argument_errors_are_one_line(inproc: Run, args: list[str], needle: str) -> None:
    one_error(inproc(*args), needle)


@pytest.mark.parametrize(
    "exc,needle",
    [
        (RuntimeError("boom\nsecond line"), "error: RuntimeError: boom second line"),
        (RecursionError("maximum recursion depth exceeded"), "error: RecursionError: maximum recursion"),
        (MemoryError(), "error: MemoryError: no message"),
        (FileNotFoundError(2, "No such file or directory", "x.yaml"), "error: FileNotFoundError: [Errno 2]"),
        (KeyError("x" * 5000), "error: KeyError: 'xxx"),
    ],
)
def test_unexpected_errors_are_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], exc: BaseException, needle: str
) -> None:
    def fail(*_: Any, **__: Any) -> None:
        raise exc

    monkeypatch.delenv("GPT_DEBUG", raising=False)
    monkeypatch.setattr("gpt.config.load_config", fail)
    assert cli.train_main(["--config", "tiny"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(needle) and len(err) < 320, err
    monkeypatch.setenv("GPT_DEBUG", "1")  # developers get the exception itself
    with pytest.raises(type(exc)):
        cli.train_main(["--config", "tiny"])


def test_ctrl_c_while_loading_exits_130_quietly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*_: Any, **__: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("gpt.config.load_config", interrupted)
    assert cli.train_main(["--config", "tiny"]) == 130
    assert capsys.readouterr().err == ""


def test_user_errors_keep_their_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.train_main(["--config", "no-such-preset"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: config 'no-such-preset' not found") and "UserInputError" not in err

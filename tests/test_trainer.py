"""The trainer: events, schedule, exact resume, stop, checkpoints, divergence."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import pytest
import torch

from gpt import checkpoint as ckpt
from gpt.config import Config, apply_overrides
from gpt.data import prepare
from gpt.errors import UserInputError
from gpt.events import Event, print_event, read_metrics, run_listeners
from gpt.trainer import DivergenceError, Trainer, compile_wanted, ddp_uses_cuda, lr_at


def small_config(**train: object) -> Config:
    cfg = Config()
    cfg.model.block_size, cfg.model.n_layer, cfg.model.n_head, cfg.model.n_embd = 16, 1, 2, 32
    cfg.model.dropout = 0.1  # exercises the RNG state in resume
    t = cfg.train
    t.batch_size, t.max_steps, t.warmup_steps, t.eval_interval, t.eval_iters = 4, 30, 5, 10, 2
    t.log_interval, t.sample_interval, t.sample_tokens, t.checkpoint_interval = 1, 0, 20, 0
    t.dtype, t.tensorboard = "float32", False
    for k, v in train.items():
        setattr(t, k, v)
    return cfg.validate()


@pytest.fixture
def data(corpus_file: Path, tmp_path: Path):
    return prepare([corpus_file], tokenizer="char", out=tmp_path / "data")


def run(cfg: Config, data, out: Path, resume: Path | None = None) -> list[Event]:
    events: list[Event] = []
    listeners = [events.append, *run_listeners(out, cfg.train.tensorboard)]  # as gpt-train runs it
    Trainer(cfg, data, out, resume=resume, listeners=listeners).run()
    return events


def losses(events: list[Event]) -> dict[int, float]:
    return {e.step: e.data.loss for e in events if e.kind == "step"}


def test_events_and_checkpoints(data, tmp_path: Path) -> None:
    cfg = small_config(sample_interval=15, tensorboard=True)
    events = run(cfg, data, tmp_path / "run")
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert kinds.count("step") == 30 and kinds.count("eval") == 3 and kinds.count("sample") == 2
    assert events[-1].data.status == "completed"
    step = next(e for e in events if e.kind == "step").data
    assert {"loss", "lr", "tokens_per_s", "grad_norm", "eta", "elapsed"} <= set(vars(step))
    evals = [e.data for e in events if e.kind == "eval"]
    assert all(abs(e.perplexity - 2.718281828**e.val_loss) < 1e-3 for e in evals)
    # bits per byte beside every val loss: an ASCII corpus with a char tokenizer has a byte a token, so loss / ln 2
    assert all(e.val_bpb == pytest.approx(e.val_loss / math.log(2)) for e in evals)
    logged = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert logged.val_bpb == [e.val_bpb for e in evals] and logged.eval_steps == [10, 20, 30]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(tmp_path / "run" / "tb"))
    board.Reload()
    assert [s.value for s in board.Scalars("val/bpb")] == pytest.approx([e.val_bpb for e in evals])
    sample = next(e for e in events if e.kind == "sample").data.text
    assert isinstance(sample, str) and sample
    for name in ("latest", "best"):
        assert (tmp_path / "run" / name / "model.safetensors").is_file()
    assert (tmp_path / "run" / "latest" / "trainer.pt").is_file()
    assert list((tmp_path / "run" / "tb").glob("events.out.tfevents.*"))
    first, last = losses(events)[1], losses(events)[30]
    assert last < first  # it learns


def test_resume_gives_the_same_losses_as_an_uninterrupted_run(data, tmp_path: Path) -> None:
    full = losses(run(small_config(max_steps=24), data, tmp_path / "full"))
    part = Trainer(small_config(max_steps=24), data, tmp_path / "part")
    part.listeners.append(lambda e: part.stop() if e.kind == "step" and e.step == 12 else None)
    assert part.run().status == "stopped"
    cfg = apply_overrides(small_config(), ["train.max_steps=24"])
    resumed = losses(run(cfg, data, tmp_path / "part", resume=tmp_path / "part"))
    assert sorted(resumed) == list(range(13, 25))
    for step, loss in resumed.items():
        assert loss == pytest.approx(full[step], abs=1e-6), step


def test_stop_from_another_thread_saves_and_says_stopped(data, tmp_path: Path) -> None:
    events: list[Event] = []
    trainer = Trainer(small_config(max_steps=100000), data, tmp_path / "run", listeners=[events.append])
    steps_seen = threading.Event()

    def listen(e: Event) -> None:
        if e.kind == "step" and e.step >= 5:
            steps_seen.set()

    trainer.listeners.append(listen)
    t = threading.Thread(target=trainer.run)
    t.start()
    assert steps_seen.wait(60)
    trainer.stop()
    t.join(60)
    done = events[-1]
    assert done.kind == "done" and done.data.status == "stopped"
    assert ckpt.load(tmp_path / "run").step == done.step >= 5


def test_lr_schedules() -> None:
    cfg = small_config(lr=1.0, min_lr=0.1, warmup_steps=10, max_steps=110)
    assert lr_at(0, cfg.train) == pytest.approx(0.1)
    assert lr_at(9, cfg.train) == pytest.approx(1.0)
    assert lr_at(60, cfg.train) == pytest.approx(0.55)  # cosine midpoint
    assert lr_at(110, cfg.train) == pytest.approx(0.1)
    cfg.train.schedule = "linear"
    assert lr_at(35, cfg.train) == pytest.approx(0.1 + 0.75 * 0.9)
    cfg.train.schedule = "constant"
    assert lr_at(100, cfg.train) == 1.0


def test_divergence_stops_with_a_clear_message(data, tmp_path: Path) -> None:
    events: list[Event] = []
    trainer = Trainer(small_config(max_steps=50), data, tmp_path / "run", listeners=[events.append])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer.raw_model.lm_head.weight, "data", trainer.raw_model.lm_head.weight.data * float("nan"))
        with pytest.raises(DivergenceError, match="lower train.lr"):
            trainer.run()
    assert events[-1].kind == "error"
    assert not (tmp_path / "run" / "latest").exists()  # nothing saved from a diverged run


def test_context_longer_than_corpus_is_refused(data, tmp_path: Path) -> None:
    cfg = small_config()
    cfg.model.block_size = 20000
    with pytest.raises(UserInputError, match="needs at least 20,001"):
        Trainer(cfg, data, tmp_path / "run")


def test_resume_past_max_steps_says_what_to_raise(data, tmp_path: Path) -> None:
    run(small_config(max_steps=5), data, tmp_path / "run")
    with pytest.raises(UserInputError, match="train.max_steps"):
        Trainer(small_config(max_steps=5), data, tmp_path / "run", resume=tmp_path / "run")


def test_fine_tune_from_a_checkpoint_starts_at_step_0_with_its_weights(data, tmp_path: Path) -> None:
    run(small_config(max_steps=20), data, tmp_path / "base")
    base = ckpt.load(tmp_path / "base")
    cfg = small_config(max_steps=3)
    cfg.model.n_layer = 3  # ignored: the architecture comes with the weights
    trainer = Trainer(cfg, data, tmp_path / "tuned", init_from=tmp_path / "base")
    assert trainer.step == 0 and trainer.cfg.model.n_layer == base.config.model.n_layer
    assert torch.equal(trainer.raw_model.lm_head.weight.cpu(), base.model.lm_head.weight)  # (trained on a GPU, if any)
    first = next(e for e in run_trainer(trainer) if e.kind == "step")
    fresh = next(e for e in run(small_config(max_steps=3), data, tmp_path / "fresh") if e.kind == "step")
    assert first.data.loss < fresh.data.loss  # it starts from what the base model learned


def test_fine_tune_refuses_data_with_another_tokenizer(data, corpus_file: Path, tmp_path: Path) -> None:
    run(small_config(max_steps=2), data, tmp_path / "base")
    other = prepare([corpus_file], tokenizer="byte", out=tmp_path / "bytes")
    with pytest.raises(UserInputError, match="uses the char tokenizer"):
        Trainer(small_config(), other, tmp_path / "t", init_from=tmp_path / "base")


def run_trainer(trainer: Trainer) -> list[Event]:
    events: list[Event] = []
    trainer.listeners.append(events.append)
    trainer.run()
    return events


def test_samples_during_training_work_for_a_corpus_without_newlines(tmp_path: Path) -> None:
    p = tmp_path / "one_line.txt"
    p.write_text("to be or not to be that is the question " * 40, encoding="utf-8")
    data = prepare([p], tokenizer="char", out=tmp_path / "data")
    events = run(small_config(max_steps=4, sample_interval=2, eval_interval=4), data, tmp_path / "run")
    assert [e.kind for e in events].count("sample") == 2


def test_compile_is_on_by_default_on_cuda_only() -> None:
    assert compile_wanted("auto", torch.device("cuda")) and not compile_wanted("auto", torch.device("cpu"))
    assert compile_wanted("on", torch.device("cpu")) and not compile_wanted("off", torch.device("cuda"))
    assert apply_overrides(Config(), ["train.compile=true"]).train.compile == "on"  # older configs' booleans
    assert apply_overrides(Config(), ["train.compile=false"]).train.compile == "off"
    with pytest.raises(UserInputError, match="train.compile must be auto, on or off"):
        apply_overrides(Config(), ["train.compile=fast"])


def test_a_failing_compile_says_so_and_the_run_goes_on_eagerly(
    data, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch._inductor.compile_fx as inductor

    def no_compiler(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no C++ compiler found")  # what a machine without a compiler gives, made on purpose

    monkeypatch.setattr(inductor, "compile_fx", no_compiler)
    torch._dynamo.reset()
    cfg = small_config(compile="on", max_steps=5)
    events = run(cfg, data, tmp_path / "run")
    compiles = [e.data for e in events if e.kind == "compile"]
    assert compiles[0].seconds is None and "no C++ compiler found" in compiles[1].fallback
    assert [e.kind for e in events].count("step") == 5 and events[-1].data.status == "completed"
    print_event(next(e for e in events if e.kind == "compile" and e.data.fallback))
    assert "training on without it (eager)" in capsys.readouterr().out


def test_more_processes_than_gpus_never_makes_a_device_ordinal(capsys: pytest.CaptureFixture[str]) -> None:
    assert ddp_uses_cuda("auto", 1, 1) and ddp_uses_cuda("cuda", 2, 2)
    assert not ddp_uses_cuda("auto", 2, 1)  # torchrun --nproc_per_node=2 on one GPU: gloo on the CPU, said so
    assert "training on the CPU (gloo)" in capsys.readouterr().out
    with pytest.raises(UserInputError, match=r"2 processes on this machine but 1 GPU\(s\).*--nproc_per_node=1"):
        ddp_uses_cuda("cuda", 2, 1)
    assert not ddp_uses_cuda("auto", 2, 0) and not ddp_uses_cuda("cpu", 2, 2)
    with pytest.raises(UserInputError, match="sees no GPU"):
        ddp_uses_cuda("cuda", 1, 0)

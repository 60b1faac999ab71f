"""Command-line tools: gpt-prepare, gpt-train, gpt-generate, gpt-convert (console scripts), and `python -m gpt.cli CMD`.

Every failure ends with exit code 2 and one line on stderr, never a traceback: `error: <what to fix>` for bad
arguments or input (a UserInputError, or argparse's complaint), `error: <ExceptionType>: <message>` for anything
else (cut to one line of about 300 characters). Ctrl-C while loading ends quietly with exit code 130 (during
training it stops the run with a checkpoint). For developers, GPT_DEBUG=1 in the environment re-raises the
unexpected errors with their traceback.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, NoReturn

from gpt.config import Config, DataConfig, TaskConfig, TaskName, choices, resolve_config_path
from gpt.errors import UserInputError
from gpt.tokenizer import BPE_MAX_VOCAB, BPE_MIN_VOCAB, TextTokenizerName

MAX_MESSAGE = 300  # characters of an unexpected error's message


def _fail(message: str, limit: int = 4000) -> int:
    line = " ".join(part.strip() for part in message.splitlines()) or message  # one line, whatever the message holds
    print(f"error: {line if len(line) <= limit else line[: limit - 3] + '...'}", file=sys.stderr, flush=True)
    return 2


def _guard(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """The one error path of every command: exit code 2 and one line on stderr (see the module docstring)."""

    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except UserInputError as e:
            return _fail(str(e))
        except BrokenPipeError:  # `gpt-generate ... | head`: stop writing, say nothing
            _silence_stdout()
            return 0
        except KeyboardInterrupt:
            return 130
        except Exception as e:  # noqa: BLE001 - anything else (RecursionError, MemoryError, OSError, bugs): one line
            if os.environ.get("GPT_DEBUG", "") not in ("", "0"):
                raise
            try:
                text = str(e)
            except Exception:  # noqa: BLE001 - a message that cannot even be printed
                text = ""
            return _fail(f"{type(e).__name__}: {text or 'no message'}", MAX_MESSAGE)

    return run


def _silence_stdout() -> None:
    """Point stdout at /dev/null: the reader went away, and Python would complain when flushing it at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


class _Parser(argparse.ArgumentParser):
    """argparse with its complaints as one `error:` line (argparse prints the usage and the error on two)."""

    def error(self, message: str) -> NoReturn:
        _fail(f"{message} (see {self.prog} --help)")
        raise SystemExit(2)


def _check_device(name: str, setting: str) -> None:
    """Refuse a device this machine does not have, before anything is loaded onto it."""
    import torch

    if name == "auto":
        return
    if name not in ("cpu", "cuda", "mps") and not re.fullmatch(r"cuda:\d{1,4}", name):
        raise UserInputError(f"{setting}={name[:40]!r} is not a device; use auto, cpu, cuda, cuda:N or mps")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            built = "with" if torch.backends.cuda.is_built() else "without"
            raise UserInputError(
                f"{setting}={name}: this machine has no usable CUDA GPU (torch {torch.__version__} was built {built} "
                "CUDA); use cpu or auto"
            )
        index, count = int(name.partition(":")[2] or 0), torch.cuda.device_count()
        if index >= count and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            raise UserInputError(f"{setting}={name}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserInputError(f"{setting}=mps: this machine has no Apple GPU (MPS); use cpu or auto")


def _out_dir(path: str | Path, flag: str = "--out", create: bool = False) -> Path:
    """An output folder that exists or can be made (made now if `create`): not a file, nor under one, nor somewhere
    unwritable. Checked before any work is done, so a long run does not fail at its first write."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UserInputError(f"{flag} {str(out)!r} is a file; give a folder")
    base = out
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise UserInputError(f"{flag} {str(out)!r} cannot be created: {str(base)!r} is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise UserInputError(f"{flag} {str(out)!r} is not writable; give a folder you can write to")
    if create:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserInputError(f"{flag} {str(out)!r} cannot be created ({e.strerror or type(e).__name__})") from None
    return out


def _text_arg(value: str, flag: str) -> str:
    """A text argument as valid Unicode: undecodable bytes on the command line arrive as lone surrogates."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError as e:
        try:
            raw = os.fsencode(value)
            raw.decode("utf-8")
            where = f"character {e.start:,}"
        except UnicodeDecodeError as d:
            where = f"byte 0x{raw[d.start]:02x} at offset {d.start:,}"
        except UnicodeEncodeError:
            where = f"character {e.start:,}"
        raise UserInputError(f"{flag} is not valid UTF-8 text ({where}); give UTF-8 text") from None


# ----- gpt-prepare ----------------------------------------------------------------------------------


# gpt-prepare --task's options: flag -> (the TaskConfig field, its help)
TASK_FLAGS = {
    "--modulus": ("modulus", "modular-addition: p (a + b mod p; every pair once)"),
    "--train-fraction": ("train_fraction", "the share of the examples trained on; the rest are held out"),
    "--seed": ("seed", "the examples and their split (the same seed, the same data)"),
    "--length": ("length", "sort, reverse, copy, parity, brackets: tokens of the input"),
    "--values": ("values", "sort, reverse, copy: the numbers 0 .. values - 1"),
    "--digits": ("digits", "addition: digits of each operand"),
    "--examples": ("examples", "tasks other than modular addition: distinct examples drawn"),
}


def _prepare_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="*", help="text files and/or folders of .txt/.md files (none with --task)")
    tokenizers = "char, byte, GPT-2's BPE, or bpe: a byte-level BPE trained on these files (--vocab-size)"
    p.add_argument("--tokenizer", choices=choices(TextTokenizerName), default="gpt2", help=tokenizers)
    vocab = f"--tokenizer bpe: its vocabulary, {BPE_MIN_VOCAB} to {BPE_MAX_VOCAB:,} tokens (default %(default)s)"
    p.add_argument("--vocab-size", type=int, default=DataConfig.bpe_vocab_size, help=vocab)
    p.add_argument("--out", required=True, help="output directory for train.bin, val.bin, meta.json")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--task", choices=choices(TaskName), help="an algorithmic task's examples instead of text")
    defaults = TaskConfig()
    for flag, (name, text) in TASK_FLAGS.items():
        kind = float if isinstance(getattr(defaults, name), float) else int
        p.add_argument(flag, type=kind, help=f"--task: {text} (default {getattr(defaults, name)})")


@_guard
def _prepare(args: argparse.Namespace) -> int:
    from gpt.data import prepare

    t0 = time.perf_counter()
    out = _out_dir(args.out)
    if args.task or any(getattr(args, name) is not None for name, _ in TASK_FLAGS.values()):
        return _prepare_task(args, out, t0)
    if not args.inputs:
        raise UserInputError("give the text files or folders to prepare, or --task NAME for a task's examples")
    d = prepare(args.inputs, tokenizer=args.tokenizer, out=out, val_fraction=args.val_fraction,
                vocab_size=args.vocab_size, progress=_progress_printer())  # fmt: skip
    m = d.meta
    print(
        f"prepared {len(m['files'])} file(s), {m['chars']:,} chars -> {m['train_tokens']:,} train + "
        f"{m['val_tokens']:,} val tokens ({m['tokenizer']['type']}, vocab {m['vocab_size']:,}, "
        f"{m['dtype']}) in {time.perf_counter() - t0:.1f}s -> {d.dir}"
    )
    return 0


def _prepare_task(args: argparse.Namespace, out: Path, t0: float) -> int:
    """gpt-prepare --task NAME [options]: the task's examples as a data set; a flag out of range is named."""
    if not args.task:
        raise UserInputError(f"{', '.join(f for f, (n, _) in TASK_FLAGS.items() if getattr(args, n) is not None)} "
                             "belongs to --task NAME; name the task")  # fmt: skip
    if args.inputs:
        raise UserInputError("give text files or --task, not both")
    given = {name: getattr(args, name) for name, _ in TASK_FLAGS.values() if getattr(args, name) is not None}
    try:
        cfg = Config.from_dict({"task": {"name": args.task, **given}}).task
        cfg.validate()  # (before the generators' imports: a bad flag is answered at once)
        from gpt.tasks import prepare_task

        data = prepare_task(cfg, out=out)
    except UserInputError as e:
        text = str(e)
        for flag, (name, _) in TASK_FLAGS.items():  # task.modulus -> --modulus: what was typed
            text = text.replace(f"task.{name}", flag)
        raise UserInputError(text) from None
    assert data.examples is not None  # (a task's data set has rows)
    n_train, n_val = len(data.rows("train")), len(data.rows("val"))
    print(f"prepared {data.meta.get('description', args.task)}: {n_train:,} train + {n_val:,} held-out examples of "
          f"{data.examples.width} tokens (symbols, vocab {data.tokenizer.vocab_size:,}) in "
          f"{time.perf_counter() - t0:.1f}s -> {data.dir}")  # fmt: skip
    return 0


def _progress_printer() -> Callable[[str, float], None]:
    """Preparing's progress on stderr: one line a phase, redrawn in place on a terminal, every 10% otherwise."""
    last: list[Any] = [None, -1]

    def show(what: str, done: float) -> None:
        step = int(done * 10)
        if (what, step) == tuple(last):
            return
        end = "\n" if done >= 1 or not sys.stderr.isatty() else ""
        if what != last[0] and last[0] is not None and sys.stderr.isatty():
            print(file=sys.stderr)
        print(f"\r{what}: {done:4.0%}", end=end, file=sys.stderr, flush=True)
        last[:] = [what, step]

    return show


# ----- gpt-train ------------------------------------------------------------------------------------


def _train_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config or preset name (tiny, small, gpt2, grokking, sort); default tiny")
    p.add_argument("--data", help="prepared data directory (gpt-prepare); default: the built-in Shakespeare corpus")
    p.add_argument("--out", help="run directory; default checkpoints/<config>-<time>")
    p.add_argument("--resume", help="run or checkpoint directory to continue from")
    p.add_argument("--init-from", help="fine-tune: start from this checkpoint's weights (gpt-convert from-hf first)")
    p.add_argument("overrides", nargs="*", help="section.key=value, e.g. train.lr=3e-4 model.n_layer=6")


@_guard
def _train(args: argparse.Namespace) -> int:
    from gpt import checkpoint as ckpt
    from gpt.calibrate import busy_note, costs_for
    from gpt.config import apply_overrides, load_config
    from gpt.estimate import model_size, train_seconds
    from gpt.events import format_duration, run_listeners
    from gpt.trainer import Trainer

    resume_meta = ckpt.read_meta(args.resume) if args.resume else None
    if resume_meta is not None and not args.config:
        cfg = Config.from_dict(resume_meta["config"])
    else:
        cfg = load_config(resolve_config_path(args.config or "tiny"))
    cfg = apply_overrides(cfg, args.overrides)
    _check_device(cfg.train.device, "train.device")
    data = _load_data(args.data, (resume_meta or {}).get("data_dir"), cfg)
    if args.out:
        out = Path(args.out)
    elif args.resume:
        resolved = ckpt.resolve(args.resume)
        out = resolved.parent if resolved.name in ("latest", "best") else resolved
    else:
        from gpt.paths import runs_dir

        name = Path(args.config).stem if args.config else "tiny"
        out = runs_dir() / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out = _out_dir(out, create=True)
    listeners = run_listeners(out, cfg.train.tensorboard, echo=True)
    trainer = Trainer(cfg, data, out, resume=args.resume, init_from=args.init_from, listeners=listeners)
    if trainer.is_main and not args.resume:
        params, flops = model_size(trainer.cfg, data.tokenizer.vocab_size)
        # this machine's costs: cached, else measured now (in this process: the trainer built above imported what
        # measuring needs), and corrected by how the last runs here went
        expected = train_seconds(trainer.cfg, flops, costs=costs_for(trainer.cfg.train), corrected=True)
        busy = busy_note(expected)
        print(f"{params / 1e6:.2f}M parameters; {cfg.train.max_steps:,} steps should take about "
              f"{format_duration(expected)} on this machine{'; ' + busy if busy else ''}", flush=True)  # fmt: skip
    previous = signal.signal(signal.SIGINT, lambda *_: trainer.stop())  # Ctrl-C: stop with a checkpoint
    try:
        result = trainer.run()
    finally:
        signal.signal(signal.SIGINT, previous)
    if trainer.is_main:
        print(
            f"checkpoint: {out / 'latest'}  (resume: gpt-train --resume {out}; sample: gpt-generate --checkpoint {out})"
        )
    return 0 if result.status in ("completed", "stopped") else 1


def _load_data(given: str | None, recorded: str | None, cfg: Config):  # type: ignore[no-untyped-def]
    """The data set: --data's; else the one a resumed run trained on; else the config's task, prepared now (or the
    same one, cached: a task's examples depend only on its settings, so a resumed run whose data set was deleted gets
    it back); else the built-in corpus."""
    from gpt.data import load_prepared, prepare
    from gpt.tasks import prepare_task

    if given or (recorded and (not cfg.task.name or Path(recorded).is_dir())):
        return load_prepared(given or recorded)  # type: ignore[arg-type]
    if cfg.task.name:
        return prepare_task(cfg.task)
    from gpt.corpus import sample_corpus_path

    dc = cfg.data
    return prepare([sample_corpus_path()], tokenizer=dc.tokenizer, val_fraction=dc.val_fraction,
                   vocab_size=dc.bpe_vocab_size, progress=_progress_printer())  # fmt: skip


# ----- gpt-generate ---------------------------------------------------------------------------------


def _generate_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint or run directory")
    p.add_argument(
        "--prompt", help="text to continue (empty: start from nothing); none, in a terminal: ask for prompts"
    )
    from gpt.config import SampleConfig

    for f in fields(SampleConfig):  # one flag per sampling setting, described where the setting is defined
        flag, label = "--" + f.name.replace("_", "-"), f.metadata["label"]
        if f.name == "stop":
            p.add_argument(flag, action="append", help="stop when this text appears (repeatable)")
        else:
            p.add_argument(flag, type=int if f.type.startswith("int") else float, help=label)
    p.add_argument("--stream", action="store_true", help="print tokens as they are generated")
    p.add_argument("--device", default="auto")


@_guard
def _generate(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from gpt import checkpoint as ckpt
    from gpt import decode
    from gpt.config import SampleConfig
    from gpt.device import pick_device, sampling_model
    from gpt.generate import stream
    from gpt.sampling import sampling_vocab

    _check_device(args.device, "--device")
    prompt = None if args.prompt is None else _text_arg(args.prompt, "--prompt")
    args.stop = None if args.stop is None else [_text_arg(t, "--stop") for t in args.stop]
    loaded = ckpt.load(args.checkpoint, device=pick_device(args.device))
    given = {f.name: getattr(args, f.name) for f in fields(SampleConfig) if getattr(args, f.name) is not None}
    cfg = replace(loaded.config.sample, **given)
    cfg.validate()
    model = sampling_model(loaded.model)
    if prompt is not None or not sys.stdin.isatty():
        if cfg.max_new_tokens >= decode.PAYS_AFTER_TOKENS:
            decode.warm_up(
                model, sampling_vocab(model, loaded.tokenizer)
            )  # a long generation: compiled part of the way
        _print_continuation(stream(model, loaded.tokenizer, prompt or "", cfg), args.stream)
        return 0
    # interactive: a prompt, its continuation streamed, again; a blank line or Ctrl-D ends it
    decode.warm_up(model, sampling_vocab(model, loaded.tokenizer))  # (compiles while the user types)
    print("Type a prompt and press Enter (a blank line or Ctrl-D quits).", flush=True)
    while True:
        try:
            prompt = input("> ")
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if not prompt.strip():
            return 0
        try:
            _print_continuation(stream(model, loaded.tokenizer, prompt, cfg), stream_out=True)
        except UserInputError as e:  # characters the model never saw, say: the next prompt may be fine
            print(f"error: {e}", flush=True)


def _print_continuation(pieces: Iterable[Any], stream_out: bool) -> None:
    if stream_out:
        for tok in pieces:
            sys.stdout.write(tok.text)
            sys.stdout.flush()
        sys.stdout.write("\n")
    else:
        print("".join(t.text for t in pieces))


# ----- gpt-convert ----------------------------------------------------------------------------------


def _convert_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("direction", choices=["from-hf", "to-hf"], help="from-hf HF_DIR OUT_DIR | to-hf CKPT_DIR HF_DIR")
    p.add_argument("src")
    p.add_argument("dst")


@_guard
def _convert(args: argparse.Namespace) -> int:
    from gpt.interop import context_note, from_hf, to_hf

    if args.direction == "from-hf":
        out = from_hf(args.src, args.dst)
        print(f"converted Hugging Face model {args.src} -> checkpoint {out}")
    else:
        import json

        out = to_hf(args.src, _out_dir(args.dst, "the Hugging Face folder"))
        hf_cfg = json.loads((out / "config.json").read_text(encoding="utf-8"))
        print(f"exported checkpoint {args.src} -> Hugging Face directory {out} ({hf_cfg['architectures'][0]}"
              ".from_pretrained)")  # fmt: skip
        if note := context_note(hf_cfg):  # (a GPT-2's: transformers fails past it, where our generate slides)
            print(note)
    return 0


# ----- device ---------------------------------------------------------------------------------------


@_guard
def _device(args: argparse.Namespace) -> int:
    import torch

    from gpt.device import cpu_has_native_bf16, pick_device, pick_dtype

    d = pick_device()
    cpu_bf16 = "native" if cpu_has_native_bf16() else "no"
    print(f"device: {d} (training dtype by default: {str(pick_dtype('auto', d)).replace('torch.', '')})")
    print(f"torch {torch.__version__}; CPU threads {torch.get_num_threads()}; CPU bf16 {cpu_bf16}")
    print(f"CUDA: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'no'}")
    print(f"MPS: {'yes' if torch.backends.mps.is_available() else 'no'}")
    return 0


# ----- entry points ---------------------------------------------------------------------------------

COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "prepare": ("tokenize text files into a training data set", _prepare_parser, _prepare),
    "train": ("train a model (also under torchrun for DDP)", _train_parser, _train),
    "generate": ("sample text from a checkpoint", _generate_parser, _generate),
    "convert": ("move models between Hugging Face's format and our checkpoints", _convert_parser, _convert),
    "device": ("show the device, dtype and threads training would use", lambda p: None, _device),
}


def _run(command: str, argv: Sequence[str] | None, prog: str) -> int:
    help_text, build, fn = COMMANDS[command]
    parser = _Parser(prog=prog, description=help_text)
    build(parser)
    # intermixed: `section.key=value` overrides may come before, between or after the options
    return fn(parser.parse_intermixed_args(argv))


def prepare_main(argv: Sequence[str] | None = None) -> int:
    return _run("prepare", argv, "gpt-prepare")


def train_main(argv: Sequence[str] | None = None) -> int:
    return _run("train", argv, "gpt-train")


def generate_main(argv: Sequence[str] | None = None) -> int:
    return _run("generate", argv, "gpt-generate")


def convert_main(argv: Sequence[str] | None = None) -> int:
    return _run("convert", argv, "gpt-convert")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        names = ", ".join(COMMANDS)
        given = f"unknown command {argv[0][:40]!r}" if argv else "no command given"
        return _fail(f"{given}; usage: python -m gpt.cli {{{names}}} ...")
    return _run(argv[0], argv[1:], f"python -m gpt.cli {argv[0]}")


if __name__ == "__main__":
    sys.exit(main())

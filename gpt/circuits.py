"""Circuits forming: which heads attend to the previous token, to the same token earlier, or to the token after it
(induction), and how much the model learns from its context. TransformerLens's and Anthropic's definitions, read
off our model's attention probabilities (each layer's `attn.hook_pattern`, read by a hook).

The heads are scored on repeated random token sequences [r, r], r being L random tokens: in the second repeat every
token has been seen exactly once before, L positions back, and nothing but that repeat predicts it. For each head,
the mean attention probability (0..1; 1 is a head that does nothing else) on one stripe of its pattern:
- previous token: from every position i >= 1 to i - 1;
- duplicate token: from i in the second repeat to i - L, the earlier occurrence of the same token;
- induction: from i in the second repeat to i - L + 1, the token that followed that earlier occurrence. An
  induction head completes [A][B] ... [A] -> [B]: it needs a previous-token head in an earlier layer, so a model
  with one layer cannot form one (Olsson et al. 2022, "In-context learning and induction heads").
This is TransformerLens's demo score (the mean of the pattern's diagonal at offset 1 - L), taken only over the second
repeat's positions. A head that spreads its attention evenly gives about 1/i on each stripe: ~0.02 for L = 32.

The tokens of one sequence are drawn without replacement when the vocabulary has at least L of them (a char
vocabulary of 65 has), so the first repeat holds no duplicates that would blur the stripes; TransformerLens draws
with replacement from a large vocabulary, where that rarely happens.

In-context learning: the loss late in the context minus the loss early (Anthropic's score: the loss at token 500
minus the loss at token 50), negative when the model uses what it has read. On real text (`text`) late is the
context's last tenth and early its second tenth (its first tokens have too little context to be a baseline); without
text it is measured on the same repeated sequences: the second repeat's loss minus the first's, which only an
induction mechanism can make negative (the first repeat is unpredictable).

One call costs one forward pass of `batch` sequences of 2L tokens (the tiny preset: about 3 ms on a CPU core), so
the trainer scores every evaluation. Deterministic: its own generator, whatever the global seed; no gradients; the
model's train/eval mode is restored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch.nn import functional as F

from gpt.errors import UserInputError
from gpt.model import GPT, record
from gpt.tokenizer import Tokenizer

ScoreName = Literal["previous_token", "duplicate_token", "induction"]
MAX_SEQ_LEN = 32  # L: 2L = 64 tokens a sequence, whatever the context (the stripes need no more to be clear)
MIN_CONTEXT = 4  # two repeats of at least 2 tokens


@dataclass(frozen=True)
class CircuitScores:
    """Each head's scores, [layer][head], each 0..1, and the model's in-context-learning score."""

    previous_token: list[list[float]]
    duplicate_token: list[list[float]]
    induction: list[list[float]]
    in_context: float  # loss late in the context minus loss early (nats): negative when the context helps
    in_context_on: Literal["text", "repeated tokens"]  # what it was measured on
    seq_len: int  # L, the length of each repeat

    def best_per_layer(self, name: ScoreName) -> list[float]:
        """The highest score of each layer's heads (the Train tab's curve: one line per layer)."""
        return [max(layer) for layer in getattr(self, name)]

    def best_head(self, name: ScoreName) -> tuple[int, int, float]:
        """(layer, head, score) of the highest-scoring head, 0-based."""
        scores: list[list[float]] = getattr(self, name)
        return max(((li, hi, s) for li, layer in enumerate(scores) for hi, s in enumerate(layer)), key=lambda t: t[2])


def repeated_tokens(
    model: GPT, seq_len: int, batch: int, seed: int = 0, tokenizer: Tokenizer | None = None
) -> torch.Tensor:
    """(batch, 2 x seq_len) token ids [r, r] on the model's device, r random: drawn from the tokenizer's ids (never
    the model's vocabulary padding, nor its end-of-text token), or from the model's whole vocabulary without one."""
    vocab = model.config.vocab_size if tokenizer is None else min(tokenizer.vocab_size, model.config.vocab_size)
    allowed = torch.arange(vocab)
    if tokenizer is not None and tokenizer.eos_id is not None:
        allowed = allowed[allowed != tokenizer.eos_id]
    g = torch.Generator().manual_seed(seed)
    if len(allowed) >= seq_len:  # distinct tokens within a repeat: every duplicate is the repeat's
        rows = [allowed[torch.randperm(len(allowed), generator=g)[:seq_len]] for _ in range(batch)]
        r = torch.stack(rows)
    else:
        r = allowed[torch.randint(len(allowed), (batch, seq_len), generator=g)]
    return r.repeat(1, 2).to(model.lm_head.weight.device)


def even_score(seq_len: int) -> float:
    """The duplicate-token or induction score of a head that spreads its attention evenly over the positions it
    sees (1 / (i + 1) at each position i of the second repeat): what "no pattern" reads as."""
    return sum(1 / (i + 1) for i in range(seq_len, 2 * seq_len)) / seq_len


def default_seq_len(model: GPT) -> int:
    return min(MAX_SEQ_LEN, model.config.block_size // 2)


@torch.no_grad()
def head_scores(
    model: GPT,
    seq_len: int | None = None,
    batch: int = 4,
    seed: int = 0,
    tokenizer: Tokenizer | None = None,
    text: torch.Tensor | None = None,
) -> CircuitScores:
    """Score every head of `model` (a GPT, not a compiled or DDP wrapper) on `batch` repeated random sequences of
    2 x `seq_len` tokens (default: min(32, block_size / 2)), and its in-context learning on `text` ((B, T) token ids
    of real text, T >= 10) or, without it, on those sequences. See the module's docstring for the definitions."""
    L = default_seq_len(model) if seq_len is None else seq_len
    if model.config.block_size < MIN_CONTEXT:
        raise UserInputError(f"circuit scores need a context of at least {MIN_CONTEXT} tokens")
    if not 2 <= L <= model.config.block_size // 2:
        raise UserInputError(f"seq_len must be 2 to {model.config.block_size // 2} (half the context), got {L}")
    if text is not None and not (text.dim() == 2 and 10 <= text.size(1) <= model.config.block_size):
        raise UserInputError(f"text must be (batch, 10..{model.config.block_size}) token ids, got {tuple(text.shape)}")
    was_training = model.training
    model.eval()
    try:
        tokens = repeated_tokens(model, L, batch, seed, tokenizer)
        patterns: list[torch.Tensor] = []
        reads = [(f"transformer.h.{i}.attn.hook_pattern", record(patterns)) for i in range(model.config.n_layer)]
        with model.hooks(reads):
            logits, _ = model(tokens)
        prev, dup, ind = [], [], []
        for att in patterns:  # (B, heads, 2L, 2L)
            att = att.float()
            second = att[:, :, L:, :]  # queries in the second repeat
            prev.append(att.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(0, 2)))
            dup.append(second[..., :L].diagonal(dim1=-2, dim2=-1).mean(dim=(0, 2)))  # (L + j) -> j
            ind.append(second[..., 1 : L + 1].diagonal(dim1=-2, dim2=-1).mean(dim=(0, 2)))  # (L + j) -> j + 1
        if text is None:
            # position p predicts token p + 1: the first repeat's tokens 1..L-1 against the second's L+1..2L-1
            # (token L, the second repeat's first, cannot be told from the first repeat: left out of both)
            loss = _token_losses(logits, tokens)
            in_context = float(loss[:, L:].mean() - loss[:, : L - 1].mean())
        else:
            T = text.size(1)
            loss = _token_losses(model(text)[0], text)  # (B, T - 1): loss of predicting token p + 1
            early, late = loss[:, T // 10 : max(T // 5, T // 10 + 1)], loss[:, -max(1, T // 10) :]
            in_context = float(late.mean() - early.mean())
    finally:
        model.train(was_training)
    return CircuitScores(
        previous_token=torch.stack(prev).tolist(),
        duplicate_token=torch.stack(dup).tolist(),
        induction=torch.stack(ind).tolist(),
        in_context=in_context,
        in_context_on="repeated tokens" if text is None else "text",
        seq_len=L,
    )


def _token_losses(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """(B, T - 1) cross-entropy of each next token: position p's logits against token p + 1."""
    pred = logits[:, :-1].float()
    return F.cross_entropy(pred.reshape(-1, pred.size(-1)), tokens[:, 1:].reshape(-1), reduction="none").view(
        tokens.size(0), -1
    )

"""Grokfast (Lee et al. 2024, arXiv 2405.20233): amplify the slow part of the gradients.

A model that memorises its training examples and only later generalises ("grokking") gets there through a slow drift
of its weights under the fast, noisy gradient steps that fit the examples. Grokfast keeps an exponential moving
average of each parameter's gradient, the slow part, and adds `lamb` times it to the gradient before the optimizer
steps: g <- g + lamb * ema(g), with ema <- alpha * ema + (1 - alpha) * g (the paper's Grokfast-EMA, alpha 0.98 and
lamb 2 on modular arithmetic). The trainer applies it between the backward pass and the optimizer step when
`train.grokfast` is on; its averages are part of trainer.pt, so a resumed run continues them exactly.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from gpt.errors import CheckpointError


class Grokfast:
    """The gradient filter over `params` (the model's trainable parameters, in a fixed order)."""

    def __init__(self, params: Iterable[torch.nn.Parameter], alpha: float, lamb: float) -> None:
        self.params = list(params)
        self.alpha, self.lamb = alpha, lamb
        self.ema: list[torch.Tensor] = []  # empty until the first step: the first average is that step's gradient

    @torch.no_grad()
    def apply(self) -> None:
        """Update the averages with the gradients now in `.grad`, and add `lamb` times them to those gradients."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        if not self.ema:
            self.ema = [g.detach().float().clone() for g in grads]
        else:
            for avg, g in zip(self.ema, grads, strict=True):
                avg.lerp_(g.float(), 1.0 - self.alpha)
        for p, g, avg in zip(self.params, grads, self.ema, strict=True):
            if p.grad is not None:
                g.add_(avg.to(g.dtype), alpha=self.lamb)

    def state_dict(self) -> list[torch.Tensor]:
        return [t.detach().cpu() for t in self.ema]

    def load_state_dict(self, saved: object) -> None:
        """Restore the averages of a saved run, checked first: float32 tensors of the parameters' shapes, finite
        (anything else is a CheckpointError: trainer.pt is corrupt or from another model)."""
        if not isinstance(saved, list) or (saved and len(saved) != len(self.params)):
            raise CheckpointError("trainer.pt's Grokfast averages do not fit this model; start a new run")
        for t, p in zip(saved, self.params, strict=False):
            ok = isinstance(t, torch.Tensor) and t.dtype == torch.float32 and tuple(t.shape) == tuple(p.shape)
            ok = ok and t.layout == torch.strided and t.device.type == "cpu" and t.is_contiguous()
            # (a crafted file's tensor could point past its storage: checked before any element is read)
            ok = ok and t.untyped_storage().nbytes() >= (t.storage_offset() + t.numel()) * t.element_size()
            if not ok or not bool(torch.isfinite(t).all()):
                raise CheckpointError("trainer.pt's Grokfast averages do not fit this model; start a new run")
        self.ema = [t.to(p.device).clone() for t, p in zip(saved, self.params, strict=False)]

"""Is the run healthy? The diagnostics of Karpathy's makemore lectures (part 3), measured on a learner's own model.

Every `train.health_interval` steps the trainer takes one `Probe` around one optimizer step and one small forward
pass, and reports a `Health` (never per step: the clone of the weights and the extra passes cost about 2% of training
at the default interval, `python -m bench.health`):

- the update:data ratio of each parameter group, log10(std(update) / std(weight)): how far one step moves the
  weights against their own size. It is the real update the optimizer applied (the weights after the step minus
  before), for AdamW and Muon alike. The lectures' rule of thumb is about -3 (SGD and Adam on a small MLP); above -1
  each step rewrites a tenth of the weights, below -4 they hardly move. Measured here on the tiny presets over their
  first 250 steps: GPT-2's recipe (AdamW, lr 1e-3) sits near -2.0, at 10x its rate near -1.5 (and its attention
  entropy collapses to a fifth of the healthy run's in three of four layers), at a tenth near -2.8; the modern recipe
  sits near -1.5 by design (Muon's orthogonalised updates have a fixed size, and its weights grow to match the rate),
  so with Muon the ratio says less about the rate than the loss and the entropy do.
- the step-size test: from the weights before the step, the same update taken at twice its size, scored against
  the step as taken on a few held-out sequences (a one-step learning-rate test on the optimizer's own update). Where
  the update:data ratio cannot tell the rate (Muon's, above), this can: measured on the tiny presets past their
  warmup, char-level and BPE, a step twice this size raises the held-out loss by 0.01-0.074 nats at the presets'
  rates (at most 0.057 at the lower of two readings running) and by 0.07-0.3 at ten times the modern recipe's: the
  steps overshoot, said when two judged readings running cost over 0.07. A step twice the size that lowers the loss
  further says the steps are too short. The ratio is judged per optimizer against the schedule's current rate
  (warmup and decay lower it on purpose): under AdamW, GPT-2's recipe sits near -2.0 at its rate and -2.8 at a
  tenth; below -2.6 is flagged. Muon at a tenth of its rate is the case no reading tells past its first steps
  (its weights grow less, and its steps look the same against them): it is merely slower, as Compare shows.
- the gradient norm of each group, before clipping: a layer whose gradient is 100x its neighbours' is exploding,
  one near zero learns nothing.
- the MLPs' dead units (off at every position of the batch: they pass no gradient and may never come back) and
  the share of activations that are off (in the flat part of the activation, where no gradient flows).
- each layer's attention entropy (nats): 0 when every head looks at a single token; ln(t) when it spreads evenly
  over the t tokens it sees. Entropy collapsing in every layer early in training is a sign of instability.

At step 0 of a run from scratch `init_check` compares the loss with ln(vocabulary): a fresh model should guess
every token about equally, and a much higher loss says the initialisation is confidently wrong.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from gpt.model import GPT, ForwardHook

# The update:data ratio's bands (log10): healthy around -3, as the lectures show
HEALTHY_RATIO = -3.0
RATIO_HIGH, RATIO_LOW = -1.0, -4.0  # past these the panel says the learning rate is too high / too low
DEAD_WARN = 0.1  # a tenth of a layer's MLP units dead
COLLAPSED = 0.1  # a layer's attention entropy under this share of spreading evenly
OFF_THRESHOLD = 1e-3  # an activation is "off" below this fraction of its layer's RMS
ADAMW_LOW = -2.6  # AdamW's update:data ratio (at the schedule's peak rate) below this: the rate is too low
STEP_SCALES = (1.0, 2.0)  # the step-size test: the update as taken and at twice its size
NOISE_SE = 4.0  # a doubled step's change counts past this many standard errors of its mean over the held-out rows
SHORT_FLOOR = 0.005  # nats: a doubled step gaining less is not worth a warning, however sure the gain
OVERSHOOT_FLOOR = 0.3  # nats: a doubled step costing more, two judged readings running, overshoots (see the docstring)
GRAD_SPREAD = 100.0  # the largest group's gradient norm over the smallest's: past this the rate is too high
PROBE_ROWS = 16  # held-out sequences in the step-size test (its differences are small: fewer rows are too noisy)
ACTIVATION_ROWS = 8  # of them in the forward pass that reads the activations (explicit attention: slower)
FindingKind = Literal["rate_high", "rate_low", "overshoot", "short_steps", "grad_spread", "dead_units", "collapsed"]


@dataclass(frozen=True)
class Health:
    groups: list[str]  # "embedding", "layer 1 attention", "layer 1 MLP", ..., "head"
    update_ratio: list[float | None]  # log10(std(update) / std(weight)) per group; None: all-zero weight or update
    grad_norm: list[float]  # per group, before clipping
    layers: list[str]  # "layer 1", ...
    dead_units: list[float]  # per layer: share of MLP units off at every position of the batch
    off_share: list[float]  # per layer: share of MLP activations that are off
    attn_entropy: list[float]  # per layer: mean attention entropy over heads and positions (nats)
    attn_uniform: float  # the same for attention spread evenly over the visible tokens: the most it can be
    # the step-size test: the held-out loss after this step's update taken at each of STEP_SCALES; None: not taken
    step_test: list[float] | None = None
    judge_rate: bool = False  # past the warmup and near the schedule's peak: the rate itself can be judged
    lr_scale: float = 1.0  # the schedule's learning rate at this step over its peak
    muon: list[bool] = field(default_factory=list)  # per group: stepped by Muon (else AdamW)
    previous_test: list[float] | None = None  # the step-size test of the run's previous judged reading
    # the standard error of the step-size test's difference (twice the step against the step, nats), from its spread
    # over the held-out rows; None: not taken, or a log from before it was recorded
    step_noise: float | None = None


@dataclass(frozen=True)
class Remedy:
    """What a finding suggests trying, as plain data the UI can offer as one click: every learning rate of the run
    (the schedule's peak and end, and Muon's) times `lr_factor`."""

    label: str  # the button's words
    lr_factor: float

    def overrides(self, train: Mapping[str, Any]) -> list[str]:
        """The `section.key=value` overrides (gpt-train's, `gpt.config.apply_overrides`') that apply it to a run whose
        train settings (its config's "train" section) are `train`."""
        keys = ["lr", "min_lr"] + (["muon_lr"] if train.get("optimizer") == "muon" else [])
        rates = [(k, train.get(k)) for k in keys]
        return [f"train.{k}={v * self.lr_factor:.3g}" for k, v in rates if isinstance(v, int | float) and v > 0]


HALF_RATE = Remedy("Try half the learning rate", 0.5)
DOUBLE_RATE = Remedy("Try twice the learning rate", 2.0)


@dataclass(frozen=True)
class Finding:
    kind: FindingKind
    text: str  # what the panel and the CLI say
    remedy: Remedy | None = None  # what to try, when the finding names one


@dataclass(frozen=True)
class InitCheck:
    loss: float  # the fresh model's loss on a validation batch
    expected: float  # ln(vocabulary): a model that guesses every token equally
    ok: bool
    message: str


def group_of(name: str) -> str:
    """A parameter's group: the embedding, each layer's attention and MLP, the head."""
    parts = name.split(".")
    if parts[:2] == ["transformer", "h"]:
        kind = {"attn": "attention", "mlp": "MLP"}.get(parts[3], "norms")
        return f"layer {int(parts[2]) + 1} {kind}"
    return {"wte": "embedding", "wpe": "positions"}.get(parts[1], "head") if parts[0] == "transformer" else "head"


def weight_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """The model's weight matrices (the ones the ratio is meaningful for: gains and biases start at 1 and 0) by group,
    in the model's order. A tied head is the embedding's matrix: counted once."""
    out: dict[str, list[nn.Parameter]] = {}
    for name, p in model.named_parameters():  # (named_parameters yields a shared tensor once)
        if p.dim() >= 2 and p.requires_grad:
            out.setdefault(group_of(name), []).append(p)
    return out


class Probe:
    """One measurement around one optimizer step: `before_update` after the backward (gradients unscaled, not yet
    clipped), `after_update` after the optimizers' step; then `health` with the forward pass's readings."""

    def __init__(self, model: nn.Module, muon: Iterable[int] = ()) -> None:
        self.groups = weight_groups(model)
        muon = set(muon)  # the ids of the parameters Muon steps
        self.muon = [all(id(p) in muon for p in params) for params in self.groups.values()]
        self._params = [p for p in model.parameters() if p.requires_grad]
        self._before: dict[str, list[torch.Tensor]] = {}
        self._start: list[torch.Tensor] = []
        self.grad_norm: list[float] = []
        self.update_ratio: list[float | None] = []

    @torch.no_grad()
    def before_update(self) -> None:
        norms = []
        self._start = [p.detach().clone() for p in self._params]  # (the step-size test goes back to these)
        kept = {id(p): b for p, b in zip(self._params, self._start, strict=True)}
        for name, params in self.groups.items():
            self._before[name] = [kept[id(p)] for p in params]
            grads = [p.grad.detach().float().norm() for p in params if p.grad is not None]
            norms.append(torch.stack(grads).norm() if grads else torch.zeros(()))
        self._norms = torch.stack(norms)  # (read with the ratios below: one host sync for both)

    @torch.no_grad()
    def after_update(self) -> None:
        ratios = []
        for name, params in self.groups.items():
            before = torch.cat([b.float().flatten() for b in self._before[name]])
            after = torch.cat([p.detach().float().flatten() for p in params])
            ratios.append(torch.stack([(after - before).std(), before.std()]))
        stats = torch.stack(ratios).cpu().tolist()
        self.grad_norm = [float(n) for n in self._norms.cpu().tolist()]
        self.update_ratio = [_log_ratio(u, w) for u, w in stats]
        self._before = {}  # (the step-size test still holds the weights before the step, in _start)

    def health(self, model: GPT, x: torch.Tensor, y: torch.Tensor | None = None, lr_scale: float = 1.0,
               judge_rate: bool = False, previous_test: list[float] | None = None) -> Health:  # fmt: skip
        """The reading: the step-size test on (x, y) when `y` is given, then the forward pass's readings on x."""
        tested, noise = self.step_test(model, x, y) if y is not None else (None, None)
        dead, off, entropy, uniform = activations(model, x[:ACTIVATION_ROWS])
        return Health(list(self.groups), self.update_ratio, self.grad_norm,
                      [f"layer {i + 1}" for i in range(len(dead))], dead, off, entropy, uniform, tested, judge_rate,
                      lr_scale, self.muon, previous_test, noise)  # fmt: skip

    @torch.no_grad()
    def step_test(self, model: GPT, x: torch.Tensor, y: torch.Tensor) -> tuple[list[float], float | None]:
        """The loss on (x, y) with the weights moved from before the step by each of STEP_SCALES times the update
        the optimizer made, and the standard error of the last scale's difference from the first (from the rows'
        own differences: how far the same test on other held-out rows could land); the weights after the step are
        put back. None for the error with a single row."""
        after = [p.detach().clone() for p in self._params]
        was_training = model.training
        model.eval()
        sums, counts = [], (y != -1).sum(dim=1).float()  # (a task's targets are -1 outside its answers)
        try:
            for scale in STEP_SCALES:
                for p, start, end in zip(self._params, self._start, after, strict=True):
                    p.copy_(torch.lerp(start, end, scale))  # start + scale * (end - start)
                logits, _ = model(x)
                losses = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), ignore_index=-1, reduction="none")
                sums.append(losses.view(y.shape).sum(dim=1))
        finally:
            for p, end in zip(self._params, after, strict=True):
                p.copy_(end)
            model.train(was_training)
        self._start = []
        total = counts.sum().clamp_min(1)
        means = [float(s.sum() / total) for s in sums]  # (the model's own loss: every target counted once)
        kept = counts > 0
        change = (sums[-1] - sums[0])[kept] / counts[kept]  # per row: the doubled step's loss less the step's
        noise = float(change.std() / math.sqrt(change.numel())) if change.numel() > 1 else None
        return means, noise


def _log_ratio(update_std: float, weight_std: float) -> float | None:
    if not (weight_std > 0 and update_std > 0 and math.isfinite(weight_std) and math.isfinite(update_std)):
        return None  # an all-zero weight (zero-initialised) has no scale, a weight no gradient reached no update
    return math.log10(max(update_std, 1e-30) / weight_std)


@torch.no_grad()
def activations(model: GPT, x: torch.Tensor) -> tuple[list[float], list[float], list[float], float]:
    """(dead-unit share, off share, attention entropy) per layer and the uniform entropy, on the batch `x` (B, T):
    one forward pass of the plain model, the MLPs' hidden activations and the attention patterns read at their hook
    points (a hooked pattern takes the explicit attention path: slower)."""
    hidden: list[torch.Tensor] = []
    entropy: list[float] = []

    def mlp_hidden(_m: nn.Module, _args: tuple[Any, ...], h: torch.Tensor) -> None:
        hidden.append(h.detach())

    def attention(_m: nn.Module, _args: tuple[Any, ...], a: torch.Tensor) -> None:
        entropy.append(float(-(a * a.clamp_min(1e-12).log()).sum(-1).mean()))

    hooks: list[tuple[str, ForwardHook]] = []
    for i in range(model.config.n_layer):
        hooks += [(f"transformer.h.{i}.mlp.hook_post", mlp_hidden), (f"transformer.h.{i}.attn.hook_pattern", attention)]
    was_training = model.training
    model.eval()
    try:
        with model.hooks(hooks):
            model(x)
    finally:
        model.train(was_training)
    dead, off = [], []
    for h in hidden:
        h = h.float().flatten(0, -2).abs()  # (positions, units)
        quiet = h <= OFF_THRESHOLD * h.square().mean().sqrt()
        dead.append(float(quiet.all(dim=0).float().mean()))
        off.append(float(quiet.float().mean()))
    T = x.size(1)
    uniform = sum(math.log(t) for t in range(1, T + 1)) / T
    return dead, off, entropy, uniform


def init_check(loss: float, vocab_size: int) -> InitCheck:
    """The loss of a fresh model against ln(vocab_size), the loss of guessing every token equally."""
    expected = math.log(vocab_size)
    if not math.isfinite(loss) or loss > expected + max(1.0, 0.25 * expected):
        msg = (f"the loss at step 0 is {loss:.2f}, far above ln({vocab_size}) = {expected:.2f}: the fresh model is "
               "confidently wrong, so its initialisation is off (the output layer's weights are too large); it "
               "will spend its first steps unlearning that")  # fmt: skip
        return InitCheck(loss, expected, False, msg)
    if loss < expected - max(1.0, 0.25 * expected):
        msg = (
            f"the loss at step 0 is {loss:.2f}, far below ln({vocab_size}) = {expected:.2f}: a fresh model "
            "cannot know the text yet; check that the validation data is not also the model's input"
        )
        return InitCheck(loss, expected, False, msg)
    return InitCheck(loss, expected, True, f"the loss at step 0 is {loss:.2f}, close to ln({vocab_size}) = "
                     f"{expected:.2f}, as a fresh model's should be: it guesses every token about equally")  # fmt: skip


def diagnose(h: Health) -> list[str]:
    """What the panel and the CLI say about a health reading: empty when everything is in its healthy range."""
    return [f.text for f in findings(h)]


def findings(h: Health) -> list[Finding]:
    """What looks wrong in a health reading, each with its kind and what to try (the panel lists what earlier
    readings found)."""
    out = _ratio_findings(h) + _step_findings(h)
    norms = [(g, n) for g, n in zip(h.groups, h.grad_norm, strict=True) if n > 0 and math.isfinite(n)]
    if h.judge_rate and len(norms) > 1:
        (low, smallest), (high, largest) = min(norms, key=lambda gn: gn[1]), max(norms, key=lambda gn: gn[1])
        if largest > GRAD_SPREAD * smallest:
            out.append(Finding("grad_spread", f"the gradient norms span {largest / smallest:,.0f}x across the groups "
                               f"({low} {smallest:.2g}, {high} {largest:.2g}): some layers get gradients hundreds of "
                               "times smaller than others, as a rate too high leaves them (at a good rate they stay "
                               "within 25x); the learning rate is probably too high", HALF_RATE))  # fmt: skip
    dead = [f"{layer} ({share:.0%})" for layer, share in zip(h.layers, h.dead_units, strict=True) if share > DEAD_WARN]
    if dead:
        out.append(Finding("dead_units", f"dead MLP units (off for every token of the batch, so they no longer learn) "
                           f"in {_few(dead)}: often the mark of a learning rate too high", HALF_RATE))  # fmt: skip
    collapsed = [layer for layer, e in zip(h.layers, h.attn_entropy, strict=True) if e < COLLAPSED * h.attn_uniform]
    if collapsed:
        out.append(Finding("collapsed", f"attention has collapsed onto single tokens in {_few(collapsed)} (entropy "
                           "under a tenth of spreading evenly): a sign the learning rate is too high; a lower rate "
                           "or QK-norm helps", HALF_RATE))  # fmt: skip
    return out


def _ratio_findings(h: Health) -> list[Finding]:
    """The update:data ratio against its bands and, under AdamW, against the rate. Muon's groups are left out: its
    steps have a fixed size and its weights grow to match, so its ratio sits near 10^-1.5 at any rate (and near
    10^-1 in its first steps, zero-initialised projections starting small)."""
    muon = h.muon or [False] * len(h.groups)  # (readings from before it was recorded: AdamW's)
    # the schedule lowers the rate on purpose (warmup, decay): the low side is judged at the peak rate
    shift = math.log10(h.lr_scale) if h.lr_scale > 0 else 0.0
    rated = [(g, r) for g, r, m in zip(h.groups, h.update_ratio, muon, strict=True) if r is not None and not m]
    high = [g for g, r in rated if r > RATIO_HIGH]
    low = [g for g, r in rated if r - shift < RATIO_LOW]
    out = []
    if high:
        worst = max(r for _, r in rated)
        out.append(Finding("rate_high", f"updates are large against the weights in {_few(high)} (update:data "
                           f"10^{worst:.1f}): each step rewrites a tenth of them; the learning rate is probably too "
                           "high", HALF_RATE))  # fmt: skip
    # AdamW's ratio follows the rate (its steps are about lr per weight)
    adamw = sorted(r - shift for _, r in rated)
    if low and len(low) > len(rated) // 2:
        worst = min(r for _, r in rated)
        out.append(Finding("rate_low", f"updates are tiny against the weights in {_few(low)} (update:data "
                           f"10^{worst:.1f}): they hardly move; the learning rate is probably too low",
                           DOUBLE_RATE))  # fmt: skip
    elif h.judge_rate and len(adamw) > 1 and (median := adamw[len(adamw) // 2]) < ADAMW_LOW:
        out.append(Finding("rate_low", f"AdamW's updates are small against the weights (update:data 10^{median:.1f} "
                           f"at the peak rate; GPT-2's recipe sits near 10^-2 at its rate, 10^-2.8 at a tenth): the "
                           "learning rate is probably too low", DOUBLE_RATE))  # fmt: skip
    return out


def _step_findings(h: Health) -> list[Finding]:
    """The step-size test, judged against its own noise: the doubled step's change in the held-out loss counts only
    past NOISE_SE standard errors of it (its spread over the rows) and past a floor in nats."""
    if not (h.judge_rate and h.step_test is not None and len(h.step_test) == len(STEP_SCALES)):
        return []
    one, double = h.step_test
    change, noise = double - one, h.step_noise or 0.0  # (a log from before the noise was recorded: the floors alone)
    before = h.previous_test
    # overshooting is said when two judged readings running show it; the one before is held to this one's bar
    bar = max(OVERSHOOT_FLOOR, NOISE_SE * noise)
    if change > bar and before is not None and len(before) == len(STEP_SCALES) and before[1] - before[0] > bar:
        return [Finding("overshoot", f"the steps overshoot: on held-out text a step twice this size raises the loss "
                        f"by {change:.2f} nats (±{noise:.3f}), {before[1] - before[0]:.2f} at the reading before (at "
                        "a good rate doubling costs up to 0.15): the learning rate is probably too high",
                        HALF_RATE)]  # fmt: skip
    if -change > max(SHORT_FLOOR, NOISE_SE * noise):
        return [Finding("short_steps", f"the steps fall short: on held-out text a step twice this size would have "
                        f"lowered the loss {-change:.3f} nats more (±{noise:.3f}): the learning rate is probably too "
                        "low", DOUBLE_RATE)]  # fmt: skip
    return []


def _few(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")

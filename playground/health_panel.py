"""The Train tab's "Training health" and "Circuits" views: their live charts (`playground.live_chart`) and what they
say in words. Health: the loss at step 0 against ln(vocabulary) and what looks wrong in the latest reading
(`gpt.health.diagnose`), or that nothing does; circuits: what an induction head is, and the best heads so far.
"""

from __future__ import annotations

import html

import gradio as gr

from gpt.events import Curves
from gpt.health import Finding, findings
from playground import charts, live_chart

# What a healthy run looks like (gpt/health.py's docstring, briefly)
HEALTHY = (
    "Healthy: the update:data ratio, how far a step moves the weights against their size, inside the band; the "
    "lectures' rule of thumb is 10<sup>−3</sup> (dashed), small transformers trained with AdamW sit nearer "
    "10<sup>−2</sup> at a good rate (below 10<sup>−2.6</sup> is said: too low), with Muon (the modern recipe) near "
    "10<sup>−1.5</sup> at any rate, its weights growing to match. The step-size test (said in words, every reading "
    "past the warmup): the same step at twice its size usually costs some held-out loss at a good rate (up to 0.15 "
    "nats); it says too low when doubling gains more than four times its own noise (its spread over the held-out "
    "sequences), too high only past 0.3 nats two readings running. Gradient norms within 100x of each other across "
    "groups (a rate too high leaves some hundreds of times smaller); few dead MLP units (a warning past the dotted "
    "10%); attention entropy below spreading evenly (dashed) without collapsing to the dotted line, as a rate too "
    "high makes it."
)
INDUCTION = (
    "An <b>induction head</b> completes a pattern it has read: after … A B … A it attends to the B that followed the "
    "earlier A. It builds on a previous-token head (dotted) in an earlier layer, so it needs two layers, and appears "
    "suddenly, the loss dropping with it: the tiny preset forms none on Shakespeare in a thousand steps, one within a "
    "few hundred on the Data tab's repeated words. A score of 1: the head does nothing else."
)
CSS = """
.health-note { font-size: 0.92em; line-height: 1.45; }
.health-note p { margin: 0.15em 0; }
.health-note .ok { color: #2b7a2b; }
.health-note .warn { background: #fff4e5; border-left: 3px solid #ff7f0e; padding: 2px 8px; color: #8a4b00; }
.health-note .why { color: var(--body-text-color-subdued); font-size: 0.92em; }
.health-note .remedy { padding: 2px 8px; font-weight: 600; }
"""


def _note(lines: list[str]) -> str:
    return f'<div class="health-note">{"".join(lines)}</div>'


def _line(text: str, ok: bool) -> str:
    return f'<p class="{"ok" if ok else "warn"}">{"✓" if ok else "⚠️"} {html.escape(text)}</p>'


def health_note(c: Curves) -> str:
    """The init check (a run from scratch) and the latest reading in words: what is out of its healthy range, or
    that everything is in it (what healthy looks like is said under the chart)."""
    lines = [_line(f"Init: {c.init.message}.", c.init.ok)] if c.init is not None else []
    reading = c.health()
    if reading is None and c.config is not None:  # a run that has started, before its first reading
        every = (c.config.get("train") or {}).get("health_interval")
        if every == 0:
            lines.append("<p>This run takes no health readings (train.health_interval is 0).</p>")
        else:
            when = f"every {every} steps" if isinstance(every, int) else "every few steps"
            lines.append(f"<p>The first health reading comes soon: one {when}.</p>")
    elif reading is not None:
        step = f"At step {c.health_steps[-1]:,}: "
        now = findings(reading)
        lines += [_line(step + f.text + ".", False) for f in now] or [
            _line(step + "all readings in their healthy range.", True)
        ]
        earlier = _earlier(c, {f.kind for f in now})
        lines += [_line(f"Earlier, at step {at:,}: {f.text}.", False) for at, f in earlier]
        lines += _remedies([*now, *(f for _, f in earlier)], c)
    return _note(lines)


def _remedies(found: list[Finding], c: Curves) -> list[str]:
    """What the findings say to try, each once, with the settings that would apply it to this run."""
    train = (c.config or {}).get("train")
    out = []
    for remedy in dict.fromkeys(f.remedy for f in found if f.remedy is not None):
        how = ", ".join(remedy.overrides(train)) if isinstance(train, dict) else ""
        out.append(f'<p class="remedy">→ {html.escape(remedy.label)}{": " + html.escape(how) if how else ""}.</p>')
    return out


def _earlier(c: Curves, now: set[str]) -> list[tuple[int, Finding]]:
    """What earlier readings found that the latest does not: the first time each kind was found (a warning that
    came and went, as a rate too low shows in Muon's first steps, stays on screen)."""
    return [found for kind, found in c.first_findings().items() if kind not in now]


def circuits_note(c: Curves) -> str:
    """The best induction and previous-token head and the in-context score at the latest scoring, and what an
    induction head is."""
    why = f'<p class="why">{INDUCTION}</p>'
    if not c.circuit_steps:
        return _note(["<p>The heads are scored before the first step and at every evaluation.</p>", why])
    parts = []
    for label, grids in (("induction", c.induction), ("previous-token", c.previous_token)):
        layer, head, score = charts.best_head(grids[-1])
        parts.append(f"best {label} head L{layer + 1}H{head + 1} {score:.2f}")
    ic = c.in_context[-1]
    parts.append(f"in-context {ic:+.2f} nats ({'the context helps' if ic < 0 else 'no help from the context yet'})")
    return _note([f"<p>At step {c.circuit_steps[-1]:,}: {html.escape(' · '.join(parts))}.</p>", why])


def health_view() -> dict[str, gr.HTML]:
    """The training-health view: what the readings say, their chart, what healthy looks like."""
    out = {
        "health_note": gr.HTML(health_note(Curves()), css_template=CSS, elem_id="health-note"),
        "health": live_chart.live_chart("health", "The training-health readings appear here once training starts."),
    }
    gr.HTML(f'<div class="health-note"><p class="why">{HEALTHY}</p></div>', css_template=CSS)
    return out


def circuits_view() -> dict[str, gr.HTML]:
    """The circuits view: the best heads so far and what an induction head is, above the chart."""
    return {
        "circuits_note": gr.HTML(circuits_note(Curves()), css_template=CSS, elem_id="circuits-note"),
        "circuits": live_chart.live_chart("circuits", "The heads' scores appear here once training starts."),
    }

"""The visitor's session: what the page's gr.State holds between events (the data set they prepared, their run).
The handlers that find it again at a page load and end it ("Forget me") live in playground/common.py, above this."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Session:
    """One page's state, held in gr.State: on the server, so its values are the app's own (a page or an API client
    cannot send one). Frozen: a handler returns a new one (`dataclasses.replace`) as its output to the State."""

    data_dir: str | None = None  # the prepared data set (gpt.data), None until the visitor prepares one
    data_label: str | None = None  # what the Data tab calls it
    job_id: str | None = None  # this page's training job (playground.jobs)
    run_dir: str | None = None  # its run directory, or the visitor's last run's (for Resume and the charts)

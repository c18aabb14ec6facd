"""Names that make every attempt's prefix and job unique: run slugs and transform job names."""

from __future__ import annotations

import re
import secrets

import pendulum

_JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_NON_SLUG = re.compile(r"[^a-z0-9]+")


def _slug(text: str) -> str:
    return _NON_SLUG.sub("-", text.lower()).strip("-")


def run_slug(run_id: str, token: str | None = None) -> str:
    """A readable, unique folder name for one run's attempt: ``manual-20260624T000000-3fa9c1``.

    The run type and the run's timestamp come from the run id (``manual__2026-06-24T00:00:00+00:00``);
    the random token keeps it unique when a run is deleted and created again with the same id,
    so a new attempt never lands in an earlier attempt's folder.
    """
    token = token or secrets.token_hex(3)
    kind, _, rest = run_id.partition("__")
    readable = _slug(run_id)
    if rest:
        try:
            stamp = pendulum.parse(rest)
        except Exception:
            stamp = None
        if isinstance(stamp, pendulum.DateTime):
            readable = f"{_slug(kind)}-{stamp.in_timezone('UTC').format('YYYYMMDD[T]HHmmss')}"
        else:
            readable = f"{_slug(kind)}-{_slug(rest)}"
    return f"{readable[:40].strip('-')}-{token}"


#: Room left after a run-level job name for a retry suffix such as ``-r12``.
RETRY_SUFFIX_ROOM = 6


def run_job_name(model: str, ds: str, slug: str) -> str:
    """The job name of a run's transform, the same for every try: ``bt-churn-20260624-3fa9c1``.

    Both backends derive it without the try number, so a retry finds the job its earlier try launched
    (and attaches to it or reuses its shards); :func:`retry_job_name` names a fresh job after a failed one.
    """
    token = slug.rsplit("-", 1)[-1]
    tail = f"-{ds.replace('-', '')}-{token}"
    head = ("bt-" + _slug(model))[: 63 - RETRY_SUFFIX_ROOM - len(tail)].rstrip("-")
    name = head + tail
    if not _JOB_NAME.match(name):
        raise ValueError(f"cannot make a valid SageMaker job name from model={model!r}, ds={ds!r}")
    return name


def retry_job_name(base: str, try_number: int) -> str:
    """The name a try creates after the run's earlier job ended Failed or Stopped: ``<base>-r<try>``."""
    return f"{base}-r{int(try_number)}"

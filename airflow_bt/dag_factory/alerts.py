"""``alerts`` in a DAG config: Airflow notifiers (or plain callables) called when a run fails, a task
retries, or a run succeeds.

Each entry names its target by dotted path, with the arguments it is built or called with::

    alerts:
      on_failure:
        - notifier: airflow.providers.smtp.notifications.smtp.SmtpNotifier
          args: {to: data-eng@example.com, subject: "churn scoring failed: {{ dag_run.run_id }}"}
      on_retry: [my_company.alerts.page_on_retry]

A class (a ``BaseNotifier`` subclass) is instantiated with ``args`` and called with the callback's
context; a function is called with the context and ``args`` as keywords. The path is checked when the
DAG is parsed (its module must be importable: :func:`alerts_error`), but the module is imported only when
the callback runs, so a notifier's dependencies never load at parse time. ``on_failure`` and
``on_success`` are the DAG's callbacks (once per run); ``on_retry`` is every task's;
``on_deadline_miss`` (default: ``on_failure``'s) is called when a run misses the config's ``deadline``
(:func:`deadline_settings`).
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from typing import Any

EVENTS = ("on_failure", "on_retry", "on_success", "on_deadline_miss")
_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+$")


def _entries(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _entry_error(entry: Any) -> str | None:
    if isinstance(entry, str):
        entry = {"notifier": entry}
    if not isinstance(entry, dict) or set(entry) - {"notifier", "args"} or "notifier" not in entry:
        return f"expected a dotted path or {{notifier: <dotted path>, args: {{...}}}}, got {entry!r}"
    path = entry["notifier"]
    if not isinstance(path, str) or not _PATH.match(path):
        return f"{path!r} is not a dotted path such as airflow.providers.smtp.notifications.smtp.SmtpNotifier"
    if not isinstance(entry.get("args", {}), dict):
        return f"{path}: args must be a mapping"
    module = path.rsplit(".", 1)[0]
    try:
        found = importlib.util.find_spec(module)  # imports the parent packages only, not the module
    except (ImportError, ValueError):
        found = None
    if found is None:
        return f"{path}: module {module} cannot be imported here (is its package installed?)"
    return None


def alerts_error(alerts: Any) -> str | None:
    """Why the ``alerts`` section is wrong, or None."""
    if not isinstance(alerts, dict):
        return f"expected a mapping of {', '.join(EVENTS)} to notifiers"
    unknown = sorted(set(alerts) - set(EVENTS))
    if unknown:
        return f"unknown event(s) {unknown}; known: {', '.join(EVENTS)}"
    for event, value in alerts.items():
        for entry in _entries(value):
            error = _entry_error(entry)
            if error:
                return f"{event}: {error}"
    return None


class Alert:
    """One configured notifier: a picklable callable that imports its target when it is called."""

    def __init__(self, path: str, args: dict[str, Any] | None = None) -> None:
        self.path, self.args = path, dict(args or {})

    def __repr__(self) -> str:
        return f"Alert({self.path!r})"

    def target(self) -> Any:
        module, name = self.path.rsplit(".", 1)
        return getattr(importlib.import_module(module), name)

    def __call__(self, *callback_args: Any) -> Any:
        target = self.target()
        if isinstance(target, type):  # a notifier class: built with args, called with the context
            return target(**self.args)(*callback_args)
        return target(*callback_args, **self.args)


def alerts_for(alerts: dict[str, Any] | None, event: str) -> list[Alert]:
    """The callbacks of ``event`` (``on_failure``, ``on_retry``, ``on_success``), in config order."""
    value = (alerts or {}).get(event)
    if value is None:
        return []
    out = []
    for entry in _entries(value):
        spec: dict[str, Any] = {"notifier": entry} if isinstance(entry, str) else dict(entry)
        out.append(Alert(spec["notifier"], spec.get("args")))
    return out


def deadline_missed(alerts: list[dict[str, Any]], context: Any = None, **_: Any) -> None:
    """The Deadline Alert's callback (Airflow 3): call every ``on_deadline_miss`` notifier with the context."""
    for spec in alerts:
        Alert(spec["notifier"], spec.get("args"))(context if context is not None else {})


def deadline_settings(alerts: dict[str, Any] | None, within: Any) -> dict[str, Any]:
    """The DAG arguments that enforce "published within ``within`` of the run's start" on this Airflow line.

    Airflow 3: a Deadline Alert from the moment the run is queued (a scheduled run is queued at
    ``schedule.run_at``), which calls the ``on_deadline_miss`` notifiers (else ``on_failure``'s) and lets the
    run go on. Airflow 2: ``dagrun_timeout``, which fails the run at the deadline, so the ``on_failure``
    notifiers are called.
    """
    from airflow_bt.compat import AIRFLOW_V3

    if not AIRFLOW_V3:
        return {"dagrun_timeout": within}
    from airflow.sdk.definitions.callback import SyncCallback
    from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

    targets = alerts_for(alerts, "on_deadline_miss") or alerts_for(alerts, "on_failure")
    specs = [{"notifier": a.path, "args": a.args} for a in targets]
    return {"deadline": DeadlineAlert(reference=DeadlineReference.DAGRUN_QUEUED_AT, interval=within,
                                      callback=SyncCallback(deadline_missed, kwargs={"alerts": specs}))}

"""alerts in a DAG config: checked at parse time, imported only when called, called as notifiers are."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from airflow_bt.compat import AIRFLOW_V3
from airflow_bt.dag_factory.alerts import Alert, alerts_error, alerts_for
from airflow_bt.dag_factory.config import ConfigError, load_config
from airflow_bt.dag_factory.factory import build_dag

if AIRFLOW_V3:
    from airflow.sdk.bases.notifier import BaseNotifier
else:
    from airflow.notifications.basenotifier import BaseNotifier

CALLS: list[tuple[str, Any]] = []


def record(context: dict[str, Any], label: str) -> None:
    CALLS.append((label, context["run_id"]))


class ListNotifier(BaseNotifier):
    """A notifier as Airflow's are: built with its arguments, called with the context."""

    template_fields = ("label",)

    def __init__(self, label: str) -> None:
        super().__init__()
        self.label = label

    def notify(self, context: dict[str, Any]) -> None:
        CALLS.append((self.label, context["run_id"]))


def test_a_function_gets_the_context_and_its_args_and_a_notifier_class_is_built_with_them():
    import pendulum

    from airflow_bt.compat import DAG

    CALLS.clear()
    dag = DAG("alerts", schedule=None, start_date=pendulum.datetime(2026, 6, 1, tz="UTC"))
    Alert(f"{__name__}.record", {"label": "fn"})({"run_id": "r1", "dag": dag})
    Alert(f"{__name__}.ListNotifier", {"label": "run {{ run_id }}"})({"run_id": "r2", "dag": dag})
    assert CALLS == [("fn", "r1"), ("run r2", "r2")]  # the notifier's template fields are rendered


@pytest.mark.parametrize(("alerts", "message"), [
    ({"on_fail": "a.b"}, "unknown event"),
    ({"on_failure": "nodots"}, "is not a dotted path"),
    ({"on_failure": [{"notifier": "a.b", "kwargs": {}}]}, "expected a dotted path or"),
    ({"on_failure": [{"notifier": "airflow_bt.nothing_here.Notifier"}]}, "module airflow_bt.nothing_here cannot be"),
    ({"on_retry": [{"notifier": "airflow_bt.cli.main", "args": [1]}]}, "args must be a mapping"),
])
def test_bad_alerts_are_named(alerts, message):
    error = alerts_error(alerts)
    assert error is not None and message in error, error


def test_alerts_become_the_dags_and_the_tasks_callbacks(tmp_path: Path):
    text = ("dag_id: d1\nmodel: churn\nstart_date: 2026-06-01\ntransform:\n  model_name: m\nalerts:\n"
            "  on_failure:\n    - notifier: airflow_bt.cli.main\n      args: {argv: [--help]}\n"
            "  on_retry: [airflow_bt.cli.main]\n")
    (tmp_path / "c.yaml").write_text(text)
    dag = build_dag(load_config(tmp_path / "c.yaml"), default_root=tmp_path.as_uri())
    failure = dag.on_failure_callback if isinstance(dag.on_failure_callback, list) else [dag.on_failure_callback]
    assert [a.path for a in failure] == ["airflow_bt.cli.main"] and failure[0].args == {"argv": ["--help"]}
    assert not dag.on_success_callback
    retry = dag.get_task("transform").on_retry_callback
    assert [a.path for a in (retry if isinstance(retry, list) else [retry])] == ["airflow_bt.cli.main"]
    assert [a.path for a in alerts_for({"on_success": "x.y"}, "on_success")] == ["x.y"]
    (tmp_path / "c.yaml").write_text(text.replace("airflow_bt.cli.main]", "airflow_bt.nope.alert]"))
    with pytest.raises(ConfigError, match=r"c\.yaml:6: setting `alerts`: on_retry: airflow_bt.nope.alert: module"):
        load_config(tmp_path / "c.yaml")


def test_the_documented_smtp_example_is_valid_and_builds_its_notifier():
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = re.search(r"  ```yaml\n  alerts:\n(.*?)  ```", readme, re.S)
    assert block, "the README's alerts example"
    import yaml

    alerts = yaml.safe_load("alerts:\n" + block.group(1))["alerts"]
    alerts["on_retry"] = []  # my_company.alerts is the reader's module
    assert alerts_error(alerts) is None
    (smtp,) = alerts_for(alerts, "on_failure")
    notifier = smtp.target()(**smtp.args)
    assert type(notifier).__name__ == "SmtpNotifier" and notifier.to == "data-eng@example.com"


def test_a_deadline_is_a_deadline_alert_on_airflow_3_and_a_run_timeout_on_airflow_2(tmp_path: Path):
    import datetime as dt

    base = ("dag_id: d1\nmodel: churn\nstart_date: 2026-06-01\ntransform:\n  model_name: m\n"
            "schedule:\n  run_at: '02:00'\n  timezone: Europe/Berlin\n")
    alerts = "alerts:\n  on_deadline_miss: [airflow_bt.cli.main]\n"
    (tmp_path / "c.yaml").write_text(base + "deadline: '06:30'\n" + alerts)
    dag = build_dag(load_config(tmp_path / "c.yaml"), default_root=tmp_path.as_uri())
    if AIRFLOW_V3:
        (alert,) = dag.deadline if isinstance(dag.deadline, list) else [dag.deadline]
        assert alert.interval == dt.timedelta(hours=4, minutes=30)
        assert type(alert.reference).__name__ == "DagRunQueuedAtDeadline"
        assert alert.callback.path == "airflow_bt.dag_factory.alerts.deadline_missed"
        assert alert.callback.kwargs == {"alerts": [{"notifier": "airflow_bt.cli.main", "args": {}}]}
    else:
        assert dag.dagrun_timeout == dt.timedelta(hours=4, minutes=30)
    for text, message in ((base + "deadline: '01:00'\n" + alerts, "is not after schedule.run_at 02:00"),
                          (base + "deadline: '06:30'\n", "nobody would be told of a missed deadline"),
                          (base + "deadline: '6:30'\n" + alerts, "setting `deadline`")):
        (tmp_path / "c.yaml").write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_config(tmp_path / "c.yaml")


def test_the_deadline_callback_calls_every_notifier_with_the_context():
    from airflow_bt.dag_factory.alerts import deadline_missed

    CALLS.clear()
    deadline_missed([{"notifier": f"{__name__}.record", "args": {"label": "late"}}], context={"run_id": "r9"})
    assert CALLS == [("late", "r9")]

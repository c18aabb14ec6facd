"""``_LATEST.json`` only moves forward: it names the attempt that completed last, after any interleaving."""

from __future__ import annotations

import json
import threading

import pendulum
import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_bt.steps import publish as publish_module
from airflow_bt.steps.layout import SUCCESS_NAME
from airflow_bt.steps.publish import point_latest, publish_attempt, read_latest
from airflow_bt.steps.runs import list_attempts
from airflow_bt.steps.shard import shard_partition
from airflow_bt.storage import for_uri, join_uri


@pytest.fixture(params=["file", "s3"])
def base(request, tmp_path):
    if request.param == "file":
        yield tmp_path.as_uri() + "/store"
    else:
        yield request.getfixturevalue("s3_bucket") + "/store"


def scored_partition(store, base: str) -> tuple[dict, str]:
    store.put_bytes(join_uri(base, "in/a.csv"), b"id,x\n" + b"".join(b"%d,%d\n" % (i, i) for i in range(20)))
    summary = shard_partition(store, join_uri(base, "in") + "/", join_uri(base, "w/shard-1") + "/",
                              join_uri(base, "w/m"), join_uri(base, "w/s.json"))
    for shard in summary["shards"]:
        rows = store.read_bytes(shard["uri"]).splitlines()
        store.put_bytes(join_uri(base, "w/t", shard["key"] + ".out"), b"0.5\n" * len(rows))
    return summary, join_uri(base, "w/t") + "/"


def test_a_publisher_delayed_before_its_pointer_write_does_not_move_it_back(base, monkeypatch):
    """A writes _SUCCESS, stalls (an S3 retry backoff is enough), B publishes completely, A resumes."""
    store = for_uri(base, aws_conn_id=None)
    summary, predictions = scored_partition(store, base)
    latest = join_uri(base, "out/dt=1/_LATEST.json")
    a_prefix, b_prefix = join_uri(base, "out/dt=1/run-a-1") + "/", join_uri(base, "out/dt=1/run-b-1") + "/"
    a_at_pointer, a_may_go = threading.Event(), threading.Event()
    real_failpoint = publish_module.failpoint

    def stall_a(name: str, where: str = "") -> None:
        if name == "publish.before_latest" and where == a_prefix:
            a_at_pointer.set()
            assert a_may_go.wait(60)
        real_failpoint(name, where)

    monkeypatch.setattr(publish_module, "failpoint", stall_a)
    outcome: dict[str, object] = {}
    a = threading.Thread(target=lambda: outcome.update(a=publish_attempt(
        store, summary, predictions, a_prefix, latest, prediction_columns=["p"])))
    a.start()
    assert a_at_pointer.wait(60)
    publish_attempt(store, summary, predictions, b_prefix, latest, prediction_columns=["p"])
    assert read_latest(store, join_uri(base, "out/dt=1"))["attempt_prefix"] == b_prefix
    a_may_go.set()
    a.join(60)
    assert "a" in outcome  # A's publication is complete and stays readable
    assert store.exists(join_uri(a_prefix, SUCCESS_NAME))
    assert read_latest(store, join_uri(base, "out/dt=1"))["attempt_prefix"] == b_prefix  # not moved back
    marked = [x["attempt"] for x in list_attempts(store, join_uri(base, "out/dt=1") + "/") if x["latest"]]
    assert marked == ["run-b-1"]  # `airflow-bt runs` agrees


def _manifest(prefix: str) -> dict:
    return {"attempt_prefix": prefix, "published_at": pendulum.now("UTC").to_iso8601_string(), "rows_out": 1}


@given(order=st.permutations(list(range(8))), points=st.lists(st.integers(0, 7), min_size=1, max_size=12))
def test_after_any_interleaving_the_pointer_names_the_attempt_that_completed_last(tmp_path_factory, order, points):
    """Attempts complete (write _SUCCESS) in a random order; their pointer writes come in another random
    order, some repeated, some never (a publisher killed before it): the pointer names the newest
    attempt that completed and pointed, or a newer one — never an older one than it had already named."""
    root = tmp_path_factory.mktemp("pointer").as_uri()
    store = for_uri(root)
    latest = join_uri(root, "dt=1/_LATEST.json")
    manifests = {}
    for i in order:  # completion order
        prefix = join_uri(root, f"dt=1/attempt-{i}") + "/"
        manifests[i] = _manifest(prefix)
        store.put_bytes(join_uri(prefix, SUCCESS_NAME), b"")
    rank = {i: n for n, i in enumerate(order)}
    best = None
    for i in points:
        point_latest(store, latest, manifests[i])
        best = i if best is None or rank[i] > rank[best] else best
        named = json.loads(store.read_bytes(latest))["attempt_prefix"]
        assert named == manifests[best]["attempt_prefix"]

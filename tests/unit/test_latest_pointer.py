"""``_LATEST.json`` only moves forward: it names the attempt that completed last, after any interleaving."""

from __future__ import annotations

import json
import os
import threading
import uuid

import pendulum
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_bt.steps import publish as publish_module
from airflow_bt.steps.layout import MANIFEST_NAME, SUCCESS_NAME
from airflow_bt.steps.pointer import completion_order
from airflow_bt.steps.publish import point_latest, publish_attempt, read_latest
from airflow_bt.steps.runs import format_attempts, list_attempts
from airflow_bt.steps.shard import shard_partition
from airflow_bt.storage import PreconditionFailedError, Storage, for_uri, join_uri


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


class Turnstile:
    """Lets one publisher thread at a time take its next storage step, in an order the test chooses.

    Every storage call of a publisher first waits at :meth:`step` until the test's scheduler grants
    that publisher the next step, so an interleaving is a list of choices (made by hypothesis), not
    a race with the clock.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._waiting: set[str] = set()
        self._running: set[str] = set()
        self._granted: str | None = None

    def register(self, name: str) -> None:
        with self._cond:
            self._running.add(name)

    def step(self, name: str) -> None:
        with self._cond:
            self._running.discard(name)
            self._waiting.add(name)
            self._cond.notify_all()
            assert self._cond.wait_for(lambda: self._granted == name, timeout=60), f"{name} never got a turn"
            self._granted = None
            self._waiting.discard(name)
            self._running.add(name)

    def done(self, name: str) -> None:
        with self._cond:
            self._running.discard(name)
            self._cond.notify_all()

    def ready(self) -> list[str]:
        """The publishers waiting for a step, once no publisher is between steps ([] when all are done)."""
        with self._cond:
            assert self._cond.wait_for(lambda: not self._running and self._granted is None, timeout=60)
            return sorted(self._waiting)

    def grant(self, name: str) -> None:
        with self._cond:
            self._granted = name
            self._cond.notify_all()


class SteppedStorage(Storage):
    """``store`` with every call made by a publisher thread waiting for its turn first."""

    def __init__(self, store: Storage, turnstile: Turnstile) -> None:
        self.store, self.turnstile = store, turnstile
        self.scheme = store.scheme
        self.names = threading.local()

    def _turn(self) -> None:
        self.turnstile.step(self.names.value)

    def list(self, prefix_uri):
        self._turn()
        return self.store.list(prefix_uri)

    def open_read(self, uri):
        self._turn()
        return self.store.open_read(uri)

    def open_write(self, uri, *, durable=True):
        self._turn()
        return self.store.open_write(uri, durable=durable)

    def read_versioned(self, uri):
        self._turn()
        return self.store.read_versioned(uri)

    def replace_if(self, uri, data, expected_version):
        self._turn()
        return self.store.replace_if(uri, data, expected_version)

    def delete_objects(self, uris):
        self._turn()
        return self.store.delete_objects(uris)

    def exists(self, uri):
        self._turn()
        return self.store.exists(uri)

    def stat(self, uri):
        self._turn()
        return self.store.stat(uri)


_INTERLEAVINGS = given(publishers=st.integers(2, 5), schedule=st.lists(st.integers(0, 4), max_size=80))


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@_INTERLEAVINGS
def test_concurrent_publishers_in_any_interleaving_leave_the_pointer_at_the_last_completed(
        tmp_path_factory, publishers, schedule):
    check_interleaving(tmp_path_factory.mktemp("pointer").as_uri(), publishers, schedule)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=15)  # ~30 moto calls each
@_INTERLEAVINGS
def test_concurrent_publishers_in_any_interleaving_on_s3(s3_bucket, publishers, schedule):
    check_interleaving(s3_bucket, publishers, schedule)


def check_interleaving(base: str, publishers: int, schedule: list[int]) -> None:
    """N publishers of one date, each: take published_at, write its manifest and _SUCCESS, point
    _LATEST.json. Every storage call of each is interleaved with the others' in an order hypothesis
    picks (``schedule``: which waiting publisher takes the next step, by index; the first once it runs
    out). On file:// and on moto S3 (moto 5 checks If-Match / If-None-Match on PutObject). After any
    interleaving the pointer names the attempt whose _SUCCESS is newest (ties: published_at, then
    prefix), a reader never saw it move back, and `airflow-bt runs` lists that attempt last and marks
    it. Before the compare-and-swap, whoever wrote the pointer last won."""
    root = join_uri(base, uuid.uuid4().hex)  # the fixture is shared by the examples: one root each
    real = for_uri(root, aws_conn_id=None)
    turnstile = Turnstile()
    store = SteppedStorage(real, turnstile)
    latest = join_uri(root, "dt=1/_LATEST.json")
    prefixes = {f"p{i}": join_uri(root, f"dt=1/run-{i}-1") + "/" for i in range(publishers)}
    errors: list[BaseException] = []
    published: dict[str, str] = {}

    def publisher(name: str) -> None:
        store.names.value = name
        try:
            turnstile.step(name)  # builds its manifest
            manifest = _manifest(prefixes[name])
            published[prefixes[name]] = manifest["published_at"]
            store.put_bytes(join_uri(prefixes[name], MANIFEST_NAME), json.dumps(manifest).encode())
            store.put_bytes(join_uri(prefixes[name], SUCCESS_NAME), b"")
            point_latest(store, latest, manifest)
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)
        finally:
            turnstile.done(name)

    threads = []
    for name in prefixes:
        turnstile.register(name)
        threads.append(threading.Thread(target=publisher, args=(name,), daemon=True))
        threads[-1].start()
    seen = []  # the pointer after each step, as a reader would find it
    choices = iter(schedule)
    while True:
        waiting = turnstile.ready()
        current = real.read_versioned(latest)
        if current is not None:
            pointer = json.loads(current.data)
            seen.append(completion_order(pointer["completed_at"], pointer["published_at"], pointer["attempt_prefix"]))
        if not waiting:
            break
        turnstile.grant(waiting[next(choices, 0) % len(waiting)])
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert seen == sorted(seen), "the pointer moved back to an attempt that completed earlier"
    done = {p: real.stat(join_uri(p, SUCCESS_NAME)).mtime for p in prefixes.values()}
    expected = max(done, key=lambda p: completion_order(done[p], published[p], p))
    assert done[expected] == max(done.values())  # it completed last (within one tick of the storage's clock)
    assert read_latest(real, join_uri(root, "dt=1"))["attempt_prefix"] == expected
    listed = list_attempts(real, join_uri(root, "dt=1") + "/")  # what `airflow-bt runs` prints
    assert [a["prefix"] for a in listed if a["latest"]] == [expected]
    assert listed[-1]["prefix"] == expected and listed[-1]["newest_complete"]


def test_a_pointer_deleted_between_read_and_write_is_written_again(base):
    """S3 answers If-Match on a missing object with 404, not 412: still a lost race, so the loop reads
    again (and writes with If-None-Match: *) instead of failing the publish."""
    store = for_uri(base, aws_conn_id=None)
    latest = join_uri(base, "dt=1/_LATEST.json")
    store.replace_if(latest, b"{}", None)
    read = store.read_versioned(latest)
    assert read is not None
    if base.startswith("s3://"):
        bucket, key = base[len("s3://"):].split("/", 1)
        store.client.delete_object(Bucket=bucket, Key=f"{key}/dt=1/_LATEST.json")
    else:
        os.unlink(base[len("file://"):] + "/dt=1/_LATEST.json")
    with pytest.raises(PreconditionFailedError):
        store.replace_if(latest, b"{}", read.version)
    prefix = join_uri(base, "dt=1/run-a-1") + "/"
    store.put_bytes(join_uri(prefix, SUCCESS_NAME), b"")
    assert point_latest(store, latest, _manifest(prefix))
    assert read_latest(store, join_uri(base, "dt=1"))["attempt_prefix"] == prefix


def test_runs_lists_attempts_in_completion_order_and_notes_a_pointer_not_yet_moved(tmp_path):
    """B took its published_at first but completed (wrote _SUCCESS) after A: `airflow-bt runs` lists B
    last, as the pointer orders them, and says so while B has not pointed yet (it sorted by
    published_at before)."""
    root = tmp_path.as_uri() + "/dt=1"
    store = for_uri(root)
    latest = join_uri(root, "_LATEST.json")
    a, b = join_uri(root, "run-a-1") + "/", join_uri(root, "run-b-1") + "/"
    manifest_b, manifest_a = _manifest(b), _manifest(a)  # B's publication began first
    for prefix, manifest in ((a, manifest_a), (b, manifest_b)):
        store.put_bytes(join_uri(prefix, MANIFEST_NAME), json.dumps(manifest).encode())
    store.put_bytes(join_uri(a, SUCCESS_NAME), b"")
    os.utime(tmp_path / "dt=1/run-a-1" / SUCCESS_NAME, ns=(10**18, 10**18))
    store.put_bytes(join_uri(b, SUCCESS_NAME), b"")
    os.utime(tmp_path / "dt=1/run-b-1" / SUCCESS_NAME, ns=(10**18 + 10**9, 10**18 + 10**9))  # a second later
    point_latest(store, latest, manifest_a)
    listed = list_attempts(store, root + "/")
    assert [x["attempt"] for x in listed] == ["run-a-1", "run-b-1"]
    assert [x["attempt"] for x in listed if x["latest"]] == ["run-a-1"]
    assert "note: run-b-1 completed last" in format_attempts(listed, root + "/")
    assert point_latest(store, latest, manifest_b)
    assert not point_latest(store, latest, manifest_a)  # A, retried late, does not move it back
    listed = list_attempts(store, root + "/")
    assert [x["attempt"] for x in listed if x["latest"]] == ["run-b-1"] == [x["attempt"] for x in listed][-1:]
    assert "note:" not in format_attempts(listed, root + "/")

"""`local-sagemaker`'s job logs: CloudWatch Logs streams named as SageMaker's, batched PutLogEvents, and every line
sent before the job shows a terminal status (the SageMaker SDK's wait() reads the streams once more, then stops)."""

from __future__ import annotations

import re
from typing import Any

from airflow_bt.service.joblogs import (
    LOG_GROUP,
    MAX_BATCH_BYTES,
    MAX_BATCH_EVENTS,
    MAX_EVENT_BYTES,
    JobLogs,
    batches,
    stream_name,
)


class FakeLogsClient:
    """Records the CloudWatch Logs calls; refuses what CloudWatch refuses (unsorted or oversized batches)."""

    def __init__(self, on_put: Any = None) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.on_put = on_put
        self.meta = type("Meta", (), {"endpoint_url": "http://fake"})()

    def create_log_group(self, **kwargs: Any) -> None:
        self.calls.append(("create_log_group", kwargs))

    def create_log_stream(self, **kwargs: Any) -> None:
        self.calls.append(("create_log_stream", kwargs))

    def put_log_events(self, **kwargs: Any) -> None:
        events = kwargs["logEvents"]
        assert len(events) <= MAX_BATCH_EVENTS
        assert sum(len(e["message"].encode()) + 26 for e in events) <= MAX_BATCH_BYTES
        assert [e["timestamp"] for e in events] == sorted(e["timestamp"] for e in events)
        assert all(e["message"] for e in events)
        if self.on_put is not None:
            self.on_put()
        self.calls.append(("put_log_events", kwargs))

    def puts(self) -> list[dict[str, Any]]:
        return [kwargs for name, kwargs in self.calls if name == "put_log_events"]


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


def test_streams_are_named_as_sagemaker_names_them_one_per_instance():
    job = "bt-churn-20260624-ab12"
    first, second = stream_name(job, 0, 1_700_000_000.7), stream_name(job, 1, 1_700_000_000)
    assert re.fullmatch(r"bt-churn-20260624-ab12/i-[0-9a-f]{17}-1700000000", first), first
    assert first != second and first == stream_name("bt-churn-20260624-ab12", 0, 1_700_000_000)
    # the SDK lists a job's streams by the prefix "<job name>/": another job's name that starts alike is not in it
    assert not stream_name("bt-churn-20260624-ab12-r2", 0, 0).startswith("bt-churn-20260624-ab12/")


def test_batches_keep_within_put_log_events_limits_and_order():
    events = [(1000 + i, f"line {i}") for i in range(25_000)]
    cut = batches(events)
    assert [len(b) for b in cut] == [10_000, 10_000, 5_000]
    assert [e for b in cut for e in b] == events

    big = [(1, "x" * 300_000), *((t, "y" * 250_000) for t in range(2, 6)), (6, "")]
    cut = batches(big)
    assert len(cut[0][0][1].encode()) == MAX_EVENT_BYTES  # one event over 256 KB is cut, not refused
    assert all(sum(len(m.encode()) + 26 for _, m in b) <= MAX_BATCH_BYTES for b in cut)
    # an empty line is sent as a space (CloudWatch refuses "")
    assert [len(b) for b in cut] == [4, 2] and cut[-1][-1] == (6, " ")


def test_lines_are_sent_batched_per_stream_when_the_job_finishes():
    client = FakeLogsClient()
    logs = JobLogs(client, where="fake", clock=Clock())
    try:
        logs.start_job("job-a")
        for i in range(3):
            logs.write("job-a", f"engine {i}\n")
        logs.write("job-a", "model says hi", instance=1)
        logs.finish("job-a")
        puts = client.puts()
        started = int(Clock()() + 0.5)
        assert {p["logStreamName"] for p in puts} == {stream_name("job-a", i, started) for i in (0, 1)}
        by_stream = {p["logStreamName"]: [e["message"] for e in p["logEvents"]] for p in puts}
        assert sorted(by_stream.values()) == [["engine 0", "engine 1", "engine 2"], ["model says hi"]]
        assert all(p["logGroupName"] == LOG_GROUP for p in puts)
        assert len(puts) == 2  # one PutLogEvents per stream, not one per line
        creates = [name for name, _ in client.calls if name.startswith("create")]
        assert creates.count("create_log_group") == 1 and creates.count("create_log_stream") == 2
        logs.write("job-a", "later")
        logs.finish("job-a")
        assert len(client.puts()) == 3 and client.calls.count(("create_log_group", {"logGroupName": LOG_GROUP})) == 1
    finally:
        logs.close()


def test_without_an_endpoint_the_lines_stay_in_memory():
    logs = JobLogs()
    logs.write("job-b", "hello")
    assert "kept in memory" in logs.describe() and "GET /logs/<job name>" in logs.describe()
    (name, events), = logs.lines("job-b").items()  # type: ignore[union-attr]
    assert name.startswith("job-b/i-") and [m for _, m in events] == ["hello"]
    assert logs.lines("no-such-job") is None


class TailClient:
    """describe_log_streams / get_log_events over ``streams`` (name -> [(timestamp, message)]), or ``error``."""

    def __init__(self, streams: dict[str, list[tuple[int, str]]], error: Exception | None = None) -> None:
        self.streams, self.error = streams, error

    def describe_log_streams(self, **kwargs: Any) -> dict[str, Any]:
        if self.error is not None:
            raise self.error
        prefix = kwargs["logStreamNamePrefix"]
        return {"logStreams": [{"logStreamName": n} for n in sorted(self.streams) if n.startswith(prefix)]}

    def get_log_events(self, **kwargs: Any) -> dict[str, Any]:
        assert kwargs["startFromHead"] is False
        events = self.streams[kwargs["logStreamName"]][-kwargs["limit"]:]
        return {"events": [{"timestamp": t, "message": m} for t, m in events]}


def test_the_tail_merges_the_jobs_streams_by_time_and_names_each_instance():
    from airflow_bt.transform.backends.job_logs import cloudwatch_tail

    client = TailClient({"j/i-aaa-1": [(1, "a1"), (4, "a4\n")], "j/i-bbb-1": [(2, "b2"), (3, "b3")],
                         "j-2/i-ccc-1": [(5, "other job")]})
    tail = cloudwatch_tail(client, "j", limit=3)
    assert tail.lines == ["[i-bbb-1] b2", "[i-bbb-1] b3", "[i-aaa-1] a4"]
    assert "/aws/sagemaker/TransformJobs" in tail.source
    assert cloudwatch_tail(TailClient({"j/i-aaa-1": [(1, "only")]}), "j").lines == ["only"]


def test_no_logs_or_no_permission_is_a_one_line_note():
    from botocore.exceptions import ClientError

    from airflow_bt.transform.backends.job_logs import cloudwatch_tail

    def error(code: str) -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": f"{code} says no\nsecond line"}}, "DescribeLogStreams")

    denied = cloudwatch_tail(TailClient({}, error("AccessDeniedException")), "j")
    assert not denied.lines and "AccessDeniedException" in denied.note and "logs:GetLogEvents" in denied.note
    assert "\n" not in denied.note
    assert "does not exist" in cloudwatch_tail(TailClient({}, error("ResourceNotFoundException")), "j").note
    assert "no log streams" in cloudwatch_tail(TailClient({"k/i-1": [(1, "x")]}), "j").note


def test_an_unreachable_endpoint_does_not_hold_up_the_next_jobs_end():
    class Down(FakeLogsClient):
        def put_log_events(self, **kwargs: Any) -> None:
            self.calls.append(("put_log_events", kwargs))
            raise ConnectionError("no route to host")

    client = Down()
    logs = JobLogs(client, where="fake")
    try:
        logs.write("j1", "one")
        logs.finish("j1")  # tries, fails, goes on: the line stays in memory
        logs.write("j2", "two")
        logs.finish("j2")  # within the back-off: the job's end does not wait for the endpoint again
        assert len(client.puts()) == 1
        assert [m for _, m in next(iter(logs.lines("j1").values()))] == ["one"]  # type: ignore[union-attr]
        client.put_log_events = FakeLogsClient.put_log_events.__get__(client)  # type: ignore[method-assign]
        logs._failing_until = 0.0  # the back-off is over
        logs.finish("j1")  # the line that could not go is sent now, once
        resent = [e["message"] for p in client.puts()[1:] if p["logStreamName"].startswith("j1/")
                  for e in p["logEvents"]]
        assert resent == ["one"]
    finally:
        logs.client = None  # nothing more to send at close
        logs.close()

from __future__ import annotations

import re

from airflow_bt.steps.naming import retry_job_name, run_job_name, run_slug

JOB = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


def test_run_slug_is_readable_and_unique():
    a = run_slug("scheduled__2026-06-24T00:00:00+00:00")
    b = run_slug("scheduled__2026-06-24T00:00:00+00:00")
    assert a.startswith("scheduled-20260624T000000-")
    assert a != b  # a recreated run with the same id never reuses a folder
    assert run_slug("manual__2026-06-24T10:11:12.5+02:00", token="abc123") == "manual-20260624T081112-abc123"
    assert run_slug("my custom id!", token="t") == "my-custom-id-t"


def test_job_names_are_valid_and_unique_per_attempt_that_starts_over():
    slug = run_slug("backfill__2026-06-01T00:00:00+00:00", token="3fa9c1")
    first = run_job_name("churn", "2026-06-01", slug)
    assert first == "bt-churn-20260601-3fa9c1"
    assert retry_job_name(first, 2) != first
    long = retry_job_name(run_job_name("a_very_long_model_name_" * 5, "2026-06-01", slug), 12)
    assert len(long) <= 63 and JOB.match(long)
    assert long.endswith("-20260601-3fa9c1-r12")

"""Sharding memory does not grow with input: 1 GB peaks at most 100 MB above 10 MB."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROBE = """
import json, resource, sys, time
from airflow_bt.steps.shard import shard_partition
from airflow_bt.storage import for_uri
base = sys.argv[1]
t = time.perf_counter()
summary = shard_partition(for_uri(base), base + "/in/", base + "/w/shard-1/", base + "/w/m", base + "/w/s.json",
                          target_shard_mb=64)
print(json.dumps({"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "records": summary["records"], "shards": len(summary["shards"]),
                  "seconds": time.perf_counter() - t}))
"""


def make_csv(folder: Path, megabytes: int) -> int:
    folder.mkdir(parents=True)
    line = b"C00012345,2024-01-31,premium,eu-central,27,79.95,2158.65,3,12,2,1,44\n"
    block = line * (1024 * 1024 // len(line))
    with (folder / "big.csv").open("wb") as fh:
        fh.write(b"customer_id,signup_date,plan,region,tenure_months,monthly_charges,total_charges,"
                 b"support_calls,last_login_days,num_products,autopay,age\n")
        for _ in range(megabytes):
            fh.write(block)
    return megabytes * block.count(b"\n")


def shard_in_subprocess(base: Path) -> dict[str, float]:
    proc = subprocess.run([sys.executable, "-c", PROBE, base.as_uri()], capture_output=True, text=True,
                          check=True, timeout=600)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_sharding_1gb_peaks_within_100mb_of_10mb(tmp_path):
    small_rows = make_csv(tmp_path / "small" / "in", 10)
    big_rows = make_csv(tmp_path / "big" / "in", 1024)
    small = shard_in_subprocess(tmp_path / "small")
    big = shard_in_subprocess(tmp_path / "big")
    print(f"\nshard 10 MB: {small}\nshard 1 GB: {big}")
    assert (small["records"], big["records"]) == (small_rows, big_rows)
    assert big["shards"] == 16
    assert big["rss_mb"] - small["rss_mb"] <= 100

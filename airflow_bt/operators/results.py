"""What the steps hand each other through XCom, typed: the shard step's output and the transform's result.

XCom holds plain JSON (``to_xcom()``); the next step reads it back with ``from_xcom()``, which names
the task whose value is malformed instead of failing later on a missing key.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from airflow_bt.compat import AirflowFailException


def _from_dict(cls: Any, value: Any, what: str, required: tuple[str, ...]) -> Any:
    if not isinstance(value, dict) or any(key not in value for key in required):
        raise AirflowFailException(f"`{what}` must be the {what} task's return value (a dict with "
                                   f"{', '.join(required)}), got {value!r}")
    known = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in value.items() if k in known})


@dataclass(frozen=True)
class ShardOutput:
    """The shard step's return value: where its shards, manifest and full summary are, and counts."""

    run_slug: str
    work_uri: str
    summary_uri: str
    run_prefix: str = ""
    shard_prefix: str = ""
    manifest_uri: str = ""
    format: str = ""
    content_type: str = ""
    shards: int = 0
    records: int = 0
    input_objects: int = 0
    bad_records: int = 0

    REQUIRED: ClassVar[tuple[str, ...]] = ("summary_uri", "work_uri", "run_slug")

    def to_xcom(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_xcom(cls, value: Any) -> ShardOutput:
        return _from_dict(cls, value, "shards", cls.REQUIRED)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class TransformResult:
    """The transform step's return value, one shape for every outcome (``status``):

    - ``Completed``: a job ran (or an earlier try's job was attached to) and completed;
    - ``Reused``: earlier tries left every shard's predictions, no job was started;
    - ``Skipped``: the partition has no records, nothing to score;
    - ``InProgress``: the job was handed to a sensor (``wait_for_completion=False``).

    ``prediction_prefixes`` lists where the publish step finds each shard's predictions, in the order
    to look (this job's output first, then earlier jobs of the run that a partial retry reuses), in
    every case — a job handed to a sensor included.
    """

    status: str
    backend: str
    output_uri: str
    prediction_prefixes: list[str]
    records: int
    shards_summary_uri: str
    job_name: str | None = None
    job_arn: str | None = None
    model_name: str | None = None
    instance_count: int = 0
    reused_shards: int = 0
    rejected: int = 0
    started_at: str | None = None
    ended_at: str | None = None
    billable_instance_seconds: float = 0.0
    price_per_instance_hour: float | None = None
    cost: float | None = None

    REQUIRED: ClassVar[tuple[str, ...]] = ("status", "output_uri", "prediction_prefixes", "shards_summary_uri")

    def to_xcom(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_xcom(cls, value: Any) -> TransformResult:
        return _from_dict(cls, value, "transform", cls.REQUIRED)  # type: ignore[no-any-return]

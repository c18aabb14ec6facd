"""What a finished transform job cost: billable instance-seconds (start to end, times instances) and dollars."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


def _as_datetime(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


@dataclass(frozen=True)
class Billing:
    """The job's run time and what it is billed; ``cost`` only when a price was given."""

    started_at: str | None
    ended_at: str | None
    seconds: float
    instance_count: int
    billable_instance_seconds: float
    price_per_instance_hour: float | None = None
    cost: float | None = None

    def describe_cost(self) -> str:
        if self.cost is None or self.price_per_instance_hour is None:
            return " (no transform.price_per_instance_hour given: cost not computed)"
        return f", cost ${self.cost:.6f} at ${self.price_per_instance_hour:g}/instance-hour"


def billing(description: dict[str, Any], price_per_instance_hour: float | None) -> Billing:
    """Billable instance-seconds of a ``DescribeTransformJob`` response and, given a price, the cost."""
    start = _as_datetime(description.get("TransformStartTime"))
    end = _as_datetime(description.get("TransformEndTime"))
    instances = int(description.get("TransformResources", {}).get("InstanceCount", 1))
    seconds = (end - start).total_seconds() if start and end else 0.0
    cost = None
    if price_per_instance_hour is not None:
        cost = round(seconds * instances / 3600.0 * price_per_instance_hour, 6)
    return Billing(
        started_at=start.isoformat() if start else None,
        ended_at=end.isoformat() if end else None,
        seconds=round(seconds, 3),
        instance_count=instances,
        billable_instance_seconds=round(seconds * instances, 3),
        price_per_instance_hour=price_per_instance_hour,
        cost=cost,
    )

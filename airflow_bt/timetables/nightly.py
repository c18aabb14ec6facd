"""A daily timetable whose logical date is the scored day and that runs after the day closes.

``CronDataIntervalTimetable("0 2 * * *")`` would give 02:00 logical dates (and Airflow 2's
backfill then drops a day); ``CronTriggerTimetable`` on Airflow 3 makes ``ds`` the run day.
This one makes each run's data interval one calendar day ``[D 00:00, D+1 00:00)`` in the
timetable's timezone and schedules it at ``D+1 <run_at>``: the 02:00 run on June 25 scores
``ds=2026-06-24``, and a backfill from June 1 to June 3 scores exactly June 1, 2 and 3,
identically on Airflow 2 and 3.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pendulum
from airflow.timetables.base import DagRunInfo, DataInterval, TimeRestriction, Timetable


class NightlyAfterCloseTimetable(Timetable):
    """One run per calendar day, scheduled ``run_at`` after the day closes.

    :param run_at: wall-clock time on the following day, ``"HH:MM"``.
    :param timezone: IANA timezone the days are cut in.
    """

    def __init__(self, run_at: str = "02:00", timezone: str = "UTC") -> None:
        hours, minutes = (int(part) for part in run_at.split(":"))
        if not (0 <= hours < 24 and 0 <= minutes < 60):
            raise ValueError(f"run_at must be HH:MM within a day, got {run_at!r}")
        self.run_at = f"{hours:02d}:{minutes:02d}"
        self.delay = dt.timedelta(hours=hours, minutes=minutes)
        self.timezone = str(timezone)
        self._tz = pendulum.timezone(self.timezone)
        self.description = f"Scores each calendar day ({self.timezone}) at {self.run_at} on the following day"

    # -- what the UI shows -------------------------------------------------------------
    @property
    def summary(self) -> str:
        return f"daily, after the day closes, at {self.run_at} {self.timezone}"

    # -- serialization (the plugin registers the class) -----------------------------------
    def serialize(self) -> dict[str, Any]:
        return {"run_at": self.run_at, "timezone": self.timezone}

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> NightlyAfterCloseTimetable:
        return cls(run_at=data["run_at"], timezone=data["timezone"])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NightlyAfterCloseTimetable) and self.serialize() == other.serialize()

    def __hash__(self) -> int:
        return hash((self.run_at, self.timezone))

    # -- scheduling -----------------------------------------------------------------------
    def _day_start(self, moment: dt.datetime, *, up: bool = False) -> pendulum.DateTime:
        local = pendulum.instance(moment).in_timezone(self._tz)
        start = local.start_of("day")
        if up and start != local:
            start = start.add(days=1)
        return start

    def _info(self, start: pendulum.DateTime) -> DagRunInfo:
        end = start.add(days=1)
        utc = pendulum.timezone("UTC")
        return DagRunInfo(
            run_after=(end + self.delay).in_timezone(utc),
            data_interval=DataInterval(start.in_timezone(utc), end.in_timezone(utc)),
        )

    def infer_manual_data_interval(self, *, run_after: dt.datetime) -> DataInterval:
        """A manual run (or ``airflow dags test DAG 2026-06-24``) scores the day its date falls on."""
        start = self._day_start(run_after)
        utc = pendulum.timezone("UTC")
        return DataInterval(start.in_timezone(utc), start.add(days=1).in_timezone(utc))

    def next_dagrun_info(
        self,
        *,
        last_automated_data_interval: DataInterval | None,
        restriction: TimeRestriction,
    ) -> DagRunInfo | None:
        if last_automated_data_interval is not None:
            start = self._day_start(last_automated_data_interval.end, up=True)
        elif restriction.earliest is None:
            return None  # no start_date: nothing to schedule
        else:
            start = self._day_start(restriction.earliest, up=True)
        if not restriction.catchup:
            # Only the most recent day whose run time has passed, as catchup=False promises.
            latest_due = self._day_start(pendulum.now("UTC") - self.delay).subtract(days=1)
            start = max(start, latest_due)
        if restriction.latest is not None and start > restriction.latest:
            return None
        return self._info(start)

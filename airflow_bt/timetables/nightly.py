"""A daily timetable whose logical date names the scored day and that runs after the day closes.

``CronDataIntervalTimetable("0 2 * * *")`` would give 02:00 logical dates (and Airflow 2's
backfill then drops a day); ``CronTriggerTimetable`` on Airflow 3 makes ``ds`` the run day.

Airflow derives ``ds`` from the logical date *in UTC*, and its CLIs read a bare date
(``airflow dags test DAG 2026-06-24``, ``dags backfill -s 2026-06-01``, ``backfill create
--from-date ...``) as midnight UTC. So this timetable labels the scored day ``D`` of its
timezone with the logical date ``D 00:00 UTC``: ``ds`` is ``D`` in every zone, a date typed on
the command line names that local day, and every local day gets exactly one run across DST
changes (a day is a date, never a 23- or 25-hour span cut out of UTC). The run itself waits for
the day to close in the zone: it is due at ``run_at`` wall-clock time on ``D + 1`` there. The
02:00 run on June 25 scores ``ds=2026-06-24``, and a backfill from June 1 to June 3 scores
exactly June 1, 2 and 3, identically on Airflow 2 and 3 and in every zone.

The data interval is the label's UTC day ``[D 00:00 UTC, D+1 00:00 UTC)``; the scored day's
real bounds in the zone are :meth:`NightlyAfterCloseTimetable.local_day_bounds`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pendulum
from airflow.timetables.base import DagRunInfo, DataInterval, TimeRestriction, Timetable

UTC = pendulum.timezone("UTC")


class NightlyAfterCloseTimetable(Timetable):
    """One run per calendar day of ``timezone``, due ``run_at`` after the day closes there.

    The logical date of the run that scores day ``D`` is ``D 00:00 UTC`` (see the module doc), so
    give the DAG's ``start_date`` as the first scored day at midnight UTC (``pendulum.datetime(2026, 6, 1)``;
    the day's local midnight names the same day).

    :param run_at: wall-clock time on the following day, ``"HH:MM"`` (a time that a DST change skips
        moves forward by the change, e.g. 02:30 becomes 03:30).
    :param timezone: IANA timezone the days are cut in.
    """

    def __init__(self, run_at: str = "02:00", timezone: str = "UTC") -> None:
        hours, minutes = (int(part) for part in run_at.split(":"))
        if not (0 <= hours < 24 and 0 <= minutes < 60):
            raise ValueError(f"run_at must be HH:MM within a day, got {run_at!r}")
        self.run_at = f"{hours:02d}:{minutes:02d}"
        self._hours, self._minutes = hours, minutes
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

    # -- days and their labels ------------------------------------------------------------
    @staticmethod
    def label(day: dt.date) -> pendulum.DateTime:
        """The logical date of the run that scores ``day``: its midnight in UTC."""
        return pendulum.datetime(day.year, day.month, day.day, tz=UTC)

    def local_day_bounds(self, logical_date: dt.datetime) -> tuple[pendulum.DateTime, pendulum.DateTime]:
        """The scored day's start and end in the timetable's zone (23 or 25 hours apart on DST days)."""
        day = pendulum.instance(logical_date).in_timezone(UTC).date()
        start = pendulum.datetime(day.year, day.month, day.day, tz=self._tz)
        return start, start.add(days=1)

    def _due(self, day: dt.date) -> pendulum.DateTime:
        """When the run for ``day`` is due: ``run_at`` on the next day, wall-clock time in the zone."""
        nxt = day + dt.timedelta(days=1)
        return pendulum.datetime(nxt.year, nxt.month, nxt.day, self._hours, self._minutes, tz=self._tz).in_timezone(UTC)

    def _info(self, day: dt.date) -> DagRunInfo:
        start = self.label(day)
        return DagRunInfo(run_after=self._due(day), data_interval=DataInterval(start, start.add(days=1)))

    def _named_day(self, moment: dt.datetime) -> dt.date | None:
        """The day a bound names when it is that day's midnight in UTC or in the zone, else None."""
        utc = pendulum.instance(moment).in_timezone(UTC)
        if utc == utc.start_of("day"):
            return utc.date()
        local = utc.in_timezone(self._tz)
        if local == local.start_of("day"):
            return local.date()
        return None

    def _first_day(self, earliest: dt.datetime) -> dt.date:
        """The first day a lower bound admits: the day it names, else the next local day to begin."""
        named = self._named_day(earliest)
        if named is not None:
            return named
        return pendulum.instance(earliest).in_timezone(self._tz).date() + dt.timedelta(days=1)

    def _last_day(self, latest: dt.datetime) -> dt.date:
        """The last day an upper bound admits: the day it names, else the local day it falls in."""
        named = self._named_day(latest)
        if named is not None:
            return named
        return pendulum.instance(latest).in_timezone(self._tz).date()

    def _latest_due_day(self) -> dt.date:
        """The most recent day whose run is due now."""
        now = pendulum.now(UTC)
        day = now.in_timezone(self._tz).date() - dt.timedelta(days=1)
        while self._due(day) > now:
            day -= dt.timedelta(days=1)
        return day

    # -- scheduling -----------------------------------------------------------------------
    def infer_manual_data_interval(self, *, run_after: dt.datetime) -> DataInterval:
        """A manual run scores the day its logical date names, as ``ds`` does.

        ``airflow dags test DAG 2026-06-24`` and ``--logical-date 2026-06-24`` score the zone's
        June 24, like the scheduled run of that day; a logical date of "now" scores today's UTC date.
        """
        start = self.label(pendulum.instance(run_after).in_timezone(UTC).date())
        return DataInterval(start, start.add(days=1))

    def next_dagrun_info(
        self,
        *,
        last_automated_data_interval: DataInterval | None,
        restriction: TimeRestriction,
    ) -> DagRunInfo | None:
        if last_automated_data_interval is not None:
            # Earlier versions labelled a day with the zone's midnight: that names the day too.
            last = last_automated_data_interval.start
            day = (self._named_day(last) or self._first_day(last)) + dt.timedelta(days=1)
        elif restriction.earliest is None:
            return None  # no start_date: nothing to schedule
        else:
            day = self._first_day(restriction.earliest)
        if not restriction.catchup:
            # Only the most recent day whose run time has passed, as catchup=False promises.
            day = max(day, self._latest_due_day())
        if restriction.latest is not None and day > self._last_day(restriction.latest):
            return None
        return self._info(day)

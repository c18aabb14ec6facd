from __future__ import annotations

import pendulum
from airflow.timetables.base import DataInterval, TimeRestriction

from airflow_bt.timetables.nightly import NightlyAfterCloseTimetable

UTC = pendulum.timezone("UTC")


def dt(*args: int) -> pendulum.DateTime:
    return pendulum.datetime(*args, tz=UTC)


def test_the_0200_run_on_june_25_scores_june_24():
    tt = NightlyAfterCloseTimetable("02:00", "UTC")
    info = tt.next_dagrun_info(
        last_automated_data_interval=DataInterval(dt(2026, 6, 23), dt(2026, 6, 24)),
        restriction=TimeRestriction(earliest=dt(2026, 6, 1), latest=None, catchup=True),
    )
    assert info.logical_date == dt(2026, 6, 24)
    assert info.data_interval == DataInterval(dt(2026, 6, 24), dt(2026, 6, 25))
    assert info.run_after == dt(2026, 6, 25, 2)


def test_a_backfill_from_june_1_to_3_is_exactly_three_days():
    tt = NightlyAfterCloseTimetable()
    restriction = TimeRestriction(earliest=dt(2026, 6, 1), latest=dt(2026, 6, 3), catchup=True)
    dates, last = [], None
    while (info := tt.next_dagrun_info(last_automated_data_interval=last, restriction=restriction)) is not None:
        dates.append(info.logical_date.date().isoformat())
        last = info.data_interval
    assert dates == ["2026-06-01", "2026-06-02", "2026-06-03"]


def test_first_run_starts_at_the_next_midnight_and_no_catchup_means_latest_day_only():
    tt = NightlyAfterCloseTimetable()
    info = tt.next_dagrun_info(last_automated_data_interval=None,
                               restriction=TimeRestriction(earliest=dt(2026, 6, 1, 5), latest=None, catchup=True))
    assert info.logical_date == dt(2026, 6, 2)
    no_catchup = tt.next_dagrun_info(last_automated_data_interval=None,
                                     restriction=TimeRestriction(earliest=dt(2020, 1, 1), latest=None,
                                                                 catchup=False))
    now = pendulum.now("UTC")
    assert no_catchup.run_after <= now + pendulum.duration(days=1)
    assert no_catchup.logical_date > now - pendulum.duration(days=3)


def test_timezone_days_and_manual_runs():
    tt = NightlyAfterCloseTimetable("03:30", "Europe/Berlin")
    interval = tt.infer_manual_data_interval(run_after=dt(2026, 6, 24, 12))
    assert interval.start == pendulum.datetime(2026, 6, 24, tz="Europe/Berlin")
    assert interval.end == pendulum.datetime(2026, 6, 25, tz="Europe/Berlin")
    info = tt.next_dagrun_info(last_automated_data_interval=interval,
                               restriction=TimeRestriction(earliest=None, latest=None, catchup=True))
    assert info.run_after == pendulum.datetime(2026, 6, 26, 3, 30, tz="Europe/Berlin")


def test_serialization_round_trip():
    tt = NightlyAfterCloseTimetable("01:15", "America/New_York")
    assert NightlyAfterCloseTimetable.deserialize(tt.serialize()) == tt
    assert "01:15" in tt.summary

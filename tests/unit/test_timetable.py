from __future__ import annotations

import pendulum
import pytest
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
    # labelled by the scored day's midnight UTC, so Airflow's ds is 2026-06-24
    assert interval == DataInterval(dt(2026, 6, 24), dt(2026, 6, 25))
    assert tt.local_day_bounds(interval.start) == (pendulum.datetime(2026, 6, 24, tz="Europe/Berlin"),
                                                   pendulum.datetime(2026, 6, 25, tz="Europe/Berlin"))
    info = tt.next_dagrun_info(last_automated_data_interval=interval,
                               restriction=TimeRestriction(earliest=None, latest=None, catchup=True))
    assert info.logical_date == dt(2026, 6, 25)
    assert info.run_after == pendulum.datetime(2026, 6, 26, 3, 30, tz="Europe/Berlin")


@pytest.mark.parametrize("zone", ["Europe/Berlin", "Asia/Tokyo", "America/New_York"])
def test_off_utc_the_first_run_scores_the_start_date_and_ds_is_the_local_day(zone):
    # Before the fix the run for Berlin's June 1 had logical date 05-31T22:00Z: ds=2026-05-31
    tt = NightlyAfterCloseTimetable("02:00", zone)
    first = tt.next_dagrun_info(last_automated_data_interval=None,
                                restriction=TimeRestriction(earliest=pendulum.datetime(2026, 6, 1, tz=zone),
                                                            latest=None, catchup=True))
    assert first.logical_date.in_timezone("UTC").strftime("%Y-%m-%d") == "2026-06-01"
    assert first.run_after == pendulum.datetime(2026, 6, 2, 2, tz=zone)


@pytest.mark.parametrize("zone", ["Europe/Berlin", "Asia/Tokyo", "America/New_York"])
def test_off_utc_a_backfill_of_june_1_to_3_is_exactly_three_days(zone):
    tt = NightlyAfterCloseTimetable("02:00", zone)
    # what `dags backfill -s 2026-06-01 -e 2026-06-03` / `backfill create` pass: midnight UTC
    restriction = TimeRestriction(earliest=dt(2026, 6, 1), latest=dt(2026, 6, 3), catchup=True)
    dates, last = [], None
    while (info := tt.next_dagrun_info(last_automated_data_interval=last, restriction=restriction)) is not None:
        dates.append(info.logical_date.in_timezone("UTC").strftime("%Y-%m-%d"))
        last = info.data_interval
    assert dates == ["2026-06-01", "2026-06-02", "2026-06-03"]


def test_london_scores_each_dst_day_exactly_once():
    # Before the fix 2026-03-29 (23 h) was scored twice and 2026-10-25 (25 h) never.
    tt = NightlyAfterCloseTimetable("02:00", "Europe/London")
    restriction = TimeRestriction(earliest=dt(2026, 3, 27), latest=dt(2026, 10, 27), catchup=True)
    days, last = [], None
    while (info := tt.next_dagrun_info(last_automated_data_interval=last, restriction=restriction)) is not None:
        days.append(info.logical_date.date())
        last = info.data_interval
    assert len(days) == len(set(days)) == (days[-1] - days[0]).days + 1
    assert {pendulum.date(2026, 3, 29), pendulum.date(2026, 10, 25)} <= set(days)


def test_a_manual_run_and_the_scheduled_run_of_a_day_agree():
    tt = NightlyAfterCloseTimetable("02:00", "America/New_York")
    scheduled = tt.next_dagrun_info(last_automated_data_interval=DataInterval(dt(2026, 6, 23), dt(2026, 6, 24)),
                                    restriction=TimeRestriction(earliest=dt(2026, 6, 1), latest=None, catchup=True))
    # `airflow dags trigger --logical-date 2026-06-24` / `airflow dags test DAG 2026-06-24`
    manual = tt.infer_manual_data_interval(run_after=dt(2026, 6, 24))
    assert manual == scheduled.data_interval


def test_runs_labelled_by_an_earlier_version_are_followed_by_the_next_day():
    tt = NightlyAfterCloseTimetable("02:00", "Europe/Berlin")
    old_label = pendulum.datetime(2026, 6, 23, tz="Europe/Berlin")  # 06-22T22:00Z named June 23
    info = tt.next_dagrun_info(last_automated_data_interval=DataInterval(old_label, old_label.add(days=1)),
                               restriction=TimeRestriction(earliest=dt(2026, 6, 1), latest=None, catchup=True))
    assert info.logical_date == dt(2026, 6, 24)


def test_run_at_in_a_skipped_hour_moves_forward():
    tt = NightlyAfterCloseTimetable("02:30", "Europe/Berlin")
    info = tt.next_dagrun_info(last_automated_data_interval=DataInterval(dt(2026, 3, 27), dt(2026, 3, 28)),
                               restriction=TimeRestriction(earliest=dt(2026, 3, 1), latest=None, catchup=True))
    assert info.logical_date == dt(2026, 3, 28)
    assert info.run_after == pendulum.datetime(2026, 3, 29, 3, 30, tz="Europe/Berlin")


def test_serialization_round_trip():
    tt = NightlyAfterCloseTimetable("01:15", "America/New_York")
    assert NightlyAfterCloseTimetable.deserialize(tt.serialize()) == tt
    assert "01:15" in tt.summary

"""Property: in every zone, across DST changes, each local day is scored exactly once and ds names it.

Runs through Airflow's own loops: the scheduler's (``next_dagrun_info`` after the last automated run,
from ``start_date``) and the backfill's (``iter_dagrun_infos_between`` with the CLI's midnight-UTC bounds,
on the DAG object each Airflow line uses for it).
"""

from __future__ import annotations

import datetime as dt

import pendulum
from airflow.timetables.base import DataInterval, TimeRestriction
from hypothesis import given
from hypothesis import strategies as st

from airflow_bt.compat import AIRFLOW_V3, DAG
from airflow_bt.timetables.nightly import NightlyAfterCloseTimetable

ZONES = ["UTC", "Europe/Berlin", "Europe/London", "America/New_York", "Asia/Tokyo", "Australia/Lord_Howe",
         "Asia/Kathmandu", "America/Sao_Paulo", "Pacific/Apia", "Pacific/Chatham"]
UTC = pendulum.timezone("UTC")

zones = st.sampled_from(ZONES)
run_ats = st.tuples(st.integers(0, 23), st.sampled_from([0, 15, 30, 45])).map(lambda hm: f"{hm[0]:02d}:{hm[1]:02d}")
# spans that start anywhere in 2025-2027 (so across both DST changes of every zone above) and last up to ~5 months
starts = st.dates(dt.date(2025, 1, 1), dt.date(2027, 6, 30))
spans = st.integers(0, 150)


def ds(moment: dt.datetime) -> str:
    """Airflow's ``ds``: the logical date's date in UTC (both lines)."""
    return pendulum.instance(moment).in_timezone(UTC).strftime("%Y-%m-%d")


def every_day(first: dt.date, last: dt.date) -> list[str]:
    return [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def scheduled(tt: NightlyAfterCloseTimetable, start_date: dt.datetime, until: dt.date) -> list:
    infos, last = [], None
    restriction = TimeRestriction(earliest=start_date, latest=None, catchup=True)
    while (info := tt.next_dagrun_info(last_automated_data_interval=last, restriction=restriction)) is not None:
        if pendulum.instance(info.logical_date).date() > until:
            break
        infos.append(info)
        last = info.data_interval
    return infos


def backfill(tt: NightlyAfterCloseTimetable, first: dt.date, last: dt.date) -> list:
    """The DagRunInfos Airflow's backfill command makes for ``-s first -e last`` (dates read as midnight UTC)."""
    start = NightlyAfterCloseTimetable.label(first)
    dag = DAG("properties", schedule=tt, start_date=start)
    if AIRFLOW_V3:  # the scheduler's side of Airflow 3 works on the serialized DAG
        from airflow.serialization.serialized_objects import DagSerialization

        dag = DagSerialization.from_dict(DagSerialization.to_dict(dag))
    return list(dag.iter_dagrun_infos_between(start, NightlyAfterCloseTimetable.label(last)))


@given(zone=zones, run_at=run_ats, first=starts, span=spans, local_start=st.booleans())
def test_the_scheduler_scores_every_local_day_exactly_once(zone, run_at, first, span, local_start):
    tt = NightlyAfterCloseTimetable(run_at, zone)
    # the factory's start_date (midnight UTC) or a hand-written DAG's (the zone's midnight) name the same day
    start_date = (pendulum.datetime(first.year, first.month, first.day, tz=zone) if local_start
                  else NightlyAfterCloseTimetable.label(first))
    last = first + dt.timedelta(days=span)
    infos = scheduled(tt, start_date, last)
    assert [ds(i.logical_date) for i in infos] == every_day(first, last)
    for info in infos:
        day = pendulum.instance(info.logical_date).date()
        local_start_of_day, local_end = tt.local_day_bounds(info.logical_date)
        assert local_start_of_day.date() == day
        assert info.run_after >= local_end  # never before the day closed in its zone
        assert info.run_after.in_timezone(zone).date() == day + dt.timedelta(days=1)
    run_afters = [i.run_after for i in infos]
    assert run_afters == sorted(run_afters) and len(set(run_afters)) == len(run_afters)


@given(zone=zones, first=starts, span=st.integers(0, 40))
def test_a_backfill_scores_exactly_the_days_it_names(zone, first, span):
    last = first + dt.timedelta(days=span)
    infos = backfill(NightlyAfterCloseTimetable("02:00", zone), first, last)
    assert [ds(i.logical_date) for i in infos] == every_day(first, last)


@given(zone=zones, day=starts, hour=st.integers(0, 23))
def test_a_manual_run_scores_the_day_its_logical_date_names_like_the_scheduled_run(zone, day, hour):
    tt = NightlyAfterCloseTimetable("02:00", zone)
    logical = pendulum.datetime(day.year, day.month, day.day, hour, tz=UTC)
    manual = tt.infer_manual_data_interval(run_after=logical)
    assert ds(manual.start) == ds(logical) == day.isoformat()
    yesterday = NightlyAfterCloseTimetable.label(day - dt.timedelta(days=1))
    nightly = tt.next_dagrun_info(last_automated_data_interval=DataInterval(yesterday, yesterday.add(days=1)),
                                  restriction=TimeRestriction(earliest=yesterday, latest=None, catchup=True))
    assert nightly is not None and nightly.data_interval == manual

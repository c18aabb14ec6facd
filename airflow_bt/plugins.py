"""The Airflow plugin: registers the provider's timetable so the scheduler can deserialize it."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from airflow_bt.timetables.nightly import NightlyAfterCloseTimetable


class AirflowBtPlugin(AirflowPlugin):
    name = "airflow_bt"
    timetables = [NightlyAfterCloseTimetable]

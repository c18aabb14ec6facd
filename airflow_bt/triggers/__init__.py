"""Triggers that run on Airflow's triggerer while a deferred task waits."""

from __future__ import annotations

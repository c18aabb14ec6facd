"""Extra links shown on task instances: where a task's job lives in the AWS console."""

from __future__ import annotations

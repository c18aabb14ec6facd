"""Where each step of one date partition reads and writes (the layout in DESIGN.md)."""

from __future__ import annotations

from dataclasses import dataclass

from airflow_bt.storage.uris import as_prefix, join_uri

LATEST_NAME = "_LATEST.json"
MANIFEST_NAME = "_manifest.json"
SUCCESS_NAME = "_SUCCESS"
#: The attempt's rejected records (``bad-input.jsonl``, ``model-rejected.jsonl``). ``_``-prefixed like the
#: other metadata, so an engine pointed at the attempt (Athena, Spark, DuckDB, pyarrow datasets skip
#: ``_`` and ``.`` names) reads the predictions and nothing else.
ERRORS_NAME = "_errors"


@dataclass(frozen=True)
class RunLayout:
    """The prefixes of one run (``slug``) of one date, below the scratch and output roots.

    ``work_root`` is e.g. ``<root>/work/churn/dt=2026-06-24/`` and ``output_root``
    ``<root>/output/churn/dt=2026-06-24/``.
    """

    work_root: str
    output_root: str
    slug: str

    @property
    def run_prefix(self) -> str:
        return as_prefix(join_uri(self.work_root, self.slug))

    def step_prefix(self, step: str, try_number: int) -> str:
        return as_prefix(join_uri(self.work_root, self.slug, f"{step}-{int(try_number)}"))

    def step_file(self, step: str, try_number: int, suffix: str) -> str:
        return join_uri(self.work_root, self.slug, f"{step}-{int(try_number)}{suffix}")

    def attempt_prefix(self, try_number: int) -> str:
        return as_prefix(join_uri(self.output_root, f"{self.slug}-{int(try_number)}"))

    @property
    def latest_uri(self) -> str:
        return join_uri(self.output_root, LATEST_NAME)

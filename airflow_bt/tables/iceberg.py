"""An Iceberg table as a day pointer: each publication is one commit that replaces the scored day's partition.

The attempt's own Parquet parts are registered in place (their footers are read, nothing is copied), in one
``overwrite`` snapshot that removes the day's previous files and adds the new ones, so the table holds
exactly one attempt per day and the snapshot before it still reads the earlier attempt (time travel). The
snapshot's summary names the run id, try, attempt prefix, model, job and row counts (``airflow_bt.*``).

The table is created on first publish from the parts' schema, partitioned by ``scored_date`` (identity; the
parts carry it as a constant ``date32`` column), with ``gc.enabled=false``: an engine's snapshot expiry must
never delete an attempt's files, which are write-once and owned by the attempt folder. A later attempt with
new columns (a new input column, a renamed prediction) adds them to the table's schema in the same commit
(logged, and named in the snapshot's ``airflow_bt.schema_change``); a column whose type changed is refused
naming the column and both types. Commits go through the catalog's optimistic concurrency: a lost race
reloads the table and decides again.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow_bt.storage.uris import as_prefix

log = logging.getLogger(__name__)

#: The partition column every table of scored days has (a ``date32`` constant in each part).
PARTITION_COLUMN = "scored_date"
#: Commit rounds before giving up (each lost round means another publisher committed first).
MAX_COMMIT_ROUNDS = 20
#: ``gc.enabled=false``: no engine's snapshot expiry deletes an attempt's files. ``commit.retry.num-retries=0``:
#: a lost commit race comes back to :meth:`IcebergTablePointer.move`, which decides again from the new state
#: (pyiceberg's own retry would re-apply the same replacement on top of another publisher's commit of the day).
TABLE_PROPERTIES = {"gc.enabled": "false", "format-version": "2", "write.parquet.compression-codec": "zstd",
                    "commit.retry.num-retries": "0"}
SUMMARY_PREFIX = "airflow_bt."


class TableCommitError(RuntimeError):
    """The table cannot take the attempt (a schema it cannot evolve to, a catalog that keeps refusing)."""


def snapshot_properties(manifest: dict[str, Any], schema_change: str | None = None) -> dict[str, str]:
    """The snapshot summary properties of a publication (strings, as Iceberg stores them)."""
    values = {
        "attempt_prefix": manifest.get("attempt_prefix"),
        "ds": manifest.get("ds"),
        "dag_id": manifest.get("dag_id"),
        "run_id": manifest.get("run_id"),
        "try_number": manifest.get("try_number"),
        "model": (manifest.get("model") or {}).get("name"),
        "job_name": manifest.get("job_name"),
        "rows_in": manifest.get("rows_in"),
        "rows_out": manifest.get("rows_out"),
        "rejected": manifest.get("rejected"),
        "quarantined": manifest.get("quarantined"),
        "published_at": manifest.get("published_at"),
        "schema_change": schema_change,
    }
    return {SUMMARY_PREFIX + key: str(value) for key, value in values.items() if value is not None}


def publication(snapshot: Any) -> dict[str, str]:
    """A snapshot's summary properties (``airflow_bt.*`` for the snapshots a publication committed)."""
    return dict(snapshot.summary.additional_properties) if snapshot.summary is not None else {}


def _attempt_of(file_paths: list[str]) -> str | None:
    """The attempt prefix the day's files are under (the folder of the first), or None for no files."""
    if not file_paths:
        return None
    return as_prefix(sorted(file_paths)[0].rsplit("/", 1)[0])


class IcebergTablePointer:
    """The day partitions of one Iceberg table, moved one commit per publication.

    :param catalog: a loaded pyiceberg catalog (:func:`airflow_bt.tables.catalog.load_catalog`).
    :param identifier: ``namespace.table``; the namespace and table are created when missing.
    """

    def __init__(self, catalog: Any, identifier: str, *, catalog_description: str = "") -> None:
        self.catalog = catalog
        self.identifier = identifier
        self.name = f"iceberg table {identifier}" + (f" ({catalog_description})" if catalog_description else "")
        self.last_snapshot_id: int | None = None

    # -- reading --------------------------------------------------------------------------------------------

    def _table(self) -> Any | None:
        from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

        try:
            return self.catalog.load_table(self.identifier)
        except (NoSuchTableError, NoSuchNamespaceError):
            return None

    @staticmethod
    def day_files(table: Any, day: str) -> list[Any]:
        """The data files of ``day``'s partition in the table's current snapshot."""
        from pyiceberg.expressions import EqualTo

        if table.current_snapshot() is None:
            return []
        day_filter = EqualTo(PARTITION_COLUMN, day)  # type: ignore[call-arg,arg-type]  # pydantic hides __init__
        return [task.file for task in table.scan(row_filter=day_filter).plan_files()]

    def current(self, day: str) -> str | None:
        table = self._table()
        return None if table is None else self.named(table, day, self.day_files(table, day))

    @staticmethod
    def named(table: Any, day: str, files: list[Any]) -> str | None:
        """The attempt the day's files are under; for a day without files, the attempt of the day's last
        publication in the table's history (an empty day is published too: it replaced the day with nothing)."""
        if files:
            return _attempt_of([f.file_path for f in files])
        snapshot = table.current_snapshot()
        while snapshot is not None:
            summary = publication(snapshot)
            if summary.get(SUMMARY_PREFIX + "ds") == day:
                return summary.get(SUMMARY_PREFIX + "attempt_prefix")
            parent = snapshot.parent_snapshot_id
            snapshot = table.snapshot_by_id(parent) if parent is not None else None
        return None

    # -- writing --------------------------------------------------------------------------------------------

    def _create(self, first_part: str | None, manifest: dict[str, Any]) -> Any:
        """The table, made from the first part's schema, or with the partition column alone for an attempt
        without parts (another publisher may create it first)."""
        from pyiceberg.exceptions import NamespaceAlreadyExistsError, TableAlreadyExistsError
        from pyiceberg.io import load_file_io

        namespace = self.identifier.rsplit(".", 1)[0]
        try:
            self.catalog.create_namespace(namespace)
        except Exception as exc:  # NamespaceAlreadyExistsError, or a unique-key error from a racing creator
            if not isinstance(exc, NamespaceAlreadyExistsError) and not self.catalog.namespace_exists(namespace):
                raise
        schema = (_read_schema(load_file_io(self.catalog.properties, location=first_part), first_part) if first_part
                  else _partition_only_schema())
        if PARTITION_COLUMN not in schema.names:
            raise TableCommitError(f"{first_part or manifest.get('attempt_prefix')} has no {PARTITION_COLUMN} column: "
                                   f"it was published without publish.table, so it cannot be registered in "
                                   f"{self.identifier}")
        try:
            with self.catalog.create_table_transaction(self.identifier, schema=schema,
                                                       properties=TABLE_PROPERTIES) as create:
                with create.update_spec() as spec:
                    spec.add_identity(PARTITION_COLUMN)
                _map_names(create)
            log.info("created %s, partitioned by %s, gc.enabled=false", self.name, PARTITION_COLUMN)
        except Exception as exc:  # TableAlreadyExistsError, or a unique-key error from a racing creator
            if not isinstance(exc, TableAlreadyExistsError) and not self.catalog.table_exists(self.identifier):
                raise
        return self.catalog.load_table(self.identifier)

    def move(self, day: str, attempt_prefix: str, manifest: dict[str, Any], *, expected: str | None) -> bool:
        from pyiceberg.exceptions import CommitFailedException, ValidationException

        parts = [str(part["uri"]) for part in manifest.get("parts", []) if str(part["uri"]).endswith(".parquet")]
        if len(parts) != len(manifest.get("parts", [])):
            raise TableCommitError(f"{attempt_prefix} has parts that are not Parquet; publish.table needs "
                                   "postprocess.format: parquet")
        for _ in range(MAX_COMMIT_ROUNDS):
            table = self._table()
            if table is None:
                table = self._create(parts[0] if parts else None, manifest)
            old = self.day_files(table, day)
            if self.named(table, day, old) != expected:
                return False  # moved since the caller looked: decide again
            try:
                self._commit(table, day, old, parts, manifest)
                return True
            except (CommitFailedException, ValidationException) as exc:  # the commit did not land
                log.info("%s: another commit won the race (%s); reloading", self.name, exc)
        raise TableCommitError(f"{self.name}: lost the commit race {MAX_COMMIT_ROUNDS} times in a row")

    def _commit(self, table: Any, day: str, old: list[Any], parts: list[str], manifest: dict[str, Any]) -> None:
        from pyiceberg.io.pyarrow import parquet_file_to_data_file

        arrow_schema = _read_schema(table.io, parts[0]) if parts else None
        change = _schema_change(table, arrow_schema)
        with table.transaction() as tx:
            if change:
                with tx.update_schema() as update:
                    update.union_by_name(arrow_schema)
                _map_names(tx)
                log.warning("%s: schema evolved: %s (earlier days read these as null)", self.name, change)
            props = snapshot_properties(manifest, change)
            with tx.update_snapshot(snapshot_properties=props).overwrite() as overwrite:
                for data_file in old:
                    overwrite.delete_data_file(data_file)
                for uri in parts:
                    data_file = parquet_file_to_data_file(table.io, tx.table_metadata, uri)
                    if _as_day(data_file.partition[0]) != day:
                        raise TableCommitError(f"{uri}: its {PARTITION_COLUMN} is {data_file.partition[0]}, not "
                                               f"{day}; refusing to register it in that day's partition")
                    overwrite.append_data_file(data_file)
        snapshot = table.current_snapshot()
        self.last_snapshot_id = snapshot.snapshot_id if snapshot is not None else None
        log.info("%s: snapshot %s replaces %s=%s with %d part(s) of %s (%d file(s) before)", self.name,
                 self.last_snapshot_id, PARTITION_COLUMN, day, len(parts), manifest.get("attempt_prefix"), len(old))


def _partition_only_schema() -> Any:
    """The schema of a table first published by an empty day: the partition column alone (a day without rows
    says nothing reliable of the columns' types; the first day with rows adds its columns)."""
    import pyarrow as pa

    return pa.schema([pa.field(PARTITION_COLUMN, pa.date32(), nullable=False)])


def _map_names(tx: Any) -> None:
    """Name the columns for readers: the parts are plain Parquet (no Iceberg field ids), read by name."""
    from pyiceberg.table import TableProperties

    mapping = tx.table_metadata.schema().name_mapping.model_dump_json()
    tx.set_properties(**{TableProperties.DEFAULT_NAME_MAPPING: mapping})


def _as_day(value: Any) -> str:
    """An identity-partition date (days since the epoch, or a date) as ``YYYY-MM-DD``."""
    import datetime as dt

    if isinstance(value, int):
        return (dt.date(1970, 1, 1) + dt.timedelta(days=value)).isoformat()
    return str(value)


def _read_schema(io: Any, uri: str) -> Any:
    """A part's Arrow schema, read through the catalog's or the table's file IO (its S3 endpoint and keys)."""
    import pyarrow.parquet as pq

    with io.new_input(uri).open() as stream:
        return pq.read_schema(stream)


def _schema_change(table: Any, arrow_schema: Any | None) -> str | None:
    """What a part's schema adds to the table's (``added a, b``), None for nothing; a changed type is refused."""
    if arrow_schema is None:
        return None
    from pyiceberg.io.pyarrow import _pyarrow_to_schema_without_ids

    current = table.schema()
    incoming = {field.name: field.field_type for field in _pyarrow_to_schema_without_ids(arrow_schema).fields}
    added = [name for name in arrow_schema.names if name not in current.column_names]
    for name in arrow_schema.names:
        if name in added:
            continue
        theirs, ours = current.find_field(name).field_type, incoming[name]
        if ours != theirs and not _promotable(ours, theirs):
            raise TableCommitError(f"column {name!r} is {theirs} in the table but {ours} in the new parts: Iceberg "
                                   "cannot change a column's type this way. Publish it under a new name "
                                   "(postprocess.prediction_columns / the input), or migrate the table "
                                   "(README, \"Tables\", schema changes)")
    return f"added {', '.join(added)}" if added else None


def _promotable(new: Any, old: Any) -> bool:
    """Whether a file of type ``new`` reads into a table column of type ``old`` (int -> long, float -> double)."""
    from pyiceberg.types import DoubleType, FloatType, IntegerType, LongType

    return (isinstance(new, IntegerType) and isinstance(old, LongType)) or \
        (isinstance(new, FloatType) and isinstance(old, DoubleType))

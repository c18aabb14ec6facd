"""A Glue/Hive partition as a day pointer (``publish.glue_table: {database, table}``).

For teams on plain Hive tables: the table ``database.table`` (created on first publish from the attempt's
``_manifest.json``) is partitioned by ``dt``, and partition ``dt=<day>`` has the location of exactly one
attempt folder, so Athena, Spark, Trino or Hive read that attempt's rows and nothing else (an attempt
folder holds data files plus ``_``-prefixed metadata, which Hive-style readers skip).

Glue has no conditional write of a partition (no compare-and-swap, unlike ``_LATEST.json`` or an Iceberg
commit): :meth:`GluePartitionPointer.move` reads the partition again just before it writes and moves only
when it still names ``expected``; a writer that changes it in the window between that read and the write is
not detected here. What keeps the partition from going back is the caller's decision (move only towards the
attempt ``_LATEST.json`` names, which moves forward by compare-and-swap) made again on every False, and
reading :meth:`~GluePartitionPointer.current` back after moving.

boto3 is not imported here: the Glue client is passed in (built from the Airflow AWS connection).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from airflow_bt.logs import LogLike

__all__ = ["GluePartitionPointer", "GlueTableError", "hive_type"]

log = logging.getLogger(__name__)

SETTING = "publish.glue_table"

_PARQUET = {
    "SerDe": "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe",
    "InputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
    "OutputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
    "SerDeParameters": {"serialization.format": "1"},
    "classification": "parquet",
}
_CSV = {
    "SerDe": "org.apache.hadoop.hive.serde2.OpenCSVSerde",
    "InputFormat": "org.apache.hadoop.mapred.TextInputFormat",
    "OutputFormat": "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat",
    "SerDeParameters": {"separatorChar": ",", "quoteChar": '"', "escapeChar": "\\"},
    "classification": "csv",
}
_JSONL = {
    "SerDe": "org.openx.data.jsonserde.JsonSerDe",
    "InputFormat": "org.apache.hadoop.mapred.TextInputFormat",
    "OutputFormat": "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat",
    "SerDeParameters": {"ignore.malformed.json": "false"},
    "classification": "json",
}
#: Our manifest's ``format`` -> how Hive reads it.
FORMATS: dict[str, dict[str, Any]] = {"parquet": _PARQUET, "csv": _CSV, "jsonl": _JSONL}

#: pyarrow type names (``str(pa_type)``, and the aliases a DAG config may use) -> Hive types.
_HIVE_TYPES = {
    "bool": "boolean", "boolean": "boolean",
    "int8": "tinyint", "int16": "smallint", "int32": "int", "int64": "bigint",
    "uint8": "smallint", "uint16": "int", "uint32": "bigint",
    "halffloat": "float", "float16": "float", "float": "float", "float32": "float",
    "double": "double", "float64": "double",
    "string": "string", "utf8": "string", "large_string": "string", "large_utf8": "string",
    "binary": "binary", "large_binary": "binary",
    "date32": "date", "date32[day]": "date", "date64": "date", "date64[ms]": "date",
}
_TIMESTAMP = re.compile(r"^timestamp\[(s|ms|us|ns)(,\s*tz=.*)?\]$")
_DECIMAL = re.compile(r"^decimal(?:128|256)?\((\d+),\s*(-?\d+)\)$")


class GlueTableError(RuntimeError):
    """The Glue table of ``publish.glue_table`` cannot take the attempt (missing database, a changed column...)."""


def hive_type(arrow_name: str, column: str, *, logger: LogLike | None = None) -> str:
    """The Hive type a column of pyarrow type ``arrow_name`` (as ``_manifest.json`` names it) is read as.

    A type without a Hive counterpart is declared ``string`` (with a warning): the partition stays readable.
    """
    text = arrow_name.strip()
    if text in _HIVE_TYPES:
        return _HIVE_TYPES[text]
    if _TIMESTAMP.match(text):
        return "timestamp"
    decimal = _DECIMAL.match(text)
    if decimal and int(decimal.group(1)) <= 38 and 0 <= int(decimal.group(2)) <= int(decimal.group(1)):
        return f"decimal({int(decimal.group(1))},{int(decimal.group(2))})"
    if text == "uint64":
        (logger or log).warning("%s: column %r is uint64, declared bigint in the Glue table (Hive has no unsigned "
                                "type); values above 2^63-1 do not read back", SETTING, column)
        return "bigint"
    (logger or log).warning("%s: column %r has type %s, which has no Hive counterpart here; the Glue table "
                            "declares it string", SETTING, column, text)
    return "string"


def _prefix(location: str) -> str:
    return location if location.endswith("/") else location + "/"


class GluePartitionPointer:
    """Partition ``<partition_key>=<day>`` of Glue table ``database.table`` names the attempt engines read.

    ``client`` is a boto3 Glue client. :meth:`move` creates the table when it is missing (never the database:
    a missing database is an error), adds the columns a later attempt brings (a logged schema evolution; a
    changed type of an existing column is an error), then creates or updates the partition with the attempt
    prefix as its location. Glue has no conditional partition update: see the module docstring.
    """

    def __init__(self, client: Any, database: str, table: str, *, partition_key: str = "dt",
                 logger: LogLike | None = None) -> None:
        if not database or not table:
            raise ValueError(f"{SETTING} needs both `database` and `table`; got database={database!r}, "
                             f"table={table!r}")
        self.client = client
        self.database = database
        self.table = table
        self.partition_key = partition_key
        self.logger = logger or log
        self.name = f"glue partition {database}.{table}"

    # ---- errors ---------------------------------------------------------------------------------------
    def _where(self, day: str | None = None) -> str:
        part = f" partition {self.partition_key}={day}" if day is not None else ""
        return f"{SETTING}: Glue table {self.database}.{self.table}{part}"

    def _failed(self, action: str, exc: Exception, day: str | None = None) -> GlueTableError:
        return GlueTableError(f"{self._where(day)}: {action} failed: {exc}")

    # ---- reading --------------------------------------------------------------------------------------
    def current(self, day: str) -> str | None:
        """The attempt prefix partition ``day`` points at (with a trailing ``/``), or None when the table,
        its database or the partition does not exist."""
        errors = self.client.exceptions
        try:
            got = self.client.get_partition(DatabaseName=self.database, TableName=self.table, PartitionValues=[day])
        except errors.EntityNotFoundException:
            return None
        except errors.ClientError as exc:
            raise self._failed("GetPartition", exc, day) from exc
        location = got["Partition"].get("StorageDescriptor", {}).get("Location")
        return _prefix(location) if location else None

    def _get_table(self) -> dict[str, Any] | None:
        errors = self.client.exceptions
        try:
            return dict(self.client.get_table(DatabaseName=self.database, Name=self.table)["Table"])
        except errors.EntityNotFoundException:
            return None
        except errors.ClientError as exc:
            raise self._failed("GetTable", exc) from exc

    # ---- moving ---------------------------------------------------------------------------------------
    def move(self, day: str, attempt_prefix: str, manifest: dict[str, Any], *, expected: str | None) -> bool:
        """Point partition ``day`` at ``attempt_prefix`` if it still names ``expected`` (None: no partition).

        Creates the table from ``manifest`` when missing and adds new columns to it. Returns False without
        writing when the partition names another attempt than ``expected`` (the caller decides again), or
        when another writer created the partition between this call's read and its CreatePartition.
        Glue cannot make the write conditional: a writer changing the partition between the read and
        UpdatePartition is not detected.
        """
        attempt_prefix = _prefix(attempt_prefix)
        expected = _prefix(expected) if expected else None
        self._check_layout(day, attempt_prefix)
        decided = self._still(day, attempt_prefix, expected)
        if decided is not None:
            return decided
        table = self._ensure_table(attempt_prefix, manifest)
        decided = self._still(day, attempt_prefix, expected)  # read again just before writing
        if decided is not None:
            return decided
        now = expected
        partition = self._partition_input(day, attempt_prefix, manifest, table)
        errors = self.client.exceptions
        if now is None:
            try:
                self.client.create_partition(DatabaseName=self.database, TableName=self.table,
                                             PartitionInput=partition)
            except errors.AlreadyExistsException:  # created by another writer since current() read it
                now = self.current(day)
                if now == attempt_prefix:
                    return True
                self.logger.info("%s: created by another writer (%s) while moving to %s; deciding again",
                                 self._where(day), now, attempt_prefix)
                return False
            except errors.ClientError as exc:
                raise self._failed("CreatePartition", exc, day) from exc
            self.logger.info("%s: created, location %s", self._where(day), attempt_prefix)
            return True
        try:
            self.client.update_partition(DatabaseName=self.database, TableName=self.table,
                                         PartitionValueList=[day], PartitionInput=partition)
        except errors.EntityNotFoundException:  # dropped since current() read it
            self.logger.info("%s: dropped by someone else while moving to %s; deciding again", self._where(day),
                             attempt_prefix)
            return False
        except errors.ClientError as exc:
            raise self._failed("UpdatePartition", exc, day) from exc
        self.logger.info("%s: moved from %s to %s", self._where(day), now, attempt_prefix)
        return True

    def _still(self, day: str, attempt_prefix: str, expected: str | None) -> bool | None:
        """None when the partition still names ``expected`` (move it); else whether it names the attempt."""
        now = self.current(day)
        if now == attempt_prefix:
            return True
        if now != expected:
            self.logger.info("%s: names %s, not %s as expected; not moved to %s", self._where(day), now, expected,
                             attempt_prefix)
            return False
        return None

    def _check_layout(self, day: str, attempt_prefix: str) -> None:
        """The attempt must be a folder of the day (``<output root>/<key>=<day>/<attempt>/``)."""
        parts = attempt_prefix.rstrip("/").rsplit("/", 2)
        if len(parts) != 3 or not parts[0] or not parts[1].endswith(f"={day}"):
            raise GlueTableError(f"{self._where(day)}: attempt prefix {attempt_prefix} is not a folder of that "
                                 f"day (expected <output root>/dt={day}/<attempt>/)")

    def _partition_input(self, day: str, attempt_prefix: str, manifest: dict[str, Any],
                         table: dict[str, Any]) -> dict[str, Any]:
        sd = dict(table["StorageDescriptor"])
        sd["Location"] = attempt_prefix
        parameters = {"airflow_bt.attempt_prefix": attempt_prefix}
        for key in ("run_id", "try_number", "job_name", "published_at", "rows_out"):
            if manifest.get(key) is not None:
                parameters[f"airflow_bt.{key}"] = str(manifest[key])
        return {"Values": [day], "StorageDescriptor": sd, "Parameters": parameters}

    # ---- the table ------------------------------------------------------------------------------------
    def _columns(self, manifest: dict[str, Any]) -> list[dict[str, str]]:
        """The attempt's columns as Glue columns (lower-case names, as Hive reads them). An attempt without parts
        (a day without rows) brings none: its column types were inferred from nothing."""
        if manifest.get("parts") == [] and manifest.get("rows_out") == 0:
            return []
        fmt = manifest.get("format")
        if fmt not in FORMATS:
            raise GlueTableError(f"{self._where()}: the attempt's format {fmt!r} has no Hive table format "
                                 f"(one of {', '.join(FORMATS)})")
        schema = manifest.get("schema")
        if fmt == "csv":  # OpenCSVSerde reads every column as string
            names = [c["name"] for c in schema] if schema else list(manifest.get("columns") or [])
            typed = [(name, "string") for name in names]
        elif schema:
            typed = [(c["name"], hive_type(str(c["type"]), c["name"], logger=self.logger)) for c in schema]
            if fmt == "jsonl":  # the JSON SerDe parses no ISO date/timestamp text as such: keep the text
                typed = [(n, "string" if t in ("date", "timestamp") else t) for n, t in typed]
        else:
            raise GlueTableError(
                f"{self._where()}: the attempt ({manifest.get('attempt_prefix')}) is untyped {fmt} with no column "
                "list in its _manifest.json, so the table's columns are unknown; publish typed parts "
                "(postprocess.format: parquet, or csv) for a Glue table")
        if not typed:
            raise GlueTableError(f"{self._where()}: the attempt's _manifest.json names no columns")
        seen: dict[str, str] = {}
        for name, _ in typed:
            if name.lower() in seen:
                raise GlueTableError(f"{self._where()}: columns {seen[name.lower()]!r} and {name!r} are one column "
                                     "to Hive, which ignores case; rename one")
            seen[name.lower()] = name
        return [{"Name": name.lower(), "Type": hive} for name, hive in typed]

    def _table_input(self, attempt_prefix: str, manifest: dict[str, Any]) -> dict[str, Any]:
        fmt = FORMATS[manifest["format"]]
        parameters = {"EXTERNAL": "TRUE", "classification": fmt["classification"],
                      "airflow_bt.format": str(manifest["format"])}
        if manifest["format"] == "csv":
            parameters["skip.header.line.count"] = "1"  # every CSV part starts with the header
        return {
            "Name": self.table,
            "TableType": "EXTERNAL_TABLE",
            "Parameters": parameters,
            "PartitionKeys": [{"Name": self.partition_key, "Type": "string"}],
            "StorageDescriptor": {
                "Columns": self._columns(manifest),
                # the model's output root: <root>/output/<model>/ (the attempt prefix's grandparent)
                "Location": attempt_prefix.rstrip("/").rsplit("/", 2)[0] + "/",
                "InputFormat": fmt["InputFormat"],
                "OutputFormat": fmt["OutputFormat"],
                "SerdeInfo": {"SerializationLibrary": fmt["SerDe"], "Parameters": dict(fmt["SerDeParameters"])},
                "Compressed": False,
                "StoredAsSubDirectories": False,
            },
        }

    def _ensure_table(self, attempt_prefix: str, manifest: dict[str, Any]) -> dict[str, Any]:
        """The table, created from ``manifest`` when missing, with the attempt's new columns added."""
        table = self._get_table()
        if table is None:
            table_input = self._table_input(attempt_prefix, manifest)
            errors = self.client.exceptions
            try:
                self.client.get_database(Name=self.database)
            except errors.EntityNotFoundException:
                raise GlueTableError(
                    f"{self._where()}: Glue database {self.database!r} does not exist (set "
                    f"{SETTING}.database to an existing database, or create it: the provider creates tables, "
                    "not databases)") from None
            except errors.ClientError as exc:
                raise self._failed("GetDatabase", exc) from exc
            try:
                self.client.create_table(DatabaseName=self.database, TableInput=table_input)
                self.logger.info("%s: created (%s, location %s, columns %s)", self._where(), manifest["format"],
                                 table_input["StorageDescriptor"]["Location"],
                                 ", ".join(f"{c['Name']} {c['Type']}"
                                           for c in table_input["StorageDescriptor"]["Columns"]))
            except errors.AlreadyExistsException:  # another publisher created it first
                pass
            except errors.ClientError as exc:
                raise self._failed("CreateTable", exc) from exc
            table = self._get_table()
            if table is None:
                raise GlueTableError(f"{self._where()}: created, but GetTable does not find it")
        return self._evolve(table, manifest)

    def _evolve(self, table: dict[str, Any], manifest: dict[str, Any]) -> dict[str, Any]:
        """Check the attempt fits ``table``; add the columns it brings (UpdateTable). Returns the table."""
        has = str(table.get("Parameters", {}).get("airflow_bt.format") or "")
        serde = table.get("StorageDescriptor", {}).get("SerdeInfo", {}).get("SerializationLibrary")
        fmt = str(manifest.get("format"))
        if (has and has != fmt) or (not has and fmt in FORMATS and serde != FORMATS[fmt]["SerDe"]):
            raise GlueTableError(f"{self._where()}: the table reads {has or serde}, but the attempt is {fmt}; "
                                 f"publish {has or 'the table format'} or point {SETTING} at another table")
        keys = [k.get("Name") for k in table.get("PartitionKeys", [])]
        if keys != [self.partition_key]:
            raise GlueTableError(f"{self._where()}: the table is partitioned by {keys}, not [{self.partition_key!r}]")
        existing = list(table["StorageDescriptor"].get("Columns", []))
        known = {c["Name"].lower(): c["Type"] for c in existing}
        wanted = self._columns(manifest)
        for column in wanted:
            if column["Name"] in known and known[column["Name"]].lower() != column["Type"].lower():
                raise GlueTableError(
                    f"{self._where()}: column {column['Name']!r} is {known[column['Name']]} in the table but "
                    f"{column['Type']} in attempt {manifest.get('attempt_prefix')}; a changed column type is not "
                    "evolved automatically (cast it back with postprocess.schema / prediction_types, or alter "
                    "the table)")
        if fmt == "csv":  # read by position: the attempt's columns must be the table's, then new ones
            names = [c["Name"] for c in wanted]
            if names[: len(existing)] != [c["Name"].lower() for c in existing]:
                raise GlueTableError(
                    f"{self._where()}: the attempt's CSV columns {names} do not start with the table's "
                    f"{[c['Name'] for c in existing]}; CSV is read by position, so columns may only be added "
                    "at the end")
        added = [c for c in wanted if c["Name"] not in known]
        if not added:
            return table
        sd = dict(table["StorageDescriptor"])
        sd["Columns"] = existing + added
        table_input = {k: v for k, v in table.items() if k in _TABLE_INPUT_KEYS}
        table_input["StorageDescriptor"] = sd
        try:
            self.client.update_table(DatabaseName=self.database, TableInput=table_input)
        except self.client.exceptions.ClientError as exc:
            raise self._failed("UpdateTable (adding columns)", exc) from exc
        self.logger.warning("%s: schema evolution: added column(s) %s from attempt %s", self._where(),
                            ", ".join(f"{c['Name']} {c['Type']}" for c in added), manifest.get("attempt_prefix"))
        table = dict(table)
        table["StorageDescriptor"] = sd
        return table


#: The fields of GetTable's answer that UpdateTable's TableInput takes.
_TABLE_INPUT_KEYS = ("Name", "Description", "Owner", "Retention", "StorageDescriptor", "PartitionKeys",
                     "ViewOriginalText", "ViewExpandedText", "TableType", "Parameters", "TargetTable")

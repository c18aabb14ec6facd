"""Layer 1, records: split byte streams into records and pack them into request payloads.

Pure Python, no Airflow, no network; streaming and constant memory.

>>> import io
>>> list(iter_payloads(io.BytesIO(b"1,2\\n3,4"), split_type="Line", batch_strategy="MultiRecord",
...                    max_payload_in_mb=6))
[(b'1,2\\n3,4\\n', 2)]
"""

from __future__ import annotations

from airflow_bt.records.batching import BATCH_STRATEGIES, MB, Payload, iter_payloads, payload_limit
from airflow_bt.records.compression import COMPRESSION_TYPES, decompressed
from airflow_bt.records.dataprocessing import (
    FILTER_TYPES,
    DataProcessingError,
    RecordProcessor,
    iter_processed_payloads,
    record_format,
)
from airflow_bt.records.jsonpath import JsonPath, JsonPathSelectError, JsonPathSyntaxError
from airflow_bt.records.splitting import (
    SPLIT_TYPES,
    RecordError,
    RecordFormatError,
    RecordTooLargeError,
    iter_records,
)

__all__ = [
    "BATCH_STRATEGIES",
    "COMPRESSION_TYPES",
    "FILTER_TYPES",
    "MB",
    "SPLIT_TYPES",
    "DataProcessingError",
    "JsonPath",
    "JsonPathSelectError",
    "JsonPathSyntaxError",
    "Payload",
    "RecordError",
    "RecordFormatError",
    "RecordProcessor",
    "RecordTooLargeError",
    "decompressed",
    "iter_payloads",
    "iter_processed_payloads",
    "iter_records",
    "payload_limit",
    "record_format",
]

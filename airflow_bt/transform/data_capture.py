"""``DataCaptureConfig`` on the local engine: what the job read and wrote, recorded as SageMaker's batch
data capture records it.

For a transform job with data capture, SageMaker writes under ``DestinationS3Uri`` one manifest of the
objects the job read (``input/``) and one of the objects it wrote (``output/``), in hour folders of the
job's end (``yyyy/mm/dd/hh``), for Model Monitor's batch-transform monitoring to read. Each manifest is a
``ManifestFile`` document: ``[{"prefix": <common prefix>}, <relative key>, ...]``. The local engine writes
the same two manifests, named for the job, once the job has ended, listing the objects that finished.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from airflow_bt.storage import Storage
from airflow_bt.storage.uris import as_prefix, join_uri


def _manifest(uris: Sequence[str]) -> bytes:
    """``[{"prefix": p}, key, ...]``: ``p`` the longest common folder of ``uris``."""
    common = posixpath.commonpath([u.split("://", 1)[1] for u in uris]) if len(uris) > 1 else \
        posixpath.dirname(uris[0].split("://", 1)[1])
    scheme = uris[0].split("://", 1)[0]
    prefix = as_prefix(f"{scheme}://{common}")
    return json.dumps([{"prefix": prefix}, *(u[len(prefix):] for u in uris)], indent=1).encode()


def capture_uris(config: dict[str, Any], job_name: str, ended_at: datetime) -> dict[str, str]:
    """Where the ``input`` and ``output`` manifests of the job go."""
    hour = ended_at.strftime("%Y/%m/%d/%H")
    return {kind: join_uri(config["DestinationS3Uri"], kind, hour, f"{job_name}.json") for kind in ("input", "output")}


def write_capture(store: Storage, config: dict[str, Any], job_name: str, ended_at: datetime,
                  read: Sequence[str], written: Sequence[str]) -> dict[str, str]:
    """Write the two manifests (none for a side with no objects); return the URIs written."""
    uris = capture_uris(config, job_name, ended_at)
    done = {}
    for kind, objects in (("input", read), ("output", written)):
        if objects:
            store.put_bytes(uris[kind], _manifest(list(objects)))
            done[kind] = uris[kind]
    return done

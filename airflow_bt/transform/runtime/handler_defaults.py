"""Default ``input_fn``/``predict_fn``/``output_fn`` for handlers that leave them out.

Like the SageMaker framework containers: numeric CSV, JSON, JSON Lines and ``.npy``
are decoded to numpy arrays, ``predict_fn`` calls ``model.predict`` (or the model
itself), and predictions are encoded back for the ``Accept`` type.
"""

from __future__ import annotations

import io
import json
from typing import Any

CSV = "text/csv"
JSON = "application/json"
JSONLINES = ("application/jsonlines", "application/jsonl", "application/x-jsonlines")
NPY = "application/x-npy"
DEFAULT_ACCEPT = JSON


class UnsupportedContentTypeError(ValueError):
    """The default handler functions cannot decode or encode this content type."""


def media_type(content_type: str) -> str:
    """``"text/csv; charset=utf-8"`` -> ``"text/csv"``."""
    return content_type.split(";", 1)[0].strip().lower()


def default_input_fn(input_data: bytes, content_type: str) -> Any:
    """Decode a request body into a numpy array."""
    import numpy as np

    media = media_type(content_type)
    if media == CSV:
        return np.loadtxt(io.StringIO(input_data.decode("utf-8")), delimiter=",", ndmin=2)
    if media == JSON:
        return np.asarray(json.loads(input_data))
    if media in JSONLINES:
        return np.asarray([json.loads(line) for line in input_data.splitlines() if line.strip()])
    if media == NPY:
        return np.load(io.BytesIO(input_data), allow_pickle=False)
    raise UnsupportedContentTypeError(
        f"the default input_fn cannot decode content type {content_type!r} (set TransformInput.ContentType "
        f"to one of {CSV}, {JSON}, {JSONLINES[0]}, {NPY}, or define input_fn in the handler)")


def default_predict_fn(data: Any, model: Any) -> Any:
    """``model.predict(data)``, or ``model(data)`` for a plain callable."""
    if hasattr(model, "predict"):
        return model.predict(data)
    if callable(model):
        return model(data)
    raise TypeError("the default predict_fn needs a model with .predict() or a callable, "
                    f"got {type(model).__name__}")


def _csv_row(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def default_output_fn(prediction: Any, accept: str) -> bytes:
    """Encode predictions for ``accept``: one CSV row/JSON line per prediction, or one JSON document."""
    media = media_type(accept)
    if media == NPY:
        import numpy as np

        buf = io.BytesIO()
        np.save(buf, np.asarray(prediction), allow_pickle=False)
        return buf.getvalue()
    values = prediction.tolist() if hasattr(prediction, "tolist") else prediction
    if media == JSON:
        return json.dumps(values).encode()
    rows = values if isinstance(values, (list, tuple)) else [values]
    if media == CSV:
        return "".join(_csv_row(row) + "\n" for row in rows).encode()
    if media in JSONLINES:
        return "".join(json.dumps(row) + "\n" for row in rows).encode()
    raise UnsupportedContentTypeError(
        f"the default output_fn cannot encode for Accept {accept!r} (set TransformOutput.Accept to one of "
        f"{CSV}, {JSON}, {JSONLINES[0]}, {NPY}, or define output_fn in the handler)")

"""The logger shape the layers below Airflow accept: ``logging.Logger`` or an operator's ``self.log``."""

from __future__ import annotations

from typing import Any, Protocol


class LogLike(Protocol):
    def debug(self, msg: str, /, *args: Any, **kwargs: Any) -> Any: ...

    def info(self, msg: str, /, *args: Any, **kwargs: Any) -> Any: ...

    def warning(self, msg: str, /, *args: Any, **kwargs: Any) -> Any: ...

    def error(self, msg: str, /, *args: Any, **kwargs: Any) -> Any: ...

    def exception(self, msg: str, /, *args: Any, **kwargs: Any) -> Any: ...

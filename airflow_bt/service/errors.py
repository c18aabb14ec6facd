"""The SageMaker API's error shapes, as AWS JSON 1.1 sends them (``{"__type": ..., "message": ...}``)."""

from __future__ import annotations


class ServiceError(Exception):
    """An error response: botocore raises ``ClientError`` with ``Error.Code == code``."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status

    def body(self) -> dict[str, str]:
        return {"__type": self.code, "message": self.message}


def validation(message: str) -> ServiceError:
    """``ValidationException``: a bad request, and (as SageMaker does) "could not find" for Describe*."""
    return ServiceError("ValidationException", message)


def resource_in_use(message: str) -> ServiceError:
    return ServiceError("ResourceInUse", message)


def resource_not_found(message: str) -> ServiceError:
    return ServiceError("ResourceNotFound", message)

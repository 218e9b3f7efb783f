"""The one exception tree of shelflife.

    ShelflifeError                      every error shelflife raises on purpose
    ├── ConfigError                     invalid configuration (exit 2)
    ├── UsageError                      a command was called wrongly (exit 2)
    ├── InvalidKeyError (ValueError)    a key that may not name an object (exit 2)
    ├── RefusedError                    refused for safety, nothing changed (exit 3)
    ├── LockedError                     another run holds the catalog lock (exit 4)
    │   └── LeaseLost                    this run no longer holds it: it stops (exit 4)
    ├── CatalogError                    the catalog database failed
    └── StoreError                      a store operation failed
        ├── ObjectNotFound (FileNotFoundError)
        ├── ObjectExists (FileExistsError)
        ├── StoreAuthError (PermissionError)     bad credentials or no permission
        ├── StoreUnreachable (ConnectionError)   cannot connect; retryable
        ├── StoreTransient                       5xx, dropped connection, cut body; retryable
        │   └── StoreThrottled                   503 SlowDown, 429, ServerBusy: slow down
        └── StoreConfigError                     the store's settings are wrong

Backend modules translate their client's exceptions into this tree at the boundary
(``raise ... from exc``); nothing above the store layer sees an obstore or boto3 error.
Every error carries a ``hint``: what the user can do about it. ``retryable`` marks the
errors worth trying again (with backoff, :mod:`shelflife.base.retry`); every other error is
permanent and reported as it is.
"""

from __future__ import annotations


class ShelflifeError(Exception):
    """Base of every error shelflife raises on purpose."""

    exit_code = 1
    retryable = False

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(ShelflifeError):
    """The configuration is invalid; ``path`` names the offending field."""

    exit_code = 2

    def __init__(self, message: str, *, path: str = "", hint: str | None = None) -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message, hint=hint)


class MissingExtraError(ConfigError):
    """A feature the configuration or command asks for needs a package an extra installs."""

    def __init__(self, feature: str, module: str, extra: str) -> None:
        self.feature = feature
        self.module = module
        self.extra = extra
        super().__init__(
            f"{feature} needs the '{extra}' extra ({module} is not installed)",
            hint=f"pip install 'shelflife[{extra}]'",
        )


class UsageError(ShelflifeError):
    """A command or function was called with arguments that cannot work."""

    exit_code = 2


class InvalidKeyError(ShelflifeError, ValueError):
    """A key that may not name an object (traversal, control characters, too long)."""

    exit_code = 2


class RefusedError(ShelflifeError):
    """An operation refused for safety; nothing was changed."""

    exit_code = 3


class LockedError(ShelflifeError):
    """Another run holds the catalog's lock."""

    exit_code = 4


class LeaseLost(LockedError):
    """This run's lease on the catalog lapsed or was taken over: it must take no further
    step (the run that holds the catalog now recovers what it left)."""


class CatalogError(ShelflifeError):
    """The catalog database could not be read or written."""


class StoreError(ShelflifeError):
    """A store operation failed."""


class ObjectNotFound(StoreError, FileNotFoundError):
    """No object at that key."""


class ObjectExists(StoreError, FileExistsError):
    """An object already exists where a create-only write was asked for."""


class ObjectArchived(StoreError):
    """The object sits in an archive storage class: it must be restored to be read."""

    exit_code = 2


class StoreAuthError(StoreError, PermissionError):
    """The store rejected the credentials, or they lack a permission."""


class StoreUnreachable(StoreError, ConnectionError):
    """The store could not be reached; trying again later may work."""

    retryable = True


class StoreTransient(StoreError):
    """The store failed this request but may not fail the next: a 5xx answer, a connection
    dropped mid-request, a body cut short."""

    retryable = True


class StoreThrottled(StoreTransient):
    """The store refused the request for its rate (S3 ``SlowDown``/503, 429, Azure 503
    ``ServerBusy``); ``retry_after`` is the delay it asked for, in seconds, if it named one."""

    def __init__(
        self, message: str, *, hint: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


class StoreConfigError(StoreError):
    """The store's settings cannot work (a missing option, an impossible combination)."""

    exit_code = 2

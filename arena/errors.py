"""Every exception Arena raises on purpose lives here.

Messages are written for the person who sees them: a voter, or an operator
reading a start-up error. They never carry a URL, a key or a stack trace.
"""

from __future__ import annotations


class ArenaError(Exception):
    """Base of every deliberate Arena error."""


class ConfigError(ArenaError):
    """The configuration file or the environment is invalid; the app must not start."""


class StorageError(ArenaError):
    """The database is missing, unreachable or not migrated."""


class ProviderError(ArenaError):
    """A model endpoint failed. `str(err)` is safe to show to a voter; `detail` is what the
    server itself said, for the log and the operator only: an error body can name the model."""

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail


class ConnectError(ProviderError):
    pass


class FirstTokenTimeout(ProviderError):
    pass


class StallTimeout(ProviderError):
    """Too long a gap between two tokens."""


class TotalTimeout(ProviderError):
    pass


class EndpointError(ProviderError):
    """The endpoint answered with an error status or a malformed stream."""


class ServerFailed(EndpointError):
    """The endpoint answered with a 5xx status: the replica is unwell, not the request."""


class StreamBroken(EndpointError):
    """The connection to the endpoint broke (refused mid-request, reset while streaming)."""


class NoEndpoint(ProviderError):
    """Every replica of a model is down (issue 7): the request was not sent anywhere."""


class EndpointBusy(ProviderError):
    """Every healthy replica of a model was at its cap for the whole queue wait."""


class BattleError(ArenaError):
    """A battle operation the rules forbid. `str(err)` is safe to show to a voter."""


class BattleNotFound(BattleError):
    pass


class VoteRejected(BattleError):
    pass


class TurnRejected(BattleError):
    pass


class NotEnoughModels(BattleError):
    pass


class RateLimited(BattleError):
    """An abuse limit was hit (arena.identity); the message says which and for how long."""


class Banned(BattleError):
    """The client's address is banned by an administrator."""


class ImportFormatError(ArenaError):
    """A file given to `arena import` cannot be read. `str(err)` names the file, the row and the
    field."""


class SnapshotError(ArenaError):
    """A ratings run failed; the previous snapshot stays served."""


class ApiParameterError(ArenaError):
    """A request parameter of the export API is invalid; `parameter` names it."""

    def __init__(self, parameter: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.parameter = parameter
        self.status = status

"""What elman refuses: ``UsageError`` is what the user gave that cannot be used (an option, a file, a text, a
request), with a message that names the problem and what to do. The command line prints it without a
traceback and the server answers it with a 4xx; any other exception is a bug and keeps its traceback (the
server: a 500 and a log line). The layer raises what ``nn.RNN`` raises instead (see ``elman.layer.rnn``)."""

import contextlib
from collections.abc import Iterator


class UsageError(ValueError):
    """A refusal of the user's input; a ``ValueError``, as Python's own refusals of a value are."""


class UsageTypeError(UsageError, TypeError):
    """A refusal of a value of the wrong type (a number where a text belongs); a ``TypeError`` too."""


@contextlib.contextmanager
def refused_as_usage(what: str) -> Iterator[None]:
    """Around building something from the user's options: a ``ValueError`` or ``TypeError`` raised by the
    checks of what is built (the layer's are ``nn.RNN``'s) refuses those options, and becomes a
    ``UsageError`` naming ``what``."""
    try:
        yield
    except UsageError:
        raise
    except (ValueError, TypeError) as error:
        raise UsageError(f"{what}: {error}") from error

"""Symbiont, the Python side: the agent SDK and the host that runs Python for an OTP app.

Python code runs in host processes supervised by the Elixir application. From there it
calls back into Erlang with :mod:`symbiont.erlang`, and agents (subclasses of
:class:`Agent`) react to events published on the mesh.
"""

from . import erlang as erlang
from ._agent import Agent as Agent
from ._agent import Health as Health
from ._agent import every as every
from ._agent import on as on
from ._errors import CallTimeout as CallTimeout
from ._errors import CancelledError as CancelledError
from ._errors import ErlangError as ErlangError
from ._errors import FrameTooLarge as FrameTooLarge
from ._errors import OverloadedError as OverloadedError
from ._errors import ReservedTopicError as ReservedTopicError
from ._errors import TopicLimitError as TopicLimitError
from ._terms import Atom as Atom
from ._terms import OpaqueTerm as OpaqueTerm
from ._terms import Pid as Pid
from ._terms import Ref as Ref


def _version() -> str:
    """The checkout's VERSION file (hosts run the SDK from its source directory,
    PYTHONPATH), else the installed distribution's version, else "0+unknown"."""
    import os  # noqa: PLC0415

    checkout = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "VERSION")
    if os.path.isfile(checkout):
        with open(checkout, encoding="utf-8") as file:
            return file.read().strip()
    # Only here: importlib.metadata costs a host some 7 MB.
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version("symbiont")
    except PackageNotFoundError:
        return "0+unknown"


def __getattr__(name: str) -> str:
    # ``__version__``, read when first asked for (PEP 562), not by every host at start.
    if name == "__version__":
        global __version__  # noqa: PLW0603 - computed once, then a plain attribute
        __version__ = _version()
        return __version__
    raise AttributeError(f"module 'symbiont' has no attribute {name!r}")


#: The version of Symbiont, one for both languages: the repository's ``VERSION`` file,
#: read by ``mix.exs`` and ``pyproject.toml`` too (computed when first read).
__version__: str

__all__ = [
    "Agent",
    "Atom",
    "CallTimeout",
    "CancelledError",
    "ErlangError",
    "FrameTooLarge",
    "Health",
    "OpaqueTerm",
    "OverloadedError",
    "Pid",
    "Ref",
    "ReservedTopicError",
    "TopicLimitError",
    "erlang",
    "every",
    "on",
]

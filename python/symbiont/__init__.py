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
    """The installed distribution's version, else the checkout's VERSION file (hosts run
    the SDK from its source directory, PYTHONPATH), else "0+unknown"."""
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    checkout = Path(__file__).resolve().parents[2] / "VERSION"
    if checkout.is_file():
        return checkout.read_text().strip()
    try:
        return version("symbiont")
    except PackageNotFoundError:
        return "0+unknown"


#: The version of Symbiont, one for both languages: the repository's ``VERSION`` file,
#: read by ``mix.exs`` and ``pyproject.toml`` too.
__version__ = _version()

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

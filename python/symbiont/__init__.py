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

__version__ = "0.1.0"

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

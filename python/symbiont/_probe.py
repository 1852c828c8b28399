"""Whether an agent can start, checked without starting it (``Symbiont.Agent.Probe``).

The BEAM calls :func:`check_agent` in a short-lived host process of its own before an
agent runs (at node start, and in ``spawn_agent``, ``deploy`` and ``reload_manifest``):
never in the BEAM, and never in the process that will run the agent.

What a check does: for a Python agent it imports the module (its top-level code runs,
with whatever side effects it has: agents are trusted code, and it would run the same
when the agent starts), looks the class up, checks that it subclasses
:class:`symbiont.Agent`, and constructs one instance with the agent's name and config and
no state (its ``__init__`` runs), then drops it. ``on_start`` is not called; nothing is
subscribed, published or checkpointed. For a Wasm agent it also compiles the module and
instantiates it in its sandbox (:meth:`symbiont.wasm.WasmAgent.probe`), which runs its
``symbiont_init`` with imports that go nowhere.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any

from ._agent import agent_class
from ._errors import error_map

__all__ = ["check_agent"]

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep
_IMPORTLIB = os.path.dirname(os.path.abspath(traceback.__file__)) + os.sep + "importlib" + os.sep


def check_agent(spec: dict[str, Any]) -> dict[str, str] | None:
    """``None`` when the agent ``spec`` can start, else why not.

    ``spec`` has ``name``, ``module``, ``class`` and ``config``, as the owner's
    ``agent_start`` (PROTOCOL.md §8). Why not is the error map of PROTOCOL.md §5
    (``type``, ``message``, ``traceback``) plus ``where``: the innermost frame of the
    traceback in the agent's own code, as ``"shop.py:12 in __init__"``, or ``""`` (a
    module that is not found has none). ``SystemExit`` at import is an error like the
    others; a cancelled check (``symbiont.CancelledError``) is not caught.
    """
    try:
        name, module, class_name = spec["name"], spec["module"], spec["class"]
        config = spec.get("config")
        for key, value in (("name", name), ("module", module), ("class", class_name)):
            if type(value) is not str or not value:
                raise TypeError(f"agent {key} must be a non-empty str, got {value!r}")
        agent = agent_class(module, class_name)(name, config=config, state=None)
        # A Wasm agent's class comes from symbiont.wasm, imported by now if it is one.
        wasm = sys.modules.get("symbiont.wasm")
        if wasm is not None and isinstance(agent, wasm.WasmAgent):
            agent.probe()
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the answer is the error
        error = error_map(exc)
        error["where"] = _where(exc)
        return error
    return None


def _where(exc: BaseException) -> str:
    """The innermost frame of ``exc``'s traceback outside symbiont and importlib."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        path = os.path.abspath(frame.filename) if not frame.filename.startswith("<") else ""
        if path and not path.startswith((_PACKAGE, _IMPORTLIB)):
            return f"{os.path.basename(path)}:{frame.lineno} in {frame.name}"
    return ""

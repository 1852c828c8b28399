"""The agent SDK: :class:`Agent`, :func:`on` and :func:`every` (PROTOCOL.md §8)."""

from __future__ import annotations

import importlib
import inspect
import logging
import math
import threading
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from msgpack import unpackb as _unpackb

from . import _contract, erlang
from ._aio import check_method, not_runnable
from ._errors import ReservedTopicError, TopicLimitError
from ._health import _HEALTH_KINDS as _HEALTH_KINDS  # the kinds an agent reports (test_contract)
from ._health import HEALTH_METRIC_NAME_BYTES as HEALTH_METRIC_NAME_BYTES
from ._health import HEALTH_METRIC_TEXT_BYTES as HEALTH_METRIC_TEXT_BYTES
from ._health import HEALTH_METRICS as HEALTH_METRICS
from ._health import HEALTH_REASON_BYTES as HEALTH_REASON_BYTES
from ._health import Health as Health
from ._terms import _ext_hook, encode_error, packb

if TYPE_CHECKING:  # pragma: no cover
    from .wasm import WasmPlugin

__all__ = ["MAX_TOPIC_BYTES", "RESERVED_PREFIX", "Agent", "Health", "every", "on"]

#: The longest topic an agent may publish on or subscribe to, in UTF-8 bytes (the owner's
#: ``Symbiont.Event.max_topic_bytes/0``).
MAX_TOPIC_BYTES = 1024
#: Topics that start with this are the node's own (``Symbiont.ControlPlane``): an agent
#: may subscribe to them, but not publish there (:class:`~symbiont.ReservedTopicError`).
RESERVED_PREFIX = _contract.RESERVED_TOPIC_PREFIX

_F = TypeVar("_F", bound=Callable[..., Any])
_TOPICS_ATTR = "__symbiont_topics__"
_EVERY_ATTR = "__symbiont_every_ms__"
#: The hooks the host calls besides handlers and timers, which may be ``async def``; and
#: those it calls without an event loop, which may not.
_HOOKS = ("on_start", "on_stop", "on_message", "handle_event")
_PLAIN = ("subscriptions",)


def on(topic: str) -> Callable[[_F], _F]:
    """Mark an :class:`Agent` method as the handler of the events published on ``topic``.

    The method is called with the event's payload. A method may carry several ``@on``;
    several methods may handle the same topic (called in definition order). It may be an
    ``async def``: the host awaits it on its event loop (see :class:`Agent`).

    Example::

        class Billing(Agent):
            @on("orders.created")
            def charge(self, order): ...

            @on("orders.refunded")
            async def refund(self, order):
                await self.apublish("billing.refunded", order)
    """
    if not isinstance(topic, str):
        raise TypeError(f"@on(topic) expects topic to be a str, got {type(topic).__name__}")
    if not topic:
        raise ValueError("@on(topic) expects a non-empty topic")

    def decorate(fn: _F) -> _F:
        if not callable(fn):
            raise TypeError(f"@on({topic!r}) must decorate a method, got {fn!r}")
        topics = list(getattr(fn, _TOPICS_ATTR, ()))
        if topic not in topics:
            topics.append(topic)
        setattr(fn, _TOPICS_ATTR, tuple(topics))
        return fn

    return decorate


_MAX_EVERY_S = ((1 << 32) - 1) / 1000


def every(seconds: float) -> Callable[[_F], _F]:
    """Mark an :class:`Agent` method as a timer run every ``seconds`` (at least 0.001).

    The owner schedules the ticks; the method is called without arguments. It may be an
    ``async def``, awaited like an ``async`` handler.

    Example::

        class Orders(Agent):
            @every(1.0)
            def create(self): ...
    """
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(
            f"@every(seconds) expects seconds to be a number, got {type(seconds).__name__}"
        )
    # The owner's timers take at most 2^32-1 ms (PROTOCOL.md §9), 49.7 days.
    if not math.isfinite(seconds) or not 0.001 <= seconds <= _MAX_EVERY_S:
        raise ValueError(
            f"@every(seconds) expects a finite number in 0.001..{_MAX_EVERY_S}, got {seconds!r}"
        )
    every_ms = int(seconds * 1000)

    def decorate(fn: _F) -> _F:
        if not callable(fn):
            raise TypeError(f"@every({seconds!r}) must decorate a method, got {fn!r}")
        if hasattr(fn, _EVERY_ATTR):
            raise ValueError(f"@every may be applied only once to {fn.__qualname__}")
        setattr(fn, _EVERY_ATTR, every_ms)
        return fn

    return decorate


class _Unset:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNSET"


_UNSET: Any = _Unset()


class Agent:
    """Base class of agents: long-lived Python objects fed by the mesh (PROTOCOL.md §8).

    Subclasses declare event handlers with :func:`on` and timers with :func:`every`. When
    the owner starts the agent (``agent_start``), the host creates one instance with the
    ``name``, ``config`` and last checkpointed ``state`` the owner gives it, calls
    :meth:`on_start`, then delivers events and ticks one at a time; :meth:`on_stop` runs
    when the owner stops it. A host may run many agents side by side, each in its own
    slot. ``state`` is checkpointed after each delivery, so keep it msgpack-encodable; a
    delivery whose handler raises leaves it as it was before (its changes are dropped).

    Attributes
    ----------
    name:
        The agent's name.
    config:
        Its configuration (a dict).
    state:
        Its checkpointed state; a fresh dict unless restored from a checkpoint.
    log:
        A :class:`logging.Logger` named ``"symbiont.agent.<name>"``.
    health:
        Its :class:`Health`: ``self.health.degraded("why")``, ``self.health.ok()``...
    """

    _symbiont_handlers: ClassVar[dict[str, tuple[str, ...]]] = {}
    _symbiont_timers: ClassVar[dict[str, int]] = {}
    # The methods that are async def (the host awaits what they return), and the topics
    # whose handlers include one (handle_event then returns a coroutine).
    _symbiont_async: ClassVar[frozenset[str]] = frozenset()
    _symbiont_async_topics: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        handlers: dict[str, list[str]] = {}
        timers: dict[str, int] = {}
        # Base classes first, so inherited handlers run before the subclass's own.
        for attr in _ordered_names(cls):
            member = getattr(cls, attr, None)
            for topic in getattr(member, _TOPICS_ATTR, ()):
                handlers.setdefault(topic, []).append(attr)
            every_ms = getattr(member, _EVERY_ATTR, None)
            if every_ms is not None:
                timers[attr] = every_ms
        cls._symbiont_handlers = {topic: tuple(names) for topic, names in handlers.items()}
        cls._symbiont_timers = timers
        # Checked now, at class definition: a method the SDK cannot run is a TypeError
        # here, never a "coroutine ... was never awaited" warning at run time.
        owner = cls.__qualname__
        called = {n for names in handlers.values() for n in names} | set(timers) | set(_HOOKS)
        is_async = {n for n in sorted(called) if check_method(owner, n, getattr(cls, n, None))}
        for name in _PLAIN:
            check_method(owner, name, getattr(cls, name, None), may_be_async=False)
        topics = {t for t, names in handlers.items() if is_async.intersection(names)}
        if topics and cls.handle_event is Agent.handle_event:
            is_async.add("handle_event")  # it returns a coroutine for those topics
        cls._symbiont_async = frozenset(is_async)
        cls._symbiont_async_topics = frozenset(topics)

    def __init__(
        self,
        name: str,
        *,
        config: Mapping[str, Any] | None = None,
        state: Any = _UNSET,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"Agent name must be a non-empty str, got {name!r}")
        if config is not None and not isinstance(config, Mapping):
            raise TypeError(f"Agent config must be a mapping, got {type(config).__name__}")
        self.name = name
        self.config: dict[str, Any] = dict(config or {})
        self.state: Any = {} if state is _UNSET or state is None else state
        self.log = logging.getLogger(f"symbiont.agent.{name}")
        self.health = Health(self)
        self._publisher: Callable[[str, bytes], None] | None = None
        # The same for async code (apublish): waits for credit without blocking the loop.
        self._apublisher: Callable[[str, bytes], Coroutine[Any, Any, None]] | None = None
        # Sends a health report (kind, reason, metrics) to the owner (PROTOCOL.md §8.3).
        self._reporter: Callable[[str, str, dict[str, Any]], None] | None = None
        # "Topics" in Symbiont.Agent: at most _max_topics distinct topics to publish on
        # (set by the host from agent_start; None: no limit), the first refusal told once.
        self._max_topics: int | None = None
        self._published_topics: set[str] = set()
        self._topics_told = False
        self._topics_lock = threading.Lock()

    @classmethod
    def topics(cls) -> list[str]:
        """The topics this class handles (its ``@on`` topics, inherited ones included)."""
        return list(cls._symbiont_handlers)

    def subscriptions(self) -> list[str]:
        """The topics this agent receives; by default its class's ``@on`` topics."""
        return type(self).topics()

    def handle_event(self, topic: str, payload: bytes) -> Awaitable[None] | None:
        """Handle one event: ``payload`` is its msgpack bytes, as published.

        The default decodes it and calls the ``@on(topic)`` handlers in order; an agent
        that routes raw bytes (a Wasm agent) overrides it. When one of them is an ``async
        def``, it returns a coroutine that calls them in order, which the host awaits; an
        override may be an ``async def`` too.
        """
        names = self._symbiont_handlers.get(topic)
        if names:
            # unpackb's call, inline: one Python call less an event.
            value = _unpackb(
                payload, raw=False, strict_map_key=False, ext_hook=_ext_hook, timestamp=3
            )
            if topic in self._symbiont_async_topics:
                return self._handle_async(names, value)
            for name in names:
                result = getattr(self, name)(value)
                if result is not None:
                    self._symbiont_awaitable(name, result)  # raises for an awaitable
        return None

    async def _handle_async(self, names: tuple[str, ...], value: Any) -> None:
        """The handlers ``names`` of a topic that has an ``async def`` one, in order."""
        awaited = self._symbiont_async
        for name in names:
            result = getattr(self, name)(value)
            if name in awaited:
                await result
            elif result is not None:
                self._symbiont_awaitable(name, result)

    def _symbiont_awaitable(self, name: str, result: Any) -> Awaitable[Any] | None:
        """What the method ``name`` returned, ``result``, if the host must await it (it is
        an ``async def``); ``None`` for a plain result; a ``TypeError`` for an awaitable
        from a plain ``def``, which nothing would ever run."""
        if name in self._symbiont_async and inspect.isawaitable(result):
            return result
        if result is None or not inspect.isawaitable(result):
            return None
        if name == "handle_event" and getattr(result, "cr_code", None) is _HANDLE_ASYNC:
            return result  # the default's own, passed on by an override (return super()...)
        raise not_runnable(f"{type(self).__qualname__}.{name}", result)

    @classmethod
    def timers(cls) -> dict[str, int]:
        """The timers of this class: method name -> period in milliseconds."""
        return dict(cls._symbiont_timers)

    def publish(self, topic: str, payload: Any) -> None:
        """Publish ``payload`` (any msgpack-encodable value) on ``topic``.

        The payload is encoded once, here, and sent right away; it reaches the mesh before
        the current delivery is acknowledged. Raises :class:`~symbiont.TopicLimitError`
        for a topic over :data:`MAX_TOPIC_BYTES`, or one distinct topic more than the
        agent's ``max_topics`` since its process started (``Symbiont.Agent``, "Topics"),
        :class:`~symbiont.ReservedTopicError` for a topic that starts with
        :data:`RESERVED_PREFIX` (the node's own: report health with :attr:`health`), and
        ``TypeError`` naming the place in ``payload`` that msgpack cannot carry unchanged
        (``"payload['tags']: a set is not a msgpack type; use a list ..."``,
        PROTOCOL.md §2).

        An agent has a window of publishes the node has not taken in yet (PROTOCOL.md
        §8.2): while it is full, because the node or the agents that subscribe are behind,
        this waits. After a minute without room it raises :class:`symbiont.OverloadedError`;
        in a handler, its ``handler_timeout`` usually ends the wait first. In ``async``
        code, ``await`` :meth:`apublish` instead: it waits without blocking the event loop.
        """
        data = self._payload(topic, payload)
        publisher = self._publisher
        if publisher is None:
            raise RuntimeError(f"agent {self.name!r} is not running inside a symbiont host")
        publisher(topic, data)

    async def apublish(self, topic: str, payload: Any) -> None:
        """:meth:`publish` for ``async`` code: ``await self.apublish(topic, payload)``.

        It sends at once when the agent's window has room, and otherwise waits for the
        node's credit (PROTOCOL.md §8.2) without blocking the event loop: other tasks run
        meanwhile, and the handler's timeout cancels the wait like any ``await``. Raises
        what :meth:`publish` raises.
        """
        apublisher = self._apublisher
        if apublisher is None:  # none to wait for the owner's credit (an AgentHarness)
            self.publish(topic, payload)
        else:
            await apublisher(topic, self._payload(topic, payload))

    def _payload(self, topic: str, payload: Any) -> bytes:
        """The checks of :meth:`publish` on ``topic``; ``payload`` encoded."""
        if not isinstance(topic, str) or not topic:
            raise TypeError(f"publish(topic, payload) expects a non-empty str topic, got {topic!r}")
        if topic not in self._published_topics:
            self._new_topic(topic)
        try:
            return packb(payload)
        except (TypeError, ValueError, OverflowError) as exc:
            raise encode_error(payload, "payload", exc) from None

    def _publish_raw(self, topic: str, payload: bytes) -> None:
        """Publish ``payload``, already msgpack bytes (from a Wasm plug-in)."""
        if self._publisher is None:
            raise RuntimeError(f"agent {self.name!r} is not running inside a symbiont host")
        self._claim_topic(topic)
        self._publisher(topic, payload)

    def _report_health(self, kind: str, reason: str, metrics: dict[str, Any]) -> None:
        """Send a checked health report to the owner (see :class:`Health`)."""
        if self._reporter is None:
            raise RuntimeError(f"agent {self.name!r} is not running inside a symbiont host")
        self._reporter(kind, reason, metrics)

    def _claim_topic(self, topic: str) -> None:
        """Count ``topic`` among those the agent publishes on, unless it is already: a Wasm
        call claims its topics as it publishes, its events go out when it succeeds."""
        if topic not in self._published_topics:
            self._new_topic(topic)

    def _new_topic(self, topic: str) -> None:
        """Count ``topic`` among those the agent publishes on, or raise TopicLimitError
        (ReservedTopicError for one of the node's own, which is never counted).

        Health reports are not publishes. The first refusal for the limit is logged as an
        error and reported as ``degraded`` health, once.
        """
        if topic.startswith(RESERVED_PREFIX):
            raise ReservedTopicError(
                f"agent {self.name!r} cannot publish on {topic[:100]!r}: topics starting "
                f"with {RESERVED_PREFIX!r} are published by Symbiont itself, not by agents "
                "(report health with self.health or the Wasm health import)"
            )
        _check_topic_size(self.name, topic, "publish on")
        with self._topics_lock:
            limit = self._max_topics
            if limit is None or len(self._published_topics) < limit:
                self._published_topics.add(topic)
                return
            first, self._topics_told = not self._topics_told, True
        message = (
            f"agent {self.name!r} may publish on at most {limit} distinct topics (its "
            f"max_topics) since it started; {topic[:100]!r} would be one more"
        )
        if first:
            self.log.error("%s (publishes on new topics are refused)", message)
            self.health.degraded(message, max_topics=limit)
        raise TopicLimitError(message)

    def _check_subscriptions(self, topics: list[str]) -> None:
        """Raise TopicLimitError when ``topics`` (from :meth:`subscriptions`) are more than
        ``max_topics``, or one is over :data:`MAX_TOPIC_BYTES`."""
        for topic in topics:
            _check_topic_size(self.name, topic, "subscribe to")
        limit = self._max_topics
        if limit is not None and len(set(topics)) > limit:
            raise TopicLimitError(
                f"agent {self.name!r} subscribes to {len(set(topics))} topics; it may "
                f"subscribe to at most {limit} (its max_topics)"
            )

    def wasm(self, name: str) -> WasmPlugin:
        """The sandboxed Wasm plug-in ``name``, declared in ``self.config["wasm"]``.

        Example::

            # config: %{"wasm" => %{"pricing" => "priv/wasm/pricing.wasm"}}
            price = self.wasm("pricing").call(order["amount"])

        The module is compiled (or loaded from the cache) on first use and keeps its
        instance between calls. See :class:`symbiont.wasm.WasmPlugin` for the limits.
        """
        plugins: dict[str, WasmPlugin] = self.__dict__.setdefault("_wasm_plugins", {})
        plugin = plugins.get(name)
        if plugin is None:
            declared = self.config.get("wasm") or {}
            if name not in declared:
                listed = ", ".join(sorted(declared)) or "none"
                raise LookupError(
                    f"agent {self.name!r} has no Wasm plug-in {name!r} (declared: {listed}); "
                    'declare it in the agent\'s config under "wasm"'
                )
            from .wasm import WasmPlugin  # noqa: PLC0415 - wasmtime only when used

            plugin = plugins[name] = WasmPlugin(self, name, declared[name])
        return plugin

    def call(
        self,
        module: str,
        function: str,
        args: Any = (),
        *,
        timeout: float | None = None,
    ) -> Any:
        """Call an Erlang/Elixir function on the owner's node; see :func:`symbiont.erlang.call`."""
        return erlang.call(module, function, args, timeout=timeout)

    async def acall(
        self,
        module: str,
        function: str,
        args: Any = (),
        *,
        timeout: float | None = None,
    ) -> Any:
        """:meth:`call` for ``async`` code; see :func:`symbiont.erlang.acall`."""
        return await erlang.acall(module, function, args, timeout=timeout)

    def on_start(self) -> None:
        """Called once after the agent is created, before the host reports it ready.

        It may be an ``async def`` (so may :meth:`on_stop` and :meth:`on_message`): the
        host awaits it on its event loop, where tasks it starts keep running.
        """

    def on_stop(self) -> None:
        """Called once when the owner stops the agent, after its last delivery was acked.

        Not called when the host process dies. An exception is logged, not raised.
        """

    def on_message(self, value: Any) -> None:
        """Called with each value sent to this agent by name. The default logs a warning."""
        self.log.warning("agent %s got a message it does not handle: %r", self.name, value)


_HANDLE_ASYNC = Agent._handle_async.__code__


def agent_class(module: str, class_name: str) -> type[Agent]:
    """The :class:`Agent` subclass ``class_name`` (dots for a nested class) of ``module``,
    which is imported (its top-level code runs, once per process) if it was not yet.

    Raises what the import raises (``ModuleNotFoundError``, ``SyntaxError``...),
    ``AttributeError`` for a class the module does not have, ``TypeError`` for one that
    is not an Agent. The host starts agents with it, and ``symbiont._probe`` checks them.
    """
    cls: Any = importlib.import_module(module)
    for part in class_name.split("."):
        cls = getattr(cls, part)
    if not (isinstance(cls, type) and issubclass(cls, Agent)):
        raise TypeError(f"{module}.{class_name} is not a subclass of symbiont.Agent")
    return cls


def _check_topic_size(name: str, topic: str, what: str) -> None:
    if len(topic) * 4 <= MAX_TOPIC_BYTES:
        return  # surely short enough: no UTF-8 char is longer than 4 bytes
    size = len(topic.encode("utf-8", "surrogatepass"))
    if size > MAX_TOPIC_BYTES:
        raise TopicLimitError(
            f"agent {name!r} cannot {what} a topic of {size} bytes: topics are at most "
            f"{MAX_TOPIC_BYTES} bytes ({topic[:64]!r}...)"
        )


def _ordered_names(cls: type) -> list[str]:
    names: list[str] = []
    seen: set[str] = set()
    for klass in reversed(cls.__mro__):
        for attr in vars(klass):
            if attr not in seen:
                seen.add(attr)
                names.append(attr)
    return names

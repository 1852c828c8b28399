defmodule Symbiont.Telemetry do
  @moduledoc """
  A tiny event dispatcher whose `attach/4`, `attach_many/4`, `detach/1`, `execute/3`,
  `span/3` and `list_handlers/1` match the `:telemetry` library (1.x), so code written for
  one works with the other (test/symbiont/telemetry_test.exs runs the same handlers on
  both: `make test-telemetry TELEMETRY_PATH=...`).

  Handlers live in a public ETS table owned by this module's process, which the
  application starts first. A handler runs in the process that emits the event; one that
  raises, exits or throws is detached from all its events, a
  `[:telemetry, :handler, :failure]` event is emitted (measurements `monotonic_time`,
  `system_time`; metadata `event_name`, `handler_id`, `handler_config`, `kind`, `reason`,
  `stacktrace`) and it is logged, as `:telemetry` does. While no handler is attached at
  all, `execute/3` returns at once (one counter read), so events on hot paths cost
  nothing in a node nobody watches.

  ## Spans

  A span is two events: `prefix ++ [:start]` (measurements `monotonic_time`,
  `system_time`), then `prefix ++ [:stop]` or, when it failed, `prefix ++ [:exception]`
  (measurements `duration`, `monotonic_time`; an exception's metadata adds `kind`,
  `reason`, `stacktrace`). Times are in native units (`System.convert_time_unit/3`), and
  the metadata of both carries the same `telemetry_span_context`. `span/3` makes one
  around a function, as `:telemetry.span/3` does.

  ## Events

  | event | measurements | metadata |
  |---|---|---|
  | `[:symbiont, :host, :start]` | `startup_us`: spawn (or take of a warm standby) to handshake | `host`, `os_pid`, `restarts`, `standby` |
  | `[:symbiont, :host, :stop]` | `uptime_ms` of its process (0 if none was up) | `host`, `agents` (their ids), `os_pid` (`nil` between two processes), `reason`: `:normal` or `:shutdown` when stopped on purpose (its supervisor, `Symbiont.Python.stop/1`), else why its owner failed |
  | `[:symbiont, :host, :crash]` | `uptime_ms` | `host`, `agents` (their ids), `os_pid`, `reason`, `status` |
  | `[:symbiont, :agent, :start]` | none | `agent`, `id`, `host`, `restarts` (started in a new host process) |
  | `[:symbiont, :agent, :handle, :start]` | `monotonic_time`, `system_time`: a delivery (an event or a timer's tick) sent to the agent's host | `agent`, `id`, `host`, `topic` (`nil` for a timer), `timer` (its name, or `nil`), `attempt` (1 for the first), `telemetry_span_context` |
  | `[:symbiont, :agent, :handle, :stop]` | `duration` (since its `start`), `monotonic_time`: the host acked it | the start's, and `result: :ok` |
  | `[:symbiont, :agent, :handle, :exception]` | `duration`, `monotonic_time` | the start's, `result: :error`, and `kind`, `reason`, `stacktrace`: `:error`, the handler's error (a map of `"type"`, `"message"`, `"traceback"`) and `[]` when the handler failed (it may be retried: a new span); `:exit`, `:requeued` and `[]` when the delivery went back to the queue (a quarantine, an isolation) |
  | `[:symbiont, :mesh, :broadcast]` | `bytes`: the encoded payload | `mesh`, `topic`, `from` (the publisher, `nil` for plain Elixir): each event published with `Symbiont.Mesh.publish/3` (so `Symbiont.publish/3` and agents' publishes), not the Phoenix.PubSub-style `broadcast/4` |
  | `[:symbiont, :conductor, :observe]` | `duration_us`: reading the agents in its scope and building the snapshot its policy gets (`Symbiont.Conductor.snapshot/1`, or a tick's), `agents`: how many | `conductor` (its name) |
  | `[:symbiont, :conductor, :tick]` | `duration_us` (observe, decide, act), `agents`, `actions` (how many were applied) | `conductor`, `error` (why the policy failed, or `nil`) |
  | `[:symbiont, :conductor, :action]` | none | `action`, `agent`, `host`, `reason`, `by`: each remediation step, as published on `symbiont.remediation` (`Symbiont.Remediation.publish/4`) |

  A delivery whose host dies under it stays in its span: it is sent again to the new
  process, and its `stop` (or `exception`) comes when that one answers. The host's
  `crash` event says the death.

      iex> :ok = Symbiont.Telemetry.attach("doc", [:doc, :event], fn e, m, _meta, pid -> send(pid, {e, m}) end, self())
      iex> Symbiont.Telemetry.execute([:doc, :event], %{n: 1}, %{})
      :ok
      iex> receive do: (msg -> msg)
      {[:doc, :event], %{n: 1}}
      iex> Symbiont.Telemetry.detach("doc")
      :ok

  ## With the `:telemetry` library

  Where `:telemetry` is a dependency (tools such as `Telemetry.Metrics` listen there), one
  handler passes Symbiont's events on to it:

      Symbiont.Telemetry.attach_many(:to_telemetry, Symbiont.Telemetry.events(),
        fn event, measurements, metadata, _ -> :telemetry.execute(event, measurements, metadata) end,
        nil)

  and code that attached with `Symbiont.Telemetry.attach/4` moves to `:telemetry.attach/4`
  unchanged.
  """

  use GenServer
  require Logger

  @table __MODULE__
  # A counter of the handler rows (one per event of each handler), read by every
  # execute/3 (persistent_term: no copy, no lock).
  @attached {__MODULE__, :attached}

  @events [
    [:symbiont, :host, :start],
    [:symbiont, :host, :stop],
    [:symbiont, :host, :crash],
    [:symbiont, :agent, :start],
    [:symbiont, :agent, :handle, :start],
    [:symbiont, :agent, :handle, :stop],
    [:symbiont, :agent, :handle, :exception],
    [:symbiont, :mesh, :broadcast],
    [:symbiont, :conductor, :observe],
    [:symbiont, :conductor, :tick],
    [:symbiont, :conductor, :action]
  ]

  @typedoc "An event's name: a list of atoms."
  @type event :: [atom]
  @typedoc "A handler: called with the event, its measurements, its metadata and the config."
  @type handler :: (event, map, map, term -> any)
  @typedoc "What `list_handlers/1` returns for each handler and event."
  @type handler_info :: %{id: term, event_name: event, function: handler, config: term}

  @doc false
  @spec start_link(keyword) :: GenServer.on_start()
  def start_link(_opts), do: GenServer.start_link(__MODULE__, nil, name: __MODULE__)

  # The process only owns the table: attach, detach and execute work on it directly, and
  # ETS makes each write atomic, so concurrent attaches never lose one another.
  @impl true
  def init(nil) do
    :ets.new(@table, [:duplicate_bag, :public, :named_table, read_concurrency: true])
    # A new table starts empty, so does its counter.
    :persistent_term.put(@attached, :counters.new(1, [:write_concurrency]))
    {:ok, nil}
  end

  @doc """
  The events Symbiont emits (the table above).

      iex> [:symbiont, :mesh, :broadcast] in Symbiont.Telemetry.events()
      true
  """
  @spec events() :: [event]
  def events, do: @events

  @doc "Attaches `fun` under the unique `id` to `event`."
  @spec attach(term, event, handler, term) :: :ok | {:error, :already_exists}
  def attach(id, event, fun, config) when is_list(event) and is_function(fun, 4),
    do: attach_many(id, [event], fun, config)

  @doc """
  Attaches `fun` under the unique `id` to each of `events`; `detach/1` detaches it from
  all of them, and so does a failure of it on any one.
  """
  @spec attach_many(term, [event], handler, term) :: :ok | {:error, :already_exists}
  def attach_many(id, events, fun, config) when is_list(events) and is_function(fun, 4) do
    Enum.each(events, &event_name!/1)

    # Handler rows are keyed by the event (a list); the {:id, id} row claims the id.
    if :ets.insert_new(@table, {{:id, id}, events}) do
      :ets.insert(@table, for(event <- events, do: {event, id, fun, config}))
      :counters.add(:persistent_term.get(@attached), 1, length(events))
      :ok
    else
      {:error, :already_exists}
    end
  end

  @doc "Detaches the handler with `id` from all its events."
  @spec detach(term) :: :ok | {:error, :not_found}
  def detach(id) do
    case :ets.take(@table, {:id, id}) do
      [{_, events}] ->
        for event <- events, do: :ets.match_delete(@table, {event, id, :_, :_})
        :counters.sub(:persistent_term.get(@attached), 1, length(events))
        :ok

      [] ->
        {:error, :not_found}
    end
  end

  @doc """
  The handlers attached to events that start with `prefix` (`[]`: all of them), one
  entry per handler and event.

      iex> :ok = Symbiont.Telemetry.attach_many("doc-list", [[:doc, :a], [:doc, :b]], fn _, _, _, _ -> :ok end, 1)
      iex> Symbiont.Telemetry.list_handlers([:doc]) |> Enum.map(& &1.event_name) |> Enum.sort()
      [[:doc, :a], [:doc, :b]]
      iex> Symbiont.Telemetry.detach("doc-list")
      :ok
  """
  @spec list_handlers(event) :: [handler_info]
  def list_handlers(prefix) when is_list(prefix) do
    event_name!(prefix)

    for {event, id, fun, config} <- all_handlers(),
        List.starts_with?(event, prefix),
        do: %{id: id, event_name: event, function: fun, config: config}
  end

  @doc "Calls the handlers attached to `event`, in the order they were attached."
  @spec execute(event, map, map) :: :ok
  def execute(event, measurements, metadata) when is_map(measurements) and is_map(metadata) do
    if attached?(), do: dispatch(event, measurements, metadata), else: :ok
  end

  @doc """
  Runs `fun` in a span (see "Spans"): `prefix ++ [:start]` with `start_metadata`, then
  `prefix ++ [:stop]` with the metadata `fun` returns, or `prefix ++ [:exception]` with
  `start_metadata` and `kind`, `reason` and `stacktrace` when it raises, exits or throws
  (which goes on). `fun` returns `{result, stop_metadata}` or
  `{result, extra_measurements, stop_metadata}`; `span/3` returns `result`.

      iex> Symbiont.Telemetry.span([:doc, :span], %{}, fn -> {:done, %{}} end)
      :done
  """
  @spec span(event, map, (() -> {term, map} | {term, map, map})) :: term
  def span(prefix, start_metadata, fun) when is_list(prefix) and is_function(fun, 0) do
    start = System.monotonic_time()
    context = make_ref()

    execute(
      prefix ++ [:start],
      %{monotonic_time: start, system_time: System.system_time()},
      Map.put_new(start_metadata, :telemetry_span_context, context)
    )

    try do
      fun.()
    catch
      kind, reason ->
        stop = System.monotonic_time()

        execute(
          prefix ++ [:exception],
          %{duration: stop - start, monotonic_time: stop},
          start_metadata
          |> Map.merge(%{kind: kind, reason: reason, stacktrace: __STACKTRACE__})
          |> Map.put_new(:telemetry_span_context, context)
        )

        :erlang.raise(kind, reason, __STACKTRACE__)
    else
      {result, stop_metadata} ->
        stop_span(prefix, start, %{}, stop_metadata, context)
        result

      {result, extra, stop_metadata} ->
        stop_span(prefix, start, extra, stop_metadata, context)
        result
    end
  end

  defp stop_span(prefix, start, extra, metadata, context) do
    stop = System.monotonic_time()

    execute(
      prefix ++ [:stop],
      Map.merge(extra, %{duration: stop - start, monotonic_time: stop}),
      Map.put_new(metadata, :telemetry_span_context, context)
    )
  end

  @doc """
  Whether any handler is attached, to any event. Code on a hot path asks before it builds
  the measurements and metadata of an event nobody would get.
  """
  @spec attached?() :: boolean
  # Before the application starts (or after it stops) there are no handlers.
  def attached? do
    case :persistent_term.get(@attached, nil) do
      nil -> false
      counter -> :counters.get(counter, 1) > 0
    end
  end

  defp dispatch(event, measurements, metadata) do
    Enum.each(handlers(event), fn {_event, id, fun, config} ->
      try do
        fun.(event, measurements, metadata, config)
      catch
        kind, reason ->
          stacktrace = __STACKTRACE__
          detach(id)

          execute(
            [:telemetry, :handler, :failure],
            %{monotonic_time: System.monotonic_time(), system_time: System.system_time()},
            %{
              event_name: event,
              handler_id: id,
              handler_config: config,
              kind: kind,
              reason: reason,
              stacktrace: stacktrace
            }
          )

          Logger.error(
            "telemetry handler #{inspect(id)} failed and was detached: #{Exception.format_banner(kind, reason, stacktrace)}"
          )
      end
    end)
  end

  defp handlers(event) do
    :ets.lookup(@table, event)
  rescue
    ArgumentError -> []
  end

  defp all_handlers do
    :ets.select(@table, [{{:"$1", :_, :_, :_}, [{:is_list, :"$1"}], [:"$_"]}])
  rescue
    ArgumentError -> []
  end

  defp event_name!(event) do
    unless is_list(event) and Enum.all?(event, &is_atom/1),
      do: raise(ArgumentError, "expected an event name (a list of atoms), got: #{inspect(event)}")

    :ok
  end
end

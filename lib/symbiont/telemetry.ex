defmodule Symbiont.Telemetry do
  @moduledoc """
  A tiny event dispatcher whose `attach/4`, `detach/1` and `execute/3` match the
  `:telemetry` library, so code written for one works with the other.

  Handlers live in a public ETS table owned by this module's process, which the
  application starts first. A handler runs in the process that emits the event; one that
  raises is detached and logged, as `:telemetry` does. While no handler is attached at
  all, `execute/3` returns at once (one counter read), so events on hot paths cost
  nothing in a node nobody watches.

  ## Events

  | event | measurements | metadata |
  |---|---|---|
  | `[:symbiont, :host, :start]` | `startup_us`: spawn (or take of a warm standby) to handshake | `host`, `os_pid`, `restarts`, `standby` |
  | `[:symbiont, :host, :stop]` | `uptime_ms` of its process (0 if none was up) | `host`, `agents` (their ids), `os_pid` (`nil` between two processes), `reason`: `:normal` or `:shutdown` when stopped on purpose (its supervisor, `Symbiont.Python.stop/1`), else why its owner failed |
  | `[:symbiont, :host, :crash]` | `uptime_ms` | `host`, `agents` (their ids), `os_pid`, `reason`, `status` |
  | `[:symbiont, :agent, :start]` | none | `agent`, `id`, `host`, `restarts` (started in a new host process) |
  | `[:symbiont, :agent, :handle]` | `latency_us`: delivery sent to its ack | `agent`, `id`, `host`, `topic` (`nil` for a timer), `timer` (its name, or `nil`), `result`: `:ok` (acked) or `:error` (the handler failed; it may be retried) |
  | `[:symbiont, :mesh, :broadcast]` | `bytes`: the encoded payload | `mesh`, `topic`, `from` (the publisher, `nil` for plain Elixir): each event published with `Symbiont.Mesh.publish/3` (so `Symbiont.publish/3` and agents' publishes), not the Phoenix.PubSub-style `broadcast/4` |
  | `[:symbiont, :conductor, :action]` | none | `action`, `agent`, `host`, `reason`, `by`: each remediation step, as published on `symbiont.remediation` (`Symbiont.Remediation.publish/4`) |

  A delivery whose host dies under it is not a `handle` event: the host's `crash` is.

      iex> :ok = Symbiont.Telemetry.attach("doc", [:doc, :event], fn e, m, _meta, pid -> send(pid, {e, m}) end, self())
      iex> Symbiont.Telemetry.execute([:doc, :event], %{n: 1}, %{})
      :ok
      iex> receive do: (msg -> msg)
      {[:doc, :event], %{n: 1}}
      iex> Symbiont.Telemetry.detach("doc")
      :ok

  ## With the `:telemetry` library

  Where `:telemetry` is a dependency (tools such as `Telemetry.Metrics` listen there), a
  handler per event passes Symbiont's events on to it:

      for event <- Symbiont.Telemetry.events() do
        Symbiont.Telemetry.attach({:to_telemetry, event}, event, fn event, measurements, metadata, _ ->
          :telemetry.execute(event, measurements, metadata)
        end, nil)
      end

  and code that attached with `Symbiont.Telemetry.attach/4` moves to `:telemetry.attach/4`
  unchanged.
  """

  use GenServer
  require Logger

  @table __MODULE__
  # A counter of the handlers attached, read by every execute/3 (persistent_term: no
  # copy, no lock).
  @attached {__MODULE__, :attached}

  @events [
    [:symbiont, :host, :start],
    [:symbiont, :host, :stop],
    [:symbiont, :host, :crash],
    [:symbiont, :agent, :start],
    [:symbiont, :agent, :handle],
    [:symbiont, :mesh, :broadcast],
    [:symbiont, :conductor, :action]
  ]

  @type event :: [atom]
  @type handler :: (event, map, map, term -> any)

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
  def attach(id, event, fun, config) when is_list(event) and is_function(fun, 4) do
    # Handler rows are keyed by the event (a list); the {:id, id} row claims the id.
    if :ets.insert_new(@table, {{:id, id}, event}) do
      :ets.insert(@table, {event, id, fun, config})
      :counters.add(:persistent_term.get(@attached), 1, 1)
      :ok
    else
      {:error, :already_exists}
    end
  end

  @doc "Detaches the handler with `id`."
  @spec detach(term) :: :ok | {:error, :not_found}
  def detach(id) do
    case :ets.take(@table, {:id, id}) do
      [{_, event}] ->
        :ets.match_delete(@table, {event, id, :_, :_})
        :counters.sub(:persistent_term.get(@attached), 1, 1)
        :ok

      [] ->
        {:error, :not_found}
    end
  end

  @doc "Calls the handlers attached to `event`, in the order they were attached."
  @spec execute(event, map, map) :: :ok
  def execute(event, measurements, metadata) when is_map(measurements) and is_map(metadata) do
    if attached?(), do: dispatch(event, measurements, metadata), else: :ok
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
          detach(id)

          Logger.error(
            "telemetry handler #{inspect(id)} failed and was detached: #{Exception.format_banner(kind, reason)}"
          )
      end
    end)
  end

  defp handlers(event) do
    :ets.lookup(@table, event)
  rescue
    ArgumentError -> []
  end
end

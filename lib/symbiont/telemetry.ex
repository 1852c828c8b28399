defmodule Symbiont.Telemetry do
  @moduledoc """
  A tiny event dispatcher whose `attach/4`, `detach/1` and `execute/3` match the
  `:telemetry` library, so code written for one works with the other.

  Handlers live in a public ETS table owned by this module's process, which the
  application starts first. A handler that raises is detached and logged, as `:telemetry`
  does.

  ## Events

  | event | measurements | metadata |
  |---|---|---|
  | `[:symbiont, :host, :start]` | `startup_us`: spawn to handshake | `host`, `os_pid`, `restarts` |
  | `[:symbiont, :host, :crash]` | `uptime_ms` | `host`, `agents` (their ids), `os_pid`, `reason`, `status` |
  | `[:symbiont, :agent, :start]` | none | `agent`, `id`, `host`, `restarts` (started in a new host process) |

      iex> :ok = Symbiont.Telemetry.attach("doc", [:doc, :event], fn e, m, _meta, pid -> send(pid, {e, m}) end, self())
      iex> Symbiont.Telemetry.execute([:doc, :event], %{n: 1}, %{})
      :ok
      iex> receive do: (msg -> msg)
      {[:doc, :event], %{n: 1}}
      iex> Symbiont.Telemetry.detach("doc")
      :ok
  """

  use GenServer
  require Logger

  @table __MODULE__

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
    {:ok, nil}
  end

  @doc "Attaches `fun` under the unique `id` to `event`."
  @spec attach(term, event, handler, term) :: :ok | {:error, :already_exists}
  def attach(id, event, fun, config) when is_list(event) and is_function(fun, 4) do
    # Handler rows are keyed by the event (a list); the {:id, id} row claims the id.
    if :ets.insert_new(@table, {{:id, id}, event}) do
      :ets.insert(@table, {event, id, fun, config})
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
        :ok

      [] ->
        {:error, :not_found}
    end
  end

  @doc "Calls the handlers attached to `event`, in the order they were attached."
  @spec execute(event, map, map) :: :ok
  def execute(event, measurements, metadata) when is_map(measurements) and is_map(metadata) do
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

  # Before the application starts (or after it stops) there are no handlers.
  defp handlers(event) do
    :ets.lookup(@table, event)
  rescue
    ArgumentError -> []
  end
end

defmodule Symbiont.Observation.Row do
  @moduledoc """
  One replica's row in the observation (`Symbiont.Observation`): its layout, the write
  side every `Symbiont.Agent.Server` calls about itself, and how a reader turns it back
  into a map (`view/5`).

  A row is `{key, server pid, counters, slow fields}` in the ordered set
  `Symbiont.Observation`, keyed `{name, rank of the role, id}` (`key/3`): read whole, the
  table comes out in the order every view lists it (by agent, stable replicas first),
  with no sort, and one agent's replicas are a range of it. Its counters (queue, queue
  bytes, in flight, handled, failed, last activity, busy time) are an `:atomics` array
  the server writes after every message it handles (`put_counters/8`); its slow fields
  (status, health, crashes, restarts, failure window, version, p99...) a tuple, written
  when one of them changes (`put/2`). The baselines a server learns (`Symbiont.Signals`)
  are in the table `Symbiont.Observation.Baselines` (`put_baseline/3`). With no table
  (`Symbiont.Observation` not running), a write is a no-op and the replica is not listed.
  """

  @table Symbiont.Observation
  @baselines Symbiont.Observation.Baselines

  # The counters a server writes after every message (see put_counters/8), by slot.
  @queue 1
  @queue_bytes 2
  @in_flight 3
  @handled 4
  @failed 5
  @active_at 6
  @busy_us 7
  @slots 7

  # A row's slow fields, in the order its tuple keeps them (a tuple: half the words of a
  # map, copied out of the table for every reader).
  @fields [
    :name,
    :role,
    :host,
    :status,
    :quarantined,
    :health,
    :health_reason,
    :health_at_ms,
    :version,
    :max_queue,
    :max_queue_bytes,
    :high_water,
    :topics,
    :crashes,
    :restarts,
    :start_failures,
    :window,
    :failure_rate,
    :suspect,
    :last_error,
    :journal_error,
    :signals,
    :p99_us
  ]

  @doc """
  The key of replica `id` of agent `name` with `role` in the table:
  `{name, rank of the role, id}` (with `:_` or `:"$1"` for `id` or `name`, a match
  spec's pattern of it).

      iex> Symbiont.Observation.Row.key("billing#2", "billing", :stable)
      {"billing", 0, "billing#2"}
      iex> Symbiont.Observation.Row.key("billing#canary", "billing", :canary)
      {"billing", 2, "billing#canary"}
  """
  @spec key(String.t() | atom, String.t() | atom, Symbiont.Observation.role()) :: tuple
  def key(id, name, :stable), do: {name, 0, id}

  def key(id, name, role),
    do: {name, 1 + Enum.find_index(Symbiont.Observation.roles(), &(&1 == role)), id}

  defp key(id, %{name: name, role: role}), do: key(id, name, role)

  @doc """
  Where `field` is in a row's tuple of slow fields (1-based, as a match spec's
  `:element` takes it): for a reader that selects one field of every row.

      iex> Symbiont.Observation.Row.position(:host)
      3
  """
  @spec position(atom) :: pos_integer
  def position(field), do: Enum.find_index(@fields, &(&1 == field)) + 1

  @doc """
  A replica's row, created as its server starts (`info`: a map of the fields of
  `t:Symbiont.Observation.replica/0` that are not counters): returns the counters it
  writes (`put_counters/8`). The row goes when the server does (`close/3`, or the table's
  owner, `Symbiont.Observation`, sees it go down).
  """
  @spec open(String.t(), map) :: :atomics.atomics_ref()
  def open(id, info) when is_binary(id) and is_map(info) do
    counters = :atomics.new(@slots, signed: true)
    :atomics.put(counters, @active_at, System.monotonic_time(:millisecond))
    key = key(id, info)

    try do
      :ets.insert(@table, {key, self(), counters, row(info)})
      GenServer.cast(Symbiont.Observation, {:watch, self(), key})
    rescue
      # No table (Symbiont.Observation is not running): the replica is not listed.
      ArgumentError -> :ok
    end

    counters
  end

  @doc "The replica's slow fields, changed (its status, health, crashes...): as for `open/2`."
  @spec put(String.t(), map) :: boolean
  def put(id, info) do
    :ets.update_element(@table, key(id, info), {4, row(info)})
  rescue
    ArgumentError -> false
  end

  defp row(info), do: @fields |> Enum.map(&Map.fetch!(info, &1)) |> List.to_tuple()

  @doc "The replica's counters, after each message its server handled: a few atomic writes."
  @spec put_counters(
          :atomics.atomics_ref(),
          integer,
          integer,
          integer,
          integer,
          integer,
          integer,
          integer
        ) :: :ok
  def put_counters(counters, queue, queue_bytes, in_flight, handled, failed, active_at, busy) do
    :atomics.put(counters, @queue, queue)
    :atomics.put(counters, @queue_bytes, queue_bytes)
    :atomics.put(counters, @in_flight, in_flight)
    :atomics.put(counters, @handled, handled)
    :atomics.put(counters, @failed, failed)
    :atomics.put(counters, @active_at, active_at)
    :atomics.put(counters, @busy_us, busy)
  end

  @doc """
  Written by an agent server as it learns its version's baseline (`Symbiont.Signals`).
  One entry per agent name and version run on this node: a version run again (a
  rollback) finds its own. They go when the agent's last replica does.
  """
  @spec put_baseline(String.t(), String.t(), map) :: true
  def put_baseline(name, version, baseline) do
    :ets.insert(@baselines, {{name, version}, baseline})
  rescue
    ArgumentError -> true
  end

  @doc "The replica's row goes (its server stops)."
  @spec close(String.t(), String.t(), Symbiont.Observation.role()) :: :ok
  def close(id, name, role) do
    :ets.match_delete(@table, {key(id, name, role), self(), :_, :_})
    :ok
  rescue
    ArgumentError -> :ok
  end

  @doc """
  The row and the counters of replica `id` (served by `pid`), as one flat map
  (`t:Symbiont.Observation.replica/0`) at `now` (monotonic ms): 32 keys at most, built
  from a literal (the conductor builds 10,000 of them a tick, and a map of more keys
  costs ten times more).
  """
  @spec view(String.t(), pid, :atomics.atomics_ref(), tuple, integer) :: map
  def view(id, pid, counters, row, now) do
    {name, role, host, status, quarantined, health, health_reason, health_at_ms, version,
     max_queue, max_queue_bytes, high_water, topics, crashes, restarts, start_failures, window,
     failure_rate, suspect, last_error, journal_error, signals, p99_us} = row

    %{
      id: id,
      pid: pid,
      name: name,
      role: role,
      host: host,
      status: status,
      quarantined: quarantined,
      health: health,
      health_reason: health_reason,
      health_at_ms: health_at_ms,
      version: version,
      max_queue: max_queue,
      max_queue_bytes: max_queue_bytes,
      high_water: high_water,
      topics: topics,
      crashes: crashes,
      restarts: restarts,
      start_failures: start_failures,
      window: window,
      failure_rate: failure_rate,
      suspect: suspect,
      last_error: last_error,
      journal_error: journal_error,
      signals: signals,
      p99_us: p99_us,
      busy_us: :atomics.get(counters, @busy_us),
      queue: :atomics.get(counters, @queue),
      queue_bytes: :atomics.get(counters, @queue_bytes),
      in_flight: :atomics.get(counters, @in_flight),
      handled: :atomics.get(counters, @handled),
      failed: :atomics.get(counters, @failed),
      idle_ms: now - :atomics.get(counters, @active_at)
    }
  end
end

defmodule Symbiont.Host.Usage do
  @moduledoc """
  How a host's time is spent: its **utilisation** (the share of the last few seconds its
  process spent in its agents' handlers) and each agent's **share** of that busy time.

  A host runs its agents' deliveries one at a time, on one thread (PROTOCOL.md §8), so
  the agents of a shared host (Wasm agents: see "Placement" in `Symbiont.Manifest`) share
  that thread's time: an agent that takes most of it makes its co-tenants wait, whatever
  their own handlers cost. The host process measures the wall-clock time of each
  delivery, by slot, and sends what each slot took since the last `pong` with the next
  one (PROTOCOL.md §11.2: one pong a heartbeat, `:heartbeat_ms`, default 1 s). Its owner
  (`Symbiont.Host`) keeps the readings of the last #{5} heartbeats (the **window**) and,
  after each, writes the host's row here: nothing else is measured or sent, and reading
  the rows costs no call to any host.

  The conductor's snapshot lists the hosts of more than one agent under `"hosts"` (see
  `snapshot/1`); the manifest reads `utilisation/1` to keep new Wasm replicas off busy
  hosts (`Symbiont.Placement`); `Symbiont.hosts/0` shows each host's utilisation.

  Busy time is wall-clock time in handlers (a handler that sleeps or waits on a call
  keeps the thread as much as one that computes), not CPU time; it leaves out the host's
  own work between deliveries (decoding frames, acks, calls of `Symbiont.Python`).
  """

  @table __MODULE__
  # The readings a window keeps: this many heartbeats.
  @window_beats 5
  # Agents listed for a host in the conductor's snapshot, the busiest first.
  @max_listed 32

  defstruct window_ms: 5_000, since: nil, readings: []

  @typedoc """
  A host owner's readings: `since` (monotonic µs) where the next reading's interval
  starts, and the readings of the window, newest first, each `{from_us, to_us, busy}`
  (`busy`: the µs each agent, by id, took in that interval).
  """
  @type t :: %__MODULE__{
          window_ms: pos_integer,
          since: integer | nil,
          readings: [{integer, integer, %{String.t() => non_neg_integer}}]
        }

  @typedoc """
  One agent's part of a host's time over the window: its replica `id`, agent `name`,
  `role`, `share` (0.0 to 1.0 of the busy time of the host's agents) and `busy_us`.
  """
  @type share :: %{
          id: String.t(),
          name: String.t(),
          role: atom,
          share: float,
          busy_us: non_neg_integer
        }

  @typedoc """
  A host's usage: its `name`, `agents` (how many it runs), `utilisation` (0.0 to 1.0: the
  busy time of the agents it runs over the window's wall-clock time), `window_ms` (the
  window's length), and `shares`: the agents that took any of its time over the window,
  the busiest first (at most #{@max_listed}). An agent that leaves the host (moved,
  quarantined, retired) leaves its utilisation and its shares at once: they are about
  the agents it runs now.
  """
  @type host :: %{
          name: String.t(),
          agents: non_neg_integer,
          utilisation: float,
          window_ms: non_neg_integer,
          shares: [share]
        }

  ## A host owner's readings (pure)

  @doc """
  Empty readings for a host pinged every `heartbeat_ms`: the window is #{@window_beats}
  heartbeats.
  """
  @spec new(pos_integer) :: t
  def new(heartbeat_ms), do: %__MODULE__{window_ms: @window_beats * heartbeat_ms}

  @doc "Readings start over at `now_us` (monotonic µs): a new host process is ready."
  @spec start(t, integer) :: t
  def start(%__MODULE__{} = usage, now_us), do: %{usage | since: now_us, readings: []}

  @doc """
  A pong's busy times (`%{slot => µs}` since the last one), received at `now_us` from a
  process that runs the agents `ids` (`%{slot => id}`; other slots are dropped); the
  readings older than the window go (the newest is always kept).

      iex> alias Symbiont.Host.Usage
      iex> ids = %{1 => "noisy", 2 => "quiet", 3 => "idle"}
      iex> u = Usage.new(1_000) |> Usage.start(0)
      iex> u = Usage.add(u, 1_000_000, %{1 => 600_000, 2 => 200_000}, ids)
      iex> Usage.summary(u, ["noisy", "quiet", "idle"])
      %{utilisation: 0.8, window_ms: 1000, busy: [{"noisy", 600_000}, {"quiet", 200_000}]}
      iex> Usage.summary(u, ["quiet", "idle"])
      %{utilisation: 0.2, window_ms: 1000, busy: [{"quiet", 200_000}]}
  """
  @spec add(t, integer, %{pos_integer => non_neg_integer}, %{pos_integer => String.t()}) :: t
  def add(%__MODULE__{since: nil} = usage, now_us, busy, ids),
    do: add(start(usage, now_us), now_us, busy, ids)

  def add(%__MODULE__{} = usage, now_us, busy, ids) do
    horizon = now_us - usage.window_ms * 1_000
    busy = for {slot, us} <- busy, id = ids[slot], id != nil, into: %{}, do: {id, us}
    older = Enum.take_while(usage.readings, &(elem(&1, 0) >= horizon))
    %{usage | since: now_us, readings: [{usage.since, now_us, busy} | older]}
  end

  @doc "Whether agent `id` took any of the host's time over the window."
  @spec took?(t, String.t()) :: boolean
  def took?(%__MODULE__{readings: readings}, id),
    do: Enum.any?(readings, fn {_, _, busy} -> Map.get(busy, id, 0) > 0 end)

  @doc """
  Over the window, for the agents `ids` (those the host runs now): their utilisation
  (their busy time over the wall-clock time, at most 1.0; `nil` before a reading), the
  window's length, and the busy µs of each that took any, the busiest first.
  """
  @spec summary(t, [String.t()]) :: %{
          utilisation: float | nil,
          window_ms: non_neg_integer,
          busy: [{String.t(), non_neg_integer}]
        }
  def summary(%__MODULE__{readings: []}, _ids), do: %{utilisation: nil, window_ms: 0, busy: []}

  def summary(%__MODULE__{readings: [{_, to, _} | _] = readings}, ids) do
    {from, _, _} = List.last(readings)
    now = MapSet.new(ids)

    by_id =
      Enum.reduce(readings, %{}, fn {_, _, busy}, acc ->
        Enum.reduce(busy, acc, fn {id, us}, acc ->
          if MapSet.member?(now, id), do: Map.update(acc, id, us, &(&1 + us)), else: acc
        end)
      end)

    wall = max(to - from, 1)

    busy =
      by_id
      |> Enum.filter(fn {_id, us} -> us > 0 end)
      |> Enum.sort_by(fn {id, us} -> {-us, id} end)

    total = Enum.reduce(busy, 0, &(elem(&1, 1) + &2))

    %{
      utilisation: Float.round(min(total / wall, 1.0), 3),
      window_ms: div(wall, 1_000),
      busy: busy
    }
  end

  ## The table: each host's last summary

  @doc false
  # Created by Symbiont.Observation's process, which owns it.
  def new_table,
    do: :ets.new(@table, [:named_table, :public, :set, read_concurrency: true])

  @doc false
  # The host `name` (its owner: the caller) writes its summary (summary/2) as it runs
  # the agents `ids`.
  @spec put(String.t(), t, [String.t()]) :: :ok
  def put(name, usage, ids) do
    %{utilisation: u, window_ms: window, busy: busy} = summary(usage, ids)
    total = Enum.reduce(busy, 0, &(elem(&1, 1) + &2))

    shares =
      for {id, us} <- Enum.take(busy, @max_listed) do
        {agent, role} =
          case Registry.lookup(Symbiont.Agent.Registry, id) do
            [{_pid, {agent, role, _host}}] -> {agent, role}
            _ -> {Symbiont.Manifest.agent_name(id), :stable}
          end

        %{id: id, name: agent, role: role, share: Float.round(us / total, 3), busy_us: us}
      end

    :ets.insert(@table, {name, self(), length(ids), u, window, shares})
    :ok
  rescue
    ArgumentError -> :ok
  end

  @doc false
  # The host `name` forgets its usage (its process went down, or the owner stops).
  @spec forget(String.t()) :: :ok
  def forget(name) do
    :ets.match_delete(@table, {name, self(), :_, :_, :_, :_})
    :ok
  rescue
    ArgumentError -> :ok
  end

  ## Reading

  @doc """
  The utilisation of host `name` over its window (0.0 to 1.0), or `nil` when it is not
  known (no such host, or it has not answered a heartbeat since its process started).
  """
  @spec utilisation(String.t()) :: float | nil
  def utilisation(name) when is_binary(name) do
    case :ets.lookup(@table, name) do
      [{^name, pid, _n, u, _window, _shares}] -> if Process.alive?(pid), do: u
      [] -> nil
    end
  rescue
    ArgumentError -> nil
  end

  @doc """
  Every host's usage (`t:host/0`), sorted by name. Option `:min_agents`: only hosts that
  run at least that many agents (default 1).
  """
  @spec hosts(keyword) :: [host]
  def hosts(opts \\ []) do
    min = Keyword.get(opts, :min_agents, 1)

    rows =
      try do
        :ets.select(@table, [{{:_, :_, :"$1", :_, :_, :_}, [{:>=, :"$1", min}], [:"$_"]}])
      rescue
        ArgumentError -> []
      end

    for {name, pid, n, u, window, shares} <- Enum.sort(rows),
        u != nil and Process.alive?(pid),
        do: %{name: name, agents: n, utilisation: u, window_ms: window, shares: shares}
  end

  @doc """
  The conductor's `"hosts"`: each host that runs more than one agent and whose time went
  in part to an agent in `scope` (a function from agent name to boolean, `nil` for all),
  as `%{"name", "agents", "utilisation", "window_ms", "shares"}`, each share
  `%{"id", "name", "role", "share", "busy_ms"}`. A host of one agent is left out: its
  agent takes all of its time, and a node of 10,000 Python agents has 10,000 of them.
  """
  @spec snapshot((String.t() -> boolean) | nil) :: [map]
  def snapshot(scope) do
    for h <- hosts(min_agents: 2),
        h.shares != [],
        scope == nil or Enum.any?(h.shares, &scope.(&1.name)) do
      %{
        "name" => h.name,
        "agents" => h.agents,
        "utilisation" => h.utilisation,
        "window_ms" => h.window_ms,
        "shares" =>
          for s <- h.shares do
            %{
              "id" => s.id,
              "name" => s.name,
              "role" => Atom.to_string(s.role),
              "share" => s.share,
              "busy_ms" => div(s.busy_us, 1_000)
            }
          end
      }
    end
  end
end

defmodule Symbiont.Observation do
  @moduledoc """
  What an agent is and how it is doing: the one view that `Symbiont.status/0`,
  `Symbiont.agents/0`, `Symbiont.agent/1`, `Symbiont.health/0`, the status page and its
  `/status.json`, and the conductor's snapshot all read, so that they cannot disagree.

  This module owns the table (it creates it and removes the rows of servers that die)
  and the read side: `replicas/1`, `replica/1`, `agents/1`, `agent/1` (an agent's
  replicas aggregated), the registry of roles (`ids/2`, `role/1`) and the baselines;
  each row's layout, and the writes an agent server makes about itself, are
  `Symbiont.Observation.Row`'s.

  ## What an agent is

  An agent is a name; it runs as one or more **replicas**, each an
  `Symbiont.Agent.Server` with an id of its own (`"billing"`, `"billing#2"`...). Each
  replica has a **role**, given when it starts and registered with its id in
  `Symbiont.Agent.Registry` (the registry of roles: nothing reads a role from an id):

    * `:stable` - the agent's replicas (the manifest's, or started by hand);
    * `:canary` - a new version on trial beside them (`Symbiont.Deploy`). Its health,
      crashes and failures are its own: they are never the agent's, and the deploy
      judges them.

  ## How it is doing

  Each replica's server publishes what it is doing as it changes, for nothing: its
  counters (queue, in flight, handled, failed, last activity) in an `:atomics` array it
  writes after every message it handles, and the rest (status, health, crashes,
  restarts, failure window, version, p99...) in its row of an ETS table, written when
  one of them changes. Reading the view costs no call to an agent and no journal
  commit: the conductor reads it every tick (bench/heal.exs measures it for 10 and
  10,000 agents).

    * **health** - one of `healthy`, `degraded`, `overloaded`, `failing`, `quarantined`:
      the worst of what the replica's server sees, each kept apart until it changes:
      its **failure rate** (below), its load (`overloaded` at its high-water mark,
      `healthy` again below half), a start that failed, a journal that cannot be
      written, publishes refused over `:max_topics`, and what the agent said itself
      (`self.health` in Python, the `health` import in Wasm: a `health` frame,
      PROTOCOL.md §8.3) since it started; and `quarantined` while it is. An agent's
      health is the worst of its stable replicas'; a canary's is its own. The node
      publishes a health event on `symbiont.health` (`"by": "symbiont"`, stamped with
      the replica's id) when it changes kind, not once per failure (nor once per failed
      start); an agent's own report is published as it comes, `"by": "agent"`, and not
      told again by the node.
    * **failure rate** - over the replica's last deliveries (a delivery failed when its
      handler raised or was cancelled, a nack or a timeout, or when its host died while
      handling it), with thresholds and hysteresis: see `Symbiont.Health.Window`. A
      restart on purpose (by hand, by the conductor, an upgrade, a promotion or
      rollback, a release) starts the window over: evidence is counted from the remedy
      on. A crash does not.
    * **crashes** - how many times the replica's host process died because of it: its
      code was running (the host's flight recorder says so, see "Blame" in
      `Symbiont.Manifest`), or, where that is not known, the host died on its own or
      its handler stalled. An upgrade, a promotion, a rollback, a release, a scale, a
      restart by hand or by the conductor, or a host that died because of another agent
      is a restart, never a crash; a process that died as a Python agent started is a
      failed start (**start failures**, see "Agents that cannot start" in
      `Symbiont.Agent`).
    * **restarts** - how many times the replica started again after its first start,
      for any reason (its crashes included).
    * **pins** - what the operator set by hand and the conductor leaves alone
      (`Symbiont.Pins`).
  """
  use GenServer

  alias Symbiont.Observation.Row

  @table __MODULE__
  @baselines Module.concat(__MODULE__, Baselines)
  @registry Symbiont.Agent.Registry
  @roles [:stable, :canary]

  @health_order Symbiont.Contract.health_worst_first()

  @typedoc "A replica's role (see the moduledoc)."
  @type role :: :stable | :canary

  @typedoc """
  One replica: `id`, `name`, `role`, `pid`, `host`, `status` (`:detached`, `:starting`,
  `:ready`), `quarantined` (the reason, or `nil`), `health`, `health_reason`,
  `health_at_ms` (system time of its last change), `version` (`"module:Class"` or
  `"wasm:path"`), `max_queue`, `max_queue_bytes`, `high_water`, `topics`, `queue`,
  `queue_bytes` (the payload bytes of its queue), `in_flight`, `handled`, `failed`
  (deliveries given up: dead-lettered, or handed back by a canary), `crashes`,
  `restarts`, `start_failures` (its failed starts in a row, 0 once it starts: see
  "Agents that cannot start" in `Symbiont.Agent`), `failure_rate` (0.0 to 1.0 over
  `window`, `nil` before any delivery),
  `window` (`%{deliveries: n, failed: n}`), `p99_us` (sent to acked, of its last 100
  deliveries, `nil` before any), `busy_us` (how long its handler has worked, in all:
  see `Symbiont.Signals`), `signals` (what it works out for the analytics, or `nil`:
  `%{latency:, failures:}`, each the evidence of `Symbiont.Signals` or `nil`, and
  `crashes:`, its last crashes as `t:Symbiont.Signals.crash/0`, newest first, and
  `up_since:`, since when its process serves it, system ms, or `nil`), `idle_ms`, `suspect` (`%{topic, attempts}` of a
  delivery that failed before and waits to be tried again, or `nil`), `last_error` (its
  message), `journal_error` (why a durable replica's journal cannot be written, or `nil`).
  """
  @type replica :: %{atom => term}

  @typedoc """
  One agent: its `name`, `version`, `replicas` (its stable replicas, see `t:replica/0`),
  `ids` (theirs), `canary` (the replica on trial, or `nil`), `pins`
  (`Symbiont.Pins.of/1`), and over its stable replicas: `health` and `health_reason`
  (the worst replica's), `crashes`, `restarts`, `queue`, `queue_bytes`, `in_flight`,
  `handled`, `failed` (summed), `start_failures` (the most), `failure_rate` and `window` (over all their windows), `p99_us` (the
  highest), `idle_ms` (the least), `quarantined` (a reason if one of them is),
  `suspect`, `last_error` and `journal_error` (the first replica's that has one).
  """
  @type agent :: %{atom => term}

  @doc false
  def start_link(opts \\ []), do: GenServer.start_link(__MODULE__, opts, name: __MODULE__)

  @doc "The roles a replica may have."
  @spec roles() :: [role]
  def roles, do: @roles

  ## Written by each agent server, about itself (Symbiont.Observation.Row)

  @doc false
  defdelegate open(id, info), to: Row
  @doc false
  defdelegate put(id, info), to: Row
  @doc false
  defdelegate put_counters(
                counters,
                queue,
                queue_bytes,
                in_flight,
                handled,
                failed,
                active_at,
                busy
              ),
              to: Row

  @doc false
  defdelegate put_baseline(name, version, baseline), to: Row
  @doc false
  defdelegate close(id, name, role), to: Row

  ## Baselines (Symbiont.Signals)

  @doc """
  The baseline learnt for version `version` of agent `name` (`Symbiont.Signals`): its
  handling times' `n`, `p50_us`, `p99_us`, its failure `rate` and `version`; or `nil`.
  """
  @spec baseline(String.t(), String.t()) :: map | nil
  def baseline(name, version) do
    case :ets.lookup(@baselines, {name, version}) do
      [{_, baseline}] -> baseline
      [] -> nil
    end
  rescue
    ArgumentError -> nil
  end

  ## The registry of roles

  @doc """
  The ids of the replicas of agent `name` that have `role` (`:stable` by default, `:all`
  for every role), sorted, from the registry of roles.

      iex> Symbiont.Observation.ids("doc-nobody")
      []
  """
  @spec ids(String.t(), role | :all) :: [String.t()]
  def ids(name, role \\ :stable) when is_binary(name) do
    role_guard = if role == :all, do: [], else: [{:==, :"$2", role}]

    @registry
    |> Registry.select([{{:"$1", :_, {name, :"$2", :_}}, role_guard, [:"$1"]}])
    |> Enum.sort()
  end

  @doc """
  Every replica registered on this node: `%{id => {name, role}}` (the registry of roles).
  """
  @spec registered() :: %{String.t() => {String.t(), role}}
  def registered do
    @registry
    |> Registry.select([{{:"$1", :_, {:"$2", :"$3", :_}}, [], [{{:"$1", {{:"$2", :"$3"}}}}]}])
    |> Map.new()
  end

  @doc """
  The role of replica `id` (from the registry of roles), or `nil` when no replica `id`
  runs on this node.
  """
  @spec role(String.t()) :: role | nil
  def role(id) when is_binary(id) do
    case Registry.lookup(@registry, id) do
      [{_pid, {_name, role, _host}}] -> role
      _ -> nil
    end
  end

  ## Reading

  @doc """
  Every replica on this node (`t:replica/0`), sorted by name, then the stable replicas
  before the canary, then id. Option `:scope`: a function from agent name to boolean,
  the agents to list (default: all); `:from` and `:below`: the agents whose names sort
  from (`>=`) or below (`<`) a name (a reader that splits its work by name).
  """
  @spec replicas(keyword) :: [replica]
  def replicas(opts \\ []) do
    scope = Keyword.get(opts, :scope)
    now = System.monotonic_time(:millisecond)

    bounds = for {key, op} <- [from: :>=, below: :<], name = opts[key], do: {op, :"$1", name}

    rows =
      try do
        if bounds == [],
          do: :ets.tab2list(@table),
          else: :ets.select(@table, [{{{:"$1", :_, :_}, :_, :_, :_}, bounds, [:"$_"]}])
      rescue
        ArgumentError -> []
      end

    for {{name, _rank, id}, pid, counters, row} <- rows,
        scope == nil or scope.(name),
        do: Row.view(id, pid, counters, row, now)
  end

  @doc false
  # How many replicas run on this node (what a reader sizes its work by).
  @spec count() :: non_neg_integer
  def count do
    :ets.info(@table, :size)
  rescue
    ArgumentError -> 0
  end

  @doc false
  # Whether a stable replica of agent `name` runs on this node (agents/1 lists it).
  @spec runs?(String.t()) :: boolean
  def runs?(name) when is_binary(name) do
    :ets.select_count(@table, [{{Row.key(:_, name, :stable), :_, :_, :_}, [], [true]}]) > 0
  rescue
    ArgumentError -> false
  end

  @doc false
  # The hosts of the stable replicas on this node, each once. Option `:scope` as in
  # replicas/1.
  @spec hosts(keyword) :: [String.t()]
  def hosts(opts \\ []) do
    scope = Keyword.get(opts, :scope)

    pairs =
      try do
        :ets.select(@table, [
          {{Row.key(:_, :"$1", :stable), :_, :_, :"$2"}, [],
           [{{:"$1", {:element, Row.position(:host), :"$2"}}}]}
        ])
      rescue
        ArgumentError -> []
      end

    for {name, host} <- pairs, scope == nil or scope.(name), uniq: true, do: host
  end

  @doc "Replica `id` (`t:replica/0`), or `nil` when it does not run on this node."
  @spec replica(String.t()) :: replica | nil
  def replica(id) when is_binary(id) do
    with [{_pid, {name, role, _host}}] <- Registry.lookup(@registry, id),
         [{_key, pid, counters, row}] <- safe_lookup(Row.key(id, name, role)) do
      Row.view(id, pid, counters, row, System.monotonic_time(:millisecond))
    else
      _ -> nil
    end
  end

  @doc """
  Every agent on this node (`t:agent/0`), sorted by name; an agent none of whose stable
  replicas runs here is left out. Option `:scope` as in `replicas/1`.
  """
  @spec agents(keyword) :: [agent]
  def agents(opts \\ []) do
    opts |> replicas() |> group([], Symbiont.Pins.all())
  end

  # The replicas come by agent (the table's order): each run of one name is an agent.
  defp group([], [], _pins), do: []
  defp group([], run, pins), do: add(run, [], pins)

  defp group([%{name: name} = r | rest], [%{name: name} | _] = run, pins),
    do: group(rest, [r | run], pins)

  defp group([r | rest], [], pins), do: group(rest, [r], pins)
  defp group(replicas, run, pins), do: add(run, group(replicas, [], pins), pins)

  defp add([%{name: name}] = run, agents, pins), do: add(name, run, agents, pins)

  defp add([%{name: name} | _] = run, agents, pins),
    do: add(name, Enum.reverse(run), agents, pins)

  defp add(name, replicas, agents, pins) do
    case aggregate(name, replicas, Map.get(pins, name, %{})) do
      nil -> agents
      agent -> [agent | agents]
    end
  end

  @doc "Agent `name` (`t:agent/0`), or `nil` when none of its stable replicas runs here."
  @spec agent(String.t()) :: agent | nil
  def agent(name) when is_binary(name) do
    now = System.monotonic_time(:millisecond)

    rows =
      try do
        :ets.select(@table, [{{{name, :_, :_}, :_, :_, :_}, [], [:"$_"]}])
      rescue
        ArgumentError -> []
      end

    case for {{_, _, id}, pid, counters, row} <- rows, do: Row.view(id, pid, counters, row, now) do
      [] -> nil
      replicas -> aggregate(name, replicas, Symbiont.Pins.of(name))
    end
  end

  defp safe_lookup(key) do
    :ets.lookup(@table, key)
  rescue
    ArgumentError -> []
  end

  @doc """
  The worst of health kinds (`quarantined`, `failing`, `overloaded`, `degraded`,
  `healthy`, the worst first); `"healthy"` for none.

      iex> Symbiont.Observation.worst(["healthy", "failing", "degraded"])
      "failing"
      iex> Symbiont.Observation.worst([])
      "healthy"
  """
  @spec worst([String.t()]) :: String.t()
  def worst(kinds), do: Enum.find(@health_order, "healthy", &(&1 in kinds))

  # One agent from its replicas (the stable ones first). Most agents run one replica:
  # that one's fields are the agent's as they are.
  defp aggregate(_name, [%{role: role} | _], _pins) when role != :stable, do: nil

  defp aggregate(name, [r], pins) do
    %{
      name: name,
      version: r.version,
      replicas: [r],
      ids: [r.id],
      canary: nil,
      pins: pins,
      health: r.health,
      health_reason: r.health_reason,
      crashes: r.crashes,
      restarts: r.restarts,
      start_failures: r.start_failures,
      queue: r.queue,
      queue_bytes: r.queue_bytes,
      in_flight: r.in_flight,
      handled: r.handled,
      failed: r.failed,
      window: r.window,
      failure_rate: r.failure_rate,
      p99_us: r.p99_us,
      idle_ms: r.idle_ms,
      quarantined: r.quarantined,
      suspect: r.suspect && Map.put(r.suspect, :id, r.id),
      last_error: r.last_error,
      journal_error: r.journal_error
    }
  end

  defp aggregate(name, replicas, pins) do
    {stable, others} = Enum.split_with(replicas, &(&1.role == :stable))
    worst = Enum.min_by(stable, &health_rank(&1.health))
    deliveries = Enum.reduce(stable, 0, &(&1.window.deliveries + &2))
    failures = Enum.reduce(stable, 0, &(&1.window.failed + &2))

    totals =
      Enum.reduce(stable, {0, 0, 0, 0, 0, 0, 0, 0, nil, nil}, fn r,
                                                                 {c, s, sf, q, qb, i, h, f, p99,
                                                                  idle} ->
        {c + r.crashes, s + r.restarts, max(sf, r.start_failures), q + r.queue,
         qb + r.queue_bytes, i + r.in_flight, h + r.handled, f + r.failed, max_p99(p99, r.p99_us),
         min(idle || r.idle_ms, r.idle_ms)}
      end)

    window = %{deliveries: deliveries, failed: failures}
    canary = Enum.find(others, &(&1.role == :canary))
    agent(name, worst, stable, canary, pins, window, rate(failures, deliveries), totals)
  end

  defp agent(name, worst, [first | _] = stable, canary, pins, window, failure_rate, totals) do
    {crashes, restarts, start_failures, queue, queue_bytes, in_flight, handled, failed, p99_us,
     idle_ms} = totals

    %{
      name: name,
      version: first.version,
      replicas: stable,
      ids: Enum.map(stable, & &1.id),
      canary: canary,
      pins: pins,
      health: worst.health,
      health_reason: worst.health_reason,
      crashes: crashes,
      restarts: restarts,
      start_failures: start_failures,
      queue: queue,
      queue_bytes: queue_bytes,
      in_flight: in_flight,
      handled: handled,
      failed: failed,
      window: window,
      failure_rate: failure_rate,
      p99_us: p99_us,
      idle_ms: idle_ms,
      quarantined: Enum.find_value(stable, & &1.quarantined),
      suspect: Enum.find_value(stable, &(&1.suspect && Map.put(&1.suspect, :id, &1.id))),
      last_error: Enum.find_value(stable, & &1.last_error),
      journal_error: Enum.find_value(stable, & &1.journal_error)
    }
  end

  defp max_p99(nil, p99), do: p99
  defp max_p99(p99, nil), do: p99
  defp max_p99(a, b), do: max(a, b)

  defp health_rank(kind),
    do: Enum.find_index(@health_order, &(&1 == kind)) || length(@health_order)

  @doc false
  @spec rate(non_neg_integer, non_neg_integer) :: float | nil
  def rate(_failed, 0), do: nil
  def rate(failed, deliveries), do: failed / deliveries

  ## The table's owner

  @impl true
  def init(_opts) do
    :ets.new(@table, [:named_table, :public, :ordered_set, read_concurrency: true])
    :ets.new(@baselines, [:named_table, :public, :set, read_concurrency: true])

    Symbiont.Pins.new_table()
    Symbiont.Host.Usage.new_table()
    {:ok, %{}}
  end

  @impl true
  # A server's row goes with it, even when it is killed (its own close/1 runs when it
  # stops in order); a row another server with the same id wrote since is kept.
  def handle_cast({:watch, pid, key}, state) do
    ref = Process.monitor(pid)
    {:noreply, Map.put(state, ref, {pid, key})}
  end

  @impl true
  def handle_info({:DOWN, ref, :process, _, _}, state) do
    case Map.pop(state, ref) do
      {{pid, {name, _, _} = key}, state} ->
        :ets.match_delete(@table, {key, pid, :_, :_})

        # The last replica of an agent gone (retired, not restarted: an upgrade, a
        # rollback or a host's restart keeps its server): its baselines go too, so that
        # agents spawned and retired by the thousand leave nothing behind.
        if :ets.select_count(@table, [{{{name, :_, :_}, :_, :_, :_}, [], [true]}]) == 0,
          do: :ets.match_delete(@baselines, {{name, :_}, :_})

        {:noreply, state}

      {nil, state} ->
        {:noreply, state}
    end
  end

  def handle_info(_other, state), do: {:noreply, state}
end

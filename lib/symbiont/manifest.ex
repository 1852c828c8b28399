defmodule Symbiont.Manifest do
  @moduledoc """
  The desired state, and the reconciler that keeps the running system equal to it.

  The desired state is the `:agents` of the application environment (validated before
  anything starts; a bad entry stops the application with a message naming the agent,
  the key, the value and what is allowed) plus the changes made at run time:
  `spawn_agent/2`, `scale/3`, `retire/2` (also `Symbiont.spawn_agent/1`,
  `Symbiont.scale/2`, `Symbiont.retire/1`, and the conductor's actions), and
  `reload/2` (`Symbiont.reload_manifest/0`), which applies a changed config live.

  ## Placement

  A Python agent's replica gets a host of its own, named like the replica (`"billing"`,
  `"billing#2"`...); Wasm agents share hosts named `"wasm#1"`, `"wasm#2"`... with up to
  `:wasm_agents_per_host` agents in each (application env, default 32).

  A shared host runs its agents' deliveries one at a time, on one thread: its agents share
  its time, and a replica placed with another replica of its agent relieves nothing. So
  each Wasm replica the manifest starts (at start, on a scale by hand or by the
  conductor, on a reload) goes to the first shared host with room that runs **no other
  replica of its agent** and is **not busy** (its utilisation over its last heartbeats
  above `:busy_host_utilisation`, default 0.7: see `Symbiont.Host.Usage`); else to a new
  host, while there are fewer than `:max_wasm_hosts` (default 8); else, with a warning, to
  the least busy host with room. Hosts are opened for room whatever `:max_wasm_hosts`
  says. The rules are `Symbiont.Placement.pick/3`; both options are also application
  env keys. (`plan/2` and `start_all/2` lay agents out once, packed, without these rules:
  a bulk start for benchmarks.)

  A Wasm replica that takes most of a busy host's time while its co-tenants wait is a
  noisy neighbour: the conductor moves it to a host of its own (`reroute`,
  `Symbiont.Placement.reroute/2`, audited), named like the replica, as an agent isolated
  after crashing its host is (see "Blame"). Like that one, the manifest keeps it there
  (it is the replica's placement from then on; nothing moves it back) and stops that
  host when the replica is retired.

  ## Blame

  When a host dies (a segfault, the OOM killer, a `kill -9`) or is found frozen by its
  heartbeat, the crash is charged to the agent whose code was running, and only to it:
  the host keeps a flight recorder of whose delivery, start or stop it runs
  (PROTOCOL.md §11.1), which its owner reads after the death. That agent's `crashes`
  (`Symbiont.Agent.Server.info/1`, and the conductor's crash-loop evidence) counts it, and
  the delivery that was running is charged an attempt (`max_attempts`, then the dead
  letters). The other agents of a shared host are restarted in the new process with
  nothing charged: a restart, not a crash; their deliveries go again, uncharged, and
  nothing they accepted is lost. A host that ran no agent's code when it died charges
  none of its agents, unless it runs only one (its process is that agent's alone); a
  restart asked for (`Symbiont.Host.restart/2`) charges nobody.

  A Wasm replica charged with crashing its shared host twice within a minute (the host
  options `:isolate_after` and `:isolate_window_ms`, or the application env of the same
  names) is moved to a host of its own, named like the replica (like a Python replica's),
  started with the shared host's options: its queue and state go with it, its neighbours
  are rid of it, and the move is published as an `isolate` remediation by the
  `"supervisor"` (audited). There its crashes are its own: a crash loop is the conductor's
  to answer, with a quarantine of that agent alone. The manifest keeps it there (it is
  the replica's placement from then on) and stops that host when the replica is retired.

  ## Placement across nodes

  An agent spec with `:nodes` (see `Symbiont.Agent`, "Placement") runs once per replica in
  the cluster. Every node runs the same manifest and starts the replicas that
  `pick_node/3` gives it and that run nowhere yet; a replica that runs stays where it is
  (it is registered with `:global`, which refuses a second copy anywhere in the cluster).
  The manifest watches nodes (`:net_kernel.monitor_nodes/1`): when one is lost it
  reconciles at once, so the lost node's replicas start on the survivors the list allows,
  within two ticks at most (`:global` may take a moment to forget the lost copies). A
  node that comes back leaves them where they are. Before its first reconcile, a manifest
  with placed agents connects to the nodes of their lists and waits for `:global` to
  agree with them (`:global.sync/0`), so that a node starting or coming back sees what
  already runs elsewhere instead of starting a second copy. A network split that leaves
  both sides running is not resolved by a vote: when the sides meet again `:global` keeps
  one copy and stops the other.

  ## Reconciling

  On every tick (`:reconcile_ms` in the application env, default 1000) and after every
  change, the manifest compares what should run with what runs and repairs the
  difference: a replica that is missing (its agent stopped by hand, or never started) is
  started, with its host if that is missing too (a host stopped from outside); a replica
  that should not run any more (scaled in, retired, removed from the config) is retired
  without losing anything: its waiting events go to the first replica, or to the dead
  letters (reason `"retired"`) when the whole agent goes, and a `retired` health event is
  published. A host killed from outside is restarted by its own owner at once (see
  `Symbiont.Host`); so drift is repaired within two ticks at most.

  Only the agents of the manifest are its business: agents started by hand
  (`Symbiont.Python.start/1`) and canaries (`Symbiont.Deploy`) are left alone.

  ## Checked before it serves

  An agent that cannot start is caught before it runs (`Symbiont.Agent.Probe`: its
  module imported and its class constructed, or its Wasm module compiled and
  instantiated, in a Python process of its own; module top-level code and `__init__`
  run there). `spawn_agent/2` and `reload/2` (its new and changed agents) check first and
  answer `{:error, message}`, changing nothing, for one that cannot start.

  The application's manifest (started with `check: true`) checks all its agents, in one
  Python process, before it starts any, so before the node serves. Each one that cannot
  start is logged once, as an error with its traceback. Then:

    * a `:required` agent (the default) that cannot start **stops the node from
      starting**: `Application.start(:symbiont)` returns
      `{:error, {:agent_cannot_start, message}}`. A required agent is one the system is
      not meant to run without, so the node does not pretend to serve without it: the
      mistake (a typo in `:python`, a missing dependency) is seen at deploy time, not as
      events piling up later;
    * an agent with `required: false` is quarantined at once (`Symbiont.Agent.Server`,
      `quarantined` on `symbiont.health` and in `Symbiont.status/0`), and everything
      else starts. `Symbiont.Agent.Server.release/1` starts it once it is fixed.

  That is at the node's start only: a manifest restarted (by its supervisor, or with it:
  `:boot` in `start_link/1`) quarantines a required agent that cannot start too, rather
  than take the node down with it, and one that the check passed can still fail to start
  later (see "Agents that cannot start" in `Symbiont.Agent`). The check costs one cold Python process start plus each agent's
  import and construction (and, for Wasm agents, wasmtime's import and each module's
  compilation, which the module cache then saves the hosts): 0.1-0.2 s for a few agents
  on a 2-core machine.

  ## Reloading

  `reload/2` takes a new list of agent specs (by default re-read from the project's
  `config/config.exs`, or the file of `$SYMBIONT_CONFIG`), validates all of it first,
  then changes only what changed: new agents start, agents gone from the config are
  retired, a changed `:replicas` rescales, a changed module, class or config upgrades the
  running replicas in place (their queues and state kept, see
  `Symbiont.Agent.Server.upgrade/3`). An agent whose config entry did not change keeps
  its run-time changes (a scale by the conductor, say).
  """
  use GenServer

  require Logger

  alias Symbiont.Agent.Server

  @doc """
  Validates a list of agent specs (see `Symbiont.Agent`): each one, then that names are
  unique.

      iex> Symbiont.Manifest.validate([[name: "a", python: "m:A"], [name: "a", python: "m:B"]])
      {:error, "agent \\"a\\" is declared twice; agent names must be unique"}
  """
  @spec validate(term) :: {:ok, [Symbiont.Agent.spec()]} | {:error, String.t()}
  def validate(agents) when is_list(agents) do
    with {:ok, specs} <- validate_each(agents, []) do
      case specs |> Enum.frequencies_by(& &1.name) |> Enum.find(fn {_, n} -> n > 1 end) do
        nil ->
          {:ok, specs}

        {name, _} ->
          {:error, "agent #{inspect(name)} is declared twice; agent names must be unique"}
      end
    end
  end

  def validate(other),
    do: {:error, "expected :agents to be a list of agent specs, got: #{inspect(other)}"}

  defp validate_each([], acc), do: {:ok, Enum.reverse(acc)}

  defp validate_each([spec | rest], acc) do
    case Symbiont.Agent.validate_spec(spec) do
      {:ok, spec} -> validate_each(rest, [spec | acc])
      {:error, message} -> {:error, message}
    end
  end

  @doc """
  Starts a manifest. The application starts the one named `Symbiont.Manifest` with the
  configured agents; tests start others.

  Options: `:agents` (validated specs, default `[]`), `:name` (default
  `Symbiont.Manifest`), `:tick_ms` (default: app env `:reconcile_ms`, 1000),
  `:per_host` (default: app env `:wasm_agents_per_host`, 32), `:wasm_hosts` (the prefix of
  the shared Wasm hosts' names, default `"wasm"`), `:busy_host_utilisation` and
  `:max_wasm_hosts` (see "Placement"; default: the app env of the same names, else 0.7
  and 8), `:check` (check the agents before
  starting them, see "Checked before it serves"; default `false`, the application's
  manifest `true`), `:instance` (the `Symbiont.Instance` it belongs to: its agent names
  are its own on the node, and one another instance runs is refused; default `nil`,
  no claim), `:boot` (any term naming one start of the tree the manifest runs in: a
  start of this name with the boot of the last one is a restart, which quarantines
  rather than refuses, see "Checked before it serves"; default the pid of its
  supervisor. The application gives one per start of the application: the manifest's
  supervisor, `Symbiont.Control`, is itself restarted with the runtime).
  """
  @spec start_link(keyword) :: GenServer.on_start()
  def start_link(opts) when is_list(opts),
    do: GenServer.start_link(__MODULE__, opts, name: Keyword.get(opts, :name, __MODULE__))

  @doc false
  def child_spec(opts),
    do: %{id: Keyword.get(opts, :name, __MODULE__), start: {__MODULE__, :start_link, [opts]}}

  @doc "The agent specs in force (the desired state), sorted by name."
  @spec agents(GenServer.server()) :: [Symbiont.Agent.spec()]
  def agents(server \\ __MODULE__), do: GenServer.call(server, :agents)

  @doc "The spec in force for agent `name`, or `nil`."
  @spec agent(String.t(), GenServer.server()) :: Symbiont.Agent.spec() | nil
  def agent(name, server \\ __MODULE__), do: GenServer.call(server, {:agent, name})

  @doc """
  Adds an agent to the desired state and starts it. `spec` is validated like a manifest
  entry; a name already in the manifest is refused.

      {:ok, "tenant-42"} = Symbiont.Manifest.spawn_agent(name: "tenant-42", python: "shop:Tenant")
  """
  @spec spawn_agent(keyword | map, GenServer.server()) :: {:ok, String.t()} | {:error, String.t()}
  def spawn_agent(spec, server \\ __MODULE__) do
    with {:ok, spec} <- Symbiont.Agent.validate_spec(spec),
         :ok <- not_declared(spec.name, server),
         :ok <- Symbiont.Agent.Probe.check(spec),
         do: GenServer.call(server, {:spawn, spec}, 30_000)
  end

  defp not_declared(name, server) do
    if agent(name, server),
      do: {:error, "agent #{inspect(name)} is already in the manifest"},
      else: :ok
  end

  @doc """
  Sets how many replicas of `name` run, then starts or retires replicas to match.
  `n` must be a positive integer; the conductor keeps to the agent's `:min_replicas` and
  `:max_replicas`, a call by hand does not.
  """
  @spec scale(String.t(), pos_integer, GenServer.server()) :: :ok | {:error, String.t()}
  def scale(name, n, server \\ __MODULE__)

  def scale(name, n, server) when is_binary(name) and is_integer(n) and n > 0,
    do: GenServer.call(server, {:scale, name, n}, 30_000)

  def scale(name, n, _server),
    do:
      {:error,
       "expected an agent name and a positive number of replicas, got: #{inspect(name)}, #{inspect(n)}"}

  @doc """
  Removes agent `name` from the desired state and retires its replicas: the events still
  waiting go to the dead letters (reason `"retired"`), a `retired` health event is
  published.
  """
  @spec retire(String.t(), GenServer.server()) :: :ok | {:error, String.t()}
  def retire(name, server \\ __MODULE__) when is_binary(name),
    do: GenServer.call(server, {:retire, name}, 30_000)

  @doc """
  Replaces the spec of agent `name` in the desired state without touching what runs
  (`Symbiont.Deploy` records a promoted version this way, so that a replica the
  reconciler starts later runs it too). `:error` if `name` is not in the manifest.
  """
  @spec put_spec(Symbiont.Agent.spec(), GenServer.server()) :: :ok | :error
  def put_spec(%{name: name} = spec, server \\ __MODULE__) when is_binary(name),
    do: GenServer.call(server, {:put_spec, spec})

  @doc """
  Applies a changed config live (see "Reloading"). `agents` defaults to the `:agents`
  of `:symbiont` in the project's `config/config.exs` (or the file of
  `$SYMBIONT_CONFIG`, `make shop`'s), read again. Returns what changed:
  `%{started: names, retired: names, rescaled: names, upgraded: names}`. The new agents,
  and those whose module, class, Wasm module or config changed, are checked first
  (`Symbiont.Agent.Probe`): if one cannot start, nothing changes and the error says why.
  """
  @spec reload([keyword | map] | nil, GenServer.server()) :: {:ok, map} | {:error, String.t()}
  def reload(agents \\ nil, server \\ __MODULE__) do
    with {:ok, agents} <- if(agents, do: {:ok, agents}, else: read_config()),
         {:ok, specs} <- validate(agents),
         :ok <- check_changed(specs, server),
         do: GenServer.call(server, {:reload, specs}, 60_000)
  end

  # The specs whose logic is not what runs now (new ones too) can start, or nothing does.
  defp check_changed(specs, server) do
    now = Map.new(agents(server), &{&1.name, logic(&1)})
    changed = Enum.reject(specs, &(Map.get(now, &1.name) == logic(&1)))

    case for {_name, {:error, %{message: m}}} <- Symbiont.Agent.Probe.check_all(changed), do: m do
      [] -> :ok
      messages -> {:error, Enum.join(Enum.sort(messages), "; ") <> "; nothing was changed"}
    end
  end

  @doc "Reconciles now; returns the ids it started and retired."
  @spec reconcile(GenServer.server()) :: %{started: [String.t()], retired: [String.t()]}
  def reconcile(server \\ __MODULE__), do: GenServer.call(server, :reconcile, 30_000)

  defp read_config do
    path = Symbiont.Config.manifest_file()

    if File.regular?(path) do
      env = Symbiont.Config.get(:config_env)

      try do
        config = Config.Reader.read!(path, env: env)
        {:ok, config |> Keyword.get(:symbiont, []) |> Keyword.get(:agents, [])}
      rescue
        e -> {:error, "could not read #{Path.relative_to_cwd(path)}: #{Exception.message(e)}"}
      end
    else
      {:error, "no config file #{path}; give the agents to reload/1"}
    end
  end

  ## Plans (pure)

  @doc """
  Starts the hosts of `plan(specs, per_host)` under `Symbiont.Hosts` and their agents
  under `Symbiont.Agents`, once, without reconciling later; what cannot start is logged.
  """
  @spec start_all([Symbiont.Agent.spec()], pos_integer) :: :ok
  def start_all(specs, per_host) do
    for {host, agents} <- plan(specs, per_host) do
      start_host(host)
      for {id, spec} <- agents, do: start_agent(id, host, spec)
    end

    :ok
  end

  @doc """
  Where each replica runs: a list of `{host, [{agent_id, spec}]}`. A Python agent's
  replicas get a host each, named like the replica (see `host_names/1`); the replicas of
  Wasm agents fill hosts `"wasm#1"`, `"wasm#2"`... with up to `per_host` each.

      iex> specs = [%{name: "a", replicas: 2, wasm: nil}, %{name: "w", replicas: 3, wasm: "w.wat"}]
      iex> Symbiont.Manifest.plan(specs, 2) |> Enum.map(fn {h, as} -> {h, Enum.map(as, &elem(&1, 0))} end)
      [{"a", ["a"]}, {"a#2", ["a#2"]}, {"wasm#1", ["w", "w#2"]}, {"wasm#2", ["w#3"]}]
  """
  @spec plan([Symbiont.Agent.spec()], pos_integer) :: [{String.t(), [{String.t(), map}]}]
  def plan(specs, per_host) when is_integer(per_host) and per_host > 0 do
    {wasm, python} = Enum.split_with(specs, & &1[:wasm])
    own = for spec <- python, id <- host_names(spec), do: {id, [{id, spec}]}

    shared =
      for(spec <- wasm, id <- host_names(spec), do: {id, spec})
      |> Enum.chunk_every(per_host)
      |> Enum.with_index(1)
      |> Enum.map(fn {agents, i} -> {"wasm##{i}", agents} end)

    own ++ shared
  end

  @doc """
  The node that should start replica `id` of a placed agent (`spec.nodes`), given the
  live nodes: the first live node of the list, the list rotated by the replica's number
  so that replicas spread (replica 1 looks from the first node, replica 2 from the
  second...). `nil` when no node of the list is live. The manifest asks only for a
  replica that runs nowhere: one that runs stays where it is.

      iex> spec = %{nodes: [:"a@h", :"b@h", :"c@h"]}
      iex> Symbiont.Manifest.pick_node("billing", spec, [:"c@h", :"b@h", :"a@h"])
      :"a@h"
      iex> Symbiont.Manifest.pick_node("billing#2", spec, [:"c@h", :"b@h", :"a@h"])
      :"b@h"
      iex> Symbiont.Manifest.pick_node("billing", spec, [:"c@h", :"b@h"])
      :"b@h"
      iex> Symbiont.Manifest.pick_node("billing", spec, [:"x@h"])
      nil
  """
  @spec pick_node(String.t(), %{:nodes => [node], optional(atom) => any}, [node]) :: node | nil
  def pick_node(id, %{nodes: [_ | _] = nodes}, live) when is_binary(id) and is_list(live) do
    {first, rest} = Enum.split(nodes, rem(replica_number(id) - 1, length(nodes)))
    Enum.find(rest ++ first, &(&1 in live))
  end

  # "billing" is replica 1, "billing#2" replica 2; anything else after "#" counts as 1.
  defp replica_number(id) do
    with [_, n] <- String.split(id, "#", parts: 2),
         {n, ""} when n > 0 <- Integer.parse(n) do
      n
    else
      _ -> 1
    end
  end

  @doc """
  The ids of an agent's replicas (and the names of their hosts, for a Python agent): the
  agent's own name, then `"name#2"`, `"name#3"`... (`#` cannot occur in an agent name,
  so these never clash).

      iex> Symbiont.Manifest.host_names(%{name: "billing", replicas: 3})
      ["billing", "billing#2", "billing#3"]
  """
  @spec host_names(%{:name => String.t(), :replicas => pos_integer, optional(atom) => any}) ::
          [String.t()]
  def host_names(%{name: name, replicas: n}),
    do: [name | for(i <- 2..n//1, do: "#{name}##{i}")]

  @doc """
  The agent name of a replica id: `"billing#2"` → `"billing"`.

      iex> Symbiont.Manifest.agent_name("billing#2")
      "billing"
  """
  @spec agent_name(String.t()) :: String.t()
  def agent_name(id), do: id |> String.split("#", parts: 2) |> hd()

  ## GenServer

  @impl true
  def init(opts) do
    specs = Keyword.get(opts, :agents, [])

    # An instance's manifest (Symbiont.Instance) runs names no other one runs.
    with {:claim, :ok} <-
           {:claim, Symbiont.Instance.claim(opts[:instance], Enum.map(specs, & &1.name))},
         {:ok, quarantine} <-
           if(Keyword.get(opts, :check, false), do: check_agents(specs, opts), else: {:ok, %{}}) do
      start(specs, quarantine, opts)
    else
      {:claim, {:error, message}} ->
        {:stop, {:agent_claimed, message}}

      {:error, message} ->
        Symbiont.Instance.unclaim(opts[:instance], Enum.map(specs, & &1.name))
        {:stop, {:agent_cannot_start, message}}
    end
  end

  # "Checked before it serves": each agent that cannot start is logged with its traceback;
  # a required one stops the first start of this manifest, any other is quarantined.
  defp check_agents(specs, opts) do
    first? = first_start?(Keyword.get(opts, :name, __MODULE__), opts[:boot])
    by_name = Map.new(specs, &{&1.name, &1})
    failures = for {name, {:error, f}} <- Symbiont.Agent.Probe.check_all(specs), do: {name, f}
    refused = for {name, f} <- failures, first? and by_name[name].required, do: f.message

    for {name, f} <- Enum.sort(failures) do
      then =
        if first? and by_name[name].required,
          do:
            "it is :required, so the node does not start (required: false would start it without this agent, quarantined)",
          else:
            "it is quarantined; Symbiont.Agent.Server.release(#{inspect(name)}) starts it once fixed"

      tb = if f.traceback == "", do: "", else: "\n" <> String.trim_trailing(f.traceback)
      Logger.error("#{f.message}; #{then}#{tb}")
    end

    if refused == [],
      do: {:ok, Map.new(failures, fn {name, f} -> {name, f.message} end)},
      else: {:error, Enum.join(Enum.sort(refused), "; ")}
  end

  # Whether this is the first start of manifest `name` in its `boot` (`:boot`), by
  # default under its supervisor (a restart has the same parent).
  defp first_start?(name, boot) do
    boot = boot || with({:parent, p} <- Process.info(self(), :parent), do: p)
    key = {__MODULE__, :started, name}
    first? = :persistent_term.get(key, nil) != boot
    if first?, do: :persistent_term.put(key, boot)
    first?
  end

  defp start(specs, quarantine, opts) do
    state = %{
      desired: Map.new(specs, &{&1.name, &1}),
      loaded: Map.new(specs, &{&1.name, &1}),
      # Names that left the desired state and may still have replicas running.
      leaving: MapSet.new(),
      # Wasm replica id => the host it was placed on.
      placed: %{},
      # Replica ids being retired by a task: id => task ref.
      retiring: %{},
      per_host:
        Keyword.get_lazy(opts, :per_host, fn ->
          Symbiont.Config.get(:wasm_agents_per_host)
        end),
      tick_ms:
        Keyword.get_lazy(opts, :tick_ms, fn ->
          Symbiont.Config.get(:reconcile_ms)
        end),
      wasm_hosts: Keyword.get(opts, :wasm_hosts, "wasm"),
      # The Symbiont.Instance this manifest belongs to (nil: it claims no names).
      instance: Keyword.get(opts, :instance),
      # Symbiont.Placement's options (busy_host_utilisation, max_wasm_hosts), validated.
      placement: Symbiont.Placement.options!(opts),
      # Agents that start quarantined, name => why: those the check at start refused.
      quarantine: quarantine
    }

    # An instance's agents go with it (terminate/2).
    if owns_agents?(state), do: Process.flag(:trap_exit, true)
    :ok = :net_kernel.monitor_nodes(true)
    join_cluster(specs)
    # After a restart of the manifest its Wasm replicas still run: where, their servers say.
    state = %{state | placed: running_placements(state)}
    {_report, state} = do_reconcile(state)
    schedule(state)
    {:ok, %{state | quarantine: %{}}}
  end

  # Connects to the nodes that placed agents may run on, then waits (a few seconds at
  # most) until :global knows what they run: see "Placement across nodes". A node that
  # does not answer is simply not live.
  defp join_cluster(specs) do
    nodes = for %{nodes: [_ | _] = nodes} <- specs, n <- nodes, n != node(), uniq: true, do: n

    if nodes != [] and Node.alive?() do
      for n <- nodes, n not in Node.list(), do: :net_kernel.connect_node(n)
      task = Task.async(fn -> :global.sync() end)
      Task.yield(task, 5_000) || Task.shutdown(task, :brutal_kill)
    end

    :ok
  end

  defp schedule(state), do: Process.send_after(self(), :tick, state.tick_ms)

  @impl true
  def handle_call(:agents, _from, state),
    do: {:reply, state.desired |> Map.values() |> Enum.sort_by(& &1.name), state}

  def handle_call({:agent, name}, _from, state), do: {:reply, state.desired[name], state}

  def handle_call({:spawn, spec}, _from, state) do
    with false <- Map.has_key?(state.desired, spec.name),
         :ok <- Symbiont.Instance.claim(state.instance, [spec.name]) do
      state = %{
        state
        | desired: Map.put(state.desired, spec.name, spec),
          leaving: MapSet.delete(state.leaving, spec.name)
      }

      join_cluster([spec])
      {_report, state} = do_reconcile(state)
      {:reply, {:ok, spec.name}, state}
    else
      true -> {:reply, {:error, "agent #{inspect(spec.name)} is already in the manifest"}, state}
      {:error, message} -> {:reply, {:error, message}, state}
    end
  end

  def handle_call({:scale, name, n}, _from, state) do
    case state.desired do
      %{^name => spec} ->
        {_report, state} = do_reconcile(put_in(state.desired[name], %{spec | replicas: n}))
        {:reply, :ok, state}

      _ ->
        {:reply, {:error, not_in_manifest(name, state)}, state}
    end
  end

  def handle_call({:retire, name}, _from, state) do
    if Map.has_key?(state.desired, name) do
      state = %{
        state
        | desired: Map.delete(state.desired, name),
          leaving: MapSet.put(state.leaving, name)
      }

      Symbiont.Instance.unclaim(state.instance, [name])
      {_report, state} = do_reconcile(state)
      {:reply, :ok, state}
    else
      {:reply, {:error, not_in_manifest(name, state)}, state}
    end
  end

  def handle_call({:put_spec, spec}, _from, state) do
    if Map.has_key?(state.desired, spec.name),
      do: {:reply, :ok, put_in(state.desired[spec.name], spec)},
      else: {:reply, :error, state}
  end

  def handle_call({:reload, specs}, _from, state) do
    new = for %{name: name} <- specs, not Map.has_key?(state.desired, name), do: name

    case Symbiont.Instance.claim(state.instance, new) do
      :ok ->
        {state, changes} = apply_reload(state, Map.new(specs, &{&1.name, &1}))
        Symbiont.Instance.unclaim(state.instance, changes.retired)
        {report, state} = do_reconcile(state)
        Logger.info("manifest reloaded: #{inspect(changes)}; #{inspect(report)}")
        {:reply, {:ok, changes}, state}

      {:error, message} ->
        {:reply, {:error, message <> "; nothing was changed"}, state}
    end
  end

  def handle_call(:reconcile, _from, state) do
    {report, state} = do_reconcile(state)
    {:reply, report, state}
  end

  @impl true
  def handle_info(:tick, state) do
    {_report, state} = do_reconcile(state)
    schedule(state)
    {:noreply, state}
  end

  # A node lost: its placed replicas start on the survivors now, not at the next tick.
  def handle_info({:nodedown, _node}, state) do
    if Enum.any?(Map.values(state.desired), &placed?/1) do
      {_report, state} = do_reconcile(state)
      {:noreply, state}
    else
      {:noreply, state}
    end
  end

  def handle_info({ref, _result}, state) when is_reference(ref) do
    Process.demonitor(ref, [:flush])
    {:noreply, %{state | retiring: Map.reject(state.retiring, fn {_, r} -> r == ref end)}}
  end

  def handle_info({:DOWN, ref, :process, _, _}, state),
    do: {:noreply, %{state | retiring: Map.reject(state.retiring, fn {_, r} -> r == ref end)}}

  def handle_info(_other, state), do: {:noreply, state}

  defp not_in_manifest(name, state) do
    known = state.desired |> Map.keys() |> Enum.sort()
    "agent #{inspect(name)} is not in the manifest (its agents: #{inspect(known)})"
  end

  ## Reload

  defp apply_reload(state, new) do
    old = state.loaded
    started = for {name, _} <- new, not Map.has_key?(state.desired, name), do: name
    retired = for {name, _} <- old, not Map.has_key?(new, name), do: name

    changed = for {name, spec} <- new, Map.has_key?(old, name), old[name] != spec, do: name

    rescaled = for name <- changed, old[name].replicas != new[name].replicas, do: name
    upgraded = for name <- changed, logic(old[name]) != logic(new[name]), do: name

    # Changed entries take the new config; unchanged ones keep their run-time changes.
    desired =
      state.desired
      |> Map.drop(retired)
      |> Map.merge(Map.take(new, started ++ changed))

    for name <- upgraded, id <- running_ids(name) do
      case Server.upgrade(id, new[name]) do
        {:ok, _} -> :ok
        error -> Logger.error("agent #{id} could not be upgraded: #{inspect(error)}")
      end
    end

    state = %{
      state
      | desired: desired,
        loaded: new,
        leaving: MapSet.union(state.leaving, MapSet.new(retired))
    }

    {state, %{started: started, retired: retired, rescaled: rescaled, upgraded: upgraded}}
  end

  defp logic(spec), do: Map.take(spec, [:module, :class, :wasm, :config])

  ## Reconcile

  defp do_reconcile(state) do
    # Each running replica's agent name and role (the registry of roles): the manifest's
    # replicas are the stable ones; a canary is Symbiont.Deploy's.
    registered = Symbiont.Observation.registered()
    running = MapSet.new(Map.keys(registered))
    hosts = Server.hosts()
    live = [node() | Node.list()]
    # A replica moved to a host of its own (see "Blame") is where its server says.
    state = %{
      state
      | placed: Map.new(state.placed, fn {id, h} -> {id, Map.get(hosts, id, h)} end)
    }

    wanted =
      for {_, spec} <- state.desired,
          id <- host_names(spec),
          runs_here?(id, spec, live),
          into: %{},
          do: {id, spec}

    # A running replica whose host went away (stopped from outside) gets it back; each
    # host is looked at once, however many Wasm agents share it.
    wanted
    |> Enum.flat_map(fn {id, spec} ->
      if MapSet.member?(running, id), do: List.wrap(host_of(id, spec, state)), else: []
    end)
    |> Enum.uniq()
    |> Enum.each(&start_host/1)

    {started, state} =
      Enum.reduce(wanted, {[], state}, fn {id, spec}, {started, state} ->
        if MapSet.member?(running, id),
          do: {started, state},
          else: {[id | started], place_and_start(id, spec, state)}
      end)

    managed = MapSet.union(MapSet.new(Map.keys(state.desired)), state.leaving)

    extra =
      for {id, {name, :stable}} <- registered,
          not Map.has_key?(wanted, id),
          not Map.has_key?(state.retiring, id),
          MapSet.member?(managed, name),
          do: id

    state = Enum.reduce(extra, state, &retire_replica/2)

    # A name has left for good once none of its replicas runs.
    leaving =
      MapSet.filter(state.leaving, fn name ->
        Enum.any?(registered, fn {id, {n, _role}} -> n == name and id not in extra end) or
          Enum.any?(Map.keys(state.retiring), &(agent_name(&1) == name))
      end)

    placed = Map.filter(state.placed, fn {id, _} -> Map.has_key?(wanted, id) end)
    report = %{started: Enum.sort(started), retired: Enum.sort(extra)}

    if started != [] or extra != [],
      do: Logger.info("manifest reconciled: #{inspect(report)}")

    {report, %{state | leaving: leaving, placed: placed}}
  end

  # The Wasm replicas of the desired state that run, by id: where their servers say (a
  # shared host, or one of its own: see "Blame").
  defp running_placements(state) do
    hosts = Server.hosts()

    for {_, %{wasm: wasm} = spec} <- state.desired,
        wasm != nil,
        id <- host_names(spec),
        {:ok, host} <- [Map.fetch(hosts, id)],
        into: %{},
        do: {id, host}
  end

  defp shared_host?(host, state), do: String.starts_with?(host, state.wasm_hosts <> "#")

  defp placed?(spec), do: Map.get(spec, :nodes) != nil

  # An agent without :nodes runs here (the manifest of this node lists it). A placed
  # replica runs here if it already does, or if it runs nowhere (or on a node that is
  # gone, which :global will forget in a moment) and its placement picks this node.
  defp runs_here?(id, spec, live) do
    if placed?(spec) do
      case Server.locate(id) do
        nil -> pick_node(id, spec, live) == node()
        pid when node(pid) == node() -> true
        pid -> node(pid) not in live and pick_node(id, spec, live) == node()
      end
    else
      true
    end
  end

  # The host a replica runs in: its own for a Python agent; for a Wasm agent, the one the
  # manifest placed it on (nil if another manifest did).
  defp host_of(id, %{wasm: nil}, _state), do: id
  defp host_of(id, _spec, state), do: Map.get(state.placed, id)

  defp place_and_start(id, %{wasm: nil} = spec, state) do
    start_host(id)
    # Another node started it meanwhile (see runs_here?/3): its host is not needed here.
    if start_agent(id, id, spec, state.quarantine[spec.name]) == :ignored,
      do: Symbiont.Host.stop(id)

    state
  end

  defp place_and_start(id, spec, state) do
    host = wasm_host(id, state)
    start_host(host)

    case start_agent(id, host, spec, state.quarantine[spec.name]) do
      :ignored -> state
      _ -> put_in(state.placed[id], host)
    end
  end

  # A shared Wasm host with room, off its siblings' hosts and off busy ones (see
  # "Placement"; Symbiont.Placement.pick/3).
  defp wasm_host(id, state) do
    name = agent_name(id)
    opts = [prefix: state.wasm_hosts, per_host: state.per_host] ++ state.placement

    case Symbiont.Placement.pick(name, state.placed, opts) do
      {:ok, host} ->
        host

      {:crowded, host} ->
        Logger.warning(
          "agent #{id} placed on host #{inspect(host)}: every shared Wasm host is busy or runs " <>
            "a replica of #{name}, and there are :max_wasm_hosts (#{state.placement[:max_wasm_hosts]}) of them"
        )

        host
    end
  end

  defp retire_replica(id, state) do
    name = agent_name(id)
    # The first replica takes the queue; a placed one may run on another node.
    heir =
      if id != name and Map.has_key?(state.desired, name),
        do: Server.whereis(name) || (placed?(state.desired[name]) && Server.locate(name)) || nil

    # A Python replica's host is its own, and so is that of a Wasm replica moved out of a
    # shared host (see "Blame"): it goes with it.
    own_host =
      case Map.fetch(state.placed, id) do
        :error -> id
        {:ok, host} -> if shared_host?(host, state), do: nil, else: host
      end

    task =
      Task.Supervisor.async_nolink(Symbiont.TaskSupervisor, fn ->
        result = Server.retire(id, heir)
        if own_host, do: Symbiont.Host.stop(own_host)

        reason = if heir, do: "scaled in", else: "removed from the manifest"
        Symbiont.Health.publish("retired", name, reason, %{"id" => id})

        result
      end)

    Logger.info("retiring agent #{id}#{if heir, do: " (its queue goes to #{name})", else: ""}")
    %{state | retiring: Map.put(state.retiring, id, task.ref)}
  end

  defp running_ids(name), do: Symbiont.Observation.ids(name, :stable)

  # When a Symbiont.Instance stops (its parent's shutdown, not a crash of this manifest,
  # whose restart finds its agents running), its agents stop, with their hosts: as the
  # node's would at the node's stop.
  @impl true
  def terminate(reason, state) do
    if owns_agents?(state) and shutdown?(reason) do
      hosts = Server.hosts()
      names = MapSet.union(MapSet.new(Map.keys(state.desired)), state.leaving)
      ids = for name <- names, id <- Symbiont.Observation.ids(name, :all), do: id

      for id <- ids,
          pid = Server.whereis(id),
          hosts[id] == nil,
          do: DynamicSupervisor.terminate_child(Symbiont.Agents, pid)

      for host <- Enum.uniq(for id <- ids, h = hosts[id], do: h), do: Symbiont.Host.stop(host)
    end

    :ok
  end

  defp owns_agents?(state), do: state.instance not in [nil, Symbiont]

  defp shutdown?(reason), do: reason == :shutdown or match?({:shutdown, _}, reason)

  defp start_host(host) do
    case Symbiont.Host.whereis(host) do
      nil -> start_child(Symbiont.Hosts, {Symbiont.Host, name: host}, "host #{inspect(host)}")
      _pid -> :ok
    end
  end

  defp start_agent(id, host, spec, quarantined \\ nil) do
    child = {Server, id: id, host: host, spec: spec, quarantined: quarantined}
    start_child(Symbiont.Agents, child, "agent #{inspect(id)} (host #{inspect(host)})")
  end

  defp start_child(sup, child, what) do
    case DynamicSupervisor.start_child(sup, child) do
      {:ok, _} -> :ok
      # A placed replica that another node runs (Symbiont.Agent.Server refused to start).
      :ignore -> :ignored
      {:error, {:already_started, _}} -> :ok
      {:error, reason} -> Logger.error("#{what} could not start: #{inspect(reason)}")
    end
  end
end

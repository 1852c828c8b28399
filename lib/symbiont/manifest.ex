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
  answer `{:error, %Symbiont.Error{reason: :cannot_start}}`, changing nothing, for one
  that cannot start.

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

  alias Symbiont.Manifest.{Desired, Reconciler}

  @doc """
  Validates a list of agent specs (see `Symbiont.Agent`): each one (`:invalid`), then
  that names are unique (`:conflict`). See `Symbiont.Manifest.Desired.validate/1`.

      iex> {:error, error} = Symbiont.Manifest.validate([[name: "a", python: "m.A"]])
      iex> error.reason
      :invalid
  """
  @spec validate(term) :: {:ok, [Symbiont.Agent.spec()]} | {:error, Symbiont.Error.t()}
  defdelegate validate(agents), to: Desired

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

  Errors (`Symbiont.Error`): `:invalid` for a bad spec, `:conflict` for a name already in
  the manifest (or run by another instance), `:cannot_start` for an agent whose code
  cannot run (`Symbiont.Agent.Probe`).
  """
  @spec spawn_agent(keyword | map, GenServer.server()) ::
          {:ok, String.t()} | {:error, Symbiont.Error.t()}
  def spawn_agent(spec, server \\ __MODULE__) do
    with {:ok, spec} <- Symbiont.Agent.validate_spec(spec),
         :ok <- not_declared(spec.name, server),
         :ok <- Symbiont.Agent.Probe.check(spec),
         do: GenServer.call(server, {:spawn, spec}, 30_000)
  end

  defp not_declared(name, server) do
    if agent(name, server),
      do: {:error, already_declared(name)},
      else: :ok
  end

  defp already_declared(name) do
    Symbiont.Error.new(:conflict, "agent #{inspect(name)} is already in the manifest", agent: name)
  end

  @doc """
  Sets how many replicas of `name` run, then starts or retires replicas to match.
  `n` must be a positive integer; the conductor keeps to the agent's `:min_replicas` and
  `:max_replicas`, a call by hand does not. Errors (`Symbiont.Error`): `:invalid` for a
  bad name or number, `:not_found` for an agent not in the manifest.

      iex> {:error, error} = Symbiont.Manifest.scale("billing", 0)
      iex> {error.reason, error.details}
      {:invalid, %{field: :replicas, value: 0}}
  """
  @spec scale(String.t(), pos_integer, GenServer.server()) :: :ok | {:error, Symbiont.Error.t()}
  def scale(name, n, server \\ __MODULE__)

  def scale(name, n, server) when is_binary(name) and is_integer(n) and n > 0,
    do: GenServer.call(server, {:scale, name, n}, 30_000)

  def scale(name, n, _server),
    do:
      {:error,
       Symbiont.Error.new(
         :invalid,
         "expected an agent name and a positive number of replicas, got: #{inspect(name)}, #{inspect(n)}",
         field: if(is_binary(name), do: :replicas, else: :name),
         value: if(is_binary(name), do: n, else: name)
       )}

  @doc """
  Removes agent `name` from the desired state and retires its replicas: the events still
  waiting go to the dead letters (reason `"retired"`), a `retired` health event is
  published. `{:error, %Symbiont.Error{reason: :not_found}}` for an agent not in the
  manifest.
  """
  @spec retire(String.t(), GenServer.server()) :: :ok | {:error, Symbiont.Error.t()}
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

  Errors (`Symbiont.Error`): `:not_found` (no config file) or `:failed` (it cannot be
  read), `:invalid` or `:conflict` for the specs (`validate/1`), `:cannot_start` for an
  agent whose code cannot run, `:conflict` for a new agent another instance runs.
  """
  @spec reload([keyword | map] | nil, GenServer.server()) ::
          {:ok, map} | {:error, Symbiont.Error.t()}
  def reload(agents \\ nil, server \\ __MODULE__) do
    with {:ok, agents} <- if(agents, do: {:ok, agents}, else: read_config()),
         {:ok, specs} <- validate(agents),
         :ok <- check_changed(specs, server),
         do: GenServer.call(server, {:reload, specs}, 60_000)
  end

  # The specs whose logic is not what runs now (new ones too) can start, or nothing does.
  defp check_changed(specs, server) do
    now = Map.new(agents(server), &{&1.name, Desired.logic(&1)})
    changed = Enum.reject(specs, &(Map.get(now, &1.name) == Desired.logic(&1)))

    case for {_name, {:error, %{message: m}}} <- Symbiont.Agent.Probe.check_all(changed), do: m do
      [] ->
        :ok

      messages ->
        message = Enum.join(Enum.sort(messages), "; ") <> "; nothing was changed"
        {:error, Symbiont.Error.new(:cannot_start, message)}
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
        e ->
          message = "could not read #{Path.relative_to_cwd(path)}: #{Exception.message(e)}"
          {:error, Symbiont.Error.new(:failed, message, file: path)}
      end
    else
      message = "no config file #{path}; give the agents to reload/1"
      {:error, Symbiont.Error.new(:not_found, message, file: path)}
    end
  end

  ## Plans (pure)

  ## Plans (pure: Symbiont.Manifest.Desired)

  @doc """
  Starts the hosts of `plan(specs, per_host)` under `Symbiont.Hosts` and their agents
  under `Symbiont.Agents`, once, without reconciling later; what cannot start is logged.
  """
  @spec start_all([Symbiont.Agent.spec()], pos_integer) :: :ok
  defdelegate start_all(specs, per_host), to: Reconciler

  @doc """
  Where each replica runs: a list of `{host, [{agent_id, spec}]}` (see
  `Symbiont.Manifest.Desired.plan/2`).
  """
  @spec plan([Symbiont.Agent.spec()], pos_integer) :: [{String.t(), [{String.t(), map}]}]
  defdelegate plan(specs, per_host), to: Desired

  @doc """
  The node that should start replica `id` of a placed agent (`spec.nodes`), given the
  live nodes, or `nil` (see `Symbiont.Manifest.Desired.pick_node/3`).
  """
  @spec pick_node(String.t(), %{:nodes => [node], optional(atom) => any}, [node]) :: node | nil
  defdelegate pick_node(id, spec, live), to: Desired

  @doc """
  The ids of an agent's replicas (and the names of their hosts, for a Python agent):
  `"name"`, `"name#2"`... (see `Symbiont.Manifest.Desired.host_names/1`).
  """
  @spec host_names(%{:name => String.t(), :replicas => pos_integer, optional(atom) => any}) ::
          [String.t()]
  defdelegate host_names(spec), to: Desired

  @doc "The agent name of a replica id: `\"billing#2\"` → `\"billing\"`."
  @spec agent_name(String.t()) :: String.t()
  defdelegate agent_name(id), to: Desired

  ## GenServer

  @impl true
  def init(opts) do
    specs = Keyword.get(opts, :agents, [])

    # An instance's manifest (Symbiont.Instance) runs names no other one runs.
    with {:claim, :ok} <-
           {:claim, Symbiont.Instance.claim(opts[:instance], Enum.map(specs, & &1.name))},
         {:ok, quarantine} <-
           if(Keyword.get(opts, :check, false),
             do: Reconciler.check(specs, opts),
             else: {:ok, %{}}
           ) do
      start(specs, quarantine, opts)
    else
      {:claim, {:error, error}} ->
        {:stop, {:agent_claimed, Exception.message(error)}}

      {:error, error} ->
        Symbiont.Instance.unclaim(opts[:instance], Enum.map(specs, & &1.name))
        {:stop, {:agent_cannot_start, Exception.message(error)}}
    end
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
    Reconciler.join_cluster(specs)
    # After a restart of the manifest its Wasm replicas still run: where, their servers say.
    state = %{state | placed: Reconciler.running_placements(state)}
    {_report, state} = Reconciler.reconcile(state)
    schedule(state)
    {:ok, %{state | quarantine: %{}}}
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

      Reconciler.join_cluster([spec])
      {_report, state} = Reconciler.reconcile(state)
      {:reply, {:ok, spec.name}, state}
    else
      true -> {:reply, {:error, already_declared(spec.name)}, state}
      {:error, error} -> {:reply, {:error, error}, state}
    end
  end

  def handle_call({:scale, name, n}, _from, state) do
    case state.desired do
      %{^name => spec} ->
        {_report, state} =
          Reconciler.reconcile(put_in(state.desired[name], %{spec | replicas: n}))

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
      {_report, state} = Reconciler.reconcile(state)
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
        {report, state} = Reconciler.reconcile(state)
        Logger.info("manifest reloaded: #{inspect(changes)}; #{inspect(report)}")
        {:reply, {:ok, changes}, state}

      {:error, error} ->
        {:reply, {:error, %{error | message: error.message <> "; nothing was changed"}}, state}
    end
  end

  def handle_call(:reconcile, _from, state) do
    {report, state} = Reconciler.reconcile(state)
    {:reply, report, state}
  end

  @impl true
  def handle_info(:tick, state) do
    {_report, state} = Reconciler.reconcile(state)
    schedule(state)
    {:noreply, state}
  end

  # A node lost: its placed replicas start on the survivors now, not at the next tick.
  def handle_info({:nodedown, _node}, state) do
    if Enum.any?(Map.values(state.desired), &Desired.placed?/1) do
      {_report, state} = Reconciler.reconcile(state)
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

  defp not_in_manifest(name, state),
    do: Symbiont.Error.new(:not_found, Desired.not_in_manifest(name, state.desired), agent: name)

  # The desired state after a reload, with the replicas whose logic changed upgraded.
  defp apply_reload(state, new) do
    diff = Desired.reload_diff(state.desired, state.loaded, new)
    Reconciler.upgrade(diff.upgraded, new)

    state = %{
      state
      | desired: diff.desired,
        loaded: new,
        leaving: MapSet.union(state.leaving, MapSet.new(diff.retired))
    }

    {state, Map.take(diff, [:started, :retired, :rescaled, :upgraded])}
  end

  # When a Symbiont.Instance stops (its parent's shutdown, not a crash of this manifest,
  # whose restart finds its agents running), its agents stop, with their hosts: as the
  # node's would at the node's stop.
  @impl true
  def terminate(reason, state) do
    if owns_agents?(state) and shutdown?(reason), do: Reconciler.stop_all(state)
    :ok
  end

  defp owns_agents?(state), do: state.instance not in [nil, Symbiont]

  defp shutdown?(reason), do: reason == :shutdown or match?({:shutdown, _}, reason)
end

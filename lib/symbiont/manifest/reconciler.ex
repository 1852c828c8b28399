defmodule Symbiont.Manifest.Reconciler do
  @moduledoc """
  What the manifest does to the running system, as functions of its state (the map
  `Symbiont.Manifest` holds: `desired`, `leaving`, `placed`, `retiring`, `per_host`,
  `wasm_hosts`, `placement`, `quarantine`, `instance`): checking the agents before the
  first start, joining the cluster of placed agents, starting the replicas that are
  missing (with their hosts, Wasm replicas placed by `Symbiont.Placement`), retiring
  those no longer wanted, upgrading replicas in place on a reload, and stopping an
  instance's agents. The decisions that need no process are `Symbiont.Manifest.Desired`'s;
  what each does, in words, is in `Symbiont.Manifest`'s moduledoc.

  Called from the manifest's process only (a retirement runs in a task under
  `Symbiont.TaskSupervisor`, whose reply comes back to that process).
  """

  require Logger

  alias Symbiont.Agent.Server
  alias Symbiont.Manifest.Desired

  import Desired, only: [agent_name: 1, host_names: 1, pick_node: 3, placed?: 1]

  @doc """
  Starts the hosts of `Symbiont.Manifest.plan(specs, per_host)` under `Symbiont.Hosts`
  and their agents under `Symbiont.Agents`, once, without reconciling later; what cannot
  start is logged.
  """
  @spec start_all([Symbiont.Agent.spec()], pos_integer) :: :ok
  def start_all(specs, per_host) do
    for {host, agents} <- Desired.plan(specs, per_host) do
      start_host(host)
      for {id, spec} <- agents, do: start_agent(id, host, spec)
    end

    :ok
  end

  @doc """
  Checks `specs` before the manifest starts them ("Checked before it serves" in
  `Symbiont.Manifest`): each agent that cannot start is logged with its traceback; a
  required one stops the first start of this manifest
  (`{:error, %Symbiont.Error{reason: :cannot_start}}`, with the agents' names in
  `details`), any other is quarantined (`{:ok, name => why}`). `opts` are the
  manifest's (`:name`, `:boot`).
  """
  @spec check([Symbiont.Agent.spec()], keyword) :: {:ok, map} | {:error, Symbiont.Error.t()}
  def check(specs, opts) do
    first? = first_start?(Keyword.get(opts, :name, Symbiont.Manifest), opts[:boot])
    by_name = Map.new(specs, &{&1.name, &1})
    failures = for {name, {:error, f}} <- Symbiont.Agent.Probe.check_all(specs), do: {name, f}
    refused = for {name, f} <- failures, first? and by_name[name].required, do: {name, f.message}

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
      else: {:error, cannot_start(refused)}
  end

  defp cannot_start(refused) do
    {names, messages} = refused |> Enum.sort_by(&elem(&1, 1)) |> Enum.unzip()
    Symbiont.Error.new(:cannot_start, Enum.join(messages, "; "), agents: Enum.sort(names))
  end

  # Whether this is the first start of manifest `name` in its `boot` (`:boot`), by
  # default under its supervisor (a restart has the same parent).
  defp first_start?(name, boot) do
    boot = boot || with({:parent, p} <- Process.info(self(), :parent), do: p)
    key = {Symbiont.Manifest, :started, name}
    first? = :persistent_term.get(key, nil) != boot
    if first?, do: :persistent_term.put(key, boot)
    first?
  end

  @doc """
  Connects to the nodes that placed agents of `specs` may run on, then waits (a few
  seconds at most) until `:global` knows what they run: see "Placement across nodes" in
  `Symbiont.Manifest`. A node that does not answer is simply not live.
  """
  @spec join_cluster([Symbiont.Agent.spec()]) :: :ok
  def join_cluster(specs) do
    nodes = for %{nodes: [_ | _] = nodes} <- specs, n <- nodes, n != node(), uniq: true, do: n

    if nodes != [] and Node.alive?() do
      for n <- nodes, n not in Node.list(), do: :net_kernel.connect_node(n)
      task = Task.async(fn -> :global.sync() end)
      Task.yield(task, 5_000) || Task.shutdown(task, :brutal_kill)
    end

    :ok
  end

  @doc """
  Upgrades the running replicas of the agents `names` in place to their specs in `new`
  (name => spec), logging those that could not be.
  """
  @spec upgrade([String.t()], map) :: :ok
  def upgrade(names, new) do
    for name <- names, id <- running_ids(name) do
      case Server.upgrade(id, new[name]) do
        {:ok, _} -> :ok
        error -> Logger.error("agent #{id} could not be upgraded: #{inspect(error)}")
      end
    end

    :ok
  end

  @doc """
  Compares what should run with what runs and repairs the difference ("Reconciling" in
  `Symbiont.Manifest`): returns the ids started and retired, and the state.
  """
  @spec reconcile(map) :: {%{started: [String.t()], retired: [String.t()]}, map}
  def reconcile(state) do
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

    extra = Desired.extra(registered, wanted, state.retiring, managed)

    state = Enum.reduce(extra, state, &retire_replica/2)

    # A name has left for good once none of its replicas runs.
    leaving = Desired.still_leaving(state.leaving, registered, extra, state.retiring)

    placed = Map.filter(state.placed, fn {id, _} -> Map.has_key?(wanted, id) end)
    report = %{started: Enum.sort(started), retired: Enum.sort(extra)}

    if started != [] or extra != [],
      do: Logger.info("manifest reconciled: #{inspect(report)}")

    {report, %{state | leaving: leaving, placed: placed}}
  end

  @doc """
  The Wasm replicas of the desired state that run, by id: where their servers say (a
  shared host, or one of its own: see "Blame" in `Symbiont.Manifest`).
  """
  @spec running_placements(map) :: %{String.t() => String.t()}
  def running_placements(state) do
    hosts = Server.hosts()

    for {_, %{wasm: wasm} = spec} <- state.desired,
        wasm != nil,
        id <- host_names(spec),
        {:ok, host} <- [Map.fetch(hosts, id)],
        into: %{},
        do: {id, host}
  end

  defp shared_host?(host, state), do: String.starts_with?(host, state.wasm_hosts <> "#")

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

  @doc """
  Stops the agents of the manifest (those of the desired state and those leaving), with
  their hosts: for an instance's manifest at its parent's shutdown.
  """
  @spec stop_all(map) :: :ok
  def stop_all(state) do
    hosts = Server.hosts()
    names = MapSet.union(MapSet.new(Map.keys(state.desired)), state.leaving)
    ids = for name <- names, id <- Symbiont.Observation.ids(name, :all), do: id

    for id <- ids,
        pid = Server.whereis(id),
        hosts[id] == nil,
        do: DynamicSupervisor.terminate_child(Symbiont.Agents, pid)

    for host <- Enum.uniq(for id <- ids, h = hosts[id], do: h), do: Symbiont.Host.stop(host)

    :ok
  end

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

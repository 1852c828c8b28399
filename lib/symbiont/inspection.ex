defmodule Symbiont.Inspection do
  @moduledoc """
  What the running system shows of itself, behind the `Symbiont` helpers that read and
  show it in iex: `status/0`, `await_ready/1`, `hosts/0`, `agents/1`, `agent/1`, `topology/0`,
  `peek/2` and `call/3`, and how an agent's replicas are found by name or id. Their
  documentation is on `Symbiont` (`h Symbiont.status`), which delegates here; what they
  read is `Symbiont.Observation`, what they print is `Symbiont.Console`'s.
  """

  alias Symbiont.{Host, Observation, Pins}

  @doc "`Symbiont.status/0`: see its documentation there."
  @spec status() :: :ok
  def status do
    started!()
    nodes = Enum.map([node() | Node.list()], &Atom.to_string/1)

    hosts = hosts()

    # What was done: the conductor's refused and failed proposals stay in remediations/1.
    done = for r <- Symbiont.remediations(50), Map.get(r, "result", "applied") == "applied", do: r

    data = %{
      nodes: nodes,
      hosts: hosts,
      agents: agents(hosts),
      pins: Pins.all(),
      remediations: Enum.take(done, 5)
    }

    IO.puts(Symbiont.Console.status(data))
  end

  defp started! do
    unless started?(),
      do:
        raise(
          RuntimeError,
          "Symbiont is still starting: its manifest has not started all its agents yet; ask again in a moment"
        )
  end

  defp not_ready(why, ids),
    do: {:error, Symbiont.Error.new(:unavailable, "not ready: " <> why, agents: ids)}

  defp started?, do: List.keymember?(Application.started_applications(), :symbiont, 0)

  @doc "`Symbiont.await_ready/1`: see its documentation there."
  @spec await_ready(non_neg_integer) :: :ok | {:error, Symbiont.Error.t()}
  def await_ready(timeout \\ 30_000) when is_integer(timeout) and timeout >= 0,
    do: await_ready_until(System.monotonic_time(:millisecond) + timeout)

  defp await_ready_until(deadline) do
    waiting =
      if started?(),
        do: for(r <- Observation.replicas(), r.status != :ready, do: r),
        else: :starting

    quarantined = if is_list(waiting), do: Enum.filter(waiting, & &1.quarantined), else: []
    late? = System.monotonic_time(:millisecond) >= deadline

    cond do
      waiting == [] ->
        :ok

      quarantined != [] ->
        not_ready(
          Enum.map_join(quarantined, "; ", &"#{&1.id} is quarantined (#{&1.quarantined})"),
          Enum.map(quarantined, & &1.id)
        )

      late? and waiting == :starting ->
        not_ready("the application is still starting", [])

      late? ->
        not_ready(
          Enum.map_join(waiting, ", ", &"#{&1.id} is #{&1.status}"),
          Enum.map(waiting, & &1.id)
        )

      true ->
        # A bounded poll: an agent becomes ready within its host's start, tens of ms.
        Process.sleep(50)
        await_ready_until(deadline)
    end
  end

  @doc "`Symbiont.hosts/0`: see its documentation there."
  @spec hosts() :: [map]
  def hosts do
    views = Map.new(Observation.replicas(), &{&1.id, &1})

    Symbiont.Hosts
    |> DynamicSupervisor.which_children()
    |> Enum.flat_map(fn {_, pid, _, _} ->
      case is_pid(pid) && Host.own_info(pid) do
        {:ok, info} -> [%{info | agents: for(id <- info.agents, v = views[id], do: v)}]
        _ -> []
      end
    end)
    |> Enum.sort_by(& &1.name)
  end

  @doc """
  `Symbiont.agents/0` with the hosts already at hand (`hosts/0`): from the observation,
  not the hosts' slots (a quarantined agent has left its host's slot).
  """
  @spec agents([map]) :: [map]
  def agents(hosts) do
    os_pids = Map.new(hosts, &{&1.name, &1.os_pid})

    Observation.replicas()
    |> Enum.map(&Map.put(&1, :os_pid, Map.get(os_pids, &1.host)))
    |> Enum.sort_by(&{&1.host, &1.id})
  end

  @doc "`Symbiont.topology/0`: see its documentation there."
  @spec topology() :: Symbiont.Topology.t()
  def topology do
    [node() | Node.list()]
    |> :erpc.multicall(Symbiont.Mesh, :node_stats, [Symbiont.Mesh], 5_000)
    # Nodes that do not run Symbiont (a remote shell, say) answer with an error.
    |> Enum.flat_map(fn
      {:ok, stats} -> [stats]
      _ -> []
    end)
    |> Symbiont.Topology.build()
  end

  @doc "`Symbiont.agent/1`: see its documentation there."
  @spec agent(String.t()) :: {:ok, map} | {:error, Symbiont.Error.t()}
  def agent(name) when is_binary(name) do
    {view, id} =
      case Observation.agent(name) do
        %{ids: [first | _]} = agent -> {agent, first}
        nil -> {nil, name}
      end

    with {:ok, info} <- Symbiont.Agent.Server.info(id),
         %{} = replica <- Observation.replica(id) do
      os_pid =
        case Host.own_info(info.host) do
          {:ok, host} -> host.os_pid
          _ -> nil
        end

      # Asked by name: the agent's view over its replicas; by replica id: that replica's.
      view =
        view ||
          Map.merge(replica, %{
            ids: [replica.id],
            replicas: [replica],
            canary: nil,
            pins: Pins.of(replica.name)
          })

      {:ok,
       info
       |> Map.merge(replica)
       |> Map.merge(view)
       |> Map.merge(%{
         os_pid: os_pid,
         health_history: Symbiont.Health.History.of(info.name)
       })}
    else
      _ -> {:error, no_agent(name)}
    end
  end

  @doc "`Symbiont.peek/2`: see its documentation there."
  @spec peek(String.t(), keyword) :: non_neg_integer
  def peek(topic, opts \\ []) when is_binary(topic) and is_list(opts) do
    ms = Keyword.get(opts, :ms, 5_000)
    count = Keyword.get(opts, :count, :infinity)

    unless is_integer(ms) and ms >= 0,
      do:
        raise(
          ArgumentError,
          "expected :ms to be a non-negative integer (milliseconds), got: #{inspect(ms)}"
        )

    unless count == :infinity or (is_integer(count) and count > 0),
      do: raise(ArgumentError, "expected :count to be a positive integer, got: #{inspect(count)}")

    :ok = Symbiont.subscribe(topic)

    try do
      peek_loop(topic, System.monotonic_time(:millisecond) + ms, count, 0)
    after
      Symbiont.unsubscribe(topic)
      flush_topic(topic)
    end
  end

  defp peek_loop(_topic, _deadline, count, n) when n == count, do: n

  defp peek_loop(topic, deadline, count, n) do
    wait = max(deadline - System.monotonic_time(:millisecond), 0)

    receive do
      %Symbiont.Event{topic: ^topic} = event ->
        IO.puts(Symbiont.Console.event_line(event))
        peek_loop(topic, deadline, count, n + 1)
    after
      wait -> n
    end
  end

  defp flush_topic(topic) do
    receive do
      %Symbiont.Event{topic: ^topic} -> flush_topic(topic)
    after
      0 -> :ok
    end
  end

  @doc "`Symbiont.call/3`: see its documentation there."
  @spec call(String.t(), String.t(), list) ::
          {:ok, term} | {:error, Symbiont.Error.t() | Symbiont.Python.Error.t() | atom}
  def call(host, function, args \\ [])
      when is_binary(host) and is_binary(function) and is_list(args) do
    case String.split(function, ".") do
      [_] ->
        {:error,
         Symbiont.Error.new(
           :invalid,
           "expected function to be \"module.function\", got: #{inspect(function)}",
           field: :function,
           value: function
         )}

      parts ->
        with {:ok, host} <- host_of(host),
             do:
               Symbiont.Python.call(
                 host,
                 Enum.join(Enum.drop(parts, -1), "."),
                 List.last(parts),
                 args
               )
    end
  end

  defp host_of(name) do
    cond do
      Host.whereis(name) != nil ->
        {:ok, name}

      match?([_ | _], replicas(name)) ->
        {:ok, hd(replicas(name)).host}

      true ->
        hosts = hosts() |> Enum.map(& &1.name) |> Enum.take(20)

        {:error,
         Symbiont.Error.new(
           :not_found,
           "no host or agent named #{inspect(name)} runs on this node; hosts: #{inspect(hosts)}",
           host: name
         )}
    end
  end

  defp agent_ids, do: Symbiont.Agent.Server.ids() |> Enum.take(20)

  @doc false
  # A :not_found error: "no agent ... runs on this node", and the agents that do.
  @spec no_agent(String.t()) :: Symbiont.Error.t()
  def no_agent(name) do
    Symbiont.Error.new(
      :not_found,
      "no agent #{inspect(name)} runs on this node; agents: #{inspect(agent_ids())}",
      agent: name
    )
  end

  # The stable replicas of agent `name` (the registry of roles), or else the one replica
  # whose id it is.
  @doc false
  @spec replicas(String.t()) :: [map]
  def replicas(name) do
    ids =
      case Observation.ids(name, :stable) do
        [] -> if Observation.role(name), do: [name], else: []
        ids -> ids
      end

    for id <- ids, {:ok, info} <- [Symbiont.Agent.Server.info(id)], do: info
  end
end

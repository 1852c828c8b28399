defmodule Symbiont.Mesh.Server do
  @moduledoc false
  # One per mesh and node. Owns the mesh's tables and keeps them true to the cluster:
  #
  #   * the group index: {topic, group} for every queue group with members anywhere in
  #     the cluster, fed by :pg.monitor_scope/1 (joins and leaves on every node), so that
  #     a broadcast finds the groups of a topic with one ETS lookup;
  #   * the round-robin counters of the groups;
  #   * the event counters behind Symbiont.topology/0;
  #   * the mesh's meta in :persistent_term (read on every call, written once).
  #
  # It also watches nodes: a node that goes away is reported on `symbiont.health`.

  use GenServer

  require Logger

  @spec start_link(keyword) :: GenServer.on_start()
  def start_link(opts), do: GenServer.start_link(__MODULE__, opts)

  @doc false
  def child_spec(opts), do: %{id: __MODULE__, start: {__MODULE__, :start_link, [opts]}}

  @doc "Records a group the caller has just joined (remote joins arrive through :pg)."
  @spec index_group(map, String.t(), String.t()) :: :ok
  def index_group(%{index: index} = meta, topic, group) do
    true = :ets.insert(index, {topic, group})

    # The first group of a mesh flips `any_groups` in its meta, once in its lifetime (a
    # :persistent_term write is costly, a read nearly free).
    unless meta.any_groups do
      key = {Symbiont.Mesh, meta.mesh}
      current = :persistent_term.get(key, meta)
      unless current.any_groups, do: :persistent_term.put(key, %{current | any_groups: true})
    end

    :ok
  end

  @doc "The queue groups of `topic` known on this node."
  @spec groups(map, String.t()) :: [String.t()]
  # A mesh that has never had a group (on any node) skips the lookup.
  def groups(%{any_groups: false}, _topic), do: []
  def groups(%{index: index}, topic), do: for({_, group} <- :ets.lookup(index, topic), do: group)

  @doc "The next round-robin position in `0..n-1` for `group` of `topic`."
  @spec next(map, String.t(), String.t(), pos_integer) :: non_neg_integer
  def next(%{rr: rr}, topic, group, n) do
    key = {topic, group}
    rem(:ets.update_counter(rr, key, {2, 1, 1_000_000_000, 0}, {key, -1}), n)
  end

  @doc "Adds one to the counter `key` (see `Symbiont.Mesh.counters/1`)."
  @spec count(map, term) :: :ok
  def count(%{stats: stats}, key) do
    :ets.update_counter(stats, key, 1, {key, 0})
    :ok
  end

  @impl true
  def init(opts) do
    Process.flag(:trap_exit, true)
    mesh = Keyword.fetch!(opts, :mesh)
    scope = Symbiont.Mesh.scope(mesh)

    meta = %{
      mesh: mesh,
      adapter: Keyword.fetch!(opts, :adapter),
      adapter_name: Keyword.fetch!(opts, :adapter_name),
      scope: scope,
      groups: :"#{mesh}.Groups",
      index: :ets.new(:symbiont_mesh_index, [:bag, :public, read_concurrency: true]),
      rr: :ets.new(:symbiont_mesh_rr, [:set, :public, write_concurrency: true]),
      stats: :ets.new(:symbiont_mesh_stats, [:set, :public, write_concurrency: true]),
      any_groups: false
    }

    {ref, current} = :pg.monitor_scope(scope)

    :ok = :net_kernel.monitor_nodes(true)
    :persistent_term.put({Symbiont.Mesh, mesh}, meta)

    # Groups that already have members elsewhere in the cluster.
    for {{topic, group}, [_ | _]} <- current,
        is_binary(topic),
        do: index_group(meta, topic, group)

    {:ok, %{meta: meta, ref: ref}}
  end

  @impl true
  def handle_info({ref, :join, {topic, group}, _pids}, %{ref: ref} = state)
      when is_binary(topic) do
    index_group(state.meta, topic, group)
    {:noreply, state}
  end

  def handle_info({ref, :leave, {topic, group} = key, _pids}, %{ref: ref} = state)
      when is_binary(topic) do
    if :pg.get_members(state.meta.scope, key) == [] do
      :ets.delete_object(state.meta.index, {topic, group})
      :ets.delete(state.meta.rr, key)
    end

    {:noreply, state}
  end

  # :pg drops a lost node's members on its own, a moment later: the health event waits
  # for that (checking every 10 ms, at most a second) so that what it says is true.
  def handle_info({:nodedown, node}, state), do: node_gone(node, 100, state)

  def handle_info({:node_gone, node, tries}, state), do: node_gone(node, tries, state)

  def handle_info(_other, state), do: {:noreply, state}

  defp node_gone(node, tries, state) do
    if tries > 0 and members_on?(state.meta, node) do
      Process.send_after(self(), {:node_gone, node, tries - 1}, 10)
    else
      reason = "node #{node} is down; its subscriptions were dropped"
      Logger.warning("mesh #{inspect(state.meta.mesh)}: #{reason}")
      event = Symbiont.Health.event("failing", nil, reason, %{}, node)
      Symbiont.Mesh.local_broadcast(state.meta.mesh, Symbiont.Health.topic(), event)
    end

    {:noreply, state}
  end

  defp members_on?(meta, node) do
    meta.index
    |> :ets.tab2list()
    |> Enum.any?(fn {topic, group} ->
      Enum.any?(:pg.get_members(meta.scope, {topic, group}), &(node(&1) == node))
    end)
  end

  @impl true
  def terminate(_reason, state) do
    :persistent_term.erase({Symbiont.Mesh, state.meta.mesh})
    :ok
  end
end

defmodule Symbiont.Mesh.Server do
  @moduledoc false
  # One per mesh and node. Owns the mesh's tables and keeps them true to the cluster:
  #
  #   * the group index: {topic, group} for every queue group with members anywhere in
  #     the cluster, fed by :pg.monitor_scope/1 (joins and leaves on every node), so that
  #     a broadcast finds the groups of a topic with one ETS lookup;
  #   * the round-robin counters of the groups;
  #   * the event counters behind Symbiont.topology/0, at most `max_edges` of them: past
  #     that, the least recently counted go (see count/2);
  #   * the mesh's meta in :persistent_term (read on every call, written once).
  #
  # It also watches nodes: a node that goes away is reported on `symbiont.health`.

  use GenServer

  import Bitwise, only: [<<<: 2]

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

  # The slots of the mesh's `sizes` atomics: the rows of the stats table, whether an
  # eviction is on its way to the server, and what evictions took away (rows, and the
  # events they counted).
  @rows 1
  @evicting 2
  @evicted_edges 3
  @evicted_events 4
  # Above every time of use: see count/2.
  @never 1 <<< 60

  @doc """
  Adds one to the counter `key` (see `Symbiont.Mesh.node_stats/1`) and marks it as used
  now. A new counter past the mesh's `max_edges` asks the server to evict the least
  recently used ones (down to 90% of `max_edges`); past twice `max_edges` (the server
  has not caught up yet) the new counter goes again at once, so that the table never
  holds more than that.
  """
  @spec count(map, term) :: :ok
  def count(%{stats: stats} = meta, key) do
    # The order of use: strictly increasing, so that two uses never tie.
    now = :erlang.unique_integer([:monotonic])

    # One write: the count, and the time of use (any value minus one is below @never,
    # so the third element becomes `now`).
    case :ets.update_counter(stats, key, [{2, 1}, {3, -1, @never, now}], {key, 0, now}) do
      [1, _] -> added(meta, key)
      _ -> :ok
    end
  end

  defp added(%{sizes: sizes, max_edges: max} = meta, key) do
    rows = :atomics.add_get(sizes, @rows, 1)

    cond do
      rows <= max ->
        :ok

      rows > 2 * max ->
        evict(meta, key)
        :ok

      :atomics.compare_exchange(sizes, @evicting, 0, 1) == :ok ->
        send(meta.server, :evict)
        :ok

      true ->
        :ok
    end
  end

  @doc "How many counters evictions took away, and the events they had counted."
  @spec evicted(map) :: %{edges: non_neg_integer, events: non_neg_integer}
  def evicted(%{sizes: sizes}),
    do: %{
      edges: :atomics.get(sizes, @evicted_edges),
      events: :atomics.get(sizes, @evicted_events)
    }

  defp evict(%{stats: stats, sizes: sizes}, key) do
    case :ets.take(stats, key) do
      [{_key, count, _at}] ->
        :atomics.sub(sizes, @rows, 1)
        :atomics.add(sizes, @evicted_edges, 1)
        :atomics.add(sizes, @evicted_events, count)

      [] ->
        :ok
    end
  end

  # The least recently used counters go, down to 90% of max_edges.
  defp evict_lru(%{stats: stats, sizes: sizes, max_edges: max} = meta) do
    rows = :ets.select(stats, [{{:"$1", :_, :"$2"}, [], [{{:"$2", :"$1"}}]}])
    excess = length(rows) - (max - div(max, 10))

    if excess > 0 do
      rows |> Enum.sort() |> Enum.take(excess) |> Enum.each(fn {_at, key} -> evict(meta, key) end)
    end

    :atomics.put(sizes, @evicting, 0)

    # Publishers that added rows meanwhile saw the flag up and left it to this pass.
    if :atomics.get(sizes, @rows) > max and
         :atomics.compare_exchange(sizes, @evicting, 0, 1) == :ok,
       do: send(self(), :evict)

    :ok
  end

  @impl true
  def init(opts) do
    Process.flag(:trap_exit, true)
    mesh = Keyword.fetch!(opts, :mesh)
    max_edges = Keyword.fetch!(opts, :max_edges)
    scope = Symbiont.Mesh.scope(mesh)

    meta = %{
      mesh: mesh,
      adapter: Keyword.fetch!(opts, :adapter),
      adapter_name: Keyword.fetch!(opts, :adapter_name),
      scope: scope,
      groups: :"#{mesh}.Groups",
      index: :ets.new(:symbiont_mesh_index, [:bag, :public, read_concurrency: true]),
      rr: :ets.new(:symbiont_mesh_rr, [:set, :public, write_concurrency: true]),
      # {key, count, when last used}: see count/2.
      stats: :ets.new(:symbiont_mesh_stats, [:set, :public, write_concurrency: true]),
      sizes: :atomics.new(4, signed: true),
      max_edges: max_edges,
      server: self(),
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

  def handle_info(:evict, state) do
    evict_lru(state.meta)
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

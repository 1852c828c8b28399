defmodule Symbiont.Mesh do
  @moduledoc """
  The event mesh: Phoenix.PubSub's API and semantics, plus queue groups, across every
  node of the cluster.

  Start one in a supervision tree (Symbiont starts its own, named `Symbiont.Mesh`):

      children = [{Symbiont.Mesh, name: MyApp.Mesh}]

  then subscribe and broadcast:

      iex> {:ok, _} = Supervisor.start_link([{Symbiont.Mesh, name: :doc_mesh}], strategy: :one_for_one)
      iex> Symbiont.Mesh.subscribe(:doc_mesh, "user:123")
      :ok
      iex> Symbiont.Mesh.broadcast(:doc_mesh, "user:123", {:user_update, %{id: 123}})
      :ok
      iex> receive do: (msg -> msg)
      {:user_update, %{id: 123}}

  ## Coming from Phoenix.PubSub

  Code written against Phoenix.PubSub works after an alias change
  (`alias Symbiont.Mesh, as: PubSub`):

  | Phoenix.PubSub | Symbiont.Mesh |
  |---|---|
  | `{Phoenix.PubSub, name: n}` | `{Symbiont.Mesh, name: n}` (`adapter:` picks the backend) |
  | `subscribe(n, topic, metadata: m)` | the same, and `group: "g"` joins a queue group |
  | `unsubscribe(n, topic)` | the same (also leaves the topic's groups) |
  | `broadcast/4`, `broadcast!/4` | the same |
  | `broadcast_from/5`, `broadcast_from!/5` | the same |
  | `local_broadcast/4`, `local_broadcast_from/5` | the same |
  | `direct_broadcast/5`, `direct_broadcast!/5` | the same |
  | `node_name/1` | the same |
  | a dispatcher module with `dispatch/3` | the same; `Symbiont.Mesh.dispatch/3` is the default |

  ## Queue groups

  `subscribe(mesh, topic, group: "billing")` makes the caller a member of the queue group
  `"billing"` of `topic`. Each message reaches every plain subscriber and exactly **one**
  member of each group, chosen **round robin** among the group's members on every node
  (for `broadcast`), on this node (`local_broadcast`) or on the target node
  (`direct_broadcast`); `broadcast_from` never picks the sender. Replicas of an agent
  form a group named after the agent, which is how an agent scales out. Group members
  get the message itself (custom dispatchers apply to plain subscribers). Membership
  lives in a `:pg` scope of the mesh, so it spans the cluster and a member on a node that
  goes away is dropped at once.

  ## Clusters

  Nodes connected by Erlang distribution that each run a mesh of the same name form one
  mesh. A broadcast crosses the network once per node that has plain subscribers (the
  adapter forwards it) plus once per group member picked on another node. When a node
  goes away, its subscriptions are dropped and a `failing` health event naming the node
  is published on `symbiont.health` on each surviving node.

  As with Phoenix.PubSub, a subscription reaches the other nodes asynchronously: a
  message broadcast on another node right after `subscribe/3` returns may miss it.
  `members/3` on the publishing node tells when it has arrived.

  ## Adapters

  See `Symbiont.Mesh.Adapter`. `Symbiont.Mesh.PG` is the default;
  `Symbiont.Mesh.PhoenixPubSub` runs the mesh on a real Phoenix.PubSub when it is compiled
  in.
  """

  alias Symbiont.Mesh.{Admission, Server}

  @type t :: atom
  @type topic :: String.t()
  @type message :: term
  @type dispatcher :: module
  @type node_name :: atom | binary

  @max_edges 10_000

  defmodule BroadcastError do
    @moduledoc "Raised by the `!` broadcast functions."
    defexception [:message]
  end

  @doc """
  A child spec for a mesh. Options:

    * `:name` (required) - the atom naming the mesh.
    * `:adapter` - a `Symbiont.Mesh.Adapter`. Default: `Symbiont.Mesh.PG`.
    * `:max_edges` - how many event counters of `Symbiont.topology/0` (one per publisher
      and topic, one per subscriber and topic) this node keeps; past it, the least
      recently used go, and are counted (`node_stats/1`'s `evicted`). Default: the
      `:max_topology_edges` application env, else #{@max_edges}.
    * other options go to the adapter (`Symbiont.Mesh.PG` needs none).
  """
  @spec child_spec(keyword) :: Supervisor.child_spec()
  def child_spec(opts) when is_list(opts) do
    mesh =
      Keyword.get(opts, :name) || raise ArgumentError, "Symbiont.Mesh needs a :name (an atom)"

    unless is_atom(mesh),
      do:
        raise(
          ArgumentError,
          "the :name of a Symbiont.Mesh must be an atom, got: #{inspect(mesh)}"
        )

    adapter = Keyword.get(opts, :adapter, Symbiont.Mesh.PG)

    unless Code.ensure_loaded?(adapter) and function_exported?(adapter, :broadcast, 5) do
      raise ArgumentError,
            "the :adapter of a Symbiont.Mesh must be a module implementing Symbiont.Mesh.Adapter, " <>
              "got: #{inspect(adapter)}"
    end

    max_edges =
      Keyword.get_lazy(opts, :max_edges, fn ->
        Symbiont.Config.get(:max_topology_edges)
      end)

    unless is_integer(max_edges) and max_edges > 0,
      do:
        raise(
          ArgumentError,
          "the :max_edges of a Symbiont.Mesh (config :symbiont, :max_topology_edges) must be " <>
            "a positive integer, got: #{inspect(max_edges)}"
        )

    adapter_name = Module.concat(mesh, "Adapter")
    adapter_opts = Keyword.merge(opts, name: mesh, adapter_name: adapter_name)

    children = [
      %{id: :pg, start: {:pg, :start_link, [scope(mesh)]}},
      {Registry, keys: :duplicate, name: :"#{mesh}.Groups"},
      adapter.child_spec(adapter_opts),
      # Last: it publishes the mesh's meta once everything it points to is up.
      {Server, mesh: mesh, adapter: adapter, adapter_name: adapter_name, max_edges: max_edges}
    ]

    %{
      id: {__MODULE__, mesh},
      type: :supervisor,
      start: {Supervisor, :start_link, [children, [strategy: :rest_for_one]]}
    }
  end

  @doc false
  @spec scope(t) :: atom
  def scope(mesh), do: :"#{mesh}.PG"

  ## Subscribing

  @doc """
  Subscribes the caller to `topic`.

  Options:

    * `:metadata` - a term attached to the subscription, given to the dispatcher.
    * `:group` - a string: join this queue group of `topic` instead of subscribing
      plainly (see "Queue groups").

  As with Phoenix.PubSub, subscribing twice delivers twice; `unsubscribe/2` drops both.
  """
  @spec subscribe(t, topic, keyword) :: :ok | {:error, term}
  def subscribe(mesh, topic, opts \\ [])
      when is_atom(mesh) and is_binary(topic) and is_list(opts) do
    %{adapter: adapter, adapter_name: name} = m = meta(mesh)

    case Keyword.get(opts, :group) do
      nil ->
        adapter.subscribe(name, topic, opts[:metadata])

      group when is_binary(group) ->
        {:ok, _} = Registry.register(m.groups, topic, {group, opts[:metadata]})
        :ok = :pg.join(m.scope, {topic, group}, self())
        Server.index_group(m, topic, group)

      other ->
        {:error,
         {:invalid_group, "the :group of a subscription must be a string, got: #{inspect(other)}"}}
    end
  end

  @doc "Unsubscribes the caller from `topic`: plain subscriptions and queue groups alike."
  @spec unsubscribe(t, topic) :: :ok
  def unsubscribe(mesh, topic) when is_atom(mesh) and is_binary(topic) do
    %{adapter: adapter, adapter_name: name} = m = meta(mesh)

    for {group, _metadata} <- Registry.values(m.groups, topic, self()) do
      :pg.leave(m.scope, {topic, group}, self())
    end

    Registry.unregister(m.groups, topic)
    adapter.unsubscribe(name, topic)
  end

  ## Broadcasting

  @doc """
  Broadcasts `message` on `topic` to the whole cluster: every plain subscriber and one
  member of each queue group.
  """
  @spec broadcast(t, topic, message, dispatcher) :: :ok | {:error, term}
  def broadcast(mesh, topic, message, dispatcher \\ __MODULE__)
      when is_atom(mesh) and is_binary(topic) and is_atom(dispatcher) do
    # The common case, kept short: a mesh without queue groups is its adapter's broadcast
    # (a static call for the default adapter: no export lookup on the hottest path).
    case meta(mesh) do
      %{any_groups: false, adapter: Symbiont.Mesh.PG, adapter_name: name} ->
        Symbiont.Mesh.PG.broadcast(name, :none, topic, message, dispatcher)

      m ->
        do_broadcast(m, :none, topic, message, dispatcher)
    end
  end

  @doc "Like `broadcast/4`, but the default dispatcher skips `from` (and so do groups)."
  @spec broadcast_from(t, pid, topic, message, dispatcher) :: :ok | {:error, term}
  def broadcast_from(mesh, from, topic, message, dispatcher \\ __MODULE__)
      when is_atom(mesh) and is_pid(from) and is_binary(topic) and is_atom(dispatcher) do
    do_broadcast(meta(mesh), from, topic, message, dispatcher)
  end

  @doc "Broadcasts `message` on `topic` to the subscribers on this node only."
  @spec local_broadcast(t, topic, message, dispatcher) :: :ok
  def local_broadcast(mesh, topic, message, dispatcher \\ __MODULE__)
      when is_atom(mesh) and is_binary(topic) and is_atom(dispatcher) do
    do_local_broadcast(meta(mesh), :none, topic, message, dispatcher)
  end

  @doc "Like `local_broadcast/4`, but the default dispatcher skips `from`."
  @spec local_broadcast_from(t, pid, topic, message, dispatcher) :: :ok
  def local_broadcast_from(mesh, from, topic, message, dispatcher \\ __MODULE__)
      when is_atom(mesh) and is_pid(from) and is_binary(topic) and is_atom(dispatcher) do
    do_local_broadcast(meta(mesh), from, topic, message, dispatcher)
  end

  @doc """
  Broadcasts `message` on `topic` to the subscribers on `node` only (plain ones, and one
  member of each group among those on `node`).
  """
  @spec direct_broadcast(node_name, t, topic, message, dispatcher) :: :ok | {:error, term}
  def direct_broadcast(node, mesh, topic, message, dispatcher \\ __MODULE__)
      when is_atom(mesh) and is_binary(topic) and is_atom(dispatcher) do
    %{adapter: adapter, adapter_name: name} = m = meta(mesh)

    with :ok <- adapter.direct_broadcast(name, node, topic, message, dispatcher) do
      dispatch_groups(m, :none, topic, message, &(node(&1) == node))
    end
  end

  @doc "Raising version of `broadcast/4`."
  @spec broadcast!(t, topic, message, dispatcher) :: :ok
  def broadcast!(mesh, topic, message, dispatcher \\ __MODULE__),
    do: bang(broadcast(mesh, topic, message, dispatcher))

  @doc "Raising version of `broadcast_from/5`."
  @spec broadcast_from!(t, pid, topic, message, dispatcher) :: :ok
  def broadcast_from!(mesh, from, topic, message, dispatcher \\ __MODULE__),
    do: bang(broadcast_from(mesh, from, topic, message, dispatcher))

  @doc "Raising version of `direct_broadcast/5`."
  @spec direct_broadcast!(node_name, t, topic, message, dispatcher) :: :ok
  def direct_broadcast!(node, mesh, topic, message, dispatcher \\ __MODULE__),
    do: bang(direct_broadcast(node, mesh, topic, message, dispatcher))

  defp bang(:ok), do: :ok

  defp bang({:error, reason}),
    do: raise(BroadcastError, "broadcast failed: #{inspect(reason)}")

  @doc "The name of this node as the mesh's adapter knows it."
  @spec node_name(t) :: node_name
  def node_name(mesh) do
    %{adapter: adapter, adapter_name: name} = meta(mesh)
    adapter.node_name(name)
  end

  @doc """
  The default dispatcher: sends `message` to each subscriber in `entries`
  (`{pid, metadata}`), except `from`.
  """
  @spec dispatch([{pid, term}], pid | :none, message) :: :ok
  def dispatch([{pid, _} | rest], from, message) do
    if pid != from, do: send(pid, message)
    dispatch(rest, from, message)
  end

  def dispatch([], _from, _message), do: :ok

  defp do_broadcast(m, from, topic, message, dispatcher) do
    with :ok <- m.adapter.broadcast(m.adapter_name, from, topic, message, dispatcher) do
      dispatch_groups(m, from, topic, message, nil)
    end
  end

  defp do_local_broadcast(m, from, topic, message, dispatcher) do
    :ok = m.adapter.local_broadcast(m.adapter_name, from, topic, message, dispatcher)
    dispatch_groups(m, from, topic, message, &(node(&1) == node()))
  end

  # One member of each group of `topic`, round robin; `only` narrows the candidates.
  defp dispatch_groups(m, from, topic, message, only) do
    case Server.groups(m, topic) do
      [] -> :ok
      groups -> Enum.each(groups, &send_to_one(m, &1, from, topic, message, only))
    end
  end

  defp send_to_one(m, group, from, topic, message, only) do
    case candidates(m, topic, group, from, only) do
      [] -> :ok
      [pid] -> send(pid, message)
      pids -> send(Enum.at(pids, Server.next(m, topic, group, length(pids))), message)
    end
  end

  defp candidates(m, topic, group, from, only) do
    pids = :pg.get_members(m.scope, {topic, group})
    pids = if from == :none, do: pids, else: List.delete(pids, from)
    if only, do: Enum.filter(pids, only), else: pids
  end

  ## Events

  @doc """
  Publishes a `Symbiont.Event` on its topic, cluster-wide, like `broadcast/4`, and counts
  it for `Symbiont.topology/0` under its publisher (`event.from`, or `"elixir"`). Each
  publish is a `[:symbiont, :mesh, :broadcast]` telemetry event (`Symbiont.Telemetry`);
  the Phoenix.PubSub-style broadcasts are not.

  With `checked: true`, the publish is refused, and nothing is sent, when a subscriber on
  this node cannot take it (a plain subscriber, or every member of a queue group):

    * `{:error, :journal_unavailable}`: a durable agent whose journal cannot be written
      (a full disk, see "When the disk refuses" in `Symbiont.Journal`) accepts nothing
      until it can;
    * `{:error, :too_large}`: the event's payload is larger than an agent's
      `:max_queue_bytes`, whatever its overflow policy: it could never wait in its queue;
    * `{:error, :overloaded}`: an agent whose overflow policy is `:reject` has no room,
      in events (`:max_queue`) or in bytes (`:max_queue_bytes`). Room is reserved as the
      publish is accepted (one event and the payload's bytes in the subscriber's load
      counters, which become the event's place in its queue when it arrives), so
      publishers racing each other cannot overfill a queue, exactly as many are told
      `:ok` as there is room for, and an event a publisher was told `:ok` for is never
      dropped for room.

  An agent on this node that a checked publish admitted (`reserved` in the event) takes
  the event even if its journal failed while the event was on its way: it holds it in
  memory and journals it once the disk takes writes again (see "When the disk refuses"
  in `Symbiont.Journal`).

  Among a group's members, one that can take it is picked, round robin; when none can,
  the error is `:journal_unavailable` or `:too_large` if that is why every one of them
  refused, else `:overloaded`. Subscribers on other nodes apply their own policy when the event
  arrives (see `Symbiont.Agent`): a durable agent there whose journal cannot be written
  sends the event to the dead letters with the reason `"journal_unavailable"`, as it
  does with an event published without `checked: true`.
  """
  @spec publish(t, Symbiont.Event.t(), keyword) ::
          :ok | {:error, :overloaded | :journal_unavailable | term}
  def publish(mesh, %Symbiont.Event{topic: topic} = event, opts \\ []) when is_atom(mesh) do
    m = meta(mesh)

    result =
      if Keyword.get(opts, :checked, false),
        do: Admission.checked_publish(m, event),
        else: do_broadcast(m, :none, topic, event, __MODULE__)

    with :ok <- result do
      if Symbiont.Telemetry.attached?() do
        Symbiont.Telemetry.execute(
          [:symbiont, :mesh, :broadcast],
          # An event built by hand may carry any term on this node (the bench's do).
          %{bytes: if(is_binary(event.payload), do: byte_size(event.payload), else: 0)},
          %{mesh: mesh, topic: topic, from: event.from}
        )
      end

      Server.count(m, {:published, event.from || "elixir", topic})
    end
  end

  @doc false
  # The agents (Symbiont.Agent.Server: group members with a load counter) on this node
  # that subscribe to `topic`: the subscribers a publishing agent waits for when they are
  # backlogged (PROTOCOL.md §8.2).
  @spec local_agents(t, topic) :: [pid]
  def local_agents(mesh, topic) when is_atom(mesh) and is_binary(topic) do
    for {pid, {_group, %{load: _}}} <- Registry.lookup(meta(mesh).groups, topic), do: pid
  end

  ## Introspection

  @doc """
  The subscriptions on this node: `{topic, pid, group, metadata}` with `group` `nil` for
  a plain subscription.
  """
  @spec subscriptions(t) :: [{topic, pid, String.t() | nil, term}]
  def subscriptions(mesh \\ __MODULE__) do
    %{adapter: adapter, adapter_name: name} = m = meta(mesh)
    plain = for {topic, pid, meta} <- adapter.subscriptions(name), do: {topic, pid, nil, meta}

    grouped =
      for {topic, pid, {group, meta}} <-
            Registry.select(m.groups, [{{:"$1", :"$2", :"$3"}, [], [{{:"$1", :"$2", :"$3"}}]}]),
          do: {topic, pid, group, meta}

    Enum.sort(plain ++ grouped)
  end

  @doc """
  The members of `group` of `topic` on every node, or the plain subscribers of `topic` on
  this node when `group` is `nil`: those a broadcast from this node reaches now (a group
  joined on another node counts once this node has indexed it, just after `:pg` tells).
  """
  @spec members(t, topic, String.t() | nil) :: [pid]
  def members(mesh, topic, nil) do
    %{adapter: adapter, adapter_name: name} = meta(mesh)
    for {pid, _} <- adapter.subscribers(name, topic), do: pid
  end

  def members(mesh, topic, group) when is_binary(group) do
    m = meta(mesh)
    if group in Server.groups(m, topic), do: :pg.get_members(m.scope, {topic, group}), else: []
  end

  @doc """
  Counts one `topic` event handled by `subscriber` (an agent's name) on this node, for
  `Symbiont.topology/0`.
  """
  @spec count_received(t, String.t(), topic) :: :ok
  def count_received(mesh, subscriber, topic),
    do: Server.count(meta(mesh), {:received, subscriber, topic})

  @doc """
  The events published on this node, by publisher and topic: `{publisher, topic, count}`
  (the counters of `node_stats/1`, without the subscriptions: cheap whatever their
  number).
  """
  @spec published(t) :: [{String.t(), topic, non_neg_integer}]
  def published(mesh \\ __MODULE__) do
    :ets.select(meta(mesh).stats, [
      {{{:published, :"$1", :"$2"}, :"$3", :_}, [], [{{:"$1", :"$2", :"$3"}}]}
    ])
  end

  @doc """
  This node's part of the topology: the events published here by publisher and topic,
  and the subscriptions here with what each has handled (`nil` where it is not counted:
  plain subscribers get every event of their topic), and `evicted`: the counters the
  node dropped to stay within its `:max_edges` (the least recently used first) and the
  events they had counted. See `Symbiont.Topology.build/1`.
  """
  @spec node_stats(t) :: %{
          node: node,
          publishers: [map],
          subscribers: [map],
          evicted: %{edges: non_neg_integer, events: non_neg_integer}
        }
  def node_stats(mesh \\ __MODULE__) do
    m = meta(mesh)
    counters = :ets.tab2list(m.stats)

    publishers =
      for {{:published, publisher, topic}, n, _at} <- counters,
          do: %{publisher: publisher, topic: topic, count: n}

    received =
      for {{:received, name, topic}, n, _at} <- counters, into: %{}, do: {{name, topic}, n}

    subscribers =
      for {topic, pid, group, metadata} <- subscriptions(mesh) do
        case metadata do
          %{agent: agent} ->
            %{
              topic: topic,
              subscriber: agent,
              group: group,
              count: Map.get(received, {agent, topic}, 0)
            }

          _ ->
            %{topic: topic, subscriber: label(pid), group: group, count: nil}
        end
      end

    %{
      node: node(),
      publishers: publishers,
      subscribers: Enum.uniq(subscribers),
      evicted: Server.evicted(m)
    }
  end

  defp label(pid) do
    case Process.info(pid, :registered_name) do
      {:registered_name, name} when is_atom(name) and name != [] -> inspect(name)
      _ -> inspect(pid)
    end
  end

  @doc false
  @spec meta(t) :: map
  def meta(mesh) do
    case :persistent_term.get({__MODULE__, mesh}, nil) do
      nil ->
        raise ArgumentError, "no Symbiont.Mesh named #{inspect(mesh)} is running on #{node()}"

      meta ->
        meta
    end
  end
end

defmodule Symbiont.Mesh.PG do
  @moduledoc """
  The default `Symbiont.Mesh.Adapter`: subscriptions in a table of each node's, kept as a
  duplicate-key `Registry` keeps them (a subscriber's rows go when it exits) and read
  with one ETS lookup a broadcast, and one forwarding process per node, joined to the
  adapter's own `:pg` scope. A broadcast dispatches
  locally and sends one message to each other node's forwarder, which dispatches there:
  a message crosses the network once per node, whatever the number of subscribers.
  """
  @behaviour Symbiont.Mesh.Adapter

  use GenServer

  alias Symbiont.Mesh.Subscriptions

  @forwarders :forwarders

  @impl Symbiont.Mesh.Adapter
  def child_spec(opts) do
    name = Keyword.fetch!(opts, :adapter_name)

    %{
      id: __MODULE__,
      type: :supervisor,
      start: {Supervisor, :start_link, [children(name, opts), [strategy: :rest_for_one]]}
    }
  end

  defp children(name, _opts) do
    [
      %{id: :pg, start: {:pg, :start_link, [scope_name(name)]}},
      {Subscriptions, name},
      %{id: :forwarder, start: {GenServer, :start_link, [__MODULE__, name]}}
    ]
  end

  defp scope_name(name), do: :"#{name}.PG"

  # The forwarders on other nodes are read on every broadcast, so the forwarder keeps them
  # in :persistent_term, watching their :pg group and rewriting the list when a node comes
  # or goes (rare): cheaper than asking :pg, and than building the scope's atom, each time.
  defp remote_forwarders(name), do: :persistent_term.get({__MODULE__, name})

  @impl Symbiont.Mesh.Adapter
  def subscribe(mesh, topic, metadata), do: Subscriptions.subscribe(mesh, topic, metadata)

  @impl Symbiont.Mesh.Adapter
  def unsubscribe(mesh, topic), do: Subscriptions.unsubscribe(mesh, topic)

  @impl Symbiont.Mesh.Adapter
  def broadcast(mesh, from, topic, message, dispatcher) do
    # A node that is not distributed has no one to forward to (and pays nothing for it).
    case node() != :nonode@nohost and remote_forwarders(mesh) do
      false ->
        :ok

      [] ->
        :ok

      pids ->
        forward = {:forward_to_local, from, topic, message, dispatcher}
        Enum.each(pids, &send(&1, forward))
    end

    local_broadcast(mesh, from, topic, message, dispatcher)
  end

  @impl Symbiont.Mesh.Adapter
  def local_broadcast(mesh, from, topic, message, Symbiont.Mesh) do
    # The default dispatcher, inline: the hottest path of the mesh.
    send_rows(Subscriptions.rows(mesh, topic), from, message)
  end

  def local_broadcast(mesh, from, topic, message, dispatcher) do
    # As Registry.dispatch/3: a dispatcher is called only when there is someone to reach.
    case Subscriptions.lookup(mesh, topic) do
      [] -> :ok
      entries -> dispatcher.dispatch(entries, from, message)
    end

    :ok
  end

  defp send_rows([{_topic, pid, _metadata} | rest], from, message) do
    if pid != from, do: send(pid, message)
    send_rows(rest, from, message)
  end

  defp send_rows([], _from, _message), do: :ok

  @impl Symbiont.Mesh.Adapter
  def direct_broadcast(mesh, node, topic, message, dispatcher) do
    if node == node() do
      local_broadcast(mesh, :none, topic, message, dispatcher)
    else
      send({forwarder_name(mesh), node}, {:forward_to_local, :none, topic, message, dispatcher})
      :ok
    end
  end

  @impl Symbiont.Mesh.Adapter
  def subscribers(mesh, topic), do: Subscriptions.lookup(mesh, topic)

  @impl Symbiont.Mesh.Adapter
  def subscriptions(mesh), do: Subscriptions.all(mesh)

  @impl Symbiont.Mesh.Adapter
  def node_name(_mesh), do: node()

  ## The forwarder

  defp forwarder_name(mesh), do: :"#{mesh}.Forwarder"

  @impl GenServer
  def init(mesh) do
    Process.register(self(), forwarder_name(mesh))
    scope = scope_name(mesh)
    :ok = :pg.join(scope, @forwarders, self())
    {ref, pids} = :pg.monitor(scope, @forwarders)
    put_remote_forwarders(mesh, pids)
    {:ok, %{mesh: mesh, scope: scope, ref: ref}}
  end

  defp put_remote_forwarders(name, pids) do
    remote = pids |> Enum.reject(&(node(&1) == node())) |> Enum.sort()

    if :persistent_term.get({__MODULE__, name}, nil) != remote,
      do: :persistent_term.put({__MODULE__, name}, remote)
  end

  @impl GenServer
  def handle_info({:forward_to_local, from, topic, message, dispatcher}, state) do
    local_broadcast(state.mesh, from, topic, message, dispatcher)
    {:noreply, state}
  end

  def handle_info({ref, kind, @forwarders, _pids}, %{ref: ref} = state)
      when kind in [:join, :leave] do
    put_remote_forwarders(state.mesh, :pg.get_members(state.scope, @forwarders))
    {:noreply, state}
  end

  def handle_info(_other, state), do: {:noreply, state}
end

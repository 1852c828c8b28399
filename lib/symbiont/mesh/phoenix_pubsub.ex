if Code.ensure_loaded?(Phoenix.PubSub) do
  defmodule Symbiont.Mesh.PhoenixPubSub do
    @moduledoc """
    A `Symbiont.Mesh.Adapter` that runs the mesh's plain subscriptions on a real
    `Phoenix.PubSub` (started under the mesh, named `MyMesh.Adapter`); queue groups stay
    with `Symbiont.Mesh`.

    Compiled only when Phoenix.PubSub is: build with `PHOENIX_PUBSUB_PATH` pointing to a
    checkout of phoenix_pubsub (`make test-phoenix`). Options given to the mesh, such as
    `:pool_size`, go to Phoenix.PubSub.

        {Symbiont.Mesh, name: MyApp.Mesh, adapter: Symbiont.Mesh.PhoenixPubSub}
    """
    @behaviour Symbiont.Mesh.Adapter

    alias Phoenix.PubSub

    @impl true
    def child_spec(opts) do
      name = Keyword.fetch!(opts, :adapter_name)
      pubsub_opts = opts |> Keyword.take([:pool_size, :registry_size]) |> Keyword.put(:name, name)
      Supervisor.child_spec({PubSub, pubsub_opts}, id: __MODULE__)
    end

    @impl true
    def subscribe(name, topic, metadata), do: PubSub.subscribe(name, topic, metadata: metadata)

    @impl true
    def unsubscribe(name, topic), do: PubSub.unsubscribe(name, topic)

    @impl true
    def broadcast(name, :none, topic, message, dispatcher),
      do: PubSub.broadcast(name, topic, message, dispatcher)

    def broadcast(name, from, topic, message, dispatcher),
      do: PubSub.broadcast_from(name, from, topic, message, dispatcher)

    @impl true
    def local_broadcast(name, :none, topic, message, dispatcher),
      do: PubSub.local_broadcast(name, topic, message, dispatcher)

    def local_broadcast(name, from, topic, message, dispatcher),
      do: PubSub.local_broadcast_from(name, from, topic, message, dispatcher)

    @impl true
    def direct_broadcast(name, node, topic, message, dispatcher),
      do: PubSub.direct_broadcast(node, name, topic, message, dispatcher)

    # Phoenix.PubSub keeps its subscriptions in a Registry named after the pubsub.
    @impl true
    def subscribers(name, topic), do: Registry.lookup(name, topic)

    @impl true
    def subscriptions(name),
      do: Registry.select(name, [{{:"$1", :"$2", :"$3"}, [], [{{:"$1", :"$2", :"$3"}}]}])

    @impl true
    def node_name(name), do: PubSub.node_name(name)
  end
end

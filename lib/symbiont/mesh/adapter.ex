defmodule Symbiont.Mesh.Adapter do
  @moduledoc """
  The behaviour of a mesh backend: how plain subscriptions are kept and how a broadcast
  reaches the subscribers on every node.

  Queue groups are not the adapter's business: `Symbiont.Mesh` keeps them itself in a
  `:pg` scope of its own, so they work the same over every adapter.

  Two adapters ship with Symbiont:

    * `Symbiont.Mesh.PG` (the default): a subscription table on each node and one
      forwarding process per node joined to the mesh's `:pg` scope, like
      `Phoenix.PubSub.PG2`.
    * `Symbiont.Mesh.PhoenixPubSub`: delegates to a real `Phoenix.PubSub` when it is
      compiled in (`PHOENIX_PUBSUB_PATH`, see the README).

  `adapter_name` is the atom the mesh gave the adapter (`:adapter_name` in the child
  spec options); `dispatcher` a module with `dispatch/3`, as in Phoenix.PubSub.
  """

  @type adapter_name :: atom
  @type from :: pid | :none

  @doc "A child spec for the adapter's processes. Options: `:name` (the mesh), `:adapter_name`."
  @callback child_spec(keyword) :: Supervisor.child_spec()

  @doc "Subscribes the calling process to `topic` on this node, with `metadata`."
  @callback subscribe(adapter_name, Symbiont.Mesh.topic(), metadata :: term) ::
              :ok | {:error, term}

  @doc "Drops every subscription of the calling process to `topic`."
  @callback unsubscribe(adapter_name, Symbiont.Mesh.topic()) :: :ok

  @doc "Dispatches to the plain subscribers of `topic` on every node, this one included."
  @callback broadcast(adapter_name, from, Symbiont.Mesh.topic(), term, module) ::
              :ok | {:error, term}

  @doc "Dispatches to the plain subscribers of `topic` on this node only."
  @callback local_broadcast(adapter_name, from, Symbiont.Mesh.topic(), term, module) :: :ok

  @doc "Dispatches to the plain subscribers of `topic` on `node` only."
  @callback direct_broadcast(adapter_name, node, Symbiont.Mesh.topic(), term, module) ::
              :ok | {:error, term}

  @doc "The plain subscribers of `topic` on this node, as `{pid, metadata}`."
  @callback subscribers(adapter_name, Symbiont.Mesh.topic()) :: [{pid, term}]

  @doc "Every plain subscription on this node, as `{topic, pid, metadata}`."
  @callback subscriptions(adapter_name) :: [{Symbiont.Mesh.topic(), pid, term}]

  @doc "The name of this node as the adapter knows it."
  @callback node_name(adapter_name) :: Symbiont.Mesh.node_name()
end

defmodule Symbiont.Mesh do
  @moduledoc """
  The event mesh: topics that agents and BEAM processes subscribe and publish to.

  This is the node-local router of step 1, built on a duplicate-key `Registry`; the
  Phoenix.PubSub-compatible API, queue groups and cluster-wide delivery come with step 2
  (see DESIGN.md). Messages are delivered as they are given, usually a `Symbiont.Event`.

      iex> :ok = Symbiont.Mesh.subscribe("doc.example")
      iex> Symbiont.Mesh.broadcast("doc.example", :hello)
      :ok
      iex> receive do: (msg -> msg)
      :hello
  """

  @registry __MODULE__

  @doc false
  def child_spec(_opts) do
    Registry.child_spec(keys: :duplicate, name: @registry, partitions: System.schedulers_online())
  end

  @doc "Subscribes the calling process to `topic`."
  @spec subscribe(String.t()) :: :ok
  def subscribe(topic) when is_binary(topic) do
    {:ok, _} = Registry.register(@registry, topic, nil)
    :ok
  end

  @doc "Unsubscribes the calling process from `topic`."
  @spec unsubscribe(String.t()) :: :ok
  def unsubscribe(topic) when is_binary(topic), do: Registry.unregister(@registry, topic)

  @doc "Sends `message` to every subscriber of `topic` on this node."
  @spec broadcast(String.t(), term) :: :ok
  def broadcast(topic, message) when is_binary(topic) do
    Registry.dispatch(@registry, topic, fn entries ->
      for {pid, _} <- entries, do: send(pid, message)
    end)
  end

  @doc "The topics that have subscribers, with their subscriber pids."
  @spec subscriptions() :: %{String.t() => [pid]}
  def subscriptions do
    @registry
    |> Registry.select([{{:"$1", :"$2", :_}, [], [{{:"$1", :"$2"}}]}])
    |> Enum.group_by(&elem(&1, 0), &elem(&1, 1))
  end
end

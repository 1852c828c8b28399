defmodule Symbiont.Mesh do
  @moduledoc """
  The event mesh: topics that agents and BEAM processes subscribe and publish to.

  (Interim: the Phoenix.PubSub-shaped API on a node-local `Registry`; queue groups,
  adapters and cluster-wide delivery are being built for step 2.)

      iex> :ok = Symbiont.Mesh.subscribe(Symbiont.Mesh, "doc.example")
      iex> Symbiont.Mesh.broadcast(Symbiont.Mesh, "doc.example", :hello)
      :ok
      iex> receive do: (msg -> msg)
      :hello
  """

  @type t :: atom
  @type topic :: String.t()

  @doc false
  def child_spec(opts) do
    name = Keyword.get(opts, :name, __MODULE__)
    Registry.child_spec(keys: :duplicate, name: name, partitions: System.schedulers_online())
  end

  @doc "Subscribes the calling process to `topic`."
  @spec subscribe(t, topic, keyword) :: :ok | {:error, term}
  def subscribe(mesh, topic, opts \\ []) when is_atom(mesh) and is_binary(topic) do
    case Registry.register(mesh, topic, opts[:metadata]) do
      {:ok, _} -> :ok
      {:error, _} = error -> error
    end
  end

  @doc "Unsubscribes the calling process from `topic`."
  @spec unsubscribe(t, topic) :: :ok
  def unsubscribe(mesh, topic) when is_binary(topic), do: Registry.unregister(mesh, topic)

  @doc "Sends `message` to every subscriber of `topic`."
  @spec broadcast(t, topic, term) :: :ok | {:error, term}
  def broadcast(mesh, topic, message) when is_binary(topic) do
    Registry.dispatch(mesh, topic, fn entries ->
      for {pid, _} <- entries, do: send(pid, message)
    end)
  end

  @doc "The topics that have subscribers on this node, with their subscriber pids."
  @spec subscriptions(t) :: %{topic => [pid]}
  def subscriptions(mesh \\ __MODULE__) do
    mesh
    |> Registry.select([{{:"$1", :"$2", :_}, [], [{{:"$1", :"$2"}}]}])
    |> Enum.group_by(&elem(&1, 0), &elem(&1, 1))
  end
end

defmodule Symbiont.Mesh.Subscriptions do
  @moduledoc false
  # The plain subscriptions of one node, for `Symbiont.Mesh.PG`: what a duplicate-key
  # `Registry` with one partition keeps, in the shape the hottest path of the mesh reads.
  #
  # A broadcast is one `:ets.lookup/2` on a named table, `{topic, pid, metadata}` rows in
  # subscription order; `Registry.dispatch/3` first reads the registry's own key info,
  # then the key, inside a `try`. Half the cost of a broadcast to one subscriber
  # (bench/RESULTS.md, "Profiles").
  #
  # Cleanup is Registry's: a subscriber links itself to the table's owner, which traps
  # exits and drops the rows of a process that exits (a second table, `{pid, topic}`,
  # says which); the last unsubscribe unlinks. The subscriber writes its own rows (the
  # tables are public), so subscribing is no message to the owner.

  use GenServer

  @doc false
  @spec child_spec(atom) :: Supervisor.child_spec()
  def child_spec(name), do: %{id: __MODULE__, start: {__MODULE__, :start_link, [name]}}

  @doc false
  @spec start_link(atom) :: GenServer.on_start()
  def start_link(name), do: GenServer.start_link(__MODULE__, name, name: name)

  @doc "Subscribes the caller to `topic` in table `name` (twice subscribed, twice delivered)."
  @spec subscribe(atom, String.t(), term) :: :ok
  def subscribe(name, topic, metadata) do
    # The link first: a subscriber killed between the two writes leaves nothing behind,
    # since the owner hears of its exit after them.
    Process.link(Process.whereis(name) || raise(ArgumentError, "unknown mesh table #{name}"))
    pid = self()
    true = :ets.insert(pids(name), {pid, topic})
    true = :ets.insert(name, {topic, pid, metadata})
    :ok
  end

  @doc "Drops every subscription of the caller to `topic`."
  @spec unsubscribe(atom, String.t()) :: :ok
  def unsubscribe(name, topic) do
    pid = self()
    pids = pids(name)
    true = :ets.match_delete(name, {topic, pid, :_})
    true = :ets.delete_object(pids, {pid, topic})

    unless :ets.member(pids, pid) do
      if owner = Process.whereis(name), do: Process.unlink(owner)
    end

    :ok
  end

  @doc "The `{topic, pid, metadata}` rows of `topic`, in subscription order."
  @spec rows(atom, String.t()) :: [{String.t(), pid, term}]
  def rows(name, topic), do: :ets.lookup(name, topic)

  @doc "The subscribers of `topic` as `{pid, metadata}`, in subscription order."
  @spec lookup(atom, String.t()) :: [{pid, term}]
  def lookup(name, topic),
    do: for({_, pid, metadata} <- :ets.lookup(name, topic), do: {pid, metadata})

  @doc "Every subscription, as `{topic, pid, metadata}`."
  @spec all(atom) :: [{String.t(), pid, term}]
  def all(name), do: :ets.tab2list(name)

  defp pids(name), do: :"#{name}.Pids"

  @impl GenServer
  def init(name) do
    Process.flag(:trap_exit, true)
    # Reads (every broadcast) far outnumber writes; subscribers write concurrently.
    opts = [
      :duplicate_bag,
      :public,
      :named_table,
      read_concurrency: true,
      write_concurrency: true
    ]

    ^name = :ets.new(name, opts)
    _ = :ets.new(pids(name), opts)
    {:ok, name}
  end

  @impl GenServer
  def handle_info({:EXIT, pid, _reason}, name) do
    for {^pid, topic} <- :ets.take(pids(name), pid), do: :ets.match_delete(name, {topic, pid, :_})
    {:noreply, name}
  end

  def handle_info(_other, name), do: {:noreply, name}
end

defmodule Symbiont.Health.History do
  @moduledoc false
  # The recent health events of this node's mesh (Symbiont.Health), kept for the iex
  # helpers (`Symbiont.health/0`, `Symbiont.agent/1`) and the status page: the last 20
  # of each agent and the last 200 overall, newest first, and the last event of each
  # agent that tells how it is now. Subscribed to `symbiont.health`; readers go through
  # ETS, so a busy history never blocks them.

  use GenServer

  @per_agent 20
  @overall 200

  @doc false
  def start_link(opts \\ []),
    do: GenServer.start_link(__MODULE__, opts, name: Keyword.get(opts, :name, __MODULE__))

  @doc false
  # The last events about `agent` (decoded payloads plus "at_ms"), newest first.
  @spec of(String.t(), atom) :: [map]
  def of(agent, table \\ __MODULE__), do: lookup(table, {:agent, agent})

  @doc false
  # The last events overall, newest first.
  @spec recent(non_neg_integer, atom) :: [map]
  def recent(n \\ @overall, table \\ __MODULE__), do: Enum.take(lookup(table, :recent), n)

  @doc false
  # The last event of each agent that tells how it is now (Symbiont.Health.current?/1),
  # by agent name.
  @spec latest(atom) :: %{String.t() => map}
  def latest(table \\ __MODULE__) do
    for {{:current, agent}, event} <- :ets.tab2list(table), into: %{}, do: {agent, event}
  rescue
    ArgumentError -> %{}
  end

  @impl true
  def init(opts) do
    table = Keyword.get(opts, :name, __MODULE__)
    :ets.new(table, [:named_table, :protected, read_concurrency: true])
    :ok = Symbiont.subscribe(Symbiont.Health.topic())
    {:ok, table}
  end

  @impl true
  def handle_info(%Symbiont.Event{} = event, table) do
    with {:ok, %{} = health} <- Symbiont.Event.decode(event) do
      health = Map.put(health, "at_ms", System.system_time(:millisecond))
      push(table, :recent, health, @overall)

      if is_binary(health["agent"]) do
        push(table, {:agent, health["agent"]}, health, @per_agent)

        if Symbiont.Health.current?(health),
          do: :ets.insert(table, {{:current, health["agent"]}, health})
      end
    end

    {:noreply, table}
  end

  def handle_info(_other, table), do: {:noreply, table}

  defp push(table, key, event, max),
    do: :ets.insert(table, {key, Enum.take([event | lookup(table, key)], max)})

  # No table (the history is not running) reads as no events.
  defp lookup(table, key) do
    case :ets.lookup(table, key) do
      [{_, events}] -> events
      [] -> []
    end
  rescue
    ArgumentError -> []
  end
end

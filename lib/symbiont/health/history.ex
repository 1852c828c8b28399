defmodule Symbiont.Health.History do
  @moduledoc false
  # The recent health events of this node's mesh (Symbiont.Health), kept for the iex
  # helpers (`Symbiont.health/0`, `Symbiont.agent/1`) and the status page: the last 20
  # of each agent and the last 200 overall, newest first, and the last event of each
  # agent that tells how it is now. Subscribed to `symbiont.health`; readers go through
  # ETS, so a busy history never blocks them.
  #
  # Only the BEAM publishes there, naming the agent an event is about (an agent's own
  # report is stamped by its owner: Symbiont.ControlPlane); still, at most 1000 agents are
  # kept, and the one heard of longest ago goes first, so that events about ever new
  # names cannot grow the table, and an event is decoded only within the control plane's
  # sizes.

  use GenServer

  @per_agent 20
  @overall 200
  @max_agents 1_000

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
    # The agents kept, with when each was last heard of (a count), and the other way round.
    {:ok, %{table: table, heard: %{}, order: :gb_trees.empty(), n: 0}}
  end

  @impl true
  def handle_info(%Symbiont.Event{} = event, %{table: table} = state) do
    case Symbiont.ControlPlane.decode(event) do
      {:ok, %{} = health} ->
        health = Map.put(health, "at_ms", System.system_time(:millisecond))
        push(table, :recent, health, @overall)

        if is_binary(health["agent"]) do
          push(table, {:agent, health["agent"]}, health, @per_agent)

          if Symbiont.Health.current?(health),
            do: :ets.insert(table, {{:current, health["agent"]}, health})

          {:noreply, heard(state, health["agent"])}
        else
          {:noreply, state}
        end

      _ ->
        {:noreply, state}
    end
  end

  def handle_info(_other, state), do: {:noreply, state}

  defp heard(%{heard: heard, order: order, n: n} = state, agent) do
    order =
      case heard do
        %{^agent => last} -> :gb_trees.delete(last, order)
        _ -> order
      end

    state = %{
      state
      | heard: Map.put(heard, agent, n),
        order: :gb_trees.insert(n, agent, order),
        n: n + 1
    }

    if map_size(state.heard) > @max_agents, do: forget_oldest(state), else: state
  end

  defp forget_oldest(%{table: table} = state) do
    {_n, agent, order} = :gb_trees.take_smallest(state.order)
    :ets.delete(table, {:agent, agent})
    :ets.delete(table, {:current, agent})
    %{state | heard: Map.delete(state.heard, agent), order: order}
  end

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

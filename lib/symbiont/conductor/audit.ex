defmodule Symbiont.Conductor.Audit do
  @moduledoc """
  The audit trail of remediations: every event on `symbiont.remediation` (by the
  supervisor, a deploy, the conductor or an operator) and every action the conductor
  refused or failed to apply, with its reason and evidence, newest first.

  It is its own process, started before the conductor, so that the trail outlives a
  conductor crash and the restarted conductor resumes from it (its cooldowns are read
  back from here). It keeps the last #{1_000} entries.
  """
  use GenServer

  @keep 1_000

  @doc false
  def start_link(opts),
    do: GenServer.start_link(__MODULE__, opts, name: Keyword.get(opts, :name, __MODULE__))

  @doc false
  def child_spec(opts),
    do: %{id: Keyword.get(opts, :name, __MODULE__), start: {__MODULE__, :start_link, [opts]}}

  @doc """
  The last `n` entries, newest first; each the payload of a remediation event (see
  `Symbiont.Remediation`) plus `"result"`: `"applied"`, or `"refused: why"` /
  `"failed: why"` for a conductor action that did not happen.
  """
  @spec entries(pos_integer, GenServer.server()) :: [map]
  def entries(n \\ 50, audit \\ __MODULE__), do: GenServer.call(audit, {:entries, n})

  @doc "Records an entry that is not a published event (a refused or failed action)."
  @spec record(map, GenServer.server()) :: :ok
  def record(entry, audit \\ __MODULE__) when is_map(entry),
    do: GenServer.call(audit, {:record, entry})

  @impl true
  def init(_opts) do
    :ok = Symbiont.Mesh.subscribe(Symbiont.Mesh, Symbiont.Remediation.topic())
    {:ok, %{entries: [], n: 0}}
  end

  @impl true
  def handle_call({:entries, n}, _from, state), do: {:reply, Enum.take(state.entries, n), state}
  def handle_call({:record, entry}, _from, state), do: {:reply, :ok, push(state, entry)}

  @impl true
  def handle_info(%Symbiont.Event{} = event, state) do
    case Symbiont.Event.decode(event) do
      {:ok, %{} = payload} -> {:noreply, push(state, Map.put_new(payload, "result", "applied"))}
      _ -> {:noreply, state}
    end
  end

  def handle_info(_other, state), do: {:noreply, state}

  defp push(%{n: n} = state, entry) when n >= 2 * @keep,
    do: %{state | entries: Enum.take([entry | state.entries], @keep), n: @keep + 1}

  defp push(state, entry), do: %{state | entries: [entry | state.entries], n: state.n + 1}
end

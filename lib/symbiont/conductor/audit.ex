defmodule Symbiont.Conductor.Audit do
  @moduledoc """
  The audit trail of remediations: every step `Symbiont.Remediation.publish/4` took (by
  the supervisor, a deploy, the conductor or an operator, on any node of the cluster) and
  every action the conductor refused or failed to apply, with its reason and evidence,
  newest first.

  It holds only what Symbiont recorded itself: `Symbiont.Remediation.publish/4` hands it
  each step (`applied/1`), and the conductor its refusals (`record/2`). It does not read
  the `symbiont.remediation` topic, so an event published there by anyone else is not in
  the trail (`Symbiont.ControlPlane`). Each entry's `"at_ms"` is this process's clock when
  it recorded it (system time, ms), whatever the entry said: the conductor's cooldowns
  and evidence are read back from these times, and none can lie in the future.

  It is its own process, in `Symbiont.Stores`, started before the runtime and the
  conductor, so that the trail outlives a crash of the conductor, the manifest or the
  hosts' supervisor, and the restarted conductor resumes from it (its cooldowns are read
  back from here). It keeps the last #{1_000} entries, each at most
  #{Symbiont.ControlPlane.max_bytes()} bytes of msgpack (larger evidence is kept as text,
  cut).
  """
  use GenServer

  alias Symbiont.ControlPlane

  @keep 1_000
  # What an entry keeps whole when it must be cut (ControlPlane.bound/3).
  @core ~w(action agent host reason by node result)
  @max_text 1024

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

  @doc false
  # entries/2, or none while the trail is not running (the conductor works without one).
  @spec entries_or_none(pos_integer, GenServer.server()) :: [map]
  def entries_or_none(n, audit) do
    entries(n, audit)
  catch
    :exit, _ -> []
  end

  @doc """
  Records an entry that is not a remediation step (an action the conductor refused or
  failed to apply). Its `"at_ms"` is the time it is recorded.
  """
  @spec record(map, GenServer.server()) :: :ok
  def record(entry, audit \\ __MODULE__) when is_map(entry),
    do: GenServer.call(audit, {:record, entry})

  @doc false
  # A step Symbiont.Remediation.publish/4 took (its payload), for the trail of every
  # node: sent, not awaited, so that no publisher waits for a trail (one that is not
  # running misses it).
  @spec applied(map) :: :ok
  def applied(payload) when is_map(payload) do
    GenServer.abcast([node() | Node.list()], __MODULE__, {:applied, payload})
    :ok
  end

  @impl true
  def init(_opts), do: {:ok, %{entries: [], n: 0}}

  @impl true
  def handle_call({:entries, n}, _from, state), do: {:reply, Enum.take(state.entries, n), state}
  def handle_call({:record, entry}, _from, state), do: {:reply, :ok, push(state, entry)}

  @impl true
  def handle_cast({:applied, payload}, state),
    do: {:noreply, push(state, Map.put(payload, "result", "applied"))}

  @impl true
  def handle_info(_other, state), do: {:noreply, state}

  defp push(state, entry) do
    entry =
      entry
      |> Map.new(fn
        {k, v} when k in @core and is_binary(v) -> {k, ControlPlane.text(v, @max_text)}
        kv -> kv
      end)
      |> Map.put("at_ms", System.system_time(:millisecond))
      |> ControlPlane.bound(ControlPlane.max_bytes(), @core ++ ["at_ms"])

    keep(state, entry)
  end

  defp keep(%{n: n} = state, entry) when n >= 2 * @keep,
    do: %{state | entries: Enum.take([entry | state.entries], @keep), n: @keep + 1}

  defp keep(state, entry), do: %{state | entries: [entry | state.entries], n: state.n + 1}
end

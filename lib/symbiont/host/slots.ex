defmodule Symbiont.Host.Slots do
  @moduledoc """
  The slots of a host: the agents it runs (PROTOCOL.md §8), each a
  `Symbiont.Agent.Server` that attaches to the host and gets a slot in its process.

  The owner keeps `slot => {pid, id, monitor}`; slots are never reused. An agent's
  frames (`agent_ready`, `agent_failed`, `ack`, `nack`, `publish`, `health`) go to its
  server, which writes its deliveries to the port itself; one that leaves (`detach`, or
  its server goes down) frees its slot, its window (§8.2) and its share of the host's
  time (`Symbiont.Host.Usage`), and the process stops it (`agent_stop`). The Python
  modules of the agents are remembered, so that a warm standby imports them ahead
  (`Symbiont.Host.Standby`).

  Every function takes and returns the owner's state; they run in the owner's process.
  """

  alias Symbiont.Host.{Frames, Standby, State, Usage}

  @agent_frames [:agent_ready, :agent_failed, :ack, :nack, :publish, :health]
  # How many agents' modules a standby is asked to import ahead.
  @max_preload 16

  @doc """
  An agent server `pid` (agent `id`, running Python `module` or `nil`) takes the next
  slot: `{slot, port or nil, max_frame}` and the state. The port is the process's when
  it is ready; otherwise `{:host_up, host, port}` follows.
  """
  @spec attach(State.t(), pid, String.t(), String.t() | nil) ::
          {{pos_integer, port | nil, pos_integer}, State.t()}
  def attach(state, pid, id, module) do
    slot = state.next_slot
    state = preload(state, module)
    slots = Map.put(state.slots, slot, {pid, id, Process.monitor(pid)})
    port = if state.status == :ready, do: state.port

    {{slot, port, state.config.max_frame}, %{state | slots: slots, next_slot: slot + 1}}
  end

  defp preload(state, module)
       when is_binary(module) and length(state.preload) < @max_preload do
    if module in state.preload do
      state
    else
      preload = [module | state.preload]
      if state.launch_key, do: Standby.learn(state.launch_key, preload)
      %{state | preload: preload}
    end
  end

  defp preload(state, _module), do: state

  @doc "The agent in `slot` left it (it moved to another: `Symbiont.Agent.Server.upgrade/3`)."
  @spec detach(State.t(), pos_integer) :: State.t()
  def detach(state, slot) do
    case Map.pop(state.slots, slot) do
      {nil, _} ->
        state

      {{_pid, id, ref}, slots} ->
        Process.demonitor(ref, [:flush])
        stop(%{state | slots: slots}, slot, id)
    end
  end

  @doc "An agent server went down: its slot in the process is freed (never reused)."
  @spec down(State.t(), pid) :: State.t()
  def down(state, pid) do
    case Enum.find(state.slots, fn {_slot, {p, _id, _ref}} -> p == pid end) do
      nil -> state
      {slot, {_pid, id, _ref}} -> stop(%{state | slots: Map.delete(state.slots, slot)}, slot, id)
    end
  end

  # Its window goes with it (§8.2): publishes for it are dropped uncounted. Its share of
  # the host's time, if it took any, goes at once (a policy must not find it here after
  # it moved).
  defp stop(state, slot, id) do
    if Usage.took?(state.usage, id), do: put_usage(state)

    case state.credit do
      %{} = credit -> stop_frame(%{state | credit: Map.delete(credit, slot)}, slot)
      nil -> stop_frame(state, slot)
    end
  end

  defp stop_frame(%{status: :ready} = state, slot),
    do: Frames.send_frame(state, ["agent_stop", slot])

  defp stop_frame(state, _slot), do: state

  @doc """
  An agent's frame (agent_ready, agent_failed, ack, nack, publish, health), for the agent
  in its slot. One that has just gone away leaves a few behind; they are dropped.
  """
  @spec route(State.t(), tuple) :: State.t()
  def route(state, frame) when elem(frame, 0) in @agent_frames do
    case Map.fetch(state.slots, elem(frame, 1)) do
      {:ok, {pid, _id, _ref}} ->
        send(pid, {:agent_frame, self(), frame})

      :error ->
        Symbiont.Host.log(:debug, fn ->
          "host #{inspect(state.name)}: #{elem(frame, 0)} for a free slot"
        end)
    end

    state
  end

  @doc "What each slot's agent took of the process's time since the last pong (§11.2)."
  @spec busy(State.t(), term) :: State.t()
  def busy(state, busy) do
    ids = Map.new(state.slots, fn {slot, {_pid, id, _ref}} -> {slot, id} end)
    now = System.monotonic_time(:microsecond)
    put_usage(%{state | usage: Usage.add(state.usage, now, busy, ids)})
  end

  # The host's usage row (Symbiont.Host.Usage), for the agents it runs now.
  defp put_usage(state) do
    Usage.put(state.name, state.usage, ids(state))
    state
  end

  @doc "The ids of the agents the host runs."
  @spec ids(State.t()) :: [String.t()]
  def ids(state), do: for({_slot, {_pid, id, _ref}} <- state.slots, do: id)

  @doc """
  The id of the one agent the host runs (a Python agent's host), or `nil` when it runs
  none or several. Constant time: a log line of a host of 2,500 agents asks it.
  """
  @spec sole_id(State.t()) :: String.t() | nil
  def sole_id(%{slots: slots}) when map_size(slots) == 1 do
    [{_slot, {_pid, id, _ref}}] = Map.to_list(slots)
    id
  end

  def sole_id(_state), do: nil

  @doc "The ids of the agents the host runs, by slot."
  @spec sorted_ids(State.t()) :: [String.t()]
  def sorted_ids(state),
    do: state.slots |> Enum.sort() |> Enum.map(fn {_slot, {_pid, id, _ref}} -> id end)

  @doc "The process is up (ready): each agent starts in it, from its last acked state."
  @spec host_up(State.t()) :: :ok
  def host_up(state) do
    for {_slot, {pid, _id, _ref}} <- state.slots, do: send(pid, {:host_up, self(), state.port})
    :ok
  end
end

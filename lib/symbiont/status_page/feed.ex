defmodule Symbiont.StatusPage.Feed do
  @moduledoc false
  # The status page's feed: subscribed to symbiont.health and symbiont.remediation, it keeps
  # the last events (so that a page opened now shows what just happened) and pushes every
  # new event to the open pages' streams. The last health of each agent is
  # Symbiont.Health.History's.
  #
  # Each event gets an id that grows by one, which is also its SSE id: a browser that
  # reconnects sends the last id it saw (Last-Event-ID) and gets only what came after.
  # Ids start from the clock (in µs), so they keep growing across a restart of the feed
  # and a page never takes a new event for one it has shown.

  use GenServer

  @topics %{"symbiont.health" => "health", "symbiont.remediation" => "remediation"}

  @type entry :: %{id: pos_integer, kind: String.t(), at_ms: integer, event: map}

  @spec start_link(keyword) :: GenServer.on_start()
  def start_link(opts), do: GenServer.start_link(__MODULE__, opts, name: __MODULE__)

  @doc "The events kept (oldest first) and how many it keeps."
  @spec snapshot() :: %{events: [entry], keep: pos_integer}
  def snapshot, do: GenServer.call(__MODULE__, :snapshot)

  @doc """
  Makes the caller a listener: it gets `{__MODULE__, entry}` for each new event until it
  exits. Returns the kept events with an id above `after_id`, oldest first.
  """
  @spec listen(non_neg_integer) :: [entry]
  def listen(after_id \\ 0), do: GenServer.call(__MODULE__, {:listen, self(), after_id})

  @doc "Stops sending events to the caller."
  @spec unlisten() :: :ok
  def unlisten, do: GenServer.call(__MODULE__, {:unlisten, self()})

  @impl true
  def init(opts) do
    for topic <- Map.keys(@topics), do: :ok = Symbiont.subscribe(topic)
    keep = Keyword.fetch!(opts, :keep)

    {:ok,
     %{
       keep: keep,
       events: :queue.new(),
       count: 0,
       next_id: System.os_time(:microsecond),
       listeners: %{}
     }}
  end

  @impl true
  def handle_call(:snapshot, _from, state),
    do: {:reply, %{events: :queue.to_list(state.events), keep: state.keep}, state}

  def handle_call({:listen, pid, after_id}, _from, state) do
    listeners = Map.put_new_lazy(state.listeners, pid, fn -> Process.monitor(pid) end)
    backlog = for %{id: id} = e <- :queue.to_list(state.events), id > after_id, do: e
    {:reply, backlog, %{state | listeners: listeners}}
  end

  def handle_call({:unlisten, pid}, _from, state) do
    {ref, listeners} = Map.pop(state.listeners, pid)
    if ref, do: Process.demonitor(ref, [:flush])
    {:reply, :ok, %{state | listeners: listeners}}
  end

  @impl true
  # Within the control plane's sizes only (Symbiont.ControlPlane): an event over them is
  # not decoded, and not shown.
  def handle_info(%Symbiont.Event{topic: topic} = event, state) do
    case decode(event) do
      :over_limit ->
        {:noreply, state}

      payload ->
        entry = %{
          id: state.next_id,
          kind: Map.fetch!(@topics, topic),
          at_ms: System.system_time(:millisecond),
          event: payload
        }

        for pid <- Map.keys(state.listeners), do: send(pid, {__MODULE__, entry})
        {:noreply, remember(state, entry)}
    end
  end

  def handle_info({:DOWN, _ref, :process, pid, _reason}, state),
    do: {:noreply, %{state | listeners: Map.delete(state.listeners, pid)}}

  defp decode(event) do
    case Symbiont.ControlPlane.decode(event) do
      {:ok, %{} = payload} -> payload
      {:ok, other} -> %{"value" => other}
      {:error, {:over_limit, _, _}} -> :over_limit
      {:error, {:over_limit, _, _, _}} -> :over_limit
      {:error, reason} -> %{"error" => "undecodable payload: #{inspect(reason)}"}
    end
  end

  defp remember(state, entry) do
    events = :queue.in(entry, state.events)

    if state.count >= state.keep,
      do: %{state | events: :queue.drop(events), next_id: entry.id + 1},
      else: %{state | events: events, count: state.count + 1, next_id: entry.id + 1}
  end
end

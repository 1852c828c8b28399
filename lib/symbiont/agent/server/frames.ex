defmodule Symbiont.Agent.Server.Frames do
  @moduledoc """
  The frames of an agent's slot (PROTOCOL.md §8) as its server handles them:
  `agent_ready`, `agent_failed`, `ack`, `nack`, `publish` and `health`; the topics it may
  publish on; the credit of its publishes given back to its host (§8.2,
  `Symbiont.Host.Credit`); its subscriptions and timers; and the latency samples of what
  it acks.
  """

  import Symbiont.Agent.Server.State

  require Logger

  alias Symbiont.Agent.{Dedupe, Delivery}
  alias Symbiont.Agent.Server.{Deliveries, Durable, Health, Introspection, Link}
  alias Symbiont.Health.Window
  alias Symbiont.Host.Credit

  @health_topic Symbiont.Health.topic()
  @samples 1000
  # Publishes are given back to the host (PROTOCOL.md §8.2) only while no agent on this
  # node that subscribes to their topics has more than this many messages waiting; else
  # again after @backlog_retry_ms.
  @backlog 4096
  @backlog_retry_ms 2
  # The p99 of its row (Symbiont.Observation) is written again at most this often.
  @observe_ms 1_000

  ## Frames of our slot (PROTOCOL.md §8)

  @doc false
  def frame({:agent_ready, _slot, info}, %{status: :starting} = state) do
    state = subscribe(state, info)

    state =
      %{state | status: :ready}
      |> set(:link, starts: state.link.starts + 1, failures: 0)
      |> set(:analytics, up_at: now_ms(), up_since: System.system_time(:millisecond))

    state = %{state | progress_at: now_ms()}
    state = state |> Health.set_signal(:start, nil, "started") |> Introspection.observe()

    # Deliveries in flight go again, in order; then what waits in the queue (after a crash
    # with several in flight, they are all there: see Link.charge_crash/3).
    state =
      for {seq, what, frame, _attempts, _at} <- Delivery.in_flight(state.delivery),
          reduce: state,
          do: (state -> Deliveries.emit(state, frame, Deliveries.journaled_seq(seq, what)))

    state = Deliveries.drain(state)

    # Last, so that whoever waits for this event finds the agent subscribed and serving.
    Symbiont.Telemetry.execute([:symbiont, :agent, :start], %{}, %{
      agent: state.name,
      id: state.id,
      host: state.host,
      restarts: state.link.starts - 1
    })

    state
  end

  def frame({:agent_failed, _slot, error}, %{status: :starting} = state),
    do: Link.start_failed(state, error, :backoff)

  # An ack of a seq that is no longer in flight (the deliveries went back to the queue, in
  # a quarantine) is dropped with its state: they go again, from the checkpoint before.
  def frame({:ack, _slot, seq, state_bin}, state) do
    case Deliveries.take_inflight(%{state | progress_at: now_ms()}, seq) do
      {[], state} -> state
      {acked, state} -> state |> acked(acked, state_bin, seq) |> Deliveries.drain()
    end
  end

  # The deliveries before the nacked one were handled (the host acks them first).
  def frame({:nack, _slot, seq, error}, state) do
    case Deliveries.take_inflight(%{state | progress_at: now_ms()}, seq) do
      {[], state} ->
        state

      {taken, state} ->
        {before, [{^seq, what, _frame, attempts, _} = failed]} = Enum.split(taken, -1)

        state =
          if before == [],
            do: state |> work([failed], now_us()) |> elem(0),
            else: acked(state, before, state.state_bin, nil)

        Deliveries.handled(state, [failed], :error, error)

        Logger.error(
          "agent #{state.id} failed on #{Deliveries.describe(what)}: #{format_remote_error(error)}",
          meta(state)
        )

        set(state, :link, last_error: error)
        |> Deliveries.retry_or_give_up(what, attempts + 1, "handler_failed", error)
        |> Health.window_failed()
        |> Introspection.observe()
        |> Deliveries.drain()
    end
  end

  # §8.1: the seq of a publish is that of a delivery the agent was given (or of the
  # checkpoint it started from). One above them all is a lie that would poison the memory
  # of `dedupe: true` subscribers (their window would move past every real id): dropped.
  def frame({:publish, slot, topic, payload, {seq, _n}}, %{delivery: %{seq: highest}} = state)
      when seq > highest do
    Logger.error(
      "agent #{state.id}: publish on #{inspect(topic)} with seq #{seq}, above the highest seq delivered (#{highest}), dropped (PROTOCOL.md §8.1)",
      meta(state)
    )

    handled_publish(state, slot, topic, payload)
  end

  def frame({:publish, slot, topic, payload, seq_n}, state) do
    # A refused publish (over :max_topics, or on a topic of the BEAM's) still frees its
    # share of the window.
    case own_topic(state, topic) do
      {:ok, topic, state} ->
        id = with {seq, n} <- seq_n, do: {state.id, state.intake.incarnation, seq, n}
        event = %Symbiont.Event{topic: topic, payload: payload, from: state.name, id: id}
        Symbiont.Mesh.publish(Symbiont.Mesh, event)
        state = set(state, :mesh, published: state.mesh.published + 1)
        handled_publish(state, slot, topic, payload)

      {:refused, state} ->
        handled_publish(state, slot, topic, payload)
    end
  end

  # §8.3: the agent's report about itself, published by this server, stamped with the
  # agent in this slot (its name, replica and version): the frame names nobody.
  def frame({:health, slot, kind, reason, metrics, size}, state) do
    Symbiont.Health.publish(kind, state.name, reason, metrics,
      by: "agent",
      id: state.id,
      version: state.version
    )

    # What it says is one of its signals (see Health.set_signal/5), until it says otherwise or
    # starts again; its own event is on symbiont.health already: not said twice.
    state =
      if kind == "healthy",
        do:
          Health.set_signal(
            state,
            :reported,
            nil,
            if(reason == "", do: "it says so", else: reason),
            kind
          ),
        else: Health.set_signal(state, :reported, {kind, reason, metrics}, nil, kind)

    handled_window(state, slot, @health_topic, size)
  end

  def frame(frame, state) do
    Logger.warning(
      "agent #{state.id}: #{elem(frame, 0)} frame while #{state.status}, dropped",
      meta(state)
    )

    state
  end

  # The :max_topics of "Topics" in Symbiont.Agent, and the BEAM's own topics
  # (Symbiont.ControlPlane), for a host that does not keep to them (the Python host
  # refuses first). The topic an event goes out with is the agent's own copy: the one in
  # the frame is part of the frame's binary, which the topology's row (and every queue it
  # reaches) would otherwise keep alive whole.
  defp own_topic(%{mesh: %{pub_topics: topics}} = state, topic) do
    case topics do
      %{^topic => own} -> {:ok, own, state}
      _ -> new_topic(state, topic, topics)
    end
  end

  defp new_topic(state, topic, topics) do
    max = Symbiont.Agent.max_topics(state.spec)
    max_bytes = Symbiont.Event.max_topic_bytes()

    cond do
      Symbiont.ControlPlane.reserved?(topic) ->
        refuse_reserved(state, topic)

      byte_size(topic) > max_bytes ->
        refuse_topic(
          state,
          "published on a topic of #{byte_size(topic)} bytes (at most #{max_bytes})"
        )

      map_size(topics) >= max ->
        refuse_topic(
          state,
          "published on more than #{max} distinct topics (its :max_topics) since it started; " <>
            "publishes on new topics are refused (the first: #{inspect(topic, printable_limit: 100)})"
        )

      true ->
        own = :binary.copy(topic)
        {:ok, own, set(state, :mesh, pub_topics: Map.put(topics, own, own))}
    end
  end

  defp refuse_topic(state, reason) do
    state = set(state, :mesh, refused_publishes: state.mesh.refused_publishes + 1)

    if state.mesh.topics_told do
      {:refused, state}
    else
      Logger.error("agent #{state.id} #{reason}", meta(state))

      metrics = %{
        "max_topics" => Symbiont.Agent.max_topics(state.spec),
        "refused" => state.mesh.refused_publishes
      }

      {:refused,
       state
       |> set(:mesh, topics_told: true)
       |> Health.set_signal(:topics, {"degraded", reason, metrics})}
    end
  end

  # A host that went around its own refusal (PROTOCOL.md §8): dropped, counted, and
  # logged once per start of the agent.
  defp refuse_reserved(state, topic) do
    state = set(state, :mesh, refused_publishes: state.mesh.refused_publishes + 1)

    if state.mesh.reserved_told do
      {:refused, state}
    else
      Logger.error(
        "agent #{state.id} published on a topic of the BEAM's, dropped: " <>
          "#{Symbiont.ControlPlane.refusal(topic)} (its host did not refuse it; the next " <>
          "ones are dropped without a word)",
        meta(state)
      )

      {:refused, set(state, :mesh, reserved_told: true)}
    end
  end

  ## Flow control of publishes (PROTOCOL.md §8.2, Symbiont.Host.Credit)

  # A publish handled: its share of the window goes back to the host a quarter window at
  # a time. A batch is of one process and slot: a publish of another gives the batch
  # back first (the owner drops what is for a process or slot that is gone).
  defp handled_publish(state, slot, topic, payload),
    do: handled_window(state, slot, topic, Credit.publish_cost(topic, payload))

  # A frame of the slot's window that costs `cost` bytes (a publish; a health report, its
  # frame's size) handled.
  defp handled_window(state, slot, topic, cost) do
    port = state.out.port

    state =
      case state.credit do
        {^port, ^slot, _, _, _, _} ->
          state

        {_, _, _, _, _, retry} ->
          %{give_back(state, :now) | credit: {port, slot, 0, 0, [], retry}}
      end

    {_, _, frames, bytes, topics, retry} = state.credit
    frames = frames + 1
    bytes = bytes + cost
    topics = if topic in topics or length(topics) >= 8, do: topics, else: [topic | topics]
    state = %{state | credit: {port, slot, frames, bytes, topics, retry}}

    if not retry and Credit.due?(frames, bytes),
      do: give_back(state, :checked),
      else: state
  end

  # The publishes go back to the host, unless (:checked) an agent on this node that
  # subscribes to where they went is backlogged: then again after a while, so that a
  # host publishing faster than its subscribers take events in waits for them.
  @doc false
  def give_back(%{credit: {_, _, 0, _, _, _}} = state, _how), do: state

  def give_back(%{credit: {port, slot, frames, bytes, topics, retry}} = state, how) do
    if how == :checked and backlogged?(topics) do
      unless retry, do: Process.send_after(self(), :give_back, @backlog_retry_ms)
      %{state | credit: {port, slot, frames, bytes, topics, true}}
    else
      if port && state.host_pid,
        do: GenServer.cast(state.host_pid, {:credit, port, slot, frames, bytes})

      %{state | credit: {port, slot, 0, 0, [], retry}}
    end
  end

  defp backlogged?(topics) do
    Enum.any?(topics, fn topic ->
      Symbiont.Mesh.local_agents(Symbiont.Mesh, topic)
      |> Enum.any?(
        &match?({:message_queue_len, n} when n > @backlog, Process.info(&1, :message_queue_len))
      )
    end)
  end

  defp acked(state, acked, state_bin, seq) do
    Deliveries.handled(state, acked, :ok)
    n = length(acked)
    now = System.monotonic_time(:millisecond)

    %{
      sample(state, acked)
      | active_at: now,
        delivery: Delivery.handled(state.delivery, n),
        state_bin: state_bin,
        acked_seq: seq || state.acked_seq,
        handled: state.handled + n,
        window: Window.ok(state.window, n)
    }
    |> Durable.journal_ack(acked)
    |> observe_acked(acked, Window.counts(state.window), now)
  end

  # After an ack: a window that had failures may give another health now; the row shows
  # the window as it is while it holds failures or fills (its first 20 deliveries), and a
  # suspect acked is no longer one; otherwise the row (its p99) is written again at most
  # every second.
  defp observe_acked(state, acked, {n, failures}, now) do
    state = if failures > 0, do: Health.rate_signal(state), else: state

    cond do
      failures > 0 or n < Window.size() -> Introspection.observe(state)
      now - state.observed.observed_at >= @observe_ms -> Introspection.observe(state)
      Enum.any?(acked, &(elem(&1, 3) > 0)) -> Introspection.observe(state)
      true -> state
    end
  end

  # A duplicate (by id) of an event a `dedupe: true` agent has accepted is dropped.
  @doc false
  def dedupe(%{dedupe: nil} = state, _event), do: {:ok, state}

  def dedupe(state, event) do
    {result, dedupe} = Dedupe.check(state.dedupe, event.id)
    {result, %{state | dedupe: dedupe}}
  end

  # Topics and timers are taken once: a restarted process runs the same class.
  defp subscribe(%{mesh: %{subscribed: true}} = state, _info), do: state

  defp subscribe(state, info) do
    topics = subscribable(state, List.wrap(info["topics"]))
    timers = List.wrap(info["timers"])
    # Replicas of an agent form a queue group named after it: one of them gets each event.
    for topic <- topics do
      :ok =
        Symbiont.Mesh.subscribe(Symbiont.Mesh, topic,
          group: state.name,
          metadata: %{
            agent: state.name,
            load:
              {state.intake.load, state.spec.max_queue, state.spec.max_queue_bytes,
               state.spec.overflow}
          }
        )
    end

    for %{"name" => name, "every_ms" => ms} <- timers, is_integer(ms) and ms > 0 do
      :timer.send_interval(ms, {:tick, name})
    end

    set(state, :mesh, topics: topics, timers: timers, subscribed: true)
  end

  # At most :max_topics topics of at most max_topic_bytes each ("Topics" in
  # Symbiont.Agent): the Python host fails the start of an agent with more; from a host
  # that does not, the first that fit are taken, and the rest is logged.
  defp subscribable(state, topics) do
    max = Symbiont.Agent.max_topics(state.spec)
    max_bytes = Symbiont.Event.max_topic_bytes()
    {short, long} = topics |> Enum.uniq() |> Enum.split_with(&(byte_size(&1) <= max_bytes))
    {kept, over} = Enum.split(short, max)

    if long != [] or over != [] do
      Logger.error(
        "agent #{state.id} asked for #{length(topics)} topics; subscribed to #{length(kept)} " <>
          "(at most #{max}, its :max_topics, of at most #{max_bytes} bytes each)",
        meta(state)
      )
    end

    Enum.map(kept, &:binary.copy/1)
  end

  # The latencies (send to ack) and handling times of deliveries acked together, now.
  defp sample(state, acked) do
    now = now_us()
    at = div(now, 1000)
    {state, each} = work(state, acked, now)

    samples =
      Enum.reduce(acked, state.samples, fn item, acc ->
        [{at, now - to_us(elem(item, 4)), each} | acc]
      end)

    {n, last, busy} = state.sampling
    n = n + length(acked)

    if n > 2 * @samples,
      do: %{state | samples: Enum.take(samples, @samples), sampling: {@samples, last, busy}},
      else: %{state | samples: samples, sampling: {n, last, busy}}
  end

  # The handler's time on `items` (in the order sent), answered now (µs): from the send of
  # the first, or from the last answer when it waited behind another delivery in the
  # host, to now; shared evenly. Added to the time it has worked in all (busy_us, see
  # Symbiont.Signals). Returns the state and each item's share.
  defp work(state, [{_, _, _, _, sent_at} | _] = items, now) do
    {n, last, busy} = state.sampling
    sent_at = to_us(sent_at)
    from = if last == nil, do: sent_at, else: max(sent_at, last)
    spent = max(now - from, 0)
    {%{state | sampling: {n, now, busy + spent}}, div(spent, length(items))}
  end

  defp now_us, do: System.monotonic_time(:microsecond)

  # A delivery's sent_at (native units, as its telemetry span's) in µs.
  defp to_us(native), do: System.convert_time_unit(native, :native, :microsecond)
end

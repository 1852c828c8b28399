defmodule Symbiont.Agent.Server.Deliveries do
  @moduledoc """
  How an agent server carries out what its `Symbiont.Agent.Delivery` decides: events
  and ticks accepted (or refused, held, dead-lettered), the frames of deliveries written
  to its host (the journal committed first), the queue drained while the credit window
  has room, retries, fallbacks and dead letters, the room checked publishes reserved (the
  load `Symbiont.Mesh` reads), and the telemetry span of each delivery.
  """

  import Symbiont.Agent.Server.State

  require Logger

  alias Symbiont.{Journal, MsgPack}
  alias Symbiont.Agent.Delivery
  alias Symbiont.Agent.Server.{Durable, Frames, Health, Introspection, Link}
  alias Symbiont.Host.{Framer, Out, Protocol}

  # The end of each delivery's [:symbiont, :agent, :handle] span (Symbiont.Telemetry):
  # :stop when acked (:ok), :exception when nacked (:error, with the handler's error) or
  # put back in the queue (:requeued).
  @doc false
  def handled(state, items, result, error \\ nil) do
    if Symbiont.Telemetry.attached?(), do: emit_handled(state, items, result, error)
    :ok
  end

  defp emit_handled(state, items, result, error) do
    now = System.monotonic_time()

    Enum.each(items, fn {seq, what, _frame, attempts, sent_at} ->
      measurements = %{duration: now - sent_at, monotonic_time: now}
      metadata = Map.put(span_metadata(state, seq, what, attempts), :result, result)

      case result do
        :ok ->
          Symbiont.Telemetry.execute([:symbiont, :agent, :handle, :stop], measurements, metadata)

        :error ->
          metadata = Map.merge(metadata, %{kind: :error, reason: error, stacktrace: []})

          Symbiont.Telemetry.execute(
            [:symbiont, :agent, :handle, :exception],
            measurements,
            metadata
          )

        :requeued ->
          metadata =
            Map.merge(metadata, %{result: :error, kind: :exit, reason: :requeued, stacktrace: []})

          Symbiont.Telemetry.execute(
            [:symbiont, :agent, :handle, :exception],
            measurements,
            metadata
          )
      end
    end)
  end

  defp span_metadata(state, seq, what, attempts) do
    {topic, timer} =
      case what do
        %Symbiont.Event{topic: topic} -> {topic, nil}
        {:tick, name, _seq} -> {nil, name}
      end

    %{
      agent: state.name,
      id: state.id,
      host: state.host,
      topic: topic,
      timer: timer,
      attempt: attempts + 1,
      telemetry_span_context: {state.id, seq, attempts}
    }
  end

  ## Deliveries

  # An event from the mesh: accepted, unless it is a copy a `dedupe: true` agent has
  # seen; held while a durable agent's journal cannot be written (when a checked publish
  # admitted it), refused (to the dead letters) otherwise.
  @doc false
  def intake(state, %Symbiont.Event{} = event) do
    Symbiont.Mesh.count_received(Symbiont.Mesh, state.name, event.topic)
    # Admitted by a checked publish on this node, which reserved room here (in the load).
    admitted? = event.reserved

    # Its reservation becomes its place in the queue (accept/3), or goes back as soon as
    # it is known not to be queued (release/3): see reserve/2 in Symbiont.Mesh.
    cond do
      journal_up?(state) ->
        take(state, event, admitted?, &accept(&1, &2, admitted?))

      admitted? and Journal.opened?(state.journal) ->
        take(
          state,
          event,
          admitted?,
          &(&1 |> release(true, &2) |> hold(&2))
        )

      true ->
        state |> release(admitted?, event) |> refuse(event)
    end
  end

  # An event or tick: sent at once while the credit window has room and nothing waits
  # before it, queued otherwise; a queue full in events or in bytes applies the overflow
  # policy. One larger than the queue may hold in bytes goes to the dead letters.
  # `admitted?`: a checked publish reserved room for it in the load (Symbiont.Mesh): a
  # :reject queue takes it whatever it holds now (more than its bounds only while failed
  # deliveries wait to be tried again: they go back to the queue as they fail), and the
  # reservation becomes its place in the queue, or goes back if it is not queued.
  @doc false
  def accept(state, what, admitted? \\ false) do
    %{spec: spec, delivery: delivery} = state
    size = Delivery.size_of(what)

    admission =
      Delivery.admission(delivery, size,
        max_queue_bytes: spec.max_queue_bytes,
        overflow: spec.overflow,
        admitted?: admitted?,
        sendable?: sendable?(state, size),
        room?: room?(state, size)
      )

    case admission do
      :too_large ->
        state |> release(admitted?, what) |> too_large_to_queue(what, size)

      :send ->
        state |> release(admitted?, what) |> send_delivery(what, 0)

      :enqueue ->
        state |> enqueue(what, size, admitted?) |> Health.check_load()

      :drop_oldest ->
        {dropped, delivery} = Delivery.make_room(delivery, size, spec)
        state = put_delivery(state, delivery)
        state = Enum.reduce(dropped, state, &overflowed(&2, &1))
        state |> enqueue(what, size, admitted?) |> Health.check_load()

      :overflow ->
        state |> release(admitted?, what) |> overflowed(what)
    end
  end

  # Room for an event of `size` bytes that no publisher reserved room for. In a :reject
  # queue, beside the reservations on their way (the load's slots count the queue and
  # them), so that it never takes the room of an event a publisher was told :ok for; in
  # a :drop_oldest one (which promises no publisher anything), in the queue itself.
  defp room?(%{spec: %{overflow: :reject} = spec} = state, size) do
    load = state.intake.load

    :atomics.get(load, 1) < spec.max_queue and
      :atomics.get(load, 3) + size <= spec.max_queue_bytes
  end

  defp room?(state, size), do: Delivery.room?(state.delivery, size, state.spec)

  # An event its queue could never hold (a checked publish is refused it, as :too_large).
  defp too_large_to_queue(state, what, size) do
    message =
      "#{describe(what)} has a payload of #{size} bytes, over the max_queue_bytes of agent " <>
        "#{inspect(state.id)} (#{state.spec.max_queue_bytes} bytes)"

    Logger.error("agent #{state.id}: #{message}; dead-lettered", meta(state))
    error = %{"type" => "queue_too_large", "message" => message, "traceback" => ""}
    dead_letter(state, what, "too_large", 0, error)
    Durable.journal_done(set(state, :intake, dropped: state.intake.dropped + 1), [what])
  end

  # An event the agent takes (`then`: accept/3, or hold/2 while its journal cannot be
  # written), unless it is a copy a `dedupe: true` agent has seen.
  defp take(state, event, admitted?, then) do
    case Frames.dedupe(state, event) do
      {:ok, state} ->
        {event, state} = number(state, event)
        {event, state} = Durable.journal_accept(state, event)
        then.(%{state | active_at: System.monotonic_time(:millisecond)}, event)

      {:duplicate, state} ->
        release(state, admitted?, event)
    end
  end

  # The room a checked publish reserved for an event that will not be queued goes back.
  defp release(state, false, _what), do: state

  defp release(state, true, what) do
    :atomics.sub(state.intake.load, 1, 1)
    :atomics.sub(state.intake.load, 3, Delivery.size_of(what))
    state
  end

  # While its journal cannot be written, a durable agent refuses events (to the dead
  # letters)...
  defp refuse(state, event) do
    dead_letter(state, event, "journal_unavailable", 0, %{
      "type" => "journal_unavailable",
      "message" => Journal.format_error(Journal.error(state.journal)),
      "traceback" => ""
    })

    set(state, :intake, refused: state.intake.refused + 1)
  end

  # ... but one that a checked publish admitted before it failed (its publisher was told
  # :ok) is held, to be journaled with the others once the disk takes writes again.
  defp hold(state, event), do: set(state, :intake, held: state.intake.held ++ [{event, 0}])

  defp journal_up?(%{journal: nil}), do: true
  defp journal_up?(%{journal: journal}), do: Journal.available?(journal)

  # The next seq, for an event (in the event: its Symbiont.Event.seq) or a tick
  # ({:tick, name, seq}).
  @doc false
  def number(state, what) do
    {what, delivery} = Delivery.number(state.delivery, what)
    {what, %{state | delivery: delivery}}
  end

  # Deliveries may go while a process runs the agent and it is not upgrading, moving or
  # retiring: see Delivery.sendable?/4 for the credit window (one at a time while on
  # probation).
  defp sendable?(state, size),
    do: Delivery.sendable?(state.delivery, size, open?(state), state.spec)

  defp open?(%{status: :ready, lifecycle: %{upgrading: nil, retiring: nil, moving: nil}}),
    do: true

  defp open?(_state), do: false

  # An item of `size` bytes goes to the back of the queue; `reserved?`: the load counts it
  # already (a checked publish reserved its room), and the reservation is now its place.
  defp enqueue(state, what, size, reserved?) do
    delivery = Delivery.enqueue(state.delivery, what, 0)
    put_delivery(state, delivery, if(reserved?, do: {1, size}, else: {0, 0}))
  end

  # The queue and the load publishers read change together (the load holds their
  # reservations too: it changes by as much as the queue, never set). `reserved`: the
  # room a checked publish reserved that is now an item's place in the queue.
  @doc false
  def put_delivery(state, delivery, reserved \\ {0, 0}) do
    %{queued: n0, queued_bytes: b0} = state.delivery
    {rn, rb} = reserved
    load = state.intake.load
    dn = delivery.queued - n0 - rn
    db = delivery.queued_bytes - b0 - rb
    if dn != 0, do: :atomics.add(load, 1, dn)
    if db != 0, do: :atomics.add(load, 3, db)
    %{state | delivery: delivery}
  end

  # After a failed attempt (a nack, or the host dying while on it): again, first in line,
  # until max_attempts; then the dead letters, with the attempts and the last error (see
  # Delivery.verdict/4).
  @doc false
  def retry_or_give_up(state, what, attempts, reason, error) do
    verdict = Delivery.verdict(what, attempts, state.spec.max_attempts, fallback?(state))
    delivery = if verdict == :retry, do: Delivery.push_front(state.delivery, what, attempts)

    failed(
      put_delivery(state, delivery || state.delivery),
      what,
      attempts,
      verdict,
      reason,
      error
    )
  end

  @doc false
  def fallback?(state), do: is_pid(state.intake.fallback)

  # A failed attempt's verdict carried out (the delivery already has a retried one back).
  @doc false
  def failed(state, _what, _attempts, :retry, _reason, _error),
    do: set(state, :intake, redelivered: state.intake.redelivered + 1)

  def failed(state, what, _attempts, :fallback, _reason, _error) do
    send(state.intake.fallback, what)
    Durable.journal_done(%{state | failed: state.failed + 1}, [what])
  end

  def failed(state, what, attempts, :give_up, reason, error) do
    dead_letter(state, what, reason, attempts, error)
    Durable.journal_done(%{state | failed: state.failed + 1}, [what])
  end

  defp overflowed(state, what) do
    dead_letter(state, what, "overloaded", 0, nil)
    Durable.journal_done(set(state, :intake, dropped: state.intake.dropped + 1), [what])
  end

  defp send_delivery(state, what, attempts) do
    seq = Delivery.seq_of(what)

    fields =
      case what do
        %Symbiont.Event{topic: topic, payload: payload} ->
          ["event", state.slot, seq, topic, %MsgPack.Bin{data: payload}]

        {:tick, name, _seq} ->
          ["tick", state.slot, seq, name]
      end

    frame = framed(fields)

    if IO.iodata_length(frame) - 4 > state.link.max_frame,
      do: too_large(state, what, IO.iodata_length(frame) - 4),
      else: put_in_flight(state, seq, what, frame, attempts)
  end

  # PROTOCOL.md §1.4: the host would have to refuse the frame and restart, again at each
  # attempt. The event goes to the dead letters at once, the agent goes on.
  defp too_large(state, what, size) do
    message =
      "#{describe(what)} makes a frame of #{size} bytes, over the max_frame of host #{inspect(state.host)} (#{state.link.max_frame} bytes)"

    Logger.error("agent #{state.id}: #{message}; dead-lettered", meta(state))
    error = %{"type" => "frame_too_large", "message" => message, "traceback" => ""}
    dead_letter(state, what, "too_large", 0, error)

    Durable.journal_done(set(%{state | failed: state.failed + 1}, :link, last_error: error), [
      what
    ])
  end

  defp put_in_flight(state, seq, what, frame, attempts) do
    progress_at = if state.delivery.in_flight == 0, do: now_ms(), else: state.progress_at
    sent_at = System.monotonic_time()

    if Symbiont.Telemetry.attached?() do
      Symbiont.Telemetry.execute(
        [:symbiont, :agent, :handle, :start],
        %{monotonic_time: sent_at, system_time: System.system_time()},
        span_metadata(state, seq, what, attempts)
      )
    end

    %{
      state
      | delivery: Delivery.put_in_flight(state.delivery, what, frame, attempts, sent_at),
        progress_at: progress_at
    }
    |> emit(frame, journaled_seq(seq, what))
    |> Link.arm_stall_check()
  end

  @doc false
  def framed(fields), do: fields |> Protocol.encode() |> Framer.frame()

  # A batch of frames that this one fills is written at once: the journal goes first. A
  # delivery of event `jid` whose journal record that commit failed to write is not
  # emitted: the event was moved to the held ones (Durable.journal_failed/2).
  @doc false
  def emit(state, frame, jid \\ nil)

  def emit(%{journal: j} = state, frame, jid) when j != nil do
    state = if Out.flushes?(state.out, frame), do: Durable.commit(state), else: state

    if jid != nil and not Journal.available?(state.journal) and
         not Journal.durable?(state.journal, jid),
       do: state,
       else: %{state | out: Out.emit(state.out, frame)}
  end

  def emit(state, frame, _jid), do: %{state | out: Out.emit(state.out, frame)}

  # The journal's number of a delivery: events have one, ticks are not journaled.
  @doc false
  def journaled_seq(seq, %Symbiont.Event{}), do: seq
  def journaled_seq(_seq, _tick), do: nil

  # Sends what waits while the credit window has room.
  @doc false
  def drain(%{delivery: %{queued: 0}} = state), do: Health.check_load(state)

  def drain(state) do
    {what, attempts} = Delivery.peek(state.delivery)

    if sendable?(state, Delivery.size_of(what)) do
      {_item, delivery} = Delivery.pop(state.delivery)

      state
      |> put_delivery(delivery)
      |> send_delivery(what, attempts)
      |> drain()
    else
      Health.check_load(state)
    end
  end

  # Removes the delivery `seq` and those sent before it from the flight (Delivery.ack/2).
  @doc false
  def take_inflight(state, seq) do
    {taken, delivery} = Delivery.ack(state.delivery, seq)
    {taken, %{state | delivery: delivery}}
  end

  # An agent that consumes the dead letters and fails on one would feed it back to itself
  # for ever: a dead letter that dies again is logged, and goes no further.
  @doc false
  def dead_letter(state, %Symbiont.Event{topic: "symbiont.dead_letter"}, reason, _, error) do
    Logger.error(
      "agent #{state.id} gave up on a dead letter (#{reason}): #{inspect(error && error["message"])}; dropped",
      meta(state)
    )
  end

  def dead_letter(state, what, reason, attempts, error) do
    {topic, payload} =
      case what do
        %Symbiont.Event{topic: t, payload: p} -> {t, %MsgPack.Bin{data: p}}
        {:tick, name, _seq} -> {"$tick", name}
      end

    letter = %{
      "agent" => state.name,
      "topic" => topic,
      "payload" => payload,
      "reason" => reason,
      "attempts" => attempts,
      "error" => error
    }

    with {:ok, event} <- Symbiont.Event.new("symbiont.dead_letter", letter, state.name),
         do: Symbiont.Mesh.broadcast(Symbiont.Mesh, event.topic, event)
  end

  @doc false
  def describe(%Symbiont.Event{topic: t}), do: "an event on #{inspect(t)}"
  def describe({:tick, name, _seq}), do: "timer #{inspect(name)}"

  # The suspect taken out of the queue, to the dead letters (drop_suspect/2 of
  # Symbiont.Agent.Server).
  @doc false
  def drop_suspect(state, why) do
    case Delivery.take_suspect(state.delivery) do
      :error ->
        {{:error, :no_suspect}, state}

      {:ok, {what, attempts}, delivery} ->
        dead_letter(state, what, "poison", attempts, %{"message" => why})
        state = put_delivery(state, delivery)
        state = state |> Durable.journal_done([what]) |> Durable.commit()
        topic = with %Symbiont.Event{topic: t} <- what, do: t, else: (_ -> nil)
        state = Introspection.observe(%{state | failed: state.failed + 1})
        {{:ok, %{topic: topic, attempts: attempts}}, state}
    end
  end

  # Ticks coalesce: while the agent is behind (events waiting) or the same tick is still
  # in flight, another one would only pile up.
  @doc false
  def tick(state, name) do
    if Delivery.tick_busy?(state.delivery, name) do
      state
    else
      {tick, state} = number(state, {:tick, name})
      accept(state, tick)
    end
  end
end

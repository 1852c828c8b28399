defmodule Symbiont.Agent.Delivery do
  @moduledoc """
  The at-least-once bookkeeping of one agent, as a pure data structure: its queue, its
  deliveries in flight and the credit window over them, the seq it numbers what it
  accepts with, the overflow and retry decisions, and the probation after a crash.

  It owns no process, timer, port or journal: each function takes a delivery and returns
  the new one, with what was decided (the items to dead-letter, to charge, to requeue)
  for `Symbiont.Agent.Server` to carry out. So every rule here is tested without a host
  (`test/symbiont/agent/delivery_test.exs`).

  Two kinds of item:

    * waiting, in the queue: `{what, attempts}`, `what` an event (`Symbiont.Event`, its
      `:seq` set by `number/2`) or a tick (`{:tick, name, seq}`), `attempts` the failed
      attempts so far;
    * in flight, in the order sent: `{seq, what, frame, attempts, sent_at}`, `frame` and
      `sent_at` kept for the server (the bytes sent again after a restart; when it was
      sent, in native units).

  The seq an item is given when accepted stays with it when it is delivered again (after
  a crash, a nack, a quarantine), so that what its handler publishes again has the same
  ids (PROTOCOL.md §8.1).
  """

  alias Symbiont.Event

  defstruct queue: :queue.new(),
            queued: 0,
            queued_bytes: 0,
            inflight: :queue.new(),
            in_flight: 0,
            inflight_bytes: 0,
            seq: 0,
            probation: 0

  @typedoc "An event or a tick, numbered (see `number/2`)."
  @type what :: Event.t() | {:tick, String.t(), non_neg_integer}
  @typedoc "A waiting item: what, and its failed attempts so far."
  @type item :: {what, non_neg_integer}
  @typedoc "A delivery in flight: seq, what, its frame, failed attempts so far, sent at."
  @type flight :: {non_neg_integer, what, iodata, non_neg_integer, integer}
  @typedoc """
  * `:queue`, `:queued`, `:queued_bytes` - the waiting items, their count and payload bytes;
  * `:inflight`, `:in_flight`, `:inflight_bytes` - the same for the deliveries in flight;
  * `:seq` - the seq of the last item numbered;
  * `:probation` - how many deliveries are still to go one at a time (see `crash/4`).
  """
  @type t :: %__MODULE__{
          queue: :queue.queue(item),
          queued: non_neg_integer,
          queued_bytes: non_neg_integer,
          inflight: :queue.queue(flight),
          in_flight: non_neg_integer,
          inflight_bytes: non_neg_integer,
          seq: non_neg_integer,
          probation: non_neg_integer
        }
  @typedoc "What becomes of an item that failed: again, to the fallback, or given up."
  @type verdict :: :retry | :fallback | :give_up
  @typedoc "What becomes of an item that arrives (see `admission/3`)."
  @type admission :: :too_large | :send | :enqueue | :drop_oldest | :overflow

  @doc """
  An empty delivery whose next item gets seq `seq + 1`.

      iex> Symbiont.Agent.Delivery.new().seq
      0
  """
  @spec new(non_neg_integer) :: t
  def new(seq \\ 0) when is_integer(seq) and seq >= 0, do: %__MODULE__{seq: seq}

  @doc """
  The payload bytes of an event (a tick has none).

      iex> Symbiont.Agent.Delivery.size_of({:tick, "t", 1})
      0
  """
  @spec size_of(what | {:tick, String.t()}) :: non_neg_integer
  def size_of(%Event{payload: payload}), do: byte_size(payload)
  def size_of(_tick), do: 0

  @doc "The seq of a numbered event or tick."
  @spec seq_of(what) :: non_neg_integer
  def seq_of(%Event{seq: seq}), do: seq
  def seq_of({:tick, _name, seq}), do: seq

  @doc """
  Numbers an event or a tick (`{:tick, name}`) with the next seq: in the event (its
  `:seq`), or as `{:tick, name, seq}`.

      iex> {tick, d} = Symbiont.Agent.Delivery.number(Symbiont.Agent.Delivery.new(), {:tick, "t"})
      iex> {tick, d.seq}
      {{:tick, "t", 1}, 1}
  """
  @spec number(t, Event.t() | {:tick, String.t()}) :: {what, t}
  def number(%__MODULE__{seq: seq} = d, %Event{} = event),
    do: {%{event | seq: seq + 1}, %{d | seq: seq + 1}}

  def number(%__MODULE__{seq: seq} = d, {:tick, name}),
    do: {{:tick, name, seq + 1}, %{d | seq: seq + 1}}

  @doc "Numbers from above `seq` on, if that is higher (a checkpoint or journal restored)."
  @spec seen_seq(t, non_neg_integer) :: t
  def seen_seq(%__MODULE__{} = d, seq), do: %{d | seq: max(d.seq, seq)}

  @doc """
  The credit window: how many deliveries may be in flight. None while it may not send
  (`open?` false: no process runs the agent, or it is upgrading, moving, retiring); one
  at a time while on probation; else `max_in_flight`.
  """
  @spec window(t, boolean, pos_integer) :: non_neg_integer
  def window(_d, false, _max_in_flight), do: 0
  def window(%__MODULE__{probation: 0}, true, max_in_flight), do: max_in_flight
  def window(%__MODULE__{}, true, _max_in_flight), do: 1

  @doc """
  Whether a delivery of `size` payload bytes may go now: fewer in flight than the window,
  and their bytes within `:max_in_flight_bytes` with it, unless none is in flight (so that
  an event of any size the host takes goes).
  """
  @spec sendable?(t, non_neg_integer, boolean, map) :: boolean
  def sendable?(%__MODULE__{} = d, size, open?, %{max_in_flight: max, max_in_flight_bytes: b}) do
    d.in_flight < window(d, open?, max) and
      (d.in_flight == 0 or d.inflight_bytes + size <= b)
  end

  @doc """
  Whether the queue itself has room for an item of `size` bytes (the rule of a
  `:drop_oldest` queue; a `:reject` one also counts the room publishers reserved, which
  the server knows).
  """
  @spec room?(t, non_neg_integer, map) :: boolean
  def room?(%__MODULE__{} = d, size, %{max_queue: max, max_queue_bytes: max_bytes}),
    do: d.queued < max and d.queued_bytes + size <= max_bytes

  @doc """
  What becomes of an item of `size` bytes that arrives: `:too_large` (over
  `:max_queue_bytes`: the queue could never hold it), `:send` (nothing waits and it is
  `sendable?`), `:enqueue` (there is `room?`, or `admitted?` into a `:reject` queue: a
  checked publish reserved its room), `:drop_oldest` (make room, then enqueue) or
  `:overflow` (a full `:reject` queue: it is dropped).

      iex> d = Symbiont.Agent.Delivery.new()
      iex> Symbiont.Agent.Delivery.admission(d, 10, max_queue_bytes: 5, overflow: :reject, sendable?: true, room?: true)
      :too_large
  """
  @spec admission(t, non_neg_integer, keyword) :: admission
  def admission(%__MODULE__{} = d, size, opts) do
    overflow = Keyword.fetch!(opts, :overflow)

    cond do
      size > Keyword.fetch!(opts, :max_queue_bytes) -> :too_large
      d.queued == 0 and Keyword.fetch!(opts, :sendable?) -> :send
      Keyword.get(opts, :admitted?, false) and overflow == :reject -> :enqueue
      Keyword.fetch!(opts, :room?) -> :enqueue
      overflow == :drop_oldest -> :drop_oldest
      true -> :overflow
    end
  end

  @doc "Puts `what` at the back of the queue, with its failed `attempts`."
  @spec enqueue(t, what, non_neg_integer) :: t
  def enqueue(%__MODULE__{} = d, what, attempts \\ 0) do
    %{
      d
      | queue: :queue.in({what, attempts}, d.queue),
        queued: d.queued + 1,
        queued_bytes: d.queued_bytes + size_of(what)
    }
  end

  @doc "Puts `what` at the front of the queue (first in line), with its failed `attempts`."
  @spec push_front(t, what, non_neg_integer) :: t
  def push_front(%__MODULE__{} = d, what, attempts) do
    %{
      d
      | queue: :queue.in_r({what, attempts}, d.queue),
        queued: d.queued + 1,
        queued_bytes: d.queued_bytes + size_of(what)
    }
  end

  @doc "Puts `items` at the back of the queue, in order."
  @spec append(t, [item]) :: t
  def append(%__MODULE__{} = d, items) do
    %{
      d
      | queue: :queue.join(d.queue, :queue.from_list(items)),
        queued: d.queued + length(items),
        queued_bytes: d.queued_bytes + queued_bytes(items)
    }
  end

  @doc """
  `:drop_oldest`: takes the oldest waiting items out until one of `size` bytes fits (it
  does in an empty queue). Returns what was dropped, the oldest first.
  """
  @spec make_room(t, non_neg_integer, map) :: {[what], t}
  def make_room(%__MODULE__{} = d, size, limits), do: make_room(d, size, limits, [])

  defp make_room(d, size, limits, dropped) do
    if d.queued > 0 and not room?(d, size, limits) do
      {{:value, {oldest, _attempts}}, queue} = :queue.out(d.queue)

      d = %{
        d
        | queue: queue,
          queued: d.queued - 1,
          queued_bytes: d.queued_bytes - size_of(oldest)
      }

      make_room(d, size, limits, [oldest | dropped])
    else
      {Enum.reverse(dropped), d}
    end
  end

  @doc "The item first in line, or `nil`."
  @spec peek(t) :: item | nil
  def peek(%__MODULE__{queue: queue}) do
    case :queue.peek(queue) do
      {:value, item} -> item
      :empty -> nil
    end
  end

  @doc "Takes the item first in line out of the queue (see `peek/1`)."
  @spec pop(t) :: {item, t}
  def pop(%__MODULE__{} = d) do
    {{:value, {what, _} = item}, queue} = :queue.out(d.queue)

    {item,
     %{d | queue: queue, queued: d.queued - 1, queued_bytes: d.queued_bytes - size_of(what)}}
  end

  @doc "Takes every waiting item out of the queue, in order."
  @spec take_queue(t) :: {[item], t}
  def take_queue(%__MODULE__{} = d),
    do: {:queue.to_list(d.queue), %{d | queue: :queue.new(), queued: 0, queued_bytes: 0}}

  @doc "A delivery sent: it is in flight, after those sent before it."
  @spec put_in_flight(t, what, iodata, non_neg_integer, integer) :: t
  def put_in_flight(%__MODULE__{} = d, what, frame, attempts, sent_at) do
    %{
      d
      | inflight: :queue.in({seq_of(what), what, frame, attempts, sent_at}, d.inflight),
        in_flight: d.in_flight + 1,
        inflight_bytes: d.inflight_bytes + size_of(what)
    }
  end

  @doc """
  An ack (or a nack) of `seq`: the delivery `seq` and those sent before it leave the
  flight, in the order sent (acks are cumulative in the order sent, PROTOCOL.md §8, which
  is the order of seqs but for a retry sent behind later ones). Nothing when `seq` is not
  in flight (they went back to the queue). What was acked shortens the probation
  through `handled/2`.
  """
  @spec ack(t, non_neg_integer) :: {[flight], t}
  def ack(%__MODULE__{} = d, seq) do
    case take_through(d.inflight, seq, []) do
      nil ->
        {[], d}

      {taken, rest} ->
        {taken,
         %{
           d
           | inflight: rest,
             in_flight: d.in_flight - length(taken),
             inflight_bytes: d.inflight_bytes - inflight_bytes(taken)
         }}
    end
  end

  defp take_through(queue, seq, acc) do
    case :queue.out(queue) do
      {{:value, {^seq, _, _, _, _} = item}, rest} -> {:lists.reverse([item | acc]), rest}
      {{:value, item}, rest} -> take_through(rest, seq, [item | acc])
      {:empty, _} -> nil
    end
  end

  @doc "`n` deliveries handled: the probation is that much shorter."
  @spec handled(t, non_neg_integer) :: t
  def handled(%__MODULE__{} = d, n), do: %{d | probation: max(0, d.probation - n)}

  @doc """
  What becomes of `what` after a failed attempt, its `attempts`-th: to the `fallback`
  (an event, when there is one: a canary hands its failures to the stable version),
  `:retry` while under `max_attempts`, else `:give_up` (the dead letters).

      iex> Symbiont.Agent.Delivery.verdict({:tick, "t", 1}, 3, 3, false)
      :give_up
  """
  @spec verdict(what, pos_integer, pos_integer, boolean) :: verdict
  def verdict(%Event{}, _attempts, _max_attempts, true), do: :fallback
  def verdict(_what, attempts, max_attempts, _fallback?) when attempts < max_attempts, do: :retry
  def verdict(_what, _attempts, _max_attempts, _fallback?), do: :give_up

  @doc """
  The deliveries in flight go back to the front of the queue, in order, with their
  attempts (uncharged). Returns them.
  """
  @spec requeue_inflight(t) :: {[flight], t}
  def requeue_inflight(%__MODULE__{in_flight: 0} = d),
    do: {[], %{d | inflight: :queue.new(), inflight_bytes: 0}}

  def requeue_inflight(%__MODULE__{} = d) do
    items = :queue.to_list(d.inflight)

    queue =
      List.foldr(items, d.queue, fn {_, what, _, attempts, _}, q ->
        :queue.in_r({what, attempts}, q)
      end)

    {items,
     %{
       d
       | queue: queue,
         queued: d.queued + d.in_flight,
         queued_bytes: d.queued_bytes + d.inflight_bytes,
         inflight: :queue.new(),
         in_flight: 0,
         inflight_bytes: 0
     }}
  end

  @doc """
  Its host's process died, and that is charged to this agent. Which delivery killed it?

    * `running` a seq (the host's flight recorder says which was running, PROTOCOL.md
      §11.1): that one is charged an attempt, the others go back uncharged, in order;
    * `:none`: none was running; all go back uncharged;
    * `nil` (no recorder; acks are batched, so with several in flight the oldest unacked
      may well have been handled): with one in flight it is the culprit and is charged;
      with several they all go back uncharged, and the agent is on probation: they go one
      at a time until each is acked, so that a crash meanwhile has exactly one suspect.

  The charged delivery's `verdict/4` (with `max_attempts` and `fallback?`) is taken: on
  `:retry` it goes back with the others, in its place, one attempt more. Returns the
  deliveries requeued uncharged, and the charged one with its verdict (or `nil`).
  """
  @spec crash(t, non_neg_integer | :none | nil, pos_integer, boolean) ::
          {[flight], {flight, verdict} | nil, t}
  def crash(%__MODULE__{in_flight: 0} = d, _running, _max, _fallback?), do: {[], nil, d}

  def crash(%__MODULE__{} = d, :none, _max, _fallback?) do
    {requeued, d} = requeue_inflight(d)
    {requeued, nil, d}
  end

  def crash(%__MODULE__{} = d, seq, max, fallback?) when is_integer(seq) do
    case Enum.split_while(:queue.to_list(d.inflight), &(elem(&1, 0) != seq)) do
      {before, [{_, what, _, attempts, _} = running | later]} ->
        {later_items, d} = requeue_inflight(keep_inflight(d, later))
        verdict = verdict(what, attempts + 1, max, fallback?)
        d = if verdict == :retry, do: push_front(d, what, attempts + 1), else: d
        {before_items, d} = requeue_inflight(keep_inflight(d, before))
        {before_items ++ later_items, {running, verdict}, d}

      {_, []} ->
        crash(d, :none, max, fallback?)
    end
  end

  def crash(%__MODULE__{in_flight: 1} = d, nil, max, fallback?) do
    {{:value, {_seq, what, _frame, attempts, _at} = running}, rest} = :queue.out(d.inflight)
    d = %{d | inflight: rest, in_flight: 0, inflight_bytes: 0, probation: max(d.probation, 1)}
    verdict = verdict(what, attempts + 1, max, fallback?)
    d = if verdict == :retry, do: push_front(d, what, attempts + 1), else: d
    {[], {running, verdict}, d}
  end

  def crash(%__MODULE__{} = d, nil, _max, _fallback?) do
    {requeued, d} = requeue_inflight(%{d | probation: max(d.probation, d.in_flight)})
    {requeued, nil, d}
  end

  defp keep_inflight(d, items),
    do: %{
      d
      | inflight: :queue.from_list(items),
        in_flight: length(items),
        inflight_bytes: inflight_bytes(items)
    }

  @doc """
  Takes the suspect out of the queue: the first waiting item that has failed before.
  `:error` when none waits.
  """
  @spec take_suspect(t) :: {:ok, item, t} | :error
  def take_suspect(%__MODULE__{} = d) do
    case Enum.split_while(:queue.to_list(d.queue), fn {_what, attempts} -> attempts == 0 end) do
      {_, []} ->
        :error

      {before, [{what, _attempts} = item | rest]} ->
        {:ok, item,
         %{
           d
           | queue: :queue.from_list(before ++ rest),
             queued: d.queued - 1,
             queued_bytes: d.queued_bytes - size_of(what)
         }}
    end
  end

  @doc """
  The first delivery that has failed before, in flight or among the first `scan` waiting
  (one that failed goes back to the front): `%{topic, attempts}`, a tick's topic
  `"$tick:" <> name`; `nil` for none.
  """
  @spec suspect(t, non_neg_integer) :: %{topic: String.t(), attempts: pos_integer} | nil
  def suspect(%__MODULE__{} = d, scan) do
    inflight =
      for {_seq, what, _frame, attempts, _at} <- :queue.to_list(d.inflight),
          do: {what, attempts}

    {front, _rest} = :queue.split(min(scan, d.queued), d.queue)

    Enum.find_value(inflight ++ :queue.to_list(front), fn
      {%Event{topic: topic}, attempts} when attempts > 0 ->
        %{topic: topic, attempts: attempts}

      {{:tick, name, _seq}, attempts} when attempts > 0 ->
        %{topic: "$tick:" <> name, attempts: attempts}

      _ ->
        nil
    end)
  end

  @doc "Whether a tick `name` should wait: items wait, or the same tick is in flight."
  @spec tick_busy?(t, String.t()) :: boolean
  def tick_busy?(%__MODULE__{} = d, name) do
    d.queued > 0 or
      Enum.any?(:queue.to_list(d.inflight), &match?({_, {:tick, ^name, _}, _, _, _}, &1))
  end

  @doc "The seq of the only delivery in flight, else `nil`."
  @spec only_in_flight(t) :: non_neg_integer | nil
  def only_in_flight(%__MODULE__{in_flight: 1, inflight: inflight}),
    do: inflight |> :queue.get() |> elem(0)

  def only_in_flight(%__MODULE__{}), do: nil

  @doc "The events in flight and waiting (not the ticks), in flight first."
  @spec events(t) :: [Event.t()]
  def events(%__MODULE__{} = d) do
    inflight = for {_seq, %Event{} = e, _, _, _} <- :queue.to_list(d.inflight), do: e
    queued = for {%Event{} = e, _} <- :queue.to_list(d.queue), do: e
    inflight ++ queued
  end

  @doc """
  Takes out of the flight and the queue the events for which `fun` is true. Returns those
  in flight and those waiting, each as an item (`{what, attempts}`), and the frames of
  those in flight.
  """
  @spec take_events(t, (Event.t() -> boolean)) :: {[item], [item], [iodata], t}
  def take_events(%__MODULE__{} = d, fun) do
    pick? = fn what -> match?(%Event{}, what) and fun.(what) end
    {gone, inflight} = Enum.split_with(:queue.to_list(d.inflight), &pick?.(elem(&1, 1)))
    {waiting, queue} = Enum.split_with(:queue.to_list(d.queue), &pick?.(elem(&1, 0)))
    frames = Enum.map(gone, &elem(&1, 2))
    gone = for {_seq, what, _frame, attempts, _at} <- gone, do: {what, attempts}

    {gone, waiting, frames,
     %{
       d
       | inflight: :queue.from_list(inflight),
         in_flight: length(inflight),
         inflight_bytes: inflight_bytes(inflight),
         queue: :queue.from_list(queue),
         queued: length(queue),
         queued_bytes: queued_bytes(queue)
     }}
  end

  @doc "The flight, in the order sent."
  @spec in_flight(t) :: [flight]
  def in_flight(%__MODULE__{inflight: inflight}), do: :queue.to_list(inflight)

  defp queued_bytes(items), do: Enum.reduce(items, 0, &(size_of(elem(&1, 0)) + &2))
  defp inflight_bytes(items), do: Enum.reduce(items, 0, &(size_of(elem(&1, 1)) + &2))
end

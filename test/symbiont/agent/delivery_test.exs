defmodule Symbiont.Agent.DeliveryTest do
  # The at-least-once rules of an agent, without a host, a port or Python.
  use ExUnit.Case, async: true

  alias Symbiont.Agent.Delivery
  alias Symbiont.Event

  doctest Delivery

  @limits %{max_queue: 3, max_queue_bytes: 10, max_in_flight: 2, max_in_flight_bytes: 8}

  defp event(payload), do: %Event{topic: "t", payload: payload, from: "test"}

  # Numbers `payloads` as events, in order, and queues them.
  defp queued(d \\ Delivery.new(), payloads) do
    Enum.reduce(payloads, d, fn p, d ->
      {e, d} = Delivery.number(d, event(p))
      Delivery.enqueue(d, e)
    end)
  end

  # Sends the first in line (a frame of its own payload, sent at 0).
  defp send_next(d) do
    {{what, attempts}, d} = Delivery.pop(d)
    Delivery.put_in_flight(d, what, what.payload, attempts, 0)
  end

  defp payloads(d), do: for({%Event{payload: p}, _} <- :queue.to_list(d.queue), do: p)
  defp flying(d), do: for({_seq, %Event{payload: p}, _, _, _} <- Delivery.in_flight(d), do: p)

  describe "seq numbering" do
    test "each event or tick gets the next seq" do
      {e1, d} = Delivery.number(Delivery.new(), event("a"))
      {t2, d} = Delivery.number(d, {:tick, "every"})
      {e3, d} = Delivery.number(d, event("b"))
      assert {e1.seq, t2, e3.seq, d.seq} == {1, {:tick, "every", 2}, 3, 3}
    end

    test "numbering goes on above a restored seq, never below the one it has" do
      d = Delivery.new() |> Delivery.seen_seq(41)
      {e, d} = Delivery.number(d, event("a"))
      assert e.seq == 42
      assert Delivery.seen_seq(d, 7).seq == 42
    end

    test "a redelivery keeps its seq (requeued, then sent again)" do
      d = queued(["a", "b"]) |> send_next() |> send_next()
      {_requeued, d} = Delivery.requeue_inflight(d)
      d = d |> send_next() |> send_next()
      assert for({seq, _, _, _, _} <- Delivery.in_flight(d), do: seq) == [1, 2]
      assert d.seq == 2
    end
  end

  describe "ordering" do
    test "the queue is first in, first out" do
      d = queued(["a", "b", "c"])
      assert payloads(d) == ["a", "b", "c"]
      assert {{%Event{payload: "a"}, 0}, _} = Delivery.pop(d)
      assert {%Event{payload: "a"}, 0} = Delivery.peek(d)
    end

    test "requeued deliveries go back to the front, in the order sent, before what waits" do
      d = queued(["a", "b", "c"]) |> send_next() |> send_next()
      {requeued, d} = Delivery.requeue_inflight(d)
      assert length(requeued) == 2
      assert payloads(d) == ["a", "b", "c"]
      assert {d.queued, d.queued_bytes, d.in_flight, d.inflight_bytes} == {3, 3, 0, 0}
    end

    test "an ack takes the acked delivery and those sent before it, in order" do
      d = queued(["a", "b", "c"]) |> send_next() |> send_next() |> send_next()
      {taken, d} = Delivery.ack(d, 2)
      assert for({_, %Event{payload: p}, _, _, _} <- taken, do: p) == ["a", "b"]
      assert flying(d) == ["c"]
      assert {d.in_flight, d.inflight_bytes} == {1, 1}
    end

    test "an ack of a seq not in flight takes nothing" do
      d = queued(["a"]) |> send_next()
      assert {[], ^d} = Delivery.ack(d, 9)
    end

    test "a retried event goes first in line with its attempts" do
      d = queued(["a", "b"])
      {e, d} = Delivery.number(d, event("x"))
      d = Delivery.push_front(d, e, 2)
      assert [{%Event{payload: "x"}, 2} | _] = :queue.to_list(d.queue)
    end
  end

  describe "credit window" do
    test "at most max_in_flight deliveries, none while closed" do
      d = queued(["a", "b", "c"])
      assert Delivery.window(d, true, 2) == 2
      assert Delivery.window(d, false, 2) == 0
      refute Delivery.sendable?(Delivery.new(), 0, false, @limits)
      d = d |> send_next() |> send_next()
      refute Delivery.sendable?(d, 1, true, @limits)
      {_, d} = Delivery.ack(d, 1)
      assert Delivery.sendable?(d, 1, true, @limits)
    end

    test "in-flight bytes bound the window, but one delivery of any size goes alone" do
      d = Delivery.new()
      assert Delivery.sendable?(d, 100, true, @limits)
      d = queued(d, ["1234567"]) |> send_next()
      assert Delivery.sendable?(d, 1, true, @limits)
      refute Delivery.sendable?(d, 2, true, @limits)
    end
  end

  describe "overflow" do
    test "an item larger than the queue may hold is too large" do
      d = Delivery.new()
      opts = [max_queue_bytes: 10, overflow: :drop_oldest, sendable?: true, room?: true]
      assert Delivery.admission(d, 11, opts) == :too_large
      assert Delivery.admission(d, 10, opts) == :send
    end

    test "sent at once only when nothing waits before it" do
      d = queued(["a"])
      opts = [max_queue_bytes: 10, overflow: :reject, sendable?: true, room?: true]
      assert Delivery.admission(d, 1, opts) == :enqueue
    end

    test "a full :reject queue refuses it, unless a checked publish reserved its room" do
      d = queued(["a", "b", "c"])
      refute Delivery.room?(d, 1, @limits)
      opts = [max_queue_bytes: 10, overflow: :reject, sendable?: false, room?: false]
      assert Delivery.admission(d, 1, opts) == :overflow
      assert Delivery.admission(d, 1, [admitted?: true] ++ opts) == :enqueue
    end

    test "a full :drop_oldest queue drops the oldest until it fits, in events or bytes" do
      d = queued(["a", "b", "c"])
      opts = [max_queue_bytes: 10, overflow: :drop_oldest, sendable?: false, room?: false]
      assert Delivery.admission(d, 1, opts) == :drop_oldest
      {dropped, d} = Delivery.make_room(d, 1, @limits)
      assert Enum.map(dropped, & &1.payload) == ["a"]
      assert payloads(d) == ["b", "c"]

      d = queued(["1234", "5678"])
      {dropped, d} = Delivery.make_room(d, 5, @limits)
      assert Enum.map(dropped, & &1.payload) == ["1234"]
      assert {d.queued, d.queued_bytes} == {1, 4}
    end

    test "room in an empty queue for anything no larger than it" do
      {dropped, d} = Delivery.make_room(Delivery.new(), 10, @limits)
      assert {dropped, d.queued} == {[], 0}
    end
  end

  describe "retries and dead letters" do
    test "again while under max_attempts, then given up" do
      e = %{event("a") | seq: 1}
      assert Delivery.verdict(e, 1, 3, false) == :retry
      assert Delivery.verdict(e, 2, 3, false) == :retry
      assert Delivery.verdict(e, 3, 3, false) == :give_up
    end

    test "an event goes to the fallback when there is one; a tick does not" do
      assert Delivery.verdict(%{event("a") | seq: 1}, 1, 3, true) == :fallback
      assert Delivery.verdict({:tick, "t", 1}, 1, 3, true) == :retry
    end

    test "a poison event crashing its host is charged until it is given up" do
      d = queued(["poison", "ok"])

      d =
        Enum.reduce(1..2, d, fn attempt, d ->
          d = send_next(d)
          assert {[], {{1, _, _, _, _}, :retry}, d} = Delivery.crash(d, 1, 3, false)
          assert [{%Event{payload: "poison"}, ^attempt}, _] = :queue.to_list(d.queue)
          d
        end)

      d = send_next(d)

      assert {[], {{1, %Event{payload: "poison"}, _, 2, _}, :give_up}, d} =
               Delivery.crash(d, 1, 3, false)

      assert payloads(d) == ["ok"]
    end

    test "the suspect is the first waiting item that failed, taken out" do
      d = queued(["a"])
      {e, d} = Delivery.number(d, event("bad"))
      d = d |> Delivery.enqueue(e, 2) |> Delivery.enqueue(%{event("c") | seq: 9}, 0)
      assert Delivery.suspect(d, 100) == %{topic: "t", attempts: 2}
      assert {:ok, {%Event{payload: "bad"}, 2}, d} = Delivery.take_suspect(d)
      assert payloads(d) == ["a", "c"]
      assert {d.queued, d.queued_bytes} == {2, 2}
      assert Delivery.take_suspect(d) == :error
      assert Delivery.suspect(d, 100) == nil
    end
  end

  describe "a crash" do
    test "with the running seq known, only it is charged; the others go back uncharged" do
      d = queued(["a", "b", "c", "d"]) |> send_next() |> send_next() |> send_next()
      {requeued, {{2, _, _, 0, _}, :retry}, d} = Delivery.crash(d, 2, 3, false)
      assert for({seq, _, _, _, _} <- requeued, do: seq) == [1, 3]
      assert [{_, 0}, {%Event{payload: "b"}, 1}, {_, 0}, {_, 0}] = :queue.to_list(d.queue)
      assert payloads(d) == ["a", "b", "c", "d"]
      assert {d.in_flight, d.probation} == {0, 0}
    end

    test "with none running, all go back uncharged" do
      d = queued(["a", "b"]) |> send_next() |> send_next()
      assert {[_, _], nil, d} = Delivery.crash(d, :none, 3, false)
      assert Enum.all?(:queue.to_list(d.queue), &(elem(&1, 1) == 0))
    end

    test "nothing in flight: nothing to charge" do
      d = queued(["a"])
      assert {[], nil, ^d} = Delivery.crash(d, 5, 3, false)
    end
  end

  describe "probation" do
    test "without a recorder, several in flight: uncharged, then one at a time" do
      d = queued(["a", "b", "c"]) |> send_next() |> send_next() |> send_next()
      {requeued, nil, d} = Delivery.crash(d, nil, 3, false)
      assert length(requeued) == 3
      assert d.probation == 3
      assert Delivery.window(d, true, 2) == 1
      d = send_next(d)
      refute Delivery.sendable?(d, 1, true, @limits)
      {acked, d} = Delivery.ack(d, 1)
      d = Delivery.handled(d, length(acked))
      assert d.probation == 2
      assert Delivery.sendable?(d, 1, true, @limits)
      d = Delivery.handled(d, 5)
      assert {d.probation, Delivery.window(d, true, 2)} == {0, 2}
    end

    test "without a recorder, one in flight: it is the culprit, and what follows goes alone" do
      d = queued(["a", "b"]) |> send_next()
      assert {[], {{1, _, _, 0, _}, :retry}, d} = Delivery.crash(d, nil, 3, false)
      assert [{%Event{payload: "a"}, 1}, {%Event{payload: "b"}, 0}] = :queue.to_list(d.queue)
      assert d.probation == 1
    end
  end

  describe "the rest of its bookkeeping" do
    test "a tick waits while events wait or the same tick is in flight" do
      refute Delivery.tick_busy?(Delivery.new(), "t")
      assert Delivery.tick_busy?(queued(["a"]), "t")
      {tick, d} = Delivery.number(Delivery.new(), {:tick, "t"})
      d = Delivery.put_in_flight(d, tick, "", 0, 0)
      assert Delivery.tick_busy?(d, "t")
      refute Delivery.tick_busy?(d, "other")
      assert Delivery.only_in_flight(d) == 1
    end

    test "events taken out by a rule, with the frames of those in flight" do
      d = queued(["a", "b", "c"]) |> send_next()
      {gone, waiting, frames, d} = Delivery.take_events(d, &(&1.seq != 2))
      assert {gone, frames} == {[{%{event("a") | seq: 1}, 0}], ["a"]}
      assert waiting == [{%{event("c") | seq: 3}, 0}]
      assert payloads(d) == ["b"]
      assert {d.queued, d.queued_bytes, d.in_flight} == {1, 1, 0}
      assert Enum.map(Delivery.events(d), & &1.payload) == ["b"]
    end

    test "everything waiting taken out at once, and appended back in order" do
      {items, d} = Delivery.take_queue(queued(["a", "b"]))
      assert {d.queued, d.queued_bytes} == {0, 0}
      d = Delivery.append(queued(["x"]), items)
      assert payloads(d) == ["x", "a", "b"]
      assert d.queued_bytes == 3
    end
  end
end

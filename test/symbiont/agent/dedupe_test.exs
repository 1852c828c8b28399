defmodule Symbiont.Agent.DedupeTest do
  # Event ids and `dedupe: true` (Symbiont.Agent, "Duplicates"; PROTOCOL.md §8.1): the
  # memory alone, then publishers and subscribers on real hosts, Python and Wasm.
  use ExUnit.Case, async: true

  import Bitwise
  import ExUnit.CaptureLog
  import Symbiont.HostHelpers

  alias Symbiont.Agent.{Dedupe, Server}
  alias Symbiont.Event

  @wasm Path.expand("../../../priv/wasm", __DIR__)

  defp run(ids, dedupe \\ Dedupe.new()) do
    Enum.map_reduce(ids, dedupe, fn id, d -> Dedupe.check(d, id) end)
  end

  describe "the memory" do
    test "an id is new once; events without an id are never duplicates" do
      {results, d} = run([{"a", 1, 1, 0}, {"a", 1, 1, 0}, nil, nil, {"b", 1, 1, 0}])
      assert results == [:ok, :duplicate, :ok, :ok, :ok]
      assert Dedupe.dropped(d) == 1
    end

    test "the ids of one seq: a copy repeats the first ones, then goes on with new ones" do
      first = [{"a", 1, 7, 0}, {"a", 1, 7, 1}, {"a", 1, 7, -1}]
      copy = [{"a", 1, 7, 0}, {"a", 1, 7, 1}, {"a", 1, 7, 2}, {"a", 1, 7, -1}, {"a", 1, 7, -2}]
      {results, d} = run(first ++ copy)
      assert results == [:ok, :ok, :ok, :duplicate, :duplicate, :ok, :duplicate, :ok]
      assert Dedupe.dropped(d) == 3
    end

    test "a retried delivery's first publishes come after later seqs': still new" do
      {results, _} = run([{"a", 1, 8, 0}, {"a", 1, 9, 0}, {"a", 1, 7, 0}, {"a", 1, 7, 0}])
      assert results == [:ok, :ok, :ok, :duplicate]
    end

    test "an id a window or more behind the highest seq is an old copy" do
      w = Dedupe.window()
      {results, _} = run([{"a", 1, w + 10, 0}, {"a", 1, 10, 0}, {"a", 1, 11, 0}])
      assert results == [:ok, :duplicate, :ok]
    end

    test "a new incarnation of a publisher starts afresh" do
      {results, d} = run([{"a", 1, 1, 0}, {"a", 2, 1, 0}, {"a", 2, 1, 0}])
      assert results == [:ok, :ok, :duplicate]
      assert map_size(d.publishers) == 1
    end

    test "bounded: a publisher's window and the publishers remembered" do
      w = Dedupe.window()
      # A handler that publishes once: a bit per seq.
      {_, d} = run(for s <- 1..(3 * w), do: {"a", 1, s, 0})
      assert :erts_debug.size(d) < 1_000
      assert Dedupe.more_size(d, "a") == 0
      # Three per seq (two of them outside the bitmap): pruned to the window.
      {_, d} = run(for s <- 1..(3 * w), n <- [0, 1, -1], do: {"b", 1, s, n})
      assert Dedupe.more_size(d, "b") <= 2 * w
      # Still exact within the window after the pruning.
      assert {:duplicate, _} = Dedupe.check(d, {"b", 1, 3 * w - 5, 1})
      assert {:ok, _} = Dedupe.check(d, {"b", 1, 3 * w - 5, 2})

      max = Dedupe.max_publishers()
      {_, d} = run(for p <- 0..max, do: {"p#{p}", 1, 1, 0})
      assert map_size(d.publishers) == max
      # The one heard from longest ago was forgotten.
      refute Map.has_key?(d.publishers, "p0")
      assert {:duplicate, _} = Dedupe.check(d, {"p#{max}", 1, 1, 0})
    end
  end

  describe "the memory against a model" do
    # Streams of ids whose seqs are drawn from the whole range 0..2^64 (the extremes, any
    # value, and runs of neighbours so that copies, the window's edge and jumps past it
    # all come up), checked id by id against a plain model of the moduledoc's rules:
    # never a raise, always the model's answer. Seeded: SYMBIONT_FUZZ_SEED=N replays.
    @streams 2_000

    test "#{@streams} random streams of ids from the whole seq range: the model's answers, never a raise" do
      seed = Symbiont.MsgPackGen.seed!(5_101)
      w = Dedupe.window()

      for case_n <- 1..@streams do
        ids = for _ <- 1..:rand.uniform(40), do: random_id(w)

        Enum.reduce(ids, {Dedupe.new(), %{}}, fn id, {d, model} ->
          {got, d} =
            try do
              Dedupe.check(d, id)
            rescue
              e ->
                flunk(
                  "dedupe, seed #{seed} (SYMBIONT_FUZZ_SEED=#{seed}), stream #{case_n}: #{inspect(id)} raised #{Exception.message(e)}\nstream: #{inspect(ids)}"
                )
            end

          {want, model} = model_check(model, id, w)

          assert got == want,
                 "dedupe, seed #{seed} (SYMBIONT_FUZZ_SEED=#{seed}), stream #{case_n}: #{inspect(id)} was #{got}, the model says #{want}\nstream: #{inspect(ids)}"

          {d, model}
        end)
      end
    end

    test "found by the model: (seq, 0) after a publish outside a handler with that seq is remembered" do
      {results, _} = run([{"a", 1, 5, -1}, {"a", 1, 5, 0}, {"a", 1, 5, 0}, {"a", 1, 5, -1}])
      assert results == [:ok, :ok, :duplicate, :duplicate]
    end

    test "a seq at the top of the range, then small ones again: no raise, the memory stays small" do
      top = (1 <<< 63) - 1

      {results, d} =
        run([
          {"a", 1, 1, 0},
          {"a", 1, top, 0},
          {"a", 1, top, 0},
          {"a", 1, 2, 0},
          {"a", 1, top + 1, 3}
        ])

      assert results == [:ok, :ok, :duplicate, :duplicate, :ok]
      assert :erts_debug.size(d) < 1_000
    end

    # Seqs: an extreme of 0..2^64, any value of it, or one near the last (or a few seqs
    # back, or a window or two ahead); publishers "a" and "b", two incarnations; n mostly
    # small, sometimes an extreme of 64 bits.
    defp random_id(w) do
      last = Process.get(:dedupe_last_seq, 0)

      seq =
        case :rand.uniform(6) do
          1 ->
            Enum.random([
              0,
              1,
              (1 <<< 63) - 1,
              1 <<< 63,
              (1 <<< 64) - 1,
              1 <<< 64
            ])

          2 ->
            :rand.uniform((1 <<< 64) + 1) - 1

          3 ->
            max(0, last + Enum.random([w - 1, w, w + 1, 2 * w]))

          _ ->
            max(0, last + :rand.uniform(9) - 6)
        end

      Process.put(:dedupe_last_seq, seq)

      n =
        case :rand.uniform(8) do
          1 -> Enum.random([-(1 <<< 63), (1 <<< 63) - 1])
          _ -> :rand.uniform(7) - 4
        end

      {Enum.random(["a", "b"]), Enum.random([1, 1, 1, 2]), seq, n}
    end

    # The rules: per publisher, its incarnation (another one starts afresh), the highest
    # seq seen, and per seq the ids taken: every n in 0..next-1 and -1..-neg, where next
    # and neg are one past the furthest n accepted either way. An id a window or more
    # behind the highest seq is an old copy.
    defp model_check(model, {pub, inc, seq, n}, w) do
      p =
        case model do
          %{^pub => %{inc: ^inc} = p} -> p
          _ -> %{inc: inc, high: seq, seqs: %{}}
        end

      p = %{p | high: max(p.high, seq)}
      {next, neg} = Map.get(p.seqs, seq, {0, 0})
      taken? = if n >= 0, do: n < next, else: -n <= neg

      cond do
        p.high - seq >= w or taken? ->
          {:duplicate, model}

        true ->
          mark = if n >= 0, do: {max(next, n + 1), neg}, else: {max(next, 0), max(neg, -n)}
          {:ok, Map.put(model, pub, %{p | seqs: Map.put(p.seqs, seq, mark)})}
      end
    end
  end

  test ":dedupe is validated" do
    assert Symbiont.Agent.validate_spec(name: "x", python: "m:C", dedupe: "yes") ==
             {:error,
              %Symbiont.Error{
                reason: :invalid,
                message: ~s(agent "x": expected :dedupe to be true or false, got: "yes"),
                details: %{agent: "x", field: :dedupe}
              }}

    assert {:ok, %{dedupe: false}} = Symbiont.Agent.validate_spec(name: "x", python: "m:C")
  end

  # A Tally (counts what arrives on `input`, passes each on to `out` with the count).
  defp start_tally!(input, opts) do
    out = unique_name("tally.out")
    :ok = Symbiont.subscribe(out)

    host =
      start_agent_host!(
        "tally",
        [python: "sample_agents:Tally", config: %{"in" => input, "out" => out}] ++ opts
      )

    Map.put(host, :out, out)
  end

  defp start_fanout!(%{tmp_dir: dir}) do
    out = unique_name("fan.out")
    :ok = Symbiont.subscribe(out)
    :ok = Symbiont.subscribe(out <> ".start")
    input = unique_name("fan.in")
    config = %{"in" => input, "out" => out, "marker" => Path.join(dir, "tried")}
    host = start_agent_host!("fanout", python: "sample_agents:Fanout", config: config)
    Map.merge(host, %{out: out, in: input})
  end

  # The agent's info once it has acked `n` deliveries (its outputs go out before the ack).
  defp info_after(agent, n) do
    assert wait_until(fn -> match?({:ok, %{handled: ^n, in_flight: 0}}, Server.info(agent)) end)
    Server.info(agent)
  end

  defp values(topic, n), do: topic |> receive_events(n) |> Enum.map(&elem(&1, 1))

  defp receive_events(topic, n) do
    for _ <- 1..n//1 do
      assert_receive %Event{topic: ^topic} = event, 10_000
      {event.id, Event.decode!(event)}
    end
  end

  @tag :tmp_dir
  test "a publisher killed after publishing, before its ack, publishes the same ids again; a dedupe: true subscriber drops them and counts exactly",
       context do
    pub = start_fanout!(context)
    tally = start_tally!(pub.out, dedupe: true)
    # Published in on_start, outside a handler: the seq of its checkpoint (none: 0), n -1.
    assert [{{_, _, 0, -1} = started, 0}] = receive_events(pub.out <> ".start", 1)

    # Three events out, then the handler blocks: published, not acked.
    :ok = Symbiont.publish(pub.in, %{"k" => 3, "hold" => true})
    first = receive_events(pub.out, 3)

    assert [
             {{agent, incarnation, seq, 0}, [0, 3]},
             {{agent, incarnation, seq, 1}, _},
             {{agent, incarnation, seq, 2}, _}
           ] = first

    assert agent == pub.agent and is_integer(incarnation) and seq > 0

    assert values(tally.out, 3) == [[1, [0, 3]], [2, [1, 3]], [3, [2, 3]]]

    assert {:ok, %{handled: 0, in_flight: 1}} = Server.info(pub.agent)

    pub_host = pub.name

    capture_log(fn ->
      Symbiont.Host.Reaper.kill(pub.os_pid)
      assert_receive {:host_start, ^pub_host, %{restarts: 1}}, 10_000
    end)

    # Handled again from the checkpoint before it: the same events, with the same ids
    # (on_start's included: the same checkpoint).
    assert receive_events(pub.out <> ".start", 1) == [{started, 0}]
    assert receive_events(pub.out, 3) == first
    # Then one more event through both, after which the tally has seen everything.
    :ok = Symbiont.publish(pub.in, %{"k" => 1})
    assert [{{^agent, ^incarnation, next, 0}, [0, 1]}] = receive_events(pub.out, 1)
    assert next == seq + 1
    assert values(tally.out, 1) == [[4, [0, 1]]]

    assert {:ok, %{state: %{"n" => 4}, duplicates: 3}} = info_after(tally.agent, 4)
    assert {:ok, %{duplicates: 3}} = Server.metrics(tally.agent)
    assert {:ok, %{state: %{"n" => 2}, restarts: 1}} = info_after(pub.agent, 2)

    # Restarted from a later checkpoint, on_start's publish has a new id.
    capture_log(fn ->
      {:ok, %{os_pid: os_pid}} = Symbiont.Host.info(pub.name)
      Symbiont.Host.Reaper.kill(os_pid)
      assert [{{^agent, ^incarnation, ^next, -1}, 2}] = receive_events(pub.out <> ".start", 1)
    end)
  end

  @tag :tmp_dir
  test "a retried event publishes with the ids of its first attempt; without dedupe the copies count twice",
       context do
    pub = start_fanout!(context)
    deduped = start_tally!(pub.out, dedupe: true)
    plain = start_tally!(pub.out, [])

    capture_log(fn ->
      :ok = Symbiont.publish(pub.in, %{"k" => 2, "fail" => true})
      first = receive_events(pub.out, 2)
      assert receive_events(pub.out, 2) == first
    end)

    :ok = Symbiont.publish(pub.in, %{"k" => 1})
    receive_events(pub.out, 1)
    assert [_, _, [3, [0, 1]]] = values(deduped.out, 3)
    assert [_, _, _, _, [5, [0, 1]]] = values(plain.out, 5)
    assert {:ok, %{state: %{"n" => 3}, duplicates: 2}} = info_after(deduped.agent, 3)
    assert {:ok, %{state: %{"n" => 5}, duplicates: 0}} = info_after(plain.agent, 5)
  end

  test "a Wasm agent's publishes carry ids (its publish import)" do
    input = unique_name("relay.in")
    out = unique_name("relay.out")
    :ok = Symbiont.subscribe(out)

    %{agent: agent} =
      start_agent_host!("relay",
        wasm: Path.join(@wasm, "relay.wat"),
        topics: [input],
        config: %{"out" => out}
      )

    for i <- 1..3, do: :ok = Symbiont.publish(input, i)
    got = receive_events(out, 3)
    assert [{{^agent, inc, s1, 0}, 1}, {{^agent, inc, s2, 0}, 2}, {{^agent, inc, s3, 0}, 3}] = got
    assert s2 == s1 + 1 and s3 == s2 + 1
    # A Wasm agent's state, decoded: what relay.wat's symbiont_state wrote.
    assert {:ok, %{state: 3}} = info_after(agent, 3)
  end

  @tag :tmp_dir
  test "ids at the top of the seq range, from a lying host and from Elixir: a dedupe: true subscriber keeps its queue and state",
       %{tmp_dir: dir} do
    top = (1 <<< 63) - 1
    input = unique_name("gated.in")
    gate = Path.join(dir, "gate")

    # The subscriber handles one event, then waits at the gate with the second: the rest
    # queue up.
    sub =
      start_agent_host!("gated",
        python: "sample_agents:Gated",
        config: %{"in" => input, "pause_after" => 1, "gate" => gate},
        dedupe: true,
        max_in_flight: 1
      )

    sub_pid = Server.whereis(sub.agent)
    for i <- 1..6, do: :ok = Symbiont.publish(input, i)

    assert wait_until(fn ->
             match?({:ok, %{handled: 1, queue: 4, in_flight: 1}}, Server.info(sub.agent))
           end)

    liar_in = unique_name("liar.in")

    liar =
      start_agent_host!("liar", python: "hostile:Liar", config: %{"in" => liar_in, "out" => input})

    log =
      capture_log(fn ->
        # Honest: the seq of its delivery (1). Then a lie: 2^63-1, never delivered to it.
        :ok = Symbiont.publish(liar_in, %{"seq" => nil, "value" => "honest"})
        :ok = Symbiont.publish(liar_in, %{"seq" => top, "value" => "lie"})
        assert wait_until(fn -> match?({:ok, %{handled: 2}}, Server.info(liar.agent)) end)

        # From Elixir, any seq goes: 1, then the top of the range, then 1 again.
        for {seq, value} <- [{1, "e1"}, {top, "etop"}, {1, "e1 again"}, {top, "etop again"}] do
          :ok = Symbiont.publish(input, value, id: {"importer", 1, seq, 0})
        end

        # Out of range (§9): a protocol error for the liar's host; nothing reaches the mesh.
        :ok = Symbiont.publish(liar_in, %{"seq" => top + 1, "value" => "out of range"})
        liar_host = liar.name
        assert_receive {:host_crash, ^liar_host, %{reason: {:protocol_error, _}}}, 10_000
      end)

    assert log =~
             "publish on #{inspect(input)} with seq #{top}, above the highest seq delivered (2), dropped"

    assert log =~ "seq #{top + 1} is out of range: expected an integer in 0..2^63-1"

    # The subscriber is the same process, with its queue: the honest event and the new ids
    # from Elixir joined it, the copies and the lie did not.
    assert Server.whereis(sub.agent) == sub_pid
    assert {:ok, %{queue: 7, in_flight: 1, duplicates: 2}} = Server.info(sub.agent)

    File.write!(gate, "open")
    assert {:ok, %{state: state}} = info_after(sub.agent, 9)
    assert state["seen"] == [1, 2, 3, 4, 5, 6, "honest", "e1", "etop"]
    assert Server.whereis(sub.agent) == sub_pid
  end

  test "events published from Elixir: no id unless given one; a dedupe agent drops a repeated id" do
    input = unique_name("elixir.in")
    tally = start_tally!(input, dedupe: true)
    id = {"importer", 1, 42, 0}

    for opts <- [[id: id], [id: id], [], []], do: :ok = Symbiont.publish(input, 1, opts)
    :ok = Symbiont.publish(input, "last", id: {"importer", 1, 43, 0})
    assert [_, _, _, [4, "last"]] = values(tally.out, 4)
    assert {:ok, %{state: %{"n" => 4}, duplicates: 1}} = info_after(tally.agent, 4)

    assert {:error,
            %Symbiont.Error{
              reason: :invalid,
              message: "expected :id to be nil or {publisher" <> _
            }} = Symbiont.publish(input, 1, id: {"importer", 42})
  end
end

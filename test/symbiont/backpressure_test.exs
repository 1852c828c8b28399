defmodule Symbiont.BackpressureTest do
  # A publisher at least ten times faster than its consumer (a real Python agent that
  # takes 2 ms an event): the queue, the credit window and memory stay bounded, health
  # says overloaded then healthy, and every event is handled or dead-lettered.
  use ExUnit.Case, async: true

  import ExUnit.CaptureLog
  import Symbiont.HostHelpers

  @events 1_000

  defp start_slow!(opts),
    do:
      start_agent_host!(
        "slow",
        [python: "sample_agents:Slow", config: %{"delay" => 0.002}] ++ opts
      )

  defp info!(name) do
    {:ok, %{agent: agent}} = Symbiont.Host.info(name)
    agent
  end

  # Publishes 1..@events at about ten times what the agent can handle (5 000/s against
  # 500/s), sampling the host as it goes.
  defp flood(host, publish) do
    results =
      for i <- 1..@events do
        if rem(i, 5) == 0, do: Process.sleep(1)
        result = publish.(i)

        sample =
          if rem(i, 25) == 0 do
            {:memory, memory} = Process.info(host.pid, :memory)
            agent = info!(host.name)
            {agent.queue, agent.in_flight, memory}
          end

        {result, sample}
      end

    {Enum.map(results, &elem(&1, 0)), results |> Enum.map(&elem(&1, 1)) |> Enum.reject(&is_nil/1)}
  end

  defp settle(name) do
    assert wait_until(
             fn -> match?(%{queue: 0, in_flight: 0}, info!(name)) end,
             10_000
           )

    info!(name)
  end

  defp letters(agent) do
    Stream.repeatedly(fn ->
      receive do
        %Symbiont.Event{topic: "symbiont.dead_letter", from: ^agent} = e ->
          {:ok, letter} = Symbiont.Event.decode(e)
          letter
      after
        200 -> nil
      end
    end)
    |> Enum.take_while(& &1)
  end

  defp payload(%{"payload" => bin}), do: bin |> Symbiont.MsgPack.decode!()

  setup do
    :ok = Symbiont.subscribe("symbiont.dead_letter")
    :ok = Symbiont.subscribe("symbiont.health")
    :ok
  end

  test ":drop_oldest keeps the newest; queue, window and memory stay bounded" do
    host = start_slow!(max_queue: 50, max_in_flight: 5, high_water: 40)

    {{results, samples}, _log} = with_log(fn -> flood(host, &Symbiont.publish("slow.in", &1)) end)

    assert Enum.all?(results, &(&1 == :ok))
    assert Enum.all?(samples, fn {queue, in_flight, _} -> queue <= 50 and in_flight <= 5 end)
    assert samples |> Enum.map(&elem(&1, 2)) |> Enum.max() < 2_000_000

    overloaded = await_health(host.agent, "overloaded")
    assert overloaded["reason"] =~ "queue at 40 of 50"
    assert %{"queue" => 40, "max_queue" => 50} = overloaded["metrics"]
    assert await_health(host.agent, "healthy")["reason"] =~ "queue back at"

    final =
      capture_log(fn -> send(self(), {:settled, settle(host.name)}) end) &&
        receive(do: ({:settled, a} -> a))

    letters = letters(host.agent)
    seen = final.state["seen"]

    # Nothing lost: every event was handled or dead-lettered, exactly once.
    assert Enum.sort(seen ++ Enum.map(letters, &payload/1)) == Enum.to_list(1..@events)
    assert final.dropped == length(letters) and final.handled == length(seen)

    assert Enum.all?(
             letters,
             &match?(%{"reason" => "overloaded", "attempts" => 0, "error" => nil}, &1)
           )

    # The newest were kept; older ones gave way.
    assert @events in seen
    assert Enum.max(Enum.map(letters, &payload/1)) < @events
  end

  test ":reject dead-letters the newest; a checked publish is refused instead" do
    host = start_slow!(max_queue: 30, max_in_flight: 5, overflow: :reject)

    {{_results, samples}, _log} =
      with_log(fn -> flood(host, &Symbiont.publish("slow.in", &1)) end)

    assert Enum.all?(samples, fn {queue, in_flight, _} -> queue <= 30 and in_flight <= 5 end)

    final =
      capture_log(fn -> send(self(), {:settled, settle(host.name)}) end) &&
        receive(do: ({:settled, a} -> a))

    rejected = host.agent |> letters() |> Enum.map(&payload/1)
    seen = final.state["seen"]
    assert Enum.sort(seen ++ rejected) == Enum.to_list(1..@events)
    # The queue never gave up what it held: the first 35 (5 in flight + 30 queued) were
    # all handled, in order, and only later ones were refused.
    assert Enum.take(seen, 35) == Enum.to_list(1..35)
    assert seen == Enum.sort(seen)
    assert Enum.min(rejected) > 35

    # Checked: the publisher hears {:error, :overloaded}, and nothing is dead-lettered.
    checked = fn i -> Symbiont.publish("slow.in", @events + i, checked: true) end

    {results, _} =
      capture_log(fn -> send(self(), {:flood, flood(host, checked)}) end)
      |> then(fn _ -> receive(do: ({:flood, r} -> r)) end)

    assert {:error, :overloaded} in results
    accepted = Enum.count(results, &(&1 == :ok))

    after_checked =
      capture_log(fn -> send(self(), {:settled, settle(host.name)}) end) &&
        receive(do: ({:settled, a} -> a))

    assert length(after_checked.state["seen"]) - length(seen) == accepted
    assert letters(host.agent) == []
  end

  test "events wait in the queue while the host is down and are delivered in order" do
    host = start_slow!(max_queue: 100, max_in_flight: 3)

    capture_log(fn ->
      Symbiont.Host.Reaper.kill(host.os_pid)
      assert_receive {:host_crash, _, _}, 5_000
      for i <- 1..40, do: :ok = Symbiont.publish("slow.in", i)
      assert info!(host.name).in_flight <= 3
      assert_receive {:host_start, _, %{restarts: 1}}, 10_000
    end)

    final = settle(host.name)
    assert final.state["seen"] == Enum.to_list(1..40)
  end

  @tag :tmp_dir
  test "checked publishes fill a rejecting queue to max_queue and not one more; none is lost",
       %{tmp_dir: dir} do
    gate = Path.join(dir, "gate")

    host =
      start_agent_host!("slow",
        python: "sample_agents:Slow",
        config: %{"gate" => gate},
        max_queue: 20,
        max_in_flight: 1,
        overflow: :reject
      )

    :ok = Symbiont.subscribe("symbiont.dead_letter")
    pid = Symbiont.Agent.Server.whereis(host.agent)

    # What publishers read: the queue plus their reservations on the way, in one counter.
    [load] =
      for {"slow.in", ^pid, _group, %{load: {ref, 20, _max_bytes, :reject}}} <-
            Symbiont.Mesh.subscriptions(),
          do: ref

    # The first event waits at the gate, in flight: nothing drains while it is closed.
    :ok = Symbiont.publish("slow.in", 0, checked: true)
    assert wait_until(fn -> match?(%{in_flight: 1, queue: 0}, info!(host.name)) end)

    results = for i <- 1..25, do: Symbiont.publish("slow.in", i, checked: true)
    assert results == List.duplicate(:ok, 20) ++ List.duplicate({:error, :overloaded}, 5)
    assert wait_until(fn -> info!(host.name).queue == 20 end)
    assert :atomics.get(load, 1) == 20

    File.write!(gate, "open")
    final = settle(host.name)
    assert final.state["seen"] == Enum.to_list(0..20)
    assert %{dropped: 0} = final
    assert letters(host.agent) == []
    assert :atomics.get(load, 1) == 0
  end

  ## Bytes: :max_queue_bytes, :max_in_flight_bytes

  @mib 1024 * 1024
  @pad :binary.copy(<<0>>, 1024 * 1024 - 13)

  # An event on slow.in whose payload, %{"i" => i, "pad" => ...}, is exactly 1 MiB (i
  # below 128), each a binary of its own.
  defp big(i, pad \\ @pad) do
    event = Symbiont.Event.new!("slow.in", %{"i" => i, "pad" => %Symbiont.MsgPack.Bin{data: pad}})
    assert byte_size(event.payload) == @mib + byte_size(pad) - byte_size(@pad)
    event
  end

  defp publish(event, opts \\ []), do: Symbiont.Mesh.publish(Symbiont.Mesh, event, opts)

  # A Slow agent remembering the "i" of each event, which waits at `gate` (a file).
  defp start_gated!(dir, opts) do
    gate = Path.join(dir, "gate")
    config = %{"gate" => gate, "keep" => "i", "delay" => 0}
    host = start_agent_host!("slow", [python: "sample_agents:Slow", config: config] ++ opts)
    # The first event waits at the gate, in flight: nothing drains while it is closed.
    :ok = publish(big(0))
    assert wait_until(fn -> match?(%{in_flight: 1, queue: 0}, info!(host.name)) end)
    Map.put(host, :gate, gate)
  end

  # The bytes of the binaries a process holds (each counted once).
  defp binary_bytes(pid) do
    :erlang.garbage_collect(pid)
    {:binary, binaries} = Process.info(pid, :binary)
    binaries |> Enum.uniq_by(&elem(&1, 0)) |> Enum.map(&elem(&1, 1)) |> Enum.sum()
  end

  @tag :tmp_dir
  test "checked publishes of 1 MiB fill a rejecting queue to max_queue_bytes and not one byte more; none is lost; the agent holds no more",
       %{tmp_dir: dir} do
    host = start_gated!(dir, max_queue_bytes: 8 * @mib, max_in_flight: 1, overflow: :reject)
    pid = Symbiont.Agent.Server.whereis(host.agent)

    limit = 8 * @mib

    [load] =
      for {"slow.in", ^pid, _group, %{load: {ref, 10_000, ^limit, :reject}}} <-
            Symbiont.Mesh.subscriptions(),
          do: ref

    # Room for 10,000 events, but 8 MiB: floor(8 MiB / 1 MiB) = 8 of them.
    results = for i <- 1..12, do: publish(big(i), checked: true)
    assert results == List.duplicate(:ok, 8) ++ List.duplicate({:error, :overloaded}, 4)
    assert %{queue: 8, queue_bytes: queued, max_queue_bytes: max} = info!(host.name)
    assert queued == 8 * @mib and max == 8 * @mib
    assert {:atomics.get(load, 1), :atomics.get(load, 3)} == {8, 8 * @mib}

    # Refused, 40 more leave nothing behind: the agent holds its queue and the one in
    # flight (and its frame, which shares the payload), not one of them.
    refused = for i <- 13..52, do: publish(big(i), checked: true)
    assert Enum.all?(refused, &(&1 == {:error, :overloaded}))
    assert binary_bytes(pid) < 10 * @mib
    assert %{queue: 8, queue_bytes: ^queued} = info!(host.name)

    File.write!(host.gate, "open")
    final = settle(host.name)
    assert final.state["seen"] == Enum.to_list(0..8)
    assert %{dropped: 0, queue_bytes: 0, in_flight_bytes: 0} = final
    assert letters(host.agent) == []
    assert {:atomics.get(load, 1), :atomics.get(load, 3)} == {0, 0}
  end

  @tag :tmp_dir
  test ":drop_oldest keeps the newest that fit in max_queue_bytes; the oldest go to the dead letters; health says overloaded in bytes",
       %{tmp_dir: dir} do
    host = start_gated!(dir, max_queue_bytes: 8 * @mib, max_in_flight: 1)

    # Each publish is in the agent's mailbox before the info call that follows it.
    bytes =
      for i <- 1..20 do
        :ok = publish(big(i))
        info!(host.name).queue_bytes
      end

    assert Enum.max(bytes) == 8 * @mib
    assert %{queue: 8, dropped: 12} = info!(host.name)

    # At 80% of the bytes (7 of 8 MiB), with 7 events of the 10,000 it may queue.
    overloaded = await_health(host.agent, "overloaded")
    assert overloaded["reason"] =~ "queue at 7 of 10000, 7.0 MiB of 8.0 MiB"
    assert %{"queue_bytes" => 7_340_032, "max_queue_bytes" => 8_388_608} = overloaded["metrics"]

    letters = letters(host.agent)
    assert Enum.map(letters, &payload(&1)["i"]) == Enum.to_list(1..12)
    assert Enum.all?(letters, &match?(%{"reason" => "overloaded", "attempts" => 0}, &1))

    File.write!(host.gate, "open")
    final = settle(host.name)
    assert final.state["seen"] == [0 | Enum.to_list(13..20)]
    assert await_health(host.agent, "healthy")["reason"] =~ "queue back at"
  end

  @tag :tmp_dir
  test "an event larger than max_queue_bytes is refused to a checked publish (:too_large) and dead-lettered otherwise, whatever the policy",
       %{tmp_dir: dir} do
    host = start_gated!(dir, max_queue_bytes: 2 * @mib, max_in_flight: 1)
    # 2 MiB + 1 byte.
    huge = big(1, :binary.copy(<<0>>, byte_size(@pad) + @mib + 1))

    assert {:error, :too_large} = publish(huge, checked: true)

    log =
      capture_log(fn ->
        :ok = publish(huge)
        info!(host.name)
      end)

    assert log =~ "has a payload of 2097153 bytes, over the max_queue_bytes of agent"
    assert [letter] = letters(host.agent)
    assert %{"reason" => "too_large", "attempts" => 0} = letter
    assert letter["error"]["message"] =~ "over the max_queue_bytes"
    assert %{queue: 0, dropped: 1} = info!(host.name)

    File.write!(host.gate, "open")
    assert settle(host.name).state["seen"] == [0]
  end

  @tag :tmp_dir
  test "deliveries in flight stay within max_in_flight_bytes, beside max_in_flight",
       %{tmp_dir: dir} do
    host = start_gated!(dir, max_in_flight: 10, max_in_flight_bytes: 3 * @mib)
    for i <- 1..5, do: :ok = publish(big(i))

    # 3 MiB in flight (the first and two more), the rest waiting.
    assert %{in_flight: 3, in_flight_bytes: in_flight, queue: 3} = info!(host.name)
    assert in_flight == 3 * @mib

    File.write!(host.gate, "open")
    assert settle(host.name).state["seen"] == Enum.to_list(0..5)
  end

  test "bad limits are refused with what is allowed" do
    for {opts, message} <- [
          {[max_queue: 0], "expected :max_queue to be a positive integer, got: 0"},
          {[max_in_flight: :many],
           "expected :max_in_flight to be a positive integer, got: :many"},
          {[max_queue: 10, high_water: 20],
           "expected :high_water to be at most :max_queue (10), got: 20"},
          {[overflow: :drop_newest],
           "expected :overflow to be :drop_oldest or :reject, got: :drop_newest"},
          {[max_queue_bytes: 0],
           "expected :max_queue_bytes to be a positive integer of bytes, at most 2**62, got: 0"},
          {[max_in_flight_bytes: "1MB"],
           ~s(expected :max_in_flight_bytes to be a positive integer of bytes, at most 2**62, got: "1MB")}
        ] do
      assert {:error, %Symbiont.Error{reason: :invalid, message: ~s(agent "x": ) <> ^message}} =
               Symbiont.Agent.validate_spec([name: "x", python: "m:C"] ++ opts)
    end
  end
end

defmodule Symbiont.WasmAgentTest do
  # Wasm agents: modules from priv/wasm run by a real Python host under wasmtime, each an
  # agent on the BEAM with its queue, state and health.
  use ExUnit.Case, async: true

  import ExUnit.CaptureLog
  import Symbiont.HostHelpers

  @wasm Path.expand("../../priv/wasm", __DIR__)
  # Hostile modules, for the sandbox's limits.
  @hostile Path.expand("../fixtures/wasm", __DIR__)

  defp start_wasm!(module, topic, opts \\ []),
    do: start_agent_host!("wasm", [wasm: Path.join(@wasm, module), topics: [topic]] ++ opts)

  setup do
    :ok = Symbiont.subscribe("symbiont.health")
    :ok = Symbiont.subscribe("symbiont.dead_letter")
    :ok
  end

  test "a stateful Wasm agent: events in, publishes out, state kept across a kill -9" do
    topic = unique_name("wasm.count.in")
    :ok = Symbiont.subscribe("count.out")
    %{agent: agent, name: name, os_pid: os_pid} = start_wasm!("counter.wat", topic)

    for i <- 1..3, do: :ok = Symbiont.publish(topic, i)

    for n <- 1..3 do
      assert_receive %Symbiont.Event{topic: "count.out", from: ^agent} = e, 5_000
      assert Symbiont.Event.decode!(e) == n
    end

    # counter.wat reports `degraded` at its third message, through the health import.
    node_name = Atom.to_string(node())

    assert %{"reason" => "third message", "agent" => ^agent, "node" => ^node_name} =
             await_health(agent, "degraded")

    assert wait_until(fn -> match?({:ok, %{agent: %{handled: 3}}}, Symbiont.Host.info(name)) end)
    assert {:ok, %{agent: %{python: "wasm:" <> _}}} = Symbiont.Host.info(name)

    capture_log(fn ->
      Symbiont.Host.Reaper.kill(os_pid)
      assert_receive {:host_start, ^name, %{restarts: 1}}, 10_000
    end)

    :ok = Symbiont.publish(topic, 4)
    assert_receive %Symbiont.Event{topic: "count.out", from: ^agent} = e, 5_000
    assert Symbiont.Event.decode!(e) == 4
  end

  test "an idle agent hibernates (its heap compacted), and the next event wakes it" do
    topic = unique_name("wasm.count.in")
    :ok = Symbiont.subscribe("count.out")
    %{agent: agent} = start_wasm!("counter.wat", topic)
    :ok = Symbiont.publish(topic, 1)
    assert_receive %Symbiont.Event{topic: "count.out", from: ^agent}, 5_000
    pid = Symbiont.Agent.Server.whereis(agent)

    # A second after its last message (a bound, not a speed: the machine may be loaded).
    assert wait_until(
             fn ->
               Process.info(pid, :current_function) ==
                 {:current_function, {:erlang, :hibernate, 3}}
             end,
             10_000
           )

    {:total_heap_size, words} = Process.info(pid, :total_heap_size)
    assert words < 987, "hibernated, its heap is what its state needs: #{words} words"

    :ok = Symbiont.publish(topic, 2)
    assert_receive %Symbiont.Event{topic: "count.out", from: ^agent} = e, 5_000
    assert Symbiont.Event.decode!(e) == 2
  end

  test "one host runs several Wasm agents, each its own agent: a trap in one, the other serves" do
    %{name: host, os_pid: os_pid} = start_host!(name: unique_name("wasm-pool"))
    [count_in, trap_in] = [unique_name("pool.count.in"), unique_name("pool.trap.in")]
    [counter, trap] = [unique_name("pool-counter"), unique_name("pool-trap")]
    :ok = Symbiont.subscribe("count.out")

    wasm = fn id, module, topic, opts ->
      start_agent_in!(
        host,
        [id: id, name: id, wasm: Path.join(@wasm, module), topics: [topic]] ++ opts
      )
    end

    wasm.(counter, "counter.wat", count_in, [])
    wasm.(trap, "trap.wat", trap_in, max_attempts: 1)

    capture_log(fn ->
      for i <- 1..3 do
        :ok = Symbiont.publish(trap_in, i)
        :ok = Symbiont.publish(count_in, i)
        assert_receive %Symbiont.Event{topic: "symbiont.dead_letter", from: ^trap}, 5_000
        assert_receive %Symbiont.Event{topic: "count.out", from: ^counter} = e, 5_000
        assert Symbiont.Event.decode!(e) == i
      end
    end)

    # Each has its own name, counters, state and health; the host never crashed.
    assert wait_until(fn ->
             match?({:ok, %{agents: [%{handled: 3}, _]}}, Symbiont.Host.info(host))
           end)

    assert {:ok, %{os_pid: ^os_pid, crashes: 0, agents: [c, t]}} = Symbiont.Host.info(host)
    assert %{id: ^counter, handled: 3, failed: 0, status: :ready} = c
    assert %{id: ^trap, handled: 0, failed: 3, status: :ready} = t
    assert await_health(trap, "failing")["reason"] =~ "3 failures in a row"

    # Both come back in the new process after a kill -9, the counter with its state.
    capture_log(fn ->
      Symbiont.Host.Reaper.kill(os_pid)
      assert_receive {:agent_start, ^counter, %{restarts: 1}}, 10_000
      assert_receive {:agent_start, ^trap, %{restarts: 1}}, 10_000
    end)

    :ok = Symbiont.publish(count_in, 4)
    assert_receive %Symbiont.Event{topic: "count.out", from: ^counter} = e, 5_000
    assert Symbiont.Event.decode!(e) == 4
  end

  test "a component written by hand (WAT) is a Wasm agent too; its state is its own" do
    topic = unique_name("wasm.component.in")
    :ok = Symbiont.subscribe("count.out")
    %{agent: agent, os_pid: os_pid} = start_wasm!("counter_component.wat", topic)

    for i <- 1..3, do: :ok = Symbiont.publish(topic, i)

    for n <- 1..3 do
      assert_receive %Symbiont.Event{topic: "count.out", from: ^agent} = e, 5_000
      assert Symbiont.Event.decode!(e) == n
    end

    # A component's state is the agent's, decoded (not {"wasm_state" => bytes}).
    assert wait_until(fn -> match?({:ok, %{state: 3}}, Symbiont.Agent.Server.info(agent)) end)

    capture_log(fn ->
      Symbiont.Host.Reaper.kill(os_pid)
      assert_receive {:host_start, ^agent, %{restarts: 1}}, 10_000
    end)

    :ok = Symbiont.publish(topic, 4)
    assert_receive %Symbiont.Event{topic: "count.out", from: ^agent} = e, 5_000
    assert Symbiont.Event.decode!(e) == 4
  end

  test "a trap fails that event only: dead letter, degraded then failing, the host serves on" do
    topic = unique_name("wasm.trap.in")
    %{agent: agent, name: name, os_pid: os_pid} = start_wasm!("trap.wat", topic)

    log =
      capture_log(fn ->
        for i <- 1..3, do: :ok = Symbiont.publish(topic, i)

        for i <- 1..3 do
          assert_receive %Symbiont.Event{topic: "symbiont.dead_letter", from: ^agent} = e, 5_000
          letter = Symbiont.Event.decode!(e)
          assert Symbiont.MsgPack.decode!(letter["payload"]) == i

          assert %{
                   "reason" => "handler_failed",
                   "error" => %{"type" => "symbiont.wasm.WasmError"}
                 } = letter

          assert letter["error"]["message"] =~ "trap: #{agent} trapped: wasm `unreachable`"
        end

        assert await_health(agent, "degraded")["reason"] =~ "trapped"
        assert await_health(agent, "failing")["reason"] =~ "3 failures in a row"
      end)

    assert log =~ "agent #{agent} failed on an event"
    assert {:ok, %{os_pid: ^os_pid, crashes: 0, agent: %{failed: 3}}} = Symbiont.Host.info(name)
  end

  test "an endless loop is interrupted at its deadline" do
    topic = unique_name("wasm.loop.in")

    %{agent: agent, os_pid: os_pid, name: name} =
      start_wasm!("loop.wat", topic, limits: [deadline_ms: 50])

    capture_log(fn ->
      :ok = Symbiont.publish(topic, 1)
      assert_receive %Symbiont.Event{topic: "symbiont.dead_letter", from: ^agent} = e, 5_000
      assert Symbiont.Event.decode!(e)["error"]["message"] =~ "ran past its 50 ms deadline"
    end)

    assert {:ok, %{os_pid: ^os_pid, crashes: 0}} = Symbiont.Host.info(name)
  end

  test "a capability that was not granted fails the event; granted, it works" do
    topic = unique_name("wasm.random.in")
    %{agent: denied} = start_wasm!("random.wat", topic)

    capture_log(fn ->
      :ok = Symbiont.publish(topic, 1)
      assert_receive %Symbiont.Event{topic: "symbiont.dead_letter", from: ^denied} = e, 5_000
      assert Symbiont.Event.decode!(e)["error"]["message"] =~ "'random' was not granted"
    end)

    other = unique_name("wasm.random.in")
    %{name: granted} = start_wasm!("random.wat", other, limits: [grants: [:random]])
    :ok = Symbiont.publish(other, 1)

    assert wait_until(fn ->
             match?({:ok, %{agent: %{handled: 1}}}, Symbiont.Host.info(granted))
           end)

    refute_received %Symbiont.Event{topic: "symbiont.dead_letter", from: ^granted}
  end

  test "bad Wasm agent specs name the agent, the key, the value and what is allowed" do
    wasm = Path.join(@wasm, "echo.wat")

    for {spec, message} <- [
          {[wasm: "priv/wasm/nope.wasm", topics: ["t"]],
           ~s(the :wasm module "priv/wasm/nope.wasm" does not exist)},
          {[wasm: wasm],
           "a Wasm agent needs :topics, a non-empty list of topic strings, got: nil"},
          {[wasm: wasm, topics: ["t"], python: "m:C"], "expected :python or :wasm, not both"},
          {[wasm: wasm, topics: ["t"], limits: [grants: [:network]]],
           ~s|["network"] in :grants is not a capability (allowed: clock, random, stdout)|},
          {[wasm: wasm, topics: ["t"], limits: [timeout: 5]],
           "Wasm limit :timeout = 5 is not allowed"},
          {[wasm: wasm, topics: ["t"], limits: [table_elements: 0]],
           "Wasm limit :table_elements = 0 is not allowed (allowed: deadline_ms, fuel, " <>
             "memory_bytes, table_elements, instances, tables, memories, publishes, " <>
             "publish_bytes as positive integers up to 2**63 - 1; grants as a list of clock, " <>
             "random, stdout)"},
          {[wasm: wasm, topics: ["t"], limits: [publishes: 2 ** 63]],
           "Wasm limit :publishes = 9223372036854775808 is not allowed"},
          {[wasm: wasm, topics: ["t"], limits: [memories: "2"]],
           ~s|Wasm limit :memories = "2" is not allowed|},
          {[python: "m:C", topics: ["t"]], ":topics is for Wasm agents"},
          {[], ~s|expected :python ("module:Class") or :wasm|}
        ] do
      assert {:error, %Symbiont.Error{reason: :invalid, message: error}} =
               Symbiont.Agent.validate_spec([name: "w"] ++ spec)

      assert error =~ ~s(agent "w": )
      assert error =~ message
    end
  end

  defp rss_bytes(os_pid) do
    [_, kb] = Regex.run(~r/VmRSS:\s+(\d+) kB/, File.read!("/proc/#{os_pid}/status"))
    String.to_integer(kb) * 1024
  end

  defp hostile!(module, topic, opts \\ []),
    do:
      start_agent_host!(
        "wasm",
        [wasm: Path.join(@hostile, module), topics: [topic], max_attempts: 1] ++ opts
      )

  # The first health report of `agent`'s module (publisher.wat: "about to fail"), skipping
  # the agent's reports of its own failures.
  defp module_report(agent) do
    receive do
      %Symbiont.Event{topic: "symbiont.health", from: ^agent} = e ->
        if Symbiont.Event.decode!(e)["reason"] == "about to fail",
          do: e,
          else: module_report(agent)
    after
      5_000 -> flunk("no health report from #{agent}'s module")
    end
  end

  # The reasons of `agent`'s health events, in the order they came, until its first event
  # on publisher.out, and that event's id.
  defp reports_until_published(agent, reasons) do
    receive do
      %Symbiont.Event{topic: "publisher.out", from: ^agent, id: id} ->
        {Enum.reverse(reasons), id}

      %Symbiont.Event{topic: "symbiont.health", from: ^agent} = e ->
        reports_until_published(agent, [Symbiont.Event.decode!(e)["reason"] | reasons])
    after
      5_000 -> flunk("no event on publisher.out from #{agent}")
    end
  end

  defp await_dead_letter(agent) do
    assert_receive %Symbiont.Event{topic: "symbiont.dead_letter", from: ^agent} = e, 5_000
    Symbiont.Event.decode!(e)["error"]["message"]
  end

  test "a table bomb is capped: the host does not grow, and a huge grow is refused at once" do
    # table_bomb.wat grows its table by the payload, and traps when refused. Uncapped, 5M
    # elements an event grew the host by 40 MB an event, and one grow of 100M ran seconds
    # past the deadline.
    topic = unique_name("wasm.tables.in")
    %{agent: agent, os_pid: os_pid, name: name} = hostile!("table_bomb.wat", topic)

    capture_log(fn ->
      :ok = Symbiont.publish(topic, 5_000_000)
      assert await_dead_letter(agent) =~ "trapped: wasm `unreachable`"
      before = rss_bytes(os_pid)

      for _ <- 1..10 do
        :ok = Symbiont.publish(topic, 5_000_000)
        assert await_dead_letter(agent) =~ "trapped: wasm `unreachable`"
      end

      assert rss_bytes(os_pid) - before < 64 * 1024 * 1024

      :ok = Symbiont.publish(topic, 100_000_000)
      assert await_dead_letter(agent) =~ "#{agent} trapped: wasm `unreachable`"
    end)

    assert {:ok, %{os_pid: ^os_pid, crashes: 0}} = Symbiont.Host.info(name)
  end

  test "the manifest's limits reach the sandbox" do
    # 15,000 elements: over the default table_elements (10,000), under the manifest's.
    topic = unique_name("wasm.tables.in")
    %{agent: agent} = hostile!("table_bomb.wat", topic)

    capture_log(fn ->
      :ok = Symbiont.publish(topic, 15_000)
      assert await_dead_letter(agent) =~ "unreachable"
    end)

    roomy = unique_name("wasm.tables.in")
    %{name: name} = hostile!("table_bomb.wat", roomy, limits: [table_elements: 20_000])
    :ok = Symbiont.publish(roomy, 15_000)
    assert wait_until(fn -> match?({:ok, %{agent: %{handled: 1}}}, Symbiont.Host.info(name)) end)
  end

  test "what a failed call published is never delivered" do
    # publisher.wat publishes on publisher.out and reports health, then (payload 1) loops
    # past its deadline, or (2) traps, or (0) returns.
    :ok = Symbiont.subscribe("publisher.out")
    topic = unique_name("wasm.publisher.in")
    %{agent: agent} = hostile!("publisher.wat", topic, limits: [deadline_ms: 50])

    capture_log(fn ->
      :ok = Symbiont.publish(topic, 1)
      assert await_dead_letter(agent) =~ "ran past its 50 ms deadline"
      :ok = Symbiont.publish(topic, 2)
      assert await_dead_letter(agent) =~ "trapped: wasm `unreachable`"
    end)

    # The first publish and the first report of the module's that come are those of the
    # third delivery (seq 3), the one that succeeded: the publish's id says which delivery
    # published it (PROTOCOL.md §8.1), and no report of the module's came before it (a
    # report is no publish: it has no id, §8.3).
    :ok = Symbiont.publish(topic, 0)
    {reports, id} = reports_until_published(agent, [])
    assert {^agent, _incarnation, 3, 0} = id
    refute "about to fail" in reports
    assert %{"by" => "agent", "id" => ^agent} = Symbiont.Event.decode!(module_report(agent))

    # A call may publish at most `publishes` events.
    flood = unique_name("wasm.publisher.in")
    %{agent: flooder} = hostile!("publisher.wat", flood, limits: [publishes: 5])

    capture_log(fn ->
      :ok = Symbiont.publish(flood, 3)

      assert await_dead_letter(flooder) ==
               "limit: #{flooder} made more than 5 publishes in one call (limit: publishes)"
    end)

    refute_received %Symbiont.Event{topic: "publisher.out", from: ^flooder}
  end

  test "stdout without the grant fails the event; granted, it is the agent's log" do
    topic = unique_name("wasm.stdout.in")
    %{agent: quiet} = hostile!("stdout.wat", topic)

    capture_log(fn ->
      :ok = Symbiont.publish(topic, 1)

      assert await_dead_letter(quiet) =~
               "called wasi_snapshot_preview1.fd_write on fd 1 (stdout), " <>
                 "but the capability 'stdout' was not granted"
    end)

    loud = unique_name("wasm.stdout.in")
    %{name: name} = hostile!("stdout.wat", loud, limits: [grants: [:stdout]])

    :ok = Symbiont.publish(loud, 1)

    assert wait_until(fn ->
             {:ok, %{agent: %{handled: handled}, recent_logs: logs}} = Symbiont.Host.info(name)
             handled == 1 and Enum.any?(logs, &(&1 =~ "hello"))
           end)
  end
end

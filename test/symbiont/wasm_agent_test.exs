defmodule Symbiont.WasmAgentTest do
  # Wasm agents: modules from priv/wasm run by a real Python host under wasmtime, each an
  # agent on the BEAM with its queue, state and health.
  use ExUnit.Case, async: true

  import ExUnit.CaptureLog
  import Symbiont.HostHelpers

  @wasm Path.expand("../../priv/wasm", __DIR__)

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
          {[python: "m:C", topics: ["t"]], ":topics is for Wasm agents"},
          {[], ~s|expected :python ("module:Class") or :wasm|}
        ] do
      assert {:error, error} = Symbiont.Agent.validate_spec([name: "w"] ++ spec)
      assert error =~ ~s(agent "w": )
      assert error =~ message
    end
  end
end

defmodule Symbiont.WasmComponentTest do
  # Python agents built into Wasm components (`symbiont build-wasm`, wit/agent.wit), run
  # by real Python hosts under wasmtime: the same class native and sandboxed, its state
  # across the move, and hostile Python stopped by the sandbox while its co-tenant serves.
  # The component's topics are its class's own (test/fixtures/python/sandboxed_agents.py):
  # the tests of this file share them, so they run one at a time.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog
  import Symbiont.HostHelpers

  alias Symbiont.Agent.Server

  @moduletag timeout: 300_000

  setup_all do
    %{component: component!("sandboxed_agents.py:Sandboxed")}
  end

  setup do
    :ok = Symbiont.subscribe("symbiont.dead_letter")
    :ok = Symbiont.subscribe("sandboxed.counted")
    :ok
  end

  defp counted(agent) do
    assert_receive %Symbiont.Event{topic: "sandboxed.counted", from: ^agent} = e, 10_000
    Symbiont.Event.decode!(e)
  end

  test "the manifest tells a component from a core module by its header", %{component: c} do
    assert Symbiont.Agent.component?(c)
    refute Symbiont.Agent.component?(Path.expand("../../priv/wasm/counter.wasm", __DIR__))
    refute Symbiont.Agent.component?("/nonexistent.wasm")

    # A component needs no :topics (it has its own); a core module still does.
    assert {:ok, %{config: %{"topics" => []}}} = Symbiont.Agent.validate_spec(name: "c", wasm: c)

    assert {:error, %Symbiont.Error{reason: :invalid, message: message}} =
             Symbiont.Agent.validate_spec(
               name: "m",
               wasm: Path.expand("../../priv/wasm/counter.wasm", __DIR__)
             )

    assert message =~ "a Wasm agent needs :topics"
  end

  test "a Python agent moves from python: to wasm: and keeps its state, across a kill -9 too",
       %{component: component} do
    :ok = Symbiont.subscribe("symbiont.health")

    %{agent: agent, name: name} =
      start_agent_host!("sbx-move", python: "sandboxed_agents:Sandboxed")

    :ok = Symbiont.publish("sandboxed.count", 5)
    assert counted(agent) == %{"n" => 1, "total" => 5}
    assert {:ok, %{agent: %{python: "sandboxed_agents:Sandboxed"}}} = Symbiont.Host.info(name)

    # The same agent, now its component: `python:` changed to `wasm:`.
    # (Not the 100 ms default deadline: the machine may be loaded; speed is for bench/.)
    {:ok, spec} =
      Symbiont.Agent.validate_spec(name: agent, wasm: component, limits: [deadline_ms: 5000])

    assert {:ok, _old} = Server.upgrade(agent, spec)
    assert wait_until(fn -> match?({:ok, %{status: :ready}}, Server.info(agent)) end, 30_000)

    :ok = Symbiont.publish("sandboxed.count", 7)
    assert counted(agent) == %{"n" => 2, "total" => 12}
    assert {:ok, %{agent: %{python: "wasm:" <> _}}} = Symbiont.Host.info(name)
    # The state is the agent's own, decoded, as a native agent's (its ack follows the
    # event it published).
    assert wait_until(fn ->
             match?({:ok, %{state: %{"n" => 2, "total" => 12}}}, Server.info(agent))
           end)

    # Its host killed: it comes back from the checkpoint, in the sandbox.
    %{os_pid: os_pid} = Symbiont.Host.info(name) |> elem(1)

    capture_log(fn ->
      Symbiont.Host.Reaper.kill(os_pid)
      assert_receive {:host_start, ^name, %{restarts: 1}}, 30_000
    end)

    :ok = Symbiont.publish("sandboxed.count", 1)
    assert counted(agent) == %{"n" => 3, "total" => 13}
    # self.health and self.log from inside the sandbox.
    assert await_health(agent, "degraded")["reason"] == "third event"

    # And back to python:, the state kept the other way too.
    {:ok, native} =
      Symbiont.Agent.validate_spec(name: agent, python: "sandboxed_agents:Sandboxed")

    assert {:ok, _} = Server.upgrade(agent, native)

    assert wait_until(
             fn ->
               match?(
                 {:ok, %{agent: %{python: "sandboxed_agents:Sandboxed", status: :ready}}},
                 Symbiont.Host.info(name)
               )
             end,
             30_000
           )

    :ok = Symbiont.publish("sandboxed.count", 2)
    assert counted(agent) == %{"n" => 4, "total" => 15}
  end

  test "hostile Python in the sandbox is stopped with a clear error; its co-tenant serves on",
       %{component: component} do
    %{name: host, os_pid: os_pid} = start_host!(name: unique_name("sbx-pool"))
    [calm, hostile] = [unique_name("sbx-calm"), unique_name("sbx-hostile")]
    hostile_topics = ~w(sandboxed.loop sandboxed.alloc sandboxed.file sandboxed.socket
                        sandboxed.exit sandboxed.clock sandboxed.random)

    start_agent_in!(host,
      id: calm,
      name: calm,
      wasm: component,
      topics: ["sandboxed.count"],
      limits: [deadline_ms: 5000]
    )

    start_agent_in!(host,
      id: hostile,
      name: hostile,
      wasm: component,
      topics: hostile_topics,
      limits: [deadline_ms: 1000, memory_bytes: 96 * 1024 * 1024],
      max_attempts: 1
    )

    secret = Path.join(System.tmp_dir!(), unique_name("sbx-secret"))
    File.write!(secret, "secret")
    on_exit(fn -> File.rm(secret) end)
    {:ok, listener} = :gen_tcp.listen(0, ip: {127, 0, 0, 1}, active: false)
    {:ok, port} = :inet.port(listener)

    cases = [
      {"sandboxed.loop", 1, "deadline: #{hostile} ran past its 1000 ms deadline"},
      {"sandboxed.alloc", 1, "memory: #{hostile} hit its memory cap of 100663296 bytes"},
      {"sandboxed.file", secret, "capability: #{hostile}.handle failed: SandboxError: open("},
      {"sandboxed.socket", port, "an agent in the Wasm sandbox has no sockets"},
      {"sandboxed.exit", 3, "SystemExit: sys.exit(3) was called"},
      {"sandboxed.clock", 1, "the capability 'clock' was not granted"},
      {"sandboxed.random", 8, "the capability 'random' was not granted"}
    ]

    capture_log(fn ->
      for {{topic, payload, error}, i} <- Enum.with_index(cases, 1) do
        :ok = Symbiont.publish(topic, payload)
        assert_receive %Symbiont.Event{topic: "symbiont.dead_letter", from: ^hostile} = e, 10_000
        message = Symbiont.Event.decode!(e)["error"]["message"]
        assert message =~ error, "#{topic}: #{message}"

        :ok = Symbiont.publish("sandboxed.count", 1)
        assert counted(calm) == %{"n" => i, "total" => i}
      end
    end)

    # Nothing got out: the file is there, unread; no connection was made.
    assert File.read!(secret) == "secret"
    assert {:error, :timeout} = :gen_tcp.accept(listener, 0)
    refute_received %Symbiont.Event{topic: "sandboxed.counted", from: ^hostile}
    # One host process all along.
    assert {:ok, %{os_pid: ^os_pid, crashes: 0}} = Symbiont.Host.info(host)
  end

  test "a component is canaried, promoted with its state, and rolled back by hand",
       %{component: component} do
    name = unique_name("sbx-deploy")
    deployable!(name, component)

    # The new version: the same component under another path.
    v2 = Path.join(System.tmp_dir!(), unique_name("sandboxed-v2") <> ".wasm")
    File.cp!(component, v2)
    on_exit(fn -> File.rm(v2) end)

    {published, _log} =
      with_log(fn ->
        publisher = start_publishing("sandboxed.count", 2, fn _ -> 1 end)

        assert {:ok, %{canary: canary}} = Symbiont.deploy(name, v2, window_ms: 200, min_events: 5)

        assert %{"action" => "deploy"} = await_step(name)

        assert %{"action" => "promote", "evidence" => %{"canary" => %{"failed" => 0}}} =
                 await_step(name)

        published = stop_publishing(publisher)
        # Quiet: the canary retired (its waiting events handed over), nothing queued.
        assert wait_until(fn -> Server.whereis(canary) == nil end, 10_000)
        assert wait_until(fn -> quiet?(name) end, 10_000)
        published
      end)

    # Every event answered, by either version (the canary's own count, from the state
    # it started with, goes with it: the promoted version goes on from the stable's, as
    # for a core module).
    answers = for _ <- 1..published, do: receive_counted()
    assert length(answers) == published
    flush_counted()

    assert {:ok, %{agent: %{python: "wasm:" <> ^v2}}} = Symbiont.Host.info(name)
    {:ok, %{state: %{"n" => n0, "total" => n0}}} = Server.info(name)
    :ok = Symbiont.publish("sandboxed.count", 1)
    n = n0 + 1
    assert counted(name) == %{"n" => n, "total" => n}

    # And back, by hand, the state kept.
    capture_log(fn ->
      assert {:ok, %{to: ^component}} = Symbiont.rollback(name)
      assert %{"action" => "rollback"} = await_step(name)
    end)

    assert wait_until(
             fn ->
               match?({:ok, %{status: :ready, spec: %{wasm: ^component}}}, Server.info(name))
             end,
             10_000
           )

    :ok = Symbiont.publish("sandboxed.count", 1)
    assert counted(name) == %{"n" => n + 1, "total" => n + 1}
  end

  test "a component's canary that fails is rolled back by itself; the component serves on, its state kept",
       %{component: component} do
    name = unique_name("sbx-rollback")
    deployable!(name, component)

    # A version that traps on every event (a core module: any Wasm agent may follow any).
    trap = Path.expand("../../priv/wasm/trap.wat", __DIR__)

    capture_log(fn ->
      publisher = start_publishing("sandboxed.count", 5, fn _ -> 1 end)
      assert {:ok, %{canary: _}} = Symbiont.deploy(name, trap, window_ms: 200, min_events: 5)
      assert %{"action" => "deploy"} = await_step(name)
      assert %{"action" => "rollback", "reason" => reason} = await_step(name)
      assert reason =~ "error rate"
      stop_publishing(publisher)
      assert wait_until(fn -> quiet?(name) end, 10_000)
    end)

    flush_counted()
    # The component still serves, from the state it had.
    assert {:ok, %{spec: %{wasm: ^component}, state: %{"n" => n}}} = Server.info(name)
    :ok = Symbiont.publish("sandboxed.count", 1)
    assert counted(name) == %{"n" => n + 1, "total" => n + 1}
  end

  # A component agent `name` in a host of its own, counting, and its deploy steps
  # followed.
  defp deployable!(name, component) do
    :ok = Symbiont.subscribe(Symbiont.Deploy.topic())

    agent = [
      name: name,
      wasm: component,
      topics: ["sandboxed.count"],
      limits: [deadline_ms: 5_000]
    ]

    start_host!(name: name, agent: agent)
    :ok = Symbiont.publish("sandboxed.count", 1)
    assert counted(name) == %{"n" => 1, "total" => 1}
  end

  defp quiet?(name) do
    match?(
      {:ok, %{agent: %{status: :ready, queue: 0, in_flight: 0}}},
      Symbiont.Host.info(name)
    )
  end

  defp flush_counted do
    receive do
      %Symbiont.Event{topic: "sandboxed.counted"} -> flush_counted()
    after
      0 -> :ok
    end
  end

  defp receive_counted do
    assert_receive %Symbiont.Event{topic: "sandboxed.counted"} = e, 10_000
    Symbiont.Event.decode!(e)
  end

  defp await_step(name) do
    assert_receive %Symbiont.Event{topic: "symbiont.remediation", from: ^name} = e, 30_000
    Symbiont.Event.decode!(e)
  end
end

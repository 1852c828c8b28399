defmodule SymbiontTest do
  # The iex helpers of Symbiont against a real agent in a real host.
  use ExUnit.Case, async: false

  import ExUnit.CaptureIO
  import ExUnit.CaptureLog
  import Symbiont.HostHelpers

  # The moduledoc's tour would really act (peek for 10 s, spawn an agent); status/0 and
  # health/0 print their screens: each has a test of its own below.
  doctest Symbiont, except: [:moduledoc, status: 0, health: 0]

  setup do
    previous = Application.get_env(:symbiont, :python_path)
    Application.put_env(:symbiont, :python_path, [fixtures()])
    on_exit(fn -> Application.put_env(:symbiont, :python_path, previous) end)
    out = unique_name("iex.out")

    %{name: name, os_pid: os_pid} =
      start_app_agent!("iex", python: "sample_agents:Counter", config: %{"out" => out})

    %{name: name, os_pid: os_pid, out: out}
  end

  # A Moody agent (sample_agents.py) says the health it is told to on its topic.
  defp moody!(prefix) do
    topic = unique_name("moody.in")

    %{name: name} =
      start_app_agent!(prefix, python: "sample_agents:Moody", config: %{"in" => topic})

    %{name: name, topic: topic}
  end

  test "status/0 prints one screen: nodes, hosts with their agents, health, remediations", %{
    name: name
  } do
    %{name: moody, topic: topic} = moody!("iex-moody")
    :ok = Symbiont.subscribe(Symbiont.Health.topic())
    :ok = Symbiont.publish(topic, ["degraded", "slow provider"])
    await_health(moody, "degraded")
    # Said during its handler: the ack of the event follows.
    assert wait_until(fn ->
             match?({:ok, %{health: "degraded", handled: 1}}, Symbiont.agent(moody))
           end)

    # A health event about an agent that the agent did not say is not its health.
    Symbiont.Health.publish("failing", name, "said by someone else", %{})

    screen = capture_io(fn -> assert Symbiont.status() == :ok end)
    assert screen =~ "Symbiont on #{node()}: 1 node(s)"

    assert screen =~
             ~r/AGENT +ROLE +HOST +STATUS +HEALTH +QUEUE +IN-FLIGHT +HANDLED +FAILED +CRASHES +RESTARTS +P99 +VERSION/

    [row] = screen |> String.split("\n") |> Enum.filter(&String.starts_with?(&1, name <> " "))

    assert row =~
             ~r/^#{name} +stable +#{name} +ready +healthy +0 +0 +0 +0 +0 +0 +- +sample_agents:Counter$/

    [row] = screen |> String.split("\n") |> Enum.filter(&String.starts_with?(&1, moody <> " "))

    assert row =~
             ~r/^#{moody} +stable +#{moody} +ready +degraded +0 +0 +1 +0 +0 +0 +\S+ +sample_agents:Moody$/

    assert screen =~ "Last remediations"
  end

  test "status/0 lists a quarantined agent, and only the remediations that were applied", %{
    name: name
  } do
    :ok = Symbiont.subscribe(Symbiont.Remediation.topic())
    capture_log(fn -> :ok = Symbiont.Agent.Server.quarantine(name, "crash loop") end)
    Symbiont.Remediation.publish("quarantine", name, "crash loop", by: "operator")
    await_remediation(name, "quarantine")
    now = System.system_time(:millisecond)

    Symbiont.Conductor.Audit.record(%{
      "action" => "restart",
      "agent" => name,
      "reason" => "never done",
      "by" => "conductor",
      "result" => "refused: cooldown",
      "at_ms" => now
    })

    screen = capture_io(fn -> assert Symbiont.status() == :ok end)
    assert screen =~ ~r/^#{name} +stable +#{name} +quarantined +quarantined +0 +0 +0 +0 /m
    assert screen =~ ~r/^\d\d:\d\d:\d\d +quarantine +#{name} +operator +crash loop$/m
    refute screen =~ "never done"

    # Released, it is back in its host, and healthy again.
    :ok = Symbiont.subscribe(Symbiont.Health.topic())
    capture_log(fn -> :ok = Symbiont.Agent.Server.release(name) end)
    assert %{"reason" => "released from quarantine"} = await_health(name, "healthy")
    assert wait_until(fn -> match?({:ok, %{status: :ready}}, Symbiont.agent(name)) end, 10_000)
    screen = capture_io(fn -> assert Symbiont.status() == :ok end)
    assert screen =~ ~r/^#{name} +stable +#{name} +ready +healthy +0 /m
  end

  test "agent/1: state, counters, version and health history; an unknown one lists the agents",
       %{name: name, out: out} do
    :ok = Symbiont.subscribe(out)
    :ok = Symbiont.publish("count.in", 1)
    assert_receive %Symbiont.Event{topic: ^out}, 5_000
    Symbiont.Health.publish("degraded", name, "why not", %{})

    assert wait_until(fn ->
             match?({:ok, %{handled: 1, health_history: [_ | _]}}, Symbiont.agent(name))
           end)

    {:ok, agent} = Symbiont.agent(name)
    assert %{version: "sample_agents:Counter", state: %{"n" => 1}, queue: 0, in_flight: 0} = agent
    assert [%{"kind" => "degraded", "reason" => "why not"} | _] = agent.health_history

    assert {:error, %Symbiont.Error{reason: :not_found, message: message}} =
             Symbiont.agent("nobody-here")

    assert message =~ ~s(no agent "nobody-here" runs on this node; agents: [)
    assert message =~ inspect(name)
  end

  test "health/0 prints each agent's health, since when and why, and the recent events" do
    %{name: name, topic: topic} = moody!("iex-moody")
    :ok = Symbiont.subscribe(Symbiont.Health.topic())
    :ok = Symbiont.publish(topic, ["overloaded", "queue at 90%"])
    await_health(name, "overloaded")
    assert wait_until(fn -> match?({:ok, %{health: "overloaded"}}, Symbiont.agent(name)) end)
    # A replica retired on a scale in is in the recent events, not the agent's health.
    Symbiont.Health.publish("retired", name, "scaled in", %{"id" => name <> "#2"})
    assert_receive %Symbiont.Event{topic: "symbiont.health", from: ^name}

    assert wait_until(fn ->
             match?([%{"kind" => "retired"} | _], Symbiont.Health.History.of(name))
           end)

    screen = capture_io(fn -> assert Symbiont.health() == :ok end)
    assert screen =~ ~r/#{name} +overloaded +\d\d:\d\d:\d\d +queue at 90%/
    assert screen =~ ~r/\d\d:\d\d:\d\d +retired +#{name} +scaled in/
    assert screen =~ "Recent health events"
  end

  test "peek/2 prints the decoded events of a topic, then stops by itself" do
    topic = unique_name("peek")
    publisher = start_publishing(topic, 5, &%{"i" => &1})

    output = capture_io(fn -> assert Symbiont.peek(topic, ms: 5_000, count: 3) == 3 end)
    stop_publishing(publisher)

    assert [first, _, _] = String.split(output, "\n", trim: true)
    assert [_, i] = Regex.run(~r/^\d\d:\d\d:\d\d  #{topic}  -  %\{"i" => (\d+)\}$/, first)
    assert output =~ ~s(%{"i" => #{String.to_integer(i) + 2}})
    assert Symbiont.Mesh.members(Symbiont.Mesh, topic, nil) == []
    assert Symbiont.peek(topic, ms: 0) == 0

    assert_raise ArgumentError, ~r/expected :ms to be a non-negative integer/, fn ->
      Symbiont.peek(topic, ms: -1)
    end
  end

  test "restart/1 restarts the agent's host by hand, audited as the operator's",
       %{name: name, os_pid: os_pid} do
    :ok = Symbiont.subscribe(Symbiont.Remediation.topic())

    capture_log(fn ->
      assert Symbiont.restart(name) == :ok

      assert %{"by" => "operator", "reason" => "restarted by hand"} =
               await_remediation(name, "restart")

      assert_receive {:agent_start, ^name, %{restarts: 1}}, 10_000
    end)

    # A restart by hand is a restart, not a crash.
    assert {:ok, %{os_pid: new, restarts: 1, crashes: 0}} = Symbiont.agent(name)
    assert new != os_pid
  end

  test "restart/1 of a Wasm agent restarts it alone: its host and neighbours keep running" do
    [a, b] = for _ <- 1..2, do: unique_name("iex-wasm")
    wasm = fn n -> [name: n, wasm: "priv/wasm/counter.wat", topics: [unique_name("w.in")]] end
    attach_host_events(a)
    attach_host_events(b)
    start_manifest!([wasm.(a), wasm.(b)], wasm_hosts: "#{a}-host")
    assert_receive {:agent_start, ^a, _}, 10_000
    assert_receive {:agent_start, ^b, _}, 10_000
    {:ok, %{host: host, os_pid: os_pid}} = Symbiont.agent(a)
    assert {:ok, %{host: ^host}} = Symbiont.agent(b)
    :ok = Symbiont.subscribe(Symbiont.Remediation.topic())

    assert Symbiont.restart(a) == :ok

    assert %{"by" => "operator", "host" => ^host, "replicas" => [^a]} =
             await_remediation(a, "restart")

    assert_receive {:agent_start, ^a, _}, 10_000
    # b shares the host and was left alone: no start of it follows, it was never restarted.
    refute_receive {:agent_start, ^b, _}, 300
    assert {:ok, %{restarts: 0}} = Symbiont.Agent.Server.info(b)
    # a was: a restart, not a crash, in every view.
    assert {:ok, %{restarts: 1, crashes: 0}} = Symbiont.agent(a)
    assert {:ok, %{os_pid: ^os_pid, status: :ready}} = Symbiont.agent(a)
    # call/3 takes an agent's name too: a Wasm agent's runs in the host it shares.
    assert Symbiont.call(a, "os.getpid", []) == {:ok, os_pid}
  end

  test "agents/0 and hosts/0 list the running agent and its host", %{name: name, os_pid: os_pid} do
    assert [%{id: ^name, os_pid: ^os_pid, queue: 0, crashes: 0}] =
             Enum.filter(Symbiont.agents(), &(&1.id == name))

    assert [%{status: :ready, os_pid: ^os_pid, agents: [^name]}] =
             Enum.filter(Symbiont.hosts(), &(&1.name == name))
             |> Enum.map(&Map.update!(&1, :agents, fn as -> Enum.map(as, fn a -> a.id end) end))
  end

  test "call/3 calls a Python function in an agent's host", %{name: name} do
    assert Symbiont.call(name, "math.pow", [2, 10]) == {:ok, 1024.0}
    assert Symbiont.call(name, "os.path.join", ["/tmp", "x"]) == {:ok, "/tmp/x"}

    assert {:error, %Symbiont.Python.Error{type: "ZeroDivisionError"}} =
             Symbiont.call(name, "operator.truediv", [1, 0])

    assert {:error, %Symbiont.Error{reason: :not_found, message: message}} =
             Symbiont.call("nobody-here", "math.pow", [2, 10])

    assert message =~ ~s(no host or agent named "nobody-here" runs on this node; hosts: [)
    assert message =~ inspect(name)
  end
end

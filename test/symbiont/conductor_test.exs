defmodule Symbiont.ConductorTest do
  # The conductor's scenarios on real hosts, each asserting the action taken AND that the
  # system is healthy again afterwards; then the conductor's own failures. Each test runs
  # a manifest and a conductor of its own, scoped to its agents.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog
  import Symbiont.HostHelpers

  alias Symbiont.Agent.Server
  alias Symbiont.Conductor

  doctest Symbiont.Conductor.Template
  doctest Symbiont.Conductor, only: [validate_options: 1]

  @tick 200
  @cooldown 1_000

  setup do
    previous = Application.get_env(:symbiont, :python_path)
    Application.put_env(:symbiont, :python_path, [fixtures()])
    on_exit(fn -> Application.put_env(:symbiont, :python_path, previous) end)
    :ok = Symbiont.subscribe(Symbiont.Remediation.topic())
    :ok = Symbiont.subscribe("symbiont.dead_letter")
    {:ok, prefix: unique_name("cond")}
  end

  defp stage(name, config, extra \\ []),
    do: [name: name, python: "scenario_agents:Stage", config: config] ++ extra

  defp start_conductor!(prefix, manifest, opts \\ []),
    do:
      start_scoped_conductor!(
        prefix,
        manifest,
        Keyword.merge([tick_ms: @tick, cooldown_ms: @cooldown], opts)
      )

  defp await_outputs(topic, values, timeout \\ 10_000) do
    Enum.each(values, fn value ->
      receive do
        %Symbiont.Event{topic: ^topic} = e -> assert Symbiont.Event.decode!(e) == value
      after
        timeout -> flunk("no #{inspect(value)} on #{topic}")
      end
    end)
  end

  defp conductor_actions_on(agent) do
    for %{"by" => "conductor", "agent" => ^agent, "result" => "applied"} = e <-
          Symbiont.remediations(1_000),
        do: e
  end

  test "crash loop: the agent is quarantined, its events wait, and the crashes stop",
       %{prefix: prefix} do
    a = "#{prefix}-crashy"
    attach_host_events(a)
    topic = unique_name("crash.in")
    m = start_manifest!([stage(a, %{"in" => topic, "mode" => "crash"}, max_attempts: 1)])
    assert_receive {:agent_start, ^a, _}, 10_000
    start_conductor!(prefix, m)

    capture_log(fn ->
      for i <- 1..6, do: :ok = Symbiont.publish(topic, i)
      action = await_remediation(a, "quarantine")
      assert action["reason"] =~ "crash loop"
      assert %{"crashes_in_window" => crashes} = action["evidence"]
      assert is_integer(crashes) and crashes >= 3

      # Healthy afterwards: no event reaches the agent to crash it, and the host serves on
      # (once a crash already under way when the quarantine came is over: the host
      # process may still have been handling an event).
      {:ok, %{restarts: restarts}} = Server.info(a)
      :ok = Symbiont.publish(topic, "waits")
      assert wait_until(fn -> match?({:ok, %{queue: q}} when q >= 1, Server.info(a)) end)

      assert wait_until(
               fn ->
                 case Symbiont.Host.info(a) do
                   {:ok, %{status: :ready, os_pid: os_pid}} -> os_alive?(os_pid)
                   _ -> false
                 end
               end,
               10_000
             )

      assert {:ok, %{restarts: ^restarts, quarantined: "crash loop" <> _}} = Server.info(a)
    end)
  end

  test "poison message: dead-lettered by the conductor, the agent keeps going",
       %{prefix: prefix} do
    a = "#{prefix}-picky"
    [topic, out] = [unique_name("poison.in"), unique_name("poison.out")]
    attach_host_events(a)
    m = start_manifest!([stage(a, %{"in" => topic, "out" => out}, max_attempts: 50)])
    assert_receive {:agent_start, ^a, _}, 10_000
    :ok = Symbiont.subscribe(out)
    :ok = Symbiont.publish(topic, "first")
    await_outputs(out, ["first"])
    start_conductor!(prefix, m)

    capture_log(fn ->
      :ok = Symbiont.publish(topic, "poison")
      for v <- ~w(a b c), do: :ok = Symbiont.publish(topic, v)
      action = await_remediation(a, "dead_letter")
      assert %{"suspect" => %{"attempts" => attempts, "topic" => ^topic}} = action["evidence"]
      assert is_integer(attempts) and attempts >= 2

      assert_receive %Symbiont.Event{topic: "symbiont.dead_letter", from: ^a} = letter, 5_000
      assert %{"reason" => "poison", "attempts" => n} = Symbiont.Event.decode!(letter)
      assert n >= 2
      await_outputs(out, ~w(a b c))
    end)

    assert {:ok, %{quarantined: nil, queue: 0}} = Server.info(a)
  end

  test "cascading failure: the upstream root is restarted, the symptoms downstream are left alone",
       %{prefix: prefix} do
    [a, b, c] = for s <- ~w(root mid leaf), do: "#{prefix}-#{s}"
    [t1, t2, t3, out] = for t <- ~w(in ab bc out), do: unique_name("cascade.#{t}")
    for id <- [a, b, c], do: attach_host_events(id)

    m =
      start_manifest!([
        stage(a, %{"in" => t1, "out" => t2}, max_attempts: 1),
        stage(b, %{"in" => t2, "out" => t3}, max_attempts: 1),
        stage(c, %{"in" => t3, "out" => out}, max_attempts: 1)
      ])

    for id <- [a, b, c], do: assert_receive({:agent_start, ^id, _}, 10_000)
    :ok = Symbiont.subscribe(out)
    # The topology knows who publishes to whom once events have flowed.
    :ok = Symbiont.publish(t1, 0)
    await_outputs(out, [0])
    start_conductor!(prefix, m, policy_options: %{"settle_ms" => 3_000})
    feeder = start_publishing(t1, 20, &(&1 + 1))

    capture_log(fn ->
      :ok = Symbiont.publish(t1, "break")
      action = await_remediation(a, "restart")
      assert action["reason"] =~ "root of a cascading failure"
      assert Enum.sort(action["evidence"]["downstream"]) == Enum.sort([b, c])

      # Healthy again: good events go all the way through once more (bad ones the root
      # sent before its restart may still be on their way down the chain).
      assert_receive {:agent_start, ^a, %{restarts: 1}}, 10_000

      assert Stream.repeatedly(fn ->
               receive do
                 %Symbiont.Event{topic: ^out} = e -> Symbiont.Event.decode!(e)
               after
                 5_000 -> flunk("no good event on #{out} since the restart")
               end
             end)
             |> Stream.take(100)
             |> Enum.find(&is_integer/1)
    end)

    stop_publishing(feeder)
    assert conductor_actions_on(b) == []
    assert conductor_actions_on(c) == []
  end

  test "idle agents: scaled in to their minimum, and retired when not required",
       %{prefix: prefix} do
    [a, b] = for s <- ~w(busy spare), do: "#{prefix}-#{s}"
    for id <- [a, a <> "#2", b], do: attach_host_events(id)

    m =
      start_manifest!([
        stage(a, %{"in" => unique_name("idle.a")}, replicas: 2),
        stage(b, %{"in" => unique_name("idle.b")}, required: false)
      ])

    for id <- [a, a <> "#2", b], do: assert_receive({:agent_start, ^id, _}, 10_000)
    start_conductor!(prefix, m, policy_options: %{"idle_ms" => 300}, cooldown_ms: 300)

    capture_log(fn ->
      assert %{"replicas" => 1, "reason" => "idle for " <> _} = await_remediation(a, "scale")
      assert %{"reason" => "idle for " <> _} = await_remediation(b, "retire")

      assert wait_until(
               fn -> Server.whereis(b) == nil and Server.whereis(a <> "#2") == nil end,
               5_000
             )
    end)

    # At its minimum and required, the busy one stays.
    assert {:ok, %{status: :ready}} = Server.info(a)
    assert Enum.map(Symbiont.Manifest.agents(m), &{&1.name, &1.replicas}) == [{a, 1}]
  end

  test "slow consumer: its group is scaled out while the queue grows, and in once drained (Little's law)",
       %{prefix: prefix} do
    a = "#{prefix}-slow"
    topic = unique_name("slow.in")
    attach_host_events(a <> "#2")
    config = %{"in" => topic, "mode" => "slow", "delay" => 0.02}
    m = start_manifest!([stage(a, config, high_water: 30, max_replicas: 3)])

    start_conductor!(prefix, m, policy_options: %{"grow_ticks" => 2, "drain_ticks" => 3})
    feeder = start_publishing(topic, 8, &(&1 + 1))

    capture_log(fn ->
      # Little's law: some 125 events/s of 20 ms need 3 or 4 replicas at 80% busy, all at
      # once (its maximum, 3), not one more a tick.
      assert %{"replicas" => out, "evidence" => %{"needed" => needed}} =
               await_remediation(a, "scale", 15_000)

      assert needed >= 2 and out == min(needed, 3)
      assert_receive {:agent_start, _, _}, 10_000
      stop_publishing(feeder)

      assert %{"replicas" => n, "reason" => "capacity: " <> _} =
               await_remediation(a, "scale", 20_000)

      assert n >= 1
    end)

    assert wait_until(fn -> match?({:ok, %{queue: 0, in_flight: 0}}, Server.info(a)) end, 10_000)
  end

  test "the conductor runs at high priority: the overload it heals does not starve it",
       %{prefix: prefix} do
    c = start_conductor!(prefix, start_manifest!([]))
    assert Process.info(Process.whereis(c), :priority) == {:priority, :high}
  end

  test "regression right after a deploy: rolled back by the conductor, the old version serves again",
       %{prefix: prefix} do
    capture_log(fn ->
      %{name: a, topic: topic} = promote_v3!(prefix, [])
      c = start_conductor!(prefix, start_manifest!([]))

      # counter_v3.wat traps on nil; its canary only ever saw numbers.
      for _ <- 1..5, do: :ok = Symbiont.publish(topic, nil)
      action = await_conductor(a, "rollback")
      assert action["reason"] =~ "errors right after a deploy"

      assert_healthy_on_v1(c, a, topic, nil)
    end)
  end

  test "crash loop after a deploy: rolled back to the last good version, not quarantined",
       %{prefix: prefix} do
    # counter_v3.wat loops on `true`: past its handler_timeout (the deadline is longer) the
    # host is restarted, again for each event, so the crashes outnumber any one delivery.
    # The promotion counts as long ago (regression_ms: 0): the crash loop rule decides, not
    # the regression rule (its crashes count over a window of uptime: Symbiont.Signals).
    extra = [
      limits: [deadline_ms: 60_000],
      handler_timeout: 200,
      max_attempts: 1,
      max_in_flight: 1
    ]

    capture_log(fn ->
      %{name: a, topic: topic} = promote_v3!(prefix, extra)

      c = start_conductor!(prefix, start_manifest!([]), policy_options: %{"regression_ms" => 0})

      for _ <- 1..6, do: :ok = Symbiont.publish(topic, true)
      action = await_conductor(a, "rollback", 30_000)
      assert action["reason"] =~ "crash loop"
      assert %{"crashes_in_window" => crashes} = action["evidence"]
      assert is_integer(crashes) and crashes >= 3

      assert_healthy_on_v1(c, a, topic, true)
    end)
  end

  test "evolution: a new tenant's topic gets an agent of its own from a template, retired when idle",
       %{prefix: prefix} do
    out = unique_name("tenant.out")
    template = :"#{prefix}-tenant"
    tenant_topic = "#{prefix}.tenant.acme.orders"

    Application.put_env(:symbiont, :templates, [
      {template,
       [
         match: "#{prefix}.tenant.*.orders",
         python: "scenario_agents:Tenant",
         config: %{"out" => out}
       ]}
    ])

    on_exit(fn -> Application.delete_env(:symbiont, :templates) end)
    :ok = Symbiont.subscribe(out)
    agent = "#{prefix}-tenant-acme"
    m = start_manifest!([])
    start_conductor!(prefix, m, policy_options: %{"idle_ms" => 600}, cooldown_ms: 300)

    capture_log(fn ->
      # The first events find nobody; the conductor spawns the tenant's agent.
      publisher = start_publishing(tenant_topic, 5)
      spawn = await_conductor(agent, "spawn")
      assert spawn["template"] == Atom.to_string(template)
      assert spawn["evidence"]["topic"] == tenant_topic
      assert_receive %Symbiont.Event{topic: ^out, from: ^agent} = e, 10_000
      assert %{"tenant" => "acme"} = Symbiont.Event.decode!(e)
      stop_publishing(publisher)
      assert %{required: false} = Symbiont.Manifest.agent(agent, m)

      # Idle, not required: retired again, and the manifest no longer has it.
      retire = await_conductor(agent, "retire")
      assert retire["reason"] =~ "idle"
      assert wait_until(fn -> Server.whereis(agent) == nil end, 5_000)
      assert Symbiont.Manifest.agent(agent, m) == nil
    end)
  end

  # A Wasm agent on counter.wat, deployed to counter_v3.wat and promoted (on numbers).
  defp promote_v3!(prefix, extra) do
    a = "#{prefix}-priced"
    topic = unique_name("priced.in")
    wasm = Path.expand("../../priv/wasm", __DIR__)

    start_host!(
      name: a,
      agent: [name: a, wasm: Path.join(wasm, "counter.wat"), topics: [topic]] ++ extra
    )

    publisher = start_publishing(topic, 5)

    assert {:ok, _} =
             Symbiont.deploy(a, Path.join(wasm, "counter_v3.wat"), window_ms: 200, min_events: 5)

    await_remediation(a, "promote", 15_000)
    stop_publishing(publisher)
    %{name: a, topic: topic}
  end

  # The conductor's own remediation (Deploy publishes its rollback step too).
  defp await_conductor(agent, action, timeout \\ 10_000) do
    case await_remediation(agent, action, timeout) do
      %{"by" => "conductor"} = a -> a
      _ -> await_conductor(agent, action, timeout)
    end
  end

  # Back on counter.wat: the value v3 failed on is handled, and nothing fails any more;
  # and it stays so: past its cooldown the conductor does not act again on the evidence the
  # rollback answered (v3's crashes and failures are still in its window).
  defp assert_healthy_on_v1(c, a, topic, value) do
    assert wait_until(
             fn ->
               match?(
                 {:ok, %{agent: %{python: "wasm:" <> p}}}
                 when binary_part(p, byte_size(p), -11) == "counter.wat",
                 Symbiont.Host.info(a)
               )
             end,
             10_000
           )

    # The events left of the crash loop go through v1 first (its host may be in backoff).
    assert wait_until(
             fn -> match?({:ok, %{status: :ready, in_flight: 0, queue: 0}}, Server.info(a)) end,
             30_000
           )

    {:ok, %{failed: failed, handled: handled}} = Server.info(a)
    :ok = Symbiont.subscribe("count.out")
    :ok = Symbiont.publish(topic, value)
    assert_receive %Symbiont.Event{topic: "count.out", from: ^a}, 5_000
    assert wait_until(fn -> match?({:ok, %{handled: h}} when h > handled, Server.info(a)) end)
    assert {:ok, %{failed: ^failed}} = Server.info(a)

    ticks = Conductor.info(c).ticks
    settled = ticks + div(@cooldown, @tick) + 2
    assert wait_until(fn -> Conductor.info(c).ticks >= settled end, 10_000)
    assert [%{"action" => "rollback"} | _] = conductor_actions_on(a)
    assert {:ok, %{quarantined: nil, status: :ready}} = Server.info(a)
  end

  test "each observation and each tick is timed: telemetry events named after the conductor",
       %{prefix: prefix} do
    a = "#{prefix}-timed"
    m = start_manifest!([stage(a, %{"in" => "#{prefix}.in", "out" => "#{prefix}.out"})])
    c = start_conductor!(prefix, m, tick_ms: 60_000)
    me = self()
    handler = "conductor-test-#{c}"
    events = [[:symbiont, :conductor, :observe], [:symbiont, :conductor, :tick]]

    :ok =
      Symbiont.Telemetry.attach_many(
        handler,
        events,
        fn event, m, meta, _ ->
          if meta.conductor == c, do: send(me, {event, m, meta})
        end,
        nil
      )

    on_exit(fn -> Symbiont.Telemetry.detach(handler) end)
    wait_until(fn -> match?(%{status: :ready}, Symbiont.Observation.replica(a)) end, 10_000)

    assert [%{"name" => ^a}] = Conductor.snapshot(c)["agents"]
    assert_receive {[:symbiont, :conductor, :observe], %{duration_us: us, agents: 1}, _}
    assert is_integer(us) and us >= 0

    assert Conductor.tick(c) == []
    assert_receive {[:symbiont, :conductor, :observe], %{agents: 1}, _}
    assert_receive {[:symbiont, :conductor, :tick], %{agents: 1, actions: 0}, %{error: nil}}
  end

  test "an agent that cannot start is left to its own start-failure rule: no restart",
       %{prefix: prefix} do
    a = "#{prefix}-nostart"
    :ok = Symbiont.subscribe(Symbiont.Health.topic())
    # Many tries allowed: it is still failing to start while the conductor looks.
    m = start_manifest!([[name: a, python: "nosuch_module:Agent", max_start_failures: 100]])
    c = start_conductor!(prefix, m, tick_ms: 60_000)

    capture_log(fn ->
      assert %{"metrics" => %{"failures" => 1}} = await_health(a, "failing")

      assert [%{"name" => ^a, "health" => "failing", "start_failures" => n}] =
               Conductor.snapshot(c)["agents"]

      assert n >= 1
      # Restarting it would only run the same import again.
      assert Conductor.tick(c) == []
    end)

    assert conductor_actions_on(a) == []
  end

  test "a refusal repeated tick after tick is logged once, not once a tick", %{prefix: prefix} do
    a = "#{prefix}-refused"
    attach_host_events(a)
    m = start_manifest!([stage(a, %{"in" => unique_name("refused.in")})])
    assert_receive {:agent_start, ^a, _}, 10_000
    action = %{"action" => "restart", "agent" => a, "reason" => "told to"}
    level = Logger.get_module_level(Conductor)
    Logger.put_module_level(Conductor, :info)
    on_exit(fn -> Logger.put_module_level(Conductor, level[Conductor] || :all) end)

    log =
      capture_log([level: :info], fn ->
        c =
          start_conductor!(prefix, m,
            tick_ms: 60_000,
            policy: "scenario_policies:Always",
            policy_options: %{"action" => action},
            cooldown_ms: 60_000
          )

        for _ <- 1..6, do: Conductor.tick(c)
      end)

    count = fn text -> log |> String.split("\n") |> Enum.count(&String.contains?(&1, text)) end
    # Applied once, then refused (cooldown) five times: one line; the unknown action the
    # policy adds each tick, refused six times: one line.
    assert count.("conductor: restart #{a}: told to") == 1
    assert count.("conductor: refused") == 2
    assert count.("cooldown: acted on #{a}") == 1
    assert count.("unknown action \"pray\"") == 1
    # The audit trail has it once too (the same refusal again is not news: a trail of
    # 1,000 entries would otherwise fill with one refusal a tick).
    refused =
      for %{"agent" => ^a, "result" => "refused: cooldown" <> _} <- Symbiont.remediations(1_000),
          do: 1

    assert length(refused) == 1
  end

  describe "never a single point of failure" do
    test "a policy that answers garbage, or hangs, costs a tick; agents are untouched",
         %{prefix: prefix} do
      a = "#{prefix}-calm"
      [topic, out] = [unique_name("calm.in"), unique_name("calm.out")]
      m = start_manifest!([stage(a, %{"in" => topic, "out" => out})])
      :ok = Symbiont.subscribe(out)

      capture_log(fn ->
        c = start_conductor!(prefix, m, policy: "scenario_policies:Garbage")

        assert wait_until(
                 fn ->
                   (Conductor.info(c).last_error || "") =~ "must return a list of actions"
                 end,
                 5_000
               )

        hang =
          start_conductor!(prefix, m,
            policy: "scenario_policies:HangOnce",
            policy_options: %{"key" => prefix},
            decide_timeout_ms: 300
          )

        assert wait_until(fn -> Conductor.info(hang).last_error == ":timeout" end, 5_000)
        # The hung call was cancelled in the policy host; the next tick is answered.
        assert wait_until(
                 fn -> match?(%{last_error: nil, ticks: t} when t >= 2, Conductor.info(hang)) end,
                 5_000
               )

        :ok = Symbiont.publish(topic, "still here")
        await_outputs(out, ["still here"])
      end)
    end

    test "a killed policy host or conductor comes back and resumes from the audit trail",
         %{prefix: prefix} do
      a = "#{prefix}-target"
      attach_host_events(a)
      m = start_manifest!([stage(a, %{"in" => unique_name("target.in")})])
      assert_receive {:agent_start, ^a, _}, 10_000
      action = %{"action" => "restart", "agent" => a, "reason" => "told to"}

      capture_log(fn ->
        c =
          start_conductor!(prefix, m,
            policy: "scenario_policies:Always",
            policy_options: %{"action" => action},
            cooldown_ms: 60_000
          )

        assert %{"reason" => "told to"} = await_remediation(a, "restart")
        assert_receive {:agent_start, ^a, %{restarts: 1}}, 10_000

        # The policy host dies: OTP restarts it, the conductor carries on.
        %{options: %{policy_host: host}} = Conductor.info(c)
        {:ok, %{os_pid: os_pid}} = Symbiont.Host.info(host)
        Symbiont.Host.Reaper.kill(os_pid)
        ticks = Conductor.info(c).ticks

        assert wait_until(
                 fn ->
                   match?(%{last_error: nil, ticks: t} when t > ticks + 1, Conductor.info(c))
                 end,
                 5_000
               )

        # The conductor dies: its supervisor restarts it, and the cooldown read back from
        # the audit trail still holds the action back.
        pid = Process.whereis(c)
        kill!(pid, 5_000)

        assert wait_until(
                 fn -> is_pid(Process.whereis(c)) and Process.whereis(c) != pid end,
                 5_000
               )

        assert wait_until(fn -> Conductor.info(c).ticks >= 2 end, 5_000)
      end)

      refused =
        for %{"agent" => ^a, "result" => "refused: cooldown" <> _} <-
              Symbiont.remediations(1_000),
            do: 1

      assert refused != []
      assert length(conductor_actions_on(a)) == 1

      unknown =
        for %{"action" => "pray", "result" => "refused: unknown action" <> _} <-
              Symbiont.remediations(1_000),
            do: 1

      assert unknown != []
      assert {:ok, %{status: :ready}} = Server.info(a)
    end
  end
end

defmodule Symbiont.HealTest do
  # Step 10's scenarios on real hosts: the conductor sees latency, memory and remedies
  # that did not work (Symbiont.Signals measures, the Python DefaultPolicy decides, each
  # pattern climbs a ladder of remedies). Each test asserts the remedy AND what follows
  # it: the recovery, or the end of the ladder (no agent restarted for ever). Short ticks,
  # small windows and thresholds set per test keep each to seconds.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog
  import Symbiont.HostHelpers

  alias Symbiont.Agent.Server
  alias Symbiont.Conductor

  @tick 200
  @cooldown 300
  @wasm Path.expand("../../priv/wasm", __DIR__)

  setup do
    previous = Application.get_env(:symbiont, :python_path)
    Application.put_env(:symbiont, :python_path, [fixtures()])
    on_exit(fn -> Application.put_env(:symbiont, :python_path, previous) end)
    :ok = Symbiont.subscribe(Symbiont.Remediation.topic())
    {:ok, prefix: unique_name("heal")}
  end

  defp stage(name, config, extra \\ []),
    do: [name: name, python: "scenario_agents:Stage", config: config] ++ extra

  defp start_conductor!(prefix, manifest, opts),
    do:
      start_scoped_conductor!(
        prefix,
        manifest,
        Keyword.merge([tick_ms: @tick, cooldown_ms: @cooldown], opts)
      )

  # The conductor's own remediation (Deploy publishes its rollback step too).
  defp await_conductor(agent, action, timeout \\ 10_000) do
    case await_remediation(agent, action, timeout) do
      %{"by" => "conductor"} = a -> a
      _ -> await_conductor(agent, action, timeout)
    end
  end

  defp conductor_actions_on(agent) do
    for %{"by" => "conductor", "agent" => ^agent, "result" => "applied"} = e <-
          Symbiont.remediations(1_000),
        do: {e["action"], get_in(e, ["evidence", "ladder"])}
  end

  # Waits until conductor `c` has ticked `n` more times.
  defp ticks(c, n), do: await_ticks(c, n)

  defp with_signals(opts) do
    previous = Application.get_env(:symbiont, :signals)
    Application.put_env(:symbiont, :signals, opts)

    on_exit(fn ->
      if previous,
        do: Application.put_env(:symbiont, :signals, previous),
        else: Application.delete_env(:symbiont, :signals)
    end)
  end

  test "(d) a handler raising on every event: restarted, then quarantined; the ladder ends, and survives a restart of the conductor",
       %{prefix: prefix} do
    a = "#{prefix}-raising"
    topic = unique_name("raise.in")
    attach_host_events(a)
    m = start_manifest!([stage(a, %{"in" => topic, "mode" => "raise"}, max_attempts: 1)])
    assert_receive {:agent_start, ^a, _}, 10_000
    feeder = start_publishing(topic, 20)
    options = %{"settle_ms" => 1_500}
    policy_host = unique_name("policy")

    capture_log(fn ->
      c = start_conductor!(prefix, m, policy_options: options, policy_host: policy_host)
      restart = await_conductor(a, "restart")

      assert restart["evidence"]["ladder"] == %{
               "pattern" => "failing",
               "rung" => 1,
               "rungs" => ["restart", "rollback", "quarantine"]
             }

      # A new conductor (its policy's memory gone with it) finds the rung in the audit
      # trail: the restart did not help, so the next rung, not the first again.
      :ok = stop_supervised(c)
      c = start_conductor!(prefix, m, policy_options: options)
      assert %{"rung" => 1} = snapshot_of(c, a)["ladder"]["failing"]

      quarantine =
        try do
          await_conductor(a, "quarantine", 20_000)
        rescue
          e in ExUnit.AssertionError ->
            flunk(
              "#{e.message}; snapshot: #{inspect(snapshot_of(c, a))}; audit: #{inspect(Symbiont.remediations(10))}; info: #{inspect(Conductor.info(c))}"
            )
        end

      assert %{"pattern" => "failing", "rung" => 3} = quarantine["evidence"]["ladder"]

      # The ladder ends there: past the settle time of the quarantine, nothing more.
      assert {:ok, %{quarantined: "failing" <> _}} = Server.info(a)
      ticks(c, div(3_000, @tick))

      assert conductor_actions_on(a) == [
               {"quarantine", quarantine["evidence"]["ladder"]},
               {"restart", restart["evidence"]["ladder"]}
             ]
    end)

    stop_publishing(feeder)
  end

  test "(e) a crash on every event noticed once its restart backoff is seconds: quarantined",
       %{prefix: prefix} do
    a = "#{prefix}-crashy"
    topic = unique_name("crash.in")
    attach_host_events(a)
    m = start_manifest!([stage(a, %{"in" => topic, "mode" => "crash"}, max_attempts: 1)])
    assert_receive {:agent_start, ^a, _}, 10_000

    capture_log(fn ->
      for i <- 1..20, do: :ok = Symbiont.publish(topic, i)
      # 8 crashes: the host now waits 640 ms, then 1.3 s, 2.6 s, 5 s before each restart.
      # Counted over ticks, as before, at most two crashes fell in the window.
      assert wait_until(
               fn -> match?({:ok, %{crashes: n}} when n >= 8, Server.info(a)) end,
               30_000
             )

      c = start_conductor!(prefix, m, policy_options: %{"crash_loop" => 3})
      quarantine = await_conductor(a, "quarantine")
      assert quarantine["reason"] =~ "crash loop"
      assert %{"crashes_in_window" => n, "deliveries" => d} = quarantine["evidence"]
      assert n >= 3 and d >= 2

      # It crashes no more; its events wait.
      {:ok, %{crashes: crashes}} = Server.info(a)
      ticks(c, 5)
      assert {:ok, %{crashes: ^crashes, quarantined: "crash loop" <> _}} = Server.info(a)
    end)
  end

  test "a crash loop answered by dead letters is still a crash loop: a dead letter does not spend the crash evidence",
       %{prefix: prefix} do
    # Every event kills the host, and is tried again (max_attempts: 50): each delivery is
    # a poison message the conductor dead-letters; the next one crashes it as well. A
    # dead letter takes one delivery away, not the loop (before step 10 it reset the
    # crash evidence, and the agent was dead-lettered for ever).
    a = "#{prefix}-poisoned"
    topic = unique_name("poisoned.in")
    attach_host_events(a)
    m = start_manifest!([stage(a, %{"in" => topic, "mode" => "crash"}, max_attempts: 50)])
    assert_receive {:agent_start, ^a, _}, 10_000
    :ok = Symbiont.subscribe("symbiont.dead_letter")

    capture_log(fn ->
      c = start_conductor!(prefix, m, policy_options: %{"crash_loop" => 3, "poison_after" => 2})
      for i <- 1..10, do: :ok = Symbiont.publish(topic, i)
      assert %{"reason" => "poison message" <> _} = await_conductor(a, "dead_letter", 20_000)
      quarantine = await_conductor(a, "quarantine", 30_000)
      assert quarantine["reason"] =~ "crash loop"
      assert %{"deliveries" => d} = quarantine["evidence"]
      assert d >= 2

      # It crashes no more.
      {:ok, %{crashes: crashes}} = Server.info(a)
      ticks(c, 5)
      assert {:ok, %{crashes: ^crashes, quarantined: "crash loop" <> _}} = Server.info(a)
    end)
  end

  test "(c) a Python agent whose memory grows: restarted, then quarantined when it grows again",
       %{prefix: prefix} do
    a = "#{prefix}-leaky"
    topic = unique_name("leak.in")
    attach_host_events(a)
    m = start_manifest!([stage(a, %{"in" => topic, "mode" => "leak", "leak_mb" => 2})])
    assert_receive {:agent_start, ^a, _}, 10_000
    {:ok, %{host: host}} = Server.info(a)
    first = Symbiont.Host.os_pid(host)
    feeder = start_publishing(topic, 20)

    options = %{
      "settle_ms" => 1_500,
      "leak_bps" => 10_485_760,
      "leak_floor" => 62_914_560,
      "leak_readings" => 4
    }

    capture_log(fn ->
      start_conductor!(prefix, m, policy_options: options, memory_every_ms: @tick)
      restart = await_conductor(a, "restart", 20_000)
      assert %{"pattern" => "leak", "rung" => 1} = restart["evidence"]["ladder"]
      assert %{"growth_bps" => bps, "rss_bytes" => rss} = restart["evidence"]["memory"]
      assert bps >= 10_485_760 and rss >= 62_914_560

      # A new process, with its memory given back; it leaks again: quarantined.
      assert wait_until(fn -> Symbiont.Host.os_pid(host) not in [nil, first] end, 10_000)
      quarantine = await_conductor(a, "quarantine", 20_000)
      assert %{"pattern" => "leak", "rung" => 2} = quarantine["evidence"]["ladder"]

      # Quarantined, it handles nothing: its host grows no more.
      {:ok, %{handled: handled}} = Server.info(a)
      assert wait_until(fn -> match?({:ok, %{queue: q}} when q >= 5, Server.info(a)) end, 5_000)
      assert {:ok, %{handled: ^handled}} = Server.info(a)
    end)

    stop_publishing(feeder)
  end

  test "CPU time per event: an agent that computes spends its handling time on the CPU, one that waits does not",
       %{prefix: prefix} do
    [burn, wait] = names = for m <- ~w(burn wait), do: "#{prefix}-#{m}"
    topics = for n <- names, do: unique_name(n <> ".in")
    for n <- names, do: attach_host_events(n)

    m =
      start_manifest!([
        stage(burn, %{"in" => hd(topics), "mode" => "burn", "delay" => 0.02}),
        stage(wait, %{"in" => List.last(topics), "mode" => "slow", "delay" => 0.02})
      ])

    for n <- names, do: assert_receive({:agent_start, ^n, _}, 10_000)
    feeders = for t <- topics, do: start_publishing(t, 50)
    c = start_conductor!(prefix, m, memory_every_ms: @tick)

    queue = fn name ->
      agent = Enum.find(Conductor.snapshot(c)["agents"], &(&1["name"] == name))
      agent["signals"]["queue"]
    end

    known? = fn ->
      Enum.all?(names, &match?(%{"cpu_us" => us} when is_integer(us), queue.(&1)))
    end

    assert wait_until(known?, 15_000)

    # Both take some 20 ms an event; one of them on the CPU.
    %{"cpu_us" => burn_cpu, "service_us" => burn_service} = queue.(burn)
    %{"cpu_us" => wait_cpu, "service_us" => wait_service} = queue.(wait)
    assert burn_service >= 15_000 and wait_service >= 15_000
    # (On a loaded machine a spinning handler is preempted too: less than all of it.)
    assert burn_cpu >= div(burn_service, 4), "burn: #{burn_cpu} of #{burn_service} µs"
    assert wait_cpu <= div(wait_service, 8), "wait: #{wait_cpu} of #{wait_service} µs"
    assert burn_cpu > 3 * wait_cpu

    Enum.each(feeders, &stop_publishing/1)
  end

  test "(a) a latency regression after a promotion: rolled back, and the old version is fast again",
       %{prefix: prefix} do
    with_signals(window_ms: 1_000, baseline_min: 20, baseline_every_ms: 200, recent: 50)
    a = "#{prefix}-priced"
    topic = unique_name("priced.in")

    start_host!(
      name: a,
      agent: [
        name: a,
        wasm: Path.join(@wasm, "counter.wat"),
        topics: [topic],
        limits: [deadline_ms: 5_000],
        max_in_flight: 1
      ]
    )

    capture_log(fn ->
      # counter.wat's history: its baseline, learnt from what is older than the window.
      publisher = start_publishing(topic, 5)
      assert wait_until(fn -> Symbiont.Observation.baseline(a, version(a)) != nil end, 15_000)
      stable = version(a)

      # counter_v4.wat is fast on numbers (the canary sees nothing else), promoted.
      assert {:ok, _} =
               Symbiont.deploy(a, Path.join(@wasm, "counter_v4.wat"),
                 window_ms: 200,
                 min_events: 5
               )

      await_remediation(a, "promote", 15_000)
      stop_publishing(publisher)
      c = start_conductor!(prefix, start_manifest!([]), policy_options: %{})

      # Every event now takes it tens of ms (`true` spins): no error, only slower than
      # the version before (it has no history of its own yet).
      slow = start_publishing(topic, 50, fn _ -> true end)
      rollback = await_conductor(a, "rollback", 20_000)
      assert rollback["reason"] =~ "latency regression since its deploy"
      assert %{"pattern" => "regression", "rung" => 1} = rollback["evidence"]["ladder"]
      assert %{"k" => k, "n" => n, "p" => p, "baseline" => base} = rollback["evidence"]["latency"]
      assert k >= 1 and n >= k and p <= 1.0e-3
      assert %{"own" => false, "version" => ^stable} = base

      # Back on counter.wat, the same events are fast: no evidence, no more actions.
      assert wait_until(fn -> version(a) == stable end, 10_000)
      ticks(c, div(2_000, @tick))
      latency = snapshot_of(c, a)["signals"]["latency"]
      assert latency == nil or latency["p"] > 1.0e-3
      stop_publishing(slow)
      assert [{"rollback", _}] = conductor_actions_on(a)
    end)
  end

  test "a restart on request is never charged as a crash, even when a write finds the pipe closed first",
       %{prefix: prefix} do
    # The conductor's restart kills the process; an event sent meanwhile often finds
    # the pipe closed before the exit status comes. Charged as a crash, it kept a
    # failing agent off its ladder (the failing rule leaves a crashing agent alone).
    a = "#{prefix}-restarted"
    topic = unique_name("restarted.in")
    attach_host_events(a)
    m = start_manifest!([stage(a, %{"in" => topic})])
    assert_receive {:agent_start, ^a, _}, 10_000
    feeder = start_publishing(topic, 1)

    capture_log(fn ->
      for i <- 1..10 do
        {:ok, %{host: host}} = Server.info(a)
        :ok = Symbiont.Host.restart(host, "told to")
        assert_receive {:agent_start, ^a, %{restarts: ^i}}, 10_000
      end
    end)

    stop_publishing(feeder)
    assert {:ok, %{crashes: 0, restarts: 10}} = Server.info(a)
    refute_received %Symbiont.Event{topic: "symbiont.remediation", from: ^a}
    _ = m
  end

  test "an agent's baselines go with its last replica; another agent's stay", %{prefix: prefix} do
    [a, b] = for s <- ~w(gone kept), do: "#{prefix}-#{s}"

    for n <- [a, b] do
      agent = [name: n, wasm: Path.join(@wasm, "echo.wat"), topics: [unique_name("echo.in")]]
      start_host!(name: n, agent: agent)
    end

    base = %{n: 100, p50_us: 10, p99_us: 20, rate: 0.0, version: "v"}
    for n <- [a, b], do: Symbiont.Observation.put_baseline(n, "v", base)

    :ok = stop_supervised({:agent, a})
    assert wait_until(fn -> Symbiont.Observation.baseline(a, "v") == nil end)
    assert Symbiont.Observation.baseline(b, "v") == base
  end

  defp version(a) do
    case Symbiont.Host.info(a) do
      {:ok, %{agent: %{python: "wasm:" <> path}}} -> "wasm:" <> Path.relative_to_cwd(path)
      _ -> nil
    end
  end

  defp snapshot_of(c, a), do: Enum.find(Conductor.snapshot(c)["agents"], &(&1["name"] == a))
end

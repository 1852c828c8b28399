# Time from a fault to serving again, and the conductor's own cost.
#
#     make bench            # every benchmark; or: mix run --no-start bench/heal.exs
#
# - A crashed Python host (its agent kills it with SIGKILL while handling an event): from
#   the kill to the answer to the next event, which needs the host back, its
#   agent started again from its checkpoint and the un-acked events redelivered. With a warm
#   standby process (Symbiont.Host.Standby) and, in the same run, interleaved, with the
#   pool turned off: a cold start of `python -m symbiont.host`. Each sample is a fresh host,
#   so no restart backoff is in the figures.
# - A hung host (SIGSTOP): found by heartbeats (here every 100 ms, three missed), killed and
#   restarted; from the signal to the answer to an event published right after it.
# - A crash loop (an agent whose every event kills its host): from the first event to the
#   conductor's quarantine (its tick here: 200 ms).
# - The conductor's cost per tick (observe + decide in Python + act) with 1,000 Wasm agents
#   in scope, beside the same with 10.
# - The conductor's observation alone (`Symbiont.Conductor.snapshot/1`: what the policy
#   gets, read from Symbiont.Observation, the topology and the audit trail included) with
#   10,000 real Wasm agents in scope (started on 4 hosts, each serving), beside the same
#   with 10; and, for reference, what observing them cost before step 9: one
#   `Symbiont.Agent.Server.info/1` call per agent (a state decode and, for a durable
#   agent, a journal commit each). The conductor's own time (its
#   `[:symbiont, :conductor, :observe]` event: what a tick spends observing); then the
#   wall-clock time of the `snapshot/1` call, which also copies the snapshot to the caller
#   (a tick does not: some 2.8 million words for 10,000 agents, fresh pages for the
#   caller's heap), and the BEAM's CPU time meanwhile (`:erlang.statistics(:runtime)`,
#   ms), which a loaded machine does not inflate.
# - A noisy neighbour (step 10): a slow Wasm agent (priv/wasm/slow.wat, some 25 ms a
#   message on a quiet machine, 60-70 on a loaded one) and two fast ones (counter.wat) in
#   one shared host, an event every 10 ms to the slow one (more than it can handle at any
#   speed: its host is busy) and every 40 ms to each fast one, for a run of fixed length; with the conductor (its tick 200 ms, the default
#   policy) and, interleaved in the same run, without it (plain OTP supervision: nothing
#   is wrong for a supervisor, so nothing happens). Time to detect: from the first event to
#   the conductor's `reroute` (its audit entry, published once the move is done: the
#   deliveries in flight finished in the shared host, the agent serving in its own).
#   Time to recover: from the first event to the send time of the fast co-tenants' first
#   delivery after which every one of theirs (to the end of the run) took under 50 ms, the
#   run's length when that never happens (it can come before the audit entry: the
#   co-tenants no longer wait once the noisy agent's last deliveries there finish). And
#   the co-tenants' p99 over the last third of the run, beside the same without the
#   conductor. The load average of the machine at the start and the end of the run is
#   noted under the table (other work on the machine inflates every figure here).
# - Step 10's analytics (each beside plain OTP supervision, the conductor off, in the same
#   run): a latency regression after a promotion (counter_v4.wat, some 40 ms an event
#   against 1 ms; no error), from its first slow event to the conductor's rollback
#   (detect) and to an event handled fast again (recover); a Python agent leaking 2 MB
#   an event, from its first event to the restart (detect) and to the quarantine that
#   stops the growth when the restart did not (recover); a crash loop noticed once its
#   restart backoff is 2.6 s, from the conductor's start to the quarantine. With the
#   conductor off, what the same fault does over the same time: p99 still slow, the RSS
#   it grew to, the crashes it went on with.

Application.put_env(:symbiont, :agents, [])
Application.put_env(:symbiont, :conductor, enabled: false)
Application.put_env(:symbiont, :status_page, false)
Application.put_env(:symbiont, :python_path, [__DIR__])
Logger.configure(level: :error)
{:ok, _} = Application.ensure_all_started(:symbiont)
Code.require_file("results.exs", __DIR__)

defmodule Bench.Heal do
  alias Symbiont.{Agent.Server, Event}

  @quick Bench.Results.quick?()
  @crash_samples if @quick, do: 6, else: 30
  @hang_samples if @quick, do: 2, else: 5
  @loop_samples if @quick, do: 1, else: 3
  @tick_samples if @quick, do: 3, else: 10
  @tick_agents if @quick, do: 200, else: 1_000
  @snapshot_agents 10_000
  @snapshot_samples if @quick, do: 5, else: 20
  @beat_ms 100
  @conductor_tick_ms 200
  @warm_ms 300

  def run do
    dir = Path.join(System.tmp_dir!(), "symbiont-heal-#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    :ok = Symbiont.subscribe("symbiont.remediation")
    load0 = loadavg()

    IO.puts("crashed host: #{@crash_samples} samples each, warm standby and cold, interleaved")

    # Sample 0 of each mode is a warm-up, left out: the pool learns this host's launch and
    # its agent's module from it.
    samples =
      for i <- 0..@crash_samples,
          mode <- [:standby, :cold],
          sample = crash_sample(mode, i, dir),
          i > 0 do
        {mode, sample}
      end

    standby = for {:standby, us} <- samples, do: us
    cold = for {:cold, us} <- samples, do: us
    Application.put_env(:symbiont, :standby_hosts, 1)

    IO.puts("hung host: #{@hang_samples} samples")
    hung = for i <- 1..@hang_samples, do: hang_sample(i)

    IO.puts("crash loop: #{@loop_samples} samples")
    loops = for i <- 1..@loop_samples, do: loop_sample(i)

    IO.puts("conductor tick: #{@tick_agents} agents, then 10")
    {tick_many, tick_few} = {tick_cost(@tick_agents), tick_cost(10)}

    IO.puts("conductor snapshot: #{@snapshot_agents} agents, then 10")
    {snap_many, call_many, cpu_many, info_many} = snapshot_cost(@snapshot_agents)
    {snap_few, call_few, cpu_few, _} = snapshot_cost(10)
    File.rm_rf!(dir)

    noisy = noisy_neighbour()
    IO.puts("analytics: latency regression, leak, crash loop noticed late; conductor on, off")
    analytics = analytics_rows()

    [s50, s99, c50, c99] = [p(standby, 50), p(standby, 99), p(cold, 50), p(cold, 99)]
    row = &Bench.Results.row/5
    cold_start = "cold start (no standby)"

    rows = [
      row.("crashed host → serving again p50 (ms)", s50, cold_start, c50, "< 10 ms"),
      row.("crashed host → serving again p99 (ms)", s99, cold_start, c99, "(info)"),
      row.(
        "hung host (SIGSTOP) → serving again p50 (ms)",
        p(hung, 50),
        "3 heartbeats of #{@beat_ms} ms",
        3 * @beat_ms,
        "(info)"
      ),
      row.(
        "crash loop → quarantined p50 (ms)",
        p(loops, 50),
        "conductor tick",
        @conductor_tick_ms,
        "(info)"
      ),
      row.(
        "conductor tick, #{@tick_agents} agents p50 (ms)",
        p(tick_many, 50),
        "conductor tick, 10 agents",
        p(tick_few, 50),
        "(info)"
      ),
      row.(
        "conductor snapshot, #{@snapshot_agents} agents p50 (ms)",
        p(snap_many, 50),
        "conductor snapshot, 10 agents",
        p(snap_few, 50),
        "≤ 50 ms"
      ),
      row.(
        "conductor snapshot, #{@snapshot_agents} agents, as a call: with its copy to the caller p50 (ms)",
        p(call_many, 50),
        "the same, 10 agents",
        p(call_few, 50),
        "(info)"
      ),
      row.(
        "conductor snapshot, #{@snapshot_agents} agents, as a call: BEAM CPU time p50 (ms)",
        p(cpu_many, 50),
        "the same, 10 agents",
        p(cpu_few, 50),
        "(info)"
      ),
      row.(
        "observing #{@snapshot_agents} agents as before step 9: an info call each p50 (ms)",
        p(info_many, 50),
        "conductor snapshot, #{@snapshot_agents} agents",
        p(snap_many, 50),
        "(info)"
      )
    ]

    Bench.Results.record("heal", rows ++ analytics ++ noisy_rows(noisy),
      details:
        "Load average (1 min) of the machine during this run: #{load0} at the start, #{loadavg()} at the end (2 cores)."
    )
  end

  ## A crashed host

  defp crash_sample(mode, i, dir) do
    Application.put_env(:symbiont, :standby_hosts, if(mode == :standby, do: 1, else: 0))
    # The pool follows the setting now: it drops its standby, or starts one and has it
    # ready before the fault (the first sample's host also teaches it the launch).
    send(Symbiont.Host.Standby, :refill)
    name = "heal-#{mode}-#{i}"
    {topic, out} = start_agent(name, %{})
    if mode == :standby, do: Bench.Results.wait(fn -> standby_ready?() end)

    # From the kill itself (the agent writes the wall-clock time into the marker just
    # before it) to the answer: detection, restart, the agent started again and its
    # un-acked events redelivered.
    marker = Path.join(dir, name)
    :ok = Symbiont.publish(topic, %{"die" => marker})
    :ok = Symbiont.publish(topic, %{"ping" => i})
    await_out(out, System.monotonic_time(:microsecond))
    served_ns = System.os_time(:nanosecond)
    stop(name)
    div(served_ns - String.to_integer(File.read!(marker)), 1_000)
  end

  # A standby up for @warm_ms has done its imports and waits for its handshake, as one
  # does that waited for a fault in real life.
  defp standby_ready? do
    %{ready: ready} = :sys.get_state(Symbiont.Host.Standby)
    now = System.monotonic_time(:millisecond)

    Enum.any?(ready, fn {_key, standbys} ->
      Enum.any?(standbys, fn {_, at} -> now - at >= @warm_ms end)
    end)
  end

  ## A hung host

  defp hang_sample(i) do
    name = "heal-hung-#{i}"
    {topic, out} = start_agent(name, %{}, heartbeat_ms: @beat_ms)
    Bench.Results.wait(fn -> standby_ready?() end)
    {:ok, %{os_pid: os_pid}} = Symbiont.Host.info(name)
    t0 = System.monotonic_time(:microsecond)
    {_, 0} = System.cmd("kill", ["-STOP", Integer.to_string(os_pid)])
    :ok = Symbiont.publish(topic, %{"ping" => i})
    us = await_out(out, t0)
    stop(name)
    us
  end

  ## A crash loop, ended by the conductor

  defp loop_sample(i) do
    name = "heal-loop-#{i}"
    {topic, _out} = start_agent(name, %{"crash" => true}, [], max_attempts: 1)
    conductor = :"heal_conductor_#{i}"

    {:ok, pid} =
      Symbiont.Conductor.start_link(
        name: conductor,
        tick_ms: @conductor_tick_ms,
        cooldown_ms: 1_000,
        policy_host: "heal-policy-#{i}",
        scope: &(&1 == name)
      )

    t0 = System.monotonic_time(:microsecond)
    for n <- 1..6, do: :ok = Symbiont.publish(topic, %{"ping" => n})
    us = await_remediation(name, "quarantine", t0)
    GenServer.stop(pid)
    Symbiont.Python.stop("heal-policy-#{i}")
    stop(name)
    us
  end

  ## Step 10: latency, memory and remedies that did not work, conductor on and off

  @analytics_observe_ms if @quick, do: 6_000, else: 15_000
  @signals [window_ms: 1_000, baseline_min: 20, baseline_every_ms: 200, recent: 50]

  defp analytics_rows do
    Application.put_env(:symbiont, :signals, @signals)
    row = &Bench.Results.row/5
    lat = latency_regression(:on)
    lat_off = latency_regression(:off)
    leak = leak(:on)
    leak_off = leak(:off)
    loop = late_crash_loop(:on)
    loop_off = late_crash_loop(:off)
    Application.delete_env(:symbiont, :signals)
    off = "conductor off"
    observed = "over #{div(@analytics_observe_ms, 1000)} s"

    [
      row.(
        "latency regression after a promotion → rollback: time to detect (ms)",
        lat.detect,
        "#{off}: p99 handling time #{observed} (ms)",
        lat_off.p99_ms,
        "(info)"
      ),
      row.(
        "latency regression → handled fast again: time to recover (ms)",
        lat.recover,
        "#{off}: p99 handling time #{observed} (ms)",
        lat_off.p99_ms,
        "(info)"
      ),
      row.(
        "leak (2 MB an event) → restart: time to detect (ms)",
        leak.detect,
        "#{off}: RSS grown #{observed} (MB)",
        leak_off.grown_mb,
        "(info)"
      ),
      row.(
        "leak → quarantined after the restart did not help: growth stops (ms)",
        leak.recover,
        "#{off}: RSS grown #{observed} (MB)",
        leak_off.grown_mb,
        "(info)"
      ),
      row.(
        "crash loop noticed at 2.6 s of backoff → quarantined (ms)",
        loop.detect,
        "#{off}: crashes #{observed}",
        loop_off.crashes,
        "(info)"
      )
    ]
  end

  defp conductor(name, mode, options \\ %{})

  defp conductor(_name, :off, _options), do: nil

  defp conductor(name, :on, options) do
    {:ok, pid} =
      Symbiont.Conductor.start_link(
        name: :"heal_conductor_#{name}",
        tick_ms: @conductor_tick_ms,
        cooldown_ms: 1_000,
        memory_every_ms: @conductor_tick_ms,
        policy_host: "heal-policy-#{name}",
        policy_options: options,
        scope: &(&1 == name)
      )

    pid
  end

  defp stop_conductor(nil, _name), do: :ok

  defp stop_conductor(pid, name) do
    GenServer.stop(pid)
    Symbiont.Python.stop("heal-policy-#{name}")
  end

  defp wasm(file), do: Path.expand("../priv/wasm/#{file}", __DIR__)

  defp latency_regression(mode) do
    name = "heal-latency-#{mode}"
    topic = "bench.heal.#{name}"
    {:ok, _} = DynamicSupervisor.start_child(Symbiont.Hosts, {Symbiont.Host, [name: name]})

    spec = [
      host: name,
      id: name,
      name: name,
      wasm: wasm("counter.wat"),
      topics: [topic],
      limits: [deadline_ms: 5_000],
      max_in_flight: 1
    ]

    {:ok, _} = DynamicSupervisor.start_child(Symbiont.Agents, {Server, spec})
    Bench.Results.wait(fn -> match?({:ok, %{status: :ready}}, Server.info(name)) end)
    stable = "wasm:" <> Path.relative_to_cwd(wasm("counter.wat"))

    # Its history first (a baseline), then counter_v4.wat, promoted on numbers.
    warm = start_publisher(topic, 5, & &1)
    Bench.Results.wait(fn -> Symbiont.Observation.baseline(name, stable) != nil end)
    t = System.monotonic_time(:microsecond)
    {:ok, _} = Symbiont.deploy(name, wasm("counter_v4.wat"), window_ms: 200, min_events: 5)
    await_remediation(name, "promote", t)
    stop_publisher(warm)

    c = conductor(name, mode)
    t0 = System.monotonic_time(:microsecond)
    slow = start_publisher(topic, 50, fn _ -> true end)

    result =
      case mode do
        :on ->
          detect = await_remediation(name, "rollback", t0)

          # Fast again: its newest handling time under 5 ms, on counter.wat.
          Bench.Results.wait(fn ->
            match?({:ok, %{samples: [{_, _, us} | _]}} when us < 5_000, Server.metrics(name)) and
              version_of(name) == stable
          end)

          %{detect: detect / 1000, recover: (System.monotonic_time(:microsecond) - t0) / 1000}

        :off ->
          Process.sleep(@analytics_observe_ms)
          {:ok, %{samples: samples}} = Server.metrics(name)
          times = for {_, _, us} <- Enum.take(samples, 50), do: us
          %{p99_ms: Symbiont.Stats.percentile(times, 0.99) / 1000}
      end

    stop_publisher(slow)
    stop_conductor(c, name)
    stop(name)
    result
  end

  defp version_of(name) do
    case Symbiont.Host.info(name) do
      {:ok, %{agent: %{python: "wasm:" <> path}}} -> "wasm:" <> Path.relative_to_cwd(path)
      _ -> nil
    end
  end

  defp leak(mode) do
    name = "heal-leak-#{mode}"
    topic = "bench.heal.#{name}"
    {:ok, _} = DynamicSupervisor.start_child(Symbiont.Hosts, {Symbiont.Host, [name: name]})
    spec = [host: name, id: name, name: name, python: "bench_agents:Leaky"]
    spec = spec ++ [config: %{"in" => topic, "mb" => 2}]
    {:ok, _} = DynamicSupervisor.start_child(Symbiont.Agents, {Server, spec})
    Bench.Results.wait(fn -> match?({:ok, %{status: :ready}}, Server.info(name)) end)
    rss0 = Symbiont.Signals.rss(Symbiont.Host.os_pid(name))

    options = %{
      "settle_ms" => 1_500,
      "leak_bps" => 10 * 1024 * 1024,
      "leak_floor" => 60 * 1024 * 1024,
      "leak_readings" => 4
    }

    c = conductor(name, mode, options)
    t0 = System.monotonic_time(:microsecond)
    feeder = start_publisher(topic, 20, & &1)

    result =
      case mode do
        :on ->
          detect = await_remediation(name, "restart", t0)
          recover = await_remediation(name, "quarantine", t0)
          %{detect: detect / 1000, recover: recover / 1000}

        :off ->
          Process.sleep(@analytics_observe_ms)
          rss = Symbiont.Signals.rss(Symbiont.Host.os_pid(name))
          %{grown_mb: Float.round((rss - rss0) / 1_048_576, 1)}
      end

    stop_publisher(feeder)
    stop_conductor(c, name)
    stop(name)
    result
  end

  defp late_crash_loop(mode) do
    name = "heal-late-#{mode}"
    {topic, _out} = start_agent(name, %{"crash" => true}, [], max_attempts: 1)
    for n <- 1..40, do: :ok = Symbiont.publish(topic, %{"ping" => n})
    # 10 crashes: the host waits 2.6 s before the next restart, then 5 s.
    Bench.Results.wait(fn -> match?({:ok, %{crashes: n}} when n >= 10, Server.info(name)) end)
    c = conductor(name, mode, %{"crash_loop" => 3})
    t0 = System.monotonic_time(:microsecond)

    result =
      case mode do
        :on ->
          %{detect: await_remediation(name, "quarantine", t0) / 1000}

        :off ->
          {:ok, %{crashes: before}} = Server.info(name)
          Process.sleep(@analytics_observe_ms)
          {:ok, %{crashes: crashes}} = Server.info(name)
          %{crashes: crashes - before}
      end

    stop_conductor(c, name)
    stop(name)
    result
  end

  defp start_publisher(topic, every_ms, value) do
    spawn_link(fn -> publish_loop(topic, every_ms, value, 0) end)
  end

  defp publish_loop(topic, every_ms, value, n) do
    receive do
      :stop -> :ok
    after
      every_ms ->
        :ok = Symbiont.publish(topic, value.(n))
        publish_loop(topic, every_ms, value, n + 1)
    end
  end

  defp stop_publisher(pid), do: send(pid, :stop)

  ## The conductor's cost per tick

  defp tick_cost(n) do
    prefix = "tick#{n}"

    specs =
      for i <- 1..n do
        {:ok, spec} =
          Symbiont.Agent.validate_spec(
            name: "#{prefix}-#{i}",
            wasm: Path.expand("../priv/wasm/counter.wat", __DIR__),
            topics: ["bench.heal.tick"]
          )

        spec
      end

    :ok = Symbiont.Manifest.start_all(specs, 250)

    Bench.Results.wait(fn ->
      Enum.all?(specs, &match?({:ok, %{status: :ready}}, Server.info(&1.name)))
    end)

    conductor = :"heal_tick_#{n}"

    {:ok, pid} =
      Symbiont.Conductor.start_link(
        name: conductor,
        tick_ms: 3_600_000,
        policy_host: "heal-tick-policy-#{n}",
        scope: &String.starts_with?(&1, prefix <> "-")
      )

    # The first tick starts the policy's host.
    Symbiont.Conductor.tick(conductor)

    us =
      for _ <- 1..@tick_samples do
        t0 = System.monotonic_time(:microsecond)
        Symbiont.Conductor.tick(conductor)
        System.monotonic_time(:microsecond) - t0
      end

    GenServer.stop(pid)
    Symbiont.Python.stop("heal-tick-policy-#{n}")
    for h <- Enum.uniq(Enum.map(Symbiont.Manifest.plan(specs, 250), &elem(&1, 0))), do: stop(h)
    us
  end

  ## The conductor's observation

  # Snapshot samples (µs) with n real Wasm agents serving, and as many rounds of one
  # info call per agent (the observation before Symbiont.Observation).
  defp snapshot_cost(n) do
    prefix = "snap#{n}"
    per_host = max(div(n, 4), 1)

    specs =
      for i <- 1..n do
        {:ok, spec} =
          Symbiont.Agent.validate_spec(
            name: "#{prefix}-#{i}",
            wasm: Path.expand("../priv/wasm/counter.wat", __DIR__),
            topics: ["bench.heal.snapshot"]
          )

        spec
      end

    :ok = Symbiont.Manifest.start_all(specs, per_host)
    scope = &String.starts_with?(&1, prefix <> "-")

    Bench.Results.wait(fn ->
      ready = for %{status: :ready} <- Symbiont.Observation.replicas(scope: scope), do: 1
      length(ready) == n
    end)

    conductor = :"heal_snapshot_#{n}"

    {:ok, pid} =
      Symbiont.Conductor.start_link(
        name: conductor,
        tick_ms: 3_600_000,
        policy_host: "heal-snapshot-policy-#{n}",
        scope: scope
      )

    %{"agents" => agents} = Symbiont.Conductor.snapshot(conductor)
    ^n = length(agents)

    # The conductor's own time (its [:symbiont, :conductor, :observe] event), then the
    # call's (with the copy of the snapshot to this process).
    me = self()
    handler = "bench-heal-observe-#{n}"

    :ok =
      Symbiont.Telemetry.attach(
        handler,
        [:symbiont, :conductor, :observe],
        fn _, m, meta, _ ->
          if meta.conductor == conductor, do: send(me, {:observed, m.duration_us})
        end,
        nil
      )

    samples =
      for _ <- 1..@snapshot_samples do
        {cpu0, _} = :erlang.statistics(:runtime)
        t0 = System.monotonic_time(:microsecond)
        Symbiont.Conductor.snapshot(conductor)
        wall = System.monotonic_time(:microsecond) - t0
        {cpu1, _} = :erlang.statistics(:runtime)
        observed = receive do: ({:observed, us} -> us)
        {observed, wall, (cpu1 - cpu0) * 1000}
      end

    Symbiont.Telemetry.detach(handler)

    infos =
      for _ <- 1..min(@snapshot_samples, 5) do
        t0 = System.monotonic_time(:microsecond)
        for spec <- specs, do: {:ok, _} = Server.info(spec.name)
        System.monotonic_time(:microsecond) - t0
      end

    GenServer.stop(pid)
    Symbiont.Python.stop("heal-snapshot-policy-#{n}")

    for h <- Enum.uniq(Enum.map(Symbiont.Manifest.plan(specs, per_host), &elem(&1, 0))),
        do: stop(h)

    {Enum.map(samples, &elem(&1, 0)), Enum.map(samples, &elem(&1, 1)),
     Enum.map(samples, &elem(&1, 2)), infos}
  end

  ## A noisy neighbour (step 10)

  @noisy_samples if @quick, do: 1, else: 3
  @noisy_run_ms if @quick, do: 8_000, else: 12_000
  @noisy_every_ms 40
  @noisy_slow_every_ms 10
  @recovered_us 50_000

  defp noisy_neighbour do
    IO.puts(
      "noisy neighbour: #{@noisy_samples} runs of #{@noisy_run_ms} ms each, with and without the conductor, interleaved"
    )

    runs = for i <- 1..@noisy_samples, mode <- [:conductor, :off], do: {mode, noisy_run(mode, i)}
    Map.new([:conductor, :off], fn mode -> {mode, for({^mode, r} <- runs, do: r)} end)
  end

  defp noisy_rows(%{conductor: on, off: off}) do
    row = &Bench.Results.row/5
    med = fn runs, key -> p(Enum.map(runs, &(&1[key] * 1_000)), 50) end
    off_label = "conductor off (OTP supervision alone)"

    [
      row.(
        "noisy neighbour → rerouted (detected) p50 (ms)",
        med.(on, :detect_ms),
        "#{off_label}: never, in #{@noisy_run_ms} ms",
        med.(off, :detect_ms),
        "(info)"
      ),
      row.(
        "noisy neighbour → co-tenants under 50 ms again (recovered) p50 (ms)",
        med.(on, :recover_ms),
        off_label,
        med.(off, :recover_ms),
        "(info)"
      ),
      row.(
        "noisy neighbour: co-tenants' p99, last third of the run (ms)",
        med.(on, :p99_ms),
        off_label,
        med.(off, :p99_ms),
        "≤ 0.2×"
      )
    ]
  end

  # One run: the slow agent and two fast ones placed in one shared host by a manifest of
  # their own, the load from t0 for @noisy_run_ms, with or without a conductor.
  defp noisy_run(mode, i) do
    prefix = "heal-noisy-#{mode}-#{i}"
    [slow, fast_a, fast_b] = ids = for n <- ~w(slow fast-a fast-b), do: "#{prefix}-#{n}"
    topic = &"bench.heal.noisy.#{&1}"
    wasm = &Path.expand("../priv/wasm/#{&1}", __DIR__)

    specs = [
      [
        name: slow,
        wasm: wasm.("slow.wat"),
        topics: [topic.(slow)],
        max_in_flight: 8,
        # The move is measured, not the capacity rule (which would add a replica elsewhere).
        max_replicas: 1,
        limits: [deadline_ms: 10_000]
      ],
      [name: fast_a, wasm: wasm.("counter.wat"), topics: [topic.(fast_a)]],
      [name: fast_b, wasm: wasm.("counter.wat"), topics: [topic.(fast_b)]]
    ]

    {:ok, specs} = Symbiont.Manifest.validate(specs)
    manifest = :"heal_noisy_manifest_#{mode}_#{i}"
    {:ok, m} = Symbiont.Manifest.start_link(name: manifest, agents: specs, wasm_hosts: prefix)
    Bench.Results.wait(fn -> Enum.all?(ids, &(Server.hosts()[&1] == prefix <> "#1")) end)

    Bench.Results.wait(fn ->
      Enum.all?(ids, &match?({:ok, %{status: :ready}}, Server.info(&1)))
    end)

    conductor =
      if mode == :conductor do
        {:ok, pid} =
          Symbiont.Conductor.start_link(
            name: :"heal_noisy_conductor_#{i}",
            tick_ms: @conductor_tick_ms,
            cooldown_ms: 1_000,
            manifest: manifest,
            policy_host: "#{prefix}-policy",
            scope: &String.starts_with?(&1, prefix)
          )

        pid
      end

    t0 = System.monotonic_time(:millisecond)
    t0_system = System.system_time(:millisecond)

    load =
      for id <- ids do
        every = if id == slow, do: @noisy_slow_every_ms, else: @noisy_every_ms
        Task.async(fn -> noisy_load(topic.(id), every, t0 + @noisy_run_ms) end)
      end

    Enum.each(load, &Task.await(&1, @noisy_run_ms + 10_000))
    rerouted = noisy_rerouted(slow)

    # The co-tenants' deliveries sent during the run: {sent_at_ms, latency_us}, in order.
    sent =
      [fast_a, fast_b]
      |> Enum.flat_map(fn id ->
        {:ok, %{samples: samples}} = Server.metrics(id)
        for {acked, us, _handling} <- samples, (at = acked - div(us, 1_000)) >= t0, do: {at, us}
      end)
      |> Enum.sort()

    last_third = for {at, us} <- sent, at >= t0 + div(2 * @noisy_run_ms, 3), do: us

    # The first delivery after which all of them were quick.
    recovered =
      sent
      |> Enum.reverse()
      |> Enum.reduce_while(nil, fn {at, us}, first ->
        if us < @recovered_us, do: {:cont, at}, else: {:halt, first}
      end)

    if conductor, do: GenServer.stop(conductor)
    if conductor, do: Symbiont.Python.stop("#{prefix}-policy")
    GenServer.stop(m)
    for id <- ids, do: stop(id)
    stop(prefix <> "#1")

    %{
      detect_ms: if(rerouted, do: rerouted - t0_system, else: @noisy_run_ms),
      recover_ms: if(recovered, do: recovered - t0, else: @noisy_run_ms),
      p99_ms: p(last_third, 99)
    }
  end

  defp noisy_load(topic, every, until) do
    if System.monotonic_time(:millisecond) < until do
      :ok = Symbiont.publish(topic, 1)
      Process.sleep(every)
      noisy_load(topic, every, until)
    else
      :ok
    end
  end

  # When the conductor rerouted `agent` (system ms, as the remediation says), or nil.
  defp noisy_rerouted(agent) do
    receive do
      %Event{topic: "symbiont.remediation", from: ^agent} = event ->
        case Event.decode!(event) do
          %{"action" => "reroute", "at_ms" => at} -> at
          _ -> noisy_rerouted(agent)
        end
    after
      0 -> nil
    end
  end

  ## Helpers

  defp start_agent(name, config, host_opts \\ [], agent_opts \\ []) do
    topic = "bench.heal.#{name}"
    out = "bench.heal.#{name}.out"
    :ok = Symbiont.subscribe(out)
    host = {Symbiont.Host, [name: name] ++ host_opts}
    {:ok, _} = DynamicSupervisor.start_child(Symbiont.Hosts, host)
    config = Map.merge(%{"in" => topic, "out" => out}, config)

    agent =
      {Server,
       [host: name, id: name, name: name, python: "bench_agents:Mortal", config: config] ++
         agent_opts}

    {:ok, _} = DynamicSupervisor.start_child(Symbiont.Agents, agent)
    Bench.Results.wait(fn -> match?({:ok, %{status: :ready}}, Server.info(name)) end)
    {topic, out}
  end

  defp stop(name) do
    with pid when is_pid(pid) <- Server.whereis(name),
         do: DynamicSupervisor.terminate_child(Symbiont.Agents, pid)

    Symbiont.Host.stop(name)
  end

  defp await_out(out, t0) do
    receive do
      %Event{topic: ^out} -> System.monotonic_time(:microsecond) - t0
    after
      30_000 -> raise "no answer on #{out} within 30 s"
    end
  end

  defp await_remediation(agent, action, t0) do
    receive do
      %Event{topic: "symbiont.remediation"} = event ->
        case Event.decode!(event) do
          %{"agent" => ^agent, "action" => ^action} -> System.monotonic_time(:microsecond) - t0
          _ -> await_remediation(agent, action, t0)
        end
    after
      30_000 -> raise "no #{action} of #{agent} within 30 s"
    end
  end

  # The machine's load average over the last minute, as /proc/loadavg says ("?" elsewhere).
  defp loadavg do
    case File.read("/proc/loadavg") do
      {:ok, text} -> hd(String.split(text))
      _ -> "?"
    end
  end

  # Percentile `q` of microsecond samples, in ms.
  defp p(us, q),
    do: Bench.Results.pct(List.to_tuple(Enum.sort(Enum.map(us, &(&1 * 1000)))), q) / 1000
end

Bench.Heal.run()

# Scaling curves: throughput and p99 latency as the work grows, so that it shows where the
# cost grows faster than the work (bench/RESULTS.md: tables, and plots in bench/plots/).
# Each point publishes events that reach all N recipients: the throughput counts
# deliveries per second with the events published back to back, the latency is the p99
# of single publishes (one at a time, on an otherwise idle system) until the last of the
# N recipients has it (subscribers) or has acked it (agents).
#
#   * subscribers, 1 to 1,000: `Symbiont.Mesh.publish/3` to N processes on this node;
#   * hosts, 1 to 16: one Python agent in each (bench_agents:Sink);
#   * Wasm agents, 10 to 10,000: counter.wat, 2,500 a host.
#
#     make bench            # every benchmark; or: mix run --no-start bench/curves.exs
#     make bench QUICK=1    # fewer points, fewer messages

Application.put_env(:symbiont, :agents, [])
Logger.configure(level: :error)
{:ok, _} = Application.ensure_all_started(:symbiont)
Code.require_file("results.exs", __DIR__)

defmodule Bench.Curves do
  @quick System.get_env("QUICK") in ["1", "true"]
  @subscribers if @quick, do: [1, 10, 100, 1_000], else: [1, 3, 10, 30, 100, 300, 1_000]
  @hosts if @quick, do: [1, 4, 16], else: [1, 2, 4, 8, 16]
  @wasm_agents if @quick, do: [10, 100, 1_000], else: [10, 100, 1_000, 10_000]
  # Deliveries per point and round (each publish makes N of them).
  @sub_deliveries if @quick, do: 50_000, else: 200_000
  @sub_latency if @quick, do: 200, else: 1_000
  @host_deliveries if @quick, do: 20_000, else: 60_000
  @host_latency if @quick, do: 100, else: 300
  @wasm_deliveries if @quick, do: 10_000, else: 30_000
  # Deliveries for the latency of a point: 300 publishes at most, 20 at least.
  @wasm_latency if @quick, do: 10_000, else: 30_000
  @rounds if @quick, do: 1, else: 3
  @per_host 2_500

  def run do
    subs = Enum.map(@subscribers, &subscribers/1)
    hosts = hosts_curve()
    wasm = wasm_curve()

    curves = [
      %{
        name: "subscribers",
        title: "Mesh publish to N subscribers",
        x: "subscribers",
        throughput: "deliveries/s",
        p99: "p99 publish → last delivery (µs)",
        points: subs
      },
      %{
        name: "hosts",
        title: "Fan-out to N Python agent hosts",
        x: "hosts",
        throughput: "deliveries/s",
        p99: "p99 publish → all acked (µs)",
        points: hosts
      },
      %{
        name: "wasm_agents",
        title: "Fan-out to N Wasm agents",
        x: "Wasm agents",
        throughput: "deliveries/s",
        p99: "p99 publish → all acked (µs)",
        points: wasm
      }
    ]

    for c <- curves do
      IO.puts("#{c.title}:")

      for {x, t, p} <- c.points,
          do: IO.puts("  #{x}: #{round(t)} #{c.throughput}, p99 #{round(p)} µs")
    end

    details = """
    Each point publishes events that reach all N recipients. Throughput: deliveries per \
    second with the events published back to back (#{@rounds} round(s) a point, the \
    median; #{@sub_deliveries} deliveries a round to subscribers, #{@host_deliveries} to \
    hosts, #{@wasm_deliveries} to Wasm agents). Latency: the p99 of single publishes on an \
    otherwise idle system, until the last recipient has the event (subscribers: \
    #{@sub_latency} publishes) or has acked it (hosts: #{@host_latency} publishes; Wasm \
    agents: #{@wasm_latency} deliveries' worth, 20 to 300 publishes: with fewer than 100 \
    the p99 is the slowest one). Its "vs first" grows at least like the work (N) once \
    the recipients outnumber the cores.
    """

    Bench.Results.record("curves", [], curves: curves, details: details)
  end

  ## Subscribers: BEAM processes on this node's mesh

  defp subscribers(n) do
    counter = :atomics.new(1, [])
    me = self()
    subs = for _ <- 1..n, do: spawn_link(fn -> subscriber(me, counter, n) end)
    for _ <- subs, do: receive(do: (:subscribed -> :ok))

    # Throughput: publishes back to back; each subscriber says when it has seen them all.
    per_round = max(div(@sub_deliveries, n), 1)

    rates =
      for _ <- 1..@rounds do
        for pid <- subs, do: send(pid, {:expect, per_round})

        {us, _} =
          :timer.tc(fn ->
            for i <- 1..per_round, do: publish({:m, i})
            for _ <- subs, do: receive(do: (:seen_all -> :ok))
          end)

        n * per_round / us * 1_000_000
      end

    # Latency: one publish at a time, until its last subscriber has it.
    latencies =
      for _ <- 1..@sub_latency do
        :atomics.put(counter, 1, 0)
        t0 = System.monotonic_time(:nanosecond)
        publish({:last, t0})
        receive(do: ({:last_at, t1} -> t1 - t0))
      end

    for pid <- subs, do: send(pid, :stop)
    sorted = latencies |> Enum.sort() |> List.to_tuple()
    IO.puts("  #{n} subscriber(s) done")
    {n, Bench.Results.median(rates), Bench.Results.pct(sorted, 99)}
  end

  defp publish(payload) do
    :ok =
      Symbiont.Mesh.publish(Symbiont.Mesh, %Symbiont.Event{topic: "bench.curve", payload: payload})
  end

  defp subscriber(parent, counter, n) do
    :ok = Symbiont.subscribe("bench.curve")
    send(parent, :subscribed)
    subscriber_loop(parent, counter, n, 0)
  end

  defp subscriber_loop(parent, counter, n, left) do
    receive do
      {:expect, k} ->
        subscriber_loop(parent, counter, n, k)

      %Symbiont.Event{payload: {:m, _}} ->
        if left == 1, do: send(parent, :seen_all)
        subscriber_loop(parent, counter, n, left - 1)

      %Symbiont.Event{payload: {:last, _}} ->
        # The last of the n subscribers to get it tells when.
        if :atomics.add_get(counter, 1, 1) == n,
          do: send(parent, {:last_at, System.monotonic_time(:nanosecond)})

        subscriber_loop(parent, counter, n, left)

      :stop ->
        :ok
    end
  end

  ## Agents: handled deliveries, from telemetry

  # Counts the deliveries acked by the agents whose id starts with `prefix` (slot 1) and
  # tells this process when the count reaches the target in slot 2.
  defp watch_agents(prefix) do
    counts = :atomics.new(2, [])
    me = self()

    :ok =
      Symbiont.Telemetry.attach_many(
        {:bench_curve, prefix},
        [[:symbiont, :agent, :handle, :stop], [:symbiont, :agent, :handle, :exception]],
        fn _event, _measurements, %{id: id}, _ ->
          if String.starts_with?(id, prefix) and
               :atomics.add_get(counts, 1, 1) == :atomics.get(counts, 2),
             do: send(me, {:reached, System.monotonic_time(:nanosecond)})
        end,
        nil
      )

    counts
  end

  # Runs `publish`, then waits until `deliveries` more were acked; returns when (ns).
  defp acked_after(counts, deliveries, publish) do
    target = :atomics.get(counts, 1) + deliveries
    :atomics.put(counts, 2, target)
    publish.()

    receive do
      {:reached, t} -> t
    after
      300_000 ->
        raise """
        bench: #{deliveries} deliveries not acked in 300 s (#{deliveries - target + :atomics.get(counts, 1)} were)
        replicas not ready: #{inspect(Symbiont.await_ready(0))}
        agents with deliveries waiting or in flight: #{inspect(stuck_agents(), limit: 20)}
        """
    end
  end

  # The first agents (by id) that have deliveries queued or in flight, with what they say.
  defp stuck_agents do
    for id <- Symbiont.Agent.Server.ids(),
        {:ok, info} = Symbiont.Agent.Server.info(id),
        info.queue > 0 or info.in_flight > 0,
        reduce: [] do
      acc when length(acc) < 5 ->
        [{id, Map.take(info, [:status, :queue, :in_flight, :host])} | acc]

      acc ->
        acc
    end
  end

  # Deliveries/s of `messages` events on `topic` to `n` agents (pipelined, checked).
  defp fan_out(counts, topic, messages, n) do
    t0 = System.monotonic_time(:nanosecond)

    t1 =
      acked_after(counts, messages * n, fn ->
        for i <- 1..messages, do: Bench.Results.publish_checked(topic, i)
      end)

    messages * n / (t1 - t0) * 1_000_000_000
  end

  # p99 (µs) of `samples` publishes, one at a time, until all `n` agents acked each.
  defp one_at_a_time(counts, topic, samples, n) do
    for i <- 1..samples do
      t0 = System.monotonic_time(:nanosecond)
      acked_after(counts, n, fn -> :ok = Symbiont.publish(topic, i) end) - t0
    end
    |> Enum.sort()
    |> List.to_tuple()
    |> Bench.Results.pct(99)
  end

  ## Hosts: one Python agent each

  defp hosts_curve do
    counts = watch_agents("curve-host-")

    points =
      for n <- @hosts do
        for i <- 1..n,
            Symbiont.Host.whereis("curve-host-#{i}") == nil,
            do: Bench.Results.start_sink("curve-host-#{i}")

        Bench.Results.wait(fn ->
          Enum.all?(1..n, &(Bench.Results.handled("curve-host-#{&1}") >= 0))
        end)

        # A warm-up round: the first messages through a new host are slower.
        fan_out(counts, "bench.fanout", 500, n)
        messages = div(@host_deliveries, n)
        rates = for _ <- 1..@rounds, do: fan_out(counts, "bench.fanout", messages, n)
        p99 = one_at_a_time(counts, "bench.fanout", @host_latency, n)
        IO.puts("  #{n} host(s) done")
        {n, Bench.Results.median(rates), p99}
      end

    for i <- 1..List.last(@hosts), do: Symbiont.Python.stop("curve-host-#{i}")
    Symbiont.Telemetry.detach({:bench_curve, "curve-host-"})
    points
  end

  ## Wasm agents: counter.wat, 2,500 a host

  defp wasm_curve do
    counts = watch_agents("curve-wasm-")
    started = :counters.new(1, [])

    :ok =
      Symbiont.Telemetry.attach(
        :bench_curve_start,
        [:symbiont, :agent, :start],
        fn
          _event, _m, %{id: "curve-wasm-" <> _}, _ -> :counters.add(started, 1, 1)
          _event, _m, _meta, _ -> :ok
        end,
        nil
      )

    for n <- @wasm_agents do
      specs =
        for i <- 1..n do
          {:ok, spec} =
            Symbiont.Agent.validate_spec(
              name: "curve-wasm-#{i}",
              wasm: Path.expand("../priv/wasm/counter.wat", __DIR__),
              topics: ["bench.curve.wasm"]
            )

          spec
        end

      # Those of the previous points are running already; start_all skips them.
      :ok = Symbiont.Manifest.start_all(specs, @per_host)
      Bench.Results.wait(fn -> :counters.get(started, 1) >= n end, deadline())
      # Started is not enough (a restart counts too): each one subscribed and serving.
      :ok = Symbiont.await_ready(300_000)
      # Warm-up: every agent handles one event.
      acked_after(counts, n, fn -> :ok = Symbiont.publish("bench.curve.wasm", 0) end)
      messages = max(div(@wasm_deliveries, n), 1)
      rates = for _ <- 1..@rounds, do: fan_out(counts, "bench.curve.wasm", messages, n)
      samples = @wasm_latency |> div(n) |> max(20) |> min(300)
      p99 = one_at_a_time(counts, "bench.curve.wasm", samples, n)
      IO.puts("  #{n} Wasm agent(s) done")
      {n, Bench.Results.median(rates), p99}
    end

    # The agents stay until the end of the run: stopping 10,000 of them one by one takes
    # longer than the whole curve.
  end

  defp deadline, do: System.monotonic_time(:millisecond) + 300_000
end

Bench.Curves.run()

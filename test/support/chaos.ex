defmodule Symbiont.Chaos do
  @moduledoc false
  # The chaos run of test/symbiont/chaos_test.exs and bench/soak.exs (issue #8, point 4):
  # a three-stage pipeline, Python -> Wasm -> Python, under steady load, while a random
  # host of it is killed with SIGKILL every 100-300 ms. Needs the application running;
  # uses no ExUnit, so the bench can load it.
  #
  #   P.in -> A (Python, scenario_agents:Stage) -> P.ab -> B (Wasm, relay.wat, dedupe)
  #     -> P.bc -> C (Python, scenario_agents:Stage, dedupe) -> P.out
  #
  # (P is the run's prefix.) A's handler also fails the first attempt at every 7th
  # message, after its work (see agent_spec/2). Each stage counts what it handles in its
  # checkpointed state (A and C: state "n"; B: its module's state). At the end every
  # message sent is accounted for: it came out of C, or it is in the dead letters with a
  # reason; and each stage's count is exact: the messages that reached it, less those it
  # dead-lettered. Copies (a stage handles again what it had handled but not acked when
  # its host died, or what failed after publishing, and publishes it again with the same
  # ids) are dropped by B and C (`dedupe: true`).

  alias Symbiont.Agent.Server

  @relay Path.expand("../../priv/wasm/relay.wat", __DIR__)
  @fixtures Path.expand("../fixtures/python", __DIR__)
  @stages [:a, :b, :c]

  @doc false
  # Runs the pipeline: `messages` sent at `rate` a second (or for `seconds`, when given,
  # as many as that takes), kills every 100-300 ms from a random generator seeded with
  # `seed`. Returns the report (see report/1). Options: `progress` is called with a line
  # now and then; `sample` with the milliseconds since the start, every 1,000 messages;
  # `drain_ms` bounds the wait for the last messages after the sending (45 s).
  def run(opts) do
    seed = Keyword.fetch!(opts, :seed)
    prefix = Keyword.get(opts, :prefix, "chaos")
    rate = Keyword.get(opts, :rate, 1_000)
    progress = Keyword.get(opts, :progress, fn _ -> :ok end)
    sample = Keyword.get(opts, :sample, fn _elapsed_ms -> :ok end)

    pipeline = pipeline(prefix)
    start_pipeline(pipeline)

    try do
      # Outputs are counted as they come, in fixed-size arrays, so that neither a mailbox
      # nor a map grows with the run (the soak measures the node's memory).
      capacity =
        Keyword.get_lazy(opts, :messages, fn ->
          rate * (Keyword.fetch!(opts, :seconds) + 2)
        end)

      collector = start_collector(pipeline, capacity)
      hosts = Enum.map(@stages, &pipeline[&1].host)
      killer = spawn_link(fn -> kill_loop(hosts, seed) end)
      t0 = System.monotonic_time(:millisecond)

      sent =
        case Keyword.get(opts, :seconds) do
          nil -> send_messages(pipeline.in, Keyword.fetch!(opts, :messages), rate, t0, sample)
          s -> send_for(pipeline.in, t0 + s * 1_000, rate, t0, sample)
        end

      progress.("sent #{sent} in #{System.monotonic_time(:millisecond) - t0} ms; draining")
      deadline = System.monotonic_time(:millisecond) + Keyword.get(opts, :drain_ms, 45_000)
      accounted? = await_accounted(collector, sent, deadline)
      send(killer, {:stop, self()})
      kills = receive do: ({:kills, n} -> n)
      elapsed = System.monotonic_time(:millisecond) - t0
      # The counts are read once every stage is idle again, its last acks in.
      settled? = accounted? and settled?(pipeline, deadline + 15_000)
      send(collector, {:result, self(), sent})
      acc = receive do: ({:result, acc} -> acc)
      infos = Map.new(@stages, &{&1, Server.info(pipeline[&1].name)})

      report(%{
        seed: seed,
        sent: sent,
        acc: acc,
        kills: kills,
        elapsed_ms: elapsed,
        infos: infos,
        settled: settled?,
        pipeline: pipeline
      })
    after
      stop_pipeline(pipeline)
    end
  end

  defp pipeline(prefix) do
    topic = &"#{prefix}.#{&1}"

    %{
      in: topic.("in"),
      a: %{name: "#{prefix}-a", host: "#{prefix}-a", in: topic.("in"), out: topic.("ab")},
      b: %{name: "#{prefix}-b", host: "#{prefix}-wasm", in: topic.("ab"), out: topic.("bc")},
      c: %{name: "#{prefix}-c", host: "#{prefix}-c", in: topic.("bc"), out: topic.("out")}
    }
  end

  defp agent_spec(:b, %{name: name, in: input, out: out}) do
    # A Wasm call's deadline is wall-clock time: on a loaded machine a descheduled host
    # would miss the default 100 ms now and then (a failed attempt, retried out of order).
    [
      name: name,
      wasm: @relay,
      topics: [input],
      config: %{"out" => out},
      limits: [deadline_ms: 2_000],
      dedupe: true,
      max_attempts: 10
    ]
  end

  # A's handler fails the first attempt at every 7th message, after counting it and
  # passing it on: the retry must not count it twice (the failed attempt's change goes)
  # nor pass it on twice (its publish has the ids of the first: B drops the copy).
  defp agent_spec(stage, %{name: name, in: input, out: out}) do
    config = %{"in" => input, "out" => out}

    [
      name: name,
      python: "scenario_agents:Stage",
      config: if(stage == :a, do: Map.put(config, "fail_every", 7), else: config),
      dedupe: stage == :c,
      max_attempts: 10
    ]
  end

  defp start_pipeline(pipeline) do
    for stage <- @stages, %{name: name, host: host} = pipeline[stage] do
      # Hosts killed every second or so never stay up the 5 s after which a restart is
      # immediate again: a short backoff keeps them serving (the delivery guarantees are
      # what this run tests, not the pacing of a real crash loop).
      host_opts = [name: host, python_path: [@fixtures], backoff_max: 100]
      {:ok, _} = DynamicSupervisor.start_child(Symbiont.Hosts, {Symbiont.Host, host_opts})
      agent = [host: host, id: name] ++ agent_spec(stage, pipeline[stage])
      {:ok, _} = DynamicSupervisor.start_child(Symbiont.Agents, {Server, agent})
    end

    wait(
      fn -> Enum.all?(@stages, &match?({:ok, %{status: :ready}}, info(pipeline, &1))) end,
      System.monotonic_time(:millisecond) + 30_000,
      "the chaos pipeline did not start within 30 s"
    )
  end

  defp info(pipeline, stage), do: Server.info(pipeline[stage].name)

  defp stop_pipeline(pipeline) do
    for stage <- @stages, pid = Server.whereis(pipeline[stage].name) do
      DynamicSupervisor.terminate_child(Symbiont.Agents, pid)
    end

    for stage <- @stages, do: Symbiont.Host.stop(pipeline[stage].host)
  end

  # Steady load: message i leaves at t0 + i / rate.
  defp send_messages(topic, n, rate, t0, sample) do
    for i <- 1..n//1 do
      pace(i, rate, t0, sample)
      :ok = Symbiont.publish(topic, %{"i" => i})
    end

    n
  end

  defp send_for(topic, deadline, rate, t0, sample, i \\ 1) do
    if System.monotonic_time(:millisecond) >= deadline do
      i - 1
    else
      pace(i, rate, t0, sample)
      :ok = Symbiont.publish(topic, %{"i" => i})
      send_for(topic, deadline, rate, t0, sample, i + 1)
    end
  end

  defp pace(i, rate, t0, sample) do
    if rem(i, 1_000) == 0, do: sample.(System.monotonic_time(:millisecond) - t0)
    ahead = t0 + div(i * 1_000, rate) - System.monotonic_time(:millisecond)
    if ahead > 0, do: Process.sleep(ahead)
  end

  # Its own random generator, seeded: the same seed picks the same hosts at the same
  # intervals (what the pipeline is doing at each kill depends on timing).
  defp kill_loop(hosts, seed) do
    :rand.seed(:exsss, {seed, seed, seed})
    kill_loop(hosts, 0, :go)
  end

  defp kill_loop(hosts, kills, :go) do
    receive do
      {:stop, from} -> send(from, {:kills, kills})
    after
      100 + :rand.uniform(201) - 1 ->
        host = Enum.at(hosts, :rand.uniform(length(hosts)) - 1)

        case Symbiont.Host.info(host) do
          {:ok, %{os_pid: os_pid}} when is_integer(os_pid) ->
            Symbiont.Host.Reaper.kill(os_pid)
            kill_loop(hosts, kills + 1, :go)

          # Down (being restarted): this kill is skipped.
          _ ->
            kill_loop(hosts, kills, :go)
        end
    end
  end

  ## The collector

  # A process subscribed to each stage's output and to the dead letters before the first
  # message is sent. Per topic, an :atomics array counts how many times each message came
  # by; the dead letters' reasons are kept by message and agent (they are few).
  defp start_collector(pipeline, capacity) do
    me = self()
    topics = Enum.map(@stages, &pipeline[&1].out)

    pid =
      spawn_link(fn ->
        for t <- ["symbiont.dead_letter" | topics], do: :ok = Symbiont.subscribe(t)
        counts = Map.new(topics, &{&1, :atomics.new(capacity, signed: false)})
        out = pipeline.c.out

        send(me, {:collecting, self()})

        collect(%{
          counts: counts,
          out: out,
          capacity: capacity,
          dead: %{},
          accounted: 0,
          waiting: nil,
          first_max: 0,
          out_of_order: 0
        })
      end)

    receive do: ({:collecting, ^pid} -> pid)
  end

  defp collect(c) do
    receive do
      %Symbiont.Event{topic: "symbiont.dead_letter"} = e ->
        letter = Symbiont.Event.decode!(e)

        case Symbiont.MsgPack.decode(letter["payload"] || "") do
          {:ok, %{"i" => i}} when i <= c.capacity ->
            new? = :atomics.get(c.counts[c.out], i) == 0 and not Map.has_key?(c.dead, i)

            dead =
              Map.update(
                c.dead,
                i,
                [{letter["agent"], letter["reason"]}],
                &[{letter["agent"], letter["reason"]} | &1]
              )

            c |> Map.put(:dead, dead) |> accounted(new?) |> collect()

          _ ->
            collect(c)
        end

      %Symbiont.Event{topic: topic} = e when is_map_key(c.counts, topic) ->
        %{"i" => i} = Symbiont.Event.decode!(e)

        if i <= c.capacity and :atomics.add_get(c.counts[topic], i, 1) == 1 and topic == c.out do
          # The first time it comes out: in order, unless a retry overtook it.
          c = if i < c.first_max, do: %{c | out_of_order: c.out_of_order + 1}, else: c
          c = %{c | first_max: max(c.first_max, i)}
          c |> accounted(not Map.has_key?(c.dead, i)) |> collect()
        else
          collect(c)
        end

      {:await, from, sent} ->
        collect(notify(%{c | waiting: {from, sent}}))

      {:result, from, sent} ->
        send(from, {:result, result(c, sent)})
    end
  end

  defp accounted(c, false), do: c
  defp accounted(c, true), do: notify(%{c | accounted: c.accounted + 1})

  defp notify(%{waiting: {from, sent}, accounted: n} = c) when n >= sent do
    send(from, :accounted)
    %{c | waiting: nil}
  end

  defp notify(c), do: c

  defp result(c, sent) do
    per_topic =
      Map.new(c.counts, fn {topic, ref} ->
        counts = for i <- 1..sent//1, do: :atomics.get(ref, i)
        {topic, counts}
      end)

    %{counts: per_topic, dead: c.dead, out_of_order: c.out_of_order}
  end

  # Until every message sent is out or dead-lettered (the collector says so), or the
  # deadline.
  defp await_accounted(collector, sent, deadline) do
    send(collector, {:await, self(), sent})

    receive do
      :accounted -> true
    after
      max(deadline - System.monotonic_time(:millisecond), 0) -> false
    end
  end

  # Every stage serving, nothing queued or in flight: its last acks (and checkpoints) are in.
  defp settled?(pipeline, deadline) do
    idle? = fn ->
      Enum.all?(@stages, fn stage ->
        match?({:ok, %{status: :ready, queue: 0, in_flight: 0}}, info(pipeline, stage))
      end)
    end

    wait(idle?, deadline, nil) == :ok
  end

  @doc false
  # The report of a run: `losses` (sent, neither out of the last stage nor dead-lettered)
  # with the first of them in `lost`; per stage, `counts` (its checkpointed count) and
  # `expected` (what reached it less what it dead-lettered); `copies` (messages that came
  # by a topic again, published again after a crash), `duplicates` (copies dropped by the
  # dedupe stages), `redelivered` (deliveries each stage sent again), `out_of_order`
  # (messages first out of the last stage after a later one), restarts, kills.
  def report(%{sent: sent, acc: acc, pipeline: pipeline} = run) do
    out = acc.counts[pipeline.c.out]
    lost = for {0, i} <- Enum.with_index(out, 1), not Map.has_key?(acc.dead, i), do: i
    reached = fn topic -> Enum.count(acc.counts[topic], &(&1 > 0)) end

    dead_at = fn stage ->
      name = pipeline[stage].name
      Enum.count(acc.dead, fn {_i, letters} -> Enum.any?(letters, &match?({^name, _}, &1)) end)
    end

    infos = for {stage, {:ok, info}} <- run.infos, into: %{}, do: {stage, info}

    %{
      seed: run.seed,
      sent: sent,
      out: reached.(pipeline.c.out),
      dead_lettered: map_size(acc.dead),
      dead_reasons:
        acc.dead |> Map.values() |> List.flatten() |> Enum.map(&elem(&1, 1)) |> Enum.frequencies(),
      losses: length(lost),
      lost: Enum.take(lost, 20),
      counts: Map.new(infos, fn {stage, info} -> {stage, count(stage, info.state)} end),
      expected: %{
        a: sent - dead_at.(:a),
        b: reached.(pipeline.a.out) - dead_at.(:b),
        c: reached.(pipeline.b.out) - dead_at.(:c)
      },
      copies:
        Map.new(@stages, fn stage ->
          {stage, acc.counts[pipeline[stage].out] |> Enum.map(&max(&1 - 1, 0)) |> Enum.sum()}
        end),
      duplicates: Map.new(infos, fn {stage, info} -> {stage, info.duplicates} end),
      redelivered: Map.new(infos, fn {stage, info} -> {stage, info.redelivered} end),
      restarts: Map.new(infos, fn {stage, info} -> {stage, info.restarts} end),
      out_of_order: acc.out_of_order,
      settled: run.settled,
      kills: run.kills,
      elapsed_ms: run.elapsed_ms
    }
  end

  # Stage b is a Wasm agent: its state is what its module wrote, decoded (a count).
  defp count(:b, n) when is_integer(n), do: n
  defp count(:b, _), do: 0
  defp count(_stage, %{"n" => n}), do: n
  defp count(_stage, _), do: 0

  @doc false
  # One line of a report, for the test's output and the soak's log.
  def format(r) do
    "seed #{r.seed}: #{r.sent} sent, #{r.kills} kills in #{r.elapsed_ms} ms; losses #{r.losses}, " <>
      "out #{r.out}, dead-lettered #{r.dead_lettered} #{inspect(r.dead_reasons)}; " <>
      "counts #{inspect(r.counts)} (expected #{inspect(r.expected)}); " <>
      "copies published #{inspect(r.copies)}, duplicates dropped #{inspect(r.duplicates)}, " <>
      "redelivered #{inspect(r.redelivered)}, restarts #{inspect(r.restarts)}, " <>
      "out of order #{r.out_of_order}"
  end

  defp wait(fun, deadline, message) do
    cond do
      fun.() ->
        :ok

      System.monotonic_time(:millisecond) > deadline ->
        if message, do: raise(message), else: :timeout

      true ->
        Process.sleep(20)
        wait(fun, deadline, message)
    end
  end
end

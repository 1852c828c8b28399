# Wasm agents: the call path into an instance beside the floor of wasmtime-py, a Wasm agent
# beside a Python agent doing the same work, cold compile beside a load from the cache,
# instantiation, and 10,000 Wasm agents on one machine (see bench/RESULTS.md).
#
#     make bench            # every benchmark; or: mix run --no-start bench/wasm.exs
#     make bench QUICK=1    # fewer calls and rounds, 2,000 agents
#
# Targets: the call path <= 1.5x wasmtime-py's no-argument call measured in the same run;
# a load from the cache >= 20x faster than a cold compile of a module of 500 KB or more;
# 10,000 Wasm agents running at once at under 256 KB each (BEAM and hosts together).

Application.put_env(:symbiont, :agents, [])
Logger.configure(level: :error)
{:ok, _} = Application.ensure_all_started(:symbiont)
Code.require_file("results.exs", __DIR__)

defmodule Bench.Wasm do
  @quick System.get_env("QUICK") in ["1", "true"]
  @calls if @quick, do: 5_000, else: 20_000
  @call_rounds if @quick, do: 3, else: 7
  # Functions added to echo.wat for the compile benchmark: about 640 KB of Wasm.
  @functions 6_000
  @compile_rounds if @quick, do: 1, else: 3
  @instances if @quick, do: 1_000, else: 2_000
  @messages if @quick, do: 5_000, else: 20_000
  @e2e_rounds if @quick, do: 1, else: 3
  @agents if @quick, do: 2_000, else: 10_000
  @per_host 2_500
  # How long the 10,000 agents are left idle before their memory is read again.
  @idle_ms 3_000
  @wasm Path.expand("../priv/wasm", __DIR__)

  def run do
    {:ok, _} = Symbiont.Python.start(name: "wasm-bench", python_path: [__DIR__])
    IO.puts("call path: #{@call_rounds} round(s) of #{@calls} calls")
    calls = py("call_path", [@calls, @call_rounds])
    IO.puts("cold compile vs cached load: #{@compile_rounds} round(s)")
    compile = py("compile_vs_cache", [@functions, @compile_rounds])
    IO.puts("instantiate: #{@instances} instances")
    inst = py("instantiate", [@instances])
    Symbiont.Python.stop("wasm-bench")

    {wasm_us, python_us} = end_to_end()
    many = many_agents()

    kb = compile["module_bytes"] / 1024

    row = &Bench.Results.row/5

    rows = [
      row.(
        "Wasm call path: Instance.call of echo.wat, small payload (µs)",
        calls["call"],
        "wasmtime-py, no-argument call",
        calls["floor"],
        "≤ 1.5×"
      ),
      row.(
        "the same through wasmtime-py's public API, before tuning (µs)",
        calls["call_public"],
        "wasmtime-py, no-argument call",
        calls["floor"],
        "(info)"
      ),
      row.(
        "counter.wat: 2 imports and symbiont_state a message (µs)",
        calls["counter"],
        "wasmtime-py, no-argument call",
        calls["floor"],
        "(info)"
      ),
      row.(
        "Wasm agent (counter.wat) publish → handle → ack (µs/message)",
        wasm_us,
        "Python agent, same work",
        python_us,
        "(info)"
      ),
      row.(
        "load a #{round(kb)} KB module from the cache (ms)",
        compile["cached_ms"],
        "cold compile",
        compile["cold_ms"],
        "≤ 0.05× (20× faster)"
      ),
      row.(
        "instantiate counter.wat (µs)",
        inst["instantiate_us"],
        "wasmtime-py alone",
        inst["bare_us"],
        "(info)"
      ),
      row.(
        "start #{@agents} Wasm agents on #{many.hosts} hosts in " <>
          "#{:erlang.float_to_binary(many.start_s, decimals: 1)} s (µs/agent)",
        many.start_us,
        "instantiate counter.wat",
        inst["instantiate_us"],
        "(info)"
      ),
      row.(
        "#{@agents} Wasm agents: memory each, BEAM #{Bench.Results.number(many.beam_kb)} + " <>
          "hosts #{Bench.Results.number(many.host_kb)} (KB)",
        many.beam_kb + many.host_kb,
        "bare wasmtime instance",
        inst["bare_instance_kb"],
        "< 256 KB"
      ),
      row.(
        "the same, idle #{div(@idle_ms, 1000)} s: BEAM #{Bench.Results.number(many.beam_idle_kb)} + " <>
          "hosts #{Bench.Results.number(many.host_kb)} (KB)",
        many.beam_idle_kb + many.host_kb,
        "bare wasmtime instance",
        inst["bare_instance_kb"],
        "< 256 KB"
      )
    ]

    Bench.Results.record("wasm", rows)
  end

  defp py(function, args) do
    {:ok, result} =
      Symbiont.Python.call("wasm-bench", "bench_wasm", function, args, timeout: 300_000)

    IO.puts("  #{inspect(result)}")
    result
  end

  ## A Wasm agent beside a Python agent, each in a host of its own

  defp end_to_end do
    agents = [
      wasm: [
        name: "bench-counter-wasm",
        wasm: Path.join(@wasm, "counter.wat"),
        topics: ["bench.counter.wasm"],
        overflow: :reject
      ],
      python: [name: "bench-counter-python", python: "bench_agents:Counter", overflow: :reject]
    ]

    for {_kind, spec} <- agents do
      name = spec[:name]

      {:ok, _} = Symbiont.Python.start(name: name, python_path: [__DIR__], agent: spec)

      Bench.Results.wait(fn -> Bench.Results.handled(name) == 0 end)
    end

    IO.puts("end to end: #{@e2e_rounds} round(s) of #{@messages} messages to each agent")
    # A warm-up round first: the first messages through a new host are several times slower.
    for kind <- [:wasm, :python], do: per_message(agents[kind][:name], kind, 2_000)

    rounds =
      for round <- 1..@e2e_rounds do
        order = if rem(round, 2) == 1, do: [:wasm, :python], else: [:python, :wasm]

        for kind <- order, into: %{} do
          us = per_message(agents[kind][:name], kind, @messages)
          IO.puts("  #{kind}: #{Float.round(us, 1)} µs/message")
          {kind, us}
        end
      end

    for {_kind, spec} <- agents, do: Symbiont.Python.stop(spec[:name])

    {Bench.Results.median(Enum.map(rounds, & &1.wasm)),
     Bench.Results.median(Enum.map(rounds, & &1.python))}
  end

  defp per_message(name, kind, n) do
    topic = "bench.counter.#{kind}"
    before = Bench.Results.handled(name)

    {us, _} =
      :timer.tc(fn ->
        for i <- 1..n, do: Bench.Results.publish_checked(topic, i)
        Bench.Results.await_handled([{name, before + n}])
      end)

    us / n
  end

  ## 10,000 Wasm agents at once

  defp many_agents do
    Application.put_env(:symbiont, :wasm_agents_per_host, @per_host)
    per_host = Application.fetch_env!(:symbiont, :wasm_agents_per_host)
    topic = "bench.wasm.many"

    specs =
      for i <- 1..@agents do
        {:ok, spec} =
          Symbiont.Agent.validate_spec(
            name: "many-#{i}",
            wasm: Path.join(@wasm, "counter.wat"),
            topics: [topic]
          )

        spec
      end

    started = :counters.new(1, [:write_concurrency])

    :ok =
      Symbiont.Telemetry.attach(
        :bench_wasm_many,
        [:symbiont, :agent, :start],
        fn
          _event, _measurements, %{id: "many-" <> _}, _ -> :counters.add(started, 1, 1)
          _event, _measurements, _meta, _ -> :ok
        end,
        nil
      )

    beam_before = beam_memory()
    IO.puts("starting #{@agents} Wasm agents, #{per_host} a host")
    t0 = System.monotonic_time(:microsecond)
    :ok = Symbiont.Manifest.start_all(specs, per_host)
    await_started(started, t0, t0)
    start_us = System.monotonic_time(:microsecond) - t0
    Symbiont.Telemetry.detach(:bench_wasm_many)

    # Every one answers: one event reaches them all; each publishes its count and acks.
    :ok = Symbiont.subscribe("count.out")
    :ok = Symbiont.publish(topic, 1)
    answered = await_answers(MapSet.new(), System.monotonic_time(:millisecond) + 120_000)
    :ok = Symbiont.unsubscribe("count.out")

    Bench.Results.wait(fn ->
      Enum.all?(specs, fn %{name: id} ->
        match?({:ok, %{handled: 1}}, Symbiont.Agent.Server.info(id))
      end)
    end)

    IO.puts("  all #{MapSet.size(answered)} answered and acked")

    hosts = Symbiont.Manifest.plan(specs, per_host) |> Enum.map(&elem(&1, 0))

    host_kb =
      Enum.sum(
        for host <- hosts do
          {:ok, %{os_pid: os_pid}} = Symbiont.Host.info(host)
          rss_kb(os_pid)
        end
      )

    beam_kb = (beam_memory() - beam_before) / 1024
    # Then idle: an agent server idle for a second hibernates (Symbiont.Agent.Server),
    # its heap compacted to what its state needs.
    Process.sleep(@idle_ms)
    beam_idle_kb = (beam_memory() - beam_before) / 1024

    %{
      hosts: length(hosts),
      start_s: start_us / 1_000_000,
      start_us: start_us / @agents,
      beam_kb: beam_kb / @agents,
      beam_idle_kb: beam_idle_kb / @agents,
      host_kb: host_kb / @agents
    }
  end

  defp await_started(counter, t0, last) do
    n = :counters.get(counter, 1)
    now = System.monotonic_time(:microsecond)

    cond do
      n >= @agents ->
        IO.puts("  #{n}/#{@agents} running after #{seconds(now - t0)} s")

      now - t0 > 300_000_000 ->
        raise "bench: only #{n} of #{@agents} Wasm agents started in 300 s"

      true ->
        last =
          if now - last >= 1_000_000 do
            IO.puts("  #{n}/#{@agents} running after #{seconds(now - t0)} s")
            now
          else
            last
          end

        Process.sleep(20)
        await_started(counter, t0, last)
    end
  end

  defp await_answers(seen, deadline) do
    if MapSet.size(seen) == @agents do
      seen
    else
      receive do
        %Symbiont.Event{topic: "count.out", from: from} ->
          await_answers(MapSet.put(seen, from), deadline)
      after
        max(deadline - System.monotonic_time(:millisecond), 0) ->
          raise "bench: #{MapSet.size(seen)} of #{@agents} Wasm agents answered"
      end
    end
  end

  defp seconds(us), do: :erlang.float_to_binary(us / 1_000_000, decimals: 1)

  defp beam_memory do
    for pid <- Process.list(), do: :erlang.garbage_collect(pid)
    :erlang.memory(:total)
  end

  defp rss_kb(os_pid) do
    [_, kb] = Regex.run(~r/VmRSS:\s+(\d+)/, File.read!("/proc/#{os_pid}/status"))
    String.to_integer(kb)
  end
end

Bench.Wasm.run()

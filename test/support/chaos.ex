defmodule Symbiont.Chaos do
  @moduledoc false
  # The chaos run of test/symbiont/chaos_test.exs and bench/soak.exs (issue #8, point 4):
  # a three-stage pipeline, Python -> Wasm -> Python, under steady load, while a random
  # host of it is killed with SIGKILL every 100-300 ms. Every message sent is accounted
  # for at the end: it came out of the last stage, or it is in the dead letters with a
  # reason. Needs the application running; uses no ExUnit, so the bench can load it.
  #
  #   chaos.in -> A (Python, scenario_agents:Stage) -> chaos.ab -> B (Wasm, relay.wat)
  #     -> chaos.relayed -> C (Python, scenario_agents:Stage) -> chaos.out

  alias Symbiont.Agent.Server

  @relay Path.expand("../../priv/wasm/relay.wat", __DIR__)
  @fixtures Path.expand("../fixtures/python", __DIR__)

  @doc false
  # Runs the pipeline: `messages` sent at `rate` a second (or for `seconds`, when given,
  # as many as that takes), kills every 100-300 ms from a random generator seeded with
  # `seed`. Returns the report (see report/1); `progress` is called with a line now and
  # then.
  def run(opts) do
    seed = Keyword.fetch!(opts, :seed)
    prefix = Keyword.get(opts, :prefix, "chaos")
    rate = Keyword.get(opts, :rate, 1_000)
    progress = Keyword.get(opts, :progress, fn _ -> :ok end)
    sample = Keyword.get(opts, :sample, fn _elapsed_ms -> :ok end)
    :rand.seed(:exsss, {seed, seed, seed})

    [a, b, c] = names = for s <- ~w(a b c), do: "#{prefix}-#{s}"
    hosts = start_pipeline(a, b, c)
    for t <- ["chaos.out", "symbiont.dead_letter"], do: :ok = Symbiont.subscribe(t)

    killer = spawn_link(fn -> kill_loop(hosts, seed, 0) end)
    t0 = System.monotonic_time(:millisecond)

    sent =
      case Keyword.get(opts, :seconds) do
        nil -> send_messages(1, Keyword.fetch!(opts, :messages), rate, t0, sample)
        s -> send_for(1, t0 + s * 1_000, rate, t0, sample)
      end

    progress.("sent #{sent} messages in #{System.monotonic_time(:millisecond) - t0} ms; draining")

    acc =
      collect(
        sent,
        %{out: %{}, dead: %{}},
        System.monotonic_time(:millisecond) + Keyword.get(opts, :drain_ms, 45_000)
      )

    send(killer, {:stop, self()})
    kills = receive do: ({:kills, n} -> n)
    elapsed = System.monotonic_time(:millisecond) - t0

    infos = for n <- names, do: {n, Server.info(n)}

    report =
      report(%{sent: sent, acc: acc, kills: kills, elapsed_ms: elapsed, infos: infos, seed: seed})

    stop_pipeline(hosts, names)
    report
  end

  defp start_pipeline(a, b, c) do
    wasm_host = "#{b}-host"

    for {host, agent} <- [
          {a, stage(a, "chaos.in", "chaos.ab")},
          {wasm_host, [name: b, wasm: @relay, topics: ["chaos.ab"], max_attempts: 10]},
          {c, stage(c, "chaos.relayed", "chaos.out")}
        ] do
      {:ok, _} =
        DynamicSupervisor.start_child(
          Symbiont.Hosts,
          {Symbiont.Host, name: host, python_path: [@fixtures]}
        )

      {:ok, _} =
        DynamicSupervisor.start_child(
          Symbiont.Agents,
          {Server, [host: host, id: agent[:name]] ++ agent}
        )
    end

    wait(fn -> Enum.all?([a, b, c], &match?({:ok, %{status: :ready}}, Server.info(&1))) end)
    [a, wasm_host, c]
  end

  defp stage(name, input, out),
    do: [
      name: name,
      python: "scenario_agents:Stage",
      config: %{"in" => input, "out" => out},
      max_attempts: 10
    ]

  defp stop_pipeline(hosts, names) do
    for n <- names,
        pid = Server.whereis(n),
        do: DynamicSupervisor.terminate_child(Symbiont.Agents, pid)

    for h <- hosts, do: Symbiont.Host.stop(h)
  end

  # Steady load: message i leaves at t0 + i / rate.
  defp send_messages(i, n, _rate, _t0, _sample) when i > n, do: n

  defp send_messages(i, n, rate, t0, sample) do
    pace(i, rate, t0, sample)
    :ok = Symbiont.publish("chaos.in", %{"i" => i})
    send_messages(i + 1, n, rate, t0, sample)
  end

  defp send_for(i, deadline, rate, t0, sample) do
    if System.monotonic_time(:millisecond) >= deadline do
      i - 1
    else
      pace(i, rate, t0, sample)
      :ok = Symbiont.publish("chaos.in", %{"i" => i})
      send_for(i + 1, deadline, rate, t0, sample)
    end
  end

  defp pace(i, rate, t0, sample) do
    if rem(i, 1_000) == 0, do: sample.(System.monotonic_time(:millisecond) - t0)
    ahead = t0 + div(i * 1_000, rate) - System.monotonic_time(:millisecond)
    if ahead > 0, do: Process.sleep(ahead)
  end

  defp kill_loop(hosts, seed, kills) do
    receive do
      {:stop, from} -> send(from, {:kills, kills})
    after
      100 + :rand.uniform(200) ->
        host = Enum.at(hosts, :rand.uniform(length(hosts)) - 1)

        kills =
          case Symbiont.Host.info(host) do
            {:ok, %{os_pid: os_pid}} when is_integer(os_pid) ->
              Symbiont.Host.Reaper.kill(os_pid)
              kills + 1

            _ ->
              kills
          end

        kill_loop(hosts, seed, kills)
    end
  end

  # Outputs and dead letters until every message sent is accounted for, or the deadline.
  defp collect(sent, acc, deadline) do
    if map_size(Map.merge(acc.out, acc.dead)) >= sent or
         System.monotonic_time(:millisecond) > deadline do
      acc
    else
      receive do
        %Symbiont.Event{topic: "chaos.out"} = e ->
          %{"i" => i} = Symbiont.Event.decode!(e)
          collect(sent, %{acc | out: Map.update(acc.out, i, 1, &(&1 + 1))}, deadline)

        %Symbiont.Event{topic: "symbiont.dead_letter"} = e ->
          letter = Symbiont.Event.decode!(e)

          acc =
            case Symbiont.MsgPack.decode(letter["payload"] || "") do
              {:ok, %{"i" => i}} -> %{acc | dead: Map.put(acc.dead, i, letter["reason"])}
              _ -> acc
            end

          collect(sent, acc, deadline)
      after
        max(deadline - System.monotonic_time(:millisecond), 0) -> acc
      end
    end
  end

  @doc false
  # losses: sent and neither out nor dead-lettered; duplicates: outputs beyond the first
  # of each message; redeliveries: host restarts seen by the stages (each redelivers what
  # it had in flight).
  def report(%{sent: sent, acc: acc} = run) do
    accounted = Map.merge(acc.out, acc.dead)
    lost = for i <- 1..sent//1, not Map.has_key?(accounted, i), do: i

    %{
      seed: run.seed,
      sent: sent,
      out: map_size(acc.out),
      dead_lettered: map_size(acc.dead),
      dead_reasons: acc.dead |> Map.values() |> Enum.frequencies(),
      losses: length(lost),
      lost: Enum.take(lost, 20),
      duplicates: acc.out |> Map.values() |> Enum.map(&(&1 - 1)) |> Enum.sum(),
      kills: run.kills,
      restarts: for({n, {:ok, info}} <- run.infos, into: %{}, do: {n, info.restarts}),
      elapsed_ms: run.elapsed_ms
    }
  end

  defp wait_again(fun, deadline) do
    Process.sleep(20)
    wait(fun, deadline)
  end

  defp wait(fun, deadline \\ System.monotonic_time(:millisecond) + 30_000) do
    cond do
      fun.() ->
        :ok

      System.monotonic_time(:millisecond) > deadline ->
        raise "the chaos pipeline did not start within 30 s"

      true ->
        wait_again(fun, deadline)
    end
  end
end

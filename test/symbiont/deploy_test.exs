defmodule Symbiont.DeployTest do
  # Deploys of Wasm agents on real hosts: a canary beside the stable version, promotion
  # on evidence, rollback by itself and by hand, and nothing lost on the way.
  use ExUnit.Case, async: true

  import ExUnit.CaptureLog
  import Symbiont.HostHelpers

  alias Symbiont.Event

  @wasm Path.expand("../../priv/wasm", __DIR__)

  setup do
    name = unique_name("counted")
    topic = unique_name("deploy.in")
    :ok = Symbiont.subscribe("count.out")
    :ok = Symbiont.subscribe(Symbiont.Deploy.topic())
    # slow.wat takes some 70 ms a message: a deadline of 1 s, and a small credit window so
    # that its acks (batched by the host while it is busy) come one by one.
    agent = [
      name: name,
      wasm: Path.join(@wasm, "counter.wat"),
      topics: [topic],
      limits: [deadline_ms: 1_000],
      max_in_flight: 2
    ]

    start_host!(name: name, agent: agent)
    %{name: name, topic: topic}
  end

  test "a healthy version is promoted: its state carried on, nothing lost", %{name: name} = ctx do
    assert counts(ctx, 3) == [1, 2, 3]

    published =
      while_publishing(ctx, fn ->
        assert {:ok, %{canary: canary}} =
                 Symbiont.deploy(name, Path.join(@wasm, "counter_v2.wat"),
                   window_ms: 200,
                   min_events: 5
                 )

        canary_pid = Symbiont.Agent.Server.whereis(canary)
        assert %{"action" => "deploy"} = await_step(name)
        assert %{"action" => "promote", "evidence" => evidence} = await_step(name)
        assert %{"canary" => %{"events" => events, "failed" => 0}} = evidence
        assert is_integer(events) and events >= 5
        refute Process.alive?(canary_pid)
      end)

    # One count.out per event, whichever version handled it.
    outs = for _ <- 1..published, do: receive_count(name)
    refute_receive %Event{topic: "count.out", from: ^name}, 100
    assert length(outs) == published

    # The promoted replica counts by ten, on from where it was.
    [a, b] = counts(ctx, 2)
    assert b - a == 10
    assert {:ok, %{agent: %{python: "wasm:" <> path}}} = Symbiont.Host.info(name)
    assert Path.basename(path) == "counter_v2.wat"

    assert [%{action: :promote}, %{action: :deploy}] = Symbiont.Deploy.history(name)
  end

  test "a version that traps is rolled back by itself; the stable version handles its failures",
       %{name: name} = ctx do
    assert counts(ctx, 2) == [1, 2]

    published =
      while_publishing(ctx, fn ->
        assert {:ok, %{canary: canary}} =
                 Symbiont.deploy(name, Path.join(@wasm, "trap.wat"), window_ms: 200, min_events: 5)

        canary_pid = Symbiont.Agent.Server.whereis(canary)
        assert %{"action" => "deploy"} = await_step(name)
        assert %{"action" => "rollback", "reason" => reason} = await_step(name)
        assert reason =~ "error rate 100.0% against 0.0%"
        refute Process.alive?(canary_pid)
      end)

    # Every event counted once by the stable version: 3.. on from the 2 before.
    outs = for _ <- 1..published, do: receive_count(name)
    assert Enum.sort(outs) == Enum.to_list(3..(published + 2))
    assert [n, m] = counts(ctx, 2)
    assert m == n + 1
  end

  test "a version whose p99 latency regresses is rolled back by itself, nothing lost",
       %{name: name} = ctx do
    assert counts(ctx, 2) == [1, 2]

    published =
      while_publishing(ctx, fn ->
        assert {:ok, _} =
                 Symbiont.deploy(name, Path.join(@wasm, "slow.wat"),
                   window_ms: 600,
                   min_events: 10,
                   # A loaded machine runs slow.wat slower still: up to 18 s to see the
                   # 10 events, rather than a rollback for too little traffic.
                   max_windows: 30,
                   p99_slack_us: 1_000
                 )

        assert %{"action" => "deploy"} = await_step(name)
        assert %{"action" => "rollback", "reason" => reason, "evidence" => e} = await_step(name)
        assert reason =~ ~r/p99 latency \d+ µs against \d+ µs for the stable version/

        assert %{
                 "canary" => %{"failed" => 0, "p99_us" => canary},
                 "stable" => %{"p99_us" => stable}
               } = e

        assert is_number(canary) and is_number(stable) and canary > stable + 1_000
      end)

    # Every event handled once, by one version or the other.
    outs = for _ <- 1..published, do: receive_count(name)
    refute_receive %Event{topic: "count.out", from: ^name}, 100
    assert length(outs) == published
    assert {:ok, %{agent: %{python: "wasm:" <> path}}} = Symbiont.Host.info(name)
    assert Path.basename(path) == "counter.wat"
  end

  test "a version so slow that its window holds a few samples is rolled back on those few",
       %{name: name} = ctx do
    # The stable version's history first: what the canary is compared with.
    warm = start_publishing(ctx.topic, 2)

    assert wait_until(
             fn ->
               match?({:ok, %{handled: h}} when h >= 200, Symbiont.Agent.Server.info(name))
             end,
             10_000
           )

    warmed = stop_publishing(warm)
    for _ <- 1..warmed, do: receive_count(name)

    published =
      while_publishing(ctx, fn ->
        # crawl.wat takes some 150 ms an event: 2 to 4 of them in a window of 500 ms.
        assert {:ok, _} =
                 Symbiont.deploy(name, Path.join(@wasm, "crawl.wat"),
                   window_ms: 500,
                   min_events: 2,
                   max_windows: 20
                 )

        assert %{"action" => "deploy"} = await_step(name)
        assert %{"action" => "rollback", "reason" => reason, "evidence" => e} = await_step(name)
        assert reason =~ ~r/p99 latency \d+ µs against \d+ µs for the stable version/

        assert %{"canary" => %{"failed" => 0, "samples" => samples}, "latency" => latency} = e
        assert samples in 2..10
        assert %{"k" => k, "n" => ^samples, "p" => p} = latency
        assert k >= 2 and p <= 1.0e-3
      end)

    # Every event handled once, by one version or the other; the stable version serves.
    outs = for _ <- 1..published, do: receive_count(name)
    refute_receive %Event{topic: "count.out", from: ^name}, 100
    assert length(outs) == published
    assert {:ok, %{agent: %{python: "wasm:" <> path}}} = Symbiont.Host.info(name)
    assert Path.basename(path) == "counter.wat"
  end

  test "rollback by hand returns a promoted agent to the version before, state kept",
       %{name: name} = ctx do
    published =
      while_publishing(ctx, fn ->
        {:ok, _} =
          Symbiont.deploy(name, Path.join(@wasm, "counter_v2.wat"), window_ms: 100, min_events: 3)

        assert %{"action" => "deploy"} = await_step(name)
        assert %{"action" => "promote"} = await_step(name)
      end)

    capture_log(fn ->
      for _ <- 1..published, do: receive_count(name)

      assert {:ok, %{to: to}} = Symbiont.rollback(name)
      assert Path.basename(to) == "counter.wat"

      assert %{"action" => "rollback", "reason" => "by hand, to the version before"} =
               await_step(name)
    end)

    [a, b] = counts(ctx, 2)
    assert b - a == 1

    assert {:error, %Symbiont.Error{reason: :not_found, message: "agent " <> _}} =
             Symbiont.rollback(name)
  end

  test "bad deploys are refused with what was wrong", %{name: name} do
    assert {:error,
            %Symbiont.Error{
              reason: :not_found,
              message: ~s(no agent named "nobody-here" runs on ) <> _
            }} = Symbiont.deploy("nobody-here", Path.join(@wasm, "counter.wat"))

    assert {:error, %Symbiont.Error{reason: :not_found, message: msg}} =
             Symbiont.deploy(name, "no/such.wasm")

    assert msg == ~s(agent "#{name}": the :wasm module "no/such.wasm" does not exist)

    assert {:error, %Symbiont.Error{reason: :invalid, message: msg}} =
             Symbiont.deploy(name, Path.join(@wasm, "counter.wat"), window_ms: 0)

    assert msg =~ "deploy option :window_ms cannot be 0"

    assert {:error, %Symbiont.Error{reason: :invalid, message: msg}} =
             Symbiont.deploy(name, Path.join(@wasm, "counter.wat"), min_latency_samples: 10)

    assert msg =~ "deploy option :min_latency_samples was removed"

    assert {:error, %Symbiont.Error{reason: :invalid, message: msg}} =
             Symbiont.deploy(name, Path.join(@wasm, "counter.wat"), alpha: 1.5)

    assert msg =~ "deploy option :alpha cannot be 1.5"

    python = unique_name("py")
    start_host!(name: python, agent: [name: python, python: "sample_agents:Counter"])

    assert {:error, %Symbiont.Error{reason: :invalid, message: msg}} =
             Symbiont.deploy(python, Path.join(@wasm, "counter.wat"))

    assert msg == ~s(agent "#{python}" is not a Wasm agent; only Wasm agents are deployed)
  end

  # Publishes n events one at a time and returns the counts they produced.
  defp counts(%{name: name, topic: topic}, n) do
    for i <- 1..n do
      :ok = Symbiont.publish(topic, i)
      receive_count(name)
    end
  end

  defp receive_count(name) do
    assert_receive %Event{topic: "count.out", from: ^name} = e, 5_000
    Event.decode!(e)
  end

  defp await_step(name) do
    assert_receive %Event{topic: "symbiont.remediation", from: ^name} = e, 10_000
    Event.decode!(e)
  end

  # An event every 2 ms until told to stop; returns how many it published.
  # Runs `fun` while a publisher sends to the agent's topic every 2 ms, logs captured;
  # returns how many events it published.
  defp while_publishing(%{topic: topic}, fun) do
    {published, _log} =
      with_log(fn ->
        publisher = start_publishing(topic, 2)
        fun.()
        stop_publishing(publisher)
      end)

    published
  end
end

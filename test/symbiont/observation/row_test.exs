defmodule Symbiont.Observation.RowTest do
  # A replica's row written as an agent server writes it (Symbiont.Observation.Row, through
  # Symbiont.Observation's delegates), and read back by the read side; no host, no agent.
  use ExUnit.Case, async: true

  alias Symbiont.Observation
  alias Symbiont.Observation.Row

  defp info(name, extra \\ %{}) do
    Map.merge(
      %{
        name: name,
        role: :stable,
        host: name,
        status: :ready,
        quarantined: nil,
        health: "healthy",
        health_reason: nil,
        health_at_ms: 0,
        version: "m:A",
        max_queue: 100,
        max_queue_bytes: 1_000,
        high_water: 80,
        topics: ["t"],
        crashes: 0,
        restarts: 0,
        start_failures: 0,
        window: %{deliveries: 0, failed: 0},
        failure_rate: nil,
        suspect: nil,
        last_error: nil,
        journal_error: nil,
        signals: nil,
        p99_us: nil
      },
      extra
    )
  end

  test "open, put, put_counters and close, as the read side sees them" do
    name = "row-test-#{System.unique_integer([:positive])}"
    id = name <> "#2"
    counters = Observation.open(id, info(name))

    assert Observation.runs?(name)
    assert %{ids: [^id], queue: 0, health: "healthy", handled: 0} = Observation.agent(name)

    now = System.monotonic_time(:millisecond)
    :ok = Observation.put_counters(counters, 3, 30, 1, 7, 2, now, 500)
    assert Observation.put(id, info(name, %{health: "degraded", crashes: 1}))

    assert %{queue: 3, queue_bytes: 30, in_flight: 1, handled: 7, failed: 2} =
             agent = Observation.agent(name)

    assert %{health: "degraded", crashes: 1} = agent
    assert [%{id: ^id, busy_us: 500, pid: pid} = replica] = agent.replicas
    assert pid == self()
    assert map_size(replica) <= 32

    :ok = Observation.close(id, name, :stable)
    refute Observation.runs?(name)
    assert Observation.agent(name) == nil
    refute Observation.put(id, info(name))
  end

  test "a canary's row sorts after the stable replicas and is not the agent's" do
    name = "row-test-#{System.unique_integer([:positive])}"
    _ = Observation.open(name <> "#canary", info(name, %{role: :canary}))
    _ = Observation.open(name, info(name))

    assert [%{role: :stable}, %{role: :canary}] = Observation.replicas(scope: &(&1 == name))

    assert %{ids: [^name], canary: %{role: :canary}} = Observation.agent(name)
    assert Row.key(name, name, :stable) < Row.key(name <> "#canary", name, :canary)

    :ok = Observation.close(name <> "#canary", name, :canary)
    :ok = Observation.close(name, name, :stable)
  end

  test "a baseline per agent and version" do
    name = "row-test-#{System.unique_integer([:positive])}"
    assert Observation.baseline(name, "v1") == nil
    true = Observation.put_baseline(name, "v1", %{n: 1})
    assert Observation.baseline(name, "v1") == %{n: 1}
    assert Observation.baseline(name, "v2") == nil
    :ets.delete(Symbiont.Observation.Baselines, {name, "v1"})
  end
end

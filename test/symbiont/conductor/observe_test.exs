defmodule Symbiont.Conductor.ObserveTest do
  # The conductor's observation built in two halves at once (Symbiont.Conductor.Observe,
  # from :observe_halves_from replicas on) is the one a single pass builds: the same
  # agents in the same order, the same summaries and deltas, the same edges, and the next
  # tick counts from both halves. On real hosts: Python agents that publish to each other
  # (an edge) and Wasm agents sharing a host; two conductors scoped to them, one that
  # splits from 1 replica on, one that never does.
  #
  use ExUnit.Case, async: true

  import Symbiont.HostHelpers

  alias Symbiont.{Conductor, Observation}

  @wasm Path.expand("../../../priv/wasm", __DIR__)

  # What does not move between two snapshots taken one after the other.
  @steady ~w(name replicas managed min_replicas max_replicas required version queue in_flight
             handled failed crashes restarts handled_delta failed_delta crashes_delta
             restarts_delta quarantined health canary pins start_failures)

  setup do
    previous = Application.get_env(:symbiont, :python_path)
    Application.put_env(:symbiont, :python_path, [fixtures()])
    on_exit(fn -> Application.put_env(:symbiont, :python_path, previous) end)
  end

  test "two halves make the snapshot one pass makes, and the next tick counts from both" do
    prefix = unique_name("halves")
    [t1, t2, t3] = for i <- 1..3, do: "#{prefix}.t#{i}"
    head = "#{prefix}-head"
    tail = "#{prefix}-tail"

    spawn!(name: head, python: "sample_agents:Counter", config: %{"in" => t1, "out" => t2})
    spawn!(name: tail, python: "sample_agents:Counter", config: %{"in" => t2, "out" => t3})

    wasm =
      for i <- 1..4 do
        name = "#{prefix}-w#{i}"
        spawn!(name: name, wasm: Path.join(@wasm, "counter.wat"), topics: ["#{prefix}.w", t2])
        name
      end

    ours = [head, tail | wasm]
    assert wait_until(fn -> Enum.all?(ours, &ready?/1) end, 20_000)

    conductor = fn halves_from ->
      start_scoped_conductor!(prefix <> "-", Symbiont.Manifest,
        tick_ms: 3_600_000,
        policy: "scenario_policies:Quiet",
        observe_halves_from: halves_from
      )
    end

    halves = conductor.(1)
    whole = conductor.(1_000_000)

    :ok = Symbiont.subscribe(t3)
    for i <- 1..3, do: :ok = Symbiont.publish(t1, i)
    for i <- 1..2, do: :ok = Symbiont.publish("#{prefix}.w", i)
    for _ <- 1..3, do: assert_receive(%Symbiont.Event{topic: ^t3}, 10_000)

    assert wait_until(
             fn -> handled(tail) == 3 and Enum.all?(wasm, &(handled(&1) == 5)) end,
             5_000
           )

    a = Conductor.snapshot(halves)
    b = Conductor.snapshot(whole)

    names = Enum.map(a["agents"], & &1["name"])
    assert names == Enum.map(b["agents"], & &1["name"])
    assert names == Enum.sort(names)
    assert Enum.all?(ours, &(&1 in names))

    # The halves split ours (at the middle of what the conductor saw as it started).
    middle = :sys.get_state(halves).middle
    assert Enum.any?(ours, &(&1 < middle)) and Enum.any?(ours, &(&1 >= middle))

    assert steady(a, ours) == steady(b, ours)
    assert %{"handled_delta" => 3} = summary(a, head)
    assert %{"handled_delta" => 3} = summary(a, tail)
    for w <- wasm, do: assert(%{"handled_delta" => 5} = summary(a, w))

    # The head publishes on t2, which the tail and the Wasm agents take, in both halves.
    for to <- [tail | wasm],
        do: assert(%{"from" => head, "topic" => t2, "to" => to} in a["topology"]["edges"])

    assert Enum.sort(a["topology"]["edges"]) == Enum.sort(b["topology"]["edges"])

    # A tick keeps what both halves counted: the next deltas count from there.
    assert [] = Conductor.tick(halves)
    :ok = Symbiont.publish(t1, 4)
    :ok = Symbiont.publish("#{prefix}.w", 3)
    assert_receive %Symbiont.Event{topic: ^t3}, 10_000

    assert wait_until(
             fn -> handled(tail) == 4 and Enum.all?(wasm, &(handled(&1) == 7)) end,
             5_000
           )

    after_tick = Conductor.snapshot(halves)
    assert %{"handled" => 4, "handled_delta" => 1} = summary(after_tick, head)
    assert %{"handled" => 4, "handled_delta" => 1} = summary(after_tick, tail)
    for w <- wasm, do: assert(%{"handled" => 7, "handled_delta" => 2} = summary(after_tick, w))
  end

  defp handled(name), do: Observation.replica(name).handled

  defp steady(snapshot, names),
    do: for(a <- snapshot["agents"], a["name"] in names, do: Map.take(a, @steady))

  defp summary(snapshot, name), do: Enum.find(snapshot["agents"], &(&1["name"] == name))

  defp spawn!(spec) do
    name = Keyword.fetch!(spec, :name)
    assert {:ok, ^name} = Symbiont.spawn_agent(spec)
    on_exit(fn -> Symbiont.retire(name) end)
  end

  defp ready?(name), do: match?(%{status: :ready}, Observation.replica(name))
end

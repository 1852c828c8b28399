defmodule Symbiont.ObservationTest do
  # One observation model (Symbiont.Observation), on real hosts: health from the failure
  # rate, a canary's health its own, crashes apart from restarts, and every view of it
  # (status/0, agents/0, agent/1, health/0, /status.json, the conductor's snapshot)
  # saying the same; the operator's pins, held against the conductor.
  #
  # Not async: it runs the status page (one per node) and agents of the application's
  # own manifest (Symbiont.scale/3 and the pins are about those).
  use ExUnit.Case, async: false

  import ExUnit.CaptureIO
  import ExUnit.CaptureLog
  import Symbiont.HostHelpers

  alias Symbiont.{Conductor, Observation, StatusPage}
  alias Symbiont.StatusPage.JSON

  doctest Symbiont.Observation
  doctest Symbiont.Observation.Row
  doctest Symbiont.Health.Window
  doctest Symbiont.Pins

  @wasm Path.expand("../../priv/wasm", __DIR__)

  setup do
    previous = Application.get_env(:symbiont, :python_path)
    Application.put_env(:symbiont, :python_path, [fixtures()])
    on_exit(fn -> Application.put_env(:symbiont, :python_path, previous) end)
    start_supervised!({StatusPage, port: 0})
    :ok = Symbiont.subscribe(Symbiont.Health.topic())
    :ok = Symbiont.subscribe(Symbiont.Remediation.topic())
    %{url: StatusPage.url()}
  end

  describe "health from the failure rate" do
    test "a Python agent failing every event is failing in every view, then healthy once it succeeds again",
         %{url: url} do
      topic = unique_name("failing.in")

      %{name: name} =
        start_app_agent!("failing",
          python: "sample_agents:Failing",
          config: %{"in" => topic},
          max_attempts: 1
        )

      c = start_conductor!([name])

      capture_log(fn ->
        for _ <- 1..5, do: :ok = Symbiont.publish(topic, "bad")
        assert wait_until(fn -> match?(%{failed: 5}, Observation.replica(name)) end, 10_000)
      end)

      # It never said a word about its health: its failures did. Two events, on the two
      # transitions, not one per failure.
      assert health_events(name) == [
               {"degraded", "2 of its last 2 deliveries failed"},
               {"failing", "3 of its last 3 deliveries failed"}
             ]

      assert_everywhere(url, c, name, %{
        health: "failing",
        reason: "5 of its last 5 deliveries failed",
        failed: 5
      })

      for _ <- 1..20, do: :ok = Symbiont.publish(topic, "good")
      assert wait_until(fn -> match?(%{handled: 20}, Observation.replica(name)) end, 10_000)

      # Acks come in batches: it may go by degraded, or straight back to healthy.
      events = health_events(name)
      assert {"healthy", "its deliveries succeed again (" <> _} = List.last(events)
      assert Enum.all?(events, &(elem(&1, 0) in ["degraded", "healthy"]))

      assert_everywhere(url, c, name, %{
        health: "healthy",
        reason: ~r/^its deliveries succeed again \([01] of its last 20 deliveries failed\)$/,
        failed: 5
      })
    end

    test "a bad canary is failing on its own; the stable agent stays healthy, during and after the rollback",
         %{url: url} do
      name = unique_name("stable")
      topic = unique_name("canary.in")
      # echo.wat says nothing of its health (counter.wat reports `degraded` itself).
      agent = [name: name, wasm: Path.join(@wasm, "echo.wat"), topics: [topic]]
      start_host!(name: name, agent: agent)
      c = start_conductor!([name])
      publisher = start_publishing(topic, 2)

      {canary, _log} =
        with_log(fn ->
          assert {:ok, %{canary: canary}} =
                   Symbiont.deploy(name, Path.join(@wasm, "trap.wat"),
                     window_ms: 3_000,
                     min_events: 5
                   )

          # The canary fails every event it gets (the stable version handles them again):
          # it is failing, and the agent is not.
          assert wait_until(
                   fn ->
                     match?(%{role: :canary, health: "failing"}, Observation.replica(canary))
                   end,
                   10_000
                 )

          assert %{canary: %{id: ^canary, health: "failing"}, health: "healthy"} =
                   Observation.agent(name)

          assert %{"canary" => %{"id" => ^canary, "health" => "failing"}, "health" => "healthy"} =
                   snapshot_of(c, name)

          assert %{"role" => "canary", "health" => "failing"} = page_row(url, canary)
          assert %{"role" => "stable", "health" => "healthy"} = page_row(url, name)

          assert %{"action" => "rollback"} = await_remediation(name, "rollback", 15_000)
          canary
        end)

      stop_publishing(publisher)
      assert Observation.replica(canary) == nil

      # Every view: healthy, and nothing of the canary's reason.
      assert_everywhere(url, c, name, %{health: "healthy"})
      {:ok, agent} = Symbiont.agent(name)
      assert agent.canary == nil
      refute (agent.health_reason || "") =~ "deliveries failed"
    end
  end

  describe "every view agrees" do
    @tag timeout: 120_000
    test "after a deploy, a rollback, a scale and a kill -9", %{url: url} do
      [w, p] = [unique_name("view-w"), unique_name("view-p")]
      [tw, tp] = [unique_name("view.w.in"), unique_name("view.p.in")]
      attach_host_events(p)
      spawn!(name: w, wasm: Path.join(@wasm, "counter.wat"), topics: [tw])
      # Its shared host (the application's manifest names them "wasm#N").
      on_exit(fn -> Symbiont.Python.stop("wasm#1") end)

      spawn!(
        name: p,
        python: "sample_agents:Counter",
        config: %{"in" => tp, "out" => tp <> ".out"}
      )

      assert wait_until(fn -> ready?(w) and ready?(p) end, 10_000)
      c = start_conductor!([w, p])

      # agent/1 decodes a Wasm agent's state as a Python agent's: counter.wat's is its count.
      for i <- 1..3, do: :ok = Symbiont.publish(tw, i)
      assert wait_until(fn -> match?({:ok, %{state: 3}}, Symbiont.agent(w)) end, 5_000)
      :ok = Symbiont.publish(tp, 1)
      assert wait_until(fn -> match?({:ok, %{state: %{"n" => 1}}}, Symbiont.agent(p)) end, 5_000)

      capture_log(fn ->
        # A deploy: a canary beside the stable replica (long windows: it stays).
        assert {:ok, %{canary: canary}} =
                 Symbiont.deploy(w, Path.join(@wasm, "counter_v2.wat"),
                   window_ms: 60_000,
                   min_events: 10_000
                 )

        assert wait_until(fn -> ready?(canary) end, 10_000)
        assert Observation.ids(w, :all) == [w, canary]
        assert Observation.ids(w) == [w]
        assert_views_agree(url, c, [w, p])

        # A rollback by hand: audited as the operator's, its version pinned.
        assert {:ok, _} = Symbiont.rollback(w)
        assert %{"by" => "operator"} = await_remediation(w, "rollback")
        assert Observation.ids(w, :all) == [w]
        assert %{"version" => %{value: version}} = Symbiont.Pins.of(w)
        assert Path.basename(version) == "counter.wat"
        assert_views_agree(url, c, [w, p])

        # A scale by hand: a second replica. The conductor counts changes per replica: the
        # new one brings none it did not make.
        Conductor.tick(c)
        assert :ok = Symbiont.scale(p, 2)
        assert %{"by" => "operator", "replicas" => 2} = await_remediation(p, "scale")
        assert wait_until(fn -> ready?(p <> "#2") end, 10_000)
        assert %{"handled_delta" => 0, "crashes_delta" => 0, "replicas" => 2} = snapshot_of(c, p)
        assert_views_agree(url, c, [w, p])

        # A kill -9 of the first replica's host: its crash, and only its; the conductor
        # counts it once, as a change since its last tick, over both replicas.
        Conductor.tick(c)
        {:ok, %{os_pid: os_pid}} = Symbiont.Host.info(p)
        Symbiont.Host.Reaper.kill(os_pid)
        assert_receive {:agent_start, ^p, %{restarts: 1}}, 10_000
        assert wait_until(fn -> ready?(p) end, 10_000)

        assert %{"crashes_delta" => 1, "restarts_delta" => 1, "replicas" => 2} = snapshot_of(c, p)
      end)

      assert %{crashes: 1, restarts: 1} = Observation.replica(p)
      assert %{crashes: 0, restarts: 0} = Observation.replica(p <> "#2")
      assert %{crashes: 0, restarts: 0} = Observation.replica(w)
      assert_views_agree(url, c, [w, p])

      # A promotion upgrades the stable replica in place: a restart, not a crash.
      publisher = start_publishing(tw, 5)

      capture_log(fn ->
        assert {:ok, _} =
                 Symbiont.deploy(w, Path.join(@wasm, "counter_v2.wat"),
                   window_ms: 200,
                   min_events: 5
                 )

        assert %{"action" => "promote"} = await_remediation(w, "promote", 15_000)
      end)

      stop_publishing(publisher)
      assert %{crashes: 0, restarts: 1, version: "wasm:" <> v2} = Observation.replica(w)
      assert Path.basename(v2) == "counter_v2.wat"
      assert_views_agree(url, c, [w, p])
    end
  end

  describe "the operator's word holds" do
    test "a scale by hand is pinned: the conductor refuses to undo it, once in the log, until unpin/1",
         %{url: url} do
      p = unique_name("pinned")
      spawn!(name: p, python: "sample_agents:Counter", config: %{"in" => unique_name("pin.in")})
      assert wait_until(fn -> ready?(p) end, 10_000)
      undo = %{"action" => "scale", "agent" => p, "replicas" => 1, "reason" => "undo it"}

      capture_log(fn ->
        assert :ok = Symbiont.scale(p, 2, hold_ms: :infinity)
        assert %{"by" => "operator", "pinned_until_ms" => nil} = await_remediation(p, "scale")
        assert wait_until(fn -> ready?(p <> "#2") end, 10_000)

        c =
          start_conductor!([p],
            policy: "scenario_policies:Always",
            policy_options: %{"action" => undo},
            tick_ms: 50
          )

        # Shown everywhere.
        assert %{
                 "pins" => %{"replicas" => %{"value" => 2, "by" => "operator", "until_ms" => nil}}
               } = snapshot_of(c, p)

        assert %{"pins" => %{"replicas" => %{"value" => 2}}} = page_row(url, p)
        screen = capture_io(fn -> Symbiont.status() end)
        assert screen =~ ~r/^#{p} +replicas +2 +unpin\/1 +scaled by hand$/m

        # Refused tick after tick, recorded and logged once.
        ticks = Conductor.info(c).ticks
        assert wait_until(fn -> Conductor.info(c).ticks >= ticks + 10 end, 10_000)
        assert [refusal] = refusals(p)
        assert refusal["result"] =~ "refused: replicas of #{p} pinned by the operator (replicas 2"
        assert Observation.ids(p) == [p, p <> "#2"]

        # Lifted: the conductor may act again.
        assert {:ok, ["replicas"]} = Symbiont.unpin(p)
        assert %{"by" => "operator", "fields" => ["replicas"]} = await_remediation(p, "unpin")
        assert %{"replicas" => 1} = await_conductor(p, "scale")
        assert wait_until(fn -> Observation.ids(p) == [p] end, 10_000)
      end)

      assert {:error, %Symbiont.Error{reason: :not_found, message: message}} = Symbiont.unpin(p)
      assert message == ~s(agent "#{p}" has no pin)
    end

    test "a scale is not undone by evidence from before it: drained ticks count from the end of the hold" do
      p = unique_name("aggregator")

      spawn!(
        name: p,
        python: "sample_agents:Counter",
        config: %{"in" => unique_name("agg.in")},
        max_replicas: 4
      )

      assert wait_until(fn -> ready?(p) end, 10_000)

      c =
        start_conductor!([p],
          tick_ms: 50,
          policy_options: %{"drain_ticks" => 3, "idle_ms" => 3_600_000}
        )

      capture_log(fn ->
        # Drained for many ticks at one replica (its minimum: nothing to do).
        ticks = Conductor.info(c).ticks
        assert wait_until(fn -> Conductor.info(c).ticks >= ticks + 10 end, 10_000)

        assert :ok = Symbiont.scale(p, 3, hold_ms: 1_000)
        assert %{"replicas" => %{until_ms: until}} = Symbiont.Pins.of(p)
        assert wait_until(fn -> ready?(p <> "#2") and ready?(p <> "#3") end, 10_000)

        # Held: nothing proposed while pinned; then spare ticks from the end of the hold
        # (Little's law: nothing arrives, its minimum is enough).
        assert %{"reason" => "capacity: " <> _, "replicas" => 1} =
                 scale = await_conductor(p, "scale")

        assert %{"arrival_per_s" => arrival, "needed" => 1} = scale["evidence"]
        assert arrival == 0
        assert scale["at_ms"] >= until
      end)
    end

    test "quarantine and release by hand are audited and pinned; bad holds are refused" do
      p = unique_name("held")
      spawn!(name: p, python: "sample_agents:Counter", config: %{"in" => unique_name("held.in")})
      assert wait_until(fn -> ready?(p) end, 10_000)

      capture_log(fn ->
        assert :ok = Symbiont.quarantine(p, "looking into it")

        assert %{"by" => "operator", "reason" => "looking into it"} =
                 await_remediation(p, "quarantine")

        assert %{quarantined: "looking into it", health: "quarantined"} = Observation.replica(p)
        assert %{"quarantine" => %{value: true}} = Symbiont.Pins.of(p)

        # The node does not serve it, and says so at once (the timeout is the test's).
        assert {:error, %Symbiont.Error{reason: :unavailable, message: message}} =
                 Symbiont.await_ready(120_000)

        assert message =~ "#{p} is quarantined (looking into it)"

        assert :ok = Symbiont.release(p)
        assert %{"by" => "operator"} = await_remediation(p, "release")
        assert wait_until(fn -> ready?(p) end, 10_000)
        assert %{"quarantine" => %{value: false}} = Symbiont.Pins.of(p)
      end)

      # A host that tells a quarantined agent of a new process (it sent that before it
      # took the agent's leave) does not start it: no agent_start without a slot.
      capture_log(fn -> assert :ok = Symbiont.quarantine(p, "again") end)
      host = Symbiont.Host.whereis(p)
      send(Observation.replica(p).pid, {:host_up, host, :sys.get_state(host).port})
      # (A call to the agent returns once it has read that message.)
      assert {:ok, %{status: :detached, quarantined: "again", crashes: crashes}} =
               Symbiont.Agent.Server.info(p)

      # Nor is a host's death it hears of after its quarantine its crash (the delivery
      # that was running as it left went back to its queue).
      send(Observation.replica(p).pid, {:host_down, host, %{suspect: true, running: :none}})
      assert {:ok, %{crashes: ^crashes, quarantined: "again"}} = Symbiont.Agent.Server.info(p)
      capture_log(fn -> assert :ok = Symbiont.release(p) end)

      assert {:error, %Symbiont.Error{reason: :invalid, message: message}} =
               Symbiont.scale(p, 2, hold_ms: 0)

      assert message =~ "expected :pin_hold_ms of the conductor to be a positive integer"
    end
  end

  ## Helpers

  defp spawn!(spec) do
    name = Keyword.fetch!(spec, :name)
    assert {:ok, ^name} = Symbiont.spawn_agent(spec)

    on_exit(fn ->
      Symbiont.Pins.unpin(name)
      capture_log(fn -> Symbiont.retire(name) end)
      assert wait_until(fn -> Observation.ids(name, :all) == [] end, 10_000)
      for id <- [name, name <> "#2", name <> "#3"], do: Symbiont.Python.stop(id)
    end)
  end

  defp ready?(id), do: match?(%{status: :ready}, Observation.replica(id))

  defp start_conductor!(names, opts \\ []) do
    name = :"conductor_#{System.unique_integer([:positive])}"
    policy_host = unique_name("policy")

    opts =
      Keyword.merge(
        [
          name: name,
          tick_ms: 3_600_000,
          cooldown_ms: 200,
          policy_host: policy_host,
          python_path: [fixtures()],
          scope: &(&1 in names)
        ],
        opts
      )

    start_supervised!({Conductor, opts}, id: name)
    on_exit(fn -> Symbiont.Python.stop(policy_host) end)
    name
  end

  # The health events about `name` waiting in the mailbox, oldest first.
  defp health_events(name) do
    receive do
      %Symbiont.Event{topic: "symbiont.health", from: ^name} = e ->
        %{"kind" => kind, "reason" => reason} = Symbiont.Event.decode!(e)
        [{kind, reason} | health_events(name)]
    after
      0 -> []
    end
  end

  # The conductor's `action` on `agent` (skipping the operator's).
  defp await_conductor(agent, action, timeout \\ 15_000) do
    case await_remediation(agent, action, timeout) do
      %{"by" => "conductor"} = a -> a
      _ -> await_conductor(agent, action, timeout)
    end
  end

  defp refusals(name) do
    for %{"agent" => ^name, "result" => "refused: " <> _} = e <- Symbiont.remediations(1_000),
        do: e
  end

  defp page_agents(url) do
    {:ok, {{_, 200, _}, _, body}} =
      :httpc.request(:get, {String.to_charlist(url <> "status.json"), []}, [timeout: 10_000],
        body_format: :binary
      )

    JSON.decode!(body)["agents"]
  end

  defp page_row(url, id), do: Enum.find(page_agents(url), &(&1["id"] == id))

  defp snapshot_of(c, name), do: Enum.find(Conductor.snapshot(c)["agents"], &(&1["name"] == name))

  # status/0's rows, by replica id: its columns by header.
  defp status_rows do
    screen = capture_io(fn -> Symbiont.status() end)
    [_title, _nodes, "", header | rest] = String.split(screen, "\n")
    keys = String.split(header)

    rest
    |> Enum.take_while(&(&1 != ""))
    |> Enum.map(&Enum.zip(keys, String.split(&1)))
    |> Map.new(fn row -> {row |> hd() |> elem(1), Map.new(row)} end)
  end

  defp health_rows do
    screen = capture_io(fn -> Symbiont.health() end)

    for line <- String.split(screen, "\n"),
        [id, kind | _] <- [String.split(line)],
        into: %{},
        do: {id, kind}
  end

  # Agent `name` (one replica) has `health` (and `reason`, `failed` when given) in
  # status/0, agents/0, agent/1, health/0, /status.json and the conductor's snapshot.
  defp assert_everywhere(url, c, name, want) do
    rows = status_rows()
    assert rows[name]["HEALTH"] == want.health
    assert [%{health: health} = listed] = Enum.filter(Symbiont.agents(), &(&1.id == name))
    assert health == want.health
    assert {:ok, agent} = Symbiont.agent(name)
    assert agent.health == want.health
    assert health_rows()[name] == want.health
    page = page_row(url, name)
    assert page["health"] == want.health
    snap = snapshot_of(c, name)
    assert snap["health"] == want.health

    if reason = want[:reason] do
      reasons = [listed.health_reason, agent.health_reason, page["health_reason"]]
      assert Enum.uniq([snap["health_reason"] | reasons]) == [listed.health_reason]
      assert listed.health_reason =~ reason
    end

    if failed = want[:failed] do
      assert {rows[name]["FAILED"], listed.failed, agent.failed, page["failed"], snap["failed"]} ==
               {"#{failed}", failed, failed, failed, failed}
    end
  end

  # Every view of agents `names` says the same: replicas, roles, health, crashes,
  # restarts (per replica), and over the stable ones for the agent.
  defp assert_views_agree(url, c, names) do
    fields = [:role, :health, :crashes, :restarts]
    mine = fn id -> Enum.any?(names, &(id == &1 or String.starts_with?(id, &1 <> "#"))) end

    from_agents =
      for a <- Symbiont.agents(), mine.(a.id), into: %{}, do: {a.id, Map.take(a, fields)}

    from_status =
      for {id, row} <- status_rows(), mine.(id), into: %{} do
        {id,
         %{
           role: String.to_atom(row["ROLE"]),
           health: row["HEALTH"],
           crashes: String.to_integer(row["CRASHES"]),
           restarts: String.to_integer(row["RESTARTS"])
         }}
      end

    from_page =
      for r <- page_agents(url), mine.(r["id"]), into: %{} do
        {r["id"],
         %{
           role: String.to_atom(r["role"]),
           health: r["health"],
           crashes: r["crashes"],
           restarts: r["restarts"]
         }}
      end

    from_agent =
      for name <- names,
          {:ok, a} = Symbiont.agent(name),
          r <- a.replicas ++ List.wrap(a.canary),
          into: %{},
          do: {r.id, Map.take(r, fields)}

    assert map_size(from_agents) >= length(names)
    assert from_status == from_agents
    assert from_page == from_agents
    assert from_agent == from_agents

    snapshot = Conductor.snapshot(c)["agents"]

    for name <- names do
      stable =
        for {id, r} <- from_agents,
            r.role == :stable,
            Observation.ids(name) |> Enum.member?(id),
            do: {id, r}

      snap = Enum.find(snapshot, &(&1["name"] == name))
      {:ok, agent} = Symbiont.agent(name)

      assert agent.ids == Enum.map(stable, &elem(&1, 0)) |> Enum.sort()
      assert snap["replicas"] == length(stable)
      assert snap["health"] == Observation.worst(Enum.map(stable, &elem(&1, 1).health))
      assert snap["crashes"] == Enum.sum(Enum.map(stable, &elem(&1, 1).crashes))
      assert snap["restarts"] == Enum.sum(Enum.map(stable, &elem(&1, 1).restarts))

      assert {agent.health, agent.crashes, agent.restarts, agent.start_failures} ==
               {snap["health"], snap["crashes"], snap["restarts"], snap["start_failures"]}

      canary =
        Enum.find(from_agents, fn {id, r} ->
          r.role == :canary and String.starts_with?(id, name <> "#")
        end)

      case canary do
        nil ->
          assert snap["canary"] == nil

        {id, r} ->
          assert %{"id" => ^id, "health" => health} = snap["canary"]
          assert health == r.health
      end
    end

    # Each is a flat map (32 keys at most): the conductor builds one per agent and reads
    # one per replica every tick, and a larger map costs ten times as much (bench/heal).
    maps =
      [{"snapshot", snapshot}, {"replica", Observation.replicas()}] ++
        [{"agent", Observation.agents()}]

    for {what, list} <- maps, m <- list do
      assert map_size(m) <= 32, "a #{what} of #{map_size(m)} keys: #{inspect(Map.keys(m))}"
    end
  end
end

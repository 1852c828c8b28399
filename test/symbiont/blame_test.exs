defmodule Symbiont.BlameTest do
  # Step 9, point 4: when a host shared by several Wasm agents dies (a kill -9, as a
  # segfault or the OOM killer would; a wedge found by the heartbeat), the crash is charged
  # to the agent whose call was running, and only to it; its co-tenants are restarted with
  # nothing charged, and a suspect that crashes a shared host twice goes to a host of its
  # own (see "Blame" in Symbiont.Manifest). Real hosts, real wasmtime. A module cannot kill
  # its host: the test does it, from outside, while the suspect's call spins (hang.wat).
  use ExUnit.Case, async: true

  import ExUnit.CaptureLog
  import Symbiont.HostHelpers

  alias Symbiont.Agent.Server
  alias Symbiont.Host.Reaper
  alias Symbiont.Observation

  doctest Symbiont.Host.Blame

  @hang Path.expand("../fixtures/wasm/hang.wat", __DIR__)
  @counter Path.expand("../../priv/wasm/counter.wat", __DIR__)
  # The default heartbeat: a wedge is found after 3 s. Shorter ones (heartbeat_test.exs
  # uses 250 ms) let a whole suite on a loaded machine take a busy host for a frozen one,
  # and this test counts every crash.
  @beat 1_000

  setup do
    :ok = Symbiont.subscribe("symbiont.dead_letter")
    :ok = Symbiont.subscribe(Symbiont.Remediation.topic())
    :ok
  end

  # The suspect: every call with payload 1-9 spins (a deadline of ten minutes) once it has
  # logged "hanging N"; it gives up on such an event at its first crash.
  defp suspect_spec(id, topic),
    do: [
      id: id,
      name: id,
      wasm: @hang,
      topics: [topic],
      max_attempts: 1,
      limits: [deadline_ms: 600_000]
    ]

  defp counter_spec(id, topic, extra),
    do: [id: id, name: id, wasm: @counter, topics: [topic]] ++ extra

  # The suspect's call `n` runs in `host`: it said so in its log.
  defp await_hanging(host, n) do
    assert wait_until(
             fn ->
               case Symbiont.Host.info(host) do
                 {:ok, %{recent_logs: logs}} -> Enum.any?(logs, &(&1 =~ "hanging #{n}"))
                 _ -> false
               end
             end,
             10_000
           ),
           "the suspect's call #{n} never ran in #{host}"
  end

  # Its count: info/1 decodes a Wasm agent's state (what symbiont_state wrote).
  defp counted(id) do
    {:ok, %{state: count}} = Server.info(id)
    count
  end

  test "a Wasm agent that kills its shared host is charged alone, then isolated; its busy co-tenants lose nothing and are never quarantined" do
    prefix = unique_name("blame")
    %{name: shared, os_pid: os_pid} = start_host!(name: "#{prefix}-shared", heartbeat_ms: @beat)
    [suspect, a, b] = for x <- ~w(suspect a b), do: "#{prefix}-#{x}"
    [in_s, in_a, in_b] = for x <- ~w(s a b), do: unique_name("blame.#{x}")
    on_exit(fn -> Symbiont.Host.stop(suspect) end)

    start_agent_in!(shared, suspect_spec(suspect, in_s))
    # One delivery in flight at a time, one attempt: a crash charged to `a` would lose the
    # event it was given.
    # (A deadline of seconds: what is under test is blame, and a host descheduled for
    # 100 ms on a loaded machine would fail a call at the default deadline.)
    start_agent_in!(
      shared,
      counter_spec(a, in_a, max_in_flight: 1, max_attempts: 1, limits: [deadline_ms: 5_000])
    )

    start_agent_in!(shared, counter_spec(b, in_b, []))

    # A conductor of its own, for these agents, that ticks when told: two crashes in its
    # window are a crash loop.
    conductor = :"conductor_#{prefix}"
    policy_host = unique_name("policy")
    on_exit(fn -> Symbiont.Python.stop(policy_host) end)

    start_supervised!(
      {Symbiont.Conductor,
       name: conductor,
       tick_ms: 3_600_000,
       manifest: :"no_manifest_#{prefix}",
       policy_host: policy_host,
       policy_options: %{"crash_loop" => 2},
       python_path: [fixtures()],
       scope: &String.starts_with?(&1, prefix)},
      id: conductor
    )

    assert Symbiont.Conductor.tick(conductor) == []

    # The co-tenants are busy the whole time.
    busy = for topic <- [in_a, in_b], do: start_publishing(topic, 5)

    log =
      capture_log(fn ->
        # 1. A kill -9 while the suspect's call runs: charged to it alone.
        :ok = Symbiont.publish(in_s, 1)
        await_hanging(shared, 1)
        Reaper.kill(os_pid)
        # (Seen as its exit, or as the port closed under a write: EPIPE.)
        assert_receive {:host_crash, ^shared, %{suspect: ^suspect}}, 10_000
        assert_receive {:host_start, ^shared, %{os_pid: os_pid}}, 10_000

        # 2. A wedge (SIGSTOP) while its call runs: found by the heartbeat, charged to it,
        # and it is moved to a host of its own.
        :ok = Symbiont.publish(in_s, 2)
        await_hanging(shared, 2)
        assert {:ok, %{os_pid: ^os_pid, crashes: 1}} = Symbiont.Host.info(shared)
        {_, 0} = System.cmd("kill", ["-STOP", Integer.to_string(os_pid)])

        assert_receive {:host_crash, ^shared,
                        %{suspect: ^suspect, reason: {:unresponsive, _}, agents: agents}},
                       10_000

        assert Enum.sort(agents) == Enum.sort([suspect, a, b])

        assert %{"by" => "supervisor", "host" => ^suspect, "evidence" => evidence} =
                 await_remediation(suspect, "isolate")

        assert %{"crashes" => 2, "from" => ^shared} = evidence
        assert_receive {:agent_start, ^suspect, %{host: ^suspect}}, 10_000
        assert_receive {:host_start, ^shared, %{os_pid: shared_os_pid}}, 10_000
        assert {:ok, %{agents: [_, _] = cotenants}} = Symbiont.Host.info(shared)
        assert cotenants |> Enum.map(& &1.id) |> Enum.sort() == Enum.sort([a, b])
        assert Server.hosts()[suspect] == suspect

        # 3. Its next crash takes down its own host, not its neighbours'.
        :ok = Symbiont.publish(in_s, 3)
        await_hanging(suspect, 3)
        {:ok, %{os_pid: own_os_pid}} = Symbiont.Host.info(suspect)
        Reaper.kill(own_os_pid)
        assert_receive {:host_crash, ^suspect, %{suspect: ^suspect}}, 10_000
        assert_receive {:agent_start, ^suspect, %{host: ^suspect}}, 10_000
        assert {:ok, %{os_pid: ^shared_os_pid, crashes: 2}} = Symbiont.Host.info(shared)
        refute_received {:host_crash, ^shared, _}
      end)

    assert log =~ "charged to agent #{suspect}: its delivery (seq"
    assert log =~ "agent #{suspect} crashed the host #{inspect(shared)}"

    # Every event the co-tenants accepted is handled, once: nothing lost, nothing charged.
    [n_a, n_b] = Enum.map(busy, &stop_publishing/1)

    for {id, n} <- [{a, n_a}, {b, n_b}] do
      assert wait_until(
               fn ->
                 match?({:ok, %{handled: ^n, queue: 0, in_flight: 0}}, Server.info(id)) and
                   counted(id) == n
               end,
               20_000
             ),
             "#{id}: #{inspect(Server.info(id))}, #{n} published"

      assert {:ok, %{failed: 0, crashes: 0, restarts: 2, quarantined: nil}} = Server.info(id)
      refute_received %Symbiont.Event{topic: "symbiont.dead_letter", from: ^id}
    end

    # The suspect: its three crashes, each hanging event given up on, each a failure in
    # its window (failing, from its failure rate), in its own host now. The co-tenants'
    # windows hold no failure.
    assert {:ok, %{crashes: 3, failed: 3}} = Server.info(suspect)

    assert %{crashes: 3, window: %{failed: 3}, health: "failing", host: ^suspect} =
             Observation.replica(suspect)

    for id <- [a, b],
        do: assert(%{crashes: 0, window: %{failed: 0}, host: ^shared} = Observation.replica(id))

    for _ <- 1..3 do
      assert_receive %Symbiont.Event{topic: "symbiont.dead_letter", from: ^suspect} = e
      assert %{"reason" => "crashed"} = Symbiont.Event.decode!(e)
    end

    # The conductor sees a crash loop in the suspect, and in nobody else.
    actions = capture_log(fn -> send(self(), {:actions, Symbiont.Conductor.tick(conductor)}) end)
    assert actions =~ "quarantine #{suspect}"
    assert_received {:actions, actions}
    assert [%{"action" => "quarantine", "agent" => ^suspect} = q] = actions
    assert %{"crashes_in_window" => 3} = q["evidence"]

    for id <- [a, b], do: assert({:ok, %{quarantined: nil}} = Server.info(id))
  end

  test "under the manifest, an isolated replica's own host is its placement, and goes with it" do
    prefix = unique_name("blamem")
    [suspect, other] = ["#{prefix}-suspect", "#{prefix}-other"]
    [in_s, in_o] = [unique_name("blamem.s"), unique_name("blamem.o")]
    attach_host_events(suspect)
    attach_host_events(other)

    m =
      start_manifest!([
        suspect_spec(suspect, in_s) |> Keyword.delete(:id),
        counter_spec(other, in_o, []) |> Keyword.delete(:id)
      ])

    assert_receive {:agent_start, ^suspect, %{host: shared}}, 10_000
    assert_receive {:agent_start, ^other, %{host: ^shared}}, 10_000
    attach_host_events(shared)

    capture_log(fn ->
      for n <- 1..2 do
        :ok = Symbiont.publish(in_s, n)
        await_hanging(shared, n)
        {:ok, %{os_pid: os_pid}} = Symbiont.Host.info(shared)
        Reaper.kill(os_pid)
        assert_receive {:host_crash, ^shared, %{suspect: ^suspect}}, 10_000
      end

      await_remediation(suspect, "isolate")
      assert_receive {:agent_start, ^suspect, %{host: ^suspect}}, 10_000
    end)

    # The manifest leaves it where it is, and starts nothing.
    assert Symbiont.Manifest.reconcile(m) == %{started: [], retired: []}
    assert Server.hosts()[suspect] == suspect
    assert Server.hosts()[other] == shared

    # Retired, it takes its own host with it; the shared one serves on.
    :ok = Symbiont.Manifest.retire(suspect, m)
    assert wait_until(fn -> Symbiont.Host.whereis(suspect) == nil end, 10_000)
    :ok = Symbiont.publish(in_o, 1)
    assert wait_until(fn -> match?({:ok, %{handled: 1}}, Server.info(other)) end, 10_000)
    assert {:ok, %{crashes: 0}} = Server.info(other)
  end

  test "a host of one agent charges it; a restart on request charges nobody" do
    %{name: name} =
      start_agent_host!("blame1", python: "sample_agents:Counter", config: %{"in" => "x"})

    capture_log(fn ->
      :ok = Symbiont.Host.restart(name, "by hand")
      assert_receive {:host_crash, ^name, %{suspect: nil, reason: {:restarted, _}}}, 10_000
      assert_receive {:agent_start, ^name, %{restarts: 1}}, 10_000
      assert {:ok, %{crashes: 0, restarts: 1}} = Server.info(name)

      {:ok, %{os_pid: os_pid}} = Symbiont.Host.info(name)
      Reaper.kill(os_pid)
      assert_receive {:host_crash, ^name, %{suspect: ^name}}, 10_000
      assert_receive {:agent_start, ^name, %{restarts: 2}}, 10_000
      assert {:ok, %{crashes: 1, restarts: 2}} = Server.info(name)
    end)
  end

  test "the isolation rule is validated" do
    for {key, value, unit} <- [
          {:isolate_after, 0, "(crashes)"},
          {:isolate_window_ms, -1, "(milliseconds)"},
          {:isolate_window_ms, "60s", "(milliseconds)"}
        ] do
      assert {:error, %ArgumentError{message: message}} =
               Symbiont.Host.validate_options([{key, value}])

      assert message ==
               "expected #{inspect(key)} to be a positive integer #{unit}, got: #{inspect(value)}"
    end
  end
end

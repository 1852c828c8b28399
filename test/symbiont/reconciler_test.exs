defmodule Symbiont.ReconcilerTest do
  # The manifest's reconciler on real hosts: run-time changes, drift repaired within two
  # ticks, live reloads. Each test runs a manifest of its own (its agents only).
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog
  import Symbiont.HostHelpers

  alias Symbiont.Agent.Server
  alias Symbiont.Manifest

  @tick 100
  @counter Path.expand("../../priv/wasm/counter.wat", __DIR__)

  setup do
    previous = Application.get_env(:symbiont, :python_path)
    Application.put_env(:symbiont, :python_path, [fixtures()])
    on_exit(fn -> Application.put_env(:symbiont, :python_path, previous) end)
    :ok = Symbiont.subscribe(Symbiont.Health.topic())
    {:ok, prefix: unique_name("rwasm")}
  end

  defp opts(prefix), do: [wasm_hosts: prefix, tick_ms: @tick, per_host: 2]

  defp await_start(id), do: assert_receive({:agent_start, ^id, _}, 10_000)

  test "scale out and in: each Python replica gets its own host; retired ones hand over and go",
       %{prefix: prefix} do
    py = unique_name("rpy")
    for id <- [py, py <> "#2", py <> "#3"], do: attach_host_events(id)

    m = start_manifest!([[name: py, python: "sample_agents:Counter"]], opts(prefix))

    await_start(py)

    :ok = Manifest.scale(py, 3, m)
    await_start(py <> "#2")
    await_start(py <> "#3")
    assert {:ok, %{agent: %{id: id3}}} = Symbiont.Host.info(py <> "#3")
    assert id3 == py <> "#3"

    capture_log(fn ->
      :ok = Manifest.scale(py, 1, m)
      assert %{"metrics" => %{"id" => _}, "reason" => "scaled in"} = await_health(py, "retired")
      assert %{"reason" => "scaled in"} = await_health(py, "retired")

      assert wait_until(fn ->
               Server.ids() |> Enum.filter(&String.starts_with?(&1, py)) == [py]
             end)

      assert wait_until(fn -> Symbiont.Host.whereis(py <> "#3") == nil end)
    end)

    assert [%{name: ^py, replicas: 1}] = Manifest.agents(m)

    assert {:error, %Symbiont.Error{reason: :not_found, message: message}} =
             Manifest.scale("nobody", 2, m)

    assert message =~ ~s(agent "nobody" is not in the manifest)
  end

  test "a restarted manifest finds its Wasm agents where they run, and still repairs their hosts",
       %{prefix: prefix} do
    names = for i <- 1..3, do: "#{prefix}-w#{i}"
    for n <- names, do: attach_host_events(n)
    specs = for n <- names, do: [name: n, wasm: @counter, topics: [unique_name("rw.in")]]
    m = start_manifest!(specs, opts(prefix))
    for n <- names, do: await_start(n)
    before = for n <- names, do: {n, elem(Server.info(n), 1).host}

    capture_log(fn ->
      kill!(Process.whereis(m))
      assert wait_until(fn -> is_pid(Process.whereis(m)) end)

      # Nothing started twice, nothing moved.
      assert Manifest.reconcile(m).started == []
      assert for(n <- names, do: {n, elem(Server.info(n), 1).host}) == before

      # A host stopped from outside comes back: the manifest knows it is one of its own.
      {_, host} = hd(before)
      host_pid = Symbiont.Host.whereis(host)
      :ok = DynamicSupervisor.terminate_child(Symbiont.Hosts, host_pid)

      assert wait_until(
               fn -> Symbiont.Host.whereis(host) not in [nil, host_pid] end,
               5 * @tick + 2_000
             )

      assert_receive {:agent_start, _, _}, 10_000
    end)
  end

  test "drift: an agent stopped by hand and a host stopped from outside come back within two ticks",
       %{prefix: prefix} do
    py = unique_name("rdrift")
    attach_host_events(py)

    m = start_manifest!([[name: py, python: "sample_agents:Counter"]], opts(prefix))

    await_start(py)

    capture_log(fn ->
      :ok = DynamicSupervisor.terminate_child(Symbiont.Agents, Server.whereis(py))
      await_start(py)

      :ok = Symbiont.Python.stop(py)
      assert_receive {:host_start, ^py, _}, 2 * @tick + 5_000
      await_start(py)
    end)

    assert Manifest.reconcile(m) == %{started: [], retired: []}
  end

  test "spawn and retire at run time; Wasm agents share the manifest's hosts",
       %{prefix: prefix} do
    [w1, w2, w3] = for p <- ~w(rw1 rw2 rw3), do: unique_name(p)
    for id <- [w1, w2, w3], do: attach_host_events(id)
    spec = fn name -> [name: name, wasm: @counter, topics: [unique_name("rtopic")]] end
    m = start_manifest!([spec.(w1), spec.(w2)], opts(prefix))
    await_start(w1)
    await_start(w2)
    assert {:ok, %{agents: [_, _]}} = Symbiont.Host.info(prefix <> "#1")

    assert {:ok, ^w3} = Manifest.spawn_agent(spec.(w3), m)
    await_start(w3)
    assert {:ok, %{agents: [%{id: ^w3}]}} = Symbiont.Host.info(prefix <> "#2")

    assert {:error, %Symbiont.Error{reason: :conflict, message: "agent " <> _}} =
             Manifest.spawn_agent(spec.(w3), m)

    capture_log(fn ->
      :ok = Manifest.retire(w1, m)
      assert %{"reason" => "removed from the manifest"} = await_health(w1, "retired")
      assert wait_until(fn -> Server.whereis(w1) == nil end)
    end)

    assert Enum.map(Manifest.agents(m), & &1.name) == Enum.sort([w2, w3])
    # Retired for good: the reconciler does not bring it back.
    assert %{started: []} = Manifest.reconcile(m)
  end

  test "reload applies only what changed, after validating all of it", %{prefix: prefix} do
    [a, b, c] = for p <- ~w(rla rlb rlc), do: unique_name(p)
    for id <- [a, a <> "#2", b, c], do: attach_host_events(id)
    wasm = fn name, extra -> [name: name, wasm: @counter, topics: ["reload.#{name}"]] ++ extra end

    m = start_manifest!([wasm.(a, []), wasm.(b, [])], opts(prefix))

    await_start(a)
    await_start(b)

    assert {:error, %Symbiont.Error{reason: :invalid, message: message}} =
             Manifest.reload([wasm.(a, replicas: 0)], m)

    assert message =~ ~s(agent "#{a}": expected :replicas to be a positive integer, got: 0)
    assert Server.whereis(b)

    capture_log(fn ->
      assert {:ok, changes} = Manifest.reload([wasm.(a, replicas: 2), wasm.(c, [])], m)
      assert changes == %{started: [c], retired: [b], rescaled: [a], upgraded: []}
      await_start(a <> "#2")
      await_start(c)
      assert wait_until(fn -> Server.whereis(b) == nil end)
    end)
  end
end

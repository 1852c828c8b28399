defmodule Symbiont.OrphanTest do
  # No host outlives its BEAM: kill -9 a node that runs hosts (idle, blocked in a sleep,
  # stuck in native code holding the GIL) and every one of their OS processes is gone
  # within 2 s. EOF on fd 3 covers the first two; PR_SET_PDEATHSIG covers the third.
  # And no child of a host outlives the host: each host leads a process group of its own,
  # which its owner kills once the host is gone.
  use ExUnit.Case, async: true

  import ExUnit.CaptureLog
  import Symbiont.HostHelpers

  test "children a handler forked or spawned die with their host: killed, or stopped" do
    out = unique_name("parent.out")
    :ok = Symbiont.subscribe(out)

    %{name: py, pid: pid, os_pid: os_pid} =
      start_agent_host!("parent", python: "sample_agents:Parent", config: %{"out" => out})

    children = breed(out)
    assert Enum.all?(children, &os_alive?/1)

    capture_log(fn ->
      Symbiont.Host.Reaper.kill(os_pid)
      assert_receive {:host_crash, ^py, %{status: 137}}, 5_000
    end)

    assert wait_until(fn -> not Enum.any?(children, &os_alive?/1) end, 5_000),
           "still alive after their host was killed: #{inspect(Enum.filter(children, &os_alive?/1))}"

    assert_receive {:agent_start, ^py, %{restarts: 1}}, 10_000
    children = breed(out)
    assert Enum.all?(children, &os_alive?/1)
    :ok = GenServer.stop(pid)

    assert wait_until(fn -> not Enum.any?(children, &os_alive?/1) end, 5_000),
           "still alive after their host was stopped: #{inspect(Enum.filter(children, &os_alive?/1))}"
  end

  defp breed(out) do
    :ok = Symbiont.publish("parent.in", nil)
    assert_receive %Symbiont.Event{topic: ^out} = event, 10_000
    %{"forked" => forked, "spawned" => spawned} = Symbiont.Event.decode!(event)
    [forked, spawned]
  end

  # Starts a node of its own (`mix test --exclude clustered` skips it).
  @tag :clustered
  @tag timeout: 60_000
  test "kill -9 of a BEAM node running hosts leaves no Python process behind" do
    args = Enum.flat_map(:code.get_path(), &[~c"-pa", &1])
    {:ok, peer, _node} = :peer.start(%{connection: :standard_io, args: args})
    # Killed below, so the peer may already be gone by the time this runs.
    on_exit(fn -> Symbiont.Cluster.stop_peer(peer) end)

    {:ok, _} = :peer.call(peer, Application, :ensure_all_started, [:symbiont])
    {:ok, python} = Symbiont.Config.python_executable()
    beam_pid = :peer.call(peer, System, :pid, []) |> String.to_integer()

    os_pids =
      for {name, setup} <- [idle: nil, sleeping: "sleep", stuck: "spin_native"] do
        opts = [name: "#{name}", python: python, python_path: [fixtures()]]
        {:ok, _} = :peer.call(peer, Symbiont.Python, :start, [opts])

        {:ok, os_pid} =
          :peer.call(peer, Symbiont.Python, :call, ["#{name}", "hostile", "os_pid", []], 15_000)

        case setup do
          nil ->
            :ok

          "sleep" ->
            :ok = :peer.call(peer, Symbiont.Python, :cast, ["#{name}", "hostile", "sleep", [60]])

          fun ->
            :ok = :peer.call(peer, Symbiont.Python, :cast, ["#{name}", "hostile", fun, []])
        end

        os_pid
      end

    # Each host is busy with its cast: a call cannot get through.
    for name <- ~w(sleeping stuck) do
      assert {:error, :timeout} =
               :peer.call(peer, Symbiont.Python, :call, [
                 name,
                 "hostile",
                 "echo",
                 [1],
                 [timeout: 200]
               ])
    end

    assert Enum.all?(os_pids, &os_alive?/1)
    Symbiont.Host.Reaper.kill(beam_pid)
    assert wait_until(fn -> not os_alive?(beam_pid) end, 5_000)

    assert wait_until(fn -> not Enum.any?(os_pids, &os_alive?/1) end, 5_000),
           "still alive after 5 s: #{inspect(Enum.filter(os_pids, &os_alive?/1))}"
  end
end

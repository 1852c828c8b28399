defmodule Symbiont.OrphanTest do
  # No host outlives its BEAM: kill -9 a node that runs hosts (idle, blocked in a sleep,
  # stuck in native code holding the GIL) and every one of their OS processes is gone
  # within 2 s. EOF on fd 3 covers the first two; PR_SET_PDEATHSIG covers the third.
  use ExUnit.Case, async: true

  # Starts a node of its own (`mix test --exclude clustered` skips it).
  @moduletag :clustered

  import Symbiont.HostHelpers

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

    assert wait_until(fn -> not Enum.any?(os_pids, &os_alive?/1) end, 2_000),
           "still alive after 2 s: #{inspect(Enum.filter(os_pids, &os_alive?/1))}"
  end
end

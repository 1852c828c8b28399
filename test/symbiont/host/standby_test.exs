defmodule Symbiont.Host.StandbyTest do
  # A host that restarts takes a warm standby process from Symbiont.Host.Standby, started
  # like it would be started itself, and serves again with its agent's state. Not async:
  # these tests look at the pool, which every host of the node shares.
  use ExUnit.Case, async: false

  import Symbiont.HostHelpers

  setup do
    # The crashes these tests cause are expected; keep their logs out of the output.
    Logger.put_module_level(Symbiont.Host, :critical)
    on_exit(fn -> Logger.delete_module_level(Symbiont.Host) end)
  end

  alias Symbiont.Event

  test "a host killed with -9 comes back in a warm standby process, with its agent's state" do
    out = unique_name("standby.out")
    :ok = Symbiont.subscribe(out)

    %{name: name, os_pid: os_pid} =
      start_agent_host!("standby", python: "sample_agents:Counter", config: %{"out" => out})

    :ok = Symbiont.publish("count.in", 1)
    assert_receive %Event{topic: ^out}, 5_000
    assert wait_until(fn -> match?({:ok, %{handled: 1}}, Symbiont.Agent.Server.info(name)) end)

    # The pool learnt this host's launch when it started, and its agent's module when the
    # agent attached: its standby imports sample_agents ahead.
    assert wait_until(
             fn -> Enum.any?(standby_os_pids(), &preloads?(&1, "sample_agents")) end,
             5_000
           )

    Symbiont.Host.Reaper.kill(os_pid)
    assert_receive {:host_start, ^name, %{restarts: 1, standby: true, os_pid: new_os_pid}}, 10_000
    assert new_os_pid != os_pid
    assert preloads?(new_os_pid, "sample_agents")

    :ok = Symbiont.publish("count.in", 2)
    assert_receive %Event{topic: ^out} = event, 5_000
    assert Event.decode!(event) == %{"n" => 2, "got" => 2}
  end

  test "a standby that dies while it waits is replaced, and never handed out" do
    %{name: name} = start_host!()
    assert wait_until(fn -> standby_os_pids() != [] end, 5_000)
    [os_pid | _] = standby_os_pids()
    # Old enough that the pool replaces it instead of pausing its launch key.
    assert wait_until(fn -> standby_age_ms(os_pid) > 1_000 end, 5_000, 100)
    Symbiont.Host.Reaper.kill(os_pid)

    assert wait_until(
             fn -> standby_os_pids() != [] and os_pid not in standby_os_pids() end,
             5_000
           )

    :ok = Symbiont.Host.restart(name, "test")
    assert_receive {:host_start, ^name, %{restarts: 1, standby: true, os_pid: new}}, 10_000
    assert new != os_pid
  end

  defp standby_os_pids do
    %{ready: ready} = :sys.get_state(Symbiont.Host.Standby)

    for {_key, standbys} <- ready,
        {port, _} <- standbys,
        {:os_pid, p} <- [Port.info(port, :os_pid)],
        do: p
  end

  defp preloads?(os_pid, module) do
    case File.read("/proc/#{os_pid}/environ") do
      {:ok, environ} ->
        environ
        |> String.split(<<0>>)
        |> Enum.any?(&(&1 =~ ~r/\ASYMBIONT_PRELOAD=(.*,)?#{module}(,|\z)/))

      {:error, _} ->
        false
    end
  end

  defp standby_age_ms(os_pid) do
    %{ready: ready} = :sys.get_state(Symbiont.Host.Standby)
    now = System.monotonic_time(:millisecond)

    Enum.find_value(ready, 0, fn {_key, standbys} ->
      Enum.find_value(standbys, fn {port, at} ->
        if Port.info(port, :os_pid) == {:os_pid, os_pid}, do: now - at
      end)
    end)
  end
end

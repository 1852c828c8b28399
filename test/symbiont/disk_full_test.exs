defmodule Symbiont.DiskFullTest do
  # A durable agent on a real full disk: its node runs with the data directory on a 1 MB
  # tmpfs mounted for the test (root only: test_helper.exs excludes the :tmpfs tag, and
  # says why, where a tmpfs cannot be mounted). The disk is filled while the agent takes
  # events, then freed, then the node is stopped and started again: every event the agent
  # accepted is handled exactly once, and every event it refused was refused out loud.
  use ExUnit.Case, async: true

  import Symbiont.Cluster
  import Symbiont.Disk
  import Symbiont.HostHelpers

  alias Symbiont.Agent.Server

  @moduletag :tmpfs
  @moduletag :clustered
  @moduletag :tmp_dir
  @moduletag timeout: 120_000

  setup_all do
    # The peer stops in this test; the mesh's warning about it is expected here.
    Logger.put_module_level(Symbiont.Mesh.Server, :error)
    :ok
  end

  setup %{tmp_dir: tmp}, do: %{disk: mount_tmpfs!(Path.join(tmp, "disk"), "1m")}

  # A peer with the data directory on `disk`, running a durable agent that stops at a
  # gate after 10 events. One in flight at a time: the host acks each event before it
  # gets the next, so what the agent has handled is exact at the gate.
  defp start_gated!(disk, tmp) do
    topic = "disk.#{System.unique_integer([:positive])}"
    agent = unique_name("disk")
    gate = Path.join(tmp, "gate")

    spec = [
      name: agent,
      python: "sample_agents:Gated",
      durable: true,
      max_in_flight: 1,
      config: %{"in" => topic, "gate" => gate, "pause_after" => 10}
    ]

    env = [agents: [spec], python_path: [fixtures()], data_dir: disk]
    name = peer_name("disk")
    {peer, node} = start_node!(name, env)
    %{topic: topic, agent: agent, gate: gate, env: env, name: name, peer: peer, node: node}
  end

  # A peer running Symbiont on the disk; the errors and warnings it logs about its journal
  # are the expected ones here.
  defp start_node!(name, env) do
    {peer, node} = start_peer!("disk", name: name, env: env)
    modules = [Symbiont.Agent.Server, Symbiont.Journal]
    :ok = :erpc.call(node, :logger, :set_module_level, [modules, :critical])
    {peer, node}
  end

  test "a full disk: the agent refuses what it cannot journal, serves what it has, recovers when space comes back, and a restart handles every accepted event once",
       %{disk: disk, tmp_dir: tmp} do
    %{topic: topic, agent: agent, gate: gate, env: env, name: name, peer: peer, node: node} =
      start_gated!(disk, tmp)

    :ok = Symbiont.subscribe("symbiont.dead_letter")
    :ok = Symbiont.subscribe("symbiont.health")
    info = fn -> :erpc.call(node, Server, :info, [agent]) end
    publish = fn i, opts -> :erpc.call(node, Symbiont, :publish, [topic, i, opts]) end
    counted? = fn n -> match?({:ok, %{queue: 0, in_flight: 0, state: %{"n" => ^n}}}, info.()) end
    assert wait_until(fn -> match?({:ok, %{status: :ready}}, info.()) end, 10_000)

    # Before the fill: 20 accepted (on disk: info commits first); the agent handles 10 and
    # waits at its gate with the next in flight.
    for i <- 1..20, do: assert(:ok = publish.(i, checked: true))

    assert wait_until(
             fn -> match?({:ok, %{state: %{"n" => 10}, journal: %{accepted: 20}}}, info.()) end,
             10_000
           )

    # The disk fills up (the journal may still have room in its last page).
    filler = Path.join(disk, "filler")
    fill!(filler)

    # Checked publishes go on until the journal cannot take one: each `:ok` before that
    # was accepted.
    {accepted, refused} =
      Enum.reduce_while(21..5_000, {Enum.to_list(20..1//-1), nil}, fn i, {ok, nil} ->
        case publish.(i, checked: true) do
          :ok -> {:cont, {[i | ok], nil}}
          {:error, :journal_unavailable} -> {:halt, {ok, i}}
        end
      end)

    assert refused, "the journal never ran out of room"
    accepted = Enum.reverse(accepted)

    # Refused from now on, checked or not; nothing crashes.
    for i <- (refused + 1)..(refused + 10),
        do: assert({:error, :journal_unavailable} = publish.(i, checked: true))

    unchecked = (refused + 11)..(refused + 15)
    for i <- unchecked, do: assert(:ok = publish.(i, []))

    for i <- unchecked do
      assert_receive %Symbiont.Event{topic: "symbiont.dead_letter", from: ^agent} = e, 5_000

      assert %{"agent" => ^agent, "reason" => "journal_unavailable", "payload" => payload} =
               Symbiont.Event.decode!(e)

      assert Symbiont.MsgPack.decode!(payload) == i
    end

    failing = await_health(agent, "failing")
    assert failing["reason"] =~ "enospc"
    assert failing["reason"] =~ disk
    assert {:ok, %{health: "failing", pid: pid, journal: %{error: error}}} = info.()
    assert error =~ "enospc"

    # What it had on disk it still serves meanwhile: the gate opens, the 20 get handled.
    File.write!(gate, "open")

    assert wait_until(
             fn ->
               match?(
                 {:ok, %{state: %{"n" => n}, journal: %{error: e}}} when n >= 20 and e != nil,
                 info.()
               )
             end,
             10_000
           )

    # Space comes back: the agent recovers by itself, handles the rest, and accepts again.
    File.rm!(filler)
    await_health(agent, "healthy", 15_000)
    assert {:ok, %{pid: ^pid, journal: %{error: nil}}} = info.()
    more = (refused + 16)..(refused + 25)
    for i <- more, do: assert(:ok = publish.(i, checked: true))
    accepted = accepted ++ Enum.to_list(more)
    assert wait_until(fn -> counted?.(length(accepted)) end, 10_000)

    # The node stops (halted, as a crash would) and starts again on the same disk.
    stop_peer(peer)
    {_peer, ^node} = start_node!(name, env)
    assert wait_until(fn -> match?({:ok, %{status: :ready}}, info.()) end, 10_000)
    assert {:ok, %{state: %{"seen" => seen}, journal: %{pending: 0}}} = info.()
    assert seen == accepted

    # And it takes events as before.
    assert :ok = publish.(-1, checked: true)
    assert wait_until(fn -> counted?.(length(accepted) + 1) end, 10_000)
  end

  test "a node halted while its disk is full starts again on the full disk: nothing on disk is lost, nothing counted twice",
       %{disk: disk, tmp_dir: tmp} do
    %{topic: topic, agent: agent, gate: gate, env: env, name: name, peer: peer, node: node} =
      start_gated!(disk, tmp)

    info = fn -> :erpc.call(node, Server, :info, [agent]) end
    publish = fn i -> :erpc.call(node, Symbiont, :publish, [topic, i, [checked: true]]) end
    assert wait_until(fn -> match?({:ok, %{status: :ready}}, info.()) end, 10_000)

    for i <- 1..20, do: assert(:ok = publish.(i))

    assert wait_until(
             fn -> match?({:ok, %{state: %{"n" => 10}, journal: %{accepted: 20}}}, info.()) end,
             10_000
           )

    filler = Path.join(disk, "filler")
    fill!(filler)

    accepted =
      Enum.reduce_while(21..5_000, Enum.to_list(20..1//-1), fn i, ok ->
        case publish.(i) do
          :ok -> {:cont, [i | ok]}
          {:error, :journal_unavailable} -> {:halt, Enum.reverse(ok)}
        end
      end)

    # Halted with its journal unavailable (the events it held in memory go with it), and
    # started again while the disk is still full: it opens its journal (cut back to its
    # last whole record if a write was torn) and resumes.
    stop_peer(peer)
    {_peer, ^node} = start_node!(name, env)
    assert wait_until(fn -> match?({:ok, %{status: :ready}}, info.()) end, 10_000)
    {:ok, %{pid: pid, journal: %{pending: pending}}} = info.()
    assert pending >= 10

    # Space comes back and the gate opens: everything that was on disk is handled once.
    File.rm!(filler)
    File.write!(gate, "open")

    assert wait_until(
             fn ->
               match?(
                 {:ok, %{queue: 0, in_flight: 0, journal: %{error: nil, pending: 0}}},
                 info.()
               )
             end,
             15_000
           )

    assert {:ok, %{pid: ^pid, state: %{"seen" => seen}}} = info.()
    assert seen == Enum.uniq(seen)
    # The 20 accepted before the disk filled, and those after it that reached the disk.
    assert Enum.take(seen, 20) == Enum.to_list(1..20)
    assert seen == Enum.take(accepted, length(seen))
  end
end

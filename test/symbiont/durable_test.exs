defmodule Symbiont.DurableTest do
  # Durable agents (spec `durable: true`) on real Python hosts: what they accepted
  # survives the death of their owner and of their whole node. The agent
  # (test_agents:Gated) handles `pause_after` events, then waits at a gate (a file) with
  # the next one in flight and the rest queued: the test kills what it kills right there,
  # opens the gate and checks the count. `max_in_flight: 1` makes the host ack each event
  # before it gets the next, so "handled" is exact at the gate.
  use ExUnit.Case, async: true

  import Symbiont.HostHelpers

  alias Symbiont.Agent.Server
  alias Symbiont.Journal

  @moduletag :tmp_dir
  @moduletag timeout: 60_000

  @n 40

  setup_all do
    # A peer stops in one of these tests; the mesh's warning about it is expected here.
    Logger.put_module_level(Symbiont.Mesh.Server, :error)
    :ok
  end

  @pause_after 10

  defp gated(topic, gate, extra \\ []) do
    {out, extra} = Keyword.pop(extra, :config_out)
    config = %{"in" => topic, "gate" => gate, "pause_after" => @pause_after}

    [
      python: "test_agents:Gated",
      durable: true,
      max_in_flight: 1,
      config: if(out, do: Map.put(config, "out", out), else: config)
    ] ++ extra
  end

  defp topic, do: "durable.#{System.unique_integer([:positive])}"

  # Waits until the agent has acked `@pause_after` events and its journal holds all @n.
  defp at_the_gate?(info_fun) do
    wait_until(
      fn ->
        match?(
          {:ok,
           %{handled: @pause_after, in_flight: 1, journal: %{accepted: @n, pending: pending}}}
          when pending == @n - @pause_after,
          info_fun.()
        )
      end,
      10_000
    )
  end

  defp all_counted?(info_fun) do
    wait_until(
      fn ->
        match?({:ok, %{queue: 0, in_flight: 0, state: %{"n" => @n}}}, info_fun.())
      end,
      20_000
    )
  end

  test "a killed owner restarts from the journal: nothing lost, nothing counted twice",
       %{tmp_dir: dir} do
    topic = topic()
    gate = Path.join(dir, "gate")
    %{name: name} = start_app_agent!("durable", gated(topic, gate))
    {:ok, %{journal: %{path: path}}} = Server.info(name)
    assert path == Journal.path(name, false)

    for i <- 1..@n, do: :ok = Symbiont.publish(topic, i)
    assert at_the_gate?(fn -> Server.info(name) end)

    # Its owner dies: the queue and the checkpoint in its memory go with it.
    pid = Server.whereis(name)
    kill!(pid)
    File.write!(gate, "open")

    # The supervisor starts it again; it resumes from the journal.
    assert all_counted?(fn -> Server.info(name) end)
    {:ok, info} = Server.info(name)
    assert info.pid != pid
    assert info.state["seen"] == Enum.to_list(1..@n)
    assert %{pending: 0, accepted: accepted} = info.journal
    assert accepted == 0
  end

  test "restored from its journal, an agent publishes with the ids it had: same incarnation, same seqs",
       %{tmp_dir: dir} do
    topic = topic()
    out = unique_name("durable.out")
    :ok = Symbiont.subscribe(out)
    gate = Path.join(dir, "gate")
    %{name: name} = start_app_agent!("durable-ids", gated(topic, gate, config_out: out))

    for i <- 1..@n, do: :ok = Symbiont.publish(topic, i)
    assert at_the_gate?(fn -> Server.info(name) end)
    pid = Server.whereis(name)
    kill!(pid)
    File.write!(gate, "open")

    # Event i is the agent's seq i (PROTOCOL.md §8.1), before the kill and after it.
    ids =
      for _ <- 1..@n do
        assert_receive %Symbiont.Event{topic: ^out, id: {^name, incarnation, seq, 0}} = e, 10_000
        assert Symbiont.Event.decode!(e) == seq
        incarnation
      end

    assert [_] = Enum.uniq(ids)
  end

  test "a durable dedupe agent keeps the ids it accepted: copies are dropped after it restarts from its journal",
       %{tmp_dir: dir} do
    topic = topic()
    gate = Path.join(dir, "gate")
    %{name: name} = start_app_agent!("durable-dedupe", gated(topic, gate, dedupe: true))
    publish = fn i -> :ok = Symbiont.publish(topic, i, id: {"importer", 1, i, 0}) end

    for i <- 1..@n, do: publish.(i)
    assert at_the_gate?(fn -> Server.info(name) end)
    # Accepted after the last checkpoint (the agent waits at the gate): in the journal,
    # not in the dedupe memory of its checkpoint.
    for i <- (@n + 1)..(@n + 5), do: publish.(i)
    accepted = @n + 5

    assert wait_until(fn ->
             match?({:ok, %{journal: %{accepted: ^accepted}}}, Server.info(name))
           end)

    pid = Server.whereis(name)
    kill!(pid)
    File.write!(gate, "open")

    counted? = fn n ->
      wait_until(
        fn ->
          match?({:ok, %{queue: 0, in_flight: 0, state: %{"n" => ^n}}}, Server.info(name))
        end,
        20_000
      )
    end

    assert counted?.(@n + 5)
    # Copies of an event acked before the kill and of one restored from the journal.
    for i <- [5, @n + 3, @n + 6], do: publish.(i)
    assert counted?.(@n + 6)
    assert {:ok, %{state: %{"seen" => seen}, duplicates: 2}} = Server.info(name)
    assert seen == Enum.to_list(1..(@n + 6))
  end

  test "an agent that is not durable has no journal" do
    %{name: name} = start_app_agent!("plain", python: "test_agents:Counter")
    assert {:ok, %{journal: nil}} = Server.info(name)
    refute File.exists?(Journal.path(name, false))
  end

  test "an agent retired for good leaves no journal behind", %{tmp_dir: dir} do
    topic = topic()
    %{name: name} = start_app_agent!("retired", gated(topic, Path.join(dir, "gate")))
    path = Journal.path(name, false)
    assert File.regular?(path)
    assert :ok = Server.retire(name, nil)
    refute File.exists?(path)
  end

  @tag :clustered
  test "stopping and restarting a :peer node mid-stream loses nothing it accepted",
       %{tmp_dir: dir} do
    import Symbiont.Cluster

    topic = topic()
    gate = Path.join(dir, "gate")
    agent = unique_name("durable")
    spec = [name: agent] ++ gated(topic, gate)
    env = [agents: [spec], python_path: [fixtures()]]
    name = peer_name("durable")

    {peer, node} = start_peer!("durable", name: name, env: env)
    info = fn -> :erpc.call(node, Server, :info, [agent]) end
    # Published from here, it must find the agent's group on the peer.
    assert wait_until(fn -> Symbiont.Mesh.members(Symbiont.Mesh, topic, agent) != [] end, 10_000)

    for i <- 1..@n, do: :ok = Symbiont.publish(topic, i)
    assert at_the_gate?(info)

    stop_peer(peer)
    File.write!(gate, "open")

    # The same node, the same data directory: the manifest starts the agent again, from
    # its journal.
    {_peer, ^node} = start_peer!("durable", name: name, env: env)
    assert all_counted?(info)
    {:ok, restarted} = info.()
    assert restarted.state["seen"] == Enum.to_list(1..@n)
    assert restarted.handled == @n - @pause_after
    assert restarted.journal.pending == 0
  end
end

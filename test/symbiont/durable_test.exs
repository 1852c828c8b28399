defmodule Symbiont.DurableTest do
  # Durable agents (spec `durable: true`) on real Python hosts: what they accepted
  # survives the death of their owner and of their whole node. The agent
  # (sample_agents:Gated) handles `pause_after` events, then waits at a gate (a file) with
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
      python: "sample_agents:Gated",
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

  @tag :capture_log
  test "a journal removed under a running agent is written anew from memory: nothing accepted is lost",
       %{tmp_dir: dir} do
    topic = topic()
    gate = Path.join(dir, "gate")
    :ok = Symbiont.subscribe("symbiont.health")
    %{name: name} = start_app_agent!("durable-rm", gated(topic, gate))
    {:ok, %{journal: %{path: path}, pid: pid}} = Server.info(name)

    for i <- 1..@n, do: :ok = Symbiont.publish(topic, i)
    assert at_the_gate?(fn -> Server.info(name) end)

    # Its next commit (the next ack) finds the file gone: the agent says so, and writes
    # the journal anew from what it holds.
    File.rm!(path)
    File.write!(gate, "open")
    failing = await_health(name, "failing")
    assert failing["reason"] == "the journal #{path} was removed or replaced while it was open"
    await_health(name, "healthy")
    assert all_counted?(fn -> Server.info(name) end)
    assert {:ok, %{pid: ^pid, journal: %{error: nil}}} = Server.info(name)

    # The journal on disk is whole: a restart from it finds the state and nothing pending.
    kill!(pid)

    assert wait_until(fn ->
             match?({:ok, %{pid: p, status: :ready}} when p != pid, Server.info(name))
           end)

    {:ok, info} = Server.info(name)
    assert info.state["seen"] == Enum.to_list(1..@n)
    assert info.journal.pending == 0
  end

  # A journal of three events for agent `name`, with a byte of its first record's term
  # flipped (the file's header is 16 bytes, a record's 12), and the agent started on it.
  defp start_on_corrupt_journal!(name, topic, dir) do
    path = Journal.path(name, false)
    {:ok, j, _} = Journal.open(path)

    j =
      Enum.reduce(1..3, j, fn i, j ->
        {_e, j} = Journal.accept(j, %{Symbiont.Event.new!(topic, i) | seq: i})
        {:ok, j} = Journal.commit(j, fn -> [] end)
        j
      end)

    :ok = Journal.close(j)
    <<head::binary-size(40), byte, rest::binary>> = File.read!(path)
    File.write!(path, <<head::binary, Bitwise.bxor(byte, 0xFF), rest::binary>>)

    attach_host_events(name)
    host = {Symbiont.Host, name: name, python_path: [fixtures()]}
    {:ok, _} = DynamicSupervisor.start_child(Symbiont.Hosts, host)
    on_exit(fn -> Symbiont.Host.stop(name) end)
    spec = [host: name, id: name, name: name] ++ gated(topic, Path.join(dir, "gate"))
    {:ok, pid} = DynamicSupervisor.start_child(Symbiont.Agents, {Server, spec})
    {pid, path}
  end

  @tag :capture_log
  test "a journal corrupt in its middle: the agent stays up without its state, says where, refuses events, and starts once the file is moved away",
       %{tmp_dir: dir} do
    topic = topic()
    name = unique_name("durable-corrupt")
    :ok = Symbiont.subscribe("symbiont.health")
    :ok = Symbiont.subscribe("symbiont.dead_letter")
    {pid, path} = start_on_corrupt_journal!(name, topic, dir)

    failing = await_health(name, "failing")
    assert failing["reason"] =~ "the journal #{path} is corrupt at byte 16"
    assert {:ok, %{status: :detached, journal: %{error: error}}} = Server.info(name)
    assert error == failing["reason"]
    refute_received {:agent_start, ^name, _}

    # What reaches it meanwhile goes to the dead letters.
    send(pid, Symbiont.Event.new!(topic, "meanwhile"))
    assert_receive %Symbiont.Event{topic: "symbiont.dead_letter", from: ^name} = e

    assert %{"reason" => "journal_unavailable", "error" => %{"message" => ^error}} =
             Symbiont.Event.decode!(e)

    # Moved away, the journal starts afresh at the next try: the same server, attached.
    File.rename!(path, path <> ".corrupt")
    assert_receive {:agent_start, ^name, _}, 10_000
    await_health(name, "healthy")
    assert {:ok, %{pid: ^pid, restarts: 0}} = Server.info(name)
    :ok = Symbiont.publish(topic, 1)
    assert wait_until(fn -> match?({:ok, %{state: %{"n" => 1}}}, Server.info(name)) end)
  end

  @tag :capture_log
  test "an agent retired while it cannot open its journal leaves the file for whoever looks into it",
       %{tmp_dir: dir} do
    :ok = Symbiont.subscribe("symbiont.health")
    name = unique_name("durable-corrupt")
    {_pid, path} = start_on_corrupt_journal!(name, topic(), dir)
    await_health(name, "failing")
    corrupt = File.read!(path)
    assert :ok = Server.retire(name, nil)
    assert File.read!(path) == corrupt
  end

  test "an agent that is not durable has no journal" do
    %{name: name} = start_app_agent!("plain", python: "sample_agents:Counter")
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

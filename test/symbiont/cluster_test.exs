defmodule Symbiont.ClusterTest do
  # The mesh across real nodes: :peer nodes on this machine, each running Symbiont, with
  # the test node connected to them.
  use ExUnit.Case, async: true

  import Symbiont.Cluster
  import Symbiont.HostHelpers, only: [wait_until: 2, fixtures: 0]

  alias Symbiont.Mesh

  @moduletag :clustered
  @moduletag timeout: 60_000

  setup_all do
    # Peers stop at the end of each test; the warning each time is expected here.
    Logger.put_module_level(Symbiont.Mesh.Server, :error)
    :ok
  end

  setup do
    ensure_distributed!()
    {_, a} = start_peer!("mesh_a")
    {_, b} = start_peer!("mesh_b")
    # The meshes learn of each other through :pg as the nodes connect (slowly on a loaded
    # machine, while other tests' peers come and go: those may be members too).
    nodes = MapSet.new([node(), a, b])

    assert wait_until(
             fn -> Enum.all?(nodes, &MapSet.subset?(nodes, forwarder_nodes(&1))) end,
             20_000
           )

    {:ok, a: a, b: b, topic: "cluster:#{System.unique_integer([:positive])}"}
  end

  test "plain subscribers on every node get each broadcast once", %{a: a, b: b, topic: topic} do
    for node <- [a, b], do: forwarder(node, topic, [], self(), :plain)
    :ok = Mesh.subscribe(Mesh, topic)

    :ok = :erpc.call(a, Mesh, :broadcast, [Mesh, topic, :from_a])
    assert_receive :from_a
    assert_receive {:got, :plain, ^a, :from_a}
    assert_receive {:got, :plain, ^b, :from_a}

    :ok = Mesh.direct_broadcast(b, Mesh, topic, :only_b)
    assert_receive {:got, :plain, ^b, :only_b}
    refute_receive {:got, :plain, ^a, :only_b}, 100
    refute_received :only_b

    :ok = :erpc.call(a, Mesh, :local_broadcast, [Mesh, topic, :local_a])
    assert_receive {:got, :plain, ^a, :local_a}
    refute_receive {:got, :plain, ^b, :local_a}, 100
    refute_received :local_a
  end

  test "a checked publish reserves room on its own node only, and each copy says so",
       %{a: a, b: b, topic: topic} do
    forwarder(a, topic, [load: 10], self(), :on_a)
    forwarder(b, topic, [load: 10], self(), :on_b)
    event = Symbiont.Event.new!(topic, 1)

    :ok = :erpc.call(a, Mesh, :publish, [Mesh, event, [checked: true]])

    assert_receive {:got, :on_a, ^a, %Symbiont.Event{reserved: true}}, 5_000
    # On b no room was reserved: its copy says so, whatever a's reservations were.
    assert_receive {:got, :on_b, ^b, %Symbiont.Event{reserved: false}}, 5_000
  end

  test "a queue group spans nodes: each message reaches exactly one member", %{
    a: a,
    b: b,
    topic: topic
  } do
    members =
      for {node, tag} <- [{a, :a1}, {a, :a2}, {b, :b1}, {node(), :local}],
          do: forwarder(node, topic, [group: "workers"], self(), tag)

    assert wait_until(
             fn -> length(:erpc.call(b, Mesh, :members, [Mesh, topic, "workers"])) == 4 end,
             5_000
           )

    for i <- 1..40, do: :ok = :erpc.call(b, Mesh, :broadcast, [Mesh, topic, i])

    got = for _ <- 1..40, do: assert_receive({:got, _tag, _node, i} when is_integer(i), 5_000)
    refute_receive {:got, _, _, _}, 100

    assert got |> Enum.map(&elem(&1, 3)) |> Enum.sort() == Enum.to_list(1..40)
    # Round robin over the four members, wherever they run.
    assert got |> Enum.frequencies_by(&elem(&1, 1)) == %{a1: 10, a2: 10, b1: 10, local: 10}
    assert length(members) == 4
  end

  test "a node that joins later finds the groups already in the cluster", %{topic: topic} do
    :ok = Mesh.subscribe(Mesh, topic, group: "early")
    {_, late} = start_peer!("mesh_late")

    assert wait_until(
             fn -> :erpc.call(late, Mesh, :members, [Mesh, topic, "early"]) == [self()] end,
             5_000
           )

    :ok = :erpc.call(late, Mesh, :broadcast, [Mesh, topic, :from_late])
    assert_receive :from_late, 2_000
  end

  test "Python agents on two nodes exchange events through the mesh", %{a: a, b: b} do
    out = "cluster.out.#{System.unique_integer([:positive])}"
    :ok = Mesh.subscribe(Mesh, out)
    {:ok, python} = Symbiont.Config.python_executable()

    start = fn node, name, class, config ->
      opts = [
        name: name,
        python: python,
        python_path: [fixtures()],
        agent: [name: name, python: "sample_agents:#{class}", config: config]
      ]

      {:ok, _} = :erpc.call(node, Symbiont.Python, :start, [opts])
    end

    start.(a, "relay", "Relay", %{})
    start.(b, "counter", "ClusterCounter", %{"out" => out})

    # Each publisher must see the group it publishes to.
    assert wait_until(
             fn ->
               Mesh.members(Mesh, "cluster.relay.in", "relay") != [] and
                 :erpc.call(a, Mesh, :members, [Mesh, "cluster.count.in", "counter"]) != []
             end,
             10_000
           )

    # The test node publishes, the relay on a passes it on, the counter on b counts.
    for i <- 1..20, do: :ok = Symbiont.publish("cluster.relay.in", i)

    for i <- 1..20 do
      assert_receive %Symbiont.Event{topic: ^out, from: "counter"} = event, 10_000
      assert Symbiont.Event.decode(event) == {:ok, %{"n" => i, "got" => i}}
    end
  end

  test "a node that goes away: its members are dropped and a health event is published",
       %{a: a, topic: topic} do
    peer_b = start_peer!("mesh_gone")
    {_, gone} = peer_b
    :ok = Mesh.subscribe(Mesh, "symbiont.health")
    forwarder(gone, topic, [group: "g"], self(), :gone)
    forwarder(a, topic, [group: "g"], self(), :stays)
    assert wait_until(fn -> length(Mesh.members(Mesh, topic, "g")) == 2 end, 5_000)

    assert wait_until(
             fn -> :erpc.call(a, Mesh, :members, [Mesh, topic, "g"]) |> length() == 2 end,
             5_000
           )

    stop_peer(elem(peer_b, 0))

    # Other tests publish health events too (agents that overload): wait for this one.
    gone_name = Atom.to_string(gone)

    assert %{"kind" => "failing", "reason" => reason} =
             Stream.repeatedly(fn ->
               receive do
                 %Symbiont.Event{topic: "symbiont.health"} = e -> Symbiont.Event.decode!(e)
               after
                 5_000 -> flunk("no health event for #{gone_name}")
               end
             end)
             |> Enum.find(&match?(%{"node" => ^gone_name, "agent" => nil}, &1))

    assert reason =~ "is down"
    # :pg drops the lost node's members as it sees the node down, not before the event.
    assert wait_until(fn -> match?([_], Mesh.members(Mesh, topic, "g")) end, 5_000)
    assert [member] = Mesh.members(Mesh, topic, "g")
    assert node(member) == a

    for i <- 1..5, do: :ok = Mesh.broadcast(Mesh, topic, i)
    for i <- 1..5, do: assert_receive({:got, :stays, ^a, ^i})
  end

  # The nodes whose meshes `node` knows through :pg.
  defp forwarder_nodes(node) do
    node
    |> :erpc.call(:pg, :get_members, [Symbiont.Mesh.Adapter.PG, :forwarders])
    |> MapSet.new(&Kernel.node/1)
  end
end

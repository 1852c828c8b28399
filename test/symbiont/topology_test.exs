defmodule Symbiont.TopologyTest do
  use ExUnit.Case, async: true

  import Symbiont.HostHelpers

  alias Symbiont.Topology

  doctest Topology
  doctest Symbiont.Topology.Draw

  @stats [
    %{
      node: :a@box,
      publishers: [
        %{publisher: "orders", topic: "orders.created", count: 3},
        %{publisher: "#PID<0.1.0>", topic: ~s(we"ird\\), count: 1}
      ],
      subscribers: [
        %{topic: "orders.created", subscriber: "billing", group: "billing", count: 3},
        %{topic: "orders.created", subscriber: "#PID<0.9.0>", group: nil, count: nil}
      ]
    },
    %{
      node: :b@box,
      publishers: [%{publisher: "orders", topic: "orders.created", count: 2}],
      subscribers: [%{topic: "orders.created", subscriber: "billing", group: "billing", count: 2}]
    }
  ]

  test "build merges the nodes, sorts, and counts plain subscribers by what was published" do
    assert %Topology{topics: [created, weird]} = Topology.build(@stats)
    assert created.topic == "orders.created"

    assert created.publishers == [
             %{name: "orders", node: :a@box, group: nil, count: 3},
             %{name: "orders", node: :b@box, group: nil, count: 2}
           ]

    assert created.subscribers == [
             %{name: "#PID<0.9.0>", node: :a@box, group: nil, count: 5},
             %{name: "billing", node: :a@box, group: "billing", count: 3},
             %{name: "billing", node: :b@box, group: "billing", count: 2}
           ]

    assert %{topic: ~s(we"ird\\), subscribers: []} = weird
    assert Topology.build([]) == %Topology{topics: []}
  end

  test "format lines up the columns" do
    assert Topology.format(Topology.build(@stats)) ==
             """
             orders.created
               published by  orders       a@box           3
               published by  orders       b@box           2
               delivered to  #PID<0.9.0>  a@box           5
               delivered to  billing      a@box  billing  3
               delivered to  billing      b@box  billing  2
             we"ird\\
               published by  #PID<0.1.0>  a@box           1\
             """

    assert Topology.format(Topology.build([])) =~ "no topics"
    assert inspect(Topology.build(@stats)) =~ "#Symbiont.Topology<\norders.created\n"
  end

  test "Mermaid and DOT escape every name" do
    topology = Topology.build(@stats)
    mermaid = Topology.to_mermaid(topology)
    assert mermaid =~ ~s|n4["#35;PID#lt;0.9.0#gt;<br/>a@box"]|
    assert mermaid =~ ~s|n8(["we#quot;ird\\"])|
    assert mermaid =~ ~s(  subgraph n3_g1["group billing"]\n    n5\n    n6\n  end)
    refute mermaid =~ ~s(we")

    dot = Topology.to_dot(topology)
    assert dot =~ ~s|"n8" [label="we\\"ird\\\\", shape=ellipse];|
    assert dot =~ ~s|"n4" [label="#PID<0.9.0>\\na@box", shape=box];|
    assert dot =~ ~s|"n3" -> "n4" [label="5"];|
    assert String.starts_with?(dot, "digraph symbiont {\n  rankdir=LR;\n")

    if dot_exe = System.find_executable("dot") do
      path = Path.join(System.tmp_dir!(), "topology-#{System.unique_integer([:positive])}.dot")
      File.write!(path, dot)
      assert {svg, 0} = System.cmd(dot_exe, ["-Tsvg", path], stderr_to_stdout: true)
      assert svg =~ "<svg"
    end
  end

  test "an agent that subscribes and publishes is one node of the graph" do
    topology =
      Topology.build([
        %{
          node: :a@box,
          publishers: [%{publisher: "billing", topic: "billing.charged", count: 2}],
          subscribers: [
            %{topic: "orders.created", subscriber: "billing", group: "billing", count: 2}
          ]
        }
      ])

    mermaid = Topology.to_mermaid(topology)
    assert length(Regex.scan(~r/\["billing<br\/>a@box"\]/, mermaid)) == 1
    assert mermaid =~ "n1 -- 2 --> n2"
    assert mermaid =~ "n3 -- 2 --> n1"
  end

  test "to_svg draws each endpoint and topic once, in columns from publishers to subscribers" do
    svg = Topology.to_svg(Topology.build(@stats))
    assert String.starts_with?(svg, "<svg ") and String.ends_with?(svg, "</svg>")
    # Names are escaped; nothing is loaded from elsewhere.
    assert svg =~ ~s(data-name="we&quot;ird\\")
    refute svg =~ ~r/href|<script/

    # The columns of a name's boxes (one per node it is on).
    xs = fn name ->
      for [_, x] <- Regex.scan(~r/data-name="#{Regex.escape(name)}">.*?<rect x="(\d+)"/, svg),
          do: String.to_integer(x)
    end

    assert xs.("orders") == [24, 24]
    assert [created] = xs.("orders.created")
    assert Enum.max(xs.("orders")) < created
    assert created < Enum.min(xs.("billing"))
    # a@box and b@box each publish and deliver: 3 + 3 arrows.
    assert length(Regex.scan(~r/<g class="edge">/, svg)) == 6
    assert svg =~ "group billing"
  end

  test "to_svg lays out a cycle too (an agent that consumes what it publishes)" do
    topology =
      Topology.build([
        %{
          node: :a@box,
          publishers: [%{publisher: "loop", topic: "t", count: 1}],
          subscribers: [%{topic: "t", subscriber: "loop", group: "loop", count: 1}]
        }
      ])

    svg = Topology.to_svg(topology)
    assert length(Regex.scan(~r/<g class="edge">/, svg)) == 2
    assert length(Regex.scan(~r/<g class="(endpoint|topic)"/, svg)) == 2
  end

  # One publisher on `n` topics, the i-th published i times, and a subscriber of each.
  defp wide(n, extra \\ %{}) do
    Map.merge(
      %{
        node: :a@box,
        publishers: for(i <- 1..n, do: %{publisher: "spray", topic: "t.#{i}", count: i}),
        subscribers:
          for(i <- 1..n, do: %{topic: "t.#{i}", subscriber: "sink", group: "sink", count: i})
      },
      extra
    )
  end

  test "busiest/2 keeps the busiest edges and counts what it cut" do
    topology = Topology.build([wide(10)])
    cut = Topology.busiest(topology, 5)
    # Ties go by topic: t.10 and t.9 keep both edges, t.8 its publisher's.
    assert Enum.map(cut.topics, & &1.topic) == ["t.10", "t.8", "t.9"]
    assert [%{publishers: [_], subscribers: []}] = Enum.filter(cut.topics, &(&1.topic == "t.8"))
    assert cut.omitted == %{edges: 15, events: 2 * Enum.sum(1..7) + 8}
    assert Topology.busiest(topology, 20) == topology
    assert Topology.busiest(topology, :infinity) == topology
  end

  test "5,000 topics: every rendering draws 100 edges at most, and says how many more" do
    topology = Topology.build([wide(5_000, %{evicted: %{edges: 7, events: 70}})])
    assert topology.evicted == %{edges: 7, events: 70}
    note = "+9900 more edges"

    svg = Topology.to_svg(topology)
    assert length(Regex.scan(~r/<g class="edge">/, svg)) == 100

    assert svg =~
             ~r/<text class="more"[^>]*>\+9900 more edges \(\d+ events\) not drawn; 7 least recently used counters evicted \(70 events\)<\/text>/

    assert byte_size(svg) < 100_000

    mermaid = Topology.to_mermaid(topology)
    assert mermaid =~ ~s(  more["#{note})
    assert length(Regex.scan(~r/ --> /, mermaid)) == 100
    assert byte_size(mermaid) < 20_000

    dot = Topology.to_dot(topology)
    assert dot =~ ~s(  "more" [label="#{note})
    assert length(Regex.scan(~r/ -> /, dot)) == 100
    assert byte_size(dot) < 30_000

    text = Topology.format(topology)
    assert String.ends_with?(text, "7 least recently used counters evicted (70 events)")
    assert text =~ note
    assert byte_size(text) < 20_000

    # All of it, when asked.
    assert length(Regex.scan(~r/ --> /, Topology.to_mermaid(topology, max_edges: :infinity))) ==
             10_000

    assert_raise ArgumentError,
                 ~r/expected :max_edges to be a positive integer or :infinity, got: 0/,
                 fn ->
                   Topology.to_svg(topology, max_edges: 0)
                 end
  end

  test "the drawings cut long names with …" do
    long = String.duplicate("é", 1_000)

    topology =
      Topology.build([
        %{node: :a@box, publishers: [%{publisher: long, topic: long, count: 1}], subscribers: []}
      ])

    cut = String.duplicate("é", 63) <> "…"

    for drawing <- [
          Topology.to_svg(topology),
          Topology.to_mermaid(topology),
          Topology.to_dot(topology)
        ] do
      assert drawing =~ cut
      refute drawing =~ String.duplicate("é", 64)
    end
  end

  @tag :tmp_dir
  test "write picks the format from the extension", %{tmp_dir: dir} do
    topology = Topology.build(@stats)
    assert :ok = Topology.write(topology, Path.join(dir, "t.mmd"))
    assert File.read!(Path.join(dir, "t.mmd")) == Topology.to_mermaid(topology) <> "\n"
    assert :ok = Topology.write(topology, Path.join(dir, "t.gv"))
    assert File.read!(Path.join(dir, "t.gv")) =~ "digraph"
    assert :ok = Topology.write(topology, Path.join(dir, "t.svg"))
    assert File.read!(Path.join(dir, "t.svg")) == Topology.to_svg(topology) <> "\n"

    assert {:error,
            %Symbiont.Error{
              reason: :invalid,
              message: "unsupported extension \".png\" (allowed: .mmd, .mermaid, .dot, .gv, .svg)"
            }} = Topology.write(topology, Path.join(dir, "t.png"))

    assert {:error, %Symbiont.Error{reason: :failed, message: "cannot write " <> _}} =
             Topology.write(topology, Path.join(dir, "no/such/t.dot"))
  end

  test "Symbiont.topology/0: an Elixir publisher, an agent and a plain subscriber" do
    topic = "topology.#{System.unique_integer([:positive])}"
    :ok = Symbiont.subscribe(topic)
    for i <- 1..3, do: :ok = Symbiont.publish(topic, i, from: "tester")
    for _ <- 1..3, do: assert_receive(%Symbiont.Event{topic: ^topic})

    %{topics: topics} = Symbiont.topology()
    assert %{publishers: [pub], subscribers: subs} = Enum.find(topics, &(&1.topic == topic))
    assert pub == %{name: "tester", node: node(), group: nil, count: 3}
    assert [%{name: me, node: node, group: nil, count: 3}] = subs
    assert me == inspect(self()) and node == node()
  end

  test "Symbiont.topology/0 counts what an agent handled" do
    out = unique_name("probe.out")
    name = unique_name("probe")

    start_host!(
      name: name,
      agent: [name: name, python: "sample_agents:Probe", config: %{"out" => out}]
    )

    :ok = Symbiont.subscribe(out)
    for i <- 1..4, do: :ok = Symbiont.publish("topology.in", i)
    for _ <- 1..4, do: assert_receive(%Symbiont.Event{topic: ^out}, 5_000)

    %{topics: topics} = Symbiont.topology()
    assert %{subscribers: subs} = Enum.find(topics, &(&1.topic == "topology.in"))
    assert %{name: ^name, group: ^name, count: 4} = Enum.find(subs, &(&1.name == name))
    assert %{publishers: [%{name: ^name, count: 4}]} = Enum.find(topics, &(&1.topic == out))
  end
end

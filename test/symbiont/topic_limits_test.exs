defmodule Symbiont.TopicLimitsTest do
  # What an agent publishing on ever new topics can grow: its topics are capped
  # (:max_topics, checked by the host and again by the owner), the node's topology
  # counters are bounded (least recently used evicted), and the drawings stay small.
  # Real agents in real hosts publish thousands of distinct topics.
  #
  # async: false: these tests fill the node's topology table up to its bound, which
  # evicts other tests' counters; sync tests run after every async one.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog
  import Symbiont.HostHelpers

  alias Symbiont.StatusPage
  alias Symbiont.StatusPage.JSON

  @wasm Path.expand("../../priv/wasm", __DIR__)
  @health "symbiont.health"
  # Bytes per counter row of the topology table, at most: the ETS row (key tuple,
  # count, time) with names of ~20 bytes, and the table's own overhead per row.
  @row_bytes 400

  setup do
    :ok = Symbiont.subscribe(@health)
    :ok
  end

  defp spray_agent!(opts \\ []) do
    name = unique_name("spray")
    [in_topic, out] = [unique_name("spray.in"), unique_name("spray.out")]
    :ok = Symbiont.subscribe(out)
    config = Map.merge(%{"in" => in_topic, "out" => out}, Map.new(Keyword.get(opts, :config, [])))

    agent =
      [name: name, python: "sample_agents:Spray", config: config] ++ Keyword.delete(opts, :config)

    start_host!(name: name, agent: agent)
    %{name: name, in: in_topic, out: out}
  end

  # Publishes {"n": n, "prefix": prefix} to the agent and returns what it says it did.
  defp spray(%{in: in_topic, out: out}, n, prefix, extra \\ %{}) do
    :ok = Symbiont.publish(in_topic, Map.merge(%{"n" => n, "prefix" => prefix}, extra))
    assert_receive %Symbiont.Event{topic: ^out} = started, 10_000
    assert %{"started" => ^n} = Symbiont.Event.decode!(started)
    assert_receive %Symbiont.Event{topic: ^out} = done, 30_000
    Symbiont.Event.decode!(done)
  end

  # The topics `publisher` published on that this node counts (its health reports aside).
  defp published_topics(publisher) do
    for %{publisher: ^publisher, topic: topic} <- Symbiont.Mesh.node_stats().publishers,
        topic != @health,
        do: topic
  end

  defp stats_table, do: Symbiont.Mesh.meta(Symbiont.Mesh).stats

  defp health_about(agent, kind) do
    receive do
      %Symbiont.Event{topic: @health} = e ->
        case Symbiont.Event.decode!(e) do
          %{"agent" => ^agent, "kind" => ^kind} = h -> h
          _ -> health_about(agent, kind)
        end
    after
      10_000 -> flunk("no #{kind} health event about #{agent}")
    end
  end

  defp health_events_about(agent) do
    for %Symbiont.Event{topic: @health} = e <- flush(),
        %{"agent" => ^agent} = h <- [Symbiont.Event.decode!(e)],
        do: h
  end

  defp flush do
    receive do
      msg -> [msg | flush()]
    after
      0 -> []
    end
  end

  defp get(url) do
    {:ok, {{_, status, _}, _headers, body}} =
      :httpc.request(:get, {String.to_charlist(url), []}, [timeout: 10_000], body_format: :binary)

    {status, body}
  end

  test "a Python agent publishing on 5,000 topics: the 1,001st raises, said once; the topology and its drawing stay small" do
    start_supervised!({StatusPage, port: 0})
    agent = spray_agent!()
    %{name: name} = agent
    prefix = unique_name("many")
    svg_before = Symbiont.Topology.to_svg(Symbiont.topology())

    log =
      capture_log(fn ->
        # Its out topic is one of the 1 000 (the default :max_topics).
        assert %{"published" => 999, "refused" => 4_001, "error" => error} =
                 spray(agent, 5_000, prefix)

        assert error ==
                 "agent '#{name}' may publish on at most 1000 distinct topics (its " <>
                   "max_topics) since it started; '#{prefix}.999' would be one more"

        assert %{"reason" => reason, "metrics" => %{"max_topics" => 1000}} =
                 health_about(name, "degraded")

        assert reason == error

        # Again: still refused, and not said again (the health event and the error line
        # of this round would have come before its answer).
        assert %{"published" => 0, "refused" => 5_000} = spray(agent, 5_000, prefix <> "b")
        assert health_events_about(name) == []
        assert {:ok, %{agent: %{refused_publishes: 0}}} = Symbiont.Host.info(name)
      end)

    assert [_] = Regex.scan(~r/may publish on at most 1000 distinct topics/, log)
    assert log =~ ~r/\[error\].*host=#{name}.*\(publishes on new topics are refused\)/

    # The node counts at most 1 000 topics for it; the drawing draws 100 edges at most.
    assert length(published_topics(name)) == 1_000
    {200, svg} = get(StatusPage.url() <> "topology.svg")
    assert String.starts_with?(svg, "<svg ")
    assert svg =~ ~r/\+\d+ more edges \(\d+ events\) not drawn/
    assert byte_size(svg) < 150_000
    assert byte_size(svg) < byte_size(svg_before) + 150_000
    assert length(Regex.scan(~r/<g class="edge">/, svg)) <= 100

    {200, json} = get(StatusPage.url() <> "status.json")
    assert byte_size(json) < 1_000_000
    assert %{"omitted" => %{"edges" => _}, "evicted" => _} = JSON.decode!(json)["topology"]
  end

  test "a host that ignores the limit: the owner drops what is over it, counts it, says it once" do
    agent = spray_agent!(max_topics: 50)
    %{name: name} = agent
    prefix = unique_name("rogue")

    log =
      capture_log(fn ->
        # "raw": the agent goes around its own check, as a host that ignores it would.
        assert %{"published" => 300, "refused" => 0} = spray(agent, 300, prefix, %{"raw" => true})

        assert %{"reason" => reason, "metrics" => %{"max_topics" => 50, "refused" => 1}} =
                 health_about(name, "degraded")

        assert reason =~
                 "published on more than 50 distinct topics (its :max_topics) since it started"

        long = String.duplicate("x", 2_000)
        assert %{"published" => 1} = spray(agent, 1, long, %{"raw" => true})
        assert health_events_about(name) == []
      end)

    assert {:ok, %{agent: %{refused_publishes: 252}}} = Symbiont.Host.info(name)
    assert [_] = Regex.scan(~r/agent #{name} published on more than 50 distinct topics/, log)
    assert length(published_topics(name)) == 50
  end

  test "an agent that subscribes to more than :max_topics topics does not start, and says why" do
    name = unique_name("wide")
    start_host!(name: name)

    log =
      capture_log(fn ->
        start_supervised!(
          {Symbiont.Agent.Server,
           host: name,
           name: name,
           python: "sample_agents:Spray",
           max_topics: 10,
           config: %{"in" => unique_name("wide.in"), "out" => "x", "subscribe" => 20}}
        )

        assert %{"reason" => reason} = health_about(name, "failing")

        assert reason ==
                 "could not start: agent '#{name}' subscribes to 21 topics; it may subscribe " <>
                   "to at most 10 (its max_topics)"
      end)

    assert log =~ "symbiont.TopicLimitError"
  end

  test "a Wasm agent over its :max_topics: the publish import fails the call with an abi error" do
    :ok = Symbiont.subscribe("symbiont.dead_letter")
    in_topic = unique_name("spray.wasm.in")

    %{agent: agent} =
      start_agent_host!("wspray",
        wasm: Path.join(@wasm, "spray.wat"),
        topics: [in_topic],
        max_topics: 100,
        max_attempts: 1
      )

    capture_log(fn ->
      :ok = Symbiont.publish(in_topic, 150)

      assert_receive %Symbiont.Event{topic: "symbiont.dead_letter", from: ^agent} = e, 10_000

      assert %{
               "reason" => "handler_failed",
               "error" => %{"type" => "symbiont.wasm.WasmError", "message" => message}
             } = Symbiont.Event.decode!(e)

      refusal =
        "agent '#{agent}' may publish on at most 100 distinct topics (its max_topics) " <>
          "since it started; 'spray.0064' would be one more"

      assert message == "abi: " <> refusal
      assert %{"reason" => ^refusal} = health_about(agent, "degraded")
    end)

    # The call failed, so none of its publishes went out (WASM_ABI.md §2: they are held
    # until the call succeeds).
    assert published_topics(agent) == []
  end

  test "12,000 topics: the node keeps at most :max_edges counters, the least recently used go" do
    agent = spray_agent!(max_topics: 30_000)
    # The default (config/test.exs leaves it).
    max = 10_000
    prefix = unique_name("lru")
    evicted_before = Map.get(Symbiont.Mesh.node_stats(), :evicted, %{edges: 0}).edges

    assert %{"published" => 12_000, "refused" => 0} = spray(agent, 12_000, prefix)

    assert wait_until(fn -> :ets.info(stats_table(), :size) <= max end)
    stats = Symbiont.Mesh.node_stats()
    assert stats.evicted.edges - evicted_before >= 12_001 - max

    # The oldest went first: the last topics it published are all counted.
    mine = MapSet.new(published_topics(agent.name))
    assert Enum.all?(11_000..11_999, &MapSet.member?(mine, "#{prefix}.#{&1}"))
    refute MapSet.member?(mine, "#{prefix}.0")

    # As many again, all new: the table, and the node's memory, stay where they were.
    memory = :erlang.memory(:total)
    assert %{"published" => 12_000} = spray(agent, 12_000, prefix <> "b")
    assert wait_until(fn -> :ets.info(stats_table(), :size) <= max end)
    words = :ets.info(stats_table(), :memory)
    assert words * :erlang.system_info(:wordsize) < max * @row_bytes
    assert :erlang.memory(:total) - memory < 64 * 1024 * 1024

    topology = Symbiont.topology()
    assert topology.evicted.edges > stats.evicted.edges + 10_000
    svg = Symbiont.Topology.to_svg(topology)
    assert byte_size(svg) < 150_000
    assert byte_size(Symbiont.Topology.to_mermaid(topology)) < 20_000
    assert byte_size(Symbiont.Topology.to_dot(topology)) < 30_000
  end

  test "health events about 1,500 agents: the history keeps the 1,000 heard of last" do
    # Only the BEAM names agents on symbiont.health now; the bound holds all the same.
    prefix = unique_name("ghost")
    for i <- 1..1_500, do: Symbiont.Health.publish("degraded", "#{prefix}-#{i}", "boo")
    assert wait_until(fn -> Symbiont.Health.History.of("#{prefix}-1500") != [] end)

    kept = :ets.match(Symbiont.Health.History, {{:agent, :"$1"}, :_})
    assert length(kept) <= 1_000
    assert map_size(Symbiont.Health.History.latest()) <= 1_000
    assert Symbiont.Health.History.of("#{prefix}-1") == []
    assert Symbiont.Health.History.latest()["#{prefix}-500"] == nil
    assert %{"reason" => "boo"} = Symbiont.Health.History.latest()["#{prefix}-501"]
    assert %{"reason" => "boo"} = Symbiont.Health.History.latest()["#{prefix}-1500"]
    assert length(Symbiont.Health.History.recent()) == 200
  end
end

defmodule Symbiont.ControlPlaneTest do
  # The topics under symbiont. are the BEAM's (Symbiont.ControlPlane): a hostile Python
  # agent and a hostile Wasm module, in real hosts, try to publish fake health about a
  # healthy agent, a fake remediation (an audit entry dated 2100, that would keep the
  # conductor off a crash-looping agent for ever) and a fake dead letter, one of them of
  # 10 MB; each is refused where it is made, the owner drops what a host sends around its
  # own check, and nothing changes on the page, in the health history, in the audit
  # trail or in what the conductor does, while the node's memory stays flat. An agent's
  # own report still works, stamped by its owner with the agent that sent it.
  #
  # Not async: it measures the whole node's memory, and runs the page and a conductor.
  use ExUnit.Case, async: false

  import ExUnit.CaptureIO
  import ExUnit.CaptureLog
  import Symbiont.HostHelpers

  alias Symbiont.Agent.Server
  alias Symbiont.MsgPack
  alias Symbiont.MsgPack.{Bin, Raw}
  alias Symbiont.StatusPage
  alias Symbiont.StatusPage.JSON

  doctest Symbiont.ControlPlane

  @forger_wat Path.expand("../fixtures/wasm/forger.wat", __DIR__)
  # 2100-01-01, in ms: an audit entry "from the future" held an agent off for ever.
  @year_2100 4_102_444_800_000
  # A forged health event of 10 MB: 10 million nils. Decoded, one copy is 160 MB; three
  # subscribers that decode and keep it took the node past 1 GB.
  @huge_nils 10_000_000
  # What the node may grow by over the attacks (the 10 MB events themselves included).
  @memory_slack 64 * 1024 * 1024

  setup do
    previous = Application.get_env(:symbiont, :python_path)
    Application.put_env(:symbiont, :python_path, [fixtures()])
    on_exit(fn -> Application.put_env(:symbiont, :python_path, previous) end)

    for topic <- ~w(symbiont.health symbiont.remediation symbiont.dead_letter),
        do: :ok = Symbiont.subscribe(topic)

    start_supervised!({StatusPage, port: 0})
    %{name: victim} = start_app_agent!("victim", python: "sample_agents:Counter")
    %{victim: victim, url: StatusPage.url()}
  end

  # The forged events: {what, topic, msgpack bytes}, about `victim` (health, dead letter)
  # and `crashy` (the remediation), the last one 10 MB.
  defp forgeries(victim, crashy, huge? \\ true) do
    node = Atom.to_string(node())
    health = %{"kind" => "failing", "agent" => victim, "node" => node, "metrics" => %{}}

    remediation = %{
      "action" => "quarantine",
      "agent" => crashy,
      "by" => "conductor",
      "result" => "applied",
      "reason" => "forged remediation",
      "at_ms" => @year_2100,
      "node" => node,
      "evidence" => %{}
    }

    letter = %{
      "agent" => victim,
      "topic" => "orders",
      "payload" => %Bin{data: "x"},
      "reason" => "poison",
      "attempts" => 3,
      "error" => %{"message" => "forged dead letter"}
    }

    nils = %Raw{data: <<0xDD, @huge_nils::32>> <> :binary.copy(<<0xC0>>, @huge_nils)}
    huge = %{health | "metrics" => %{"m" => nils}}

    [
      {:health, "symbiont.health", Map.put(health, "reason", "forged health")},
      {:remediation, "symbiont.remediation", remediation},
      {:dead_letter, "symbiont.dead_letter", letter}
    ]
    |> Kernel.++(
      if huge?, do: [{:huge, "symbiont.health", Map.put(huge, "reason", "forged")}], else: []
    )
    |> Enum.map(fn {what, topic, value} ->
      {what, topic, MsgPack.encode!(value, iodata: false)}
    end)
  end

  defp start_forger! do
    [in_topic, out] = [unique_name("forger.in"), unique_name("forger.out")]
    :ok = Symbiont.subscribe(out)

    %{name: name} =
      start_app_agent!("forger",
        python: "forger:Forger",
        config: %{"in" => in_topic, "out" => out}
      )

    %{name: name, in: in_topic, out: out}
  end

  # Asks the Python forger to try `how` on `topic` with `body`; returns what came of it.
  defp forge(%{in: in_topic, out: out}, how, topic, body) do
    :ok = Symbiont.publish(in_topic, [how, topic, %Bin{data: body}])
    assert_receive %Symbiont.Event{topic: ^out} = e, 15_000
    Symbiont.Event.decode!(e)
  end

  defp start_wasm_forger! do
    topic = unique_name("wforger.in")

    %{name: name} =
      start_app_agent!("wforger",
        wasm: @forger_wat,
        topics: [topic],
        max_attempts: 1,
        limits: [deadline_ms: 5_000]
      )

    %{name: name, in: topic}
  end

  # The Wasm forger publishes `b` on topic `a` (mode 0) or reports kind `a`, reason `b`
  # (mode 1).
  defp wasm_forge(%{in: topic}, mode, a, b) do
    blob = a <> b <> <<mode::32-little, byte_size(a)::32-little, byte_size(b)::32-little>>
    :ok = Symbiont.publish(topic, %Bin{data: blob})
  end

  defp await_dead_letter(agent) do
    receive do
      %Symbiont.Event{topic: "symbiont.dead_letter", from: ^agent} = e ->
        Symbiont.Event.decode!(e)["error"]["message"]
    after
      15_000 -> flunk("no dead letter from #{agent}")
    end
  end

  # Whatever was in flight to the node's own subscribers has been handled by them.
  defp settle_subscribers do
    for name <- [Symbiont.Health.History, Symbiont.StatusPage.Feed, Symbiont.Conductor.Audit],
        do: :sys.get_state(name)

    :ok
  end

  defp settled_memory do
    for pid <- Process.list(), do: :erlang.garbage_collect(pid)
    :erlang.memory(:total)
  end

  defp status_json(url) do
    {:ok, {{_, 200, _}, _headers, body}} =
      :httpc.request(:get, {String.to_charlist(url <> "status.json"), []}, [timeout: 10_000],
        body_format: :binary
      )

    JSON.decode!(body)
  end

  # Nothing an agent forged shows anywhere: the page (/status.json), Symbiont.health(),
  # the health history and the audit trail.
  defp assert_nothing_forged(victim, url) do
    settle_subscribers()
    json = status_json(url)

    assert %{"health" => "healthy", "health_reason" => nil} =
             Enum.find(json["agents"], &(&1["id"] == victim))

    refute inspect(json["events"], limit: :infinity) =~ "forged"
    assert Symbiont.Health.History.of(victim) == []
    assert Symbiont.Health.History.latest()[victim] == nil
    refute capture_io(fn -> Symbiont.health() end) =~ "forged"
    now = System.system_time(:millisecond)

    for entry <- Symbiont.remediations(1_000) do
      refute to_string(entry["reason"]) =~ "forged"
      assert entry["at_ms"] <= now
    end
  end

  test "a hostile Python agent: each publish on symbiont.* raises where it is made; the owner drops what its host sends around that; nothing changes and the node's memory stays flat",
       %{victim: victim, url: url} do
    forger = start_forger!()
    before = settled_memory()

    log =
      capture_log(fn ->
        for {what, topic, body} <- forgeries(victim, "crashy") do
          # self.publish: a ReservedTopicError the agent sees, naming the rule.
          assert ["refused", message] = forge(forger, "publish", topic, body)

          assert message ==
                   "agent '#{forger.name}' cannot publish on '#{topic}': topics starting " <>
                     "with 'symbiont.' are published by Symbiont itself, not by agents " <>
                     "(report health with self.health or the Wasm health import)",
                 "#{what}: #{message}"

          # A host that goes around its own check: the owner drops the publish.
          assert ["sent", nil] = forge(forger, "around", topic, body)
        end
      end)

    # Dropped, counted, and said once.
    assert {:ok, %{refused_publishes: 4, published: published}} = Server.info(forger.name)
    assert published == 8
    assert [_] = Regex.scan(~r/published on a topic of the BEAM's/, log)
    assert log =~ ~s(topic "symbiont.health" is reserved)

    name = forger.name
    refute_received %Symbiont.Event{topic: "symbiont." <> _, from: ^name}
    assert_nothing_forged(victim, url)
    grown = settled_memory() - before
    assert grown < @memory_slack, "the node grew by #{div(grown, 1024 * 1024)} MB"
  end

  test "a hostile Wasm module: each publish on symbiont.* fails its call with an abi error; nothing changes and the node's memory stays flat",
       %{victim: victim, url: url} do
    wasm = start_wasm_forger!()
    before = settled_memory()

    capture_log(fn ->
      for {what, topic, body} <- forgeries(victim, "crashy") do
        wasm_forge(wasm, 0, topic, body)

        assert await_dead_letter(wasm.name) ==
                 "abi: #{wasm.name} cannot publish on '#{topic}': topics starting with " <>
                   "'symbiont.' are published by Symbiont itself, not by modules (report " <>
                   "health with the health import)",
               "#{what}"
      end
    end)

    assert {:ok, %{published: 0}} = Server.info(wasm.name)
    assert_nothing_forged(victim, url)
    grown = settled_memory() - before
    assert grown < @memory_slack, "the node grew by #{div(grown, 1024 * 1024)} MB"
  end

  test "after remediations forged in the audit trail, dated 2100, the conductor still quarantines a crash-looping agent",
       %{victim: victim, url: url} do
    prefix = unique_name("plane")
    crashy = "#{prefix}-crashy"
    topic = unique_name("crashy.in")
    attach_host_events(crashy)

    stage = [
      name: crashy,
      python: "scenario_agents:Stage",
      config: %{"in" => topic, "mode" => "crash"},
      max_attempts: 1
    ]

    manifest = start_manifest!([stage])
    assert_receive {:agent_start, ^crashy, _}, 10_000
    [forger, wasm] = [start_forger!(), start_wasm_forger!()]

    capture_log(fn ->
      for {_what, topic, body} <- forgeries(victim, crashy, false) do
        assert ["refused", _] = forge(forger, "publish", topic, body)
        assert ["sent", nil] = forge(forger, "around", topic, body)
        wasm_forge(wasm, 0, topic, body)
        assert await_dead_letter(wasm.name) =~ "abi: "
      end
    end)

    assert_nothing_forged(victim, url)

    # A conductor that starts now reads its cooldowns and remedies back from the trail.
    policy_host = unique_name("policy")
    on_exit(fn -> Symbiont.Python.stop(policy_host) end)

    start_supervised!(
      {Symbiont.Conductor,
       name: :"conductor_#{prefix}",
       tick_ms: 200,
       cooldown_ms: 1_000,
       manifest: manifest,
       policy_host: policy_host,
       python_path: [fixtures()],
       scope: &String.starts_with?(&1, prefix)}
    )

    capture_log(fn ->
      for i <- 1..6, do: :ok = Symbiont.publish(topic, i)
      assert %{"reason" => "crash loop" <> _} = await_remediation(crashy, "quarantine", 20_000)
    end)

    assert {:ok, %{quarantined: "crash loop" <> _}} = Server.info(crashy)
  end

  test "an agent's own report still works, stamped by its owner with the agent that sent it" do
    forger = start_forger!()
    wasm = start_wasm_forger!()

    assert ["sent", nil] = forge(forger, "health", "degraded", "why")

    assert %{
             "agent" => name,
             "by" => "agent",
             "id" => name,
             "version" => "forger:Forger",
             "reason" => "why",
             "node" => node
           } = await_health(forger.name, "degraded")

    assert {name, node} == {forger.name, Atom.to_string(node())}
    assert {:ok, %{health: "degraded"}} = Server.info(forger.name)
    assert wait_until(fn -> Symbiont.Health.History.latest()[name]["reason"] == "why" end)

    # The Wasm health import, its reason cut at 1024 bytes.
    wasm_forge(wasm, 1, "overloaded", String.duplicate("é", 600_000))
    wasm_name = wasm.name

    assert %{"agent" => ^wasm_name, "by" => "agent", "id" => ^wasm_name, "reason" => reason} =
             await_health(wasm_name, "overloaded")

    assert byte_size(reason) <= 1024 and String.ends_with?(reason, " [truncated]")
    settle_subscribers()
    assert "wasm:" <> _ = Symbiont.Health.History.latest()[wasm.name]["version"]
  end

  test "Symbiont.publish refuses symbiont.* topics, from Elixir and from Python's erlang.call",
       %{victim: victim, url: url} do
    [{_, topic, body} | _] = forgeries(victim, "crashy", false)

    assert {:error, %Symbiont.Error{reason: :refused, message: message}} =
             Symbiont.publish(topic, MsgPack.decode!(body))

    assert message == Symbiont.ControlPlane.refusal(topic)

    forger = start_forger!()
    # From Python, the error is the map of its fields (PROTOCOL.md §2).
    assert ["sent", {:error, %{"reason" => :refused, "message" => ^message}}] =
             forge(forger, "call", topic, body)

    assert_nothing_forged(victim, url)
  end

  describe "code that runs as the node, going around Symbiont.publish" do
    test "an event over the control plane's sizes is decoded by none of the node's subscribers",
         %{victim: victim, url: url} do
      [{_, _, _}, {_, _, _}, {_, _, _}, {:huge, topic, huge}] = forgeries(victim, "crashy")
      event = %Symbiont.Event{topic: topic, payload: huge, from: victim}
      before = settled_memory()

      log =
        capture_log(fn ->
          :ok = Symbiont.Mesh.publish(Symbiont.Mesh, event)
          settle_subscribers()
          :sys.get_state(Symbiont.StatusPage.Feed)
        end)

      assert log =~ ~r/is not decoded: \d{8} bytes, over the limit of 65536; dropped/
      assert_nothing_forged(victim, url)
      grown = settled_memory() - before
      assert grown < @memory_slack, "the node grew by #{div(grown, 1024 * 1024)} MB"
    end

    test "the audit trail holds what Symbiont.Remediation recorded, at the BEAM's time, not the topic's events",
         %{victim: victim} do
      [_, {:remediation, topic, forged} | _] = forgeries(victim, victim, false)
      event = %Symbiont.Event{topic: topic, payload: forged, from: victim}
      :ok = Symbiont.Mesh.publish(Symbiont.Mesh, event)
      assert_receive %Symbiont.Event{topic: ^topic, from: ^victim}

      # A step of Symbiont.Remediation's is in the trail, within the sizes, timed now.
      :ok =
        Symbiont.Remediation.publish("restart", victim, String.duplicate("r", 100_000),
          by: "operator",
          evidence: %{"blob" => String.duplicate("e", 1_000_000)}
        )

      :ok = Symbiont.Conductor.Audit.record(%{"action" => "x", "at_ms" => @year_2100})
      settle_subscribers()
      now = System.system_time(:millisecond)
      [refused, restart | _] = Symbiont.remediations(1_000)
      assert %{"action" => "x", "at_ms" => at} = refused
      assert at <= now

      assert %{"action" => "restart", "by" => "operator", "reason" => reason, "evidence" => e} =
               restart

      assert byte_size(reason) <= 1024
      assert %{"inspect" => _} = e
      assert byte_size(MsgPack.encode!(restart, iodata: false)) <= 65_536
      refute Enum.any?(Symbiont.remediations(1_000), &(&1["reason"] == "forged remediation"))
    end
  end
end

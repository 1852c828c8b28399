defmodule Symbiont.AgentTest do
  # Python agents in real hosts: events in order, checkpointed state that survives a
  # kill -9, publishes, failures that go to the dead letters, timers.
  use ExUnit.Case, async: true

  import ExUnit.CaptureLog
  import Symbiont.HostHelpers

  doctest Symbiont.Agent.Server, only: [percentile: 2]

  alias Symbiont.Agent.Server
  alias Symbiont.Event

  defp start_agent!(python, config \\ %{}),
    do: start_agent_host!("agent", python: python, config: config)

  test "events are handled in order and the state survives a kill -9" do
    out = unique_name("count.out")
    :ok = Symbiont.subscribe(out)
    %{name: name, os_pid: os_pid} = start_agent!("sample_agents:Counter", %{"out" => out})

    for i <- 1..50, do: :ok = Symbiont.publish("count.in", i)

    for i <- 1..50 do
      assert_receive %Event{topic: ^out} = event, 5_000
      assert Event.decode!(event) == %{"n" => i, "got" => i}
    end

    assert wait_until(fn ->
             match?({:ok, %{agent: %{handled: 50, in_flight: 0}}}, Symbiont.Host.info(name))
           end)

    assert {:ok, %{agent: %{state: %{"n" => 50}, topics: ["count.in"]}}} =
             Symbiont.Host.info(name)

    capture_log(fn ->
      Symbiont.Host.Reaper.kill(os_pid)
      assert_receive {:host_start, ^name, %{restarts: 1}}, 10_000
    end)

    :ok = Symbiont.publish("count.in", :after)
    assert_receive %Event{topic: ^out} = event, 5_000
    assert Event.decode!(event) == %{"n" => 51, "got" => :after}
  end

  test "an async def agent handles events in order, each acked after its coroutine completes" do
    out = unique_name("count.out")
    :ok = Symbiont.subscribe(out)
    %{name: name} = start_agent!("sample_agents:AsyncCounter", %{"out" => out})

    for i <- 1..30, do: :ok = Symbiont.publish("count.in", i)

    got = for _ <- 1..30, do: assert_receive(%Event{topic: ^out} = e, 5_000) && Event.decode!(e)
    assert got == for(i <- 1..30, do: %{"n" => i, "got" => i})

    assert wait_until(fn ->
             match?(
               {:ok, %{agent: %{handled: 30, in_flight: 0, state: %{"n" => 30}}}},
               Symbiont.Host.info(name)
             )
           end)
  end

  @tag :tmp_dir
  test "an async def handler past its handler_timeout has its task cancelled; the host stays",
       %{tmp_dir: dir} do
    out = unique_name("nap.out")
    topic = unique_name("nap.in")
    :ok = Symbiont.subscribe(out)
    config = %{"in" => topic, "out" => out, "marker" => Path.join(dir, "tried")}

    # The log goes with a failure: what the host and the server said of each attempt.
    {outcome, log} =
      with_log(fn ->
        %{agent: agent, os_pid: os_pid} =
          start_agent_host!("nap",
            python: "sample_agents:AsyncNap",
            config: config,
            # The retry is cancelled past it too: on a loaded machine 200 ms was not
            # always enough for it (once in some 6 full runs, the retry dead-lettered).
            handler_timeout: 1_000,
            max_attempts: 3
          )

        :ok = Symbiont.publish(topic, "hello")
        # The coroutine saw asyncio's CancelledError at its await; the retry went through.
        outputs =
          for _ <- 1..2 do
            receive do
              %Event{topic: ^out} = e -> Event.decode!(e)
            after
              10_000 -> :nothing
            end
          end

        {outputs, Symbiont.Agent.Server.info(agent), Symbiont.Host.info(agent), os_pid}
      end)

    {outputs, info, host, os_pid} = outcome
    assert outputs == ["cancelled", "hello"], "#{inspect(outputs)}; #{inspect(info)}\n#{log}"

    assert {:ok, %{last_error: %{"type" => "symbiont.CancelledError", "message" => message}}} =
             info

    assert message =~ "ran past its handler_timeout of 1000 ms and was cancelled"
    assert {:ok, %{os_pid: ^os_pid, crashes: 0}} = host
    assert log =~ "ran past its handler_timeout of 1000 ms and was cancelled"
  end

  test "the server's state stays flat maps (32 keys at most each) while it runs" do
    # Updated several times an event: a map of more than 32 keys is a hash trie, each
    # update of which costs several times more (bench/RESULTS.md, "Profiling").
    out = unique_name("count.out")
    :ok = Symbiont.subscribe(out)
    %{name: name} = start_agent!("sample_agents:Counter", %{"out" => out})
    :ok = Symbiont.publish("count.in", 1)
    assert_receive %Event{topic: ^out}, 5_000
    state = :sys.get_state(Server.whereis(name))
    assert map_size(state) <= 32, "#{map_size(state)} keys: #{inspect(Map.keys(state))}"

    # Its seldom-changed fields, in a map each by concern: each flat too.
    for group <- [:link, :mesh, :observed, :lifecycle, :intake, :analytics] do
      fields = Map.fetch!(state, group)
      assert map_size(fields) <= 32, "#{group}: #{map_size(fields)} keys"
    end

    assert state.mesh.subscribed
    assert state.link.starts == 1
  end

  test "deliveries in flight when the host dies are redelivered to the new one" do
    out = unique_name("count.out")
    :ok = Symbiont.subscribe(out)
    %{name: name, os_pid: os_pid} = start_agent!("sample_agents:Counter", %{"out" => out})

    capture_log(fn ->
      Symbiont.Host.Reaper.kill(os_pid)
      assert_receive {:host_crash, ^name, _}, 5_000
      # Accepted while the host is down: nothing is lost.
      for i <- 1..5, do: :ok = Symbiont.publish("count.in", i)
      assert_receive {:host_start, ^name, %{restarts: 1}}, 10_000
    end)

    got =
      for _ <- 1..5,
          do: assert_receive(%Event{topic: ^out} = e, 5_000) && Event.decode!(e)

    assert got == for(i <- 1..5, do: %{"n" => i, "got" => i})
  end

  test "a handler that raises: logged, dead-lettered, and the agent keeps going" do
    :ok = Symbiont.subscribe("picky.out")
    :ok = Symbiont.subscribe("symbiont.dead_letter")
    %{agent: agent, name: name} = start_agent!("sample_agents:Picky")

    log =
      capture_log(fn ->
        for payload <- ["a", "poison", "b"], do: Symbiont.publish("picky.in", payload)
        assert_receive %Event{topic: "picky.out"} = a, 5_000
        assert_receive %Event{topic: "picky.out"} = b, 5_000
        assert [Event.decode!(a), Event.decode!(b)] == ["a", "b"]

        assert_receive %Event{topic: "symbiont.dead_letter", from: ^agent} = letter,
                       5_000

        assert %{"agent" => ^agent, "topic" => "picky.in", "payload" => payload, "error" => error} =
                 Event.decode!(letter)

        assert Symbiont.MsgPack.decode(payload) == {:ok, "poison"}
        assert %{"type" => "ValueError", "message" => "poisoned"} = error
        # Tried max_attempts (3) times, first in line each time, before giving up.
        assert %{"reason" => "handler_failed", "attempts" => 3} = Event.decode!(letter)
      end)

    assert log =~ ~s(agent #{agent} failed on an event on "picky.in": ValueError: poisoned)

    assert wait_until(fn ->
             match?({:ok, %{agent: %{handled: 2, failed: 1}}}, Symbiont.Host.info(name))
           end)
  end

  @tag :tmp_dir
  test "a handler past its handler_timeout is cancelled and its event retried; the host stays",
       %{tmp_dir: dir} do
    log =
      capture_log(fn ->
        %{out: out, agent: agent, os_pid: os_pid} = start_stuck!(dir, stubborn: false)
        assert_receive %Event{topic: ^out, from: ^agent}, 10_000

        assert {:ok, %{last_error: %{"type" => "symbiont.CancelledError", "message" => message}}} =
                 Symbiont.Agent.Server.info(agent)

        assert message =~ "ran past its handler_timeout of 200 ms and was cancelled"
        assert {:ok, %{os_pid: ^os_pid, crashes: 0}} = Symbiont.Host.info(agent)
      end)

    assert log =~ "ran past its handler_timeout of 200 ms and was cancelled"
  end

  @tag :tmp_dir
  test "a handler that does not stop: its host is restarted and the event retried",
       %{tmp_dir: dir} do
    log =
      capture_log(fn ->
        %{out: out, agent: agent, os_pid: os_pid} = start_stuck!(dir, stubborn: true)

        assert_receive {:host_crash, ^agent, %{reason: {:stalled, ^agent, 200}}}, 10_000
        assert_receive {:agent_start, ^agent, %{restarts: 1}}, 10_000
        assert_receive %Event{topic: ^out, from: ^agent}, 10_000
        assert {:ok, %{os_pid: new_os_pid, crashes: 1}} = Symbiont.Host.info(agent)
        assert new_os_pid != os_pid
      end)

    assert log =~ "past its handler_timeout of 200 ms: restarting host"
    assert log =~ "did not stop after its handler_timeout of 200 ms"
  end

  @tag :tmp_dir
  test "an event whose handler never stops is dead-lettered as a timeout", %{tmp_dir: dir} do
    :ok = Symbiont.subscribe("symbiont.dead_letter")

    capture_log(fn ->
      %{agent: agent} = start_stuck!(dir, stubborn: true, max_attempts: 1)
      assert_receive %Event{topic: "symbiont.dead_letter", from: ^agent} = letter, 10_000
      assert %{"reason" => "timeout", "attempts" => 1, "error" => error} = Event.decode!(letter)

      assert error["message"] =~
               "did not stop after its handler_timeout of 200 ms while handling it"
    end)
  end

  defp start_stuck!(dir, opts) do
    out = unique_name("stuck.out")
    payload = unique_name("stuck")
    topic = unique_name("stuck.in")
    :ok = Symbiont.subscribe(out)

    config = %{
      "in" => topic,
      "out" => out,
      "payload" => payload,
      "marker" => Path.join(dir, "tried"),
      "stubborn" => Keyword.fetch!(opts, :stubborn)
    }

    host =
      start_agent_host!("stuck",
        python: "sample_agents:Stuck",
        config: config,
        handler_timeout: 200,
        max_attempts: Keyword.get(opts, :max_attempts, 2)
      )

    :ok = Symbiont.publish(topic, payload)
    Map.put(host, :out, out)
  end

  test "events over the frame limit are dead-lettered both ways; the agent and its host go on" do
    out = unique_name("bloat.out")
    :ok = Symbiont.subscribe(out)
    :ok = Symbiont.subscribe("symbiont.dead_letter")
    name = unique_name("bloater")

    %{os_pid: os_pid} =
      start_host!(
        name: name,
        max_frame: 1_048_576,
        agent: [
          name: name,
          python: "sample_agents:Bloater",
          config: %{"out" => out},
          max_attempts: 1
        ]
      )

    capture_log(fn ->
      # In: the agent's host could not take it. Out: the handler's publish is refused.
      :ok = Symbiont.publish("bloat.in", :binary.copy("x", 2_000_000))
      assert %{"reason" => "too_large", "attempts" => 0, "error" => error} = dead_letter(name)

      assert error["message"] =~
               ~r/frame of 200\d{4} bytes, over the max_frame of host .* \(1048576 bytes\)/

      :ok = Symbiont.publish("bloat.in", 2_000_000)
      assert %{"reason" => "handler_failed", "error" => error} = dead_letter(name)
      assert error["type"] == "symbiont.FrameTooLarge"
      assert error["message"] =~ "over the owner's max_frame of 1048576 bytes"
    end)

    :ok = Symbiont.publish("bloat.in", 10)
    assert_receive %Event{topic: ^out, from: ^name} = event, 5_000
    assert Event.decode!(event) == :binary.copy("x", 10)
    assert {:ok, %{os_pid: ^os_pid, crashes: 0}} = Symbiont.Host.info(name)
  end

  defp dead_letter(agent) do
    assert_receive %Event{topic: "symbiont.dead_letter", from: ^agent} = letter, 10_000
    Event.decode!(letter)
  end

  test "timers tick" do
    :ok = Symbiont.subscribe("tick.out")
    start_agent!("sample_agents:Ticker")

    beats =
      for _ <- 1..3,
          do:
            assert_receive(%Event{topic: "tick.out"} = e, 5_000) &&
              Event.decode!(e)

    assert beats == Enum.sort(beats) and length(Enum.uniq(beats)) == 3
  end

  test "an agent whose module does not import: a clear error, failing, retried with backoff, then quarantined" do
    :ok = Symbiont.subscribe("symbiont.health")
    %{name: host, os_pid: os_pid} = start_host!()
    name = unique_name("broken")

    log =
      capture_log(fn ->
        spec = [id: name, host: host, name: name, python: "no_such_module:Agent"]
        start_supervised!({Symbiont.Agent.Server, spec ++ [max_start_failures: 3]}, id: name)

        assert %{"reason" => "could not start: No module named 'no_such_module'"} =
                 health = await_health(name, "failing")

        assert health["metrics"] == %{"failures" => 1, "id" => name}

        # Tried again, with backoff, failing again: no news, no event, until it is
        # quarantined after its third failed start in a row.
        assert_receive %Event{topic: "symbiont.health", from: ^name} = next, 10_000
        assert %{"kind" => "quarantined", "reason" => reason} = Event.decode!(next)

        assert reason ==
                 "could not start 3 times in a row: ModuleNotFoundError: No module named 'no_such_module'"

        assert {:ok, %{health: "quarantined", start_failures: 3, health_reason: ^reason}} =
                 Server.info(name)
      end)

    # The first failure is said (not each retry), then the quarantine, with the traceback.
    assert log =~
             ~s[agent #{name} could not start in host "#{host}": ModuleNotFoundError: No module named 'no_such_module'; again in 100 ms (quarantined after 3 failed starts in a row)]

    assert log =~ ~s(agent #{name} quarantined: could not start 3 times in a row)
    assert log =~ "Traceback (most recent call last)"

    # The host itself is fine and serves on.
    assert {:ok, %{os_pid: ^os_pid, crashes: 0}} = Symbiont.Host.info(host)

    assert {:ok, %{handled: 0, start_failures: 3, last_error: %{"type" => "ModuleNotFoundError"}}} =
             Server.info(name)
  end

  test "a payload published from Python is routed as the bytes Python encoded" do
    :ok = Symbiont.subscribe("opaque.mid")
    :ok = Symbiont.subscribe("opaque.out")
    start_agent!("sample_agents:Opaque")
    :ok = Symbiont.publish("opaque.in", nil)

    # Python packs {"z": 1, "a": 2} in insertion order; the BEAM, had it decoded the map and
    # encoded it again, would have sorted the keys ("a" first).
    assert_receive %Event{topic: "opaque.mid", payload: payload}, 5_000
    assert payload == <<0x82, 0xA1, "z", 1, 0xA1, "a", 2>>
    refute payload == Symbiont.MsgPack.encode!(%{"z" => 1, "a" => 2}, iodata: false)

    # And the agent that consumes it (the same one here) sees the key order unchanged.
    assert_receive %Event{topic: "opaque.out"} = event, 5_000
    assert Event.decode!(event) == ["z", "a"]
  end

  test "an agent polled for its info while events flow handles them all" do
    # Frames wait in a batch until the mailbox is empty; a call answered without asking
    # for the flush once left them there for good.
    out = unique_name("polled.out")
    :ok = Symbiont.subscribe(out)
    %{agent_pid: pid} = start_agent!("sample_agents:Counter", %{"out" => out})
    poller = Task.async(fn -> poll_info(pid) end)

    for i <- 1..2_000, do: :ok = Symbiont.publish("count.in", i)
    for _ <- 1..2_000, do: assert_receive(%Event{topic: ^out}, 10_000)

    send(poller.pid, :stop)
    assert Task.await(poller) > 0
    # The last publish comes before the ack of its event (PROTOCOL.md §8).
    assert wait_until(fn ->
             match?(
               {:ok, %{handled: 2_000, in_flight: 0, queue: 0}},
               Symbiont.Agent.Server.info(pid)
             )
           end)
  end

  defp poll_info(pid, n \\ 0) do
    receive do
      :stop -> n
    after
      0 ->
        {:ok, _} = Symbiont.Agent.Server.info(pid)
        poll_info(pid, n + 1)
    end
  end

  test "replicas of an agent share its events: each reaches exactly one of them" do
    out = unique_name("count.out")
    :ok = Symbiont.subscribe(out)
    agent = unique_name("counter")
    # A topic of its own: any other event on count.in would reach one of them too.
    topic = unique_name("count.in")
    config = %{"in" => topic, "out" => out}
    spec = [name: agent, python: "sample_agents:Counter", config: config, replicas: 2]
    {:ok, validated} = Symbiont.Agent.validate_spec(spec)

    for host <- Symbiont.Manifest.host_names(validated),
        do: start_host!(name: host, agent: [spec: validated])

    for i <- 1..20, do: :ok = Symbiont.publish(topic, i)

    got =
      for _ <- 1..20,
          do: assert_receive(%Event{topic: ^out} = e, 5_000) && Event.decode!(e)

    refute_receive %Event{topic: ^out}, 100

    assert got |> Enum.map(& &1["got"]) |> Enum.sort() == Enum.to_list(1..20)
    # Two counters, round robin: each counted to 10.
    assert got |> Enum.map(& &1["n"]) |> Enum.sort() ==
             Enum.sort(Enum.to_list(1..10) ++ Enum.to_list(1..10))
  end

  test "a Python agent calls a sandboxed Wasm plug-in" do
    out = unique_name("price.out")
    :ok = Symbiont.subscribe(out)
    :ok = Symbiont.subscribe("pricing.priced")
    wasm = Path.expand("../../priv/wasm/pricing.wasm", __DIR__)

    %{name: name} =
      start_agent!("sample_agents:Pricer", %{"out" => out, "wasm" => %{"pricing" => wasm}})

    :ok = Symbiont.publish("price.in", 10)
    assert_receive %Event{topic: ^out} = price, 5_000
    assert Event.decode!(price) == 12.0
    # What the module published went out as the agent's event.
    assert_receive %Event{topic: "pricing.priced", from: ^name} = priced
    assert Event.decode!(priced) == [10.0, 12.0]
  end

  test "a Python agent reports its health on symbiont.health; its server keeps it until a restart" do
    :ok = Symbiont.subscribe("symbiont.health")
    %{agent: agent, os_pid: os_pid} = start_agent!("sample_agents:Moody")
    assert {:ok, %{health: "healthy"}} = Server.info(agent)
    :ok = Symbiont.publish("moody.in", ["degraded", "payment provider slow"])
    node_name = Atom.to_string(node())

    assert %{
             "reason" => "payment provider slow",
             "node" => ^node_name,
             "metrics" => %{"told" => true}
           } = await_health(agent, "degraded", 5_000)

    # The server published the event as it read the frame: it already knows.
    assert {:ok, %{health: "degraded"}} = Server.info(agent)

    # The last report is the one kept.
    :ok = Symbiont.publish("moody.in", ["failing", "worse"])
    assert %{"reason" => "worse"} = await_health(agent, "failing", 5_000)
    assert {:ok, %{health: "failing"}} = Server.info(agent)

    # What it says is its own event on symbiont.health: its server does not say it again.
    :ok = Symbiont.publish("moody.in", ["healthy", "better"])
    assert %{"reason" => "better"} = await_health(agent, "healthy", 5_000)

    assert wait_until(fn ->
             match?({:ok, %{health: "healthy", handled: 3}}, Server.info(agent))
           end)

    refute_received %Event{topic: "symbiont.health", from: ^agent}

    # The agent that runs after a restart has said nothing yet: it is healthy (its kill
    # is a crash, with nothing in flight: no failed delivery).
    capture_log(fn ->
      Symbiont.Host.Reaper.kill(os_pid)
      assert_receive {:agent_start, ^agent, %{restarts: 1}}, 10_000
    end)

    assert {:ok, %{health: "healthy", restarts: 1, crashes: 1}} = Server.info(agent)
  end

  test "a failed attempt is retried, first in line" do
    [topic, out] = [unique_name("flaky.in"), unique_name("flaky.out")]
    :ok = Symbiont.subscribe(out)
    %{name: name} = start_agent!("sample_agents:Flaky", %{"in" => topic, "out" => out})

    capture_log(fn ->
      for p <- ["x", "y"], do: :ok = Symbiont.publish(topic, p)
      assert_receive %Event{topic: ^out} = a, 5_000
      assert_receive %Event{topic: ^out} = b, 5_000

      assert Enum.sort([Event.decode!(a), Event.decode!(b)]) == [
               ["x", 2],
               ["y", 2]
             ]
    end)

    assert wait_until(fn ->
             match?({:ok, %{agent: %{handled: 2, failed: 0}}}, Symbiont.Host.info(name))
           end)
  end

  test "a handler that changes the state, then fails: the retry counts the event once" do
    # Found by a chaos run with failing handlers: the failed attempt's change stayed in
    # the state, and went out with the ack of the events before it.
    out = unique_name("half.out")
    :ok = Symbiont.subscribe(out)

    %{name: name} =
      start_agent!("sample_agents:HalfWay", %{"out" => out, "fail_once" => [2, 5, 6]})

    capture_log(fn ->
      for i <- 1..8, do: :ok = Symbiont.publish("half.in", i)

      got = for _ <- 1..8, do: assert_receive(%Event{topic: ^out} = e, 5_000) && Event.decode!(e)

      # Each event counted once: the counts that went out are 1..8.
      assert got |> Enum.map(&hd/1) |> Enum.sort() == Enum.to_list(1..8)
      assert got |> Enum.map(&List.last/1) |> Enum.sort() == Enum.to_list(1..8)
    end)

    assert wait_until(fn ->
             match?({:ok, %{agent: %{handled: 8, state: %{"n" => 8}}}}, Symbiont.Host.info(name))
           end)
  end

  test "an ack of deliveries no longer in flight is dropped with its state" do
    # A quarantine takes the deliveries in flight back to the queue; an ack of them that
    # the host's owner forwarded before it saw the slot go arrives after. Its state must
    # not become the checkpoint: the deliveries go again from the one before, and would
    # count twice. The late frame is sent here as the host's owner would forward it.
    {input, out} = {unique_name("tally.in"), unique_name("tally.out")}
    :ok = Symbiont.subscribe(out)
    %{name: name} = start_agent!("sample_agents:Tally", %{"in" => input, "out" => out})
    for i <- 1..3, do: :ok = Symbiont.publish(input, i)
    for _ <- 1..3, do: assert_receive(%Event{topic: ^out}, 5_000)
    assert wait_until(fn -> match?({:ok, %{handled: 3, in_flight: 0}}, Server.info(name)) end)

    capture_log(fn -> assert :ok = Server.quarantine(name, "a test") end)
    late = Symbiont.MsgPack.encode!(%{"n" => 99}, iodata: false)
    send(Server.whereis(name), {:agent_frame, Symbiont.Host.whereis(name), {:ack, 1, 2, late}})
    assert {:ok, %{state: %{"n" => 3}, handled: 3}} = Server.info(name)

    # Quarantined, it is not moved: the quarantine is a rule in force.
    assert {:error, %Symbiont.Error{reason: :refused, message: message, details: %{agent: ^name}}} =
             Server.move(name, "elsewhere")

    assert message == "agent #{name} is quarantined: it cannot move now"

    capture_log(fn -> assert :ok = Server.release(name) end)
    :ok = Symbiont.publish(input, 4)
    assert_receive %Event{topic: ^out} = e, 10_000
    assert Event.decode!(e) == [4, 4]
  end

  test "a message that kills its host is dead-lettered after max_attempts; the rest go on" do
    out = unique_name("doomed.out")
    :ok = Symbiont.subscribe(out)
    :ok = Symbiont.subscribe("symbiont.dead_letter")
    name = unique_name("doomed")

    %{pid: pid} =
      start_host!(
        name: name,
        agent: [
          name: name,
          python: "sample_agents:Doomed",
          config: %{"out" => out},
          max_attempts: 2
        ]
      )

    log =
      capture_log(fn ->
        for p <- ["a", "die", "b"], do: :ok = Symbiont.publish("doomed.in", p)

        assert_receive %Event{topic: "symbiont.dead_letter", from: ^name} = letter,
                       10_000

        letter = Event.decode!(letter)
        assert %{"reason" => "crashed", "attempts" => 2, "error" => error} = letter
        assert Symbiont.MsgPack.decode!(letter["payload"]) == "die"
        assert error["message"] =~ "exited with status 1 while handling it"
        # The host's last output lines, when it got them out before dying (a print right
        # before os._exit may be lost with the process).
        assert error["traceback"] == "" or error["traceback"] =~ "about to die"

        # At least once: "a" may come twice (handled, not yet acked, when the host died).
        got =
          Stream.repeatedly(fn ->
            assert_receive(%Event{topic: ^out} = e, 10_000) && Event.decode!(e)
          end)
          |> Enum.reduce_while([], fn
            "b", acc -> {:halt, Enum.reverse(["b" | acc])}
            other, acc -> {:cont, [other | acc]}
          end)

        assert Enum.dedup(got) == ["a", "b"]
      end)

    assert log =~ "exited with status 1"

    # "b" is out; its ack may still be on its way.
    assert wait_until(fn -> match?({:ok, %{agent: %{handled: 2}}}, Symbiont.Host.info(pid)) end)

    assert {:ok, %{crashes: crashes, status: :ready, agent: %{failed: 1, handled: 2}}} =
             Symbiont.Host.info(pid)

    # Two crashes charged to "die"; one more if "a" was still unacknowledged at the first,
    # since a crash with several deliveries in flight charges none of them.
    assert crashes in 2..3
  end
end

defmodule Symbiont.HeartbeatTest do
  # PROTOCOL.md §11: a host that sends no complete frame for three heartbeat intervals is
  # killed and restarted, and its agents' un-acked deliveries are retried; a host that is
  # merely busy keeps answering from its watchdog thread.
  use ExUnit.Case, async: true

  import ExUnit.CaptureLog
  import Symbiont.HostHelpers

  alias Symbiont.Event

  # Short enough to keep the tests quick, long enough that a host merely slowed by a loaded
  # machine (the whole suite runs at once) is not taken for a frozen one.
  @beat 250

  defp start!(python, config) do
    name = unique_name("beat")

    host =
      start_host!(
        name: name,
        heartbeat_ms: @beat,
        agent: [name: name, python: python, config: config]
      )

    Map.put(host, :agent, name)
  end

  test "a frozen host (SIGSTOP) is killed after three missed heartbeats; its event is handled" do
    out = unique_name("beat.out")
    :ok = Symbiont.subscribe(out)

    log =
      capture_log(fn ->
        # A topic of its own: count.in is where other tests' Counters count.
        topic = unique_name("beat.count.in")

        %{agent: agent, os_pid: os_pid} =
          start!("sample_agents:Counter", %{"in" => topic, "out" => out})

        {_, 0} = System.cmd("kill", ["-STOP", Integer.to_string(os_pid)])
        payload = unique_name("beat")
        :ok = Symbiont.publish(topic, payload)

        assert_receive {:host_crash, ^agent, %{reason: {:unresponsive, silent}}}, 10_000
        assert silent >= 3 * @beat
        assert_receive {:agent_start, ^agent, %{restarts: 1}}, 10_000
        assert_receive %Event{topic: ^out, from: ^agent} = event, 10_000
        assert Event.decode!(event) == %{"n" => 1, "got" => payload}
        assert wait_until(fn -> not os_alive?(os_pid) end, 5_000)
      end)

    assert log =~ "3 heartbeats missed"
  end

  @tag :tmp_dir
  test "a handler stuck in native code that holds the GIL: the host is restarted, the event retried",
       %{tmp_dir: dir} do
    out = unique_name("beat.out")
    :ok = Symbiont.subscribe(out)
    payload = unique_name("gil")
    topic = unique_name("beat.stuck.in")

    config = %{
      "in" => topic,
      "out" => out,
      "payload" => payload,
      "marker" => Path.join(dir, "tried"),
      "gil" => true
    }

    capture_log(fn ->
      %{agent: agent} = start!("sample_agents:Stuck", config)
      :ok = Symbiont.publish(topic, payload)
      assert_receive {:host_crash, ^agent, %{reason: {:unresponsive, _}}}, 10_000
      assert_receive %Event{topic: ^out, from: ^agent} = event, 10_000
      assert Event.decode!(event) == payload

      assert wait_until(fn ->
               match?(
                 {:ok, %{handled: h, failed: 0}} when h >= 1,
                 Symbiont.Agent.Server.info(agent)
               )
             end)
    end)
  end

  @tag :tmp_dir
  test "a torn frame (a length of 4096, 3 bytes of it) is no sign of life: the host is restarted at its liveness window, the event retried",
       %{tmp_dir: dir} do
    out = unique_name("beat.out")
    :ok = Symbiont.subscribe(out)
    topic = unique_name("beat.torn.in")
    config = %{"in" => topic, "out" => out, "marker" => Path.join(dir, "torn")}

    log =
      capture_log(fn ->
        %{agent: agent, os_pid: os_pid} = start!("hostile:Torn", config)
        payload = unique_name("torn")
        :ok = Symbiont.publish(topic, payload)

        # Its watchdog's pongs go on arriving, into the frame that never ends: bytes, not
        # frames. (They would fill it after some 400 heartbeats.)
        assert_receive {:host_crash, ^agent, %{reason: {:unresponsive, silent}}}, 10_000
        assert silent >= 3 * @beat
        assert_receive {:agent_start, ^agent, %{restarts: 1}}, 10_000
        assert_receive %Event{topic: ^out, from: ^agent} = event, 10_000
        assert Event.decode!(event) == payload
        assert wait_until(fn -> not os_alive?(os_pid) end, 5_000)
      end)

    assert log =~ "3 heartbeats missed"
  end

  test "a handler that runs past three intervals but leaves the interpreter running is not restarted" do
    # A topic of its own: sample_agents:Slow's "slow.in" is flooded by the backpressure tests.
    topic = unique_name("beat.slow.in")
    config = %{"in" => topic, "mode" => "slow", "delay" => 8 * @beat / 1000}
    %{agent: agent, os_pid: os_pid} = start!("scenario_agents:Stage", config)
    :ok = Symbiont.publish(topic, "x")

    assert wait_until(
             fn -> match?({:ok, %{handled: 1}}, Symbiont.Agent.Server.info(agent)) end,
             10_000
           )

    assert {:ok, %{os_pid: ^os_pid, crashes: 0}} = Symbiont.Host.info(agent)
    refute_received {:host_crash, ^agent, _}
  end

  test "an owner too busy to ping does not take its own silence for the host's" do
    # Its process suspended for six intervals (as a long GC, a frame of megabytes to
    # encode or a node at full load would): no pings went out, so none went unanswered.
    # bench/curves at 10,000 agents restarted the conductor's host every few seconds so.
    %{agent: agent, pid: pid, os_pid: os_pid} = start!("sample_agents:Counter", %{})
    :ok = :sys.suspend(pid)
    Process.sleep(6 * @beat)
    :ok = :sys.resume(pid)
    beat = :sys.get_state(pid).beat

    # Three pings after it, each answered.
    assert wait_until(fn -> :sys.get_state(pid).beat >= beat + 3 end, 10 * @beat)
    assert {:ok, %{os_pid: ^os_pid, crashes: 0}} = Symbiont.Host.info(agent)
    refute_received {:host_crash, ^agent, _}
  end

  test ":heartbeat_ms is validated" do
    assert {:error, %ArgumentError{message: msg}} =
             Symbiont.Host.validate_options(heartbeat_ms: 0)

    assert msg == "expected :heartbeat_ms to be a positive integer (milliseconds), got: 0"
  end
end

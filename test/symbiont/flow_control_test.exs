defmodule Symbiont.FlowControlTest do
  # PROTOCOL.md §8.2: what a host sends on its own (publishes, casts, messages) has a
  # window the node gives back as it takes them in, so that a host sending as fast as it
  # can is slowed to what the node absorbs instead of growing its memory. Not async: the
  # flood's dead letters would reach every test subscribed to them, and its memory
  # figures would count theirs.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog
  import Symbiont.HostHelpers

  alias Symbiont.Agent.Server
  alias Symbiont.Host.Credit

  @events 200_000

  # The largest message queue and memory of `pids`, and the node's total memory, every
  # 10 ms until :stop.
  defp sample(pids, {queue, memory, total} = max) do
    receive do
      :stop -> max
    after
      10 ->
        infos = for pid <- pids, info = Process.info(pid, [:message_queue_len, :memory]), do: info
        queue = Enum.max([queue | Enum.map(infos, & &1[:message_queue_len])])
        memory = Enum.max([memory | Enum.map(infos, & &1[:memory])])
        sample(pids, {queue, memory, max(total, :erlang.memory(:total))})
    end
  end

  test "a Python agent publishing 200,000 events as fast as it can: the node's memory stays bounded, every event is handled or dropped by the subscriber's policy" do
    input = unique_name("flood.in")
    out = unique_name("flood.out")
    # A subscriber far slower than the flood: its queue is full at once, and each event
    # it drops (the oldest) is a dead letter.
    sink =
      start_agent_host!("sink",
        python: "sample_agents:Sink",
        config: %{"in" => out},
        max_queue: 1_000
      )

    flood =
      start_agent_host!("flood",
        python: "sample_agents:Flood",
        config: %{"in" => input, "out" => out}
      )

    # The publisher's host owner (its port's data), its agent server, the subscriber's.
    watched = [flood.pid, flood.agent_pid, sink.agent_pid]
    :erlang.garbage_collect()
    base = :erlang.memory(:total)
    sampler = Task.async(fn -> sample(watched, {0, 0, 0}) end)

    capture_log(fn ->
      :ok = Symbiont.publish(input, @events)
      # The flood ends: its handler returns and is acked.
      assert wait_until(
               fn -> match?({:ok, %{handled: 1}}, Server.info(flood.agent)) end,
               60_000,
               50
             )

      assert wait_until(
               fn -> match?({:ok, %{queue: 0, in_flight: 0}}, Server.info(sink.agent)) end,
               30_000,
               50
             )
    end)

    send(sampler.pid, :stop)
    {max_queue, max_memory, max_total} = Task.await(sampler)

    # Every event got where it should: published, then handled or dropped by the
    # subscriber's overflow policy (a dead letter each).
    assert {:ok, %{published: @events, state: %{"flooded" => @events}}} = Server.info(flood.agent)
    assert {:ok, %{handled: handled, dropped: dropped}} = Server.info(sink.agent)
    assert handled + dropped == @events and handled >= 1_000

    # Bounded: a window of publishes in flight, a subscriber backlog of a few thousand
    # (Symbiont.Agent.Server's @backlog): some 5,000 messages, 13 MB, the node +20 MB.
    # Without flow control the publisher's server and the subscriber's held over 100,000
    # messages, one of them 120 MB, and the node grew by 140 MB or more.
    assert max_queue < 10_000, "a message queue reached #{max_queue}"
    assert max_memory < 40_000_000, "a process reached #{max_memory} bytes"
    assert max_total - base < 60_000_000, "the node grew by #{max_total - base} bytes"
  end

  test "casts from Python run at most a window at a time; the caster waits for them" do
    %{name: py, pid: owner} = start_host!()
    done = {:casts_done, make_ref()}
    count = fn -> length(tasks_of(owner)) end
    sampler = Task.async(fn -> sample_count(count, 0) end)

    # 5,000 casts of 100 ms: without flow control they would all run at once.
    assert {:ok, 5_000} =
             Symbiont.Python.call(py, "hostile", "cast_sleeps", [5_000, 100, self(), done],
               timeout: 60_000
             )

    assert_receive ^done, 10_000
    send(sampler.pid, :stop)
    # The window's 1,024, and the call's own task (and the sampler's count: a race).
    assert Task.await(sampler) <= Credit.window()["frames"] + 8
  end

  # The tasks the host owner `owner` started (for calls and casts of its process).
  defp tasks_of(owner) do
    for task <- Task.Supervisor.children(Symbiont.TaskSupervisor),
        {:dictionary, dict} <- [Process.info(task, :dictionary)],
        owner in Keyword.get(dict, :"$callers", []),
        do: task
  end

  defp sample_count(count, max) do
    receive do
      :stop -> max
    after
      5 -> sample_count(count, max(max, count.()))
    end
  end

  test "a host that sends past its window is stopped (a protocol error) and restarted" do
    %{name: py, pid: owner, os_pid: os_pid} = start_host!()

    log =
      capture_log(fn ->
        # Casts of 5 s: none of them is given back before the last arrives.
        assert {:error, {:host_down, {:protocol_error, {:window, 0, 1024, _}}}} =
                 Symbiont.Python.call(py, "hostile", "raw_casts", [1_100, 5_000])

        assert_receive {:host_start, ^py, %{restarts: 1}}, 10_000
      end)

    assert log =~ "one more of its casts and messages while 1024"
    assert log =~ "a full window of 1024 frames or 4194304 bytes (§8.2)"
    assert wait_until(fn -> not os_alive?(os_pid) end, 5_000)
    assert {:ok, "again"} = Symbiont.Python.call(py, "hostile", "echo", ["again"])
    # The casts that ran: there were no more than a window of them.
    sleeping = tasks_of(owner)
    assert length(sleeping) <= Credit.window()["frames"]
    Enum.each(sleeping, &Task.Supervisor.terminate_child(Symbiont.TaskSupervisor, &1))
  end

  test "a host with more than 10,000 calls to the node outstanding is stopped (a protocol error)" do
    %{name: py, pid: owner} = start_host!()

    log =
      capture_log(fn ->
        assert {:error, {:host_down, {:protocol_error, {:too_many_calls, 10_000}}}} =
                 Symbiont.Python.call(py, "hostile", "raw_calls", [10_001, 3_000])

        assert_receive {:host_start, ^py, %{restarts: 1}}, 10_000
      end)

    assert log =~ "more than 10000 calls to the node at once (PROTOCOL.md §4.1)"
    Enum.each(tasks_of(owner), &Task.Supervisor.terminate_child(Symbiont.TaskSupervisor, &1))
  end

  # PROTOCOL.md §9, flooding: what a host may send without credit (here pongs nobody
  # asked for) a port takes in as fast as the host writes it, with no flow control.
  @tag :tmp_dir
  test "a host flooding its owner with frames that need no credit is stopped (a protocol error): the owner's mailbox stays bounded, the delivery goes again",
       %{tmp_dir: dir} do
    name = unique_name("flooder")
    input = unique_name("flooder.in")
    flood = 256 * 1024 * 1024

    host =
      start_host!(
        name: name,
        max_mailbox: 100,
        agent: [
          name: name,
          python: "hostile:Flooder",
          config: %{"in" => input, "marker" => Path.join(dir, "flooded"), "bytes" => flood}
        ]
      )

    :erlang.garbage_collect()
    base = :erlang.memory(:total)
    sampler = Task.async(fn -> sample([host.pid], {0, 0, 0}) end)

    log =
      capture_log(fn ->
        :ok = Symbiont.publish(input, 1)

        assert_receive {:host_crash, ^name,
                        %{reason: {:protocol_error, {:flooding, waiting, 100}}}},
                       20_000

        assert waiting > 100
        assert_receive {:host_start, ^name, %{restarts: 1}}, 10_000
        # The delivery it was flooding on goes again, to the new process, like after
        # any protocol error.
        assert wait_until(
                 fn -> match?({:ok, %{state: %{"seen" => [1]}}}, Server.info(name)) end,
                 10_000
               )
      end)

    send(sampler.pid, :stop)
    {max_queue, _max_memory, max_total} = Task.await(sampler)

    assert log =~
             ~r/flooding: \d+ messages of its port waiting in the owner's mailbox \(at most 100, its :max_mailbox\)/

    # Without the bound, the owner held some 4,000 messages of 64 KiB (all 256 MiB of the
    # flood) and took seconds to decode them.
    assert max_queue < 2_000, "the owner's mailbox reached #{max_queue}"
    assert max_total - base < 128_000_000, "the node grew by #{max_total - base} bytes"
  end

  test "a bad :max_mailbox is refused, naming it" do
    assert {:error, %ArgumentError{message: message}} =
             Symbiont.Host.validate_options(max_mailbox: 0)

    assert message == "expected :max_mailbox to be a positive integer (messages), got: 0"
  end

  test "the window's arithmetic: full in frames or in bytes, given back a quarter at a time" do
    frames = Credit.window()["frames"]
    bytes = Credit.window()["bytes"]

    full =
      Enum.reduce(1..frames, %{}, fn _, counts ->
        {:ok, counts} = Credit.charge(counts, 3, 1)
        counts
      end)

    assert {:error, {:window, 3, ^frames, ^frames}} = Credit.charge(full, 3, 1)
    # Another slot has a window of its own.
    assert {:ok, _} = Credit.charge(full, 4, 1)
    # The last one may take the bytes past the window; then it is full.
    {:ok, big} = Credit.charge(%{}, 3, bytes + 10)
    assert {:error, {:window, 3, 1, _}} = Credit.charge(big, 3, 1)
    # Given back: room again; more than was sent does not go below nothing.
    assert {:ok, _} = full |> Credit.give_back(3, 1, 1) |> Credit.charge(3, 1)
    assert Credit.give_back(full, 3, 2 * frames, 0)[3] == {0, frames}
    assert Credit.give_back(full, 9, 1, 1) == full
    refute Credit.due?(div(frames, 4) - 1, div(bytes, 4) - 1)
    assert Credit.due?(div(frames, 4), 0) and Credit.due?(0, div(bytes, 4))
  end
end

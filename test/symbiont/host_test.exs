defmodule Symbiont.HostTest do
  # Hostile Python hosts: protocol errors, crashes and kills. Each ends in a clear error, a
  # restarted host and an untouched BEAM (a bystander host keeps its OS process).
  use ExUnit.Case, async: true

  import ExUnit.CaptureLog
  import Symbiont.HostHelpers

  alias Symbiont.Python

  setup do
    {:ok, host: start_host!(), bystander: start_host!(name: unique_name("bystander"))}
  end

  @protocol_errors [
    {"oversize", :oversize, "frame of 2147483632 bytes exceeds the limit of 67108864"},
    {"garbage", :undecodable, "payload is not valid msgpack: byte 0xC1 is not a msgpack type"},
    {"truncated_payload", :undecodable, "payload is not valid msgpack: input ends inside a str"},
    {"unknown_kind", :unknown_kind, ~s(unknown frame kind "bogus")},
    {"bad_arity", :bad_frame, ~s(bad "reply" frame: [1])},
    {"bad_error_map", :bad_frame, ~s(bad "error" frame: an error must be a map with "type")},
    {"second_ready", :after_ready, ~s(a second "ready" frame, after "ready")}
  ]

  for {function, tag, text} <- @protocol_errors do
    test "a host that sends #{function} is stopped with a clear error and restarted",
         %{host: %{name: py, os_pid: os_pid}, bystander: bystander} do
      log =
        capture_log(fn ->
          assert {:error, {:host_down, {:protocol_error, reason}}} =
                   Python.call(py, "hostile", unquote(function), [])

          assert elem(reason, 0) == unquote(tag)
          assert_receive {:host_start, ^py, %{restarts: 1, os_pid: new_os_pid}}, 10_000
          assert new_os_pid != os_pid
        end)

      assert log =~ ~s(protocol error from host "#{py}": #{unquote(text)})
      assert wait_until(fn -> not os_alive?(os_pid) end, 5_000)
      assert {:ok, "again"} = Python.call(py, "hostile", "echo", ["again"])
      assert_untouched(bystander)
    end
  end

  @tag timeout: 60_000
  test "2,000 mutated frames the decoder accepts are handled or dropped; the owner and its agent stay up" do
    seed = Symbiont.MsgPackGen.seed!(5_005)

    %{name: py, pid: pid, os_pid: os_pid, agent_pid: agent} =
      start_host!(agent: [name: unique_name("fuzzed"), python: "sample_agents:Counter"])

    # Kinds that end the host by design (a second ready or fatal) have tests of their own.
    payloads =
      Stream.repeatedly(fn ->
        Symbiont.FrameGen.valid_frame(Enum.random(Symbiont.FrameGen.kinds()))
      end)
      |> Stream.map(
        &(&1
          |> Symbiont.FrameGen.mutate_term()
          |> Symbiont.MsgPack.encode!(iodata: false))
      )
      |> Stream.filter(
        &match?(
          {:ok, f} when elem(f, 0) not in [:ready, :fatal],
          Symbiont.Host.Protocol.decode(&1)
        )
      )
      |> Enum.take(2_000)
      |> Enum.map(&%Symbiont.MsgPack.Bin{data: &1})

    capture_log(fn ->
      # A mutated reply may answer this very call first: any answer will do, a crash not.
      done = {:fuzz_done, make_ref()}

      result =
        Python.call(py, "hostile", "write_frames", [payloads, self(), done], timeout: 30_000)

      assert match?({:ok, _}, result) or match?({:error, %Python.Error{}}, result),
             "seed #{seed}: #{inspect(result, limit: 5)}"

      # Frames come in order: past this, no mutated reply can answer the next call.
      assert_receive ^done, 10_000

      assert {:ok, ^os_pid} = Python.call(py, "hostile", "os_pid", [])

      # The calls and casts among the frames run in tasks; their failures are logged here.
      # Only this host's: other tests' tasks may run for as long as they like.
      for task <- Task.Supervisor.children(Symbiont.TaskSupervisor),
          pid in callers(task) do
        ref = Process.monitor(task)
        assert_receive {:DOWN, ^ref, :process, _, _}, 5_000
      end
    end)

    refute_received {:host_crash, ^py, _}, "seed #{seed}"
    assert Process.alive?(pid) and Process.alive?(agent)
    assert {:ok, %{crashes: 0}} = Symbiont.Host.info(py)
  end

  test "a crash reports the exit status and the last output lines, then restarts",
       %{host: %{name: py}, bystander: bystander} do
    log =
      capture_log(fn ->
        # Output is forwarded by threads of the host, which an abrupt exit takes along:
        # the lines are in before it exits.
        assert {:ok, "said"} = Python.call(py, "hostile", "say", ["bye"])
        await_logs(py, ~w(out:bye err:bye raw:bye))
        assert {:error, {:host_down, {:exit, 7}}} = Python.call(py, "hostile", "exit_now", [7])

        assert_receive {:host_crash, ^py, %{status: 7}}
        assert_receive {:host_start, ^py, %{restarts: 1}}, 10_000
      end)

    assert log =~ ~r/host "#{py}" \(os pid \d+\) exited with status 7 after \d+ ms; last output:/
    assert log =~ "out:bye"
    assert log =~ "err:bye"
    assert {:ok, info} = Symbiont.Host.info(py)
    assert %{crashes: 1, last_crash: %{status: 7, logs: logs}} = info
    assert "raw:bye" in logs
    assert_untouched(bystander)
  end

  test "a truncated stream followed by an exit is a crash with its status", %{host: %{name: py}} do
    capture_log(fn ->
      assert {:error, {:host_down, {:exit, 1}}} =
               Python.call(py, "hostile", "truncated_stream", [])

      assert_receive {:host_start, ^py, %{restarts: 1}}, 10_000
    end)
  end

  test "kill -9 of the OS process: restarted, the next call is served",
       %{host: %{name: py, os_pid: os_pid}, bystander: bystander} do
    capture_log(fn ->
      Symbiont.Host.Reaper.kill(os_pid)
      assert_receive {:host_crash, ^py, %{status: 137}}, 5_000
      assert_receive {:host_start, ^py, %{restarts: 1, os_pid: new_os_pid}}, 10_000
      assert {:ok, ^new_os_pid} = Python.call(py, "hostile", "os_pid", [])
    end)

    assert_untouched(bystander)
  end

  test "a restart after a crash is published on symbiont.remediation, by the supervisor",
       %{host: %{name: py, os_pid: os_pid}} do
    :ok = Symbiont.subscribe(Symbiont.Remediation.topic())

    capture_log(fn ->
      Symbiont.Host.Reaper.kill(os_pid)
      # Other tests' hosts crash too: the first event about this one.
      assert %{"action" => "restart", "by" => "supervisor"} = payload = remediation_of(py)

      assert payload["reason"] =~ killed()
      assert payload["evidence"]["restarts"] == 1
    end)
  end

  test "calls made while the host restarts wait for it", %{host: %{name: py, os_pid: os_pid}} do
    capture_log(fn ->
      Symbiont.Host.Reaper.kill(os_pid)
      assert_receive {:host_crash, ^py, _}, 5_000
      assert {:ok, "waited"} = Python.call(py, "hostile", "echo", ["waited"], timeout: 10_000)
    end)
  end

  test "repeated crashes back off", %{host: %{name: py}} do
    capture_log(fn ->
      for n <- 1..3 do
        assert {:error, {:host_down, {:exit, 3}}} = Python.call(py, "hostile", "exit_now", [3])
        assert_receive {:host_start, ^py, %{restarts: ^n}}, 10_000
      end
    end)

    assert {:ok, %{crashes: 3}} = Symbiont.Host.info(py)
  end

  test "print, stderr and raw fd writes become log lines tagged with the host", %{
    host: %{name: py}
  } do
    Logger.put_module_level(Symbiont.Host, :info)
    on_exit(fn -> Logger.delete_module_level(Symbiont.Host) end)

    log =
      capture_log(fn ->
        assert {:ok, "said"} = Python.call(py, "hostile", "say", ["hello"])
        # Output is forwarded by threads of its own, so it may arrive after the reply.
        await_logs(py, ~w(out:hello err:hello raw:hello))
      end)

    for line <- ["out:hello", "err:hello", "raw:hello"] do
      assert log =~ ~r/host=#{py}.*#{line}/
    end
  end

  test "a host stopped by its supervisor leaves no OS process", %{
    host: %{pid: pid, os_pid: os_pid}
  } do
    ref = Process.monitor(pid)
    :ok = GenServer.stop(pid)
    assert_receive {:DOWN, ^ref, :process, ^pid, :normal}
    assert wait_until(fn -> not os_alive?(os_pid) end, 5_000)
  end

  test "a host stuck in native code is killed after the grace period" do
    %{name: py, pid: pid, os_pid: os_pid} = start_host!(grace: 300)
    Python.cast(py, "hostile", "spin_native", [])
    # Let the cast reach Python before the owner goes.
    assert {:error, :timeout} = Python.call(py, "hostile", "echo", [1], timeout: 200)
    :ok = GenServer.stop(pid)
    assert wait_until(fn -> not os_alive?(os_pid) end, 5_000)
  end

  defp assert_untouched(%{name: name, pid: pid, os_pid: os_pid}) do
    assert Process.alive?(pid)
    assert {:ok, ^os_pid} = Python.call(name, "hostile", "os_pid", [])
    assert {:ok, %{crashes: 0}} = Symbiont.Host.info(name)
  end

  # The processes a task was started for ([] for one that has ended).
  defp callers(task) do
    case Process.info(task, :dictionary) do
      {:dictionary, dict} -> Keyword.get(dict, :"$callers", [])
      nil -> []
    end
  end

  # Waits until the host's recent logs hold every one of `lines`.
  defp await_logs(host, lines) do
    assert wait_until(fn ->
             {:ok, %{recent_logs: logs}} = Symbiont.Host.info(host)
             Enum.all?(lines, &(&1 in logs))
           end)
  end

  defp remediation_of(host) do
    assert_receive %Symbiont.Event{topic: "symbiont.remediation"} = event, 5_000

    case Symbiont.Event.decode!(event) do
      %{"host" => ^host} = payload -> payload
      _other -> remediation_of(host)
    end
  end
end

defmodule Symbiont.OutputLimitTest do
  # A host's output reaches the log within its :output_limit: real agents print tens of
  # MiB, the log written stays small, one line per summary period says what was
  # dropped, and the agent serves on. The owner holds a host that does not keep to the
  # limit to twice it.
  use ExUnit.Case, async: true

  import ExUnit.CaptureLog
  import Symbiont.HostHelpers

  alias Symbiont.Host.Output
  alias Symbiont.Python

  defmodule Meter do
    @moduledoc false
    # An Erlang :logger handler: counts the lines and bytes logged about one host, and
    # sends the test its lines about dropped output.
    def log(%{meta: meta, msg: msg}, %{config: %{host: host, counters: counters, pid: pid}}) do
      if meta[:host] == host do
        text = text(msg)
        :counters.add(counters, 1, 1)
        :counters.add(counters, 2, byte_size(text))
        if text =~ "dropped ", do: send(pid, {:dropped, text})
      end

      :ok
    end

    defp text({:string, chardata}), do: IO.chardata_to_string(chardata)
    defp text({format, args}) when is_list(args), do: to_string(:io_lib.format(format, args))
    defp text({:report, report}), do: inspect(report)
  end

  @limit Map.new(Output.defaults())
  @summary_ms 300

  # Starts counting what is logged about `host`: returns the counters (lines, bytes).
  defp meter!(host) do
    counters = :counters.new(2, [])
    id = :"meter_#{System.unique_integer([:positive])}"
    config = %{host: host, counters: counters, pid: self()}
    :ok = :logger.add_handler(id, Meter, %{config: config, level: :all})
    on_exit(fn -> :logger.remove_handler(id) end)
    counters
  end

  # Runs `fun` with what it logs kept off the console; returns its result.
  defp quietly(fun) do
    {result, _log} = with_log(fun)
    result
  end

  defp logged(counters),
    do: %{lines: :counters.get(counters, 1), bytes: :counters.get(counters, 2)}

  # Waits until the summary lines and the lines logged account for `total` lines in all;
  # returns the summaries. Both are read again until then: the host's pump may still be
  # reading the pipe when the agent has answered, and a line it reads later is logged
  # (the bucket refilled meanwhile) or dropped and summed up then.
  defp await_accounted(total, counters, seen \\ [], deadline \\ nil) do
    # Bounded generously: a fresh clone's first run under load was once slower than 10 s.
    deadline = deadline || System.monotonic_time(:millisecond) + @summary_ms + 30_000
    accounted = dropped_lines(seen) + logged(counters).lines

    cond do
      accounted >= total ->
        Enum.reverse(seen)

      System.monotonic_time(:millisecond) > deadline ->
        flunk(
          "#{accounted} of #{total} lines logged or summed up by the deadline; " <>
            "summaries: #{inspect(Enum.reverse(seen))}"
        )

      true ->
        receive do
          {:dropped, text} -> await_accounted(total, counters, [text | seen], deadline)
        after
          100 -> await_accounted(total, counters, seen, deadline)
        end
    end
  end

  defp dropped_lines(texts) do
    for text <- texts, reduce: 0 do
      acc ->
        [_, n] = Regex.run(~r/dropped ([\d,]+) lines/, text)
        acc + String.to_integer(String.replace(n, ",", ""))
    end
  end

  defp elapsed_s(t0), do: (System.monotonic_time(:millisecond) - t0) / 1000

  defp loud_agent!(counters_for) do
    [in_topic, out] = [unique_name("loud.in"), unique_name("loud.out")]
    name = unique_name("loud")
    counters = counters_for.(name)
    :ok = Symbiont.subscribe(out)

    start_host!(
      name: name,
      output_limit: [summary_ms: @summary_ms],
      agent: [name: name, python: "sample_agents:Loud", config: %{"in" => in_topic, "out" => out}]
    )

    %{name: name, in: in_topic, out: out, counters: counters}
  end

  defp ask(%{in: in_topic, out: out}, value) do
    :ok = Symbiont.publish(in_topic, value)
    assert_receive %Symbiont.Event{topic: ^out} = e, 60_000
    assert Symbiont.Event.decode!(e) == value
  end

  # What the host's process may send in `seconds` (since before it started), and the
  # summary lines on top.
  defp host_bound(seconds),
    do: @limit.burst_bytes + round(@limit.bytes_per_s * seconds) + 64 * 1024

  test "an agent writing 64 MiB to stderr: the log stays small, summaries count the rest, it serves on" do
    t0 = System.monotonic_time(:millisecond)
    agent = loud_agent!(&meter!/1)

    # Each 1 KiB line is logged or counted as dropped.
    summaries =
      quietly(fn ->
        ask(agent, %{"mb" => 64})
        await_accounted(64 * 1024, agent.counters)
      end)

    %{bytes: bytes} = logged(agent.counters)
    assert bytes <= host_bound(elapsed_s(t0))
    assert bytes >= @limit.burst_lines * 1023

    assert [first | _] = summaries

    assert first =~
             ~r/^symbiont host '#{agent.name}' dropped [\d,]+ lines \([\d.]+ MiB\) of output in the last [\d.]+ s: over its output_limit of 100 lines\/s or 64.0 KiB\/s$/

    # None of it came from the owner's own limit: the host kept to its own.
    refute Enum.any?(summaries, &(&1 =~ "twice the host's"))

    # The agent serves on, in the same process.
    ask(agent, %{"ping" => 1})
    assert {:ok, %{crashes: 0, status: :ready}} = Symbiont.Host.info(agent.name)
  end

  test "an agent logging 20,000 records through Python's logging: bounded the same way" do
    t0 = System.monotonic_time(:millisecond)
    agent = loud_agent!(&meter!/1)

    quietly(fn ->
      ask(agent, %{"records" => 20_000})
      await_accounted(20_000, agent.counters)
    end)

    assert logged(agent.counters).bytes <= host_bound(elapsed_s(t0))
    ask(agent, %{"ping" => 2})
  end

  test "a host that sends log frames past its limit itself: the owner logs twice the limit at most" do
    t0 = System.monotonic_time(:millisecond)
    name = unique_name("noisy")
    counters = meter!(name)
    %{name: ^name} = start_host!(name: name, output_limit: [summary_ms: @summary_ms])

    {%{lines: lines, bytes: bytes}, [summary | _]} =
      quietly(fn ->
        assert {:ok, 20_000} =
                 Python.call(name, "hostile", "log_frames", [20_000, 1_000], timeout: 30_000)

        summaries = await_accounted(20_000, counters)
        {logged(counters), summaries}
      end)

    assert summary =~
             ~r/^host "#{name}" dropped [\d,]+ lines \([\d.]+ MiB\) of output in the last [\d.]+ s: over 200 lines\/s or 128.0 KiB\/s, twice the host's :output_limit/

    assert lines <= 2 * @limit.burst_lines + 200 * elapsed_s(t0) + 1
    assert bytes <= 2 * host_bound(elapsed_s(t0))
    assert {:ok, %{crashes: 0, status: :ready}} = Symbiont.Host.info(name)
  end

  test "a long line is cut at max_line, in the log and in the last lines a crash report keeps" do
    name = unique_name("long")
    counters = meter!(name)
    start_host!(name: name, output_limit: [max_line: 1_000])

    quietly(fn ->
      # Through the host's output limit (a line of stderr)...
      assert {:ok, "said"} =
               Python.call(name, "hostile", "say_long", [3_000_000], timeout: 30_000)

      # ...and around it: the owner cuts it too.
      assert {:ok, 1} = Python.call(name, "hostile", "log_frames", [1, 200_000])
    end)

    assert wait_until(fn ->
             {:ok, %{recent_logs: logs}} = Symbiont.Host.info(name)
             "short after long" in logs and Enum.any?(logs, &(&1 =~ "zzz"))
           end)

    {:ok, %{recent_logs: logs}} = Symbiont.Host.info(name)
    assert (String.duplicate("L", 1_000) <> " [truncated 2,999,000 bytes]") in logs
    assert (String.duplicate("z", 1_000) <> " [truncated 199,000 bytes]") in logs
    assert Enum.all?(logs, &(byte_size(&1) < 1_100))
    assert logged(counters).bytes < 10_000
  end

  test "normal output is logged as it was written" do
    name = unique_name("quiet")
    start_host!(name: name)

    log =
      capture_log(fn ->
        assert {:ok, "said"} = Python.call(name, "hostile", "say", ["hello"])

        assert wait_until(fn ->
                 {:ok, %{recent_logs: logs}} = Symbiont.Host.info(name)
                 "err:hello" in logs and "raw:hello" in logs
               end)
      end)

    assert log =~ "err:hello"
    # (The log is the node's: lines of tests running meanwhile are in it too.)
    refute Enum.any?(String.split(log, "\n"), &(&1 =~ name and &1 =~ "dropped"))
  end

  test "a bad :output_limit is refused, naming the key" do
    bad = [
      {[lines_per_s: 0],
       "expected :lines_per_s of :output_limit to be a positive integer, got: 0"},
      {[lines: 1], "unknown key :lines in :output_limit, allowed: :lines_per_s, :burst_lines"},
      {[max_line: 2_000_000],
       "expected :max_line of :output_limit (2000000) to be at most its :burst_bytes (1048576)"},
      {:loud, "expected the :output_limit option to be a keyword list"}
    ]

    for {value, message} <- bad do
      assert {:error, %ArgumentError{message: got}} =
               Symbiont.Host.validate_options(output_limit: value)

      assert got =~ message
    end
  end

  test "Output.cut keeps whole characters, and says how much it cut" do
    limit = %{max_line: 10}
    assert Output.cut("short", limit) == "short"
    # Up to the marker's room over max_line goes untouched: the host's own marker.
    assert Output.cut(String.duplicate("a", 74), limit) == String.duplicate("a", 74)
    assert Output.cut(String.duplicate("é", 50), limit) == "ééééé [truncated 90 bytes]"
    assert Output.cut("a" <> String.duplicate("€", 40), limit) == "a€€€ [truncated 111 bytes]"
    assert Output.count(1_234_567) == "1,234,567"
    assert Output.size(47_395_635) == "45.2 MiB"
  end
end

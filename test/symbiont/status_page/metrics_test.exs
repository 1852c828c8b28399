defmodule Symbiont.StatusPage.MetricsTest do
  # /metrics of the status page (issue 21, point 3), read by real parsers of the
  # Prometheus text format: prometheus_client's (PyPI, in the dev extra) always, and
  # `promtool check metrics` (Debian's prometheus package) where it is installed.
  #
  # Not async: the page's names are the node's own, and the topic cap is checked on
  # counts no other test adds to meanwhile.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog
  import Symbiont.HostHelpers

  alias Symbiont.StatusPage

  doctest Symbiont.StatusPage.Metrics

  setup do
    start_supervised!({StatusPage, port: 0})
    %{url: StatusPage.url() <> "metrics"}
  end

  @tag :tmp_dir
  test "agents, hosts and topics in the Prometheus text format, escaped, bounded", %{
    url: url,
    tmp_dir: dir
  } do
    # A topic no label may hold as it is: a quote, a backslash, a line feed, and a byte
    # that is not UTF-8.
    odd = ~s(odd."quoted"\\back\nline) <> <<0xFF>>
    :ok = Symbiont.publish(odd, 1)

    [counted, failing_in] = [unique_name("metrics.in"), unique_name("metrics.failing")]

    %{name: counter} =
      start_app_agent!("met-counter", python: "sample_agents:Counter", config: %{"in" => counted})

    %{name: failing} =
      start_app_agent!("met-failing",
        python: "sample_agents:Failing",
        config: %{"in" => failing_in},
        max_attempts: 1
      )

    for n <- 1..5, do: :ok = Symbiont.publish(counted, n)

    capture_log(fn ->
      :ok = Symbiont.publish(failing_in, "bad")
      assert wait_until(fn -> agent(failing).failed == 1 end, 10_000)
    end)

    assert wait_until(fn -> agent(counter).handled == 5 end, 10_000)

    # More topics than the cap: the first 100 seen keep a series, the rest share _other.
    for i <- 1..120, do: :ok = Symbiont.publish("metrics.cap.#{i}", i)

    {:ok, {{_, 200, _}, headers, body}} =
      :httpc.request(:get, {String.to_charlist(url), []}, [], body_format: :binary)

    assert {~c"content-type", ~c"text/plain; version=0.0.4; charset=utf-8"} in headers

    file = Path.join(dir, "metrics.txt")
    File.write!(file, body)
    families = parse(file)

    assert sample(families, "symbiont_agent_handled_total", agent: counter, replica: counter) ==
             5.0

    assert sample(families, "symbiont_agent_failed_total", agent: failing, replica: failing) ==
             1.0

    assert sample(families, "symbiont_agent_queue", agent: counter, replica: counter) == 0.0
    assert sample(families, "symbiont_agent_in_flight", agent: counter, replica: counter) == 0.0

    assert sample(families, "symbiont_agent_crashes_total", agent: counter, replica: counter) ==
             0.0

    # The histogram: 5 handled, every bucket counted up to +Inf.
    hist = "symbiont_agent_handle_duration_seconds"
    assert type(families, hist) == "histogram"
    assert sample(families, hist <> "_count", agent: counter) == 5.0
    assert sample(families, hist <> "_bucket", agent: counter, le: "+Inf") == 5.0
    assert sample(families, hist <> "_sum", agent: counter) > 0
    # A failed handler's delivery ends its span too (an :exception).
    assert sample(families, hist <> "_count", agent: failing) == 1.0

    assert sample(families, "symbiont_host_rss_bytes", host: counter) > 1_000_000
    assert sample(families, "symbiont_host_restarts_total", host: counter) == 0.0

    # The parser gives the label back as it was (U+FFFD for the byte that is not UTF-8).
    publishes = samples(families, "symbiont_mesh_publishes_total")
    odd_label = ~s(odd."quoted"\\back\nline\uFFFD)
    assert Enum.any?(publishes, &(&1["labels"] == %{"topic" => odd_label} and &1["value"] == 1.0))
    assert length(publishes) == 101
    assert Enum.find(publishes, &(&1["labels"] == %{"topic" => "_other"}))["value"] >= 20.0

    # Debian's promtool, where it is installed (it lints too).
    case System.find_executable("promtool") do
      nil ->
        IO.puts(
          "promtool is not installed (Debian: apt-get install prometheus): its check skipped"
        )

      promtool ->
        assert {out, 0} =
                 System.cmd("sh", ["-c", "#{promtool} check metrics < #{file}"],
                   stderr_to_stdout: true
                 )

        assert out == ""
    end
  end

  defp agent(id), do: Enum.find(Symbiont.agents(), &(&1.id == id))

  # The families as prometheus_client's parser reads them: [%{"name", "type", "samples"}].
  defp parse(file) do
    {:ok, python} = Symbiont.Config.python_executable()

    script = """
    import json, sys
    from prometheus_client.parser import text_string_to_metric_families
    text = open(sys.argv[1], encoding="utf-8").read()
    print(json.dumps([
        {"name": f.name, "type": f.type,
         "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples]}
        for f in text_string_to_metric_families(text)
    ]))
    """

    {out, 0} = System.cmd(python, ["-c", script, file])
    Symbiont.StatusPage.JSON.decode!(out)
  end

  defp family(families, name),
    do:
      Enum.find(families, &(&1["name"] == String.replace_suffix(name, "_total", ""))) ||
        flunk("no family #{name}")

  defp type(families, name), do: family(families, name)["type"]

  defp samples(families, name) do
    base = name |> String.replace_suffix("_total", "")

    families
    |> Enum.flat_map(& &1["samples"])
    |> Enum.filter(&(&1["name"] == name or (&1["name"] == base and name == base)))
    |> tap(fn found -> found != [] or flunk("no samples of #{name} (of #{base})") end)
  end

  defp sample(families, name, labels) do
    labels = Map.new(labels, fn {k, v} -> {to_string(k), v} end)

    case Enum.find(samples(families, name), &(&1["labels"] == labels)) do
      nil -> flunk("no sample #{name}#{inspect(labels)}")
      s -> s["value"]
    end
  end
end

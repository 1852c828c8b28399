defmodule Symbiont.StatusPageTest do
  # The status page on a free port, with real agents in real hosts: its JSON, its event
  # stream read from a plain socket, and the page itself in a real headless Chromium.
  use ExUnit.Case, async: true

  import ExUnit.CaptureLog
  import Symbiont.HostHelpers

  alias Symbiont.{Chromium, StatusPage}
  alias Symbiont.StatusPage.JSON

  doctest StatusPage

  describe "a running page" do
    setup do
      start_supervised!({StatusPage, port: 0})
      url = StatusPage.url()
      assert %URI{host: "127.0.0.1", port: port} = URI.parse(url)
      assert port > 0
      %{url: url}
    end

    test "/status.json has the agents with their health, the hosts and the topology", %{
      url: url
    } do
      topic = unique_name("moody.in")

      %{name: name} =
        start_app_agent!("page-json", python: "sample_agents:Moody", config: %{"in" => topic})

      assert %{"agents" => agents, "hosts" => hosts, "topology" => topology} = get_json(url)

      assert %{
               "status" => "ready",
               "role" => "stable",
               "health" => "healthy",
               "crashes" => 0,
               "restarts" => 0,
               "topics" => [^topic]
             } = Enum.find(agents, &(&1["id"] == name))

      assert Enum.any?(hosts, &(&1["name"] == name and &1["agents"] == [name]))

      assert Enum.any?(topology["topics"], fn t ->
               t["topic"] == topic and Enum.any?(t["subscribers"], &(&1["name"] == name))
             end)

      # The health column is the agent's health (Symbiont.Observation): a health event
      # about it that it did not say is not.
      :ok = Symbiont.Health.publish("degraded", name, "slow disk")
      assert wait_until(fn -> Symbiont.Health.History.latest()[name]["reason"] == "slow disk" end)
      assert %{"health" => "healthy"} = Enum.find(get_json(url)["agents"], &(&1["id"] == name))

      # What the agent says itself is.
      :ok = Symbiont.publish(topic, ["degraded", "slow disk"])

      assert wait_until(fn ->
               match?(
                 %{"health" => "degraded", "health_reason" => "slow disk"},
                 Enum.find(get_json(url)["agents"], &(&1["id"] == name))
               )
             end)

      # A replica retired on a scale in is not the agent's health: once the history has
      # the event, the page still says degraded.
      :ok = Symbiont.Health.publish("retired", name, "scaled in", %{"id" => name <> "#2"})

      assert wait_until(fn ->
               match?([%{"kind" => "retired"} | _], Symbiont.Health.History.of(name))
             end)

      assert %{"health" => "degraded"} = Enum.find(get_json(url)["agents"], &(&1["id"] == name))

      # A quarantined agent has left its host's slot, and is still listed.
      capture_log(fn ->
        :ok = Symbiont.Agent.Server.quarantine(name, "crash loop")
      end)

      assert %{"health" => "quarantined", "host" => ^name} =
               Enum.find(get_json(url)["agents"], &(&1["id"] == name))
    end

    test "/events streams health and remediation events as they happen; a reconnect resumes",
         %{url: url} do
      agent = unique_name("page-sse")
      stream = open_stream(url)
      :ok = Symbiont.Remediation.publish("restart", agent, "because", by: "operator")

      {first, stream} = await_event(stream, &(&1.data["event"]["agent"] == agent))
      assert first.event == "remediation"

      assert %{"action" => "restart", "by" => "operator", "reason" => "because"} =
               first.data["event"]

      :ok = Symbiont.Health.publish("failing", agent, "no disk")
      {second, _stream} = await_event(stream, &(&1.data["event"]["agent"] == agent))
      assert {second.event, second.data["event"]["kind"]} == {"health", "failing"}
      assert second.id > first.id

      # A browser that reconnects says the last id it saw, and gets only what followed.
      again = open_stream(url, [{"Last-Event-ID", Integer.to_string(first.id)}])
      {resumed, _again} = await_event(again, &(&1.data["event"]["agent"] == agent))
      assert resumed.id == second.id
    end

    test "other paths and methods get a clear answer", %{url: url} do
      assert {404, body} = request(:get, url <> "nope")
      assert body =~ "no such page: /nope"
      assert {405, _} = request(:post, url)
      assert {200, "<svg " <> _} = request(:get, url <> "topology.svg")
    end

    test "only requests for this machine's names are answered (no DNS rebinding)", %{url: url} do
      %URI{port: port} = URI.parse(url)

      for host <- ["127.0.0.1", "127.0.0.1:#{port}", "localhost", "LocalHost:#{port}"],
          path <- ["/", "/status.json", "/topology.svg", "/metrics", "/nope"] do
        assert {status, _} = raw_get(port, path, host)
        assert status in [200, 404], "Host: #{host} #{path} got #{status}"
      end

      refused = [
        "evil.example",
        "evil.example:#{port}",
        "127.0.0.1.evil.example",
        "localhost.evil.example:#{port}",
        "[::1]:#{port}",
        "",
        nil
      ]

      for host <- refused,
          path <- ["/", "/status.json", "/topology.svg", "/metrics", "/events"] do
        assert {403, body} = raw_get(port, path, host), "Host: #{inspect(host)} #{path}"
        assert body =~ "answers only requests for 127.0.0.1, localhost"
        refute body =~ "agents"
      end
    end

    @tag :browser
    @tag :tmp_dir
    test "in Chromium: the agents are listed, and a killed host's restart is pushed to the open page",
         %{url: url, tmp_dir: dir} do
      [victim, other] =
        for p <- ~w(page-a page-b), do: start_app_agent!(p, python: "sample_agents:Counter")

      tab = dir |> Chromium.start!() |> Chromium.navigate!(url)

      for agent <- [victim, other],
          do: Chromium.wait_for!(tab, ~s(#agents tr[data-agent="#{agent.name}"]))

      # The stream is open; a mark left in this document shows later that it is the same
      # one: what follows arrives without a reload.
      Chromium.wait_for!(tab, ~s(body[data-live="open"]))
      Chromium.eval!(tab, "window.symbiontTestMark = 42")
      victim_name = victim.name

      capture_log(fn ->
        Symbiont.Host.Reaper.kill(victim.os_pid)
        assert_receive {:host_start, ^victim_name, %{restarts: 1}}, 10_000
      end)

      restart =
        Chromium.wait_for!(
          tab,
          ~s(#feed li[data-type="remediation"][data-action="restart"][data-host="#{victim.name}"])
        )

      assert restart =~ "restart #{victim.name} by supervisor"
      assert restart =~ killed()
      # The table follows: the agent crashed once, and was restarted once.
      Chromium.wait_for!(
        tab,
        ~s(#agents tr[data-agent="#{victim.name}"][data-crashes="1"][data-restarts="1"])
      )

      assert Chromium.eval!(tab, "window.symbiontTestMark") == 42

      path = Chromium.screenshot!(tab, Path.join(dir, "status_page.png"))
      assert <<0x89, "PNG", _::binary>> = File.read!(path)
      IO.puts("\nstatus page screenshot: #{path}")
    end
  end

  test "the page is not running unless started" do
    assert StatusPage.url() == nil
  end

  test "a port in use is logged, and the node runs on without its page" do
    {:ok, taken} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
    {:ok, port} = :inet.port(taken)

    log = capture_log(fn -> start_supervised!({StatusPage, port: port}) end)

    assert log =~ "the status page could not listen on 127.0.0.1:#{port}: the port is in use"
    assert StatusPage.url() == nil
  end

  test "a name given in :hosts is answered too" do
    start_supervised!({StatusPage, port: 0, hosts: ["Symbiont.Example"]})
    %URI{port: port} = URI.parse(StatusPage.url())

    assert {200, "{" <> _} = raw_get(port, "/status.json", "symbiont.example:#{port}")
    assert {403, _} = raw_get(port, "/status.json", "other.example")
  end

  test "bad options are refused upfront, naming the option" do
    assert_raise ArgumentError,
                 ~r/expected :keep of the status page to be a positive integer/,
                 fn ->
                   StatusPage.start_link(keep: 0)
                 end

    assert_raise ArgumentError, ~r/unknown option :prot of the status page/, fn ->
      StatusPage.start_link(prot: 80)
    end
  end

  ## HTTP from plain sockets: what a client sees on the wire.

  defp request(method, url) do
    {:ok, {{_, status, _}, _headers, body}} =
      :httpc.request(method, request_of(method, url), [timeout: 10_000], body_format: :binary)

    {status, body}
  end

  defp request_of(:post, url), do: {String.to_charlist(url), [], ~c"text/plain", ""}
  defp request_of(_, url), do: {String.to_charlist(url), []}

  # A GET with the Host header given (nil: none, over HTTP/1.0), on a plain socket.
  defp raw_get(port, path, host) do
    {:ok, socket} = :gen_tcp.connect(~c"127.0.0.1", port, [:binary, active: false], 5_000)

    head =
      if host,
        do: "GET #{path} HTTP/1.1\r\nHost: #{host}\r\nConnection: close\r\n\r\n",
        else: "GET #{path} HTTP/1.0\r\n\r\n"

    :ok = :gen_tcp.send(socket, head)
    response = read_all(socket, "")
    :gen_tcp.close(socket)
    [status_line | _] = String.split(response, "\r\n", parts: 2)
    [_, status | _] = String.split(status_line, " ")
    [_, body] = String.split(response, "\r\n\r\n", parts: 2)
    {String.to_integer(status), body}
  end

  # Up to the end of a response that closes the connection, or its first 64 KiB of body
  # (an event stream that was answered would never end).
  defp read_all(socket, acc) do
    case :gen_tcp.recv(socket, 0, 5_000) do
      {:ok, data} when byte_size(acc) < 65_536 -> read_all(socket, acc <> data)
      {:ok, data} -> acc <> data
      {:error, :closed} -> acc
    end
  end

  defp get_json(url) do
    assert {200, body} = request(:get, url <> "status.json")
    JSON.decode!(body)
  end

  # A Server-Sent Events client on a socket of its own: returns once the response head
  # has arrived, which is when the page has registered the stream.
  defp open_stream(url, headers \\ []) do
    %URI{port: port} = URI.parse(url)
    {:ok, socket} = :gen_tcp.connect(~c"127.0.0.1", port, [:binary, active: false], 5_000)
    on_exit(fn -> :gen_tcp.close(socket) end)
    extra = Enum.map(headers, fn {k, v} -> "#{k}: #{v}\r\n" end)
    :ok = :gen_tcp.send(socket, ["GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n", extra, "\r\n"])
    {head, rest} = read_until(socket, "", "\r\n\r\n")
    assert head =~ "200 OK"
    assert head =~ ~r/content-type: text\/event-stream/i
    %{socket: socket, buffer: rest}
  end

  # Reads events (skipping the ones `match?` refuses) until one matches; returns it and
  # the stream read so far. Each read is bounded.
  defp await_event(%{socket: socket} = stream, match?) do
    {block, rest} = read_until(socket, stream.buffer, "\n\n")

    fields =
      for line <- String.split(block, "\n"),
          [k, v] <- [String.split(line, ": ", parts: 2)],
          into: %{},
          do: {k, v}

    stream = %{stream | buffer: rest}

    case fields do
      %{"id" => id, "event" => event, "data" => data} ->
        event = %{id: String.to_integer(id), event: event, data: JSON.decode!(data)}
        if match?.(event), do: {event, stream}, else: await_event(stream, match?)

      _retry_or_comment ->
        await_event(stream, match?)
    end
  end

  defp read_until(socket, buffer, separator) do
    case :binary.split(buffer, separator) do
      [block, rest] ->
        {block, rest}

      [_] ->
        assert {:ok, data} = :gen_tcp.recv(socket, 0, 5_000)
        read_until(socket, buffer <> data, separator)
    end
  end
end

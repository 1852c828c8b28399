defmodule Symbiont.StatusPage.Handler do
  @moduledoc false
  # The status page's routes, as an httpd callback module (httpd's "ESWAPI": `do/1` gets
  # the request record and returns the response). It runs in httpd's process for the
  # connection.
  #
  # Why not mod_esi for the event stream: an ESI function writes through the connection
  # process and never sees the socket, so it cannot tell when the browser has gone; its
  # stream would run until the node stops. Here the stream owns the connection: it
  # writes to the socket itself and the socket, in active-once mode, tells it when the
  # browser closes (a failed write or the keep-alive comment tells too).

  require Record

  Record.defrecordp(:mod, Record.extract(:mod, from_lib: "inets/include/httpd.hrl"))

  alias Symbiont.StatusPage
  alias Symbiont.StatusPage.{Feed, JSON, Metrics, View}

  # A comment line this often keeps proxies from closing an idle stream and finds dead
  # connections.
  @keepalive_ms 15_000

  @doc false
  # `do` is a keyword in Elixir; httpd calls Module:do/1.
  def unquote(:do)(request) do
    cond do
      mod(request, :data)[:response] || mod(request, :data)[:status] ->
        {:proceed, mod(request, :data)}

      not allowed_host?(request) ->
        respond(
          403,
          "text/plain",
          "this page answers only requests for 127.0.0.1, localhost or the names in " <>
            "config :symbiont, status_page: [hosts: [...]]\n"
        )

      true ->
        path = request |> mod(:request_uri) |> to_string() |> URI.parse()
        route(to_string(mod(request, :method)), path.path, path.query, request)
    end
  end

  # DNS rebinding: a page of another site whose name now resolves to 127.0.0.1 reaches us
  # with its own name in Host. Only ours are answered (StatusPage's `:hosts`).
  defp allowed_host?(request) do
    case List.keyfind(mod(request, :parsed_header), ~c"host", 0) do
      {_, value} -> value |> to_string() |> host_name() |> StatusPage.Server.allowed_host?()
      nil -> false
    end
  end

  # "name:port", "[v6]:port" or "name": the name, lower case.
  defp host_name(value) do
    value = value |> String.trim() |> String.downcase()

    case Regex.run(~r/\A(\[[^\]]*\]|[^:]*)(?::\d*)?\z/, value) do
      [_, name] -> name
      nil -> value
    end
  end

  defp route(method, _path, _query, _request) when method not in ["GET", "HEAD"],
    do: respond(405, "text/plain", "only GET and HEAD are allowed\n", [{:allow, ~c"GET, HEAD"}])

  defp route(_, "/", _query, _request) do
    svg = Symbiont.Topology.to_svg(Symbiont.topology())
    respond(200, "text/html; charset=utf-8", View.page(StatusPage.snapshot(), svg))
  end

  defp route(_, "/status.json", _query, _request),
    do: respond(200, "application/json", JSON.encode(StatusPage.snapshot()))

  defp route(_, "/metrics", _query, _request),
    do: respond(200, "text/plain; version=0.0.4; charset=utf-8", Metrics.render())

  defp route(_, "/topology.svg", _query, _request),
    do: respond(200, "image/svg+xml", Symbiont.Topology.to_svg(Symbiont.topology()))

  defp route("GET", "/events", query, request), do: stream(request, after_id(request, query))
  defp route("HEAD", "/events", _query, _request), do: respond(200, "text/event-stream", "")

  defp route(_, path, _query, _request),
    do:
      respond(
        404,
        "text/plain",
        "no such page: #{path} (try /, /status.json, /metrics or /events)\n"
      )

  defp respond(code, type, body, extra \\ []) do
    body = IO.iodata_to_binary(body)

    head =
      [
        code: code,
        content_type: String.to_charlist(type),
        content_length: Integer.to_charlist(byte_size(body)),
        cache_control: ~c"no-store"
      ] ++ extra

    {:proceed, [response: {:response, head, body}]}
  end

  # A browser that reconnects says which event it saw last; a page that opens the stream
  # says which events it already shows (?after=ID).
  defp after_id(request, query) do
    header = List.keyfind(mod(request, :parsed_header), ~c"last-event-id", 0)
    param = URI.decode_query(query || "")["after"]

    with value when is_binary(value) <- (header && to_string(elem(header, 1))) || param,
         {id, ""} <- Integer.parse(String.trim(value)) do
      id
    else
      _ -> 0
    end
  end

  ## Server-Sent Events

  defp stream(request, after_id) do
    socket = mod(request, :socket)

    head =
      "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n" <>
        "Connection: close\r\n\r\n"

    case Process.whereis(Feed) do
      nil ->
        respond(503, "text/plain", "the status page's feed is not running\n")

      feed ->
        ref = Process.monitor(feed)
        backlog = Feed.listen(after_id)
        # The browser waits this long before it reconnects a stream that ended.
        first = [head, "retry: 1000\n\n" | Enum.map(backlog, &event/1)]

        sent =
          with :ok <- :gen_tcp.send(socket, first),
               :ok <- :inet.setopts(socket, active: :once),
               do: loop(socket, ref, IO.iodata_length(first))

        Feed.unlisten()
        Process.demonitor(ref, [:flush])
        flush()
        # The connection ends with the stream (the response said so).
        :gen_tcp.close(socket)
        {:proceed, [response: {:already_sent, 200, sent_bytes(sent)}]}
    end
  end

  defp loop(socket, ref, sent) do
    receive do
      {Feed, entry} ->
        write(socket, ref, sent, event(entry))

      {:tcp, ^socket, _data} ->
        with :ok <- :inet.setopts(socket, active: :once), do: loop(socket, ref, sent)

      {:tcp_closed, ^socket} ->
        {:closed, sent}

      {:tcp_error, ^socket, _} ->
        {:closed, sent}

      {:DOWN, ^ref, :process, _, _} ->
        {:closed, sent}
    after
      @keepalive_ms -> write(socket, ref, sent, ": keep-alive\n\n")
    end
  end

  defp write(socket, ref, sent, data) do
    case :gen_tcp.send(socket, data) do
      :ok -> loop(socket, ref, sent + IO.iodata_length(data))
      {:error, _} -> {:closed, sent}
    end
  end

  defp event(%{id: id, kind: kind} = entry),
    do: ["id: #{id}\nevent: #{kind}\ndata: ", JSON.encode(entry), "\n\n"]

  defp sent_bytes({:closed, n}), do: n
  defp sent_bytes(_), do: 0

  defp flush do
    receive do
      {Feed, _} -> flush()
    after
      0 -> :ok
    end
  end
end

defmodule Symbiont.Console do
  @moduledoc false
  # The text of the iex helpers of `Symbiont` (status/0, health/0, peek/2): one table
  # renderer, one way to write a time, a duration and a value, so every screen lines up
  # the same way.

  @doc false
  # Rows of cells (strings) as lines, each column as wide as its widest cell.
  @spec table([[String.t()]]) :: [String.t()]
  def table([]), do: []

  def table(rows) do
    widths =
      rows
      |> Enum.zip_with(& &1)
      |> Enum.map(fn col -> col |> Enum.map(&String.length/1) |> Enum.max() end)

    for row <- rows do
      row
      |> Enum.zip(widths)
      |> Enum.map_join("  ", fn {cell, w} -> String.pad_trailing(cell, w) end)
      |> String.trim_trailing()
    end
  end

  @doc false
  # The one screen of Symbiont.status/0: every replica (Symbiont.agents/1: sorted, their
  # Symbiont.Observation view), then the hosts that run none, the operator's pins
  # (Symbiont.Pins.all/0) and the last remediations.
  @spec status(map) :: String.t()
  def status(%{nodes: nodes, hosts: hosts, agents: agents} = data) do
    kinds = agents |> Enum.map(& &1.health) |> Enum.frequencies()

    summary =
      kinds
      |> Enum.sort()
      |> Enum.map_join(", ", fn {kind, n} -> "#{n} #{kind}" end)

    title =
      "Symbiont on #{node()}: #{length(nodes)} node(s), #{length(hosts)} host(s), " <>
        "#{length(agents)} agent(s)" <> if(summary == "", do: "", else: " (#{summary})")

    header =
      ~w(AGENT ROLE HOST STATUS HEALTH QUEUE IN-FLIGHT HANDLED FAILED CRASHES RESTARTS P99 VERSION)

    used = MapSet.new(agents, & &1.host)

    agent_rows =
      for a <- agents do
        [
          a.id,
          to_string(a.role),
          a.host,
          if(a.quarantined, do: "quarantined", else: to_string(a.status)),
          a.health,
          queue(a),
          to_string(a.in_flight),
          to_string(a.handled),
          to_string(a.failed),
          to_string(a.crashes),
          to_string(a.restarts),
          duration_us(a.p99_us),
          version(a.version)
        ]
      end

    host_rows =
      for h <- hosts, not MapSet.member?(used, h.name) do
        ["-", "-", h.name, to_string(h.status)] ++ List.duplicate("-", 9)
      end

    rows = agent_rows ++ host_rows
    remediations = Map.get(data, :remediations, [])

    lines = [title, "nodes: " <> Enum.join(nodes, ", "), "" | table([header | rows])]

    Enum.join(
      lines ++
        pin_lines(Map.get(data, :pins, %{})) ++
        ["", "Last remediations" | remediation_lines(remediations)],
      "\n"
    )
  end

  defp pin_lines(pins) when map_size(pins) == 0, do: []

  defp pin_lines(pins) do
    rows =
      for {name, fields} <- Enum.sort(pins), {field, pin} <- Enum.sort(fields) do
        until = if pin.until_ms, do: time(pin.until_ms), else: "unpin/1"
        [name, field, inspect(pin.value), until, pin.reason]
      end

    [
      "",
      "Pinned by the operator (the conductor leaves these alone)"
      | table([~w(AGENT PINNED VALUE UNTIL REASON) | rows])
    ]
  end

  @doc false
  # The screen of Symbiont.health/0: each replica's health (Symbiont.Observation), since
  # when and why, then the recent health events.
  @spec health([map], [map]) :: String.t()
  def health(replicas, recent) do
    rows =
      for r <- replicas do
        [r.id, r.health, time(r.health_at_ms), to_string(r.health_reason || "-")]
      end

    events =
      for h <- recent,
          do: [
            time(h["at_ms"]),
            h["kind"],
            h["agent"] || "(node #{h["node"]})",
            to_string(h["reason"])
          ]

    Enum.join(
      table([~w(AGENT HEALTH SINCE REASON) | rows]) ++
        [
          "",
          "Recent health events"
          | if(events == [], do: ["(none)"], else: table([~w(TIME KIND ABOUT REASON) | events]))
        ],
      "\n"
    )
  end

  @doc false
  # One line of Symbiont.peek/2.
  @spec event_line(Symbiont.Event.t()) :: String.t()
  def event_line(%Symbiont.Event{topic: topic, from: from} = event) do
    value =
      case Symbiont.Event.decode(event) do
        {:ok, value} -> inspect(value, limit: 20, printable_limit: 200)
        {:error, _} -> "(#{byte_size(event.payload)} bytes that are not msgpack)"
      end

    "#{time(System.system_time(:millisecond))}  #{topic}  #{from || "-"}  #{value}"
  end

  defp remediation_lines([]), do: ["(none)"]

  defp remediation_lines(entries) do
    rows =
      for r <- entries,
          do: [time(r["at_ms"]), r["action"], r["agent"] || "-", r["by"], to_string(r["reason"])]

    table([~w(TIME ACTION AGENT BY REASON) | rows])
  end

  # The queue's length, and its payload bytes when it holds any: "12 (3.1 MiB)".
  defp queue(%{queue: n, queue_bytes: bytes}) when bytes > 0,
    do: "#{n} (#{Symbiont.Host.Output.size(bytes)})"

  defp queue(%{queue: n}), do: to_string(n)

  defp version("wasm:" <> path), do: "wasm:" <> Path.basename(path)
  defp version(python), do: python

  @doc false
  # A wall-clock time of day (UTC) for a system time in ms.
  @spec time(integer | nil) :: String.t()
  def time(nil), do: "-"

  def time(ms) do
    ms
    |> DateTime.from_unix!(:millisecond)
    |> DateTime.to_time()
    |> Time.truncate(:second)
    |> Time.to_string()
  end

  defp duration_us(nil), do: "-"
  defp duration_us(us) when us < 1_000, do: "#{us}µs"
  defp duration_us(us), do: "#{Float.round(us / 1000, 1)}ms"
end

defmodule Symbiont.StatusPage.Metrics do
  @moduledoc """
  `/metrics` of the status page: the node in the Prometheus text format (version 0.0.4),
  for a Prometheus server (or anything that reads the format) to scrape.

  | metric | type | labels | what |
  |---|---|---|---|
  | `symbiont_agent_handled_total` | counter | `agent`, `replica` | deliveries the replica acknowledged |
  | `symbiont_agent_failed_total` | counter | `agent`, `replica` | deliveries whose handler failed |
  | `symbiont_agent_crashes_total` | counter | `agent`, `replica` | its host's deaths it was charged with |
  | `symbiont_agent_restarts_total` | counter | `agent`, `replica` | times it was started again |
  | `symbiont_agent_queue` | gauge | `agent`, `replica` | events waiting for it |
  | `symbiont_agent_in_flight` | gauge | `agent`, `replica` | events sent to its host, not yet acknowledged |
  | `symbiont_agent_handle_duration_seconds` | histogram | `agent` | delivery sent to its host to its ack (or failure), `[:symbiont, :agent, :handle, :stop]` |
  | `symbiont_host_rss_bytes` | gauge | `host` | resident memory of the host's OS process |
  | `symbiont_host_restarts_total` | counter | `host` | times the host's process died and was started again |
  | `symbiont_mesh_publishes_total` | counter | `topic` | events published on this node's mesh |

  Counters of agents and hosts are their `Symbiont.Observation` and `Symbiont.hosts/0`
  figures (a replica started anew starts from 0, which Prometheus reads as a counter
  reset). The histogram and the publishes are counted from telemetry
  (`Symbiont.Telemetry`) while the status page runs.

  Cardinality is bounded: the histogram has one series per agent name (not per replica);
  publishes are counted for the first #{100} topics seen, and every other topic's in
  one series, `topic="_other"`. Label values are escaped as the format says (`\\`, `"`,
  a line feed), and bytes that are not UTF-8 become U+FFFD.
  """

  use GenServer

  @table __MODULE__
  @max_topics 100
  @other "_other"
  # Upper bounds of the histogram's buckets, in seconds (the last is +Inf).
  @buckets [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
  @handlers [
    {{__MODULE__, :handle}, [:symbiont, :agent, :handle, :stop], :handled},
    {{__MODULE__, :handle_exception}, [:symbiont, :agent, :handle, :exception], :handled},
    {{__MODULE__, :publish}, [:symbiont, :mesh, :broadcast], :published}
  ]

  @doc false
  @spec start_link(keyword) :: GenServer.on_start()
  def start_link(_opts), do: GenServer.start_link(__MODULE__, nil, name: __MODULE__)

  @impl true
  def init(nil) do
    Process.flag(:trap_exit, true)
    :ets.new(@table, [:set, :public, :named_table, write_concurrency: true])

    for {id, event, fun} <- @handlers do
      Symbiont.Telemetry.detach(id)
      :ok = Symbiont.Telemetry.attach(id, event, &__MODULE__.count/4, fun)
    end

    {:ok, nil}
  end

  @impl true
  def terminate(_reason, _state) do
    for {id, _event, _fun} <- @handlers, do: Symbiont.Telemetry.detach(id)
    :ok
  end

  @doc false
  # The telemetry handler: runs in the process that emits the event.
  @spec count(Symbiont.Telemetry.event(), map, map, atom) :: :ok
  def count(_event, %{duration: duration}, %{agent: agent}, :handled) do
    seconds = System.convert_time_unit(duration, :native, :nanosecond) / 1.0e9
    bucket = Enum.find_index(@buckets, &(seconds <= &1)) || length(@buckets)
    micros = System.convert_time_unit(duration, :native, :microsecond)
    :ets.update_counter(@table, {:bucket, agent, bucket}, 1, {{:bucket, agent, bucket}, 0})
    :ets.update_counter(@table, {:sum, agent}, micros, {{:sum, agent}, 0})
    :ets.update_counter(@table, {:count, agent}, 1, {{:count, agent}, 0})
    :ok
  end

  def count(_event, _measurements, %{topic: topic}, :published) do
    key = {:published, topic_key(topic)}
    :ets.update_counter(@table, key, 1, {key, 0})
    :ok
  end

  def count(_event, _measurements, _metadata, _what), do: :ok

  # A topic seen before keeps its series; a new one gets one while fewer than
  # @max_topics have one, else it is counted as @other.
  defp topic_key(topic) do
    cond do
      :ets.member(@table, {:published, topic}) ->
        topic

      :ets.update_counter(@table, :topics, 1, {:topics, 0}) <= @max_topics ->
        topic

      true ->
        @other
    end
  end

  @doc """
  The node's metrics in the Prometheus text format.

      iex> Symbiont.StatusPage.Metrics.escape(~s(a"b\\\\c\\nd))
      ~S(a\\"b\\\\c\\nd)
  """
  @spec render() :: iodata
  def render do
    agents = Symbiont.agents()
    hosts = Symbiont.hosts()

    rows = fn field ->
      for a <- agents, do: {[agent: a.name, replica: a.id], Map.get(a, field)}
    end

    [
      family(
        "symbiont_agent_handled_total",
        :counter,
        "Deliveries the agent acknowledged.",
        rows.(:handled)
      ),
      family(
        "symbiont_agent_failed_total",
        :counter,
        "Deliveries whose handler failed.",
        rows.(:failed)
      ),
      family(
        "symbiont_agent_crashes_total",
        :counter,
        "Deaths of its host the agent was charged with.",
        rows.(:crashes)
      ),
      family(
        "symbiont_agent_restarts_total",
        :counter,
        "Times the agent was started again.",
        rows.(:restarts)
      ),
      family("symbiont_agent_queue", :gauge, "Events waiting for the agent.", rows.(:queue)),
      family(
        "symbiont_agent_in_flight",
        :gauge,
        "Events sent to the agent's host and not yet acknowledged.",
        rows.(:in_flight)
      ),
      histogram(),
      family(
        "symbiont_host_rss_bytes",
        :gauge,
        "Resident memory of the host's OS process.",
        for(h <- hosts, rss = rss(h.os_pid), do: {[host: h.name], rss})
      ),
      family(
        "symbiont_host_restarts_total",
        :counter,
        "Times the host's process died and was started again.",
        for(h <- hosts, do: {[host: h.name], h.crashes})
      ),
      family(
        "symbiont_mesh_publishes_total",
        :counter,
        "Events published on this node's mesh, by topic (past #{@max_topics} topics: _other).",
        for({{:published, topic}, n} <- :ets.tab2list(@table), do: {[topic: topic], n})
      )
    ]
  end

  defp histogram do
    name = "symbiont_agent_handle_duration_seconds"
    rows = :ets.tab2list(@table)
    agents = for({{:count, agent}, _} <- rows, do: agent) |> Enum.sort()
    counts = Map.new(rows)

    series =
      for agent <- agents do
        {lines, _} =
          @buckets
          |> Enum.with_index()
          |> Enum.map_reduce(0, fn {le, i}, acc ->
            acc = acc + Map.get(counts, {:bucket, agent, i}, 0)
            {sample(name <> "_bucket", [agent: agent, le: format(le)], acc), acc}
          end)

        count = Map.get(counts, {:count, agent}, 0)

        [
          lines,
          sample(name <> "_bucket", [agent: agent, le: "+Inf"], count),
          sample(name <> "_sum", [agent: agent], Map.get(counts, {:sum, agent}, 0) / 1.0e6),
          sample(name <> "_count", [agent: agent], count)
        ]
      end

    [
      "# HELP #{name} Delivery sent to the agent's host to its ack or failure.\n",
      "# TYPE #{name} histogram\n" | series
    ]
  end

  defp family(name, type, help, rows) do
    [
      "# HELP #{name} #{help}\n# TYPE #{name} #{type}\n"
      | for({labels, value} <- rows, is_number(value), do: sample(name, labels, value))
    ]
  end

  defp sample(name, labels, value) do
    labels = Enum.map_join(labels, ",", fn {k, v} -> ~s(#{k}="#{escape(to_string(v))}") end)
    [name, "{", labels, "} ", format(value), "\n"]
  end

  defp format(value) when is_integer(value), do: Integer.to_string(value)
  defp format(value) when is_float(value), do: Float.to_string(value)

  @doc """
  A label value as the text format wants it: `\\` as `\\\\`, `"` as `\\"`, a line feed
  as `\\n`, and bytes that are not UTF-8 as U+FFFD.
  """
  @spec escape(binary) :: String.t()
  def escape(value) when is_binary(value) do
    value
    |> String.chunk(:valid)
    |> Enum.map_join(fn chunk ->
      if String.valid?(chunk),
        do:
          chunk
          |> String.replace("\\", "\\\\")
          |> String.replace("\"", "\\\"")
          |> String.replace("\n", "\\n"),
        else: String.duplicate("\uFFFD", byte_size(chunk))
    end)
  end

  # The resident set of an OS process, in bytes (VmRSS in /proc/PID/status), or nil.
  defp rss(nil), do: nil

  defp rss(os_pid) do
    with {:ok, status} <- File.read("/proc/#{os_pid}/status"),
         [_, kb] <- Regex.run(~r/^VmRSS:\s+(\d+) kB/m, status) do
      String.to_integer(kb) * 1024
    else
      _ -> nil
    end
  end
end

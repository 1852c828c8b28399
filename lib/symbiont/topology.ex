defmodule Symbiont.Topology do
  @moduledoc """
  Who publishes what to whom: publishers → topics → subscribers, with queue groups, nodes
  and message counts. `Symbiont.topology/0` builds one from every node of the mesh; it
  prints as a table in iex and exports as Mermaid, Graphviz DOT and SVG.

      iex> topology =
      ...>   Symbiont.Topology.build([
      ...>     %{
      ...>       node: :"a@box",
      ...>       publishers: [%{publisher: "orders", topic: "orders.created", count: 3}],
      ...>       subscribers: [
      ...>         %{topic: "orders.created", subscriber: "billing", group: "billing", count: 3}
      ...>       ]
      ...>     }
      ...>   ])
      iex> Symbiont.Topology.format(topology) |> String.split("\\n")
      [
        "orders.created",
        "  published by  orders   a@box           3",
        "  delivered to  billing  a@box  billing  3"
      ]
      iex> Symbiont.Topology.to_mermaid(topology) |> String.split("\\n")
      [
        "flowchart LR",
        ~s|  n1["orders<br/>a@box"]|,
        ~s|  n2(["orders.created"])|,
        ~s|  n3["billing<br/>a@box"]|,
        "  n1 -- 3 --> n2",
        "  n2 -- 3 --> n3",
        ~s|  subgraph n2_g1["group billing"]|,
        "    n3",
        "  end"
      ]

  In iex the topology prints as the table of `format/1`.

  ## Bounds

  What an agent publishes cannot make the topology grow without bound: each node keeps at
  most `:max_edges` counters (`Symbiont.Mesh`, default 10 000; the least recently used
  go first, and `evicted` counts them), and each rendering draws at most its
  `:max_edges` edges (default 100), the busiest, with a line saying how many more
  there are (`"+K more edges"`). Labels longer than 64 characters are cut with `…`
  in the drawings (`to_mermaid/2`, `to_dot/2`, `to_svg/2`).

  A subscriber's count is what it has handled; for a plain BEAM subscriber, which gets
  every event of its topic, it is the events published on the topic (see
  `Symbiont.Mesh.node_stats/1`).
  """

  alias Symbiont.Topology.Draw

  defstruct topics: [], evicted: %{edges: 0, events: 0}, omitted: %{edges: 0, events: 0}

  # How many edges a rendering draws by default.
  @max_drawn 100

  @typedoc "A publisher or a subscriber of a topic, on a node."
  @type endpoint :: %{
          name: String.t(),
          node: node,
          group: String.t() | nil,
          count: non_neg_integer
        }

  @typedoc "Edges left out, and the events they counted."
  @type left_out :: %{edges: non_neg_integer, events: non_neg_integer}

  @typedoc """
  Topics sorted by name, each with its publishers and subscribers sorted by name;
  `evicted`: the counters the nodes dropped (least recently used) to stay within their
  bound; `omitted`: the edges `busiest/2` left out.
  """
  @type t :: %__MODULE__{
          topics: [%{topic: String.t(), publishers: [endpoint], subscribers: [endpoint]}],
          evicted: left_out,
          omitted: left_out
        }

  @doc """
  Builds the topology from each node's statistics (`Symbiont.Mesh.node_stats/1`): a list
  of `%{node:, publishers: [%{publisher:, topic:, count:}], subscribers: [%{topic:,
  subscriber:, group:, count:}]}`, with an optional `evicted: %{edges:, events:}` (summed
  over the nodes). A subscriber's `nil` count becomes the number of events published on
  its topic across all nodes.
  """
  @spec build([map]) :: t
  def build(node_stats) when is_list(node_stats) do
    publishers =
      for %{node: node, publishers: pubs} <- node_stats, p <- pubs do
        {p.topic, %{name: p.publisher, node: node, group: nil, count: p.count}}
      end

    published =
      Enum.reduce(publishers, %{}, fn {t, p}, acc ->
        Map.update(acc, t, p.count, &(&1 + p.count))
      end)

    subscribers =
      for %{node: node, subscribers: subs} <- node_stats, s <- subs do
        count = s.count || Map.get(published, s.topic, 0)
        {s.topic, %{name: s.subscriber, node: node, group: s.group, count: count}}
      end

    by_topic = fn pairs -> Enum.group_by(pairs, &elem(&1, 0), &elem(&1, 1)) end
    pubs = by_topic.(publishers)
    subs = by_topic.(subscribers)

    topics =
      (Map.keys(pubs) ++ Map.keys(subs))
      |> Enum.uniq()
      |> Enum.sort()
      |> Enum.map(fn topic ->
        %{
          topic: topic,
          publishers: sort(Map.get(pubs, topic, [])),
          subscribers: sort(Map.get(subs, topic, []))
        }
      end)

    evicted =
      Enum.reduce(node_stats, %{edges: 0, events: 0}, fn stats, acc ->
        case stats do
          %{evicted: %{edges: e, events: n}} -> %{edges: acc.edges + e, events: acc.events + n}
          _ -> acc
        end
      end)

    %__MODULE__{topics: topics, evicted: evicted}
  end

  @doc """
  The topology cut to its `max` busiest edges (a publisher's edge to a topic, or a
  topic's to a subscriber, by count; ties go by topic and name): endpoints and topics
  left without an edge go, and `omitted` counts the edges cut and their events.
  `:infinity` keeps everything.

      iex> t = Symbiont.Topology.build([%{node: :a@box, subscribers: [], publishers: [
      ...>   %{publisher: "p", topic: "busy", count: 9}, %{publisher: "p", topic: "quiet", count: 1}]}])
      iex> cut = Symbiont.Topology.busiest(t, 1)
      iex> {Enum.map(cut.topics, & &1.topic), cut.omitted}
      {["busy"], %{edges: 1, events: 1}}
  """
  @spec busiest(t, pos_integer | :infinity) :: t
  def busiest(%__MODULE__{} = topology, :infinity), do: topology

  def busiest(%__MODULE__{topics: topics} = topology, max) when is_integer(max) and max > 0 do
    edges =
      for {t, i} <- Enum.with_index(topics),
          {role, endpoints} <- [publishers: t.publishers, subscribers: t.subscribers],
          e <- endpoints,
          do: {-e.count, i, role, e}

    if length(edges) <= max do
      topology
    else
      {kept, cut} = edges |> Enum.sort() |> Enum.split(max)
      keep = Enum.group_by(kept, &{elem(&1, 1), elem(&1, 2)}, &elem(&1, 3))

      topics =
        for {t, i} <- Enum.with_index(topics),
            pubs = sort(Map.get(keep, {i, :publishers}, [])),
            subs = sort(Map.get(keep, {i, :subscribers}, [])),
            pubs != [] or subs != [],
            do: %{t | publishers: pubs, subscribers: subs}

      omitted = %{
        edges: topology.omitted.edges + length(cut),
        events: topology.omitted.events + Enum.reduce(cut, 0, &(&2 - elem(&1, 0)))
      }

      %{topology | topics: topics, omitted: omitted}
    end
  end

  @doc """
  What a rendering of `topology` leaves out, in a line: `nil` when it is whole.

      iex> Symbiont.Topology.left_out(%Symbiont.Topology{omitted: %{edges: 2, events: 9}})
      "+2 more edges (9 events) not drawn"
  """
  @spec left_out(t) :: String.t() | nil
  def left_out(%__MODULE__{omitted: o, evicted: e}) do
    parts =
      if(o.edges > 0, do: ["+#{o.edges} more edges (#{o.events} events) not drawn"], else: []) ++
        if e.edges > 0,
          do: ["#{e.edges} least recently used counters evicted (#{e.events} events)"],
          else: []

    if parts != [], do: Enum.join(parts, "; ")
  end

  @doc """
  The edges a rendering draws, from its options: `:max_edges`, default #{@max_drawn}, or
  `:infinity`; anything else raises `ArgumentError`.
  """
  @spec max_drawn(keyword) :: pos_integer | :infinity
  def max_drawn(opts) do
    case Keyword.get(opts, :max_edges, @max_drawn) do
      :infinity ->
        :infinity

      n when is_integer(n) and n > 0 ->
        n

      other ->
        raise ArgumentError,
              "expected :max_edges to be a positive integer or :infinity, got: #{inspect(other)}"
    end
  end

  defp sort(endpoints), do: Enum.sort_by(endpoints, &{&1.name, &1.node, &1.group || ""})

  @doc """
  The topology as text: a block per topic, publishers and subscribers in columns. Option
  `:max_edges` (default #{@max_drawn}, or `:infinity`): the edges shown, the busiest
  (`busiest/2`); a last line says what was left out.
  """
  @spec format(t, keyword) :: String.t()
  def format(topology, opts \\ [])

  def format(%__MODULE__{topics: []}, _opts),
    do: "no topics: nothing is published or subscribed yet"

  def format(%__MODULE__{} = topology, opts) do
    topology = busiest(topology, max_drawn(opts))
    Enum.join([format_topics(topology.topics) | List.wrap(left_out(topology))], "\n")
  end

  defp format_topics(topics) do
    rows =
      for t <- topics,
          {role, endpoints} <- [{"published by", t.publishers}, {"delivered to", t.subscribers}],
          e <- endpoints,
          do: {t.topic, [role, e.name, to_string(e.node), e.group || "", to_string(e.count)]}

    widths =
      rows
      |> Enum.map(&elem(&1, 1))
      |> Enum.zip_with(& &1)
      |> Enum.map(fn column -> column |> Enum.map(&String.length/1) |> Enum.max() end)

    topics
    |> Enum.map(fn t ->
      lines =
        for {topic, cells} <- rows, topic == t.topic do
          {cells, [count_width]} = Enum.split(Enum.zip(cells, widths), 4)

          "  " <>
            (cells |> Enum.map_join("  ", fn {c, w} -> String.pad_trailing(c, w) end)) <>
            "  " <> String.pad_leading(elem(count_width, 0), elem(count_width, 1))
        end

      Enum.join([t.topic | lines], "\n")
    end)
    |> Enum.join("\n")
  end

  @doc """
  The topology as a Mermaid flowchart (publishers → topics → subscribers). Option
  `:max_edges` as for `format/2`; what is left out is a last node, `more`.
  """
  @spec to_mermaid(t, keyword) :: String.t()
  defdelegate to_mermaid(topology, opts \\ []), to: Draw

  @doc """
  The topology as a Graphviz DOT digraph (topics as ellipses, endpoints as boxes). Option
  `:max_edges` as for `format/2`; what is left out is a last node, `more`.
  """
  @spec to_dot(t, keyword) :: String.t()
  defdelegate to_dot(topology, opts \\ []), to: Draw

  @doc """
  The topology as a standalone SVG drawing (no scripts, no external assets): agents as
  boxes, topics as pills, arrows labelled with message counts, laid out in columns from
  publishers to subscribers; a dashed frame around each queue group. The status page
  (`Symbiont.StatusPage`) shows it. Option `:max_edges` as for `format/2`: at most that
  many arrows are drawn, so the drawing stays small whatever the mesh counts; a line at
  the bottom says what was left out.

      iex> svg = Symbiont.Topology.to_svg(Symbiont.Topology.build([]))
      iex> String.starts_with?(svg, "<svg ") and svg =~ "nothing is published or subscribed yet"
      true
  """
  @spec to_svg(t, keyword) :: String.t()
  defdelegate to_svg(topology, opts \\ []), to: Draw

  @doc false
  # The escaping of text in SVG and HTML, shared with the status page.
  @spec xml_escape(term) :: String.t()
  defdelegate xml_escape(text), to: Draw

  @doc """
  Writes the topology to `path`, as Mermaid (`.mmd`, `.mermaid`), DOT (`.dot`, `.gv`) or
  SVG (`.svg`). A `Symbiont.Error` otherwise: `:invalid` for another extension, `:failed`
  when the file cannot be written (`details`: `%{file: path}`).

      iex> {:error, error} = Symbiont.Topology.write(Symbiont.Topology.build([]), "topology.png")
      iex> {error.reason, error.message}
      {:invalid, ~s|unsupported extension ".png" (allowed: .mmd, .mermaid, .dot, .gv, .svg)|}
  """
  @spec write(t, Path.t()) :: :ok | {:error, Symbiont.Error.t()}
  def write(%__MODULE__{} = topology, path) do
    text =
      case Path.extname(path) do
        ext when ext in [".mmd", ".mermaid"] ->
          to_mermaid(topology)

        ext when ext in [".dot", ".gv"] ->
          to_dot(topology)

        ".svg" ->
          to_svg(topology)

        ext ->
          {:error,
           Symbiont.Error.new(
             :invalid,
             "unsupported extension #{inspect(ext)} (allowed: .mmd, .mermaid, .dot, .gv, .svg)",
             file: path
           )}
      end

    with text when is_binary(text) <- text do
      case File.write(path, text <> "\n") do
        :ok ->
          :ok

        {:error, reason} ->
          message = "cannot write #{path}: #{:file.format_error(reason)}"
          {:error, Symbiont.Error.new(:failed, message, file: path)}
      end
    end
  end

  defimpl Inspect do
    def inspect(topology, _opts) do
      Inspect.Algebra.string(
        "#Symbiont.Topology<\n" <> Symbiont.Topology.format(topology) <> "\n>"
      )
    end
  end
end

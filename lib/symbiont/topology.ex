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

  defstruct topics: [], evicted: %{edges: 0, events: 0}, omitted: %{edges: 0, events: 0}

  # How many edges a rendering draws by default, and the longest label it draws whole.
  @max_drawn 100
  @max_label 64

  # The SVG layout (to_svg/1), in pixels.
  @svg_margin 24
  @svg_column 220
  @svg_row 64
  @svg_box_w 160
  @svg_box_h 40

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

  # What a drawing leaves out, in a line: nil when it is whole.
  defp left_out(%__MODULE__{omitted: o, evicted: e}) do
    parts =
      if(o.edges > 0, do: ["+#{o.edges} more edges (#{o.events} events) not drawn"], else: []) ++
        if e.edges > 0,
          do: ["#{e.edges} least recently used counters evicted (#{e.events} events)"],
          else: []

    if parts != [], do: Enum.join(parts, "; ")
  end

  defp max_drawn(opts) do
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
  def to_mermaid(%__MODULE__{} = topology, opts \\ []) do
    topology = busiest(topology, max_drawn(opts))
    {nodes, edges, groups} = graph(topology.topics)

    lines =
      Enum.map(nodes, fn
        {:topic, id, label} -> ~s|  #{id}(["#{mermaid_escape(label)}"])|
        {_, id, label} -> ~s|  #{id}["#{mermaid_escape(label)}"]|
      end) ++
        Enum.map(edges, fn {from, to, count} -> "  #{from} -- #{count} --> #{to}" end) ++
        Enum.flat_map(groups, fn {id, label, members} ->
          [~s|  subgraph #{id}["#{mermaid_escape(label)}"]|] ++
            Enum.map(members, &"    #{&1}") ++ ["  end"]
        end) ++
        for(more <- List.wrap(left_out(topology)), do: ~s|  more["#{mermaid_escape([more])}"]|)

    Enum.join(["flowchart LR" | lines], "\n")
  end

  @doc """
  The topology as a Graphviz DOT digraph (topics as ellipses, endpoints as boxes). Option
  `:max_edges` as for `format/2`; what is left out is a last node, `more`.
  """
  @spec to_dot(t, keyword) :: String.t()
  def to_dot(%__MODULE__{} = topology, opts \\ []) do
    topology = busiest(topology, max_drawn(opts))
    {nodes, edges, groups} = graph(topology.topics)

    lines =
      Enum.map(nodes, fn
        {:topic, id, label} -> ~s|  "#{id}" [label="#{dot_escape(label)}", shape=ellipse];|
        {_, id, label} -> ~s|  "#{id}" [label="#{dot_escape(label)}", shape=box];|
      end) ++
        Enum.map(edges, fn {from, to, count} -> ~s|  "#{from}" -> "#{to}" [label="#{count}"];| end) ++
        Enum.flat_map(groups, fn {id, label, members} ->
          [~s|  subgraph "cluster_#{id}" {|, ~s|    label="#{dot_escape(label)}";|] ++
            Enum.map(members, &~s|    "#{&1}";|) ++ ["  }"]
        end) ++
        for(
          more <- List.wrap(left_out(topology)),
          do: ~s|  "more" [label="#{dot_escape([more])}", shape=note];|
        )

    Enum.join(["digraph symbiont {", "  rankdir=LR;" | lines] ++ ["}"], "\n")
  end

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
  def to_svg(topology, opts \\ [])

  def to_svg(%__MODULE__{topics: []}, _opts) do
    ~s(<svg xmlns="http://www.w3.org/2000/svg" class="topology" width="420" height="40" viewBox="0 0 420 40">) <>
      ~s(<text x="10" y="25" class="empty">no topics: nothing is published or subscribed yet</text></svg>)
  end

  def to_svg(%__MODULE__{} = topology, opts) do
    topology = busiest(topology, max_drawn(opts))
    {nodes, edges, groups} = graph(topology.topics)
    ranks = ranks(nodes, edges)

    # Columns by rank; rows in the order graph/1 gives (stable from one call to the next).
    place =
      nodes
      |> Enum.group_by(fn {_, id, _} -> ranks[id] end)
      |> Enum.flat_map(fn {rank, column} ->
        column
        |> Enum.with_index()
        |> Enum.map(fn {{_, id, _}, row} ->
          {id, {@svg_margin + rank * @svg_column, @svg_margin + row * @svg_row}}
        end)
      end)
      |> Map.new()

    {width, height} =
      place
      |> Map.values()
      |> Enum.reduce({0, 0}, fn {x, y}, {w, h} -> {max(w, x), max(h, y)} end)

    {width, height} =
      {width + @svg_box_w + 2 * @svg_margin, height + @svg_box_h + 2 * @svg_margin + 20}

    frames =
      for {_id, [label], members} <- groups do
        {xs, ys} = members |> Enum.map(&place[&1]) |> Enum.unzip()
        {x, y} = {Enum.min(xs) - 6, Enum.min(ys) - 16}
        w = Enum.max(xs) - Enum.min(xs) + @svg_box_w + 12
        h = Enum.max(ys) - Enum.min(ys) + @svg_box_h + 22

        ~s(<g class="group"><rect x="#{x}" y="#{y}" width="#{w}" height="#{h}" rx="6" fill="none" stroke="#999" stroke-dasharray="4 3"/>) <>
          ~s(<text x="#{x + 4}" y="#{y + 11}" font-size="10" fill="#666">#{xml_escape(label)}</text></g>)
      end

    arrows =
      for {from, to, count} <- edges do
        {x1, y1} = place[from]
        {x2, y2} = place[to]
        {y1, y2} = {y1 + div(@svg_box_h, 2), y2 + div(@svg_box_h, 2)}

        path =
          if x2 > x1 do
            {sx, ex} = {x1 + @svg_box_w, x2}
            mid = div(sx + ex, 2)
            "M#{sx},#{y1} C#{mid},#{y1} #{mid},#{y2} #{ex},#{y2}"
          else
            # Back to an earlier column (a cycle): around, below the boxes.
            {sx, ex} = {x1 + div(@svg_box_w, 2), x2 + div(@svg_box_w, 2)}
            low = max(y1, y2) + @svg_box_h

            "M#{sx},#{y1 + div(@svg_box_h, 2)} C#{sx},#{low} #{ex},#{low} #{ex},#{y2 + div(@svg_box_h, 2)}"
          end

        {lx, ly} = {div(x1 + @svg_box_w + x2, 2), div(y1 + y2, 2) - 4}

        ~s|<g class="edge"><path d="#{path}" fill="none" stroke="#555" marker-end="url(#arrow)"/>| <>
          ~s(<text x="#{lx}" y="#{ly}" font-size="10" text-anchor="middle" fill="#333">#{count}</text></g>)
      end

    boxes =
      for {kind, id, lines} <- nodes do
        {x, y} = place[id]
        rx = if kind == :topic, do: div(@svg_box_h, 2), else: 4
        fill = if kind == :topic, do: "#eef5ff", else: "#fff8e6"
        n = length(lines)

        text =
          lines
          |> Enum.with_index()
          |> Enum.map_join(fn {line, i} ->
            dy = div(@svg_box_h, 2) + 4 + (i * 2 - (n - 1)) * 7
            size = if i == 0, do: 12, else: 9

            ~s(<text x="#{x + div(@svg_box_w, 2)}" y="#{y + dy}" font-size="#{size}" text-anchor="middle">#{xml_escape(line)}</text>)
          end)

        ~s(<g class="#{kind}" data-name="#{xml_escape(hd(lines))}"><title>#{xml_escape(Enum.join(lines, " on "))}</title>) <>
          ~s(<rect x="#{x}" y="#{y}" width="#{@svg_box_w}" height="#{@svg_box_h}" rx="#{rx}" fill="#{fill}" stroke="#444"/>#{text}</g>)
      end

    more =
      for text <- List.wrap(left_out(topology)),
          do:
            ~s(<text class="more" x="#{@svg_margin}" y="#{height - 8}" font-size="11" fill="#666">#{xml_escape(text)}</text>)

    Enum.join(
      [
        ~s(<svg xmlns="http://www.w3.org/2000/svg" class="topology" font-family="sans-serif" width="#{width}" height="#{height}" viewBox="0 0 #{width} #{height}">),
        ~s(<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>)
        | frames ++ arrows ++ boxes ++ more
      ] ++ ["</svg>"]
    )
  end

  # The column of each node: the longest path to it from a node nothing points to, over
  # the edges that close no cycle (a depth-first search drops those).
  defp ranks(nodes, edges) do
    ids = Enum.map(nodes, &elem(&1, 1))
    out = Enum.group_by(edges, &elem(&1, 0), &elem(&1, 1))

    {_, order, back} =
      Enum.reduce(ids, {%{}, [], MapSet.new()}, fn id, acc -> dfs(id, out, acc) end)

    forward = fn id -> out |> Map.get(id, []) |> Enum.reject(&MapSet.member?(back, {id, &1})) end

    ranks =
      Enum.reduce(order, Map.new(ids, &{&1, 0}), fn id, ranks ->
        Enum.reduce(forward.(id), ranks, fn to, ranks ->
          Map.update!(ranks, to, &max(&1, ranks[id] + 1))
        end)
      end)

    # A node nothing points to (a topic no one publishes on yet) moves right, next to the
    # first of its successors, rather than sending long arrows across the drawing.
    targets =
      for {from, to, _} <- edges, not MapSet.member?(back, {from, to}), into: MapSet.new(), do: to

    Enum.reduce(ids, ranks, fn id, acc ->
      case forward.(id) do
        [_ | _] = next ->
          if id in targets,
            do: acc,
            else: Map.put(acc, id, Enum.min(Enum.map(next, &ranks[&1])) - 1)

        [] ->
          acc
      end
    end)
  end

  # Visits `id` depth first; returns the nodes in topological order (of the edges kept)
  # and the back edges. State per node: :open while on the path, :done after.
  defp dfs(id, out, {seen, order, back} = acc) do
    case seen[id] do
      nil ->
        {seen, order, back} =
          out
          |> Map.get(id, [])
          |> Enum.reduce({Map.put(seen, id, :open), order, back}, fn to, {seen, order, back} ->
            if seen[to] == :open,
              do: {seen, order, MapSet.put(back, {id, to})},
              else: dfs(to, out, {seen, order, back})
          end)

        {Map.put(seen, id, :done), [id | order], back}

      _ ->
        acc
    end
  end

  @doc false
  # The escaping of text in SVG and HTML, shared with the status page.
  @spec xml_escape(term) :: String.t()
  def xml_escape(text) do
    text
    |> to_string()
    |> String.replace("&", "&amp;")
    |> String.replace("<", "&lt;")
    |> String.replace(">", "&gt;")
    |> String.replace("\"", "&quot;")
  end

  @doc """
  Writes the topology to `path`, as Mermaid (`.mmd`, `.mermaid`), DOT (`.dot`, `.gv`) or
  SVG (`.svg`).
  """
  @spec write(t, Path.t()) :: :ok | {:error, String.t()}
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
           "unsupported extension #{inspect(ext)} (allowed: .mmd, .mermaid, .dot, .gv, .svg)"}
      end

    with text when is_binary(text) <- text do
      case File.write(path, text <> "\n") do
        :ok -> :ok
        {:error, reason} -> {:error, "cannot write #{path}: #{:file.format_error(reason)}"}
      end
    end
  end

  # Nodes ({kind, id, label lines}; an agent that publishes and subscribes is one node),
  # edges ({from, to, count}) and groups ({id, label
  # lines, members}), each once, in a stable order. Ids are n1, n2... in that order (the
  # labels carry the names), so any name is safe in both formats.
  defp graph(topics) do
    keys =
      topics
      |> Enum.flat_map(fn t ->
        for(p <- t.publishers, do: {:endpoint, p.name, p.node}) ++
          [{:topic, t.topic, nil}] ++
          for(s <- t.subscribers, do: {:endpoint, s.name, s.node})
      end)
      |> Enum.uniq()

    ids = keys |> Enum.with_index(1) |> Map.new(fn {key, i} -> {key, "n#{i}"} end)

    nodes =
      for {kind, name, node} = key <- keys,
          do:
            {kind, ids[key],
             Enum.map(if(node, do: [name, to_string(node)], else: [name]), &label/1)}

    edges =
      Enum.flat_map(topics, fn t ->
        topic = ids[{:topic, t.topic, nil}]

        for(p <- t.publishers, do: {ids[{:endpoint, p.name, p.node}], topic, p.count}) ++
          for(s <- t.subscribers, do: {topic, ids[{:endpoint, s.name, s.node}], s.count})
      end)

    # A subgraph per queue group of each topic: n2_g1, n2_g2... for topic n2.
    groups =
      for t <- topics,
          grouped = t.subscribers |> Enum.filter(& &1.group) |> Enum.group_by(& &1.group),
          {{group, members}, i} <- grouped |> Enum.sort() |> Enum.with_index(1),
          do:
            {"#{ids[{:topic, t.topic, nil}]}_g#{i}", [label("group #{group}")],
             members |> Enum.map(&ids[{:endpoint, &1.name, &1.node}]) |> Enum.uniq()}

    {nodes, edges, groups}
  end

  defp label(text) do
    short = String.slice(text, 0, @max_label)

    if byte_size(short) == byte_size(text),
      do: text,
      else: String.slice(short, 0, @max_label - 1) <> "…"
  end

  # Labels are lists of lines. Mermaid: in double quotes, with entities for what could
  # end or open markup. DOT: in double quotes, with backslash escapes.
  defp mermaid_escape(lines) do
    Enum.map_join(lines, "<br/>", fn line ->
      line
      |> String.replace("#", "#35;")
      |> String.replace("\"", "#quot;")
      |> String.replace("<", "#lt;")
      |> String.replace(">", "#gt;")
    end)
  end

  defp dot_escape(lines) do
    Enum.map_join(lines, "\\n", fn line ->
      line |> String.replace("\\", "\\\\") |> String.replace("\"", "\\\"")
    end)
  end

  defimpl Inspect do
    def inspect(topology, _opts) do
      Inspect.Algebra.string(
        "#Symbiont.Topology<\n" <> Symbiont.Topology.format(topology) <> "\n>"
      )
    end
  end
end

defmodule Symbiont.Topology.Draw do
  @moduledoc """
  The drawings of a `Symbiont.Topology`: Mermaid, Graphviz DOT and SVG, and what they
  share: the graph of nodes (topics and endpoints), edges and queue groups with stable
  ids, labels cut at 64 characters, the escaping of each format, and the SVG layout in
  columns (a depth-first rank that leaves cycles drawn backwards). `Symbiont.Topology`
  keeps the API (`to_mermaid/2`, `to_dot/2`, `to_svg/2` delegate here), the bounds
  (`Symbiont.Topology.busiest/2`) and the text table.
  """

  alias Symbiont.Topology

  @typep t :: Topology.t()

  # The longest label a drawing draws whole.
  @max_label 64

  # The SVG layout (to_svg/1), in pixels.
  @svg_margin 24
  @svg_column 220
  @svg_row 64
  @svg_box_w 160
  @svg_box_h 40

  @doc "The topology as a Mermaid flowchart: see `Symbiont.Topology.to_mermaid/2`."
  @spec to_mermaid(t, keyword) :: String.t()
  def to_mermaid(%Topology{} = topology, opts \\ []) do
    topology = Topology.busiest(topology, Topology.max_drawn(opts))
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
        for(
          more <- List.wrap(Topology.left_out(topology)),
          do: ~s|  more["#{mermaid_escape([more])}"]|
        )

    Enum.join(["flowchart LR" | lines], "\n")
  end

  @doc "The topology as a Graphviz DOT digraph: see `Symbiont.Topology.to_dot/2`."
  @spec to_dot(t, keyword) :: String.t()
  def to_dot(%Topology{} = topology, opts \\ []) do
    topology = Topology.busiest(topology, Topology.max_drawn(opts))
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
          more <- List.wrap(Topology.left_out(topology)),
          do: ~s|  "more" [label="#{dot_escape([more])}", shape=note];|
        )

    Enum.join(["digraph symbiont {", "  rankdir=LR;" | lines] ++ ["}"], "\n")
  end

  @doc "The topology as a standalone SVG drawing: see `Symbiont.Topology.to_svg/2`."
  @spec to_svg(t, keyword) :: String.t()
  def to_svg(topology, opts \\ [])

  def to_svg(%Topology{topics: []}, _opts) do
    ~s(<svg xmlns="http://www.w3.org/2000/svg" class="topology" width="420" height="40" viewBox="0 0 420 40">) <>
      ~s(<text x="10" y="25" class="empty">no topics: nothing is published or subscribed yet</text></svg>)
  end

  def to_svg(%Topology{} = topology, opts) do
    topology = Topology.busiest(topology, Topology.max_drawn(opts))
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
      for text <- List.wrap(Topology.left_out(topology)),
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

  @doc """
  The escaping of text in SVG and HTML, shared with the status page.

      iex> Symbiont.Topology.Draw.xml_escape(~s(<a href="x">&</a>))
      "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;"
  """
  @spec xml_escape(term) :: String.t()
  def xml_escape(text) do
    text
    |> to_string()
    |> String.replace("&", "&amp;")
    |> String.replace("<", "&lt;")
    |> String.replace(">", "&gt;")
    |> String.replace("\"", "&quot;")
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
end

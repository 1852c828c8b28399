defmodule Symbiont.Topology do
  @moduledoc """
  Who publishes what to whom: publishers → topics → subscribers, with queue groups, nodes
  and message counts. `Symbiont.topology/0` builds one from every node of the mesh; it
  prints as a table in iex and exports as Mermaid and Graphviz DOT.

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

  A subscriber's count is what it has handled; for a plain BEAM subscriber, which gets
  every event of its topic, it is the events published on the topic (see
  `Symbiont.Mesh.node_stats/1`).
  """

  defstruct topics: []

  @typedoc "A publisher or a subscriber of a topic, on a node."
  @type endpoint :: %{
          name: String.t(),
          node: node,
          group: String.t() | nil,
          count: non_neg_integer
        }

  @typedoc "Topics sorted by name, each with its publishers and subscribers sorted by name."
  @type t :: %__MODULE__{
          topics: [%{topic: String.t(), publishers: [endpoint], subscribers: [endpoint]}]
        }

  @doc """
  Builds the topology from each node's statistics (`Symbiont.Mesh.node_stats/1`): a list
  of `%{node:, publishers: [%{publisher:, topic:, count:}], subscribers: [%{topic:,
  subscriber:, group:, count:}]}`. A subscriber's `nil` count becomes the number of
  events published on its topic across all nodes.
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

    %__MODULE__{topics: topics}
  end

  defp sort(endpoints), do: Enum.sort_by(endpoints, &{&1.name, &1.node, &1.group || ""})

  @doc "The topology as text: a block per topic, publishers and subscribers in columns."
  @spec format(t) :: String.t()
  def format(%__MODULE__{topics: []}), do: "no topics: nothing is published or subscribed yet"

  def format(%__MODULE__{topics: topics}) do
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

  @doc "The topology as a Mermaid flowchart (publishers → topics → subscribers)."
  @spec to_mermaid(t) :: String.t()
  def to_mermaid(%__MODULE__{topics: topics}) do
    {nodes, edges, groups} = graph(topics)

    lines =
      Enum.map(nodes, fn
        {:topic, id, label} -> ~s|  #{id}(["#{mermaid_escape(label)}"])|
        {_, id, label} -> ~s|  #{id}["#{mermaid_escape(label)}"]|
      end) ++
        Enum.map(edges, fn {from, to, count} -> "  #{from} -- #{count} --> #{to}" end) ++
        Enum.flat_map(groups, fn {id, label, members} ->
          [~s|  subgraph #{id}["#{mermaid_escape(label)}"]|] ++
            Enum.map(members, &"    #{&1}") ++ ["  end"]
        end)

    Enum.join(["flowchart LR" | lines], "\n")
  end

  @doc "The topology as a Graphviz DOT digraph (topics as ellipses, endpoints as boxes)."
  @spec to_dot(t) :: String.t()
  def to_dot(%__MODULE__{topics: topics}) do
    {nodes, edges, groups} = graph(topics)

    lines =
      Enum.map(nodes, fn
        {:topic, id, label} -> ~s|  "#{id}" [label="#{dot_escape(label)}", shape=ellipse];|
        {_, id, label} -> ~s|  "#{id}" [label="#{dot_escape(label)}", shape=box];|
      end) ++
        Enum.map(edges, fn {from, to, count} -> ~s|  "#{from}" -> "#{to}" [label="#{count}"];| end) ++
        Enum.flat_map(groups, fn {id, label, members} ->
          [~s|  subgraph "cluster_#{id}" {|, ~s|    label="#{dot_escape(label)}";|] ++
            Enum.map(members, &~s|    "#{&1}";|) ++ ["  }"]
        end)

    Enum.join(["digraph symbiont {", "  rankdir=LR;" | lines] ++ ["}"], "\n")
  end

  @doc """
  Writes the topology to `path`, as Mermaid (`.mmd`, `.mermaid`) or DOT (`.dot`, `.gv`).
  """
  @spec write(t, Path.t()) :: :ok | {:error, String.t()}
  def write(%__MODULE__{} = topology, path) do
    text =
      case Path.extname(path) do
        ext when ext in [".mmd", ".mermaid"] ->
          to_mermaid(topology)

        ext when ext in [".dot", ".gv"] ->
          to_dot(topology)

        ext ->
          {:error, "unsupported extension #{inspect(ext)} (allowed: .mmd, .mermaid, .dot, .gv)"}
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
          do: {kind, ids[key], if(node, do: [name, to_string(node)], else: [name])}

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
            {"#{ids[{:topic, t.topic, nil}]}_g#{i}", ["group #{group}"],
             members |> Enum.map(&ids[{:endpoint, &1.name, &1.node}]) |> Enum.uniq()}

    {nodes, edges, groups}
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

defmodule Symbiont.Health do
  @moduledoc """
  Health meta-events, published on the topic `symbiont.health` (docs/ANALYTICS.md, and
  "How it is doing" in `Symbiont.Observation`).

  Each is a `Symbiont.Event` whose payload is the map

      %{"kind" => "overloaded", "agent" => "billing", "node" => "a@box",
        "reason" => "queue at 8000 of 10000", "metrics" => %{"queue" => 8000, ...},
        "by" => "symbiont", "id" => nil, "version" => nil}

  `kind` is one of #{Enum.map_join(Symbiont.Contract.health_kinds(), ", ", &"`#{&1}`")};
  `agent` is `nil` for an event about a node. The event's `from` is `agent`.

  ## Who says it

  Only the BEAM publishes on `symbiont.health` (`Symbiont.ControlPlane`), and `by` says
  who it is that speaks:

    * `"symbiont"`: the node saw it: an agent's owner (`Symbiont.Agent.Server`), when
      the agent's health changes kind (see "How it is doing" in `Symbiont.Observation`:
      its failure rate, its queue, a failed start, a journal that cannot be written, a
      quarantine), not once per failure, stamped with the replica's `id` and `version`
      (`"metrics"` has its `"id"` too, and `"role"` for a canary); the mesh (a lost
      node: `failing`, with `agent` `nil`), the manifest (`retired`);
    * `"agent"`: the agent said so about itself (`self.health.degraded("why")` in
      Python, the `health` import in Wasm; a Wasm agent also reports its failed calls).
      Its report reaches its owner in a `health` frame of its own (PROTOCOL.md §8.3),
      which holds a kind, a reason and metrics, and no name: the owner publishes it with
      `agent` the name of the agent in that slot, `id` its replica (`"pricing#canary"`)
      and `version` what it runs (`"wasm:priv/wasm/pricing_v2.wasm"`,
      `"module:Class"`). An agent cannot speak for another.

  What an agent's health is comes from `Symbiont.Observation`, not from these events:
  they tell it, they do not make it (an agent's own report is one of the signals its
  owner weighs, until it says otherwise or starts again).

  An agent may report #{Enum.map_join(Symbiont.Contract.agent_health_kinds(), ", ", &"`#{&1}`")}, a reason of at
  most #{1024} bytes and at most #{16} metrics (names of at most #{64} bytes; values nil,
  booleans, numbers or strings of at most #{Symbiont.Contract.health_report()["metric_text_bytes"]} bytes). Every event is kept within the
  control plane's sizes: a reason is cut at #{1024} bytes, metrics at #{4096}.

      iex> Symbiont.subscribe("symbiont.health")
      iex> Symbiont.Health.publish("degraded", "doc-agent", "payment provider slow", %{"p99_ms" => 900})
      :ok
      iex> receive do: (%Symbiont.Event{topic: "symbiont.health", from: "doc-agent"} = e -> Symbiont.Event.decode(e))
      {:ok, %{"kind" => "degraded", "agent" => "doc-agent", "node" => Atom.to_string(node()),
              "reason" => "payment provider slow", "metrics" => %{"p99_ms" => 900},
              "by" => "symbiont", "id" => nil, "version" => nil}}
  """

  alias Symbiont.ControlPlane

  @topic "symbiont.health"
  # Symbiont.Contract: the kinds both languages agree on.
  @kinds Symbiont.Contract.health_kinds()
  @agent_kinds Symbiont.Contract.agent_health_kinds()
  @bys ~w(symbiont agent)
  # What an agent's report may hold (PROTOCOL.md §8.3), and what any event keeps.
  @report Symbiont.Contract.health_report()
  @max_reason @report["reason_bytes"]
  @max_metrics @report["metrics"]
  @max_metric_name @report["metric_name_bytes"]
  @max_metric_text @report["metric_text_bytes"]
  @max_metrics_bytes 4096

  @doc "The topic health events are published on."
  @spec topic() :: String.t()
  def topic, do: @topic

  @doc "The kinds of health event."
  @spec kinds() :: [String.t()]
  def kinds, do: @kinds

  @doc "The kinds an agent may report about itself."
  @spec agent_kinds() :: [String.t()]
  def agent_kinds, do: @agent_kinds

  @doc """
  Builds a health event about `agent` (or about a node when `agent` is `nil`; `node`
  defaults to this one). `stamp`: `:by` (#{Enum.map_join(@bys, " or ", &"`#{&1}`")},
  default `"symbiont"`), `:id` (the replica) and `:version`. The reason is cut at
  #{@max_reason} bytes and metrics that encode in more than #{@max_metrics_bytes} bytes
  are replaced by their text, cut (`Symbiont.ControlPlane.bound/3`).
  """
  @spec event(String.t(), String.t() | nil, String.t(), map, node, keyword) ::
          Symbiont.Event.t()
  def event(kind, agent, reason, metrics \\ %{}, node \\ node(), stamp \\ [])
      when kind in @kinds and is_binary(reason) and is_map(metrics) and is_list(stamp) do
    by = Keyword.get(stamp, :by, "symbiont")

    unless by in @bys,
      do: raise(ArgumentError, "expected :by to be one of #{inspect(@bys)}, got: #{inspect(by)}")

    payload = %{
      "kind" => kind,
      "agent" => agent,
      "node" => Atom.to_string(node),
      "reason" => ControlPlane.text(reason, @max_reason),
      "metrics" => ControlPlane.bound(metrics, @max_metrics_bytes),
      "by" => by,
      "id" => Keyword.get(stamp, :id),
      "version" => Keyword.get(stamp, :version)
    }

    Symbiont.Event.new!(@topic, payload, agent)
  end

  @doc """
  Checks what an agent reports about itself (the fields of a `health` frame,
  PROTOCOL.md §8.3): `:ok`, or `{:error, %Symbiont.Error{reason: :invalid}}` whose
  message names the field, the value and what is allowed.

      iex> Symbiont.Health.check_report("degraded", "slow", %{"p99_ms" => 900})
      :ok
      iex> {:error, error} = Symbiont.Health.check_report("quarantined", "", %{})
      iex> {error.reason, error.message}
      {:invalid, ~s(kind "quarantined" is not one of healthy, degraded, overloaded, failing)}
  """
  @spec check_report(term, term, term) :: :ok | {:error, Symbiont.Error.t()}
  def check_report(kind, reason, metrics),
    do: kind |> report_error(reason, metrics) |> Symbiont.Error.wrap(:invalid)

  defp report_error(kind, reason, metrics) do
    cond do
      kind not in @agent_kinds ->
        {:error, "kind #{short(kind)} is not one of #{Enum.join(@agent_kinds, ", ")}"}

      not (is_binary(reason) and byte_size(reason) <= @max_reason) ->
        {:error, "reason must be a string of at most #{@max_reason} bytes, got: #{short(reason)}"}

      not (is_map(metrics) and not is_struct(metrics) and map_size(metrics) <= @max_metrics) ->
        {:error,
         "metrics must be a map of at most #{@max_metrics} entries, got: #{short(metrics)}"}

      bad = Enum.find(metrics, &(not metric?(&1))) ->
        {name, value} = bad

        {:error,
         "metric #{short(name)} = #{short(value)} is not allowed: names are strings of at most " <>
           "#{@max_metric_name} bytes, values nil, booleans, numbers or strings of at most " <>
           "#{@max_metric_text} bytes"}

      true ->
        :ok
    end
  end

  defp metric?({name, value}) when is_binary(name) and byte_size(name) <= @max_metric_name,
    do:
      is_nil(value) or is_boolean(value) or is_number(value) or
        (is_binary(value) and byte_size(value) <= @max_metric_text)

  defp metric?(_), do: false

  defp short(term), do: inspect(term, limit: 8, printable_limit: 64)

  @doc """
  Whether a health event (its decoded payload) tells how its agent is now, to show as
  the agent's health. Every event does but one: `retired` about one replica of an agent
  that runs on (a scale in: `"metrics"` names the replica's id, not the agent).

      iex> Symbiont.Health.current?(%{"kind" => "retired", "agent" => "billing",
      ...>   "reason" => "scaled in", "metrics" => %{"id" => "billing#2"}})
      false
      iex> Symbiont.Health.current?(%{"kind" => "retired", "agent" => "billing",
      ...>   "reason" => "removed from the manifest", "metrics" => %{"id" => "billing"}})
      true
      iex> Symbiont.Health.current?(%{"kind" => "degraded", "agent" => "billing", "metrics" => %{}})
      true
  """
  @spec current?(map) :: boolean
  def current?(%{"kind" => "retired", "agent" => agent, "metrics" => %{"id" => id}})
      when is_binary(id) and id != agent,
      do: false

  def current?(%{} = _event), do: true

  @doc """
  Publishes a health event (see `event/6`) on every node of the mesh. `stamp` as in
  `event/6`: `by: "agent"` is for an agent's owner publishing the agent's own report.
  """
  @spec publish(String.t(), String.t() | nil, String.t(), map, keyword) :: :ok
  def publish(kind, agent, reason, metrics \\ %{}, stamp \\ []) do
    :ok = Symbiont.Mesh.publish(Symbiont.Mesh, event(kind, agent, reason, metrics, node(), stamp))
  end
end

defmodule Symbiont.Health do
  @moduledoc """
  Health meta-events, published on the topic `symbiont.health` (DESIGN.md §2).

  Each is a `Symbiont.Event` whose payload is the map

      %{"kind" => "overloaded", "agent" => "billing", "node" => "a@box",
        "reason" => "queue at 8000 of 10000", "metrics" => %{"queue" => 8000, ...}}

  They come from an agent's owner (`Symbiont.Agent.Server`), when the agent's health
  changes (see "How it is doing" in `Symbiont.Observation`: its failure rate, its queue,
  a start that failed, its journal, a quarantine; `"metrics"` has the replica's `"id"`,
  and `"role"` for a canary), from the agent itself (`self.health.degraded("why")` in
  Python, the `health` import in Wasm; a Wasm agent also reports its failed calls) and
  from the mesh (a lost node: `failing`, with `agent` `nil`). What an agent's health is
  comes from `Symbiont.Observation`, not from these events: they tell it, they do not
  make it.

  `kind` is one of #{Enum.map_join(~w(healthy degraded overloaded failing quarantined retired), ", ", &"`#{&1}`")};
  `agent` is `nil` for an event about a node.

      iex> Symbiont.subscribe("symbiont.health")
      iex> Symbiont.Health.publish("degraded", "doc-agent", "payment provider slow", %{"p99_ms" => 900})
      :ok
      iex> receive do: (%Symbiont.Event{topic: "symbiont.health", from: "doc-agent"} = e -> Symbiont.Event.decode(e))
      {:ok, %{"kind" => "degraded", "agent" => "doc-agent", "node" => Atom.to_string(node()),
              "reason" => "payment provider slow", "metrics" => %{"p99_ms" => 900}}}
  """

  @topic "symbiont.health"
  @kinds ~w(healthy degraded overloaded failing quarantined retired)

  @doc "The topic health events are published on."
  @spec topic() :: String.t()
  def topic, do: @topic

  @doc "The kinds of health event."
  @spec kinds() :: [String.t()]
  def kinds, do: @kinds

  @doc """
  Builds a health event about `agent` (or about a node when `agent` is `nil`; `node`
  defaults to this one).
  """
  @spec event(String.t(), String.t() | nil, String.t(), map, node) :: Symbiont.Event.t()
  def event(kind, agent, reason, metrics \\ %{}, node \\ node())
      when kind in @kinds and is_binary(reason) and is_map(metrics) do
    payload = %{
      "kind" => kind,
      "agent" => agent,
      "node" => Atom.to_string(node),
      "reason" => reason,
      "metrics" => metrics
    }

    Symbiont.Event.new!(@topic, payload, agent)
  end

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

  @doc "Publishes a health event (see `event/5`) on every node of the mesh."
  @spec publish(String.t(), String.t() | nil, String.t(), map) :: :ok
  def publish(kind, agent, reason, metrics \\ %{}) do
    :ok = Symbiont.Mesh.publish(Symbiont.Mesh, event(kind, agent, reason, metrics))
  end
end

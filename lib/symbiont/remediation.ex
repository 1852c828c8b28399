defmodule Symbiont.Remediation do
  @moduledoc """
  Remediation events: every healing step the system takes, published on the topic
  `symbiont.remediation` (see `Symbiont.Conductor`).

  Each is a `Symbiont.Event` whose payload is the map

      %{"action" => "restart", "agent" => "billing", "host" => "billing",
        "reason" => "the host was killed by signal 9", "by" => "supervisor",
        "evidence" => %{"restarts" => 1}, "node" => "a@box", "at_ms" => 1764000000000}

  plus the fields of the action (`"from"`/`"to"` for a deploy, `"replicas"` for a
  scale, ...). `by` says who acted: `"supervisor"` (a host owner restarting its process),
  `"deploy"` (`Symbiont.Deploy`), `"conductor"` (`Symbiont.Conductor`) or `"operator"`
  (a call from iex). `agent` and `host` are `nil` when the step is not about one. The
  event's `from` is the agent it is about, so a subscriber can match on it.

  Only the BEAM publishes on `symbiont.remediation` (`Symbiont.ControlPlane`), and only
  through `publish/4`, which also records the step in the audit trail
  (`Symbiont.Conductor.Audit`, on every node): the trail is what this module recorded,
  timed by the BEAM's clock, never what arrives on the topic. A payload keeps within the
  control plane's sizes: the reason is cut at #{1024} bytes, and evidence or fields that
  would take it past #{Symbiont.ControlPlane.max_bytes()} bytes are replaced by their
  text, cut.

  `action` is one of #{Enum.map_join(Symbiont.Contract.remediation_actions(), ", ", &"`#{&1}`")}
  (`isolate`: a Wasm agent moved out of the host it shared after crashing it, see "Blame"
  in `Symbiont.Manifest`; `reroute`: a Wasm replica moved to a host of its own away from
  the co-tenants it made wait, see "Placement" there; `unpin`: the operator lifted a pin,
  see `Symbiont.Pins`).

      iex> Symbiont.subscribe("symbiont.remediation")
      iex> Symbiont.Remediation.publish("restart", "doc-agent", "crashed", by: "operator")
      :ok
      iex> receive do: (%Symbiont.Event{topic: "symbiont.remediation", from: "doc-agent"} = e -> Symbiont.Event.decode!(e)["action"])
      "restart"
  """

  alias Symbiont.ControlPlane

  @topic "symbiont.remediation"
  @actions Symbiont.Contract.remediation_actions()
  @bys ~w(supervisor deploy conductor operator)
  @max_reason 1024
  # Evidence and fields, each: with the rest, well within ControlPlane.max_bytes().
  @max_part 16_384
  @core ~w(action agent host reason by evidence node at_ms)

  @doc "The topic remediation events are published on."
  @spec topic() :: String.t()
  def topic, do: @topic

  @doc "The actions a remediation event may name."
  @spec actions() :: [String.t()]
  def actions, do: @actions

  @doc """
  Builds the payload of a remediation event.

  Options: `:by` (#{Enum.map_join(@bys, ", ", &"`#{&1}`")}; default `"conductor"`),
  `:host`, `:evidence` (a map), `:fields` (a map merged into the payload).

      iex> p = Symbiont.Remediation.payload("scale", "billing", "queue growing", fields: %{"replicas" => 3})
      iex> {p["action"], p["agent"], p["replicas"], p["by"]}
      {"scale", "billing", 3, "conductor"}
  """
  @spec payload(String.t(), String.t() | nil, String.t(), keyword) :: map
  def payload(action, agent, reason, opts \\ [])
      when action in @actions and (is_binary(agent) or is_nil(agent)) and is_binary(reason) do
    by = Keyword.get(opts, :by, "conductor")

    unless by in @bys,
      do: raise(ArgumentError, "expected :by to be one of #{inspect(@bys)}, got: #{inspect(by)}")

    fields = Map.drop(Keyword.get(opts, :fields, %{}), @core)

    fields =
      case ControlPlane.bound(fields, @max_part) do
        ^fields -> fields
        %{"inspect" => text} -> %{"fields" => text}
      end

    Map.merge(fields, %{
      "action" => action,
      "agent" => agent,
      "host" => Keyword.get(opts, :host),
      "reason" => ControlPlane.text(reason, @max_reason),
      "by" => by,
      "evidence" => ControlPlane.bound(Keyword.get(opts, :evidence, %{}), @max_part),
      "node" => Atom.to_string(node()),
      "at_ms" => System.system_time(:millisecond)
    })
  end

  @doc """
  Publishes a remediation event (see `payload/4`) on every node of the mesh, records it in
  the audit trail of every node (`Symbiont.Conductor.Audit`), and emits it as the
  telemetry event `[:symbiont, :conductor, :action]` (`Symbiont.Telemetry`). Evidence or
  fields that msgpack cannot encode, or that are too big, are replaced by their text
  (`Symbiont.ControlPlane.bound/3`) rather than lost.
  """
  @spec publish(String.t(), String.t() | nil, String.t(), keyword) :: :ok
  def publish(action, agent, reason, opts \\ []) do
    payload = payload(action, agent, reason, opts)
    event = Symbiont.Event.new!(@topic, payload, agent)
    :ok = Symbiont.Conductor.Audit.applied(payload)
    result = Symbiont.Mesh.publish(Symbiont.Mesh, event)

    Symbiont.Telemetry.execute([:symbiont, :conductor, :action], %{}, %{
      action: action,
      agent: agent,
      host: payload["host"],
      reason: reason,
      by: payload["by"]
    })

    result
  end
end

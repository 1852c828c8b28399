defmodule Embedded.Application do
  @moduledoc false
  # Two Symbiont instances side by side in this app's tree, each with its agents and
  # its conductor; the agents of both share the node's mesh.
  use Application

  @impl true
  def start(_type, _args) do
    children = [
      {Symbiont,
       name: Embedded.Orders,
       agents: [[name: "orders", python: "embedded_agents:Orders"]],
       conductor: [tick_ms: 1_000]},
      {Symbiont,
       name: Embedded.Billing,
       agents: [[name: "billing", python: "embedded_agents:Billing"]],
       conductor: [tick_ms: 1_000]}
    ]

    Supervisor.start_link(children, strategy: :one_for_one, name: Embedded.Supervisor)
  end
end

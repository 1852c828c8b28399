defmodule Symbiont.Runtime do
  @moduledoc """
  The runtime (see "Supervision tree" in the `Symbiont` moduledoc): `Symbiont.Hosts`,
  the DynamicSupervisor of the `Symbiont.Host`s (each the owner of a Python host
  process), and `Symbiont.Agents`, the DynamicSupervisor of the `Symbiont.Agent.Server`s,
  each attached to a slot of a host.

  A crash of one host or one agent is its DynamicSupervisor's (up to 100 restarts in 5
  seconds each) and restarts nothing else. A crash of either DynamicSupervisor is the
  runtime's: `:one_for_all` with `max_restarts: 0`, it restarts neither but stops the
  other and exits, and `Symbiont.Supervisor` (`:rest_for_one`) starts it again and, after
  it, `Symbiont.Control`, whose manifest starts the agents again (a manifest that outlived
  them would not know they were gone until its next reconcile, and would keep the
  placements of replicas that no longer run). Nothing in control is linked to a process
  of the runtime, so none of it fails while the runtime stops.
  """
  use Supervisor

  @doc "Starts the runtime, registered as `Symbiont.Runtime`."
  @spec start_link(term) :: Supervisor.on_start()
  def start_link(_arg), do: Supervisor.start_link(__MODULE__, nil, name: __MODULE__)

  @impl true
  def init(nil) do
    children = [
      {DynamicSupervisor,
       name: Symbiont.Hosts, strategy: :one_for_one, max_restarts: 100, max_seconds: 5},
      {DynamicSupervisor,
       name: Symbiont.Agents, strategy: :one_for_one, max_restarts: 100, max_seconds: 5}
    ]

    Supervisor.init(children, strategy: :one_for_all, max_restarts: 0)
  end
end

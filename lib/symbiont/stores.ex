defmodule Symbiont.Stores do
  @moduledoc """
  What must outlive a restart of the runtime and of control (see "Supervision tree" in
  the `Symbiont` moduledoc): `Symbiont.Conductor.Audit`, the trail of remediations, from
  which a restarted conductor reads its cooldowns back; `Symbiont.Health.History`, the
  recent health events of `Symbiont.health/0`, `Symbiont.agent/1` and the status page
  (those around a crash of the hosts are the ones worth reading); and
  `Symbiont.Host.Standby`, the warm standby host processes, so that the hosts that
  restart with the runtime start warm.

  After the core, since the history subscribes on the mesh; before `Symbiont.Runtime`
  and `Symbiont.Control` in `Symbiont.Supervisor` (`:rest_for_one`), so that no crash of
  a host supervisor, the manifest, a deploy, the conductor or the status page restarts
  them. `:one_for_one`: they need nothing of each other, and a crash of one loses its
  own contents only.
  """
  use Supervisor

  @doc "Starts the stores, registered as `Symbiont.Stores`."
  @spec start_link(term) :: Supervisor.on_start()
  def start_link(_arg), do: Supervisor.start_link(__MODULE__, nil, name: __MODULE__)

  @impl true
  def init(nil) do
    children = [Symbiont.Conductor.Audit, Symbiont.Health.History, Symbiont.Host.Standby]
    Supervisor.init(children, strategy: :one_for_one)
  end
end

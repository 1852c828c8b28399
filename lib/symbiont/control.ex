defmodule Symbiont.Control do
  @moduledoc """
  Control (see "Supervision tree" in the `Symbiont` moduledoc): what acts on the runtime
  and shows it. `Symbiont.Deploy` (canaries, promotions, rollbacks), `Symbiont.Manifest`
  (the desired state, and the reconciler that repairs drift), `Symbiont.Conductor`
  (unless `config :symbiont, conductor: [enabled: false]`) and `Symbiont.StatusPage`
  (with `config :symbiont, status_page: [...]`).

  `:one_for_one`: each finds the others by name at each call and keeps no state of
  theirs, so a crash of one restarts that one only. A crashed conductor does not restart
  the manifest, a crashed manifest does not restart the conductor, and none of them
  restarts a store (the audit trail the conductor resumes from is in `Symbiont.Stores`),
  the core, a host or an agent: all of those are before this group in
  `Symbiont.Supervisor` (`:rest_for_one`), which restarts control whenever the runtime
  restarts, so that the manifest starts the agents again.

  Options: `:agents` (the validated specs of the manifest), `:boot` (the manifest's, see
  `Symbiont.Manifest.start_link/1`: one per start of the application, so that a
  restarted group is not the node's start), `:conductor` (`false`, or the conductor's
  options) and `:status_page` (`false`, or the page's options).
  """
  use Supervisor

  @doc "Starts control, registered as `Symbiont.Control` (see the moduledoc for `opts`)."
  @spec start_link(keyword) :: Supervisor.on_start()
  def start_link(opts) when is_list(opts),
    do: Supervisor.start_link(__MODULE__, opts, name: __MODULE__)

  @impl true
  def init(opts) do
    manifest = {
      Symbiont.Manifest,
      # Its agents are checked before any starts: Symbiont.Manifest, "Checked before
      # it serves".
      agents: Keyword.fetch!(opts, :agents),
      check: true,
      instance: Symbiont,
      boot: Keyword.fetch!(opts, :boot)
    }

    conductor =
      case Keyword.get(opts, :conductor, false) do
        false -> []
        conductor_opts -> [{Symbiont.Conductor, conductor_opts}]
      end

    page =
      case Keyword.get(opts, :status_page, false) do
        false -> []
        page_opts -> [{Symbiont.StatusPage, page_opts}]
      end

    Supervisor.init([Symbiont.Deploy, manifest] ++ conductor ++ page, strategy: :one_for_one)
  end
end

defmodule Symbiont.Application do
  @moduledoc false
  # The supervision tree (see the `Symbiont` moduledoc for the picture). `:rest_for_one`:
  # each child needs only those before it. First the core, the root's own children, then
  # three groups that need it, each a supervisor with its strategy and its reasons in its
  # moduledoc: Symbiont.Stores, Symbiont.Runtime, Symbiont.Control.
  #
  # The core is not a group of its own: everything after it registers in its registries,
  # subscribes on its mesh, writes rows into its observation table, so a crash of a core
  # process must restart all of that, and only a supervisor that has both as children
  # can do it in order (the dependents stopped before the core process is started
  # again). A core supervisor that gave up to escalate (max_restarts: 0) would stop the
  # registries and the mesh first, killing what is registered there (Registry links),
  # while the groups after it restart those processes against a core that is down:
  # measured, Symbiont.Stores reached its restart limit and exited before the core did.

  use Application

  @impl true
  def start(_type, _args) do
    Symbiont.Config.restore_user_home()

    # Every key of `config :symbiont`, once (Symbiont.Config); the code reads them
    # validated from here on.
    with :ok <- Symbiont.Config.validate() do
      control = [
        agents: Symbiont.Config.get(:agents),
        # This start of the application: the manifest restarted with the runtime is not
        # the node's start (Symbiont.Manifest, "Checked before it serves").
        boot: make_ref(),
        conductor: conductor(),
        status_page: status_page()
      ]

      core = [
        Symbiont.Telemetry,
        {Registry, keys: :unique, name: Symbiont.Host.Registry},
        {Registry, keys: :unique, name: Symbiont.Agent.Registry},
        # Which Symbiont.Instance runs which agent name.
        {Registry, keys: :unique, name: Symbiont.Instance.registry()},
        Symbiont.Observation,
        {Symbiont.Mesh, name: Symbiont.Mesh},
        {Task.Supervisor, name: Symbiont.TaskSupervisor}
      ]

      children = core ++ [Symbiont.Stores, Symbiont.Runtime, {Symbiont.Control, control}]

      case Supervisor.start_link(children, strategy: :rest_for_one, name: Symbiont.Supervisor) do
        # A required agent that cannot start (logged with its traceback already): the
        # manifest's failure, in its group's.
        {:error,
         {:shutdown,
          {:failed_to_start_child, Symbiont.Control,
           {:shutdown,
            {:failed_to_start_child, Symbiont.Manifest, {:agent_cannot_start, _} = why}}}}} ->
          {:error, why}

        other ->
          other
      end
    else
      {:error, {:agents, message}} -> {:error, {:invalid_manifest, message}}
      {:error, {:conductor, message}} -> {:error, {:invalid_conductor, message}}
      {:error, {:signals, message}} -> {:error, {:invalid_signals, message}}
      {:error, {_key, message}} -> {:error, {:invalid_config, message}}
    end
  end

  # The conductor's options, or `false` with `config :symbiont, conductor: [enabled:
  # false]`. It heals the node's own agents: those of a Symbiont.Instance have the
  # instance's conductor.
  defp conductor do
    opts = Symbiont.Config.get(:conductor)

    if Keyword.get(opts, :enabled, true),
      do: Keyword.merge([scope: &Symbiont.Instance.unowned?/1], Keyword.delete(opts, :enabled)),
      else: false
  end

  # The status page's options; `status_page: false` (or none) leaves it out.
  defp status_page do
    case Symbiont.Config.get(:status_page) do
      opts when is_list(opts) -> opts
      _ -> false
    end
  end
end

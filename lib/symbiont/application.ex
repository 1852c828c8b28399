defmodule Symbiont.Application do
  @moduledoc false
  # The supervision tree (see the `Symbiont` moduledoc for the picture). `:rest_for_one`:
  # the registries and the mesh outlive the hosts that register in them; if the host
  # supervisor restarts, the manifest after it restarts too and starts the agents again.

  use Application

  @impl true
  def start(_type, _args) do
    Symbiont.Config.restore_user_home()

    # Every key of `config :symbiont`, once (Symbiont.Config); the code reads them
    # validated from here on.
    with :ok <- Symbiont.Config.validate() do
      agents = Symbiont.Config.get(:agents)

      children =
        [
          Symbiont.Telemetry,
          {Registry, keys: :unique, name: Symbiont.Host.Registry},
          {Registry, keys: :unique, name: Symbiont.Agent.Registry},
          # Which Symbiont.Instance runs which agent name.
          {Registry, keys: :unique, name: Symbiont.Instance.registry()},
          Symbiont.Observation,
          {Symbiont.Mesh, name: Symbiont.Mesh},
          {Task.Supervisor, name: Symbiont.TaskSupervisor},
          {DynamicSupervisor,
           name: Symbiont.Hosts, strategy: :one_for_one, max_restarts: 100, max_seconds: 5},
          {DynamicSupervisor,
           name: Symbiont.Agents, strategy: :one_for_one, max_restarts: 100, max_seconds: 5},
          Symbiont.Deploy,
          # Its agents are checked before any starts: Symbiont.Manifest, "Checked
          # before it serves".
          {Symbiont.Manifest, agents: agents, check: true, instance: Symbiont},
          Symbiont.Conductor.Audit
        ] ++ conductor()

      # Last, so that their crashes never restart a host: the standby pool (hosts start
      # cold meanwhile) and the health history of the iex helpers.
      last = [Symbiont.Host.Standby, Symbiont.Health.History]

      case Supervisor.start_link(children ++ status_page() ++ last,
             strategy: :rest_for_one,
             name: Symbiont.Supervisor
           ) do
        # A required agent that cannot start (logged with its traceback already).
        {:error,
         {:shutdown, {:failed_to_start_child, Symbiont.Manifest, {:agent_cannot_start, _} = why}}} ->
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

  # The conductor, unless `config :symbiont, conductor: [enabled: false]`. It heals the
  # node's own agents: those of a Symbiont.Instance have the instance's conductor.
  defp conductor do
    opts = Symbiont.Config.get(:conductor)

    if Keyword.get(opts, :enabled, true),
      do: [
        {Symbiont.Conductor,
         Keyword.merge([scope: &Symbiont.Instance.unowned?/1], Keyword.delete(opts, :enabled))}
      ],
      else: []
  end

  # Last: it only reads what the others run. `status_page: false` (or none) leaves it out.
  defp status_page do
    case Symbiont.Config.get(:status_page) do
      opts when is_list(opts) -> [{Symbiont.StatusPage, opts}]
      _ -> []
    end
  end
end

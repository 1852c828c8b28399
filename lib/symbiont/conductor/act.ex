defmodule Symbiont.Conductor.Act do
  @moduledoc """
  How the conductor applies an action the guardrails let through
  (`Symbiont.Conductor.Guard`): `restart`, `scale`, `quarantine`, `release`, `rollback`,
  `deploy`, `retire`, `spawn`, `reroute` and `dead_letter`, each on the agent's stable
  replicas as they run now (the registry of roles, `Symbiont.Observation.ids/1`), its
  manifest, `Symbiont.Deploy` or `Symbiont.Placement`. What the action means is in
  `Symbiont.Conductor` and `python/symbiont/conductor.py`; publishing and auditing it is
  the conductor's.
  """

  alias Symbiont.Agent.Server

  @doc """
  Applies the validated action `a` on `agent` (its map in the conductor's snapshot;
  `nil` for a `spawn`), with the conductor's options `opts` (`:manifest`): `{:ok,
  fields}`, the fields to audit with it (where a `reroute` took the replica from and
  to), or `{:failed, why}`.
  """
  @spec execute(map, map, map | nil) :: {:ok, map} | {:failed, String.t()}
  def execute(opts, %{"action" => action} = a, agent) do
    case apply_action(action, a, agent, opts) do
      :ok -> {:ok, %{}}
      {:ok, _} -> {:ok, %{}}
      # Where a reroute took the replica from and to: audited with the action.
      {:placed, fields} -> {:ok, fields}
      {:error, %Symbiont.Error{} = e} -> {:failed, Exception.message(e)}
      {:error, why} when is_binary(why) -> {:failed, why}
      {:error, why} -> {:failed, inspect(why)}
    end
  end

  defp apply_action("restart", a, agent, _opts) do
    each_replica(agent, fn id ->
      {:ok, info} = Server.info(id)

      if info.spec[:wasm],
        do: Server.restart(id),
        else: Symbiont.Host.restart(info.host, a["reason"])
    end)
  end

  defp apply_action("scale", a, _agent, opts),
    do: Symbiont.Manifest.scale(a["agent"], a["replicas"], opts.manifest)

  defp apply_action("quarantine", a, agent, _opts),
    do: each_replica(agent, &Server.quarantine(&1, a["reason"]))

  defp apply_action("release", _a, agent, _opts), do: each_replica(agent, &Server.release/1)

  defp apply_action("rollback", a, _agent, _opts), do: Symbiont.Deploy.rollback(a["agent"])

  defp apply_action("deploy", %{"path" => path} = a, _agent, _opts) when is_binary(path),
    do: Symbiont.Deploy.deploy(a["agent"], path)

  defp apply_action("deploy", _a, _agent, _opts), do: {:error, "deploy needs path, a string"}

  defp apply_action("retire", a, agent, opts) do
    if agent["managed"],
      do: Symbiont.Manifest.retire(a["agent"], opts.manifest),
      else: each_replica(agent, &Server.retire(&1, nil))
  end

  defp apply_action("spawn", a, _agent, opts) do
    templates = Symbiont.Config.get(:templates)

    with {:ok, template} <- fetch_template(templates, a["template"]) do
      spec =
        template
        |> Keyword.delete(:match)
        |> Keyword.merge(name: a["agent"], required: false)
        |> Keyword.update(
          :config,
          Map.get(a, "config", %{}),
          &Map.merge(&1, Map.get(a, "config", %{}))
        )

      Symbiont.Manifest.spawn_agent(spec, opts.manifest)
    end
  end

  # Replica `id` (the agent's only one, when not given) goes to a host of its own
  # (Symbiont.Placement.reroute/2); where from and where to are audited with it.
  defp apply_action("reroute", a, agent, _opts) do
    ids = Symbiont.Observation.ids(agent["name"])

    case Map.get(a, "id", with([one] <- ids, do: one, else: (_ -> nil))) do
      id when is_binary(id) ->
        if id in ids,
          do: with({:ok, moved} <- Symbiont.Placement.reroute(id), do: {:placed, moved}),
          else: {:error, "#{inspect(id)} is not a replica of #{agent["name"]} (#{inspect(ids)})"}

      other ->
        {:error,
         "reroute needs id, the replica to move (#{agent["name"]} runs #{inspect(ids)}), got: #{inspect(other)}"}
    end
  end

  defp apply_action("dead_letter", a, agent, _opts) do
    case agent["suspect"] do
      %{"id" => id} -> Server.drop_suspect(id, a["reason"])
      nil -> {:error, "no suspect delivery waits"}
    end
  end

  defp fetch_template(templates, name) when is_binary(name) do
    case Enum.find(templates, fn {k, _} -> to_string(k) == name end) do
      {_, spec} ->
        {:ok, spec}

      nil ->
        {:error,
         "no template #{inspect(name)}; templates: #{inspect(Enum.map(templates, &to_string(elem(&1, 0))))}"}
    end
  end

  defp fetch_template(_templates, other),
    do: {:error, "spawn needs template, a name, got: #{inspect(other)}"}

  # Each of the agent's stable replicas, as they run now (the registry of roles).
  defp each_replica(agent, fun) do
    Enum.reduce_while(Symbiont.Observation.ids(agent["name"]), :ok, fn id, :ok ->
      case fun.(id) do
        :ok -> {:cont, :ok}
        {:ok, _} -> {:cont, :ok}
        error -> {:halt, error}
      end
    end)
  end
end

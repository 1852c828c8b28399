defmodule Symbiont.Operator do
  @moduledoc """
  The implementation of what the operator changes by hand through `Symbiont`:
  `spawn_agent/2`, `scale/3`, `quarantine/3`, `release/2`, `unpin/1`, `retire/1`,
  `rollback/2` and `restart/1`. Each is audited as the `"operator"`'s on
  `symbiont.remediation`, and what it sets by hand is pinned (`Symbiont.Pins`) so that
  the conductor leaves it alone. Their documentation is on `Symbiont` (`h
  Symbiont.scale`), which delegates here.
  """

  alias Symbiont.{Host, Inspection, Instance, Pins}

  @doc "`Symbiont.spawn_agent/2`: see its documentation there."
  @spec spawn_agent(keyword | map, keyword) :: {:ok, String.t()} | {:error, Symbiont.Error.t()}
  def spawn_agent(spec, opts \\ []) do
    manifest =
      case Keyword.fetch(opts, :in) do
        {:ok, instance} -> Instance.manifest(instance)
        :error -> Symbiont.Manifest
      end

    with {:ok, name} <- Symbiont.Manifest.spawn_agent(spec, manifest) do
      Symbiont.Remediation.publish("spawn", name, "spawned by hand", by: "operator")
      {:ok, name}
    end
  end

  @doc "`Symbiont.scale/3`: see its documentation there."
  @spec scale(String.t(), pos_integer, keyword) :: :ok | {:error, Symbiont.Error.t()}
  def scale(name, n, opts \\ []) do
    with {:ok, hold} <- hold(opts),
         :ok <- Symbiont.Manifest.scale(name, n, Instance.manifest_of(name)) do
      {:ok, pin} = Pins.pin(name, "replicas", n, hold_ms: hold, reason: "scaled by hand")

      Symbiont.Remediation.publish("scale", name, "scaled by hand",
        by: "operator",
        fields: %{"replicas" => n, "pinned_until_ms" => pin.until_ms}
      )
    end
  end

  @doc "`Symbiont.quarantine/3`: see its documentation there."
  @spec quarantine(String.t(), String.t(), keyword) :: :ok | {:error, Symbiont.Error.t()}
  def quarantine(name, reason \\ "quarantined by hand", opts \\ [])
      when is_binary(name) and is_binary(reason) do
    by_hand(name, "quarantine", reason, true, opts, &Symbiont.Agent.Server.quarantine(&1, reason))
  end

  @doc "`Symbiont.release/2`: see its documentation there."
  @spec release(String.t(), keyword) :: :ok | {:error, Symbiont.Error.t()}
  def release(name, opts \\ []) when is_binary(name) do
    by_hand(name, "release", "released by hand", false, opts, &Symbiont.Agent.Server.release/1)
  end

  defp by_hand(name, action, reason, quarantined, opts, fun) do
    with {:ok, hold} <- hold(opts),
         [first | _] = replicas <- Inspection.replicas(name) do
      result =
        Enum.reduce_while(replicas, :ok, fn r, :ok ->
          case fun.(r.id) do
            :ok ->
              {:cont, :ok}

            {:error, why} ->
              message = "agent #{inspect(r.id)} cannot #{action} now: #{inspect(why)}"
              {:halt, {:error, Symbiont.Error.new(:unavailable, message, agent: r.id)}}
          end
        end)

      with :ok <- result do
        {:ok, pin} =
          Pins.pin(first.name, "quarantine", quarantined, hold_ms: hold, reason: reason)

        Symbiont.Remediation.publish(action, first.name, reason,
          by: "operator",
          fields: %{"replicas" => Enum.map(replicas, & &1.id), "pinned_until_ms" => pin.until_ms}
        )
      end
    else
      {:error, message} -> {:error, message}
      [] -> {:error, Inspection.no_agent(name)}
    end
  end

  @doc "`Symbiont.unpin/1`: see its documentation there."
  @spec unpin(String.t()) :: {:ok, [String.t()]} | {:error, Symbiont.Error.t()}
  def unpin(name) when is_binary(name) do
    case Pins.unpin(name) do
      [] ->
        {:error, Symbiont.Error.new(:not_found, "agent #{inspect(name)} has no pin", agent: name)}

      fields ->
        Symbiont.Remediation.publish("unpin", name, "pins lifted by hand",
          by: "operator",
          fields: %{"fields" => fields}
        )

        {:ok, fields}
    end
  end

  defp hold(opts) do
    case Keyword.fetch(opts, :hold_ms) do
      {:ok, ms} -> Pins.validate_hold(ms)
      :error -> {:ok, Pins.hold_ms()}
    end
  end

  @doc "`Symbiont.retire/1`: see its documentation there."
  @spec retire(String.t()) :: :ok | {:error, Symbiont.Error.t()}
  def retire(name) do
    with :ok <- Symbiont.Manifest.retire(name, Instance.manifest_of(name)) do
      # Gone for good: its pins with it.
      Pins.unpin(name)
      Symbiont.Remediation.publish("retire", name, "retired by hand", by: "operator")
    end
  end

  @doc "`Symbiont.rollback/2`: see its documentation there."
  @spec rollback(String.t(), keyword) :: {:ok, map} | {:error, Symbiont.Error.t()}
  def rollback(agent, opts \\ []) do
    with {:ok, hold} <- hold(opts),
         {:ok, %{to: to}} = ok <- Symbiont.Deploy.rollback(agent, by: "operator") do
      {:ok, _pin} = Pins.pin(agent, "version", to, hold_ms: hold, reason: "rolled back by hand")
      ok
    end
  end

  @doc "`Symbiont.restart/1`: see its documentation there."
  @spec restart(String.t()) :: :ok | {:error, Symbiont.Error.t()}
  def restart(name) when is_binary(name) do
    case Inspection.replicas(name) do
      [] ->
        {:error, Inspection.no_agent(name)}

      [first | _] = replicas ->
        with :ok <- restart_each(replicas) do
          hosts = replicas |> Enum.map(& &1.host) |> Enum.uniq()

          Symbiont.Remediation.publish("restart", first.name, "restarted by hand",
            by: "operator",
            host: if(match?([_], hosts), do: hd(hosts)),
            fields: %{"replicas" => Enum.map(replicas, & &1.id)}
          )
        end
    end
  end

  defp restart_each(replicas) do
    Enum.reduce_while(replicas, :ok, fn r, :ok ->
      result =
        if r.spec[:wasm],
          do: Symbiont.Agent.Server.restart(r.id),
          else: Host.restart(r.host, "restarted by hand")

      case result do
        :ok ->
          {:cont, :ok}

        {:error, reason} ->
          message =
            "agent #{inspect(r.id)} (host #{inspect(r.host)}) cannot be restarted now: #{inspect(reason)}"

          {:halt, {:error, Symbiont.Error.new(:unavailable, message, agent: r.id, host: r.host)}}
      end
    end)
  end
end

defmodule Symbiont.Manifest do
  @moduledoc """
  The desired state: which agents run. The `:agents` of the application environment are
  validated before anything starts, then each replica of each agent is started in a host
  of its own under `Symbiont.Hosts` (see `host_names/1`). The reconciler that repairs
  drift comes with the conductor (DESIGN.md §2).
  """
  use GenServer

  require Logger

  @doc """
  Validates a list of agent specs (see `Symbiont.Agent`): each one, then that names are
  unique.

      iex> Symbiont.Manifest.validate([[name: "a", python: "m:A"], [name: "a", python: "m:B"]])
      {:error, "agent \\"a\\" is declared twice; agent names must be unique"}
  """
  @spec validate(term) :: {:ok, [Symbiont.Agent.spec()]} | {:error, String.t()}
  def validate(agents) when is_list(agents) do
    with {:ok, specs} <- validate_each(agents, []) do
      case specs |> Enum.frequencies_by(& &1.name) |> Enum.find(fn {_, n} -> n > 1 end) do
        nil ->
          {:ok, specs}

        {name, _} ->
          {:error, "agent #{inspect(name)} is declared twice; agent names must be unique"}
      end
    end
  end

  def validate(other),
    do: {:error, "expected :agents to be a list of agent specs, got: #{inspect(other)}"}

  defp validate_each([], acc), do: {:ok, Enum.reverse(acc)}

  defp validate_each([spec | rest], acc) do
    case Symbiont.Agent.validate_spec(spec) do
      {:ok, spec} -> validate_each(rest, [spec | acc])
      {:error, message} -> {:error, message}
    end
  end

  @doc false
  def start_link(specs), do: GenServer.start_link(__MODULE__, specs, name: __MODULE__)

  @doc "The agent specs in force."
  @spec agents() :: [Symbiont.Agent.spec()]
  def agents, do: GenServer.call(__MODULE__, :agents)

  @impl true
  def init(specs) do
    for spec <- specs, host <- host_names(spec) do
      case DynamicSupervisor.start_child(Symbiont.Hosts, {Symbiont.Host, name: host, agent: spec}) do
        {:ok, _} ->
          :ok

        {:error, reason} ->
          Logger.error(
            "agent #{inspect(spec.name)} (host #{inspect(host)}) could not start: #{inspect(reason)}"
          )
      end
    end

    {:ok, specs}
  end

  @doc """
  The names of the hosts that run an agent's replicas: the agent's own name, then
  `"name#2"`, `"name#3"`... (`#` cannot occur in an agent name, so these never clash).

      iex> Symbiont.Manifest.host_names(%{name: "billing", replicas: 3})
      ["billing", "billing#2", "billing#3"]
  """
  @spec host_names(%{name: String.t(), replicas: pos_integer}) :: [String.t()]
  def host_names(%{name: name, replicas: n}),
    do: [name | for(i <- 2..n//1, do: "#{name}##{i}")]

  @impl true
  def handle_call(:agents, _from, specs), do: {:reply, specs, specs}
end

defmodule Symbiont.Manifest do
  @moduledoc """
  The desired state: which agents run. The `:agents` of the application environment are
  validated before anything starts, then the hosts are started under `Symbiont.Hosts` and
  each replica of each agent under `Symbiont.Agents` (see `plan/2`): a Python agent's
  replica gets a host of its own; Wasm agents share hosts named `"wasm#1"`, `"wasm#2"`...
  up to `:wasm_agents_per_host` in each (application env, default 32). The reconciler
  that repairs drift comes with the conductor (DESIGN.md §2).
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
    start_all(specs, Application.get_env(:symbiont, :wasm_agents_per_host, 32))
    {:ok, specs}
  end

  @doc """
  Starts the hosts of `plan(specs, per_host)` under `Symbiont.Hosts` and their agents
  under `Symbiont.Agents`; what cannot start is logged.
  """
  @spec start_all([Symbiont.Agent.spec()], pos_integer) :: :ok
  def start_all(specs, per_host) do
    for {host, agents} <- plan(specs, per_host) do
      start_child(Symbiont.Hosts, {Symbiont.Host, name: host}, "host #{inspect(host)}")

      for {id, spec} <- agents do
        child = {Symbiont.Agent.Server, id: id, host: host, spec: spec}
        start_child(Symbiont.Agents, child, "agent #{inspect(id)} (host #{inspect(host)})")
      end
    end

    :ok
  end

  defp start_child(sup, child, what) do
    case DynamicSupervisor.start_child(sup, child) do
      {:ok, _} -> :ok
      {:error, reason} -> Logger.error("#{what} could not start: #{inspect(reason)}")
    end
  end

  @doc """
  Where each replica runs: a list of `{host, [{agent_id, spec}]}`. A Python agent's
  replicas get a host each, named like the replica (see `host_names/1`); the replicas of
  Wasm agents fill hosts `"wasm#1"`, `"wasm#2"`... with up to `per_host` each.

      iex> specs = [%{name: "a", replicas: 2, wasm: nil}, %{name: "w", replicas: 3, wasm: "w.wat"}]
      iex> Symbiont.Manifest.plan(specs, 2) |> Enum.map(fn {h, as} -> {h, Enum.map(as, &elem(&1, 0))} end)
      [{"a", ["a"]}, {"a#2", ["a#2"]}, {"wasm#1", ["w", "w#2"]}, {"wasm#2", ["w#3"]}]
  """
  @spec plan([Symbiont.Agent.spec()], pos_integer) :: [{String.t(), [{String.t(), map}]}]
  def plan(specs, per_host) when is_integer(per_host) and per_host > 0 do
    {wasm, python} = Enum.split_with(specs, & &1[:wasm])
    own = for spec <- python, id <- host_names(spec), do: {id, [{id, spec}]}

    shared =
      for(spec <- wasm, id <- host_names(spec), do: {id, spec})
      |> Enum.chunk_every(per_host)
      |> Enum.with_index(1)
      |> Enum.map(fn {agents, i} -> {"wasm##{i}", agents} end)

    own ++ shared
  end

  @doc """
  The ids of an agent's replicas (and the names of their hosts, for a Python agent): the
  agent's own name, then `"name#2"`, `"name#3"`... (`#` cannot occur in an agent name,
  so these never clash).

      iex> Symbiont.Manifest.host_names(%{name: "billing", replicas: 3})
      ["billing", "billing#2", "billing#3"]
  """
  @spec host_names(%{name: String.t(), replicas: pos_integer}) :: [String.t()]
  def host_names(%{name: name, replicas: n}),
    do: [name | for(i <- 2..n//1, do: "#{name}##{i}")]

  @impl true
  def handle_call(:agents, _from, specs), do: {:reply, specs, specs}
end

defmodule Symbiont.Manifest.Desired do
  @moduledoc """
  The manifest's desired state as values, with no process behind it: validating a list
  of agent specs, the ids of an agent's replicas, the packed plan of `start_all/2`, the
  node a placed replica belongs on, what a reload changes, and which running replicas
  the desired state no longer wants. `Symbiont.Manifest` (the process) holds the state;
  `Symbiont.Manifest.Reconciler` acts on what these functions decide. The public
  functions of `Symbiont.Manifest` that are pure delegate here.
  """

  @doc """
  Validates a list of agent specs (see `Symbiont.Agent`): each one, then that names are
  unique. A spec that breaks a rule is `:invalid` (`Symbiont.Agent.validate_spec/1`), a
  name declared twice a `:conflict` (`Symbiont.Error`).

      iex> {:error, error} = Symbiont.Manifest.validate([[name: "a", python: "m:A"], [name: "a", python: "m:B"]])
      iex> {error.reason, error.details}
      {:conflict, %{agent: "a"}}
      iex> error.message
      "agent \\"a\\" is declared twice; agent names must be unique"
  """
  @spec validate(term) :: {:ok, [Symbiont.Agent.spec()]} | {:error, Symbiont.Error.t()}
  def validate(agents) when is_list(agents) do
    with {:ok, specs} <- validate_each(agents, []) do
      case specs |> Enum.frequencies_by(& &1.name) |> Enum.find(fn {_, n} -> n > 1 end) do
        nil ->
          {:ok, specs}

        {name, _} ->
          {:error,
           Symbiont.Error.new(
             :conflict,
             "agent #{inspect(name)} is declared twice; agent names must be unique",
             agent: name
           )}
      end
    end
  end

  def validate(other),
    do:
      {:error,
       Symbiont.Error.new(
         :invalid,
         "expected :agents to be a list of agent specs, got: #{inspect(other)}",
         field: :agents,
         value: other
       )}

  defp validate_each([], acc), do: {:ok, Enum.reverse(acc)}

  defp validate_each([spec | rest], acc) do
    case Symbiont.Agent.validate_spec(spec) do
      {:ok, spec} -> validate_each(rest, [spec | acc])
      {:error, message} -> {:error, message}
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
  The node that should start replica `id` of a placed agent (`spec.nodes`), given the
  live nodes: the first live node of the list, the list rotated by the replica's number
  so that replicas spread (replica 1 looks from the first node, replica 2 from the
  second...). `nil` when no node of the list is live. The manifest asks only for a
  replica that runs nowhere: one that runs stays where it is.

      iex> spec = %{nodes: [:"a@h", :"b@h", :"c@h"]}
      iex> Symbiont.Manifest.pick_node("billing", spec, [:"c@h", :"b@h", :"a@h"])
      :"a@h"
      iex> Symbiont.Manifest.pick_node("billing#2", spec, [:"c@h", :"b@h", :"a@h"])
      :"b@h"
      iex> Symbiont.Manifest.pick_node("billing", spec, [:"c@h", :"b@h"])
      :"b@h"
      iex> Symbiont.Manifest.pick_node("billing", spec, [:"x@h"])
      nil
  """
  @spec pick_node(String.t(), %{:nodes => [node], optional(atom) => any}, [node]) :: node | nil
  def pick_node(id, %{nodes: [_ | _] = nodes}, live) when is_binary(id) and is_list(live) do
    {first, rest} = Enum.split(nodes, rem(replica_number(id) - 1, length(nodes)))
    Enum.find(rest ++ first, &(&1 in live))
  end

  # "billing" is replica 1, "billing#2" replica 2; anything else after "#" counts as 1.
  defp replica_number(id) do
    with [_, n] <- String.split(id, "#", parts: 2),
         {n, ""} when n > 0 <- Integer.parse(n) do
      n
    else
      _ -> 1
    end
  end

  @doc """
  The ids of an agent's replicas (and the names of their hosts, for a Python agent): the
  agent's own name, then `"name#2"`, `"name#3"`... (`#` cannot occur in an agent name,
  so these never clash).

      iex> Symbiont.Manifest.host_names(%{name: "billing", replicas: 3})
      ["billing", "billing#2", "billing#3"]
  """
  @spec host_names(%{:name => String.t(), :replicas => pos_integer, optional(atom) => any}) ::
          [String.t()]
  def host_names(%{name: name, replicas: n}),
    do: [name | for(i <- 2..n//1, do: "#{name}##{i}")]

  @doc """
  The agent name of a replica id: `"billing#2"` → `"billing"`.

      iex> Symbiont.Manifest.agent_name("billing#2")
      "billing"
  """
  @spec agent_name(String.t()) :: String.t()
  def agent_name(id), do: id |> String.split("#", parts: 2) |> hd()

  @doc "Whether `spec` is placed across nodes (it has `:nodes`)."
  @spec placed?(map) :: boolean
  def placed?(spec), do: Map.get(spec, :nodes) != nil

  @doc """
  What in a spec is its logic (module, class, Wasm module, config): a change of it
  upgrades the running replicas in place.

      iex> Symbiont.Manifest.Desired.logic(%{name: "a", replicas: 2, module: "m", class: "A", wasm: nil, config: %{}})
      %{module: "m", class: "A", wasm: nil, config: %{}}
  """
  @spec logic(map) :: map
  def logic(spec), do: Map.take(spec, [:module, :class, :wasm, :config])

  @doc """
  The message for agent `name` missing from `desired` (name => spec): it lists the
  agents that are there.

      iex> Symbiont.Manifest.Desired.not_in_manifest("x", %{"b" => %{}, "a" => %{}})
      ~s(agent "x" is not in the manifest (its agents: ["a", "b"]\\))
  """
  @spec not_in_manifest(String.t(), map) :: String.t()
  def not_in_manifest(name, desired) do
    known = desired |> Map.keys() |> Enum.sort()
    "agent #{inspect(name)} is not in the manifest (its agents: #{inspect(known)})"
  end

  @doc """
  What a reload from the config entries `loaded` (name => spec, as last loaded) to `new`
  changes in `desired` (the specs in force, run-time changes included): the names
  started, retired, changed, rescaled and upgraded (logic changed), and the new desired
  state. Changed entries take the new config; unchanged ones keep their run-time changes.

      iex> a = %{name: "a", replicas: 1, module: "m", class: "A", wasm: nil, config: %{}}
      iex> b = %{a | name: "b"}
      iex> old = %{"a" => a, "b" => b}
      iex> diff = Symbiont.Manifest.Desired.reload_diff(%{old | "b" => %{b | replicas: 3}}, old, %{"a" => %{a | replicas: 2}, "c" => %{a | name: "c"}})
      iex> {diff.started, diff.retired, diff.rescaled, diff.upgraded, Map.keys(diff.desired)}
      {["c"], ["b"], ["a"], [], ["a", "c"]}
  """
  @spec reload_diff(map, map, map) :: %{
          started: [String.t()],
          retired: [String.t()],
          rescaled: [String.t()],
          upgraded: [String.t()],
          desired: map
        }
  def reload_diff(desired, loaded, new) do
    old = loaded
    started = for {name, _} <- new, not Map.has_key?(desired, name), do: name
    retired = for {name, _} <- old, not Map.has_key?(new, name), do: name

    changed = for {name, spec} <- new, Map.has_key?(old, name), old[name] != spec, do: name

    rescaled = for name <- changed, old[name].replicas != new[name].replicas, do: name
    upgraded = for name <- changed, logic(old[name]) != logic(new[name]), do: name

    desired =
      desired
      |> Map.drop(retired)
      |> Map.merge(Map.take(new, started ++ changed))

    %{
      started: started,
      retired: retired,
      rescaled: rescaled,
      upgraded: upgraded,
      desired: desired
    }
  end

  @doc """
  The running replicas to retire: those in `registered` (id => `{agent name, role}`)
  that are stable, not `wanted` (id => spec), not already `retiring` (id => ref), and
  whose agent is `managed` by the manifest (a set of names).

      iex> registered = %{"a" => {"a", :stable}, "a#2" => {"a", :stable}, "a#3" => {"a", :canary}, "z" => {"z", :stable}}
      iex> Symbiont.Manifest.Desired.extra(registered, %{"a" => %{}}, %{}, MapSet.new(["a"]))
      ["a#2"]
  """
  @spec extra(map, map, map, MapSet.t()) :: [String.t()]
  def extra(registered, wanted, retiring, managed) do
    for {id, {name, :stable}} <- registered,
        not Map.has_key?(wanted, id),
        not Map.has_key?(retiring, id),
        MapSet.member?(managed, name),
        do: id
  end

  @doc """
  The names of `leaving` (agents gone from the desired state) that still have a replica
  running (in `registered`, not among the `extra` just retired) or being retired (ids in
  `retiring`): a name has left for good once none does.

      iex> registered = %{"a" => {"a", :stable}, "b#2" => {"b", :stable}}
      iex> Symbiont.Manifest.Desired.still_leaving(MapSet.new(["a", "b", "c"]), registered, ["a"], %{"c#2" => nil})
      MapSet.new(["b", "c"])
  """
  @spec still_leaving(MapSet.t(), map, [String.t()], map) :: MapSet.t()
  def still_leaving(leaving, registered, extra, retiring) do
    MapSet.filter(leaving, fn name ->
      Enum.any?(registered, fn {id, {n, _role}} -> n == name and id not in extra end) or
        Enum.any?(Map.keys(retiring), &(agent_name(&1) == name))
    end)
  end
end

defmodule Symbiont.Agent.Spec do
  @moduledoc """
  Validation of an agent spec: the keys `Symbiont.Agent` documents ("Spec keys"), each
  checked and given its default, the Wasm module and its sandbox limits, the node list
  of a placed agent, and the defaults a spec validated before a key existed gets. The
  result is a `t:Symbiont.Agent.spec/0`; an error is an `:invalid` `Symbiont.Error` whose message
  names the agent, the key, the value and what is allowed (and, as `details.field`, the
  key). `Symbiont.Agent`'s functions of the same names delegate here; the bounds (queue,
  in flight, replicas, retries, timeouts, nodes) are `Symbiont.Agent.Spec.Limits`'.
  """

  import Symbiont.Agent.Spec.Limits, only: [invalid: 3, default_bytes: 1, validate_limits: 2]

  @typep spec :: Symbiont.Agent.spec()

  @keys [
    :name,
    :python,
    :wasm,
    :topics,
    :limits,
    :config,
    :replicas,
    :max_queue,
    :max_queue_bytes,
    :max_in_flight,
    :max_in_flight_bytes,
    :high_water,
    :max_attempts,
    :handler_timeout,
    :overflow,
    :min_replicas,
    :max_replicas,
    :required,
    :durable,
    :nodes,
    :dedupe,
    :max_topics,
    :max_start_failures
  ]
  # The byte bounds (their defaults are config :symbiont's, Symbiont.Config).
  @byte_bounds [:max_queue_bytes, :max_in_flight_bytes]

  @doc """
  Validates an agent spec given as a keyword list or map; `nil` is no agent.

      iex> {:ok, spec} = Symbiont.Agent.validate_spec(name: "billing", python: "shop:Billing")
      iex> Map.take(spec, [:name, :module, :class, :config, :replicas, :overflow])
      %{name: "billing", module: "shop", class: "Billing", config: %{}, replicas: 1, overflow: :drop_oldest}

      iex> {:error, error} = Symbiont.Agent.validate_spec(name: "billing", python: "shop.Billing")
      iex> {error.reason, error.details}
      {:invalid, %{agent: "billing", field: :python}}
      iex> error.message
      "agent \\"billing\\": expected :python to be \\"module:Class\\", got: \\"shop.Billing\\""

  The error is `:invalid` (`Symbiont.Error`), with the agent's name in `details` when
  the spec has one, and the key that is wrong as `field` (an unknown key: that key).
  """
  @spec validate_spec(nil | keyword | map) :: {:ok, spec | nil} | {:error, Symbiont.Error.t()}
  def validate_spec(spec),
    do: spec |> check_spec() |> Symbiont.Error.wrap(:invalid, details(spec))

  # The agent a spec names, for an error's details.
  defp details(spec) do
    name =
      cond do
        is_map(spec) -> Map.get(spec, :name)
        is_list(spec) and Keyword.keyword?(spec) -> Keyword.get(spec, :name)
        true -> nil
      end

    if is_binary(name) or (is_atom(name) and name not in [nil, true, false]),
      do: %{agent: to_string(name)},
      else: %{}
  end

  defp check_spec(nil), do: {:ok, nil}

  defp check_spec(%{module: _, class: _, name: _, config: _, max_queue: _, wasm: _} = spec) do
    # Validated already; one validated before the byte bounds existed gets their defaults.
    Enum.reduce_while(@byte_bounds, {:ok, spec}, fn key, {:ok, spec} ->
      if Map.has_key?(spec, key) do
        {:cont, {:ok, spec}}
      else
        case default_bytes(key) do
          {:ok, n} -> {:cont, {:ok, Map.put(spec, key, n)}}
          error -> {:halt, error}
        end
      end
    end)
  end

  defp check_spec(spec) when is_map(spec), do: check_spec(Map.to_list(spec))

  defp check_spec(spec) when is_list(spec) do
    if Keyword.keyword?(spec) do
      name = Keyword.get(spec, :name)

      with {:ok, name} <- validate_name(name),
           :ok <- known_keys(spec, name),
           {:ok, config} <- validate_config(Keyword.get(spec, :config, %{}), name),
           {:ok, logic} <- validate_logic(spec, config, name),
           {:ok, limits} <- validate_limits(spec, name) do
        {:ok, %{name: name, config: config} |> Map.merge(logic) |> Map.merge(limits)}
      end
    else
      {:error, "expected an agent spec to be a keyword list or map, got: #{inspect(spec)}"}
    end
  end

  defp check_spec(other),
    do: {:error, "expected an agent spec to be a keyword list or map, got: #{inspect(other)}"}

  @doc """
  The spec of a new version of a Wasm agent: `spec` running the module at `path`, with
  the same topics, limits and config.

      iex> {:ok, spec} = Symbiont.Agent.validate_spec(name: "c", wasm: "priv/wasm/counter.wat", topics: ["t"])
      iex> {:ok, v2} = Symbiont.Agent.with_wasm(spec, "priv/wasm/counter_v2.wat")
      iex> {Path.basename(v2.wasm), Path.basename(v2.config["wasm"]), v2.config["topics"]}
      {"counter_v2.wat", "counter_v2.wat", ["t"]}
      iex> {:error, error} = Symbiont.Agent.with_wasm(spec, "nope.wasm")
      iex> {error.reason, error.message}
      {:not_found, ~s(agent "c": the :wasm module "nope.wasm" does not exist)}

  The error is `:not_found` for a module that does not exist, `:invalid` for a path that
  is not a string or an agent that is not a Wasm agent (`Symbiont.Error`).
  """
  @spec with_wasm(spec, String.t()) :: {:ok, spec} | {:error, Symbiont.Error.t()}
  def with_wasm(%{wasm: old} = spec, path) when is_binary(old) do
    reason = if is_binary(path), do: :not_found, else: :invalid

    with {:ok, full} <-
           path
           |> validate_wasm_path(spec.name)
           |> Symbiont.Error.wrap(reason, agent: spec.name, field: :wasm, value: path),
         do: {:ok, %{spec | wasm: full, config: Map.put(spec.config, "wasm", full)}}
  end

  def with_wasm(spec, _path),
    do:
      {:error,
       Symbiont.Error.new(
         :invalid,
         "agent #{inspect(spec.name)} is not a Wasm agent; only Wasm agents are deployed",
         agent: spec.name
       )}

  defp validate_name(name) when is_atom(name) and name not in [nil, true, false],
    do: validate_name(Atom.to_string(name))

  defp validate_name(name) when is_binary(name) do
    if Symbiont.Contract.agent_name?(name),
      do: {:ok, name},
      else:
        {:error,
         {:name,
          "expected agent :name to be 1 to 64 letters, digits, \"_\", \"-\" or \".\", got: #{inspect(name)}"}}
  end

  defp validate_name(name),
    do: {:error, {:name, "expected agent :name to be a string, got: #{inspect(name)}"}}

  defp known_keys(spec, name) do
    case Enum.find(spec, fn {k, _} -> k not in @keys end) do
      nil ->
        :ok

      {k, _} ->
        invalid(name, k, "unknown key #{inspect(k)}, allowed: #{inspect(@keys)}")
    end
  end

  # A Python class, or a Wasm module run by symbiont.wasm.WasmAgent in a Python host.
  defp validate_logic(spec, config, name) do
    case {Keyword.get(spec, :python), Keyword.get(spec, :wasm)} do
      {nil, nil} ->
        invalid(
          name,
          :python,
          "expected :python (\"module:Class\") or :wasm (the path of a .wasm or .wat module)"
        )

      {python, nil} ->
        with :ok <- only_for_wasm(spec, name),
             {:ok, module, class} <- validate_python(python, name),
             do: {:ok, %{module: module, class: class, wasm: nil}}

      {nil, wasm} ->
        with {:ok, path} <- validate_wasm_path(wasm, name),
             {:ok, topics} <- validate_topics(Keyword.get(spec, :topics), path, name),
             {:ok, limits} <- validate_wasm_limits(Keyword.get(spec, :limits, []), name) do
          {:ok,
           %{
             module: "symbiont.wasm",
             class: "WasmAgent",
             wasm: path,
             config: %{"wasm" => path, "topics" => topics, "limits" => limits, "config" => config}
           }}
        end

      {_, _} ->
        invalid(name, :wasm, "expected :python or :wasm, not both")
    end
  end

  defp only_for_wasm(spec, name) do
    case Enum.find([:topics, :limits], &Keyword.has_key?(spec, &1)) do
      nil ->
        :ok

      key ->
        invalid(
          name,
          key,
          "#{inspect(key)} is for Wasm agents (a Python agent's topics come from its @on handlers)"
        )
    end
  end

  defp validate_wasm_path(path, name) when is_binary(path) do
    full = Symbiont.Config.resolve(path)

    if File.regular?(full),
      do: {:ok, full},
      else: invalid(name, :wasm, "the :wasm module #{inspect(path)} does not exist")
  end

  defp validate_wasm_path(path, name),
    do: invalid(name, :wasm, "expected :wasm to be a path, got: #{inspect(path)}")

  # A component declares its own topics (its `subscriptions` export: a Python agent's
  # @on); a core module cannot.
  defp validate_topics(nil, path, name) do
    if component?(path), do: {:ok, []}, else: validate_topics(nil, name)
  end

  defp validate_topics(topics, _path, name), do: validate_topics(topics, name)

  @doc """
  Whether the Wasm binary at `path` is a component (the Component Model's format, as
  `symbiont build-wasm` makes) rather than a core module: both start with `\\0asm`, and
  bytes 6-7 of the header, the layer, are 1 for a component (docs/WASM_ABI.md,
  "Components"). `false` for a file that cannot be read, or WAT text.

      iex> Symbiont.Agent.component?("priv/wasm/counter.wat")
      false
  """
  @spec component?(Path.t()) :: boolean
  def component?(path) do
    case File.open(path, [:read, :binary], &IO.binread(&1, 8)) do
      {:ok, <<0, "asm", _version::binary-size(2), 1, 0>>} -> true
      _ -> false
    end
  end

  defp validate_topics([_ | _] = topics, name) do
    if Enum.all?(topics, &(is_binary(&1) and &1 != "")),
      do: {:ok, topics},
      else:
        invalid(
          name,
          :topics,
          "expected :topics to be non-empty strings, got: #{inspect(topics)}"
        )
  end

  defp validate_topics(topics, name),
    do:
      invalid(
        name,
        :topics,
        "a Wasm agent needs :topics, a non-empty list of topic strings, got: #{inspect(topics)}"
      )

  # The sandbox's limits, those of symbiont.wasm.Limits (Symbiont.Contract).
  @grants Symbiont.Contract.wasm_grants()
  @int_limits Keyword.keys(Symbiont.Contract.wasm_limits())
  @max_limit Symbiont.Contract.wasm_max_limit()

  defp validate_wasm_limits(limits, name) when is_list(limits) or is_map(limits) do
    Enum.reduce_while(limits, {:ok, %{}}, fn
      {key, value}, {:ok, acc}
      when key in @int_limits and is_integer(value) and value > 0 and value <= @max_limit ->
        {:cont, {:ok, Map.put(acc, Atom.to_string(key), value)}}

      {:grants, grants}, {:ok, acc} when is_list(grants) ->
        grants = Enum.map(grants, &to_string/1)

        case grants -- @grants do
          [] ->
            {:cont, {:ok, Map.put(acc, "grants", grants)}}

          bad ->
            {:halt,
             invalid(
               name,
               :limits,
               "#{inspect(bad)} in :grants is not a capability (allowed: #{Enum.join(@grants, ", ")})"
             )}
        end

      {key, value}, _ ->
        {:halt,
         invalid(
           name,
           :limits,
           "Wasm limit #{inspect(key)} = #{inspect(value)} is not allowed " <>
             "(allowed: #{Enum.join(@int_limits, ", ")} as positive integers up to 2**63 - 1; grants as a list of #{Enum.join(@grants, ", ")})"
         )}
    end)
  end

  defp validate_wasm_limits(limits, name),
    do: invalid(name, :limits, "expected :limits to be a keyword list, got: #{inspect(limits)}")

  defp validate_python(python, name) when is_binary(python) do
    case String.split(python, ":") do
      [module, class] when module != "" and class != "" ->
        if module =~ ~r/\A[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\z/ and
             class =~ ~r/\A[A-Za-z_][A-Za-z0-9_]*\z/,
           do: {:ok, module, class},
           else: bad_python(python, name)

      _ ->
        bad_python(python, name)
    end
  end

  defp validate_python(python, name), do: bad_python(python, name)

  defp bad_python(python, name),
    do: invalid(name, :python, "expected :python to be \"module:Class\", got: #{inspect(python)}")

  defp validate_config(config, _name) when is_map(config), do: {:ok, config}

  defp validate_config(config, name),
    do: invalid(name, :config, "expected :config to be a map, got: #{inspect(config)}")
end

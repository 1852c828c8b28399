defmodule Symbiont.Agent do
  @moduledoc """
  An agent: one bounded context whose logic is a Python class, run in a host of its own.

  Agents are declared in the application environment and started with the application:

      config :symbiont,
        python_path: ["examples/demo"],
        agents: [
          [name: "orders", python: "demo_agents:Orders"],
          [name: "billing", python: "demo_agents:Billing", config: %{"currency" => "EUR"}]
        ]

  The Python side subclasses `symbiont.Agent`; its `@on("topic")` handlers subscribe it to
  mesh topics, `@every(seconds)` handlers run on a timer, `self.state` is checkpointed
  with each acknowledgement and restored after a crash, and `self.publish(topic, value)`
  sends events (PROTOCOL.md §8).

  ## Spec keys

    * `:name` (required) - a string of letters, digits, `_`, `-` and `.`, unique per node.
    * `:python` (required) - `"module:Class"`, the importable module and the class in it.
    * `:config` - a map handed to the agent as `self.config`. Default: `%{}`.
  """

  @type spec :: %{name: String.t(), module: String.t(), class: String.t(), config: map}

  @keys [:name, :python, :config]

  @doc """
  Validates an agent spec given as a keyword list or map; `nil` is no agent.

      iex> Symbiont.Agent.validate_spec(name: "billing", python: "shop:Billing")
      {:ok, %{name: "billing", module: "shop", class: "Billing", config: %{}}}

      iex> Symbiont.Agent.validate_spec(name: "billing", python: "shop.Billing")
      {:error, "agent \\"billing\\": expected :python to be \\"module:Class\\", got: \\"shop.Billing\\""}
  """
  @spec validate_spec(nil | keyword | map) :: {:ok, spec | nil} | {:error, String.t()}
  def validate_spec(nil), do: {:ok, nil}
  def validate_spec(%{module: _, class: _, name: _, config: _} = spec), do: {:ok, spec}
  def validate_spec(spec) when is_map(spec), do: validate_spec(Map.to_list(spec))

  def validate_spec(spec) when is_list(spec) do
    if Keyword.keyword?(spec) do
      name = Keyword.get(spec, :name)

      with {:ok, name} <- validate_name(name),
           :ok <- known_keys(spec, name),
           {:ok, module, class} <- validate_python(Keyword.get(spec, :python), name),
           {:ok, config} <- validate_config(Keyword.get(spec, :config, %{}), name) do
        {:ok, %{name: name, module: module, class: class, config: config}}
      end
    else
      {:error, "expected an agent spec to be a keyword list or map, got: #{inspect(spec)}"}
    end
  end

  def validate_spec(other),
    do: {:error, "expected an agent spec to be a keyword list or map, got: #{inspect(other)}"}

  defp validate_name(name) when is_atom(name) and name not in [nil, true, false],
    do: validate_name(Atom.to_string(name))

  defp validate_name(name) when is_binary(name) do
    if name =~ ~r/\A[A-Za-z0-9_.\-]{1,64}\z/,
      do: {:ok, name},
      else:
        {:error,
         "expected agent :name to be 1 to 64 letters, digits, \"_\", \"-\" or \".\", got: #{inspect(name)}"}
  end

  defp validate_name(name),
    do: {:error, "expected agent :name to be a string, got: #{inspect(name)}"}

  defp known_keys(spec, name) do
    case Enum.find(spec, fn {k, _} -> k not in @keys end) do
      nil ->
        :ok

      {k, _} ->
        {:error, "agent #{inspect(name)}: unknown key #{inspect(k)}, allowed: #{inspect(@keys)}"}
    end
  end

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
    do:
      {:error,
       "agent #{inspect(name)}: expected :python to be \"module:Class\", got: #{inspect(python)}"}

  defp validate_config(config, _name) when is_map(config), do: {:ok, config}

  defp validate_config(config, name),
    do: {:error, "agent #{inspect(name)}: expected :config to be a map, got: #{inspect(config)}"}
end

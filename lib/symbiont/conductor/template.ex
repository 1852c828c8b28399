defmodule Symbiont.Conductor.Template do
  @moduledoc """
  Topic patterns of agent templates (`config :symbiont, templates: [...]`): a template's
  `:match` names the topics an agent spawned from it serves, with `*` for one segment.
  The conductor's policy spawns one agent per matching topic that is published to and has
  no subscriber (one agent per tenant), and retires it when idle; see
  `Symbiont.Conductor`.

      iex> Symbiont.Conductor.Template.match("tenant.*.orders", "tenant.acme.orders")
      true
      iex> Symbiont.Conductor.Template.match("tenant.*.orders", "tenant.acme.eu.orders")
      false
  """

  @doc """
  Checks `config :symbiont, templates: [...]`: a keyword list (or map) from a template's
  name to its spec, an agent spec (`Symbiont.Agent`) without a name plus `:match`, a
  topic pattern with at least one `*`. `:ok`, or an `:invalid` `Symbiont.Error` whose
  message names the template, the value and what is allowed.

      iex> Symbiont.Conductor.Template.validate(tenant: [match: "tenant.*.orders", python: "m:C"])
      :ok
      iex> {:error, error} = Symbiont.Conductor.Template.validate(tenant: [python: "m:C"])
      iex> {error.reason, error.message}
      {:invalid, ~s(expected template :tenant to have :match, a topic pattern with a "*" segment, got: [python: "m:C"])}
  """
  @spec validate(term) :: :ok | {:error, Symbiont.Error.t()}
  def validate(templates),
    do: templates |> check() |> Symbiont.Error.wrap(:invalid, field: :templates)

  defp check(templates) when is_list(templates) or is_map(templates) do
    Enum.find_value(templates, :ok, fn
      {name, spec} when (is_atom(name) or is_binary(name)) and is_list(spec) ->
        case validate_one(name, spec) do
          :ok -> nil
          error -> error
        end

      other ->
        {:error,
         "expected each template to be {name, spec} with spec a keyword list (an agent spec with :match), got: #{inspect(other)}"}
    end)
  end

  defp check(other),
    do:
      {:error,
       "expected :templates in config :symbiont to be a keyword list of templates, got: #{inspect(other)}"}

  defp validate_one(name, spec) do
    pattern = Keyword.get(spec, :match)

    if is_binary(pattern) and "*" in String.split(pattern, ".") do
      # What it spawns is an agent spec: checked as one, with the template's name.
      agent = spec |> Keyword.delete(:match) |> Keyword.put(:name, to_string(name))

      case Symbiont.Agent.validate_spec(agent) do
        {:ok, _} -> :ok
        {:error, error} -> {:error, "template #{inspect(name)}: #{Exception.message(error)}"}
      end
    else
      {:error,
       "expected template #{inspect(name)} to have :match, a topic pattern with a \"*\" segment, got: #{inspect(spec)}"}
    end
  end

  @doc "Whether `topic` matches `pattern` (`*` is one dot-separated segment)."
  @spec match(String.t(), String.t()) :: boolean
  def match(pattern, topic) when is_binary(pattern) and is_binary(topic) do
    segments(String.split(pattern, "."), String.split(topic, "."))
  end

  defp segments([], []), do: true
  defp segments(["*" | p], [t | rest]) when t != "", do: segments(p, rest)
  defp segments([same | p], [same | rest]), do: segments(p, rest)
  defp segments(_, _), do: false
end

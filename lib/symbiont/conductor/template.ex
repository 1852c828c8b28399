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

defmodule Symbiont.MixProject do
  use Mix.Project

  # Zero Hex dependencies: the Hex registry is not reachable on our machines
  # (see README.md, "Development"). Optional cross-checks against real libraries use
  # `path:` dependencies switched on by environment variables.
  def project do
    [
      app: :symbiont,
      version: "0.1.0",
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      elixirc_paths: elixirc_paths(Mix.env()),
      deps: deps(),
      docs: [main: "Symbiont"]
    ]
  end

  def application do
    [
      extra_applications: [:logger],
      mod: {Symbiont.Application, []}
    ]
  end

  defp elixirc_paths(:test), do: ["lib", "test/support"]
  defp elixirc_paths(_), do: ["lib"]

  defp deps, do: []
end

defmodule Embedded.MixProject do
  # An application of your own that runs Symbiont inside its supervision tree: two
  # instances side by side (lib/embedded/application.ex). Symbiont is a `path:`
  # dependency here; in your app it is the same line with your path or git URL.
  use Mix.Project

  def project do
    [
      app: :embedded,
      version: "0.1.0",
      elixir: "~> 1.14",
      deps: [{:symbiont, path: "../.."}]
    ]
  end

  def application, do: [mod: {Embedded.Application, []}, extra_applications: [:logger]]
end

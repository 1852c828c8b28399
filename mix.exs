defmodule Symbiont.MixProject do
  use Mix.Project

  # Zero Hex dependencies: the Hex registry is not reachable on our machines
  # (see README.md, "Development"). Optional cross-checks against real libraries use
  # `path:` dependencies switched on by environment variables.
  def project do
    [
      app: :symbiont,
      # One version for both languages (pyproject.toml and symbiont.__version__ read it too).
      version: __DIR__ |> Path.join("VERSION") |> File.read!() |> String.trim(),
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      elixirc_paths: elixirc_paths(Mix.env()),
      deps: deps(),
      # A build with Phoenix.PubSub compiled in lives apart, so switching back and forth
      # never leaves one build's modules in the other.
      build_path: if(phoenix_pubsub_path(), do: "_build/with_phoenix_pubsub", else: "_build"),
      docs: [main: "Symbiont"],
      releases: [symbiont: [steps: [:assemble, &cookie_off_the_command_line/1]]]
    ]
  end

  def application do
    [
      # :crypto: random secrets (the tests' cookie, a journal's mark).
      extra_applications: [:logger, :inets, :crypto],
      mod: {Symbiont.Application, []}
    ]
  end

  # Mix's start script passes the cookie as `--cookie "$RELEASE_COOKIE"`, so it is in the
  # VM's argv, which every local user can read in /proc/PID/cmdline, and releases/COOKIE is
  # world-readable. This step takes both out; rel/env.sh.eex has each VM read the cookie
  # from $HOME/.erlang.cookie instead (docs/SECURITY.md §3).
  defp cookie_off_the_command_line(release) do
    script = Path.join([release.path, "bin", to_string(release.name)])

    patched =
      script
      |> File.read!()
      |> String.replace(~r/^RELEASE_COOKIE=.*\nexport RELEASE_COOKIE\n/m, "")
      |> String.replace(~r/^[ \t]*--cookie "\$RELEASE_COOKIE" \\\n/m, "")
      |> String.replace(~s(--cookie "$RELEASE_COOKIE" ), "")

    if patched =~ "RELEASE_COOKIE" do
      Mix.raise(
        "#{script} still passes RELEASE_COOKIE: the start script of Elixir #{System.version()} " <>
          "is not one this step knows; the cookie would be on the command line"
      )
    end

    File.write!(script, patched)
    File.rm!(Path.join([release.path, "releases", "COOKIE"]))
    release
  end

  defp elixirc_paths(:test), do: ["lib", "test/support"]
  defp elixirc_paths(_), do: ["lib"]

  # PHOENIX_PUBSUB_PATH=/path/to/phoenix_pubsub compiles the real Phoenix.PubSub in, and
  # with it the Symbiont.Mesh.PhoenixPubSub adapter (`make test-phoenix`).
  defp deps do
    case phoenix_pubsub_path() do
      nil -> []
      path -> [{:phoenix_pubsub, path: phoenix_pubsub_shim(path)}]
    end
  end

  defp phoenix_pubsub_path do
    case System.get_env("PHOENIX_PUBSUB_PATH", "") do
      "" -> nil
      path -> Path.expand(path)
    end
  end

  # The checkout's own mix.exs lists ex_doc, which Mix cannot resolve without Hex even
  # though it is `only: :docs`. So the path dependency is a generated project that
  # compiles the checkout's lib/ unchanged, with no dependencies of its own.
  defp phoenix_pubsub_shim(path) do
    mix_exs = Path.join(path, "mix.exs")

    unless File.exists?(mix_exs),
      do: Mix.raise("PHOENIX_PUBSUB_PATH=#{path} is not a phoenix_pubsub checkout (no mix.exs)")

    [_, version] = Regex.run(~r/@version "([^"]+)"/, File.read!(mix_exs))
    shim = Path.expand("_build/with_phoenix_pubsub/shim", __DIR__)
    File.mkdir_p!(shim)

    File.write!(Path.join(shim, "mix.exs"), """
    defmodule PhoenixPubSubShim.MixProject do
      use Mix.Project

      def project do
        [app: :phoenix_pubsub, version: #{inspect(version)}, elixirc_paths: [#{inspect(Path.join(path, "lib"))}], deps: []]
      end

      def application do
        [mod: {Phoenix.PubSub.Application, []}, extra_applications: [:logger, :crypto]]
      end
    end
    """)

    shim
  end
end

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
      # A build with Phoenix.PubSub or :telemetry compiled in lives apart, so switching
      # back and forth never leaves one build's modules in the other.
      build_path: build_path(),
      docs: [main: "Symbiont"],
      releases: [
        symbiont: [
          steps: [:assemble, &cookie_off_the_command_line/1, &copy_user_code/1],
          # The node's own tools (observer's backend, dbg, the tracers) for a remote shell.
          applications: [runtime_tools: :permanent],
          # Docs stay, for `h` in a remote shell (some 1 MB).
          strip_beams: [keep: ["Docs"]]
        ]
      ]
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

  # The release runs anywhere (README.md, "Releases"): relative paths of the configuration
  # are resolved against its app/ directory (Symbiont.Config.root/0), never the directory
  # it is started from, so the project's files they name are copied there, at the same
  # relative paths: the build's `:python_path`, the agents' `:wasm` modules and Wasm
  # plug-ins (their config's "wasm"), the conductor's `:python_path`, `:release_include`,
  # the same of the file `SYMBIONT_CONFIG` names at build time (and that file), and
  # config/ (Symbiont.reload_manifest/0 reads it).
  # An absolute path is left as it is: it must exist where the release runs. The Python
  # SDK is in the application's priv/python (a link in the checkout, followed by the copy).
  defp copy_user_code(release) do
    project = File.cwd!()
    app = Path.join(release.path, "app")
    File.rm_rf!(app)

    for path <- ["config" | release_paths()], Path.type(path) == :relative do
      from = Path.expand(path, project)

      unless String.starts_with?(from <> "/", project <> "/"),
        do:
          Mix.raise(
            "the release cannot hold #{inspect(path)}: it is outside the project #{project}"
          )

      unless File.exists?(from),
        do:
          Mix.raise(
            "the release cannot hold #{inspect(path)}: no such file or directory in #{project}"
          )

      to = Path.join(app, Path.relative_to(from, project))
      File.mkdir_p!(Path.dirname(to))
      File.cp_r!(from, to)
    end

    # Python's caches of the checkout are not the release's.
    for dir <- Path.wildcard(Path.join(release.path, "**/__pycache__"), match_dot: true),
        do: File.rm_rf!(dir)

    sdk = Path.join([release.path, "lib", "symbiont-#{release.version}", "priv", "python"])

    unless File.regular?(Path.join([sdk, "symbiont", "__init__.py"])),
      do: Mix.raise("the release has no Python SDK in #{sdk}")

    # symbiont.__version__ reads the VERSION file two levels above the package.
    File.cp!("VERSION", Path.join(Path.dirname(sdk), "VERSION"))

    release
  end

  defp release_paths do
    extra =
      case System.get_env("SYMBIONT_CONFIG", "") do
        "" ->
          []

        file ->
          [
            file
            | file
              |> Config.Reader.read!(env: Mix.env())
              |> Keyword.get(:symbiont, [])
              |> paths_of()
          ]
      end

    paths_of(Application.get_all_env(:symbiont)) ++ extra
  end

  defp paths_of(config) do
    conductor = Keyword.get(config, :conductor, [])
    agents = Keyword.get(config, :agents, [])
    wasm = for agent <- agents, path = agent[:wasm], do: path
    # A Python agent's Wasm plug-ins (config "wasm": name => path; its host resolves them
    # against its directory, the release's app/) or a module it deploys ("wasm": path).
    plugins = Enum.flat_map(agents, &plugin_paths(Map.get(&1[:config] || %{}, "wasm")))

    Keyword.get(config, :python_path, []) ++
      wasm ++
      plugins ++
      Keyword.get(conductor, :python_path, []) ++ Keyword.get(config, :release_include, [])
  end

  defp plugin_paths(path) when is_binary(path), do: [path]
  defp plugin_paths(%{} = plugins), do: for({_, path} <- plugins, is_binary(path), do: path)
  defp plugin_paths(_), do: []

  defp elixirc_paths(:test), do: ["lib", "test/support"]
  defp elixirc_paths(_), do: ["lib"]

  # PHOENIX_PUBSUB_PATH=/path/to/phoenix_pubsub compiles the real Phoenix.PubSub in, and
  # with it the Symbiont.Mesh.PhoenixPubSub adapter (`make test-phoenix`).
  # TELEMETRY_PATH=/path/to/telemetry (a checkout of beam-telemetry/telemetry, whose own
  # mix.exs builds it) compiles the real :telemetry in, for the tests that run the same
  # handlers on it and on Symbiont.Telemetry (`make test-telemetry`).
  defp deps do
    pubsub =
      case phoenix_pubsub_path() do
        nil -> []
        path -> [{:phoenix_pubsub, path: phoenix_pubsub_shim(path)}]
      end

    telemetry =
      case env_path("TELEMETRY_PATH") do
        nil -> []
        path -> [{:telemetry, path: telemetry_checkout(path)}]
      end

    pubsub ++ telemetry
  end

  defp build_path do
    case {phoenix_pubsub_path(), env_path("TELEMETRY_PATH")} do
      {nil, nil} -> "_build"
      {_, nil} -> "_build/with_phoenix_pubsub"
      {nil, _} -> "_build/with_telemetry"
      _ -> "_build/with_phoenix_pubsub_and_telemetry"
    end
  end

  defp env_path(name) do
    case System.get_env(name, "") do
      "" -> nil
      path -> Path.expand(path)
    end
  end

  defp telemetry_checkout(path) do
    unless File.regular?(Path.join([path, "src", "telemetry.erl"])),
      do:
        Mix.raise("TELEMETRY_PATH=#{path} is not a checkout of telemetry (no src/telemetry.erl)")

    path
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

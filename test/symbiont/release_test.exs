defmodule Symbiont.ReleaseTest do
  # A release runs anywhere (issue 21, point 1; README.md, "Releases"): `mix release`
  # copies the Python SDK and the project's agent code and Wasm modules in, and the
  # release resolves every path against its own directory. Checked on the real thing:
  # the release is built (once per suite, Symbiont.Release), copied to a fresh directory,
  # started from `/`, and its agents serve, Python and Wasm, from the copy alone.
  use ExUnit.Case, async: true

  import Symbiont.HostHelpers, only: [free_port: 0]

  # `mix test --exclude release` skips it, where `mix release` cannot run.
  @moduletag :release
  @moduletag :tmp_dir

  @tag timeout: 180_000
  test "a copy of the release, started from /, serves its Python and Wasm agents", %{
    tmp_dir: dir
  } do
    rel = Path.join(dir, "symbiont")
    {_, 0} = System.cmd("cp", ["-a", Symbiont.Release.build!(), rel])

    # What it holds: the SDK (a copy, no link back to the checkout, no Python caches),
    # the agents' code and module, the config file it was built with, runtime_tools.
    {:ok, python} = Symbiont.Config.python_executable()
    [app_dir] = Path.wildcard(Path.join(rel, "lib/symbiont-*"))
    sdk = Path.join(app_dir, "priv/python/symbiont")
    assert File.regular?(Path.join(sdk, "__init__.py"))
    assert File.lstat!(sdk).type == :directory
    assert Path.wildcard(Path.join(rel, "**/__pycache__"), match_dot: true) == []
    assert File.regular?(Path.join(rel, "app/examples/demo/demo_agents.py"))
    assert File.regular?(Path.join(rel, "app/examples/shop/pricing.wasm"))
    assert File.regular?(Path.join(rel, "app/examples/shop/pricing_v2.wasm"))
    assert File.regular?(Path.join(rel, "app/" <> Symbiont.Release.config()))
    assert [_] = Path.wildcard(Path.join(rel, "lib/runtime_tools-*"))

    # The SDK in the release is the one imported, and knows its version.
    {version, 0} =
      System.cmd(
        python,
        ["-c", "import symbiont; print(symbiont.__file__, symbiont.__version__)"],
        env: [{"PYTHONPATH", Path.dirname(sdk)}],
        cd: "/"
      )

    assert version ==
             "#{Path.join(sdk, "__init__.py")} #{String.trim(File.read!("VERSION"))}\n"

    port = free_port()
    node = "release#{System.unique_integer([:positive])}@localhost"

    env = [
      {"SYMBIONT_STATE_DIR", Path.join(dir, "state")},
      {"SYMBIONT_DIST_PORT", "#{port}"},
      {"RELEASE_NODE", node},
      # Relative: resolved against the release's app/, not the directory it starts from.
      {"SYMBIONT_CONFIG", Symbiont.Release.config()},
      {"SYMBIONT_PYTHON", python}
    ]

    bin = Path.join(rel, "bin/symbiont")
    started = spawn_port(bin, ["start"], env)
    on_exit(fn -> System.cmd(bin, ["stop"], env: env, stderr_to_stdout: true) end)

    probe = await_rpc(bin, env, probe(), ~r/RELEASE-PROBE (\S+) (\S+) (\S+) (\S+) (\S+)/)
    [topics, os_pids, level, docs?, no_epmd?] = probe

    # The Python pipeline (orders -> billing) and the Wasm stage (orders -> pricing) serve.
    assert topics == "billing.charged,orders.priced"
    assert level == "info"
    assert docs? == "true"
    # Distribution on loopback only, on its one port, with no epmd.
    assert no_epmd? == "true"
    assert listening(port) == ["127.0.0.1"]

    # Each host runs in the release's app/, on the release's SDK and agent code only.
    app = Path.join(rel, "app")

    for os_pid <- String.split(os_pids, ",") do
      assert File.read_link!("/proc/#{os_pid}/cwd") == app
      environ = File.read!("/proc/#{os_pid}/environ") |> String.split(<<0>>)

      ["PYTHONPATH=" <> pythonpath] =
        Enum.filter(environ, &String.starts_with?(&1, "PYTHONPATH="))

      assert String.split(pythonpath, ":") == [
               Path.join(app_dir, "priv/python"),
               Path.join(app, "examples/demo")
             ]
    end

    # Nothing is taken from the directory the node runs in: not a .venv's python, not a
    # python_path. The node is moved into a directory that has both for a moment, with no
    # SYMBIONT_PYTHON, and asked what it would start and import.
    trap = Path.join(dir, "trap")
    File.mkdir_p!(Path.join(trap, ".venv/bin"))
    File.mkdir_p!(Path.join(trap, "examples/demo"))
    File.write!(Path.join(trap, ".venv/bin/python"), "#!/bin/sh\nexit 1\n")
    File.chmod!(Path.join(trap, ".venv/bin/python"), 0o755)

    [trap_python, trap_path, trap_cd] =
      await_rpc(
        bin,
        env,
        """
        python = System.get_env("SYMBIONT_PYTHON")
        System.delete_env("SYMBIONT_PYTHON")
        File.cd!(#{inspect(trap)})

        answer =
          try do
            {:ok, exe} = Symbiont.Config.python_executable()
            {:ok, host} = Symbiont.Host.validate_options(python_path: ["examples/demo"])
            ["TRAP" <> "-PROBE", exe, hd(host.python_path), host.cd]
          after
            File.cd!("/")
            System.put_env("SYMBIONT_PYTHON", python)
          end

        IO.puts(Enum.join(answer, " "))
        """,
        ~r/TRAP-PROBE (\S+) (\S+) (\S+)/
      )

    refute String.starts_with?(trap_python, trap)
    assert trap_path == Path.join(app, "examples/demo")
    assert trap_cd == app

    # The operator's command answers.
    {out, 0} = System.cmd(bin, ["rpc", "IO.inspect(Symbiont.status())"], env: env, cd: "/")
    assert out =~ ~r/billing\s+stable\s+billing\s+ready/
    assert out =~ ~r/pricing\s+stable\s+wasm\S*\s+ready/
    assert out =~ ":ok"

    {_, 0} = System.cmd(bin, ["stop"], env: env, cd: "/")
    assert_receive {^started, {:exit_status, _}}, 60_000
  end

  # Run on the node once Symbiont runs there (distribution is up before the application
  # starts: it waits, 30 s at most): waits for an event of each pipeline (20 s at most),
  # then prints them with the hosts' OS pids, the log level, whether docs are there, and
  # how distribution listens.
  defp probe do
    ~S"""
    Enum.find(1..300, fn _ -> Process.whereis(Symbiont.Manifest) || (Process.sleep(100) && nil) end)
    Symbiont.subscribe("billing.charged")
    Symbiont.subscribe("orders.priced")
    seen = Enum.reduce_while(1..200, MapSet.new(), fn _, seen ->
      receive do
        %Symbiont.Event{topic: t} ->
          seen = MapSet.put(seen, t)
          if MapSet.size(seen) == 2, do: {:halt, seen}, else: {:cont, seen}
      after
        100 -> {:cont, seen}
      end
    end)
    IO.puts(Enum.join(["RELEASE" <> "-PROBE", Enum.join(Enum.sort(seen), ","),
      Enum.map_join(Symbiont.hosts(), ",", & &1.os_pid), Logger.level(),
      match?({:docs_v1, _, _, _, %{}, _, _}, Code.fetch_docs(Symbiont)),
      :init.get_argument(:start_epmd) == {:ok, [[~c"false"]]}], " "))
    """
  end

  # The addresses a TCP socket listens on at `port` (/proc/net/tcp and tcp6).
  defp listening(port) do
    hex = port |> Integer.to_string(16) |> String.pad_leading(4, "0")

    for file <- ["/proc/net/tcp", "/proc/net/tcp6"],
        {:ok, text} <- [File.read(file)],
        line <- text |> String.split("\n") |> Enum.drop(1),
        [_, local, _, "0A" | _] <- [String.split(line)],
        [addr, ^hex] <- [String.split(local, ":")] do
      case addr do
        <<a::binary-2, b::binary-2, c::binary-2, d::binary-2>> ->
          Enum.map_join([d, c, b, a], ".", &String.to_integer(&1, 16))

        v6 ->
          v6
      end
    end
  end

  # Asks until the node answers with the probe's line (it may still be starting); each
  # attempt ends when its rpc exits. Bounded: 60 attempts.
  defp await_rpc(bin, env, code, regex, attempts \\ 60, last \\ "")

  defp await_rpc(bin, env, code, regex, attempts, _last) when attempts > 0 do
    {out, _} = System.cmd(bin, ["rpc", code], env: env, cd: "/", stderr_to_stdout: true)

    case Regex.run(regex, out) do
      [_ | fields] -> fields
      nil -> await_rpc(bin, env, code, regex, attempts - 1, out)
    end
  end

  defp await_rpc(_, _, _, _, 0, last),
    do: flunk("the release never answered; the last rpc printed:\n#{last}")

  defp spawn_port(executable, args, env) do
    Port.open(
      {:spawn_executable, executable},
      [:binary, :exit_status, :stderr_to_stdout, args: args, cd: "/"] ++
        [env: Enum.map(env, fn {k, v} -> {~c"#{k}", ~c"#{v}"} end)]
    )
  end
end

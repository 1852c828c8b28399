defmodule Symbiont.TutorialTest do
  # docs/TUTORIAL.md cannot rot (issue 21, point 5): its blocks marked `sh tutorial` are
  # run, in order, in one bash, from an empty directory, and every line of each block
  # marked `text tutorial-output` must be a line of what they printed. The tutorial's
  # setup (a venv, `make release`) is this suite's: the checkout's .venv, and the release
  # Symbiont.Release builds once per suite.
  use ExUnit.Case, async: true

  import Symbiont.HostHelpers, only: [free_port: 0]

  @moduletag :release
  @moduletag :tmp_dir

  @tutorial "docs/TUTORIAL.md"

  test "the tutorial's blocks are there: setup, test, agents, Wasm, start, heal, stop" do
    %{commands: commands, outputs: outputs} = blocks(File.read!(@tutorial))
    script = Enum.join(commands, "\n")

    for step <- ["symbiont new", "pytest", "relay.wat", "config.exs", "daemon", "kill -9", "stop"],
        do: assert(script =~ step, "no #{step} in the tutorial's commands")

    assert length(outputs) == 3
  end

  @tag timeout: 180_000
  test "every command of the tutorial runs, and prints what the tutorial shows", %{tmp_dir: dir} do
    %{commands: commands, outputs: outputs} = blocks(File.read!(@tutorial))
    release = Path.join(dir, "symbiont")
    {_, 0} = System.cmd("cp", ["-a", Symbiont.Release.build!(), release])
    work = Path.join(dir, "hello")
    File.mkdir_p!(work)

    {:ok, python} = Symbiont.Config.python_executable()

    env = [
      {"SYMBIONT", release},
      # The checkout's venv stands for the tutorial's (symbiont, pytest, the plugin), with
      # this checkout's SDK first.
      {"PATH", Path.dirname(python) <> ":" <> System.get_env("PATH")},
      {"PYTHONPATH", Path.expand("python")},
      {"SYMBIONT_DIST_PORT", "#{free_port()}"},
      {"RELEASE_NODE", "tutorial#{System.unique_integer([:positive])}@localhost"},
      {"SYMBIONT_STATE_DIR", Path.join(dir, "state")}
    ]

    # Whatever happens, the node it started is stopped.
    on_exit(fn ->
      System.cmd(Path.join(release, "bin/symbiont"), ["stop"], env: env, stderr_to_stdout: true)
    end)

    script = Path.join(dir, "tutorial.sh")

    File.write!(script, [
      "set -euo pipefail\n",
      commands |> Enum.with_index(1) |> Enum.map(fn {c, i} -> "echo '>>> block #{i}'\n#{c}\n" end)
    ])

    # Bounded: a block that hangs (the `until` waiting for a node that never answers) ends
    # the run.
    {out, status} =
      System.cmd("timeout", ["120", "bash", script], cd: work, env: env, stderr_to_stdout: true)

    assert status == 0, "the tutorial failed (exit #{status}):\n#{out}"
    lines = out |> String.split("\n") |> Enum.map(&String.trim_trailing/1)

    for output <- outputs,
        line <- String.split(output, "\n", trim: true),
        do: assert(line in lines, "the tutorial shows #{inspect(line)}; it printed:\n#{out}")
  end

  # The `sh tutorial` blocks' commands and the `text tutorial-output` blocks, in order.
  defp blocks(markdown) do
    found = Regex.scan(~r/^```(sh tutorial|text tutorial-output)\n(.*?)^```$/ms, markdown)

    %{
      commands: for([_, "sh tutorial", body] <- found, do: body),
      outputs: for([_, "text tutorial-output", body] <- found, do: body)
    }
  end
end

defmodule Symbiont.CookieTest do
  # The distribution cookie is a password to the node: whoever has it runs code there as
  # the node's user. It is never on a command line, where every local user reads it
  # (/proc/PID/cmdline, ps): each VM reads it from $HOME/.erlang.cookie, with HOME set to a
  # private directory for that VM (docs/SECURITY.md §3). Checked on the real thing: the
  # node of `make run`, `make shell` attached to it, and a release built and started from
  # `/`; every process on the machine is searched for the cookie while they run.
  use ExUnit.Case, async: true

  import Bitwise
  import Symbiont.HostHelpers, only: [free_port: 0]

  # Each starts a node of its own (`mix test --exclude clustered` skips them).
  @moduletag :clustered
  @moduletag :tmp_dir

  test "the cookie make run generates is random and readable by its owner only", %{tmp_dir: dir} do
    state = Path.join(dir, "state")
    cookie = Path.join(state, ".erlang.cookie")
    {out, 0} = System.cmd("make", ["-s", "STATE=#{state}", "cookie"], stderr_to_stdout: true)
    assert out == ""
    assert (File.stat!(state).mode &&& 0o777) == 0o700
    assert (File.stat!(cookie).mode &&& 0o777) == 0o400
    assert String.trim(File.read!(cookie)) =~ ~r/\A[A-Za-z0-9_-]{43}\z/

    other = Path.join(dir, "other")
    {_, 0} = System.cmd("make", ["-s", "STATE=#{other}", "cookie"])
    refute File.read!(cookie) == File.read!(Path.join(other, ".erlang.cookie"))

    # One that others can read is refused before Erlang refuses it with a crash report.
    File.chmod!(cookie, 0o644)

    assert {out, 2} =
             System.cmd("make", ["-s", "STATE=#{state}", "cookie"], stderr_to_stdout: true)

    assert out =~ "#{cookie} must be readable by its owner only: chmod 400 #{cookie}"
  end

  @tag timeout: 180_000
  test "make run and make shell: the cookie is on no command line", %{tmp_dir: dir} do
    state = Path.join(dir, "state")
    node = "run#{System.unique_integer([:positive])}"
    vars = ["STATE=#{state}", "NODE=#{node}", "DIST_PORT=#{free_port()}"]
    # The test build: compiled already, no demo agents (config/test.exs).
    env = [{~c"MIX_ENV", ~c"test"}]
    run = spawn_port("make", ["-s", "run" | vars], env)
    # The node, and the shells attached to it (a shell outlives the node it was in).
    on_exit(fn ->
      for p <- ["-sname #{node}@localhost", "--remsh #{node}@localhost"], do: kill_node(p)
    end)

    cookie_file = Path.join(state, ".erlang.cookie")

    shell = fn ->
      spawn_port("script", ["-qec", Enum.join(["make -s shell" | vars], " "), "/dev/null"], env)
    end

    # The probe is typed once the shell prompts: a line typed ahead is thrown away when
    # the shell puts its terminal in raw mode (TCSAFLUSH), and then nothing answers.
    type_probe = fn port ->
      with {:ok, _} <- read_until(port, "", ~r/iex\([^)]*\)\d+> /) do
        send_line(port, probe(cookie_file))
        :ok
      end
    end

    session = await_alive(shell, type_probe, [])

    assert session.node == "#{node}@localhost"
    # The node read its cookie from the file, and gave its hosts the user's HOME back.
    assert session.cookie_from_file == "true"
    assert session.home == System.user_home!()
    assert (File.stat!(cookie_file).mode &&& 0o777) == 0o400

    assert_cookie_on_no_command_line(File.read!(cookie_file), [
      "-sname #{node}@localhost",
      "shell_"
    ])

    send_line(session.port, "System.stop()")
    assert_receive {^run, {:exit_status, 0}}, 60_000
  end

  @tag timeout: 300_000
  test "a release: the cookie is on no command line, and none is in the release", %{
    tmp_dir: dir
  } do
    # The suite's release (built once, Symbiont.Release), a copy of it.
    rel = Path.join(dir, "rel")
    {_, 0} = System.cmd("cp", ["-a", Symbiont.Release.build!(), rel])
    refute File.exists?(Path.join([rel, "releases", "COOKIE"]))
    refute File.read!(Path.join([rel, "bin", "symbiont"])) =~ "cookie"

    config = Path.join(dir, "config.exs")
    File.write!(config, "import Config\nconfig :symbiont, agents: [], status_page: false\n")
    state = Path.join(dir, "state")
    node = "rel#{System.unique_integer([:positive])}@localhost"

    env = [
      {~c"SYMBIONT_STATE_DIR", ~c"#{state}"},
      {~c"SYMBIONT_DIST_PORT", ~c"#{free_port()}"},
      {~c"RELEASE_NODE", ~c"#{node}"},
      {~c"SYMBIONT_CONFIG", ~c"#{config}"}
    ]

    bin = Path.join([rel, "bin", "symbiont"])
    started = spawn_port(bin, ["start"], env, cd: "/")
    on_exit(fn -> kill_node("-sname #{node}") end)

    cookie_file = Path.join(state, ".erlang.cookie")
    rpc = fn -> spawn_port(bin, ["rpc", probe(cookie_file)], env, cd: "/") end
    answer = await_alive(rpc, fn _ -> :ok end, [])

    assert answer.node == node
    assert answer.cookie_from_file == "true"
    assert answer.home == System.user_home!()
    assert (File.stat!(state).mode &&& 0o777) == 0o700
    assert (File.stat!(cookie_file).mode &&& 0o777) == 0o400
    assert_cookie_on_no_command_line(File.read!(cookie_file), ["-sname #{node}"])

    # A cookie from the environment would go on the command line: refused, saying why.
    {out, 1} =
      System.cmd(bin, ["rpc", "1"], env: [{"RELEASE_COOKIE", "x"}], stderr_to_stdout: true)

    assert out =~ "RELEASE_COOKIE is not used"

    {_, 0} = System.cmd(bin, ["stop"], env: Enum.map(env, fn {k, v} -> {"#{k}", "#{v}"} end))
    assert_receive {^started, {:exit_status, _}}, 60_000
  end

  test "the tests' own peer nodes get the cookie from a file too" do
    {_peer, node} = Symbiont.Cluster.start_peer!("cookie")
    assert :erpc.call(node, :erlang, :get_cookie, []) == Node.get_cookie()
    assert :erpc.call(node, System, :get_env, ["HOME"]) == System.user_home!()
    [name, _] = String.split(Atom.to_string(node), "@")
    assert_cookie_on_no_command_line(Atom.to_string(Node.get_cookie()), ["-sname #{name}"])
  end

  # What the node says of itself once Symbiont runs there (distribution is up before the
  # application starts: it waits, 30 s at most), printed on one line that the command's
  # echo of it (a terminal echoes what is typed) cannot match.
  defp probe(cookie_file) do
    ~s|Enum.find(1..300, fn _ -> Process.whereis(Symbiont.Supervisor) \|\| (Process.sleep(100) && nil) end); | <>
      ~s|IO.puts(Enum.join(["SYMBIONT" <> "-PROBE", node(), System.get_env("HOME"), | <>
      ~s|to_string(:erlang.get_cookie()) == String.trim(File.read!(#{inspect(cookie_file)}))], " "))|
  end

  # Starts `start` (a shell or an rpc: a port) until one gets an answer from the node,
  # which may still be starting: each attempt ends with its port's exit or with the
  # probe's line. Bounded: 60 attempts.
  defp await_alive(start, ask, outputs) when length(outputs) < 60 do
    port = start.()

    with :ok <- ask.(port),
         {:ok, [node, home, from_file]} <- read_probe(port, "") do
      %{port: port, node: node, home: home, cookie_from_file: from_file}
    else
      {:exited, output} -> await_alive(start, ask, [output | outputs])
    end
  end

  defp await_alive(_start, _ask, outputs) do
    # What the node printed, if it was started by a port of this test.
    node_output =
      for {:messages, messages} <- [Process.info(self(), :messages)],
          {_, {:data, data}} <- messages,
          into: "",
          do: data

    flunk("""
    the node never answered; the last attempt printed:
    #{hd(outputs)}
    the node printed:
    #{node_output}
    """)
  end

  # What `port` prints until `pattern` shows in it: {:ok, all of it}, or {:exited, it}.
  defp read_until(port, acc, pattern) do
    if acc =~ pattern do
      {:ok, acc}
    else
      receive do
        {^port, {:data, data}} -> read_until(port, acc <> data, pattern)
        {^port, {:exit_status, _}} -> {:exited, acc}
      after
        30_000 -> flunk("no prompt and no exit in 30 s; printed:\n#{acc}")
      end
    end
  end

  defp read_probe(port, acc) do
    receive do
      {^port, {:data, data}} ->
        acc = acc <> data

        case Regex.run(~r/SYMBIONT-PROBE (\S+) (\S+) (true|false)/, acc) do
          [_ | fields] -> {:ok, fields}
          nil -> read_probe(port, acc)
        end

      {^port, {:exit_status, _}} ->
        {:exited, acc}
    after
      30_000 -> flunk("no answer and no exit in 30 s; printed:\n#{acc}")
    end
  end

  # Every process of the machine, not only ours: make, the shell scripts of elixir and
  # iex, the VMs, their hosts.
  defp assert_cookie_on_no_command_line(cookie, expected) do
    cookie = String.trim(cookie)
    assert byte_size(cookie) >= 20

    command_lines =
      for "" <> pid <- File.ls!("/proc"),
          pid =~ ~r/\A\d+\z/,
          {:ok, argv} <- [File.read("/proc/#{pid}/cmdline")],
          do: {pid, String.replace(argv, <<0>>, " ")}

    # The processes meant are among those searched.
    for part <- expected,
        do: assert(Enum.any?(command_lines, fn {_, line} -> line =~ part end), "no #{part}")

    for {pid, line} <- command_lines,
        do: refute(line =~ cookie, "the cookie is in #{pid}'s argv: #{line}")
  end

  defp spawn_port(executable, args, env, opts \\ []) do
    Port.open(
      {:spawn_executable, System.find_executable(executable) || executable},
      [:binary, :exit_status, :stderr_to_stdout, args: args, env: env] ++ opts
    )
  end

  defp send_line(port, line), do: Port.command(port, line <> "\n")

  # Whatever a failed test left: the VMs whose command line has `pattern`.
  defp kill_node(pattern) do
    for "" <> pid <- File.ls!("/proc"),
        pid =~ ~r/\A\d+\z/,
        {:ok, argv} <- [File.read("/proc/#{pid}/cmdline")],
        argv |> String.replace(<<0>>, " ") |> String.contains?(pattern),
        argv =~ "beam",
        do: System.cmd("kill", ["-9", pid])
  end
end

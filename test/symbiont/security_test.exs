defmodule Symbiont.SecurityTest do
  # The claims of docs/SECURITY.md that no other test checks: a node started the way
  # `make run` starts it listens on loopback only; no shell stands between the BEAM and a
  # host, whatever a name or path holds.
  use ExUnit.Case, async: true

  import Symbiont.HostHelpers

  alias Symbiont.Python

  describe "a node started as `make run` starts it (config/dist.args)" do
    # Starts a node of its own (`mix test --exclude clustered` skips it).
    @describetag :clustered
    @tag timeout: 60_000
    test "listens on 127.0.0.1 only, on the port it was given, and its hosts listen nowhere" do
      port = free_port()
      name = :"dist_#{System.pid()}_#{System.unique_integer([:positive])}"

      args =
        [~c"-args_file", ~c"config/dist.args", ~c"-erl_epmd_port", ~c"#{port}"] ++
          Enum.flat_map(:code.get_path(), &[~c"-pa", &1])

      # Controlled over its standard I/O: the test node is not part of its distribution.
      # Its cookie comes from a file, as make run's does (no -setcookie in its argv).
      {:ok, peer, node} =
        :peer.start(%{
          connection: :standard_io,
          name: name,
          host: ~c"localhost",
          args: args,
          env: Symbiont.Cluster.cookie_env()
        })

      on_exit(fn -> Symbiont.Cluster.stop_peer(peer) end)
      assert node == :"#{name}@localhost"
      assert :peer.call(peer, Node, :alive?, [])

      :ok = :peer.call(peer, Application, :put_env, [:symbiont, :agents, []])
      :ok = :peer.call(peer, Application, :put_env, [:logger, :level, :warning])
      {:ok, _} = :peer.call(peer, Application, :ensure_all_started, [:symbiont])
      {:ok, python} = Symbiont.Config.python_executable()
      opts = [name: "probe", python: python, python_path: [fixtures()]]
      {:ok, _} = :peer.call(peer, Symbiont.Python, :start, [opts])

      {:ok, host_pid} =
        :peer.call(peer, Symbiont.Python, :call, ["probe", "hostile", "os_pid", []], 15_000)

      beam_pid = :peer.call(peer, System, :pid, []) |> String.to_integer()
      assert listening(beam_pid) == [{{127, 0, 0, 1}, port}]
      assert listening(host_pid) == []
    end
  end

  # The TCP sockets an OS process listens on, as {address, port} (Linux: /proc).
  defp listening(os_pid) do
    inodes =
      for fd <- File.ls!("/proc/#{os_pid}/fd"),
          {:ok, link} <- [File.read_link("/proc/#{os_pid}/fd/#{fd}")],
          [_, inode] <- [Regex.run(~r/\Asocket:\[(\d+)\]\z/, link)],
          into: MapSet.new(),
          do: inode

    for file <- ["/proc/net/tcp", "/proc/net/tcp6"],
        {:ok, text} <- [File.read(file)],
        line <- text |> String.split("\n", trim: true) |> tl(),
        [_sl, local, _remote, "0A" | rest] <- [String.split(line)],
        Enum.at(rest, 5) in inodes,
        do: parse_address(local)
  end

  defp parse_address(local) do
    [hex, port] = String.split(local, ":")
    # /proc/net prints each 32-bit word of the address in host (little-endian) order.
    bytes =
      for <<word::binary-size(8) <- hex>>,
        into: <<>>,
        do:
          word
          |> Base.decode16!()
          |> :binary.bin_to_list()
          |> Enum.reverse()
          |> :binary.list_to_bin()

    address =
      case bytes do
        <<a, b, c, d>> -> {a, b, c, d}
        <<v6::binary-size(16)>> -> List.to_tuple(for <<w::16 <- v6>>, do: w)
      end

    {address, String.to_integer(port, 16)}
  end

  describe "no shell" do
    @describetag :tmp_dir

    setup do
      # Short: host names are at most 128 bytes.
      marker = Path.join(System.tmp_dir!(), "pwned-#{System.unique_integer([:positive])}")
      on_exit(fn -> refute File.exists?(marker), "a shell ran: #{marker} exists" end)
      {:ok, marker: marker, attacks: attacks(marker)}
    end

    test "agent names and module paths that would run a shell are refused, naming them", %{
      attacks: attacks
    } do
      for attack <- attacks do
        assert {:error, %Symbiont.Error{reason: :invalid, message: message}} =
                 Symbiont.Agent.validate_spec(name: attack, python: "m:A")

        assert message =~ "expected agent :name to be 1 to 64 letters"
        assert message =~ inspect(attack)

        assert {:error, %Symbiont.Error{reason: :invalid, message: message}} =
                 Symbiont.Agent.validate_spec(name: "a", python: attack <> ":A")

        assert message =~
                 ~s(agent "a": expected :python to be "module:Class", got: #{inspect(attack <> ":A")})

        assert {:error, %Symbiont.Error{reason: :invalid, message: message}} =
                 Symbiont.Agent.validate_spec(name: "a", wasm: attack <> ".wasm", topics: ["t"])

        assert message =~ "the :wasm module #{inspect(attack <> ".wasm")} does not exist"

        assert {:error, %ArgumentError{message: message}} =
                 Symbiont.Host.validate_options(python: "/bin/sh -c '#{attack}'")

        assert message =~ "expected :python to be an existing executable"
      end
    end

    test "host names, paths, directories and variables holding shell syntax reach Python as text",
         %{tmp_dir: dir, attacks: [attack | _] = attacks} do
      # A working directory that exists, named like an attack.
      cd = Path.join(dir, attack)
      File.mkdir_p!(cd)
      path_entry = Enum.at(attacks, 1)

      %{name: py} =
        start_host!(
          name: attack,
          cd: cd,
          python_path: [fixtures(), path_entry],
          env: [{"X", attack}]
        )

      assert {:ok, %{"name" => ^attack, "cwd" => ^cd, "path" => path}} =
               Python.call(py, "hostile", "whoami", [])

      assert Path.expand(path_entry, cd) in path
      assert {:ok, ^attack} = Python.call(py, "os", "getenv", ["X"])

      for module <- attacks do
        assert {:error, %Python.Error{type: "ModuleNotFoundError"}} =
                 Python.call(py, module, "f", [])
      end
    end
  end

  defp attacks(marker) do
    ["x; touch #{marker}", "$(touch #{marker})", "`touch #{marker}`", "x && touch #{marker} #"]
  end
end

defmodule Symbiont.ConfigTest do
  # Where the manifest is read again from: config/config.exs, or $SYMBIONT_CONFIG
  # (`make shop`), which config/runtime.exs applies at start.
  use ExUnit.Case, async: false

  import Symbiont.HostHelpers

  alias Symbiont.Manifest

  @moduletag :tmp_dir

  setup do
    previous = System.get_env("SYMBIONT_CONFIG")

    on_exit(fn ->
      if previous,
        do: System.put_env("SYMBIONT_CONFIG", previous),
        else: System.delete_env("SYMBIONT_CONFIG")
    end)
  end

  test "manifest_file/0 is $SYMBIONT_CONFIG when it is set, else config/config.exs" do
    System.delete_env("SYMBIONT_CONFIG")
    assert Symbiont.Config.manifest_file() == Path.expand("config/config.exs")
    System.put_env("SYMBIONT_CONFIG", "examples/shop/config.exs")
    assert Symbiont.Config.manifest_file() == Path.expand("examples/shop/config.exs")
  end

  test "a reload reads the agents of $SYMBIONT_CONFIG", %{tmp_dir: dir} do
    previous = Application.get_env(:symbiont, :python_path)
    Application.put_env(:symbiont, :python_path, [fixtures()])
    on_exit(fn -> Application.put_env(:symbiont, :python_path, previous) end)

    name = unique_name("reloaded")
    path = Path.join(dir, "other.exs")

    File.write!(path, """
    import Config
    config :symbiont, agents: [[name: #{inspect(name)}, python: "sample_agents:Counter"]]
    """)

    System.put_env("SYMBIONT_CONFIG", path)
    m = start_manifest!([])

    # start_manifest!/1 stops the agents it was given; this one came with the reload.
    on_exit(fn ->
      with pid when is_pid(pid) <- Symbiont.Agent.Server.whereis(name),
           do: DynamicSupervisor.terminate_child(Symbiont.Agents, pid)

      Symbiont.Python.stop(name)
    end)

    assert {:ok, %{started: [^name]}} = Manifest.reload(nil, m)
    assert [%{name: ^name}] = Manifest.agents(m)

    System.put_env("SYMBIONT_CONFIG", Path.join(dir, "missing.exs"))

    assert {:error, %Symbiont.Error{reason: :not_found, message: "no config file " <> _}} =
             Manifest.reload(nil, m)
  end

  test "the byte bounds of agents default to config :symbiont; a bad one is refused, naming it" do
    spec = [name: "x", python: "m:C"]

    for key <- [:max_queue_bytes, :max_in_flight_bytes] do
      previous = Application.fetch_env(:symbiont, key)

      try do
        Application.put_env(:symbiont, key, 4_096)
        assert {:ok, %{^key => 4_096}} = Symbiont.Agent.validate_spec(spec)
        # The spec's own wins.
        assert {:ok, %{^key => 8_192}} = Symbiont.Agent.validate_spec([{key, 8_192} | spec])

        Application.put_env(:symbiont, key, :lots)

        assert {:error, %Symbiont.Error{reason: :invalid, message: message}} =
                 Symbiont.Agent.validate_spec(spec)

        assert message ==
                 "expected #{inspect(key)} in config :symbiont to be a positive integer of " <>
                   "bytes, at most 2**62, got: :lots"
      after
        case previous do
          {:ok, value} -> Application.put_env(:symbiont, key, value)
          :error -> Application.delete_env(:symbiont, key)
        end
      end
    end

    assert {:ok, %{max_queue_bytes: 268_435_456, max_in_flight_bytes: 67_108_864}} =
             Symbiont.Agent.validate_spec(spec)
  end

  test "a host's :max_mailbox defaults to config :symbiont" do
    previous = Application.fetch_env(:symbiont, :max_mailbox)

    try do
      assert {:ok, %{max_mailbox: 10_000}} = Symbiont.Host.validate_options([])
      Application.put_env(:symbiont, :max_mailbox, 500)
      assert {:ok, %{max_mailbox: 500}} = Symbiont.Host.validate_options([])
      assert {:ok, %{max_mailbox: 7}} = Symbiont.Host.validate_options(max_mailbox: 7)
    after
      case previous do
        {:ok, value} -> Application.put_env(:symbiont, :max_mailbox, value)
        :error -> Application.delete_env(:symbiont, :max_mailbox)
      end
    end
  end

  test "the placement options are config :symbiont's, with its rules, unless given" do
    previous = Application.fetch_env(:symbiont, :max_wasm_hosts)

    try do
      assert Symbiont.Placement.options!()[:max_wasm_hosts] ==
               Symbiont.Config.keys()[:max_wasm_hosts]

      Application.put_env(:symbiont, :max_wasm_hosts, 3)
      assert Symbiont.Placement.options!()[:max_wasm_hosts] == 3
      assert Symbiont.Placement.options!(max_wasm_hosts: 5)[:max_wasm_hosts] == 5

      assert_raise ArgumentError, ~r/^expected :max_wasm_hosts to be a positive integer/, fn ->
        Symbiont.Placement.options!(max_wasm_hosts: 0)
      end

      Application.put_env(:symbiont, :max_wasm_hosts, 0)

      assert_raise ArgumentError, ~r/:max_wasm_hosts in config :symbiont .*got: 0/, fn ->
        Symbiont.Placement.options!()
      end
    after
      case previous do
        {:ok, value} -> Application.put_env(:symbiont, :max_wasm_hosts, value)
        :error -> Application.delete_env(:symbiont, :max_wasm_hosts)
      end
    end
  end

  describe "every key of config :symbiont, validated once (Symbiont.Config)" do
    doctest Symbiont.Config

    test "the README's Configuration table lists every key" do
      readme = File.read!("README.md")

      for {key, _} <- Symbiont.Config.keys(),
          do: assert(readme =~ ~r/^\| [^\n]*`#{key}`/m, "README.md does not list #{key}")
    end

    test "each key has a default that passes its own rule" do
      assert Symbiont.Config.validate(Symbiont.Config.keys()) == :ok
    end

    test "a bad value names the key, the value and what is allowed" do
      for {env, key, text} <- [
            {[standby_hosts: -1], :standby_hosts, "a non-negative integer"},
            {[max_mailbox: "lots"], :max_mailbox, ~s(got: "lots")},
            {[busy_host_utilisation: 1.5], :busy_host_utilisation, "from 0.0 to 1.0"},
            {[python_path: "examples"], :python_path, "a list of directory paths"},
            {[inherit_env: ["A=B"]], :inherit_env, "a list of variable names"},
            {[max_queue_bytes: 0], :max_queue_bytes, "at most 2**62"},
            {[status_page: [port: 70_000]], :status_page, "from 0 to 65535"},
            {[conductor: [tick_ms: 0]], :conductor, ":tick_ms of the conductor"},
            {[conductor: [pin_hold_ms: -1]], :conductor, ":pin_hold_ms of the conductor"},
            {[templates: [t: [python: "m:C"]]], :templates, "to have :match"},
            {[templates: [t: [match: "a.*", python: "nocolon"]]], :templates, "template :t"},
            {[signals: [window_ms: 0]], :signals, ":window_ms"},
            {[agents: [[name: "x", python: "nocolon"]]], :agents, ~s(agent "x")},
            {[output_limit: [lines_per_s: 0]], :output_limit, "lines_per_s"}
          ] do
        assert {:error, {^key, message}} = Symbiont.Config.validate(env)
        assert message =~ text, "#{inspect(env)}: #{message}"
      end
    end

    test "an unknown key is refused, with the known key it looks like" do
      assert {:error, {:standby_host, message}} = Symbiont.Config.validate(standby_host: 1)
      assert message =~ "did you mean :standby_hosts?"
      assert {:error, {:zzz, message}} = Symbiont.Config.validate(zzz: 1)
      assert message =~ "known keys: :agents"
    end

    test "the application refuses to start with a bad setting, naming it" do
      Application.put_env(:symbiont, :heartbeat_ms, 0)
      on_exit(fn -> Application.delete_env(:symbiont, :heartbeat_ms) end)

      assert {:error, {:invalid_config, message}} = Symbiont.Application.start(:normal, [])
      assert message =~ "expected :heartbeat_ms in config :symbiont to be a positive integer"
    end

    test "a setting put later is checked when it is read" do
      Application.put_env(:symbiont, :reconcile_ms, :often)
      on_exit(fn -> Application.delete_env(:symbiont, :reconcile_ms) end)

      assert_raise ArgumentError, ~r/expected :reconcile_ms in config :symbiont/, fn ->
        Symbiont.Config.get(:reconcile_ms)
      end
    end

    test "each value is checked for itself: the outcome of one is never another's" do
      # Config.fetch/1 keeps a rule's outcome with the value it was worked out for.
      on_exit(fn -> Application.delete_env(:symbiont, :isolate_after) end)
      read = fn -> Symbiont.Config.fetch(:isolate_after) end

      assert {:ok, 2} = read.()
      Application.put_env(:symbiont, :isolate_after, 0)
      assert {:error, %Symbiont.Error{details: %{field: :isolate_after, value: 0}}} = read.()
      assert {:error, _} = read.()
      Application.put_env(:symbiont, :isolate_after, 7)
      assert {:ok, 7} = read.()
      Application.put_env(:symbiont, :isolate_after, 0)
      assert {:error, _} = read.()
      Application.delete_env(:symbiont, :isolate_after)
      assert {:ok, 2} = read.()
    end
  end
end

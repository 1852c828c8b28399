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
    assert {:error, "no config file " <> _} = Manifest.reload(nil, m)
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

        assert Symbiont.Agent.validate_spec(spec) ==
                 {:error,
                  "expected #{inspect(key)} in config :symbiont to be a positive integer of " <>
                    "bytes, at most 2**62, got: :lots"}
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
end

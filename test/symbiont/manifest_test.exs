defmodule Symbiont.ManifestTest do
  use ExUnit.Case, async: false

  doctest Symbiont.Manifest
  doctest Symbiont.Manifest.Desired
  doctest Symbiont.Agent
  doctest Symbiont.Agent.Spec

  alias Symbiont.Manifest

  test "each bad entry is named with its key, value and what is allowed" do
    cases = [
      {[[python: "m:A"]], "expected agent :name to be a string, got: nil"},
      {[[name: "bad name", python: "m:A"]], ~s(got: "bad name")},
      {[[name: "a", python: "m.A"]],
       ~s(agent "a": expected :python to be "module:Class", got: "m.A")},
      {[[name: "a", python: "m:A", config: [1]]], ~s(agent "a": expected :config)},
      {[[name: "a", python: "m:A", colour: :red]], ~s(agent "a": unknown key :colour)},
      {[[name: "a", python: "m:A", handler_timeout: 0]],
       ~s|agent "a": expected :handler_timeout to be a positive integer (milliseconds) or :infinity, got: 0|},
      {[[name: "a", python: "m:A", durable: "yes"]],
       ~s|agent "a": expected :durable to be true or false, got: "yes"|},
      {[[name: "a", python: "m:A", nodes: []]],
       ~s|agent "a": expected :nodes to be a non-empty list of node names (like :"a@host"), got: []|},
      {[[name: "a", python: "m:A", nodes: [:a@h, "nohost"]]],
       ~s|agent "a": "nohost" in :nodes is not a node name (allowed: atoms or strings of the form "name@host")|},
      {[[name: "a", python: "m:A", nodes: [:a@h, "a@h"]]],
       ~s|agent "a": expected :nodes to name each node once, got: [:a@h, "a@h"]|},
      {[:nope], "expected an agent spec to be a keyword list or map, got: :nope"},
      {:nope, "expected :agents to be a list of agent specs, got: :nope"}
    ]

    for {agents, expected} <- cases do
      assert {:error, %Symbiont.Error{reason: :invalid, message: message}} =
               Manifest.validate(agents)

      assert message =~ expected, "#{inspect(agents)}: #{message}"
    end
  end

  test "Wasm agents share hosts, each its own agent; Python agents get a host each" do
    import Symbiont.HostHelpers
    counter = Path.expand("../../priv/wasm/counter.wat", __DIR__)
    [w1, w2, py] = for p <- ~w(mw1 mw2 mpy), do: unique_name(p)
    topic = unique_name("manifest.in")

    {:ok, specs} =
      Manifest.validate([
        [name: w1, wasm: counter, topics: [unique_name("manifest.w1")], replicas: 2],
        [name: w2, wasm: counter, topics: [topic]],
        [name: py, python: "sample_agents:Counter"]
      ])

    # Hosts of the manifest take the application's python_path.
    previous = Application.get_env(:symbiont, :python_path)
    Application.put_env(:symbiont, :python_path, [fixtures()])
    on_exit(fn -> Application.put_env(:symbiont, :python_path, previous) end)

    ids = [w1, w1 <> "#2", w2, py]
    for id <- ids, do: attach_host_events(id)
    on_exit(fn -> for h <- ["wasm#1", "wasm#2", py], do: Symbiont.Python.stop(h) end)

    :ok = Manifest.start_all(specs, 2)
    for id <- ids, do: assert_receive({:agent_start, ^id, _}, 10_000)

    assert {:ok, %{agents: [%{id: ^w1}, %{id: w1_2}]}} = Symbiont.Host.info("wasm#1")
    assert w1_2 == w1 <> "#2"
    assert {:ok, %{agents: [%{id: ^w2}]}} = Symbiont.Host.info("wasm#2")
    assert {:ok, %{agent: %{id: ^py}}} = Symbiont.Host.info(py)

    :ok = Symbiont.subscribe("count.out")
    :ok = Symbiont.publish(topic, 1)
    assert_receive %Symbiont.Event{topic: "count.out", from: ^w2}, 5_000
  end

  test "placement: an agent runs where its :nodes pick, and nowhere else" do
    import Symbiont.HostHelpers
    [here, there] = for p <- ~w(placed-here placed-there), do: unique_name(p)
    [_, host] = node() |> Atom.to_string() |> String.split("@")
    # A node of this machine that does not run: not live, so never picked.
    absent = :"absent_#{System.unique_integer([:positive])}@#{host}"

    assert {:ok, [%{nodes: [^absent, n]}]} =
             Manifest.validate([[name: here, python: "m:A", nodes: [to_string(absent), node()]]])

    assert n == node()

    previous = Application.get_env(:symbiont, :python_path)
    Application.put_env(:symbiont, :python_path, [fixtures()])
    on_exit(fn -> Application.put_env(:symbiont, :python_path, previous) end)
    attach_host_events(here)

    manifest =
      start_manifest!([
        [name: here, python: "sample_agents:Counter", nodes: [absent, node()]],
        [name: there, python: "sample_agents:Counter", nodes: [absent]]
      ])

    assert_receive {:agent_start, ^here, _}, 10_000
    assert node(Symbiont.Agent.Server.locate(here)) == node()
    assert Symbiont.Agent.Server.locate(there) == nil
    assert %{started: [], retired: []} = Manifest.reconcile(manifest)
    refute there in Symbiont.Agent.Server.ids()
    assert Symbiont.Host.whereis(there) == nil

    # A second copy is refused wherever it is started: the running one is registered
    # with :global.
    {:ok, spec} = Symbiont.Agent.validate_spec(name: here, python: "m:A", nodes: [node()])

    assert :ignore =
             Symbiont.Agent.Server.init({here, here, spec, %{state_bin: nil, fallback: nil}})
  end

  test "the application refuses to start with a bad manifest" do
    previous = Application.get_env(:symbiont, :agents)
    Application.put_env(:symbiont, :agents, [[name: "x", python: "nocolon"]])
    on_exit(fn -> Application.put_env(:symbiont, :agents, previous) end)

    assert {:error, {:invalid_manifest, message}} = Symbiont.Application.start(:normal, [])
    assert message =~ ~s(agent "x": expected :python to be "module:Class")
  end
end

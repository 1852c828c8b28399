defmodule Symbiont.ManifestTest do
  use ExUnit.Case, async: false

  doctest Symbiont.Manifest
  doctest Symbiont.Agent

  alias Symbiont.Manifest

  test "each bad entry is named with its key, value and what is allowed" do
    cases = [
      {[[python: "m:A"]], "expected agent :name to be a string, got: nil"},
      {[[name: "bad name", python: "m:A"]], ~s(got: "bad name")},
      {[[name: "a", python: "m.A"]],
       ~s(agent "a": expected :python to be "module:Class", got: "m.A")},
      {[[name: "a", python: "m:A", config: [1]]], ~s(agent "a": expected :config)},
      {[[name: "a", python: "m:A", colour: :red]], ~s(agent "a": unknown key :colour)},
      {[:nope], "expected an agent spec to be a keyword list or map, got: :nope"},
      {:nope, "expected :agents to be a list of agent specs, got: :nope"}
    ]

    for {agents, expected} <- cases do
      assert {:error, message} = Manifest.validate(agents)
      assert message =~ expected, "#{inspect(agents)}: #{message}"
    end
  end

  test "the application refuses to start with a bad manifest" do
    previous = Application.get_env(:symbiont, :agents)
    Application.put_env(:symbiont, :agents, [[name: "x", python: "nocolon"]])
    on_exit(fn -> Application.put_env(:symbiont, :agents, previous) end)

    assert {:error, {:invalid_manifest, message}} = Symbiont.Application.start(:normal, [])
    assert message =~ ~s(agent "x": expected :python to be "module:Class")
  end
end

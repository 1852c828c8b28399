defmodule Symbiont.ErrorTest do
  use ExUnit.Case, async: true

  doctest Symbiont.Error

  alias Symbiont.Error

  test "an error is an exception: raised, rescued and read as its sentence" do
    error = Error.new(:invalid, "expected :hold to be a positive integer, got: 0")
    assert_raise Error, "expected :hold to be a positive integer, got: 0", fn -> raise error end
    assert "why: #{error}" == "why: expected :hold to be a positive integer, got: 0"
  end

  test "the vocabulary is closed" do
    assert_raise FunctionClauseError, fn -> Error.new(:oops, "no such reason") end
  end

  test "a converted public function's error matches on its reason, with details" do
    assert {:error, %Error{reason: :invalid, details: %{agent: "a"}, message: message}} =
             Symbiont.Agent.validate_spec(name: "a", python: "m.A")

    assert message =~ ~s(expected :python to be "module:Class")

    # The key that is wrong, as data: every kind of check names its field.
    for {spec, field} <- [
          {[name: "a b", python: "m:A"], :name},
          {[name: "a", python: "m:A", colour: :red], :colour},
          {[name: "a"], :python},
          {[name: "a", python: "m:A", wasm: "priv/wasm/counter.wat"], :wasm},
          {[name: "a", python: "m:A", topics: ["t"]], :topics},
          {[name: "a", wasm: "priv/wasm/nope.wasm", topics: ["t"]], :wasm},
          {[name: "a", wasm: "priv/wasm/counter.wat"], :topics},
          {[name: "a", wasm: "priv/wasm/counter.wat", topics: ["t"], limits: [fuel: 0]], :limits},
          {[name: "a", python: "m:A", max_queue: 0], :max_queue},
          {[name: "a", python: "m:A", max_queue_bytes: -1], :max_queue_bytes},
          {[name: "a", python: "m:A", max_queue: 10, high_water: 11], :high_water},
          {[name: "a", python: "m:A", replicas: 9, max_replicas: 2], :replicas},
          {[name: "a", python: "m:A", durable: "yes"], :durable},
          {[name: "a", python: "m:A", nodes: [:nope]], :nodes},
          {[name: "a", python: "m:A", handler_timeout: 0], :handler_timeout},
          {[name: "a", python: "m:A", overflow: :drop_all], :overflow},
          {[name: "a", python: "m:A", config: []], :config}
        ] do
      assert {:error, %Error{reason: :invalid, details: details, message: message}} =
               Symbiont.Agent.validate_spec(spec)

      assert %{agent: _, field: ^field} = details, "#{inspect(spec)}: #{message}"
    end

    assert {:error, %Error{reason: :conflict, details: %{agent: "a"}}} =
             Symbiont.Manifest.validate([[name: "a", python: "m:A"], [name: "a", python: "m:B"]])
  end
end

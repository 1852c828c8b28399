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

    assert {:error, %Error{reason: :conflict, details: %{agent: "a"}}} =
             Symbiont.Manifest.validate([[name: "a", python: "m:A"], [name: "a", python: "m:B"]])
  end
end

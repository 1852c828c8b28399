defmodule Symbiont.HealthTest do
  use ExUnit.Case, async: true

  doctest Symbiont.Health

  test "kinds are checked" do
    assert_raise FunctionClauseError, fn -> Symbiont.Health.event("sad", "a", "why") end

    assert %Symbiont.Event{topic: "symbiont.health", from: nil} =
             Symbiont.Health.event("failing", nil, "node gone", %{}, :x@y)
  end
end

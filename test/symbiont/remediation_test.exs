defmodule Symbiont.RemediationTest do
  use ExUnit.Case, async: true

  doctest Symbiont.Remediation

  test "actions and actors are checked" do
    assert_raise FunctionClauseError, fn -> Symbiont.Remediation.payload("pray", "a", "why") end

    assert_raise ArgumentError, ~r/expected :by to be one of/, fn ->
      Symbiont.Remediation.payload("restart", "a", "why", by: "nobody")
    end
  end

  test "evidence msgpack cannot carry is published as text, not lost" do
    :ok = Symbiont.subscribe(Symbiont.Remediation.topic())

    :ok =
      Symbiont.Remediation.publish("restart", "rem-test", "why",
        evidence: %{"uri" => URI.parse("http://x")}
      )

    assert_receive %Symbiont.Event{from: "rem-test"} = event, 1_000
    assert %{"evidence" => %{"inspect" => text}} = Symbiont.Event.decode!(event)
    assert text =~ "%URI{"
  end
end

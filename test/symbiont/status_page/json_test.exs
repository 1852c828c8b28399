defmodule Symbiont.StatusPage.JSONTest do
  use ExUnit.Case, async: true

  alias Symbiont.StatusPage.JSON

  doctest JSON

  test "what JSON cannot carry is shown as text, never an error" do
    decoded = JSON.decode!(JSON.encode(%{pid: self(), t: {1, 2}, bytes: <<255, 0>>, s: %URI{}}))
    assert decoded["pid"] == inspect(self())
    assert decoded["t"] == "{1, 2}"
    assert decoded["bytes"] == "<<255, 0>>"
    assert decoded["s"] =~ "%URI{"
  end

  test "strings round-trip, and the text is safe inside an HTML script element" do
    text = "quote \" backslash \\ tab \t newline \n nul \0 </script> & é 😀"
    json = JSON.encode([text])
    refute json =~ "</script>"
    assert JSON.decode!(json) == [text]
  end

  test "numbers, literals and nesting decode as Elixir terms" do
    assert JSON.decode!(~s( {"a": [0, -1, 1.5, 2e3, 1E-2, true, false, null, {}, []]} )) ==
             %{"a" => [0, -1, 1.5, 2.0e3, 0.01, true, false, nil, %{}, []]}
  end

  test "bad JSON is refused with the byte where it goes wrong" do
    assert {:error, %Symbiont.Error{reason: :invalid, message: "expected a value at byte 0"}} =
             JSON.decode("nope")

    assert {:error, %Symbiont.Error{reason: :invalid, message: "expected , or } at byte 8"}} =
             JSON.decode(~s({"a": 1 "b": 2}))

    assert {:error,
            %Symbiont.Error{
              reason: :invalid,
              message: "unexpected text after the value at byte 2"
            }} = JSON.decode("1 2")

    assert {:error, %Symbiont.Error{reason: :invalid, message: "bad escape at byte 1"}} =
             JSON.decode(~s("\\x"))

    assert_raise ArgumentError, ~r/invalid JSON: unexpected end of input/, fn ->
      JSON.decode!("{")
    end
  end
end

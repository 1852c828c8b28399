defmodule Symbiont.StatsTest do
  # async: false for the application start at the end (it reads the global config).
  use ExUnit.Case, async: false
  doctest Symbiont.Stats
  doctest Symbiont.Signals

  test "the application refuses to start with bad signals options, naming the option" do
    previous = Application.get_env(:symbiont, :signals)
    Application.put_env(:symbiont, :signals, window_ms: -5)

    on_exit(fn ->
      if previous,
        do: Application.put_env(:symbiont, :signals, previous),
        else: Application.delete_env(:symbiont, :signals)
    end)

    assert {:error, {:invalid_signals, message}} = Symbiont.Application.start(:normal, [])
    assert message == "expected signals option :window_ms to be a positive integer, got: -5"

    assert {:error,
            %Symbiont.Error{reason: :invalid, message: "unknown signals option :windw_ms" <> _}} =
             Symbiont.Signals.validate(windw_ms: 1)
  end
end

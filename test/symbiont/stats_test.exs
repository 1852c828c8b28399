defmodule Symbiont.StatsTest do
  use ExUnit.Case, async: true
  doctest Symbiont.Stats
  doctest Symbiont.Signals
end

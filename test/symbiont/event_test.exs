defmodule Symbiont.EventTest do
  use ExUnit.Case, async: true

  doctest Symbiont.Event
end

defmodule SymbiontTest do
  use ExUnit.Case, async: false

  import ExUnit.CaptureIO

  doctest Symbiont, except: [status: 0]

  test "status/0 prints a table and returns :ok" do
    assert capture_io(fn -> assert Symbiont.status() == :ok end) =~ "host"
  end
end

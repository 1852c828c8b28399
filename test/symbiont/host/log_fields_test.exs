defmodule Symbiont.Host.LogFieldsTest do
  # A Python logging record reaches the node's Logger with its logger's name, its level
  # name and its extra= fields as metadata (PROTOCOL.md §7), under the one key :python,
  # whose keys are fixed atoms: what the host names stays a string, never an atom. Fields
  # past their bounds are a protocol error.
  use ExUnit.Case, async: true

  import ExUnit.CaptureLog
  import Symbiont.HostHelpers

  alias Symbiont.Python

  defmodule Forward do
    @moduledoc false
    # An Erlang :logger handler: sends the test each event about its host.
    def log(%{meta: meta, msg: msg, level: level}, %{config: %{host: host, pid: pid}}) do
      if meta[:host] == host, do: send(pid, {:logged, level, text(msg), meta})
      :ok
    end

    defp text({:string, chardata}), do: IO.chardata_to_string(chardata)
    defp text(other), do: inspect(other)
  end

  setup do
    %{name: name} = host = start_host!()
    id = :"log_fields_#{System.unique_integer([:positive])}"
    config = %{config: %{host: name, pid: self()}, level: :all}
    :ok = :logger.add_handler(id, Forward, config)
    on_exit(fn -> :logger.remove_handler(id) end)
    host
  end

  test "a record's logger, level and extra= fields become Logger metadata", %{name: name} do
    extra = %{"order_id" => 7, "amount" => 9.5, "tags" => ["a"], "symbiont_never_an_atom" => 1}

    capture_log(fn ->
      assert {:ok, nil} =
               Python.call(name, "hostile", "log_record", ["shop.orders", "charged", extra])

      assert_receive {:logged, :warning, "charged", meta}, 5_000

      assert meta[:python] == %{
               logger: "shop.orders",
               level: "WARNING",
               extra: %{
                 "order_id" => 7,
                 "amount" => 9.5,
                 "tags" => "['a']",
                 "symbiont_never_an_atom" => 1
               }
             }

      assert meta[:host] == name
    end)

    # No atom was made of what the host named.
    assert_raise ArgumentError, fn -> String.to_existing_atom("symbiont_never_an_atom") end
  end

  test "print() output carries no fields", %{name: name} do
    capture_log(fn ->
      assert {:ok, "said"} = Python.call(name, "hostile", "say", ["plain words"])
      assert_receive {:logged, :warning, "err:plain words", meta}, 5_000
      refute Map.has_key?(meta, :python)
    end)
  end

  test "fields past their bounds are a protocol error", %{name: name} do
    log =
      capture_log(fn ->
        assert {:error, {:host_down, {:protocol_error, reason}}} =
                 Python.call(name, "hostile", "forged_log_fields", [])

        assert Symbiont.Host.Protocol.format_error(reason) =~
                 ~s("extra" must be a map of at most 16 fields)
      end)

    assert log =~ "protocol error"
  end
end

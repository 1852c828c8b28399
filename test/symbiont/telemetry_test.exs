defmodule Symbiont.TelemetryTest do
  use ExUnit.Case, async: true

  doctest Symbiont.Telemetry

  alias Symbiont.Telemetry

  test "handlers attached concurrently are all kept and called in attach order" do
    event = [:test, :concurrent, System.unique_integer([:positive])]
    me = self()
    ids = for i <- 1..200, do: {event, i}

    ids
    |> Task.async_stream(
      fn id -> Telemetry.attach(id, event, fn _, _, _, id -> send(me, {:called, id}) end, id) end,
      max_concurrency: 50
    )
    |> Enum.each(fn {:ok, result} -> assert result == :ok end)

    Telemetry.execute(event, %{}, %{})
    called = for _ <- ids, do: assert_receive({:called, id}, 1_000) && id
    assert Enum.sort(called) == Enum.sort(ids)
    refute_received {:called, _}

    for id <- ids, do: assert(Telemetry.detach(id) == :ok)
    Telemetry.execute(event, %{}, %{})
    refute_received {:called, _}
  end

  test "ids are unique across events; detach of an unknown id says so" do
    id = make_ref()
    assert :ok = Telemetry.attach(id, [:test, :a], fn _, _, _, _ -> :ok end, nil)

    assert {:error, :already_exists} =
             Telemetry.attach(id, [:test, :b], fn _, _, _, _ -> :ok end, nil)

    assert :ok = Telemetry.detach(id)
    assert {:error, :not_found} = Telemetry.detach(id)
  end

  test "a handler that raises is detached and logged; the others still run" do
    event = [:test, :raises, System.unique_integer([:positive])]
    me = self()
    :ok = Telemetry.attach({event, :bad}, event, fn _, _, _, _ -> raise "boom" end, nil)
    :ok = Telemetry.attach({event, :good}, event, fn _, m, _, _ -> send(me, m) end, nil)

    log = ExUnit.CaptureLog.capture_log(fn -> Telemetry.execute(event, %{n: 1}, %{}) end)

    assert log =~ "failed and was detached"
    assert log =~ "boom"
    assert_received %{n: 1}
    assert {:error, :not_found} = Telemetry.detach({event, :bad})
    assert :ok = Telemetry.detach({event, :good})
  end
end

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

  describe "Symbiont's events, each triggered for real" do
    import ExUnit.CaptureLog
    import Symbiont.HostHelpers

    test "[:symbiont, :host, :stop]: a host stopped on purpose" do
      %{name: name, pid: pid, os_pid: os_pid} = start_host!()
      attach!([:symbiont, :host, :stop], &(&1.host == name))
      :ok = GenServer.stop(pid)

      assert_receive {[:symbiont, :host, :stop], %{uptime_ms: uptime},
                      %{host: ^name, os_pid: ^os_pid, agents: [], reason: :normal}}

      assert uptime >= 0
    end

    test "[:symbiont, :agent, :handle]: each delivery acked or failed, with its latency" do
      [topic, out] = [unique_name("flaky.in"), unique_name("flaky.out")]

      %{agent: agent} =
        start_agent_host!("tel",
          python: "test_agents:Flaky",
          config: %{"in" => topic, "out" => out}
        )

      attach!([:symbiont, :agent, :handle], &(&1.agent == agent))
      :ok = Symbiont.subscribe(out)
      payload = unique_name("payload")

      # Flaky fails the first attempt at each payload and handles the second.
      capture_log(fn ->
        :ok = Symbiont.publish(topic, payload)
        assert_receive %Symbiont.Event{topic: ^out}, 5_000
      end)

      assert_receive {_, %{latency_us: failed_us},
                      %{agent: ^agent, id: ^agent, topic: ^topic, timer: nil, result: :error}}

      assert_receive {_, %{latency_us: ok_us}, %{agent: ^agent, topic: ^topic, result: :ok}}
      assert failed_us > 0 and ok_us > 0
    end

    test "[:symbiont, :mesh, :broadcast]: each event published, not the raw broadcasts" do
      topic = unique_name("tel.mesh")
      attach!([:symbiont, :mesh, :broadcast], &(&1.topic == topic))

      :ok = Symbiont.publish(topic, %{"n" => 1}, from: "tel-test")
      {:ok, bytes} = Symbiont.MsgPack.encode(%{"n" => 1})
      size = IO.iodata_length(bytes)

      assert_received {_, %{bytes: ^size},
                       %{mesh: Symbiont.Mesh, topic: ^topic, from: "tel-test"}}

      # The Phoenix.PubSub-style path stays as it was (bench/mesh.exs measures it).
      :ok = Symbiont.Mesh.broadcast(Symbiont.Mesh, topic, :raw)
      :ok = Symbiont.Mesh.local_broadcast(Symbiont.Mesh, topic, :raw)
      refute_received {[:symbiont, :mesh, :broadcast], _, _}
    end

    test "[:symbiont, :conductor, :action]: each remediation, here a restart after a kill" do
      %{name: name, os_pid: os_pid} = start_host!()
      attach!([:symbiont, :conductor, :action], &(&1.host == name))

      capture_log(fn ->
        Symbiont.Host.Reaper.kill(os_pid)
        assert_receive {:host_start, ^name, %{restarts: 1}}, 10_000
      end)

      assert_received {_, %{},
                       %{action: "restart", by: "supervisor", host: ^name, reason: reason}}

      assert reason =~ killed()
    end

    # Sends {event, measurements, metadata} to the test for the events `mine?` accepts
    # (other tests emit the same events meanwhile).
    defp attach!(event, mine?) do
      me = self()
      id = make_ref()

      :ok =
        Telemetry.attach(
          id,
          event,
          fn e, m, meta, _ -> if mine?.(meta), do: send(me, {e, m, meta}) end,
          nil
        )

      on_exit(fn -> Telemetry.detach(id) end)
    end
  end

  test "the events listed are those of the table in the moduledoc" do
    {:docs_v1, _, _, _, %{"en" => doc}, _, _} = Code.fetch_docs(Telemetry)

    documented =
      for [_, event] <- Regex.scan(~r/^\| `(\[:symbiont[^`]*\])` \|/m, doc),
          do: event |> Code.eval_string() |> elem(0)

    assert Enum.sort(documented) == Enum.sort(Telemetry.events())
  end
end
